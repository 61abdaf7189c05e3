"""Settings and generation history of the terminal app, kept under ``home_dir()/tui/``.

``settings.json`` holds the choices the user made (language, model, adapter,
backend, format and the last paths typed into each screen). ``history.jsonl``
holds one row per finished generation, newest last.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from nbp_mlx.jsonl import append_jsonl, atomic_write_text, iter_jsonl
from nbp_mlx.paths import home_dir

logger = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
HISTORY_FILE = "history.jsonl"
HISTORY_LIMIT = 200  # rows shown in the Generate screen; the file keeps every row


def tui_dir() -> Path:
    return home_dir() / "tui"


@dataclass
class TuiSettings:
    """Choices remembered between sessions; unknown keys in the file are ignored."""

    language: str | None = None  # "zh" or "en"; None follows NBP_MLX_LANG and the locale
    model: str = "bundled"
    adapter: str = ""
    backend: str = "mlx"
    format: str = "text"
    paths: dict[str, str] = field(default_factory=dict)  # input id -> last value typed there

    @classmethod
    def load(cls, path: Path | None = None) -> "TuiSettings":
        path = path or tui_dir() / SETTINGS_FILE
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            logger.warning("Ignoring unreadable settings file %s: %s", path, error)
            return cls()
        if not isinstance(raw, dict):
            return cls()
        known = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in known})

    def save(self, path: Path | None = None) -> None:
        path = path or tui_dir() / SETTINGS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n")


def append_history(row: dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    """Append one finished generation to ``history.jsonl`` and return the stored row."""
    path = path or tui_dir() / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {"time": datetime.now().isoformat(timespec="seconds"), **row}
    append_jsonl(path, stored)
    return stored


def read_history(path: Path | None = None) -> list[dict[str, Any]]:
    """Return the last ``HISTORY_LIMIT`` generations, oldest first."""
    path = path or tui_dir() / HISTORY_FILE
    if not path.is_file():
        return []
    return [row for _line, row in iter_jsonl(path)][-HISTORY_LIMIT:]
