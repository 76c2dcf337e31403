"""Full-size images over SSH: OSC 52 path copy (tmux-wrapped) and the 127.0.0.1 share server."""

from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tui.image_share import ImageServer, osc52


def test_osc52_plain_and_inside_tmux() -> None:
    encoded = base64.b64encode(b"/srv/run/grid 1.png").decode()
    assert osc52("/srv/run/grid 1.png", tmux=False) == f"\x1b]52;c;{encoded}\x07"
    wrapped = osc52("/srv/run/grid 1.png", tmux=True)
    assert wrapped == f"\x1bPtmux;\x1b\x1b]52;c;{encoded}\x07\x1b\\"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_server_serves_only_shared_files(tmp_path: Path) -> None:
    shared = tmp_path / "cell 1.png"
    shared.write_bytes(b"\x89PNG shared")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not shared")
    server = ImageServer()
    try:
        url = server.share(shared)
        assert url.startswith(f"http://127.0.0.1:{server.port}/")
        assert _get(url) == (200, b"\x89PNG shared")
        assert server.share(shared) == url  # sharing again keeps the link
        base = f"http://127.0.0.1:{server.port}"
        token = url.split("/")[3]
        assert _get(f"{base}/{token}/secret.png")[0] == 404  # a token serves its own file only
        assert _get(f"{base}/{token}/..%2Fsecret.png")[0] == 404
        assert _get(f"{base}/../secret.png")[0] == 404
        assert _get(f"{base}/{secret}")[0] == 404
        assert _get(f"{base}/")[0] == 404
        with pytest.raises(FileNotFoundError):
            server.share(tmp_path / "missing.png")
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_o_shares_the_image_under_the_cursor_and_the_server_stops_with_the_app(tmp_path: Path) -> None:
    from tui.app import make_app
    from tui.testing import make_workspace

    ws = make_workspace(tmp_path / "ws", images=2, tagger=False)
    app = make_app(ws, log_to_file=False)
    notes: list[str] = []

    async def main() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            while app.busy or app.screen.current_key is None:
                await asyncio.sleep(0.05)
            image = app.session.dataset.image(app.screen.current_key).path
            await pilot.press("o")
            await pilot.pause()
            notes.extend(n.message for n in app._notifications)
            url = next(n for n in notes if "127.0.0.1" in n).split("Full size at ")[1].split(" ")[0]
            assert await asyncio.to_thread(_get, url) == (200, image.read_bytes())
            await pilot.press("6", "o")  # the Grid screen with no grid yet says so instead of failing
            await pilot.pause()
            notes.extend(n.message for n in app._notifications)

    asyncio.run(main())
    assert any("No saved image" in n for n in notes)
    shared = [n for n in notes if "127.0.0.1" in n]
    assert "ssh -L" in shared[0]
    url = shared[0].split("Full size at ")[1].split(" ")[0]
    with pytest.raises(urllib.error.URLError):  # the server stopped when the app exited
        urllib.request.urlopen(url, timeout=2)
    assert app.session.image_server.port is None
