"""Prove that an exported model reproduces its adapter: same prompt tokens, same greedy tokens.

Four renderings of the training prompt must give identical token ids: the MLX
chat template (what training saw), the GGUF's embedded chat template
tokenized by llama.cpp, and the Ollama Modelfile ``TEMPLATE`` tokenized by
llama.cpp. Then greedy decoding with the end-of-turn tokens banned, so every
model decodes the full count, must give the same ids for base model +
adapter (MLX), the fused folder (MLX) and the F32 GGUF (llama.cpp). An F16
GGUF rounds every weight, so it only has to agree on a shorter prefix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..backends.llamacpp import argmax_with_margin, greedy_token_ids, open_gguf, prompt_token_ids
from ..i18n import _
from ..models.loading import LoadedModel, adapter_base_model, load_model
from ..prompts import SYSTEM_PROMPT, build_messages, render_instruction
from . import ExportError
from .ollama import CHATML_TEMPLATE, read_modelfile_template, render_ollama_template

logger = logging.getLogger(__name__)

DEFAULT_TOKENS = 32
# Greedy tokens that an F16 GGUF must share with base model + adapter.
F16_PREFIX = 16


@dataclass
class CheckRow:
    """One compared form of the model: its token ids and how many agree with the reference."""

    name: str
    kind: str  # "prompt" or "greedy"
    token_ids: list[int]
    agreeing: int  # length of the common prefix with the reference row
    required: int  # agreeing tokens needed to pass
    min_margin: float | None = None  # smallest top-1 minus top-2 logit along the greedy path

    @property
    def passed(self) -> bool:
        return self.agreeing >= self.required


@dataclass
class CheckReport:
    """The rows of an export check; the first row of each kind is the reference."""

    description: str
    rows: list[CheckRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def row(self, name: str) -> CheckRow:
        return next(row for row in self.rows if row.name == name)


def check_export(
    adapter: str | Path,
    fused: str | Path,
    gguf: str | Path,
    gguf_f16: str | Path | None = None,
    *,
    model: str | None = None,
    modelfile: str | Path | None = None,
    description: str | None = None,
    tokens: int = DEFAULT_TOKENS,
    f16_prefix: int = F16_PREFIX,
) -> CheckReport:
    """Compare prompt token ids and greedy token ids across the exported forms of ``adapter``.

    ``model`` defaults to the base model recorded in the adapter. ``modelfile``
    defaults to the template that ``export ollama`` writes.
    """
    from ..fuse import PARITY_DESCRIPTION, apply_adapter
    from ..models.resolve import resolve_model

    description = description or PARITY_DESCRIPTION
    report = CheckReport(description)
    base = model or adapter_base_model(Path(adapter))
    if not base:
        raise ExportError(_("{path}: the adapter records no base model; pass --model").format(path=adapter))

    with_adapter = _load_float32(base)
    apply_adapter(with_adapter, adapter)
    fused_model = _load_float32(str(fused))

    messages = build_messages(description, "text")
    reference_prompt = list(with_adapter.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    banned = set(with_adapter.tokenizer.eos_token_ids)
    llm = open_gguf(gguf, n_ctx=len(reference_prompt) + tokens + 8, float32_cache=True)
    try:
        template, system = _modelfile_template(modelfile)
        ollama_text = render_ollama_template(template, system=system, prompt=render_instruction(description, "text"))
        prompt_rows = [
            ("MLX chat template", reference_prompt),
            ("GGUF chat template (llama.cpp)", prompt_token_ids(llm, messages)),
            ("Modelfile TEMPLATE (llama.cpp)", llm.tokenize(ollama_text.encode("utf-8"), add_bos=False, special=True)),
        ]
        for name, ids in prompt_rows:
            agreeing = _common_prefix(ids, reference_prompt)
            required = len(reference_prompt) if len(ids) == len(reference_prompt) else len(reference_prompt) + 1
            report.rows.append(CheckRow(name, "prompt", ids, agreeing, required))

        reference, margins = mlx_greedy_token_ids(with_adapter.model, reference_prompt, tokens, banned)
        report.rows.append(CheckRow(_("base model + adapter (MLX)"), "greedy", reference, tokens, tokens, min(margins)))
        fused_ids, margins = mlx_greedy_token_ids(fused_model.model, reference_prompt, tokens, banned)
        report.rows.append(CheckRow(_("fused (MLX)"), "greedy", fused_ids, _common_prefix(fused_ids, reference), tokens, min(margins)))
        gguf_ids, margins = greedy_token_ids(llm, reference_prompt, tokens, banned)
        report.rows.append(CheckRow(_("GGUF (llama.cpp)"), "greedy", gguf_ids, _common_prefix(gguf_ids, reference), tokens, min(margins)))
    finally:
        llm.close()

    if gguf_f16 is not None:
        llm16 = open_gguf(gguf_f16, n_ctx=len(reference_prompt) + tokens + 8)
        try:
            f16_ids, margins = greedy_token_ids(llm16, reference_prompt, tokens, banned)
        finally:
            llm16.close()
        report.rows.append(
            CheckRow(_("GGUF F16 (llama.cpp)"), "greedy", f16_ids, _common_prefix(f16_ids, reference), min(f16_prefix, tokens), min(margins))
        )
    logger.info("Export check of %s: %s", adapter, "passed" if report.passed else "FAILED")
    return report


def mlx_greedy_token_ids(model, prompt_ids: list[int], count: int, banned: set[int] = frozenset()) -> tuple[list[int], list[float]]:
    """Decode ``count`` tokens greedily with MLX, never choosing a ``banned`` id; return them with their top-2 margins."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array([prompt_ids]), cache=cache)[0, -1]
    tokens: list[int] = []
    margins: list[float] = []
    for _step in range(count):
        values = np.array(logits.astype(mx.float32))
        if banned:
            values[list(banned)] = -np.inf
        token, margin = argmax_with_margin(values)
        tokens.append(token)
        margins.append(margin)
        logits = model(mx.array([[token]]), cache=cache)[0, -1]
    return tokens, margins


def _load_float32(spec: str) -> LoadedModel:
    loaded = load_model(spec)
    loaded.model.set_dtype(mx.float32)
    return loaded


def _modelfile_template(modelfile: str | Path | None) -> tuple[str, str]:
    if modelfile is None:
        return CHATML_TEMPLATE, SYSTEM_PROMPT
    template, system = read_modelfile_template(modelfile)
    return template, system if system is not None else ""


def _common_prefix(left: list[int], right: list[int]) -> int:
    count = 0
    for a, b in zip(left, right):
        if a != b:
            break
        count += 1
    return count
