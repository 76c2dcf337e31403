"""Bucketing must match sd-scripts (model_util.make_bucket_resolutions + train_util.BucketManager)."""

from __future__ import annotations

import random

import pytest

from trainer.buckets import (
    BucketSet,
    adjust_bucket_range,
    assign_buckets,
    batches_per_epoch,
    make_bucket_resolutions,
)
from trainer.config import preset

# sd-scripts' 17 buckets for 512x512, min 256, max 1024, step 64 (listed in the research notes).
SD_512 = [
    (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576),
    (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
]


def test_predefined_buckets_for_512_match_sd_scripts() -> None:
    assert make_bucket_resolutions((512, 512), 256, 1024, 64) == SD_512


def test_predefined_buckets_keep_area_steps_and_range() -> None:
    buckets = make_bucket_resolutions((768, 768), 256, 1024, 64)
    assert (768, 768) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert 256 <= w <= 1024 and 256 <= h <= 1024
        assert w * h <= 768 * 768
        assert (h, w) in buckets  # symmetric


def test_non_square_resolution_uses_its_area() -> None:
    buckets = make_bucket_resolutions((512, 768), 256, 1024, 64)
    # square side floor(sqrt(512*768)/64)*64 = 576
    assert (576, 576) in buckets
    assert all(w * h <= 512 * 768 for w, h in buckets)


def test_exact_size_bucket_is_used_as_is() -> None:
    b = BucketSet((512, 512))
    p = b.place(384, 640)
    assert p.bucket == (384, 640) and p.resized == (384, 640) and p.ar_error == 0


def test_nearest_aspect_ratio_and_cover_resize() -> None:
    b = BucketSet((768, 768))
    p = b.place(1000, 1500)  # AR 0.667: 640x896 (0.714) is the closest predefined bucket
    assert p.bucket == (640, 896)
    assert p.resized == (640, 960)  # width matched, height overflows and is cropped
    assert p.crop_offsets() == (0, 32)
    assert p.crop_box() == (0, 32, 640, 928)
    assert p.ar_error == pytest.approx(640 / 896 - 1000 / 1500)


def test_small_images_are_upscaled_to_cover_by_default() -> None:
    p = BucketSet((768, 768)).place(300, 300)
    assert p.bucket == (768, 768) and p.resized == (768, 768)


def test_resized_always_covers_the_bucket() -> None:
    rng = random.Random(3)
    b = BucketSet((768, 768))
    for _ in range(300):
        w, h = rng.randint(64, 3000), rng.randint(64, 3000)
        p = b.place(w, h)
        assert p.resized[0] >= p.bucket[0] and p.resized[1] >= p.bucket[1]
        assert p.resized[0] == p.bucket[0] or p.resized[1] == p.bucket[1]
        assert p.bucket in b.resolutions
        left, top = p.crop_offsets(random.Random(1))
        assert 0 <= left <= p.overflow[0] and 0 <= top <= p.overflow[1]


def test_tie_goes_to_first_bucket_in_sorted_order() -> None:
    # A 1:1 image among buckets with equal error picks the first sorted candidate (numpy argmin).
    b = BucketSet((512, 512), min_reso=256, max_reso=1024)
    assert b.assign(1000, 1000) == (512, 512)


def test_no_upscale_large_image_shrinks_to_area_and_floors_to_step() -> None:
    b = BucketSet((512, 512), no_upscale=True)
    assert b.resolutions == []
    p = b.place(2000, 1000)
    # sqrt(512*512*2)=724 -> width 704 gives AR 2.2, height 320 gives 640x320 AR 2.0: height wins.
    assert p.resized == (640, 320) and p.bucket == (640, 320)


def test_no_upscale_small_image_keeps_size_and_crops() -> None:
    p = BucketSet((512, 512), no_upscale=True).place(300, 200)
    assert p.resized == (300, 200) and p.bucket == (256, 192)
    assert p.crop_offsets() == (22, 4)


def test_no_upscale_ignores_min_max_reso() -> None:
    p = BucketSet((512, 512), min_reso=256, max_reso=512, no_upscale=True).place(130, 700)
    assert p.bucket == (128, 640)


def test_no_upscale_tiny_image_gets_a_minimal_bucket_instead_of_zero() -> None:
    p = BucketSet((512, 512), no_upscale=True).place(30, 20)
    assert p.bucket == (64, 64)
    assert p.resized[0] >= 64 and p.resized[1] >= 64


def test_without_bucketing_everything_goes_to_the_resolution() -> None:
    b = BucketSet((512, 768), enable_bucket=False)
    assert b.resolutions == [(512, 768)]
    p = b.place(1000, 1000)
    assert p.bucket == (512, 768) and p.resized == (768, 768)
    assert p.crop_offsets() == (128, 0)


def test_bucket_range_adjusted_like_sd_scripts() -> None:
    assert adjust_bucket_range(250, 1000, 64) == (192, 1024)
    assert adjust_bucket_range(256, 1024, 64) == (256, 1024)
    assert BucketSet((512, 512), min_reso=250, max_reso=1000).min_reso == 192


def test_batches_never_mix_buckets() -> None:
    counts = {(512, 512): 3, (448, 576): 1, (576, 448): 5}
    assert batches_per_epoch(counts, 2) == 2 + 1 + 3  # 6, where 9 samples / 2 would say 5
    assert batches_per_epoch([4, 0], 4) == 1


def test_count_with_repeats() -> None:
    b = BucketSet((512, 512))
    counts = b.count([(512, 512), (512, 512), (400, 700)], repeats=[10, 10, 5])
    assert counts == {(384, 640): 5, (512, 512): 20}


def test_for_config_and_assign_buckets_agree() -> None:
    cfg = preset("anime-character")
    b = BucketSet.for_config(cfg)
    assert b.resolution == (768, 768) and b.min_reso == 256 and b.max_reso == 1024
    sizes = [(1000, 1500), (768, 768), (2048, 512)]
    assert assign_buckets(sizes, resolution=(768, 768), min_reso=256, max_reso=1024, step=64,
                          no_upscale=False) == [b.assign(w, h) for w, h in sizes]


def test_invalid_image_size_raises() -> None:
    with pytest.raises(ValueError):
        BucketSet((512, 512)).place(0, 10)
