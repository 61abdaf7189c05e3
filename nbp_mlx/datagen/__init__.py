"""Generate training data with a language model: ``describe`` writes a Chinese
description for each prompt, ``augment`` writes paraphrase variants of it.

The engine (``engine.py``) is shared by both tasks (``tasks.py``) and both
backends: the Anthropic API (``anthropic_backend.py``) and a local MLX model
(``local_backend.py``). Prices live in ``pricing.py``.
"""

from .engine import (
    DEFAULT_MODEL,
    DatagenConfig,
    DatagenError,
    DatagenResult,
    DryRunEstimate,
    MissingApiKeyError,
    estimate_run,
    run_datagen,
)

__all__ = [
    "DEFAULT_MODEL",
    "DatagenConfig",
    "DatagenError",
    "DatagenResult",
    "DryRunEstimate",
    "MissingApiKeyError",
    "estimate_run",
    "run_datagen",
]
