"""The shared engine of ``data describe`` and ``data augment``.

``run_datagen`` reads prompt records, sends one request per record that the
task wants (a record without a description for ``describe``, a described
record without variants for ``augment``) to a backend, validates each answer
and writes the results. ``estimate_run`` is the dry run: it counts requests
and estimates the cost without calling anything.

Concurrency: at most ``concurrency`` records are in progress at once (an
``asyncio.Semaphore``). A record keeps its slot while it waits to retry, so a
rate-limited run slows down instead of piling up requests. The local backend
runs one record at a time.

Retry policy, per request:

- Retried: HTTP 408, 409, 429, every 5xx including 529 ``overloaded_error``,
  timeouts and dropped connections, at most ``max_retries`` times.
- The wait is the server's ``Retry-After`` (seconds or an HTTP date; or
  ``retry-after-ms``) when it sends one, honoured whatever its size up to
  ``max_retry_wait``. A longer requested wait fails the record with that
  reason. Without the header the wait is exponential backoff with full
  jitter: a uniform draw from ``[0, min(backoff_cap, backoff_base * 2**retry)]``.
- Other 4xx errors fail the record at once, except 401, 402, 403 and 404,
  which stop the run because every other record would fail the same way.
- The Anthropic client is built with ``max_retries=0``, so the SDK adds no
  retries of its own.

Validation: an invalid answer gets one corrective follow-up message that
quotes the answer and the reason. A second invalid answer fails the record.

Checkpoint and resume: every finished record, valid or failed, is appended to
a JSONL checkpoint (``{"id", "task", "status", "description"|"variants",
"reason", "input_tokens", "output_tokens", "model"}``) and fsynced. A rerun
skips ids whose latest row is ``ok`` and retries failed ones. A torn last line
from a crash is cut off before anything is appended. At the end the checkpoint
is rewritten with one row per id, and the output file, the input records with
the results filled in, is written atomically.

Batch mode sends all pending records as one Message Batch. The batch id is
saved in ``<checkpoint>.batch.json`` right after submission, so a rerun polls
the same batch instead of paying for a new one.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol, TypeVar

from ..errors import ConfigError, DataFormatError, NbpError
from ..i18n import _
from ..jsonl import (
    append_jsonl,
    atomic_write_jsonl,
    atomic_write_text,
    iter_jsonl,
    read_without_torn_tail,
)
from ..progress import NullProgress, Progress
from .pricing import Usage, cost_usd, format_cost
from .tasks import TASKS, DatagenTask, InvalidAnswer

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_LOCAL_MODEL = "bundled"
# The Message Batches API accepts only these custom_id values.
CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Dry-run token estimate: about 3 characters per token for mixed English and Chinese.
CHARS_PER_TOKEN_ESTIMATE = 3
EMPTY_ANSWER_PLACEHOLDER = "（空）"

T = TypeVar("T")


class DatagenError(NbpError):
    """A data-generation run cannot start or continue."""


class MissingApiKeyError(DatagenError):
    """No Anthropic credentials are configured."""


# --- backends ------------------------------------------------------------


@dataclass
class Completion:
    """One model answer with its token usage and the model that produced it."""

    text: str
    usage: Usage
    model: str


class RequestFailed(Exception):
    """A backend request that returned no answer.

    ``retryable`` requests may succeed when sent again; ``retry_after`` is the
    server's requested wait in seconds, when it sent one. ``fatal`` errors (a
    bad key, an unknown model) stop the whole run.
    """

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None, fatal: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.fatal = fatal


@dataclass
class BatchStatus:
    """Processing state of a Message Batch."""

    ended: bool
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.errored + self.canceled + self.expired


class Backend(Protocol):
    name: str
    model: str  # the model id written into checkpoint rows
    max_concurrency: int | None  # None: no limit beyond the configured concurrency

    async def complete(self, record_id: str, task: DatagenTask, messages: list[dict[str, str]]) -> Completion:
        """Return the answer to ``messages`` or raise ``RequestFailed``."""

    async def aclose(self) -> None:
        """Release connections or models."""


class BatchBackend(Backend, Protocol):
    async def submit_batch(self, task: DatagenTask, requests: list[tuple[str, list[dict[str, str]]]]) -> str:
        """Submit (custom_id, messages) pairs as one batch and return its id."""

    async def retrieve_batch(self, batch_id: str) -> BatchStatus: ...

    def batch_results(self, batch_id: str) -> AsyncIterator[tuple[str, Completion | RequestFailed]]:
        """Yield (custom_id, answer or failure) for every request of an ended batch."""


# --- configuration and results ---------------------------------------------


@dataclass
class DatagenConfig:
    """Settings of one ``data describe`` or ``data augment`` run."""

    task: str
    input_path: Path
    output_path: Path
    checkpoint_path: Path | None = None  # default: <output stem>.checkpoint.jsonl beside the output
    backend: str = "api"  # "api" (Anthropic Messages API) or "local" (MLX model)
    model: str = DEFAULT_MODEL
    local_model: str = DEFAULT_LOCAL_MODEL
    concurrency: int = 5
    max_retries: int = 6
    max_retry_wait: float = 120.0  # seconds; a longer Retry-After fails the record
    timeout: float = 60.0  # seconds per API request
    backoff_base: float = 1.0  # seconds; first backoff ceiling
    backoff_cap: float = 30.0  # seconds; largest backoff ceiling
    batch: bool = False
    batch_poll_interval: float = 30.0  # seconds between batch status checks
    base_url: str | None = None  # default: ANTHROPIC_BASE_URL, else the SDK's default

    def __post_init__(self) -> None:
        self.input_path = Path(self.input_path)
        self.output_path = Path(self.output_path)
        if self.checkpoint_path is None:
            self.checkpoint_path = self.output_path.with_name(self.output_path.stem + ".checkpoint.jsonl")
        self.checkpoint_path = Path(self.checkpoint_path)

    @property
    def batch_state_path(self) -> Path:
        assert self.checkpoint_path is not None
        return self.checkpoint_path.with_name(self.checkpoint_path.name + ".batch.json")

    @property
    def model_label(self) -> str:
        return f"local:{self.local_model}" if self.backend == "local" else self.model

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(_("unknown task {task}; use describe or augment").format(task=self.task))
        if self.backend not in ("api", "local"):
            raise ConfigError(_("--backend must be api or local, got {value}").format(value=self.backend))
        if self.batch and self.backend != "api":
            raise ConfigError(_("--batch works only with --backend api"))
        if self.concurrency < 1:
            raise ConfigError(_("--concurrency must be at least 1, got {value}").format(value=self.concurrency))
        if self.max_retries < 0:
            raise ConfigError(_("--max-retries must be 0 or more, got {value}").format(value=self.max_retries))
        if self.max_retry_wait < 0:
            raise ConfigError(_("--max-retry-wait must be 0 or more seconds, got {value}").format(value=self.max_retry_wait))
        if self.timeout <= 0:
            raise ConfigError(_("--timeout must be more than 0 seconds, got {value}").format(value=self.timeout))
        if self.input_path.resolve() == self.output_path.resolve():
            raise ConfigError(_("--output must differ from --input ({path})").format(path=self.input_path))


@dataclass
class RunStats:
    """Counts, token usage and cost of one run, for progress and the summary."""

    total: int = 0  # records this run had to process
    skipped: int = 0  # records already ok in the checkpoint
    done: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float | None = 0.0  # USD; None once a model without a known price was used
    started: float = field(default_factory=time.monotonic)

    def add_usage(self, model: str, usage: Usage, *, batch: bool = False) -> None:
        self.usage.add(usage)
        cost = cost_usd(model, usage, batch=batch)
        self.cost = None if cost is None or self.cost is None else self.cost + cost

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed

    @property
    def requests_per_minute(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.requests * 60 / elapsed if elapsed > 0 else 0.0

    def detail(self) -> str:
        return _("{failed} failed · {rpm:.0f} req/min · {input}/{output} tok · {cost}").format(
            failed=self.failed, rpm=self.requests_per_minute, input=_short_count(self.usage.input_tokens),
            output=_short_count(self.usage.output_tokens), cost=format_cost(self.cost),
        )


@dataclass
class DatagenResult:
    stats: RunStats
    output_path: Path
    checkpoint_path: Path
    failures: dict[str, str]  # id -> reason, for records that failed in this run


@dataclass
class DryRunEstimate:
    """Requests and an estimate of tokens and cost; nothing is sent."""

    requests: int
    skipped: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    model: str


# --- public entry points ---------------------------------------------------


def estimate_run(config: DatagenConfig) -> DryRunEstimate:
    """Count the requests a run would send and estimate tokens and cost.

    Tokens are estimated as characters ÷ 3 for input and a fixed size per
    answer for output. Prompt caching, retries and corrective requests are not
    counted, so the real cost can differ in either direction.
    """
    config.validate()
    task = TASKS[config.task]
    records = read_input_records(config.input_path, check_custom_ids=config.batch)
    saved = Checkpoint(config.checkpoint_path, task.name, read_only=True).load()
    pending = _pending_records(task, records, saved)

    characters = sum(len(task.system_prompt) + len(task.user_message(record)) for record in pending)
    usage = Usage(
        input_tokens=characters // CHARS_PER_TOKEN_ESTIMATE,
        output_tokens=task.expected_output_tokens * len(pending),
    )
    wanted = sum(1 for record in records if task.wants(record))
    return DryRunEstimate(
        requests=len(pending),
        skipped=wanted - len(pending),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost=cost_usd(config.model_label, usage, batch=config.batch),
        model=config.model_label,
    )


async def run_datagen(config: DatagenConfig, progress: Progress | None = None, backend: Backend | None = None) -> DatagenResult:
    """Run ``config.task`` over the input records and write the output records file.

    ``backend`` replaces the one ``config`` selects (for tests). Raises
    ``MissingApiKeyError`` before any work when the API backend has no key,
    and ``DatagenError`` when the run has to stop (a bad key, an unknown model,
    a batch that cannot be submitted or read).
    """
    config.validate()
    progress = progress or NullProgress()
    task = TASKS[config.task]
    records = read_input_records(config.input_path, check_custom_ids=config.batch)
    checkpoint = Checkpoint(config.checkpoint_path, task.name)
    saved = checkpoint.load()
    pending = _pending_records(task, records, saved)
    wanted = sum(1 for record in records if task.wants(record))

    owns_backend = backend is None
    if backend is None:
        backend = create_backend(config, progress)
    runner = _Runner(config, task, backend, checkpoint, progress)
    runner.stats.total = len(pending)
    runner.stats.skipped = wanted - len(pending)
    logger.info(
        "Starting %s with %s (%s): %d to do, %d already done, %d records without work",
        task.name, backend.name, backend.model, len(pending), runner.stats.skipped, len(records) - wanted,
    )

    try:
        if pending or (config.batch and config.batch_state_path.exists()):
            if config.batch:
                await runner.run_batch(pending)
            else:
                await runner.run_concurrent(pending)
    finally:
        progress.finish()
        if owns_backend:
            await backend.aclose()

    checkpoint.compact()
    written = write_output(config.output_path, task, records, checkpoint.rows)
    stats = runner.stats
    progress.message(
        _("{task}: {done} done, {failed} failed, {skipped} already done; {requests} requests ({retries} retries), "
          "{input} input and {output} output tokens, cost {cost}, {rpm:.1f} requests/min. Wrote {count} records to {output_path}").format(
            task=task.name, done=stats.done, failed=stats.failed, skipped=stats.skipped, requests=stats.requests,
            retries=stats.retries, input=stats.usage.input_tokens, output=stats.usage.output_tokens,
            cost=format_cost(stats.cost), rpm=stats.requests_per_minute, count=written, output_path=config.output_path,
        )
    )
    logger.info("Finished %s: %d done, %d failed", task.name, stats.done, stats.failed)
    return DatagenResult(stats, config.output_path, checkpoint.path, runner.failures)


def create_backend(config: DatagenConfig, progress: Progress) -> Backend:
    """Build the backend ``config`` selects; the API backend checks the key here."""
    if config.backend == "local":
        from .local_backend import LocalBackend

        return LocalBackend(config.local_model, progress)
    from .anthropic_backend import AnthropicBackend

    return AnthropicBackend(config.model, timeout=config.timeout, base_url=config.base_url)


# --- retry policy ----------------------------------------------------------


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Return the wait before retry number ``retry`` (0-based): full-jitter exponential backoff."""
    ceiling = min(cap, base * 2**retry)
    return (rng or random).uniform(0, ceiling)


def parse_retry_after(headers: Any, now: datetime | None = None) -> float | None:
    """Return the wait in seconds that ``retry-after-ms`` or ``Retry-After`` requests, or ``None``.

    ``Retry-After`` may be a number of seconds or an HTTP date. An unreadable
    value counts as absent.
    """
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max((moment - now).total_seconds(), 0.0)


class _RecordFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Runner:
    """State of one run: the shared loop, retries, checkpoint rows and stats."""

    def __init__(self, config: DatagenConfig, task: DatagenTask, backend: Backend, checkpoint: Checkpoint, progress: Progress):
        self.config = config
        self.task = task
        self.backend = backend
        self.checkpoint = checkpoint
        self.progress = progress
        self.stats = RunStats()
        self.failures: dict[str, str] = {}
        limit = config.concurrency
        if backend.max_concurrency is not None:
            limit = min(limit, backend.max_concurrency)
        self.semaphore = asyncio.Semaphore(limit)

    # The per-record loop --------------------------------------------------

    async def run_concurrent(self, pending: list[dict[str, Any]]) -> None:
        self.progress.start(_("{task}: records").format(task=self.task.name), total=len(pending), unit=_("records"))
        await self._gather([self._process(record) for record in pending])

    async def _process(self, record: dict[str, Any]) -> None:
        async with self.semaphore:
            usage = Usage()
            messages = [{"role": "user", "content": self.task.user_message(record)}]
            try:
                completion = await self._request(record["id"], messages, usage)
                await self._finish(record, messages, completion, usage)
            except _RecordFailed as failure:
                self._save_failed(record["id"], failure.reason, usage)

    async def _finish(self, record: dict[str, Any], messages: list[dict[str, str]], completion: Completion, usage: Usage) -> None:
        """Validate ``completion``; on an invalid answer ask once more, then save the row."""
        try:
            value = self.task.parse(completion.text, record)
        except InvalidAnswer as first:
            logger.info("Invalid response for %s (%s); sending a corrective request", record["id"], first.reason)
            follow_up = messages + [
                {"role": "assistant", "content": completion.text.strip() or EMPTY_ANSWER_PLACEHOLDER},
                {"role": "user", "content": self.task.corrective_message(completion.text.strip(), first.reason)},
            ]
            completion = await self._request(record["id"], follow_up, usage)
            try:
                value = self.task.parse(completion.text, record)
            except InvalidAnswer as second:
                raise _RecordFailed(f"invalid response after a corrective request: {second.reason}") from None
        self._save_ok(record["id"], value, usage, completion.model)

    async def _request(self, record_id: str, messages: list[dict[str, str]], usage: Usage) -> Completion:
        completion = await self._with_retries(record_id, lambda: self.backend.complete(record_id, self.task, messages))
        usage.add(completion.usage)
        self.stats.add_usage(completion.model, completion.usage)
        return completion

    async def _with_retries(self, label: str, call: Callable[[], Awaitable[T]], *, counts_as_request: bool = True) -> T:
        """Run ``call`` under the retry policy; raise ``_RecordFailed`` when it gives up."""
        retry = 0
        while True:
            if counts_as_request:
                self.stats.requests += 1
            try:
                return await call()
            except RequestFailed as error:
                if error.fatal:
                    raise DatagenError(_("the API rejected the request for {id}: {reason}").format(id=label, reason=error.reason)) from None
                if not error.retryable:
                    logger.warning("Request for %s failed without retry: %s", label, error.reason)
                    raise _RecordFailed(error.reason) from None
                if retry >= self.config.max_retries:
                    logger.warning("Giving up on %s after %d retries: %s", label, retry, error.reason)
                    raise _RecordFailed(f"gave up after {retry} retries: {error.reason}") from None
                delay = self._retry_delay(label, retry, error)
                retry += 1
                self.stats.retries += 1
                logger.warning("Retry %d/%d for %s in %.2f s after %s", retry, self.config.max_retries, label, delay, error.reason)
                await asyncio.sleep(delay)

    def _retry_delay(self, label: str, retry: int, error: RequestFailed) -> float:
        if error.retry_after is None:
            return backoff_delay(retry, self.config.backoff_base, self.config.backoff_cap)
        if error.retry_after > self.config.max_retry_wait:
            logger.warning("Giving up on %s: Retry-After %.0f s exceeds %.0f s", label, error.retry_after, self.config.max_retry_wait)
            raise _RecordFailed(
                f"server requested a wait of {error.retry_after:.0f} s (Retry-After), more than the "
                f"{self.config.max_retry_wait:.0f} s allowed by --max-retry-wait: {error.reason}"
            )
        return error.retry_after

    async def _gather(self, coroutines: list[Awaitable[None]]) -> None:
        """Run ``coroutines`` together; the first unexpected error cancels the rest and is raised."""
        tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
        if not tasks:
            return
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for finished in done:
                if finished.exception() is not None:
                    raise finished.exception()  # type: ignore[misc]
        finally:
            for running in tasks:
                running.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # Checkpoint rows --------------------------------------------------------

    def _save_ok(self, record_id: str, value: Any, usage: Usage, model: str) -> None:
        row = self._row(record_id, "ok", None, usage, model)
        row[self.task.result_key] = value
        self.checkpoint.append(row)
        self.stats.done += 1
        self._report()

    def _save_failed(self, record_id: str, reason: str, usage: Usage) -> None:
        logger.warning("Record %s failed: %s", record_id, reason)
        self.checkpoint.append(self._row(record_id, "failed", reason, usage, self.backend.model))
        self.stats.failed += 1
        self.failures[record_id] = reason
        self._report()

    def _row(self, record_id: str, status: str, reason: str | None, usage: Usage, model: str) -> dict[str, Any]:
        return {
            "id": record_id,
            "task": self.task.name,
            "status": status,
            "reason": reason,
            "input_tokens": usage.input_tokens + usage.cache_write_tokens + usage.cache_read_tokens,
            "output_tokens": usage.output_tokens,
            "model": model,
        }

    def _report(self) -> None:
        self.progress.update(self.stats.done + self.stats.failed, self.stats.total, self.stats.detail())

    # Batch mode -------------------------------------------------------------

    async def run_batch(self, pending: list[dict[str, Any]]) -> None:
        """Process ``pending`` through the Message Batches API, resuming a saved batch first."""
        backend = self.backend
        if not hasattr(backend, "submit_batch"):
            raise DatagenError(_("the {backend} backend has no batch mode").format(backend=backend.name))
        by_id = {record["id"]: record for record in pending}
        handled: set[str] = set()

        while True:
            state = self._load_batch_state()
            if state is None:
                todo = [record for record in pending if record["id"] not in handled]
                if not todo:
                    return
                state = await self._submit_batch(todo)
            await self._wait_for_batch(state)
            await self._merge_batch(state, by_id)
            handled.update(state["ids"])
            self.config.batch_state_path.unlink(missing_ok=True)
            logger.info("Batch %s merged; removed %s", state["batch_id"], self.config.batch_state_path)

    def _load_batch_state(self) -> dict[str, Any] | None:
        path = self.config.batch_state_path
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DataFormatError(path, None, _("unreadable batch state ({error}); delete the file to submit a new batch").format(error=error)) from None
        if state.get("task") != self.task.name or state.get("model") != self.backend.model:
            raise DatagenError(
                _("{path} belongs to a {task} batch on {model}; finish it with the same command or delete the file").format(
                    path=path, task=state.get("task"), model=state.get("model")
                )
            )
        logger.info("Resuming batch %s with %d requests", state["batch_id"], len(state["ids"]))
        return state

    async def _submit_batch(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        requests = [(record["id"], [{"role": "user", "content": self.task.user_message(record)}]) for record in records]
        try:
            batch_id = await self._with_retries(
                "batch submission", lambda: self.backend.submit_batch(self.task, requests), counts_as_request=False  # type: ignore[attr-defined]
            )
        except _RecordFailed as failure:
            raise DatagenError(_("could not submit the batch: {reason}").format(reason=failure.reason)) from None
        self.stats.requests += len(requests)
        state = {
            "batch_id": batch_id,
            "task": self.task.name,
            "model": self.backend.model,
            "ids": [record["id"] for record in records],
            "submitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_text(self.config.batch_state_path, json.dumps(state, ensure_ascii=False, indent=2) + "\n")
        logger.info("Submitted batch %s with %d requests; saved its id in %s", batch_id, len(records), self.config.batch_state_path)
        return state

    async def _wait_for_batch(self, state: dict[str, Any]) -> None:
        batch_id = state["batch_id"]
        total = len(state["ids"])
        self.progress.start(_("batch {id}").format(id=batch_id), total=total, unit=_("requests"))
        while True:
            try:
                status = await self._with_retries(
                    batch_id, lambda: self.backend.retrieve_batch(batch_id), counts_as_request=False  # type: ignore[attr-defined]
                )
            except _RecordFailed as failure:
                raise DatagenError(_("could not read the status of batch {id}: {reason}; rerun to resume it").format(id=batch_id, reason=failure.reason)) from None
            self.progress.update(status.finished, total, _("{count} processing").format(count=status.processing))
            if status.ended:
                break
            await asyncio.sleep(self.config.batch_poll_interval)
        self.progress.finish()
        logger.info("Batch %s ended: %d succeeded, %d errored, %d canceled, %d expired",
                    batch_id, status.succeeded, status.errored, status.canceled, status.expired)

    async def _merge_batch(self, state: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> None:
        """Save every batch result; invalid answers go through the corrective path concurrently."""
        self.progress.start(_("{task}: batch results").format(task=self.task.name), total=self.stats.total, unit=_("records"))
        corrections: list[Awaitable[None]] = []
        try:
            async for record_id, outcome in self.backend.batch_results(state["batch_id"]):  # type: ignore[attr-defined]
                record = by_id.get(record_id)
                if record is None or self.checkpoint.is_ok(record_id):
                    continue
                if isinstance(outcome, RequestFailed):
                    self._save_failed(record_id, f"batch request failed: {outcome.reason}", Usage())
                    continue
                self.stats.add_usage(outcome.model, outcome.usage, batch=True)
                corrections.append(self._finish_batch_answer(record, outcome))
        except RequestFailed as error:
            raise DatagenError(_("could not read the results of batch {id}: {reason}; rerun to resume it").format(id=state["batch_id"], reason=error.reason)) from None
        await self._gather(corrections)

    async def _finish_batch_answer(self, record: dict[str, Any], completion: Completion) -> None:
        async with self.semaphore:
            usage = Usage()
            usage.add(completion.usage)
            messages = [{"role": "user", "content": self.task.user_message(record)}]
            try:
                await self._finish(record, messages, completion, usage)
            except _RecordFailed as failure:
                self._save_failed(record["id"], failure.reason, usage)


# --- files -----------------------------------------------------------------


class Checkpoint:
    """The append-only JSONL checkpoint of one task, keyed by record id."""

    def __init__(self, path: Path | None, task: str, *, read_only: bool = False):
        assert path is not None
        self.path = Path(path)
        self.task = task
        self.read_only = read_only
        self.rows: dict[str, dict[str, Any]] = {}
        self._lines = 0

    def load(self) -> dict[str, dict[str, Any]]:
        """Read the rows, the latest per id; cut off a torn last line first."""
        self.rows = {}
        self._lines = 0
        if not self.path.exists():
            return self.rows
        raw = read_without_torn_tail(self.path, truncate=not self.read_only)
        lines = raw.decode("utf-8").split("\n")[:-1]

        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(self.path, number, _("invalid JSON at column {column}: {message}").format(column=error.colno, message=error.msg)) from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise DataFormatError(self.path, number, _("not a checkpoint row (an object with an \"id\")"))
            if row.get("task") != self.task:
                raise DataFormatError(
                    self.path, number,
                    _("this checkpoint belongs to the {other} task, not {task}; pass a different --checkpoint").format(other=row.get("task"), task=self.task),
                )
            self.rows[row["id"]] = row
        self._lines = len(lines)
        logger.info("Loaded %d checkpoint rows (%d ok) from %s", len(self.rows), sum(1 for row in self.rows.values() if row.get("status") == "ok"), self.path)
        return self.rows

    def is_ok(self, record_id: str) -> bool:
        return self.rows.get(record_id, {}).get("status") == "ok"

    def append(self, row: dict[str, Any]) -> None:
        append_jsonl(self.path, row)
        self.rows[row["id"]] = row
        self._lines += 1

    def compact(self) -> None:
        """Rewrite the file with one row per id when a rerun has appended newer rows."""
        if self._lines > len(self.rows):
            atomic_write_jsonl(self.path, self.rows.values())
            logger.info("Compacted %s from %d to %d rows", self.path, self._lines, len(self.rows))
            self._lines = len(self.rows)


def read_input_records(path: Path, *, check_custom_ids: bool = False) -> list[dict[str, Any]]:
    """Read prompt records as plain objects, keeping every key.

    Each record needs a non-empty string ``id`` and a ``prompt``; ids must be
    unique. With ``check_custom_ids`` the ids must also be valid batch
    ``custom_id`` values.
    """
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line, record in iter_jsonl(path):
        record_id = record.get("id")
        if not isinstance(record_id, str) or not record_id:
            raise DataFormatError(path, line, _("\"id\" must be a non-empty string; re-create the file with `python -m nbp_mlx data import`"))
        if "prompt" not in record:
            raise DataFormatError(path, line, _("the record has no \"prompt\""))
        if record_id in seen:
            raise DataFormatError(path, line, _("duplicate id {id}").format(id=record_id))
        if check_custom_ids and not CUSTOM_ID_PATTERN.match(record_id):
            raise DataFormatError(path, line, _("id {id} is not a valid batch custom_id (1-64 letters, digits, _ or -); run without --batch").format(id=record_id))
        seen.add(record_id)
        records.append(record)
    return records


def write_output(path: Path, task: DatagenTask, records: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> int:
    """Write ``records`` with the ok results of ``rows`` filled in; return the record count."""
    output = []
    for record in records:
        row = rows.get(record["id"])
        if task.wants(record) and row is not None and row.get("status") == "ok":
            record = task.apply(record, row[task.result_key])
        output.append(record)
    return atomic_write_jsonl(path, output)


def _pending_records(task: DatagenTask, records: list[dict[str, Any]], saved: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for record in records if task.wants(record) and saved.get(record["id"], {}).get("status") != "ok"]


def _short_count(count: int) -> str:
    return f"{count / 1000:.1f}k" if count >= 10_000 else str(count)
