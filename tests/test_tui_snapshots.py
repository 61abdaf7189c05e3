"""Snapshots of the four tabs in English and Chinese at 100x32, with settings in a fresh folder."""

from __future__ import annotations

import pytest

from nbp_mlx import i18n
from tui.app import NbpApp
from tui.settings import TuiSettings

SIZE = (100, 32)
TAB_KEYS = {"generate": [], "data": ["f2"], "train": ["f3"], "export": ["f4"]}


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("tab", list(TAB_KEYS))
def test_tab_snapshot(snap_compare, monkeypatch, tmp_path, tab, language):
    monkeypatch.setenv("NBP_MLX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NBP_MLX_LANG", language)
    # The header names the compute device, which differs between Apple silicon and CPU-only machines.
    monkeypatch.setattr("nbp_mlx.models.loading.device_label", lambda: "CPU")
    i18n.set_language(language)
    app = NbpApp(TuiSettings(), save_settings=False)

    async def show_tab(pilot) -> None:
        # Wait for the tab underline animation, so that every run captures the same frame.
        await pilot.press(*TAB_KEYS[tab])
        # The focused description shows a blinking cursor; a steady one captures the same frame every run.
        pilot.app.query_one("#description").cursor_blink = False
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=show_tab)
