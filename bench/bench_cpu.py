"""CPU benchmark: matmul, LoRA training and generation on the bundled 0.5B, with and without OpenBLAS.

Usage:
    python bench/bench_cpu.py [--train-iterations 3] [--gen-tokens 64]

The parent process runs each measurement in a child process twice: once with
mlx's bundled reference BLAS (NBP_MLX_NO_OPENBLAS=1, no LD_PRELOAD) and once
with Debian's OpenBLAS preloaded, and prints one Markdown table with both and
their ratio, all from this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def measure(train_iterations: int, gen_tokens: int) -> dict:
    import mlx.core as mx

    from nbp_mlx.config import config_from_dict
    from nbp_mlx.generate import GenerationSettings, GenerationStats, stream_generate
    from nbp_mlx.models.loading import load_model
    from nbp_mlx.train import TrainingObserver, train

    results: dict = {}
    a = mx.random.normal((1024, 1024))
    b = mx.random.normal((1024, 1024))
    mx.eval(a @ b)
    started = time.perf_counter()
    for _ in range(5):
        mx.eval(a @ b)
    results["matmul_gflops"] = 5 * 2 * 1024**3 / (time.perf_counter() - started) / 1e9

    loaded = load_model("bundled")
    stats = GenerationStats()
    for _chunk in stream_generate(loaded, "霓虹街头的赛博朋克女孩", "text", GenerationSettings(temperature=0.0, max_tokens=gen_tokens), stats):
        pass
    results["generation_tokens_per_second"] = stats.tokens_per_second
    results["time_to_first_token_s"] = stats.time_to_first_token
    results["prompt_tokens"] = stats.prompt_tokens
    del loaded

    class Collect(TrainingObserver):
        def __init__(self):
            self.rows = []

        def on_event(self, event):
            if event.kind == "train":
                self.rows.append(event)

    work = Path(os.environ["BENCH_WORK"])
    config = config_from_dict({
        "model_name_or_path": "bundled",
        "dataset_dir": str(work / "dataset"),
        "output_dir": str(work / "adapters"),
        "run_name": f"bench-{os.getpid()}",
        "max_steps": train_iterations,
        "gradient_accumulation_steps": 1,
        "logging_steps": train_iterations,
        "eval_steps": 1000,
        "val_batches": 1,
        "max_seq_length": 512,
    })
    collect = Collect()
    train(config, observer=collect)
    report = collect.rows[-1]
    results["train_tokens_per_second"] = report.tokens_per_second
    results["train_peak_memory_gb"] = report.peak_memory_gb
    return results


def prepare_dataset(work: Path) -> None:
    from mlx_lm.utils import load_tokenizer

    from nbp_mlx.data.importer import import_prompts, write_records
    from nbp_mlx.dataset import prepare_dataset as prepare
    from nbp_mlx.models.resolve import resolve_model

    result = import_prompts(REPO / "data" / "sample_prompts.jsonl")
    # Prompts cut to their first 400 characters keep a training step short enough
    # to measure with the reference BLAS (about 200 tokens per sample).
    for record in result.records:
        record.prompt = record.prompt[:400]
    write_records(work / "prompts.jsonl", result.records)
    tokenizer = load_tokenizer(resolve_model("bundled").path)
    prepare(work / "prompts.jsonl", work / "dataset", tokenizer, max_seq_length=512)


def run_child(preload: bool, args, work: Path) -> dict:
    from nbp_mlx.blas import find_openblas

    environment = dict(os.environ, BENCH_WORK=str(work), NBP_MLX_NO_OPENBLAS="1")
    environment.pop("LD_PRELOAD", None)
    if preload:
        environment["LD_PRELOAD"] = str(find_openblas())
    command = [sys.executable, __file__, "--child", "--train-iterations", str(args.train_iterations), "--gen-tokens", str(args.gen_tokens)]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-iterations", type=int, default=3, help="training iterations per measurement (batch 2, prompts cut to 400 characters)")
    parser.add_argument("--gen-tokens", type=int, default=64, help="new tokens per generation measurement (greedy)")
    parser.add_argument("--work-dir", default="runs/bench", help="folder for the benchmark dataset and adapters")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.train_iterations, args.gen_tokens)))
        return

    work = Path(args.work_dir).resolve()
    prepare_dataset(work)
    reference = run_child(False, args, work)
    openblas = run_child(True, args, work)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d')}\n")
    print("| measurement | reference BLAS | OpenBLAS preloaded | ratio |")
    print("| --- | --- | --- | --- |")
    rows = [
        ("1024x1024 fp32 matmul, GFLOP/s", "matmul_gflops"),
        ("LoRA training, trained tokens/s", "train_tokens_per_second"),
        ("LoRA training peak memory, GB", "train_peak_memory_gb"),
        ("generation, tokens/s", "generation_tokens_per_second"),
        ("time to first token, s", "time_to_first_token_s"),
    ]
    for label, key in rows:
        before, after = reference[key], openblas[key]
        ratio = after / before if before else float("nan")
        print(f"| {label} | {before:.2f} | {after:.2f} | {ratio:.2f}x |")
    print(f"\nprompt tokens: {openblas['prompt_tokens']}; training iterations per run: {args.train_iterations}")


if __name__ == "__main__":
    main()
