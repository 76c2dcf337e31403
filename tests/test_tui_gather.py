"""Gather screen: fetch from a fake booru with progress, accept/reject, remove backgrounds, undo."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagging.gather.fakesite import FakeBooru, make_post
from tagging.gather.http import HttpOptions
from tagging.gather.tiny_seg import build_colour_key_model
from tui.app import make_app
from tui.testing import make_workspace, wait_for_text


def character_png(seed: int) -> bytes:
    """A noisy reddish "character" on a pure blue background (the tiny model's key colour)."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((64, 48, 3), np.uint8)
    arr[:] = (0, 0, 255)
    arr[10:54, 12:36] = rng.integers(0, 256, (44, 24, 3), dtype=np.uint8)
    arr[10:54, 12:36, 0] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_fetch_review_clean_undo(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", images=2, tagger=False)
    model = build_colour_key_model(tmp_path / "seg.onnx", size=32)
    data = {i: character_png(i) for i in (30, 20, 10)}
    site = FakeBooru([make_post(i, d) for i, d in data.items()], {f"/data/{i}.png": d for i, d in data.items()})
    app = make_app(ws, log_to_file=False, start_mode="gather")
    app.gather_http = HttpOptions(interval=0.01, retries=1, backoff=0.01, timeout=10)

    async def main() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            screen = app.screen
            await wait_for_text(app, pilot, "No fetched images yet")
            screen.query_one("#ga-tags").value = "uiharu_kazari"
            screen.query_one("#ga-url").value = site.base_url
            screen.query_one("#ga-model").value = str(model)
            screen.query_one("#ga-min").value = "0"  # the test pictures are tiny
            screen.query_one("#ga-table").focus()
            await pilot.press("ctrl+r")
            await wait_for_text(app, pilot, "fetched 3 new image(s)")
            ds = app.session.dataset
            keys = screen.keys
            assert [k.rsplit("/", 1)[1] for k in keys] == ["danbooru_30.png", "danbooru_20.png", "danbooru_10.png"]
            assert ds.image(keys[0]).tags[:2] == ["kazari", "uiharu_kazari"]
            assert ds.image(keys[0]).caption_path.read_text().startswith("kazari, uiharu_kazari")
            assert "danbooru post 30 · kazari, uiharu_kazari" in screen.query_one("#ga-info").render().plain
            await pilot.press("a")  # accept the first: the cursor moves on
            await pilot.pause()
            assert keys[0] in screen.accepted
            await pilot.press("x")  # reject the second: it goes to the trash
            await wait_for_text(app, pilot, "rejected")
            assert screen.keys == [keys[0], keys[2]]
            assert (ds.root / ".kazari" / "trash" / keys[1]).exists()
            await pilot.press("b")
            await wait_for_text(app, pilot, "background removed from 2 image(s)")
            with Image.open(ds.image(keys[0]).path) as im:
                assert im.convert("RGB").getpixel((0, 0)) == (255, 255, 255)  # blue became white
            before = screen.query_one("#ga-before")
            after = screen.query_one("#ga-after")
            assert screen._selected() == keys[2]  # the cursor stayed on the row after the rejected one
            assert ".kazari/originals/images" in str(before.source) and after.source == ds.image(keys[2]).path
            assert "cleaned" in str(screen.query_one("#ga-table").get_row(keys[2]))
            await pilot.press("u")  # undo the clean: the originals come back
            await pilot.pause()
            assert ds.image(keys[0]).path.read_bytes() == data[30]
            await pilot.press("u")  # undo the reject
            await pilot.pause()
            assert screen.keys == keys

    with site:
        asyncio.run(main())


@pytest.fixture(scope="module")
def snap_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("gather-snap") / "ws", images=3, tagger=False)


def test_gather_snapshot_80x24(snap_compare, snap_workspace: Path) -> None:
    app = make_app(snap_workspace, log_to_file=False, start_mode="gather")

    async def settle(pilot) -> None:
        await pilot.pause()
        while pilot.app.busy:
            await pilot.app.workers.wait_for_complete()
            await pilot.pause(0.05)
        for field in pilot.app.screen.query("Input"):
            field.cursor_blink = False
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)
