"""Booru-style captions (``tag, tag, tag``): tolerant parsing, formatting, explicit normalisation.

Parsing never rewrites a tag's spelling: backslash escapes and underscores are kept exactly as
written, because sd-scripts feeds them to the text encoder verbatim. Converting them is a
separate, explicit operation (``underscores_to_spaces``, ``escape_parens``...).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from tagging.errors import DatasetError

# Kaomoji tags keep their underscore when converting to spaces: ``^_^`` is a face, not two words.
# The same 19 entries are used by the WD tagger Space, imgutils and taggui.
KAOMOJI: frozenset[str] = frozenset(
    {
        "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
        ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
    }
)

BOM = "\ufeff"
_SPACES = re.compile(r"\s+")
# Parens not already escaped; used by escape_parens so that running it twice changes nothing.
_UNESCAPED_PAREN = re.compile(r"(?<!\\)([()])")
_ESCAPED_PAREN = re.compile(r"\\([()])")


def parse_caption(text: str) -> list[str]:
    """Split a caption into tags, keeping their order and any duplicates.

    Tolerates a UTF-8 BOM, CRLF/CR line ends (lines are treated as separators), extra spaces
    (trimmed; runs inside a tag collapse to one), empty items and trailing commas.
    Duplicates are kept so they can be reported (see :func:`duplicate_tags`), not silently lost.
    """
    if text.startswith(BOM):
        text = text[1:]
    if "\n" in text or "\r" in text:
        text = ",".join(text.splitlines())
    tags = [tag for item in text.split(",") if (tag := item.strip())]
    if any("  " in t or "\t" in t for t in tags) or "\u3000" in text:  # rare: skip the regex otherwise
        tags = [_SPACES.sub(" ", t) for t in tags]
    return tags


def format_caption(tags: Iterable[str], separator: str = ", ") -> str:
    """Join tags the way sd-scripts and the WD tagger write them (no trailing newline)."""
    return separator.join(tags)


def duplicate_tags(tags: Sequence[str]) -> list[str]:
    """Tags that occur more than once, in order of first occurrence."""
    counts = Counter(tags)
    seen: set[str] = set()
    out: list[str] = []
    for tag in tags:
        if counts[tag] > 1 and tag not in seen:
            seen.add(tag)
            out.append(tag)
    return out


def dedupe(tags: Iterable[str]) -> list[str]:
    """Drop repeated tags, keeping each one's first position."""
    seen: set[str] = set()
    out: list[str] = []
    for tag in tags:
        if tag not in seen:
            seen.add(tag)
            out.append(tag)
    return out


def decode_caption_bytes(data: bytes, path: Path | str) -> str:
    """Decode caption bytes as UTF-8 (BOM allowed) or raise a DatasetError naming the file.

    NUL bytes mean a binary file that merely has a caption extension; that is reported too.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"Caption file {path} is not valid UTF-8 (byte {err.start}: {data[err.start:err.start + 1]!r}).",
            path=path,
            hint="sd-scripts only reads UTF-8 captions; re-save the file as UTF-8 in a text editor.",
        ) from None
    if "\x00" in text:
        raise DatasetError(
            f"Caption file {path} contains NUL bytes; it looks like a binary file with a caption extension.",
            path=path,
            hint="Replace it with a plain-text caption or move it out of the dataset.",
        )
    return text


def read_caption_file(path: Path | str) -> list[str]:
    """Read and parse one caption file (used at training time). Missing file -> DatasetError."""
    from tagging.safe_io import read_regular_bytes

    path = Path(path)
    try:
        data = read_regular_bytes(path)  # a FIFO must not block a training run
    except OSError as err:
        raise DatasetError(
            f"Cannot read caption file {path}: {err.strerror or err}.",
            path=path,
            hint="Check that the file exists and is readable.",
        ) from None
    return parse_caption(decode_caption_bytes(data, path))


# ---- explicit normalisation (only when the user asks) ----------------------------------------

def underscores_to_spaces(tag: str) -> str:
    """``long_hair`` -> ``long hair``; kaomoji such as ``^_^`` are left alone."""
    return tag if tag in KAOMOJI else tag.replace("_", " ")


def spaces_to_underscores(tag: str) -> str:
    """``long hair`` -> ``long_hair`` (the Danbooru spelling)."""
    return tag.replace(" ", "_")


def escape_parens(tag: str) -> str:
    r"""``name_(series)`` -> ``name_\(series\)`` (A1111 prompt style); already escaped ones stay."""
    return _UNESCAPED_PAREN.sub(r"\\\1", tag)


def unescape_parens(tag: str) -> str:
    r"""``name_\(series\)`` -> ``name_(series)`` (what sd-scripts training expects)."""
    return _ESCAPED_PAREN.sub(r"\1", tag)


def dedupe_one(tags: Iterable[str], tag: str) -> list[str]:
    """Keep only the first occurrence of ``tag``; other tags (and their duplicates) are untouched."""
    out: list[str] = []
    seen = False
    for t in tags:
        if t == tag:
            if seen:
                continue
            seen = True
        out.append(t)
    return out
