"""The ``data describe`` and ``data augment`` commands.

``register`` adds both to the ``data`` command group of ``nbp_mlx.cli``.
``python -m nbp_mlx.cli_datagen describe …`` runs them without the main CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .datagen.engine import DEFAULT_LOCAL_MODEL, DEFAULT_MODEL, DatagenConfig, estimate_run, run_datagen
from .datagen.pricing import format_cost
from .errors import NbpError
from .i18n import _

logger = logging.getLogger(__name__)


def register(data_subparsers) -> None:
    """Add the ``describe`` and ``augment`` subcommands to ``data_subparsers``."""
    describe = data_subparsers.add_parser(
        "describe",
        help=_("write a short Chinese description for every prompt that has none, with Claude or a local model"),
        description=_("Write a short Chinese description for every prompt without one. Reruns resume from the checkpoint."),
    )
    _add_options(describe, "data/prompts.jsonl", "data/described.jsonl")
    describe.set_defaults(handler=run_datagen_command, datagen_task="describe")

    augment = data_subparsers.add_parser(
        "augment",
        help=_("write two paraphrase variants of every description, with Claude or a local model"),
        description=_("Write two paraphrase variants of each prompt's description. Reruns resume from the checkpoint."),
    )
    _add_options(augment, "data/described.jsonl", "data/augmented.jsonl")
    augment.set_defaults(handler=run_datagen_command, datagen_task="augment")


def _add_options(parser: argparse.ArgumentParser, default_input: str, default_output: str) -> None:
    parser.add_argument("--input", default=default_input, help=_("records file to read (default: %(default)s)"))
    parser.add_argument("--output", default=default_output, help=_("records file to write (default: %(default)s)"))
    parser.add_argument("--checkpoint", help=_("JSONL checkpoint of finished records (default: <output name>.checkpoint.jsonl beside the output)"))
    parser.add_argument("--backend", choices=["api", "local"], default="api", help=_("Anthropic API or a local MLX model (default: %(default)s)"))
    parser.add_argument("--model", default=DEFAULT_MODEL, help=_("Claude model id for --backend api (default: %(default)s)"))
    parser.add_argument("--local-model", default=DEFAULT_LOCAL_MODEL, help=_("model for --backend local: bundled, a .gguf file, a model folder or a Hugging Face repo id (default: %(default)s)"))
    parser.add_argument("--concurrency", type=int, default=5, help=_("maximum requests in flight (default: %(default)s)"))
    parser.add_argument("--batch", action="store_true", help=_("use the Message Batches API: half the price, results within 24 hours"))
    parser.add_argument("--dry-run", action="store_true", help=_("print the request count and an estimated cost, and send nothing"))
    parser.add_argument("--max-retries", type=int, default=6, help=_("retries per request on rate limits, overload, server errors and timeouts (default: %(default)s)"))
    parser.add_argument("--max-retry-wait", type=float, default=120.0, help=_("longest Retry-After wait to honour, in seconds; a longer one fails the record (default: %(default)s)"))
    parser.add_argument("--timeout", type=float, default=60.0, help=_("timeout per API request, in seconds (default: %(default)s)"))
    parser.add_argument("--poll-interval", type=float, default=30.0, help=_("seconds between batch status checks with --batch (default: %(default)s)"))
    parser.add_argument("--backoff-base", type=float, default=1.0, help=argparse.SUPPRESS)


def config_from_args(args) -> DatagenConfig:
    return DatagenConfig(
        task=args.datagen_task,
        input_path=args.input,
        output_path=args.output,
        checkpoint_path=args.checkpoint,
        backend=args.backend,
        model=args.model,
        local_model=args.local_model,
        concurrency=args.concurrency,
        max_retries=args.max_retries,
        max_retry_wait=args.max_retry_wait,
        timeout=args.timeout,
        backoff_base=args.backoff_base,
        batch=args.batch,
        batch_poll_interval=args.poll_interval,
    )


def run_datagen_command(args) -> int:
    """Run ``data describe`` or ``data augment``; return 1 when some records failed."""
    from .cli_progress import RichProgress, stderr_console

    config = config_from_args(args)
    if args.dry_run:
        estimate = estimate_run(config)
        print(
            _("Dry run: {requests} requests to {model} ({skipped} already done). Estimated {input} input and {output} output tokens, "
              "estimated cost {cost}. This is an estimate: tokens are counted as characters ÷ 3, without prompt caching, retries or corrective requests.").format(
                requests=estimate.requests, model=estimate.model, skipped=estimate.skipped, input=estimate.input_tokens,
                output=estimate.output_tokens, cost=format_cost(estimate.cost),
            )
        )
        return 0

    result = asyncio.run(run_datagen(config, RichProgress()))
    if result.stats.failed:
        stderr_console.print(
            _("{count} records failed (reasons in {checkpoint}); rerun the same command to retry them").format(
                count=result.stats.failed, checkpoint=result.checkpoint_path
            ),
            markup=False,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``describe`` or ``augment`` as a program of its own."""
    parser = argparse.ArgumentParser(prog="python -m nbp_mlx.cli_datagen")
    parser.add_argument("-v", "--verbose", action="store_true", help=_("log details to stderr"))
    register(parser.add_subparsers(dest="data_command", metavar="STEP", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpx2", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.handler(args) or 0)
    except NbpError as error:
        from .cli_progress import stderr_console

        stderr_console.print(_("error: {message}").format(message=error), style="bold red", markup=False, highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
