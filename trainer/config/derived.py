"""Figures derived from a config plus its dataset: images, repeats, buckets, steps, time.

Counting follows sd-scripts: every image enters its bucket ``repeats`` times; regularization
images are repeated (round-robin) until they match the training images' count; each bucket is
split into batches on its own (a batch never mixes buckets, so rounding happens per bucket);
optimizer steps per epoch = ceil(batches / gradient_accumulation_steps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.buckets import BucketSet, batches_per_epoch
from trainer.config.schema import TrainConfig


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


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def balanced_reg_repeats(reg_folder_repeats: list[int], num_train_samples: int) -> list[int]:
    """sd-scripts: reg images start at their folder's repeats, then gain one each, round-robin,
    until they add up to the training samples (so an epoch holds as many reg as training samples)."""
    repeats = [0] * len(reg_folder_repeats)
    n = 0
    first = True
    while reg_folder_repeats and n < num_train_samples:
        for i, start in enumerate(reg_folder_repeats):
            if first:
                repeats[i] = start
                n += start
            else:
                repeats[i] += 1
                n += 1
            if n >= num_train_samples:
                break
        first = False
    return repeats


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
    buckets = BucketSet.for_config(cfg)
    notes: list[str] = []
    train: list[tuple[Any, int]] = []  # (item, repeats)
    folders: list[FolderFigures] = []
    for folder in ds.folders:
        usable = [it for it in folder.images if min(it.size) > 0]
        train.extend((it, folder.repeats) for it in usable)
        folders.append(FolderFigures(folder.name, Path(folder.path), False, len(usable), folder.repeats,
                                     len(usable) * folder.repeats, len(folder.images) - len(usable)))
    num_train = sum(r for _, r in train)
    reg_items: list[tuple[Any, Any]] = []
    for folder in getattr(ds, "reg_folders", []):
        reg_items.extend((it, folder) for it in folder.images if min(it.size) > 0)
    reg_repeats = balanced_reg_repeats([f.repeats for _, f in reg_items], num_train)
    for folder in getattr(ds, "reg_folders", []):
        mine = [r for (it, f), r in zip(reg_items, reg_repeats, strict=True) if f is folder]
        used = sum(mine)
        images = len(mine)
        folders.append(FolderFigures(folder.name, Path(folder.path), True, images,
                                     round(used / images) if images else folder.repeats, used,
                                     len(folder.images) - images))
    if reg_items and sum(f.repeats for _, f in reg_items) > num_train:
        notes.append("more regularization samples than training samples: some reg images are not used")
    counts: dict[tuple[int, int], int] = {}
    for (item, repeats) in train + [(it, r) for (it, _), r in zip(reg_items, reg_repeats, strict=True)]:
        if repeats <= 0:
            continue
        bucket = buckets.assign(*item.size)
        counts[bucket] = counts.get(bucket, 0) + repeats
    counts = dict(sorted(counts.items()))
    samples = sum(counts.values())
    t = cfg.training
    batches = batches_per_epoch(counts, t.train_batch_size)
    steps = math.ceil(batches / t.gradient_accumulation_steps) if batches else 0
    total = steps * t.max_train_epochs
    estimate = total * seconds_per_step if seconds_per_step else None
    if not train:
        notes.append("no usable training images: nothing would be trained")
    return DerivedFigures(
        folders=folders, train_images=len(train), reg_images=len(reg_items), samples_per_epoch=samples,
        buckets=counts, batch_size=t.train_batch_size, batches_per_epoch=batches, steps_per_epoch=steps,
        epochs=t.max_train_epochs, total_steps=total,
        naive_steps_per_epoch=math.ceil(samples / t.train_batch_size) if samples else 0,
        seconds_per_step=seconds_per_step, estimated_seconds=estimate, notes=notes,
    )
