"""Constrain MLX decoding to a JSON Schema with llguidance.

``JsonConstraint`` is an mlx-lm logits processor. Before each token an
llguidance matcher computes the token ids that can continue the JSON text, and
the processor sets the logits of every other id to -inf. So whatever the
sampler picks keeps the text a prefix of a document that the schema accepts.
End-of-turn is allowed only once the document is complete, and then it is the
only choice.

The schemas are plain JSON Schema dicts: ``ANY_OBJECT_SCHEMA`` (the default),
``NBP_SCHEMA`` with the common Nano Banana Pro keys, or a user's file read by
``load_json_schema``. The llama.cpp and Ollama backends use the same dicts.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import weakref
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import GenerationError
from .i18n import _

logger = logging.getLogger(__name__)

ANY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}

# Any JSON value, spelled out as a list of types: llama-cpp-python's schema
# converter (0.3.36) reads an empty schema ``{}`` as "any object", not "any value".
ANY_VALUE: dict[str, Any] = {"type": ["string", "number", "boolean", "object", "array", "null"]}

# Only "subject" is required. It is the one key every image prompt needs, and the
# most common key of the JSON prompts in the sample data (76 of 178). The others
# depend on the kind of image (a logo has no camera, a landscape no pose), so a
# required key there would make the model invent content. The grammars of both
# llguidance and llama.cpp allow the listed keys only in this order, and extra
# keys only after them.
NBP_KEYS = ("subject", "appearance", "clothing", "pose", "environment", "scene", "lighting", "camera", "style", "quality")
NBP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {key: ANY_VALUE for key in NBP_KEYS},
    "required": ["subject"],
    "additionalProperties": ANY_VALUE,
}

# Each whitespace run between JSON tokens may contain up to 64 spaces, tabs or line
# breaks, so a looping model cannot fill its token budget with one run of whitespace.
# The pretty-printed JSON prompts in the sample data need at most 22.
WHITESPACE_PATTERN = r"[\x20\x09\x0A\x0D]{0,64}"
COMPILE_OPTIONS = {
    "whitespace_pattern": WHITESPACE_PATTERN,
    # Without this llguidance rejects \u escapes of printable characters, such as \u00e9.
    "json_allow_general_unicode_escapes": True,
}


def load_json_schema(spec: str) -> dict[str, Any]:
    """Return the JSON Schema named by ``spec``: ``object``, ``nbp`` or the path of a JSON Schema file.

    Raises ``GenerationError`` naming the file when it is missing, is not JSON,
    is not a JSON object or cannot be compiled into a grammar.
    """
    if spec == "object":
        return ANY_OBJECT_SCHEMA
    if spec == "nbp":
        return NBP_SCHEMA

    path = Path(spec)
    if not path.is_file():
        raise GenerationError(
            _("{path}: JSON Schema file not found; pass object, nbp or the path of a JSON Schema file to --json-schema").format(path=path)
        )
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise GenerationError(_("{path}: the JSON Schema file is not UTF-8 text ({reason}); save it as UTF-8").format(path=path, reason=error)) from error
    except json.JSONDecodeError as error:
        raise GenerationError(
            _("{path}: invalid JSON at line {line}, column {column} ({reason}); fix the file or pass --json-schema object").format(
                path=path, line=error.lineno, column=error.colno, reason=error.msg
            )
        ) from error
    if not isinstance(schema, dict):
        raise GenerationError(
            _("{path}: a JSON Schema must be a JSON object, got {kind}; for any JSON object pass --json-schema object").format(
                path=path, kind=type(schema).__name__
            )
        )
    problem = schema_compile_error(schema)
    if problem:
        raise GenerationError(
            _("{path}: the JSON Schema cannot be compiled into a grammar ({reason}); fix the schema or pass --json-schema object").format(
                path=path, reason=problem
            )
        )
    return schema


def schema_compile_error(schema: dict[str, Any]) -> str:
    """Return llguidance's error for ``schema``, or an empty string when it compiles."""
    from llguidance import LLMatcher

    try:
        grammar = LLMatcher.grammar_from_json_schema(schema, defaults=COMPILE_OPTIONS)
    except ValueError as error:
        return str(error)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    return " ".join(messages[0].split()) if is_error else ""  # llguidance's messages span several lines


# One llguidance tokenizer per Hugging Face tokenizer object, because building one
# reads the whole vocabulary (about a second, by llguidance's own estimate).
_LL_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ll_tokenizer_for(tokenizer):
    """Return the llguidance tokenizer of an mlx-lm ``TokenizerWrapper`` or a fast transformers tokenizer.

    The first call for a tokenizer builds it, and later calls reuse it. Returns
    None when the tokenizer has no Rust ``backend_tokenizer`` (a slow tokenizer),
    because llguidance reads the vocabulary from its JSON.
    """
    from llguidance import LLTokenizer

    hf_tokenizer = getattr(tokenizer, "_tokenizer", tokenizer)
    cached = _LL_TOKENIZERS.get(hf_tokenizer)
    if cached is not None:
        return cached
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None

    # Padding and truncation settings would change how llguidance tokenizes, so a copy without them is serialized.
    backend = copy.copy(backend)
    backend.no_padding()
    backend.no_truncation()
    ll_tokenizer = LLTokenizer(backend.to_str(), eos_token=sorted(end_of_turn_ids(tokenizer)))
    _LL_TOKENIZERS[hf_tokenizer] = ll_tokenizer
    return ll_tokenizer


def end_of_turn_ids(tokenizer) -> set[int]:
    """Return the ids that end generation: mlx-lm's ``eos_token_ids``, else the tokenizer's ``eos_token_id``."""
    ids = getattr(tokenizer, "eos_token_ids", None)
    if ids:
        return {int(token) for token in ids}
    return {int(tokenizer.eos_token_id)}


class JsonConstraint:
    """An mlx-lm logits processor that keeps the generated text inside a JSON Schema.

    mlx-lm calls it once per token with every token id so far (the prompt, then
    one more id per call) and the logits of the next token. The first call
    records the prompt length, and every later call first feeds the newly
    sampled id to the matcher. mlx-lm computes step n+1 before it hands token n
    to the caller, so the matcher has seen each token before the caller does,
    and ``error`` is set before a rejected token would be shown.
    """

    def __init__(self, ll_tokenizer, schema: dict[str, Any], end_ids: set[int]):
        from llguidance import LLMatcher
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        grammar = LLMatcher.grammar_from_json_schema(schema, defaults=COMPILE_OPTIONS)
        self.matcher = LLMatcher(ll_tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise GenerationError(
                _("the JSON Schema cannot be compiled into a grammar ({reason}); fix the schema or pass --json-schema object").format(
                    reason=" ".join(self.matcher.get_error().split())
                )
            )
        self.vocab_size = ll_tokenizer.vocab_size
        self.end_ids = sorted(end_ids)
        self.error: str | None = None
        self.mask_count = 0
        self.mask_seconds = 0.0
        self._bitmask = allocate_token_bitmask(1, self.vocab_size)
        self._fill_bitmask = fill_next_token_bitmask
        self._prompt_length: int | None = None
        self._consumed = 0
        self._allowed_row: np.ndarray | None = None
        self._end_only: mx.array | None = None

    @property
    def complete(self) -> bool:
        """Whether the text so far is a whole document that the schema accepts."""
        return self.matcher.is_accepting()

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self._prompt_length is None:
            self._prompt_length = tokens.size
        else:
            for token in tokens[self._prompt_length + self._consumed :].tolist():
                self._consume(int(token))
        if self.error is not None:
            return logits

        started = time.perf_counter()
        allowed = self._allowed_ids(logits.shape[-1])
        self.mask_seconds += time.perf_counter() - started
        self.mask_count += 1
        return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))

    def _consume(self, token: int) -> None:
        self._consumed += 1
        if self.error is not None:
            return
        if not self.matcher.consume_token(token):
            self.error = self.matcher.get_error() or f"token {token} rejected"
            # llguidance's message goes on with the parser state and the whole grammar.
            logger.error("the JSON matcher rejected token %d after %d tokens: %s", token, self._consumed, self.error[:300])

    def _allowed_ids(self, width: int) -> mx.array:
        """Return a boolean row of ``width`` entries, True for the ids that may come next."""
        if self.matcher.is_accepting() or self.matcher.is_stopped():
            # The document is complete: end-of-turn is the only choice.
            if self._end_only is None or self._end_only.shape[-1] != width:
                row = np.zeros(width, dtype=bool)
                row[[token for token in self.end_ids if token < width]] = True
                self._end_only = mx.array(row)
            return self._end_only

        self._fill_bitmask(self.matcher, self._bitmask)
        # Bit i of 32-bit word w allows id 32 * w + i. Viewed as little-endian
        # bytes, unpackbits(bitorder="little") lists the bits in id order.
        bits = np.unpackbits(self._bitmask.astype("<i4", copy=False).view(np.uint8), bitorder="little")
        if self._allowed_row is None or self._allowed_row.size != width:
            # Qwen pads its logits past the tokenizer's vocabulary (151,936 rows for
            # 151,665 tokens); ids that no token owns stay False.
            self._allowed_row = np.zeros(width, dtype=bool)
        known = min(self.vocab_size, width)
        self._allowed_row[:known] = bits[:known]
        return mx.array(self._allowed_row)


def make_json_constraint(tokenizer, schema: dict[str, Any] | None) -> JsonConstraint | None:
    """Return a ``JsonConstraint`` for ``tokenizer`` and ``schema`` (None: any JSON object).

    Returns None, after logging a warning, when the tokenizer is not a fast
    tokenizer; the caller then falls back to the repair pass.
    """
    try:
        ll_tokenizer = ll_tokenizer_for(tokenizer)
    except ImportError as error:
        raise GenerationError(
            _("llguidance is not installed, so JSON output cannot be constrained ({reason}); install it with: pip install llguidance, or pass --no-constrain").format(
                reason=error
            )
        ) from error
    if ll_tokenizer is None:
        logger.warning("the tokenizer %s is not a fast tokenizer; JSON output is repaired instead of constrained", type(tokenizer).__name__)
        return None
    return JsonConstraint(ll_tokenizer, schema or ANY_OBJECT_SCHEMA, end_of_turn_ids(tokenizer))
