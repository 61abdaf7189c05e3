"""End-to-end tests of `python -m nbp_mlx eval` on tiny models: MLX base against MLX + adapter, and llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbp_mlx.cli import main

SHARED_SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "nbp_public_sample.jsonl"

PAIRS = [
    {"prompt": "A girl in a yellow raincoat on a neon street at night, rain, reflections, 35mm, cinematic.", "description": "雨夜霓虹街头穿黄色雨衣的女孩"},
    {"prompt": "An old fisherman mending a net at golden hour, weathered hands, 85mm portrait.", "description": "黄昏时补渔网的老渔夫"},
    {"prompt": "A red fox in fresh snow, telephoto lens, soft morning light.", "description": "清晨雪地里的红狐狸"},
    {"prompt": {"subject": "a cat on a windowsill", "lighting": "soft window light", "camera": "50mm"}, "description": "窗台上的猫"},
]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in PAIRS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from test_export import make_random_adapter

    return make_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "run")


def run_eval(*args: str) -> int:
    return main(["eval", *args])


def test_mlx_base_and_tuned_report(tiny_model_dir, adapter_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "eval"

    code = run_eval("--pairs", str(pairs_file), "--model", str(tiny_model_dir), "--adapter", str(adapter_dir),
                    "--max-tokens", "12", "--out", str(out))

    assert code == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert sorted(report["summary"]) == ["base", "tuned"]
    assert report["settings"]["decoding"] == "greedy"
    assert report["settings"]["seed"] == 0
    chrf = report["comparison"]["metrics"]["chrf"]
    assert chrf["ci_low"] <= chrf["mean_difference"] <= chrf["ci_high"]
    assert (out / "report.png").read_bytes().startswith(b"\x89PNG")
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "base" in markdown
    assert "tuned" in markdown
    json_items = [item for item in report["items"]["tuned"] if item["format"] == "json"]
    assert len(json_items) == 1
    assert json_items[0]["json_valid"] is True
    assert "chrF tuned − base" in capsys.readouterr().err


def test_rerun_generates_nothing_again(tiny_model_dir, adapter_dir, pairs_file, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    args = ("--pairs", str(pairs_file), "--model", str(tiny_model_dir), "--adapter", str(adapter_dir),
            "--max-tokens", "8", "--limit", "2", "--out", str(out))
    assert run_eval(*args) == 0
    before = (out / "items-tuned.jsonl").read_text(encoding="utf-8")

    import nbp_mlx.backends

    def reject_load(*_args, **_kwargs):
        raise AssertionError("a finished evaluation loaded a model again")

    monkeypatch.setattr(nbp_mlx.backends.MlxBackend, "__init__", reject_load)
    assert run_eval(*args) == 0
    assert (out / "items-tuned.jsonl").read_text(encoding="utf-8") == before
    # The system labels are translated, but the run matches in another language too.
    assert main(["--lang", "zh", "eval", *args]) == 0


def test_other_settings_same_folder_fail(tiny_model_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_eval("--pairs", str(pairs_file), "--model", str(tiny_model_dir), "--max-tokens", "4", "--limit", "1", "--out", str(out)) == 0

    code = run_eval("--pairs", str(pairs_file), "--model", str(tiny_model_dir), "--max-tokens", "5", "--limit", "1", "--out", str(out))

    assert code == 2
    assert "another --out" in capsys.readouterr().err


def test_llamacpp_base_only(tiny_model_dir, pairs_file, tmp_path):
    pytest.importorskip("llama_cpp")
    from nbp_mlx.export.gguf import export_gguf

    gguf = tmp_path / "tiny-f32.gguf"
    export_gguf(tiny_model_dir, gguf, "f32")
    out = tmp_path / "eval"

    assert run_eval("--pairs", str(pairs_file), "--backend", "llamacpp", "--base-gguf", str(gguf), "--max-tokens", "8", "--out", str(out)) == 0

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert list(report["summary"]) == ["base"]
    assert report["comparison"] is None
    assert all(item["generated_tokens"] > 0 for item in report["items"]["base"])


def test_llamacpp_without_files_fails(pairs_file, tmp_path, capsys):
    assert run_eval("--pairs", str(pairs_file), "--backend", "llamacpp", "--out", str(tmp_path / "eval")) == 2

    assert "--gguf" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_SAMPLE.exists(), reason="../shared/data/nbp_public_sample.jsonl is not present")
def test_public_sample_pairs(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"

    assert run_eval("--pairs", str(SHARED_SAMPLE), "--model", str(tiny_model_dir), "--limit", "3", "--max-tokens", "4", "--out", str(out)) == 0

    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert len(run["pair_ids"]) == 3


def test_option_of_other_backend_is_rejected(tiny_model_dir, pairs_file, tmp_path, capsys):
    code = run_eval("--pairs", str(pairs_file), "--model", str(tiny_model_dir), "--gguf", str(tmp_path / "absent.gguf"), "--out", str(tmp_path / "eval"))

    assert code == 2
    assert "--gguf applies to --backend llamacpp" in capsys.readouterr().err


def test_changed_adapter_is_not_reused(tiny_model_dir, adapter_dir, pairs_file, tmp_path, capsys):
    import os

    out = tmp_path / "eval"
    args = ("--pairs", str(pairs_file), "--model", str(tiny_model_dir), "--adapter", str(adapter_dir), "--no-base",
            "--max-tokens", "4", "--limit", "1", "--out", str(out))
    assert run_eval(*args) == 0
    weights = adapter_dir / "adapters.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # as if training wrote it again

    code = run_eval(*args)

    assert code == 2
    assert "tuned: " in capsys.readouterr().err
