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
        import torch

        from trainer.device import resolve_device
        from trainer.grid import build_grid
        from trainer.models import load_sd1

        cfg = self.cfg
        device = resolve_device(cfg.training.device).type  # "cuda" without a GPU: a clear error
        dtype = torch.float16 if device == "cuda" else torch.float32
        bundle = load_sd1(cfg.model.pretrained_model, vae=cfg.model.vae, tokenizer=cfg.model.tokenizer,
                          dtype=dtype, device=device, vae_dtype=torch.float32)

        def progress(done: int, total: int, cell: Any) -> None:
            self.done, self.total = done, total
            if cell.prompt_index == 0:  # the screen shows the first prompt's first seed
                self.cells.setdefault((cell.row, cell.col), cell)

        return build_grid(
            bundle, self.rows, cfg.sample.sample_prompts, weights=self.weights, out_dir=self.out_dir,
            sampler=cfg.sample.sample_sampler, steps=self.steps, clip_skip=cfg.training.clip_skip,
            max_token_length=cfg.dataset.max_token_length, progress=progress, cancel=self.cancel.is_set,
            output_name=cfg.output.output_name,
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
