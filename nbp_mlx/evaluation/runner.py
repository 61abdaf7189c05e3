"""Generate prompts for evaluation pairs with one or more systems, and keep every result.

An evaluation pair is a Chinese description with its reference prompt. Pairs
come from either kind of file:

- a split written by ``data prepare`` (``valid.jsonl``), the held-back set
  of a training run. Each chat row's ``description`` and ``format`` keys name
  the request, and its last assistant message is the reference;
- any file that ``data import`` reads (JSONL, JSON, CSV, text) with
  descriptions, for example a gallery export or the user's own pairs.

A *system* is a named backend, normally ``base`` (the model without the
adapter) and ``tuned``. ``run_systems`` appends one line per generated prompt to
``items-<system>.jsonl`` in the output folder and flushes it, so a stopped
evaluation resumes where it stopped; ``run.json`` contains the settings, and a
rerun with other settings is rejected instead of mixing results.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import DataFormatError
from ..generate import GenerationSettings, GenerationStats
from ..i18n import _
from ..jsonl import append_jsonl, atomic_write_text, iter_jsonl, read_without_torn_tail
from ..progress import NullProgress, Progress
from .metrics import EvaluationError

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"


@dataclass(frozen=True)
class EvalPair:
    id: str
    description: str
    format: str  # "text" or "json"
    reference: str
    source: str  # FILE:LINE


@dataclass
class EvalSystem:
    """A named backend; ``open`` builds it only when it has work to do."""

    name: str
    label: str  # for people, in the user's language
    open: Callable[[], Any]
    key: str = ""  # the backend and its files, untranslated, so a rerun in another language matches


def load_eval_pairs(path: str | Path) -> list[EvalPair]:
    """Read evaluation pairs from a ``data prepare`` split or any importable prompt file."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(_("{path}: file not found; pass the pairs file with --pairs").format(path=path))
    if path.suffix.lower() == ".jsonl" and _first_row_has_messages(path):
        pairs = _pairs_from_split(path)
    else:
        pairs = _pairs_from_records(path)
    if not pairs:
        raise EvaluationError(
            _("{path}: no entry has both a description and a prompt, so there is nothing to evaluate").format(path=path)
        )
    return pairs


def select_pairs(pairs: list[EvalPair], limit: int | None, seed: int) -> list[EvalPair]:
    """Return ``limit`` pairs drawn with ``seed``, in file order; all pairs when ``limit`` is None."""
    if limit is not None and limit < 1:
        raise EvaluationError(_("--limit must be at least 1, got {value}").format(value=limit))
    if limit is None or limit >= len(pairs):
        return list(pairs)
    chosen = sorted(random.Random(seed).sample(range(len(pairs)), limit))
    return [pairs[index] for index in chosen]


def run_systems(
    pairs: list[EvalPair],
    systems: list[EvalSystem],
    settings: GenerationSettings,
    out_dir: str | Path,
    *,
    pairs_file: str,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Generate every pair with every system and return the items per system, in pair order.

    Items already in ``items-<system>.jsonl`` from an earlier run with the same
    settings are kept and not generated again.
    """
    if not systems:
        raise EvaluationError(_("no system to evaluate; pass --adapter, --gguf or --ollama-model"))
    progress = progress or NullProgress()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EvaluationError(_("{path}: --out must be a folder, but this is a file; pass a folder path").format(path=out_dir))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EvaluationError(
            _("{path}: cannot create the report folder ({reason}); pass another --out").format(path=out_dir, reason=error.strerror or error)
        ) from error
    _check_or_write_run_file(out_dir, pairs, systems, settings, pairs_file)

    results: dict[str, list[dict[str, Any]]] = {}
    for system in systems:
        items_path = out_dir / f"items-{system.name}.jsonl"
        done = _read_done_items(items_path)
        pending = [pair for pair in pairs if pair.id not in done]
        if pending:
            progress.message(system.label)
            backend = system.open()
            try:
                _warm_up(backend, settings)
                _generate_pending(backend, system, pending, settings, items_path, done, progress, len(pairs), should_stop)
            finally:
                close = getattr(backend, "close", None)
                if close is not None:
                    close()
        results[system.name] = [done[pair.id] for pair in pairs if pair.id in done]
    return results


def _warm_up(backend, settings: GenerationSettings) -> None:
    """Generate two tokens once, so the first timed item does not pay for loading and first-call setup."""
    stats = GenerationStats()
    warm_settings = GenerationSettings(temperature=0.0, max_tokens=2, seed=settings.seed)
    for _chunk in backend.stream("热身", "text", warm_settings, stats):
        pass


def _generate_pending(backend, system, pending, settings, items_path, done, progress, total, should_stop) -> None:
    progress.start(_("Generating with {system}").format(system=system.name), total=total, unit=_("prompts"))
    progress.update(len(done), total)
    for pair in pending:
        if should_stop is not None and should_stop():
            break
        stats = GenerationStats()
        text = "".join(backend.stream(pair.description, pair.format, settings, stats))
        item = {
            "id": pair.id,
            "system": system.name,
            "description": pair.description,
            "format": pair.format,
            "reference": pair.reference,
            "output": text,
            "time_to_first_token": stats.time_to_first_token,
            "tokens_per_second": stats.tokens_per_second,
            "generated_tokens": stats.generated_tokens,
            "prompt_tokens": stats.prompt_tokens,
            "finish_reason": stats.finish_reason,
            "json_method": stats.json_method,
            "json_text": stats.json_text,  # the JSON after closing or repair, None for text pairs
            "source": pair.source,
        }
        append_jsonl(items_path, item)
        done[pair.id] = item
        progress.update(len(done), total, detail=_("{tokens} tokens, {speed:.1f} tokens/s").format(
            tokens=stats.generated_tokens, speed=stats.tokens_per_second
        ))
    progress.finish()


def _check_or_write_run_file(out_dir: Path, pairs, systems, settings: GenerationSettings, pairs_file: str) -> None:
    """Write ``run.json``, or raise when the folder contains a run with other settings."""
    expected = {
        "pairs_file": pairs_file,
        "pair_ids": [pair.id for pair in pairs],
        "decoding": asdict(settings),
        "systems": {system.name: system.key or system.label for system in systems},
    }
    path = out_dir / RUN_FILE
    if path.exists():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise EvaluationError(
                _("{path}: cannot read the earlier run's settings ({reason}); delete the folder or pass another --out").format(
                    path=path, reason=error
                )
            ) from error
        changes = _describe_changes(found, expected)
        if changes:
            raise EvaluationError(
                _("{path}: this folder contains an evaluation with other settings ({changes}); pass another --out, or delete the folder to start over").format(
                    path=out_dir, changes="; ".join(changes)
                )
            )
        expected["systems"] = {**found.get("systems", {}), **expected["systems"]}
    atomic_write_text(path, json.dumps(expected, ensure_ascii=False, indent=2) + "\n")


def _describe_changes(found: dict, expected: dict) -> list[str]:
    """Return one "key: before → now" text per setting that differs from the earlier run."""
    changes = []
    if found.get("pairs_file") != expected["pairs_file"]:
        changes.append(f"pairs_file: {found.get('pairs_file')} → {expected['pairs_file']}")
    if found.get("pair_ids") != expected["pair_ids"]:
        changes.append(
            _("the pairs: {before} earlier, {now} now (--limit or --seed changed, or the file did)").format(
                before=len(found.get("pair_ids") or []), now=len(expected["pair_ids"])
            )
        )
    before_decoding = found.get("decoding") or {}
    for key, value in expected["decoding"].items():
        if before_decoding.get(key) != value:
            changes.append(f"{key}: {before_decoding.get(key)} → {value}")
    for name, key in expected["systems"].items():
        earlier = (found.get("systems") or {}).get(name)
        if earlier is not None and earlier != key:
            changes.append(f"{name}: {earlier} → {key}")
    return changes


def _read_done_items(path: Path) -> dict[str, dict[str, Any]]:
    """Return the saved items by id; a last line cut off by a crash is removed from the file."""
    if not path.exists():
        return {}
    if not read_without_torn_tail(path):
        return {}
    return {row["id"]: row for _line, row in iter_jsonl(path) if "id" in row}


def _first_row_has_messages(path: Path) -> bool:
    for _line, row in iter_jsonl(path):
        return isinstance(row, dict) and "messages" in row
    return False


def _pairs_from_split(path: Path) -> list[EvalPair]:
    pairs: list[EvalPair] = []
    seen: dict[str, int] = {}
    for line, row in iter_jsonl(path):
        if "description" not in row or row.get("format") not in ("text", "json"):
            raise DataFormatError(
                path,
                line,
                _("this chat row has no \"description\" key or no \"format\" of text or json; datasets from older versions lack them, so run `python -m nbp_mlx data prepare` again"),
            )
        messages = row.get("messages") or []
        reference = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "assistant"), "")
        if not reference:
            raise DataFormatError(path, line, _("this chat row has no assistant message to use as the reference prompt"))
        group = str(row.get("group") or f"line-{line}")
        seen[group] = seen.get(group, 0) + 1
        pair_id = group if seen[group] == 1 else f"{group}#{seen[group]}"
        pairs.append(EvalPair(pair_id, row["description"], row["format"], reference, f"{path.name}:{line}"))
    return pairs


def _pairs_from_records(path: Path) -> list[EvalPair]:
    from ..data.importer import import_prompts

    result = import_prompts(path)
    return [
        EvalPair(record.id, record.description, record.format, record.prompt, record.source)
        for record in result.records
        if record.description
    ]
