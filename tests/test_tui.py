"""Pilot tests of the terminal app on the tiny model, the fake Anthropic server and a fake backend."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from pathlib import Path

import pytest

from fake_anthropic import FakeAnthropic
from nbp_mlx.data.importer import import_prompts, write_records
from nbp_mlx.dataset import prepare_dataset
from tui.app import NbpApp
from tui.settings import TuiSettings, read_history

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_prompts.jsonl"
SIZE = (100, 32)
# Seconds from a key press to its effect while a chunk streams in every millisecond.
# NOTE: measured on a 2-core x86 VM shared with other jobs. Typing alone takes about 0.07 s,
# and the median while streaming stays near 0.13 s. Single presses spiked to 1.0 s, so the
# bound on the slowest press is loose.
KEY_LATENCY_MEDIAN_LIMIT = 0.3
KEY_LATENCY_MAX_LIMIT = 1.5


@pytest.fixture
def tui_home(monkeypatch, tmp_path):
    """Settings, history and saved outputs of the app go to a fresh folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("NBP_MLX_HOME", str(home))
    return home


def make_app(model: str = "bundled") -> NbpApp:
    return NbpApp(TuiSettings(model=model), save_settings=False)


async def wait_for(pilot, condition, timeout: float = 30.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(step)


def run(coroutine):
    return asyncio.run(coroutine)


class FakeBackend:
    """Yields one chunk per millisecond until ``should_stop`` returns True or ``chunks`` run out."""

    name = "fake"

    def __init__(self, chunks: list[str] | None = None, delay: float = 0.001):
        self.chunks = chunks
        self.delay = delay
        self.stopped = threading.Event()

    def describe(self) -> str:
        return "fake backend"

    def stream(self, description, prompt_format, settings, stats, should_stop=None):
        count = 0
        while self.chunks is None or count < len(self.chunks):
            if should_stop is not None and should_stop():
                stats.finish_reason = "cancelled"
                self.stopped.set()
                return
            chunk = self.chunks[count] if self.chunks is not None else "neon "
            stats.generated_tokens += 1
            stats.text += chunk
            count += 1
            yield chunk
            time.sleep(self.delay)
        stats.finish_reason = "stop"


def use_backend(app: NbpApp, backend: FakeBackend) -> None:
    app.query_one("#generate-screen")._load_backend = lambda request: backend


# ---------------------------------------------------------------------------
# App


def test_f9_switches_language(tui_home):
    async def scenario():
        app = NbpApp(TuiSettings(), save_settings=True)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f9")
            await pilot.pause(0.2)
            return str(app.query_one("#tabs").get_tab("generate").label), app.sub_title

    label, sub_title = run(scenario())
    assert label == "F1 生成"
    assert sub_title.startswith("模型")
    assert TuiSettings.load(tui_home / "tui" / "settings.json").language == "zh"


def test_lang_option_parsed():
    from tui.app import parse_args

    assert parse_args(["--lang", "zh"]).lang == "zh"
    assert parse_args([]).lang is None


# ---------------------------------------------------------------------------
# Generate


def test_generate_streams_tiny_model(tui_home, tiny_model_dir):
    async def scenario():
        app = make_app(str(tiny_model_dir))
        async with app.run_test(size=SIZE) as pilot:
            screen = app.query_one("#generate-screen")
            screen.max_tokens, screen.seed = 24, 1
            await pilot.click("#description")
            await pilot.press(*"霓虹街头的赛博朋克女孩")
            await pilot.press("enter")
            await wait_for(pilot, lambda: not screen._generating and screen.last_text)
            await pilot.pause(0.1)
            output = screen.last_text
            stats = str(app.query_one("#generation-stats").render())
            return output, screen.last_text, stats, app.sub_title

    output, text, stats, sub_title = run(scenario())
    assert text
    assert output == text
    assert "tokens/s" in stats
    assert "time to first token" in stats
    assert str(tiny_model_dir) in sub_title
    history = read_history(tui_home / "tui" / "history.jsonl")
    assert history[-1]["description"] == "霓虹街头的赛博朋克女孩"
    assert history[-1]["text"] == text


def test_generate_escape_cancels(tui_home):
    backend = FakeBackend()

    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            use_backend(app, backend)
            screen = app.query_one("#generate-screen")
            app.query_one("#description").value = "霓虹街头的赛博朋克女孩"
            screen.start_generation()
            await wait_for(pilot, lambda: len(screen.last_text) > 20)
            await pilot.press("escape")
            text_at_cancel = screen.last_text
            status = str(app.query_one("#generation-stats").render())
            await wait_for(pilot, lambda: not screen._generating, timeout=5)
            await pilot.pause(0.2)
            return text_at_cancel, status, screen.last_text, str(app.query_one("#generation-stats").render())

    text_at_cancel, status, final_text, final_status = run(scenario())
    assert "cancelled" in status
    assert backend.stopped.is_set()
    assert final_text == text_at_cancel
    assert "(cancelled)" in final_status


def test_generate_json_is_repaired_and_pretty(tui_home):
    backend = FakeBackend(['{"subject": "赛博朋克女孩", ', '"lighting": "neon"'])

    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            use_backend(app, backend)
            screen = app.query_one("#generate-screen")
            app.query_one("#format").focus()
            await pilot.press("enter", "down", "enter")
            app.query_one("#description").value = "霓虹街头的赛博朋克女孩"
            screen.start_generation()
            await wait_for(pilot, lambda: not screen._generating)
            await pilot.pause(0.1)
            return app.query_one("#format").value, screen.last_text, str(app.query_one("#json-status").render())

    prompt_format, output, status = run(scenario())
    assert prompt_format == "json"
    assert json.loads(output) == {"subject": "赛博朋克女孩", "lighting": "neon"}
    assert output.startswith('{\n  "subject"')
    assert "parses after repair" in status


def test_generate_keys_stay_responsive(tui_home):
    """While a chunk arrives every millisecond, typed keys reach the Input within the latency limits."""
    backend = FakeBackend()

    async def scenario():
        app = make_app()
        latencies = []
        async with app.run_test(size=SIZE) as pilot:
            use_backend(app, backend)
            screen = app.query_one("#generate-screen")
            description = app.query_one("#description")
            description.value = "霓虹街头的赛博朋克女孩"
            screen.start_generation()
            await wait_for(pilot, lambda: len(screen.last_text) > 50)
            description.value = ""
            description.focus()
            await pilot.pause()
            for count in range(1, 11):
                started = time.perf_counter()
                await pilot.press("a")
                while len(description.value) < count and time.perf_counter() - started < 5:
                    await asyncio.sleep(0.001)
                latencies.append(time.perf_counter() - started)
            still_streaming = screen._generating
            streamed = len(screen.last_text)
            screen.cancel_task()
            await wait_for(pilot, lambda: not screen._generating, timeout=5)
        return latencies, still_streaming, streamed

    latencies, still_streaming, streamed = run(scenario())
    assert still_streaming
    assert streamed > 100
    rounded = [round(value, 3) for value in latencies]
    assert statistics.median(latencies) < KEY_LATENCY_MEDIAN_LIMIT, rounded
    assert max(latencies) < KEY_LATENCY_MAX_LIMIT, rounded


def test_copy_saves_output_file(tui_home):
    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            screen = app.query_one("#generate-screen")
            screen.last_text = "A neon street at night"
            await pilot.press("f6")
            await pilot.pause(0.1)

    run(scenario())
    saved = list((tui_home / "tui" / "outputs").glob("prompt-*.txt"))
    assert len(saved) == 1
    assert saved[0].read_text(encoding="utf-8") == "A neon street at night\n"


def test_history_reopens_and_reruns(tui_home):
    backend = FakeBackend(["A neon street, ", "rain at night"])

    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            use_backend(app, backend)
            screen = app.query_one("#generate-screen")
            app.query_one("#description").value = "雨夜的霓虹街道"
            screen.start_generation()
            await wait_for(pilot, lambda: not screen._generating)
            app.query_one("#description").value = ""
            history = app.query_one("#history")
            history.focus()
            await pilot.press("down", "enter")
            reopened = (app.query_one("#description").value, screen.last_text)
            await pilot.click("#rerun")
            await wait_for(pilot, lambda: history.option_count == 2)
            return reopened, history.option_count

    (description, text), count = run(scenario())
    assert description == "雨夜的霓虹街道"
    assert text == "A neon street, rain at night"
    assert count == 2
    assert len(read_history(tui_home / "tui" / "history.jsonl")) == 2


# ---------------------------------------------------------------------------
# Data


@pytest.fixture
def fake_api(monkeypatch, tmp_path):
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789-secret")
    server = FakeAnthropic(latency=0.01).start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    yield server
    server.stop()


def test_data_import_describe_prepare(tui_home, fake_api, tmp_path, tiny_model_dir):
    source = tmp_path / "prompts.txt"
    source.write_text(
        "\n\n".join(f"A photo of subject number {index}, soft light, 35mm lens" for index in range(20)) + "\n"
        "\nA photo of subject number 0, soft light, 35mm lens\n",
        encoding="utf-8",
    )

    async def scenario():
        app = make_app(str(tiny_model_dir))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f2")
            screen = app.query_one("#data-screen")
            app.query_one("#import-input").value = str(source)
            app.query_one("#records-path").value = str(tmp_path / "records.jsonl")
            app.query_one("#datagen-output").value = str(tmp_path / "described.jsonl")
            app.query_one("#dataset-dir").value = str(tmp_path / "dataset")
            screen.start_import()
            await wait_for(pilot, lambda: screen._busy is None)
            summary = str(app.query_one("#import-summary").render())
            screen.start_datagen()
            await wait_for(pilot, lambda: screen._busy is None)
            stats = str(app.query_one("#datagen-stats").render())
            pairs = app.query_one("#pairs").row_count
            progress = app.query_one("#datagen-progress").percentage
            screen.start_prepare()
            await wait_for(pilot, lambda: screen._busy is None)
            return summary, stats, pairs, progress, str(app.query_one("#prepare-summary").render())

    summary, stats, pairs, progress, prepared = run(scenario())
    assert "Imported 20 prompts" in summary
    assert "dropped 1 duplicates" in summary
    assert "20 done, 0 failed" in stats
    assert "req/min" in stats
    assert pairs == 5
    assert progress == 1.0
    assert "20 pairs from 20 prompts" in prepared
    assert len(fake_api.message_requests()) == 20


def test_data_describe_pause_and_resume(tui_home, fake_api, tmp_path):
    fake_api.latency = 0.2
    records = tmp_path / "records.jsonl"
    write_records(records, import_prompts(SAMPLE).records[:20])
    # The sample prompts come with descriptions, and describe only works on prompts without one.
    rows = [{**json.loads(line), "description": None} for line in records.read_text(encoding="utf-8").splitlines()]
    records.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")

    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f2")
            screen = app.query_one("#data-screen")
            app.query_one("#records-path").value = str(records)
            app.query_one("#datagen-output").value = str(tmp_path / "described.jsonl")
            screen.start_datagen()
            await wait_for(pilot, lambda: "finished" in str(app.query_one("#datagen-stats").render()))
            await pilot.press("escape")
            await wait_for(pilot, lambda: screen._busy is None)
            paused = str(app.query_one("#datagen-stats").render())
            screen.start_datagen()
            await wait_for(pilot, lambda: screen._busy is None)
            return paused, str(app.query_one("#datagen-stats").render())

    paused, resumed = run(scenario())
    assert paused.startswith("paused")
    assert "0 failed" in resumed
    assert "already done" in resumed
    described = [json.loads(line) for line in (tmp_path / "described.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(described) == 20
    assert all(row["description"] for row in described)


def test_data_describe_without_key_notifies(tui_home, monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"id": "p-1", "prompt": "A cat on a roof", "format": "text", "description": None, "source": "x:1"}) + "\n",
                       encoding="utf-8")

    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            screen = app.query_one("#data-screen")
            app.query_one("#records-path").value = str(records)
            app.query_one("#datagen-output").value = str(tmp_path / "described.jsonl")
            screen.start_datagen()
            await wait_for(pilot, lambda: screen._busy is None)
            return [(notification.severity, notification.message) for notification in app._notifications]

    notifications = run(scenario())
    assert [severity for severity, _message in notifications] == ["error"]
    assert "ANTHROPIC_API_KEY" in notifications[0][1]


def test_data_import_error_is_notified(tui_home, tmp_path):
    source = tmp_path / "broken.jsonl"
    source.write_text('{"prompt": "A cat"}\n{"prompt": \n', encoding="utf-8")

    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f2")
            screen = app.query_one("#data-screen")
            app.query_one("#import-input").value = str(source)
            app.query_one("#records-path").value = str(tmp_path / "records.jsonl")
            screen.start_import()
            await wait_for(pilot, lambda: screen._busy is None)
            return [notification.message for notification in app._notifications]

    messages = run(scenario())
    assert any(f"{source}:2" in message for message in messages), messages


# ---------------------------------------------------------------------------
# Train


@pytest.fixture
def tiny_train_config(tmp_path, tiny_model_dir) -> Path:
    from mlx_lm.utils import load_tokenizer

    result = import_prompts(SAMPLE)
    write_records(tmp_path / "prompts.jsonl", result.records)
    prepare_dataset(tmp_path / "prompts.jsonl", tmp_path / "dataset", load_tokenizer(tiny_model_dir), max_seq_length=4096, batch_size=2)
    config = {
        "model_name_or_path": str(tiny_model_dir), "dataset_dir": str(tmp_path / "dataset"), "output_dir": str(tmp_path / "adapters"),
        "run_name": "tui", "learning_rate": 0.01, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
        "warmup_ratio": 0.0, "lr_scheduler_type": "constant", "lora_dropout": 0.0, "max_steps": 2, "logging_steps": 1,
        "eval_steps": 2, "save_steps": 100, "max_seq_length": 4096, "val_batches": 1,
    }
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is valid YAML
    return path


def test_train_plots_loss_and_resumes(tui_home, tiny_train_config):
    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f3")
            screen = app.query_one("#train-screen")
            app.query_one("#train-config").value = str(tiny_train_config)
            screen.load_config()
            await wait_for(pilot, lambda: screen.config is not None)
            plan_rows = app.query_one("#plan-table").row_count
            screen.start_training()
            await wait_for(pilot, lambda: not screen.running, timeout=60)
            first = (list(screen.train_losses), list(screen.val_losses), app.query_one("#train-loss").data, app.query_one("#runs").row_count)
            status = str(app.query_one("#train-stats").render())
            screen.config.max_steps = 3
            screen.resume_training()
            await wait_for(pilot, lambda: not screen.running, timeout=60)
            return plan_rows, first, status, list(screen.train_losses), str(app.query_one("#train-stats").render())

    plan_rows, (train_losses, val_losses, plotted, runs), status, resumed_losses, resumed_status = run(scenario())
    assert plan_rows == 13
    assert len(train_losses) == 2
    assert plotted == train_losses
    assert val_losses
    assert runs == 1
    assert "Training finished" in status
    assert len(resumed_losses) == 1
    assert "Training finished" in resumed_status


def test_train_stop_saves_adapter(tui_home, tiny_train_config):
    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f3")
            screen = app.query_one("#train-screen")
            app.query_one("#train-config").value = str(tiny_train_config)
            app.query_one("#max-steps").value = "400"
            screen.load_config()
            await wait_for(pilot, lambda: screen.config is not None)
            screen.start_training()
            await wait_for(pilot, lambda: app.query_one("#train-progress").progress >= 1, timeout=60)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not screen.running, timeout=60)
            return str(app.query_one("#train-stats").render())

    status = run(scenario())
    assert status.startswith("Stopped at iteration")
    assert "of 400" in status
    assert (tiny_train_config.parent / "adapters" / "tui" / "adapters.safetensors").is_file()


# ---------------------------------------------------------------------------
# Export


def test_export_fuse_and_gguf(tui_home, tmp_path):
    from test_export import build_scaled_tiny_model, make_random_adapter

    base = build_scaled_tiny_model(tmp_path / "base")
    adapter = make_random_adapter(base, tmp_path / "adapters" / "run-1")

    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            screen = app.query_one("#export-screen")
            app.query_one("#export-adapter").value = str(adapter)
            app.query_one("#fused-dir").value = str(tmp_path / "fused")
            app.query_one("#gguf-type").value = "f32"
            await pilot.click("#fuse")
            await wait_for(pilot, lambda: screen._busy is None, timeout=60)
            await pilot.click("#gguf")
            await wait_for(pilot, lambda: screen._busy is None, timeout=60)
            table = app.query_one("#export-results")
            return [table.get_row_at(index) for index in range(table.row_count)]

    rows = run(scenario())
    assert [row[0] for row in rows] == ["fuse", "GGUF"]
    assert all(row[1] == "pass" for row in rows)
    assert (tmp_path / "fused" / "model.safetensors").is_file()
    assert (tmp_path / "fused-f32.gguf").is_file()
