"""Owns the in-process training run: a thread worker started by the App (so changing modes never
cancels it), the event bridge the dashboard drains, and the stop/save/sample/pause requests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.worker import Worker, WorkerState

from tui.bridge import EventBridge

if TYPE_CHECKING:
    from textual.app import App


class TrainingController:
    def __init__(self, app: App) -> None:
        self.app = app
        self.run: Any = None  # trainer.run.TrainingRun
        self.bridge: EventBridge | None = None
        self.worker: Worker | None = None
        self.paused = False
        self.error: BaseException | None = None
        self.config_path: Path | None = None
        self._done = threading.Event()
        self._done.set()

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    def start(self, cfg: Any, config_path: Path | None = None, resume_from: Path | None = None) -> EventBridge:
        """Start training ``cfg`` (a validated TrainConfig) in a thread worker."""
        from trainer.run import TrainingRun

        if self.running:
            raise RuntimeError("a training run is already in progress")
        self.bridge = EventBridge()
        self.run = TrainingRun(cfg, on_event=self.bridge, resume_from=resume_from)
        self.config_path = config_path
        self.paused = False
        self.error = None
        self._done.clear()
        self.worker = self.app.run_worker(
            self._body,
            name="trainer",
            group="trainer",
            thread=True,
            exclusive=True,
            exit_on_error=False,
            description="LoRA training",
        )
        return self.bridge

    def _body(self) -> None:
        try:
            self.run.run()
        except BaseException as err:  # reported by the dashboard; the trainer emits Failed itself too
            self.error = err
            raise
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run thread ended (for shutdown paths and tests)."""
        return self._done.wait(timeout)

    def stop(self) -> None:
        if self.run is not None and self.running:
            if self.paused:
                self.resume()
            self.run.request_stop()

    def save_now(self) -> None:
        if self.run is not None and self.running:
            self.run.request_save()

    def sample_now(self) -> None:
        if self.run is not None and self.running:
            self.run.request_sample()

    def toggle_pause(self) -> bool:
        if self.run is None or not self.running:
            return False
        if self.paused:
            self.resume()
        else:
            self.run.pause()
            self.paused = True
        return self.paused

    def resume(self) -> None:
        if self.run is not None:
            self.run.resume()
        self.paused = False
