"""Reading user files without hanging: a FIFO, device or folder where a file should be is refused.

``open()`` on a FIFO blocks until a writer appears (forever, in practice), and reading a device
can stream without end. Files are opened with ``O_NONBLOCK`` (which never blocks the open and is
ignored by regular files' reads) and checked with ``fstat`` before anything is read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class NotRegularFile(OSError):
    """The path exists but is not a regular file (``kind`` says what it is)."""

    def __init__(self, path: Path | str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"is {kind}, not a regular file", str(path))
        self.kind = kind


def describe_mode(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_regular_bytes(path: Path | str) -> bytes:
    """The bytes of a regular file (through symlinks). Raises FileNotFoundError, NotRegularFile or OSError."""
    try:
        fd = os.open(path, _FLAGS)
    except IsADirectoryError:
        raise NotRegularFile(path, "a folder") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, describe_mode(mode))
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            return fh.read()
    finally:
        if fd >= 0:
            os.close(fd)


def regular_file_problem(path: Path | str) -> str | None:
    """None for a regular file (or a missing one); else what it is, e.g. 'a FIFO (named pipe)'."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else describe_mode(mode)
