from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nbp_mlx import blas
from nbp_mlx.errors import ModelNotFoundError
from nbp_mlx.models.loading import check_adapter_folder, load_model
from nbp_mlx.models.resolve import resolve_model


def test_local_folder_resolves(tiny_model_dir):
    resolved = resolve_model(str(tiny_model_dir))
    assert resolved.source == "folder"
    assert resolved.path == tiny_model_dir.resolve()


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json is missing"):
        resolve_model(str(tmp_path))


def test_missing_gguf_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "absent.gguf"))


def test_hub_id_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("nbp-mlx-tests/not-a-real-model")
    assert "nbp-mlx-tests/not-a-real-model" in str(error.value)
    assert "--model bundled" in str(error.value)


def test_cpu_loads_float32(tiny_model_dir):
    import mlx.core as mx

    if mx.default_device().type == mx.DeviceType.gpu:
        pytest.skip("float32 is the CPU rule; a GPU keeps the stored dtype")
    loaded = load_model(str(tiny_model_dir))
    assert loaded.model.model.embed_tokens.weight.dtype == mx.float32


def test_adapter_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="adapter_config.json is missing"):
        check_adapter_folder(tmp_path)


def test_stop_tokens_include_both_qwen_markers(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    vocab = loaded.tokenizer.get_vocab()
    assert {vocab["<|im_end|>"], vocab["<|endoftext|>"]} <= set(loaded.tokenizer.eos_token_ids)


def test_openblas_preload_plan_respects_opt_out(monkeypatch):
    monkeypatch.setenv(blas.OPT_OUT_ENV, "1")
    assert blas.preload_plan() is None
    monkeypatch.delenv(blas.OPT_OUT_ENV)
    monkeypatch.setenv(blas.MARKER_ENV, "/some/libopenblas.so.0")
    assert blas.preload_plan() is None


def test_cli_reexecutes_with_openblas(tmp_path):
    environment = {key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", blas.MARKER_ENV, blas.OPT_OUT_ENV)}
    probe = dict(environment)
    plan = subprocess.run(
        [sys.executable, "-c", "from nbp_mlx.blas import preload_plan; print(preload_plan() or '')"],
        env=probe, capture_output=True, text=True, check=True,
    ).stdout.strip()
    if not plan:
        pytest.skip("not Linux with mlx's reference BLAS and Debian's OpenBLAS")
    script = "import os, sys; from nbp_mlx.cli import main; sys.argv = ['x', 'model', sys.argv[1]]; rc = main(); print('LD_PRELOAD=' + os.environ.get('LD_PRELOAD', '')); sys.exit(rc)"
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "absent.gguf")], env=environment, capture_output=True, text=True,
    )
    assert "Preloaded OpenBLAS" in completed.stderr
    assert completed.stdout.count("LD_PRELOAD=" + plan) == 1
    assert completed.returncode == 2
    assert "GGUF file not found" in completed.stderr

    opted_out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "absent.gguf")], env=dict(environment, NBP_MLX_NO_OPENBLAS="1"),
        capture_output=True, text=True,
    )
    assert "Preloaded OpenBLAS" not in opted_out.stderr
    assert "LD_PRELOAD=\n" in opted_out.stdout
