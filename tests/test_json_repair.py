import json

import pytest

from nbp_mlx.json_repair import repair_json


def test_valid_json_is_unchanged():
    result = repair_json('{"subject": "lake"}')
    assert result.ok
    assert result.actions == []


def test_code_fence_is_stripped():
    result = repair_json('```json\n{"subject": "lake"}\n```')
    assert result.value == {"subject": "lake"}
    assert "stripped code fence" in result.actions


@pytest.mark.parametrize(
    "truncated",
    [
        '{"subject": "a girl", "style": "neon, cinem',
        '{"subject": "a girl", "scene": {"lighting": "soft", "camera": ',
        '{"subject": "a girl", "tags": ["neon", "rain",',
        '{"subject": "a girl", "scene": {"lighting": "soft"',
        '{"subject": "a \\"quoted\\" wo',
        '{"subject": "esc\\',
    ],
)
def test_truncated_output_is_closed(truncated):
    result = repair_json(truncated)
    assert result.ok, result.text
    assert result.value["subject"].startswith(("a", "esc"))
    assert "closed a structure truncated at the token limit" in result.actions


def test_text_after_value_is_dropped():
    result = repair_json('Here you go: {"a": 1} Hope this helps! {"b": 2}')
    assert result.value == {"a": 1}


def test_every_prefix_of_a_real_object_repairs():
    document = json.dumps(
        {"subject": "霓虹街头的女孩", "appearance": {"hair": "silver bob", "outfit": ["jacket", "boots"]}, "quality": "8k, sharp"},
        ensure_ascii=False,
        indent=2,
    )
    failures = [cut for cut in range(1, len(document)) if not repair_json(document[:cut]).ok]
    assert failures == []


def test_no_json_at_all_fails_cleanly():
    result = repair_json("I cannot help with that.")
    assert not result.ok
