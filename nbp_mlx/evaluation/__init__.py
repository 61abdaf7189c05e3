"""Offline evaluation of generated prompts: per-item scores, summaries, paired comparison and report files.

``metrics`` scores one runner item at a time and aggregates them, ``terms``
measures key-element coverage with the bundled Chinese–English term table, and
``report`` writes report.json, report.md and report.png. Importing this package
does not import matplotlib; ``report.render_png`` imports it when it draws.
"""

from .metrics import EvaluationError, compare, corpus_chrf, paired_bootstrap, score_item, summarize
from .report import write_report
from .terms import TermTable, key_element_coverage, load_terms

__all__ = [
    "EvaluationError",
    "TermTable",
    "compare",
    "corpus_chrf",
    "key_element_coverage",
    "load_terms",
    "paired_bootstrap",
    "score_item",
    "summarize",
    "write_report",
]
