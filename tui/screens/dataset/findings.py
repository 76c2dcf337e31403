"""Lint findings list: pick one to jump to its image."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from tui.workspace import Workspace


class FindingsScreen(ModalScreen[Any]):
    BINDINGS = [Binding("escape,q", "close", "Close")]
    DEFAULT_CSS = """
    FindingsScreen { align: center middle; }
    FindingsScreen > Vertical { width: 95%; height: 80%; border: thick $warning; background: $surface; }
    """

    def __init__(self, findings: list[Any], workspace: Workspace) -> None:
        super().__init__()
        self.findings = findings
        self.workspace = workspace

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{len(self.findings)} lint finding(s) — Enter jumps to the image, Escape closes")
            options = []
            for i, f in enumerate(self.findings):
                path = getattr(f, "path", None)
                where = self.workspace.display(path)
                # Messages name the file by absolute path; show it once, workspace-relative (shorter).
                message = f.message.replace(str(path), where) if path is not None else f.message
                text = message if message.startswith(where) else f"{where}: {message}"
                options.append(Option(Text(f"{f.severity} {f.code} {text}"), id=f"f{i}"))
            yield OptionList(*options, id="findings")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.findings[event.option_index])

    def action_close(self) -> None:
        self.dismiss(None)
