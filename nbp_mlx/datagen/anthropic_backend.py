"""Backend on Anthropic's Messages API and Message Batches API (the ``anthropic`` SDK).

The client is built with ``max_retries=0``: the engine owns the retry policy
(see ``engine.py``), and SDK retries on top of it would multiply the attempts
and hide ``Retry-After`` from it. Every SDK error becomes a ``RequestFailed``
that states whether to retry and how long the server requested to wait.

Credentials come from the SDK's usual sources: ``ANTHROPIC_API_KEY``, then
``ANTHROPIC_AUTH_TOKEN``, then an Anthropic profile. The base URL comes from
``base_url`` or ``ANTHROPIC_BASE_URL``. The key is never logged or written.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

import anthropic

from ..i18n import _
from .engine import BatchStatus, Completion, MissingApiKeyError, RequestFailed, parse_retry_after
from .pricing import Usage
from .tasks import DatagenTask

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 409, 429})
# A bad key, a missing permission, an unpaid account or an unknown model fails
# every request alike, so these stop the run instead of failing each record.
FATAL_STATUSES = frozenset({401, 402, 403, 404})


class AnthropicBackend:
    """Sends the engine's requests through ``anthropic.AsyncAnthropic``."""

    name = "api"
    max_concurrency: int | None = None

    def __init__(self, model: str, *, timeout: float = 60.0, base_url: str | None = None):
        self.model = model
        self.timeout = timeout
        try:
            self.client = anthropic.AsyncAnthropic(max_retries=0, timeout=timeout, base_url=base_url)
        except anthropic.AnthropicError as error:
            raise MissingApiKeyError(_("no usable Anthropic credentials: {error}").format(error=error)) from None
        if not (self.client.api_key or self.client.auth_token or self.client.credentials):
            raise MissingApiKeyError(
                _("no Anthropic API key found; set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN), "
                  "or use --backend local, or --dry-run to see the request count and cost")
            )

    async def aclose(self) -> None:
        await self.client.close()

    def request_params(self, task: DatagenTask, messages: list[dict[str, str]]) -> dict[str, Any]:
        """Return the Messages API parameters for one request.

        The system prompt is marked for prompt caching. No temperature is sent
        because Claude Sonnet 5 and later reject non-default sampling settings.
        """
        # NOTE: the API caches a prefix only when it is at least 1,024 tokens
        # long, and more for some models. A shorter system prompt is sent
        # uncached without an error, so cache_write/cache_read stay 0.
        return {
            "model": self.model,
            "max_tokens": task.max_tokens,
            "system": [{"type": "text", "text": task.system_prompt, "cache_control": {"type": "ephemeral"}}],
            "messages": messages,
        }

    async def complete(self, record_id: str, task: DatagenTask, messages: list[dict[str, str]]) -> Completion:
        try:
            message = await self.client.messages.create(**self.request_params(task, messages))
        except anthropic.AnthropicError as error:
            raise translate_error(error, self.timeout) from None
        return completion_from_message(message)

    # Message Batches ---------------------------------------------------------

    async def submit_batch(self, task: DatagenTask, requests: list[tuple[str, list[dict[str, str]]]]) -> str:
        body = [{"custom_id": custom_id, "params": self.request_params(task, messages)} for custom_id, messages in requests]
        try:
            batch = await self.client.messages.batches.create(requests=body)  # type: ignore[arg-type]
        except anthropic.AnthropicError as error:
            raise translate_error(error, self.timeout) from None
        return batch.id

    async def retrieve_batch(self, batch_id: str) -> BatchStatus:
        try:
            batch = await self.client.messages.batches.retrieve(batch_id)
        except anthropic.AnthropicError as error:
            raise translate_error(error, self.timeout) from None
        counts = batch.request_counts
        return BatchStatus(
            ended=batch.processing_status == "ended",
            processing=counts.processing,
            succeeded=counts.succeeded,
            errored=counts.errored,
            canceled=counts.canceled,
            expired=counts.expired,
        )

    async def batch_results(self, batch_id: str) -> AsyncIterator[tuple[str, Completion | RequestFailed]]:
        try:
            results = await self.client.messages.batches.results(batch_id)
            async for item in results:
                yield item.custom_id, _outcome(item.result)
        except anthropic.AnthropicError as error:
            raise translate_error(error, self.timeout) from None


def completion_from_message(message: Any) -> Completion:
    text = "".join(block.text for block in message.content if getattr(block, "type", None) == "text")
    usage = message.usage
    return Completion(
        text=text,
        usage=Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
            cache_read_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
        ),
        model=message.model,
    )


def translate_error(error: anthropic.AnthropicError, timeout: float) -> RequestFailed:
    """Map an SDK exception to a ``RequestFailed`` with the retry decision."""
    if isinstance(error, anthropic.APITimeoutError):
        return RequestFailed(f"request timed out after {timeout:g} s", retryable=True)
    if isinstance(error, anthropic.APIConnectionError):
        cause = error.__cause__ or error.__context__
        detail = type(cause).__name__ if cause is not None else "no response"
        return RequestFailed(f"connection failed ({detail})", retryable=True)
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        reason = f"HTTP {status} {_error_type(error)}".rstrip()
        return RequestFailed(
            reason,
            retryable=status in RETRYABLE_STATUSES or status >= 500,
            retry_after=parse_retry_after(error.response.headers),
            fatal=status in FATAL_STATUSES,
        )
    return RequestFailed(f"{type(error).__name__}: {error}", retryable=False)


def _error_type(error: anthropic.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        details = body["error"]
        message = str(details.get("message") or "")[:200]
        return f"{details.get('type', '')}: {message}".strip(": ")
    return ""


def _outcome(result: Any) -> Completion | RequestFailed:
    kind = getattr(result, "type", None)
    if kind == "succeeded":
        return completion_from_message(result.message)
    if kind == "errored":
        inner = getattr(getattr(result, "error", None), "error", None)
        return RequestFailed(
            f"errored: {getattr(inner, 'type', 'unknown')}: {getattr(inner, 'message', '')}".rstrip(": "),
            retryable=False,
        )
    return RequestFailed(f"{kind}", retryable=False)
