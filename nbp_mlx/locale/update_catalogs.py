"""Re-extract the gettext messages (``_()``, ``ngettext()``) and merge them into the .po catalogs.

Usage, from any folder: ``python nbp_mlx/locale/update_catalogs.py [LANG ...]``.
Without arguments it updates every existing catalog. A named language that has
no catalog yet (for example ``ja``) gets a new one, which ``nbp_mlx/i18n.py``
loads only after ``normalize_language`` accepts that code. New messages arrive with
an empty msgstr; changed messages arrive marked fuzzy with the old translation.
``write_mo`` skips both, so translate them and remove the ``#, fuzzy`` lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po, write_po

DOMAIN = "nbp_mlx"
LOCALE_DIR = Path(__file__).resolve().parent
ROOT = LOCALE_DIR.parent.parent
SOURCE_DIRS = ("nbp_mlx", "tui")


def extract_template() -> Catalog:
    """Collect the messages of ``SOURCE_DIRS`` and write ``nbp_mlx.pot``."""
    template = Catalog(project="nbp-mlx", msgid_bugs_address="", fuzzy=False)
    for source_dir in SOURCE_DIRS:
        messages = extract_from_dir(
            ROOT / source_dir,
            method_map=[("**.py", "python")],
            keywords=DEFAULT_KEYWORDS,
            comment_tags=("TRANSLATORS:",),
        )
        for filename, lineno, message, comments, context in messages:
            location = (f"{source_dir}/{filename}", lineno)
            template.add(message, None, [location], auto_comments=comments, context=context)
    with (LOCALE_DIR / f"{DOMAIN}.pot").open("wb") as pot_file:
        write_po(pot_file, template, width=76)
    return template


def update_catalog(po_path: Path, template: Catalog, language: str) -> tuple[int, int]:
    """Merge ``template`` into one catalog and return its (untranslated, fuzzy) counts."""
    if po_path.exists():
        with po_path.open("rb") as po_file:
            catalog = read_po(po_file, locale=language)
    else:
        po_path.parent.mkdir(parents=True, exist_ok=True)
        catalog = Catalog(locale=language, project="nbp-mlx", msgid_bugs_address="", fuzzy=False)
    catalog.update(template)
    with po_path.open("wb") as po_file:
        write_po(po_file, catalog, width=76, ignore_obsolete=True)

    untranslated = 0
    fuzzy = 0
    for message in catalog:
        if not message.id:
            continue  # the header entry
        forms = message.string if isinstance(message.string, (list, tuple)) else [message.string]
        untranslated += not all(forms)
        fuzzy += message.fuzzy
    return untranslated, fuzzy


def main(languages: list[str]) -> int:
    template = extract_template()
    print(f"{len(template)} messages in {LOCALE_DIR / f'{DOMAIN}.pot'}")
    if not languages:
        languages = sorted(path.parent.parent.name for path in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    for language in languages:
        po_path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
        untranslated, fuzzy = update_catalog(po_path, template, language)
        print(f"{po_path.relative_to(ROOT)}: {untranslated} untranslated, {fuzzy} fuzzy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
