from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbp_mlx.dataset import prepare_dataset, split_groups
from nbp_mlx.errors import DataFormatError, DatasetError


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def write_records(path: Path, count: int, variants: int = 0, long_index: int | None = None) -> Path:
    lines = []
    for index in range(count):
        prompt = f"A portrait of person number {index} in soft light, 85mm lens."
        if index == long_index:
            prompt = "A very long prompt. " * 400
        record = {"id": f"p-{index:04d}", "prompt": prompt, "format": "text", "description": f"第{index}号人物肖像"}
        if variants:
            record["variants"] = [f"人物肖像之{index}-{v}" for v in range(variants)]
        lines.append(json.dumps(record, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_variants_stay_in_the_split_of_their_prompt(tmp_path, tokenizer):
    records = write_records(tmp_path / "records.jsonl", 40, variants=2)
    report = prepare_dataset(records, tmp_path / "out", tokenizer, max_seq_length=2048)
    train = read_rows(tmp_path / "out" / "train.jsonl")
    valid = read_rows(tmp_path / "out" / "valid.jsonl")
    assert report.pairs == 120
    assert report.valid_groups == 4
    assert len(valid) == 12
    train_groups = {row["group"] for row in train}
    valid_groups = {row["group"] for row in valid}
    assert not train_groups & valid_groups
    assert len(train_groups) == 36


def test_split_is_seeded_and_training_file_shuffled(tmp_path, tokenizer):
    records = write_records(tmp_path / "records.jsonl", 30)
    prepare_dataset(records, tmp_path / "a", tokenizer)
    prepare_dataset(records, tmp_path / "b", tokenizer)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()
    groups = [row["group"] for row in read_rows(tmp_path / "a" / "train.jsonl")]
    assert groups != sorted(groups)


def test_split_groups_seed_42_is_stable():
    train, valid = split_groups([f"g{index}" for index in range(20)])
    assert len(valid) == 2
    assert len(train) == 18
    assert split_groups([f"g{index}" for index in range(20)]) == (train, valid)


def test_too_long_samples_are_reported_and_excluded(tmp_path, tokenizer):
    records = write_records(tmp_path / "records.jsonl", 30, long_index=3)
    report = prepare_dataset(records, tmp_path / "out", tokenizer, max_seq_length=512)
    assert [item["group"] for item in report.excluded_too_long] == ["p-0003"]
    assert report.excluded_too_long[0]["tokens"] > 512
    all_groups = {row["group"] for name in ("train", "valid") for row in read_rows(tmp_path / "out" / f"{name}.jsonl")}
    assert "p-0003" not in all_groups
    assert report.pairs == 29


def test_valid_split_smaller_than_a_batch_is_an_error(tmp_path, tokenizer):
    records = write_records(tmp_path / "records.jsonl", 12)
    with pytest.raises(DatasetError) as error:
        prepare_dataset(records, tmp_path / "out", tokenizer, batch_size=4)
    message = str(error.value)
    assert "validation split has 1 pair(s), fewer than one batch of 4" in message
    assert "add prompts" in message
    assert "lower --batch-size (per_device_train_batch_size in the config)" in message


def test_failed_prepare_keeps_earlier_output(tmp_path, tokenizer):
    records = write_records(tmp_path / "records.jsonl", 30)
    prepare_dataset(records, tmp_path / "out", tokenizer)
    before = (tmp_path / "out" / "train.jsonl").read_bytes()
    small = write_records(tmp_path / "small.jsonl", 5)
    with pytest.raises(DatasetError):
        prepare_dataset(small, tmp_path / "out", tokenizer, batch_size=4)
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        (b"", None, "file is empty"),
        (b'{"id": "a", "prompt": "x", "format": "text", "description": "d"}\n\n{"id": "b"}\n', 2, "blank line"),
        (b'{"id": "a", "prompt": "x", "format": "text", "description": "d"}\n{"id": "b", "pro', 2, "the last line is cut off"),
        (b'{"id": "a", "text": "x"}\n', 1, "missing key(s) prompt, format"),
        (b'{"id": "a", "prompt": "\xff\xfe", "format": "text"}\n', 1, "invalid UTF-8 at byte offset 23"),
        (b'{"id": "a", "prompt": "x", "format": "yaml"}\n', 1, "'format' must be 'text' or 'json'"),
    ],
)
def test_bad_records_name_file_line_and_problem(tmp_path, tokenizer, content, line, fragment):
    path = tmp_path / "records.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataFormatError) as error:
        prepare_dataset(path, tmp_path / "out", tokenizer)
    assert error.value.path == path
    assert error.value.line == line
    assert fragment in str(error.value)
    assert str(path) in str(error.value)


def test_records_without_descriptions_are_an_error(tmp_path, tokenizer):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a", "prompt": "x", "format": "text"}\n')
    with pytest.raises(DatasetError, match="data describe"):
        prepare_dataset(path, tmp_path / "out", tokenizer)
