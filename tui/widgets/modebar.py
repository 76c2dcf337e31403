"""The top line of every screen: the six modes with their keys, and the unsaved-changes marker.

The digits switch modes from lists; alt+digit (priority) also works from inside a text field."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.screen_table import SCREEN_TABLE

MODES = tuple((e.name, e.key, e.title) for e in SCREEN_TABLE if e.always_shown)
# Modes with a key that the bar names only while they are active (keeps the bar within 80 columns).
EXTRA_MODES = tuple((e.name, e.key, e.title) for e in SCREEN_TABLE if not e.always_shown)


class ModeBar(Static):
    DEFAULT_CSS = """
    ModeBar { height: 1; background: $panel; }
    """

    def __init__(self, active: str) -> None:
        super().__init__(id="modebar")
        self.active = active

    def on_mount(self) -> None:
        self.redraw()

    def redraw(self, status: str = "") -> None:
        text = Text()
        shown = [*MODES, *(m for m in EXTRA_MODES if m[0] == self.active)]
        for name, key, label in shown:
            style = "bold reverse" if name == self.active else ""
            text.append(f" {key} {label} ", style=style)
        if status:
            text.append("  ")
            text.append(status, style="bold yellow")
        self.update(text)
