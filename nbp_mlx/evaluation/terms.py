"""Key-element coverage: how many concrete elements of a Chinese description reach the English prompt.

The instruction the model is trained on asks it to keep every key element of
the description. Descriptions are short (about 10 to 20 characters) and consist
mostly of concrete nouns and fixed expressions: a subject (女孩, 猫), clothing,
colors, materials, a scene (街头, 森林), lighting, a shot (特写, 俯拍), an art
style (赛博朋克, 水彩), a mood, a time of day or season, and the weather. Each
of these has a few standard English renderings, so the presence of one of them
in the output is a cheap, deterministic and offline signal that the element was
not dropped. It needs no translation model and no judge model, and the same
input always gets the same score.

Method: ``TermTable.extract`` scans the description from left to right and at
each position takes the longest term of the bundled table
(``nbp_mlx/resources/terms_zh_en.tsv``) that starts there. A term counts as
covered when any of its English variants occurs in the output, ignoring case,
at word boundaries, with simple plural, -ing and -ed forms of the variant's
last word accepted (see ``variant_pattern``).

Limits, all of which make the score a proxy rather than a judgment:

- Description words that are not in the table are not counted at all, so a
  description with no known terms has no coverage score (``None``).
- An element rendered with a synonym that the table lacks counts as missing,
  so coverage underestimates.
- Presence is not correctness. "a cat" counts for 黑猫 only if the table lists
  "cat" for it, "no rain" counts as covering 雨, and relations between
  elements (who wears what, what is in front) are not checked.
- The inflection rules are simple. They miss irregular forms that the table
  does not list and accept some wrong ones (hat → hated).
- A single-character term can match inside a compound that the table lacks,
  which adds an element the description does not contain.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable

from ..errors import DataFormatError
from ..i18n import _

BUNDLED_TABLE = "terms_zh_en.tsv"
HEADER = ("category", "zh", "en")
VARIANT_SEPARATOR = "|"
VOWELS = frozenset("aeiou")


@dataclass(frozen=True)
class Term:
    """One Chinese term and the English words that express it."""

    chinese: str
    english: tuple[str, ...]
    category: str


class TermTable:
    """Chinese terms indexed for longest-match extraction from descriptions."""

    def __init__(self, terms: Iterable[Term]):
        self._terms: dict[str, Term] = {}
        for term in terms:
            if term.chinese in self._terms:
                raise ValueError(_("duplicate term {term!r} in the term table").format(term=term.chinese))
            self._terms[term.chinese] = term
        self._max_length = max((len(chinese) for chinese in self._terms), default=0)

    def __len__(self) -> int:
        return len(self._terms)

    def __contains__(self, chinese: object) -> bool:
        return chinese in self._terms

    def get(self, chinese: str) -> Term | None:
        return self._terms.get(chinese)

    def extract(self, description: str) -> list[Term]:
        """Return the terms of ``description`` by greedy longest match, each once, in order of appearance."""
        found: dict[str, Term] = {}
        position = 0
        while position < len(description):
            term = self._longest_term_at(description, position)
            if term is None:
                position += 1
                continue
            found.setdefault(term.chinese, term)
            position += len(term.chinese)
        return list(found.values())

    def _longest_term_at(self, text: str, position: int) -> Term | None:
        longest = min(self._max_length, len(text) - position)
        for length in range(longest, 0, -1):
            term = self._terms.get(text[position : position + length])
            if term is not None:
                return term
        return None


def parse_terms(text: str, source: str | Path) -> TermTable:
    """Parse a term table in the TSV format of ``terms_zh_en.tsv``.

    Lines starting with ``#`` and blank lines are skipped. The first other line
    must be the header ``category<TAB>zh<TAB>en``. Raises ``DataFormatError``
    with the line number for a malformed row or a duplicate term.
    """
    terms: list[Term] = []
    seen_lines: dict[str, int] = {}
    header_seen = False
    for line_number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [field.strip() for field in line.split("\t")]
        if not header_seen:
            if tuple(fields) != HEADER:
                raise DataFormatError(
                    source,
                    line_number,
                    _("expected the header line 'category<TAB>zh<TAB>en', got {line!r}").format(line=line),
                )
            header_seen = True
            continue
        term = _parse_row(fields, source, line_number)
        if term.chinese in seen_lines:
            raise DataFormatError(
                source,
                line_number,
                _("term {term!r} is already defined on line {line}").format(
                    term=term.chinese, line=seen_lines[term.chinese]
                ),
            )
        seen_lines[term.chinese] = line_number
        terms.append(term)

    if not header_seen:
        raise DataFormatError(source, None, _("the term table is empty; expected a header line and term rows"))
    return TermTable(terms)


def _parse_row(fields: list[str], source: str | Path, line_number: int) -> Term:
    if len(fields) != 3:
        raise DataFormatError(
            source,
            line_number,
            _("expected 3 tab-separated fields (category, zh, en), got {count}").format(count=len(fields)),
        )
    category, chinese, english = fields
    if not chinese or any(character.isspace() for character in chinese):
        raise DataFormatError(
            source, line_number, _("the Chinese term must be non-empty and contain no spaces, got {term!r}").format(term=chinese)
        )
    variants = tuple(variant.strip().lower() for variant in english.split(VARIANT_SEPARATOR))
    if not all(variants):
        raise DataFormatError(
            source,
            line_number,
            _("term {term!r} has an empty English variant; separate variants with a single '|'").format(term=chinese),
        )
    return Term(chinese=chinese, english=variants, category=category)


def load_terms(path: str | Path | None = None) -> TermTable:
    """Load a term table from ``path``, or the bundled table when ``path`` is ``None``."""
    if path is None:
        return _bundled_table()
    path = Path(path)
    return parse_terms(path.read_text(encoding="utf-8"), path)


@functools.lru_cache(maxsize=1)
def _bundled_table() -> TermTable:
    resource = resources.files("nbp_mlx") / "resources" / BUNDLED_TABLE
    return parse_terms(resource.read_text(encoding="utf-8"), str(resource))


@functools.lru_cache(maxsize=4096)
def variant_pattern(variant: str) -> re.Pattern[str]:
    """Compile the case-insensitive pattern that finds ``variant`` in a prompt.

    Words of a multi-word variant may be joined by spaces, hyphens or nothing,
    so "close-up" also finds "close up" and "closeup". The last word also
    matches its plural, -ing and -ed forms when it has 3 or more letters.
    """
    words = [word for word in re.split(r"[\s\-]+", variant.strip().lower()) if word]
    if not words:
        raise ValueError(_("empty English variant"))
    parts = [re.escape(word) for word in words[:-1]]
    parts.append(_inflected(words[-1]))
    body = r"[\s\-]*".join(parts)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def _inflected(word: str) -> str:
    """Return a regular expression for ``word`` and its regular plural, -ing and -ed forms."""
    if not word.isalpha() or not word.isascii() or len(word) < 3:
        return re.escape(word)
    if word.endswith("y") and word[-2] not in VOWELS:
        # city → cities, carry → carried, carrying
        return re.escape(word[:-1]) + "(?:y|ies|ied|ying)"
    if word.endswith("e") and not word.endswith("ee") and len(word) >= 4:
        # dance → dances, danced, dancing
        return re.escape(word[:-1]) + "(?:e|es|ed|ing)"
    last = word[-1]
    doubled = f"|{re.escape(last)}ed|{re.escape(last)}ing" if last not in VOWELS else ""
    # shop → shops, shopped, shopping, and glass → glasses
    return re.escape(word) + f"(?:s|es|ed|ing{doubled})?"


def find_variant(term: Term, text: str) -> str | None:
    """Return the first English variant of ``term`` that occurs in ``text``, or ``None``."""
    normalized = text.replace("\u2019", "'")
    for variant in term.english:
        if variant_pattern(variant).search(normalized):
            return variant
    return None


def key_element_coverage(description: str, output: str, table: TermTable | None = None) -> dict:
    """Measure which terms of ``description`` have an English variant in ``output``.

    Returns ``coverage`` (matched terms / terms, ``None`` when the description
    has no known term), ``elements`` (the Chinese terms found in the
    description), ``matched`` (Chinese term → the English variant found) and
    ``missing`` (Chinese terms with no variant in the output).
    """
    table = table if table is not None else load_terms()
    elements = table.extract(description)
    matched: dict[str, str] = {}
    missing: list[str] = []
    for term in elements:
        variant = find_variant(term, output)
        if variant is None:
            missing.append(term.chinese)
        else:
            matched[term.chinese] = variant

    coverage = len(matched) / len(elements) if elements else None
    return {
        "coverage": coverage,
        "elements": [term.chinese for term in elements],
        "matched": matched,
        "missing": missing,
    }
