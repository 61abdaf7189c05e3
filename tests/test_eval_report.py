"""Checks of the evaluation report files: report.json, report.md and report.png."""

from __future__ import annotations

import json

import pytest

from nbp_mlx.evaluation.metrics import EvaluationError
from nbp_mlx.evaluation.report import comparison_pair, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

REFERENCE = (
    "A cinematic portrait of a young woman on a rain-soaked street in a cyberpunk city at night, lit by magenta "
    "and cyan neon signs. She wears a translucent raincoat over black techwear and looks into the lens with a calm "
    "expression. Steam drifts from food stalls behind her and the wet asphalt mirrors every sign. Mixed neon "
    "lighting with a hard magenta rim light from the left and a soft cyan fill from a shop window. Shot with an "
    "85mm lens at f/1.4, eye level, shallow depth of field. Fine film grain, sharp focus on the eyes, 8K detail."
)
JSON_REFERENCE = json.dumps(
    {
        "subject": "a black cat sitting on a stack of old books in a small bookshop at night",
        "environment": "wooden shelves, warm lamps, snow falling outside the window",
        "lighting": "warm tungsten lamp light with soft shadows",
        "camera": {"lens": "50mm", "shot": "medium close-up, eye level"},
        "style": "cozy anime illustration with clean line art",
        "quality": "high resolution, detailed textures",
    }
)


def _system(outputs: list[str], json_output: str) -> list[dict]:
    items = []
    for index, output in enumerate(outputs):
        items.append(
            {
                "id": f"text-{index}",
                "description": "霓虹街头的赛博朋克女孩",
                "format": "text",
                "reference": REFERENCE,
                "output": output,
                "time_to_first_token": 0.3,
                "tokens_per_second": 35.0,
                "generated_tokens": 180,
                "finish_reason": "stop",
                "json_method": None,
            }
        )
    items.append(
        {
            "id": "json-0",
            "description": "冬夜书店里的黑猫",
            "format": "json",
            "reference": JSON_REFERENCE,
            "output": json_output,
            "time_to_first_token": None,
            "tokens_per_second": 30.0,
            "generated_tokens": 120,
            "finish_reason": "length",
            "json_method": "repaired",
        }
    )
    return items


@pytest.fixture
def systems() -> dict[str, list[dict]]:
    base = _system(
        [
            "A girl in a city. " + "The girl stands in the city and the lights are bright. " * 12,
            "霓虹街头的赛博朋克女孩<|im_end|>",
            REFERENCE[:400],
        ],
        '{"subject": "a cat", "lighting": ',
    )
    tuned = _system([REFERENCE, REFERENCE.replace("85mm", "50mm"), REFERENCE[:700]], JSON_REFERENCE)
    return {"base": base, "tuned": tuned}


SETTINGS = {"seed": 0, "decoding": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 2048}, "model": "qwen|test"}


def test_report_files_exist(tmp_path, systems):
    paths = write_report(tmp_path / "out", systems, SETTINGS)

    assert set(paths) == {"json", "markdown", "png"}
    for path in paths.values():
        assert path.is_file()
        assert path.parent == tmp_path / "out"


def test_report_leaves_no_temporary_files(tmp_path, systems):
    write_report(tmp_path, systems, SETTINGS)
    write_report(tmp_path, systems, SETTINGS)  # overwrites the first report in place
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.json", "report.md", "report.png"]


def test_report_json_loads(tmp_path, systems):
    report = json.loads(write_report(tmp_path, systems, SETTINGS)["json"].read_text(encoding="utf-8"))

    assert report["settings"] == SETTINGS
    assert report["systems"] == ["base", "tuned"]
    assert report["summary"]["tuned"]["items"] == 4
    assert report["summary"]["base"]["degenerate_rate"] == pytest.approx(1 / 4)
    assert report["thresholds"]["prompt_min_chars"] == 500


def test_report_json_items_have_scores(tmp_path, systems):
    report = json.loads(write_report(tmp_path, systems, SETTINGS)["json"].read_text(encoding="utf-8"))
    first = report["items"]["tuned"][0]

    assert first["id"] == "text-0"
    assert first["chrf"] == pytest.approx(100.0)
    assert first["key_elements"] == ["霓虹", "街头", "赛博朋克", "女孩"]
    assert report["items"]["tuned"][3]["json_valid"] is True
    assert report["items"]["base"][3]["json_valid"] is False


def test_report_json_comparison(tmp_path, systems):
    report = json.loads(write_report(tmp_path, systems, SETTINGS)["json"].read_text(encoding="utf-8"))
    comparison = report["comparison"]

    assert comparison["base"] == "base"
    assert comparison["tuned"] == "tuned"
    assert comparison["matched_items"] == 4
    assert comparison["seed"] == 0
    assert comparison["metrics"]["chrf"]["mean_difference"] > 0
    assert comparison["metrics"]["chrf"]["ci_low"] <= comparison["metrics"]["chrf"]["ci_high"]


def test_report_png_signature(tmp_path, systems):
    png = write_report(tmp_path, systems, SETTINGS)["png"].read_bytes()
    assert png.startswith(PNG_SIGNATURE)


def test_report_markdown_names_systems(tmp_path, systems):
    markdown = write_report(tmp_path, systems, SETTINGS)["markdown"].read_text(encoding="utf-8")

    assert "| Metric | base | tuned |" in markdown
    assert "## Comparison: tuned against base" in markdown
    assert "### base" in markdown
    assert "### tuned" in markdown


def test_report_markdown_sections(tmp_path, systems):
    markdown = write_report(tmp_path, systems, SETTINGS)["markdown"].read_text(encoding="utf-8")

    assert markdown.startswith("# Evaluation report\n")
    assert "| decoding.temperature | 0.7 |" in markdown
    assert "| model | qwen\\|test |" in markdown
    assert "| In the 500–2,000 character band | 25.0% | 75.0% |" in markdown
    assert "| Valid JSON | 0.0% | 100.0% |" in markdown
    assert "![Distributions of chrF, length and key-element coverage per system](report.png)" in markdown
    assert "## What the metrics mean" in markdown
    assert "95% CI" in markdown


def test_report_markdown_truncates_examples(tmp_path, systems):
    markdown = write_report(tmp_path, systems, SETTINGS)["markdown"].read_text(encoding="utf-8")

    assert "The girl stands in the city" in markdown
    assert "The girl stands in the city and the lights are bright. " * 12 not in markdown
    assert "…" in markdown


def test_report_fences_outputs_with_backticks(tmp_path, systems):
    systems["tuned"][0]["output"] = "```json\n{}\n```"
    markdown = write_report(tmp_path, systems, SETTINGS)["markdown"].read_text(encoding="utf-8")
    assert "````text\n```json\n{}\n```\n````" in markdown


def test_report_single_system(tmp_path, systems):
    paths = write_report(tmp_path, {"tuned": systems["tuned"]}, {"seed": None})
    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    markdown = paths["markdown"].read_text(encoding="utf-8")

    assert report["comparison"] is None
    assert "## Comparison" not in markdown
    assert "| Metric | tuned |" in markdown
    assert paths["png"].read_bytes().startswith(PNG_SIGNATURE)


def test_report_compares_first_two_systems(tmp_path, systems):
    named = {"qwen-0.5b": systems["base"], "qwen-0.5b-lora": systems["tuned"], "other": systems["base"]}
    report = json.loads(write_report(tmp_path, named, {"seed": 5})["json"].read_text(encoding="utf-8"))

    assert report["comparison"]["base"] == "qwen-0.5b"
    assert report["comparison"]["tuned"] == "qwen-0.5b-lora"
    assert report["comparison"]["seed"] == 5


def test_report_accepts_scored_items(tmp_path, systems):
    first = json.loads(write_report(tmp_path / "first", systems, SETTINGS)["json"].read_text(encoding="utf-8"))
    second = json.loads(write_report(tmp_path / "second", first["items"], SETTINGS)["json"].read_text(encoding="utf-8"))
    assert second["summary"] == first["summary"]


def test_report_rejects_no_systems(tmp_path):
    with pytest.raises(EvaluationError, match="no systems"):
        write_report(tmp_path, {}, SETTINGS)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["tuned", "x", "base"], ("base", "tuned")),
        (["a", "b", "c"], ("a", "b")),
        (["only"], None),
    ],
)
def test_comparison_pair_choice(names, expected):
    assert comparison_pair(names) == expected


def test_report_logs_missing_cjk_glyphs(tmp_path, systems, monkeypatch, caplog):
    from nbp_mlx.evaluation import report

    monkeypatch.setattr(report, "_font_families", lambda: ["DejaVu Sans"])
    with caplog.at_level("WARNING", logger="nbp_mlx.evaluation.report"):
        paths = write_report(tmp_path, {"基线": systems["base"]}, SETTINGS)

    assert paths["png"].read_bytes().startswith(PNG_SIGNATURE)
    assert "show as boxes" in caplog.text


def test_report_side_by_side_orders_by_gain(tmp_path, systems):
    paths = write_report(tmp_path, systems, SETTINGS)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    section = markdown.split("## Side by side: base and tuned", 1)[1].split("\n## ", 1)[0]
    headings = [line.split("**")[1] for line in section.splitlines() if line.startswith("**")]
    base_chrf = {item["id"]: item["chrf"] for item in report["items"]["base"]}
    gains = sorted(((item["chrf"] - base_chrf[item["id"]], item["id"]) for item in report["items"]["tuned"]), reverse=True)

    # The three highest changes first, then the lowest of the rest.
    assert headings == [item_id for _gain, item_id in gains[:3]] + [gains[3][1]]
    assert "*base*" in section
    assert "*tuned*" in section
    assert "chrF " in section


def test_report_single_system_has_no_side_by_side(tmp_path, systems):
    markdown = write_report(tmp_path, {"tuned": systems["tuned"]}, SETTINGS)["markdown"].read_text(encoding="utf-8")

    assert "## Side by side" not in markdown


def test_report_two_items_split_lowest_highest(tmp_path, systems):
    two = systems["tuned"][:2]
    markdown = write_report(tmp_path, {"tuned": two}, SETTINGS)["markdown"].read_text(encoding="utf-8")
    examples = markdown.split("## Examples", 1)[1]

    assert examples.count("#### Lowest chrF") == 1
    assert examples.count("#### Highest chrF") == 1
    assert examples.count("**text-0**") + examples.count("**text-1**") == 2


def test_report_warns_about_few_pairs(tmp_path, systems):
    markdown = write_report(tmp_path, systems, SETTINGS)["markdown"].read_text(encoding="utf-8")

    assert "Only 4 pairs" in markdown
