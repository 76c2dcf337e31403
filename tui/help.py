"""Help screen and command palette, both generated from the live key bindings (never out of date)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import NamedTuple

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

HIDDEN_ACTIONS = {"command_palette", "help"}


class BindingRow(NamedTuple):
    section: str
    keys: str
    description: str
    action: str
    node: DOMNode


def describe_bindings(screen: Screen) -> list[BindingRow]:
    """One row per action bound on ``screen`` (its focused widget, the screen, the app)."""
    seen: dict[tuple[int, str], BindingRow] = {}
    for key, active in screen.active_bindings.items():
        binding: Binding = active.binding
        if not binding.description:
            continue
        node = active.node
        section = "App" if node is screen.app else type(node).__name__.replace("Screen", "") or "Screen"
        ident = (id(node), binding.action)
        display = screen.app.get_key_display(binding)
        if ident in seen:
            row = seen[ident]
            if display not in row.keys.split(" / "):
                seen[ident] = row._replace(keys=f"{row.keys} / {display}")
        else:
            seen[ident] = BindingRow(section, display, binding.description, binding.action, node)
        del key
    return list(seen.values())


def is_widget_navigation(row: BindingRow) -> bool:
    """A key a Textual widget brings itself (cursor, scroll, page, select): the help lists them, but
    in the palette they only bury the screen's own actions."""
    node = row.node
    if node is node.app or node is node.screen:
        return False
    for cls in type(node).__mro__:
        if not cls.__module__.startswith("textual."):
            continue
        for item in cls.__dict__.get("BINDINGS", ()):
            action = item.action if isinstance(item, Binding) else item[1]
            if action == row.action:
                return True
    return False


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,f1,q", "close", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; height: 90%; border: thick $accent; background: $surface; }
    """

    def __init__(self, title: str, rows: Iterable[BindingRow], notes: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.rows = list(rows)
        self.notes = notes

    def compose(self) -> ComposeResult:
        table = Table(title=f"{self.title_text} — keys", expand=True, show_edge=False)
        table.add_column("where", style="dim", no_wrap=True)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("action")
        for row in self.rows:
            table.add_row(row.section, row.keys, row.description)
        with VerticalScroll():
            yield Static(table)
            if self.notes:
                yield Static(self.notes, id="help-notes")

    def action_close(self) -> None:
        self.dismiss(None)


class BindingsProvider(Provider):
    """Every action of the current screen in the command palette, with its key."""

    def _rows(self) -> list[BindingRow]:
        return [row for row in describe_bindings(self.screen)
                if row.action not in HIDDEN_ACTIONS and not is_widget_navigation(row)]

    async def discover(self) -> Hits:
        for row in self._rows():
            yield DiscoveryHit(row.description, partial(self._run, row), help=f"key: {row.keys} ({row.section})")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for row in self._rows():
            score = matcher.match(row.description)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(row.description),
                    partial(self._run, row),
                    help=f"key: {row.keys} ({row.section})",
                )

    async def _run(self, row: BindingRow) -> None:
        await row.node.run_action(row.action)
