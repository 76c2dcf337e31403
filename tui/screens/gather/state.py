"""What the Gather screen shows, without Textual: the arrivals and each one's before/after files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tagging.gather.sources import read_sources


def current_key(ds: Any, key: str) -> str | None:
    """``key`` if the dataset has it, else the image with the same stem (a clean may change .jpg -> .png)."""
    index = {i.key for i in ds.images}
    if key in index:
        return key
    stem = key.rsplit(".", 1)[0]
    for item in ds.images:
        if item.key.rsplit(".", 1)[0] == stem:
            return item.key
    return None  # trashed or gone


def arrivals(ds: Any) -> list[str]:
    """Dataset keys of the fetched images still in the dataset, oldest first (from sources.jsonl)."""
    out: list[str] = []
    for record in read_sources(ds.root):
        key = current_key(ds, str(record.get("key", "")))
        if key is not None and key not in out:
            out.append(key)
    return out


def before_after(ds: Any, key: str) -> tuple[Path, Path | None]:
    """(original, cleaned) files of ``key``; cleaned is None when no undoable clean replaced it."""
    item = ds.image(key)
    for change in reversed(ds.history):
        if change.kind != "images":
            continue
        for entry in change.extra.get("files", []):
            original = ds.root / entry["original"]
            if entry.get("new_key") == key and original.exists():
                return original, item.path
    return item.path, None


def describe(ds: Any, key: str) -> str:
    """One line about an arrival: size, where it came from, its caption."""
    item = ds.image(key)
    w, h = item.size
    post = ""
    for record in read_sources(ds.root):
        if current_key(ds, str(record.get("key", ""))) == key:
            post = f" · {record.get('site', '?')} post {record.get('post_id', '?')}"
    tags = ", ".join(item.tags) or "(no caption)"
    return f"{item.name} · {w}x{h}{post} · {tags}"
