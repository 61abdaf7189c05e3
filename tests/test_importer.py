"""Tests for nbp_mlx.data.importer: input formats, normalization, ids, errors and output files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbp_mlx.data.importer import (
    ImportResult,
    fill_argument_slots,
    PromptRecord,
    import_prompts,
    normalize_prompt,
    prompt_id,
    read_records,
    summarize,
    write_records,
)
from nbp_mlx.errors import DataFormatError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "nbp_public_sample.jsonl"

JSON_PROMPT = {"subject": "a red fox", "style": {"lighting": "golden hour", "lens": "85mm"}}
CANONICAL_JSON_PROMPT = json.dumps(JSON_PROMPT, ensure_ascii=False, indent=2)
TEXT_PROMPT = "Cinematic photo of a lighthouse at dusk, long exposure, 35mm film grain."


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def write_jsonl(path: Path, objects: list) -> Path:
    return write(path, "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in objects))


def import_error(path: Path) -> DataFormatError:
    with pytest.raises(DataFormatError) as caught:
        import_prompts(path)
    return caught.value


def assert_error_at(error: DataFormatError, path: Path, line: int | None) -> None:
    assert error.path == path
    assert error.line == line
    where = f"{path}:{line}" if line is not None else str(path)
    assert str(error) == f"{where}: {error.reason}"


# --- input formats ----------------------------------------------------------


def test_jsonl_fields_and_meta(tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": TEXT_PROMPT, "description": "黄昏的灯塔", "title": "Lighthouse"},
        {"prompt": json.dumps(JSON_PROMPT), "description_zh": "金色时刻的红狐狸",
         "title_zh": "红狐狸", "prompt_format": "text", "id": 17, "author": "someone"},
        {"prompt": "A bowl of ramen, overhead shot."},
    ])

    result = import_prompts(path)

    assert isinstance(result, ImportResult)
    assert result.source == path
    first, second, third = result.records
    assert first == PromptRecord(
        id=prompt_id(TEXT_PROMPT), prompt=TEXT_PROMPT, format="text",
        description="黄昏的灯塔", source="prompts.jsonl:1", title="Lighthouse",
    )
    assert second.prompt == CANONICAL_JSON_PROMPT
    assert second.format == "json"
    assert second.description == "金色时刻的红狐狸"
    assert second.title == "红狐狸"
    assert second.source == "prompts.jsonl:2"
    assert second.meta == {"id": 17, "author": "someone"}
    assert third.description is None
    assert third.title is None
    assert third.meta == {}
    assert (result.json_count, result.text_count, result.with_description) == (1, 2, 2)
    assert result.duplicates == 0


def test_jsonl_description_alias_kept_in_meta(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": TEXT_PROMPT, "description": "中文描述", "description_zh": "另一个描述"},
        {"prompt": "Second prompt.", "description": "  ", "description_zh": "备用描述"},
    ])

    first, second = import_prompts(path).records

    assert first.description == "中文描述"
    assert first.meta == {"description_zh": "另一个描述"}
    assert second.description == "备用描述"
    assert second.meta == {"description": "  "}


def test_jsonl_prompt_as_object(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": JSON_PROMPT, "description": "红狐狸"},
        {"prompt": [{"shot": 1, "subject": "fox"}, {"shot": 2, "subject": "owl"}]},
    ])

    first, second = import_prompts(path).records

    assert first.format == "json"
    assert first.prompt == CANONICAL_JSON_PROMPT
    assert first.id == prompt_id(CANONICAL_JSON_PROMPT)
    assert second.format == "json"
    assert json.loads(second.prompt)[1] == {"shot": 2, "subject": "owl"}


def test_jsonl_bom_and_crlf_accepted(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [json.dumps({"prompt": TEXT_PROMPT}), json.dumps({"prompt": "Line one\r\nline two"})]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")

    first, second = import_prompts(path).records

    assert first.prompt == TEXT_PROMPT
    assert second.prompt == "Line one\nline two"


def test_jsonl_trailing_blank_lines_allowed(tmp_path):
    path = write(tmp_path / "p.jsonl", json.dumps({"prompt": TEXT_PROMPT}) + "\n\n  \n\n")

    assert len(import_prompts(path).records) == 1


def test_json_array_objects_and_strings(tmp_path):
    path = write(tmp_path / "prompts.json", (
        "[\n"
        f'  {json.dumps({"prompt": TEXT_PROMPT, "description": "灯塔"})},\n'
        '  "A bowl of ramen, overhead shot.",\n'
        "  {\n"
        f'    "prompt": {json.dumps(JSON_PROMPT)}\n'
        "  }\n"
        "]\n"
    ))

    result = import_prompts(path)

    assert [record.source for record in result.records] == [
        "prompts.json:2", "prompts.json:3", "prompts.json:4"
    ]
    assert result.records[0].description == "灯塔"
    assert result.records[1].prompt == "A bowl of ramen, overhead shot."
    assert result.records[1].description is None
    assert result.records[2].prompt == CANONICAL_JSON_PROMPT


def test_csv_quoted_multiline_cells(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_bytes(
        (
            "Prompt,Description,author\r\n"
            f'"{TEXT_PROMPT}",黄昏的灯塔,ann\r\n'
            '"First line,\r\nsecond line ""quoted""",,\r\n'
            "\r\n"
            f'"{json.dumps(JSON_PROMPT).replace(chr(34), chr(34) * 2)}",红狐狸,\r\n'
        ).encode("utf-8")
    )

    result = import_prompts(path)

    first, second, third = result.records
    assert first.prompt == TEXT_PROMPT
    assert first.description == "黄昏的灯塔"
    assert first.meta == {"author": "ann"}
    assert first.source == "prompts.csv:2"
    assert second.prompt == 'First line,\nsecond line "quoted"'
    assert second.description is None
    assert second.meta == {}
    assert second.source == "prompts.csv:3"
    assert third.format == "json"
    assert third.prompt == CANONICAL_JSON_PROMPT
    assert third.source == "prompts.csv:6"


def test_text_blocks_and_descriptions(tmp_path):
    path = write(tmp_path / "prompts.md", (
        "\n"
        f"描述：黄昏的灯塔\n{TEXT_PROMPT}\n"
        "\n\n"
        "description: a fox\n"
        "```json\n"
        '{"subject": "a red fox",\n'
        "\n"
        ' "style": {"lighting": "golden hour", "lens": "85mm"},}\n'
        "```\n"
        "\n"
        "描述:一碗拉面\n"
        "A bowl of ramen,\n"
        "overhead shot.\n"
        "\n"
        "Just a prompt with no description.\n"
    ))

    result = import_prompts(path)

    lighthouse, fox, ramen, plain = result.records
    assert lighthouse.description == "黄昏的灯塔"
    assert lighthouse.prompt == TEXT_PROMPT
    assert lighthouse.source == "prompts.md:2"
    assert fox.description == "a fox"
    assert fox.format == "json"
    assert fox.prompt == CANONICAL_JSON_PROMPT
    assert fox.source == "prompts.md:6"
    assert ramen.description == "一碗拉面"
    assert ramen.prompt == "A bowl of ramen,\noverhead shot."
    assert ramen.source == "prompts.md:13"
    assert plain.description is None
    assert plain.source == "prompts.md:17"


def test_ids_stable_across_formats_and_runs(tmp_path):
    prompts = [TEXT_PROMPT, json.dumps(JSON_PROMPT), "Second\nline kept."]
    jsonl = write_jsonl(tmp_path / "a.jsonl", [{"prompt": prompt} for prompt in prompts])
    json_array = write(tmp_path / "b.json", json.dumps(list(reversed(prompts))))
    csv_rows = "".join('"' + prompt.replace('"', '""') + '"\n' for prompt in prompts)
    csv_file = write(tmp_path / "c.csv", "prompt\n" + csv_rows)
    text_file = write(tmp_path / "d.txt", "\n\n".join(prompts) + "\n")
    jsonl_with_object = write_jsonl(tmp_path / "e.jsonl", [{"prompt": JSON_PROMPT}])

    expected = {
        prompt_id(TEXT_PROMPT), prompt_id(CANONICAL_JSON_PROMPT), prompt_id("Second\nline kept.")
    }
    for path in (jsonl, json_array, csv_file, text_file):
        assert {record.id for record in import_prompts(path).records} == expected, path
    assert [record.id for record in import_prompts(jsonl).records] == [
        record.id for record in import_prompts(jsonl).records
    ]
    assert import_prompts(jsonl_with_object).records[0].id == prompt_id(CANONICAL_JSON_PROMPT)
    assert prompt_id(TEXT_PROMPT).startswith("p-")
    assert len(prompt_id(TEXT_PROMPT)) == 14


# --- normalization and JSON detection ---------------------------------------


def test_fenced_json_block_detected():
    fenced = "```json\n" + json.dumps(JSON_PROMPT) + "\n```"

    assert normalize_prompt(fenced) == (CANONICAL_JSON_PROMPT, "json")
    assert normalize_prompt("  ```\n" + json.dumps(JSON_PROMPT) + "\n```\n") == (
        CANONICAL_JSON_PROMPT, "json"
    )


def test_fenced_text_unwrapped():
    expected = ("A foggy harbor at dawn.", "text")

    assert normalize_prompt("```\nA foggy harbor at dawn.\n```") == expected


def test_two_fenced_blocks_left_alone():
    text = "```\nfirst\n```\nbetween\n```\nsecond\n```"

    assert normalize_prompt(text) == (text, "text")


def test_trailing_commas_tolerated():
    text = '{\n  "subject": "fox",\n  "tags": ["warm", "soft",],\n}'

    prompt, prompt_format = normalize_prompt(text)

    assert prompt_format == "json"
    assert json.loads(prompt) == {"subject": "fox", "tags": ["warm", "soft"]}


def test_trailing_comma_inside_string_kept():
    text = '{"caption": "a, }", "quote": "say \\", ]", "list": [1, 2 , ] ,}'

    prompt, prompt_format = normalize_prompt(text)

    assert prompt_format == "json"
    assert json.loads(prompt) == {"caption": "a, }", "quote": 'say ", ]', "list": [1, 2]}


def test_nbsp_inside_json_prompt():
    text = '{\n\u00a0 "subject": "red\u00a0fox",\n\u202f\u2007"style": "film"\n}'

    prompt, prompt_format = normalize_prompt(text)

    assert prompt_format == "json"
    assert json.loads(prompt) == {"subject": "red fox", "style": "film"}


def test_nbsp_in_text_prompt_replaced():
    assert normalize_prompt("\u00a0A\u00a0quiet street\u202fat night\u2007") == (
        "A quiet street at night", "text"
    )


def test_json_formatting_variants_share_id():
    compact = json.dumps(JSON_PROMPT, separators=(",", ":"))
    spaced = json.dumps(JSON_PROMPT, indent=4)

    assert normalize_prompt(compact) == normalize_prompt(spaced)


@pytest.mark.parametrize("text", [
    "A neon sign that reads {OPEN} above a diner door, rainy night.",
    "{argument name=\"subject\" default=\"a cat\"} sitting on a windowsill",
    "[insert subject] standing in a wheat field, golden hour",
    '{\n  "size": "{argument name="size" default="1024"}"\n}',
    '"just a quoted sentence"',
    "[1, 2, 3]",
    '["a", "b"]',
    "{}",
    '{"style": "film", "style": "digital"}',
])
def test_braces_in_prose_stay_text(text):
    assert normalize_prompt(text) == (text, "text")


# --- duplicates ---------------------------------------------------------------


def test_duplicates_dropped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": TEXT_PROMPT},
        {"prompt": "Other prompt.", "description": "其他"},
        {"prompt": "  " + TEXT_PROMPT + "\u00a0\n", "description": "灯塔", "title": "Lighthouse"},
        {"prompt": "Other prompt.", "description": "重复"},
        {"prompt": "```json\n" + json.dumps(JSON_PROMPT) + "\n```"},
        {"prompt": JSON_PROMPT},
    ])

    result = import_prompts(path)

    assert result.duplicates == 3
    assert [record.source for record in result.records] == ["p.jsonl:1", "p.jsonl:2", "p.jsonl:5"]
    lighthouse, other, fox = result.records
    assert lighthouse.description == "灯塔"
    assert lighthouse.title == "Lighthouse"
    assert other.description == "其他"
    assert fox.format == "json"
    assert result.with_description == 2
    assert summarize(result) == {
        "source": str(path),
        "records": 3,
        "json": 1,
        "text": 2,
        "with_description": 2,
        "without_description": 1,
        "duplicates_dropped": 3,
        "skipped_truncated": 0,
        "descriptions_dropped": 0,
        "slots_filled": 0,
        "slots_left": 0,
    }


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "  \n\t\n", "\ufeff\n"])
def test_empty_file_rejected(tmp_path, content):
    path = write(tmp_path / "empty.jsonl", content)

    error = import_error(path)

    assert_error_at(error, path, None)
    assert error.reason == "file is empty; add at least one prompt"


def test_jsonl_blank_line_between_records(tmp_path):
    path = write(tmp_path / "p.jsonl", (
        json.dumps({"prompt": "one"}) + "\n"
        + json.dumps({"prompt": "two"}) + "\n"
        + "\n"
        + json.dumps({"prompt": "three"}) + "\n"
    ))

    error = import_error(path)

    assert_error_at(error, path, 3)
    assert "blank line between records; delete it" in error.reason


def test_jsonl_truncated_last_line(tmp_path):
    path = write(tmp_path / "p.jsonl", (
        json.dumps({"prompt": "one"}) + "\n" + '{"prompt": "a lighthouse at du'
    ))

    error = import_error(path)

    assert_error_at(error, path, 2)
    assert error.reason.startswith("the last line is cut off (incomplete JSON")
    assert "complete or delete this line" in error.reason


def test_jsonl_invalid_line_with_column(tmp_path):
    path = write(tmp_path / "p.jsonl", (
        json.dumps({"prompt": "one"}) + "\n"
        + "{'prompt': 'single quotes'}\n"
        + json.dumps({"prompt": "three"}) + "\n"
    ))

    error = import_error(path)

    assert_error_at(error, path, 2)
    assert error.reason.startswith("invalid JSON at column 2: Expecting property name")
    assert "every line must be one complete JSON object" in error.reason


def test_jsonl_invalid_last_line_with_newline(tmp_path):
    path = write(tmp_path / "p.jsonl", json.dumps({"prompt": "one"}) + '\n{"prompt": "two"\n')

    error = import_error(path)

    assert_error_at(error, path, 2)
    assert error.reason.startswith("invalid JSON at column 17")


def test_jsonl_pretty_printed_array_hint(tmp_path):
    path = write(tmp_path / "p.jsonl", '[\n  {"prompt": "one"}\n]\n')

    error = import_error(path)

    assert_error_at(error, path, 1)
    assert "rename it to .json" in error.reason


def test_jsonl_missing_prompt_key(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "one"},
        {"text": "a fox", "desc": "狐狸"},
    ])

    error = import_error(path)

    assert_error_at(error, path, 2)
    assert 'no "prompt" key; found keys: "text", "desc".' in error.reason
    assert '"description" (or "description_zh")' in error.reason


def test_jsonl_line_not_object(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ["just a string"])

    error = import_error(path)

    assert_error_at(error, path, 1)
    assert error.reason == 'expected a JSON object with a "prompt" key, found a string'


@pytest.mark.parametrize("prompt, found", [
    ("", None),
    ("  \u00a0\n", None),
    ("```\n```", None),
    ({}, None),
    (42, "a number"),
    (None, "null"),
    (True, "a boolean"),
    (["a", "b"], "an array"),
])
def test_jsonl_bad_prompt_value(tmp_path, prompt, found):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "fine"}, {"prompt": prompt}])

    error = import_error(path)

    assert_error_at(error, path, 2)
    if found is None:
        assert error.reason == "the prompt is empty; write the prompt text or delete the entry"
    else:
        assert error.reason.startswith(
            f'"prompt" must be a string or a JSON object, found {found}'
        )


def test_jsonl_description_not_string(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "fine", "description": ["a"]}])

    error = import_error(path)

    assert_error_at(error, path, 1)
    assert error.reason == '"description" must be a string or null, found an array'


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "p.jsonl"
    first = (json.dumps({"prompt": "one"}) + "\n").encode("utf-8")
    path.write_bytes(first + '{"prompt": "灯塔"}\n'.encode("gbk"))

    error = import_error(path)

    assert_error_at(error, path, 2)
    bad_offset = len(first) + len('{"prompt": "')
    assert f"at byte offset {bad_offset}" in error.reason
    assert error.reason.startswith("invalid UTF-8 byte 0xB5")
    assert "re-save it as UTF-8" in error.reason


def test_non_utf8_offset_counts_bom(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"\xef\xbb\xbfok\n\xff")

    error = import_error(path)

    assert_error_at(error, path, 2)
    assert "at byte offset 6" in error.reason


def test_csv_without_prompt_column(tmp_path):
    path = write(tmp_path / "p.csv", "text,description\na fox,狐狸\n")

    error = import_error(path)

    assert_error_at(error, path, 1)
    assert "no 'prompt' column; the header row has 'text', 'description'." in error.reason
    assert "Name the prompt column 'prompt'" in error.reason


def test_csv_unclosed_quote(tmp_path):
    path = write(tmp_path / "p.csv", 'prompt\nfine\n"unclosed,\nnext row\n')

    error = import_error(path)

    assert_error_at(error, path, 3)
    assert "closing quote" in error.reason


def test_csv_too_many_cells(tmp_path):
    path = write(tmp_path / "p.csv", "prompt,description\na fox, red, 狐狸\n")

    error = import_error(path)

    assert_error_at(error, path, 2)
    assert error.reason.startswith("row has 3 cells but the header has 2 columns")


def test_csv_empty_prompt_cell(tmp_path):
    path = write(tmp_path / "p.csv", "prompt,description\n,狐狸\n")

    error = import_error(path)

    assert_error_at(error, path, 2)
    assert error.reason.startswith("the prompt is empty")


def test_json_file_not_array(tmp_path):
    path = write(tmp_path / "p.json", json.dumps({"prompt": "one"}))

    error = import_error(path)

    assert_error_at(error, path, 1)
    assert error.reason.startswith(
        "expected a JSON array of objects or prompt strings, found an object"
    )


def test_json_file_with_jsonl_content(tmp_path):
    path = write(tmp_path / "p.json", '{"prompt": "one"}\n{"prompt": "two"}\n')

    error = import_error(path)

    assert_error_at(error, path, 1)
    assert "use the .jsonl extension for one object per line" in error.reason


def test_json_file_text_after_array(tmp_path):
    path = write(tmp_path / "p.json", '["one"]\n["two"]\n')

    error = import_error(path)

    assert_error_at(error, path, 2)
    assert error.reason.startswith("unexpected text after the JSON array")


def test_json_array_invalid_element(tmp_path):
    path = write(tmp_path / "p.json", '[\n  "fine",\n  {"prompt": oops}\n]\n')

    error = import_error(path)

    assert_error_at(error, path, 3)
    assert error.reason == "invalid JSON at column 14: Expecting value"


def test_json_array_empty(tmp_path):
    path = write(tmp_path / "p.json", "[ ]\n")

    error = import_error(path)

    assert_error_at(error, path, None)
    assert error.reason == "no prompts found; add at least one prompt"


def test_text_description_without_prompt(tmp_path):
    path = write(tmp_path / "p.txt", "A fox.\n\n描述：只有描述\n\nAn owl.\n")

    error = import_error(path)

    assert_error_at(error, path, 3)
    assert error.reason.startswith("the block has a description but no prompt")


def test_text_unclosed_fence(tmp_path):
    path = write(tmp_path / "p.md", "A fox.\n\n```json\n{\"a\": 1}\n\nmore\n")

    error = import_error(path)

    assert_error_at(error, path, 3)
    assert "add a closing ``` line" in error.reason


def test_unknown_extension(tmp_path):
    path = write(tmp_path / "prompts.xlsx", "prompt\n")

    error = import_error(path)

    assert_error_at(error, path, None)
    assert error.reason == (
        "unsupported file type '.xlsx'; use one of: .csv, .json, .jsonl, .md, .txt"
    )


def test_missing_file(tmp_path):
    path = tmp_path / "absent.jsonl"

    error = import_error(path)

    assert_error_at(error, path, None)
    assert error.reason == "file not found; check the path"


# --- output files ------------------------------------------------------------------


def test_write_read_round_trip(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [
        {"prompt": JSON_PROMPT, "description": "红狐狸", "title": "狐狸", "author": "ann"},
        {"prompt": "Line one\nline two \u2028 with a line separator."},
    ])
    records = import_prompts(source).records
    output = tmp_path / "out" / "records.jsonl"

    write_records(output, records)

    assert read_records(output) == records
    lines = output.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 3
    assert lines[-1] == ""
    assert json.loads(lines[1]) == {
        "id": records[1].id,
        "prompt": "Line one\nline two \u2028 with a line separator.",
        "format": "text",
        "description": None,
        "source": "in.jsonl:2",
    }
    assert list(output.parent.iterdir()) == [output]


def test_write_records_empty_list(tmp_path):
    output = tmp_path / "records.jsonl"

    write_records(output, [])

    assert output.read_bytes() == b""
    assert read_records(output) == []


def test_failed_write_keeps_old_file(tmp_path):
    output = tmp_path / "records.jsonl"
    good = PromptRecord(
        id=prompt_id("a"), prompt="a", format="text", description=None, source="x:1"
    )
    write_records(output, [good])
    before = output.read_bytes()
    bad = PromptRecord(
        id=prompt_id("b"), prompt="b", format="text", description=None, source="x:2",
        meta={"unserializable": object()},
    )

    with pytest.raises(TypeError):
        write_records(output, [good, good, bad])

    assert output.read_bytes() == before
    assert list(tmp_path.iterdir()) == [output]


@pytest.mark.parametrize("record, message", [
    ({"id": "p-1", "prompt": "a", "format": "text", "source": "x:1"},
     "not a prompt record: missing keys description, unknown keys -."),
    ({"id": "p-1", "prompt": "a", "format": "text", "description": None, "source": "x:1",
      "extra": 1}, "not a prompt record: missing keys -, unknown keys extra."),
    ({"id": "p-1", "prompt": "a", "format": "yaml", "description": None, "source": "x:1"},
     '"format" must be "json" or "text", found "yaml"'),
    ({"id": "", "prompt": "a", "format": "text", "description": None, "source": "x:1"},
     '"id" must be a non-empty string, found an empty string'),
    ({"id": "p-1", "prompt": "a", "format": "text", "description": 3, "source": "x:1"},
     '"description" must be a string or null, found a number'),
    ({"id": "p-1", "prompt": "a", "format": "text", "description": None, "source": "x:1",
      "meta": []}, '"meta" must be a JSON object, found an array'),
    (["not", "a", "record"], "expected a prompt record (a JSON object), found an array"),
])
def test_read_records_rejects_invalid(tmp_path, record, message):
    valid = {"id": "p-0", "prompt": "ok", "format": "text", "description": None, "source": "x:1"}
    path = write_jsonl(tmp_path / "records.jsonl", [valid, record])

    with pytest.raises(DataFormatError) as caught:
        read_records(path)

    assert_error_at(caught.value, path, 2)
    assert caught.value.reason.startswith(message)


def test_read_records_truncated_file(tmp_path):
    valid = {"id": "p-0", "prompt": "ok", "format": "text", "description": None, "source": "x:1"}
    path = write(tmp_path / "records.jsonl", json.dumps(valid) + '\n{"id": "p-1", "pro')

    with pytest.raises(DataFormatError) as caught:
        read_records(path)

    assert_error_at(caught.value, path, 2)
    assert caught.value.reason.startswith("the last line is cut off")


# --- real data ------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_SAMPLE.exists(), reason="../shared/data/nbp_public_sample.jsonl is not present")
def test_shared_sample_imports():
    result = import_prompts(SHARED_SAMPLE)
    rows = [json.loads(line) for line in SHARED_SAMPLE.read_text(encoding="utf-8").splitlines()]
    truncated = sum(row["likely_truncated"] for row in rows)
    not_chinese = sum(not row["description_zh_is_chinese"] and not row["likely_truncated"] for row in rows)

    assert len(result.records) + result.duplicates + result.skipped_truncated == len(rows)
    assert result.skipped_truncated == truncated
    assert result.descriptions_dropped == not_chinese
    assert result.with_description >= len(result.records) - not_chinese
    assert all(record.description is not None or "dropped_description" in record.meta for record in result.records)
    assert result.json_count > 0
    assert result.text_count > 0
    for record in result.records:
        if record.format == "json":
            assert json.loads(record.prompt)


@pytest.mark.skipif(not SHARED_SAMPLE.exists(), reason="../shared/data/nbp_public_sample.jsonl is not present")
def test_shared_sample_keep_flagged_imports_every_entry():
    result = import_prompts(SHARED_SAMPLE, keep_flagged=True)
    lines = SHARED_SAMPLE.read_text(encoding="utf-8").splitlines()

    assert len(result.records) + result.duplicates == len(lines)
    assert result.skipped_truncated == 0
    assert result.descriptions_dropped == 0
    assert result.with_description == len(result.records)


def gallery_row(prompt, **flags) -> dict:
    row = {"prompt": prompt, "description_zh": "雨夜街头的女孩", "title_zh": "雨夜", "likely_truncated": False, "description_zh_is_chinese": True}
    row.update(flags)
    return row


def test_gallery_flags_skip_truncated_and_drop_foreign_descriptions(tmp_path):
    path = write_jsonl(
        tmp_path / "gallery.jsonl",
        [
            gallery_row("A girl on a rainy street at night, neon reflections."),
            gallery_row("A lighthouse at dusk, long exposure, and then the", likely_truncated=True),
            gallery_row("A red fox in snow, telephoto lens.", description_zh="A fox in the snow", description_zh_is_chinese=False),
        ],
    )

    result = import_prompts(path)

    assert [record.prompt for record in result.records] == [
        "A girl on a rainy street at night, neon reflections.",
        "A red fox in snow, telephoto lens.",
    ]
    assert result.skipped_truncated == 1
    assert result.descriptions_dropped == 1
    assert result.records[1].description is None
    assert result.records[1].meta["dropped_description"] == "A fox in the snow"
    assert summarize(result)["skipped_truncated"] == 1


def test_gallery_flags_kept_on_request(tmp_path):
    path = write_jsonl(tmp_path / "gallery.jsonl", [gallery_row("A lighthouse at dusk, and then the", likely_truncated=True)])

    result = import_prompts(path, keep_flagged=True)

    assert len(result.records) == 1
    assert result.skipped_truncated == 0


def test_every_entry_truncated_names_the_option(tmp_path):
    path = write_jsonl(tmp_path / "gallery.jsonl", [gallery_row("A lighthouse at dusk, and", likely_truncated=True)])

    error = import_error(path)

    assert "--keep-flagged" in str(error)
    assert str(path) in str(error)


def test_argument_slots_take_their_defaults(tmp_path):
    text = 'Portrait of {argument name="subject" default="an old fisherman"} in {argument name="place"}, 85mm.'
    json_text = '{"subject": "{argument name=\\"who\\" default=\\"a young dancer\\"}", "lighting": "rim light"}'
    path = write_jsonl(tmp_path / "slots.jsonl", [{"prompt": text}, {"prompt": json_text}])

    result = import_prompts(path)

    assert result.records[0].prompt == "Portrait of an old fisherman in place, 85mm."
    assert result.records[1].format == "json"
    assert json.loads(result.records[1].prompt) == {"subject": "a young dancer", "lighting": "rim light"}
    assert result.slots_filled == 2
    assert result.slots_left == 0


def test_argument_slots_in_descriptions_and_quoted_defaults(tmp_path):
    rows = [
        {"prompt": 'A {argument name="animal" default="lion"} on a rock.', "description": '一头 {argument name="animal" default="狮子"} 站在岩石上'},
        {"prompt": 'Portrait of {argument name="who" default="the "hero" of the photo"}.', "description": "照片里的人"},
    ]
    path = write_jsonl(tmp_path / "slots.jsonl", rows)

    result = import_prompts(path)

    assert result.records[0].description == "一头 狮子 站在岩石上"
    assert result.records[0].prompt == "A lion on a rock."
    assert result.slots_left == 1
    assert "{argument name=" in result.records[1].prompt


def test_prompt_without_slots_is_unchanged():
    assert fill_argument_slots("a {curly} brace and {argument}") == ("a {curly} brace and {argument}", 0)
