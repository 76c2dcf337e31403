"""`kazari open [ROOT] [--config FILE]` — the workbench (bare `kazari` runs this on the current folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tagging.errors import UserError
from tui.screen_table import SCREEN_NAMES as SCREENS


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "open",
        help="open the workbench (" + ", ".join(SCREENS) + ")",
        description="Open the keyboard-only workbench on a workspace (a folder with kazari.toml) or a "
        "dataset root (kohya N_name folders).",
    )
    add_open_options(parser)
    parser.add_argument("root", nargs="?", default=".", help="workspace or dataset folder (default: .)")
    parser.add_argument("--config", type=Path, help="training config TOML (default: ROOT/kazari.toml)")
    parser.set_defaults(func=run)


def add_open_options(parser: argparse.ArgumentParser) -> None:
    # Not tui.widgets.preview: building the parser for headless commands must not import Textual.
    from tui.image_modes import RENDERERS

    parser.add_argument(
        "--images",
        choices=RENDERERS,
        default=None,
        help="image renderer: halfcell (default; works in tmux/SSH), auto (probe the terminal), "
        "sixel, tgp (kitty), unicode. Env: KAZARI_IMAGES",
    )
    parser.add_argument("--screen", choices=SCREENS, default="dataset", help="screen to start on")


def run(args: argparse.Namespace) -> int:
    from tui.workspace import resolve_workspace

    root = Path(args.root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a folder. Pass a workspace (with kazari.toml) or a dataset root, "
                        "or run `kazari demo` to create an example workspace.")
    if args.config is not None and not args.config.expanduser().is_file():
        raise UserError(f"Config file {args.config} does not exist. Create one with "
                        "`kazari config new -o FILE`, or leave --config out to use ROOT/kazari.toml.")
    workspace = resolve_workspace(root, args.config)
    return open_workbench(workspace, images=args.images, screen=args.screen)


def open_workbench(workspace, *, images: str | None = None, screen: str = "dataset") -> int:
    """Run the app on ``workspace``; library output goes to the workspace log, not the screen."""
    from tui.widgets.preview import default_image_mode

    mode = images or default_image_mode()
    # textual-image probes the terminal when imported; that must happen before Textual owns it.
    import textual_image.widget  # noqa: F401

    from tui.app import KazariApp
    from tui.logcapture import redirect_native_output

    app = KazariApp(workspace, image_mode=mode, start_mode=screen)
    if sys.stdin.isatty() and sys.__stderr__ is not None and sys.__stderr__.isatty():
        with redirect_native_output(workspace.log_path):
            app.run()
    else:
        app.run()
    return int(app.return_code or 0)
