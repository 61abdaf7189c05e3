"""One progress interface for long steps, used by the CLI bars, the TUI and tests.

A long-running library function takes a ``Progress`` and calls ``start``,
``advance``/``update`` and ``finish`` on it. ``NullProgress`` ignores
everything; ``RecordingProgress`` keeps the calls for tests. The CLI's
implementation (``cli_progress.RichProgress``) draws bars with Rich.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Progress(Protocol):
    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        """Begin ``task`` with ``total`` units of work (``None`` when unknown)."""

    def update(self, completed: float, total: float | None = None, detail: str = "") -> None:
        """Set the amount of work done so far in the current task."""

    def message(self, text: str) -> None:
        """Show one line of information to the user."""

    def finish(self, detail: str = "") -> None:
        """End the current task."""


class NullProgress:
    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        pass

    def update(self, completed: float, total: float | None = None, detail: str = "") -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self, detail: str = "") -> None:
        pass


@dataclass
class RecordingProgress:
    """A ``Progress`` that records every call, for tests."""

    events: list[tuple] = field(default_factory=list)

    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        self.events.append(("start", task, total, unit))

    def update(self, completed: float, total: float | None = None, detail: str = "") -> None:
        self.events.append(("update", completed, total, detail))

    def message(self, text: str) -> None:
        self.events.append(("message", text))

    def finish(self, detail: str = "") -> None:
        self.events.append(("finish", detail))

    def messages(self) -> list[str]:
        return [event[1] for event in self.events if event[0] == "message"]
