"""A synthetic character dataset drawn with PIL, for the demo, the tests and the benches.

The character has FIXED features (pink hair, long hair, a yellow hair flower, blue eyes) and
VARYING position, background, expression, clothing and pose, in several aspect ratios so that
buckets matter. Captions use realistic booru tags (underscore style); a few are deliberately
wrong (to be fixed), some lack the trigger word, and one can be empty.

Geometry contract (used by the tiny tagger): pad an image to a square, centred, the way WD14
preprocessing does; then every pixel inside ``HAIR_REGION`` (fractions of the square side) is
exactly the hair colour from ``HAIR_COLOURS``. The character is drawn on a square canvas and
the image is a centred crop of it, which is the inverse of centred padding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from tagging.captions import format_caption

HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "pink_hair": (245, 140, 190),
    "blonde_hair": (250, 220, 110),
    "black_hair": (30, 30, 40),
    "brown_hair": (120, 75, 40),
    "blue_hair": (70, 110, 230),
    "red_hair": (210, 40, 40),
    "white_hair": (235, 235, 240),
    "green_hair": (60, 170, 90),
    "purple_hair": (150, 80, 200),
}
# (x0, y0, x1, y1) as fractions of the padded square; always fully covered by hair.
HAIR_REGION: tuple[float, float, float, float] = (0.42, 0.24, 0.58, 0.29)

CHARACTER_TAGS = ("pink_hair", "long_hair", "hair_flower", "hair_ornament", "blue_eyes")
SKIN = (255, 226, 204)
EYE_BLUE = (40, 90, 220)
FLOWER_YELLOW = (250, 210, 40)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white_background": (255, 255, 255),
    "blue_background": (150, 190, 240),
    "grey_background": (150, 150, 150),
    "green_background": (150, 210, 150),
    "yellow_background": (245, 235, 160),
}
OUTFITS: list[tuple[tuple[str, ...], tuple[int, int, int], tuple[int, int, int]]] = [
    (("dress", "red_dress"), (200, 40, 50), (200, 40, 50)),
    (("school_uniform", "serafuku", "sailor_collar"), (30, 40, 90), (250, 250, 250)),
    (("shirt", "white_shirt"), (245, 245, 245), (230, 230, 230)),
    (("jacket", "black_jacket"), (35, 35, 35), (230, 230, 230)),
    (("hoodie", "green_hoodie"), (60, 150, 80), (60, 150, 80)),
]
EXPRESSIONS = [("smile",), ("open_mouth",), ("closed_mouth",), ("smile", "closed_eyes"), ("frown",), ("blush", "smile")]
POSES = [("upper_body",), ("arms_up",), ("upper_body", "waving"), ("outstretched_arms",)]
# Aspect ratios (w, h); a bucketing trainer sees several resolutions.
ASPECTS = [(1, 1), (2, 3), (3, 2), (3, 4), (4, 3)]


@dataclass(frozen=True)
class Drawing:
    image: Image.Image
    tags: list[str]  # the true tags (no trigger, no deliberate mistakes)


def _box(cx: float, cy: float, rx: float, ry: float, s: int) -> tuple[float, float, float, float]:
    return ((cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s)


def draw_character(
    rng: random.Random, size: int = 512, aspect: tuple[int, int] = (1, 1), hair: str = "pink_hair"
) -> Drawing:
    """Draw one image of the character; ``size`` is the long side in pixels."""
    s = size
    background = rng.choice(list(BACKGROUNDS))
    outfit, cloth, collar = rng.choice(OUTFITS)
    expression = rng.choice(EXPRESSIONS)
    pose = rng.choice(POSES)
    cx, cy = 0.5 + rng.uniform(-0.02, 0.02), 0.42 + rng.uniform(-0.02, 0.02)
    hair_rgb = HAIR_COLOURS[hair]

    canvas = Image.new("RGB", (s, s), BACKGROUNDS[background])
    d = ImageDraw.Draw(canvas)
    # Long hair behind the body.
    d.rectangle(((cx - 0.2) * s, (cy - 0.05) * s, (cx + 0.2) * s, (cy + 0.42) * s), fill=hair_rgb)
    # Body / clothing, then arms by pose.
    d.polygon([((cx - 0.1) * s, (cy + 0.18) * s), ((cx + 0.1) * s, (cy + 0.18) * s),
               ((cx + 0.24) * s, 1.0 * s), ((cx - 0.24) * s, 1.0 * s)], fill=cloth)
    d.polygon([((cx - 0.08) * s, (cy + 0.18) * s), ((cx + 0.08) * s, (cy + 0.18) * s),
               (cx * s, (cy + 0.28) * s)], fill=collar)
    arm = max(2, s // 40)
    if "arms_up" in pose:
        for side in (-1, 1):
            d.line(((cx + side * 0.12) * s, (cy + 0.22) * s, (cx + side * 0.28) * s, (cy - 0.05) * s),
                   fill=SKIN, width=arm)
    elif "outstretched_arms" in pose:
        for side in (-1, 1):
            d.line(((cx + side * 0.12) * s, (cy + 0.24) * s, (cx + side * 0.42) * s, (cy + 0.22) * s),
                   fill=SKIN, width=arm)
    elif "waving" in pose:
        d.line(((cx + 0.12) * s, (cy + 0.24) * s, (cx + 0.3) * s, (cy + 0.05) * s), fill=SKIN, width=arm)
    # Head: hair cap, face, bangs.
    d.ellipse(_box(cx, cy - 0.04, 0.21, 0.19, s), fill=hair_rgb)
    d.ellipse(_box(cx, cy + 0.05, 0.14, 0.15, s), fill=SKIN)
    d.polygon([((cx - 0.14) * s, (cy - 0.02) * s), ((cx + 0.14) * s, (cy - 0.02) * s),
               ((cx + 0.1) * s, (cy + 0.02) * s), (cx * s, (cy - 0.01) * s), ((cx - 0.1) * s, (cy + 0.02) * s)],
              fill=hair_rgb)
    # The signature hair flower, beside the hair region (never inside it).
    fx, fy = cx + 0.16, cy - 0.12
    for dx, dy in ((0.02, 0), (-0.02, 0), (0, 0.02), (0, -0.02)):
        d.ellipse(_box(fx + dx, fy + dy, 0.018, 0.018, s), fill=FLOWER_YELLOW)
    d.ellipse(_box(fx, fy, 0.012, 0.012, s), fill=(240, 120, 40))
    # Eyes and mouth by expression.
    for side in (-1, 1):
        ex, ey = cx + side * 0.055, cy + 0.05
        if "closed_eyes" in expression:
            d.arc(_box(ex, ey, 0.03, 0.015, s), 0, 180, fill=(60, 30, 30), width=max(1, s // 128))
        else:
            d.ellipse(_box(ex, ey, 0.026, 0.034, s), fill=EYE_BLUE)
            d.ellipse(_box(ex - 0.008, ey - 0.012, 0.008, 0.008, s), fill=(255, 255, 255))
    if "blush" in expression:
        for side in (-1, 1):
            d.ellipse(_box(cx + side * 0.085, cy + 0.1, 0.025, 0.012, s), fill=(250, 170, 170))
    mouth = _box(cx, cy + 0.13, 0.03, 0.015, s)
    if "open_mouth" in expression:
        d.ellipse(mouth, fill=(170, 40, 60))
    elif "frown" in expression:
        d.arc(_box(cx, cy + 0.145, 0.03, 0.015, s), 180, 360, fill=(120, 40, 40), width=max(1, s // 128))
    elif "smile" in expression:
        d.arc(mouth, 0, 180, fill=(120, 40, 40), width=max(1, s // 128))
    else:
        d.line((mouth[0], (cy + 0.13) * s, mouth[2], (cy + 0.13) * s), fill=(120, 40, 40), width=max(1, s // 128))

    aw, ah = aspect
    w = s if aw >= ah else max(8, round(s * aw / ah / 8) * 8)
    h = s if ah >= aw else max(8, round(s * ah / aw / 8) * 8)
    left, top = (s - w) // 2, (s - h) // 2  # same rounding as WD14's centred padding
    image = canvas.crop((left, top, left + w, top + h))

    tags = ["1girl", "solo", "long_hair"]
    tags += [t for t in expression if t != "closed_eyes"]
    if "closed_eyes" in expression:
        tags.append("closed_eyes")
    else:
        tags += ["blue_eyes", "looking_at_viewer"]
    tags += [hair, "hair_flower", "hair_ornament", *outfit, *pose, "simple_background", background]
    return Drawing(image, tags)


def make_character_dataset(
    root: Path | str,
    n_images: int = 24,
    seed: int = 0,
    trigger: str = "kazari",
    repeats: int = 10,
    size_variety: bool = True,
    *,
    size: int = 512,
    empty_caption: bool = False,
    mistakes: bool = True,
    caption_ext: str = ".txt",
) -> Path:
    """Write ``root/<repeats>_<trigger>/0000.png`` + captions; return ``root``.

    ``mistakes``: about one image in six lacks the trigger, some have a wrong hair colour tag
    (``blonde_hair``), a stray ``1boy`` or a duplicated tag. ``empty_caption``: the last caption
    is empty (which stops sd-scripts training; lint reports it).
    """
    root = Path(root)
    folder = root / f"{repeats}_{trigger}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n_images):
        aspect = ASPECTS[i % len(ASPECTS)] if size_variety else (1, 1)
        drawing = draw_character(rng, size=size, aspect=aspect)
        tags = list(drawing.tags)
        if mistakes:
            if i % 7 == 3:
                tags[tags.index("pink_hair")] = "blonde_hair"
            if i % 11 == 4:
                tags.insert(2, "1boy")
            if i % 9 == 2:
                tags.append(tags[3])
        if not (mistakes and i % 6 == 5):
            tags.insert(0, trigger)
        text = "" if (empty_caption and i == n_images - 1) else format_caption(tags) + "\n"
        drawing.image.save(folder / f"{i:04d}.png", compress_level=1)
        (folder / f"{i:04d}{caption_ext}").write_text(text, encoding="utf-8")
    return root
