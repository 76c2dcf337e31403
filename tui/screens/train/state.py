"""What the dashboard shows, folded from drained trainer events (plain Python, testable alone)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainer.durations import format_duration
from trainer.events import (
    CheckpointSaved,
    Failed,
    Finished,
    RunStarted,
    SampleReady,
    StepEvent,
    TrainWarning,
)
from tui.bridge import Drained


def downsample(xs: list[int], ys: list[float], width: int) -> tuple[list[int], list[float]]:
    """Mean per bucket so a long run still plots as ``width`` points (loss is noisy: max would lie)."""
    n = len(xs)
    if n <= width or width <= 0:
        return list(xs), list(ys)
    out_x: list[int] = []
    out_y: list[float] = []
    for b in range(width):
        lo, hi = b * n // width, (b + 1) * n // width
        if hi > lo:
            out_x.append(xs[hi - 1])
            out_y.append(sum(ys[lo:hi]) / (hi - lo))
    return out_x, out_y


@dataclass
class RunView:
    started: RunStarted | None = None
    step: StepEvent | None = None
    caching: Any = None
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    checkpoints: list[CheckpointSaved] = field(default_factory=list)
    samples: list[SampleReady] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    finished: Finished | None = None
    failed: Failed | None = None
    points_changed: bool = False

    def fold(self, drained: Drained) -> list[Any]:
        """Merge one drain; returns the rare events in order (for notifications)."""
        self.started = drained.started or self.started
        self.step = drained.step or self.step
        self.caching = drained.caching or self.caching
        pts = drained.new_points
        if pts.steps:
            self.steps.extend(pts.steps)
            self.loss.extend(pts.loss)
            self.smoothed.extend(pts.smoothed)
            self.lr.extend(pts.lr)
            self.points_changed = True
        for event in drained.events:
            if isinstance(event, CheckpointSaved):
                self.checkpoints.append(event)
            elif isinstance(event, SampleReady):
                self.samples.append(event)
            elif isinstance(event, TrainWarning):
                self.warnings.append(event.message)
            elif isinstance(event, Finished):
                self.finished = event
            elif isinstance(event, Failed):
                self.failed = event
        return drained.events

    @property
    def total_steps(self) -> int:
        if self.step is not None:
            return self.step.total_steps
        return self.started.total_steps if self.started else 0

    def status_line(self, paused: bool = False) -> str:
        if self.failed is not None:
            return f"✗ failed at step {self.failed.step}: {self.failed.message}"
        if self.finished is not None:
            f = self.finished
            how = "stopped" if f.stopped_early else "finished"
            # Finished.epoch counts completed epochs: a stop mid-epoch 2 reports 1.
            saved = f" · saved {f.final_path.name}" if f.final_path is not None else ""
            return f"■ {how} at step {f.step} ({f.epoch} epoch(s) complete) in {f.elapsed_s:.0f}s{saved}"
        if self.step is None:
            if self.caching is not None:
                return f"caching {self.caching.what} {self.caching.done}/{self.caching.total}"
            return "starting…" if self.started is None else f"started on {self.started.device}"
        s = self.step
        epochs = self.started.total_epochs if self.started else "?"
        gpu = f"{s.gpu_mem_gb:.1f} GB" if s.gpu_mem_gb is not None else "—"
        eta = _fmt_eta(s.eta_s)
        head = "❚❚ paused" if paused else "▶"
        return (f"{head} epoch {s.epoch}/{epochs} · step {s.step}/{s.total_steps} · loss {s.loss:.4f} "
                f"(avg {s.smoothed_loss:.4f}) · {s.images_per_s:.2f} img/s · GPU {gpu} · ETA {eta}")


def _fmt_eta(seconds: float | None) -> str:
    return format_duration(seconds, "short", unknown="—")
