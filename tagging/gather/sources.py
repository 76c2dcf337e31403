"""``<root>/.kazari/sources.jsonl``: where every fetched image came from (attribution, resume).

One JSON object per line, appended and fsynced after the image itself is on disk. A line torn
by a crash is ignored when read; no credentials ever go in (file URLs carry none).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tagging.dataset import STATE_DIR

SOURCES_FILE = "sources.jsonl"


def sources_path(root: Path) -> Path:
    return Path(root) / STATE_DIR / SOURCES_FILE


def read_sources(root: Path) -> list[dict[str, Any]]:
    """Every readable record, oldest first (damaged lines skipped)."""
    try:
        text = sources_path(root).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def append_sources(root: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records durably (one write + fsync); starts on a fresh line after a torn one."""
    lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    if not lines:
        return
    path = sources_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        if fh.tell() > 0:
            with open(path, "rb") as rd:
                rd.seek(-1, os.SEEK_END)
                if rd.read(1) != b"\n":
                    lines = "\n" + lines
        fh.write(lines.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
