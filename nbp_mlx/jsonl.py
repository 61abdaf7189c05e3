"""JSONL reading and writing shared by every stage.

Writes of whole files are atomic: a temporary file in the same folder is
fsynced and renamed over the target, so a failure never leaves a half-written
file or destroys the previous one. ``append_jsonl`` flushes every line for
checkpoints that must survive a crash.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DataFormatError
from .i18n import _

logger = logging.getLogger(__name__)


def _read_umask() -> int:
    # Reading the umask means setting it, so it is read once at import, before any worker thread starts.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as output:
            output.write(text)
            output.flush()
            os.fsync(output.fileno())
        # mkstemp creates the file for its owner only; results get the usual umask-based mode.
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as JSONL atomically and return the number of rows."""
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one row and flush it to disk before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8", newline="\n") as output:
        output.write(json.dumps(row, ensure_ascii=False) + "\n")
        output.flush()
        os.fsync(output.fileno())


def read_without_torn_tail(path: str | Path, *, truncate: bool = True) -> bytes:
    """Return the complete lines of an append-only JSONL file, without a last line torn by a crash.

    A last line without its newline, or one that ends in a newline but is not
    JSON, can only come from an interrupted append. With ``truncate`` it is also
    removed from the file, so the next append starts on a clean line.
    """
    path = Path(path)
    raw = path.read_bytes()
    complete = raw.rfind(b"\n") + 1
    last_start = raw.rfind(b"\n", 0, max(complete - 1, 0)) + 1
    if complete:
        try:
            json.loads(raw[last_start:complete])
        except (json.JSONDecodeError, UnicodeDecodeError):
            complete = last_start
    if complete < len(raw):
        logger.warning("Dropping a torn last line (%d bytes) from %s", len(raw) - complete, path)
        if truncate:
            with path.open("r+b") as handle:
                handle.truncate(complete)
                handle.flush()
                os.fsync(handle.fileno())
    return raw[:complete]


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each line; raise ``DataFormatError`` on bad lines."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, _("file not found"))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataFormatError(path, line, _("invalid UTF-8 at byte offset {offset}; re-save the file as UTF-8").format(offset=error.start)) from None
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataFormatError(path, None, _("file is empty"))
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataFormatError(path, number, _("blank line between records; delete it"))
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines) and not text.endswith("\n"):
                reason = _("the last line is cut off (incomplete JSON); the file was probably truncated, delete or complete that line")
            else:
                reason = _("invalid JSON at column {column}: {message}").format(column=error.colno, message=error.msg)
            raise DataFormatError(path, number, reason) from None
        if not isinstance(value, dict):
            raise DataFormatError(path, number, _("expected a JSON object, got {kind}").format(kind=type(value).__name__))
        yield number, value
