"""Keep library output off the screen: everything goes to a log file under the workspace.

Three kinds of output could paint over a full-screen TUI:
1. Python ``logging`` records and ``warnings`` (diffusers, transformers, torch) → a logging handler.
2. ``print``/``sys.stderr`` writes, e.g. tqdm progress bars → Textual's print capture (the app
   forwards ``events.Print`` here).
3. Native writes to file descriptors 1/2 (CUDA, onnxruntime, C extensions) bypass Python entirely →
   :func:`redirect_native_output` points fds 1/2 at the log file and gives Textual a private
   duplicate of the terminal.

:class:`LogSink` is thread-safe (the trainer thread logs too) and keeps a short in-memory tail for
the log panel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from pathlib import Path

TAIL_LINES = 400


class LogSink:
    """Append-only log file plus an in-memory tail of the most recent lines."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = ""
        self.version = 0  # bumped on every new line; the panel redraws only when it changed
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()

    def write(self, text: str, source: str = "") -> None:
        """Record text that may hold partial lines and carriage-return progress updates."""
        if not text:
            return
        with self._lock:
            buf = self._partial + text
            lines = buf.split("\n")
            self._partial = lines.pop()
            # A tqdm bar rewrites its line with "\r": keep only the last state of it.
            if "\r" in self._partial:
                self._partial = self._partial.rsplit("\r", 1)[-1]
            for line in lines:
                line = line.rsplit("\r", 1)[-1].rstrip()
                if line:
                    self._emit(line, source)

    def line(self, line: str, source: str = "") -> None:
        with self._lock:
            self._emit(line.rstrip(), source)

    def _emit(self, line: str, source: str) -> None:
        shown = f"[{source}] {line}" if source else line
        self._tail.append(shown)
        self.version += 1
        if self._file is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with contextlib.suppress(OSError, ValueError):
                self._file.write(f"{stamp} {shown}\n")

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        with self._lock:
            return list(self._tail)[-n:]

    def close(self) -> None:
        with self._lock:
            if self._partial.strip():
                self._emit(self._partial.strip(), "")
                self._partial = ""
            if self._file is not None:
                self._file.close()
                self._file = None


class _SinkHandler(logging.Handler):
    def __init__(self, sink: LogSink) -> None:
        super().__init__(level=logging.INFO)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.line(self.format(record))
        except Exception:  # a log handler must never take the app down
            self.handleError(record)


# Libraries that give their root logger its own stderr handler and stop propagation once their
# logging is set up: their warnings would bypass the root logger and paint over the screen.
SELF_HANDLING_LOGGERS = ("transformers", "diffusers")


@contextlib.contextmanager
def capture_python_logging(sink: LogSink) -> Iterator[None]:
    """Route the root logger, ``warnings`` and the self-handling library loggers to ``sink`` (and
    only there) while the app runs."""
    root = logging.getLogger()
    handler = _SinkHandler(sink)
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    saved_libs = []
    for name in SELF_HANDLING_LOGGERS:
        lib = logging.getLogger(name)
        saved_libs.append((lib, lib.handlers[:], lib.propagate))
        lib.handlers = []
        lib.propagate = True  # their records reach the root handler above, levels unchanged
    logging.captureWarnings(True)
    saved_showwarning = warnings.showwarning
    try:
        yield
    finally:
        logging.captureWarnings(False)
        warnings.showwarning = saved_showwarning
        root.handlers = saved_handlers
        root.setLevel(saved_level)
        for lib, handlers, propagate in saved_libs:
            lib.handlers, lib.propagate = handlers, propagate


@contextlib.contextmanager
def redirect_native_output(log_path: Path) -> Iterator[None]:
    """Send fds 1 and 2 to ``log_path``; Textual keeps drawing on a private copy of the terminal.

    Only for a real terminal session (``kazari open``): tests run headless and need no redirection.
    Textual's Linux driver writes to ``sys.__stderr__`` and sizes itself from ``sys.__stdout__``, so both
    names are re-pointed at the copy.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved_dunder_err, saved_dunder_out = sys.__stderr__, sys.__stdout__
    saved_err_obj, saved_out_obj = sys.stderr, sys.stdout
    stale_size: dict[str, str | None] = {}
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        sys.__stderr__ = terminal  # type: ignore[misc]
        # shutil.get_terminal_size() (Textual's size probe, also on SIGWINCH) asks sys.__stdout__'s fd;
        # left on the log file it falls back to 80x24 and the app draws at the wrong size.
        sys.__stdout__ = terminal  # type: ignore[misc]
        # An exported COLUMNS/LINES is a stale snapshot that shutil prefers to the tty: it would pin
        # the app to that size and ignore resizes. The real terminal is the authority here.
        for name in ("COLUMNS", "LINES"):
            stale_size[name] = os.environ.pop(name, None)
        sys.stderr = terminal
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        sys.__stderr__, sys.__stdout__ = saved_dunder_err, saved_dunder_out  # type: ignore[misc]
        sys.stderr, sys.stdout = saved_err_obj, saved_out_obj
        os.environ.update({k: v for k, v in stale_size.items() if v is not None})
        for fd in (saved_out, saved_err, log_fd):
            os.close(fd)
        terminal.close()
