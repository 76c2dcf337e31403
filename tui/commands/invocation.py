"""How the user can run ``kazari`` again from their shell: the command we print in hints.

After ``make demo`` the entry point lives in ``.venv/bin`` and is not on PATH, so a hint saying
``kazari open …`` would fail; we print the command that actually started this process instead.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def _shell_path(path: Path, *, command: bool = False) -> str:
    """``path`` relative to the current folder when it lies below it (``.venv/bin/kazari``).

    A command in the current folder itself needs ``./``, or the shell would look it up on PATH.
    """
    try:
        rel = path.relative_to(Path.cwd().resolve())
    except ValueError:
        return str(path)
    return f"./{rel}" if command and rel.parent == Path(".") else str(rel)


def kazari_command(argv0: str | None = None) -> str:
    """The shell words that start kazari the way this process was started."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    script = Path(argv0)
    if script.name == "kazari" and script.is_file():
        on_path = shutil.which("kazari")
        if on_path is not None and Path(on_path).resolve() == script.resolve():
            return "kazari"
        return shlex.quote(_shell_path(script.resolve(), command=True))
    # `python -m tui.cli` (or a test runner): the interpreter that runs us, with the module.
    return f"{shlex.quote(_shell_path(Path(sys.executable).absolute(), command=True))} -m tui.cli"


def open_hint(folder: Path) -> str:
    """The command that reopens ``folder``, plus ``make open`` when started by the Makefile."""
    target = _shell_path(folder.resolve())
    hint = f"`{kazari_command()} open {shlex.quote(target)}`"
    if os.environ.get("MAKELEVEL") and Path("Makefile").is_file():
        make = "make open" if target == "kazari-demo" else f"make open DATASET={shlex.quote(target)}"
        hint += f" or `{make}`"
    return hint
