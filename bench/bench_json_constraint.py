"""Cost of constrained JSON decoding on the bundled 0.5B model, MLX and llama.cpp.

Usage:
    python bench/bench_json_constraint.py [--tokens 96] [--adapter DIR] [--gguf FILE]

For one description in JSON format, the script generates greedily with the
constraint off and on. It reports tokens/s for each and whether each raw
output parses. It also reports the time the MLX mask takes per token: llguidance
fills a bitmask over the 151,665-token vocabulary, numpy unpacks it and
mx.where applies it. With ``--gguf`` it measures llama.cpp the same way, whose
grammar sampler runs in C++.
The output is one Markdown table with the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DESCRIPTION = "雨夜霓虹街头穿黄色雨衣的赛博朋克女孩，电影感"


def parses(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def run_backend(backend, tokens: int, constrain: bool) -> dict:
    from nbp_mlx.generate import GenerationSettings, GenerationStats

    settings = GenerationSettings(temperature=0.0, max_tokens=tokens, seed=0, constrain_json=constrain)
    stats = GenerationStats()
    started = time.perf_counter()
    text = "".join(backend.stream(DESCRIPTION, "json", settings, stats))
    return {
        "seconds": time.perf_counter() - started,
        "tokens": stats.generated_tokens,
        "tokens_per_second": stats.tokens_per_second,
        "parses": parses(text),
        "method": stats.json_method,
    }


def mask_cost_ms(loaded, tokens: int) -> float:
    """Return the mean time per mask, in milliseconds, over one constrained generation."""
    from nbp_mlx import json_constrain
    from nbp_mlx.generate import GenerationSettings, GenerationStats, stream_generate
    from nbp_mlx.json_constrain import make_json_constraint

    constraints = []

    def recording(tokenizer, schema):
        constraint = make_json_constraint(tokenizer, schema)
        constraints.append(constraint)
        return constraint

    # stream_generate imports make_json_constraint when it runs, so patching the module is enough.
    json_constrain.make_json_constraint = recording
    try:
        settings = GenerationSettings(temperature=0.0, max_tokens=tokens, seed=0)
        list(stream_generate(loaded, DESCRIPTION, "json", settings, GenerationStats()))
    finally:
        json_constrain.make_json_constraint = make_json_constraint
    constraint = constraints[0]
    return 1000 * constraint.mask_seconds / max(constraint.mask_count, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--adapter", help="LoRA adapter for the MLX rows (default: the base model)")
    parser.add_argument("--gguf", help="GGUF file for the llama.cpp rows")
    args = parser.parse_args()

    from nbp_mlx.blas import reexec_with_openblas

    reexec_with_openblas()
    from nbp_mlx.backends import MlxBackend

    rows = []
    mlx_backend = MlxBackend("bundled", args.adapter)
    run_backend(mlx_backend, 8, True)  # builds the llguidance tokenizer once, outside the timing
    for constrain in (False, True):
        rows.append(("MLX float32", constrain, run_backend(mlx_backend, args.tokens, constrain)))
    mask_ms = mask_cost_ms(mlx_backend.loaded, args.tokens)
    if args.gguf:
        from nbp_mlx.backends.llamacpp import LlamaCppBackend

        llama = LlamaCppBackend(args.gguf)
        for constrain in (False, True):
            rows.append(("llama.cpp " + Path(args.gguf).name, constrain, run_backend(llama, args.tokens, constrain)))
        llama.close()

    print(f"Machine: {platform.machine()} {platform.system()}, Python {platform.python_version()}; {date.today().isoformat()}")
    print(f"Greedy, up to {args.tokens} new tokens, JSON format; model {'bundled + ' + args.adapter if args.adapter else 'bundled'}")
    print()
    print("| backend | constrained | tokens | tokens/s | parses | method |")
    print("|---|---|---:|---:|---|---|")
    for name, constrain, result in rows:
        print(
            f"| {name} | {'yes' if constrain else 'no'} | {result['tokens']} | {result['tokens_per_second']:.1f} | "
            f"{'yes' if result['parses'] else 'no'} | {result['method']} |"
        )
    print()
    print(f"MLX mask: {mask_ms:.2f} ms per token")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
