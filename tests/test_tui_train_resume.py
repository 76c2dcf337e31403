"""The Train screen offers to resume a stopped run of its output instead of starting fresh."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tui.app import make_app
from tui.testing import make_workspace
from tui.widgets.dialogs import ConfirmScreen

pytestmark = pytest.mark.slow


async def _until(pilot, cond, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await pilot.pause(0.2)


def test_t_offers_to_resume_the_stopped_run_and_resumes_it(tmp_path: Path) -> None:
    import torch

    from trainer import events as ev
    from trainer.config import load_config
    from trainer.run import TrainingRun

    torch.set_num_threads(1)
    ws = make_workspace(tmp_path / "ws", images=2, epochs=2, tagger=False, sd_model=True)
    cfg = load_config(ws / "kazari.toml").with_value("sample.sample_every_n_epochs", 0)
    run = TrainingRun(cfg)  # a run stopped after its first step (as `x` or a SIGTERM would)
    run._on_event = lambda e: run.request_stop() if isinstance(e, ev.StepEvent) and e.step == 1 else None
    stopped = run.run()
    assert isinstance(stopped, ev.Finished) and stopped.stopped_early and stopped.state_dir is not None

    app = make_app(ws, log_to_file=True, start_mode="train")

    async def main() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            screen = app.screen
            await pilot.press("t")
            await _until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "Resume the stopped run" in app.screen.question and stopped.state_dir.name in app.screen.question
            await pilot.press("y")
            await _until(pilot, lambda: app.training.run is not None and not app.training.running
                         and screen.view.finished is not None)
            assert screen.view.started is not None and screen.view.started.start_step == 1

    asyncio.run(main())
    assert app.training.run.resume_from == stopped.state_dir
    previous = ws / "output" / ".kazari" / "previous"
    assert not previous.exists() or not any(previous.iterdir())  # resumed: nothing moved aside
