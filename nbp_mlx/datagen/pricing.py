"""The price table for Claude models and the cost of a run's token usage.

Prices are USD per million tokens, from Anthropic's pricing and model pages on
platform.claude.com as read in December 2026. "Cache write" is the 5-minute
prompt-cache write price. The Message Batches API bills input and output at
50 % of these prices. A model missing from the table has an unknown cost,
which callers show as unknown rather than as a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..i18n import _

BATCH_DISCOUNT = 0.5
LOCAL_MODEL_PREFIX = "local:"


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens for one model."""

    input: float
    output: float
    cache_write: float
    cache_read: float


PRICES: dict[str, ModelPrice] = {
    "claude-opus-5-5": ModelPrice(input=4.00, output=20.00, cache_write=5.00, cache_read=0.20),
    "claude-opus-5": ModelPrice(input=5.00, output=25.00, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-8": ModelPrice(input=5.00, output=25.00, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-7": ModelPrice(input=5.00, output=25.00, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-6": ModelPrice(input=5.00, output=25.00, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-5": ModelPrice(input=5.00, output=25.00, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-1": ModelPrice(input=15.00, output=75.00, cache_write=18.75, cache_read=1.50),
    "claude-opus-4": ModelPrice(input=15.00, output=75.00, cache_write=18.75, cache_read=1.50),
    # NOTE: Sonnet 5.5's cache-read price is reported as cut from $0.20 to $0.10 on
    # 2026-10-07; the model page read here still showed $0.20. Cache reads are a
    # small part of a datagen run, so the cost is off by well under 1 % either way.
    "claude-sonnet-5-5": ModelPrice(input=2.00, output=10.00, cache_write=2.50, cache_read=0.10),
    "claude-sonnet-5": ModelPrice(input=2.00, output=10.00, cache_write=2.50, cache_read=0.20),
    "claude-sonnet-4-5": ModelPrice(input=3.00, output=15.00, cache_write=3.75, cache_read=0.30),
    "claude-sonnet-4": ModelPrice(input=3.00, output=15.00, cache_write=3.75, cache_read=0.30),
    "claude-haiku-4-5": ModelPrice(input=1.00, output=5.00, cache_write=1.25, cache_read=0.10),
}

# A dated snapshot id such as claude-sonnet-4-5-20250929 costs what its alias costs.
_DATE_SUFFIX = re.compile(r"-\d{8}$")


@dataclass
class Usage:
    """Token counts of one or more requests, as the Messages API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cache_read_tokens += other.cache_read_tokens


def price_for(model: str) -> ModelPrice | None:
    """Return the price of ``model``, or ``None`` when the table does not list it."""
    if model.startswith(LOCAL_MODEL_PREFIX):
        return ModelPrice(0.0, 0.0, 0.0, 0.0)
    name = _DATE_SUFFIX.sub("", model.strip().lower())
    return PRICES.get(name)


def cost_usd(model: str, usage: Usage, *, batch: bool = False) -> float | None:
    """Return the cost of ``usage`` on ``model`` in USD, or ``None`` when the price is unknown.

    ``input_tokens`` counts only the uncached input, as in the API's usage block,
    so the four counts are billed separately and add up.
    """
    price = price_for(model)
    if price is None:
        return None
    factor = BATCH_DISCOUNT if batch else 1.0
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_write_tokens * price.cache_write
        + usage.cache_read_tokens * price.cache_read
    )
    return total * factor / 1_000_000


def format_cost(cost: float | None) -> str:
    """Format a cost for display; an unknown cost reads ``unknown``."""
    if cost is None:
        return _("unknown")
    return f"${cost:.4f}"
