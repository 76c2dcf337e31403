"""Image -> model input, exactly as the reference taggers prepare it.

WD14 (SmilingWolf's Space ``Predictor.prepare_image``, also taggui and imgutils):
composite onto white, pad to a centred square with white, bicubic resize to the model's input
size (only when the square is not already that size), float32 in 0..255, RGB -> BGR, NHWC.

DeepDanbooru (the original ``load_image_for_evaluate``): fit inside the model's square keeping
the aspect ratio (area resampling), pad by repeating the edge pixels (zero padding makes the model see black bars
and tag ``letterboxed``), RGB, 0..1.

Each step is a small function so that the tests can check them one by one.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

WHITE = (255, 255, 255)

# Above this many pixels in the padded square (~64 MB as RGB) the image is first reduced with an
# integer box filter, so that a huge scan never costs a huge padded copy. Below it (every normal
# dataset image) the pipeline is bit-for-bit the reference one.
MAX_SQUARE_PIXELS = 4608 * 4608


@dataclass(frozen=True)
class Profile:
    """How a model family wants its pixels."""

    name: str
    bgr: bool  # channel order BGR (WD14) or RGB (DeepDanbooru)
    scale: float  # multiply 0..255 values by this (1.0 keeps 0..255)
    fit: str  # "pad_white" (pad to square, then resize) or "fit_edge" (resize to fit, pad by edge)


WD14 = Profile("wd14", bgr=True, scale=1.0, fit="pad_white")
DEEPDANBOORU = Profile("deepdanbooru", bgr=False, scale=1.0 / 255.0, fit="fit_edge")
PROFILES = {p.name: p for p in (WD14, DEEPDANBOORU)}


def open_first_frame(data: bytes, target: int | None = None) -> Image.Image:
    """Decode ``data``; animated files give their first frame. Raises PIL/OSError errors as is.

    ``target`` (the model's input size) lets JPEG decoding itself downscale images whose padded
    square would exceed MAX_SQUARE_PIXELS, keeping memory bounded for huge photos.
    """
    with warnings.catch_warnings():
        # A merely large image is fine (we reduce it); the bomb *error* still fires beyond 2x.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        side = max(image.size)
        if target and side * side > MAX_SQUARE_PIXELS and image.format == "JPEG":
            image.draft("RGB", (max(2 * target, side // 8), max(2 * target, side // 8)))
        image.load()
    return image


def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """Composite any transparency (RGBA, LA, palette with transparency) onto white -> RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit/float greyscale: scale to 8 bits first; these modes have no alpha.
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, WHITE)
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def reduce_huge(image: Image.Image, target: int) -> Image.Image:
    """Integer box-reduce an image whose padded square is over MAX_SQUARE_PIXELS (else unchanged)."""
    side = max(image.size)
    if side * side <= MAX_SQUARE_PIXELS:
        return image
    factor = max(1, side // (2 * target))
    if factor == 1:
        return image
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA")  # palette/16-bit: reduce() needs plain channels
    return image.reduce(factor)


def pad_square_white(image: Image.Image) -> Image.Image:
    """Centre ``image`` on a white square of side max(w, h) (extra pixel goes right/bottom)."""
    w, h = image.size
    side = max(w, h)
    if w == h:
        return image
    square = Image.new("RGB", (side, side), WHITE)
    square.paste(image, ((side - w) // 2, (side - h) // 2))
    return square


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize of a square image to ``size``; a no-op when it already is that size."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BICUBIC)


def fit_pad_edge(image: Image.Image, size: int) -> np.ndarray:
    """Area-resize to fit a ``size`` square keeping the aspect ratio, pad by repeating edge pixels."""
    w, h = image.size
    scale = size / max(w, h)
    fw, fh = max(1, round(w * scale)), max(1, round(h * scale))
    if (fw, fh) != (w, h):
        # The original resizes with tf.image.resize(method=AREA); PIL's BOX filter is the same area
        # average (bicubic would sharpen and ring where the model was trained on smooth averages).
        image = image.resize((fw, fh), Image.Resampling.BOX)
    arr = np.asarray(image)
    top, left = (size - fh) // 2, (size - fw) // 2
    return np.pad(arr, ((top, size - fh - top), (left, size - fw - left), (0, 0)), mode="edge")


def to_array(pixels: Image.Image | np.ndarray, profile: Profile) -> np.ndarray:
    """HWC uint8 RGB -> float32 HWC in the profile's channel order and range."""
    arr = np.asarray(pixels, dtype=np.float32)
    if profile.bgr:
        arr = arr[:, :, ::-1]
    if profile.scale != 1.0:
        arr = arr * np.float32(profile.scale)
    return np.ascontiguousarray(arr)


def prepare(image: Image.Image, size: int, profile: Profile = WD14) -> np.ndarray:
    """One decoded image -> float32 (size, size, 3) array ready to stack into an NHWC batch."""
    # Reduce before compositing so a huge RGBA scan never gets full-size RGBA copies.
    rgb = to_rgb_on_white(reduce_huge(image, size))
    if profile.fit == "fit_edge":
        return to_array(fit_pad_edge(rgb, size), profile)
    return to_array(resize_square(pad_square_white(rgb), size), profile)


def prepare_bytes(data: bytes, size: int, profile: Profile = WD14) -> np.ndarray:
    """Encoded image bytes -> model input array (first frame of animations)."""
    return prepare(open_first_frame(data, size), size, profile)
