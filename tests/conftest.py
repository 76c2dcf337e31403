"""Shared test helpers: build small datasets on disk (tiny PNGs + captions)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# An image entry maps a file name to its caption: str (text), bytes (raw), or None (no caption file).
Layout = dict[str, dict[str, "str | bytes | None"]]


def write_dataset(root: Path, layout: Layout, size: tuple[int, int] = (32, 32), caption_ext: str = ".txt") -> Path:
    """Create ``root/<folder>/<image>`` with captions; each image is distinct noise."""
    n = 0
    for folder, images in layout.items():
        fdir = root / folder if folder else root
        fdir.mkdir(parents=True, exist_ok=True)
        for name, caption in images.items():
            n += 1
            # Seeded noise, not a flat colour: flat images all share one perceptual hash.
            pixels = np.random.default_rng(n).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            img_path = fdir / name
            fmt = {"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP"}.get(
                img_path.suffix.lower().lstrip("."), "PNG"
            )
            Image.fromarray(pixels).save(img_path, fmt)
            if caption is None:
                continue
            cap = img_path.with_suffix(caption_ext)
            if isinstance(caption, bytes):
                cap.write_bytes(caption)
            else:
                cap.write_bytes(caption.encode("utf-8"))
    return root


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """``make_dataset({"10_kazari": {"a.png": "kazari, 1girl"}})`` -> dataset root."""

    def make(layout: Layout, name: str = "ds", **kwargs: object) -> Path:
        return write_dataset(tmp_path / name, layout, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def small_dataset(make_dataset: Callable[..., Path]) -> Path:
    return make_dataset({
        "10_kazari": {
            "001.png": "kazari, 1girl, solo, pink_hair, smile\n",
            "002.png": "kazari, 1girl, solo, pink_hair, hat\n",
            "003.png": "1girl, kazari, pink_hair, blonde_hair, open_mouth\n",
        },
        "3_kazari casual": {
            "101.jpg": "kazari, 1girl, jacket, pink_hair\n",
        },
    })


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Pilot tests drive a real event loop with workers and timers; on a loaded CI machine one
    can miss a deadline. They get two reruns (pytest-rerunfailures): a real defect still fails
    all three times, a scheduling hiccup does not fail the build. Domain tests get none."""
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return
    for item in items:
        if item.module is not None and item.module.__name__.split(".")[-1].startswith("test_tui_"):
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=1))
