"""Generation from a GGUF file with llama.cpp, through llama-cpp-python.

The prompt is the chat template embedded in the GGUF file, rendered with
llama-cpp-python's ``Jinja2ChatFormatter`` (the same Jinja2 settings as
transformers' ``apply_chat_template``) and tokenized with special tokens
enabled. For a file written by ``export gguf`` this gives the token ids that
MLX renders for training; ``tests/test_export.py`` checks it.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..generate import GenerationSettings, GenerationStats, check_request, stream_json
from ..i18n import _
from ..json_constrain import ANY_OBJECT_SCHEMA
from ..models.loading import STOP_TOKENS
from ..prompts import PromptFormat, build_messages
from . import BackendError

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT = 4096
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"

# Replacements for two rules of the GBNF that llama-cpp-python (0.3.36) writes for
# a JSON Schema. Its "space" allows a single space, which forbids the indented JSON
# the model is trained on, so this one matches llguidance's whitespace pattern on
# the MLX path. Its "char" lets raw control characters into strings, which
# json.loads rejects, so this one excludes them as llama.cpp's json.gbnf does.
GBNF_RULES = {
    "space": r"[ \t\n\r]{0,64}",
    "char": r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
}


def render_chat_template(template: str, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """Render ``messages`` with a Jinja2 chat template exactly as llama-cpp-python does for chat completion."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template, eos_token="", bos_token="", add_generation_prompt=add_generation_prompt)
    return formatter(messages=messages).prompt


def open_gguf(
    gguf_path: str | Path, *, n_ctx: int = DEFAULT_CONTEXT, n_threads: int | None = None, vocab_only: bool = False,
    float32_cache: bool = False,
):
    """Load ``gguf_path`` with llama-cpp-python, raising ``BackendError`` with the fix when it cannot.

    ``float32_cache`` keeps the attention KV cache in float32 (llama.cpp's default is
    float16), for parity checks that compare logits with MLX's float32 path.
    """
    try:
        import llama_cpp
    except ImportError as error:
        raise BackendError(
            _("llama-cpp-python is not installed; install it with: pip install 'nbp-mlx[llamacpp]'")
        ) from error
    path = Path(gguf_path)
    if not path.is_file():
        raise BackendError(
            _("{path}: GGUF file not found; write one with `python -m nbp_mlx export gguf`").format(path=path)
        )
    try:
        cache_type = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if float32_cache else {}
        return llama_cpp.Llama(
            str(path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(), vocab_only=vocab_only, verbose=False,
            **cache_type,
        )
    except ValueError as error:  # llama-cpp-python raises ValueError when llama.cpp rejects the file
        raise BackendError(
            _("{path}: llama.cpp cannot load the file ({reason}); export it again").format(path=path, reason=error)
        ) from error


def prompt_token_ids(llm, messages: list[dict[str, str]], fallback_template: str | None = None) -> list[int]:
    """Return llama.cpp's token ids of ``messages`` rendered with the GGUF's embedded chat template."""
    template = llm.metadata.get(CHAT_TEMPLATE_KEY) or fallback_template
    if not template:
        raise BackendError(_("the GGUF file has no chat template ({key}); export it again with `export gguf`").format(key=CHAT_TEMPLATE_KEY))
    text = render_chat_template(template, messages)
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def stop_token_ids(llm) -> set[int]:
    """Return the ids that end generation: llama.cpp's EOS and Qwen's end-of-turn tokens."""
    ids = {int(llm.token_eos())}
    for text in STOP_TOKENS:
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) == 1:
            ids.add(tokens[0])
    return ids


def greedy_token_ids(llm, prompt_ids: list[int], count: int, banned: set[int] = frozenset()) -> tuple[list[int], list[float]]:
    """Decode ``count`` tokens greedily, never choosing a ``banned`` id, and return them with their top-2 margins.

    Used by the parity checks: every backend decodes the same number of tokens,
    whatever end-of-turn token a model would otherwise choose.
    """
    import llama_cpp

    llm.reset()
    llm.eval(prompt_ids)
    vocab_size = llm.n_vocab()
    tokens: list[int] = []
    margins: list[float] = []
    for _step in range(count):
        pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(vocab_size,)).copy()
        if banned:
            logits[list(banned)] = -np.inf
        token, margin = argmax_with_margin(logits)
        tokens.append(token)
        margins.append(margin)
        llm.eval([token])
    return tokens, margins


def json_schema_gbnf(schema: dict[str, Any] | None) -> str:
    """Return a llama.cpp GBNF grammar for ``schema`` (None: any JSON object).

    NOTE: llama-cpp-python's converter reads an empty subschema ``{}`` as "any
    object", so a user's schema with ``{}`` allows less on this backend than on
    MLX. ``json_constrain.ANY_VALUE`` is the form that means "any value" on both.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(json.dumps(schema or ANY_OBJECT_SCHEMA))
    except (AssertionError, ValueError) as error:  # how the converter reports an unsupported schema
        raise BackendError(
            _("llama.cpp cannot turn the JSON Schema into a grammar ({reason}); simplify the schema, or use --backend mlx").format(reason=error)
        ) from error
    for name, body in GBNF_RULES.items():
        grammar = re.sub(rf"^{name} ::= .*$", lambda _match, line=f"{name} ::= {body}": line, grammar, flags=re.MULTILINE)
    return grammar


def json_grammar(llm, schema: dict[str, Any] | None):
    """Return a ``LlamaGrammar`` for ``schema``, checked by llama.cpp's grammar parser."""
    import llama_cpp
    from llama_cpp.llama_grammar import LLAMA_GRAMMAR_DEFAULT_ROOT, LlamaGrammar

    text = json_schema_gbnf(schema)
    # llama-cpp-python adds the grammar sampler without checking it, and a grammar that
    # llama.cpp cannot parse gives a NULL sampler, so the grammar is parsed once here.
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), LLAMA_GRAMMAR_DEFAULT_ROOT.encode("utf-8"))
    if not sampler:
        raise BackendError(
            _("llama.cpp cannot parse the grammar made from the JSON Schema; simplify the schema, or use --backend mlx")
        )
    llama_cpp.llama_sampler_free(sampler)
    return LlamaGrammar.from_string(text)


def argmax_with_margin(logits: np.ndarray) -> tuple[int, float]:
    top_two = np.argpartition(-logits, 1)[:2]
    first, second = sorted(top_two, key=lambda index: -logits[index])
    return int(first), float(logits[first] - logits[second])


class LlamaCppBackend:
    """Generation from a GGUF file with llama.cpp."""

    name = "llamacpp"

    def __init__(self, gguf_path: str | Path, *, n_ctx: int = DEFAULT_CONTEXT, n_threads: int | None = None):
        self.gguf_path = Path(gguf_path)
        self.llm = open_gguf(self.gguf_path, n_ctx=n_ctx, n_threads=n_threads)
        self.stop_ids = stop_token_ids(self.llm)

    def describe(self) -> str:
        return _("llama.cpp: {path} on CPU").format(path=self.gguf_path)

    def close(self) -> None:
        self.llm.close()

    def stream(
        self,
        description: str,
        prompt_format: PromptFormat,
        settings: GenerationSettings,
        stats: GenerationStats,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        check_request(description, settings)
        grammar = None
        if prompt_format == "json" and settings.constrain_json:
            grammar = json_grammar(self.llm, settings.json_schema)
        chunks = self._stream_tokens(description, prompt_format, settings, stats, should_stop, grammar)
        if prompt_format == "json":
            chunks = stream_json(chunks, stats, "constrained" if grammar is not None else None)
        return chunks

    def _stream_tokens(self, description, prompt_format, settings, stats, should_stop, grammar) -> Iterator[str]:
        prompt_ids = prompt_token_ids(self.llm, build_messages(description, prompt_format))
        stats.prompt_tokens = len(prompt_ids)
        if stats.prompt_tokens + settings.max_tokens > self.llm.n_ctx():
            logger.info("max_tokens %d exceeds the context of %d; llama.cpp stops at the context end", settings.max_tokens, self.llm.n_ctx())
        if settings.seed is not None:
            self.llm.set_seed(settings.seed)

        # llama.cpp returns the bytes of each token, and a token may end inside
        # a multi-byte UTF-8 character, so bytes are decoded incrementally.
        # Invalid bytes are dropped instead of becoming U+FFFD.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        started = time.perf_counter()
        first_token_at: float | None = None
        generator = self.llm.generate(
            prompt_ids,
            temp=settings.temperature,
            top_p=settings.top_p if settings.temperature > 0 else 1.0,
            top_k=0,
            min_p=0.0,
            # llama.cpp penalizes the last 64 tokens by default, the same window as the MLX path.
            repeat_penalty=settings.repetition_penalty or 1.0,
            # The grammar sampler allows an end-of-generation token only once the JSON is complete,
            # and nothing else after that (except trailing whitespace).
            grammar=grammar,
        )
        for token in generator:
            if token in self.stop_ids:
                stats.finish_reason = "stop"
                break
            if first_token_at is None:
                first_token_at = time.perf_counter()
                stats.time_to_first_token = first_token_at - started
            stats.generated_tokens += 1
            stats.token_ids.append(int(token))
            stats.decode_seconds = time.perf_counter() - first_token_at
            chunk = decoder.decode(self.llm.detokenize([token], special=False))
            if chunk:
                stats.text += chunk
                yield chunk
            if stats.generated_tokens >= settings.max_tokens or self.llm.n_tokens >= self.llm.n_ctx():
                stats.finish_reason = "length"
                break
            if should_stop is not None and should_stop():
                stats.finish_reason = "cancelled"
                break
        generator.close()
        rest = decoder.decode(b"", final=True)
        if rest:
            stats.text += rest
            yield rest
        logger.info("llama.cpp generated %d tokens (%s) at %.1f tokens/s", stats.generated_tokens, stats.finish_reason, stats.tokens_per_second)
