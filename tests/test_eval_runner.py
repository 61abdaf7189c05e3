"""Tests for nbp_mlx.evaluation.runner: reading pairs, drawing them, resuming, refusing mixed runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbp_mlx.errors import DataFormatError
from nbp_mlx.evaluation.runner import EvalPair, EvalSystem, EvaluationError, load_eval_pairs, run_systems, select_pairs
from nbp_mlx.generate import GenerationSettings

TEXT_PROMPT = "A girl in a yellow raincoat on a neon street at night, rain, 35mm, cinematic."
JSON_PROMPT = {"subject": "an old fisherman", "lighting": "golden hour", "camera": "85mm portrait"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


class EchoBackend:
    """Returns the description reversed; counts calls, so tests see what was generated again."""

    name = "echo"

    def __init__(self, calls: list[str], fail_after: int | None = None):
        self.calls = calls
        self.fail_after = fail_after
        self.closed = False

    def stream(self, description, prompt_format, settings, stats, should_stop=None):
        if description == WARM_UP:
            yield "warm"
            return
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append(description)
        stats.generated_tokens = 3
        stats.finish_reason = "stop"
        yield description[::-1]

    def close(self):
        self.closed = True


WARM_UP = "热身"


def pairs(count: int) -> list[EvalPair]:
    return [EvalPair(f"p-{index}", f"描述{index}", "text", TEXT_PROMPT, f"pairs.jsonl:{index + 1}") for index in range(count)]


def test_records_file_needs_descriptions(tmp_path):
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": TEXT_PROMPT, "description": "雨夜霓虹街头的女孩"},
            {"prompt": JSON_PROMPT, "description_zh": "金色时刻的老渔夫"},
            {"prompt": "A prompt without a description."},
        ],
    )

    found = load_eval_pairs(path)

    assert [(pair.description, pair.format) for pair in found] == [("雨夜霓虹街头的女孩", "text"), ("金色时刻的老渔夫", "json")]
    assert json.loads(found[1].reference) == JSON_PROMPT
    assert found[0].source == "pairs.jsonl:1"


def test_prepared_split_reference(tmp_path):
    messages = [
        {"role": "system", "content": "system"},
        {"role": "user", "content": "rendered instruction"},
        {"role": "assistant", "content": TEXT_PROMPT},
    ]
    path = write_jsonl(
        tmp_path / "valid.jsonl",
        [
            {"messages": messages, "group": "p-1", "description": "雨夜的女孩", "format": "text"},
            {"messages": messages, "group": "p-1", "description": "下雨的街头女孩", "format": "text"},
        ],
    )

    found = load_eval_pairs(path)

    assert [pair.id for pair in found] == ["p-1", "p-1#2"]
    assert found[1].reference == TEXT_PROMPT
    assert found[1].description == "下雨的街头女孩"


def test_old_prepared_split_names_the_fix(tmp_path):
    path = write_jsonl(tmp_path / "valid.jsonl", [{"messages": [{"role": "assistant", "content": "x"}], "group": "p-1"}])

    with pytest.raises(DataFormatError) as caught:
        load_eval_pairs(path)

    assert "valid.jsonl:1" in str(caught.value)
    assert "data prepare" in str(caught.value)


def test_file_without_descriptions_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": TEXT_PROMPT}])

    with pytest.raises(EvaluationError) as caught:
        load_eval_pairs(path)

    assert str(path) in str(caught.value)


def test_missing_pairs_file_is_named(tmp_path):
    with pytest.raises(EvaluationError) as caught:
        load_eval_pairs(tmp_path / "absent.jsonl")

    assert "absent.jsonl" in str(caught.value)


def test_select_pairs_seeded_in_order():
    all_pairs = pairs(20)

    first = select_pairs(all_pairs, 5, seed=7)
    again = select_pairs(all_pairs, 5, seed=7)
    other = select_pairs(all_pairs, 5, seed=8)

    assert first == again
    assert first != other
    assert [all_pairs.index(pair) for pair in first] == sorted(all_pairs.index(pair) for pair in first)
    assert select_pairs(all_pairs, None, seed=7) == all_pairs
    with pytest.raises(EvaluationError):
        select_pairs(all_pairs, 0, seed=7)


def test_run_resumes_saved_items(tmp_path):
    calls: list[str] = []
    settings = GenerationSettings(temperature=0.0, max_tokens=8, seed=0)
    systems = [EvalSystem("base", "echo base", lambda: EchoBackend(calls))]
    all_pairs = pairs(4)

    with pytest.raises(KeyboardInterrupt):
        run_systems(all_pairs, [EvalSystem("base", "echo base", lambda: EchoBackend(calls, fail_after=2))], settings, tmp_path, pairs_file="p.jsonl")
    saved = (tmp_path / "items-base.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(saved) == 2

    results = run_systems(all_pairs, systems, settings, tmp_path, pairs_file="p.jsonl")

    assert calls == ["描述0", "描述1", "描述2", "描述3"]
    assert [item["id"] for item in results["base"]] == ["p-0", "p-1", "p-2", "p-3"]
    assert results["base"][3]["output"] == "3述描"
    assert len((tmp_path / "items-base.jsonl").read_text(encoding="utf-8").splitlines()) == 4


def test_run_rejects_other_settings(tmp_path):
    calls: list[str] = []
    systems = [EvalSystem("base", "echo base", lambda: EchoBackend(calls))]
    run_systems(pairs(2), systems, GenerationSettings(temperature=0.0, max_tokens=8), tmp_path, pairs_file="p.jsonl")

    with pytest.raises(EvaluationError) as caught:
        run_systems(pairs(2), systems, GenerationSettings(temperature=0.0, max_tokens=16), tmp_path, pairs_file="p.jsonl")

    assert "max_tokens: 8 → 16" in str(caught.value)
    assert "--out" in str(caught.value)


def test_run_adds_a_system_to_an_earlier_run(tmp_path):
    calls: list[str] = []
    settings = GenerationSettings(temperature=0.0, max_tokens=8)
    run_systems(pairs(2), [EvalSystem("base", "echo base", lambda: EchoBackend(calls))], settings, tmp_path, pairs_file="p.jsonl")

    results = run_systems(
        pairs(2),
        [EvalSystem("base", "echo base", lambda: EchoBackend(calls)), EvalSystem("tuned", "echo tuned", lambda: EchoBackend(calls))],
        settings,
        tmp_path,
        pairs_file="p.jsonl",
    )

    assert len(calls) == 4
    assert sorted(results) == ["base", "tuned"]
    assert json.loads((tmp_path / "run.json").read_text())["systems"] == {"base": "echo base", "tuned": "echo tuned"}


def test_run_without_systems_is_refused(tmp_path):
    with pytest.raises(EvaluationError):
        run_systems(pairs(1), [], GenerationSettings(), tmp_path, pairs_file="p.jsonl")


def test_run_drops_cut_off_last_line(tmp_path):
    calls: list[str] = []
    settings = GenerationSettings(temperature=0.0, max_tokens=8)
    systems = [EvalSystem("base", "echo base", lambda: EchoBackend(calls))]
    run_systems(pairs(2), systems, settings, tmp_path, pairs_file="p.jsonl")
    items = tmp_path / "items-base.jsonl"
    lines = items.read_text(encoding="utf-8").splitlines(keepends=True)
    items.write_text(lines[0] + lines[1][:20], encoding="utf-8")  # a crash in the middle of the second line

    results = run_systems(pairs(2), systems, settings, tmp_path, pairs_file="p.jsonl")

    assert calls == ["描述0", "描述1", "描述1"]
    assert [item["id"] for item in results["base"]] == ["p-0", "p-1"]
    assert len(items.read_text(encoding="utf-8").splitlines()) == 2


def test_run_out_must_be_a_folder(tmp_path):
    existing = tmp_path / "report.jsonl"
    existing.write_text("{}\n", encoding="utf-8")

    with pytest.raises(EvaluationError) as caught:
        run_systems(pairs(1), [EvalSystem("base", "echo", lambda: EchoBackend([]))], GenerationSettings(), existing, pairs_file="p.jsonl")

    assert "--out must be a folder" in str(caught.value)


def test_run_out_below_a_file(tmp_path):
    existing = tmp_path / "report.jsonl"
    existing.write_text("{}\n", encoding="utf-8")

    with pytest.raises(EvaluationError) as caught:
        run_systems(pairs(1), [EvalSystem("base", "echo", lambda: EchoBackend([]))], GenerationSettings(), existing / "sub", pairs_file="p.jsonl")

    assert "cannot create the report folder" in str(caught.value)


def test_run_warms_up_before_timing(tmp_path):
    seen: list[str] = []

    class Recording(EchoBackend):
        def stream(self, description, prompt_format, settings, stats, should_stop=None):
            seen.append(description)
            return super().stream(description, prompt_format, settings, stats, should_stop)

    run_systems(pairs(1), [EvalSystem("base", "echo", lambda: Recording([]))], GenerationSettings(), tmp_path, pairs_file="p.jsonl")

    assert seen == [WARM_UP, "描述0"]
