"""Running a grid from the workspace config, and choosing an epoch (no Textual here)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagging.atomic import atomic_write_text
from tagging.errors import UserError


def parse_weights(text: str) -> list[float]:
    try:
        weights = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"Grid weights {text!r} must be numbers separated by commas, e.g. 0,0.4,0.6,0.8,1.") from None
    if not weights:
        raise UserError("The grid needs at least one weight, e.g. 0,0.5,1.")
    return weights


@dataclass
class GridJob:
    """One grid build: settings from the config, live progress written by the worker thread."""

    cfg: Any  # resolved TrainConfig
    weights: list[float]
    steps: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    total: int = 0
    cells: dict[tuple[int, int], Any] = field(default_factory=dict)  # (row, col) -> GridCell, first prompt/seed
    rows: list[tuple[str, Path]] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output.output_dir)

    @property
    def out_dir(self) -> Path:
        return self.run_dir / "grid"

    def prepare(self) -> None:
        """Find the run's LoRAs and check the prompts (fast; raises UserError)."""
        from trainer.grid import find_run_loras

        if not self.cfg.sample.sample_prompts:
            raise UserError("The grid needs a prompt: set [sample] sample_prompts in the config (Config screen, 4).")
        self.rows = find_run_loras(self.run_dir, self.cfg.output.output_name)

    def run(self) -> Any:
        """Load the base model once and render every cell (blocking; call from a thread worker)."""
        from trainer.grid import GridSource, render_run_grid

        cfg = self.cfg

        def progress(done: int, total: int, cell: Any) -> None:
            self.done, self.total = done, total
            if cell.prompt_index == 0:  # the screen shows the first prompt's first seed
                self.cells.setdefault((cell.row, cell.col), cell)

        return render_run_grid(
            GridSource.from_config(cfg), self.rows, cfg.sample.sample_prompts, weights=self.weights,
            out_dir=self.out_dir, steps=self.steps, progress=progress, cancel=self.cancel.is_set,
        )


def choose_epoch(lora: Path, label: str, run_dir: Path, output_name: str, *, overwrite: bool = False) -> Path:
    """Copy the chosen epoch's LoRA to ``RUN_DIR/final/NAME.ext`` and record where it came from.

    The trainer's own final file is never touched. An existing different choice is only replaced
    with ``overwrite=True`` (the UI asks first).
    """
    data = lora.read_bytes()
    target = run_dir / "final" / f"{output_name}{lora.suffix}"
    if target.exists() and not overwrite and target.read_bytes() != data:
        raise FileExistsError(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    from tagging.atomic import atomic_write_bytes

    atomic_write_bytes(target, data)
    record = {"chosen": label, "source": os.path.relpath(lora, target.parent),
              "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_text(target.parent / "chosen.json", json.dumps(record, indent=1) + "\n")
    return target


@dataclass
class JudgeJob:
    """One judgement of the workspace's run (``trainer.judge``), with live progress for the screen."""

    cfg: Any
    weights: list[float]
    cancel: threading.Event = field(default_factory=threading.Event)
    stage: str = ""
    done: int = 0
    total: int = 0

    def run(self) -> dict[str, Any]:
        """Plan, render/reuse the evaluation grid, tag and score (blocking; call from a thread worker)."""
        from trainer.grid import GridSource
        from trainer.judge import judge, plan_judge
        from trainer.judge.run import judge_json

        def progress(stage: str, done: int, total: int) -> None:
            self.stage, self.done, self.total = stage, done, total

        plan = plan_judge(self.cfg, weights=self.weights)
        return judge_json(judge(plan, GridSource.from_config(self.cfg), progress=progress, cancel=self.cancel))


def load_last_judgement(run_dir: Path, rows: list[tuple[str, Path]]) -> dict[str, Any] | None:
    """The run's judge.json, unless a LoRA file was written after it (a newer run: stale scores)."""
    from trainer.judge import load_judge

    path = Path(run_dir) / "judge" / "judge.json"
    judgement = load_judge(path.parent)
    try:
        if judgement is None or any(p.stat().st_mtime > path.stat().st_mtime for _, p in rows):
            return None
    except OSError:
        return None
    return judgement


def judged_cells(judgement: dict[str, Any], rows: list[tuple[str, Path]], weights: list[float]
                 ) -> dict[tuple[int, int], dict[str, Any]]:
    """The judge's cells placed on the screen's table: (row, col) by LoRA file and weight."""
    row_of = {Path(p).name: r for r, (_, p) in enumerate(rows)}
    col_of = {float(w): c for c, w in enumerate(weights)}
    out = {}
    for cell in judgement.get("cells", []):
        r = row_of.get(Path(cell.get("lora") or "").name)
        c = col_of.get(float(cell.get("weight", -1)))
        if r is not None and c is not None:
            out[(r, c)] = cell
    return out


def recommended_cell(judgement: dict[str, Any], rows: list[tuple[str, Path]], weights: list[float]
                     ) -> tuple[int, int] | None:
    pick = judgement.get("recommendation")
    if not pick:
        return None
    for (r, c), cell in judged_cells(judgement, rows, weights).items():
        if cell.get("row") == pick.get("row") and cell.get("col") == pick.get("col"):
            return r, c
    return None


def heat_colour(score: float) -> str:
    """Background colour of a heatmap cell: red (0) → yellow → green (1)."""
    s = max(0.0, min(1.0, float(score)))
    r, g = (200, int(60 + 280 * s)) if s < 0.5 else (int(200 - 300 * (s - 0.5)), 200)
    return f"rgb({max(0, min(255, r))},{max(0, min(255, g))},40)"


def breakdown(cell: dict[str, Any]) -> str:
    """One line per cell: its score and each metric, for the selection pane."""
    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    parts = [f"score {f(cell.get('score'))}", f"features {f(cell.get('recall'))}",
             f"adherence {f(cell.get('adherence'))}", f"leakage {f(cell.get('leakage'))}"]
    if cell.get("identity") is not None:
        parts.append(f"identity {f(cell['identity'])}")
    if cell.get("corruption"):
        parts.append(f"blank {cell['corruption']:.0%}")
    extra = []
    if cell.get("missing_features"):
        extra.append("missing " + ", ".join(cell["missing_features"][:3]))
    if cell.get("ignored_tags"):
        extra.append("ignores " + ", ".join(cell["ignored_tags"][:3]))
    if cell.get("leaked_tags"):
        extra.append("leaks " + ", ".join(cell["leaked_tags"][:3]))
    return " · ".join(parts) + ("\n" + " · ".join(extra) if extra else "")
