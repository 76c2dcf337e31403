"""Image preview over textual-image, with the renderer chosen by the user.

Halfcell (▀ with truecolor) is the default: it is pure text, so it survives tmux, SSH and redraws.
Kitty graphics (``tgp``) or ``sixel`` are opt-in (``--images`` / ``KAZARI_IMAGES``); ``auto`` lets
textual-image probe the terminal. The probe must run before Textual starts, which is why
``kazari open`` imports this module before starting the app.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Static

from tui.image_modes import RENDERERS

MAX_SIDE = 1024  # pixels kept for display: ample for halfcell, and for sixel/kitty on one screen


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


def cannot_show(source: Any, err: BaseException) -> str:
    """The box's one line for an image it cannot decode: which file, and why."""
    name = source.name if isinstance(source, Path) else "image"
    return f"cannot show {name}: {str(err) or type(err).__name__}"


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
        """Display ``source`` (a path or a PIL image); None shows ``note`` instead.

        A path is decoded and shrunk in a thread worker: a large PNG takes 0.1 s or more to decode,
        which on the UI thread would stall every next/previous key press."""
        self.source = source
        if source is None or (isinstance(source, Path) and not source.is_file()):
            self._show_note(note)
            return
        if isinstance(source, Path):
            self.run_worker(partial(self._load, source), thread=True, group="preview", exclusive=True,
                            exit_on_error=False)
            return
        self._show_image(source)

    def _load(self, path: Path) -> None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale, much faster
                im.thumbnail((MAX_SIDE, MAX_SIDE))
                im.load()
        except Exception as err:  # noqa: BLE001 - any decoder failure is shown in the box, never a blank
            self._from_thread(self._loaded, path, None, err)
            return
        self._from_thread(self._loaded, path, im, None)

    def _from_thread(self, fn: Any, *args: Any) -> None:
        try:
            self.app.call_from_thread(fn, *args)
        except RuntimeError:  # the app is shutting down: nothing to show any more
            pass

    def _loaded(self, path: Path, image: Any, err: BaseException | None) -> None:
        if self.source != path:
            return  # a newer image was asked for meanwhile
        if err is not None:
            self._show_note(cannot_show(path, err))
            return
        self._show_image(image)

    def _show_note(self, note: str) -> None:
        empty = self.query_one("#preview-empty", Static)
        self._image.display = False
        self._image.image = None
        empty.update(note)
        empty.display = True

    def _show_image(self, image: Any) -> None:
        try:
            self._image.image = image
        except Exception as err:  # noqa: BLE001 - unreadable/corrupt image: say so, the screen goes on
            self._show_note(cannot_show(self.source, err))
            return
        self.query_one("#preview-empty", Static).display = False
        self._image.display = True
