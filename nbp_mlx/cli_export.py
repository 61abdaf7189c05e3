"""Command-line parts for fusing, exporting and choosing a generation backend.

``register(commands)`` adds ``fuse`` and ``export {gguf,ollama,check}`` to the
top-level subparsers. ``add_backend_options`` and ``run_generate_with_backend``
extend the ``generate`` command with ``--backend``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from .i18n import _

logger = logging.getLogger(__name__)


def register(commands) -> None:
    """Add the ``fuse`` and ``export`` subcommands to the argparse subparsers ``commands``."""
    from .export.gguf import OUTTYPES

    fuse = commands.add_parser(
        "fuse",
        help=_("merge a LoRA adapter into its base model and write a standalone model folder"),
        description=_("Merge the adapter into the base weights (float32), check the fused logits against base model + adapter, and write the folder."),
    )
    fuse.add_argument("--adapter", required=True, help=_("adapter folder from `train`, e.g. adapters/<run>"))
    fuse.add_argument("--output", help=_("folder to write (default: fused/<adapter folder name>)"))
    fuse.add_argument("--model", help=_("base model (default: the one recorded in the adapter)"))
    fuse.add_argument("--dequantize", action="store_true", help=_("write float weights when the base model is quantized (needed for GGUF export)"))
    fuse.set_defaults(handler=_run_fuse)

    export = commands.add_parser("export", help=_("export a fused model as GGUF or for Ollama, and check an export"), description=_("Export commands."))
    export_commands = export.add_subparsers(dest="export_command", metavar="FORMAT", required=True)

    gguf = export_commands.add_parser(
        "gguf",
        help=_("write a fused model folder as a llama.cpp GGUF file"),
        description=_("Write a fused Qwen2 or Llama model folder as a GGUF file and check it with llama.cpp."),
    )
    gguf.add_argument("--model", required=True, help=_("fused model folder from `fuse`"))
    gguf.add_argument("--output", required=True, help=_("GGUF file to write, e.g. exports/model-q8_0.gguf"))
    gguf.add_argument("--outtype", default="f16", help=_("tensor type: {types} (default: %(default)s)").format(types=", ".join(OUTTYPES)))
    gguf.set_defaults(handler=_run_export_gguf)

    ollama = export_commands.add_parser(
        "ollama",
        help=_("write an Ollama Modelfile next to a GGUF file and run `ollama create`"),
        description=_("Write a Modelfile with the training chat template, system prompt and sampling settings; run `ollama create` when ollama is installed."),
    )
    ollama.add_argument("--gguf", required=True, help=_("GGUF file from `export gguf`"))
    ollama.add_argument("--name", required=True, help=_("Ollama model name, e.g. nbp-prompt:latest"))
    ollama.add_argument("--no-create", action="store_true", help=_("only write the Modelfile, even when ollama is installed"))
    ollama.set_defaults(handler=_run_export_ollama)

    check = export_commands.add_parser(
        "check",
        help=_("check that an export reproduces the adapter: prompt tokens and greedy tokens"),
        description=_("Compare prompt token ids and 32 greedy tokens across base model + adapter, the fused folder and the GGUF files."),
    )
    check.add_argument("--adapter", required=True, help=_("adapter folder from `train`"))
    check.add_argument("--fused", required=True, help=_("fused model folder from `fuse`"))
    check.add_argument("--gguf", required=True, help=_("F32 GGUF file (must match all greedy tokens)"))
    check.add_argument("--gguf-f16", help=_("F16 GGUF file (must match the first 16 greedy tokens)"))
    check.add_argument("--modelfile", help=_("Modelfile whose TEMPLATE to check (default: the template `export ollama` writes)"))
    check.add_argument("--model", help=_("base model (default: the one recorded in the adapter)"))
    check.add_argument("--tokens", type=int, default=32, help=_("greedy tokens to compare (default: %(default)s)"))
    check.set_defaults(handler=_run_export_check)


def add_backend_options(generate_parser) -> None:
    """Add ``--backend``, ``--gguf``, ``--ollama-model`` and ``--ollama-host`` to the ``generate`` parser."""
    from .backends import BACKEND_NAMES

    generate_parser.add_argument(
        "--backend", choices=BACKEND_NAMES, default="mlx",
        help=_("generation engine; auto picks the fastest available on this machine (default: %(default)s)"),
    )
    generate_parser.add_argument("--gguf", help=_("GGUF file for --backend llamacpp or auto (from `export gguf`)"))
    generate_parser.add_argument("--ollama-model", help=_("Ollama model name for --backend ollama (from `export ollama --name`)"))
    generate_parser.add_argument("--ollama-host", help=_("Ollama server address (default: $OLLAMA_HOST, else http://127.0.0.1:11434)"))


def run_generate_with_backend(args) -> int:
    """Run ``generate`` with the backend chosen by ``args.backend``; print the prompt to stdout and statistics to stderr.

    With ``--format json`` the exit status is 0 only when stdout contains one valid JSON document.
    """
    from .backends.select import create_backend
    from .cli_progress import RichProgress, stderr_console, write_stdout
    from .generate import GenerationSettings, GenerationStats
    from .json_constrain import load_json_schema
    from .models.loading import adapter_base_model

    model = args.model
    if model is None and args.adapter:
        model = adapter_base_model(Path(args.adapter))
    schema_spec = getattr(args, "json_schema", "object")
    constrain = not getattr(args, "no_constrain", False)
    schema = None
    if args.format == "json":
        schema = load_json_schema(schema_spec)
    elif schema_spec != "object" or not constrain:
        stderr_console.print(_("--json-schema and --no-constrain apply to --format json only; they are ignored"), style="yellow")
    settings = GenerationSettings(
        temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed,
        repetition_penalty=getattr(args, "repetition_penalty", None), constrain_json=constrain, json_schema=schema,
    )
    settings.validate()
    backend, choice = create_backend(
        args.backend, model=model, adapter=args.adapter, gguf=getattr(args, "gguf", None),
        ollama_model=getattr(args, "ollama_model", None), ollama_host=getattr(args, "ollama_host", None), progress=RichProgress(),
    )
    if choice is not None:
        stderr_console.print(_("backend {name}: {reason}").format(name=choice.name, reason=choice.reason), style="dim")
    if args.adapter and backend.name != "mlx":
        _warn_about_adapter(backend, args.adapter, stderr_console)
    stderr_console.print(backend.describe(), style="dim")
    if not args.adapter and backend.name == "mlx":
        stderr_console.print(
            _("no --adapter: the base model is not fine-tuned for this task, so expect short or off-format prompts"),
            style="yellow",
        )

    # A constrained JSON stream ends with the characters that close it, so it can go
    # to stdout as it arrives. Unconstrained JSON may need rewriting by the repair
    # pass, so its raw stream goes to stderr and stdout gets the result afterwards.
    stream_to_stdout = args.format != "json" or constrain
    write = write_stdout if stream_to_stdout else _write_stderr
    stats = GenerationStats()
    stop = CtrlCStop()
    try:
        with stop:
            for chunk in backend.stream(args.description, args.format, settings, stats, should_stop=stop.requested):
                write(chunk)
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    write("\n")
    if stats.finish_reason == "cancelled":
        stderr_console.print(_("Stopped by Ctrl-C; what was generated so far is above."), style="yellow")
    from .cli import _print_generation_stats

    _print_generation_stats(stats, stderr_console)
    status = _finish_json_output(stats, stream_to_stdout, stderr_console, schema) if args.format == "json" else 0
    return 130 if stats.finish_reason == "cancelled" else status


class CtrlCStop:
    """Turn the first Ctrl-C into a request to stop after the current token; a second one interrupts at once.

    Stopping through the backend (instead of by KeyboardInterrupt) lets a JSON
    stream end with its closing characters, so stdout still contains valid JSON.
    """

    def __init__(self):
        self._requested = False
        self._previous = None

    def requested(self) -> bool:
        return self._requested

    def _handle(self, signum, frame) -> None:
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True

    def __enter__(self) -> "CtrlCStop":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


JSON_METHOD_STYLES = {"constrained": "green", "server-constrained": "green", "as-is": "green", "failed": "red"}


def _finish_json_output(stats, streamed_to_stdout: bool, console, schema: dict | None = None) -> int:
    """Report how the JSON became valid, write it to stdout unless it streamed there, and return the exit status."""
    import json

    from .cli_progress import write_stdout
    from .generate import describe_json_method

    console.print(describe_json_method(stats), style=JSON_METHOD_STYLES.get(stats.json_method, "yellow"), markup=False, highlight=False)
    if stats.json_text is None:
        return 1
    missing = _missing_required_keys(json.loads(stats.json_text), schema)
    if missing:
        # A document closed early is valid JSON but may stop before the keys the schema requires.
        console.print(
            _("the JSON stopped before the required keys {keys}; raise --max-tokens for a complete document").format(keys=", ".join(missing)),
            style="yellow",
        )
    if not streamed_to_stdout:
        write_stdout(stats.json_text + "\n")
        return 0
    if stats.json_text == stats.text:
        return 0
    # Reached only when a constrained stream broke its constraint, e.g. an Ollama server that ignored "format".
    console.print(_("the text streamed to stdout is not valid JSON; the repaired JSON follows:"), style="red")
    console.print(stats.json_text, markup=False, highlight=False)
    return 1


def _missing_required_keys(value, schema: dict | None) -> list[str]:
    """Return the top-level keys that ``schema`` requires and ``value`` lacks."""
    if not isinstance(value, dict) or not schema:
        return []
    return [key for key in schema.get("required", []) if key not in value]


def _write_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _warn_about_adapter(backend, adapter: str, console) -> None:
    """Warn when a GGUF was exported from another adapter than ``--adapter``; the adapter itself is not applied."""
    from .export.gguf import SOURCE_ADAPTER_KEY

    llm = getattr(backend, "llm", None)
    recorded = llm.metadata.get(SOURCE_ADAPTER_KEY) if llm is not None else None
    if recorded and recorded != Path(adapter).resolve().name:
        console.print(
            _("warning: the GGUF was exported from {recorded}, not {adapter}; --adapter is ignored by this backend").format(
                recorded=recorded, adapter=adapter
            ),
            style="yellow",
        )


def _run_fuse(args) -> int:
    from .cli_progress import RichProgress, stderr_console
    from .fuse import fuse_adapter

    result = fuse_adapter(args.adapter, args.output, model=args.model, dequantize=args.dequantize, progress=RichProgress())
    stderr_console.print(
        _("Wrote {path}. Fused logits match base model + adapter within {diff:.2g} of the logit scale (tolerance {tolerance:g}).").format(
            path=result.output, diff=result.relative_diff, tolerance=result.tolerance
        )
    )
    stderr_console.print(_("Next: python -m nbp_mlx export gguf --model {path} --output {path}.gguf --outtype q8_0").format(path=result.output))
    return 0


def _run_export_gguf(args) -> int:
    from .cli_progress import RichProgress, stderr_console
    from .export.gguf import export_gguf

    progress = RichProgress()
    started = False

    def report(done: int, total: int, name: str) -> None:
        nonlocal started
        if not started:
            progress.start(_("Writing {path}").format(path=args.output), total=total, unit=_("tensors"))
            started = True
        progress.update(done, total, name)

    try:
        result = export_gguf(args.model, args.output, args.outtype, progress=report)
    finally:
        if started:
            progress.finish()
    stderr_console.print(
        _("Wrote {path} ({type}, {size:.1f} MB, {tensors} tensors, {vocab} tokens, pre-tokenizer {pre}); llama.cpp tokenizes the training prompt identically.").format(
            path=result.output, type=result.outtype, size=result.size_bytes / 1e6, tensors=result.tensor_count,
            vocab=result.vocab_size, pre=result.tokenizer_pre,
        )
    )
    return 0


def _run_export_ollama(args) -> int:
    from .cli_progress import stderr_console
    from .export.ollama import write_modelfile

    result = write_modelfile(args.gguf, args.name, run_create=not args.no_create)
    stderr_console.print(_("Wrote {path}").format(path=result.modelfile))
    if result.created:
        stderr_console.print(_("Created Ollama model {name}: {output}").format(name=result.name, output=result.ollama_output))
        stderr_console.print(_("Next: python -m nbp_mlx generate \"霓虹街头的赛博朋克女孩\" --backend ollama --ollama-model {name}").format(name=result.name))
    else:
        stderr_console.print(_("ollama was not run; create the model with: {command}").format(command=" ".join(result.create_command)))
    return 0


def _run_export_check(args) -> int:
    from rich.table import Table

    from .cli_progress import stderr_console
    from .export.check import check_export

    report = check_export(
        args.adapter, args.fused, args.gguf, args.gguf_f16, model=args.model, modelfile=args.modelfile, tokens=args.tokens
    )
    table = Table(title=_("Export check: {description}").format(description=report.description))
    for column in (_("form"), _("compared"), _("agreeing tokens"), _("required"), _("min top-2 margin"), _("result")):
        table.add_column(column)
    for row in report.rows:
        kind = _("prompt ids") if row.kind == "prompt" else _("greedy ids")
        margin = f"{row.min_margin:.3g}" if row.min_margin is not None else "-"
        result = _("pass") if row.passed else _("FAIL")
        table.add_row(row.name, kind, f"{row.agreeing}/{len(row.token_ids)}", str(row.required), margin, result, style=None if row.passed else "red")
    from rich.console import Console

    Console().print(table)
    if not report.passed:
        stderr_console.print(
            _("The export does not reproduce the adapter. Fuse and export again; if it still fails, report it with the table above."),
            style="bold red",
        )
        return 1
    return 0
