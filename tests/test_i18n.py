"""Checks of the zh_CN message catalog and of switching the message language."""

from __future__ import annotations

import gettext
import io
import re
import string

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from nbp_mlx import i18n

PO_PATH = i18n.LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
PERCENT_FIELD = re.compile(r"%\((\w+)\)[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]")
HAN = re.compile(r"[\u4e00-\u9fff]")


def _read_catalog():
    with PO_PATH.open("rb") as po_file:
        return read_po(po_file)


def _messages() -> list:
    return [message for message in _read_catalog() if message.id]


def _brace_fields(text: str) -> set[tuple[str, str, str | None]]:
    """Return the ``str.format`` fields of ``text`` as (name, format spec, conversion)."""
    return {
        (name, spec, conversion)
        for _literal, name, spec, conversion in string.Formatter().parse(text)
        if name is not None
    }


def _texts(message) -> list[str]:
    """Return the singular and plural forms of a msgid or msgstr."""
    return list(message) if isinstance(message, (list, tuple)) else [message]


def _ensure_compiled() -> None:
    """Compile the .po next to itself when the .mo is missing or older, as setup.py does at install."""
    mo_path = PO_PATH.with_suffix(".mo")
    if mo_path.exists() and mo_path.stat().st_mtime >= PO_PATH.stat().st_mtime:
        return
    with mo_path.open("wb") as mo_file:
        write_mo(mo_file, _read_catalog())


def test_catalog_has_messages():
    assert len(_messages()) > 100


@pytest.mark.parametrize("message", _messages(), ids=lambda message: _texts(message.id)[0][:60])
def test_message_translated(message):
    assert not message.fuzzy, "fuzzy entries are skipped when the catalog is compiled"
    for translation in _texts(message.string):
        assert translation.strip()


@pytest.mark.parametrize("message", _messages(), ids=lambda message: _texts(message.id)[0][:60])
def test_message_keeps_placeholders(message):
    source_fields = _brace_fields(_texts(message.id)[0])
    source_percent = sorted(PERCENT_FIELD.findall(_texts(message.id)[0]))
    for translation in _texts(message.string):
        assert _brace_fields(translation) == source_fields
        assert sorted(PERCENT_FIELD.findall(translation)) == source_percent


def test_catalog_compiles():
    buffer = io.BytesIO()
    write_mo(buffer, _read_catalog())
    buffer.seek(0)
    translations = gettext.GNUTranslations(buffer)

    message = "training examples"
    assert translations.gettext(message) == "训练样本数"


def test_set_language_zh_translates():
    _ensure_compiled()
    try:
        assert i18n.set_language("zh") == "zh_CN"
        translated = i18n._("Training finished. Adapter saved in {path}")
        assert HAN.search(translated), translated
        assert "{path}" in translated
    finally:
        i18n.set_language("en")
    assert i18n._("Training finished. Adapter saved in {path}") == "Training finished. Adapter saved in {path}"
