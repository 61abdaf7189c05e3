"""Streaming generation from an Ollama server (``POST /api/generate``).

Ollama streams NDJSON: one JSON object per line, the last one with
``"done": true``. A network read may end in the middle of a line, and so in
the middle of a multi-byte UTF-8 character, or hold several lines. The reader
below therefore buffers bytes and decodes only complete lines.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

try:  # anthropic 2.x installs the httpx API under the name httpx2
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed client
    import httpx

from ..generate import GenerationSettings, GenerationStats, check_request, stream_json
from ..i18n import _
from ..json_constrain import ANY_OBJECT_SCHEMA
from ..prompts import SYSTEM_PROMPT, PromptFormat, render_instruction
from . import BackendError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "http://127.0.0.1:11434"
HOST_ENV = "OLLAMA_HOST"
DEFAULT_PORT = 11434
# Seconds to wait for a connection, and between two reads of the stream
# (the first read includes loading the model into memory).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 300.0


def ollama_base_url(host: str | None = None) -> str:
    """Return the server URL for ``host`` or ``$OLLAMA_HOST`` the way the ``ollama`` CLI reads it.

    ``127.0.0.1``, ``host:port`` and full URLs are accepted, the port defaults
    to 11434, and ``0.0.0.0`` (a listen address) is reached on 127.0.0.1.
    """
    value = (host or os.environ.get(HOST_ENV) or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in value:
        value = f"http://{value}"
    parts = urlsplit(value)
    hostname = parts.hostname or "127.0.0.1"
    if hostname in ("0.0.0.0", "::"):
        hostname = "127.0.0.1"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    port = parts.port or DEFAULT_PORT
    return f"{parts.scheme}://{hostname}:{port}{parts.path}"


def iter_ndjson(chunks: Iterable[bytes]) -> Iterator[dict]:
    """Yield the JSON objects of an NDJSON byte stream, whatever the chunk boundaries."""
    buffer = b""
    line_number = 0
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            line_number += 1
            if line.strip():
                yield _parse_line(line, line_number)
    if buffer.strip():
        yield _parse_line(buffer, line_number + 1)


def _parse_line(line: bytes, line_number: int) -> dict:
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BackendError(
            _("the Ollama server sent an invalid line {line} ({reason}): {text}").format(
                line=line_number, reason=error, text=line[:200].decode("utf-8", errors="replace")
            )
        ) from error
    if not isinstance(value, dict):
        raise BackendError(_("the Ollama server sent line {line} that is not a JSON object").format(line=line_number))
    return value


class OllamaBackend:
    """Generation by an Ollama server from a model created with ``export ollama``."""

    name = "ollama"

    def __init__(self, model: str, host: str | None = None, *, transport=None):
        self.model = model
        self.base_url = ollama_base_url(host)
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            transport=transport,
            trust_env=False,
        )

    def describe(self) -> str:
        return _("Ollama: model {model} at {url}").format(model=self.model, url=self.base_url)

    def close(self) -> None:
        self._client.close()

    def stream(
        self,
        description: str,
        prompt_format: PromptFormat,
        settings: GenerationSettings,
        stats: GenerationStats,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        check_request(description, settings)
        constrained = prompt_format == "json" and settings.constrain_json
        chunks = self._stream_chunks(description, prompt_format, settings, stats, should_stop, constrained)
        if prompt_format == "json":
            chunks = stream_json(chunks, stats, "server-constrained" if constrained else None)
        return chunks

    def _stream_chunks(self, description, prompt_format, settings, stats, should_stop, constrained: bool) -> Iterator[str]:
        options = {"temperature": settings.temperature, "top_p": settings.top_p, "num_predict": settings.max_tokens}
        if settings.repetition_penalty:
            options.update(repeat_penalty=settings.repetition_penalty, repeat_last_n=64)
        if settings.seed is not None:
            options["seed"] = settings.seed
        # The system prompt is sent explicitly, so a Modelfile without SYSTEM still renders the training prompt.
        request = {
            "model": self.model,
            "prompt": render_instruction(description, prompt_format),
            "system": SYSTEM_PROMPT,
            "stream": True,
            "options": options,
        }
        if constrained:
            # The server constrains decoding: "format" is "json", or a JSON Schema since Ollama 0.5.
            # The default schema goes as "json", which older servers accept too.
            schema = settings.json_schema or ANY_OBJECT_SCHEMA
            request["format"] = "json" if schema == ANY_OBJECT_SCHEMA else schema

        started = time.perf_counter()
        first_token_at: float | None = None
        try:
            with self._client.stream("POST", "/api/generate", json=request) as response:
                if response.status_code != 200:
                    self._raise_for_status(response)
                for message in iter_ndjson(response.iter_bytes()):
                    if "error" in message:
                        raise self._error_from_message(str(message["error"]))
                    chunk = message.get("response", "")
                    if chunk:
                        if first_token_at is None:
                            first_token_at = time.perf_counter()
                            stats.time_to_first_token = first_token_at - started
                        stats.generated_tokens += 1
                        stats.decode_seconds = time.perf_counter() - first_token_at
                        stats.text += chunk
                        yield chunk
                    if message.get("done"):
                        self._finish(message, stats)
                        break
                    if should_stop is not None and should_stop():
                        stats.finish_reason = "cancelled"
                        break
                else:
                    raise BackendError(
                        _("the Ollama server at {url} closed the stream before the final message; check the server log").format(url=self.base_url)
                    )
        except httpx.ConnectError as error:
            raise BackendError(
                _("cannot connect to Ollama at {url} ({reason}); start it with `ollama serve`, or set OLLAMA_HOST to its address").format(
                    url=self.base_url, reason=error
                )
            ) from error
        except httpx.TimeoutException as error:
            raise BackendError(
                _("Ollama at {url} did not answer in time ({reason}); check that the server is running and not overloaded").format(
                    url=self.base_url, reason=type(error).__name__
                )
            ) from error
        except httpx.TransportError as error:
            raise BackendError(
                _("the connection to Ollama at {url} failed ({reason}); check the server log and try again").format(url=self.base_url, reason=error)
            ) from error
        logger.info("Ollama generated %d tokens (%s) at %.1f tokens/s", stats.generated_tokens, stats.finish_reason, stats.tokens_per_second)

    def _finish(self, message: dict, stats: GenerationStats) -> None:
        reason = message.get("done_reason") or "stop"
        # "length" means num_predict was reached: the text is truncated, not broken.
        stats.finish_reason = "length" if reason == "length" else "stop"
        if message.get("prompt_eval_count") is not None:
            stats.prompt_tokens = int(message["prompt_eval_count"])
        if message.get("eval_count") is not None:
            stats.generated_tokens = int(message["eval_count"])
        if message.get("eval_duration"):
            stats.decode_seconds = int(message["eval_duration"]) / 1e9

    def _raise_for_status(self, response) -> None:
        response.read()
        try:
            error_text = str(response.json().get("error", ""))
        except (ValueError, AttributeError):
            error_text = response.text[:200]
        if response.status_code == 404 or "not found" in error_text:
            raise self._error_from_message(error_text or "model not found")
        raise BackendError(
            _("Ollama at {url} answered HTTP {status}: {error}").format(url=self.base_url, status=response.status_code, error=error_text)
        )

    def _error_from_message(self, error_text: str) -> BackendError:
        if "not found" in error_text:
            return BackendError(
                _(
                    "model '{model}' not found on Ollama at {url} ({error}); create it with "
                    "`python -m nbp_mlx export ollama --gguf FILE --name {model}` (which runs `ollama create`), "
                    "or fetch a published model with `ollama pull {model}`"
                ).format(model=self.model, url=self.base_url, error=error_text)
            )
        return BackendError(_("Ollama at {url} reported an error: {error}").format(url=self.base_url, error=error_text))
