"""Import -> prepare -> train -> generate on the tiny model, through the library API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbp_mlx.config import config_from_dict
from nbp_mlx.data.importer import import_prompts, write_records
from nbp_mlx.dataset import prepare_dataset
from nbp_mlx.generate import GenerationSettings, GenerationStats, stream_generate
from nbp_mlx.models.loading import load_model
from nbp_mlx.prompts import build_messages
from nbp_mlx.train import StopFlag, TrainEvent, TrainingObserver, read_metrics, train

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_prompts.jsonl"


class Recorder(TrainingObserver):
    def __init__(self, stop_at: int | None = None, stop: StopFlag | None = None):
        self.events: list[TrainEvent] = []
        self.stop_at = stop_at
        self.stop = stop

    def on_event(self, event: TrainEvent) -> None:
        self.events.append(event)
        if self.stop is not None and event.kind == "iteration" and event.iteration >= self.stop_at:
            self.stop.set()

    def of(self, kind: str) -> list[TrainEvent]:
        return [event for event in self.events if event.kind == kind]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model_dir):
    from mlx_lm.utils import load_tokenizer

    work = tmp_path_factory.mktemp("pipeline")
    result = import_prompts(SAMPLE)
    write_records(work / "prompts.jsonl", result.records)
    tokenizer = load_tokenizer(tiny_model_dir)
    report = prepare_dataset(work / "prompts.jsonl", work / "dataset", tokenizer, max_seq_length=4096, batch_size=2)
    return work, report


def tiny_config(work: Path, model: Path, **overrides):
    values = {
        "model_name_or_path": str(model),
        "dataset_dir": str(work / "dataset"),
        "output_dir": str(work / "adapters"),
        "learning_rate": 0.01,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "warmup_ratio": 0.0,
        "lr_scheduler_type": "constant",
        "lora_dropout": 0.0,
        "max_steps": 12,
        "logging_steps": 3,
        "eval_steps": 6,
        "save_steps": 100,
        "max_seq_length": 4096,
    }
    values.update(overrides)
    return config_from_dict(values)


def test_prepare_groups_and_split(prepared):
    work, report = prepared
    assert report.prompts == 45
    assert report.train_pairs + report.valid_pairs == 45
    assert report.valid_groups == 4 or report.valid_groups == 5
    train_rows = [json.loads(line) for line in (work / "dataset" / "train.jsonl").read_text().splitlines()]
    valid_rows = [json.loads(line) for line in (work / "dataset" / "valid.jsonl").read_text().splitlines()]
    assert not {row["group"] for row in train_rows} & {row["group"] for row in valid_rows}
    first = train_rows[0]["messages"]
    assert [message["role"] for message in first] == ["system", "user", "assistant"]


def test_train_loss_falls_and_generate(prepared, tiny_model_dir):
    work, _report = prepared
    config = tiny_config(work, tiny_model_dir, run_name="falls")
    recorder = Recorder()
    result = train(config, observer=recorder)

    losses = [event.train_loss for event in recorder.of("train")]
    assert len(losses) == 4
    assert losses[-1] < losses[0]
    assert recorder.of("val")
    assert result.iterations_done == 12
    assert not result.stopped_early
    for name in ("adapters.safetensors", "adapter_config.json", "resolved_config.json", "metrics.jsonl", "trainer_state.json"):
        assert (result.run_dir / name).is_file(), name
    adapter_config = json.loads((result.run_dir / "adapter_config.json").read_text())
    assert adapter_config["lora_parameters"]["scale"] == 2.0
    assert adapter_config["num_layers"] == 2
    metrics = read_metrics(result.run_dir)
    assert {row["kind"] for row in metrics} == {"train", "val"}

    loaded = load_model(str(tiny_model_dir), adapter=result.run_dir)
    stats = GenerationStats()
    chunks = list(stream_generate(loaded, "霓虹街头的赛博朋克女孩", "text", GenerationSettings(max_tokens=24, seed=1), stats))
    assert stats.generated_tokens >= 1
    assert "".join(chunks) == stats.text
    assert "\ufffd" not in stats.text
    assert "<|im_end|>" not in stats.text


def test_stop_then_resume(prepared, tiny_model_dir):
    work, _report = prepared
    config = tiny_config(work, tiny_model_dir, run_name="resume", gradient_accumulation_steps=2, max_steps=4)
    stop = StopFlag()
    recorder = Recorder(stop_at=3, stop=stop)
    first = train(config, observer=recorder, stop=stop)
    # The stop lands on the next optimizer-update boundary (every 2 iterations).
    assert first.stopped_early
    assert first.iterations_done == 4
    state = json.loads((first.run_dir / "trainer_state.json").read_text())
    assert state["iteration"] == 4

    second_recorder = Recorder()
    second = train(config, run_dir=first.run_dir, resume=True, observer=second_recorder)
    assert second.iterations_done == 8
    iterations = [event.iteration for event in second_recorder.of("iteration")]
    assert iterations[0] == 5
    assert iterations[-1] == 8
    learning_rates = [row["learning_rate"] for row in read_metrics(second.run_dir) if row["kind"] == "train"]
    assert all(rate == pytest.approx(0.01) for rate in learning_rates)


def test_rendered_prompt_matches_training_template(tiny_model_dir):
    from nbp_mlx.generate import render_prompt_ids

    loaded = load_model(str(tiny_model_dir))
    ids = render_prompt_ids(loaded.tokenizer, "山间湖泊", "json")
    full = loaded.tokenizer.apply_chat_template(build_messages("山间湖泊", "json", "{}"))
    assert full[: len(ids)] == ids
