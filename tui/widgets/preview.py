"""Image preview over textual-image, with the renderer chosen by the user.

Halfcell (▀ with truecolor) is the default: it is pure text, so it survives tmux, SSH and redraws.
Kitty graphics (``tgp``) or ``sixel`` are opt-in (``--images`` / ``KAZARI_IMAGES``); ``auto`` lets
textual-image probe the terminal. The probe must run before Textual starts, which is why
``kazari open`` imports this module before starting the app.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Static

RENDERERS = ("halfcell", "auto", "sixel", "tgp", "unicode")


def default_image_mode() -> str:
    mode = os.environ.get("KAZARI_IMAGES", "halfcell").strip().lower()
    return mode if mode in RENDERERS else "halfcell"


def image_widget_class(mode: str) -> type:
    import textual_image.widget as tiw

    return {
        "halfcell": tiw.HalfcellImage,
        "auto": tiw.Image,
        "sixel": tiw.SixelImage,
        "tgp": tiw.TGPImage,
        "unicode": tiw.UnicodeImage,
    }.get(mode, tiw.HalfcellImage)


class ImagePreview(Container):
    """Shows one image (path or PIL image) scaled into the box, or a one-line placeholder."""

    DEFAULT_CSS = """
    ImagePreview { height: 1fr; align: center middle; }
    ImagePreview > .image { width: auto; height: 100%; }
    ImagePreview > Static { width: auto; color: $text-muted; }
    """

    def __init__(self, mode: str = "halfcell", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.mode = mode
        self.source: Any = None
        self._image: Any = None

    def compose(self) -> ComposeResult:
        self._image = image_widget_class(self.mode)(classes="image")
        self._image.display = False
        yield self._image
        yield Static("no image", id="preview-empty")

    def show(self, source: Path | Any | None, note: str = "no image") -> None:
        """Display ``source`` (a path or a PIL image); None shows ``note`` instead."""
        self.source = source
        empty = self.query_one("#preview-empty", Static)
        if source is None or (isinstance(source, Path) and not source.is_file()):
            self._image.display = False
            self._image.image = None
            empty.update(note)
            empty.display = True
            return
        try:
            self._image.image = str(source) if isinstance(source, Path) else source
        except OSError as err:  # unreadable/corrupt file: say so instead of crashing the screen
            self._image.display = False
            empty.update(f"cannot show image: {err}")
            empty.display = True
            return
        empty.display = False
        self._image.display = True
