"""The real thing in a real terminal: `kazari open` inside a detached tmux session, driven by keys."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tui.testing import make_workspace

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


class Tmux:
    """A private tmux server (own socket), so no user session is touched; killed at the end."""

    def __init__(self, name: str) -> None:
        self.base = [TMUX, "-L", name]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=30)

    def pane(self) -> str:
        return self("capture-pane", "-p", "-t", "k").stdout

    def wait_for(self, text: str, timeout: float = 90.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            screen = self.pane()
            if text in screen:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never appeared; the pane shows:\n{self.pane()}")


def test_workbench_runs_inside_tmux(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", images=4, tagger=False)
    tmux = Tmux(f"kazari-test-{tmp_path.name}")
    command = f"{sys.executable} -m tui.cli open {ws}; echo EXITED-$?; sleep 30"
    started = tmux("new-session", "-d", "-s", "k", "-x", "100", "-y", "30", command)
    assert started.returncode == 0, started.stderr
    try:
        screen = tmux.wait_for("1_kazari/0000.png")
        assert "1 Dataset" in screen and "6 Grid" in screen
        screen = tmux.wait_for("▀")  # the halfcell preview (decoded in a worker, so a moment later)
        # The app fills the real 100x30 pane (not an 80x24 fallback): the footer is on the last row
        # and reaches past column 80.
        rows = screen.rstrip("\n").split("\n")
        assert len(rows) == 30 and "Filter" in rows[-1], screen
        assert max(len(r.rstrip()) for r in rows) > 80, screen
        tmux("send-keys", "-t", "k", "3")  # 3 = Tags (the screens follow the loop)
        screen = tmux.wait_for("suggested")
        assert "hair_flower" in screen
        tmux("send-keys", "-t", "k", "f1")
        tmux.wait_for("keys")
        tmux("send-keys", "-t", "k", "Escape")
        tmux("send-keys", "-t", "k", "C-q")
        screen = tmux.wait_for("EXITED-")
        assert "EXITED-0" in screen
        assert "Traceback" not in screen
    finally:
        tmux("kill-server")
    log = ws / ".kazari" / "logs" / "kazari.log"
    assert log.is_file()
