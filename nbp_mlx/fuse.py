"""Merge a LoRA adapter into its base model and write a standalone model folder.

The merge is mlx-lm's own (``LoRALinear.fuse`` on every adapted layer, as
``mlx_lm/fuse.py`` does). The result is checked before the folder is kept: on
the training prompt of a fixed description, the fused model's logits must match
the base model with the adapter applied, and must differ from the plain base
model's. Weights are written in float32, so the check is exact up to rounding.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import mlx.core as mx
import numpy as np

from .export import ExportError, ExportParityError
from .i18n import _
from .models.loading import LoadedModel, adapter_base_model, check_adapter_folder, load_model
from .models.resolve import resolve_model
from .progress import NullProgress, Progress

logger = logging.getLogger(__name__)

FUSE_RECORD = "nbp_mlx_fuse.json"
# Files copied unchanged from the base model folder, so the fused model
# tokenizes and renders the chat template exactly as training did.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
# The description whose training prompt the parity check runs on.
PARITY_DESCRIPTION = "霓虹街头的赛博朋克女孩，雨夜，电影感"
# Fused and base+adapter logits are both float32 and differ only by the order of
# the additions, so the largest difference must stay below this fraction of
# the largest logit.
PARITY_TOLERANCE = 1e-4
# Below this fraction of the largest logit, the adapter counts as having no effect.
MIN_ADAPTER_EFFECT = 1e-6


@dataclass
class FuseResult:
    """The fused model folder and its parity with base model + adapter."""

    output: Path
    base_model: str
    base_model_path: Path
    adapter: Path
    dequantized: bool
    max_abs_diff: float  # fused vs base + adapter
    logit_scale: float  # max |logit| of base + adapter
    adapter_effect: float  # max |logit| difference between base + adapter and the base alone
    fused_effect: float  # max |logit| difference between the fused model and the base alone
    tolerance: float

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / self.logit_scale if self.logit_scale else 0.0


def fuse_adapter(
    adapter: str | Path,
    output: str | Path | None = None,
    *,
    model: str | None = None,
    dequantize: bool = False,
    progress: Progress | None = None,
) -> FuseResult:
    """Merge the LoRA adapter folder ``adapter`` into its base model and write it to ``output``.

    ``model`` overrides the base model recorded by ``train`` and must resolve
    to the same folder. ``output`` defaults to ``fused/<adapter folder name>``;
    an existing folder is replaced only when an earlier fuse wrote it.

    Raises:
        ModelNotFoundError: the adapter folder or the base model is missing.
        ExportError: the adapter does not fit the base model, or ``output`` cannot be written.
        ExportParityError: the fused model does not reproduce base model + adapter.
    """
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, save_config, save_model

    progress = progress or NullProgress()
    adapter = Path(adapter)
    adapter_config = check_adapter_folder(adapter)
    base_spec = _base_model_spec(adapter, adapter_config, model)
    resolved = resolve_model(base_spec, progress)
    _check_recorded_base(adapter, adapter_config, resolved.path, model)
    output = Path(output) if output else Path("fused") / adapter.resolve().name
    _check_output_folder(output)
    _check_quantization(resolved.path, dequantize)

    progress.message(_("Fusing {adapter} into {model}").format(adapter=adapter, model=base_spec))
    loaded = _load_float32(resolved)
    prompt_ids = parity_prompt_ids(loaded.tokenizer)
    base_logits = _logits(loaded.model, prompt_ids)

    _apply_adapter(loaded, adapter, adapter_config)
    adapter_logits = _logits(loaded.model, prompt_ids)

    fused_layers = [(name, module.fuse(dequantize=dequantize)) for name, module in loaded.model.named_modules() if hasattr(module, "fuse")]
    if fused_layers:
        loaded.model.update_modules(tree_unflatten(fused_layers))
    config = dict(loaded.config)
    if dequantize and _is_quantized(config):
        loaded.model = dequantize_model(loaded.model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    config["torch_dtype"] = "float32"

    temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        save_model(temporary, loaded.model, donate_model=False)
        save_config(config, config_path=temporary / "config.json")
        _copy_tokenizer_files(resolved.path, temporary)

        # The check reloads the written folder, so it covers what later stages read.
        fused = _load_float32(resolve_model(str(temporary)))
        fused_logits = _logits(fused.model, prompt_ids)
        result = _parity(base_logits, adapter_logits, fused_logits)
        result.update(output=output, base_model=base_spec, base_model_path=resolved.path, adapter=adapter, dequantized=dequantize)
        fuse_result = FuseResult(**result)
        _check_parity(fuse_result)
        _write_record(temporary / FUSE_RECORD, fuse_result)
        _replace_folder(temporary, output)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)

    logger.info(
        "Fused %s into %s: max |fused - adapter| = %.3g (%.3g of the logit scale)",
        adapter, output, fuse_result.max_abs_diff, fuse_result.relative_diff,
    )
    return fuse_result


def read_fuse_record(folder: str | Path) -> dict | None:
    """Return the fuse record of a fused model folder, or ``None`` when the folder has none."""
    path = Path(folder) / FUSE_RECORD
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def apply_adapter(loaded: LoadedModel, adapter: str | Path) -> None:
    """Add the LoRA layers of ``adapter`` to ``loaded.model`` after checking that every weight fits."""
    adapter = Path(adapter)
    _apply_adapter(loaded, adapter, check_adapter_folder(adapter))


def parity_prompt_ids(tokenizer) -> list[int]:
    """Return the token ids of the fixed prompt that the fuse and export checks run on."""
    from .generate import render_prompt_ids

    return render_prompt_ids(tokenizer, PARITY_DESCRIPTION, "text")


# ---------------------------------------------------------------------------
# Input checks


def _base_model_spec(adapter: Path, adapter_config: dict, model: str | None) -> str:
    if model:
        return model
    recorded = adapter_base_model(adapter)
    if not recorded:
        raise ExportError(
            _("{path}: adapter_config.json records no base model; pass --model with the model the adapter was trained on").format(
                path=adapter / "adapter_config.json"
            )
        )
    return recorded


def _check_recorded_base(adapter: Path, adapter_config: dict, base_path: Path, model: str | None) -> None:
    """Raise when ``--model`` names a different folder from the one ``train`` recorded."""
    recorded = adapter_config.get("nbp_mlx", {}).get("model_path") or adapter_config.get("model")
    if model is None or not recorded:
        return
    recorded_path = Path(recorded)
    if recorded_path.exists() and recorded_path.resolve() != base_path.resolve():
        raise ExportError(
            _(
                "{path}: the adapter was trained on {recorded}, but --model resolves to {given}; "
                "omit --model or pass the model the adapter was trained on"
            ).format(path=adapter / "adapter_config.json", recorded=recorded, given=base_path)
        )


def _check_output_folder(output: Path) -> None:
    if output.exists() and not (output / FUSE_RECORD).is_file():
        raise ExportError(
            _("{path}: the folder exists and was not written by `fuse`; choose another --output or delete it").format(path=output)
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(
            _("{path}: cannot create the output folder ({reason}); choose a writable --output").format(path=output.parent, reason=error.strerror)
        ) from error
    if not os.access(output.parent, os.W_OK):
        raise ExportError(
            _("{path}: the folder is not writable; choose a writable --output").format(path=output.parent)
        )


def _is_quantized(config: dict) -> bool:
    return "quantization" in config or "quantization_config" in config


def _check_quantization(base_path: Path, dequantize: bool) -> None:
    """Raise for a quantized base without ``dequantize``.

    mlx-lm would quantize the merged weights again, and on the 4-bit tiny test
    model that moved the logits by most of their scale, so the result could not
    pass the parity check. GGUF export needs float weights anyway.
    """
    config_path = base_path / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if _is_quantized(config) and not dequantize:
        raise ExportError(
            _("{path}: the base model is quantized; pass --dequantize to fuse into float32 weights").format(path=config_path)
        )


def _apply_adapter(loaded: LoadedModel, adapter: Path, adapter_config: dict) -> None:
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    adapter_file = adapter / "adapters.safetensors"
    fine_tune_type = adapter_config.get("fine_tune_type", "lora")
    if fine_tune_type not in ("lora", "dora"):
        raise ExportError(
            _("{path}: fine_tune_type is '{type}'; only LoRA and DoRA adapters can be fused").format(
                path=adapter / "adapter_config.json", type=fine_tune_type
            )
        )
    model_layers = len(loaded.model.layers)
    if int(adapter_config.get("num_layers", 0)) > model_layers:
        raise ExportError(
            _(
                "{path}: the adapter covers {count} layers but the base model has {layers}; "
                "the adapter was trained on another base model, pass --model with that model"
            ).format(path=adapter / "adapter_config.json", count=adapter_config["num_layers"], layers=model_layers)
        )

    loaded.model.freeze()
    linear_to_lora_layers(
        loaded.model, adapter_config["num_layers"], adapter_config["lora_parameters"], use_dora=fine_tune_type == "dora"
    )
    expected = {name: tuple(value.shape) for name, value in tree_flatten(loaded.model.parameters())}
    weights = mx.load(str(adapter_file))
    for name, value in weights.items():
        if name not in expected or expected[name] != tuple(value.shape):
            found = expected.get(name, _("no such layer"))
            raise ExportError(
                _(
                    "{path}: weight {name} has shape {shape} but the base model expects {expected}; "
                    "the adapter was trained on another base model, pass --model with that model"
                ).format(path=adapter_file, name=name, shape=tuple(value.shape), expected=found)
            )
    loaded.model.load_weights(list(weights.items()), strict=False)
    # New LoRA layers start in training mode, where their dropout would make
    # every comparison random.
    loaded.model.eval()
    mx.eval(loaded.model.parameters())
    loaded.adapter = adapter


def _load_float32(resolved) -> LoadedModel:
    loaded = load_model(resolved)
    loaded.model.set_dtype(mx.float32)
    return loaded


def _logits(model, prompt_ids: list[int]) -> np.ndarray:
    logits = model(mx.array([prompt_ids]))[0].astype(mx.float32)
    return np.array(logits)


# ---------------------------------------------------------------------------
# Parity


def _parity(base: np.ndarray, adapter: np.ndarray, fused: np.ndarray) -> dict:
    return {
        "max_abs_diff": float(np.max(np.abs(fused - adapter))),
        "logit_scale": float(np.max(np.abs(adapter))),
        "adapter_effect": float(np.max(np.abs(adapter - base))),
        "fused_effect": float(np.max(np.abs(fused - base))),
        "tolerance": PARITY_TOLERANCE,
    }


def _check_parity(result: FuseResult) -> None:
    scale = result.logit_scale or 1.0
    if result.adapter_effect <= MIN_ADAPTER_EFFECT * scale:
        raise ExportParityError(
            _(
                "{path}: the adapter does not change the base model's output (its LoRA weights are zero); "
                "train it for some iterations before fusing"
            ).format(path=result.adapter / "adapters.safetensors")
        )
    if result.fused_effect < 0.5 * result.adapter_effect:
        raise ExportParityError(
            _(
                "{path}: the fuse dropped the adapter (fused logits differ from the base model's by {fused:.3g}, "
                "the adapter's by {effect:.3g}); report this as a bug with the adapter folder"
            ).format(path=result.output, fused=result.fused_effect, effect=result.adapter_effect)
        )
    if result.relative_diff > result.tolerance:
        raise ExportParityError(
            _(
                "{path}: fused logits differ from base model + adapter by {diff:.3g} of the logit scale, "
                "more than the tolerance {tolerance:g}; report this as a bug with the adapter folder"
            ).format(path=result.output, diff=result.relative_diff, tolerance=result.tolerance)
        )


# ---------------------------------------------------------------------------
# Output folder


def _copy_tokenizer_files(source: Path, target: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def _write_record(path: Path, result: FuseResult) -> None:
    record = {key: str(value) if isinstance(value, Path) else value for key, value in asdict(result).items()}
    record["adapter"] = str(result.adapter.resolve())
    record["base_model_path"] = str(result.base_model_path.resolve())
    record["output"] = str(result.output)
    record["created_at"] = datetime.now().isoformat(timespec="seconds")
    path.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _replace_folder(temporary: Path, output: Path) -> None:
    temporary.chmod(0o755)  # mkdtemp creates it private to the user
    if output.exists():
        backup = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, backup)
        os.replace(temporary, output)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(temporary, output)
