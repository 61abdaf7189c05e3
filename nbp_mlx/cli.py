"""The ``python -m nbp_mlx`` command line: a thin layer over the library.

Errors of the ``NbpError`` family are printed as one message (in the user's
language) with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__, i18n
from .blas import preload_status_message, reexec_with_openblas
from .errors import NbpError
from .i18n import _

logger = logging.getLogger("nbp_mlx")


def positive_int(text: str) -> int:
    """Parse a whole number of 1 or more, for argparse's ``type=``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(_("expected a whole number, got {value!r}").format(value=text)) from None
    if value < 1:
        raise argparse.ArgumentTypeError(_("must be at least 1, got {value}").format(value=value))
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nbp_mlx",
        description=_("Turn short Chinese descriptions into professional Nano Banana Pro image prompts, and train the model that does it."),
    )
    parser.add_argument("--version", action="version", version=f"nbp-mlx {__version__}")
    parser.add_argument("--lang", choices=["zh", "en"], help=_("language of messages (default: from the locale or NBP_MLX_LANG)"))
    parser.add_argument("-v", "--verbose", action="store_true", help=_("log details to stderr"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_data_commands(commands)
    _add_train_command(commands)
    _add_generate_command(commands)
    _add_model_command(commands)

    from .cli_export import register as register_export

    register_export(commands)

    from .cli_eval import register as register_eval

    register_eval(commands)

    quickstart = commands.add_parser(
        "quickstart",
        help=_("run the whole path on the bundled model and the sample data: prepare, a short training run, generation"),
        description=_("Prepare the sample data, train a short LoRA run on the bundled model and generate a prompt in both formats."),
    )
    quickstart.add_argument("--work-dir", default="runs/quickstart", help=_("folder for the quickstart's files (default: %(default)s)"))
    quickstart.add_argument("--max-steps", type=int, default=None, help=_("optimizer updates to train (default: sized to finish in about 15 minutes on a 2-core CPU)"))
    quickstart.add_argument("--max-tokens", type=int, default=400, help=_("maximum new tokens per generated prompt (default: %(default)s)"))
    quickstart.add_argument("--model", default="bundled", help=_("base model to fine-tune (default: %(default)s)"))
    quickstart.set_defaults(handler=_run_quickstart)

    tui = commands.add_parser("tui", help=_("open the terminal app"), description=_("Open the Textual terminal app."))
    tui.set_defaults(handler=_run_tui)
    return parser


def _add_data_commands(commands) -> None:
    data = commands.add_parser("data", help=_("import prompt files and prepare training datasets"), description=_("Data commands."))
    data_commands = data.add_subparsers(dest="data_command", metavar="STEP", required=True)

    importer = data_commands.add_parser(
        "import",
        help=_("import prompts from JSONL, JSON, CSV or plain text into one records file"),
        description=_("Import prompts (with optional Chinese descriptions) into a JSONL records file."),
    )
    importer.add_argument("input", help=_("input file: .jsonl, .json, .csv, .txt or .md"))
    importer.add_argument("-o", "--output", default="data/prompts.jsonl", help=_("records file to write (default: %(default)s)"))
    importer.add_argument(
        "--keep-flagged",
        action="store_true",
        help=_("keep entries flagged likely_truncated and descriptions flagged as not Chinese"),
    )
    importer.set_defaults(handler=_run_data_import)

    prepare = data_commands.add_parser(
        "prepare",
        help=_("build train.jsonl and valid.jsonl for mlx-lm from a records file"),
        description=_("Split records 90/10 by source prompt and write mlx-lm chat datasets."),
    )
    prepare.add_argument("--input", default="data/prompts.jsonl", help=_("records file from `data import` (default: %(default)s)"))
    prepare.add_argument("--config", help=_("training config; supplies model, dataset_dir, max_seq_length and batch size"))
    prepare.add_argument("--out-dir", help=_("output folder (default: dataset_dir of the config, else data/dataset)"))
    prepare.add_argument("--model", help=_("model whose tokenizer measures lengths (default: the config's, else bundled)"))
    prepare.add_argument("--max-seq-length", type=positive_int, help=_("longest sample to keep, in tokens (default: 2048)"))
    prepare.add_argument("--batch-size", type=positive_int, help=_("training batch size, in samples; each split needs at least one batch (default: 2)"))
    prepare.set_defaults(handler=_run_data_prepare)

    from .cli_datagen import register as register_datagen

    register_datagen(data_commands)


def _add_train_command(commands) -> None:
    train = commands.add_parser(
        "train",
        help=_("fine-tune a LoRA adapter with mlx-lm from a YAML config"),
        description=_("Fine-tune a LoRA adapter. Ctrl-C stops at the next optimizer update and saves the adapter; --resume continues."),
    )
    train.add_argument("--config", default="configs/train_config.yaml", help=_("YAML config (default: %(default)s)"))
    train.add_argument("--run-name", help=_("name of the run folder under output_dir (default: run-<date>-<time>)"))
    train.add_argument("--resume", metavar="RUN_DIR", help=_("continue the saved run in RUN_DIR"))
    train.add_argument("--max-steps", type=int, help=_("stop after this many optimizer updates in total, in place of the epochs"))
    train.add_argument("--model", help=_("override model_name_or_path"))
    train.add_argument("--dataset-dir", help=_("override dataset_dir"))
    train.add_argument("--plan-only", action="store_true", help=_("print the resolved mlx-lm settings and exit"))
    train.set_defaults(handler=_run_train)


def _add_generate_command(commands) -> None:
    generate = commands.add_parser(
        "generate",
        help=_("stream a professional image prompt for a Chinese description"),
        description=_("Generate an English image prompt for a short Chinese description, streaming it to stdout."),
    )
    generate.add_argument("description", help=_("short Chinese description, e.g. 霓虹街头的赛博朋克女孩"))
    generate.add_argument("--format", choices=["text", "json"], default="text", help=_("output format (default: %(default)s)"))
    generate.add_argument("--adapter", help=_("LoRA adapter folder from `train`"))
    generate.add_argument("--model", help=_("base model (default: the adapter's base model, else bundled)"))
    generate.add_argument("--temperature", type=float, default=0.7, help=_("sampling temperature, 0 for greedy (default: %(default)s)"))
    generate.add_argument("--top-p", type=float, default=0.9, help=_("nucleus sampling probability mass, in (0, 1] (default: %(default)s)"))
    generate.add_argument("--max-tokens", type=int, default=2048, help=_("maximum new tokens (default: %(default)s)"))
    generate.add_argument("--seed", type=int, help=_("random seed for reproducible sampling"))
    generate.add_argument("--repetition-penalty", type=float, help=_("penalty for tokens repeated within the last 64 tokens, e.g. 1.1 (default: off)"))
    generate.add_argument(
        "--json-schema", default="object", metavar="{object,nbp,PATH}",
        help=_("JSON Schema that --format json output follows: object (any JSON object), nbp (the common Nano Banana Pro keys; subject is required) or a JSON Schema file (default: %(default)s)"),
    )
    generate.add_argument(
        "--no-constrain", action="store_true",
        help=_("with --format json, do not constrain decoding to the schema; only repair the output afterwards (for comparison)"),
    )
    from .cli_export import add_backend_options, run_generate_with_backend

    add_backend_options(generate)
    generate.set_defaults(handler=run_generate_with_backend)


def _add_model_command(commands) -> None:
    model = commands.add_parser(
        "model",
        help=_("resolve a --model value (import a GGUF, assemble the bundled model) and print its folder"),
        description=_("Resolve a model value and print the MLX model folder it maps to."),
    )
    model.add_argument("model", nargs="?", default="bundled", help=_("bundled, a .gguf file, a model folder or a Hugging Face repo id (default: %(default)s)"))
    model.set_defaults(handler=_run_model)


def _run_data_import(args) -> int:
    from .cli_progress import stderr_console
    from .data.importer import import_prompts, summarize, write_records

    if Path(args.input).resolve() == Path(args.output).resolve():
        raise NbpError(_("{path}: the output would overwrite the input file; pass another path with -o").format(path=args.output))
    result = import_prompts(args.input, keep_flagged=args.keep_flagged)
    write_records(args.output, result.records)
    summary = summarize(result)
    stderr_console.print(
        _("Imported {count} prompts ({json} JSON, {text} text, {described} with a description); dropped {duplicates} duplicates. Wrote {output}").format(
            count=len(result.records), json=result.json_count, text=result.text_count,
            described=result.with_description, duplicates=result.duplicates, output=args.output,
        )
    )
    if result.skipped_truncated or result.descriptions_dropped:
        stderr_console.print(
            _("Skipped {truncated} entries flagged likely_truncated and removed {dropped} descriptions flagged as not Chinese (--keep-flagged keeps them).").format(
                truncated=result.skipped_truncated, dropped=result.descriptions_dropped
            ),
            style="yellow",
        )
    if result.slots_filled:
        stderr_console.print(
            _("Filled the {{argument ...}} template slots of {count} prompts with their default values.").format(count=result.slots_filled)
        )
    if result.slots_left:
        stderr_console.print(
            _("{count} records still contain an {{argument ...}} slot whose default has a double quote; edit those prompts or leave them out.").format(
                count=result.slots_left
            ),
            style="yellow",
        )
    logger.debug("import summary: %s", summary)
    return 0


def _run_data_prepare(args) -> int:
    from .cli_progress import RichProgress, stderr_console
    from .config import load_config
    from .dataset import prepare_dataset

    model, out_dir, max_len, batch = "bundled", "data/dataset", 2048, 2
    if args.config:
        config = load_config(args.config)
        model, out_dir, max_len, batch = config.model_name_or_path, config.dataset_dir, config.max_seq_length, config.per_device_train_batch_size
    model = args.model or model
    out_dir = args.out_dir or out_dir
    max_len = args.max_seq_length or max_len
    batch = args.batch_size or batch

    progress = RichProgress()
    tokenizer = load_tokenizer_for(model, progress)
    report = prepare_dataset(args.input, out_dir, tokenizer, max_seq_length=max_len, batch_size=batch, progress=progress)
    _print_prepare_report(report, stderr_console)
    return 0


def load_tokenizer_for(model: str, progress):
    from mlx_lm.utils import load_tokenizer

    from .models.resolve import resolve_model

    resolved = resolve_model(model, progress)
    return load_tokenizer(resolved.path)


def _print_prepare_report(report, console) -> None:
    console.print(
        _("{pairs} pairs from {prompts} prompts: {train} train ({train_groups} prompts), {valid} valid ({valid_groups} prompts).").format(
            pairs=report.pairs, prompts=report.prompts, train=report.train_pairs, train_groups=report.train_groups,
            valid=report.valid_pairs, valid_groups=report.valid_groups,
        )
    )
    if report.prompts_without_description:
        console.print(_("{count} prompts have no description yet and were skipped; run `python -m nbp_mlx data describe`.").format(count=report.prompts_without_description), style="yellow")
    if report.excluded_too_long:
        console.print(
            _("{count} pairs are longer than {limit} tokens and were excluded (longest: {longest} tokens); raise max_seq_length or shorten those prompts:").format(
                count=len(report.excluded_too_long), limit=report.max_seq_length,
                longest=max(item["tokens"] for item in report.excluded_too_long),
            ),
            style="yellow",
        )
        for item in report.excluded_too_long[:10]:
            console.print(f"  {item['group']}  {item['tokens']}  {item['description']}", style="yellow")
    console.print(_("Wrote {train} and {valid}").format(train=report.train_path, valid=report.valid_path))


def _run_train(args) -> int:
    from .cli_progress import CliTrainingObserver, RichProgress, stderr_console
    from .config import load_config
    from .train import train

    overrides = {"max_steps": args.max_steps, "model_name_or_path": args.model, "dataset_dir": args.dataset_dir, "run_name": args.run_name}
    config = load_config(args.config, overrides)
    if args.plan_only:
        return _print_plan(config)
    observer = _PlanPrinter(CliTrainingObserver(), config)
    result = train(
        config,
        run_dir=args.resume,
        resume=bool(args.resume),
        observer=observer,
        progress=RichProgress(),
        handle_sigint=True,
    )
    if result.stopped_early:
        stderr_console.print(
            _("Stopped at iteration {it} of {total}. Adapter saved in {path}; continue with: python -m nbp_mlx train --config {config} --resume {path}").format(
                it=result.iterations_done, total=result.total_iterations, path=result.run_dir, config=args.config
            )
        )
        return 130
    stderr_console.print(_("Training finished. Adapter saved in {path}").format(path=result.run_dir))
    stderr_console.print(_("Next: python -m nbp_mlx generate \"霓虹街头的赛博朋克女孩\" --adapter {path}").format(path=result.run_dir))
    return 0


class _PlanPrinter:
    """Prints the resolved mlx-lm settings once the dataset size is known, then forwards events."""

    def __init__(self, inner, config):
        self.inner = inner
        self.config = config

    def on_event(self, event) -> None:
        if event.kind == "plan":
            _print_plan_rows(self.config, event.total_iterations)
        self.inner.on_event(event)


def _print_plan_rows(config, total_iterations: int) -> None:
    from pathlib import Path

    from .cli_progress import print_rows
    from .config import plan_training
    from .jsonl import iter_jsonl

    train_count = sum(1 for _ in iter_jsonl(Path(config.dataset_dir) / "train.jsonl"))
    layers = _model_layer_count(config.model_name_or_path)
    plan = plan_training(config, train_count, layers)
    print_rows(plan.describe(), _("mlx-lm settings"))


def _model_layer_count(model: str) -> int:
    import json

    from .models.resolve import resolve_model

    resolved = resolve_model(model)
    config = json.loads((resolved.path / "config.json").read_text())
    return int(config.get("num_hidden_layers", 0))


def _print_plan(config) -> int:
    _print_plan_rows(config, 0)
    return 0


def _print_generation_stats(stats, console) -> None:
    ttft = f"{stats.time_to_first_token:.2f}" if stats.time_to_first_token is not None else "?"
    console.print(
        _("{tokens} tokens, {chars} characters; time to first token {ttft} s, {tps:.1f} tokens/s ({reason})").format(
            tokens=stats.generated_tokens, chars=len(stats.text), ttft=ttft, tps=stats.tokens_per_second,
            reason=_finish_reason_text(stats.finish_reason),
        ),
        style="dim",
    )


def _finish_reason_text(reason: str | None) -> str:
    return {
        "stop": _("stopped at the end-of-turn token"),
        "length": _("truncated at --max-tokens"),
        "cancelled": _("cancelled"),
        "error": _("stopped because the JSON constraint rejected a token"),
    }.get(reason or "", _("unknown"))


def _run_model(args) -> int:
    from .cli_progress import RichProgress
    from .models.resolve import resolve_model

    resolved = resolve_model(args.model, RichProgress())
    print(resolved.path)
    return 0


def _run_quickstart(args) -> int:
    from .quickstart import run_quickstart

    return run_quickstart(work_dir=Path(args.work_dir), max_steps=args.max_steps, max_tokens=args.max_tokens, model=args.model)


def _run_tui(args) -> int:
    try:
        from tui.app import main as tui_main
    except ImportError as error:
        from .errors import NbpError

        raise NbpError(_("the terminal app is not available in this installation ({error})").format(error=error)) from error
    return tui_main(["--lang", args.lang] if args.lang else []) or 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        reexec_with_openblas()
    # --lang is read first, so that --help and usage errors already use that language.
    language_parser = argparse.ArgumentParser(add_help=False)
    language_parser.add_argument("--lang", choices=["zh", "en"])
    known, _rest = language_parser.parse_known_args(argv)
    i18n.set_language(known.lang)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpx2", "anthropic", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    preload_message = preload_status_message()
    if preload_message:
        from .cli_progress import stderr_console

        stderr_console.print(preload_message, style="dim", markup=False, highlight=False)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except NbpError as error:
        from .cli_progress import stderr_console

        stderr_console.print(_("error: {message}").format(message=error), style="bold red", markup=False, highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout has gone (`... | head`); further writes would fail again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
