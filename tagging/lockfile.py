"""One writer at a time: an advisory lock file that names its holder.

``FileLock(path)`` takes an exclusive ``flock`` on ``path`` and writes the holder (pid, host,
command, since) into it, so a second writer can say who is in the way. The kernel drops a flock
when its process dies (kill -9 included), so a lock left by a dead process is simply free again:
the next writer takes it over without any pid guessing. Where ``flock`` is not available
(Windows, some network/FUSE filesystems) the lock falls back to the holder record alone: a
record naming a live process on this host blocks; one naming a dead process (or an unreadable
record) is stale and is taken over.

The file is never deleted (deleting a flocked file lets two processes lock two different inodes);
release empties it. Locks are re-entrant within one process: ``dataset_lock`` called again while
held (a CLI command that holds the lock for load, edit and save, calling ``Dataset.save``,
which takes it too) just nests.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tagging.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# How long a second writer waits for the first before refusing (seconds); KAZARI_LOCK_WAIT overrides.
DEFAULT_WAIT_S = 5.0
_POLL_S = 0.05


class LockBusy(UserError):
    """Another process holds the lock; ``holder`` says who (None if it could not be read)."""

    holder: LockHolder | None = None


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    command: str
    since: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"process {self.pid} on {self.host} ({self.command!r}), holding it since {when}"

    def alive(self) -> bool:
        """True unless this record names a process on this host that no longer exists."""
        if self.host != socket.gethostname():
            return True  # cannot tell for another machine: assume it is still working
        return _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True
    return True


def default_command() -> str:
    """What this process is, for the holder record: ``kazari dataset edit ...`` or the script."""
    argv = list(sys.argv) or ["python"]
    name = os.path.basename(argv[0])
    if name in ("cli.py", "__main__.py", "-m", "-c") or name.startswith("python"):
        name = "kazari"
    text = " ".join([name, *argv[1:]])
    return text if len(text) <= 200 else text[:197] + "..."


def _read_holder(path: Path) -> LockHolder | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
        return LockHolder(int(data["pid"]), str(data["host"]), str(data["command"]), float(data["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


class FileLock:
    """An exclusive advisory lock on ``path`` (created with its folder if needed)."""

    def __init__(self, path: Path | str, what: str = "this folder", command: str | None = None) -> None:
        self.path = Path(path)
        self.what = what
        self.command = command or default_command()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free right now; never waits. Raises UserError if it cannot be created."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UserError(
                f"Cannot create the lock file {self.path}: {err.strerror or err}; nothing was changed.",
                path=self.path, hint="Check that the folder is writable (or open it read-only: info, lint, stats).",
            ) from None
        if not self._lock_fd(fd):
            os.close(fd)
            return False
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "since": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        except OSError:
            pass  # the flock is what excludes; the record only names us
        self._fd = fd
        return True

    def _lock_fd(self, fd: int) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
        # No flock here: the holder record decides (stale when its process is gone).
        holder = _read_holder(self.path)
        return holder is None or holder.pid == os.getpid() or not holder.alive()

    def acquire(self, wait: float | None = None) -> None:
        """Take the lock, waiting up to ``wait`` seconds; then raise LockBusy naming the holder."""
        if wait is None:
            wait = float(os.environ.get("KAZARI_LOCK_WAIT", DEFAULT_WAIT_S))
        deadline = time.monotonic() + max(0.0, wait)
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                holder = _read_holder(self.path)
                settle = time.monotonic() + 1.0
                while holder is None and time.monotonic() < settle:
                    time.sleep(_POLL_S)  # the holder has the flock but has not written its record yet
                    holder = _read_holder(self.path)
                who = holder.describe() if holder else "another process (its record is empty or unreadable)"
                err = LockBusy(
                    f"{self.what} is being changed by {who}; kazari waited {wait:g} s and changed nothing, "
                    "so no edit of either is lost.",
                    path=self.path,
                    hint=f"Wait for it to finish (or close that program), then run this again. The lock is "
                    f"{self.path}; it frees itself when that process ends.",
                )
                err.holder = holder
                raise err
            time.sleep(_POLL_S)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # empty, not deleted: see the module docstring
        os.close(fd)  # closing drops the flock

    def holder(self) -> LockHolder | None:
        """Who holds the lock now (None when free or unknown)."""
        return _read_holder(self.path)


# ---- re-entrant, per-process registry -------------------------------------------------------------
_registry_guard = threading.Lock()
_held: dict[str, list] = {}  # path -> [FileLock, depth]


@contextlib.contextmanager
def hold(path: Path | str, what: str, *, wait: float | None = None, command: str | None = None) -> Iterator[FileLock]:
    """Hold the lock at ``path`` for the ``with`` block; nests within one process."""
    key = os.path.abspath(path)
    with _registry_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is None:
        lock = FileLock(key, what, command)
        lock.acquire(wait)
        with _registry_guard:
            entry = _held[key] = [lock, 1]
    try:
        yield entry[0]
    finally:
        with _registry_guard:
            entry[1] -= 1
            done = entry[1] == 0
            if done:
                del _held[key]
        if done:
            entry[0].release()


def try_hold(path: Path | str, what: str) -> contextlib.AbstractContextManager[FileLock | None]:
    """Like :func:`hold` but never waits: yields None (holding nothing) when someone else has it."""
    key = os.path.abspath(path)
    with _registry_guard:
        if key in _held:
            return hold(key, what)
    lock = FileLock(key, what)
    if not lock.try_acquire():
        return contextlib.nullcontext(None)
    with _registry_guard:
        _held[key] = [lock, 0]  # hold() below adds the depth and releases it at the end
    return hold(key, what)


def dataset_lock_path(root: Path | str) -> Path:
    return Path(root) / ".kazari" / "lock"


def dataset_lock(root: Path | str, *, wait: float | None = None,
                 command: str | None = None) -> contextlib.AbstractContextManager[FileLock]:
    """The dataset's one-writer lock ``<root>/.kazari/lock``."""
    return hold(dataset_lock_path(root), f"The dataset {root}", wait=wait, command=command)
