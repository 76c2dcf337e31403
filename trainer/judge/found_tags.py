"""What the tagger sees in each grid image: thresholded, normalised tag sets (scores cached).

Scores go through the tagger's own cache (``tagging.tagger.cache.ScoreCache``, keyed by model and
image content), kept in the judge folder: judging the same grid again, or with other thresholds,
runs no model at all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagging.errors import UserError
from tagging.tagger import ScoreCache, Tagger, TagOptions, select_tags
from tagging.tagger.select import normalise

FLAT_STD = 2.0  # pixel standard deviation (0..255) below which an image is blank/broken


def tag_images(
    tagger: Tagger,
    items: Sequence[tuple[str, Path]],
    cache_root: Path | None,
    general: float = 0.35,
    character: float = 0.85,
    cancel: threading.Event | None = None,
) -> dict[str, frozenset[str]]:
    """``{key: tags found}`` for ``(key, image path)`` items (unreadable images raise UserError)."""
    cache = ScoreCache(cache_root) if cache_root is not None else None
    run = tagger.score_images(items, cache=cache, cancel=cancel)
    if run.cancelled:
        raise UserError("Judging was cancelled while tagging the grid images.",
                        hint="Run it again: the scores already computed are cached.")
    if run.failed:
        key, why = run.failed[0]
        raise UserError(f"The judge cannot read the grid image {key}: {why}.",
                        hint="Rebuild the grid (kazari judge --rebuild).")
    options = TagOptions(general=general, character=character)
    return {key: frozenset(normalise(t) for t in select_tags(scores, tagger.labels, options).tags)
            for key, scores in run.scores.items()}


def is_flat(path: Path) -> bool:
    """True for an image with (almost) no contrast: what NaN weights or a broken LoRA decode to."""
    from PIL import Image

    with Image.open(path) as im:
        small = np.asarray(im.convert("L").resize((32, 32)), dtype=np.float32)
    return float(small.std()) < FLAT_STD


def resolve_tagger_name(dataset_root: Path | None, configured: str) -> str:
    """The dataset's last-used known tagger (newest in its score cache), else ``configured``."""
    from tagging.tagger.models import KNOWN_MODELS

    by_folder = {repo.split("/")[-1]: name for name, repo in KNOWN_MODELS.items()}
    if dataset_root is not None:
        for model_id in ScoreCache(dataset_root).models():
            readable = model_id.rsplit("-", 1)[0]  # "<readable>-<fingerprint>"
            if readable in KNOWN_MODELS or readable in by_folder:
                return by_folder.get(readable, readable)
    return configured
