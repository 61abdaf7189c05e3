"""Import a llama.cpp GGUF file into a Hugging Face model folder that ``mlx_lm.load`` reads.

Every tensor is dequantized with the ``gguf`` package and renamed to its
Hugging Face name. ``config.json`` comes from the GGUF metadata, and the
tokenizer is rebuilt from the embedded vocabulary with the ``tokenizers``
library. The folder is cached under ``<cache_root>/gguf/<sha256 prefix>/``, so a
second import of the same file only checks its size and mtime.

Supported: the ``qwen2`` and ``llama`` architectures with a byte-level BPE
(``gpt2``) tokenizer, and every tensor type that ``gguf.quants.dequantize``
handles (F32, F16, BF16, Q4_0 ... Q8_0, the K-quants and the IQ types).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, Keys, ReaderTensor, TokenType
from gguf.constants import GGUF_MAGIC
from gguf.quants import dequantize
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ..errors import ModelImportError
from ..i18n import _
from ..paths import models_cache_dir

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]

SUPPORTED_ARCHITECTURES = ("qwen2", "llama")
# Bump when the folder layout or the conversion changes, so that folders written
# by an older version are rebuilt instead of reused.
IMPORT_FORMAT_VERSION = 1
# Written last into a finished folder. A folder without it is rebuilt.
COMPLETE_MARKER = "nbp_gguf_import.json"
INDEX_NAME = "index.json"
# Weights are written in files of at most this size, so that only one file's
# arrays are held in memory. A smaller model gets a single model.safetensors.
MAX_SHARD_BYTES = 5 << 30
HASH_CHUNK_BYTES = 8 << 20

_HF_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
_MLX_MODEL_MODULES = {"qwen2": "mlx_lm.models.qwen2", "llama": "mlx_lm.models.llama"}

_GLOBAL_TENSOR_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_TENSOR_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TENSOR_NAME = re.compile(r"(?:blk\.(?P<block>\d+)\.)?(?P<name>\w+)\.(?P<kind>weight|bias)")

# Pre-tokenizer split patterns, chosen by the llama.cpp ``tokenizer.ggml.pre``
# value. The Qwen2 pattern is PRETOKENIZE_REGEX of transformers' Qwen2Tokenizer.
# The Llama 3 pattern is the default of transformers' TikTokenConverter
# (convert_slow_tokenizer.py), which converts Llama 3's tiktoken vocabulary.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PRE = ("qwen2",)
_LLAMA3_PRE = ("llama-bpe", "llama3", "llama-v3")
_GPT2_PRE = ("gpt-2", "default")
SUPPORTED_PRE_TOKENIZERS = _QWEN2_PRE + _LLAMA3_PRE + _GPT2_PRE

# Control tokens that end a chat turn. They are added to the end-of-sequence ids
# when the chat template uses them, so generation stops at the end of a reply
# even when the file names another token as EOS.
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


def import_gguf(
    gguf_path: str | Path,
    *,
    cache_root: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Import ``gguf_path`` into an MLX model folder and return the folder.

    The folder is ``<cache_root>/gguf/<first 16 hex digits of the file's
    sha256>/``, and ``cache_root`` defaults to ``models_cache_dir()``
    (``$NBP_MLX_HOME/models``). A finished folder is reused as is. The sha256
    of a file whose path, size and mtime are unchanged is read from a small
    index instead of being computed again. ``progress(done, total,
    tensor_name)`` is called after each converted tensor, and not at all when
    the folder is reused.

    Raises:
        ModelImportError: the file is missing, is not a GGUF file, or uses an
            architecture, tokenizer, tensor type or layout that cannot be
            imported.
    """
    path = Path(gguf_path).expanduser().resolve()
    if not path.is_file():
        raise ModelImportError(
            _("{path}: GGUF file not found; check the path or download the model again").format(path=path)
        )
    _check_magic(path)

    gguf_dir = (Path(cache_root) if cache_root is not None else models_cache_dir()) / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    sha256 = _cached_sha256(path, gguf_dir / INDEX_NAME)
    folder = gguf_dir / sha256[:16]
    if _is_complete(folder):
        logger.info("reusing imported model %s for %s", folder, path)
        return folder

    started = time.perf_counter()
    logger.info("importing %s into %s", path, folder)
    temp_folder = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=gguf_dir))
    temp_folder.chmod(0o755)  # mkdtemp creates it private to the user
    try:
        summary = _convert(path, temp_folder, progress)
        summary.update(format_version=IMPORT_FORMAT_VERSION, source=str(path), sha256=sha256)
        (temp_folder / COMPLETE_MARKER).write_text(json.dumps(summary, indent=2), encoding="utf-8")
        _move_into_place(temp_folder, folder)
    finally:
        if temp_folder.exists():
            shutil.rmtree(temp_folder, ignore_errors=True)

    logger.info("imported %s in %.1f s", path, time.perf_counter() - started)
    return folder


# ---------------------------------------------------------------------------
# Cache


def _check_magic(path: Path) -> None:
    with path.open("rb") as handle:
        magic = handle.read(4)
    if len(magic) < 4 or int.from_bytes(magic, "little") != GGUF_MAGIC:
        raise ModelImportError(
            _("{path}: not a GGUF file (it does not start with the bytes 'GGUF'); pass a .gguf model file").format(
                path=path
            )
        )


def _cached_sha256(path: Path, index_path: Path) -> str:
    """Return the file's sha256, computing it only when path, size or mtime are new to the index."""
    stat = path.stat()
    index = _read_index(index_path)
    entry = index.get(str(path))
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]

    started = time.perf_counter()
    digest = _sha256_of_file(path)
    logger.info("sha256 of %s computed in %.1f s", path, time.perf_counter() - started)

    index = {key: value for key, value in index.items() if Path(key).exists()}
    index[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _write_json_atomically(index_path, {"version": 1, "files": index})
    return digest


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _read_index(index_path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning("ignoring unreadable GGUF hash index %s: %s", index_path, error)
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _write_json_atomically(path: Path, data: Any) -> None:
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.chmod(temp_name, 0o644)  # mkstemp creates the file private to the user
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _is_complete(folder: Path) -> bool:
    try:
        marker = json.loads((folder / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format_version") == IMPORT_FORMAT_VERSION


def _move_into_place(temp_folder: Path, folder: Path) -> None:
    """Rename the finished ``temp_folder`` to ``folder``, replacing an unfinished or outdated one."""
    if folder.exists() and not _is_complete(folder):
        logger.warning("removing unfinished or outdated import folder %s", folder)
        shutil.rmtree(folder)
    try:
        os.replace(temp_folder, folder)
    except OSError:
        # Another process finished the same import first, so keep its folder.
        if not _is_complete(folder):
            raise
        logger.info("another process imported %s first; discarding this copy", folder)


# ---------------------------------------------------------------------------
# Conversion


@dataclass
class _TensorPlan:
    tensor: ReaderTensor
    hf_name: str
    shape: tuple[int, ...]
    dtype: str  # "float16", "bfloat16" or "float32"
    # Head count for undoing llama.cpp's q/k row permutation, else None.
    permute_heads: int | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * (4 if self.dtype == "float32" else 2)


def _convert(path: Path, folder: Path, progress: ProgressCallback | None) -> dict[str, Any]:
    """Write config, tokenizer and weights for ``path`` into ``folder`` and return a summary for the marker."""
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, OSError) as error:  # what GGUFReader raises for truncated files
        raise ModelImportError(
            _("{path}: cannot read the GGUF file ({reason}); the file may be truncated, download it again").format(
                path=path, reason=error
            )
        ) from error
    if reader.byte_order != "I":
        raise ModelImportError(
            _("{path}: the GGUF file has the opposite byte order to this machine; convert it again here").format(
                path=path
            )
        )
    metadata = _Metadata(reader, path)

    split_count = int(metadata.get(Keys.Split.LLM_KV_SPLIT_COUNT, 1))
    if split_count > 1:
        raise ModelImportError(
            _(
                "{path}: the model is split over {count} GGUF files, which cannot be imported; "
                "merge them into one file with llama.cpp's llama-gguf-split --merge"
            ).format(path=path, count=split_count)
        )
    architecture = metadata.require(Keys.General.ARCHITECTURE)
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ModelImportError(
            _(
                "{path}: unsupported model architecture '{arch}'; supported: {supported}. "
                "Use a model of a supported architecture, or its Hugging Face folder instead of the GGUF file"
            ).format(path=path, arch=architecture, supported=", ".join(SUPPORTED_ARCHITECTURES))
        )

    tokenizer, tokens, special = _build_tokenizer(metadata, architecture)
    config = _model_config(metadata, architecture, reader, special)
    plan = _plan_tensors(reader, config, path)
    _check_against_model(config, plan, path)
    _check_tensor_types(plan, path)

    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer_config = _tokenizer_config(metadata, tokenizer, tokens, special, config)
    (folder / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    generation_config = {
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": config["eos_token_id"],
        "pad_token_id": special.pad_id,
    }
    (folder / "generation_config.json").write_text(json.dumps(generation_config, indent=2), encoding="utf-8")

    _write_weights(plan, folder, progress)
    return {
        "architecture": architecture,
        "name": metadata.get(Keys.General.NAME),
        "tensor_count": len(plan),
        "tensor_types": sorted({entry.tensor.tensor_type.name for entry in plan}),
    }


class _Metadata:
    """GGUF key/value metadata with errors that name the file and the key."""

    def __init__(self, reader: GGUFReader, path: Path):
        self._reader = reader
        self.path = path

    def get(self, key: str, default: Any = None) -> Any:
        field = self._reader.get_field(key)
        return default if field is None else field.contents()

    def require(self, key: str) -> Any:
        field = self._reader.get_field(key)
        if field is None:
            raise ModelImportError(
                _(
                    "{path}: required GGUF metadata key '{key}' is missing; convert the model again "
                    "with a recent llama.cpp convert_hf_to_gguf.py"
                ).format(path=self.path, key=key)
            )
        return field.contents()


def _model_config(metadata: _Metadata, arch: str, reader: GGUFReader, special: _SpecialTokens) -> dict[str, Any]:
    """Build the Hugging Face ``config.json`` for ``arch`` from the GGUF metadata."""
    tensor_names = {tensor.name for tensor in reader.tensors}
    head_count = int(metadata.require(Keys.Attention.HEAD_COUNT.format(arch=arch)))
    hidden_size = int(metadata.require(Keys.LLM.EMBEDDING_LENGTH.format(arch=arch)))

    config: dict[str, Any] = {
        "architectures": [_HF_ARCHITECTURES[arch]],
        "model_type": arch,
        "hidden_size": hidden_size,
        "num_hidden_layers": int(metadata.require(Keys.LLM.BLOCK_COUNT.format(arch=arch))),
        "intermediate_size": int(metadata.require(Keys.LLM.FEED_FORWARD_LENGTH.format(arch=arch))),
        "num_attention_heads": head_count,
        # Without a KV head count, every query head has its own key/value head.
        "num_key_value_heads": int(metadata.get(Keys.Attention.HEAD_COUNT_KV.format(arch=arch), head_count)),
        "rms_norm_eps": float(metadata.require(Keys.Attention.LAYERNORM_RMS_EPS.format(arch=arch))),
        "max_position_embeddings": int(metadata.require(Keys.LLM.CONTEXT_LENGTH.format(arch=arch))),
        # 10000 is the RoPE base of the original Llama and the default of mlx-lm's llama ModelArgs.
        "rope_theta": float(metadata.get(Keys.Rope.FREQ_BASE.format(arch=arch), 10000.0)),
        "vocab_size": special.vocab_size,
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": special.bos_id,
        "eos_token_id": special.eos_ids[0] if len(special.eos_ids) == 1 else special.eos_ids,
    }
    rope_scaling = _rope_scaling(metadata, arch)
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling

    if arch == "llama":
        if "rope_freqs.weight" in tensor_names:
            raise ModelImportError(
                _(
                    "{path}: the model uses Llama 3.1-style RoPE frequency factors (tensor rope_freqs.weight), "
                    "which cannot be imported; use the model's Hugging Face folder instead"
                ).format(path=metadata.path)
            )
        head_dim = metadata.get(Keys.Attention.KEY_LENGTH.format(arch=arch))
        if head_dim is None:
            head_dim = metadata.get(Keys.Rope.DIMENSION_COUNT.format(arch=arch))
        if head_dim is not None:
            config["head_dim"] = int(head_dim)
        config["attention_bias"] = "blk.0.attn_q.bias" in tensor_names
        config["mlp_bias"] = False
    return config


def _rope_scaling(metadata: _Metadata, arch: str) -> dict[str, Any] | None:
    scaling_type = metadata.get(Keys.Rope.SCALING_TYPE.format(arch=arch), "none")
    if scaling_type == "none":
        return None
    factor = float(metadata.require(Keys.Rope.SCALING_FACTOR.format(arch=arch)))
    if scaling_type == "linear":
        return {"type": "linear", "factor": factor}
    if scaling_type == "yarn":
        original = metadata.require(Keys.Rope.SCALING_ORIG_CTX_LEN.format(arch=arch))
        return {"type": "yarn", "factor": factor, "original_max_position_embeddings": int(original)}
    raise ModelImportError(
        _("{path}: unsupported RoPE scaling type '{type}'; supported: linear, yarn").format(
            path=metadata.path, type=scaling_type
        )
    )


def _hf_tensor_name(gguf_name: str) -> str | None:
    """Return the Hugging Face name of a llama.cpp tensor name, or None when it has none."""
    match = _TENSOR_NAME.fullmatch(gguf_name)
    if match is None:
        return None
    block, name, kind = match.group("block"), match.group("name"), match.group("kind")
    if block is None:
        base = _GLOBAL_TENSOR_NAMES.get(name)
    else:
        suffix = _BLOCK_TENSOR_NAMES.get(name)
        base = f"model.layers.{block}.{suffix}" if suffix else None
    return f"{base}.{kind}" if base else None


def _plan_tensors(reader: GGUFReader, config: dict[str, Any], path: Path) -> list[_TensorPlan]:
    plan = []
    for tensor in reader.tensors:
        hf_name = _hf_tensor_name(tensor.name)
        if hf_name is None:
            raise ModelImportError(
                _("{path}: unexpected tensor '{name}' for a {arch} model; the file cannot be imported").format(
                    path=path, name=tensor.name, arch=config["model_type"]
                )
            )

        # GGUF stores dimensions innermost first (ggml's ne order), so
        # [in, out] in the file is the Hugging Face [out, in].
        shape = tuple(int(size) for size in reversed(tensor.shape.tolist()))
        if tensor.tensor_type == GGMLQuantizationType.F32:
            dtype = "float32"
        elif tensor.tensor_type == GGMLQuantizationType.BF16:
            dtype = "bfloat16"
        else:
            dtype = "float16"

        permute_heads = None
        if config["model_type"] == "llama":
            if hf_name.endswith("q_proj.weight") or hf_name.endswith("q_proj.bias"):
                permute_heads = config["num_attention_heads"]
            elif hf_name.endswith("k_proj.weight") or hf_name.endswith("k_proj.bias"):
                permute_heads = config["num_key_value_heads"]
        plan.append(_TensorPlan(tensor, hf_name, shape, dtype, permute_heads))
    return plan


def _check_against_model(config: dict[str, Any], plan: list[_TensorPlan], path: Path) -> None:
    """Compare tensor names and shapes with the parameters of the mlx-lm model built from ``config``."""
    from mlx.utils import tree_flatten

    module = importlib.import_module(_MLX_MODEL_MODULES[config["model_type"]])
    # Parameters are initialized lazily, so building the model allocates nothing,
    # but it does advance MLX's global random key.
    model = module.Model(module.ModelArgs.from_dict(config))
    expected = {name: tuple(value.shape) for name, value in tree_flatten(model.parameters())}
    found = {entry.hf_name: entry.shape for entry in plan}

    missing = sorted(set(expected) - set(found))
    if missing:
        raise ModelImportError(
            _("{path}: tensors missing from the GGUF file: {names}; the file is incomplete").format(
                path=path, names=", ".join(missing[:5])
            )
        )
    for entry in plan:
        if entry.hf_name not in expected:
            raise ModelImportError(
                _("{path}: unexpected tensor '{name}' for a {arch} model; the file cannot be imported").format(
                    path=path, name=entry.tensor.name, arch=config["model_type"]
                )
            )
        if expected[entry.hf_name] != entry.shape:
            raise ModelImportError(
                _(
                    "{path}: tensor '{name}' has shape {shape}, but the model metadata requires {expected}; "
                    "the metadata and the weights disagree"
                ).format(path=path, name=entry.tensor.name, shape=entry.shape, expected=expected[entry.hf_name])
            )


def _check_tensor_types(plan: list[_TensorPlan], path: Path) -> None:
    """Dequantize one row of each tensor type in the file, so an unsupported type fails before the long work."""
    probed: set[GGMLQuantizationType] = set()
    for entry in plan:
        tensor_type = entry.tensor.tensor_type
        if tensor_type in probed:
            continue
        data = entry.tensor.data
        try:
            dequantize(data.reshape(-1, data.shape[-1])[:1], tensor_type)
        except NotImplementedError as error:
            raise ModelImportError(
                _(
                    "{path}: tensor '{name}' uses type {type}, which cannot be dequantized; "
                    "use a GGUF file quantized as Q4_K_M, Q5_0, Q6_K, Q8_0, F16 or similar"
                ).format(path=path, name=entry.tensor.name, type=tensor_type.name)
            ) from error
        probed.add(tensor_type)


def _write_weights(plan: list[_TensorPlan], folder: Path, progress: ProgressCallback | None) -> None:
    """Dequantize every tensor and save them as ``model.safetensors`` (or shards when over MAX_SHARD_BYTES)."""
    shards: list[list[_TensorPlan]] = [[]]
    shard_bytes = 0
    for entry in plan:
        if shards[-1] and shard_bytes + entry.nbytes > MAX_SHARD_BYTES:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(entry)
        shard_bytes += entry.nbytes

    total = len(plan)
    done = 0
    weight_map: dict[str, str] = {}
    for number, shard in enumerate(shards, start=1):
        file_name = "model.safetensors" if len(shards) == 1 else f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        arrays = {}
        for entry in shard:
            arrays[entry.hf_name] = _load_tensor(entry)
            weight_map[entry.hf_name] = file_name
            done += 1
            if progress is not None:
                progress(done, total, entry.tensor.name)
        mx.save_safetensors(str(folder / file_name), arrays, metadata={"format": "mlx"})
        del arrays

    if len(shards) > 1:
        total_size = sum(entry.nbytes for entry in plan)
        index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def _load_tensor(entry: _TensorPlan) -> mx.array:
    """Dequantize one tensor to an MLX array of ``entry.shape`` and ``entry.dtype``."""
    tensor = entry.tensor
    # A plain ndarray view of the memory map: slicing np.memmap objects, as the
    # dequantizer does for every group of rows, is several times slower.
    data = np.asarray(tensor.data)
    if tensor.tensor_type == GGMLQuantizationType.F16:
        values = data
    else:
        values = dequantize(data, tensor.tensor_type)
    values = values.reshape(entry.shape)
    if entry.permute_heads is not None:
        values = _unpermute_rows(values, entry.permute_heads)

    if entry.dtype == "float16":
        return mx.array(values.astype(np.float16, copy=False))
    if entry.dtype == "bfloat16":
        return mx.array(values).astype(mx.bfloat16)
    return mx.array(values.astype(np.float32, copy=False))


def _unpermute_rows(values: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation for the llama architecture.

    llama.cpp's convert_hf_to_gguf.py (``LlamaModel.permute``) reorders the rows
    of each attention head from Hugging Face's rotate-half layout, where row
    ``i`` pairs with row ``i + head_dim / 2``, to ggml's adjacent pairs. Within a
    head, row ``2 * i + j`` of the file is row ``j * head_dim / 2 + i`` of the original.
    """
    rows = values.shape[0]
    head_dim = rows // heads
    pairs = values.reshape(heads, head_dim // 2, 2, *values.shape[1:])
    return pairs.swapaxes(1, 2).reshape(values.shape)


# ---------------------------------------------------------------------------
# Tokenizer


@dataclass
class _SpecialTokens:
    vocab_size: int
    bos_id: int | None
    # EOS first, then the other ids that end generation.
    eos_ids: list[int]
    pad_id: int | None
    unk_id: int | None
    add_bos: bool
    add_eos: bool


def _build_tokenizer(metadata: _Metadata, arch: str) -> tuple[Tokenizer, list[str], _SpecialTokens]:
    """Rebuild the byte-level BPE tokenizer from the GGUF vocabulary and merges.

    Returns the tokenizer, the GGUF token list and the special token ids.
    """
    path = metadata.path
    tokenizer_model = metadata.require(Keys.Tokenizer.MODEL)
    if tokenizer_model != "gpt2":
        raise ModelImportError(
            _(
                "{path}: unsupported tokenizer type '{type}'; only byte-level BPE ('gpt2') tokenizers can be "
                "imported. Use the model's Hugging Face folder instead"
            ).format(path=path, type=tokenizer_model)
        )
    # Files converted before llama.cpp recorded the pre-tokenizer lack the key.
    # transformers loads every qwen2-architecture model (Qwen1.5 onwards) with
    # Qwen2Tokenizer, which uses Qwen2's split.
    pre = metadata.get(Keys.Tokenizer.PRE) or ("qwen2" if arch == "qwen2" else "default")
    if pre not in SUPPORTED_PRE_TOKENIZERS:
        raise ModelImportError(
            _("{path}: unsupported pre-tokenizer '{pre}'; supported: {supported}").format(
                path=path, pre=pre, supported=", ".join(SUPPORTED_PRE_TOKENIZERS)
            )
        )
    if arch == "qwen2" and pre not in _QWEN2_PRE:
        logger.warning(
            "%s: qwen2 model with pre-tokenizer %r; transformers' Qwen2Tokenizer will split text with Qwen2's "
            "pattern instead of the one written to tokenizer.json",
            path,
            pre,
        )

    tokens: list[str] = metadata.require(Keys.Tokenizer.LIST)
    token_types: list[int] = metadata.get(Keys.Tokenizer.TOKEN_TYPE) or [TokenType.NORMAL] * len(tokens)
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.require(Keys.Tokenizer.MERGES)]
    # Unused ids (llama.cpp pads the vocabulary to the embedding size with
    # entries such as "[PAD151665]") stay out of the tokenizer, because no text
    # encodes to them. Control and user-defined tokens go into the BPE
    # vocabulary so that registering them as added tokens below keeps their ids.
    vocab = {token: index for index, token in enumerate(tokens) if token_types[index] != TokenType.UNUSED}
    unknown = [tokens[index] for index, kind in enumerate(token_types) if kind == TokenType.UNKNOWN]

    try:
        bpe = models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=unknown[0] if unknown else None,
            fuse_unk=False,
            byte_fallback=False,
            # Llama 3 looks a whole pre-token up in the vocabulary before merging.
            ignore_merges=pre in _LLAMA3_PRE,
        )
    except Exception as error:  # tokenizers raises a plain Exception for a merge outside the vocabulary.
        raise ModelImportError(
            _("{path}: the tokenizer vocabulary or merges are invalid ({reason})").format(path=path, reason=error)
        ) from error
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = _pre_tokenizer(pre)
    if pre in _QWEN2_PRE:
        # transformers' Qwen2Tokenizer applies NFC. llama.cpp does not normalize,
        # so the two differ only on text that is not already in NFC.
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.decoder = decoders.ByteLevel()

    # Control tokens are special, so decoding with skip_special_tokens drops
    # them. User-defined ones such as Qwen's <tool_call> are plain added tokens
    # that decoding keeps. Both kinds encode as one id.
    tokenizer.add_special_tokens(
        [AddedToken(tokens[index], special=True, normalized=False) for index in _ids_of(token_types, TokenType.CONTROL)]
    )
    tokenizer.add_tokens(
        [
            AddedToken(tokens[index], special=False, normalized=False)
            for index in _ids_of(token_types, TokenType.USER_DEFINED)
        ]
    )
    for token, index in vocab.items():
        if tokenizer.token_to_id(token) != index:
            raise ModelImportError(
                _("{path}: token '{token}' appears more than once in the vocabulary").format(path=path, token=token)
            )

    special = _special_tokens(metadata, tokens, token_types)
    tokenizer.post_processor = _post_processor(tokens, special)
    return tokenizer, tokens, special


def _ids_of(token_types: list[int], kind: TokenType) -> list[int]:
    return [index for index, token_type in enumerate(token_types) if token_type == kind]


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    if pre in _GPT2_PRE:
        # NOTE: llama.cpp (llama-cpp-python 0.3.36) splits "default" with its own
        # pattern list, not GPT-2's. The two differ on text such as " 85mm" and '": "'.
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pattern = _QWEN2_SPLIT if pre in _QWEN2_PRE else _LLAMA3_SPLIT
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _special_tokens(metadata: _Metadata, tokens: list[str], token_types: list[int]) -> _SpecialTokens:
    def token_id(key: str) -> int | None:
        value = metadata.get(key)
        if value is None:
            return None
        if not 0 <= int(value) < len(tokens):
            raise ModelImportError(
                _("{path}: metadata key '{key}' is {value}, outside the vocabulary of {size} tokens").format(
                    path=metadata.path, key=key, value=value, size=len(tokens)
                )
            )
        return int(value)

    metadata.require(Keys.Tokenizer.EOS_ID)
    eos_ids = [token_id(Keys.Tokenizer.EOS_ID)]
    for key in (Keys.Tokenizer.EOT_ID, Keys.Tokenizer.EOM_ID):
        extra = token_id(key)
        if extra is not None and extra not in eos_ids:
            eos_ids.append(extra)
    # A chat model whose file names <|endoftext|> as EOS still ends each reply
    # with the turn delimiter of its template, so generation must stop there too.
    chat_template = metadata.get(Keys.Tokenizer.CHAT_TEMPLATE) or ""
    for index in _ids_of(token_types, TokenType.CONTROL):
        if tokens[index] in _END_OF_TURN_TOKENS and tokens[index] in chat_template and index not in eos_ids:
            eos_ids.append(index)

    return _SpecialTokens(
        vocab_size=len(tokens),
        bos_id=token_id(Keys.Tokenizer.BOS_ID),
        eos_ids=eos_ids,
        pad_id=token_id(Keys.Tokenizer.PAD_ID),
        unk_id=token_id(Keys.Tokenizer.UNK_ID),
        # Without the key, llama.cpp adds no BOS to byte-level BPE text
        # (checked with llama-cpp-python 0.3.36).
        add_bos=bool(metadata.get(Keys.Tokenizer.ADD_BOS, False)),
        add_eos=bool(metadata.get(Keys.Tokenizer.ADD_EOS, False)),
    )


def _post_processor(tokens: list[str], special: _SpecialTokens) -> processors.PostProcessor:
    """Return the ByteLevel post-processor, followed by BOS/EOS insertion where the file's add_bos/add_eos are true."""
    byte_level = processors.ByteLevel(trim_offsets=False)
    bos_id = special.bos_id if special.add_bos else None
    eos_id = special.eos_ids[0] if special.add_eos else None
    if bos_id is None and eos_id is None:
        return byte_level

    bos = tokens[bos_id] if bos_id is not None else None
    eos = tokens[eos_id] if eos_id is not None else None
    single = [bos, "$A:0", eos]
    pair = single + [f"{bos}:1" if bos else None, "$B:1", f"{eos}:1" if eos else None]
    template = processors.TemplateProcessing(
        single=" ".join(part for part in single if part),
        pair=" ".join(part for part in pair if part),
        special_tokens=[(text, index) for text, index in ((bos, bos_id), (eos, eos_id)) if text is not None],
    )
    return processors.Sequence([byte_level, template])


def _tokenizer_config(
    metadata: _Metadata, tokenizer: Tokenizer, tokens: list[str], special: _SpecialTokens, config: dict[str, Any]
) -> dict[str, Any]:
    """Build ``tokenizer_config.json``: special tokens, chat template and added tokens."""

    def token_text(index: int | None) -> str | None:
        return tokens[index] if index is not None else None

    added_tokens_decoder = {}
    for index, added in sorted(tokenizer.get_added_tokens_decoder().items()):
        added_tokens_decoder[str(index)] = {
            "content": added.content,
            "lstrip": added.lstrip,
            "normalized": added.normalized,
            "rstrip": added.rstrip,
            "single_word": added.single_word,
            "special": added.special,
        }

    tokenizer_config: dict[str, Any] = {
        # transformers 5 loads every qwen2 model with Qwen2Tokenizer, whatever
        # this key contains, and that class replaces the pre-tokenizer of
        # tokenizer.json with Qwen2's split. The generic class uses tokenizer.json as written.
        "tokenizer_class": "Qwen2Tokenizer" if config["model_type"] == "qwen2" else "PreTrainedTokenizerFast",
        "add_bos_token": special.add_bos,
        "add_eos_token": special.add_eos,
        "added_tokens_decoder": added_tokens_decoder,
        "bos_token": token_text(special.bos_id) if special.add_bos else None,
        "eos_token": token_text(special.eos_ids[0]),
        "pad_token": token_text(special.pad_id),
        "unk_token": token_text(special.unk_id),
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": config["max_position_embeddings"],
        "split_special_tokens": False,
    }
    chat_template = metadata.get(Keys.Tokenizer.CHAT_TEMPLATE)
    if chat_template:
        tokenizer_config["chat_template"] = chat_template
    return tokenizer_config
