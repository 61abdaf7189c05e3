"""Rich-based progress output for the command line (stderr, so stdout stays for results)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichBar, TextColumn, TimeRemainingColumn

from .i18n import _
from .train import TrainEvent, TrainingObserver, eta_text

stderr_console = Console(stderr=True, highlight=False, soft_wrap=True)


class RichProgress:
    """``Progress`` drawn as a Rich bar on stderr."""

    def __init__(self, console: Console | None = None):
        self.console = console or stderr_console
        self._bar: RichBar | None = None
        self._task = None

    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        self.finish()
        self._bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn() if unit != "B" else TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}", style="dim"),
            console=self.console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(task, total=total, detail="")

    def update(self, completed: float, total: float | None = None, detail: str = "") -> None:
        if self._bar is None:
            return
        self._bar.update(self._task, completed=completed, total=total, detail=detail[:40])

    def message(self, text: str) -> None:
        self.console.print(text)

    def finish(self, detail: str = "") -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class CliTrainingObserver(TrainingObserver):
    """Prints training reports as lines and keeps a progress bar with the ETA."""

    def __init__(self, console: Console | None = None):
        self.console = console or stderr_console
        self._bar: RichBar | None = None
        self._task = None

    def on_event(self, event: TrainEvent) -> None:
        if event.kind == "plan":
            self._bar = RichBar(
                TextColumn(_("training")), BarColumn(), MofNCompleteColumn(), TextColumn(_("ETA") + " {task.fields[eta]}", style="dim"),
                console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=event.total_iterations, eta="?")
        elif event.kind == "iteration" and self._bar is not None:
            self._bar.update(self._task, completed=event.iteration, eta=eta_text(event.eta_seconds))
        elif event.kind == "train":
            self.console.print(
                _("iteration {it}/{total}  loss {loss:.3f}  lr {lr:.2e}  {tps:.0f} tokens/s  peak memory {mem:.2f} GB").format(
                    it=event.iteration, total=event.total_iterations, loss=event.train_loss, lr=event.learning_rate,
                    tps=event.tokens_per_second, mem=event.peak_memory_gb,
                )
            )
        elif event.kind == "val":
            self.console.print(_("iteration {it}/{total}  validation loss {loss:.3f}").format(it=event.iteration, total=event.total_iterations, loss=event.val_loss))
        elif event.kind == "save":
            self.console.print(_("saved checkpoint {path}").format(path=event.path), style="dim")
        elif event.kind in ("done", "stopped"):
            if self._bar is not None:
                self._bar.stop()
                self._bar = None


def print_rows(rows: list[tuple[str, str]], title: str, console: Console | None = None) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    (console or stderr_console).print(table)


def write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
