"""Fuse, GGUF export, Ollama Modelfile and the parity proof, on the tiny test model.

The tiny model's matrices are scaled up (``WEIGHT_SCALE``) so that its greedy
path visits many different tokens with clear top-1/top-2 margins. At the
default scale it repeats one or two tokens, which would make the greedy
comparison prove little.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, TokenType

from nbp_mlx.errors import ModelNotFoundError
from nbp_mlx.export import ExportError, ExportParityError
from nbp_mlx.export.check import check_export, mlx_greedy_token_ids
from nbp_mlx.export.gguf import OUTTYPES, export_gguf
from nbp_mlx.export.ollama import (
    CHATML_TEMPLATE,
    read_modelfile_template,
    render_modelfile,
    render_ollama_template,
    write_modelfile,
)
from nbp_mlx.fuse import FUSE_RECORD, PARITY_TOLERANCE, fuse_adapter, parity_prompt_ids
from nbp_mlx.models.loading import load_model
from nbp_mlx.prompts import SYSTEM_PROMPT, build_messages, render_instruction
from tiny_model import build_tiny_model

WEIGHT_SCALE = 4.0
# The design dropout: fuse and check must switch the LoRA layers to inference mode.
LORA_PARAMETERS = {"rank": 8, "scale": 2.0, "dropout": 0.05}
DESCRIPTION = "霓虹街头的赛博朋克女孩，雨夜，电影感"


def build_scaled_tiny_model(folder: Path, *, seed: int = 0, hidden_size: int = 64) -> Path:
    """Write the tiny model with every matrix multiplied by ``WEIGHT_SCALE``."""
    build_tiny_model(folder, seed=seed, hidden_size=hidden_size)
    weights = mx.load(str(folder / "model.safetensors"))
    scaled = {name: value * WEIGHT_SCALE if value.ndim == 2 else value for name, value in weights.items()}
    mx.save_safetensors(str(folder / "model.safetensors"), scaled)
    return folder


def make_random_adapter(base: Path, folder: Path, *, seed: int = 3, lora_b_scale: float = 0.1, zero: bool = False) -> Path:
    """Write an adapter folder for ``base`` with random non-zero LoRA weights, laid out as `train` writes it."""
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    loaded = load_model(str(base))
    loaded.model.freeze()
    layers = len(loaded.model.layers)
    linear_to_lora_layers(loaded.model, layers, LORA_PARAMETERS)
    mx.random.seed(seed)
    weights = {}
    for name, value in tree_flatten(loaded.model.trainable_parameters()):
        if name.endswith("lora_b"):
            value = mx.zeros(value.shape) if zero else mx.random.normal(value.shape) * lora_b_scale
        weights[name] = value
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    config = {
        "fine_tune_type": "lora",
        "num_layers": layers,
        "lora_parameters": LORA_PARAMETERS,
        "model": str(base),
        "nbp_mlx": {"model": str(base), "model_path": str(base), "model_source": "folder"},
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A scaled tiny model, a random adapter, its fused folder and F32/F16/Q8_0 GGUF files."""
    work = tmp_path_factory.mktemp("export")
    base = build_scaled_tiny_model(work / "base")
    adapter = make_random_adapter(base, work / "adapters" / "run-1")
    result = fuse_adapter(adapter, work / "fused")
    files = {outtype: work / "gguf" / f"tiny-{outtype}.gguf" for outtype in ("f32", "f16", "q8_0")}
    for outtype, path in files.items():
        export_gguf(result.output, path, outtype)
    return {"work": work, "base": base, "adapter": adapter, "fused": result.output, "fuse": result, **files}


# ---------------------------------------------------------------------------
# Fuse


def test_fuse_matches_adapter_logits(exported):
    result = exported["fuse"]
    assert result.relative_diff <= PARITY_TOLERANCE
    assert result.adapter_effect > 0.01 * result.logit_scale
    assert result.fused_effect == pytest.approx(result.adapter_effect, rel=1e-3)


def test_fuse_writes_standalone_folder(exported):
    fused = exported["fused"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", FUSE_RECORD):
        assert (fused / name).is_file(), name
    record = json.loads((fused / FUSE_RECORD).read_text())
    assert record["adapter"] == str(exported["adapter"].resolve())
    assert record["base_model"] == str(exported["base"])
    assert record["tolerance"] == PARITY_TOLERANCE
    weights = mx.load(str(fused / "model.safetensors"))
    assert not any("lora" in name for name in weights)
    assert all(value.dtype == mx.float32 for value in weights.values())


def test_fuse_replaces_own_output(exported, tmp_path):
    output = tmp_path / "fused"
    fuse_adapter(exported["adapter"], output)
    again = fuse_adapter(exported["adapter"], output)
    assert again.relative_diff <= PARITY_TOLERANCE


def test_fuse_zero_adapter_raises(exported, tmp_path):
    adapter = make_random_adapter(exported["base"], tmp_path / "zero", zero=True)
    with pytest.raises(ExportParityError) as error:
        fuse_adapter(adapter, tmp_path / "fused")
    assert "adapters.safetensors" in str(error.value)
    assert "train it" in str(error.value)
    assert not (tmp_path / "fused").exists()


def test_fuse_detects_dropped_adapter(exported, tmp_path, monkeypatch):
    from mlx_lm.tuner.lora import LoRALinear

    monkeypatch.setattr(LoRALinear, "fuse", lambda self, dequantize=False: self.linear)
    with pytest.raises(ExportParityError) as error:
        fuse_adapter(exported["adapter"], tmp_path / "fused")
    assert "dropped the adapter" in str(error.value)
    assert not (tmp_path / "fused").exists()


@pytest.fixture(scope="module")
def quantized_base(tmp_path_factory):
    from mlx_lm.utils import quantize_model, save_config, save_model

    folder = tmp_path_factory.mktemp("quantized") / "base-4bit"
    source = build_scaled_tiny_model(folder.parent / "source")
    loaded = load_model(str(source))
    model, config = quantize_model(loaded.model, dict(loaded.config), group_size=32, bits=4)
    folder.mkdir()
    save_model(folder, model, donate_model=False)
    save_config(config, config_path=folder / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / name)
    return folder


def test_fuse_quantized_base_dequantize(quantized_base, tmp_path):
    adapter = make_random_adapter(quantized_base, tmp_path / "adapter")
    result = fuse_adapter(adapter, tmp_path / "fused", dequantize=True)
    assert result.relative_diff <= PARITY_TOLERANCE
    config = json.loads((tmp_path / "fused" / "config.json").read_text())
    assert "quantization" not in config
    weights = mx.load(str(tmp_path / "fused" / "model.safetensors"))
    assert not any(name.endswith(".scales") for name in weights)

    export_gguf(tmp_path / "fused", tmp_path / "fused.gguf", "f32")
    assert (tmp_path / "fused.gguf").stat().st_size > 0


def test_fuse_quantized_base_needs_dequantize(quantized_base, tmp_path):
    adapter = make_random_adapter(quantized_base, tmp_path / "adapter")
    with pytest.raises(ExportError) as error:
        fuse_adapter(adapter, tmp_path / "fused")
    assert str(quantized_base / "config.json") in str(error.value)
    assert "--dequantize" in str(error.value)


# ---------------------------------------------------------------------------
# Bad input


def test_fuse_adapter_without_config(exported, tmp_path):
    adapter = tmp_path / "broken"
    adapter.mkdir()
    shutil.copy(exported["adapter"] / "adapters.safetensors", adapter)
    with pytest.raises(ModelNotFoundError) as error:
        fuse_adapter(adapter, tmp_path / "fused")
    message = str(error.value)
    assert str(adapter) in message
    assert "adapter_config.json is missing" in message
    assert "python -m nbp_mlx train" in message


def test_fuse_adapter_from_other_base_shapes(exported, tmp_path):
    other = build_scaled_tiny_model(tmp_path / "wider", hidden_size=96)
    adapter = make_random_adapter(other, tmp_path / "adapter")
    with pytest.raises(ExportError) as error:
        fuse_adapter(adapter, tmp_path / "fused", model=str(exported["base"]))
    message = str(error.value)
    assert "trained on" in message
    assert "--model" in message
    assert str(adapter / "adapter_config.json") in message


def test_fuse_adapter_shape_mismatch_names_file(exported, tmp_path):
    other = build_scaled_tiny_model(tmp_path / "wider", hidden_size=96)
    adapter = make_random_adapter(other, tmp_path / "adapter")
    # Point the record at the tiny base, as a hand-edited or copied config would.
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["model"] = config["nbp_mlx"]["model"] = config["nbp_mlx"]["model_path"] = str(exported["base"])
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError) as error:
        fuse_adapter(adapter, tmp_path / "fused")
    message = str(error.value)
    assert str(adapter / "adapters.safetensors") in message
    assert "has shape" in message
    assert "pass --model with that model" in message


def test_gguf_output_under_a_file(exported, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    output = blocker / "model.gguf"
    with pytest.raises(ExportError) as error:
        export_gguf(exported["fused"], output, "f16")
    assert str(output) in str(error.value)
    assert "writable folder" in str(error.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_gguf_output_read_only_folder(exported, tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(ExportError) as error:
            export_gguf(exported["fused"], folder / "model.gguf", "f16")
    finally:
        folder.chmod(stat.S_IRWXU)
    assert str(folder / "model.gguf") in str(error.value)
    assert "not writable" in str(error.value)
    assert list(folder.iterdir()) == []


def test_gguf_unsupported_quantization_type(exported, tmp_path):
    output = tmp_path / "model.gguf"
    with pytest.raises(ExportError) as error:
        export_gguf(exported["fused"], output, "q3_k_s")
    message = str(error.value)
    assert "q3_k_s" in message
    assert str(output) in message
    for outtype in OUTTYPES:
        assert outtype in message
    assert not output.exists()


def test_gguf_model_folder_without_config(tmp_path):
    with pytest.raises(ExportError) as error:
        export_gguf(tmp_path, tmp_path / "model.gguf", "f16")
    assert "config.json is missing" in str(error.value)
    assert "fuse" in str(error.value)


# ---------------------------------------------------------------------------
# GGUF contents


def _field(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


def test_gguf_metadata(exported):
    reader = GGUFReader(exported["f32"])
    config = json.loads((exported["fused"] / "config.json").read_text())
    assert _field(reader, "general.architecture") == "qwen2"
    assert _field(reader, "qwen2.block_count") == config["num_hidden_layers"]
    assert _field(reader, "qwen2.context_length") == config["max_position_embeddings"]
    assert _field(reader, "qwen2.embedding_length") == config["hidden_size"]
    assert _field(reader, "qwen2.feed_forward_length") == config["intermediate_size"]
    assert _field(reader, "qwen2.attention.head_count") == config["num_attention_heads"]
    assert _field(reader, "qwen2.attention.head_count_kv") == config["num_key_value_heads"]
    assert _field(reader, "qwen2.rope.freq_base") == pytest.approx(config["rope_theta"])
    assert _field(reader, "qwen2.attention.layer_norm_rms_epsilon") == pytest.approx(config["rms_norm_eps"])
    assert _field(reader, "nbp_mlx.adapter") == exported["adapter"].resolve().name


def test_gguf_tokenizer_metadata(exported):
    reader = GGUFReader(exported["f32"])
    tokenizer = json.loads((exported["fused"] / "tokenizer.json").read_text())
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.pre") == "qwen2"
    assert len(tokens) == len(tokenizer["model"]["vocab"])
    assert len(_field(reader, "tokenizer.ggml.merges")) == len(tokenizer["model"]["merges"])
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert types[tokens.index(special)] == TokenType.CONTROL, special
    assert types[tokens.index("a")] == TokenType.NORMAL
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tokens.index("<|im_end|>")
    assert _field(reader, "tokenizer.ggml.padding_token_id") == tokens.index("<|endoftext|>")
    assert _field(reader, "tokenizer.ggml.add_bos_token") is False
    config = json.loads((exported["fused"] / "tokenizer_config.json").read_text())
    assert _field(reader, "tokenizer.chat_template") == config["chat_template"]


def test_gguf_tensor_names_and_types(exported):
    by_name = {tensor.name: tensor for tensor in GGUFReader(exported["q8_0"]).tensors}
    expected = {"token_embd.weight", "output_norm.weight"}
    for block in range(2):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "attn_norm", "ffn_norm"):
            expected.add(f"blk.{block}.{name}.weight")
        for name in ("attn_q", "attn_k", "attn_v"):
            expected.add(f"blk.{block}.{name}.bias")
    assert set(by_name) == expected  # tied embeddings: no output.weight
    assert by_name["blk.0.attn_q.weight"].tensor_type == GGMLQuantizationType.Q8_0
    assert by_name["token_embd.weight"].tensor_type == GGMLQuantizationType.Q8_0
    assert by_name["blk.0.attn_q.bias"].tensor_type == GGMLQuantizationType.F32
    assert by_name["blk.0.attn_norm.weight"].tensor_type == GGMLQuantizationType.F32
    f16 = {tensor.name: tensor for tensor in GGUFReader(exported["f16"]).tensors}
    assert f16["blk.1.ffn_down.weight"].tensor_type == GGMLQuantizationType.F16
    assert f16["output_norm.weight"].tensor_type == GGMLQuantizationType.F32


def test_gguf_f32_weights_equal_fused(exported):
    weights = mx.load(str(exported["fused"] / "model.safetensors"))
    by_name = {tensor.name: tensor for tensor in GGUFReader(exported["f32"]).tensors}
    for hf_name, gguf_name in (
        ("model.layers.1.self_attn.q_proj.weight", "blk.1.attn_q.weight"),
        ("model.layers.0.self_attn.v_proj.bias", "blk.0.attn_v.bias"),
        ("model.embed_tokens.weight", "token_embd.weight"),
    ):
        expected = np.array(weights[hf_name])
        found = np.asarray(by_name[gguf_name].data).reshape(expected.shape)
        np.testing.assert_array_equal(found, expected, err_msg=gguf_name)


def test_gguf_untied_output(exported, tmp_path):
    folder = tmp_path / "untied"
    shutil.copytree(exported["fused"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config))
    weights = dict(mx.load(str(folder / "model.safetensors")))
    mx.random.seed(7)
    weights["lm_head.weight"] = mx.random.normal(weights["model.embed_tokens.weight"].shape)
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    (folder / "model.safetensors.index.json").unlink(missing_ok=True)

    export_gguf(folder, tmp_path / "untied.gguf", "f32")
    names = {tensor.name for tensor in GGUFReader(tmp_path / "untied.gguf").tensors}
    assert "output.weight" in names

    from nbp_mlx.backends.llamacpp import greedy_token_ids, open_gguf

    loaded = load_model(str(folder))
    prompt = parity_prompt_ids(loaded.tokenizer)
    banned = set(loaded.tokenizer.eos_token_ids)
    expected, _margins = mlx_greedy_token_ids(loaded.model, prompt, 16, banned)
    llm = open_gguf(tmp_path / "untied.gguf", n_ctx=1024)
    try:
        found, _margins = greedy_token_ids(llm, prompt, 16, banned)
    finally:
        llm.close()
    assert found == expected


def test_gguf_q4_k_m_loads(exported, tmp_path):
    from nbp_mlx.backends.llamacpp import greedy_token_ids, open_gguf

    output = tmp_path / "tiny-q4_k_m.gguf"
    result = export_gguf(exported["fused"], output, "q4_k_m")
    assert result.outtype == "q4_k_m"
    assert _field(GGUFReader(output), "general.file_type") == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert output.stat().st_size < exported["f16"].stat().st_size
    assert [path.name for path in tmp_path.iterdir()] == [output.name]  # no temporary files left
    llm = open_gguf(output, n_ctx=1024)
    try:
        tokens, _margins = greedy_token_ids(llm, [1, 2, 3], 4)
    finally:
        llm.close()
    assert len(tokens) == 4


# ---------------------------------------------------------------------------
# Ollama Modelfile


def test_modelfile_contents():
    text = render_modelfile("tiny-q8_0.gguf")
    assert text.startswith("FROM ./tiny-q8_0.gguf\n")
    assert f'TEMPLATE """{CHATML_TEMPLATE}"""' in text
    assert f'SYSTEM """{SYSTEM_PROMPT}"""' in text
    for line in ("PARAMETER temperature 0.7", "PARAMETER top_p 0.9", "PARAMETER num_predict 2048",
                 'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|endoftext|>"'):
        assert line in text.splitlines(), line


def test_ollama_template_renders_training_text(exported):
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(exported["fused"])
    for prompt_format in ("text", "json"):
        expected = tokenizer.apply_chat_template(build_messages(DESCRIPTION, prompt_format), add_generation_prompt=True, tokenize=False)
        rendered = render_ollama_template(CHATML_TEMPLATE, system=SYSTEM_PROMPT, prompt=render_instruction(DESCRIPTION, prompt_format))
        assert rendered == expected


def test_ollama_template_if_blocks():
    assert render_ollama_template(CHATML_TEMPLATE, prompt="hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render_ollama_template("{{ if .System }}a{{ if .Prompt }}b{{ end }}c{{ end }}d", system="s") == "acd"
    with pytest.raises(ValueError):
        render_ollama_template("{{ if .System }}x", system="s")
    with pytest.raises(ValueError):
        render_ollama_template("{{ .Messages }}")


def test_write_modelfile_without_ollama(exported, tmp_path, monkeypatch):
    gguf = tmp_path / "model.gguf"
    shutil.copy(exported["q8_0"], gguf)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = write_modelfile(gguf, "nbp-prompt:latest")
    assert not result.created
    assert result.create_command == ["ollama", "create", "nbp-prompt:latest", "-f", str(tmp_path / "Modelfile")]
    template, system = read_modelfile_template(result.modelfile)
    assert template == CHATML_TEMPLATE
    assert system == SYSTEM_PROMPT


def test_write_modelfile_runs_ollama_create(exported, tmp_path, monkeypatch):
    gguf = tmp_path / "model.gguf"
    shutil.copy(exported["q8_0"], gguf)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ollama"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/ollama-args\necho success\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    result = write_modelfile(gguf, "nbp-prompt")
    assert result.created
    assert result.ollama_output == "success"
    assert (tmp_path / "ollama-args").read_text().split() == ["create", "nbp-prompt", "-f", str(tmp_path / "Modelfile")]


def test_write_modelfile_bad_name(exported, tmp_path):
    with pytest.raises(ExportError) as error:
        write_modelfile(exported["q8_0"], "Bad Name!")
    assert "Bad Name!" in str(error.value)


def test_modelfile_rejects_triple_quotes():
    with pytest.raises(ExportError):
        render_modelfile("m.gguf", system='say """hi"""')


# ---------------------------------------------------------------------------
# Parity proof


def test_export_parity_tiny(exported):
    report = check_export(exported["adapter"], exported["fused"], exported["f32"], exported["f16"], description=DESCRIPTION)
    prompt_rows = [row for row in report.rows if row.kind == "prompt"]
    assert len(prompt_rows) == 3
    for row in prompt_rows:
        assert row.token_ids == prompt_rows[0].token_ids, row.name

    reference = report.row("base model + adapter (MLX)")
    assert len(reference.token_ids) == 32
    # The comparison means something only if the path is varied and not near-tied:
    # F32 llama.cpp and MLX differ by about 1e-5 in the logits.
    assert len(set(reference.token_ids)) >= 8
    assert reference.min_margin > 1e-3
    assert report.row("fused (MLX)").token_ids == reference.token_ids
    assert report.row("GGUF (llama.cpp)").token_ids == reference.token_ids
    assert report.row("GGUF F16 (llama.cpp)").token_ids[:16] == reference.token_ids[:16]
    assert report.passed


def test_export_parity_differs_from_base(exported):
    """The adapter changes the greedy path, so matching it proves the adapter survived."""
    base = load_model(str(exported["base"]))
    prompt = parity_prompt_ids(base.tokenizer)
    base_ids, _margins = mlx_greedy_token_ids(base.model, prompt, 32, set(base.tokenizer.eos_token_ids))
    report = check_export(exported["adapter"], exported["fused"], exported["f32"])
    assert report.row("GGUF (llama.cpp)").token_ids != base_ids


def test_export_check_with_modelfile(exported, tmp_path):
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(render_modelfile("tiny.gguf"))
    report = check_export(exported["adapter"], exported["fused"], exported["f32"], modelfile=modelfile, tokens=8)
    assert report.row("Modelfile TEMPLATE (llama.cpp)").passed


def test_cli_fuse_export_check(exported, tmp_path, capsys, monkeypatch):
    import argparse

    from nbp_mlx.cli_export import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return args.handler(args)

    fused = tmp_path / "fused"
    gguf = tmp_path / "tiny-f32.gguf"
    assert run("fuse", "--adapter", str(exported["adapter"]), "--output", str(fused)) == 0
    assert run("export", "gguf", "--model", str(fused), "--output", str(gguf), "--outtype", "f32") == 0
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("COLUMNS", "200")
    assert run("export", "ollama", "--gguf", str(gguf), "--name", "nbp-tiny") == 0
    assert (tmp_path / "Modelfile").is_file()
    assert run("export", "check", "--adapter", str(exported["adapter"]), "--fused", str(fused), "--gguf", str(gguf),
               "--modelfile", str(tmp_path / "Modelfile"), "--tokens", "16") == 0
    output = capsys.readouterr()
    assert "GGUF (llama.cpp)" in output.out
    assert output.out.count(" pass ") == 6
    assert "FAIL" not in output.out
    assert "ollama create nbp-tiny" in output.err


# ---------------------------------------------------------------------------
# Bundled 0.5B


@pytest.mark.slow
def test_export_parity_bundled(tmp_path):
    from nbp_mlx.models.resolve import resolve_model

    try:
        base = resolve_model("bundled").path
    except ModelNotFoundError as error:
        pytest.skip(str(error))
    adapter = make_random_adapter(base, tmp_path / "adapter", lora_b_scale=0.02)
    fused = fuse_adapter(adapter, tmp_path / "fused")
    assert fused.relative_diff <= PARITY_TOLERANCE
    gguf = tmp_path / "bundled-f32.gguf"
    export_gguf(fused.output, gguf, "f32")
    report = check_export(adapter, fused.output, gguf)
    for row in report.rows:
        assert row.passed, f"{row.name}: {row.agreeing} agreeing, {row.required} required"
    assert report.row("GGUF (llama.cpp)").token_ids == report.row("base model + adapter (MLX)").token_ids
