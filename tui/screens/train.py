"""Train tab: load a YAML config, show the mlx-lm plan, train with live loss, stop and resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Sparkline, Static

from nbp_mlx.errors import NbpError
from nbp_mlx.i18n import _
from nbp_mlx.train import StopFlag, eta_text, read_metrics

from ..progress import MessageObserver, TrainEventMessage

logger = logging.getLogger(__name__)


class PlanLoaded(Message):
    def __init__(self, config=None, rows: list[tuple[str, str]] | None = None, error: NbpError | None = None) -> None:
        super().__init__()
        self.config = config
        self.rows = rows or []
        self.error = error


class TrainingEnded(Message):
    def __init__(self, result=None, error: NbpError | None = None) -> None:
        super().__init__()
        self.result = result
        self.error = error


def describe_plan(config) -> list[tuple[str, str]]:
    """Return the resolved mlx-lm settings of ``config`` for the dataset it names, as (label, value) rows."""
    from nbp_mlx.config import plan_training
    from nbp_mlx.jsonl import iter_jsonl
    from nbp_mlx.models.resolve import resolve_model
    from nbp_mlx.train import load_split

    train_path = Path(config.dataset_dir) / "train.jsonl"
    load_split(train_path)  # raises DatasetError with the fix when the file is missing or malformed
    train_count = sum(1 for _row in iter_jsonl(train_path))
    resolved = resolve_model(config.model_name_or_path)
    model_config = json.loads((resolved.path / "config.json").read_text(encoding="utf-8"))
    return plan_training(config, train_count, int(model_config.get("num_hidden_layers", 0))).describe()


def list_runs(output_dir: Path) -> list[tuple[Path, dict]]:
    """Return (run folder, summary) for every run under ``output_dir`` that wrote metrics."""
    runs = []
    if not output_dir.is_dir():
        return runs
    for folder in sorted(path for path in output_dir.iterdir() if path.is_dir()):
        metrics = read_metrics(folder)
        if not metrics:
            continue
        train_rows = [row for row in metrics if row.get("kind") == "train"]
        val_rows = [row for row in metrics if row.get("kind") == "val"]
        state_path = folder / "trainer_state.json"
        state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
        runs.append((folder, {
            "iteration": state.get("iteration", train_rows[-1]["iteration"] if train_rows else 0),
            "total": state.get("total_iterations", "?"),
            "train_loss": train_rows[-1]["train_loss"] if train_rows else None,
            "val_loss": val_rows[-1]["val_loss"] if val_rows else None,
        }))
    return runs


class TrainScreen(Vertical):
    """Training runs in a thread; Stop (or Esc) ends it at the next optimizer update and saves the adapter."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = None
        self._stop: StopFlag | None = None
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []
        self._runs: list[Path] = []
        self._last_run: Path | None = None

    def compose(self) -> ComposeResult:
        paths = self.app.settings.paths
        with Horizontal(classes="form-row"):
            yield Input(value=paths.get("train-config", "configs/train_config.yaml"), placeholder=_("YAML config"), id="train-config")
            yield Input(value="", placeholder=_("max steps (optional)"), id="max-steps", type="integer")
            yield Button(_("Load"), id="load-config")
            yield Button(_("Start"), id="start-training", variant="primary")
            yield Button(_("Stop"), id="stop-training")
            yield Button(_("Resume"), id="resume-training")
        with Horizontal(id="train-body"):
            yield DataTable(id="plan-table", cursor_type="none")
            with Vertical(id="train-live"):
                yield ProgressBar(total=1, id="train-progress", show_eta=False)
                yield Static(_("no training running"), id="train-stats", classes="status-line")
                yield Label(_("train loss"), classes="section-title")
                yield Sparkline([], id="train-loss")
                yield Label(_("validation loss"), classes="section-title")
                yield Sparkline([], id="val-loss")
                yield Static("", id="loss-values", classes="status-line")
        yield Label(_("Runs (select one, then Resume)"), classes="section-title")
        yield DataTable(id="runs", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#plan-table", DataTable).add_columns(_("mlx-lm setting"), _("value"))
        self.query_one("#runs", DataTable).add_columns(_("run"), _("iterations"), _("train loss"), _("validation loss"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        handlers = {"load-config": self.load_config, "start-training": self.start_training,
                    "stop-training": self.cancel_task, "resume-training": self.resume_training}
        handler = handlers.get(event.button.id or "")
        if handler is not None:
            handler()

    @property
    def running(self) -> bool:
        return self._stop is not None

    # --- config and plan -----------------------------------------------------------------

    def load_config(self) -> None:
        path = self.query_one("#train-config", Input).value.strip()
        max_steps = self.query_one("#max-steps", Input).value.strip()
        self.app.remember_path("train-config", path)
        overrides = {"max_steps": int(max_steps) if max_steps else None}
        self.run_worker(lambda: self._load(path, overrides), thread=True, group="train-plan")

    def _load(self, path: str, overrides: dict) -> None:
        from nbp_mlx.config import load_config

        try:
            config = load_config(path, overrides)
            rows = describe_plan(config)
        except NbpError as error:
            self.post_message(PlanLoaded(error=error))
            return
        self.post_message(PlanLoaded(config, rows))

    def on_plan_loaded(self, message: PlanLoaded) -> None:
        if message.error is not None:
            self.app.report_error(message.error)
            return
        self.config = message.config
        table = self.query_one("#plan-table", DataTable)
        table.clear()
        for label, value in message.rows:
            table.add_row(label, value)
        self.app.update_status(self.config.model_name_or_path)
        self.refresh_runs()

    def refresh_runs(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.clear()
        self._runs = []
        if self.config is None:
            return
        for folder, summary in list_runs(Path(self.config.output_dir)):
            self._runs.append(folder)
            train_loss = f"{summary['train_loss']:.3f}" if summary["train_loss"] is not None else "-"
            val_loss = f"{summary['val_loss']:.3f}" if summary["val_loss"] is not None else "-"
            table.add_row(folder.name, f"{summary['iteration']}/{summary['total']}", train_loss, val_loss)

    # --- training --------------------------------------------------------------------------

    def start_training(self, run_dir: Path | None = None) -> None:
        if self.config is None:
            self.notify(_("load a config first"), severity="warning")
            return
        if self.running:
            self.notify(_("training is running; press Stop first"), severity="warning")
            return
        self._stop = StopFlag()
        self.train_losses, self.val_losses = [], []
        self.query_one("#train-loss", Sparkline).data = []
        self.query_one("#val-loss", Sparkline).data = []
        self.query_one("#train-stats", Static).update(_("loading the model and the dataset…"))
        config, stop = self.config, self._stop
        self.run_worker(lambda: self._train(config, stop, run_dir), thread=True, group="train")

    def resume_training(self) -> None:
        table = self.query_one("#runs", DataTable)
        run_dir = self._runs[table.cursor_row] if self._runs and 0 <= table.cursor_row < len(self._runs) else self._last_run
        if run_dir is None:
            self.notify(_("no run to resume; start a run first"), severity="warning")
            return
        self.start_training(run_dir)

    def _train(self, config, stop: StopFlag, run_dir: Path | None) -> None:
        from nbp_mlx.train import train

        try:
            result = train(config, run_dir=run_dir, resume=run_dir is not None, observer=MessageObserver(self), stop=stop)
        except NbpError as error:
            self.post_message(TrainingEnded(error=error))
            return
        self.post_message(TrainingEnded(result))

    def cancel_task(self) -> None:
        """Ask the run to stop at the next optimizer update; the adapter and resume state are saved."""
        if self._stop is not None:
            self._stop.set()
            self.query_one("#train-stats", Static).update(_("stopping at the next optimizer update…"))

    def on_train_event_message(self, message: TrainEventMessage) -> None:
        event = message.event
        bar = self.query_one("#train-progress", ProgressBar)
        if event.kind == "plan":
            bar.update(total=event.total_iterations, progress=0)
        elif event.kind == "iteration":
            bar.update(total=event.total_iterations, progress=event.iteration)
            if not (self._stop and self._stop.is_set()):
                self.query_one("#train-stats", Static).update(
                    _("iteration {it}/{total} · ETA {eta}").format(it=event.iteration, total=event.total_iterations, eta=eta_text(event.eta_seconds)))
        elif event.kind == "train" and event.train_loss is not None:
            self.train_losses.append(event.train_loss)
            self.query_one("#train-loss", Sparkline).data = list(self.train_losses)
            self.query_one("#loss-values", Static).update(
                _("train loss {loss:.3f} · {tps:.0f} tokens/s · peak memory {memory:.2f} GB · learning rate {lr:.2e}").format(
                    loss=event.train_loss, tps=event.tokens_per_second or 0.0, memory=event.peak_memory_gb or 0.0, lr=event.learning_rate or 0.0))
        elif event.kind == "val" and event.val_loss is not None:
            self.val_losses.append(event.val_loss)
            self.query_one("#val-loss", Sparkline).data = list(self.val_losses)
        elif event.kind in ("stopped", "done"):
            self._last_run = Path(event.path) if event.path else None

    def on_training_ended(self, message: TrainingEnded) -> None:
        self._stop = None
        if message.error is not None:
            self.query_one("#train-stats", Static).update(_("no training running"))
            self.app.report_error(message.error)
            return
        result = message.result
        if result.stopped_early:
            text = _("Stopped at iteration {it} of {total}. Adapter saved in {path}; press Resume to continue.").format(
                it=result.iterations_done, total=result.total_iterations, path=result.run_dir)
        else:
            text = _("Training finished. Adapter saved in {path}").format(path=result.run_dir)
        self.query_one("#train-stats", Static).update(text)
        self.notify(text)
        self.refresh_runs()
