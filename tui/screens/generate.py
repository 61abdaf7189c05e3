"""Generate tab: stream an image prompt for a Chinese description, with history, copy and save."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from nbp_mlx.errors import NbpError
from nbp_mlx.generate import GenerationSettings, GenerationStats, describe_json_method
from nbp_mlx.i18n import _
from nbp_mlx.json_repair import repair_json
from nbp_mlx.paths import REPO_DIR

from ..settings import append_history, read_history, tui_dir

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05  # seconds between moves of streamed text into the output pane
# While text streams, only its tail is drawn: re-wrapping the whole text on every flush
# made key handling lag by up to a second once it passed about 10,000 characters.
# The whole text is drawn when the stream ends.
STREAM_TAIL_CHARS = 1200


@dataclass(frozen=True)
class GenerationRequest:
    description: str
    prompt_format: str
    model: str
    adapter: str
    backend: str
    max_tokens: int = 2048
    seed: int | None = None


class GenerationDone(Message):
    """Posted by the generation thread when the stream ends, fails or is cancelled."""

    def __init__(self, request: GenerationRequest, stats: GenerationStats | None, error: NbpError | None) -> None:
        super().__init__()
        self.request = request
        self.stats = stats
        self.error = error


class BackendReady(Message):
    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label


def available_backends() -> list[str]:
    """Return the backends that can run here: MLX always, llama.cpp and Ollama when installed."""
    from nbp_mlx.backends.select import llama_cpp_available

    names = ["mlx"]
    if llama_cpp_available():
        names.append("llamacpp")
    if shutil.which("ollama"):
        names.append("ollama")
    names.append("auto")
    return names


def find_adapters(*roots: Path) -> list[str]:
    """Return adapter folders (those with ``adapters.safetensors``) under ``roots``."""
    roots = roots or (REPO_DIR / "adapters", REPO_DIR / "runs")
    found: list[str] = []
    for root in roots:
        if root.is_dir():
            found.extend(str(path.parent) for path in sorted(root.glob("**/adapters.safetensors")))
    return found


class GenerateScreen(Vertical):
    """Description in, streamed prompt out; Esc cancels at the next token."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_tokens = 2048  # the product default; tests lower or raise it
        self.seed: int | None = None  # None samples differently on every run
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._cancelled = False
        self._generating = False
        self._backend = None
        self._backend_key: tuple[str, str, str] | None = None
        self._history: list[dict] = []
        self.last_text = ""

    def compose(self) -> ComposeResult:
        settings = self.app.settings
        backends = available_backends()
        backend = settings.backend if settings.backend in backends else "mlx"
        with Horizontal(classes="form-row"):
            yield Input(placeholder=_("short Chinese description, e.g. 霓虹街头的赛博朋克女孩"), id="description")
            yield Select([(_("text"), "text"), ("JSON", "json")], value=settings.format if settings.format in ("text", "json") else "text",
                         allow_blank=False, id="format")
            yield Button(_("Generate"), id="generate", variant="primary")
        with Horizontal(classes="form-row"):
            yield Input(value=settings.model, placeholder=_("model: bundled, a folder, a .gguf file or a repo id"), id="model")
            yield Input(value=settings.adapter, placeholder=_("adapter folder (optional)"), id="adapter",
                        suggester=SuggestFromList(find_adapters(), case_sensitive=True))
            yield Select([(name, name) for name in backends], value=backend, allow_blank=False, id="backend")
        with Horizontal(id="generate-body"):
            with Vertical(id="generate-main"):
                # Read-only output: F6 or the Copy button copies it.
                with VerticalScroll(id="output-scroll"):
                    yield Static("", id="output", markup=False)
                yield Static("", id="generation-stats")
                yield Static("", id="json-status")
            with Vertical(id="generate-side"):
                yield Label(_("History"), classes="section-title")
                yield OptionList(id="history")
                with Horizontal(classes="button-row"):
                    yield Button(_("Re-run"), id="rerun")
                    yield Button(_("Copy"), id="copy")

    def on_mount(self) -> None:
        self.set_interval(FLUSH_INTERVAL, self.flush_output)
        self._history = read_history()
        history = self.query_one("#history", OptionList)
        for row in self._history:
            history.add_option(self._history_option(row))

    # --- starting and cancelling -------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "description":
            self.start_generation()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "generate":
            self.start_generation()
        elif event.button.id == "rerun":
            self.rerun_selected()
        elif event.button.id == "copy":
            self.copy_output()

    def current_request(self) -> GenerationRequest:
        return GenerationRequest(
            description=self.query_one("#description", Input).value.strip(),
            prompt_format=str(self.query_one("#format", Select).value),
            model=self.query_one("#model", Input).value.strip() or "bundled",
            adapter=self.query_one("#adapter", Input).value.strip(),
            backend=str(self.query_one("#backend", Select).value),
            max_tokens=self.max_tokens,
            seed=self.seed,
        )

    def start_generation(self) -> None:
        if self._generating:
            self.notify(_("a generation is running; press Esc to cancel it first"), severity="warning")
            return
        request = self.current_request()
        if not request.description:
            self.notify(_("the description is empty; type a short Chinese description of the image"), severity="warning")
            return
        self._remember(request)

        self._stop = threading.Event()
        self._cancelled = False
        self._generating = True
        with self._pending_lock:
            self._pending.clear()
        self.last_text = ""
        self.show_output("")
        self.query_one("#json-status", Static).update("")
        self.query_one("#generation-stats", Static).update(_("loading the model…") if self._backend_key != self._key(request) else _("generating…"))
        self.run_worker(lambda: self._generate(request, self._stop), thread=True, group="generate")

    def cancel_task(self) -> None:
        """Stop the stream at once: nothing more reaches the screen, and the thread stops at the next token."""
        if not self._generating:
            return
        self._stop.set()
        self._cancelled = True
        self.flush_output()
        self.query_one("#generation-stats", Static).update(_("cancelled"))

    def _remember(self, request: GenerationRequest) -> None:
        settings = self.app.settings
        settings.model, settings.adapter, settings.backend, settings.format = request.model, request.adapter, request.backend, request.prompt_format
        self.app.save_settings()

    # --- the generation thread ---------------------------------------------------

    @staticmethod
    def _key(request: GenerationRequest) -> tuple[str, str, str]:
        return (request.backend, request.model, request.adapter)

    def _generate(self, request: GenerationRequest, stop: threading.Event) -> None:
        try:
            backend = self._load_backend(request)
            settings = GenerationSettings(max_tokens=request.max_tokens, seed=request.seed)
            stats = GenerationStats()
            for chunk in backend.stream(request.description, request.prompt_format, settings, stats, should_stop=stop.is_set):
                with self._pending_lock:
                    self._pending.append(chunk)
                if stop.is_set():
                    stats.finish_reason = "cancelled"
                    break
        except NbpError as error:
            self.post_message(GenerationDone(request, None, error))
            return
        self.post_message(GenerationDone(request, stats, None))

    def _load_backend(self, request: GenerationRequest):
        """Return the backend for ``request``, reusing the loaded one when nothing changed."""
        from nbp_mlx.backends.select import create_backend

        key = self._key(request)
        if self._backend is not None and self._backend_key == key:
            return self._backend
        self._close_backend()
        model = request.model
        options = {"model": model, "adapter": request.adapter or None}
        if request.backend in ("llamacpp", "auto") and model.endswith(".gguf"):
            options = {"model": None, "adapter": None, "gguf": model}
        elif request.backend == "ollama":
            options = {"ollama_model": model}
        backend, _choice = create_backend(request.backend, **options)
        self._backend, self._backend_key = backend, key
        self.post_message(BackendReady(backend.describe()))
        return backend

    def _close_backend(self) -> None:
        close = getattr(self._backend, "close", None)
        if close is not None:
            close()
        self._backend, self._backend_key = None, None

    # --- results -------------------------------------------------------------------

    def flush_output(self) -> None:
        """Move the text the thread has produced since the last call into the output pane."""
        with self._pending_lock:
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending.clear()
        if self._cancelled:
            return
        self.last_text += text
        self.query_one("#output", Static).update(self.last_text[-STREAM_TAIL_CHARS:])
        self.query_one("#output-scroll", VerticalScroll).scroll_end(animate=False)

    def show_output(self, text: str) -> None:
        self.last_text = text
        self.query_one("#output", Static).update(text)
        self.query_one("#output-scroll", VerticalScroll).scroll_end(animate=False)

    def on_backend_ready(self, message: BackendReady) -> None:
        self.app.update_status(self._backend_key[1] if self._backend_key else None)
        self.query_one("#generation-stats", Static).update(message.label)

    def on_generation_done(self, message: GenerationDone) -> None:
        if not self._cancelled:
            self.flush_output()
        self._generating = False
        self.show_output(self.last_text)
        if message.error is not None:
            self.query_one("#generation-stats", Static).update("")
            self.app.report_error(message.error)
            return
        stats = message.stats
        assert stats is not None
        if self._cancelled:
            stats.finish_reason = "cancelled"
        self.query_one("#generation-stats", Static).update(self.stats_text(stats, len(self.last_text)))
        if message.request.prompt_format == "json" and not self._cancelled:
            self.show_json_result(self.last_text, stats)
        row = append_history({
            "description": message.request.description, "format": message.request.prompt_format,
            "model": message.request.model, "adapter": message.request.adapter, "backend": message.request.backend,
            "text": self.last_text, "generated_tokens": stats.generated_tokens, "time_to_first_token": stats.time_to_first_token,
            "tokens_per_second": stats.tokens_per_second, "finish_reason": stats.finish_reason,
        })
        self._history.append(row)
        self.query_one("#history", OptionList).add_option(self._history_option(row))

    @staticmethod
    def stats_text(stats: GenerationStats, characters: int) -> str:
        ttft = f"{stats.time_to_first_token:.2f}" if stats.time_to_first_token is not None else "?"
        reasons = {"stop": _("stopped at the end-of-turn token"), "length": _("truncated at --max-tokens"), "cancelled": _("cancelled")}
        return _("{tokens} tokens, {chars} characters; time to first token {ttft} s, {tps:.1f} tokens/s ({reason})").format(
            tokens=stats.generated_tokens, chars=characters, ttft=ttft, tps=stats.tokens_per_second,
            reason=reasons.get(stats.finish_reason or "", _("unknown")),
        )

    def show_json_result(self, text: str, stats: GenerationStats | None = None) -> None:
        """Pretty-print a JSON prompt and report whether it parses as generated, after repair, or not at all.

        When ``stats`` records how the backend made the JSON valid, that line is shown as well.
        """
        result = repair_json(text)
        status = self.query_one("#json-status", Static)
        if result.ok:
            pretty = json.dumps(result.value, ensure_ascii=False, indent=2)
            self.show_output(pretty)
        if result.ok and not result.actions:
            message = _("valid JSON")
            status.set_classes("json-valid")
        elif result.ok:
            message = _("the JSON output does not parse as generated; it parses after repair ({actions})").format(actions="; ".join(result.actions))
            status.set_classes("json-repaired")
        else:
            message = _("the JSON output does not parse, and closing the truncated structure does not fix it")
            status.set_classes("json-invalid")
        if stats is not None and stats.json_method is not None:
            message += "\n" + describe_json_method(stats)
        status.update(message)

    # --- history, copy and save ------------------------------------------------------

    @staticmethod
    def _history_option(row: dict) -> Option:
        label = f"{row.get('time', '')[5:16].replace('T', ' ')} [{row.get('format', 'text')}] {row.get('description', '')}"
        return Option(label)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.reopen(self._history[event.option_index])

    def reopen(self, row: dict) -> None:
        """Put a past generation back into the form and the output pane."""
        self.query_one("#description", Input).value = row.get("description", "")
        self.query_one("#format", Select).value = row.get("format", "text")
        self.query_one("#model", Input).value = row.get("model", "bundled")
        self.query_one("#adapter", Input).value = row.get("adapter", "")
        backend = row.get("backend", "mlx")
        if backend in available_backends():
            self.query_one("#backend", Select).value = backend
        self.show_output(row.get("text", ""))
        self.query_one("#json-status", Static).update("")
        self.query_one("#generation-stats", Static).update(_("from the history, {time}").format(time=row.get("time", "?")))

    def rerun_selected(self) -> None:
        history = self.query_one("#history", OptionList)
        if history.highlighted is not None and not self._generating:
            self.reopen(self._history[history.highlighted])
        self.start_generation()

    def copy_output(self) -> None:
        """Copy the output through OSC 52 and save it to a file, since not every terminal supports OSC 52."""
        if not self.last_text:
            self.notify(_("nothing to copy yet; generate a prompt first"), severity="warning")
            return
        self.app.copy_to_clipboard(self.last_text)
        suffix = "json" if self.query_one("#format", Select).value == "json" else "txt"
        path = tui_dir() / "outputs" / f"prompt-{datetime.now():%Y%m%d-%H%M%S}.{suffix}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.last_text + "\n", encoding="utf-8")
        except OSError as error:
            self.notify(_("copied to the clipboard; saving {path} failed: {error}").format(path=path, error=error), severity="warning")
            return
        self.notify(_("copied to the clipboard (if the terminal supports OSC 52) and saved to {path}").format(path=path))
