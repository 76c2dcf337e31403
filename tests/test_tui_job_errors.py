"""Every background job ends in a visible state (issue 12 §2): a failed dataset load, lint, image
preview, grid, judgement or training start shows its message in a panel that stays until dismissed,
the screen leaves its "loading…" state, and its keys work again. Each job is made to fail by
monkeypatching the function its worker calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tagging.errors import UserError
from tui.app import make_app
from tui.testing import make_workspace, screen_text


async def _until(pilot, cond: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll (never a fixed sleep) until ``cond()`` holds; fail with the screen when it never does."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"{what} never happened; the screen shows:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)


def _rows_of(app, selector: str) -> str:
    """The screen rows a widget covers, as plain text."""
    region = app.screen.query_one(selector).region
    return "\n".join(screen_text(app).splitlines()[region.y:region.y + region.height])


def _panel(app):
    return app.screen.query_one("#error-panel")


async def _panel_says(pilot, needle: str) -> None:
    """The error panel is shown, holds ``needle``, and the text is on screen (not only a toast)."""
    app = pilot.app
    await _until(pilot, lambda: _panel(app).shown and needle in _panel(app).message, f"a panel saying {needle!r}")
    await _until(pilot, lambda: needle in " ".join(screen_text(app).split()), f"{needle!r} on screen")


def _failing(calls: list, message: str):
    def run(self, *args):
        calls.append(self)
        raise UserError(message)

    return run


def test_dataset_load_failure_ends_in_the_panel_and_modes_still_switch(tmp_path: Path, monkeypatch) -> None:
    from tui.session import Session

    monkeypatch.setattr(Session, "load_dataset",
                        _failing([], "Cannot read broken.txt: bad bytes. Fix the file and reopen."))
    app = make_app(make_workspace(tmp_path / "ws", images=2, tagger=False), log_to_file=False)

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await _panel_says(pilot, "Cannot read broken.txt")
            assert not app.busy
            await pilot.press("escape")
            await _until(pilot, lambda: not _panel(app).shown, "dismissal")
            await pilot.press("4")
            await _until(pilot, lambda: app.current_mode == "config", "switching to Config")

    asyncio.run(main())


def test_lint_failure_ends_in_the_panel_once_and_the_list_still_moves(tmp_path: Path, monkeypatch) -> None:
    from tui.session import Session

    calls: list = []
    monkeypatch.setattr(Session, "run_lint", _failing(calls, "Lint cannot decode 000.png: truncated. Replace the file."))
    app = make_app(make_workspace(tmp_path / "ws", images=3, tagger=False), log_to_file=False)

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await _panel_says(pilot, "Lint cannot decode 000.png")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert len(calls) == 1  # a failed lint is not started again (it used to loop)
            assert not app.busy
            assert "lint: failed" in screen_text(app)
            await pilot.press("escape")
            screen = app.screen
            first = screen.current_key
            await pilot.press("n")
            await _until(pilot, lambda: screen.current_key not in (None, first), "n moving to the next image")

    asyncio.run(main())


def test_preview_decode_failure_says_which_file_and_the_next_image_still_shows(tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    def broken(self, size, *args, **kwargs):  # only the preview shrinks images with thumbnail()
        raise UserError("decoder gave up")

    monkeypatch.setattr(Image.Image, "thumbnail", broken)
    app = make_app(make_workspace(tmp_path / "ws", images=3, tagger=False), log_to_file=False)

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: app.session.dataset is not None and not app.busy, "the dataset loading")
            images = app.session.dataset.images
            screen = app.screen
            await _until(pilot, lambda: screen.current_key == images[0].key, "the first image selected")
            needle = f"cannot show {images[0].path.name}: decoder gave up"
            await _until(pilot, lambda: needle in screen_text(app), f"{needle!r} in the preview")
            await pilot.press("n")
            needle = f"cannot show {images[1].path.name}: decoder gave up"
            await _until(pilot, lambda: needle in screen_text(app), f"{needle!r} after n")

    asyncio.run(main())


def _grid_workspace(tmp_path: Path) -> Path:
    """A workspace whose run folder holds two (fake) epoch LoRAs: enough for the grid to prepare."""
    from tui.demo import TRIGGER

    ws = make_workspace(tmp_path / "ws", images=2, tagger=False)
    (ws / "output").mkdir()
    for epoch in (1, 2):
        (ws / "output" / f"{TRIGGER}-{epoch:06d}.safetensors").write_bytes(b"not used")
    return ws


@pytest.mark.parametrize(("job", "key", "message", "idle", "busy_word", "busy"), [
    ("GridJob", "g", "Cannot load the base model models/tiny-sd: missing.", "g builds the grid", "rendering",
     lambda screen: screen.running),
    ("JudgeJob", "j", "The judge needs a tagger: set [judge] tagger.", "j judges every cell", "judging",
     lambda screen: screen.judging is not None),
])
def test_grid_job_failure_ends_in_the_panel_and_its_key_runs_again(
        tmp_path: Path, monkeypatch, job, key, message, idle, busy_word, busy) -> None:
    """A failed grid build or judgement: the panel, the screen idle again, the key starts a new one."""
    import tui.screens.grid.job as jobs

    calls: list = []
    monkeypatch.setattr(getattr(jobs, job), "run", _failing(calls, message))
    app = make_app(_grid_workspace(tmp_path), log_to_file=False, start_mode="grid")
    head = message.split(":")[0]

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: idle in screen_text(app), "the grid's idle status")
            await pilot.press(key)
            await _panel_says(pilot, head)
            screen = app.screen
            await _until(pilot, lambda: not busy(screen), "the job ending")
            text = screen_text(app)
            assert busy_word not in text and idle in text
            await pilot.press("escape")
            await _until(pilot, lambda: not _panel(app).shown, "dismissal")
            await pilot.press(key)
            await _until(pilot, lambda: len(calls) == 2, "the key starting a second job")
            await _panel_says(pilot, head)

    asyncio.run(main())


@pytest.mark.parametrize("where", ["__init__", "run", "_run"])
def test_training_start_failure_ends_in_the_panel_and_t_starts_again(tmp_path: Path, monkeypatch, where) -> None:
    """The run fails when built (``__init__``), out of its thread (``run`` raising) or as the
    trainer's own Failed event (``_run`` raising a UserError, which ``run`` turns into Failed)."""
    from trainer.run import TrainingRun

    calls = []

    def broken(self, *args, **kwargs):
        calls.append(where)
        raise UserError("The base model models/tiny-sd is missing. Set [model] pretrained_model.")

    monkeypatch.setattr(TrainingRun, where, broken)
    app = make_app(make_workspace(tmp_path / "ws", images=2, tagger=False), log_to_file=False, start_mode="train")

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: app.session.dataset is not None and not app.busy, "the dataset loading")
            await pilot.press("t")
            await _panel_says(pilot, "The base model models/tiny-sd is missing")
            assert not app.training.running
            assert "starting…" not in screen_text(app)
            if where != "__init__":  # the status line says why, brackets and all (no markup)
                await _until(pilot, lambda: "[model]" in _rows_of(app, "#tr-status"), "the reason in the status")
            await pilot.press("escape")
            await _until(pilot, lambda: not _panel(app).shown, "dismissal")
            await pilot.press("t")
            await _until(pilot, lambda: len(calls) == 2, "t starting a second run")
            await _panel_says(pilot, "The base model models/tiny-sd is missing")

    asyncio.run(main())
