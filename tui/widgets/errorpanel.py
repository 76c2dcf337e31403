"""A failed background job's message that stays on its screen until dismissed.

A toast disappears after a few seconds, leaving a screen that still says "loading…"; this panel
keeps the one-paragraph message (with its fix) in view, takes the focus so Esc/Enter/x dismiss it,
and then hands the focus back to the screen's main widget.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widgets import Static


class ErrorPanel(Static, can_focus=True):
    DEFAULT_CSS = """
    ErrorPanel { display: none; height: auto; max-height: 12; border: round $error; padding: 0 1; }
    ErrorPanel.shown { display: block; }
    ErrorPanel:focus { border: round $error-lighten-2; }
    """
    BINDINGS = [Binding("escape,enter,x", "dismiss", "Dismiss error", id="error-dismiss")]

    def __init__(self) -> None:
        super().__init__("", id="error-panel")
        self.message = ""

    def show(self, what: str, message: str) -> None:
        self.message = message
        text = Text()
        text.append(f"{what} failed: ", style="bold red")
        text.append(message)
        text.append("\n(Esc, Enter or x dismisses; the screen is usable again)", style="dim")
        self.update(text)
        self.add_class("shown")
        self.focus()

    @property
    def shown(self) -> bool:
        return self.has_class("shown")

    def action_dismiss(self) -> None:
        self.message = ""
        self.remove_class("shown")
        leave = getattr(self.screen, "action_leave_field", None)
        if leave is not None:
            leave()
