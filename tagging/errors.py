"""User-facing errors: one clear paragraph, no traceback.

Anything the user can fix (a bad path, a malformed file, a wrong option) is raised as a
``UserError``; the CLI and the TUI print ``str(err)`` and never the stack. Bugs stay ordinary
exceptions so they keep their traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix. ``str()`` is the whole message: what, where, and the fix."""

    def __init__(self, message: str, *, path: Path | str | None = None, hint: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.hint = hint
        text = message
        if hint:
            text = f"{text} {hint}"
        super().__init__(text)


class DatasetError(UserError):
    """The dataset root or one of its files cannot be used."""


class ConflictError(UserError):
    """A file changed on disk since kazari loaded it; saving would clobber someone's edit."""

    def __init__(self, message: str, *, path: Path | str | None = None, hint: str | None = None,
                 keys: Sequence[str] = ()) -> None:
        super().__init__(message, path=path, hint=hint)
        self.keys = list(keys)  # the images whose captions changed on disk, when the error is about those
