"""Generation backends: MLX, llama.cpp (a GGUF file) and an Ollama server.

Every backend renders the same chat messages (``prompts.build_messages``) and
streams text chunks while it fills a ``GenerationStats``, so the CLI and the
TUI treat them alike. ``select.create_backend`` builds one from a name, and
``select.choose_backend`` picks the fastest one available for ``auto``.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

from ..errors import GenerationError
from ..generate import GenerationSettings, GenerationStats
from ..prompts import PromptFormat

BACKEND_NAMES = ("mlx", "llamacpp", "ollama", "auto")


class BackendError(GenerationError):
    """A backend cannot generate: its server is down, its model is missing or its reply is malformed."""


class Backend(Protocol):
    """Something that turns a description into streamed text."""

    name: str

    def describe(self) -> str:
        """Return a one-line label of the backend and its model, for the user."""

    def stream(
        self,
        description: str,
        prompt_format: PromptFormat,
        settings: GenerationSettings,
        stats: GenerationStats,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Yield text chunks of the generated prompt and fill ``stats`` as they arrive."""


class MlxBackend:
    """MLX generation (``generate.stream_generate``) on a base model with an optional adapter."""

    name = "mlx"

    def __init__(self, model: str, adapter: str | None = None, progress=None):
        from ..models.loading import load_model

        self.model_spec = model
        self.loaded = load_model(model, adapter=adapter, progress=progress)

    def describe(self) -> str:
        from ..i18n import _
        from ..models.loading import device_label

        return _("MLX: model {model} on {device}").format(model=self.model_spec, device=device_label())

    def stream(self, description, prompt_format, settings, stats, should_stop=None) -> Iterator[str]:
        from ..generate import stream_generate

        return stream_generate(self.loaded, description, prompt_format, settings, stats, should_stop)


__all__ = ["BACKEND_NAMES", "Backend", "BackendError", "MlxBackend"]
