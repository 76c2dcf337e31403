"""Train and Grid screens on a tiny random SD model (CPU): progress, checkpoint, pause, quit-saves, grid."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tui.app import make_app
from tui.testing import make_workspace, screen_text
from tui.widgets.dialogs import ConfirmScreen

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    return make_workspace(tmp_path_factory.mktemp("train") / "ws", images=2, epochs=3, tagger=False,
                          sd_model=True, sample_steps=2)


async def _until(pilot, cond, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await pilot.pause(0.2)


def test_train_shows_progress_and_checkpoint_then_quit_asks_and_saves(ws: Path) -> None:
    app = make_app(ws, log_to_file=True, start_mode="train")

    async def main() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            screen = app.screen
            await pilot.press("t")
            await _until(pilot, lambda: screen.view.checkpoints)  # epoch 1 saved
            await _until(pilot, lambda: screen.view.samples)  # its sample image reached the dashboard
            assert app.training.running
            await pilot.press("space")  # pause so the run is still going when we quit
            await pilot.pause(0.6)
            text = screen_text(app)
            assert "paused" in text and "img/s" in text
            assert "⏸ training paused" in text and "▶ training" not in text  # the tab bar too
            assert "kazari-000001.safetensors" in text  # checkpoint list
            assert screen.view.steps[:2] == [1, 2]  # loss curve points
            await pilot.press("ctrl+q")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            # pilot.pause() would wait on an app that has exited; poll the plain event loop instead
            end = time.monotonic() + 120
            while app.is_running and time.monotonic() < end:
                await asyncio.sleep(0.2)
            assert not app.is_running

    asyncio.run(main())
    assert not app.training.running
    assert (ws / "output" / "kazari-000001.safetensors").is_file()
    result = app.training.run.result
    assert type(result).__name__ == "Finished" and result.stopped_early
    assert result.final_path is not None and result.final_path.is_file()


def _ensure_loras(ws: Path) -> None:
    if list((ws / "output").glob("kazari*.safetensors")):
        return
    from trainer.config import load_config
    from trainer.run import TrainingRun

    cfg = load_config(ws / "kazari.toml")
    TrainingRun(cfg).run()


def test_build_grid_browse_and_choose_epoch(ws: Path) -> None:
    _ensure_loras(ws)
    app = make_app(ws, log_to_file=False, start_mode="grid")

    async def main() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            screen = app.screen
            assert "g builds the grid" in screen_text(app)
            assert " epoch 1 " in screen_text(app)  # row labels are not cut to the header's width
            await pilot.press("w", "ctrl+u", *"0,1", "enter")
            await pilot.pause()
            await pilot.press("g")
            await pilot.pause(0.3)
            await app.workers.wait_for_complete()
            await pilot.pause(0.5)
            result = screen.result
            assert result is not None and result.complete
            rows = len(screen.job.rows)
            assert len(screen.job.cells) == rows * 2
            assert "grid done" in screen_text(app)
            assert (ws / "output" / "grid" / "index.json").is_file()
            await pilot.press("right")
            await pilot.pause()
            assert screen.query_one("#gr-preview").source is not None
            await pilot.press("v")
            await pilot.pause()
            assert "weight 0" in screen_text(app)
            await pilot.press("escape", "e")
            await pilot.pause()
            label, path = screen.job.rows[0]
            final = ws / "output" / "final" / "kazari.safetensors"
            assert final.read_bytes() == path.read_bytes()
            assert f"chosen: {label}" in screen_text(app)

    asyncio.run(main())


def test_status_line_of_a_stopped_run_counts_complete_epochs() -> None:
    from trainer.events import Finished
    from tui.screens.train.state import RunView

    view = RunView()
    view.finished = Finished(step=78, epoch=1, final_path=Path("out/kazari-step00000078.safetensors"),
                             elapsed_s=26.2, stopped_early=True)
    line = view.status_line()
    assert line.startswith("■ stopped at step 78 (1 epoch(s) complete) in 26s")
    assert "saved kazari-step00000078.safetensors" in line
