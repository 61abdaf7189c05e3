"""Build a generation backend by name, and pick the fastest one for ``--backend auto``."""

from __future__ import annotations

import importlib.util
import logging
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from ..i18n import _
from . import BACKEND_NAMES, Backend, BackendError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendChoice:
    """The backend that ``auto`` picked and the reason, in the user's language."""

    name: str
    reason: str


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def choose_backend(gguf: str | Path | None) -> BackendChoice:
    """Return the fastest backend for this machine and the given files.

    Apple silicon runs MLX on the GPU. Elsewhere MLX runs on the CPU, and a
    GGUF file with llama-cpp-python installed is preferred because llama.cpp
    reads quantized weights, so it moves fewer bytes per token.
    NOTE: no uncontended run of bench/bench_backends.py has confirmed the speed-up yet.
    """
    if is_apple_silicon():
        return BackendChoice("mlx", _("Apple silicon: MLX runs on the GPU"))
    if gguf is None:
        return BackendChoice("mlx", _("no --gguf file given, so llama.cpp has nothing to run; MLX runs on the CPU"))
    if not Path(gguf).is_file():
        return BackendChoice("mlx", _("{path}: GGUF file not found; MLX runs on the CPU").format(path=gguf))
    if not llama_cpp_available():
        return BackendChoice(
            "mlx", _("llama-cpp-python is not installed (pip install 'nbp-mlx[llamacpp]'); MLX runs on the CPU")
        )
    return BackendChoice("llamacpp", _("CPU-only machine with a GGUF file: llama.cpp decodes faster than MLX on the CPU"))


def create_backend(
    name: str,
    *,
    model: str | None = None,
    adapter: str | None = None,
    gguf: str | Path | None = None,
    ollama_model: str | None = None,
    ollama_host: str | None = None,
    progress=None,
) -> tuple[Backend, BackendChoice | None]:
    """Build the backend ``name``; for ``auto`` also return the choice and its reason."""
    if name not in BACKEND_NAMES:
        raise BackendError(_("unknown backend '{name}'; use one of: {names}").format(name=name, names=", ".join(BACKEND_NAMES)))
    choice = None
    if name == "auto":
        choice = choose_backend(gguf)
        name = choice.name
        logger.info("auto backend: %s (%s)", choice.name, choice.reason)

    if name == "mlx":
        from . import MlxBackend

        return MlxBackend(model or "bundled", adapter, progress), choice
    if name == "llamacpp":
        if gguf is None:
            raise BackendError(_("--backend llamacpp needs --gguf FILE; write one with `python -m nbp_mlx export gguf`"))
        from .llamacpp import LlamaCppBackend

        return LlamaCppBackend(gguf), choice
    if not ollama_model:
        raise BackendError(_("--backend ollama needs --ollama-model NAME, the name given to `export ollama --name`"))
    from .ollama import OllamaBackend

    return OllamaBackend(ollama_model, ollama_host), choice
