"""Prepare mlx-lm chat datasets (``train.jsonl``/``valid.jsonl``) from prompt records.

Input: the records written by ``data import`` (and extended by ``data describe``
and ``data augment``): ``id``, ``prompt``, ``format`` and a ``description``,
plus optional ``variants`` (paraphrases of the description). Every description
and variant of one prompt becomes one training pair, and all pairs of one
prompt land in the same split, so the validation loss measures prompts the
model has not seen.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import DataFormatError, DatasetError
from .i18n import _
from .jsonl import atomic_write_jsonl, atomic_write_text, iter_jsonl
from .progress import NullProgress, Progress
from .prompts import build_messages

logger = logging.getLogger(__name__)

SPLIT_SEED = 42
VALID_FRACTION = 0.1


@dataclass
class Pair:
    group: str  # id of the source prompt
    description: str
    prompt: str
    format: str


@dataclass
class PrepareReport:
    prompts: int = 0
    prompts_without_description: int = 0
    pairs: int = 0
    train_pairs: int = 0
    valid_pairs: int = 0
    train_groups: int = 0
    valid_groups: int = 0
    excluded_too_long: list[dict] = field(default_factory=list)
    max_tokens_seen: int = 0
    max_seq_length: int = 0
    train_path: str = ""
    valid_path: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def read_pairs(path: str | Path) -> tuple[list[Pair], int, int]:
    """Return (pairs, prompt count, prompts without a description) from a records file."""
    pairs: list[Pair] = []
    prompts = 0
    undescribed = 0
    for line, record in iter_jsonl(path):
        missing = [key for key in ("id", "prompt", "format") if key not in record]
        if missing:
            raise DataFormatError(
                path,
                line,
                _("missing key(s) {missing}; found {found}. Run `python -m nbp_mlx data import` to create this file").format(
                    missing=", ".join(missing), found=", ".join(sorted(record)) or _("none")
                ),
            )
        if record["format"] not in ("text", "json"):
            raise DataFormatError(path, line, _("'format' must be 'text' or 'json', got {value!r}").format(value=record["format"]))
        prompts += 1
        descriptions = []
        if isinstance(record.get("description"), str) and record["description"].strip():
            descriptions.append(record["description"].strip())
        variants = record.get("variants") or []
        if not isinstance(variants, list) or not all(isinstance(item, str) for item in variants):
            raise DataFormatError(path, line, _("'variants' must be a list of strings"))
        descriptions.extend(item.strip() for item in variants if item.strip() and item.strip() not in descriptions)
        if not descriptions:
            undescribed += 1
            continue
        for description in descriptions:
            pairs.append(Pair(record["id"], description, record["prompt"], record["format"]))
    return pairs, prompts, undescribed


def split_groups(groups: list[str], seed: int = SPLIT_SEED, valid_fraction: float = VALID_FRACTION) -> tuple[set[str], set[str]]:
    """Split group ids into (train, valid); at least one group goes to each side when there are two or more."""
    ordered = sorted(set(groups))
    random.Random(seed).shuffle(ordered)
    valid_count = max(1, round(valid_fraction * len(ordered))) if len(ordered) > 1 else 0
    return set(ordered[valid_count:]), set(ordered[:valid_count])


def prepare_dataset(
    records_path: str | Path,
    out_dir: str | Path,
    tokenizer,
    *,
    max_seq_length: int = 2048,
    batch_size: int = 2,
    seed: int = SPLIT_SEED,
    valid_fraction: float = VALID_FRACTION,
    progress: Progress | None = None,
) -> PrepareReport:
    """Write ``train.jsonl``, ``valid.jsonl`` and ``prepare_report.json`` into ``out_dir``."""
    progress = progress or NullProgress()
    records_path = Path(records_path)
    out_dir = Path(out_dir)
    pairs, prompt_count, undescribed = read_pairs(records_path)
    report = PrepareReport(prompts=prompt_count, prompts_without_description=undescribed, max_seq_length=max_seq_length)
    if not pairs:
        raise DatasetError(
            _("{path}: no prompt has a description, so there is nothing to train on; run `python -m nbp_mlx data describe` first or import a file with descriptions").format(
                path=records_path
            )
        )

    progress.start(_("Tokenizing pairs"), total=len(pairs), unit=_("pairs"))
    kept: list[tuple[Pair, dict]] = []
    for index, pair in enumerate(pairs, start=1):
        messages = build_messages(pair.description, pair.format, pair.prompt)
        length = len(tokenizer.apply_chat_template(messages))
        report.max_tokens_seen = max(report.max_tokens_seen, length)
        if length > max_seq_length:
            report.excluded_too_long.append({"group": pair.group, "description": pair.description, "tokens": length})
        else:
            # mlx-lm reads only "messages"; the other keys let `eval` use the split.
            kept.append((pair, {"messages": messages, "group": pair.group, "description": pair.description, "format": pair.format}))
        progress.update(index, len(pairs))
    progress.finish()
    if report.excluded_too_long:
        logger.warning(
            "Excluded %d pair(s) longer than %d tokens", len(report.excluded_too_long), max_seq_length
        )

    train_groups, valid_groups = split_groups([pair.group for pair, _row in kept], seed, valid_fraction)
    train_rows = [row for pair, row in kept if pair.group in train_groups]
    valid_rows = [row for pair, row in kept if pair.group in valid_groups]
    # mlx-lm forms batches from the file's lines, so the training file is shuffled.
    random.Random(seed).shuffle(train_rows)

    report.pairs = len(kept)
    report.train_pairs, report.valid_pairs = len(train_rows), len(valid_rows)
    report.train_groups, report.valid_groups = len(train_groups), len(valid_groups)
    if len(train_rows) < batch_size:
        raise DatasetError(
            _("the training split has {count} pair(s), fewer than one batch of {batch}; add prompts or lower --batch-size (per_device_train_batch_size in the config)").format(
                count=len(train_rows), batch=batch_size
            )
        )
    if len(valid_rows) < batch_size:
        needed = math.ceil(batch_size / max(valid_fraction, 1e-9))
        raise DatasetError(
            _(
                "the validation split has {count} pair(s), fewer than one batch of {batch}; add prompts "
                "(about {needed} source prompts give a full validation batch) or lower --batch-size (per_device_train_batch_size in the config)"
            ).format(count=len(valid_rows), batch=batch_size, needed=needed)
        )

    train_path, valid_path = out_dir / "train.jsonl", out_dir / "valid.jsonl"
    atomic_write_jsonl(train_path, train_rows)
    atomic_write_jsonl(valid_path, valid_rows)
    report.train_path, report.valid_path = str(train_path), str(valid_path)
    atomic_write_text(out_dir / "prepare_report.json", json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    logger.info("Prepared %d train and %d valid pairs in %s", len(train_rows), len(valid_rows), out_dir)
    return report
