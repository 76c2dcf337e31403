"""Plain event objects a :class:`trainer.run.TrainingRun` sends to whoever watches it.

Frozen dataclasses and nothing else: the CLI progress bar, the TUI and tests all consume the same
stream. ``StepEvent`` values come from a lagged, non-blocking read of the loss (see
``trainer.run._LossReader``), so emitting never forces a GPU sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunStarted:
    total_steps: int  # optimizer steps for the whole run
    steps_per_epoch: int
    total_epochs: int
    batches_per_epoch: int
    num_train_images: int  # distinct images (repeats not counted)
    num_reg_images: int
    images_per_epoch: int  # with repeats and regularisation images
    batch_size: int
    gradient_accumulation_steps: int
    start_step: int = 0  # > 0 when resuming
    start_epoch: int = 0
    device: str = "cpu"
    output_dir: Path | None = None
    world_size: int = 1


@dataclass(frozen=True)
class CachingProgress:
    done: int
    total: int
    reused: int = 0  # latents found in the disk cache instead of encoded
    what: str = "latents"


@dataclass(frozen=True)
class StepEvent:
    step: int  # optimizer steps done (1-based after the first update)
    total_steps: int
    epoch: int  # 1-based epoch the step belongs to
    loss: float
    smoothed_loss: float  # moving average over the last steps, as sd-scripts' avr_loss
    lrs: dict[str, float] = field(default_factory=dict)  # per param group ("unet", "text_encoder")
    images_per_s: float = 0.0
    it_per_s: float = 0.0
    gpu_mem_gb: float | None = None  # peak allocated, None on CPU
    eta_s: float | None = None


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    total_epochs: int
    step: int
    mean_loss: float


@dataclass(frozen=True)
class CheckpointSaved:
    path: Path
    epoch: int
    step: int
    kind: str  # "epoch" | "final" | "manual" | "stop" | "state"


@dataclass(frozen=True)
class ValidationLoss:
    """Fixed-noise validation loss of the weights just saved (``trainer.validation``)."""

    epoch: int
    step: int
    loss: float
    path: Path | None = None  # the LoRA file it belongs to


@dataclass(frozen=True)
class SampleReady:
    image: Any  # PIL.Image.Image (typed loosely so importing events never imports PIL)
    path: Path
    prompt: str
    epoch: int
    step: int
    index: int = 0


@dataclass(frozen=True)
class TrainWarning:
    message: str


@dataclass(frozen=True)
class Finished:
    step: int
    epoch: int
    final_path: Path | None
    elapsed_s: float
    stopped_early: bool = False  # True after request_stop()
    state_dir: Path | None = None


@dataclass(frozen=True)
class Failed:
    message: str  # one paragraph: what happened, likely causes, what to change
    kind: str = "error"  # "nan" | "oom" | "disk" | "user" | "error"
    last_checkpoint: Path | None = None
    step: int = 0
    epoch: int = 0


Event = RunStarted | CachingProgress | StepEvent | EpochEnd | CheckpointSaved | ValidationLoss | SampleReady | TrainWarning | Finished | Failed
