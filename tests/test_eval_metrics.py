"""Checks of the offline evaluation scores, summaries and the paired bootstrap, on hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nbp_mlx.errors import DataFormatError
from nbp_mlx.evaluation import metrics
from nbp_mlx.evaluation.metrics import (
    EvaluationError,
    compare,
    distinct_2,
    longest_repeated_ngram,
    paired_bootstrap,
    score_item,
    summarize,
    words,
)
from nbp_mlx.evaluation.terms import key_element_coverage, load_terms, parse_terms, variant_pattern

CLEAN_PROMPT = (
    "A cinematic waist-up portrait of a young woman standing on a narrow street in a cyberpunk city at night. "
    "Her short silver hair catches a magenta rim light, and a cropped black jacket with reflective piping hangs "
    "open over a grey knit top. Vertical signs in cyan and amber glow above rows of noodle stalls, while steam "
    "drifts through the frame and puddles on the asphalt mirror every neon color. She glances past the camera "
    "with a calm, guarded expression. Shot on a full-frame camera with a 50mm lens at f/2, eye level, shallow "
    "depth of field, subtle film grain, crisp detail on the eyes, high resolution, photorealistic color grading."
)

LOOP_SENTENCE = "The neon lights reflect on the wet street and the girl looks at the camera with a calm face."


def _item(**overrides) -> dict:
    item = {
        "id": "p1",
        "description": "霓虹街头的赛博朋克女孩",
        "format": "text",
        "reference": CLEAN_PROMPT,
        "output": CLEAN_PROMPT,
        "time_to_first_token": 0.25,
        "tokens_per_second": 42.0,
        "generated_tokens": 160,
        "finish_reason": "stop",
        "json_method": None,
    }
    item.update(overrides)
    return item


# Repetition


def test_distinct_2_small_string():
    assert distinct_2(words("the cat saw the cat")) == pytest.approx(3 / 4)


def test_distinct_2_needs_two_words():
    assert distinct_2(words("cat")) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b c d", 0),
        ("one two one", 1),
        ("a b c a b c", 3),
        ("a b a b a", 3),  # overlapping occurrences count
        ("", 0),
    ],
)
def test_longest_repeated_ngram_cases(text, expected):
    assert longest_repeated_ngram(text.split()) == expected


def test_words_drop_punctuation_and_case():
    assert words('{"Subject": "Girl\'s coat, wet_street"}') == ["subject", "girl's", "coat", "wet", "street"]


def test_loop_flagged_degenerate():
    output = "A portrait of a girl. " + " ".join([LOOP_SENTENCE] * 8)
    scored = score_item(_item(output=output))

    assert scored["longest_repeated_ngram"] >= metrics.DEGENERATE_REPEATED_NGRAM
    assert scored["degenerate"] is True


def test_sentence_repeated_once_flagged():
    scored = score_item(_item(output=f"{CLEAN_PROMPT} {LOOP_SENTENCE} {LOOP_SENTENCE}"))

    assert scored["longest_repeated_ngram"] == 19
    assert scored["distinct_2"] > 0.8
    assert scored["degenerate"] is True


@pytest.mark.parametrize(("repeat_length", "flagged"), [(11, False), (12, True)])
def test_repeated_ngram_threshold(repeat_length, flagged):
    repeated = " ".join(f"r{index}" for index in range(repeat_length))
    filler = " ".join(f"f{index}" for index in range(40))
    scored = score_item(_item(output=f"{repeated} {filler} {repeated}"))

    assert scored["longest_repeated_ngram"] == repeat_length
    assert scored["degenerate"] is flagged


def test_counter_loop_flagged_by_distinct_2():
    output = " ".join(f"step {number} of the glow," for number in range(1, 31))
    scored = score_item(_item(output=output))

    assert scored["longest_repeated_ngram"] < metrics.DEGENERATE_REPEATED_NGRAM
    assert scored["distinct_2"] < metrics.DEGENERATE_DISTINCT_2
    assert scored["degenerate"] is True


def test_clean_prompt_not_degenerate():
    scored = score_item(_item())

    assert scored["longest_repeated_ngram"] < 5
    assert scored["distinct_2"] > 0.9
    assert scored["degenerate"] is False


def test_short_text_not_flagged_by_distinct_2():
    scored = score_item(_item(output="red red red red red red"))

    assert scored["distinct_2"] == pytest.approx(0.2)
    assert scored["longest_repeated_ngram"] == 5
    assert scored["degenerate"] is False


# chrF and length


def test_chrf_identical_is_100():
    assert score_item(_item())["chrf"] == pytest.approx(100.0)


def test_chrf_different_text_is_lower():
    scored = score_item(_item(output="A bowl of ramen on a wooden table, top-down view."))
    assert 0 < scored["chrf"] < 50


def test_chrf_empty_reference_is_none():
    assert score_item(_item(reference="  "))["chrf"] is None


def test_length_band_edges():
    assert score_item(_item(output="x" * 499))["in_band"] is False
    assert score_item(_item(output="x" * 500))["in_band"] is True
    assert score_item(_item(output=" " + "x" * 2000 + "\n"))["in_band"] is True
    assert score_item(_item(output="x" * 2001))["in_band"] is False


def test_length_counts_stripped_characters():
    assert score_item(_item(output="  abc \n"))["length_chars"] == 3


# Text prompt checks


def test_english_prompt_detected():
    scored = score_item(_item())

    assert scored["is_english"] is True
    assert scored["cjk_leak"] == 0
    assert scored["special_token_leak"] is False


def test_chinese_output_not_english():
    scored = score_item(_item(output="霓虹灯下的赛博朋克女孩，站在潮湿的街道上。"))

    assert scored["is_english"] is False
    assert scored["cjk_leak"] == 21  # 19 ideographs and 2 fullwidth punctuation marks


def test_few_cjk_characters_still_english():
    scored = score_item(_item(output=CLEAN_PROMPT + " The shop sign reads 面."))

    assert scored["is_english"] is True
    assert scored["cjk_leak"] == 1


def test_special_tokens_found():
    scored = score_item(_item(output=CLEAN_PROMPT + "<|im_end|>\n<think>plan</think><|im_end|>"))

    assert scored["special_token_leak"] is True
    assert scored["special_tokens_found"] == ["</think>", "<think>", "<|im_end|>"]


def test_text_item_has_no_json_scores():
    scored = score_item(_item())

    assert scored["json_valid"] is None
    assert scored["schema_coverage"] is None


# JSON prompt checks


@pytest.mark.parametrize(
    ("output", "valid"),
    [
        ('{"subject": "a cat", "lighting": "soft window light"}', True),
        ('  [{"subject": "a cat"}]\n', True),
        ("{'subject': 'a cat'}", False),
        ('{"subject": "a cat", "lighting": "so', False),
        ('```json\n{"subject": "a cat"}\n```', False),
        ('{"subject": "a cat"} Here is your prompt.', False),
        ("42", False),
        ('"a cat"', False),
        ("", False),
    ],
    ids=["object", "array", "single-quotes", "truncated", "fenced", "trailing-text", "number", "string", "empty"],
)
def test_json_validity(output, valid):
    assert score_item(_item(format="json", output=output))["json_valid"] is valid


def test_schema_coverage_nested_keys_and_synonyms():
    prompt = {
        "Subject": {"description": "a young woman", "Outfit": "black techwear jacket"},
        "characters": [{"name": "vendor", "pose": "leaning on a counter"}],
        "scene": {"Lighting_Setup": "magenta rim light", "weather": "light rain"},
        "cameraSettings": {"focal_length": "50mm"},
        "art_style": "cinematic film still",
    }
    scored = score_item(_item(format="json", output=json.dumps(prompt)))

    assert scored["schema_groups_found"] == ["subject", "appearance", "pose", "environment", "lighting", "camera", "style"]
    assert scored["schema_coverage"] == pytest.approx(7 / 8)


def test_schema_key_must_start_with_synonym():
    scored = score_item(_item(format="json", output=json.dumps({"background_details": "x", "spotlight": "y"})))
    assert scored["schema_groups_found"] == ["environment"]


def test_schema_coverage_of_invalid_json_is_zero():
    scored = score_item(_item(format="json", output='{"subject": "a cat", "lighting": '))

    assert scored["schema_coverage"] == 0.0
    assert scored["schema_groups_found"] == []


def test_json_item_has_no_text_scores():
    scored = score_item(_item(format="json", output='{"subject": "a cat"}'))

    assert scored["is_english"] is None
    assert scored["cjk_leak"] is None


# Key-element coverage


def test_extract_takes_longest_terms():
    table = load_terms()
    extracted = [term.chinese for term in table.extract("桃花林中的猫头鹰和猫")]
    assert extracted == ["桃花林", "猫头鹰", "猫"]


def test_extract_lists_repeated_term_once():
    table = load_terms()
    assert [term.chinese for term in table.extract("猫和猫")] == ["猫"]


def test_coverage_all_terms_present():
    output = "A cyberpunk girl walks down a rain-slick street under neon signs."
    coverage = key_element_coverage("霓虹街头的赛博朋克女孩", output)

    assert coverage["elements"] == ["霓虹", "街头", "赛博朋克", "女孩"]
    assert coverage["coverage"] == 1.0
    assert coverage["matched"] == {"霓虹": "neon", "街头": "street", "赛博朋克": "cyberpunk", "女孩": "girl"}


def test_coverage_reports_missing_term():
    output = "A cyberpunk girl walks down a rain-slick street at night."
    coverage = key_element_coverage("霓虹街头的赛博朋克女孩", output)

    assert coverage["coverage"] == pytest.approx(3 / 4)
    assert coverage["missing"] == ["霓虹"]


def test_coverage_none_without_known_terms():
    assert key_element_coverage("这个那个", "anything")["coverage"] is None


def test_json_coverage_ignores_key_names():
    # "lighting" is only a key name here, so 光线 (lighting) must stay uncovered.
    output = json.dumps({"subject": "a black cat", "lighting": "soft", "camera": "close-up"})
    scored = score_item(_item(format="json", description="光线柔和的黑猫特写", output=output))

    assert scored["key_elements"] == ["光线", "黑猫", "特写"]
    assert scored["key_elements_missing"] == ["光线"]
    assert scored["key_element_coverage"] == pytest.approx(2 / 3)


def test_invalid_json_coverage_searches_raw_text():
    output = '{"subject": "a black cat", "camera": "close-up'
    scored = score_item(_item(format="json", description="黑猫特写", output=output))
    assert scored["key_element_coverage"] == 1.0


@pytest.mark.parametrize(
    ("variant", "text"),
    [
        ("cat", "two cats"),
        ("city", "neon cities"),
        ("dance", "dancing figures"),
        ("shop", "shopping street"),
        ("glass", "reading glasses"),
        ("close-up", "a closeup of"),
        ("close-up", "a close up of"),
        ("bird's-eye", "bird\u2019s eye view"),
        ("cat", "CAT"),
    ],
)
def test_variant_matches_inflections(variant, text):
    assert variant_pattern(variant).search(text.replace("\u2019", "'"))


@pytest.mark.parametrize(
    ("variant", "text"),
    [
        ("cat", "a catalog"),
        ("cat", "concatenate"),
        ("man", "a woman"),
        ("rain", "a raincoat"),
    ],
)
def test_variant_respects_word_boundaries(variant, text):
    assert variant_pattern(variant).search(text) is None


def test_bundled_table_loads():
    table = load_terms()

    assert len(table) >= 300
    assert "赛博朋克" in table
    assert table.get("赛博朋克").english == ("cyberpunk",)


def test_bundled_variants_are_lower_case():
    table = load_terms()
    for chinese in ("女孩", "京都", "新海诚"):
        for variant in table.get(chinese).english:
            assert variant == variant.lower()


def test_parse_terms_rejects_duplicate():
    text = "category\tzh\ten\nanimal\t猫\tcat\nanimal\t猫\tkitten\n"
    with pytest.raises(DataFormatError) as raised:
        parse_terms(text, "terms.tsv")
    assert raised.value.line == 3


def test_parse_terms_rejects_missing_header():
    with pytest.raises(DataFormatError) as raised:
        parse_terms("# comment\nanimal\t猫\tcat\n", "terms.tsv")
    assert raised.value.line == 2


def test_parse_terms_rejects_empty_variant():
    with pytest.raises(DataFormatError, match="empty English variant"):
        parse_terms("category\tzh\ten\nanimal\t猫\tcat||kitten\n", "terms.tsv")


def test_parse_terms_rejects_wrong_field_count():
    with pytest.raises(DataFormatError, match="3 tab-separated fields"):
        parse_terms("category\tzh\ten\nanimal\t猫\n", "terms.tsv")


def test_custom_table_used_by_score_item():
    table = parse_terms("category\tzh\ten\nanimal\t猫\tfeline\n", "terms.tsv")
    scored = score_item(_item(description="猫", output="a sleek feline"), terms=table)
    assert scored["key_elements_matched"] == {"猫": "feline"}


# Item validation


def test_score_item_missing_field():
    item = _item()
    del item["reference"]
    with pytest.raises(EvaluationError, match="missing field 'reference'"):
        score_item(item)


def test_score_item_unknown_format():
    with pytest.raises(EvaluationError, match="unknown format 'yaml'"):
        score_item(_item(format="yaml"))


def test_score_item_output_must_be_string():
    with pytest.raises(EvaluationError, match="'output' must be a string"):
        score_item(_item(output=None))


def test_score_item_is_idempotent():
    scored = score_item(_item(format="json", output='{"subject": "a neon girl"}'))
    assert score_item(scored) == scored


def test_score_item_keeps_extra_fields():
    assert score_item(_item(source="dev.jsonl:3"))["source"] == "dev.jsonl:3"


def test_score_item_marks_token_limit_as_truncated():
    assert score_item(_item(finish_reason="length"))["truncated"] is True


# Summaries


def test_summarize_rates_and_counts():
    scored = [
        score_item(_item(id="a")),
        score_item(_item(id="b", output="霓虹街头的女孩<|im_end|>", time_to_first_token=None, tokens_per_second=0.0)),
        score_item(_item(id="c", format="json", output='{"subject": "a girl"}', json_method="constrained")),
        score_item(_item(id="d", format="json", output='{"subject": ', json_method="as-is", finish_reason="length")),
    ]
    summary = summarize(scored)

    assert summary["items"] == 4
    assert summary["items_per_format"] == {"text": 2, "json": 2}
    assert summary["in_band_rate"] == pytest.approx(1 / 4)
    assert summary["english_rate"] == pytest.approx(1 / 2)
    assert summary["cjk_leak_rate"] == pytest.approx(1 / 2)
    assert summary["special_token_leak_rate"] == pytest.approx(1 / 4)
    assert summary["leak_rate"] == pytest.approx(1 / 4)
    assert summary["json_valid_rate"] == pytest.approx(1 / 2)
    assert summary["schema_coverage_mean"] == pytest.approx(1 / 16)
    assert summary["truncated_rate"] == pytest.approx(1 / 4)
    assert summary["finish_reasons"] == {"stop": 3, "length": 1}
    assert summary["json_methods"] == {"constrained": 1, "as-is": 1}


def test_summarize_timing_skips_unmeasured():
    scored = [
        score_item(_item(id="a", time_to_first_token=0.2, tokens_per_second=40.0)),
        score_item(_item(id="b", time_to_first_token=None, tokens_per_second=0.0)),
        score_item(_item(id="c", time_to_first_token=0.4, tokens_per_second=60.0)),
    ]
    summary = summarize(scored)

    assert summary["time_to_first_token_mean"] == pytest.approx(0.3)
    assert summary["tokens_per_second_mean"] == pytest.approx(50.0)
    assert summary["generated_tokens_mean"] == pytest.approx(160)


def test_summarize_chrf_mean_and_corpus():
    scored = [score_item(_item(id="a")), score_item(_item(id="b"))]
    summary = summarize(scored)

    assert summary["chrf_mean"] == pytest.approx(100.0)
    assert summary["chrf_corpus"] == pytest.approx(100.0)


def test_summarize_empty():
    summary = summarize([])

    assert summary["items"] == 0
    assert summary["chrf_mean"] is None
    assert summary["in_band_rate"] is None


# Paired bootstrap


def test_bootstrap_ci_contains_true_shift():
    generator = np.random.default_rng(7)
    base = generator.normal(50, 5, size=200)
    tuned = base + 3 + generator.normal(0, 2, size=200)
    result = paired_bootstrap(list(base), list(tuned), seed=1)

    assert result["ci_low"] < 3 < result["ci_high"]
    assert result["ci_low"] > 0
    assert result["share_b_better"] > 0.99


def test_bootstrap_ci_straddles_zero_without_shift():
    generator = np.random.default_rng(8)
    base = generator.normal(50, 5, size=200)
    noise = generator.normal(0, 2, size=200)
    tuned = base + (noise - noise.mean())
    result = paired_bootstrap(list(base), list(tuned), seed=1)

    assert result["mean_difference"] == pytest.approx(0.0, abs=1e-9)
    assert result["ci_low"] < 0 < result["ci_high"]
    assert 0.2 < result["share_b_better"] < 0.8


def test_bootstrap_identical_scores():
    result = paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])

    assert result["ci_low"] == 0.0
    assert result["ci_high"] == 0.0
    assert result["share_b_better"] == 0.0


def test_bootstrap_same_seed_same_result():
    base = [0.1, 0.5, 0.2, 0.9, 0.4]
    tuned = [0.3, 0.4, 0.6, 0.8, 0.7]
    assert paired_bootstrap(base, tuned, seed=3) == paired_bootstrap(base, tuned, seed=3)


def test_bootstrap_many_items_in_chunks():
    # With 5,000 items a chunk has 200 resamples, so 300 resamples take two chunks.
    base = [0.0] * 5000
    tuned = [1.0] * 5000
    result = paired_bootstrap(base, tuned, resamples=300)

    assert result["mean_difference"] == 1.0
    assert result["ci_low"] == 1.0


@pytest.mark.parametrize(
    ("a", "b", "options", "message"),
    [
        ([1.0], [1.0, 2.0], {}, "same length"),
        ([], [], {}, "at least one pair"),
        ([1.0], [2.0], {"resamples": 0}, "resamples"),
        ([1.0], [2.0], {"confidence": 1.0}, "confidence"),
        ([float("nan")], [2.0], {}, "finite"),
    ],
)
def test_bootstrap_rejects_invalid_input(a, b, options, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, **options)


# Comparison


def test_compare_matches_items_by_id():
    base = [
        score_item(_item(id="a", output="A girl on a street.")),
        score_item(_item(id="b", output="A cat.")),
        score_item(_item(id="only-base")),
    ]
    tuned = [
        score_item(_item(id="b")),
        score_item(_item(id="a")),
        score_item(_item(id="only-tuned")),
    ]
    result = compare(base, tuned, seed=0)

    assert result["matched_items"] == 2
    assert result["unmatched_base"] == ["only-base (text)"]
    assert result["unmatched_tuned"] == ["only-tuned (text)"]
    assert result["metrics"]["chrf"]["items"] == 2
    assert result["metrics"]["chrf"]["mean_b"] == pytest.approx(100.0)
    assert result["metrics"]["chrf"]["mean_difference"] > 0
    assert result["corpus_chrf"]["difference"] > 0


def test_compare_reports_required_metrics():
    base = [score_item(_item(id=str(index), output=CLEAN_PROMPT[: 300 + index])) for index in range(5)]
    tuned = [score_item(_item(id=str(index))) for index in range(5)]
    result = compare(base, tuned)

    for metric in ("chrf", "in_band", "key_element_coverage", "distinct_2"):
        assert result["metrics"][metric] is not None, metric
    assert result["metrics"]["in_band"]["mean_difference"] == pytest.approx(1.0)
    assert result["metrics"]["json_valid"] is None


def test_compare_keeps_formats_apart():
    base = [score_item(_item(id="a")), score_item(_item(id="a", format="json", output="{}"))]
    tuned = [score_item(_item(id="a"))]
    result = compare(base, tuned)

    assert result["matched_items"] == 1
    assert result["unmatched_base"] == ["a (json)"]


def test_compare_rejects_duplicate_ids():
    scored = [score_item(_item(id="a")), score_item(_item(id="a"))]
    with pytest.raises(EvaluationError, match="appears twice"):
        compare(scored, scored)


def test_reference_band_is_the_baseline():
    short_reference = score_item(_item(reference="A cat.", output="x" * 600))
    long_reference = score_item(_item(reference="word " * 200, output="x" * 600))

    assert short_reference["reference_in_band"] is False
    assert long_reference["reference_in_band"] is True
    assert summarize([short_reference, long_reference])["reference_in_band_rate"] == 0.5
