"""Per-cell metrics, the combined score and the recommendation with its reason (pure Python).

Inputs are the tags the tagger found in every grid image (already thresholded and normalised),
so this module needs neither torch nor a model and the tests can build any case by hand.
See docs/judge.md for every metric and the formula.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tagging.tagger.select import normalise

# Tags almost every anime picture gets: never counted as leakage when no weight-0 image says so.
GENERIC_TAGS = frozenset({"1girl", "1boy", "solo", "looking_at_viewer", "simple_background", "upper_body"})
MIN_GAP = 0.05  # a metric this much worse than the pick's is named as the alternative's failure


@dataclass(frozen=True)
class Weights:
    """How the metrics combine (the ``[judge]`` keys of the same names)."""

    beta: float = 2.0  # fidelity counts beta times as much as adherence (F-beta)
    leak_penalty: float = 0.5  # score x (1 - leak_penalty * leakage)


@dataclass
class ImageTagsFound:
    """One grid image: where it sits and which tags the tagger found in it."""

    row: int
    col: int
    prompt: int
    seed: int
    tags: frozenset[str]
    corrupt: bool = False  # a flat (blank/black) image: a broken LoRA or NaN weights
    identity: float | None = None  # CCIP "same character" rate against the training images


@dataclass
class CellScore:
    row: int
    col: int
    label: str
    weight: float
    recall: float | None = None  # features found from the trigger alone
    adherence: float | None = None  # prompted tags found
    leakage: float = 0.0  # frequent training tags found although not prompted
    identity: float | None = None
    corruption: float = 0.0
    score: float = 0.0
    missing_features: list[str] = field(default_factory=list)  # never found in this cell
    ignored_tags: list[str] = field(default_factory=list)  # prompted, never found
    leaked_tags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class Recommendation:
    row: int
    col: int
    label: str
    weight: float
    score: float
    reason: str


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def fidelity(cell: CellScore) -> float | None:
    return _mean(v for v in (cell.recall, cell.identity) if v is not None)


def combined_score(cell: CellScore, weights: Weights = Weights()) -> float:
    """F-beta of fidelity (feature recall, identity) and adherence, times the penalties."""
    f, c = fidelity(cell), cell.adherence
    if f is not None and c is not None:
        b2 = weights.beta**2
        base = (1 + b2) * f * c / (b2 * c + f) if (b2 * c + f) > 0 else 0.0
    else:
        base = f if f is not None else (c if c is not None else 0.0)
    penalty = max(0.0, 1.0 - weights.leak_penalty * cell.leakage) * (1.0 - cell.corruption)
    return base * penalty


def score_cells(
    images: Sequence[ImageTagsFound],
    rows: Sequence[str],
    weights_axis: Sequence[float],
    asked: Sequence[Sequence[str] | None],
    features: Sequence[str],
    leak_candidates: Iterable[str],
    weights: Weights = Weights(),
) -> list[CellScore]:
    """Score every (row, col) cell from its images.

    ``asked[p]`` are the tags prompt ``p`` asks for beyond the trigger (empty: a trigger-only
    prompt, used for feature recall; None: a prompt nothing can be measured on, skipped). ``leak_candidates`` are the training captions' frequent
    tags; a candidate the base model (weight 0) draws for the same prompt and seed is not a leak.
    """
    feats = [normalise(t) for t in features]
    asked_n = [None if a is None else [normalise(t) for t in a] for a in asked]
    candidates = {normalise(t) for t in leak_candidates} - set(feats)
    zero_cols = [c for c, w in enumerate(weights_axis) if w == 0]
    base_tags: dict[tuple[int, int], frozenset[str]] = {}
    for im in images:
        if im.col in zero_cols:
            base_tags.setdefault((im.prompt, im.seed), im.tags)
    by_cell: dict[tuple[int, int], list[ImageTagsFound]] = {}
    for im in images:
        by_cell.setdefault((im.row, im.col), []).append(im)
    out = []
    for (r, c), ims in sorted(by_cell.items()):
        cell = CellScore(r, c, rows[r], float(weights_axis[c]))
        trigger_only = [im for im in ims if asked_n[im.prompt] == []]
        if feats and trigger_only:
            cell.recall = _mean(len(set(feats) & im.tags) / len(feats) for im in trigger_only)
            cell.missing_features = [f for f in feats if not any(f in im.tags for im in trigger_only)]
        # (image, the tags its prompt asks for): prompts with something to measure on
        prompted = [(im, want) for im in ims if (want := asked_n[im.prompt])]
        if prompted:
            cell.adherence = _mean(len(set(want) & im.tags) / len(want) for im, want in prompted)
            cell.ignored_tags = sorted({t for im, want in prompted for t in want if t not in im.tags})
            shares: list[float] = []
            leaked: set[str] = set()
            for im, want in prompted:
                base = base_tags.get((im.prompt, im.seed))
                mine = candidates - set(want) - (base if base is not None else GENERIC_TAGS)
                if mine:
                    found = mine & im.tags
                    leaked |= found
                    shares.append(len(found) / len(mine))
            cell.leakage = _mean(shares) or 0.0
            cell.leaked_tags = sorted(leaked)
        cell.identity = _mean(im.identity for im in ims if im.identity is not None)
        cell.corruption = _mean(1.0 if im.corrupt else 0.0 for im in ims) or 0.0
        cell.score = combined_score(cell, weights)
        out.append(cell)
    return out


# ------------------------------------------------------------------------------- recommendation


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _quote(tags: Sequence[str]) -> str:
    return ", ".join(f"'{t}'" for t in tags)


def _row_failures(row_cells: list[CellScore], pick: CellScore, n_features: int) -> list[str]:
    """Plain-words failures of one alternative row against the pick, worst metrics named."""
    best = max(row_cells, key=lambda c: c.score)
    out = []
    p_rec, b_rec = pick.recall, max((c.recall for c in row_cells if c.recall is not None), default=None)
    if p_rec is not None and b_rec is not None and p_rec - b_rec > MIN_GAP:
        out.append(f"underfit: the trigger alone draws too few of the {n_features} feature"
                   f"{'s' if n_features != 1 else ''} (feature recall {b_rec:.2f} at best)")
    if pick.adherence is not None and best.adherence is not None and pick.adherence - best.adherence > MIN_GAP:
        ignored = sorted(set().union(*(c.ignored_tags for c in row_cells if c.weight >= best.weight)))
        low = min((c.weight for c in row_cells if c.adherence is not None
                   and pick.adherence - c.adherence > MIN_GAP), default=best.weight)
        what = f"ignores {_quote(ignored[:3])}" if ignored else "follows prompts less"
        out.append(f"overfit: it {what} at weight ≥ {low:g} (prompt adherence {best.adherence:.2f})")
    if best.leakage - pick.leakage > MIN_GAP:
        lead = "it also" if any(o.startswith("overfit") for o in out) else "overfit: it"
        what = _quote(best.leaked_tags[:3]) if best.leaked_tags else "frequent training tags"
        out.append(f"{lead} draws {what} unprompted (leakage {best.leakage:.2f})")
    if pick.identity is not None and best.identity is not None and pick.identity - best.identity > MIN_GAP:
        out.append(f"identity {best.identity:.2f} (CCIP)")
    if best.corruption - pick.corruption > MIN_GAP:
        out.append(f"broken images ({best.corruption:.0%} blank)")
    if not out and pick.score - best.score > 1e-9:
        out.append(f"lower score {best.score:.2f} at best")
    return out


def recommend(cells: Sequence[CellScore], features: Sequence[str], feature_note: str = "") -> Recommendation | None:
    """The best cell with weight > 0 (weight 0 is the base model, not a LoRA to keep).

    Ties go to the epoch whose scores are steadiest across weights (the seed's "stable
    everywhere"), then to the later epoch.
    """
    lora_cells = [c for c in cells if c.weight != 0]
    if not lora_cells:
        return None
    rows: dict[int, list[CellScore]] = {}
    for c in lora_cells:
        rows.setdefault(c.row, []).append(c)
    stability = {r: sum(c.score for c in cs) / len(cs) for r, cs in rows.items()}
    pick = max(lora_cells, key=lambda c: (round(c.score, 6), round(stability[c.row], 6), c.row, -abs(c.weight - 1)))
    n = len(features)
    parts = []
    if pick.recall is not None:
        plural = "s" if n != 1 else ""
        if pick.recall >= 1.0:
            parts.append(f"all {n} feature{plural} from the trigger alone ({_quote(list(features)[:4])})")
        else:
            parts.append(f"feature recall {pick.recall:.2f} ({n} feature{plural}) from the trigger alone"
                         + (f" (never: {_quote(pick.missing_features[:4])})" if pick.missing_features else ""))
        base = [c for c in cells if c.weight == 0 and c.row == pick.row and c.recall is not None]
        if base:
            parts[-1] += f", base model {base[0].recall:.2f}"
    else:
        parts.append("no character features to check" + (f" ({feature_note})" if feature_note else ""))
    if pick.adherence is not None:
        parts.append(f"prompt adherence {pick.adherence:.2f}")
    parts.append(f"leakage {pick.leakage:.2f}" if pick.leakage else "no leakage")
    if pick.identity is not None:
        parts.append(f"identity {pick.identity:.2f}")
    reason = f"Keep {pick.label} at weight {pick.weight:g} (score {pick.score:.2f}): " + "; ".join(parts) + "."
    if feature_note and pick.recall is not None:
        reason += f" Features: {feature_note}."
    others = []
    for r, cs in sorted(rows.items()):
        if r == pick.row:
            continue
        fails = _row_failures(cs, pick, n)
        if fails:
            others.append(f"{cs[0].label} is " + "; ".join(fails) if fails[0].startswith(("underfit", "overfit"))
                          else f"{cs[0].label}: " + "; ".join(fails))
    if others:
        reason += " " + ". ".join(o[0].upper() + o[1:] for o in others) + "."
    same_row = [c for c in rows[pick.row] if c is not pick and pick.score - c.score > MIN_GAP]
    if same_row:
        worst = min(same_row, key=lambda c: c.score)
        why = []
        if pick.recall is not None and worst.recall is not None and pick.recall - worst.recall > MIN_GAP:
            why.append(f"feature recall {_fmt(worst.recall)}")
        if pick.adherence is not None and worst.adherence is not None and pick.adherence - worst.adherence > MIN_GAP:
            why.append(f"adherence {_fmt(worst.adherence)}")
        if worst.leakage - pick.leakage > MIN_GAP:
            why.append(f"leakage {worst.leakage:.2f}")
        if why:
            reason += f" At weight {worst.weight:g} the same file scores {worst.score:.2f} ({', '.join(why)})."
    return Recommendation(pick.row, pick.col, pick.label, pick.weight, pick.score, reason)
