"""Ctrl-C during `train` saves the adapter, and `--resume` finishes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from nbp_mlx.data.importer import import_prompts, write_records
from nbp_mlx.dataset import prepare_dataset

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_prompts.jsonl"


def wait_for_train_report(metrics: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"train exited early: {process.communicate()}")
        if metrics.is_file() and '"kind": "train"' in metrics.read_text():
            return
        time.sleep(0.2)
    raise AssertionError("no training report within the timeout")


def test_sigint_saves_and_resume_finishes(tmp_path, tiny_model_dir):
    from mlx_lm.utils import load_tokenizer

    result = import_prompts(SAMPLE)
    write_records(tmp_path / "prompts.jsonl", result.records)
    prepare_dataset(tmp_path / "prompts.jsonl", tmp_path / "dataset", load_tokenizer(tiny_model_dir), max_seq_length=4096)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir),
        "dataset_dir": str(tmp_path / "dataset"),
        "output_dir": str(tmp_path / "adapters"),
        "max_steps": 12,
        "gradient_accumulation_steps": 1,
        "logging_steps": 1,
        "eval_steps": 100,
        "val_batches": 1,
        "max_seq_length": 4096,
    }))
    run_dir = tmp_path / "adapters" / "interrupted"
    command = [sys.executable, "-m", "nbp_mlx", "train", "--config", str(config_path), "--run-name", "interrupted"]
    environment = dict(os.environ, NBP_MLX_LANG="en")

    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_train_report(run_dir / "metrics.jsonl", process)
    process.send_signal(signal.SIGINT)
    _stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    assert "Stopped at iteration" in stderr
    assert "--resume" in stderr
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert 1 <= state["iteration"] < 12
    assert (run_dir / "adapters.safetensors").is_file()
    assert (run_dir / "optimizer.safetensors").is_file()

    resumed = subprocess.run(
        [sys.executable, "-m", "nbp_mlx", "train", "--config", str(config_path), "--resume", str(run_dir)],
        env=environment, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "Training finished" in resumed.stderr
    assert json.loads((run_dir / "trainer_state.json").read_text())["iteration"] == 12
    iterations = [json.loads(line)["iteration"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert iterations == sorted(iterations)
    assert iterations[-1] == 12


def test_existing_run_is_not_overwritten(tmp_path):
    run = tmp_path / "adapters" / "taken"
    run.mkdir(parents=True)
    (run / "adapters.safetensors").write_bytes(b"weights")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "adapters"), "dataset_dir": str(tmp_path / "none")}))
    completed = subprocess.run(
        [sys.executable, "-m", "nbp_mlx", "train", "--config", str(config_path), "--run-name", "taken"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, NBP_MLX_LANG="en"),
    )
    assert completed.returncode == 2
    assert "a run already exists here" in completed.stderr
    assert (run / "adapters.safetensors").read_bytes() == b"weights"
