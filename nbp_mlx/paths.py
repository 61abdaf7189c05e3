"""Locations of caches, settings and bundled resources."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "NBP_MLX_HOME"
PACKAGE_DIR = Path(__file__).resolve().parent
# A source checkout has data/, configs/ and adapters/ beside the package.
REPO_DIR = PACKAGE_DIR.parent


def home_dir() -> Path:
    """Return the folder for caches and settings: ``$NBP_MLX_HOME`` or ``~/.cache/nbp-mlx``."""
    value = os.environ.get(HOME_ENV)
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "nbp-mlx"


def models_cache_dir() -> Path:
    return home_dir() / "models"
