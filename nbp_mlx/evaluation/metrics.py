"""Offline scores of generated image prompts, their summaries and a paired comparison of two systems.

Every score is computed from the output text, the reference prompt and the
Chinese description alone, without a model. The thresholds below were set
against the 45 hand-written reference prompts of ``data/sample_prompts.jsonl``.
In those prompts the longest repeated word n-gram is 1 to 4 words and
distinct-2 is 0.92 to 1.0, so the degeneration thresholds leave a wide margin
for clean output.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np
from sacrebleu.metrics import CHRF

from ..errors import NbpError
from ..i18n import _
from .terms import TermTable, key_element_coverage, load_terms

# The length band that the training instruction requests, in characters of the stripped output.
PROMPT_MIN_CHARS = 500
PROMPT_MAX_CHARS = 2000

# An output is degenerate when a run of this many words occurs twice. A clean
# prompt may restate a short phrase, but a repeated 12-word run is a copied
# clause, which is how decoding loops start.
DEGENERATE_REPEATED_NGRAM = 12
# An output is also degenerate when fewer than half of its word bigrams are
# distinct. This catches loops that vary one word per cycle (a counter, for
# example), which breaks exact repeats but not the bigram statistics.
DEGENERATE_DISTINCT_2 = 0.5
# Below this many bigrams distinct-2 is too noisy to flag anything.
DEGENERATE_MIN_BIGRAMS = 20

# A text prompt is English when at least this share of its letters is ASCII.
# The margin allows a few accented names (café) and short quoted sign text.
ENGLISH_MIN_ASCII_SHARE = 0.95

FORMATS = ("text", "json")
REQUIRED_FIELDS = ("id", "description", "format", "reference", "output")

# Chat-template markers that must never reach the user. The pattern also
# catches other ``<|name|>`` tokens of Qwen-style templates.
SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>|</?think>")

# CJK ideographs (with extensions and compatibility forms), kana, Hangul, CJK
# punctuation and fullwidth forms. Any of these in an English prompt is a leak
# of the Chinese input or of Chinese-language output.
CJK_CHARACTER = re.compile(
    "[\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
    "\U00020000-\U0002fa1f]"
)

WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")

# Key groups of a JSON prompt and the key names that count for each. A key
# counts for a group when its normalized name (lower case, words joined by
# "_") equals a synonym, equals a synonym plus "s", or starts with a synonym
# plus "_" (camera_settings counts for camera).
SCHEMA_GROUPS: dict[str, tuple[str, ...]] = {
    "subject": ("subject",),
    "appearance": ("appearance", "clothing", "outfit", "attire"),
    "pose": ("pose", "expression"),
    "environment": ("environment", "scene", "setting", "background", "location"),
    "lighting": ("lighting", "light"),
    "camera": ("camera", "lens", "shot", "composition"),
    "style": ("style", "aesthetic", "art_style"),
    "quality": ("quality", "resolution", "details", "detail"),
}

# Metrics that ``compare`` bootstraps. All are higher-is-better.
COMPARED_METRICS = ("chrf", "in_band", "key_element_coverage", "distinct_2", "json_valid", "schema_coverage")

THRESHOLDS = {
    "prompt_min_chars": PROMPT_MIN_CHARS,
    "prompt_max_chars": PROMPT_MAX_CHARS,
    "degenerate_repeated_ngram": DEGENERATE_REPEATED_NGRAM,
    "degenerate_distinct_2": DEGENERATE_DISTINCT_2,
    "degenerate_min_bigrams": DEGENERATE_MIN_BIGRAMS,
    "english_min_ascii_share": ENGLISH_MIN_ASCII_SHARE,
}

_CHRF = CHRF()


class EvaluationError(NbpError):
    """An evaluation cannot run: no usable pairs or systems, a clash with an earlier run, or an invalid item."""


# Per-item scores


def score_item(item: dict, terms: TermTable | None = None) -> dict:
    """Score one generated prompt against its reference and description.

    ``item`` has the runner's fields (see ``REQUIRED_FIELDS``, plus the
    optional timing and decoding fields). The result is a copy of ``item``
    with the scores added, so scoring a scored item again gives the same
    result. Raises ``EvaluationError`` for a missing field, a description,
    reference or output that is not a string, or an unknown format.
    """
    _validate_item(item)
    table = terms if terms is not None else load_terms()
    output = item["output"]
    stripped = output.strip()
    prompt_format = item["format"]

    scored: dict[str, Any] = {
        **item,
        "id": item["id"],
        "description": item["description"],
        "format": prompt_format,
        "json_method": item.get("json_method"),
        "finish_reason": item.get("finish_reason"),
        "truncated": item.get("finish_reason") == "length",
        "time_to_first_token": item.get("time_to_first_token"),
        "tokens_per_second": item.get("tokens_per_second"),
        "generated_tokens": item.get("generated_tokens"),
        "reference": item["reference"],
        "output": output,
        "chrf": sentence_chrf(stripped, item["reference"].strip()),
        "length_chars": len(stripped),
        "in_band": PROMPT_MIN_CHARS <= len(stripped) <= PROMPT_MAX_CHARS,
        # Gallery references miss the band too, so the reference's share is the baseline to read in_band against.
        "reference_in_band": PROMPT_MIN_CHARS <= len(item["reference"].strip()) <= PROMPT_MAX_CHARS,
    }
    scored.update(_repetition_scores(stripped))

    special_tokens = find_special_tokens(output)
    scored["special_token_leak"] = bool(special_tokens)
    scored["special_tokens_found"] = special_tokens

    if prompt_format == "text":
        share = ascii_letter_share(stripped)
        scored["ascii_letter_share"] = share
        scored["is_english"] = share is not None and share >= ENGLISH_MIN_ASCII_SHARE
        scored["cjk_leak"] = count_cjk(stripped)
        scored["json_valid"] = None
        scored["schema_coverage"] = None
        scored["schema_groups_found"] = None
        coverage_text = stripped
    else:
        parsed = parse_json_strict(stripped)
        groups = schema_groups_found(parsed) if parsed is not None else []
        scored["ascii_letter_share"] = None
        scored["is_english"] = None
        scored["cjk_leak"] = None
        scored["json_valid"] = parsed is not None
        # A strict parser gets no fields from invalid JSON, so its coverage is 0, not unknown.
        scored["schema_coverage"] = len(groups) / len(SCHEMA_GROUPS)
        scored["schema_groups_found"] = groups
        # Key names are the same for every prompt, so only the values show what was kept.
        coverage_text = " ".join(json_string_values(parsed)) if parsed is not None else stripped

    coverage = key_element_coverage(item["description"], coverage_text, table)
    scored["key_element_coverage"] = coverage["coverage"]
    scored["key_elements"] = coverage["elements"]
    scored["key_elements_matched"] = coverage["matched"]
    scored["key_elements_missing"] = coverage["missing"]
    return scored


def _validate_item(item: dict) -> None:
    item_id = item.get("id", "?")
    for field in REQUIRED_FIELDS:
        if field not in item:
            raise EvaluationError(
                _("evaluation item {item_id}: missing field {field!r}").format(item_id=item_id, field=field)
            )
    for field in ("description", "reference", "output"):
        if not isinstance(item[field], str):
            raise EvaluationError(
                _("evaluation item {item_id}: field {field!r} must be a string, got {kind}").format(
                    item_id=item_id, field=field, kind=type(item[field]).__name__
                )
            )
    if item["format"] not in FORMATS:
        raise EvaluationError(
            _("evaluation item {item_id}: unknown format {value!r}; expected 'text' or 'json'").format(
                item_id=item_id, value=item["format"]
            )
        )


def sentence_chrf(hypothesis: str, reference: str) -> float | None:
    """Return sacrebleu's sentence chrF (0–100, default chrF2 settings), or ``None`` for an empty reference."""
    if not reference:
        return None
    return _CHRF.sentence_score(hypothesis, [reference]).score


def corpus_chrf(scored: Sequence[dict]) -> float | None:
    """Return sacrebleu's corpus chrF of the outputs against their references, or ``None`` with no items.

    Corpus chrF pools the character n-gram statistics of all items, so long
    prompts weigh more than in the mean of sentence chrF.
    """
    pairs = [(item["output"].strip(), item["reference"].strip()) for item in scored if item["reference"].strip()]
    if not pairs:
        return None
    hypotheses = [hypothesis for hypothesis, _reference in pairs]
    references = [reference for _hypothesis, reference in pairs]
    return _CHRF.corpus_score(hypotheses, [references]).score


def words(text: str) -> list[str]:
    """Split ``text`` into lower-case words, dropping punctuation and JSON syntax."""
    return [word.lower().replace("\u2019", "'") for word in WORD.findall(text)]


def distinct_2(tokens: Sequence[str]) -> float | None:
    """Return unique word bigrams / word bigrams, or ``None`` with fewer than 2 words."""
    bigrams = list(zip(tokens, tokens[1:]))
    if not bigrams:
        return None
    return len(set(bigrams)) / len(bigrams)


def longest_repeated_ngram(tokens: Sequence[str]) -> int:
    """Return the length in words of the longest word n-gram that occurs at least twice.

    The two occurrences may overlap, so "a b a b a" has the repeated 3-gram
    "a b a". Having a repeat of length n implies one of length n - 1, so a
    binary search over n finds the maximum.
    """
    low, high = 0, len(tokens) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if _has_repeated_ngram(tokens, middle):
            low = middle
        else:
            high = middle - 1
    return max(low, 0)


def _has_repeated_ngram(tokens: Sequence[str], n: int) -> bool:
    seen: set[tuple[str, ...]] = set()
    for start in range(len(tokens) - n + 1):
        ngram = tuple(tokens[start : start + n])
        if ngram in seen:
            return True
        seen.add(ngram)
    return False


def is_degenerate(repeated_ngram: int, distinct: float | None, bigram_count: int) -> bool:
    """Flag a decoding loop: a long repeated word run, or low distinct-2 over enough bigrams."""
    if repeated_ngram >= DEGENERATE_REPEATED_NGRAM:
        return True
    return distinct is not None and bigram_count >= DEGENERATE_MIN_BIGRAMS and distinct < DEGENERATE_DISTINCT_2


def _repetition_scores(text: str) -> dict[str, Any]:
    tokens = words(text)
    repeated = longest_repeated_ngram(tokens)
    distinct = distinct_2(tokens)
    return {
        "word_count": len(tokens),
        "longest_repeated_ngram": repeated,
        "distinct_2": distinct,
        "degenerate": is_degenerate(repeated, distinct, max(len(tokens) - 1, 0)),
    }


def ascii_letter_share(text: str) -> float | None:
    """Return the share of letters (``str.isalpha``) that are ASCII, or ``None`` for text without letters."""
    letters = [character for character in text if character.isalpha()]
    if not letters:
        return None
    return sum(1 for character in letters if character.isascii()) / len(letters)


def count_cjk(text: str) -> int:
    return len(CJK_CHARACTER.findall(text))


def find_special_tokens(text: str) -> list[str]:
    """Return the distinct chat-template tokens in ``text``, sorted."""
    return sorted(set(SPECIAL_TOKEN.findall(text)))


def parse_json_strict(text: str) -> dict | list | None:
    """Parse ``text`` with ``json.loads`` and return the object or array, or ``None``.

    No repair is attempted: a code fence, trailing text or a truncated value
    makes the output invalid, because a consumer that parses strictly fails on it.
    """
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, (dict, list)) else None


def json_keys(value: Any) -> Iterable[str]:
    """Yield every object key in ``value``, at any depth, including objects inside arrays."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield str(key)
            yield from json_keys(child)
    elif isinstance(value, list):
        for child in value:
            yield from json_keys(child)


def json_string_values(value: Any) -> Iterable[str]:
    """Yield every string value in ``value`` at any depth, without the object keys."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for child in value.values():
            yield from json_string_values(child)
    elif isinstance(value, list):
        for child in value:
            yield from json_string_values(child)


def normalize_key(key: str) -> str:
    """Return ``key`` in lower case with its words joined by "_" (lightingSetup → lighting_setup)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key.strip())
    return re.sub(r"[^0-9a-z]+", "_", spaced.lower()).strip("_")


def schema_groups_found(value: Any) -> list[str]:
    """Return the ``SCHEMA_GROUPS`` names with at least one matching key in ``value``, in table order."""
    keys = {normalize_key(key) for key in json_keys(value)}
    found = []
    for group, synonyms in SCHEMA_GROUPS.items():
        if any(_key_matches(key, synonym) for key in keys for synonym in synonyms):
            found.append(group)
    return found


def _key_matches(key: str, synonym: str) -> bool:
    return key in (synonym, synonym + "s") or key.startswith(synonym + "_")


# Summaries


def summarize(scored: Sequence[dict]) -> dict:
    """Aggregate scored items of one system into means, medians, rates and counts.

    Rates are shares from 0 to 1. Each rate is taken over the items it applies
    to (English and CJK leaks over text items, JSON validity and schema
    coverage over JSON items) and is ``None`` when there are none. Timing
    means skip items without a measurement (``None``, or 0 tokens/s, which
    generation reports when it could not measure the rate).
    """
    text_items = [item for item in scored if item["format"] == "text"]
    json_items = [item for item in scored if item["format"] == "json"]
    chrf = [item["chrf"] for item in scored if item["chrf"] is not None]
    lengths = [item["length_chars"] for item in scored]
    coverage = [item["key_element_coverage"] for item in scored if item["key_element_coverage"] is not None]
    ttft = [item["time_to_first_token"] for item in scored if item.get("time_to_first_token") is not None]
    speeds = [item["tokens_per_second"] for item in scored if (item.get("tokens_per_second") or 0) > 0]
    generated = [item["generated_tokens"] for item in scored if item.get("generated_tokens") is not None]

    return {
        "items": len(scored),
        "items_per_format": {prompt_format: sum(1 for item in scored if item["format"] == prompt_format) for prompt_format in FORMATS},
        "chrf_mean": _mean(chrf),
        "chrf_median": _median(chrf),
        "chrf_corpus": corpus_chrf(scored),
        "length_chars_mean": _mean(lengths),
        "length_chars_median": _median(lengths),
        "in_band_rate": _rate(scored, lambda item: item["in_band"]),
        "reference_in_band_rate": _rate(scored, lambda item: item["reference_in_band"]),
        "below_band_rate": _rate(scored, lambda item: item["length_chars"] < PROMPT_MIN_CHARS),
        "above_band_rate": _rate(scored, lambda item: item["length_chars"] > PROMPT_MAX_CHARS),
        "longest_repeated_ngram_median": _median([item["longest_repeated_ngram"] for item in scored]),
        "longest_repeated_ngram_max": max((item["longest_repeated_ngram"] for item in scored), default=None),
        "distinct_2_mean": _mean([item["distinct_2"] for item in scored if item["distinct_2"] is not None]),
        "degenerate_rate": _rate(scored, lambda item: item["degenerate"]),
        "truncated_rate": _rate(scored, lambda item: item["truncated"]),
        "english_rate": _rate(text_items, lambda item: item["is_english"]),
        "cjk_leak_rate": _rate(text_items, lambda item: item["cjk_leak"] > 0),
        "special_token_leak_rate": _rate(scored, lambda item: item["special_token_leak"]),
        "leak_rate": _rate(scored, _has_leak),
        "json_valid_rate": _rate(json_items, lambda item: item["json_valid"]),
        "schema_coverage_mean": _mean([item["schema_coverage"] for item in json_items]),
        "key_element_coverage_mean": _mean(coverage),
        "key_element_coverage_median": _median(coverage),
        "items_without_key_elements": sum(1 for item in scored if item["key_element_coverage"] is None),
        "time_to_first_token_mean": _mean(ttft),
        "time_to_first_token_median": _median(ttft),
        "tokens_per_second_mean": _mean(speeds),
        "tokens_per_second_median": _median(speeds),
        "generated_tokens_mean": _mean(generated),
        "finish_reasons": dict(Counter(str(item.get("finish_reason")) for item in scored)),
        "json_methods": dict(Counter(str(item.get("json_method")) for item in json_items)),
    }


def _has_leak(item: dict) -> bool:
    """Return whether ``item`` leaks a special token, or CJK characters in a text prompt."""
    return bool(item["special_token_leak"]) or (item["format"] == "text" and item["cjk_leak"] > 0)


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _rate(items: Sequence[dict], predicate) -> float | None:
    if not items:
        return None
    return sum(1 for item in items if predicate(item)) / len(items)


# Paired comparison


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Estimate the mean difference b − a of paired scores with a percentile bootstrap CI.

    Each resample draws len(a) item indices with replacement and takes the
    mean of the per-item differences. ``ci_low`` and ``ci_high`` are the
    (1 − confidence)/2 and (1 + confidence)/2 quantiles of those means, and
    ``share_b_better`` is the share of resamples with a mean difference above 0.
    The same seed and inputs always give the same result.
    """
    if len(a) != len(b):
        raise ValueError(_("paired scores must have the same length, got {a} and {b}").format(a=len(a), b=len(b)))
    if not a:
        raise ValueError(_("paired bootstrap needs at least one pair of scores"))
    if resamples < 1:
        raise ValueError(_("resamples must be at least 1, got {value}").format(value=resamples))
    if not 0 < confidence < 1:
        raise ValueError(_("confidence must be between 0 and 1, got {value}").format(value=confidence))
    first = np.asarray(a, dtype=float)
    second = np.asarray(b, dtype=float)
    if not (np.isfinite(first).all() and np.isfinite(second).all()):
        raise ValueError(_("paired scores must be finite numbers"))

    differences = second - first
    means = _resampled_means(differences, resamples, seed)
    tail = (1 - confidence) / 2
    return {
        "items": len(differences),
        "mean_a": float(first.mean()),
        "mean_b": float(second.mean()),
        "mean_difference": float(differences.mean()),
        "ci_low": float(np.quantile(means, tail)),
        "ci_high": float(np.quantile(means, 1 - tail)),
        "share_b_better": float((means > 0).mean()),
        "resamples": resamples,
        "confidence": confidence,
        "seed": seed,
    }


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Return the means of ``resamples`` bootstrap resamples of ``values``.

    Indices are drawn in chunks, so memory stays near 8 MB however many items there are.
    """
    generator = np.random.default_rng(seed)
    count = len(values)
    chunk = max(1, 1_000_000 // count)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        indices = generator.integers(0, count, size=(stop - start, count))
        means[start:stop] = values[indices].mean(axis=1)
    return means


def compare(
    base_scored: Sequence[dict],
    tuned_scored: Sequence[dict],
    seed: int = 0,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> dict:
    """Compare two systems on the items they share, with a paired bootstrap per metric.

    Items are matched by (id, format), so a description evaluated in both
    formats stays two pairs. Each entry of ``metrics`` is a
    ``paired_bootstrap`` result with a = base and b = tuned over the pairs
    where both scores exist (booleans count as 0 or 1), or ``None`` when no
    pair has the metric. Raises ``EvaluationError`` when a system has the
    same (id, format) twice.
    """
    base = _index_by_key(base_scored)
    tuned = _index_by_key(tuned_scored)
    shared = [key for key in base if key in tuned]

    metrics: dict[str, dict | None] = {}
    for metric in COMPARED_METRICS:
        pairs = [
            (float(base[key][metric]), float(tuned[key][metric]))
            for key in shared
            if base[key].get(metric) is not None and tuned[key].get(metric) is not None
        ]
        if not pairs:
            metrics[metric] = None
            continue
        metrics[metric] = paired_bootstrap(
            [pair[0] for pair in pairs],
            [pair[1] for pair in pairs],
            resamples=resamples,
            seed=seed,
            confidence=confidence,
        )

    base_corpus = corpus_chrf([base[key] for key in shared])
    tuned_corpus = corpus_chrf([tuned[key] for key in shared])
    corpus_difference = None if base_corpus is None or tuned_corpus is None else tuned_corpus - base_corpus
    return {
        "matched_items": len(shared),
        "unmatched_base": [_key_label(key) for key in base if key not in tuned],
        "unmatched_tuned": [_key_label(key) for key in tuned if key not in base],
        "seed": seed,
        "resamples": resamples,
        "confidence": confidence,
        "metrics": metrics,
        "corpus_chrf": {"base": base_corpus, "tuned": tuned_corpus, "difference": corpus_difference},
    }


def _index_by_key(scored: Sequence[dict]) -> dict[tuple[str, str], dict]:
    index: dict[tuple[str, str], dict] = {}
    for item in scored:
        key = (str(item["id"]), item["format"])
        if key in index:
            raise EvaluationError(
                _("evaluation item {item_id} ({format}) appears twice in one system").format(
                    item_id=key[0], format=key[1]
                )
            )
        index[key] = item
    return index


def _key_label(key: tuple[str, str]) -> str:
    return f"{key[0]} ({key[1]})"
