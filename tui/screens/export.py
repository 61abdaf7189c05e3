"""Export tab: fuse the adapter, write a GGUF file and an Ollama Modelfile, check the export."""

from __future__ import annotations

import logging
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static

from nbp_mlx.errors import NbpError
from nbp_mlx.i18n import _

from ..progress import MessageProgress, ProgressFinished, ProgressNote, ProgressStarted, ProgressUpdated

logger = logging.getLogger(__name__)


class ExportStepDone(Message):
    """Posted by an export thread; ``rows`` are (step, result, detail) lines for the results table."""

    def __init__(self, step: str, rows: list[tuple[str, str, str]] | None = None, error: NbpError | None = None) -> None:
        super().__init__()
        self.step = step
        self.rows = rows or []
        self.error = error


class ExportScreen(Vertical):
    """Each step reads the paths in the form, so steps can be run alone or in order."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._busy: str | None = None

    def compose(self) -> ComposeResult:
        from nbp_mlx.export.gguf import OUTTYPES

        paths = self.app.settings.paths
        yield Label(_("1. Fuse the adapter into its base model"), classes="section-title")
        with Horizontal(classes="form-row"):
            yield Input(value=paths.get("export-adapter", self.app.settings.adapter), placeholder=_("adapter folder"), id="export-adapter")
            yield Input(value=paths.get("fused-dir", ""), placeholder=_("fused folder (default: fused/<adapter name>)"), id="fused-dir")
            yield Button(_("Fuse"), id="fuse", variant="primary")
        yield Label(_("2. Write a GGUF file"), classes="section-title")
        with Horizontal(classes="form-row"):
            yield Select([(name, name) for name in OUTTYPES], value=paths.get("gguf-type", "f16"), allow_blank=False, id="gguf-type")
            yield Input(value=paths.get("gguf-path", ""), placeholder=_("GGUF file (default: <fused folder>-<type>.gguf)"), id="gguf-path")
            yield Button(_("GGUF"), id="gguf")
        yield Label(_("3. Ollama Modelfile and parity check (the check needs an f32 GGUF file)"), classes="section-title")
        with Horizontal(classes="form-row"):
            yield Input(value=paths.get("ollama-name", "nbp-prompt:latest"), placeholder=_("Ollama model name"), id="ollama-name")
            yield Button(_("Modelfile"), id="modelfile")
            yield Button(_("Check"), id="check")
        yield ProgressBar(total=1, id="export-progress", show_eta=False)
        yield Static("", id="export-status", classes="status-line")
        yield DataTable(id="export-results", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#export-results", DataTable).add_columns(_("step"), _("result"), _("detail"))

    def value(self, input_id: str) -> str:
        return self.query_one(f"#{input_id}", Input).value.strip()

    def fused_dir(self) -> Path:
        adapter = Path(self.value("export-adapter"))
        return Path(self.value("fused-dir") or Path("fused") / adapter.name)

    def gguf_path(self) -> Path:
        outtype = str(self.query_one("#gguf-type", Select).value)
        return Path(self.value("gguf-path") or f"{self.fused_dir()}-{outtype}.gguf")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        steps = {"fuse": self._fuse, "gguf": self._gguf, "modelfile": self._modelfile, "check": self._check}
        step = steps.get(event.button.id or "")
        if step is not None:
            self.start(event.button.id, step)

    def start(self, name: str, step) -> None:
        if self._busy is not None:
            self.notify(_("{step} is still running").format(step=self._busy), severity="warning")
            return
        for key in ("export-adapter", "fused-dir", "gguf-path", "ollama-name"):
            self.app.remember_path(key, self.value(key))
        self.app.remember_path("gguf-type", str(self.query_one("#gguf-type", Select).value))
        self._busy = name
        self.query_one("#export-status", Static).update(_("{step}: running…").format(step=name))
        self.run_worker(lambda: self._run(name, step), thread=True, group="export")

    def cancel_task(self) -> None:
        # NOTE: fuse, GGUF export and the check have no stop hook in the library, so Esc cannot cancel them.
        if self._busy is not None:
            self.notify(_("{step} cannot be cancelled; it ends on its own").format(step=self._busy), severity="warning")

    def _run(self, name: str, step) -> None:
        try:
            rows = step()
        except NbpError as error:
            self.post_message(ExportStepDone(name, error=error))
            return
        self.post_message(ExportStepDone(name, rows))

    # --- the steps, run in threads --------------------------------------------------------

    def _fuse(self) -> list[tuple[str, str, str]]:
        from nbp_mlx.fuse import fuse_adapter

        result = fuse_adapter(self.value("export-adapter"), self.fused_dir(), progress=MessageProgress(self))
        return [(_("fuse"), _("pass"), _("Wrote {path}. Fused logits match base model + adapter within {diff:.2g} of the logit scale (tolerance {tolerance:g}).").format(
            path=result.output, diff=result.relative_diff, tolerance=result.tolerance))]

    def _gguf(self) -> list[tuple[str, str, str]]:
        from nbp_mlx.export.gguf import export_gguf

        progress = MessageProgress(self)
        output = self.gguf_path()
        outtype = str(self.query_one("#gguf-type", Select).value)

        def report(done: int, total: int, name: str) -> None:
            progress.update(done, total, name)

        result = export_gguf(self.fused_dir(), output, outtype, progress=report)
        return [("GGUF", _("pass"), _("Wrote {path} ({type}, {size:.1f} MB, {tensors} tensors, {vocab} tokens, pre-tokenizer {pre})").format(
            path=result.output, type=result.outtype, size=result.size_bytes / 1e6, tensors=result.tensor_count,
            vocab=result.vocab_size, pre=result.tokenizer_pre))]

    def _modelfile(self) -> list[tuple[str, str, str]]:
        from nbp_mlx.export.ollama import write_modelfile

        result = write_modelfile(self.gguf_path(), self.value("ollama-name"))
        if result.created:
            detail = _("Created Ollama model {name}").format(name=result.name)
        else:
            detail = _("ollama was not run; create the model with: {command}").format(command=" ".join(result.create_command))
        return [("Modelfile", _("pass"), _("Wrote {path}").format(path=result.modelfile) + "; " + detail)]

    def _check(self) -> list[tuple[str, str, str]]:
        from nbp_mlx.export.check import check_export

        report = check_export(self.value("export-adapter"), self.fused_dir(), self.gguf_path())
        rows = []
        for row in report.rows:
            kind = _("prompt ids") if row.kind == "prompt" else _("greedy ids")
            rows.append((f"{row.name} ({kind})", _("pass") if row.passed else _("FAIL"),
                         _("{agreeing}/{count} tokens agree, {required} required").format(agreeing=row.agreeing, count=len(row.token_ids), required=row.required)))
        return rows

    # --- progress and results ------------------------------------------------------------

    def on_progress_started(self, message: ProgressStarted) -> None:
        self.query_one("#export-progress", ProgressBar).update(total=message.total, progress=0)
        self.query_one("#export-status", Static).update(message.task)

    def on_progress_updated(self, message: ProgressUpdated) -> None:
        self.query_one("#export-progress", ProgressBar).update(total=message.total, progress=message.completed)

    def on_progress_note(self, message: ProgressNote) -> None:
        self.query_one("#export-status", Static).update(message.text)

    def on_progress_finished(self, message: ProgressFinished) -> None:
        pass

    def on_export_step_done(self, message: ExportStepDone) -> None:
        self._busy = None
        status = self.query_one("#export-status", Static)
        if message.error is not None:
            status.update("")
            self.app.report_error(message.error)
            return
        bar = self.query_one("#export-progress", ProgressBar)
        bar.update(total=bar.total or 1, progress=bar.total or 1)
        status.update(_("{step}: done").format(step=message.step))
        table = self.query_one("#export-results", DataTable)
        for row in message.rows:
            table.add_row(*row)
