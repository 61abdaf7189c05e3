"""Streaming generation of an image prompt from a Chinese description with MLX."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import mlx.core as mx

from .errors import GenerationError
from .i18n import _
from .json_repair import StreamingJsonCloser, repair_json
from .models.loading import LoadedModel
from .prompts import PromptFormat, build_messages

logger = logging.getLogger(__name__)

REPLACEMENT_CHAR = "\ufffd"

# The values of ``GenerationStats.json_method``: how a JSON prompt was made valid.
# ``describe_json_method`` explains each one.
JSON_METHODS = (
    "constrained", "constrained+closed", "server-constrained", "server-constrained+closed", "as-is", "repaired", "failed",
)


@dataclass
class GenerationSettings:
    """Sampling settings; the defaults are the product's: temperature 0.7, top-p 0.9, 2,048 new tokens."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 2048
    seed: int | None = None
    repetition_penalty: float | None = None  # mlx-lm's penalty over the last 64 tokens; None or 1.0 is off
    # With the JSON format, keep decoding to json_schema; False leaves only the repair pass after generation.
    constrain_json: bool = True
    json_schema: dict[str, Any] | None = None  # a JSON Schema; None is any JSON object

    def validate(self) -> None:
        if self.temperature < 0:
            raise GenerationError(_("--temperature must be 0 or more, got {value}").format(value=self.temperature))
        if not 0 < self.top_p <= 1:
            raise GenerationError(_("--top-p must be in (0, 1], got {value}").format(value=self.top_p))
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise GenerationError(_("--repetition-penalty must be positive, got {value}").format(value=self.repetition_penalty))
        if self.max_tokens < 1:
            raise GenerationError(_("--max-tokens must be at least 1, got {value}").format(value=self.max_tokens))


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    time_to_first_token: float | None = None  # seconds from the call to the first text
    decode_seconds: float = 0.0
    finish_reason: str | None = None  # "stop" (end-of-turn token) or "length" (max_tokens reached)
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    json_method: str | None = None  # one of JSON_METHODS for a JSON prompt, None for text
    json_text: str | None = None  # the final JSON: equal to text unless the repair pass rewrote it, None when nothing parses
    json_changes: list[str] = field(default_factory=list)  # what closing or repair changed, empty when nothing

    @property
    def tokens_per_second(self) -> float:
        # The first token's time belongs to prompt processing, so it is left out.
        if self.generated_tokens < 2 or self.decode_seconds <= 0:
            return 0.0
        return (self.generated_tokens - 1) / self.decode_seconds


class IncrementalDecoder:
    """Turn token ids, one at a time, into text chunks that never split a character.

    Byte-level BPE tokens can end in the middle of a multi-byte UTF-8 character,
    which the tokenizer decodes as U+FFFD. Such tokens are held back until the
    character is complete; decoding restarts at every completed boundary, which
    is exact for byte-level BPE. Special tokens are skipped.
    """

    # A character has at most 4 UTF-8 bytes, but the tokens that carry them may
    # also carry the bytes of the next incomplete character. A run of this many
    # tokens that still ends in U+FFFD is taken to be invalid output, and the
    # replacement characters are dropped.
    MAX_PENDING = 16

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._pending: list[int] = []

    def add(self, token_id: int) -> str:
        self._pending.append(token_id)
        text = self._tokenizer.decode(self._pending, skip_special_tokens=True)
        if text.endswith(REPLACEMENT_CHAR) and len(self._pending) < self.MAX_PENDING:
            return ""
        self._pending = []
        return text.replace(REPLACEMENT_CHAR, "")

    def flush(self) -> str:
        """Return what is left; an incomplete character at the end is dropped."""
        text = self._tokenizer.decode(self._pending, skip_special_tokens=True)
        self._pending = []
        return text.replace(REPLACEMENT_CHAR, "")


def check_request(description: str, settings: GenerationSettings) -> None:
    """Raise ``GenerationError`` for invalid settings or an empty description; every backend calls this first."""
    settings.validate()
    if not description.strip():
        raise GenerationError(_("the description is empty; type a short Chinese description of the image"))


def render_prompt_ids(tokenizer, description: str, prompt_format: PromptFormat) -> list[int]:
    """Return the token ids of the chat prompt exactly as training renders it."""
    messages = build_messages(description, prompt_format)
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def stream_generate(
    loaded: LoadedModel,
    description: str,
    prompt_format: PromptFormat = "text",
    settings: GenerationSettings | None = None,
    stats: GenerationStats | None = None,
    should_stop=None,
) -> Iterator[str]:
    """Yield text chunks of the generated prompt as tokens arrive.

    ``stats`` is filled in as generation proceeds. ``should_stop`` is an optional
    callable checked before each token; returning True ends generation (used to
    cancel from the TUI). A JSON prompt is constrained to ``settings.json_schema``
    unless ``settings.constrain_json`` is False, and ends valid (see ``stream_json``).
    """
    from mlx_lm.sample_utils import make_logits_processors

    settings = settings or GenerationSettings()
    check_request(description, settings)
    stats = stats if stats is not None else GenerationStats()

    processors = []
    if settings.repetition_penalty and settings.repetition_penalty != 1.0:
        processors = make_logits_processors(repetition_penalty=settings.repetition_penalty, repetition_context_size=64)
    constraint = None
    if prompt_format == "json" and settings.constrain_json:
        from .json_constrain import make_json_constraint

        constraint = make_json_constraint(loaded.tokenizer, settings.json_schema)
        if constraint is not None:
            processors.append(constraint)  # last, so that nothing changes the logits after the mask

    chunks = _stream_tokens(loaded, description, prompt_format, settings, stats, should_stop, processors, constraint)
    if prompt_format == "json":
        chunks = stream_json(chunks, stats, "constrained" if constraint is not None else None)
    yield from chunks
    if constraint is not None and constraint.mask_count:
        logger.info(
            "JSON constraint: %d masks, %.3f ms each", constraint.mask_count, 1000 * constraint.mask_seconds / constraint.mask_count
        )


def _stream_tokens(loaded, description, prompt_format, settings, stats, should_stop, processors, constraint) -> Iterator[str]:
    from mlx_lm.generate import stream_generate as mlx_stream_generate
    from mlx_lm.sample_utils import make_sampler

    tokenizer = loaded.tokenizer
    prompt_ids = render_prompt_ids(tokenizer, description, prompt_format)
    stats.prompt_tokens = len(prompt_ids)
    if settings.seed is not None:
        mx.random.seed(settings.seed)
    sampler = make_sampler(temp=settings.temperature, top_p=settings.top_p if settings.temperature > 0 else 0.0)
    decoder = IncrementalDecoder(tokenizer)
    eos_ids = set(tokenizer.eos_token_ids)

    started = time.perf_counter()
    first_token_at: float | None = None
    for response in mlx_stream_generate(
        loaded.model, tokenizer, mx.array(prompt_ids), max_tokens=settings.max_tokens, sampler=sampler,
        logits_processors=processors or None,
    ):
        token = int(response.token)
        if response.finish_reason == "stop" or token in eos_ids:
            stats.finish_reason = "stop"
            break
        if constraint is not None and constraint.error is not None:
            # The matcher has already seen this token and rejected it, so it is not shown.
            stats.finish_reason = "error"
            break
        if first_token_at is None:
            first_token_at = time.perf_counter()
            stats.time_to_first_token = first_token_at - started
        stats.generated_tokens += 1
        stats.token_ids.append(token)
        stats.decode_seconds = time.perf_counter() - first_token_at
        chunk = decoder.add(token)
        if chunk:
            stats.text += chunk
            yield chunk
        if response.finish_reason == "length":
            stats.finish_reason = "length"
            break
        if should_stop is not None and should_stop():
            stats.finish_reason = "cancelled"
            break
    rest = decoder.flush()
    if rest:
        stats.text += rest
        yield rest
    logger.info(
        "Generated %d tokens (%s) at %.1f tokens/s",
        stats.generated_tokens,
        stats.finish_reason,
        stats.tokens_per_second,
    )


def stream_json(chunks: Iterable[str], stats: GenerationStats, constraint: str | None) -> Iterator[str]:
    """Yield the chunks of a JSON prompt so that they end as valid JSON, and fill ``stats.json_*``.

    ``constraint`` is "constrained" (decoding was kept to the schema here),
    "server-constrained" (the Ollama server kept it) or None. A constrained
    stream is a JSON prefix. ``StreamingJsonCloser`` holds back text that could
    not be closed, such as a half-written key, and when generation stops early
    the characters that close the structure follow as a last chunk. So the
    chunks alone form the final JSON.
    An unconstrained stream passes through unchanged and gets ``repair_json``
    at the end, which may rewrite it: ``stats.json_text`` then differs from
    ``stats.text``. So does a constrained stream that stops being a JSON prefix.
    """
    if constraint is None:
        yield from chunks
        _repair_json_text(stats)
        return

    closer = StreamingJsonCloser()
    emitted: list[str] = []
    for chunk in chunks:
        text = closer.feed(chunk)
        if text:
            emitted.append(text)
            yield text
    if not closer.valid:
        logger.warning("the %s output is not a JSON prefix; the repair pass runs on it", constraint)
        _repair_json_text(stats)
        return

    closing = closer.close()
    if closer.held_back:
        dropped = closer.held_back
        preview = dropped if len(dropped) <= 30 else dropped[:30] + "…"
        stats.json_changes.append(f"dropped {len(dropped)} trailing characters that cannot be closed ({preview!r})")
    if closing:
        stats.json_changes.append(f"appended {closing!r}")
        emitted.append(closing)
        yield closing
    stats.text = "".join(emitted)
    stats.json_text = stats.text
    stats.json_method = constraint if closer.complete else f"{constraint}+closed"


def _repair_json_text(stats: GenerationStats) -> None:
    result = repair_json(stats.text)
    stats.json_changes = list(result.actions)
    if not result.ok:
        stats.json_method, stats.json_text = "failed", None
    else:
        stats.json_method = "repaired" if result.actions else "as-is"
        stats.json_text = result.text


def describe_json_method(stats: GenerationStats) -> str:
    """Return one line, for the user, on how the JSON prompt in ``stats`` was made valid."""
    changes = "; ".join(stats.json_changes)
    explanations = {
        "constrained": _("decoding was constrained to the JSON Schema; the JSON is complete as generated"),
        "constrained+closed": _("decoding was constrained to the JSON Schema; generation stopped early and the JSON was closed ({changes})"),
        "server-constrained": _("the Ollama server constrained decoding to the JSON Schema; the JSON is complete as generated"),
        "server-constrained+closed": _(
            "the Ollama server constrained decoding to the JSON Schema; generation stopped early and the JSON was closed ({changes})"
        ),
        "as-is": _("decoding was not constrained; the output parses as generated"),
        "repaired": _("decoding was not constrained; the output parses after repair ({changes})"),
        "failed": _("the output is not valid JSON, and the repair pass cannot fix it ({changes})"),
    }
    explanation = explanations.get(stats.json_method or "", _("unknown")).format(changes=changes)
    return _("JSON method {method}: {explanation}").format(method=stats.json_method, explanation=explanation)


def generate_text(loaded: LoadedModel, description: str, prompt_format: PromptFormat = "text", settings: GenerationSettings | None = None) -> tuple[str, GenerationStats]:
    """Generate the whole prompt and return it with its statistics."""
    stats = GenerationStats()
    text = "".join(stream_generate(loaded, description, prompt_format, settings, stats))
    return text, stats
