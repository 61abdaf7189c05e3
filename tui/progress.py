"""Bridges from the library's progress interfaces to Textual messages.

Library calls run in thread workers. These adapters never touch a widget:
they post messages to a target widget (``post_message`` is thread-safe), and
the widget's ``on_…`` handlers update the screen in the event loop.
"""

from __future__ import annotations

from textual.message import Message
from textual.widget import Widget

from nbp_mlx.train import TrainEvent, TrainingObserver


class ProgressStarted(Message):
    def __init__(self, task: str, total: float | None, unit: str) -> None:
        super().__init__()
        self.task = task
        self.total = total
        self.unit = unit


class ProgressUpdated(Message):
    def __init__(self, completed: float, total: float | None, detail: str) -> None:
        super().__init__()
        self.completed = completed
        self.total = total
        self.detail = detail


class ProgressNote(Message):
    """One line of information from a ``Progress.message`` call."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ProgressFinished(Message):
    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail


class MessageProgress:
    """A ``nbp_mlx.progress.Progress`` that posts ``Progress…`` messages to ``target``."""

    def __init__(self, target: Widget) -> None:
        self.target = target

    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        self.target.post_message(ProgressStarted(task, total, unit))

    def update(self, completed: float, total: float | None = None, detail: str = "") -> None:
        self.target.post_message(ProgressUpdated(completed, total, detail))

    def message(self, text: str) -> None:
        self.target.post_message(ProgressNote(text))

    def finish(self, detail: str = "") -> None:
        self.target.post_message(ProgressFinished(detail))


class TrainEventMessage(Message):
    def __init__(self, event: TrainEvent) -> None:
        super().__init__()
        self.event = event


class MessageObserver(TrainingObserver):
    """A ``TrainingObserver`` that posts each ``TrainEvent`` to ``target``."""

    def __init__(self, target: Widget) -> None:
        self.target = target

    def on_event(self, event: TrainEvent) -> None:
        self.target.post_message(TrainEventMessage(event))
