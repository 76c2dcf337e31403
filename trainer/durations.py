"""One way to write a duration, for the CLI, the TUI and the derived figures."""

from __future__ import annotations

import math


def format_duration(seconds: float | None, style: str = "long", unknown: str = "?") -> str:
    """``3725`` -> ``"1h 02m 05s"`` (long), ``"1h02m"`` (short) or ``"1:02:05"`` (clock).

    ``None``, NaN and infinity (no estimate yet) give ``unknown``.
    """
    if seconds is None or not math.isfinite(seconds):
        return unknown
    total = int(round(max(0.0, seconds)))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if style == "clock":
        return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    if style == "short":
        return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
    return f"{h}h {m:02d}m {s:02d}s" if h else (f"{m}m {s:02d}s" if m else f"{s}s")
