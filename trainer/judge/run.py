"""Judging a run: build (or reuse) the evaluation grid, tag it, score every cell, recommend one.

    plan = plan_judge(cfg, tagger="wd-swinv2-v3")       # reads the dataset and its character profile
    result = judge(plan, GridSource.from_config(cfg), progress=cb, cancel=event)
    result.recommendation.label, result.recommendation.weight, result.json_path, result.plot_path

Files, all in ``RUN_DIR/judge/`` (next to ``RUN_DIR/grid/``): the evaluation grid (``index.json``,
``cells/``, ``grid_*.png``, built with ``trainer.grid`` and reused while it matches the plan),
``judge.json`` and ``judge.png``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagging.atomic import atomic_write_text
from tagging.errors import UserError
from trainer.judge.prompts import EvalPrompt, build_eval_prompts, default_prompt_lines
from trainer.judge.score import CellScore, ImageTagsFound, Recommendation, Weights, recommend, score_cells

FORMAT = 1
DEFAULT_SEEDS = (1234, 5678)


@dataclass
class JudgePlan:
    run_dir: Path
    out_dir: Path
    rows: list[tuple[str, Path]]
    prompts: list[EvalPrompt]
    weights: list[float]
    seeds: list[int]
    trigger: str
    features: list[str]
    feature_note: str  # where the features came from when not from the character profile
    leak_candidates: list[str]
    tagger: Any  # a loaded tagging.tagger.Tagger
    tagger_name: str
    general_threshold: float = 0.35
    score_weights: Weights = field(default_factory=Weights)
    identity_model: str | None = None  # CCIP variant or folder; None = identity off
    training_images: list[Path] = field(default_factory=list)


@dataclass
class JudgeResult:
    plan: JudgePlan
    cells: list[CellScore]
    recommendation: Recommendation | None
    grid_index: Path
    json_path: Path
    plot_path: Path | None
    validation: list[dict[str, Any]]
    grid_reused: bool
    images: dict[tuple[int, int], list[str]] = field(default_factory=dict)

    def cell(self, row: int, col: int) -> CellScore | None:
        return next((c for c in self.cells if c.row == row and c.col == col), None)


# ------------------------------------------------------------------------------- planning


def _dataset_facts(cfg: Any) -> tuple[Any, list[list[str]], list[Path]]:
    """(dataset or None, caption tag lists, image paths); a missing dataset is not fatal here."""
    from tagging.dataset import Dataset

    root = cfg.dataset.train_data_dir
    if root is None or not Path(root).is_dir():
        return None, [], []
    try:
        ds = Dataset.open(root, caption_ext=cfg.dataset.caption_extension)
    except UserError:
        return None, [], []
    return ds, [list(im.tags) for im in ds.images], [im.path for im in ds.images]


def character_features(ds: Any, trigger: str = "") -> tuple[str, list[str], str]:
    """(trigger, features, note) from the dataset's character profile, else from feature suggestions."""
    from tagging.character import load_character

    if ds is None:
        return trigger, [], "no dataset to read the character from"
    profile = load_character(ds.root)
    trigger = trigger or profile.trigger or next((f.trigger for f in ds.folders if f.trigger), "")
    if profile.features:
        return trigger, list(profile.features), ""
    from tagging.features import suggest_features

    found: dict[str, None] = {}
    for folder in suggest_features(ds):
        for s in folder.features:
            found.setdefault(s.tag, None)
    note = ("suggested from the captions, because the character profile lists no features "
            "(record them with `kazari dataset character ROOT --add-feature TAG`)")
    return trigger, list(found), note if found else "the character profile lists no features"


def frequent_tags(captions: Sequence[Sequence[str]], share: float, exclude: Sequence[str]) -> list[str]:
    from tagging.tagger.select import normalise

    if not captions:
        return []
    counts: dict[str, int] = {}
    for tags in captions:
        for t in {normalise(t) for t in tags}:
            counts[t] = counts.get(t, 0) + 1
    drop = {normalise(t) for t in exclude}
    return sorted(t for t, n in counts.items() if n / len(captions) >= share and t not in drop)


def plan_judge(
    cfg: Any,
    *,
    tagger: str | Path | None = None,
    prompts: Sequence[str] | str | Path | None = None,
    seeds: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    trigger: str | None = None,
    rows: list[tuple[str, Path]] | None = None,
) -> JudgePlan:
    """Everything the judge needs, from a resolved config (raises UserError on a mistake)."""
    from tagging.tagger import Tagger
    from trainer.grid import DEFAULT_WEIGHTS, find_run_loras
    from trainer.judge.found_tags import resolve_tagger_name
    from trainer.prompts import PromptSpec, load_prompts

    j = cfg.judge
    run_dir = Path(cfg.output.output_dir)
    rows = rows or find_run_loras(run_dir, cfg.output.output_name)
    ds, captions, images = _dataset_facts(cfg)
    trig, features, note = character_features(ds, trigger or "")
    tagger_name = str(tagger) if tagger else resolve_tagger_name(ds.root if ds else None, j.tagger)
    beside = cfg.source_path.parent / tagger_name if cfg.source_path is not None else None
    if not tagger and beside is not None and beside.is_dir():  # a [judge] tagger folder relative to the config
        tagger_name = str(beside)
    loaded = Tagger.load(tagger_name)
    defaults = None
    if cfg.sample.sample_prompts:
        try:  # size, steps, CFG and negative prompt follow the user's first preview prompt
            first = load_prompts(cfg.sample.sample_prompts)[0]
            defaults = PromptSpec(prompt="", negative_prompt=first.negative_prompt, width=first.width,
                                  height=first.height, steps=first.steps, cfg_scale=first.cfg_scale)
        except (UserError, IndexError):
            defaults = None
    lines = prompts if prompts else (j.prompts or default_prompt_lines({t for c in captions for t in c}))
    eval_prompts = build_eval_prompts(lines, trig, features, loaded.labels.names, defaults)
    exclude = [trig, *features, *(t for p in eval_prompts for t in p.asked)]
    base_seed = next((p.spec.seed for p in eval_prompts if p.spec.seed is not None), DEFAULT_SEEDS[0])
    seed_list = list(seeds) if seeds else [base_seed + i * 4321 for i in range(j.seed_count)]
    return JudgePlan(
        run_dir=run_dir, out_dir=run_dir / "judge", rows=rows, prompts=eval_prompts,
        weights=[float(w) for w in (weights or DEFAULT_WEIGHTS)], seeds=seed_list, trigger=trig,
        features=features, feature_note=note, leak_candidates=frequent_tags(captions, j.leak_share, exclude),
        tagger=loaded, tagger_name=tagger_name, general_threshold=j.general_threshold,
        score_weights=Weights(beta=j.beta, leak_penalty=j.leak_penalty),
        identity_model=j.ccip_model if j.identity else None, training_images=images,
    )


def read_validation(rows: Sequence[tuple[str, Path]]) -> list[dict[str, Any]]:
    """The fixed-noise validation loss each LoRA recorded when it was saved (trainer.validation)."""
    from trainer.validation import read_validation_loss

    out = []
    for label, path in rows:
        loss = read_validation_loss(path)
        if loss is not None:
            out.append({"label": label, "file": Path(path).name, "loss": loss})
    return out


# ------------------------------------------------------------------------------- judging


def _index_matches(index_path: Path, plan: JudgePlan) -> bool:
    """True when the grid in the judge folder was rendered for exactly this plan and is newer than its LoRAs."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        mtime = index_path.stat().st_mtime
        return (index.get("complete") is True
                and index.get("prompts") == [p.spec.to_line() for p in plan.prompts]
                and [float(w) for w in index.get("weights", [])] == plan.weights
                and index.get("seeds") == plan.seeds
                and [Path(r["lora"]) for r in index.get("rows", [])] == [p for _, p in plan.rows]
                and all(p.stat().st_mtime <= mtime for _, p in plan.rows))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def judge(
    plan: JudgePlan,
    source: Any,
    *,
    rebuild: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    cancel: threading.Event | None = None,
    bundle: Any = None,
) -> JudgeResult:
    """Render (or reuse) the evaluation grid, tag it, score it, write judge.json and the plot."""
    from trainer.grid import render_run_grid
    from trainer.judge.found_tags import is_flat, tag_images
    from trainer.judge.report import write_plot

    say = progress or (lambda stage, done, total: None)
    out = plan.out_dir
    index_path = out / "index.json"
    reused = not rebuild and _index_matches(index_path, plan)
    if not reused:
        result = render_run_grid(
            source, plan.rows, [p.spec for p in plan.prompts], weights=plan.weights, seeds=plan.seeds,
            out_dir=out, progress=lambda d, t, c: say("render", d, t), cancel=cancel, bundle=bundle,
            keep_previous=(out / "judge.json").is_file())  # a finished judgement is kept as judge-N
        if result.cancelled:
            raise UserError("Judging was cancelled while the grid rendered; the finished cells were kept.",
                            hint="Run it again to finish (the judge re-renders until its grid is complete).")
        assert result.index_path is not None  # rendered into out_dir, so the grid wrote its index
        index_path = result.index_path
    index = json.loads(index_path.read_text(encoding="utf-8"))
    cells = [c for c in index["cells"] if c.get("path")]
    items = [(c["path"], out / c["path"]) for c in cells]
    say("tag", 0, len(items))
    found = tag_images(plan.tagger, items, out, general=plan.general_threshold, cancel=cancel)
    say("tag", len(items), len(items))
    identity = _identity_scores(plan, [out / c["path"] for c in cells]) if plan.identity_model else None
    seen = [
        ImageTagsFound(c["row"], c["col"], c["prompt"], c["seed"], found.get(c["path"], frozenset()),
                       corrupt=is_flat(out / c["path"]), identity=identity[i] if identity else None)
        for i, c in enumerate(cells)
    ]
    rows = [r["label"] for r in index["rows"]]
    scored = score_cells(seen, rows, plan.weights, [p.scored_asked for p in plan.prompts], plan.features,
                         plan.leak_candidates, plan.score_weights)
    pick = recommend(scored, plan.features, plan.feature_note)
    validation = read_validation(plan.rows)
    json_path = out / "judge.json"
    judged = JudgeResult(plan, scored, pick, index_path, json_path, None, validation, reused)
    for c in cells:  # each cell's images (relative to the judge folder), for viewers
        judged.images.setdefault((c["row"], c["col"]), []).append(c["path"])
    judged.plot_path = write_plot(judged, out / "judge.png")
    atomic_write_text(json_path, json.dumps(judge_json(judged), indent=1) + "\n")
    return judged


def _identity_scores(plan: JudgePlan, paths: list[Path]) -> list[float]:
    from PIL import Image

    from trainer.judge.identity import CCIP, resolve_ccip

    assert plan.identity_model is not None  # called only when identity scoring is on
    model = CCIP(resolve_ccip(plan.identity_model))
    refs = [Image.open(p).convert("RGB") for p in plan.training_images[:32]]
    gens = [Image.open(p).convert("RGB") for p in paths]
    return model.identity_scores(gens, refs)


def judge_json(result: JudgeResult) -> dict[str, Any]:
    plan, pick = result.plan, result.recommendation
    lora = {i: str(p) for i, (_, p) in enumerate(plan.rows)}
    return {
        "format": FORMAT,
        "run_dir": str(plan.run_dir),
        "grid_index": result.grid_index.name,
        "plot": result.plot_path.name if result.plot_path else None,
        "tagger": plan.tagger_name,
        "trigger": plan.trigger,
        "features": plan.features,
        "feature_note": plan.feature_note,
        "leak_candidates": plan.leak_candidates,
        "prompts": [{"line": p.spec.to_line(), "asked": list(p.asked), "unmeasured": list(p.unmeasured)}
                    for p in plan.prompts],
        "weights": plan.weights,
        "seeds": plan.seeds,
        "rows": [{"label": lab, "lora": str(p)} for lab, p in plan.rows],
        "formula": {"beta": plan.score_weights.beta, "leak_penalty": plan.score_weights.leak_penalty},
        "cells": [{**c.to_json(), "lora": lora.get(c.row), "images": result.images.get((c.row, c.col), [])}
                  for c in result.cells],
        "validation": result.validation,
        "recommendation": None if pick is None else {
            "row": pick.row, "col": pick.col, "label": pick.label, "weight": pick.weight,
            "lora": lora.get(pick.row), "score": round(pick.score, 4), "reason": pick.reason,
        },
    }


def load_judge(out_dir: Path) -> dict[str, Any] | None:
    """A previous judge.json in ``out_dir`` (None when missing or unreadable)."""
    try:
        data = json.loads((Path(out_dir) / "judge.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None
