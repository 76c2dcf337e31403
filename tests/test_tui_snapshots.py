"""SVG snapshots of every screen at 80x24 and 120x40 (update with `pytest --snapshot-update`).

Deterministic by construction: a fixed synthetic dataset (seeded), paths shown relative to the
workspace, no clocks on screen, no log file, cursors not blinking, and every background job
finished before the picture is taken.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from tui.app import make_app
from tui.testing import make_workspace

SCREENS = ["dataset", "tags", "tagger", "config", "train", "grid"]
SIZES = [(80, 24), (120, 40)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("snap") / "ws", images=6, tagger=True)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", SCREENS)
def test_screen_snapshot(snap_compare, workspace: Path, screen: str, size: tuple[int, int]) -> None:
    app = make_app(workspace, log_to_file=False, start_mode=screen)

    async def settle(pilot) -> None:
        await pilot.pause()
        while pilot.app.busy:  # dataset load, then lint (started when the load finished)
            await pilot.app.workers.wait_for_complete()
            await pilot.pause(0.05)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        await pilot.pause(0.4)  # the config screen's debounced figures
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=settle)
