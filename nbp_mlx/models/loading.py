"""Load a resolved model, with an optional LoRA adapter, in the right dtype for the device."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..errors import ModelNotFoundError
from ..i18n import _
from ..progress import Progress
from .resolve import ResolvedModel, resolve_model

logger = logging.getLogger(__name__)

# Qwen2.5-Instruct ends a turn with <|im_end|>; base checkpoints and some
# fine-tunes end with <|endoftext|>. Generation stops at either.
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def on_gpu() -> bool:
    return mx.default_device().type == mx.DeviceType.gpu


def compute_dtype() -> mx.Dtype | None:
    """Return the dtype to cast weights to, or ``None`` to keep the stored dtype.

    MLX's CPU kernels for float16/bfloat16 are 20-30x slower than float32 (measured
    on x86-64, see docs/benchmarks.md), so CPU-only machines compute in float32.
    Apple GPUs keep the checkpoint's half precision.
    """
    return None if on_gpu() else mx.float32


def device_label() -> str:
    return _("Apple GPU (Metal)") if on_gpu() else _("CPU")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any  # mlx_lm.tokenizer_utils.TokenizerWrapper
    resolved: ResolvedModel
    config: dict
    adapter: Path | None = None


def load_model(model: str | ResolvedModel, adapter: str | Path | None = None, progress: Progress | None = None) -> LoadedModel:
    """Resolve and load ``model``; apply the LoRA adapter folder ``adapter`` when given."""
    from mlx_lm.utils import load as mlx_load

    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model, progress)
    adapter_path = Path(adapter) if adapter else None
    if adapter_path is not None:
        check_adapter_folder(adapter_path)

    logger.info("Loading %s from %s", resolved.spec, resolved.path)
    loaded_model, tokenizer, config = mlx_load(
        str(resolved.path),
        adapter_path=str(adapter_path) if adapter_path else None,
        return_config=True,
    )
    dtype = compute_dtype()
    if dtype is not None:
        loaded_model.set_dtype(dtype)
    for token in STOP_TOKENS:
        if token in tokenizer.get_vocab():
            tokenizer.add_eos_token(token)
    return LoadedModel(loaded_model, tokenizer, resolved, config, adapter_path)


def check_adapter_folder(adapter: Path) -> dict:
    """Return the adapter's config, or raise when the folder is not a usable adapter."""
    config_path = adapter / "adapter_config.json"
    if not adapter.is_dir():
        raise ModelNotFoundError(_("{path}: adapter folder not found; pass --adapter with a folder under adapters/").format(path=adapter))
    if not config_path.is_file():
        raise ModelNotFoundError(
            _("{path}: adapter_config.json is missing; pass the folder written by `python -m nbp_mlx train`").format(path=adapter)
        )
    if not (adapter / "adapters.safetensors").is_file():
        raise ModelNotFoundError(
            _("{path}: adapters.safetensors is missing; the training run did not save an adapter yet").format(path=adapter)
        )
    return json.loads(config_path.read_text(encoding="utf-8"))


def adapter_base_model(adapter: Path) -> str | None:
    """Return the ``--model`` value the adapter was trained on, as recorded by ``train``."""
    config = check_adapter_folder(adapter)
    return config.get("nbp_mlx", {}).get("model") or config.get("model")
