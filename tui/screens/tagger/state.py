"""Scores of one tagging pass kept in memory, so a threshold change re-selects tags without
running the model again (composition of the tagger's own functions; no Textual here)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagging.errors import UserError


def parse_threshold(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"The {name} threshold {text!r} is not a number; type a value between 0 and 1, e.g. 0.35.") from None
    if not 0.0 <= value <= 1.0:
        raise UserError(f"The {name} threshold {value} is outside 0..1; type a value between 0 and 1, e.g. 0.35.")
    return value


@dataclass
class TaggerState:
    model_name: str
    model_id: str
    labels: Any
    scores: dict[str, Any]
    failed: list[tuple[str, str]] = field(default_factory=list)
    cached: int = 0
    cancelled: bool = False
    results: dict[str, Any] = field(default_factory=dict)  # key -> ImageTags at current thresholds
    final: dict[str, list[str]] = field(default_factory=dict)  # key -> caption after merge (changed only)
    offers: list[tuple[str, int]] = field(default_factory=list)  # recognised character tags not written

    @classmethod
    def score(
        cls,
        ds: Any,
        model: str,
        items: list[tuple[str, Path]],
        options: Any,
        mode: str,
        on_progress: Callable[[Any], None],
        cancel: threading.Event,
        character: Any = None,
    ) -> TaggerState:
        """Load the model and score ``items`` (blocking; cached scores are reused)."""
        from tagging.tagger import ScoreCache, Tagger

        tagger = Tagger.load(model)
        run = tagger.score_images(items, cache=ScoreCache(ds.root), on_progress=on_progress, cancel=cancel)
        state = cls(
            model_name=tagger.files.name,
            model_id=tagger.model_id,
            labels=tagger.labels,
            scores=dict(run.scores),
            failed=list(run.failed),
            cached=run.cached,
            cancelled=run.cancelled,
        )
        state.reselect(ds, options, mode, character)
        return state

    def reselect(self, ds: Any, options: Any, mode: str, character: Any = None) -> None:
        """Re-select and re-merge; ``character`` = the profile honoured (None: the model's tags as they are)."""
        from tagging.tagger import character_offers, merged_tags, select_tags

        # Only images still in the dataset: since scoring, some may be trashed or their folder renamed.
        present = {img.key for img in ds.images}
        self.results = {k: select_tags(v, self.labels, options) for k, v in self.scores.items() if k in present}
        self.final = merged_tags(ds, self.results, mode, character)
        self.offers = character_offers(self.results, character)

    def apply(self, ds: Any) -> Any:
        from tagging.tagger import apply_tags

        return apply_tags(ds, self.final, f"auto-tag with {self.model_name}", save=False)
