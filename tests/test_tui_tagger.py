"""Tagger screen: tag with the tiny ONNX tagger, move a threshold, see tags change, apply."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tagging.tagger.tiny import CONSTANT_GENERAL
from tui.app import make_app
from tui.testing import make_workspace, screen_text


def test_tag_rethreshold_from_memory_and_apply(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", images=4, tagger=True)
    app = make_app(ws, log_to_file=False, start_mode="tagger")

    async def main() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            screen = app.screen
            await pilot.press("ctrl+r")
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause(0.4)
            state = screen.state
            assert state is not None and len(state.results) == 4
            assert "4 scored" in screen_text(app)
            # the tiny tagger gives these tags the same fixed score on every image
            mid = {t for t, score in CONSTANT_GENERAL.items() if 0.5 < score < 0.9}
            assert mid
            low = {k: set(r.tags) for k, r in state.results.items()}
            assert all(mid <= tags for tags in low.values())
            general = screen.query_one("#tt-general")
            general.focus()
            await pilot.press("end", *["backspace"] * 6, *"0.9")
            await pilot.pause()
            high = {k: set(r.tags) for k, r in state.results.items()}
            assert all(not (mid & tags) and tags < low[k] for k, tags in high.items())
            assert not any(w.is_running for w in app.workers)  # no model run for a threshold change
            await pilot.press(*["backspace"] * 3, *"abc")
            await pilot.pause()
            assert "not a number" in screen_text(app)
            await pilot.press(*["backspace"] * 3, *"0.5")
            await pilot.pause()
            assert "not a number" not in screen_text(app)
            ds = app.session.dataset
            expected = dict(state.final)
            assert expected, "append mode adds the model's new tags to some caption"
            await pilot.press("escape", "ctrl+y")
            await pilot.pause()
            for key, tags in expected.items():
                assert ds.image(key).tags == tags
            assert ds.history[-1].label.startswith("auto-tag")

    asyncio.run(main())


def test_apply_after_edits_elsewhere_keeps_them(tmp_path: Path) -> None:
    """Scores are re-merged with the captions as they are when applying: an edit made on the
    Dataset screen after scoring survives, and a trashed image does not break the Tagger screen."""
    ws = make_workspace(tmp_path / "ws", images=4, tagger=True)
    app = make_app(ws, log_to_file=False, start_mode="tagger")

    async def main() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press("ctrl+r")
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause(0.3)
            ds = app.session.dataset
            first, second = ds.images[0].key, ds.images[1].key
            assert first in app.screen.state.final
            await pilot.press("1")
            await pilot.pause()
            await pilot.press("a", *"my_note", "enter")
            await pilot.pause()
            await pilot.press("n", "x", "y")  # trash the second image
            await pilot.pause()
            assert second not in {img.key for img in ds.images}
            await pilot.press("3")
            await pilot.pause()
            assert second not in app.screen.state.results
            await pilot.press("ctrl+y")
            await pilot.pause()
            assert "my_note" in ds.image(first).tags
            assert ds.history[-1].label.startswith("auto-tag")

    asyncio.run(main())
