"""Tagging a dataset: score (cached), select, merge, and write through the dataset engine.

All writes are ONE ``SetTags`` edit, so an auto-tagging run is undone with a single undo, like
any other edit. Re-thresholding reads the score cache only and never runs the model.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tagging.tagger.cache import ScoreCache, content_hash
from tagging.tagger.labels import Labels
from tagging.tagger.pipeline import ProgressFn, Tagger
from tagging.tagger.select import MODES, ImageTags, TagOptions, merge_tags, select_tags

if TYPE_CHECKING:
    from tagging.character import CharacterProfile
    from tagging.dataset import Dataset


@dataclass
class TagReport:
    """What a tagging run did (or, with ``dry_run``, would do)."""

    model_id: str
    mode: str
    dry_run: bool
    results: dict[str, ImageTags] = field(default_factory=dict)  # model's tags per scored image
    final: dict[str, list[str]] = field(default_factory=dict)  # new tag list per image that changes
    skipped: list[str] = field(default_factory=list)  # mode=skip: already captioned
    failed: list[tuple[str, str]] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)  # not reached before cancel
    cached: int = 0
    cancelled: bool = False
    change: Any = None  # the dataset Change (None on dry run or when nothing changed)
    character: CharacterProfile | None = None  # the profile honoured (None: --ignore-character)

    @property
    def characters(self) -> Counter:
        """Character tag -> number of images it was recognised in."""
        return Counter(name for r in self.results.values() for name, _ in r.character)

    def trigger_suggestions(self, limit: int = 3) -> list[tuple[str, int]]:
        """Most frequent character tags: good candidates for the LoRA's trigger word."""
        return self.characters.most_common(limit)

    def character_offers(self) -> list[tuple[str, int]]:
        """Recognised character tags kept out of the captions and not yet in the profile."""
        return character_offers(self.results, self.character)


def _items(ds: Dataset, keys: Iterable[str] | None):
    return list(ds.images) if keys is None else [ds.image(k) for k in keys]


def merged_tags(ds: Dataset, results: Mapping[str, ImageTags], mode: str,
                character: CharacterProfile | None = None) -> dict[str, list[str]]:
    """New tag lists (merge ``mode``) for the images whose tags would actually change.

    With a ``character`` profile (the default of ``kazari tag`` and the Tagger screen) the model
    never re-adds a fixed feature or a never-add tag, never writes a character tag it recognised
    (those are offered as trigger/never-add suggestions instead), and the trigger stays first.
    This is the one place both the CLI and the TUI merge model tags into captions.
    """
    from tagging.character import honour_profile, tag_key

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    final: dict[str, list[str]] = {}
    for key, result in results.items():
        item = ds.image(key)
        current = list(item.tags)
        model_tags = result.tags
        if character is not None:
            recognised = {tag_key(name) for name, _ in result.character}
            model_tags = [t for t in model_tags if tag_key(t) not in recognised]
        new = merge_tags(current, model_tags, mode)
        if new is not None and character is not None:
            new = honour_profile(current, new, character, getattr(item.folder, "trigger", None))
        if new is not None and new != current:
            final[key] = new
    return final


def character_offers(results: Mapping[str, ImageTags],
                     character: CharacterProfile | None) -> list[tuple[str, int]]:
    """(character tag, images) the model recognised that the profile does not know yet, most
    frequent first; with no profile honoured nothing is offered (the tags were written)."""
    from tagging.character import tag_key

    if character is None:
        return []
    known = {tag_key(t) for t in (character.trigger, *character.features, *character.never_add) if t}
    counts = Counter(name for r in results.values() for name, _ in r.character if tag_key(name) not in known)
    return counts.most_common()


def apply_tags(ds: Dataset, final: Mapping[str, list[str]], label: str, save: bool = True):
    """Write new tag lists as one undoable edit (and save the captions unless ``save=False``)."""
    from tagging.edits import SetTags

    if not final:
        return None
    change = ds.apply(SetTags(dict(final), label=label))
    if save:
        ds.save()
    return change


def tag_dataset(
    ds: Dataset,
    tagger: Tagger,
    options: TagOptions = TagOptions(),
    mode: str = "overwrite",
    *,
    keys: Iterable[str] | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    dry_run: bool = False,
    save: bool = True,
    use_cache: bool = True,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    honour_character: bool = True,
) -> TagReport:
    """Auto-tag ``ds`` (or the given keys). Cancelling keeps the images already scored.

    ``honour_character`` (default) applies the dataset's character profile
    (``tagging.character``, see ``merged_tags``); False writes the model's tags as they are.
    """
    from tagging.character import load_character

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    report = TagReport(tagger.model_id, mode, dry_run)
    report.character = load_character(ds.root) if honour_character else None
    todo = []
    for item in _items(ds, keys):
        if item.caption_error is not None:
            # The engine will not edit an unreadable caption; do not spend model time on it.
            report.failed.append((item.key, f"caption not editable: {item.caption_error}"))
        elif mode == "skip" and item.tags:
            report.skipped.append(item.key)  # skipped before inference: no model time spent
        else:
            todo.append((item.key, Path(item.path)))
    cache = ScoreCache(ds.root) if use_cache else None
    run = tagger.score_images(todo, cache=cache, batch_size=batch_size, workers=workers,
                              on_progress=on_progress, cancel=cancel)
    report.cached, report.cancelled = run.cached, run.cancelled
    report.failed.extend(run.failed)
    failed = {k for k, _ in run.failed}
    report.untouched = [k for k, _ in todo if k not in run.scores and k not in failed]
    report.results = {k: select_tags(run.scores[k], tagger.labels, options) for k, _ in todo if k in run.scores}
    report.final = merged_tags(ds, report.results, mode, report.character)
    if not dry_run:
        report.change = apply_tags(ds, report.final, f"auto-tag with {tagger.files.name} ({mode})", save=save)
    return report


@dataclass
class Rethreshold:
    """Tags from cached scores: ``results`` per image, ``missing`` = images never scored."""

    model_id: str
    labels: Labels
    results: dict[str, ImageTags]
    missing: list[str]


def cached_scores(root: Path | str, model_id: str, items: Iterable[tuple[str, Path]],
                  n_tags: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Look up cached scores; a changed image (new content) counts as missing."""
    cache = ScoreCache(root)
    scores: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for key, path in items:
        path = Path(path)
        digest = cache.known_hash(key, path)
        if digest is None:
            try:
                digest = content_hash(path.read_bytes())
            except OSError:
                missing.append(key)
                continue
            cache.remember_hash(key, path, digest)
        hit = cache.get(model_id, digest, n_tags)
        if hit is None:
            missing.append(key)
        else:
            scores[key] = hit
    cache.flush()
    return scores, missing


def rethreshold(ds: Dataset, options: TagOptions, model_id: str | None = None,
                keys: Iterable[str] | None = None) -> Rethreshold:
    """Re-select tags for the whole dataset from cached scores; writes nothing.

    ``model_id`` defaults to the most recently used model of this dataset's cache. Raises a
    UserError when the dataset has never been tagged.
    """
    from tagging.errors import UserError

    cache = ScoreCache(ds.root)
    if model_id is None:
        models = cache.models()
        if not models:
            raise UserError(f"The dataset {ds.root} has no cached tagger scores yet.",
                            hint="Run `kazari tag` once; later threshold changes are then instant.")
        model_id = models[0]
    labels = cache.load_labels(model_id)
    if labels is None:
        raise UserError(f"No cached scores for model {model_id!r} in {cache.dir}.",
                        hint="Run `kazari tag` with that model first.")
    items = [(it.key, Path(it.path)) for it in _items(ds, keys)]
    scores, missing = cached_scores(ds.root, model_id, items, len(labels))
    results = {k: select_tags(v, labels, options) for k, v in scores.items()}
    return Rethreshold(model_id, labels, results, missing)
