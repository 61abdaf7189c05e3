"""Exceptions raised by nbp-mlx.

Every error carries a message written for the user: what failed, on which
file, line or value, and what to do next. The CLI and the TUI catch
``NbpError`` once at their edge and show ``str(error)``; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class NbpError(Exception):
    """Base class for errors that are shown to the user without a traceback."""


class ConfigError(NbpError):
    """A configuration file or option has an invalid value."""


class DataFormatError(NbpError):
    """An input data file cannot be parsed.

    ``line`` is 1-based; ``None`` means the problem concerns the whole file.
    """

    def __init__(self, path: str | Path, line: int | None, reason: str):
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


class DatasetError(NbpError):
    """A dataset cannot be prepared or used for training."""


class ModelNotFoundError(NbpError):
    """A ``--model`` value does not resolve to a usable model."""


class ModelImportError(NbpError):
    """A model file exists but cannot be imported."""


class TrainingError(NbpError):
    """Training cannot start or continue."""


class GenerationError(NbpError):
    """Generation cannot start."""
