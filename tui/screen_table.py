"""The workbench's screens, once: name, key, title and whether the mode bar always shows it.

Textual-free, so `kazari open --screen` can offer the choices without importing Textual; the mode
bar, the app's MODES and key bindings, and the help text all derive from this table."""

from __future__ import annotations

from typing import NamedTuple


class ScreenEntry(NamedTuple):
    name: str
    key: str
    title: str
    always_shown: bool  # False: the mode bar names it only while active (keeps the bar within 80 columns)


# In the order the loop runs: tag, then prune on Tags.
SCREEN_TABLE: tuple[ScreenEntry, ...] = (
    ScreenEntry("dataset", "1", "Dataset", True),
    ScreenEntry("tagger", "2", "Tagger", True),
    ScreenEntry("tags", "3", "Tags", True),
    ScreenEntry("config", "4", "Config", True),
    ScreenEntry("train", "5", "Train", True),
    ScreenEntry("grid", "6", "Grid", True),
    ScreenEntry("gather", "7", "Gather", False),
)

SCREEN_NAMES: tuple[str, ...] = tuple(e.name for e in SCREEN_TABLE)
