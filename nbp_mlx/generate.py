"""Streaming generation of an image prompt from a Chinese description with MLX."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

import mlx.core as mx

from .errors import GenerationError
from .i18n import _
from .models.loading import LoadedModel
from .prompts import PromptFormat, build_messages

logger = logging.getLogger(__name__)

REPLACEMENT_CHAR = "\ufffd"


@dataclass
class GenerationSettings:
    """Sampling settings; the defaults are the product's: temperature 0.7, top-p 0.9, 2,048 new tokens."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 2048
    seed: int | None = None
    repetition_penalty: float | None = None  # mlx-lm's penalty over the last 64 tokens; None or 1.0 is off

    def validate(self) -> None:
        if self.temperature < 0:
            raise GenerationError(_("--temperature must be 0 or more, got {value}").format(value=self.temperature))
        if not 0 < self.top_p <= 1:
            raise GenerationError(_("--top-p must be in (0, 1], got {value}").format(value=self.top_p))
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise GenerationError(_("--repetition-penalty must be positive, got {value}").format(value=self.repetition_penalty))
        if self.max_tokens < 1:
            raise GenerationError(_("--max-tokens must be at least 1, got {value}").format(value=self.max_tokens))


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    time_to_first_token: float | None = None  # seconds from the call to the first text
    decode_seconds: float = 0.0
    finish_reason: str | None = None  # "stop" (end-of-turn token) or "length" (max_tokens reached)
    text: str = ""
    token_ids: list[int] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        # The first token's time belongs to prompt processing, so it is left out.
        if self.generated_tokens < 2 or self.decode_seconds <= 0:
            return 0.0
        return (self.generated_tokens - 1) / self.decode_seconds


class IncrementalDecoder:
    """Turn token ids, one at a time, into text chunks that never split a character.

    Byte-level BPE tokens can end in the middle of a multi-byte UTF-8 character,
    which the tokenizer decodes as U+FFFD. Such tokens are held back until the
    character is complete; decoding restarts at every completed boundary, which
    is exact for byte-level BPE. Special tokens are skipped.
    """

    # A character has at most 4 UTF-8 bytes, but the tokens that carry them may
    # also carry the bytes of the next incomplete character. A run of this many
    # tokens that still ends in U+FFFD is taken to be invalid output, and the
    # replacement characters are dropped.
    MAX_PENDING = 16

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._pending: list[int] = []

    def add(self, token_id: int) -> str:
        self._pending.append(token_id)
        text = self._tokenizer.decode(self._pending, skip_special_tokens=True)
        if text.endswith(REPLACEMENT_CHAR) and len(self._pending) < self.MAX_PENDING:
            return ""
        self._pending = []
        return text.replace(REPLACEMENT_CHAR, "")

    def flush(self) -> str:
        """Return what is left; an incomplete character at the end is dropped."""
        text = self._tokenizer.decode(self._pending, skip_special_tokens=True)
        self._pending = []
        return text.replace(REPLACEMENT_CHAR, "")


def check_request(description: str, settings: GenerationSettings) -> None:
    """Raise ``GenerationError`` for invalid settings or an empty description; every backend calls this first."""
    settings.validate()
    if not description.strip():
        raise GenerationError(_("the description is empty; type a short Chinese description of the image"))


def render_prompt_ids(tokenizer, description: str, prompt_format: PromptFormat) -> list[int]:
    """Return the token ids of the chat prompt exactly as training renders it."""
    messages = build_messages(description, prompt_format)
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def stream_generate(
    loaded: LoadedModel,
    description: str,
    prompt_format: PromptFormat = "text",
    settings: GenerationSettings | None = None,
    stats: GenerationStats | None = None,
    should_stop=None,
) -> Iterator[str]:
    """Yield text chunks of the generated prompt as tokens arrive.

    ``stats`` is filled in as generation proceeds. ``should_stop`` is an optional
    callable checked before each token; returning True ends generation (used to
    cancel from the TUI).
    """
    from mlx_lm.generate import stream_generate as mlx_stream_generate
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    settings = settings or GenerationSettings()
    check_request(description, settings)
    stats = stats if stats is not None else GenerationStats()

    tokenizer = loaded.tokenizer
    prompt_ids = render_prompt_ids(tokenizer, description, prompt_format)
    stats.prompt_tokens = len(prompt_ids)
    if settings.seed is not None:
        mx.random.seed(settings.seed)
    sampler = make_sampler(temp=settings.temperature, top_p=settings.top_p if settings.temperature > 0 else 0.0)
    processors = None
    if settings.repetition_penalty and settings.repetition_penalty != 1.0:
        processors = make_logits_processors(repetition_penalty=settings.repetition_penalty, repetition_context_size=64)
    decoder = IncrementalDecoder(tokenizer)
    eos_ids = set(tokenizer.eos_token_ids)

    started = time.perf_counter()
    first_token_at: float | None = None
    for response in mlx_stream_generate(
        loaded.model, tokenizer, mx.array(prompt_ids), max_tokens=settings.max_tokens, sampler=sampler,
        logits_processors=processors,
    ):
        token = int(response.token)
        if response.finish_reason == "stop" or token in eos_ids:
            stats.finish_reason = "stop"
            break
        if first_token_at is None:
            first_token_at = time.perf_counter()
            stats.time_to_first_token = first_token_at - started
        stats.generated_tokens += 1
        stats.token_ids.append(token)
        stats.decode_seconds = time.perf_counter() - first_token_at
        chunk = decoder.add(token)
        if chunk:
            stats.text += chunk
            yield chunk
        if response.finish_reason == "length":
            stats.finish_reason = "length"
            break
        if should_stop is not None and should_stop():
            stats.finish_reason = "cancelled"
            break
    rest = decoder.flush()
    if rest:
        stats.text += rest
        yield rest
    logger.info(
        "Generated %d tokens (%s) at %.1f tokens/s",
        stats.generated_tokens,
        stats.finish_reason,
        stats.tokens_per_second,
    )


def generate_text(loaded: LoadedModel, description: str, prompt_format: PromptFormat = "text", settings: GenerationSettings | None = None) -> tuple[str, GenerationStats]:
    """Generate the whole prompt and return it with its statistics."""
    stats = GenerationStats()
    text = "".join(stream_generate(loaded, description, prompt_format, settings, stats))
    return text, stats
