"""Write a fused MLX/Hugging Face model folder as a llama.cpp GGUF file.

Tensor names, metadata keys and token types follow llama.cpp's
``convert_hf_to_gguf.py`` conventions, which ``models/gguf_import.py`` reads in
the other direction. F32, F16 and Q8_0 files are written with the ``gguf``
package. Q4_K_M is made by writing F16 first and quantizing it with llama.cpp
(through llama-cpp-python), because the ``gguf`` package has no K-quant
quantizer. Norms and biases stay F32 in every type, as llama.cpp keeps them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, LlamaFileType, TokenType
from gguf.quants import quantize

from ..i18n import _
from ..models.gguf_import import _LLAMA3_SPLIT, _QWEN2_SPLIT
from ..prompts import build_messages
from . import ExportError, ExportParityError

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]

OUTTYPES = ("f32", "f16", "q8_0", "q4_k_m")
SUPPORTED_ARCHITECTURES = ("qwen2", "llama")
# The GGUF general.file_type of each output type.
_FILE_TYPES = {
    "f32": LlamaFileType.ALL_F32,
    "f16": LlamaFileType.MOSTLY_F16,
    "q8_0": LlamaFileType.MOSTLY_Q8_0,
    "q4_k_m": LlamaFileType.MOSTLY_Q4_K_M,
}
# Q8_0 stores blocks of 32 values along a row.
_Q8_0_BLOCK = 32

_GLOBAL_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}
_BLOCK_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}

# Written next to the standard keys, so a GGUF can be traced back to its adapter.
SOURCE_ADAPTER_KEY = "nbp_mlx.adapter"
SOURCE_BASE_MODEL_KEY = "nbp_mlx.base_model"


@dataclass
class GgufExportResult:
    """The written GGUF file and what it contains."""

    output: Path
    outtype: str
    architecture: str
    tensor_count: int
    size_bytes: int
    vocab_size: int
    tokenizer_pre: str


def export_gguf(
    model_dir: str | Path,
    output: str | Path,
    outtype: str = "f16",
    *,
    progress: ProgressCallback | None = None,
) -> GgufExportResult:
    """Write the model folder ``model_dir`` (usually the output of ``fuse``) as a GGUF file.

    ``outtype`` is one of ``OUTTYPES``. The file is written to a temporary name
    in the output folder and renamed over ``output`` when complete, then loaded
    with llama.cpp to check that its tokenizer matches the folder's.

    Raises:
        ExportError: the folder is not a supported model, ``outtype`` is
            unknown or ``output`` cannot be written.
        ExportParityError: llama.cpp tokenizes the training prompt differently from the folder's tokenizer.
    """
    model_dir = Path(model_dir)
    output = Path(output)
    if outtype not in OUTTYPES:
        raise ExportError(
            _("unsupported quantization type '{type}' for {path}; use one of: {types}").format(
                type=outtype, path=output, types=", ".join(OUTTYPES)
            )
        )
    config = _read_model_config(model_dir)
    _check_writable(output)

    if outtype == "q4_k_m":
        _export_q4_k_m(model_dir, config, output, progress)
    else:
        _write_atomically(output, lambda path: _write_gguf(model_dir, config, path, outtype, progress))

    vocab = _read_vocabulary(model_dir, config)
    _check_with_llama_cpp(output, model_dir, vocab)
    result = GgufExportResult(
        output=output,
        outtype=outtype,
        architecture=config["model_type"],
        tensor_count=len(GGUFReader(output).tensors),
        size_bytes=output.stat().st_size,
        vocab_size=len(vocab.tokens),
        tokenizer_pre=vocab.pre,
    )
    logger.info("Exported %s to %s (%s, %.1f MB)", model_dir, output, outtype, result.size_bytes / 1e6)
    return result


# ---------------------------------------------------------------------------
# Input checks


def _read_model_config(model_dir: Path) -> dict[str, Any]:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ExportError(
            _("{path}: config.json is missing; pass --model with a folder written by `python -m nbp_mlx fuse`").format(path=model_dir)
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    arch = config.get("model_type")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            _("{path}: model_type '{arch}' cannot be exported to GGUF; supported: {supported}").format(
                path=config_path, arch=arch, supported=", ".join(SUPPORTED_ARCHITECTURES)
            )
        )
    if "quantization" in config or "quantization_config" in config:
        raise ExportError(
            _("{path}: the model is quantized in MLX's format; fuse it again with --dequantize, then export").format(path=config_path)
        )
    if config.get("rope_scaling"):
        raise ExportError(
            _("{path}: RoPE scaling ({scaling}) is not supported by the GGUF export").format(path=config_path, scaling=config["rope_scaling"])
        )
    if not (model_dir / "tokenizer.json").is_file():
        raise ExportError(
            _("{path}: tokenizer.json is missing; the GGUF export needs the fast tokenizer file of the model").format(path=model_dir)
        )
    return config


def _check_writable(output: Path) -> None:
    folder = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise ExportError(_("{path}: is a folder; pass --output with a .gguf file name").format(path=output))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(
            _("{path}: cannot create the output folder ({reason}); pass --output in a writable folder").format(
                path=output, reason=error.strerror
            )
        ) from error
    if not os.access(folder, os.W_OK | os.X_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise ExportError(
            _("{path}: the output path is not writable; pass --output in a writable folder").format(path=output)
        )


def _write_atomically(output: Path, write: Callable[[Path], None]) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent or ".")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp creates the file private to the user
        os.replace(temporary, output)
    except OSError as error:
        raise ExportError(
            _("{path}: writing the GGUF file failed ({reason}); check the free disk space and permissions").format(
                path=output, reason=error.strerror or error
            )
        ) from error
    finally:
        Path(temporary).unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# Writing


def _write_gguf(model_dir: Path, config: dict[str, Any], path: Path, outtype: str, progress: ProgressCallback | None) -> None:
    arch = config["model_type"]
    vocab = _read_vocabulary(model_dir, config)
    writer = GGUFWriter(str(path), arch)
    _add_model_metadata(writer, config, outtype, model_dir)
    _add_tokenizer_metadata(writer, vocab)

    tensors = list(_gguf_tensors(model_dir, config))
    for number, (name, values) in enumerate(tensors, start=1):
        data, raw_type = _encode_tensor(name, values, outtype)
        writer.add_tensor(name, data, raw_dtype=raw_type)
        if progress is not None:
            progress(number, len(tensors), name)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _export_q4_k_m(model_dir: Path, config: dict[str, Any], output: Path, progress: ProgressCallback | None) -> None:
    import llama_cpp

    handle, f16_name = tempfile.mkstemp(prefix=f".{output.name}.f16.", suffix=".tmp", dir=output.parent or ".")
    os.close(handle)
    f16_path = Path(f16_name)
    try:
        _write_gguf(model_dir, config, f16_path, "f16", progress)

        def quantize_f16(path: Path) -> None:
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
            status = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(path).encode(), params)
            if status != 0:
                raise ExportError(
                    _("{path}: llama.cpp failed to quantize to Q4_K_M (status {status}); try --outtype q8_0").format(path=output, status=status)
                )

        _write_atomically(output, quantize_f16)
    finally:
        f16_path.unlink(missing_ok=True)


def _add_model_metadata(writer: GGUFWriter, config: dict[str, Any], outtype: str, model_dir: Path) -> None:
    from ..fuse import read_fuse_record

    writer.add_name(model_dir.resolve().name)
    writer.add_context_length(int(config.get("max_position_embeddings", 32768)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_head_count_kv(int(config.get("num_key_value_heads", config["num_attention_heads"])))
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if config["model_type"] == "llama":
        writer.add_rope_dimension_count(int(head_dim))
    writer.add_file_type(_FILE_TYPES[outtype])

    record = read_fuse_record(model_dir)
    if record:
        # Only the adapter folder's name: the file is meant to be shared, and a full path would leak local folders.
        writer.add_string(SOURCE_ADAPTER_KEY, Path(str(record.get("adapter", ""))).name)
        writer.add_string(SOURCE_BASE_MODEL_KEY, str(record.get("base_model", "")))


def _gguf_tensors(model_dir: Path, config: dict[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (llama.cpp name, float32 array in Hugging Face [out, in] layout) for every weight."""
    import mlx.core as mx

    files = sorted(model_dir.glob("model*.safetensors"))
    if not files:
        raise ExportError(_("{path}: no model*.safetensors weights found").format(path=model_dir))
    arch = config["model_type"]
    for file in files:
        for hf_name, array in mx.load(str(file)).items():
            name = _gguf_name(hf_name)
            if name is None:
                raise ExportError(
                    _("{path}: unexpected tensor '{name}' for a {arch} model; it has no llama.cpp name").format(
                        path=file, name=hf_name, arch=arch
                    )
                )
            values = np.array(array.astype(mx.float32))
            if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
                heads = config["num_attention_heads"] if ".attn_q." in name else config.get("num_key_value_heads", config["num_attention_heads"])
                values = _permute_rows(values, int(heads))
            yield name, values


def _gguf_name(hf_name: str) -> str | None:
    base, _dot, kind = hf_name.rpartition(".")
    if kind not in ("weight", "bias"):
        return None
    if base in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[base]}.{kind}"
    parts = base.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _BLOCK_NAMES:
        return f"blk.{parts[2]}.{_BLOCK_NAMES[parts[3]]}.{kind}"
    return None


def _permute_rows(values: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k rows of each head from Hugging Face's rotate-half layout to ggml's adjacent pairs.

    This is the inverse of ``gguf_import._unpermute_rows``: row ``j * head_dim / 2 + i``
    of a head becomes row ``2 * i + j``.
    """
    # NOTE: untested. No test exports a llama-architecture model and compares
    # llama.cpp's decoding of it with MLX's, so a wrong row order would go unseen.
    head_dim = values.shape[0] // heads
    halves = values.reshape(heads, 2, head_dim // 2, *values.shape[1:])
    return halves.swapaxes(1, 2).reshape(values.shape)


def _encode_tensor(name: str, values: np.ndarray, outtype: str) -> tuple[np.ndarray, GGMLQuantizationType | None]:
    """Return the data and raw type for one tensor: 1-D tensors (norms, biases) stay F32."""
    if values.ndim < 2 or outtype == "f32":
        return values.astype(np.float32, copy=False), None
    if outtype == "q8_0" and values.shape[-1] % _Q8_0_BLOCK == 0:
        return quantize(values, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    # F16, and Q8_0 for rows that are not a whole number of blocks (as llama.cpp does).
    return values.astype(np.float16), None


# ---------------------------------------------------------------------------
# Tokenizer


@dataclass
class Vocabulary:
    """The byte-level BPE vocabulary of a model folder, in GGUF terms."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    bos_id: int | None
    eos_id: int
    eot_id: int | None
    pad_id: int | None
    chat_template: str | None


def _read_vocabulary(model_dir: Path, config: dict[str, Any]) -> Vocabulary:
    tokenizer_path = model_dir / "tokenizer.json"
    data = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise ExportError(
            _("{path}: tokenizer type '{type}' is not supported; only byte-level BPE tokenizers can be exported").format(
                path=tokenizer_path, type=model.get("type")
            )
        )
    by_id: dict[int, str] = {int(index): token for token, index in model["vocab"].items()}
    special: dict[int, bool] = {}
    for added in data.get("added_tokens", []):
        by_id[int(added["id"])] = added["content"]
        special[int(added["id"])] = bool(added.get("special"))

    # llama.cpp needs one token per embedding row. Rows past the tokenizer's
    # vocabulary get placeholder names and type UNUSED, as convert_hf_to_gguf.py writes them.
    size = max(int(config.get("vocab_size", 0)), max(by_id) + 1)
    tokens: list[str] = []
    token_types: list[int] = []
    for index in range(size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            token_types.append(TokenType.UNUSED)
        elif index in special:
            tokens.append(by_id[index])
            token_types.append(TokenType.CONTROL if special[index] else TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[index])
            token_types.append(TokenType.NORMAL)

    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model.get("merges", [])]
    tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
    chat_template = tokenizer_config.get("chat_template")
    if (model_dir / "chat_template.jinja").is_file():
        chat_template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")

    def token_id(value: Any) -> int | None:
        text = value.get("content") if isinstance(value, dict) else value
        return tokens.index(text) if text in tokens else None

    eos_id = token_id(tokenizer_config.get("eos_token"))
    if eos_id is None and config.get("eos_token_id") is not None:
        eos_id = int(config["eos_token_id"] if isinstance(config["eos_token_id"], int) else config["eos_token_id"][0])
    if eos_id is None:
        raise ExportError(
            _("{path}: no end-of-sequence token (eos_token) is set; add it to tokenizer_config.json").format(path=model_dir / "tokenizer_config.json")
        )
    # A chat model whose EOS is <|endoftext|> still ends each reply with the
    # turn delimiter of its template, so that token is written as end-of-turn.
    eot_id = None
    for text in ("<|im_end|>", "<|eot_id|>"):
        candidate = token_id(text)
        if candidate is not None and candidate != eos_id and chat_template and text in chat_template:
            eot_id = candidate
    bos_id = token_id(tokenizer_config.get("bos_token"))
    if bos_id is None and config.get("bos_token_id") is not None:
        bos_id = int(config["bos_token_id"])
    return Vocabulary(
        tokens=tokens,
        token_types=[int(kind) for kind in token_types],
        merges=merges,
        pre=_tokenizer_pre(data.get("pre_tokenizer"), config["model_type"], tokenizer_path),
        bos_id=bos_id,
        eos_id=eos_id,
        eot_id=eot_id,
        pad_id=token_id(tokenizer_config.get("pad_token")),
        chat_template=chat_template,
    )


def _tokenizer_pre(pre_tokenizer: dict | None, arch: str, path: Path) -> str:
    """Return llama.cpp's ``tokenizer.ggml.pre`` name for the split pattern of ``tokenizer.json``."""
    patterns = []
    uses_gpt2_regex = False
    for step in _pre_tokenizer_steps(pre_tokenizer):
        if step.get("type") == "Split":
            patterns.append(step.get("pattern", {}).get("Regex"))
        elif step.get("type") == "ByteLevel" and step.get("use_regex", True):
            uses_gpt2_regex = True
    if patterns == [_QWEN2_SPLIT]:
        return "qwen2"
    if patterns == [_LLAMA3_SPLIT]:
        return "llama-bpe"
    if not patterns and uses_gpt2_regex:
        return "gpt-2"
    raise ExportError(
        _("{path}: the pre-tokenizer split pattern is not one llama.cpp knows (Qwen2, Llama 3 or GPT-2); the GGUF would tokenize differently").format(
            path=path
        )
    )


def _pre_tokenizer_steps(pre_tokenizer: dict | None) -> list[dict]:
    if not pre_tokenizer:
        return []
    if pre_tokenizer.get("type") == "Sequence":
        return list(pre_tokenizer.get("pretokenizers", []))
    return [pre_tokenizer]


def _add_tokenizer_metadata(writer: GGUFWriter, vocab: Vocabulary) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    if vocab.bos_id is not None:
        writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    if vocab.eot_id is not None:
        writer.add_eot_token_id(vocab.eot_id)
    if vocab.pad_id is not None:
        writer.add_pad_token_id(vocab.pad_id)
    # Qwen2 and the ChatML template start with <|im_start|>, never with a BOS token.
    writer.add_add_bos_token(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------
# Check


def _check_with_llama_cpp(output: Path, model_dir: Path, vocab: Vocabulary) -> None:
    """Load the file's vocabulary with llama.cpp and compare its tokens of the training prompt with the folder's."""
    try:
        import llama_cpp
    except ImportError:
        logger.warning("llama-cpp-python is not installed; %s was not checked with llama.cpp", output)
        return
    from mlx_lm.utils import load_tokenizer

    from ..backends.llamacpp import render_chat_template

    llm = llama_cpp.Llama(str(output), vocab_only=True, verbose=False)
    try:
        if llm.n_vocab() != len(vocab.tokens):
            raise ExportParityError(
                _("{path}: llama.cpp reads {found} tokens, expected {expected}").format(
                    path=output, found=llm.n_vocab(), expected=len(vocab.tokens)
                )
            )
        from ..fuse import PARITY_DESCRIPTION

        tokenizer = load_tokenizer(model_dir)
        messages = build_messages(PARITY_DESCRIPTION, "text")
        expected = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        template = llm.metadata.get("tokenizer.chat_template") or vocab.chat_template
        text = render_chat_template(template, messages)
        found = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if found != expected:
            raise ExportParityError(
                _(
                    "{path}: llama.cpp tokenizes the training prompt differently from {model} "
                    "(first difference at token {index}); the GGUF would not see the prompt the model was trained on"
                ).format(path=output, model=model_dir, index=_first_difference(found, expected))
            )
    finally:
        llm.close()


def _first_difference(left: list[int], right: list[int]) -> int:
    for index, (a, b) in enumerate(zip(left, right)):
        if a != b:
            return index
    return min(len(left), len(right))
