"""The describe/augment command line: kill and resume, missing key, dry run."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_anthropic import FakeAnthropic
from nbp_mlx import cli_datagen
from test_datagen import API_KEY, make_records, read_rows, write_records

REPO_ROOT = Path(__file__).resolve().parent.parent


def cli_env(tmp_path: Path, base_url: str | None, key: str | None = API_KEY) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("ANTHROPIC_")}
    env.update(PYTHONPATH=str(REPO_ROOT), HOME=str(tmp_path / "home"), NBP_MLX_LANG="en")
    if base_url:
        env["ANTHROPIC_BASE_URL"] = base_url
    if key:
        env["ANTHROPIC_API_KEY"] = key
    return env


def describe_command(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "nbp_mlx.cli_datagen", "describe",
        "--input", str(tmp_path / "input.jsonl"), "--output", str(tmp_path / "output.jsonl"),
        "--backoff-base", "0.01", *extra,
    ]


@pytest.fixture
def fake():
    server = FakeAnthropic(latency=0.1).start()
    yield server
    server.stop()


def test_sigkill_then_rerun_saves_every_id_once(tmp_path, fake):
    records = make_records(40)
    write_records(tmp_path / "input.jsonl", records)
    fake.register(records)
    checkpoint = tmp_path / "output.checkpoint.jsonl"
    env = cli_env(tmp_path, fake.base_url)

    process = subprocess.Popen(describe_command(tmp_path, "--concurrency", "2"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if checkpoint.exists() and checkpoint.read_text(encoding="utf-8").count("\n") >= 6:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)

    saved = {row["id"] for row in read_rows(checkpoint)}
    assert 6 <= len(saved) < 40
    fake.reset_log()

    rerun = subprocess.run(describe_command(tmp_path, "--concurrency", "5"), env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr

    rows = read_rows(checkpoint)
    ids = [row["id"] for row in rows]
    assert sorted(ids) == sorted(record["id"] for record in records)
    assert len(ids) == len(set(ids))
    requested = [request.record_id for request in fake.message_requests()]
    assert saved.isdisjoint(requested)
    assert len(requested) == len(set(requested)) == 40 - len(saved)
    assert all(row["description"] for row in read_rows(tmp_path / "output.jsonl"))


def test_missing_key_fails_fast_with_message(tmp_path, fake):
    write_records(tmp_path / "input.jsonl", make_records(3))
    started = time.monotonic()
    result = subprocess.run(describe_command(tmp_path), env=cli_env(tmp_path, fake.base_url, key=None), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no Anthropic API key found; set ANTHROPIC_API_KEY" in result.stderr
    assert fake.requests == []
    assert time.monotonic() - started < 20
    assert not (tmp_path / "output.checkpoint.jsonl").exists()


def test_dry_run_prints_requests_and_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    write_records(tmp_path / "input.jsonl", make_records(7))
    code = cli_datagen.main(["describe", "--dry-run", "--input", str(tmp_path / "input.jsonl"), "--output", str(tmp_path / "out.jsonl")])
    output = capsys.readouterr().out
    assert code == 0
    assert "7 requests to claude-sonnet-5-5" in output
    assert "estimate" in output
    assert not (tmp_path / "out.jsonl").exists()


def test_register_adds_both_commands():
    parser = argparse.ArgumentParser()
    data = parser.add_subparsers(dest="command").add_parser("data")
    cli_datagen.register(data.add_subparsers(dest="data_command"))
    args = parser.parse_args(["data", "augment", "--concurrency", "3", "--batch", "--max-retry-wait", "5"])
    config = cli_datagen.config_from_args(args)
    assert config.task == "augment"
    assert config.input_path == Path("data/described.jsonl")
    assert config.checkpoint_path == Path("data/augmented.checkpoint.jsonl")
    assert (config.concurrency, config.batch, config.max_retry_wait) == (3, True, 5.0)
    assert args.handler is cli_datagen.run_datagen_command
