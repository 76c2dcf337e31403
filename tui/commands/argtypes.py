"""argparse ``type=`` checkers shared by the sub-commands (one wording for one mistake)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number of at least 1 (``--limit``, ``--batch``, ``--max-tags``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def seconds(text: str, limit: float = 3600) -> float:
    """A number of seconds between 0 and ``limit`` (request intervals, timeouts)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= limit:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and {limit:g} seconds")
    return value
