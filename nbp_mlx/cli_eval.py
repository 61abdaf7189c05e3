"""The ``eval`` command: generate for held-back pairs, score, and write the report.

``register(commands)`` adds the command to the top-level subparsers. The work
is in ``evaluation.runner`` (generation, resumable), ``evaluation.metrics``
(scores) and ``evaluation.report`` (Markdown, JSON and PNG).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from .i18n import _

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 1024


def register(commands) -> None:
    from .cli import positive_int

    evaluate = commands.add_parser(
        "eval",
        help=_("score generated prompts against reference pairs, base model against tuned"),
        description=_(
            "Generate a prompt for each description of a pairs file with the base model and the tuned one, "
            "score both against the reference prompts, and write report.md, report.json and report.png. "
            "Results are saved as they arrive; rerun the same command to continue a stopped evaluation."
        ),
    )
    evaluate.add_argument("--pairs", required=True, help=_("pairs file: a valid.jsonl from `data prepare`, or any file `data import` reads"))
    evaluate.add_argument("--out", default="runs/eval", help=_("report folder (default: %(default)s)"))
    evaluate.add_argument("--limit", type=positive_int, help=_("evaluate this many pairs, drawn with --seed (default: all)"))

    evaluate.add_argument("--backend", choices=["mlx", "llamacpp", "ollama"], default="mlx", help=_("generation engine (default: %(default)s)"))
    evaluate.add_argument("--adapter", help=_("LoRA adapter folder for the tuned system (mlx backend)"))
    evaluate.add_argument("--model", help=_("base model for the mlx backend (default: the adapter's base model, else bundled)"))
    evaluate.add_argument("--gguf", help=_("tuned GGUF file (llamacpp backend)"))
    evaluate.add_argument("--base-gguf", help=_("base GGUF file, exported the same way as --gguf (llamacpp backend)"))
    evaluate.add_argument("--ollama-model", help=_("tuned Ollama model name (ollama backend)"))
    evaluate.add_argument("--base-ollama-model", help=_("base Ollama model name (ollama backend)"))
    evaluate.add_argument("--ollama-host", help=_("Ollama server address (default: $OLLAMA_HOST, else http://127.0.0.1:11434)"))
    evaluate.add_argument("--no-base", action="store_true", help=_("evaluate only the tuned system"))

    evaluate.add_argument("--temperature", type=float, default=0.0, help=_("sampling temperature; 0 is greedy and deterministic (default: %(default)s)"))
    evaluate.add_argument("--top-p", type=float, default=1.0, help=_("nucleus sampling probability mass (default: %(default)s)"))
    evaluate.add_argument("--seed", type=int, default=0, help=_("seed for drawing pairs, sampling and the bootstrap (default: %(default)s)"))
    evaluate.add_argument("--max-tokens", type=positive_int, default=DEFAULT_MAX_TOKENS, help=_("maximum new tokens per prompt (default: %(default)s)"))
    evaluate.add_argument("--repetition-penalty", type=float, help=_("penalty for tokens repeated within the last 64 tokens (default: off)"))

    evaluate.add_argument("--json-schema", default="object", help=_("JSON Schema for JSON pairs: object, nbp or a file, as in `generate` (default: %(default)s)"))
    evaluate.add_argument(
        "--no-constrain",
        action="store_true",
        help=_("do not constrain JSON pairs; measures how often the model itself writes valid JSON"),
    )
    evaluate.set_defaults(handler=run_eval_command)


def build_systems(args, progress) -> list:
    """Return the ``EvalSystem`` list (base first) that the arguments request."""
    from .evaluation.runner import EvalSystem, EvaluationError

    _check_backend_options(args)
    systems = []
    if args.backend == "mlx":
        from .backends import MlxBackend
        from .models.loading import adapter_base_model

        model = args.model or (adapter_base_model(Path(args.adapter)) if args.adapter else None) or "bundled"
        if not args.no_base:
            label = _("MLX: {model}, no adapter").format(model=model)
            systems.append(EvalSystem("base", label, partial(MlxBackend, model, None, progress), key=f"mlx {_file_key(model)}"))
        if args.adapter:
            label = _("MLX: {model} + adapter {adapter}").format(model=model, adapter=args.adapter)
            systems.append(EvalSystem("tuned", label, partial(MlxBackend, model, args.adapter, progress), key=f"mlx {_file_key(model)} + {_file_key(args.adapter)}"))
    elif args.backend == "llamacpp":
        from .backends.llamacpp import LlamaCppBackend

        for name, path in (("base", None if args.no_base else args.base_gguf), ("tuned", args.gguf)):
            if path:
                if not Path(path).is_file():
                    raise EvaluationError(_("{path}: GGUF file not found; write one with `python -m nbp_mlx export gguf`").format(path=path))
                label = _("llama.cpp: {path}").format(path=path)
                systems.append(EvalSystem(name, label, partial(LlamaCppBackend, path), key=f"llamacpp {_file_key(path)}"))
    else:
        from .backends.ollama import OllamaBackend

        for name, model in (("base", None if args.no_base else args.base_ollama_model), ("tuned", args.ollama_model)):
            if model:
                label = _("Ollama: {model}").format(model=model)
                systems.append(EvalSystem(name, label, partial(OllamaBackend, model, args.ollama_host), key=f"ollama {model}"))
    if not systems:
        hints = {
            "mlx": _("pass --adapter, or drop --no-base to evaluate the base model alone"),
            "llamacpp": _("pass --gguf and/or --base-gguf"),
            "ollama": _("pass --ollama-model and/or --base-ollama-model"),
        }
        raise EvaluationError(_("nothing to evaluate with --backend {backend}: {hint}").format(backend=args.backend, hint=hints[args.backend]))
    return systems


# The options that only one backend reads.
BACKEND_OPTIONS = {
    "mlx": ("adapter", "model"),
    "llamacpp": ("gguf", "base_gguf"),
    "ollama": ("ollama_model", "base_ollama_model", "ollama_host"),
}


def _check_backend_options(args) -> None:
    """Raise when an option of another backend is given, instead of silently ignoring it."""
    from .evaluation.runner import EvaluationError

    for backend, options in BACKEND_OPTIONS.items():
        if backend == args.backend:
            continue
        for option in options:
            if getattr(args, option, None):
                flag = "--" + option.replace("_", "-")
                raise EvaluationError(
                    _("{flag} applies to --backend {backend}, but --backend is {chosen}; pass --backend {backend} or drop {flag}").format(
                        flag=flag, backend=backend, chosen=args.backend
                    )
                )


def _file_key(value: str) -> str:
    """Return ``value`` with the size and modification time of the file or folder it names, so changed weights do not match."""
    # NOTE: a stamp, not a content hash: weights replaced with the same size and mtime would still match.
    path = Path(value)
    if not path.exists():
        return value
    files = [path] if path.is_file() else sorted(item for item in path.iterdir() if item.suffix in (".safetensors", ".gguf", ".json"))
    stamps = ",".join(f"{item.name}:{item.stat().st_size}:{item.stat().st_mtime_ns}" for item in files)
    return f"{path.resolve()} [{stamps}]"


def run_eval_command(args) -> int:
    from .cli_progress import RichProgress, stderr_console
    from .evaluation.report import write_report
    from .evaluation.runner import load_eval_pairs, run_systems, select_pairs
    from .generate import GenerationSettings
    from .json_constrain import load_json_schema

    settings = GenerationSettings(
        temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed,
        repetition_penalty=args.repetition_penalty, constrain_json=not args.no_constrain,
        json_schema=load_json_schema(args.json_schema),
    )
    settings.validate()
    pairs = select_pairs(load_eval_pairs(args.pairs), args.limit, args.seed)
    progress = RichProgress()
    systems = build_systems(args, progress)
    formats = {fmt: sum(pair.format == fmt for pair in pairs) for fmt in ("text", "json")}
    stderr_console.print(
        _("Evaluating {count} pairs ({text} text, {json} JSON) from {path} with: {systems}").format(
            count=len(pairs), text=formats["text"], json=formats["json"], path=args.pairs,
            systems=", ".join(system.name for system in systems),
        )
    )
    try:
        results = run_systems(pairs, systems, settings, args.out, pairs_file=str(args.pairs), progress=progress)
    except KeyboardInterrupt:
        progress.finish()
        stderr_console.print(
            _("Stopped. Finished prompts are saved in {out}; run the same command again to continue.").format(out=args.out),
            style="yellow",
        )
        return 130

    report_settings = {
        "pairs_file": str(args.pairs),
        "pairs": len(pairs),
        "limit": args.limit,
        "seed": args.seed,
        "decoding": "greedy" if args.temperature == 0 else "sampled",
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens,
        "repetition_penalty": args.repetition_penalty,
        "json": _("unconstrained, repaired afterwards") if args.no_constrain else _("constrained to JSON Schema '{schema}'").format(schema=args.json_schema),
        "backend": args.backend,
        "systems": {system.name: system.label for system in systems},
    }
    paths = write_report(args.out, results, report_settings)
    _print_summary(paths, stderr_console)
    return 0


def _print_summary(paths: dict, console) -> None:
    import json

    from .evaluation.metrics import PROMPT_MAX_CHARS, PROMPT_MIN_CHARS
    from .evaluation.report import FEW_PAIRS, few_pairs_warning

    report = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    for name, summary in report.get("summary", {}).items():
        console.print(
            _("{system}: chrF {chrf}, {in_band} in the {low}–{high} character band, JSON valid {json_valid}, {speed} tokens/s").format(
                system=name,
                low=f"{PROMPT_MIN_CHARS:,}",
                high=f"{PROMPT_MAX_CHARS:,}",
                chrf=_number(summary.get("chrf_mean")),
                in_band=_share(summary.get("in_band_rate")),
                json_valid=_share(summary.get("json_valid_rate")),
                speed=_number(summary.get("tokens_per_second_mean")),
            )
        )
    chrf = ((report.get("comparison") or {}).get("metrics") or {}).get("chrf")
    if chrf:
        console.print(
            _("chrF tuned − base: {diff:+.2f} ({percent:.0f}% CI {low:+.2f} to {high:+.2f})").format(
                diff=chrf["mean_difference"], percent=100 * chrf["confidence"], low=chrf["ci_low"], high=chrf["ci_high"]
            ),
            style="bold",
        )
        if chrf["items"] < FEW_PAIRS:
            console.print(few_pairs_warning(chrf["items"]), style="yellow")
    for path in paths.values():
        console.print(_("Wrote {path}").format(path=path), style="dim")


def _number(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def _share(value) -> str:
    return "–" if value is None else f"{value:.0%}"
