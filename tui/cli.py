"""The ``kazari`` command line: one sub-command module per area, registered here.

Each module in ``tui.commands`` exposes ``register(subparsers)``, which adds its parser and sets
``func`` (``args -> int`` exit code). User mistakes arrive as ``UserError`` and are printed as one
paragraph on stderr with exit code 2; nothing else is caught, so real bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from tagging.errors import UserError

# Order = order in `kazari --help`.
COMMAND_MODULES = ("fetch", "clean", "dataset", "tag", "config", "train", "grid", "judge", "model", "doctor", "open",
                   "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kazari",
        description="Keyboard-only workbench for character LoRAs (SD 1.x): dataset, tags, config, train, grid.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"tui.commands.{name}_cmd")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from tagging.threads import prepare_environment

    prepare_environment()  # thread counts, before any command imports torch (tagging/threads.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # Bare `kazari` opens the workbench on the current folder when the TUI is available.
        if args.command is None and "open" in COMMAND_MODULES:
            args = parser.parse_args(["open", *([] if argv is None else list(argv))])
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"kazari: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kazari: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `kazari ... | head` closed the pipe: not an error. Point stdout at devnull so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
