"""Offline backend: the same tasks on a local MLX model.

The model is loaded with ``nbp_mlx.models.loading.load_model`` (``bundled`` by
default). Each request is rendered with the tokenizer's chat template as the
task's instructions, its few-shot examples as user/assistant turns, and the
conversation so far, then sampled with ``mlx_lm``. Generation blocks the event
loop, so the engine runs one record at a time.
"""

from __future__ import annotations

import logging

from ..progress import Progress
from .engine import Completion
from .pricing import LOCAL_MODEL_PREFIX, Usage
from .tasks import DatagenTask

logger = logging.getLogger(__name__)

TEMPERATURE = 0.7
TOP_P = 0.9


class LocalBackend:
    """Generates responses to the engine's requests with a local MLX model."""

    name = "local"
    max_concurrency: int | None = 1

    def __init__(self, model: str = "bundled", progress: Progress | None = None):
        from ..models.loading import load_model

        self.model = LOCAL_MODEL_PREFIX + model
        self.loaded = load_model(model, progress=progress)
        self.eos_ids = set(self.loaded.tokenizer.eos_token_ids)

    async def aclose(self) -> None:
        pass

    def render(self, task: DatagenTask, messages: list[dict[str, str]]) -> list[int]:
        """Return the prompt token ids: instructions, few-shot turns, then ``messages``."""
        chat = [{"role": "system", "content": task.instructions}]
        for example in task.examples:
            chat.append({"role": "user", "content": example.user})
            chat.append({"role": "assistant", "content": example.answer})
        chat.extend(messages)
        return list(self.loaded.tokenizer.apply_chat_template(chat, add_generation_prompt=True))

    async def complete(self, record_id: str, task: DatagenTask, messages: list[dict[str, str]]) -> Completion:
        import mlx.core as mx
        from mlx_lm.generate import stream_generate
        from mlx_lm.sample_utils import make_sampler

        prompt_ids = self.render(task, messages)
        sampler = make_sampler(temp=TEMPERATURE, top_p=TOP_P)
        tokens: list[int] = []
        for response in stream_generate(
            self.loaded.model, self.loaded.tokenizer, mx.array(prompt_ids), max_tokens=task.max_tokens, sampler=sampler
        ):
            token = int(response.token)
            if token in self.eos_ids:
                break
            tokens.append(token)
            if response.finish_reason is not None:
                break
        text = self.loaded.tokenizer.decode(tokens, skip_special_tokens=True)
        logger.debug("Local answer for %s: %d prompt tokens, %d generated", record_id, len(prompt_ids), len(tokens))
        return Completion(text=text, usage=Usage(input_tokens=len(prompt_ids), output_tokens=len(tokens)), model=self.model)
