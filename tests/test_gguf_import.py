"""Tests for importing GGUF files into MLX model folders.

Each tiny GGUF file is written here with ``gguf.GGUFWriter`` from the weights
and tokenizer of the tiny test model, so the import can be checked against the
original: weights, logits, tokenization and chat template.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType, TokenType
from gguf.quants import dequantize, quantize
from tiny_model import CHAT_TEMPLATE, SPECIAL_TOKENS
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers

from nbp_mlx.errors import ModelImportError
from nbp_mlx.models import gguf_import
from nbp_mlx.models.gguf_import import COMPLETE_MARKER, import_gguf

F32 = GGMLQuantizationType.F32
F16 = GGMLQuantizationType.F16
BF16 = GGMLQuantizationType.BF16
Q5_0 = GGMLQuantizationType.Q5_0
Q8_0 = GGMLQuantizationType.Q8_0

# Storage type of each 2-D tensor in the tiny files, by llama.cpp name without
# the block prefix. 1-D tensors (norms, biases) are F32, as llama.cpp writes them.
TENSOR_TYPES = {
    "token_embd.weight": Q8_0,
    "output.weight": Q8_0,
    "attn_q.weight": Q8_0,
    "attn_k.weight": Q5_0,
    "attn_v.weight": F16,
    "attn_output.weight": Q8_0,
    "ffn_gate.weight": Q5_0,
    "ffn_up.weight": BF16,
    "ffn_down.weight": Q8_0,
}

# Maximum dequantization error of each type, as a fraction of the tensor's
# largest magnitude: one quantization step (1/127 of the block maximum for Q8_0,
# 1/16 for Q5_0) or the rounding of a 16-bit float. It is a whole step, not
# half, because Q5_0 clips the side opposite the block maximum at 15 steps. The
# extra 5% covers the rounding of the block scale, a 16-bit float.
TOLERANCES = {F32: 0.0, F16: 0.001, BF16: 0.004, Q5_0: 1.05 / 16, Q8_0: 1.05 / 127}

# Hugging Face name -> llama.cpp name, written out independently of the importer.
GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}

# llama.cpp pads the token list to the embedding size with unused entries.
# The vocabulary size of the tiny test tokenizer (tests/tiny_model.py).
TINY_VOCAB = 1500
PADDING_TOKENS = 8

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SAMPLE_TEXTS = [
    "A cinematic portrait of a cyberpunk girl on a neon street at night, rain, reflections.",
    "Product photo, 85mm lens, shallow depth of field; it's 2024 and we'll see.",
    "霓虹街头的赛博朋克女孩，雨夜，电影感。",
    "请根据以下描述生成一段专业的图像提示词：山间湖泊的日落风景",
    "<|im_start|>system\nYou are a professional prompt engineer.<|im_end|>\n<|im_start|>user\n水墨风格<|im_end|>\n",
    "  leading spaces\n\n\ttabs and newlines\r\n",
]

# Extra cases for the real vocabulary: digits, code, emoji, contractions and
# Qwen's user-defined and FIM tokens.
REAL_MODEL_TEXTS = SAMPLE_TEXTS + [
    "Hello world! 12345 6789",
    "def add(a, b):\n    return a + b\n\n\n",
    "émoji 😀 and ñ, I'm sure we'LL",
    '<tool_call>{"name": "x"}</tool_call>',
    "<|fim_prefix|>abc<|fim_suffix|>",
    "日本語のテキスト、中文。한국어",
]


def gguf_name(hf_name: str) -> str:
    if hf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[hf_name]
    _, _, block, rest = hf_name.split(".", 3)
    return f"blk.{block}.{LAYER_NAMES[rest]}"


def tensor_type(name: str, array: np.ndarray) -> GGMLQuantizationType:
    if array.ndim == 1:
        return F32
    return TENSOR_TYPES[name.split(".", 2)[-1] if name.startswith("blk.") else name]


def permute_for_llama_cpp(weights: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k rows the way llama.cpp's converter does for the llama architecture.

    Within each head, original row ``j * head_dim / 2 + i`` becomes row ``2 * i + j``.
    """
    head_dim = weights.shape[0] // heads
    halves = weights.reshape(heads, 2, head_dim // 2, *weights.shape[1:])
    return halves.swapaxes(1, 2).reshape(weights.shape)


def load_weights(folder: Path) -> dict[str, np.ndarray]:
    weights = {}
    for file in sorted(folder.glob("model*.safetensors")):
        weights.update({name: np.array(value.astype(mx.float32)) for name, value in mx.load(str(file)).items()})
    return weights


def tokenizer_metadata(model_dir: Path) -> tuple[list[str], list[int], list[str]]:
    """Return the token list, token types and merges of a folder's tokenizer.json, padded like llama.cpp's."""
    data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    assert [vocab[token] for token in tokens] == list(range(len(tokens)))
    types = [TokenType.CONTROL if token in SPECIAL_TOKENS else TokenType.NORMAL for token in tokens]
    tokens += [f"[PAD{len(tokens) + index}]" for index in range(PADDING_TOKENS)]
    types += [TokenType.UNUSED] * PADDING_TOKENS
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in data["model"]["merges"]]
    return tokens, [int(kind) for kind in types], merges


def write_gguf(
    path: Path,
    model_dir: Path,
    *,
    arch: str = "qwen2",
    pre: str | None = "qwen2",
    add_bos: bool = False,
    context_length: int = 4096,
    omit_keys: tuple[str, ...] = (),
    extra_metadata: tuple[tuple[str, str, object], ...] = (),
    tensor_types: dict[str, GGMLQuantizationType] | None = None,
) -> Path:
    """Write the model folder ``model_dir`` as a GGUF file the way llama.cpp's converter lays it out."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    weights = load_weights(model_dir)
    tokens, types, merges = tokenizer_metadata(model_dir)
    embedding = weights["model.embed_tokens.weight"]
    weights["model.embed_tokens.weight"] = np.concatenate(
        [embedding, np.zeros((PADDING_TOKENS, embedding.shape[1]), np.float32)]
    )
    if "lm_head.weight" in weights:
        head = weights["lm_head.weight"]
        weights["lm_head.weight"] = np.concatenate([head, np.zeros((PADDING_TOKENS, head.shape[1]), np.float32)])

    chat_template = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]
    metadata = [
        (f"{arch}.block_count", "uint32", config["num_hidden_layers"]),
        (f"{arch}.context_length", "uint32", context_length),
        (f"{arch}.embedding_length", "uint32", config["hidden_size"]),
        (f"{arch}.feed_forward_length", "uint32", config["intermediate_size"]),
        (f"{arch}.attention.head_count", "uint32", config["num_attention_heads"]),
        (f"{arch}.attention.head_count_kv", "uint32", config["num_key_value_heads"]),
        (f"{arch}.rope.freq_base", "float32", config["rope_theta"]),
        (f"{arch}.attention.layer_norm_rms_epsilon", "float32", config["rms_norm_eps"]),
        ("tokenizer.ggml.model", "string", "gpt2"),
        ("tokenizer.ggml.pre", "string", pre),
        ("tokenizer.ggml.tokens", "array", tokens),
        ("tokenizer.ggml.token_type", "array", types),
        ("tokenizer.ggml.merges", "array", merges),
        ("tokenizer.ggml.eos_token_id", "uint32", tokens.index("<|im_end|>")),
        ("tokenizer.ggml.padding_token_id", "uint32", tokens.index("<|endoftext|>")),
        ("tokenizer.ggml.bos_token_id", "uint32", tokens.index("<|endoftext|>")),
        ("tokenizer.ggml.add_bos_token", "bool", add_bos),
        ("tokenizer.chat_template", "string", chat_template),
        *extra_metadata,
    ]

    writer = gguf.GGUFWriter(str(path), arch)
    for key, kind, value in metadata:
        if key not in omit_keys and value is not None:
            getattr(writer, f"add_{kind}")(key, value)
    for hf_name, array in weights.items():
        name = gguf_name(hf_name)
        if arch == "llama" and hf_name.endswith("q_proj.weight"):
            array = permute_for_llama_cpp(array, config["num_attention_heads"])
        elif arch == "llama" and hf_name.endswith("k_proj.weight"):
            array = permute_for_llama_cpp(array, config["num_key_value_heads"])
        # Not `.get(name) or ...`, because F32 is quantization type 0.
        kind = tensor_types[name] if tensor_types and name in tensor_types else tensor_type(name, array)
        if kind == GGMLQuantizationType.F64:
            writer.add_tensor(name, array.astype(np.float64))
        else:
            writer.add_tensor(name, quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_model_folder(folder: Path, source: Path, config_changes: dict, extra_weights: dict[str, np.ndarray]) -> Path:
    """Copy the model folder ``source`` to ``folder`` with changed config keys and added weights."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    weights = dict(mx.load(str(folder / "model.safetensors")))
    weights.update({name: mx.array(value) for name, value in extra_weights.items()})
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    return folder


def qwen2_reference_tokenizer(model_dir: Path) -> Tokenizer:
    """Return the folder's tokenizer with Qwen2's own pre-tokenizer and normalizer, as in Qwen2.5's tokenizer.json."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return tokenizer


def logits(model, ids: list[int]) -> np.ndarray:
    return np.array(model(mx.array([ids])).astype(mx.float32))


class ProgressRecorder:
    def __init__(self):
        self.calls: list[tuple[int, int, str]] = []

    def __call__(self, done: int, total: int, name: str) -> None:
        self.calls.append((done, total, name))


@pytest.fixture(scope="module")
def tied_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny-tied.gguf", tiny_model_dir)


@pytest.fixture(scope="module")
def tied_import(tied_gguf, tmp_path_factory) -> tuple[Path, ProgressRecorder]:
    progress = ProgressRecorder()
    folder = import_gguf(tied_gguf, cache_root=tmp_path_factory.mktemp("cache"), progress=progress)
    return folder, progress


@pytest.fixture(scope="module")
def untied_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    head = np.random.default_rng(1).normal(0, 0.05, (config["vocab_size"], config["hidden_size"]))
    return write_model_folder(
        tmp_path_factory.mktemp("untied") / "tiny-untied",
        tiny_model_dir,
        {"tie_word_embeddings": False},
        {"lm_head.weight": head.astype(np.float32)},
    )


@pytest.fixture(scope="module")
def llama_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Return a tiny llama model folder with the tiny model's tokenizer."""
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    folder = tmp_path_factory.mktemp("llama") / "tiny-llama"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="llama", architectures=["LlamaForCausalLM"], rope_theta=10000.0)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    mx.random.seed(2)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    return folder


# ---------------------------------------------------------------------------
# Weights and config


def test_tied_import_writes_model_folder(tied_import):
    folder, _ = tied_import
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors", COMPLETE_MARKER):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "qwen2"
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["tie_word_embeddings"] is True
    assert config["num_hidden_layers"] == 2
    assert config["hidden_size"] == 64
    assert config["intermediate_size"] == 128
    assert config["num_attention_heads"] == 4
    assert config["num_key_value_heads"] == 2
    assert config["max_position_embeddings"] == 4096
    assert config["rope_theta"] == 1000000.0
    assert config["rms_norm_eps"] == pytest.approx(1e-6)
    assert config["vocab_size"] == TINY_VOCAB + PADDING_TOKENS
    assert config["eos_token_id"] == SPECIAL_TOKENS.index("<|im_end|>")
    assert config["bos_token_id"] == SPECIAL_TOKENS.index("<|endoftext|>")


def test_tied_import_matches_original_weights(tied_import, tiny_model_dir):
    folder, _ = tied_import
    original = load_weights(tiny_model_dir)
    imported = load_weights(folder)

    assert "lm_head.weight" not in imported
    assert set(imported) == set(original)
    embedding = imported.pop("model.embed_tokens.weight")
    assert embedding.shape == (TINY_VOCAB + PADDING_TOKENS, 64)
    embedding_original = original.pop("model.embed_tokens.weight")
    tolerance = TOLERANCES[Q8_0] * float(np.abs(embedding_original).max())
    np.testing.assert_allclose(embedding[:TINY_VOCAB], embedding_original, atol=tolerance)
    for name, values in original.items():
        # Non-square tensors (k/v projections, MLP) fail here when the
        # [out, in] orientation is lost.
        assert imported[name].shape == values.shape, name
        tolerance = TOLERANCES[tensor_type(gguf_name(name), values)] * float(np.abs(values).max())
        np.testing.assert_allclose(imported[name], values, atol=tolerance, err_msg=name)


def test_tied_import_keeps_exact_dequantized_values(tied_import, tied_gguf):
    folder, _ = tied_import
    imported = load_weights(folder)
    reader = gguf.GGUFReader(tied_gguf)
    tensor = next(t for t in reader.tensors if t.name == "blk.0.attn_k.weight")
    expected = dequantize(tensor.data, tensor.tensor_type).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(imported["model.layers.0.self_attn.k_proj.weight"], expected)


def test_tied_import_keeps_qkv_biases(tied_import, tiny_model_dir):
    folder, _ = tied_import
    original = load_weights(tiny_model_dir)
    imported = load_weights(folder)
    for layer in range(2):
        for projection in ("q_proj", "k_proj", "v_proj"):
            name = f"model.layers.{layer}.self_attn.{projection}.bias"
            assert np.abs(imported[name]).max() > 0, name
            np.testing.assert_array_equal(imported[name], original[name])


def test_weight_dtypes_follow_source_types(tied_import):
    folder, _ = tied_import
    weights = mx.load(str(folder / "model.safetensors"))
    assert weights["model.embed_tokens.weight"].dtype == mx.float16  # Q8_0
    assert weights["model.layers.0.self_attn.k_proj.weight"].dtype == mx.float16  # Q5_0
    assert weights["model.layers.0.self_attn.v_proj.weight"].dtype == mx.float16  # F16
    assert weights["model.layers.0.mlp.up_proj.weight"].dtype == mx.bfloat16  # BF16
    assert weights["model.layers.0.input_layernorm.weight"].dtype == mx.float32
    assert weights["model.layers.0.self_attn.q_proj.bias"].dtype == mx.float32
    assert weights["model.norm.weight"].dtype == mx.float32


def test_progress_reports_every_tensor(tied_import, tied_gguf):
    _, progress = tied_import
    names = [tensor.name for tensor in gguf.GGUFReader(tied_gguf).tensors]
    assert [call[2] for call in progress.calls] == names
    assert [call[0] for call in progress.calls] == list(range(1, len(names) + 1))
    assert {call[1] for call in progress.calls} == {len(names)}


def test_tied_import_logits_match_original(tied_import, tiny_model_dir):
    from mlx_lm import load

    folder, _ = tied_import
    original_model, tokenizer = load(str(tiny_model_dir))
    imported_model, _ = load(str(folder))
    ids = tokenizer.encode(SAMPLE_TEXTS[0] + SAMPLE_TEXTS[2])

    expected = logits(original_model, ids)
    actual = logits(imported_model, ids)
    assert actual.shape[-1] == TINY_VOCAB + PADDING_TOKENS
    np.testing.assert_allclose(actual[..., :TINY_VOCAB], expected, atol=0.05 * float(np.abs(expected).max()))
    assert np.mean(actual[..., :TINY_VOCAB].argmax(-1) == expected.argmax(-1)) > 0.9


def test_untied_import_writes_lm_head(untied_model_dir, tmp_path):
    from mlx_lm import load

    path = write_gguf(tmp_path / "tiny-untied.gguf", untied_model_dir)
    folder = import_gguf(path, cache_root=tmp_path / "cache")

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["tie_word_embeddings"] is False
    imported = load_weights(folder)
    original = load_weights(untied_model_dir)
    np.testing.assert_allclose(imported["lm_head.weight"][:TINY_VOCAB], original["lm_head.weight"], atol=0.01)
    assert not np.allclose(imported["lm_head.weight"][:TINY_VOCAB], imported["model.embed_tokens.weight"][:TINY_VOCAB], atol=0.1)

    original_model, tokenizer = load(str(untied_model_dir))
    imported_model, _ = load(str(folder))
    ids = tokenizer.encode(SAMPLE_TEXTS[1])
    expected = logits(original_model, ids)
    np.testing.assert_allclose(
        logits(imported_model, ids)[..., :TINY_VOCAB], expected, atol=0.05 * float(np.abs(expected).max())
    )


def test_llama_import_undoes_qk_permutation(llama_model_dir, tmp_path):
    from mlx_lm import load

    path = write_gguf(tmp_path / "tiny-llama.gguf", llama_model_dir, arch="llama", pre="gpt-2", add_bos=True)
    folder = import_gguf(path, cache_root=tmp_path / "cache")

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "llama"
    assert config["attention_bias"] is False
    original = load_weights(llama_model_dir)
    imported = load_weights(folder)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight"):
        tolerance = TOLERANCES[tensor_type(gguf_name(name), original[name])] * float(np.abs(original[name]).max())
        np.testing.assert_allclose(imported[name], original[name], atol=tolerance, err_msg=name)

    original_model, _ = load(str(llama_model_dir))
    imported_model, tokenizer = load(str(folder))
    original_tokenizer = Tokenizer.from_file(str(llama_model_dir / "tokenizer.json"))
    ids = original_tokenizer.encode(SAMPLE_TEXTS[0]).ids
    expected = logits(original_model, ids)
    np.testing.assert_allclose(
        logits(imported_model, ids)[..., :TINY_VOCAB], expected, atol=0.05 * float(np.abs(expected).max())
    )

    # add_bos_token puts <|endoftext|> (the BOS of this file) in front. The
    # generic tokenizer class keeps the gpt-2 pre-tokenizer of tokenizer.json.
    bos = SPECIAL_TOKENS.index("<|endoftext|>")
    for text in SAMPLE_TEXTS:
        assert tokenizer.encode(text) == [bos, *original_tokenizer.encode(text).ids], text


def test_large_model_is_sharded(tied_gguf, tiny_model_dir, tmp_path, monkeypatch):
    from mlx_lm import load

    monkeypatch.setattr(gguf_import, "MAX_SHARD_BYTES", 40_000)
    folder = import_gguf(tied_gguf, cache_root=tmp_path)

    shards = sorted(path.name for path in folder.glob("model*.safetensors"))
    assert len(shards) > 2
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((folder / "model.safetensors.index.json").read_text(encoding="utf-8"))
    assert set(index["weight_map"].values()) == set(shards)
    assert set(index["weight_map"]) == set(load_weights(folder))

    original_model, tokenizer = load(str(tiny_model_dir))
    imported_model, _ = load(str(folder))
    ids = tokenizer.encode(SAMPLE_TEXTS[0])
    expected = logits(original_model, ids)
    np.testing.assert_allclose(
        logits(imported_model, ids)[..., :TINY_VOCAB], expected, atol=0.05 * float(np.abs(expected).max())
    )


# ---------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_matches_qwen2_reference(tied_import, tiny_model_dir):
    folder, _ = tied_import
    reference = qwen2_reference_tokenizer(tiny_model_dir)
    imported = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in SAMPLE_TEXTS:
        assert imported.encode(text).ids == reference.encode(text).ids, text
        assert imported.decode(imported.encode(text).ids, skip_special_tokens=False) == text


def test_tokenizer_through_mlx_lm_matches_reference(tied_import, tiny_model_dir):
    from mlx_lm import load

    folder, _ = tied_import
    _, tokenizer = load(str(folder))
    reference = qwen2_reference_tokenizer(tiny_model_dir)
    for text in SAMPLE_TEXTS:
        assert tokenizer.encode(text) == reference.encode(text).ids, text
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_gpt2_pre_tokenizer_matches_original(tiny_model_dir, tmp_path):
    # The tiny tokenizer splits with GPT-2's pattern, which llama.cpp calls "gpt-2".
    path = write_gguf(tmp_path / "tiny-gpt2.gguf", tiny_model_dir, pre="gpt-2")
    folder = import_gguf(path, cache_root=tmp_path / "cache")
    original = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    imported = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in SAMPLE_TEXTS:
        assert imported.encode(text).ids == original.encode(text).ids, text


def test_special_tokens_encode_as_single_ids(tied_import):
    folder, _ = tied_import
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.encode(token).ids == [token_id], token
        assert tokenizer.encode(f"x{token}y").ids[1:-1] == [token_id], token
    assert tokenizer.decode(tokenizer.encode("<|im_start|>user").ids, skip_special_tokens=True) == "user"


def test_unused_padding_tokens_left_out(tied_import):
    folder, _ = tied_import
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tokenizer.token_to_id(f"[PAD{TINY_VOCAB}]") is None
    assert tokenizer.get_vocab_size() == TINY_VOCAB


def test_tokenizer_config_from_metadata(tied_import):
    folder, _ = tied_import
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == CHAT_TEMPLATE
    assert config["eos_token"] == "<|im_end|>"
    assert config["pad_token"] == "<|endoftext|>"
    assert config["bos_token"] is None
    assert config["add_bos_token"] is False
    assert config["model_max_length"] == 4096
    decoder = config["added_tokens_decoder"]
    assert {decoder[str(index)]["content"] for index in range(3)} == set(SPECIAL_TOKENS)
    assert all(entry["special"] for entry in decoder.values())


def test_chat_template_output_matches_original(tied_import, tiny_model_dir):
    from mlx_lm import load

    folder, _ = tied_import
    _, original = load(str(tiny_model_dir))
    _, imported = load(str(folder))
    messages = [
        {"role": "system", "content": "You are a professional prompt engineer."},
        {"role": "user", "content": "霓虹街头的赛博朋克女孩"},
    ]
    expected = original.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    actual = imported.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert actual == expected
    assert imported.encode(actual) == original.encode(expected)
    assert imported.eos_token_ids == {SPECIAL_TOKENS.index("<|im_end|>")}


# ---------------------------------------------------------------------------
# Cache


def count_hashes(monkeypatch) -> list[Path]:
    hashed: list[Path] = []
    real = gguf_import._sha256_of_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(gguf_import, "_sha256_of_file", counting)
    return hashed


def test_second_import_reuses_folder(tied_gguf, tmp_path, monkeypatch):
    hashed = count_hashes(monkeypatch)
    first_progress, second_progress = ProgressRecorder(), ProgressRecorder()

    first = import_gguf(tied_gguf, cache_root=tmp_path, progress=first_progress)
    second = import_gguf(tied_gguf, cache_root=tmp_path, progress=second_progress)

    assert second == first
    assert first_progress.calls
    assert second_progress.calls == []
    assert len(hashed) == 1
    assert first.parent == tmp_path / "gguf"
    assert len(first.name) == 16
    assert [entry.name for entry in (tmp_path / "gguf").iterdir() if entry.name.startswith(".")] == []


def test_changed_mtime_rehashes_without_reconverting(tied_gguf, tmp_path, monkeypatch):
    source = tmp_path / "copy.gguf"
    shutil.copy(tied_gguf, source)
    hashed = count_hashes(monkeypatch)
    first = import_gguf(source, cache_root=tmp_path / "cache")

    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    progress = ProgressRecorder()
    second = import_gguf(source, cache_root=tmp_path / "cache", progress=progress)

    assert second == first
    assert len(hashed) == 2
    assert progress.calls == []


def test_changed_content_gets_new_folder(tiny_model_dir, tied_gguf, tmp_path):
    other = write_gguf(tmp_path / "other.gguf", tiny_model_dir, context_length=2048)
    first = import_gguf(tied_gguf, cache_root=tmp_path / "cache")
    second = import_gguf(other, cache_root=tmp_path / "cache")
    assert second != first
    assert json.loads((second / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"] == 2048


def test_unfinished_folder_is_rebuilt(tied_gguf, tmp_path):
    folder = import_gguf(tied_gguf, cache_root=tmp_path)
    (folder / COMPLETE_MARKER).unlink()
    (folder / "model.safetensors").write_bytes(b"half written")

    progress = ProgressRecorder()
    again = import_gguf(tied_gguf, cache_root=tmp_path, progress=progress)

    assert again == folder
    assert progress.calls
    assert (folder / COMPLETE_MARKER).is_file()
    assert "model.embed_tokens.weight" in mx.load(str(folder / "model.safetensors"))


def test_default_cache_under_nbp_mlx_home(tied_gguf):
    folder = import_gguf(tied_gguf)
    assert folder.parent == Path(os.environ["NBP_MLX_HOME"]) / "models" / "gguf"


# ---------------------------------------------------------------------------
# Errors


def test_missing_file_raises(tmp_path):
    path = tmp_path / "absent.gguf"
    with pytest.raises(ModelImportError) as error:
        import_gguf(path, cache_root=tmp_path)
    assert str(path) in str(error.value)
    assert "not found" in str(error.value)


def test_non_gguf_file_raises(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("this is a text file, not a model\n", encoding="utf-8")
    with pytest.raises(ModelImportError) as error:
        import_gguf(path, cache_root=tmp_path / "cache")
    assert str(path) in str(error.value)
    assert "not a GGUF file" in str(error.value)


def test_unsupported_architecture_raises(tiny_model_dir, tmp_path):
    path = write_gguf(tmp_path / "phi3.gguf", tiny_model_dir, arch="phi3")
    with pytest.raises(ModelImportError) as error:
        import_gguf(path, cache_root=tmp_path / "cache")
    assert str(path) in str(error.value)
    assert "'phi3'" in str(error.value)
    assert "qwen2" in str(error.value)


def test_unsupported_tensor_type_raises(tiny_model_dir, tmp_path):
    types = {"blk.1.ffn_norm.weight": GGMLQuantizationType.F64}
    path = write_gguf(tmp_path / "f64.gguf", tiny_model_dir, tensor_types=types)
    with pytest.raises(ModelImportError) as error:
        import_gguf(path, cache_root=tmp_path / "cache")
    assert str(path) in str(error.value)
    assert "blk.1.ffn_norm.weight" in str(error.value)
    assert "F64" in str(error.value)


def test_missing_metadata_key_raises(tiny_model_dir, tmp_path):
    path = write_gguf(tmp_path / "no-blocks.gguf", tiny_model_dir, omit_keys=("qwen2.block_count",))
    with pytest.raises(ModelImportError) as error:
        import_gguf(path, cache_root=tmp_path / "cache")
    assert str(path) in str(error.value)
    assert "qwen2.block_count" in str(error.value)


def test_split_gguf_raises(tiny_model_dir, tmp_path):
    split = (("split.count", "uint16", 2),)
    path = write_gguf(tmp_path / "part-00001-of-00002.gguf", tiny_model_dir, extra_metadata=split)
    with pytest.raises(ModelImportError) as error:
        import_gguf(path, cache_root=tmp_path / "cache")
    assert str(path) in str(error.value)
    assert "llama-gguf-split --merge" in str(error.value)


def test_unsupported_pre_tokenizer_raises(tiny_model_dir, tmp_path):
    path = write_gguf(tmp_path / "falcon.gguf", tiny_model_dir, pre="falcon")
    with pytest.raises(ModelImportError) as error:
        import_gguf(path, cache_root=tmp_path / "cache")
    assert str(path) in str(error.value)
    assert "'falcon'" in str(error.value)


def test_failed_import_leaves_no_folder(tiny_model_dir, tmp_path):
    path = write_gguf(tmp_path / "no-blocks.gguf", tiny_model_dir, omit_keys=("qwen2.block_count",))
    with pytest.raises(ModelImportError):
        import_gguf(path, cache_root=tmp_path / "cache")
    assert [entry.name for entry in (tmp_path / "cache" / "gguf").iterdir()] == ["index.json"]


def test_missing_pre_defaults_to_qwen2_split(tiny_model_dir, tmp_path):
    path = write_gguf(tmp_path / "no-pre.gguf", tiny_model_dir, pre=None)
    folder = import_gguf(path, cache_root=tmp_path / "cache")
    reference = qwen2_reference_tokenizer(tiny_model_dir)
    imported = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in SAMPLE_TEXTS:
        assert imported.encode(text).ids == reference.encode(text).ids, text


# ---------------------------------------------------------------------------
# Real model


def bundled_gguf() -> Path:
    """Return the bundled Qwen2.5-Coder-0.5B-Instruct GGUF, or skip when its extra is not installed.

    NBP_MLX_BUNDLED_GGUF may name another copy of the same file.
    """
    from nbp_mlx.errors import ModelNotFoundError
    from nbp_mlx.models.bundled import bundled_gguf_path

    value = os.environ.get("NBP_MLX_BUNDLED_GGUF")
    if value:
        path = Path(value)
        if not path.is_file():
            pytest.skip(f"NBP_MLX_BUNDLED_GGUF points to a missing file: {path}")
        return path
    try:
        return bundled_gguf_path()
    except ModelNotFoundError as error:
        pytest.skip(f"bundled model not installed: {error}")


@pytest.mark.slow
def test_bundled_model_imports_and_generates(tmp_path):
    from mlx_lm import generate, load

    path = bundled_gguf()
    progress = ProgressRecorder()
    folder = import_gguf(path, cache_root=tmp_path, progress=progress)
    assert len(progress.calls) == 291

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["tie_word_embeddings"] is False
    assert config["vocab_size"] == 151936
    assert import_gguf(path, cache_root=tmp_path, progress=progress) == folder
    assert len(progress.calls) == 291

    model, tokenizer = load(str(folder))
    assert tokenizer.encode("<|im_start|>") == [151644]
    assert tokenizer.encode("<|im_end|>") == [151645]
    assert 151645 in tokenizer.eos_token_ids
    for text in REAL_MODEL_TEXTS:
        assert tokenizer.decode(tokenizer.encode(text)) == text

    messages = [{"role": "user", "content": "Write one word: hello"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    text = generate(model, tokenizer, prompt, max_tokens=8, verbose=False)
    assert text.strip()

    try:
        import llama_cpp
    except ImportError:
        return
    reference = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    rebuilt = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in REAL_MODEL_TEXTS:
        expected = reference.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert rebuilt.encode(text).ids == expected, text
        assert tokenizer.encode(text) == expected, text
