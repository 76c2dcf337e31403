"""Dataset and Tags screens driven by keys; the files on disk are checked after saving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tagging.captions import parse_caption
from tui.app import make_app
from tui.testing import make_workspace, screen_text
from tui.widgets.dialogs import ConfirmScreen

FEATURES = {"pink_hair", "long_hair", "hair_flower", "hair_ornament", "blue_eyes"}


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws", images=6, tagger=False)


def _captions(ws: Path) -> dict[str, list[str]]:
    return {p.name: parse_caption(p.read_text()) for p in sorted((ws / "dataset").glob("*/*.txt"))}


async def _settle(app, pilot) -> None:
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


def _run(app, scenario, size=(100, 30)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await _settle(app, pilot)
            await scenario(app, pilot)

    asyncio.run(main())


def test_edit_one_image_undo_and_save(workspace: Path) -> None:
    before = _captions(workspace)
    mtimes = {p: p.stat().st_mtime_ns for p in (workspace / "dataset").glob("*/*.txt")}
    app = make_app(workspace, log_to_file=False)

    async def scenario(app, pilot) -> None:
        screen = app.screen
        assert len(screen.visible_keys) == 6
        key = screen.current_key
        assert key == screen.visible_keys[0]
        first_tag = app.session.dataset.image(key).tags[0]
        await pilot.press("tab", "d")  # into the tag list; delete the highlighted (first) tag
        await pilot.pause()
        assert first_tag not in app.session.dataset.image(key).tags
        assert "1 unsaved" in screen_text(app)
        await pilot.press("a", *"red_scarf", "enter")
        await pilot.pause()
        assert app.session.dataset.image(key).tags[-1] == "red_scarf"
        await pilot.press("u")  # undo the add, keep the delete
        await pilot.pause()
        assert "red_scarf" not in app.session.dataset.image(key).tags
        await pilot.press("s")
        await _settle(app, pilot)
        assert "unsaved" not in screen_text(app)

    _run(app, scenario)
    after = _captions(workspace)
    changed = [name for name in after if after[name] != before[name]]
    assert changed == ["0000.txt"]
    assert after["0000.txt"] == before["0000.txt"][1:]
    for path, mtime in mtimes.items():  # only the changed caption was written
        if path.name != "0000.txt":
            assert path.stat().st_mtime_ns == mtime


def test_filter_move_tag_and_trash_with_undo(workspace: Path) -> None:
    app = make_app(workspace, log_to_file=False)

    async def scenario(app, pilot) -> None:
        screen = app.screen
        await pilot.press("slash", *"blonde_hair", "enter")
        await pilot.pause()
        ds = app.session.dataset
        assert screen.visible_keys and len(screen.visible_keys) < 6
        assert all("blonde_hair" in ds.image(k).tags for k in screen.visible_keys)
        await pilot.press("slash", "ctrl+u", "enter")  # clear the filter
        await pilot.pause()
        assert len(screen.visible_keys) == 6
        key = screen.current_key
        tags = list(ds.image(key).tags)
        await pilot.press("tab", "J")  # move the first tag down one place
        await pilot.pause()
        assert ds.image(key).tags[:2] == [tags[1], tags[0]]
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        image = workspace / "dataset" / key
        assert not image.exists()
        assert list((workspace / "dataset" / ".kazari" / "trash").rglob(Path(key).name))
        assert len(screen.visible_keys) == 5
        await pilot.press("u")
        await pilot.pause()
        assert image.exists() and len(screen.visible_keys) == 6
        # A trash changes no caption (its Change has length 0), yet it was undone: say so.
        shown = [n.message for n in app._notifications]
        assert any(m.startswith("undone: ") for m in shown) and "nothing to undo" not in shown

    _run(app, scenario)


def test_prune_suggested_features_across_the_set_then_undo_and_save(workspace: Path) -> None:
    app = make_app(workspace, log_to_file=False, start_mode="tags")

    async def scenario(app, pilot) -> None:
        await _settle(app, pilot)
        screen = app.screen
        assert set(screen.suggested) == FEATURES
        assert "★ feature" in screen_text(app)
        await pilot.press("P")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        ds = app.session.dataset
        assert not any(FEATURES & set(img.tags) for img in ds.images)
        from tagging.character import load_character

        assert set(load_character(ds.root).features) == FEATURES  # recorded for the tagger
        assert "features: " in screen_text(app)
        await pilot.press("u")
        await pilot.pause()
        assert all("hair_flower" in img.tags for img in ds.images)
        await pilot.press("r")  # redo the prune, then save
        await pilot.pause()
        assert not any(FEATURES & set(img.tags) for img in ds.images)
        await pilot.press("s")
        await _settle(app, pilot)

    _run(app, scenario)
    for name, tags in _captions(workspace).items():
        assert not FEATURES & set(tags), name
        assert "1girl" in tags


def test_bulk_remove_selected_tags_and_set_trigger_first(workspace: Path) -> None:
    app = make_app(workspace, log_to_file=False, start_mode="tags")

    async def scenario(app, pilot) -> None:
        await _settle(app, pilot)
        screen = app.screen
        ds = app.session.dataset
        # select the first two rows of the frequency table and remove them everywhere
        chosen = screen.rows[:2]
        await pilot.press("space", "space")
        await pilot.pause()
        assert "2 selected" in screen_text(app)  # the counter follows the selection
        await pilot.press("d")
        await pilot.pause()
        assert not any(set(chosen) & set(img.tags) for img in ds.images)
        await pilot.press("t")
        await pilot.pause()
        await pilot.press("ctrl+u", *"kz_char", "enter")
        await pilot.pause()
        assert all(img.tags[0] == "kz_char" for img in ds.images)
        history = [str(o.prompt) for o in screen.query_one("#tg-history").options]
        assert len(history) == 2 and "remove" in history[1]  # newest first; both steps visible
        from tagging.character import load_character

        assert load_character(ds.root).trigger == "kz_char"
        await pilot.press("home", "down")
        await pilot.pause()
        tag = screen.current_tag()
        assert tag and tag != "kz_char"
        await pilot.press("f", "n")
        await pilot.pause()
        profile = load_character(ds.root)
        assert profile.features == [tag] and profile.never_add == [tag]
        await pilot.press("f")
        await pilot.pause()
        assert load_character(ds.root).features == []

    _run(app, scenario)


def test_findings_list_jumps_to_the_chosen_image(workspace: Path) -> None:
    from tui.screens.dataset.findings import FindingsScreen

    app = make_app(workspace, log_to_file=False)

    async def scenario(app, pilot) -> None:
        screen = app.screen
        first = screen.current_key
        findings = app.session.findings
        index = next(i for i, f in enumerate(findings) if f.key and f.key != first)
        await pilot.press("f")
        await pilot.pause()
        assert isinstance(app.screen, FindingsScreen)
        listed = screen_text(app)
        assert "dataset/1_kazari/0002.txt: duplicate tag(s)" in listed  # workspace-relative path, once
        assert "/ws/dataset/" not in listed
        await pilot.press(*["down"] * index, "enter")
        await pilot.pause()
        await pilot.pause()
        assert app.screen is screen
        target = findings[index].key
        assert screen.current_key == target
        assert screen.visible_keys[screen.query_one("#ds-images").cursor_row] == target
        assert f"{target}  " in screen_text(app)  # the tag pane's title names the image

    _run(app, scenario)


@pytest.mark.parametrize("answer", ["escape", "d", "s"])
def test_quit_with_unsaved_captions_asks_first(workspace: Path, answer: str) -> None:
    from tui.widgets.dialogs import ChoiceScreen

    before = _captions(workspace)
    app = make_app(workspace, log_to_file=False)

    async def scenario(app, pilot) -> None:
        await pilot.press("tab", "d")  # delete the first tag of the first image
        await pilot.pause()
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        assert "1 caption" in screen_text(app)
        await pilot.press(answer)
        await pilot.pause()
        if answer == "escape":  # stays, edit kept in memory
            assert app.is_running and not isinstance(app.screen, ChoiceScreen)
            assert len(app.session.dataset.dirty_keys) == 1

    _run(app, scenario)
    after = _captions(workspace)
    if answer == "s":
        assert after["0000.txt"] == before["0000.txt"][1:]
        assert {k: v for k, v in after.items() if k != "0000.txt"} == {
            k: v for k, v in before.items() if k != "0000.txt"
        }
    else:
        assert after == before


def test_big_save_runs_in_a_worker_behind_a_modal(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import tui.screens.base as base
    from tagging.dataset import Dataset
    from tui.widgets.dialogs import BusyScreen

    monkeypatch.setattr(base, "SAVE_IN_BACKGROUND_FROM", 2)
    gate = threading.Event()
    on_ui_thread: list[bool] = []
    real_save = Dataset.save

    def slow_save(self, *args, **kwargs):
        on_ui_thread.append(threading.current_thread() is threading.main_thread())
        gate.wait(20)
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save", slow_save)
    app = make_app(workspace, log_to_file=False, start_mode="tags")

    async def scenario(app, pilot) -> None:
        await pilot.press("P", "y")  # prune: every caption changes
        await pilot.pause()
        dirty = len(app.session.dataset.dirty_keys)
        assert dirty == 6
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, BusyScreen)  # the UI is responsive while the files are written
        await pilot.press("u", "1")  # keys cannot edit or switch modes under the modal
        await pilot.pause()
        assert app.current_mode == "tags" and isinstance(app.screen, BusyScreen)
        gate.set()
        await _settle(app, pilot)
        assert not isinstance(app.screen, BusyScreen)
        assert not app.session.dataset.dirty_keys
        assert "unsaved" not in screen_text(app)

    _run(app, scenario)
    assert on_ui_thread == [False]
    assert all(not (set(tags) & FEATURES) for tags in _captions(workspace).values())


def test_recovered_save_and_a_busy_lock_are_shown(workspace: Path, monkeypatch) -> None:
    """A save interrupted by a kill is completed on open and the user is told; a held lock is named."""
    import subprocess
    import sys

    import tagging.dataset as dsm
    from tagging.dataset import Dataset
    from tagging.edits import AddTag

    root = workspace / "dataset"
    ds = Dataset.open(root)
    ds.apply(AddTag("interrupted"))
    real = dsm.atomic_write_many

    class Crash(BaseException):
        pass

    def half(items, **kw):
        items = list(items)
        if any(".kazari" not in str(p) for p, _ in items):
            real(items[: len(items) // 2])
            raise Crash
        return real(items, **kw)

    monkeypatch.setattr(dsm, "atomic_write_many", half)
    with pytest.raises(Crash):
        ds.save()
    monkeypatch.undo()
    holder = "import sys\nfrom tagging.lockfile import dataset_lock\nwith dataset_lock(sys.argv[1], command='other-tool'):\n" \
             "    print('LOCKED', flush=True)\n    sys.stdin.readline()\n"
    app = make_app(workspace, log_to_file=False)

    async def scenario(app, pilot) -> None:
        shown = " ".join(n.message for n in app._notifications)
        assert "kazari completed it" in shown
        assert "interrupted" in app.session.dataset.image(app.screen.current_key).tags
        proc = subprocess.Popen([sys.executable, "-c", holder, str(app.session.dataset.root)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "LOCKED"
            app.session.dataset.lock_wait = 0.1
            await pilot.press("tab", "d", "s")
            await _settle(app, pilot)
            assert f"process {proc.pid}" in screen_text(app) + " ".join(n.message for n in app._notifications)
            assert app.session.dataset.dirty_keys  # nothing was written: the edit is still unsaved
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)

    _run(app, scenario)


def test_a_plain_image_folder_opens_as_the_cli_reads_it(tmp_path: Path) -> None:
    # `kazari dataset info` reads images lying directly in a folder; the workbench refused them.
    from PIL import Image

    from tagging.dataset import Dataset

    folder = tmp_path / "plain"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (i * 60, 90, 160)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("1girl, solo")
    app = make_app(folder, log_to_file=False)

    async def scenario(app, pilot) -> None:
        assert app.session.dataset is not None
        assert len(app.session.dataset.images) == len(Dataset.open(folder).images) == 3

    _run(app, scenario)


def test_no_dataset_message_is_shown_whole_at_80x24_and_writes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "notes"
    empty.mkdir()
    (empty / "readme.md").write_text("not a dataset")
    app = make_app(empty, log_to_file=False)

    async def scenario(app, pilot) -> None:
        text = " ".join(screen_text(app).split())
        assert "No dataset in" in text
        assert "creates an example workspace." in text  # the end of the paragraph, not cut off

    _run(app, scenario, size=(80, 24))
    assert not (empty / ".kazari").exists()
