"""Evaluation report files: report.json for tools, report.md for people and report.png with the distributions.

``write_report`` scores every system's items, summarizes them, compares two
systems when there are at least two, and writes the three files atomically
(a temporary file in the output folder, then ``os.replace``), so a reader never
sees a half-written report. All user-facing text goes through ``_()``. The
keys of report.json are English identifiers in every language.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from ..i18n import _
from .metrics import (
    PROMPT_MAX_CHARS,
    PROMPT_MIN_CHARS,
    THRESHOLDS,
    EvaluationError,
    compare,
    score_item,
    summarize,
)
from .terms import TermTable

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
REPORT_PNG = "report.png"
# Below this many pairs a bootstrap interval is too unstable to trust.
FEW_PAIRS = 20
EXAMPLES_PER_END = 3  # lowest and highest chrF examples shown per system
EXAMPLE_MAX_CHARS = 600

# Fonts with CJK glyphs, tried after DejaVu Sans so that translated chart
# labels and Chinese system names render. Only installed ones are used.
CJK_FONT_CANDIDATES = (
    "PingFang SC",
    "Hiragino Sans GB",
    "Heiti SC",
    "Arial Unicode MS",
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "Microsoft YaHei",
    "SimHei",
)


def write_report(
    out_dir: str | Path,
    systems: dict[str, list[dict]],
    settings: dict,
    *,
    terms: TermTable | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> dict[str, Path]:
    """Score, summarize and compare ``systems``, then write report.json, report.md and report.png.

    ``systems`` maps a system name to its runner items (scored items work as
    well, because scoring keeps the input fields). The comparison uses the
    systems named "base" and "tuned" when both exist, else the first two,
    with the bootstrap seed taken from ``settings["seed"]`` (0 when unset).
    Returns the paths under the keys "json", "markdown" and "png".
    """
    if not systems:
        raise EvaluationError(_("no systems to report; pass the items of at least one system"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    scored = {name: [score_item(item, terms) for item in items] for name, items in systems.items()}
    summaries = {name: summarize(items) for name, items in scored.items()}
    comparison = None
    pair = comparison_pair(list(scored))
    if pair is not None:
        base_name, tuned_name = pair
        seed = settings.get("seed")
        comparison = {
            "base": base_name,
            "tuned": tuned_name,
            **compare(
                scored[base_name],
                scored[tuned_name],
                seed=seed if isinstance(seed, int) else 0,
                resamples=resamples,
                confidence=confidence,
            ),
        }

    report = {
        "settings": settings,
        "thresholds": THRESHOLDS,
        "systems": list(scored),
        "summary": summaries,
        "comparison": comparison,
        "items": scored,
    }
    # Render everything before writing, so a rendering error leaves the old files in place.
    json_bytes = (json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n").encode("utf-8")
    markdown_bytes = render_markdown(report).encode("utf-8")
    png_bytes = render_png(scored)

    paths = {
        "json": out_dir / REPORT_JSON,
        "markdown": out_dir / REPORT_MARKDOWN,
        "png": out_dir / REPORT_PNG,
    }
    _write_atomic(paths["json"], json_bytes)
    _write_atomic(paths["markdown"], markdown_bytes)
    _write_atomic(paths["png"], png_bytes)
    logger.info("wrote evaluation report for %d system(s) to %s", len(scored), out_dir)
    return paths


def comparison_pair(names: Sequence[str]) -> tuple[str, str] | None:
    """Return the (base, tuned) system names to compare, or ``None`` for a single system."""
    if "base" in names and "tuned" in names:
        return "base", "tuned"
    if len(names) >= 2:
        return names[0], names[1]
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file readable by its owner only, but a report is an ordinary shared file.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


# Markdown


def render_markdown(report: dict) -> str:
    """Render the report dictionary that ``write_report`` builds as a Markdown document."""
    sections = [
        "# " + _("Evaluation report"),
        _render_settings(report["settings"]),
        _render_summary(report["summary"]),
    ]
    if report["comparison"] is not None:
        sections.append(_render_comparison(report["comparison"]))
        sections.append(_render_side_by_side(report["items"], report["comparison"]["base"], report["comparison"]["tuned"]))
    sections.append(
        "## " + _("Charts") + "\n\n"
        + "![{alt}]({png})".format(alt=_("Distributions of chrF, length and key-element coverage per system"), png=REPORT_PNG)
    )
    sections.append(_render_examples(report["items"]))
    sections.append(_render_metric_notes())
    return "\n\n".join(sections) + "\n"


def _render_settings(settings: dict) -> str:
    rows = [[key, value] for key, value in _flatten(settings)]
    if not rows:
        return "## " + _("Settings") + "\n\n" + _("No settings were recorded.")
    return "## " + _("Settings") + "\n\n" + _table([_("Setting"), _("Value")], rows, align_right=False)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten nested dictionaries into (dotted key, value) pairs."""
    if not isinstance(value, dict):
        return [(prefix, value)]
    pairs: list[tuple[str, Any]] = []
    for key, child in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(child, dict) and child:
            pairs.extend(_flatten(child, name))
        else:
            pairs.append((name, child))
    return pairs


def _summary_rows() -> list[tuple[str, Callable[[dict], str]]]:
    band = {"low": f"{PROMPT_MIN_CHARS:,}", "high": f"{PROMPT_MAX_CHARS:,}"}
    return [
        (_("Items"), lambda summary: str(summary["items"])),
        (_("Text items"), lambda summary: str(summary["items_per_format"]["text"])),
        (_("JSON items"), lambda summary: str(summary["items_per_format"]["json"])),
        (_("chrF, mean"), lambda summary: _number(summary["chrf_mean"], 2)),
        (_("chrF, median"), lambda summary: _number(summary["chrf_median"], 2)),
        (_("chrF, corpus"), lambda summary: _number(summary["chrf_corpus"], 2)),
        (_("Length in characters, mean"), lambda summary: _number(summary["length_chars_mean"], 0)),
        (_("Length in characters, median"), lambda summary: _number(summary["length_chars_median"], 0)),
        (_("In the {low}–{high} character band").format(**band), lambda summary: _percent(summary["in_band_rate"])),
        (_("References in the {low}–{high} character band").format(**band), lambda summary: _percent(summary["reference_in_band_rate"])),
        (_("Shorter than {low} characters").format(**band), lambda summary: _percent(summary["below_band_rate"])),
        (_("Longer than {high} characters").format(**band), lambda summary: _percent(summary["above_band_rate"])),
        (_("Key-element coverage, mean"), lambda summary: _percent(summary["key_element_coverage_mean"])),
        (_("Key-element coverage, median"), lambda summary: _percent(summary["key_element_coverage_median"])),
        (_("Items without known key elements"), lambda summary: str(summary["items_without_key_elements"])),
        (_("Distinct-2, mean"), lambda summary: _number(summary["distinct_2_mean"], 3)),
        (_("Longest repeated n-gram in words, median"), lambda summary: _number(summary["longest_repeated_ngram_median"], 0)),
        (_("Longest repeated n-gram in words, maximum"), lambda summary: _number(summary["longest_repeated_ngram_max"], 0)),
        (_("Degenerate (looping) outputs"), lambda summary: _percent(summary["degenerate_rate"])),
        (_("Stopped at the token limit"), lambda summary: _percent(summary["truncated_rate"])),
        (_("English text prompts"), lambda summary: _percent(summary["english_rate"])),
        (_("Text prompts with CJK characters"), lambda summary: _percent(summary["cjk_leak_rate"])),
        (_("Prompts with special tokens"), lambda summary: _percent(summary["special_token_leak_rate"])),
        (_("Prompts with any leak"), lambda summary: _percent(summary["leak_rate"])),
        (_("Valid JSON"), lambda summary: _percent(summary["json_valid_rate"])),
        (_("JSON schema coverage, mean"), lambda summary: _percent(summary["schema_coverage_mean"])),
        (_("Time to first token in seconds, mean"), lambda summary: _number(summary["time_to_first_token_mean"], 2)),
        (_("Time to first token in seconds, median"), lambda summary: _number(summary["time_to_first_token_median"], 2)),
        (_("Tokens per second, mean"), lambda summary: _number(summary["tokens_per_second_mean"], 1)),
        (_("Tokens per second, median"), lambda summary: _number(summary["tokens_per_second_median"], 1)),
        (_("Generated tokens, mean"), lambda summary: _number(summary["generated_tokens_mean"], 0)),
        (_("Finish reasons"), lambda summary: _counts(summary["finish_reasons"])),
        (_("How JSON was produced"), lambda summary: _counts(summary["json_methods"])),
    ]


def _render_summary(summaries: dict[str, dict]) -> str:
    names = list(summaries)
    rows = [[label, *(render(summaries[name]) for name in names)] for label, render in _summary_rows()]
    return "## " + _("Summary") + "\n\n" + _table([_("Metric"), *names], rows)


def _comparison_rows() -> list[tuple[str, str, int | None]]:
    """Return (metric key, label, decimals) for the comparison table.

    Decimals of ``None`` mark a share, shown as a percentage.
    """
    return [
        ("chrf", _("chrF, mean"), 2),
        ("in_band", _("In the length band"), None),
        ("key_element_coverage", _("Key-element coverage"), None),
        ("distinct_2", _("Distinct-2"), 3),
        ("json_valid", _("Valid JSON"), None),
        ("schema_coverage", _("JSON schema coverage"), None),
    ]


def _render_comparison(comparison: dict) -> str:
    base = comparison["base"]
    tuned = comparison["tuned"]
    percent = f"{comparison['confidence'] * 100:g}"
    lines = [
        "## " + _("Comparison: {tuned} against {base}").format(tuned=tuned, base=base),
        _(
            "{count} items are paired by id and format. Differences are {tuned} minus {base}, with "
            "{percent}% percentile bootstrap intervals from {resamples} resamples (seed {seed})."
        ).format(
            count=comparison["matched_items"],
            tuned=tuned,
            base=base,
            percent=percent,
            resamples=comparison["resamples"],
            seed=comparison["seed"],
        ),
    ]
    if comparison["matched_items"] < FEW_PAIRS:
        lines.append(few_pairs_warning(comparison["matched_items"]))

    rows = []
    for key, label, decimals in _comparison_rows():
        result = comparison["metrics"].get(key)
        if result is None:
            continue
        low = _comparison_difference(result["ci_low"], decimals)
        high = _comparison_difference(result["ci_high"], decimals)
        rows.append(
            [
                label,
                str(result["items"]),
                _comparison_value(result["mean_a"], decimals),
                _comparison_value(result["mean_b"], decimals),
                _comparison_difference(result["mean_difference"], decimals),
                f"[{low}, {high}]",
                _percent(result["share_b_better"]),
            ]
        )
    headers = [
        _("Metric"),
        _("Pairs"),
        base,
        tuned,
        _("Difference"),
        _("{percent}% CI").format(percent=percent),
        _("Resamples where {tuned} is higher").format(tuned=tuned),
    ]
    lines.append(_table(headers, rows) if rows else _("No metric has scores for both systems."))

    corpus = comparison["corpus_chrf"]
    if corpus["difference"] is not None:
        lines.append(
            _(
                "Corpus chrF over the paired items: {base} {base_score}, {tuned} {tuned_score}, "
                "difference {difference}."
            ).format(
                base=base,
                base_score=_number(corpus["base"], 2),
                tuned=tuned,
                tuned_score=_number(corpus["tuned"], 2),
                difference=_signed(corpus["difference"], 2),
            )
        )
    for system, missing in ((base, comparison["unmatched_base"]), (tuned, comparison["unmatched_tuned"])):
        if missing:
            lines.append(
                _("Items only in {system}, left out of the comparison: {items}.").format(
                    system=system, items=", ".join(missing)
                )
            )
    return "\n\n".join(lines)


def _comparison_value(value: float, decimals: int | None) -> str:
    return _percent(value) if decimals is None else _number(value, decimals)


def _comparison_difference(value: float, decimals: int | None) -> str:
    return _percent_points(value) if decimals is None else _signed(value, decimals)


def _render_examples(items: dict[str, list[dict]]) -> str:
    introduction = _(
        "The outputs with the lowest and highest sentence chrF of each system, cut to {count} characters."
    ).format(count=EXAMPLE_MAX_CHARS)
    lines = ["## " + _("Examples"), introduction]
    for name, scored in items.items():
        ranked = sorted((item for item in scored if item["chrf"] is not None), key=lambda item: item["chrf"])
        # With few items the lower half is "lowest" and the upper half "highest", so no item appears twice.
        lowest = ranked[: min(EXAMPLES_PER_END, len(ranked) // 2 or len(ranked))]
        highest = list(reversed(ranked[len(lowest) :]))[:EXAMPLES_PER_END]
        lines.append("### " + _inline(name))
        if not ranked:
            lines.append(_("No item of this system has a chrF score."))
            continue
        lines.append("#### " + _("Lowest chrF"))
        lines.extend(_render_example(item) for item in lowest)
        if highest:
            lines.append("#### " + _("Highest chrF"))
            lines.extend(_render_example(item) for item in highest)
    return "\n\n".join(lines)


def few_pairs_warning(count: int) -> str:
    return _("Only {count} pairs: with fewer than {few} the intervals are unstable, so evaluate more pairs before drawing conclusions.").format(
        count=count, few=FEW_PAIRS
    )


def _render_side_by_side(items: dict[str, list[dict]], base: str, tuned: str) -> str:
    """Show the paired items whose chrF changed most, up and down, with both outputs."""
    base_by_key = {(item["id"], item["format"]): item for item in items.get(base, [])}
    pairs = [
        (base_by_key[(item["id"], item["format"])], item)
        for item in items.get(tuned, [])
        if (item["id"], item["format"]) in base_by_key
        and item["chrf"] is not None
        and base_by_key[(item["id"], item["format"])]["chrf"] is not None
    ]
    pairs.sort(key=lambda pair: pair[1]["chrf"] - pair[0]["chrf"])
    chosen = list(reversed(pairs[-EXAMPLES_PER_END:])) + [pair for pair in pairs[:EXAMPLES_PER_END] if pair not in pairs[-EXAMPLES_PER_END:]]
    lines = [
        "## " + _("Side by side: {base} and {tuned}").format(base=_inline(base), tuned=_inline(tuned)),
        _("The paired items with the highest and the lowest chrF change from {base} to {tuned}, each output cut to {count} characters.").format(
            base=_inline(base), tuned=_inline(tuned), count=EXAMPLE_MAX_CHARS
        ),
    ]
    if not chosen:
        lines.append(_("No item has a chrF score in both systems."))
    for base_item, tuned_item in chosen:
        heading = f"**{_inline(str(tuned_item['id']))}** ({tuned_item['format']}) {_inline(tuned_item['description'])}"
        change = _("chrF {base_score} → {tuned_score}").format(
            base_score=_number(base_item["chrf"], 2), tuned_score=_number(tuned_item["chrf"], 2)
        )
        lines.append(f"{heading}  \n{change}")
        for name, item in ((base, base_item), (tuned, tuned_item)):
            lines.append(f"*{_inline(name)}*\n\n{_fenced(_cut(item['output']), item['format'])}")
    return "\n\n".join(lines)


def _cut(text: str) -> str:
    text = text.strip()
    return text if len(text) <= EXAMPLE_MAX_CHARS else text[:EXAMPLE_MAX_CHARS] + "…"


def _render_example(item: dict) -> str:
    facts = _(
        "chrF {chrf}, {length} characters, key-element coverage {coverage}, finish reason {finish_reason}"
    ).format(
        chrf=_number(item["chrf"], 2),
        length=item["length_chars"],
        coverage=_percent(item["key_element_coverage"]),
        finish_reason=item.get("finish_reason") or _("n/a"),
    )
    missing = item.get("key_elements_missing") or []
    if missing:
        facts += "; " + _("missing elements: {elements}").format(elements=", ".join(missing))
    if item.get("degenerate"):
        facts += "; " + _("degenerate")
    output = _cut(item["output"])
    heading = f"**{_inline(str(item['id']))}** ({item['format']}) {_inline(item['description'])}"
    return f"{heading}  \n{facts}\n\n{_fenced(output, item['format'])}"


def _render_metric_notes() -> str:
    notes = [
        _(
            "**chrF**: character n-gram F-score against the reference prompt (sacrebleu, chrF2 defaults), 0 to 100. "
            "It rewards wording close to the reference, so a good prompt that describes the same image differently "
            "scores lower. The corpus value pools the n-gram counts of all items."
        ),
        _(
            "**Length band**: characters of the stripped output, JSON included, against the {low}–{high} "
            "characters that the instruction asks for."
        ).format(low=f"{PROMPT_MIN_CHARS:,}", high=f"{PROMPT_MAX_CHARS:,}"),
        _(
            "**Key-element coverage**: share of the description's known Chinese terms (from the bundled term table) "
            "with an English equivalent in the output, allowing simple plural, -ing and -ed forms. For valid JSON "
            "only the string values are searched. Terms missing from the table are not counted, and synonyms the "
            "table lacks count as missing, so treat it as a proxy."
        ),
        _(
            "**Distinct-2**: unique word bigrams divided by all word bigrams. Fluent prompts score near 1, and "
            "loops push it down."
        ),
        _(
            "**Longest repeated n-gram**: length in words of the longest word sequence that occurs at least twice."
        ),
        _(
            "**Degenerate**: the longest repeated n-gram has at least {ngram} words, or distinct-2 is below "
            "{distinct} over at least {bigrams} bigrams. The 45 hand-written sample prompts that ship with nbp-mlx "
            "repeat at most 4 words and have a distinct-2 of 0.92 or more."
        ).format(
            ngram=THRESHOLDS["degenerate_repeated_ngram"],
            distinct=THRESHOLDS["degenerate_distinct_2"],
            bigrams=THRESHOLDS["degenerate_min_bigrams"],
        ),
        _(
            "**English** (text prompts): the share of ASCII letters among all letters is at least {share}%. "
            "**CJK characters** counts Chinese, Japanese and Korean characters and fullwidth punctuation."
        ).format(share=f"{THRESHOLDS['english_min_ascii_share'] * 100:g}"),
        _("**Special tokens**: chat-template markers such as `<|im_end|>`, `<|endoftext|>` or `<think>` in the output."),
        _(
            "**Valid JSON**: the stripped output parses with a strict JSON parser as an object or array, without "
            "repair. **JSON schema coverage**: share of the key groups subject, appearance, pose, environment, "
            "lighting, camera, style and quality with a matching key at any depth. Invalid JSON scores 0."
        ),
        _(
            "**Bootstrap interval**: items are resampled with replacement, and the interval spans the middle share "
            "of the resampled mean differences. An interval that excludes 0 means the difference is unlikely to be "
            "resampling noise on this item set."
        ),
    ]
    return "## " + _("What the metrics mean") + "\n\n" + "\n".join(f"- {note}" for note in notes)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, align_right: bool = True) -> str:
    number_alignment = "---:" if align_right else "---"
    lines = [
        "| " + " | ".join(_cell(header) for header in headers) + " |",
        "| --- | " + " | ".join(number_alignment for _header in headers[1:]) + " |",
    ]
    lines.extend("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(element) for element in value)
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _inline(text: str) -> str:
    """Escape the Markdown emphasis and code characters of a one-line value."""
    escaped = text.replace("\n", " ")
    for character in ("\\", "`", "*", "_", "[", "]", "<", ">", "#"):
        escaped = escaped.replace(character, "\\" + character)
    return escaped


def _fenced(text: str, info: str) -> str:
    """Wrap ``text`` in a code fence longer than any backtick run inside it."""
    longest_run = 0
    run = 0
    for character in text:
        run = run + 1 if character == "`" else 0
        longest_run = max(longest_run, run)
    fence = "`" * max(3, longest_run + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _number(value: float | int | None, digits: int) -> str:
    if value is None:
        return _("n/a")
    return f"{value:,.{digits}f}"


def _signed(value: float | None, digits: int) -> str:
    if value is None:
        return _("n/a")
    return f"{value:+,.{digits}f}"


def _percent(value: float | None) -> str:
    if value is None:
        return _("n/a")
    return f"{value * 100:.1f}%"


def _percent_points(value: float | None) -> str:
    if value is None:
        return _("n/a")
    return _("{value} pp").format(value=f"{value * 100:+.1f}")


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return _("n/a")
    return ", ".join(f"{key}: {count}" for key, count in sorted(counts.items(), key=lambda entry: -entry[1]))


# Chart


def render_png(scored: dict[str, list[dict]]) -> bytes:
    """Draw histograms of sentence chrF, length and key-element coverage per system and return PNG bytes.

    It uses the Agg canvas directly, without pyplot, so it changes no global
    matplotlib state and needs no display.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught, matplotlib.rc_context({"font.family": _font_families()}):
        warnings.simplefilter("always")
        figure = Figure(figsize=(15, 4.5), layout="constrained")
        FigureCanvasAgg(figure)
        _draw_charts(figure, scored)
        figure.savefig(buffer, format="png", dpi=100)

    # Matplotlib warns about every character without a glyph, so those warnings become one log line.
    missing_glyphs = 0
    for warning in caught:
        if "missing from font" in str(warning.message):
            missing_glyphs += 1
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if missing_glyphs:
        logger.warning(
            "%s: some characters have no glyph in the installed fonts and show as boxes (%d matplotlib warnings). "
            "Install a CJK font such as Noto Sans CJK SC to render Chinese labels.",
            REPORT_PNG,
            missing_glyphs,
        )
    return buffer.getvalue()


def _draw_charts(figure, scored: dict[str, list[dict]]) -> None:
    chrf_axes, length_axes, coverage_axes = figure.subplots(1, 3)

    _histograms(chrf_axes, scored, "chrf", [index * 5 for index in range(21)])
    chrf_axes.set_title(_("Sentence chrF"))
    chrf_axes.set_xlabel(_("chrF (0–100)"))

    longest = max((item["length_chars"] for items in scored.values() for item in items), default=0)
    upper = max(PROMPT_MAX_CHARS * 1.25, longest * 1.05)
    length_axes.axvspan(
        PROMPT_MIN_CHARS,
        PROMPT_MAX_CHARS,
        color="tab:green",
        alpha=0.12,
        label=_("Target band {low}–{high}").format(low=f"{PROMPT_MIN_CHARS:,}", high=f"{PROMPT_MAX_CHARS:,}"),
    )
    for edge in (PROMPT_MIN_CHARS, PROMPT_MAX_CHARS):
        length_axes.axvline(edge, color="tab:green", linestyle="--", linewidth=1)
    _histograms(length_axes, scored, "length_chars", [upper * index / 30 for index in range(31)])
    length_axes.set_title(_("Output length"))
    length_axes.set_xlabel(_("Characters"))

    _histograms(coverage_axes, scored, "key_element_coverage", [index / 10 for index in range(11)])
    coverage_axes.set_title(_("Key-element coverage"))
    coverage_axes.set_xlabel(_("Share of description terms found"))

    for axes in (chrf_axes, length_axes, coverage_axes):
        axes.set_ylabel(_("Items"))
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")


def _histograms(axes, scored: dict[str, list[dict]], metric: str, bins: Sequence[float]) -> None:
    """Draw one step histogram of ``metric`` per system, or a note when no system has values."""
    drawn = False
    for name, items in scored.items():
        values = [item[metric] for item in items if item.get(metric) is not None]
        if not values:
            continue
        axes.hist(values, bins=bins, histtype="step", linewidth=1.8, label=name)
        drawn = True
    if not drawn:
        axes.text(0.5, 0.5, _("No data"), ha="center", va="center", transform=axes.transAxes)


def _font_families() -> list[str]:
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(name for name in CJK_FONT_CANDIDATES if name in installed)]
