"""Tag statistics and the steps arithmetic users keep getting wrong.

Functions take a ``Dataset``, any iterable of ``ImageItem`` or plain tag lists. Counts are
per image: a tag written twice in one caption counts once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TagCount:
    tag: str
    count: int  # images with the tag
    share: float  # count / number of images (0..1)


@dataclass(frozen=True)
class Cooccurrence:
    a: str
    b: str
    both: int
    only_a: int
    only_b: int
    neither: int

    @property
    def jaccard(self) -> float:
        union = self.both + self.only_a + self.only_b
        return self.both / union if union else 0.0

    @property
    def p_b_given_a(self) -> float:
        """Share of images with ``a`` that also have ``b``."""
        total = self.both + self.only_a
        return self.both / total if total else 0.0


def _tag_lists(source: Any) -> list[Sequence[str]]:
    if hasattr(source, "images") and not isinstance(source, (list, tuple)):
        source = source.images
    return [item.tags if hasattr(item, "tags") else item for item in source]


def tag_frequency(source: Any, sort: str = "count", descending: bool | None = None) -> list[TagCount]:
    """Every tag with its image count and share. ``sort``: ``"count"`` (ties by name) or ``"name"``."""
    lists = _tag_lists(source)
    counts: Counter[str] = Counter()
    for tags in lists:
        counts.update(set(tags))
    n = len(lists) or 1
    rows = [TagCount(tag, c, c / n) for tag, c in counts.items()]
    if sort == "count":
        rows.sort(key=lambda r: r.tag)
        rows.sort(key=lambda r: r.count, reverse=True if descending is None else descending)
    elif sort == "name":
        rows.sort(key=lambda r: r.tag, reverse=bool(descending))
    else:
        raise ValueError(f"sort must be 'count' or 'name', not {sort!r}")
    return rows


def cooccurrence(source: Any, a: str, b: str) -> Cooccurrence:
    """How often tags ``a`` and ``b`` appear together, apart, or not at all."""
    both = only_a = only_b = neither = 0
    for tags in _tag_lists(source):
        has_a, has_b = a in tags, b in tags
        if has_a and has_b:
            both += 1
        elif has_a:
            only_a += 1
        elif has_b:
            only_b += 1
        else:
            neither += 1
    return Cooccurrence(a, b, both, only_a, only_b, neither)


def cooccurring(source: Any, tag: str, top: int | None = 20) -> list[TagCount]:
    """Tags that appear with ``tag``; ``share`` is relative to the images that have ``tag``."""
    with_tag = [tags for tags in _tag_lists(source) if tag in tags]
    counts: Counter[str] = Counter()
    for tags in with_tag:
        counts.update(set(tags) - {tag})
    n = len(with_tag) or 1
    rows = sorted((TagCount(t, c, c / n) for t, c in counts.items()), key=lambda r: (-r.count, r.tag))
    return rows if top is None else rows[:top]


@dataclass(frozen=True)
class FolderSteps:
    name: str
    images: int
    repeats: int
    is_reg: bool
    samples_per_epoch: int  # images x repeats
    steps: float  # images x repeats x epochs / batch size (this folder's share)


@dataclass(frozen=True)
class StepCounts:
    folders: list[FolderSteps]
    epochs: int
    batch_size: int
    gradient_accumulation_steps: int
    train_samples_per_epoch: int
    reg_samples_per_epoch: int
    samples_per_epoch: int
    steps_per_epoch: int
    total_steps: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "folders": [f.__dict__ for f in self.folders],
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "train_samples_per_epoch": self.train_samples_per_epoch,
            "reg_samples_per_epoch": self.reg_samples_per_epoch,
            "samples_per_epoch": self.samples_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
        }


def step_counts(
    source: Any, epochs: int = 1, batch_size: int = 1, gradient_accumulation_steps: int = 1
) -> StepCounts:
    """Steps = images x repeats x epochs / batch size, per folder and in total, as sd-scripts counts.

    ``source``: a Dataset, or an iterable of ``(name, images, repeats)`` / ``(name, images, repeats, is_reg)``.
    With regularisation images sd-scripts repeats them until they match the training samples, so an
    epoch has twice the samples. Bucketing can add a few partial batches per epoch; this is the
    lower bound sd-scripts prints before bucketing.
    """
    if epochs < 1 or batch_size < 1 or gradient_accumulation_steps < 1:
        raise ValueError("epochs, batch_size and gradient_accumulation_steps must be >= 1")
    rows: Iterable[tuple[str, int, int, bool]]
    if hasattr(source, "folders"):
        rows = [(f.name, len(f.images), f.repeats, False) for f in source.folders]
        rows += [(f.name, len(f.images), f.repeats, True) for f in getattr(source, "reg_folders", [])]
    else:
        rows = [(r[0], int(r[1]), int(r[2]), bool(r[3]) if len(r) > 3 else False) for r in source]
    folders = [
        FolderSteps(name, n, rep, reg, n * rep, n * rep * epochs / batch_size)
        for name, n, rep, reg in rows
    ]
    train = sum(f.samples_per_epoch for f in folders if not f.is_reg)
    has_reg = any(f.is_reg and f.images for f in folders)
    reg = train if has_reg else 0
    samples = train + reg
    per_epoch = math.ceil(samples / batch_size / gradient_accumulation_steps) if samples else 0
    return StepCounts(
        folders, epochs, batch_size, gradient_accumulation_steps, train, reg, samples, per_epoch, per_epoch * epochs
    )
