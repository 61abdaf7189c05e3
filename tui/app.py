"""The Textual terminal app of nbp-mlx: Generate, Data, Train and Export in four tabs.

Every screen calls the library (``nbp_mlx``) directly, in thread workers, and
receives progress as Textual messages (see ``tui/progress.py``). Library
errors (``NbpError``) become error notifications; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
from typing import Iterable

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, TabbedContent, TabPane

from nbp_mlx import i18n
from nbp_mlx.errors import NbpError
from nbp_mlx.i18n import _

from .settings import TuiSettings

logger = logging.getLogger(__name__)

TAB_IDS = ("generate", "data", "train", "export")


class NbpApp(App):
    """Four tabs switched with F1–F4; Esc cancels the running task of the visible tab."""

    CSS_PATH = "app.tcss"
    TITLE = "nbp-mlx"

    def __init__(self, settings: TuiSettings | None = None, *, save_settings: bool = True) -> None:
        super().__init__()
        self.settings = settings or TuiSettings.load()
        self.save_settings_enabled = save_settings
        self._bind_keys()

    def _bind_keys(self) -> None:
        # Bound here, not in BINDINGS, so that the descriptions follow the language chosen at start-up.
        tab_titles = self.tab_titles()
        for number, tab_id in enumerate(TAB_IDS, start=1):
            self.bind(f"f{number}", f"show_tab('{tab_id}')", description=tab_titles[tab_id])
        self.bind("escape", "cancel_task", description=_("Cancel"))
        self.bind("f6", "copy_output", description=_("Copy"))
        self.bind("f9", "toggle_language", description=_("中文/English"))
        self.bind("ctrl+q", "quit", description=_("Quit"))

    @staticmethod
    def tab_titles() -> dict[str, str]:
        return {"generate": _("Generate"), "data": _("Data"), "train": _("Train"), "export": _("Export")}

    def compose(self) -> ComposeResult:
        from .screens.data import DataScreen
        from .screens.export import ExportScreen
        from .screens.generate import GenerateScreen
        from .screens.train import TrainScreen

        titles = self.tab_titles()
        yield Header()
        with TabbedContent(initial="generate", id="tabs"):
            with TabPane(f"F1 {titles['generate']}", id="generate"):
                yield GenerateScreen(id="generate-screen")
            with TabPane(f"F2 {titles['data']}", id="data"):
                yield DataScreen(id="data-screen")
            with TabPane(f"F3 {titles['train']}", id="train"):
                yield TrainScreen(id="train-screen")
            with TabPane(f"F4 {titles['export']}", id="export"):
                yield ExportScreen(id="export-screen")
        yield Footer()

    def on_mount(self) -> None:
        self.update_status()
        self.focus_active_tab()

    def update_status(self, model: str | None = None) -> None:
        """Show the model in use and the compute device in the header's sub-title."""
        from nbp_mlx.models.loading import device_label

        self.sub_title = _("model {model} · {device}").format(model=model or self.settings.model, device=device_label())

    # --- actions ---------------------------------------------------------------

    def action_show_tab(self, tab_id: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab_id

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.focus_active_tab()

    def focus_active_tab(self) -> None:
        """Move the focus into the visible tab, so that keys never go to a hidden widget.

        On the Generate tab the cursor goes to the description, the first thing a user types.
        """
        tabs = self.query_one("#tabs", TabbedContent)
        if tabs.active == "generate":
            self.query_one("#description").focus()
        else:
            self.set_focus(None)

    def active_screen_widget(self):
        tabs = self.query_one("#tabs", TabbedContent)
        return self.query_one(f"#{tabs.active}-screen")

    def action_cancel_task(self) -> None:
        cancel = getattr(self.active_screen_widget(), "cancel_task", None)
        if cancel is not None:
            cancel()

    def action_copy_output(self) -> None:
        self.query_one("#generate-screen").copy_output()

    async def action_toggle_language(self) -> None:
        # Rebuilding the tabs would orphan a running task, which keeps posting to the old widgets.
        if any(worker.is_running for worker in self.workers):
            self.notify(_("wait for the running task to end before switching the language"), severity="warning")
            return
        language = "en" if i18n.current_language() == "zh_CN" else "zh"
        i18n.set_language(language)
        self.settings.language = language
        self.save_settings()
        self._bind_keys()
        await self.recompose()
        self.update_status()

    # --- helpers for the screens ---------------------------------------------------

    def save_settings(self) -> None:
        if not self.save_settings_enabled:
            return
        try:
            self.settings.save()
        except OSError as error:
            logger.warning("Could not save the TUI settings: %s", error)
            self.notify(_("could not save the settings: {error}").format(error=error), severity="warning")

    def remember_path(self, key: str, value: str) -> None:
        self.settings.paths[key] = value
        self.save_settings()

    def report_error(self, error: BaseException) -> None:
        """Show a library error as a notification; log it with its traceback for ``-v`` runs."""
        logger.info("Library error shown to the user: %s", error, exc_info=error)
        self.notify(str(error), title=_("Error"), severity="error", timeout=10)


def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nbp-mlx-tui", description=_("Open the Textual terminal app."))
    parser.add_argument("--lang", choices=["zh", "en"], help=_("language of the app (default: the saved setting, else the locale)"))
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: list[str] | None = None) -> int:
    """Run the app; ``--lang`` wins over the saved language, which wins over the locale."""
    args = parse_args(argv)
    settings = TuiSettings.load()
    language = args.lang or settings.language
    if language:
        i18n.set_language(language)
    if args.lang:
        settings.language = args.lang
    try:
        NbpApp(settings).run()
    except NbpError as error:
        # Errors raised outside a worker (none are expected) still end as one message.
        print(_("error: {message}").format(message=error))
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
