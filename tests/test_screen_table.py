"""The screen-name table is the one list of workbench screens (issue 13 item 1)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from tui.screen_table import SCREEN_NAMES, SCREEN_TABLE


def _open_parser() -> argparse.ArgumentParser:
    from tui.commands import open_cmd

    parser = argparse.ArgumentParser()
    open_cmd.register(parser.add_subparsers())
    return parser


def _screen_choices() -> list[str]:
    parser = _open_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    screen = next(a for a in sub.choices["open"]._actions if a.dest == "screen")
    return list(screen.choices)


def test_cli_choices_equal_app_modes_and_modebar() -> None:
    from tui.app import KazariApp
    from tui.widgets.modebar import EXTRA_MODES, MODES

    assert _screen_choices() == list(KazariApp.MODES) == list(SCREEN_NAMES)
    assert [m[0] for m in (*MODES, *EXTRA_MODES)] == list(SCREEN_NAMES)
    bound = {b.action for b in KazariApp.BINDINGS}
    assert all(f"switch_mode('{name}')" in bound for name in SCREEN_NAMES)


def test_open_screen_gather_is_accepted() -> None:
    args = _open_parser().parse_args(["open", "--screen", "gather"])
    assert args.screen == "gather"


def test_help_notes_name_every_screen() -> None:
    from tui.app import HELP_NOTES

    for entry in SCREEN_TABLE:
        assert f"{entry.key} {entry.title}" in HELP_NOTES


def test_a_mode_added_in_one_place_only_is_refused() -> None:
    from tui.app import KazariApp, mode_screens

    extra = {**KazariApp.MODES, "extra": object}
    with pytest.raises(RuntimeError, match="screen_table"):
        mode_screens(extra)
    missing = dict(KazariApp.MODES)
    missing.pop("gather")
    with pytest.raises(RuntimeError, match="screen_table"):
        mode_screens(missing)


def test_keys_and_names_unique() -> None:
    assert len({e.key for e in SCREEN_TABLE}) == len({e.name for e in SCREEN_TABLE}) == len(SCREEN_TABLE)


def test_open_parser_does_not_import_textual() -> None:
    code = ("import sys, argparse; from tui.commands import open_cmd; p = argparse.ArgumentParser(); "
            "open_cmd.register(p.add_subparsers()); assert 'textual' not in sys.modules, 'textual imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
