"""Line numbers of keys in a TOML text, so messages can say where a mistake is.

tomllib/tomlkit do not expose positions; a line scan is enough for the flat, sectioned files
kazari reads (``[table]`` headers and ``key = value`` lines, dotted keys included).
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'""")


def _strings_removed(text: str) -> str:
    """Quoted strings blanked out, so brackets and # inside them are not counted."""
    return _STRING.sub('""', text)


def _parts(dotted: str) -> list[str]:
    out = []
    for part in re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", dotted):
        out.append(part[1:-1] if part[:1] in "\"'" else part)
    return out


def key_lines(text: str) -> dict[str, int]:
    """Map every dotted key (``"dataset.resolution"``) and table (``"dataset"``) to its 1-based line."""
    found: dict[str, int] = {}
    table: list[str] = []
    in_multiline: str | None = None
    depth = 0  # open brackets of a multi-line array
    for number, line in enumerate(text.splitlines(), 1):
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        if depth > 0:
            bare = _strings_removed(line)
            depth += bare.count("[") - bare.count("]")
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            table = _parts(header.group(1))
            found.setdefault(".".join(table), number)
            continue
        match = _KEY.match(line)
        if not match:
            continue
        key = ".".join(table + _parts(match.group(1)))
        found.setdefault(key, number)
        rest = line[match.end():]
        for quote in ('"""', "'''"):
            if rest.count(quote) == 1:
                in_multiline = quote
        stripped = _strings_removed(rest).split("#", 1)[0]
        if stripped.strip().startswith("["):
            depth = stripped.count("[") - stripped.count("]")
    return found


def line_of(text: str, key: str) -> int | None:
    """Line of ``key``, else of its closest enclosing table, else None."""
    lines = key_lines(text)
    parts = key.split(".")
    while parts:
        hit = lines.get(".".join(parts))
        if hit:
            return hit
        parts.pop()
    return None
