"""WD14 / DeepDanbooru preprocessing, one step at a time, against the reference facts
(SmilingWolf's wd-tagger Space ``prepare_image``: RGBA onto white, centred white square pad,
bicubic to the model size, float32 0..255, BGR, NHWC)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from tagging.tagger import preprocess as pp


def _png(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _pixels(image: Image.Image) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in px) for px in np.asarray(image).reshape(-1, 3)]


# ---- step 1: transparency onto white --------------------------------------------------------

def test_rgba_transparent_pixels_become_white_and_opaque_are_kept():
    img = Image.new("RGBA", (4, 2), (255, 0, 0, 0))
    img.putpixel((0, 0), (10, 20, 30, 255))
    out = pp.to_rgb_on_white(img)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (10, 20, 30)
    assert out.getpixel((3, 1)) == (255, 255, 255)


def test_rgba_half_alpha_blends_with_white():
    out = pp.to_rgb_on_white(Image.new("RGBA", (1, 1), (0, 0, 0, 128)))
    value = out.getpixel((0, 0))
    assert value[0] == value[1] == value[2]
    assert 125 <= value[0] <= 129  # 255 * (1 - 128/255)


def test_la_and_palette_transparency_composite_onto_white():
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (0, 255))
    assert _pixels(pp.to_rgb_on_white(la)) == [(255, 255, 255), (0, 0, 0)]

    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0  # palette index 0 is transparent
    reloaded = Image.open(io.BytesIO(_png(pal)))
    assert _pixels(pp.to_rgb_on_white(reloaded)) == [(255, 255, 255), (0, 255, 0)]


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    img = Image.new("I;16", (1, 1), 65535)
    assert pp.to_rgb_on_white(img).getpixel((0, 0)) == (255, 255, 255)


# ---- step 2: centred white square ----------------------------------------------------------

def test_pad_square_centres_with_white_extra_pixel_bottom():
    img = Image.new("RGB", (20, 9), (0, 0, 0))
    sq = pp.pad_square_white(img)
    assert sq.size == (20, 20)
    arr = np.asarray(sq)
    top = (20 - 9) // 2
    assert (arr[:top] == 255).all() and (arr[top + 9:] == 255).all()
    assert (arr[top:top + 9] == 0).all()
    assert top == 5 and arr.shape[0] - (top + 9) == 6


def test_pad_square_portrait_pads_left_right():
    arr = np.asarray(pp.pad_square_white(Image.new("RGB", (3, 10), (0, 0, 0))))
    assert (arr[:, :3] == 255).all() and (arr[:, 3:6] == 0).all() and (arr[:, 6:] == 255).all()


# ---- step 3: bicubic resize to the model size ----------------------------------------------

def test_resize_is_pil_bicubic_and_skipped_at_target_size():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8))
    out = pp.resize_square(img, 32)
    assert out.size == (32, 32)
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((32, 32), Image.Resampling.BICUBIC)))
    assert not np.array_equal(np.asarray(out), np.asarray(img.resize((32, 32), Image.Resampling.BILINEAR)))
    assert pp.resize_square(img, 50) is img


# ---- step 4/5: float32 0..255, BGR ----------------------------------------------------------

def test_to_array_is_float32_0_255_bgr_for_wd14():
    img = Image.new("RGB", (2, 2), (200, 100, 7))
    arr = pp.to_array(img, pp.WD14)
    assert arr.dtype == np.float32 and arr.shape == (2, 2, 3)
    assert arr[0, 0].tolist() == [7.0, 100.0, 200.0]  # B, G, R, not normalised


def test_to_array_is_rgb_0_1_for_deepdanbooru():
    arr = pp.to_array(Image.new("RGB", (1, 1), (255, 51, 0)), pp.DEEPDANBOORU)
    assert np.allclose(arr[0, 0], [1.0, 0.2, 0.0])


# ---- whole pipeline --------------------------------------------------------------------------

def _reference_wd14(img: Image.Image, size: int) -> np.ndarray:
    """The reference steps written out independently (Space prepare_image, without batch axis)."""
    canvas = Image.new("RGBA", img.size, (255, 255, 255))
    canvas.alpha_composite(img.convert("RGBA"))
    rgb = canvas.convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


@pytest.mark.parametrize("shape", [(37, 23), (23, 37), (64, 64), (10, 10)])
def test_prepare_matches_reference_pipeline_bit_for_bit(shape):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (shape[1], shape[0], 4), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA")
    out = pp.prepare_bytes(_png(img), 32, pp.WD14)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert np.array_equal(out, _reference_wd14(img, 32))


def test_deepdanbooru_fits_then_pads_with_edge_pixels():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste(Image.new("RGB", (40, 1), (0, 0, 255)), (0, 0))  # blue top row
    out = pp.prepare(img, 40, pp.DEEPDANBOORU)
    assert out.shape == (40, 40, 3)
    assert np.allclose(out[0, 20], [0, 0, 1])  # padding repeats the blue edge row, not white/black
    assert np.allclose(out[-1, 20], [1, 0, 0])


def test_deepdanbooru_resize_is_an_area_average():
    # The original uses tf.image.resize(method=AREA): halving a 2x2 checker gives the plain mean,
    # where bicubic would over/undershoot at the pixel edges.
    checker = np.zeros((80, 80, 3), np.uint8)
    checker[::2, ::2] = 255
    checker[1::2, 1::2] = 255
    out = pp.prepare(Image.fromarray(checker), 40, pp.DEEPDANBOORU)
    assert np.allclose(out, 127.5 / 255.0, atol=1 / 255.0)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    out = pp.prepare_bytes(buf.getvalue(), 8, pp.WD14)
    assert out[4, 4].tolist() == [0.0, 0.0, 255.0]  # red in BGR


def test_corrupt_bytes_raise_a_decoder_error():
    with pytest.raises(UnidentifiedImageError):
        pp.prepare_bytes(b"not an image at all", 8)


def test_huge_image_is_reduced_before_padding(monkeypatch):
    monkeypatch.setattr(pp, "MAX_SQUARE_PIXELS", 100 * 100)
    seen = []
    real_pad = pp.pad_square_white
    monkeypatch.setattr(pp, "pad_square_white", lambda im: seen.append(im.size) or real_pad(im))
    img = Image.new("RGBA", (400, 200), (0, 0, 0, 255))
    out = pp.prepare(img, 32)
    assert out.shape == (32, 32, 3)
    assert max(seen[0]) <= 2 * 32 * 2 and seen[0][0] < 400  # never a 400x400 padded copy
    assert (out[0, 16] == 255).all() and (out[16, 16] == 0).all()  # still white pad, black content


def test_huge_jpeg_is_decoded_at_reduced_scale(monkeypatch):
    monkeypatch.setattr(pp, "MAX_SQUARE_PIXELS", 64 * 64)
    data = _png(Image.new("RGB", (512, 256), (0, 128, 255)), format="JPEG")
    assert max(pp.open_first_frame(data, 16).size) < 512  # DCT-domain downscale, no full decode
    assert max(pp.open_first_frame(data, None).size) == 512


def test_decompression_bomb_is_an_error_not_an_allocation(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(Image.DecompressionBombError):
        pp.open_first_frame(_png(Image.new("RGB", (100, 100))), 32)
