"""The offline backend on the tiny random model, and prepared data from augmented records."""

from __future__ import annotations

import asyncio
import json

from nbp_mlx.dataset import prepare_dataset
from nbp_mlx.datagen.engine import DatagenConfig, run_datagen
from test_datagen import make_config, make_records, read_rows, run, write_records, fake, api_env  # noqa: F401

ROW_KEYS = {"id", "task", "status", "reason", "input_tokens", "output_tokens", "model"}


def test_local_backend_writes_checkpoint_rows(tmp_path, tiny_model_dir):
    records = make_records(2)
    config = DatagenConfig(
        task="describe",
        input_path=write_records(tmp_path / "input.jsonl", records),
        output_path=tmp_path / "output.jsonl",
        backend="local",
        local_model=str(tiny_model_dir),
        concurrency=4,
    )
    result = asyncio.run(run_datagen(config))

    rows = read_rows(config.checkpoint_path)
    assert [row["id"] for row in rows] == [record["id"] for record in records]
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["model"] == f"local:{tiny_model_dir}"
        assert row["input_tokens"] > 0
        # Random weights give garbage, so rows fail validation after the corrective request.
        if row["status"] == "failed":
            assert row["reason"].startswith("invalid response after a corrective request")
        else:
            assert row["description"]
    assert result.stats.done + result.stats.failed == 2
    assert result.stats.cost == 0.0
    assert len(read_rows(config.output_path)) == 2


def test_augmented_variants_stay_in_their_prompts_split(tmp_path, fake, tiny_model_dir):
    from mlx_lm.utils import load_tokenizer

    records = make_records(12, described=True)
    config = make_config(tmp_path, fake, records, task="augment")
    run(config)

    report = prepare_dataset(config.output_path, tmp_path / "dataset", load_tokenizer(tiny_model_dir), batch_size=1)
    assert report.pairs == 36
    groups = {}
    for split in ("train", "valid"):
        lines = (tmp_path / "dataset" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        groups[split] = [json.loads(line)["group"] for line in lines]
    assert set(groups["train"]).isdisjoint(groups["valid"])
    assert len(set(groups["train"])) + len(set(groups["valid"])) == 12
    assert all(groups["train"].count(group) == 3 for group in groups["train"])
    assert all(groups["valid"].count(group) == 3 for group in groups["valid"])
