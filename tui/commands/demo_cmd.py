"""`kazari demo [DIR]` — create the example workspace (default ./kazari-demo) and open it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="create an example workspace (synthetic dataset, tiny models) and open the workbench",
        description="Create (or reuse) a demo workspace: a synthetic character dataset with realistic "
        "booru captions, a tiny ONNX tagger, a tiny random SD1 model and a quick-test config; then open "
        "the workbench on it. Every screen works on a CPU.",
    )
    parser.add_argument("dir", nargs="?", default="kazari-demo", type=Path, help="workspace folder")
    parser.add_argument("--no-open", action="store_true", help="only create the workspace")
    from tui.commands.open_cmd import add_open_options

    add_open_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tui.demo import create_demo
    from tui.workspace import resolve_workspace

    def progress(message: str) -> None:
        print(f"kazari demo: {message}", file=sys.stderr, flush=True)

    from tui.commands.invocation import open_hint

    config = create_demo(args.dir, progress)
    print(f"kazari demo: workspace ready in {config.parent} (open it again with {open_hint(config.parent)})",
          file=sys.stderr)
    if args.no_open:
        return 0
    from tui.commands.open_cmd import open_workbench

    return open_workbench(resolve_workspace(config.parent), images=args.images, screen=args.screen)
