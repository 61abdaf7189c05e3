"""Message translation through the standard ``gettext`` catalogs.

Catalogs live in ``nbp_mlx/locale/<lang>/LC_MESSAGES/nbp_mlx.po`` and are
compiled to ``.mo`` files when the package is built or installed (see
``setup.py``). The language is chosen, in order, by ``set_language()`` (the
``--lang`` option), the ``NBP_MLX_LANG`` environment variable, and the usual
locale variables (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``).
English is the source language and the fallback.
"""

from __future__ import annotations

import gettext
import os
from pathlib import Path

DOMAIN = "nbp_mlx"
LOCALE_DIR = Path(__file__).parent / "locale"
SUPPORTED = ("en", "zh_CN")
LANG_ENV = "NBP_MLX_LANG"

_translation: gettext.NullTranslations | None = None
_language: str | None = None


def normalize_language(value: str) -> str | None:
    """Map ``zh``, ``zh-CN``, ``zh_CN.UTF-8``, ``en_US`` and the like to a supported code."""
    code = value.strip().split(".")[0].split("@")[0].replace("-", "_").lower()
    if not code or code in ("c", "posix"):
        return None
    if code.startswith("zh"):
        return "zh_CN"
    if code.startswith("en"):
        return "en"
    return None


def detect_language() -> str:
    """Return the language from ``NBP_MLX_LANG`` or the locale variables, else English."""
    override = os.environ.get(LANG_ENV)
    if override:
        chosen = normalize_language(override)
        if chosen:
            return chosen
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable)
        if not value:
            continue
        # LANGUAGE may hold a colon-separated preference list.
        for candidate in value.split(":"):
            chosen = normalize_language(candidate)
            if chosen:
                return chosen
    return "en"


def set_language(value: str | None) -> str:
    """Select the message language; ``None`` re-detects it from the environment."""
    global _translation, _language
    language = normalize_language(value) if value else detect_language()
    if language is None:
        raise ValueError(f"unsupported language {value!r}; use one of: zh, en")
    if language == "en":
        _translation = gettext.NullTranslations()
    else:
        _translation = gettext.translation(
            DOMAIN, localedir=str(LOCALE_DIR), languages=[language], fallback=True
        )
    _language = language
    _bind_global_domain(language)
    return language


def _bind_global_domain(language: str) -> None:
    """Let argparse, which translates through the global gettext domain, use this catalog."""
    gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))
    gettext.textdomain(DOMAIN)
    # The global functions pick the language from the environment on every call.
    os.environ["LANGUAGE"] = language


def current_language() -> str:
    if _language is None:
        set_language(None)
    return _language  # type: ignore[return-value]


def _(message: str) -> str:
    """Translate ``message`` into the current language."""
    if _translation is None:
        set_language(None)
    return _translation.gettext(message)  # type: ignore[union-attr]


def ngettext(singular: str, plural: str, count: int) -> str:
    if _translation is None:
        set_language(None)
    return _translation.ngettext(singular, plural, count)  # type: ignore[union-attr]
