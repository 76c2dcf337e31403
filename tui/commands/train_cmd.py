"""`kazari train CONFIG.toml [--resume DIR]` — headless training with a progress display.

Ctrl-C asks the run to stop: it finishes the current step, writes a resumable state folder
(``<output>/<name>-state``) and the LoRA so far, and exits 130; a second Ctrl-C aborts at once.
Works unchanged under ``accelerate launch`` / ``torchrun`` (one process per GPU): only rank 0
draws the progress display and writes files.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tagging.errors import UserError
from trainer.durations import format_duration


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a LoRA from a config file (headless, with progress)",
        description="Train a LoRA from a kazari config TOML. Ctrl-C stops cleanly: it saves a resumable "
        "state and the LoRA so far; resume with --resume <output_dir>/<output_name>-state.")
    p.add_argument("config", type=Path, help="the training config (.toml)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="a state folder written by a stop or by [output] save_state = true")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default=None,
                   help="override [training] device")
    p.add_argument("--plain", action="store_true",
                   help="one line per epoch/checkpoint instead of the live progress bar (for logs)")
    p.set_defaults(func=cmd_train)


def _fmt_time(seconds: float | None) -> str:
    return format_duration(seconds, "clock")


class ProgressView:
    """Turns trainer events into a rich progress display (or plain lines)."""

    def __init__(self, plain: bool, console: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True, soft_wrap=True)
        self.plain = plain or not self.console.is_terminal
        self.progress: Any = None
        self.task: Any = None
        self.cache_task: Any = None
        self.last_step: Any = None

    def _ensure_progress(self) -> None:
        if self.progress is not None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console, transient=False)
        self.progress.start()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __call__(self, e: Any) -> None:
        from trainer import events as ev

        if isinstance(e, ev.RunStarted):
            self.console.print(
                f"kazari train: {e.num_train_images} images ({e.images_per_epoch} per epoch with repeats"
                f"{f', {e.num_reg_images} reg' if e.num_reg_images else ''}), {e.total_epochs} epochs x "
                f"{e.steps_per_epoch} steps = {e.total_steps} steps on {e.device}"
                f"{f' x{e.world_size} processes' if e.world_size > 1 else ''}"
                f"{f', resuming at step {e.start_step}' if e.start_step else ''}")
            if not self.plain:
                self._ensure_progress()
                self.task = self.progress.add_task("train", total=e.total_steps, completed=e.start_step, info="")
        elif isinstance(e, ev.CachingProgress):
            if self.plain:
                if e.done == e.total:
                    self.console.print(f"latents cached: {e.total} ({e.reused} reused from disk)")
            else:
                self._ensure_progress()
                if self.cache_task is None:
                    self.cache_task = self.progress.add_task("cache latents", total=e.total, info="")
                self.progress.update(self.cache_task, completed=e.done, info=f"{e.reused} reused")
        elif isinstance(e, ev.StepEvent):
            self.last_step = e
            lr = " ".join(f"{k}={v:.2e}" for k, v in e.lrs.items())
            mem = f" {e.gpu_mem_gb:.1f}GiB" if e.gpu_mem_gb is not None else ""
            info = (f"ep {e.epoch} loss {e.loss:.4f} avg {e.smoothed_loss:.4f} {lr} "
                    f"{e.it_per_s:.2f}it/s {e.images_per_s:.1f}img/s{mem} ETA {_fmt_time(e.eta_s)}")
            if self.task is not None:
                self.progress.update(self.task, completed=e.step, info=info)
        elif isinstance(e, ev.EpochEnd):
            if self.plain:
                s = self.last_step
                tail = f", {s.images_per_s:.1f} img/s, ETA {_fmt_time(s.eta_s)}" if s else ""
                self.console.print(f"epoch {e.epoch}/{e.total_epochs}: step {e.step}, mean loss {e.mean_loss:.4f}{tail}")
        elif isinstance(e, ev.CheckpointSaved):
            self.console.print(f"saved {e.kind}: {e.path}")
        elif isinstance(e, ev.SampleReady):
            self.console.print(f"sample: {e.path}")
        elif isinstance(e, ev.TrainWarning):
            self.console.print(f"[yellow]warning:[/] {e.message}")


def cmd_train(args: argparse.Namespace) -> int:
    from trainer import events as ev
    from trainer.config import load_config
    from trainer.run import TrainingRun

    cfg = load_config(args.config)
    if args.device:
        cfg = cfg.with_value("training.device", args.device)
    if args.resume is not None and not args.resume.is_dir():
        raise UserError(f"--resume {args.resume}: no such folder.", path=args.resume,
                        hint="Pass the <output_name>-state folder from the output directory.")
    rank = int(os.environ.get("RANK", "0"))
    view = ProgressView(args.plain) if rank == 0 else (lambda e: None)
    run = TrainingRun(cfg, on_event=view, resume_from=args.resume)
    interrupted = {"n": 0}

    def on_sigint(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        interrupted["n"] += 1
        if interrupted["n"] == 1:
            run.request_stop()
            if rank == 0:
                print("\nkazari: stopping after this step and saving a resumable state "
                      "(Ctrl-C again to abort without saving)", file=sys.stderr)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = run.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        if isinstance(view, ProgressView):
            view.close()
    if isinstance(result, ev.Failed):
        if result.kind == "user":
            raise UserError(result.message)
        if rank == 0:
            print(f"kazari: training failed: {result.message}", file=sys.stderr)
        return 1
    if rank == 0:
        if result.stopped_early and result.final_path is None:
            print("kazari: stopped before the first training step; nothing was saved.", file=sys.stderr)
        elif result.stopped_early:
            print(f"kazari: stopped at step {result.step}; LoRA so far: {result.final_path}; resume with "
                  f"`kazari train {args.config} --resume {result.state_dir}`", file=sys.stderr)
        else:
            print(f"kazari: done in {_fmt_time(result.elapsed_s)}: {result.final_path}", file=sys.stderr)
    return 130 if result.stopped_early and interrupted["n"] else 0
