"""Character-feature suggestions: tags that describe the character, not the picture.

A character LoRA learns fixed features (hair colour and style, eye colour, ears, horns, tail,
wings, halo, signature hair accessories) best when they are *not* tagged, so they bind to the
trigger word. A tag present in at least ``threshold`` of a folder's images that the rules in
``tagging/data/feature_rules.csv`` classify as a feature is suggested for pruning. The rules are
data: edit the table, not this module.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tagging.errors import UserError
from tagging.stats import tag_frequency

DEFAULT_THRESHOLD = 0.35


@dataclass(frozen=True)
class FeatureRule:
    action: str  # "include" | "exclude"
    match: str  # "exact" | "suffix" | "prefix" | "glob"
    pattern: str
    category: str

    def matches(self, tag: str) -> bool:
        if self.match == "exact":
            return tag == self.pattern
        if self.match == "suffix":
            return tag.endswith(self.pattern)
        if self.match == "prefix":
            return tag.startswith(self.pattern)
        import fnmatch

        return fnmatch.fnmatchcase(tag, self.pattern)


@dataclass(frozen=True)
class FeatureSuggestion:
    tag: str
    count: int
    share: float
    category: str


@dataclass(frozen=True)
class FolderSuggestions:
    folder: str
    images: int
    features: list[FeatureSuggestion]

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "images": self.images,
            "features": [f.__dict__ for f in self.features],
        }


def parse_rules(text: str, source: str = "feature rules") -> list[FeatureRule]:
    """Parse the rules table (``action,match,pattern,category``; ``#`` lines are comments)."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rules = []
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        action, match = (row.get("action") or "").strip(), (row.get("match") or "").strip()
        pattern, category = (row.get("pattern") or "").strip().lower(), (row.get("category") or "").strip()
        if action not in ("include", "exclude") or match not in ("exact", "suffix", "prefix", "glob") or not pattern:
            raise UserError(
                f"Bad row in {source}: {row!r}. Each row needs action include|exclude, "
                "match exact|suffix|prefix|glob and a pattern."
            )
        rules.append(FeatureRule(action, match, pattern, category))
    return rules


@functools.lru_cache(maxsize=1)
def default_rules() -> tuple[FeatureRule, ...]:
    text = resources.files("tagging.data").joinpath("feature_rules.csv").read_text(encoding="utf-8")
    return tuple(parse_rules(text, "tagging/data/feature_rules.csv"))


def load_rules(path: Path | str) -> list[FeatureRule]:
    path = Path(path)
    try:
        return parse_rules(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"Cannot read feature rules {path}: {err}.") from None


def classify_tag(tag: str, rules: Sequence[FeatureRule] | None = None) -> str | None:
    """The feature category of ``tag`` (``hair``, ``eyes``, ``accessory``...) or None."""
    rules = default_rules() if rules is None else rules
    norm = "_".join(tag.strip().lower().split())  # space-style tags use the same rules
    for rule in rules:
        if rule.action == "exclude" and rule.matches(norm):
            return None
    for rule in rules:  # exact rules before patterns: "hair_between_eyes" is hair, not eyes
        if rule.action == "include" and rule.match == "exact" and rule.matches(norm):
            return rule.category
    for rule in rules:
        if rule.action == "include" and rule.match != "exact" and rule.matches(norm):
            return rule.category
    return None


def suggest_features(
    dataset: Any,
    threshold: float = DEFAULT_THRESHOLD,
    folder: str | None = None,
    rules: Sequence[FeatureRule] | None = None,
) -> list[FolderSuggestions]:
    """Per training folder, feature tags present in at least ``threshold`` of its images."""
    if not 0 < threshold <= 1:
        raise UserError(f"Feature threshold must be between 0 and 1 (e.g. 0.35), not {threshold}.")
    out = []
    for f in dataset.folders:
        if folder is not None and f.name != folder:
            continue
        feats = [
            FeatureSuggestion(row.tag, row.count, row.share, cat)
            for row in tag_frequency(f.images)
            if row.share >= threshold and (cat := classify_tag(row.tag, rules)) is not None
        ]
        out.append(FolderSuggestions(f.name, len(f.images), feats))
    return out
