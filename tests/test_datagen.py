"""Data generation against the fake Anthropic server, through the real SDK."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fake_anthropic import FakeAnthropic, Fault
from nbp_mlx.datagen.engine import (
    Checkpoint,
    DatagenConfig,
    DatagenError,
    MissingApiKeyError,
    backoff_delay,
    estimate_run,
    parse_retry_after,
    run_datagen,
)
from nbp_mlx.datagen.pricing import Usage, cost_usd, format_cost
from nbp_mlx.datagen.tasks import AUGMENT_EXAMPLES, DESCRIBE_EXAMPLES, InvalidAnswer, check_description, parse_variants
from nbp_mlx.progress import RecordingProgress

API_KEY = "sk-ant-test-0123456789-secret"


def make_records(count: int, described: bool = False) -> list[dict]:
    return [
        {
            "id": f"p-{index:012x}",
            "prompt": f"A photo of subject number {index}, soft light, 35mm lens",
            "format": "text",
            "description": f"第{index}号主题的柔光照片" if described else None,
            "source": f"prompts.txt:{index + 1}",
        }
        for index in range(count)
    ]


def write_records(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def api_env(monkeypatch, tmp_path):
    """An API key in the environment and no other Anthropic settings."""
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_PROFILE", "ANTHROPIC_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)


@pytest.fixture
def fake(api_env):
    server = FakeAnthropic(latency=0.01).start()
    yield server
    server.stop()


def make_config(tmp_path: Path, fake: FakeAnthropic, records: list[dict], task: str = "describe", **overrides) -> DatagenConfig:
    fake.register(records)
    settings = dict(
        task=task,
        input_path=write_records(tmp_path / "input.jsonl", records),
        output_path=tmp_path / "output.jsonl",
        base_url=fake.base_url,
        timeout=2.0,
        backoff_base=0.01,
        backoff_cap=0.05,
        batch_poll_interval=0.01,
    )
    settings.update(overrides)
    return DatagenConfig(**settings)


def run(config: DatagenConfig, progress=None):
    return asyncio.run(run_datagen(config, progress))


# --- validation and pricing ------------------------------------------------


def test_few_shot_examples_pass_validation():
    for example in DESCRIBE_EXAMPLES:
        assert check_description(example.answer) == example.answer
    for example in AUGMENT_EXAMPLES:
        assert len(parse_variants(example.answer, example.user)) == 2


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("", "empty response"),
        ("A cyberpunk girl on a neon street", "not mostly Chinese"),
        ("“霓虹街头的赛博朋克女孩”", "quotes"),
        ("【霓虹街头的赛博朋克女孩】", "quotes or brackets"),
        ("描述：霓虹街头的赛博朋克女孩", "preamble"),
        ("好的，霓虹街头的赛博朋克女孩", "preamble"),
        ("Here is: 霓虹街头的赛博朋克女孩", "preamble"),
        ("霓虹街头\n赛博朋克女孩", "more than one line"),
        ("猫咪", "characters long"),
        ("霓" * 61, "characters long"),
        ("霓虹街头的赛博朋克女孩，85mm 镜头拍摄的画面", "technical parameters"),
    ],
)
def test_description_validation_rejects(answer, reason):
    with pytest.raises(InvalidAnswer) as caught:
        check_description(answer)
    assert reason in caught.value.reason


def test_description_validation_accepts_and_trims():
    assert check_description("  霓虹街头的赛博朋克女孩。\n") == "霓虹街头的赛博朋克女孩"
    assert check_description("《蒙娜丽莎》风格的橘猫肖像") == "《蒙娜丽莎》风格的橘猫肖像"


@pytest.mark.parametrize(
    "answer, reason",
    [
        ('["霓虹街头的赛博朋克女孩。", "雨夜里站在霓虹灯下的未来感少女"]', "variant 1 is nearly identical"),
        ('["雨夜里站在霓虹灯下的未来感少女", "雨夜里站在霓虹灯下的未来感少女们"]', "two variants are nearly identical"),
        ('["雨夜里站在霓虹灯下的未来感少女"]', "expected 2 variants, got 1"),
        ('{"a": 1}', "JSON array"),
        ('["雨夜里站在霓虹灯下的未来感少女", "A girl in neon light"]', "variant 2: not mostly Chinese"),
    ],
)
def test_variant_validation_rejects(answer, reason):
    with pytest.raises(InvalidAnswer) as caught:
        parse_variants(answer, "霓虹街头的赛博朋克女孩")
    assert reason in caught.value.reason


def test_variants_accept_numbered_lines_and_fences():
    lines = "1. 雨夜里站在霓虹灯下的未来感少女\n2. 赛博风格的女孩独自走过闪烁的街区"
    assert parse_variants(lines, "霓虹街头的赛博朋克女孩") == ["雨夜里站在霓虹灯下的未来感少女", "赛博风格的女孩独自走过闪烁的街区"]
    fenced = '```json\n["雨夜里站在霓虹灯下的未来感少女", "赛博风格的女孩独自走过闪烁的街区"]\n```'
    assert len(parse_variants(fenced, "霓虹街头的赛博朋克女孩")) == 2


def test_retry_after_seconds_date_and_milliseconds():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, now=now) == 30.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_full_jitter_under_the_cap():
    delays = [backoff_delay(retry, base=1.0, cap=8.0) for retry in range(10) for _ in range(20)]
    assert all(0 <= delay <= 8.0 for delay in delays)
    assert max(backoff_delay(0, base=1.0, cap=8.0) for _ in range(50)) <= 1.0


def test_cost_known_unknown_and_batch():
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_usd("claude-sonnet-4-5", usage) == pytest.approx(18.0)
    assert cost_usd("claude-sonnet-4-5-20250929", usage, batch=True) == pytest.approx(9.0)
    assert cost_usd("claude-made-up", usage) is None
    assert format_cost(None) == "unknown"
    assert cost_usd("local:bundled", usage) == 0.0


# --- the API path --------------------------------------------------------


def test_concurrency_never_exceeds_limit(tmp_path, fake):
    fake.latency = 0.05
    records = make_records(20)
    result = run(make_config(tmp_path, fake, records, concurrency=4))
    assert result.stats.done == 20
    assert fake.max_in_flight == 4
    output = read_rows(tmp_path / "output.jsonl")
    assert [row["id"] for row in output] == [record["id"] for record in records]
    assert all(row["description"] for row in output)


FAULT_CASES = {
    "429 with Retry-After": ([Fault.rate_limited("0.05")], "ok", 2, None),
    "429 without Retry-After": ([Fault.rate_limited()], "ok", 2, None),
    "529 overloaded": ([Fault.overloaded()], "ok", 2, None),
    "500 server error": ([Fault.server_error()], "ok", 2, None),
    "slow past timeout": ([Fault.slow(1.5)], "ok", 2, None),
    "connection reset": ([Fault.reset()], "ok", 2, None),
    "wrong language": ([Fault.answer("A cyberpunk girl on a neon street")], "ok", 2, None),
    "wrapped in quotes": ([Fault.answer("「霓虹街头的赛博朋克女孩」")], "ok", 2, None),
    "prose preamble": ([Fault.answer("好的，以下是描述：霓虹街头的赛博朋克女孩")], "ok", 2, None),
    "empty response": ([Fault.answer("")], "ok", 2, None),
    "invalid twice": ([Fault.answer("Neon girl"), Fault.answer("Neon girl again")], "failed", 2, "not mostly Chinese"),
    "retries exhausted": ([Fault.overloaded()] * 3, "failed", 3, "gave up after 2 retries: HTTP 529 overloaded_error"),
    "Retry-After too long": ([Fault.rate_limited("600")], "failed", 1, "more than the 1 s allowed by --max-retry-wait"),
    "400 not retried": ([Fault.error(400, "invalid_request_error")], "failed", 1, "HTTP 400 invalid_request_error"),
}


@pytest.mark.parametrize("case", FAULT_CASES, ids=list(FAULT_CASES))
def test_fault_ends_in_valid_or_failed_row(tmp_path, fake, case):
    faults, status, requests, reason = FAULT_CASES[case]
    records = make_records(3)
    target = records[1]["id"]
    fake.script(target, *faults)
    config = make_config(tmp_path, fake, records, timeout=0.5, max_retries=2, max_retry_wait=1.0)

    result = run(config)

    rows = {row["id"]: row for row in read_rows(config.checkpoint_path)}
    assert len(rows) == 3
    assert rows[target]["status"] == status
    assert len(fake.message_requests(target)) == requests
    if reason is None:
        assert rows[target]["reason"] is None
        assert check_description(rows[target]["description"])
    else:
        assert reason in rows[target]["reason"]
        assert result.failures[target] == rows[target]["reason"]
    for other in (records[0]["id"], records[2]["id"]):
        assert rows[other]["status"] == "ok"
        assert len(fake.message_requests(other)) == 1


def test_retry_after_is_honoured(tmp_path, fake):
    records = make_records(1)
    fake.script(records[0]["id"], Fault.rate_limited("0.4"))
    config = make_config(tmp_path, fake, records)
    run(config)
    first, second = fake.message_requests(records[0]["id"])
    assert first.number + 1 == second.number
    assert read_rows(config.checkpoint_path)[0]["status"] == "ok"


def test_corrective_request_quotes_answer_and_reason(tmp_path, fake):
    records = make_records(1)
    fake.script(records[0]["id"], Fault.answer("A neon girl"))
    run(make_config(tmp_path, fake, records))
    first, second = fake.message_requests(records[0]["id"])
    messages = second.body["messages"]
    assert [message["role"] for message in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "A neon girl"
    assert "A neon girl" in messages[2]["content"]
    assert "not mostly Chinese" in messages[2]["content"]


def test_request_shape_uses_cached_system_prompt(tmp_path, fake):
    records = make_records(1)
    records[0]["prompt"] = "x" * 5000
    run(make_config(tmp_path, fake, records, model="claude-haiku-4-5"))
    (request,) = fake.message_requests()
    body = request.body
    assert body["model"] == "claude-haiku-4-5"
    assert body["max_tokens"] == 200
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert len(body["messages"][0]["content"]) == 3000


def test_authentication_error_stops_the_run(tmp_path, fake):
    records = make_records(3)
    fake.script_request(1, Fault.error(401, "authentication_error"))
    with pytest.raises(DatagenError, match="HTTP 401"):
        run(make_config(tmp_path, fake, records, concurrency=1))


def test_missing_api_key_fails_before_any_request(tmp_path, fake, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    config = make_config(tmp_path, fake, make_records(2))
    with pytest.raises(MissingApiKeyError, match="ANTHROPIC_API_KEY"):
        run(config)
    assert fake.requests == []
    assert not config.checkpoint_path.exists()


def test_api_key_never_logged_or_written(tmp_path, fake, caplog):
    caplog.set_level(logging.DEBUG)
    records = make_records(4)
    fake.script(records[0]["id"], Fault.rate_limited("0.01"), Fault.answer("English answer"))
    fake.script(records[1]["id"], Fault.error(400, "invalid_request_error"))
    config = make_config(tmp_path, fake, records)
    progress = RecordingProgress()
    run(config, progress)

    assert API_KEY not in caplog.text
    assert API_KEY not in repr(progress.events)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text(encoding="utf-8", errors="replace"), path
    for request in fake.requests:
        assert API_KEY not in json.dumps(request.body)
        # SDK 2.17 sends the key as "authorization: Bearer"; older versions used x-api-key.
        assert API_KEY in request.headers.get("x-api-key", "") + request.headers.get("authorization", "")


def test_progress_reports_counts_tokens_and_cost(tmp_path, fake):
    progress = RecordingProgress()
    records = make_records(3)
    fake.script(records[2]["id"], Fault.error(400, "invalid_request_error"))
    run(make_config(tmp_path, fake, records), progress)
    updates = [event for event in progress.events if event[0] == "update"]
    assert updates[-1][1:3] == (3, 3)
    assert "1 failed" in updates[-1][3]
    assert "$" in updates[-1][3]
    (summary,) = progress.messages()
    assert "2 done, 1 failed" in summary


def test_unknown_model_cost_is_unknown(tmp_path, fake):
    progress = RecordingProgress()
    result = run(make_config(tmp_path, fake, make_records(2), model="claude-future-9"), progress)
    assert result.stats.cost is None
    assert "cost unknown" in progress.messages()[0]


# --- checkpoint and resume ----------------------------------------------------


def test_rerun_skips_ok_and_retries_failed(tmp_path, fake):
    records = make_records(4)
    fake.script(records[3]["id"], Fault.error(400, "invalid_request_error"))
    config = make_config(tmp_path, fake, records)
    first = run(config)
    assert first.stats.failed == 1

    fake.reset_log()
    second = run(config)
    assert second.stats.skipped == 3
    assert second.stats.done == 1
    assert [request.record_id for request in fake.message_requests()] == [records[3]["id"]]
    rows = read_rows(config.checkpoint_path)
    assert sorted(row["id"] for row in rows) == sorted(record["id"] for record in records)
    assert all(row["status"] == "ok" for row in rows)


def test_torn_last_line_is_dropped(tmp_path, fake):
    records = make_records(3)
    config = make_config(tmp_path, fake, records)
    saved = {"id": records[0]["id"], "task": "describe", "status": "ok", "description": "窗边阳光下打盹的橘色小猫",
             "reason": None, "input_tokens": 10, "output_tokens": 5, "model": "claude-sonnet-5-5"}
    torn = json.dumps({**saved, "id": records[1]["id"]}, ensure_ascii=False)[:40]
    config.checkpoint_path.write_text(json.dumps(saved, ensure_ascii=False) + "\n" + torn, encoding="utf-8")

    run(config)

    text = config.checkpoint_path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    assert sorted(row["id"] for row in rows) == sorted(record["id"] for record in records)
    assert [request.record_id for request in fake.message_requests()].count(records[0]["id"]) == 0
    assert read_rows(config.output_path)[0]["description"] == "窗边阳光下打盹的橘色小猫"


def test_checkpoint_of_other_task_is_rejected(tmp_path):
    path = tmp_path / "checkpoint.jsonl"
    path.write_text('{"id": "p-1", "task": "augment", "status": "ok"}\n', encoding="utf-8")
    with pytest.raises(Exception, match="belongs to the augment task"):
        Checkpoint(path, "describe").load()


def test_records_with_descriptions_are_kept(tmp_path, fake):
    records = make_records(3)
    records[0]["description"] = "用户自己写的描述文字"
    records[0]["meta"] = {"author": "x"}
    result = run(make_config(tmp_path, fake, records))
    assert result.stats.total == 2
    output = read_rows(tmp_path / "output.jsonl")
    assert output[0] == records[0]
    assert all(row["description"] for row in output)


def test_dry_run_needs_no_key_and_sends_nothing(tmp_path, fake, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    config = make_config(tmp_path, fake, make_records(10))
    estimate = estimate_run(config)
    assert estimate.requests == 10
    assert estimate.input_tokens > 0
    assert estimate.cost is not None and estimate.cost > 0
    assert fake.requests == []
    assert estimate_run(make_config(tmp_path, fake, make_records(10), batch=True)).cost == pytest.approx(estimate.cost / 2)


# --- augment ---------------------------------------------------------------


def test_augment_adds_two_variants(tmp_path, fake):
    records = make_records(4, described=True)
    same = json.dumps([records[0]["description"], "夜色里被霓虹照亮的一位未来少女"], ensure_ascii=False)
    fake.script(records[0]["id"], Fault.answer(same))
    config = make_config(tmp_path, fake, records, task="augment")
    result = run(config)

    assert result.stats.done == 4
    assert len(fake.message_requests(records[0]["id"])) == 2
    output = read_rows(config.output_path)
    for record, row in zip(records, output):
        assert row["description"] == record["description"]
        assert len(row["variants"]) == 2
        assert record["description"] not in row["variants"]
    system = fake.message_requests()[0].body["system"][0]["text"]
    assert "JSON" in system


# --- batch mode --------------------------------------------------------------


def test_batch_submits_once_and_survives_restart(tmp_path, fake):
    records = make_records(5)
    fake.batch_polls_to_end = 10_000
    fake.script(records[2]["id"], Fault.answer("An English answer"))
    fake.script(records[4]["id"], Fault.batch_error())
    config = make_config(tmp_path, fake, records, batch=True)

    async def interrupted() -> None:
        await asyncio.wait_for(run_datagen(config), timeout=0.5)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(interrupted())
    state = json.loads(config.batch_state_path.read_text(encoding="utf-8"))
    assert state["ids"] == [record["id"] for record in records]

    fake.batch_polls_to_end = 0
    result = run(config)

    submissions = [request for request in fake.requests if request.path == "/v1/messages/batches"]
    assert len(submissions) == 1
    assert [item["custom_id"] for item in submissions[0].body["requests"]] == state["ids"]
    assert not config.batch_state_path.exists()
    # Only the invalid batch answer went through the Messages API, as one corrective request.
    (corrective,) = fake.message_requests()
    assert corrective.record_id == records[2]["id"]
    assert len(corrective.body["messages"]) == 3
    rows = {row["id"]: row for row in read_rows(config.checkpoint_path)}
    assert len(rows) == 5
    assert rows[records[4]["id"]]["status"] == "failed"
    assert "batch request failed" in rows[records[4]["id"]]["reason"]
    assert all(rows[record["id"]]["status"] == "ok" for record in records[:4])
    assert result.stats.done == 4


def test_batch_results_never_duplicate_saved_rows(tmp_path, fake):
    records = make_records(3)
    config = make_config(tmp_path, fake, records, batch=True)
    run(config)
    fake.reset_log()
    again = run(config)
    assert again.stats.skipped == 3
    assert [request for request in fake.requests if request.path == "/v1/messages/batches"] == []
    assert len(read_rows(config.checkpoint_path)) == 3
