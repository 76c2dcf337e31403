"""Footers at 80 columns: whole hints only, most important first, `?` for every other key."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets._footer import FooterKey

from tui.app import make_app
from tui.help import HelpScreen
from tui.screen_table import SCREEN_TABLE
from tui.testing import make_workspace, screen_text
from tui.widgets.footer import FittedFooter, fit_hints


def test_fit_hints_counts_whole_hints_only() -> None:
    hints = [("a", "Add"), ("d", "Delete"), ("u", "Undo")]
    assert fit_hints(hints, 100) == 3
    assert fit_hints(hints, len("a Add d Delete ")) == 2
    assert fit_hints(hints, len("a Add d Delet")) == 1  # never half a hint


def _footer_line(app) -> str:
    return screen_text(app).splitlines()[-1]


def test_footers_fit_at_80_columns_and_help_lists_the_rest(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", images=2, tagger=False)
    app = make_app(ws, log_to_file=False)
    seen: dict[str, tuple[str, list[str]]] = {}

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            while app.busy:
                await asyncio.sleep(0.05)
            for row in SCREEN_TABLE:
                await pilot.press(row.key)
                await pilot.pause(0.2)
                footer = app.screen.query_one(FittedFooter)
                keys = [k.description for k in footer.query(FooterKey)]
                seen[row.name] = (_footer_line(app), keys)
            await pilot.press("1")
            await pilot.pause()
            shown = {k.action for k in app.screen.query_one(FittedFooter).query(FooterKey)}
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            listed = {r.action for r in app.screen.rows}
            hidden = {b.action for b in app.screen_stack[-2].BINDINGS if b.show} - shown
            assert hidden and hidden <= listed  # the keys the footer had no room for are in the help

    asyncio.run(main())
    for name, (line, descriptions) in seen.items():
        assert line.rstrip().endswith("^p palette"), (name, line)  # nothing past the palette key
        assert "? all keys" in line, (name, line)
        assert len(descriptions) >= 4, (name, descriptions)
        for description in descriptions:  # every hint on the line is whole
            assert description in line, (name, description, line)


def test_a_wider_terminal_shows_more_hints(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", images=2, tagger=False)
    counts = []
    for width in (80, 160):
        app = make_app(ws, log_to_file=False)

        async def main() -> None:
            async with app.run_test(size=(width, 24)) as pilot:  # noqa: B023 - awaited in this loop
                while app.busy:  # noqa: B023
                    await asyncio.sleep(0.05)
                await pilot.pause()
                counts.append(len(app.screen.query_one(FittedFooter).query(FooterKey)))  # noqa: B023

        asyncio.run(main())
    assert counts[1] > counts[0]
