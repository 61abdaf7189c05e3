"""Decode speed of the generation backends on the bundled 0.5B model, against the memory-bandwidth limit.

Usage:
    python bench/bench_backends.py [--tokens 128] [--threads N]

One run on one machine measures time to first token and decode tokens/s for
MLX (float32, OpenBLAS preloaded as the CLI does) and for llama.cpp with F16,
Q8_0 and Q4_K_M GGUF files exported from the same model. Decoding reads every
weight once per token, so memory bandwidth divided by the weight bytes bounds
the decode rate. The bandwidth is measured with a large numpy copy. The
output is one Markdown table with the machine and the date.

The GGUF files are written once into ``$NBP_MLX_HOME/models/bench/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DESCRIPTION = "霓虹街头的赛博朋克女孩，雨夜，电影感"
OUTTYPES = ("f16", "q8_0", "q4_k_m")


def measure_bandwidth(size_bytes: int = 1 << 30, repeats: int = 5) -> float:
    """Return the best copy bandwidth in bytes/s: each copy reads and writes ``size_bytes``."""
    import numpy as np

    source = np.ones(size_bytes // 8, dtype=np.float64)
    target = np.empty_like(source)
    best = float("inf")
    for _repeat in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * size_bytes / best


def bench_mlx(tokens: int) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from nbp_mlx.export.check import mlx_greedy_token_ids
    from nbp_mlx.fuse import parity_prompt_ids
    from nbp_mlx.models.loading import load_model

    loaded = load_model("bundled")
    weight_bytes = sum(value.nbytes for _name, value in tree_flatten(loaded.model.parameters()))
    prompt = parity_prompt_ids(loaded.tokenizer)
    banned = set(loaded.tokenizer.eos_token_ids)
    # The first call warms caches and allocations, so only the second counts.
    mlx_greedy_token_ids(loaded.model, prompt, 4, banned)
    timing = _time_decoding(lambda count: mlx_greedy_token_ids(loaded.model, prompt, count, banned), tokens)
    del loaded
    mx.clear_cache()
    return {"weight_bytes": weight_bytes, "prompt_tokens": len(prompt), **timing}


def bench_llamacpp(gguf: Path, tokens: int, threads: int | None, prompt: list[int], banned: set[int]) -> dict:
    from nbp_mlx.backends.llamacpp import greedy_token_ids, open_gguf

    llm = open_gguf(gguf, n_threads=threads)
    try:
        greedy_token_ids(llm, prompt, 4, banned)
        # greedy_token_ids resets the context, so the prompt is evaluated again in full.
        timing = _time_decoding(lambda count: greedy_token_ids(llm, prompt, count, banned), tokens)
    finally:
        llm.close()
    return {"weight_bytes": _gguf_tensor_bytes(gguf), "prompt_tokens": len(prompt), **timing}


def _time_decoding(decode, tokens: int) -> dict:
    """Time greedy decoding of 1 token (prompt + first token) and of ``tokens`` tokens, with end-of-turn banned."""
    started = time.perf_counter()
    decode(1)
    first = time.perf_counter() - started
    started = time.perf_counter()
    decode(tokens)
    total = time.perf_counter() - started
    return {"time_to_first_token": first, "tokens_per_second": (tokens - 1) / max(total - first, 1e-9), "new_tokens": tokens}


def _gguf_tensor_bytes(gguf: Path) -> int:
    from gguf import GGUFReader

    return sum(int(tensor.n_bytes) for tensor in GGUFReader(gguf).tensors)


def export_bench_files() -> dict[str, Path]:
    from nbp_mlx.export.gguf import export_gguf
    from nbp_mlx.models.resolve import resolve_model
    from nbp_mlx.paths import models_cache_dir

    folder = resolve_model("bundled").path
    out_dir = models_cache_dir() / "bench"
    files = {}
    for outtype in OUTTYPES:
        path = out_dir / f"bundled-{outtype}.gguf"
        if not path.is_file():
            print(f"exporting {path}", file=sys.stderr)
            export_gguf(folder, path, outtype)
        files[outtype] = path
    return files


def machine_line() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{platform.system()} {platform.machine()}, {model}, {os.cpu_count()} CPUs{memory}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="maximum new tokens per measured generation (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: all CPUs)")
    args = parser.parse_args()

    from nbp_mlx.blas import MARKER_ENV, reexec_with_openblas

    reexec_with_openblas()
    bandwidth = measure_bandwidth()
    files = export_bench_files()

    from mlx_lm.utils import load_tokenizer

    from nbp_mlx.fuse import parity_prompt_ids
    from nbp_mlx.models.loading import STOP_TOKENS
    from nbp_mlx.models.resolve import resolve_model

    tokenizer = load_tokenizer(resolve_model("bundled").path)
    prompt = parity_prompt_ids(tokenizer)
    banned = {tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS}

    rows = [("MLX float32" + (" + OpenBLAS" if os.environ.get(MARKER_ENV) else ""), bench_mlx(args.tokens))]
    for outtype, path in files.items():
        rows.append((f"llama.cpp {outtype.upper()}", bench_llamacpp(path, args.tokens, args.threads, prompt, banned)))

    print(f"Machine: {machine_line()}. Date: {date.today().isoformat()}. Model: bundled Qwen2.5-Coder-0.5B-Instruct.")
    print(f"Copy bandwidth (numpy, 1 GiB, best of 5): {bandwidth / 1e9:.1f} GB/s. Greedy decoding of {args.tokens} new tokens, end-of-turn banned.\n")
    print("| backend | weights read per token (MB) | bandwidth limit (tokens/s) | decode (tokens/s) | of limit | time to first token (s) | prompt / new tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, result in rows:
        limit = bandwidth / result["weight_bytes"]
        speed = result["tokens_per_second"]
        print(
            f"| {name} | {result['weight_bytes'] / 1e6:.0f} | {limit:.1f} | {speed:.1f} | "
            f"{speed / limit:.0%} | {result['time_to_first_token']:.2f} | {result['prompt_tokens']} / {result['new_tokens']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
