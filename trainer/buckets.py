"""Aspect-ratio buckets with sd-scripts' semantics (pure Python: the TUI imports this often).

Checked against kohya-ss/sd-scripts ``library/model_util.py::make_bucket_resolutions`` and
``library/train_util.py::BucketManager`` / ``trim_and_resize_if_required``:

* Predefined buckets keep about the area of the target resolution: the square side
  ``floor(sqrt(W*H)/step)*step``, plus for every width ``w`` from min to max reso (step ``step``)
  the bucket ``(w, min(max, floor(W*H // w / step)*step))`` and its transpose, when that height
  is at least min reso.
* An image whose exact size is a bucket uses it; otherwise the bucket with the smallest
  ``|bucket_ar - image_ar|`` (first in sorted order on ties). The image is resized to *cover*
  the bucket (height fixed when the image is wider than the bucket, else width), rounding
  half up, then the overflow is cropped (centred, or at a random offset).
* ``bucket_no_upscale``: no predefined buckets, min/max reso ignored. Images larger than
  ``W*H`` shrink to that area keeping their aspect ratio, one side snapped to the step (whichever
  gives the smaller aspect error); then the bucket is each side floored to the step — so images
  are cropped, never padded, and never upscaled.
* Without bucketing there is one bucket, ``(W, H)``, with the same cover-and-crop.
* min/max reso that are not multiples of the step are adjusted like sd-scripts (min down, max up).
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Size = tuple[int, int]


def make_bucket_resolutions(resolution: Size, min_reso: int = 256, max_reso: int = 1024,
                            step: int = 64) -> list[Size]:
    """The predefined buckets for ``resolution`` (W, H), sorted."""
    max_area = resolution[0] * resolution[1]
    resos = {(_floor(int(math.sqrt(max_area)), step),) * 2}
    width = min_reso
    while width <= max_reso:
        height = min(max_reso, _floor(max_area // width, step))
        if height >= min_reso:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return sorted(resos)


def _floor(x: int, step: int) -> int:
    return x - x % step


def _round_to_step(x: float, step: int) -> int:
    value = int(x + 0.5)
    return value - value % step


def adjust_bucket_range(min_reso: int, max_reso: int, step: int) -> tuple[int, int]:
    """min/max bucket reso as sd-scripts uses them: min rounded down, max up, to the step."""
    if min_reso % step:
        min_reso -= min_reso % step
    if max_reso % step:
        max_reso += step - max_reso % step
    return min_reso, max_reso


@dataclass(frozen=True)
class Placement:
    """Where one image goes: its bucket, the size it is resized to, and the crop into the bucket."""

    image: Size  # original (w, h)
    bucket: Size  # training (w, h)
    resized: Size  # size after resizing, covering the bucket
    ar_error: float  # bucket aspect ratio minus image aspect ratio

    @property
    def overflow(self) -> Size:
        """Pixels cropped away in x and y after resizing."""
        return self.resized[0] - self.bucket[0], self.resized[1] - self.bucket[1]

    def crop_offsets(self, rng: _random.Random | None = None) -> Size:
        """(left, top) of the crop in the resized image: centred, or random when ``rng`` is given."""
        ox, oy = self.overflow
        if rng is None:
            return ox // 2, oy // 2
        return rng.randint(0, ox), rng.randint(0, oy)

    def crop_box(self, rng: _random.Random | None = None) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in the resized image, for ``PIL.Image.crop``."""
        left, top = self.crop_offsets(rng)
        return left, top, left + self.bucket[0], top + self.bucket[1]


class BucketSet:
    """The buckets of one training config; ``place``/``assign`` an image size into them."""

    def __init__(self, resolution: Size, *, enable_bucket: bool = True, min_reso: int = 256,
                 max_reso: int = 1024, step: int = 64, no_upscale: bool = False) -> None:
        if step < 1:
            raise ValueError("bucket step must be at least 1")
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.max_area = self.resolution[0] * self.resolution[1]
        self.enable_bucket = enable_bucket
        self.step = step
        self.no_upscale = enable_bucket and no_upscale
        self.min_reso, self.max_reso = adjust_bucket_range(min_reso, max_reso, step)
        if not enable_bucket:
            self.resolutions: list[Size] = [self.resolution]
        elif self.no_upscale:
            self.resolutions = []  # made per image
        else:
            self.resolutions = make_bucket_resolutions(self.resolution, self.min_reso, self.max_reso, step)
        self._set = set(self.resolutions)
        self._ratios = [w / h for w, h in self.resolutions]

    @classmethod
    def for_config(cls, cfg: Any) -> BucketSet:
        """From a :class:`trainer.config.TrainConfig` (or anything with its ``dataset`` section)."""
        d = cfg.dataset
        return cls(d.resolution_wh, enable_bucket=d.enable_bucket, min_reso=d.min_bucket_reso,
                   max_reso=d.max_bucket_reso, step=d.bucket_reso_steps, no_upscale=d.bucket_no_upscale)

    def place(self, width: int, height: int) -> Placement:
        """Bucket, resized size and aspect error of a ``width`` x ``height`` image."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size {width}x{height} is not usable")
        aspect = width / height
        if not self.no_upscale:
            bucket = (width, height)
            if bucket not in self._set:
                best = 0
                for i, ratio in enumerate(self._ratios):
                    if abs(ratio - aspect) < abs(self._ratios[best] - aspect):
                        best = i
                bucket = self.resolutions[best]
            # Wider than the bucket: match heights and crop the sides; else match widths.
            scale = bucket[1] / height if aspect > bucket[0] / bucket[1] else bucket[0] / width
            resized = (int(width * scale + 0.5), int(height * scale + 0.5))
        else:
            if width * height > self.max_area:
                rw = math.sqrt(self.max_area * aspect)
                rh = self.max_area / rw
                bw = _round_to_step(rw, self.step)
                ar_w = bw / max(1, _round_to_step(bw / aspect, self.step))
                bh = _round_to_step(rh, self.step)
                ar_h = _round_to_step(bh * aspect, self.step) / max(1, bh)
                if abs(ar_w - aspect) < abs(ar_h - aspect):
                    resized = (bw, int(bw / aspect + 0.5))
                else:
                    resized = (int(bh * aspect + 0.5), bh)
            else:
                resized = (width, height)
            bucket = (_floor(resized[0], self.step), _floor(resized[1], self.step))
            if bucket[0] < self.step or bucket[1] < self.step:
                # sd-scripts would make a 0-px bucket and crash; kazari upscales just enough instead.
                bucket = (max(bucket[0], self.step), max(bucket[1], self.step))
                scale = max(bucket[0] / resized[0], bucket[1] / resized[1])
                resized = (max(bucket[0], int(resized[0] * scale + 0.5)),
                           max(bucket[1], int(resized[1] * scale + 0.5)))
        return Placement((width, height), bucket, resized, bucket[0] / bucket[1] - aspect)

    def assign(self, width: int, height: int) -> Size:
        """The bucket (w, h) of a ``width`` x ``height`` image."""
        return self.place(width, height).bucket

    def resized_size(self, width: int, height: int) -> Size:
        """The size the image is resized to before cropping into its bucket."""
        return self.place(width, height).resized

    def count(self, sizes: Iterable[Size], repeats: Iterable[int] | None = None) -> dict[Size, int]:
        """Images per bucket (each counted ``repeats`` times), sorted by bucket."""
        counts: dict[Size, int] = {}
        reps = list(repeats) if repeats is not None else None
        for i, (w, h) in enumerate(sizes):
            bucket = self.assign(w, h)
            counts[bucket] = counts.get(bucket, 0) + (reps[i] if reps is not None else 1)
        return dict(sorted(counts.items()))


def assign_buckets(sizes: Sequence[Size], *, resolution: Size, min_reso: int = 256, max_reso: int = 1024,
                   step: int = 64, no_upscale: bool = False, enable_bucket: bool = True) -> list[Size]:
    """The bucket of each image size (the trainer's data pipeline entry point)."""
    buckets = BucketSet(resolution, enable_bucket=enable_bucket, min_reso=min_reso, max_reso=max_reso,
                        step=step, no_upscale=no_upscale)
    return [buckets.assign(w, h) for w, h in sizes]


def batches_per_epoch(bucket_counts: Mapping[Size, int] | Iterable[int], batch_size: int) -> int:
    """Batches in one epoch: each bucket is split on its own (a batch never mixes buckets)."""
    counts = bucket_counts.values() if isinstance(bucket_counts, Mapping) else bucket_counts
    return sum(math.ceil(n / batch_size) for n in counts if n > 0)
