"""One training run per output folder: ``<output_dir>/.kazari-train.lock`` held for the whole run.

Two runs into one folder would write the same checkpoint names and both report success. The lock
file is created with O_EXCL and holds the owner's pid, host and start time; a lock left by a dead
process on this host (kill -9, power cut) is stale and taken over. A lock from another host cannot
be checked, so it is respected and the message says how to remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from tagging.errors import UserError

LOCK_NAME = ".kazari-train.lock"


class OutputBusy(UserError):
    """Another live run holds the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_holder(out_dir: Path) -> dict | None:
    """The lock's owner ({pid, host, started}) or None when unlocked or unreadable."""
    try:
        data = json.loads((Path(out_dir) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def holder_is_alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: assume it runs
    try:
        return _alive(int(holder["pid"]))
    except (KeyError, TypeError, ValueError):
        return False


class OutputLock:
    """``with OutputLock(out_dir):`` — raises :class:`OutputBusy` naming the holder's pid."""

    def __init__(self, out_dir: Path | str) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = read_holder(self.path.parent)
                if holder is None:
                    # Being written this instant, or torn by a kill right after creation.
                    time.sleep(0.05)
                    holder = read_holder(self.path.parent)
                if holder is not None and holder_is_alive(holder):
                    self._refuse(holder)
                with contextlib.suppress(FileNotFoundError):  # stale: its owner is gone
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self.held = True
            return self
        self._refuse(read_holder(self.path.parent) or {})
        return self  # unreachable

    def _refuse(self, holder: dict) -> None:
        pid, host = holder.get("pid", "?"), holder.get("host", "?")
        since = time.strftime("%H:%M:%S", time.localtime(holder["started"])) if "started" in holder else "?"
        raise OutputBusy(
            f"Another kazari training run (pid {pid} on {host}, started {since}) is writing to "
            f"{self.path.parent}; two runs in one output folder would overwrite each other's checkpoints.",
            path=self.path,
            hint=f"Wait for it to finish, stop it, or set a different [output] output_dir / output_name. If "
            f"that process is gone (another machine), delete {self.path}.")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = read_holder(self.path.parent)
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
