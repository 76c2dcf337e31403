from pathlib import Path

import numpy as np
from PIL import Image

from tagging.captions import read_caption_file
from tagging.synthetic import ASPECTS, HAIR_COLOURS, HAIR_REGION, draw_character, make_character_dataset


def _padded(img: Image.Image) -> np.ndarray:
    w, h = img.size
    m = max(w, h)
    square = Image.new("RGB", (m, m), (255, 255, 255))
    square.paste(img.convert("RGB"), ((m - w) // 2, (m - h) // 2))
    return np.asarray(square)


def test_layout_captions_and_mistakes(tmp_path: Path) -> None:
    root = make_character_dataset(tmp_path / "ds", n_images=24, seed=1, trigger="kz", repeats=5, empty_caption=True)
    folder = root / "5_kz"
    images = sorted(folder.glob("*.png"))
    assert len(images) == 24
    sizes = {Image.open(p).size for p in images}
    assert len(sizes) >= 4  # several aspect ratios, so buckets matter
    caps = [read_caption_file(p.with_suffix(".txt")) for p in images]
    assert caps[-1] == []  # the optional empty caption
    with_tags = caps[:-1]
    assert sum(1 for c in with_tags if c and c[0] == "kz") >= 15
    assert any("kz" not in c for c in with_tags)  # some lack the trigger
    assert any("blonde_hair" in c for c in with_tags)  # deliberately wrong hair colour
    assert any("1boy" in c for c in with_tags)
    assert any(len(c) != len(set(c)) for c in with_tags)  # a duplicated tag
    assert all({"1girl", "hair_flower", "long_hair"} <= set(c) for c in with_tags)


def test_deterministic(tmp_path: Path) -> None:
    a = make_character_dataset(tmp_path / "a", n_images=3, seed=7, size=64)
    b = make_character_dataset(tmp_path / "b", n_images=3, seed=7, size=64)
    for p in sorted((a / "10_kazari").iterdir()):
        assert p.read_bytes() == (b / "10_kazari" / p.name).read_bytes()


def test_hair_region_is_always_hair_after_padding(tmp_path: Path) -> None:
    import random

    rng = random.Random(3)
    for i in range(40):
        for hair in ("pink_hair", "black_hair"):
            drawing = draw_character(rng, size=128 + 8 * (i % 5), aspect=ASPECTS[i % len(ASPECTS)], hair=hair)
            arr = _padded(drawing.image)
            m = arr.shape[0]
            x0, y0, x1, y1 = (round(v * m) for v in HAIR_REGION)
            region = arr[y0:y1, x0:x1].reshape(-1, 3)
            assert (region == HAIR_COLOURS[hair]).all(), (i, hair)
            assert hair in drawing.tags
