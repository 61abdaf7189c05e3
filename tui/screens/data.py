"""Data tab: import a prompt file, write descriptions and variants with a model, prepare the dataset."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static

from nbp_mlx.errors import NbpError
from nbp_mlx.i18n import _

from ..progress import MessageProgress, ProgressFinished, ProgressNote, ProgressStarted, ProgressUpdated

logger = logging.getLogger(__name__)

PAIRS_SHOWN = 5  # finished description/prompt pairs shown after a run
PREPARE_MAX_SEQ_LENGTH = 2048  # tokens, the default of `data prepare`
PREPARE_BATCH_SIZE = 2  # samples, the default of `data prepare`; each split needs one full batch


class DataStepDone(Message):
    """Posted by a data thread: ``step`` is "import", "datagen" or "prepare"."""

    def __init__(self, step: str, result=None, error: NbpError | None = None, cancelled: bool = False) -> None:
        super().__init__()
        self.step = step
        self.result = result
        self.error = error
        self.cancelled = cancelled


class DataScreen(Vertical):
    """Import → describe/augment → prepare, each step a button with its own result line."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._busy: str | None = None
        self._datagen_loop: asyncio.AbstractEventLoop | None = None
        self._datagen_task: asyncio.Task | None = None
        self._datagen_output: Path | None = None

    def compose(self) -> ComposeResult:
        paths = self.app.settings.paths
        yield Label(_("1. Import prompts (.jsonl, .json, .csv, .txt, .md)"), classes="section-title")
        with Horizontal(classes="form-row"):
            yield Input(value=paths.get("import-input", ""), placeholder=_("input file"), id="import-input")
            yield Input(value=paths.get("records-path", "data/prompts.jsonl"), placeholder=_("records file to write"), id="records-path")
            yield Button(_("Import"), id="import")
        yield Static("", id="import-summary", classes="status-line")

        yield Label(_("2. Describe or augment with a model (Pause keeps the checkpoint; Run resumes from it)"), classes="section-title")
        with Horizontal(classes="form-row"):
            yield Select([(_("describe"), "describe"), (_("augment"), "augment")], value="describe", allow_blank=False, id="datagen-task")
            yield Select([(_("Anthropic API"), "api"), (_("local model"), "local")], value=paths.get("datagen-backend", "api"),
                         allow_blank=False, id="datagen-backend")
            yield Input(value=paths.get("datagen-output", "data/described.jsonl"), placeholder=_("records file to write"), id="datagen-output")
            yield Button(_("Run"), id="datagen-run", variant="primary")
            yield Button(_("Pause"), id="datagen-pause")
        yield ProgressBar(total=1, id="datagen-progress", show_eta=True)
        yield Static("", id="datagen-stats", classes="status-line")
        yield DataTable(id="pairs", cursor_type="row")

        yield Label(_("3. Prepare train/valid splits"), classes="section-title")
        with Horizontal(classes="form-row"):
            yield Input(value=paths.get("prepare-input", ""), placeholder=_("records file (default: the last written)"), id="prepare-input")
            yield Input(value=paths.get("dataset-dir", "data/dataset"), placeholder=_("dataset folder"), id="dataset-dir")
            yield Button(_("Prepare"), id="prepare")
        yield Static("", id="prepare-summary", classes="status-line")

    def on_mount(self) -> None:
        table = self.query_one("#pairs", DataTable)
        table.add_columns(_("description"), _("prompt"))

    def value(self, input_id: str) -> str:
        return self.query_one(f"#{input_id}", Input).value.strip()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        handlers = {"import": self.start_import, "datagen-run": self.start_datagen, "datagen-pause": self.cancel_task, "prepare": self.start_prepare}
        handler = handlers.get(event.button.id or "")
        if handler is not None:
            handler()

    def _claim(self, step: str) -> bool:
        if self._busy is not None:
            self.notify(_("{step} is still running; wait for it or press Esc").format(step=self._busy), severity="warning")
            return False
        self._busy = step
        return True

    # --- import ----------------------------------------------------------------------

    def start_import(self) -> None:
        source, records = self.value("import-input"), self.value("records-path") or "data/prompts.jsonl"
        if not source:
            self.notify(_("type the path of a prompt file to import"), severity="warning")
            return
        if not self._claim("import"):
            return
        self.app.remember_path("import-input", source)
        self.app.remember_path("records-path", records)
        self.run_worker(lambda: self._import(Path(source), Path(records)), thread=True, group="data")

    def _import(self, source: Path, records: Path) -> None:
        from nbp_mlx.data.importer import import_prompts, summarize, write_records

        try:
            result = import_prompts(source)
            write_records(records, result.records)
        except NbpError as error:
            self.post_message(DataStepDone("import", error=error))
            return
        self.post_message(DataStepDone("import", result={**summarize(result), "output": str(records)}))

    def _show_import(self, summary: dict) -> None:
        self.query_one("#import-summary", Static).update(
            _("Imported {count} prompts ({json} JSON, {text} text, {described} with a description); dropped {duplicates} duplicates. Wrote {output}").format(
                count=summary["records"], json=summary["json"], text=summary["text"], described=summary["with_description"],
                duplicates=summary["duplicates_dropped"], output=summary["output"],
            )
        )

    # --- describe and augment ------------------------------------------------------------

    def start_datagen(self) -> None:
        from nbp_mlx.datagen import DatagenConfig

        task = str(self.query_one("#datagen-task", Select).value)
        backend = str(self.query_one("#datagen-backend", Select).value)
        default_input = "data/prompts.jsonl" if task == "describe" else "data/described.jsonl"
        source = self.value("records-path") if task == "describe" else (self.value("prepare-input") or default_input)
        output = self.value("datagen-output") or ("data/described.jsonl" if task == "describe" else "data/augmented.jsonl")
        if not self._claim(task):
            return
        self.app.remember_path("datagen-output", output)
        self.app.remember_path("datagen-backend", backend)
        config = DatagenConfig(task=task, input_path=Path(source or default_input), output_path=Path(output), backend=backend)
        self._datagen_output = config.output_path
        self.query_one("#datagen-stats", Static).update(_("starting {task}…").format(task=task))
        self.run_worker(lambda: self._datagen(config), thread=True, group="data")

    def _datagen(self, config) -> None:
        from nbp_mlx.datagen import run_datagen

        loop = asyncio.new_event_loop()
        self._datagen_loop = loop
        try:
            self._datagen_task = loop.create_task(run_datagen(config, MessageProgress(self)))
            result = loop.run_until_complete(self._datagen_task)
        except asyncio.CancelledError:
            self.post_message(DataStepDone("datagen", cancelled=True))
            return
        except NbpError as error:
            self.post_message(DataStepDone("datagen", error=error))
            return
        finally:
            self._datagen_loop = None
            loop.close()
        self.post_message(DataStepDone("datagen", result=result))

    def cancel_task(self) -> None:
        """Pause describe/augment: cancel the requests in flight; finished records stay in the checkpoint."""
        loop, task = self._datagen_loop, self._datagen_task
        if self._busy in ("describe", "augment") and loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)
            self.query_one("#datagen-stats", Static).update(_("pausing…"))

    def on_progress_started(self, message: ProgressStarted) -> None:
        self.query_one("#datagen-progress", ProgressBar).update(total=message.total, progress=0)

    def on_progress_updated(self, message: ProgressUpdated) -> None:
        self.query_one("#datagen-progress", ProgressBar).update(total=message.total, progress=message.completed)
        total = int(message.total) if message.total is not None else "?"
        self.query_one("#datagen-stats", Static).update(
            _("{completed}/{total} finished · {detail}").format(completed=int(message.completed), total=total, detail=message.detail)
        )

    def on_progress_note(self, message: ProgressNote) -> None:
        self.query_one("#datagen-stats", Static).update(message.text)

    def on_progress_finished(self, message: ProgressFinished) -> None:
        pass

    def _show_pairs(self, output: Path) -> None:
        from nbp_mlx.data.importer import read_records

        table = self.query_one("#pairs", DataTable)
        table.clear()
        try:
            records = read_records(output)
        except NbpError as error:
            self.app.report_error(error)
            return
        described = [record for record in records if record.description]
        for record in described[:PAIRS_SHOWN]:
            table.add_row(record.description, record.prompt[:120].replace("\n", " "))

    # --- prepare -------------------------------------------------------------------------

    def start_prepare(self) -> None:
        records = self.value("prepare-input") or (str(self._datagen_output) if self._datagen_output else self.value("records-path"))
        out_dir = self.value("dataset-dir") or "data/dataset"
        model = self.app.settings.model or "bundled"
        if not self._claim("prepare"):
            return
        self.app.remember_path("dataset-dir", out_dir)
        self.query_one("#prepare-summary", Static).update(_("preparing {path} with the tokenizer of {model}…").format(path=records, model=model))
        self.run_worker(lambda: self._prepare(Path(records), Path(out_dir), model), thread=True, group="data")

    def _prepare(self, records: Path, out_dir: Path, model: str) -> None:
        from mlx_lm.utils import load_tokenizer

        from nbp_mlx.dataset import prepare_dataset
        from nbp_mlx.models.resolve import resolve_model

        try:
            tokenizer = load_tokenizer(resolve_model(model).path)
            report = prepare_dataset(records, out_dir, tokenizer, max_seq_length=PREPARE_MAX_SEQ_LENGTH, batch_size=PREPARE_BATCH_SIZE)
        except NbpError as error:
            self.post_message(DataStepDone("prepare", error=error))
            return
        self.post_message(DataStepDone("prepare", result=report))

    def _show_prepare(self, report) -> None:
        text = _("{pairs} pairs from {prompts} prompts: {train} train ({train_groups} prompts), {valid} valid ({valid_groups} prompts).").format(
            pairs=report.pairs, prompts=report.prompts, train=report.train_pairs, train_groups=report.train_groups,
            valid=report.valid_pairs, valid_groups=report.valid_groups,
        )
        if report.prompts_without_description:
            text += " " + _("{count} prompts have no description yet and were skipped; run `python -m nbp_mlx data describe`.").format(
                count=report.prompts_without_description)
        if report.excluded_too_long:
            text += " " + _("{count} pairs longer than {limit} tokens were excluded.").format(count=len(report.excluded_too_long), limit=report.max_seq_length)
        self.query_one("#prepare-summary", Static).update(text)

    # --- results of every step ---------------------------------------------------------

    def on_data_step_done(self, message: DataStepDone) -> None:
        self._busy = None
        if message.error is not None:
            self.app.report_error(message.error)
            if message.step == "datagen":
                self.query_one("#datagen-stats", Static).update("")
            return
        if message.step == "import":
            self._show_import(message.result)
        elif message.step == "datagen":
            if message.cancelled:
                self.query_one("#datagen-stats", Static).update(_("paused; finished records are in the checkpoint, and Run resumes from it"))
            elif self._datagen_output is not None:
                stats = message.result.stats
                self.query_one("#datagen-stats", Static).update(
                    _("{done} done, {failed} failed, {skipped} already done · {detail}").format(
                        done=stats.done, failed=stats.failed, skipped=stats.skipped, detail=stats.detail()))
                self._show_pairs(self._datagen_output)
        elif message.step == "prepare":
            self._show_prepare(message.result)
