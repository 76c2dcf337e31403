"""The log panel: the tail of the workspace log (library output that must not paint the screen)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, RichLog

from tui.logcapture import LogSink


class LogPanel(RichLog):
    """Follows a LogSink; redraws only when new lines arrived (polled, so writers never wait)."""

    DEFAULT_CSS = "LogPanel { height: 1fr; }"

    def __init__(self, sink: LogSink, *, lines: int = 200, id: str | None = None) -> None:
        super().__init__(id=id, wrap=True, markup=False, highlight=False, max_lines=lines)
        self.sink = sink
        self.lines_shown = lines
        self._version = -1

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(0.5, self.poll)

    def poll(self) -> None:
        if self.sink.version == self._version:
            return
        self._version = self.sink.version
        self.clear()
        for line in self.sink.tail(self.lines_shown):
            self.write(line)


class LogScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,ctrl+l,q", "close", "Close")]
    DEFAULT_CSS = """
    LogScreen { align: center middle; }
    LogScreen > Vertical { width: 95%; height: 90%; border: thick $accent; background: $surface; }
    """

    def __init__(self, sink: LogSink, where: str) -> None:
        super().__init__()
        self.sink = sink
        self.where = where

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Log — {self.where}  (library output, warnings, progress bars)")
            yield LogPanel(self.sink)

    def action_close(self) -> None:
        self.dismiss(None)
