"""Helpers for driving the app headless (tests and the bench): plain-text screen dumps."""

from __future__ import annotations

import io

from rich.console import Console
from textual.app import App


def screen_text(app: App) -> str:
    """What the terminal shows right now, as plain text (one line per row)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def make_workspace(
    root,
    *,
    images: int = 6,
    image_size: int = 64,
    repeats: int = 1,
    epochs: int = 1,
    tagger: bool = True,
    sd_model: bool = False,
    sample_steps: int = 2,
):
    """A small, fully deterministic workspace for tests and benches (same layout as ``kazari demo``)."""
    from pathlib import Path

    from tagging.synthetic import make_character_dataset
    from trainer.config import preset
    from trainer.config.document import ConfigDocument
    from tui.demo import TRIGGER

    root = Path(root)
    make_character_dataset(root / "dataset", n_images=images, trigger=TRIGGER, repeats=repeats,
                           size=image_size, seed=0)
    if tagger:
        from tagging.tagger.tiny import build_tiny_tagger

        build_tiny_tagger(root / "models" / "tagger")
    if sd_model:
        from trainer.tiny import make_tiny_sd

        make_tiny_sd(root / "models" / "tiny-sd")
    cfg = preset(
        "quick-test",
        model={"pretrained_model": Path("models/tiny-sd")},
        dataset={"train_data_dir": Path("dataset"), "cache_latents": "memory"},
        training={"max_train_epochs": epochs, "device": "cpu", "seed": 1},
        output={"output_dir": Path("output"), "output_name": TRIGGER, "save_every_n_epochs": 1},
        sample={"sample_prompts": [f"{TRIGGER}, 1girl --w 64 --h 64 --s {sample_steps} --d 7"],
                "sample_every_n_epochs": 1},
    )
    ConfigDocument.new(root / "kazari.toml", cfg, header="test workspace").save()
    return root


async def wait_for_text(app: App, pilot, needle: str, timeout: float = 15.0) -> str:
    """Pause the pilot until ``needle`` is on screen (workers and timers finish at their own pace).

    Fixed pauses make Pilot tests flaky on a loaded CI machine; polling keeps them fast when idle
    and patient when not. Raises AssertionError with the screen when the text never appears.
    """
    import time

    end = time.monotonic() + timeout
    while True:
        text = screen_text(app)
        if needle in text:
            return text
        if time.monotonic() > end:
            raise AssertionError(f"{needle!r} never appeared; the screen shows:\n{text}")
        await pilot.pause(0.1)
