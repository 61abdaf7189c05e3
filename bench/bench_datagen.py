"""Benchmark of the datagen engine against the fake Anthropic server.

Measures describe throughput at concurrency 1, 5 and 20 with a fixed 200 ms
server latency, as a fraction of the ideal of concurrency ÷ latency requests
per second. Then kills a run with SIGKILL, resumes it and counts duplicate
requests. Prints Markdown tables.

    PYTHONPATH=. python bench/bench_datagen.py
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from fake_anthropic import FakeAnthropic  # noqa: E402
from nbp_mlx.datagen import anthropic_backend  # noqa: E402,F401  (imported here so the SDK import is not timed)
from nbp_mlx.datagen.engine import DatagenConfig, run_datagen  # noqa: E402

LATENCY = 0.2
# The fake server ignores the key; the SDK only needs one to be set.
os.environ.setdefault("ANTHROPIC_API_KEY", "bench-key")
RUNS = ((1, 20), (5, 100), (20, 400))  # (concurrency, records)


def make_records(count: int) -> list[dict]:
    return [
        {"id": f"p-{index:012x}", "prompt": f"Benchmark prompt {index}, a lighthouse at dusk", "format": "text", "description": None, "source": f"bench:{index}"}
        for index in range(count)
    ]


def write_input(folder: Path, records: list[dict]) -> Path:
    path = folder / "input.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def measure_throughput(folder: Path, concurrency: int, count: int) -> tuple[float, float, int]:
    """Return (requests/s, fraction of ideal, max in flight) for one run."""
    server = FakeAnthropic(latency=LATENCY).start()
    try:
        records = make_records(count)
        server.register(records)
        config = DatagenConfig(
            task="describe", input_path=write_input(folder, records), output_path=folder / f"out-{concurrency}.jsonl",
            base_url=server.base_url, concurrency=concurrency,
        )
        started = time.perf_counter()
        result = asyncio.run(run_datagen(config))
        elapsed = time.perf_counter() - started
        assert result.stats.done == count, result.failures
        rate = count / elapsed
        return rate, rate / (concurrency / LATENCY), server.max_in_flight
    finally:
        server.stop()


def measure_kill_and_resume(folder: Path, count: int = 60) -> tuple[int, int, int]:
    """Return (rows saved before the kill, duplicate requests for saved ids, duplicate checkpoint rows)."""
    server = FakeAnthropic(latency=LATENCY).start()
    try:
        records = make_records(count)
        server.register(records)
        input_path = write_input(folder, records)
        output = folder / "killed.jsonl"
        checkpoint = folder / "killed.checkpoint.jsonl"
        env = {name: value for name, value in os.environ.items() if not name.startswith("ANTHROPIC_")}
        env.update(PYTHONPATH=str(REPO_ROOT), ANTHROPIC_BASE_URL=server.base_url, ANTHROPIC_API_KEY="bench-key", HOME=str(folder))
        command = [sys.executable, "-m", "nbp_mlx.cli_datagen", "describe", "--input", str(input_path), "--output", str(output), "--concurrency", "5"]

        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not checkpoint.exists() or checkpoint.read_text(encoding="utf-8").count("\n") < count // 3:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        saved = {json.loads(line)["id"] for line in checkpoint.read_text(encoding="utf-8").splitlines()}
        server.reset_log()

        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        requested = [request.record_id for request in server.message_requests()]
        rows = [json.loads(line)["id"] for line in checkpoint.read_text(encoding="utf-8").splitlines()]
        return len(saved), sum(1 for record_id in requested if record_id in saved), len(rows) - len(set(rows))
    finally:
        server.stop()


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for concurrency, count in RUNS:
            rate, fraction, peak = measure_throughput(folder, concurrency, count)
            rows.append((concurrency, count, rate, concurrency / LATENCY, fraction, peak))
        saved, duplicate_requests, duplicate_rows = measure_kill_and_resume(folder)

    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"Date: {date.today().isoformat()}; fake server latency {LATENCY * 1000:.0f} ms; script bench/bench_datagen.py\n")
    print("| concurrency | requests | requests/s | ideal requests/s | fraction of ideal | max in flight |")
    print("|---:|---:|---:|---:|---:|---:|")
    for concurrency, count, rate, ideal, fraction, peak in rows:
        print(f"| {concurrency} | {count} | {rate:.1f} | {ideal:.1f} | {fraction:.0%} | {peak} |")
    print()
    print("| kill and resume (60 records, concurrency 5) | value |")
    print("|---|---:|")
    print(f"| rows saved before SIGKILL | {saved} |")
    print(f"| requests for already saved ids after resume | {duplicate_requests} |")
    print(f"| duplicate checkpoint rows | {duplicate_rows} |")


if __name__ == "__main__":
    main()
