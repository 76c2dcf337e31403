"""Figures derived from a config plus its dataset: images, repeats, buckets, steps, time.

Which images train, how often and in which bucket is ``trainer.plan.plan_epoch`` — the plan the
data pipeline trains from, so the figures shown are the steps run. Each bucket is split into
batches on its own (a batch never mixes buckets, so rounding happens per bucket); optimizer steps
per epoch = ceil(batches / gradient_accumulation_steps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.buckets import batches_per_epoch
from trainer.config.schema import TrainConfig
from trainer.durations import format_duration
from trainer.plan import balanced_reg_repeats, plan_epoch

__all__ = ["DerivedFigures", "FolderFigures", "balanced_reg_repeats", "derived_figures"]


@dataclass(frozen=True)
class FolderFigures:
    name: str
    path: Path
    is_reg: bool
    images: int  # usable images
    repeats: int  # folder repeats (for reg folders: the effective average after balancing)
    samples: int  # images x repeats per epoch
    unreadable: int = 0  # images whose size could not be read (left out)


@dataclass(frozen=True)
class DerivedFigures:
    folders: list[FolderFigures]
    train_images: int
    reg_images: int
    samples_per_epoch: int  # training + balanced reg samples
    buckets: dict[tuple[int, int], int]  # bucket -> samples per epoch (repeats included)
    batch_size: int
    batches_per_epoch: int
    steps_per_epoch: int  # optimizer steps
    epochs: int
    total_steps: int
    naive_steps_per_epoch: int  # samples / batch, ignoring buckets (what most calculators show)
    seconds_per_step: float | None = None
    estimated_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["folders"] = [{**asdict(f), "path": f.path.as_posix()} for f in self.folders]
        data["buckets"] = [{"resolution": list(k), "count": v} for k, v in self.buckets.items()]
        return data

    def lines(self) -> list[str]:
        """Human-readable summary lines (used by `kazari config show` and the TUI)."""
        out = []
        for f in self.folders:
            kind = "reg " if f.is_reg else ""
            extra = f" ({f.unreadable} unreadable, left out)" if f.unreadable else ""
            out.append(f"{kind}folder {f.name}: {f.images} images x {f.repeats} repeats = {f.samples}{extra}")
        out.append(f"images: {self.train_images} training, {self.reg_images} regularization; "
                   f"{self.samples_per_epoch} samples per epoch")
        if self.buckets:
            parts = ", ".join(f"{w}x{h}: {n}" for (w, h), n in self.buckets.items())
            out.append(f"buckets ({len(self.buckets)}): {parts}")
        out.append(f"batches per epoch: {self.batches_per_epoch} (batch size {self.batch_size}; "
                   f"{self.naive_steps_per_epoch} without bucket rounding)")
        out.append(f"steps: {self.steps_per_epoch} per epoch x {self.epochs} epochs = {self.total_steps}")
        if self.estimated_seconds is not None:
            out.append(f"estimated time: {format_duration(self.estimated_seconds)} "
                       f"at {self.seconds_per_step:.3g} s/step")
        out.extend(f"note: {n}" for n in self.notes)
        return out


def _open_dataset(cfg: TrainConfig):
    from tagging.dataset import Dataset

    d = cfg.dataset
    if d.train_data_dir is None:
        from trainer.config.errors import ConfigError, ConfigIssue

        raise ConfigError([ConfigIssue(
            "error", "dataset.train_data_dir", "is not set", "set it to the folder holding your N_name folders",
            code="required")])
    return Dataset.open(d.train_data_dir, caption_ext=d.caption_extension, reg_root=d.reg_data_dir)


def derived_figures(cfg: TrainConfig, dataset: Any = None, *, seconds_per_step: float | None = None
                    ) -> DerivedFigures:
    """Figures for ``cfg`` on ``dataset`` (a ``tagging.dataset.Dataset``; opened from the config if None).

    ``seconds_per_step`` (a measured speed) adds the estimated training time.
    """
    ds = dataset if dataset is not None else _open_dataset(cfg)
    plan = plan_epoch(cfg, ds)  # the same plan the data pipeline trains from
    left_out = {it.key for it in plan.unreadable}
    notes: list[str] = []
    folders: list[FolderFigures] = []
    for folder in ds.folders:
        usable = sum(1 for it in folder.images if it.key not in left_out)
        folders.append(FolderFigures(folder.name, Path(folder.path), False, usable, folder.repeats,
                                     usable * folder.repeats, len(folder.images) - usable))
    reg_images = 0
    for folder in getattr(ds, "reg_folders", []):
        usable = sum(1 for it in folder.images if it.key not in left_out)
        used = sum(p.repeats for p in plan.images if p.folder is folder)
        reg_images += usable
        folders.append(FolderFigures(folder.name, Path(folder.path), True, usable,
                                     round(used / usable) if usable else folder.repeats, used,
                                     len(folder.images) - usable))
    if plan.reg_unused:
        notes.append("more regularization samples than training samples: some reg images are not used")
    counts = plan.bucket_counts()
    train_images = sum(f.images for f in folders if not f.is_reg)
    samples = sum(counts.values())
    t = cfg.training
    batches = batches_per_epoch(counts, t.train_batch_size)
    steps = math.ceil(batches / t.gradient_accumulation_steps) if batches else 0
    total = steps * t.max_train_epochs
    estimate = total * seconds_per_step if seconds_per_step else None
    if not train_images:
        notes.append("no usable training images: nothing would be trained")
    return DerivedFigures(
        folders=folders, train_images=train_images, reg_images=reg_images, samples_per_epoch=samples,
        buckets=counts, batch_size=t.train_batch_size, batches_per_epoch=batches, steps_per_epoch=steps,
        epochs=t.max_train_epochs, total_steps=total,
        naive_steps_per_epoch=math.ceil(samples / t.train_batch_size) if samples else 0,
        seconds_per_step=seconds_per_step, estimated_seconds=estimate, notes=notes,
    )
