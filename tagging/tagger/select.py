"""Scores -> tags: per-category thresholds, MCut, ratings, ordering, spaces, exclude, max tags.

Pure functions over one image's score vector, so re-thresholding the whole dataset from cached
scores costs microseconds per image and never touches the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from tagging.captions import underscores_to_spaces
from tagging.tagger.labels import Labels

DEFAULT_GENERAL = 0.35  # SmilingWolf Space / imgutils defaults
DEFAULT_CHARACTER = 0.85
MCUT_CHARACTER_FLOOR = 0.15  # the Space never lets MCut push the character threshold below this


@dataclass(frozen=True)
class TagOptions:
    """How scores become a caption; every field maps to a ``kazari tag`` option."""

    general: float = DEFAULT_GENERAL
    character: float = DEFAULT_CHARACTER
    mcut: bool = False
    ratings: bool = False  # append the top rating tag
    spaces: bool = False  # underscores -> spaces (kaomoji kept)
    exclude: tuple[str, ...] = ()
    max_tags: int | None = None  # cap on general + character tags (the rating is extra)


@dataclass(frozen=True)
class ImageTags:
    """The tags chosen for one image, with their scores (names already spaced if asked)."""

    general: list[tuple[str, float]] = field(default_factory=list)
    character: list[tuple[str, float]] = field(default_factory=list)
    rating: tuple[str, float] | None = None

    @property
    def tags(self) -> list[str]:
        """Caption order: general and character tags by confidence, then the rating if kept."""
        ranked = sorted(self.general + self.character, key=lambda t: -t[1])
        out = [name for name, _ in ranked]
        if self.rating is not None:
            out.append(self.rating[0])
        return out


def mcut_threshold(probs: np.ndarray) -> float:
    """Maximum-cut threshold: midway across the largest gap between sorted scores.

    Largeron, Moulin, Gery (2012), "MCut: A Thresholding Strategy for Multi-label
    Classification", IDA 2012. With fewer than two scores there is no gap: keep everything.
    """
    if probs.size < 2:
        return -1.0
    s = np.sort(probs)[::-1]
    gaps = s[:-1] - s[1:]
    t = int(np.argmax(gaps))
    return float((s[t] + s[t + 1]) / 2)


def normalise(tag: str) -> str:
    """Comparison key: case-insensitive, underscores and spaces equal (``Long_Hair`` == ``long hair``)."""
    return tag.strip().lower().replace(" ", "_")


def display_name(name: str, spaces: bool) -> str:
    return underscores_to_spaces(name) if spaces else name


def select_tags(scores: np.ndarray, labels: Labels, options: TagOptions = TagOptions()) -> ImageTags:
    """Choose the tags for one image's score vector (strict ``>``, like the reference)."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    g_scores = scores[labels.general_idx]
    c_scores = scores[labels.character_idx]
    g_thresh, c_thresh = options.general, options.character
    if options.mcut:
        g_thresh = mcut_threshold(g_scores)
        c_thresh = max(MCUT_CHARACTER_FLOOR, mcut_threshold(c_scores))
    excluded = {normalise(t) for t in options.exclude}

    def pick(idx: np.ndarray, sc: np.ndarray, thresh: float) -> list[tuple[str, float]]:
        keep = np.flatnonzero(sc > thresh)
        keep = keep[np.argsort(-sc[keep], kind="stable")]
        out = []
        for k in keep:
            name = labels.names[int(idx[k])]
            if normalise(name) in excluded:
                continue
            out.append((display_name(name, options.spaces), float(sc[k])))
        return out

    general = pick(labels.general_idx, g_scores, g_thresh)
    character = pick(labels.character_idx, c_scores, c_thresh)
    if options.max_tags is not None:
        ranked = sorted(general + character, key=lambda t: -t[1])[: max(0, options.max_tags)]
        kept = set(ranked)
        general = [t for t in general if t in kept]
        character = [t for t in character if t in kept]
    rating = None
    if options.ratings and labels.rating_idx.size:
        r = int(labels.rating_idx[int(np.argmax(scores[labels.rating_idx]))])
        name = labels.names[r]
        if normalise(name) not in excluded:
            rating = (display_name(name, options.spaces), float(scores[r]))
    return ImageTags(general, character, rating)


def merge_tags(existing: Iterable[str], new: Iterable[str], mode: str) -> list[str] | None:
    """Merge model tags with an image's current tags; None means "leave this image alone".

    overwrite: the model's tags. append: existing tags, then new ones not already present
    (underscore/space and case differences count as present). skip: only images without tags.
    """
    existing = list(existing)
    new = list(new)
    if mode == "overwrite":
        return new
    if mode == "skip":
        return None if existing else new
    if mode == "append":
        seen = {normalise(t) for t in existing}
        out = list(existing)
        for tag in new:
            if normalise(tag) not in seen:
                seen.add(normalise(tag))
                out.append(tag)
        return out
    raise ValueError(f"unknown merge mode {mode!r}")


MODES = ("overwrite", "append", "skip")
