"""Crash-safe file writes: a reader sees the old content or the new one, never a torn file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# Read once at import (os.umask can only be read by setting it); new files honour it like open().
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, then rename.

    The rename is atomic on POSIX and Windows (``os.replace``); the folder is fsynced too, so
    the new name survives a power cut. Permissions of an existing file are kept; a new file gets
    the usual ``0o666 & ~umask``, not ``mkstemp``'s private 0600.
    """
    path = Path(path)
    staged: list[tuple[str, Path]] = []
    try:
        _stage(path, data, staged)
        os.replace(staged[0][0], path)
    except BaseException:
        for tmp_name, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    """Text version of :func:`atomic_write_bytes`; newlines are written as given (no translation)."""
    atomic_write_bytes(path, text.encode(encoding))


def _fsync_dir(folder: Path) -> None:
    # Directory fsync is POSIX-only; elsewhere the rename is as durable as the OS makes it.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stage(path: Path, data: bytes, staged: list[tuple[str, Path]]) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    staged.append((tmp_name, path))  # list.append is atomic: safe from worker threads
    with os.fdopen(fd, "wb") as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    os.chmod(tmp_name, mode)


def atomic_write_many(items: list[tuple[Path, bytes]], workers: int = 8) -> None:
    """Write several files atomically: every temp file is written and fsynced, then all are renamed.

    A crash leaves each file either old or new, never torn; it is the batch version of
    :func:`atomic_write_bytes` for saving thousands of captions. The fsyncs run in a few threads
    (they release the GIL and the filesystem commits them together), then each folder is fsynced once.
    """
    items = list({Path(p): d for p, d in items}.items())  # one write per file: the last one wins
    staged: list[tuple[str, Path]] = []
    try:
        if len(items) > 8 and workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
                for future in [pool.submit(_stage, Path(p), d, staged) for p, d in items]:
                    future.result()
        else:
            for path, data in items:
                _stage(Path(path), data, staged)
        by_target = {path: tmp_name for tmp_name, path in staged}
        for path, _ in items:  # rename in the caller's order
            os.replace(by_target[path], path)
    except BaseException:
        for tmp_name, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        raise
    for folder in {path.parent for path, _ in items}:
        _fsync_dir(folder)
