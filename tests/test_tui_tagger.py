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
            await pilot.press("ctrl+b")  # model tags as they are, so every caption gains some
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
            await pilot.press("2")
            await pilot.pause()
            assert second not in app.screen.state.results
            await pilot.press("ctrl+y")
            await pilot.pause()
            assert "my_note" in ds.image(first).tags
            assert ds.history[-1].label.startswith("auto-tag")

    asyncio.run(main())


def _tagged(app):
    async def wait(pilot) -> None:
        for _ in range(200):
            await pilot.pause(0.05)
            if not app.screen.running:
                return
        raise AssertionError("tagging never finished")
    return wait


def test_tagger_honours_the_character_profile_and_offers_the_character_tag(tmp_path: Path) -> None:
    """Issue 12: pruned features are not put back, the model's character tag is offered (^n adds
    it to never-add) instead of written, and ^b shows and turns the profile off."""
    from tagging.character import load_character, record_pruned
    from tagging.edits import RemoveTags

    ws = make_workspace(tmp_path / "ws", images=4, tagger=True)
    app = make_app(ws, log_to_file=False, start_mode="tagger")

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            ds = app.session.dataset
            ds.apply(RemoveTags(["pink_hair", "long_hair"]))
            record_pruned(ds.root, ["pink_hair", "long_hair"])
            await pilot.press("ctrl+r")
            await _tagged(app)(pilot)
            state = app.screen.state
            assert state.results
            for tags in state.final.values():
                assert not {"pink_hair", "long_hair", "uiharu_kazari"} & set(tags)
            assert state.offers == [("uiharu_kazari", 4)]
            text = screen_text(app)
            assert "never writes pink_hair, long_hair" in text and "uiharu_kazari (4)" in text
            await pilot.press("ctrl+n")
            await pilot.pause()
            assert load_character(ds.root).never_add == ["uiharu_kazari"]
            assert app.screen.state.offers == []
            await pilot.press("ctrl+b")
            await pilot.pause()
            assert "IGNORED" in screen_text(app)
            assert all("pink_hair" in tags and "uiharu_kazari" in tags for tags in app.screen.state.final.values())
            await pilot.press("ctrl+b", "ctrl+y")
            await pilot.pause()
            assert all(not {"pink_hair", "uiharu_kazari"} & set(img.tags) for img in ds.images)

    asyncio.run(main())


def test_model_load_failure_stays_visible_and_the_screen_recovers(tmp_path: Path, monkeypatch) -> None:
    """A failed load (no network) ends in an error panel that stays until dismissed, the status
    no longer says "loading…", and ^r works again."""
    from tagging.errors import UserError
    from tagging.tagger import Tagger

    calls = []
    real_load = Tagger.load.__func__

    def offline(cls, model, *args, **kwargs):
        calls.append(model)
        if len(calls) == 1:
            raise UserError("Cannot download wd-swinv2-v3: no network.", hint="Pass --model a local folder.")
        return real_load(cls, model, *args, **kwargs)

    monkeypatch.setattr(Tagger, "load", classmethod(offline))
    ws = make_workspace(tmp_path / "ws", images=3, tagger=True)
    app = make_app(ws, log_to_file=False, start_mode="tagger")

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.press("ctrl+r")
            await _tagged(app)(pilot)
            panel = app.screen.query_one("#error-panel")
            for _ in range(40):  # the panel is shown from the worker's callback
                if panel.shown:
                    break
                await pilot.pause(0.05)
            assert panel.shown and "no network" in panel.message
            text = screen_text(app)
            assert "loading" not in text and "failed" in text
            await pilot.pause(0.5)
            assert panel.shown  # not a toast: still there
            await pilot.press("escape")
            await pilot.pause()
            assert not panel.shown
            await pilot.press("ctrl+r")
            await _tagged(app)(pilot)
            assert app.screen.state is not None and len(app.screen.state.results) == 3

    asyncio.run(main())


def test_cancel_while_the_model_loads_frees_the_screen(tmp_path: Path, monkeypatch) -> None:
    import threading

    from tagging.tagger import Tagger

    release = threading.Event()
    real_load = Tagger.load.__func__

    def slow(cls, model, *args, **kwargs):
        release.wait(10)
        return real_load(cls, model, *args, **kwargs)

    monkeypatch.setattr(Tagger, "load", classmethod(slow))
    ws = make_workspace(tmp_path / "ws", images=3, tagger=True)
    app = make_app(ws, log_to_file=False, start_mode="tagger")

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.press("ctrl+r")
            await pilot.pause()
            assert app.screen.running
            await pilot.press("ctrl+g")
            await pilot.pause()
            assert not app.screen.running and "cancelled" in screen_text(app)
            release.set()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.screen.state is None  # the abandoned run's late result is dropped

    asyncio.run(main())
