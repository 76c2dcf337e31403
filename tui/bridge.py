"""Trainer thread → UI, without ever making the trainer wait for the UI.

``App.call_from_thread`` blocks the calling thread until the UI loop has run the callback, so calling
it per step would tie step time to UI latency. Instead the trainer's ``on_event`` callback only takes
a lock and stores the event (latest ``StepEvent`` wins; curve points are appended; rare events are
queued). The UI drains the bridge on a timer a few times per second, so however fast the trainer
emits, the UI does a bounded amount of work. Nothing here imports Textual.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from trainer.events import (
    CachingProgress,
    EpochEnd,
    Event,
    RunStarted,
    StepEvent,
)

MAX_POINTS = 20_000  # curve history kept for plotting (downsampled to the plot width when drawn)


@dataclass
class CurvePoints:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


@dataclass
class Drained:
    """What changed since the last drain: the newest values plus the rare events, in order."""

    started: RunStarted | None
    step: StepEvent | None
    caching: CachingProgress | None
    epoch_end: EpochEnd | None
    new_points: CurvePoints
    events: list[Event]


class EventBridge:
    """Callable handed to ``TrainingRun(on_event=...)``; thread-safe, O(1) per event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: RunStarted | None = None
        self._step: StepEvent | None = None
        self._caching: CachingProgress | None = None
        self._epoch_end: EpochEnd | None = None
        self._points = CurvePoints()
        self._events: list[Event] = []
        self._dirty = False
        self.received = 0

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.received += 1
            self._dirty = True
            if isinstance(event, StepEvent):
                self._step = event
                if len(self._points.steps) < MAX_POINTS:
                    self._points.steps.append(event.step)
                    self._points.loss.append(event.loss)
                    self._points.smoothed.append(event.smoothed_loss)
                    self._points.lr.append(_main_lr(event.lrs))
            elif isinstance(event, CachingProgress):
                self._caching = event
            elif isinstance(event, RunStarted):
                self._started = event
                self._events.append(event)
            elif isinstance(event, EpochEnd):
                self._epoch_end = event
                self._events.append(event)
            else:
                self._events.append(event)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def drain(self) -> Drained | None:
        """Take everything new since the last call (None when nothing happened)."""
        with self._lock:
            if not self._dirty:
                return None
            out = Drained(
                started=self._started,
                step=self._step,
                caching=self._caching,
                epoch_end=self._epoch_end,
                new_points=self._points,
                events=self._events,
            )
            self._points = CurvePoints()
            self._events = []
            self._dirty = False
            return out


def _main_lr(lrs: dict[str, float]) -> float:
    """The U-Net's learning rate (the one a character LoRA is mostly tuned by), else the first group's."""
    if not lrs:
        return 0.0
    return lrs.get("unet", next(iter(lrs.values())))
