"""Small modal dialogs: yes/no confirmation and one-line text input."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; ``y``/Enter answers yes, ``n``/Escape answers no."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 70; max-width: 100%; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    ConfirmScreen Static { width: 100%; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, markup=False)
            yield Label("[b]y[/b] yes   [b]n[/b] no")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line of text (Enter accepts, Escape cancels)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen > Vertical { width: 70; max-width: 100%; height: auto; border: thick $accent; background: $surface; padding: 0 1; }
    PromptScreen Static { width: 100%; }
    """

    def __init__(self, question: str, value: str = "", suggester=None) -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.suggester = suggester

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, markup=False)
            yield Input(value=self.value, suggester=self.suggester, id="prompt-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceScreen(ModalScreen[str | None]):
    """Ask a question with a few one-key answers; Escape answers None (do nothing)."""

    DEFAULT_CSS = """
    ChoiceScreen { align: center middle; }
    ChoiceScreen > Vertical { width: 70; max-width: 100%; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    ChoiceScreen Static { width: 100%; }
    """
    BINDINGS = [Binding("escape", "choose('')", "Cancel")]

    def __init__(self, question: str, choices: list[tuple[str, str, str]]) -> None:
        """``choices``: (key, label, value) triples; pressing ``key`` dismisses with ``value``."""
        super().__init__()
        self.question = question
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, markup=False)
            yield Label("   ".join(f"[b]{key}[/b] {label}" for key, label, _ in self.choices) + "   [b]esc[/b] cancel")

    def on_key(self, event) -> None:
        for key, _label, value in self.choices:
            if event.key == key:
                event.stop()
                self.dismiss(value)
                return

    def action_choose(self, value: str) -> None:
        self.dismiss(value or None)


class BusyScreen(ModalScreen[None]):
    """A message shown while a background job must not race with edits (e.g. saving captions).

    Being modal, it keeps keys away from the screens below (mode switching included); the job's
    completion callback dismisses it."""

    DEFAULT_CSS = """
    BusyScreen { align: center middle; }
    BusyScreen > Vertical { width: 50; max-width: 100%; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    """

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.message, markup=False)
