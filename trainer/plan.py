"""One epoch's plan: which images train, how often, and in which bucket.

The figures a user is promised (Config screen, `kazari config show`) and the batches the trainer
runs both come from :func:`plan_epoch`, so the step count shown is the step count trained. The
rules follow sd-scripts (``library/train_util.py``):

* an image whose header cannot be read is left out, and counts for nothing (not even for the
  regularisation balance);
* every usable image enters its bucket ``repeats`` times (``10_name`` folder = 10 repeats);
  regularisation images are repeated round-robin until they match the training samples;
* the bucket is chosen from the size the image is *shown* at: EXIF rotation applied, because the
  pixels are loaded rotated too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from trainer.buckets import BucketSet, Placement


@dataclass(frozen=True)
class PlannedImage:
    item: Any  # tagging.dataset.ImageItem
    folder: Any  # tagging.dataset.Folder
    repeats: int  # times per epoch (reg images: balanced against the training samples)
    is_reg: bool
    size: tuple[int, int]  # (w, h) as shown: EXIF orientation applied
    placement: Placement


@dataclass(frozen=True)
class EpochPlan:
    images: list[PlannedImage]  # only images that train (repeats > 0)
    unreadable: list[Any]  # ImageItems left out because their size could not be read
    buckets: BucketSet
    num_train_samples: int  # training images x repeats
    reg_unused: bool  # more regularisation samples than training samples: some never train

    def bucket_counts(self) -> dict[tuple[int, int], int]:
        """Bucket -> samples per epoch (repeats included), in bucket order."""
        counts: dict[tuple[int, int], int] = {}
        for im in self.images:
            counts[im.placement.bucket] = counts.get(im.placement.bucket, 0) + im.repeats
        return dict(sorted(counts.items()))


def balanced_reg_repeats(reg_folder_repeats: list[int], num_train_samples: int) -> list[int]:
    """sd-scripts: reg images start at their folder's repeats, then gain one each, round-robin,
    until they add up to the training samples (so an epoch holds as many reg as training samples)."""
    repeats = [0] * len(reg_folder_repeats)
    n = 0
    first = True
    while reg_folder_repeats and n < num_train_samples:
        for i, start in enumerate(reg_folder_repeats):
            if first:
                repeats[i] = start
                n += start
            else:
                repeats[i] += 1
                n += 1
            if n >= num_train_samples:
                break
        first = False
    return repeats


def oriented_size(path: Path, size: tuple[int, int]) -> tuple[int, int]:
    """``size`` as the image is shown: swapped when its EXIF orientation turns it by 90 degrees.

    The pixels are loaded with the EXIF rotation applied (a phone photo trains upright), so the
    bucket must be chosen from the rotated size too, or a portrait photo would be squashed into a
    landscape bucket.
    """
    try:
        with Image.open(path) as im:
            turned = im.getexif().get(0x0112) in (5, 6, 7, 8)  # Orientation: transpose / 90 / 270
    except (OSError, ValueError):
        return size  # unreadable: loading the pixels reports it with the file name
    return (size[1], size[0]) if turned else size


def _usable(item: Any) -> bool:
    return min(item.size) > 0  # (0, 0): the header could not be read (lint reports why)


def plan_epoch(cfg: Any, dataset: Any) -> EpochPlan:
    """The epoch plan of ``cfg`` (a TrainConfig) on ``dataset`` (a ``tagging.dataset.Dataset``)."""
    buckets = BucketSet.for_config(cfg)
    unreadable: list[Any] = []
    train: list[tuple[Any, Any]] = []
    reg: list[tuple[Any, Any]] = []
    for folders, into in ((dataset.folders, train), (getattr(dataset, "reg_folders", []), reg)):
        for folder in folders:
            for item in folder.images:
                (into if _usable(item) else unreadable).append((item, folder))
    num_train = sum(folder.repeats for _, folder in train)
    reg_repeats = balanced_reg_repeats([folder.repeats for _, folder in reg], num_train)
    images: list[PlannedImage] = []
    entries = [(it, f, f.repeats, False) for it, f in train]
    entries += [(it, f, r, True) for (it, f), r in zip(reg, reg_repeats, strict=True)]
    for item, folder, repeats, is_reg in entries:
        if repeats <= 0:
            continue
        size = oriented_size(Path(item.path), tuple(item.size))
        images.append(PlannedImage(item, folder, repeats, is_reg, size, buckets.place(*size)))
    return EpochPlan(
        images=images, unreadable=[it for it, _ in unreadable], buckets=buckets, num_train_samples=num_train,
        reg_unused=bool(reg) and sum(f.repeats for _, f in reg) > num_train,
    )
