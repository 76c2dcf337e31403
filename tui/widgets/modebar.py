"""The top line of every screen: the six modes with their keys, and the unsaved-changes marker.

The digits switch modes from lists; alt+digit (priority) also works from inside a text field."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

MODES = (
    ("dataset", "1", "Dataset"),
    ("tagger", "2", "Tagger"),  # in the order the loop runs: tag, then prune on Tags
    ("tags", "3", "Tags"),
    ("config", "4", "Config"),
    ("train", "5", "Train"),
    ("grid", "6", "Grid"),
)


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
        for name, key, label in MODES:
            style = "bold reverse" if name == self.active else ""
            text.append(f" {key} {label} ", style=style)
        if status:
            text.append("  ")
            text.append(status, style="bold yellow")
        self.update(text)
