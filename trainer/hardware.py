"""What the GPU can do, and the training settings that follow from it.

API (stable)::

    probe_gpu() -> GpuInfo | None          # the first CUDA device (torch imported lazily), None without
    bitsandbytes_available() -> bool
    recommend_settings(gpu, resolution=768, optimizer="Lion", bnb=True) -> Recommendation
    Recommendation.settings: {"training.train_batch_size": 2, ...}; .reasons: same keys -> sentence

The VRAM figures are for an SD1.5 LoRA (dim <= 128) with a frozen fp16/bf16 base model and cached
latents: about 4 GB for the weights and optimizer state, then activations that grow with batch
size x pixels; gradient checkpointing cuts the activations to roughly a third at ~20% speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Activation GB per image at 768x768 (scaled by pixel count for other sizes), and the fixed part.
_BASE_GB = 4.0
_ACT_GB_768 = 3.0
_CKPT_FACTOR = 0.35
_HEADROOM_GB = 1.0  # CUDA context, allocator fragmentation, the preview sampler


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_gb: float
    free_gb: float
    capability: tuple[int, int]

    @property
    def bf16(self) -> bool:
        return self.capability >= (8, 0)  # Ampere and newer


@dataclass
class Recommendation:
    settings: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: Any, reason: str) -> None:
        self.settings[key] = value
        self.reasons[key] = reason

    def lines(self) -> list[str]:
        return [f"{k} = {v!r}: {self.reasons[k]}" for k, v in self.settings.items()]


def probe_gpu() -> GpuInfo | None:
    """The first CUDA device with its free memory now; None when torch sees no CUDA GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(0)
    return GpuInfo(
        name=torch.cuda.get_device_name(0),
        total_gb=round(total / 2**30, 1),
        free_gb=round(free / 2**30, 1),
        capability=torch.cuda.get_device_capability(0),
    )


def bitsandbytes_available() -> bool:
    from importlib.util import find_spec

    return find_spec("bitsandbytes") is not None


def _needed_gb(batch: int, resolution: int, checkpointing: bool) -> float:
    act = _ACT_GB_768 * (resolution / 768) ** 2 * (_CKPT_FACTOR if checkpointing else 1.0)
    return _BASE_GB + batch * act + _HEADROOM_GB


def recommend_settings(gpu: GpuInfo | None, resolution: int = 768, optimizer: str = "Lion",
                       bnb: bool = True) -> Recommendation:
    """Batch size, precision, gradient checkpointing and 8-bit optimizer for ``gpu``, with reasons."""
    rec = Recommendation()
    if gpu is None:
        rec.set("training.device", "cpu", "no CUDA GPU found: training runs on the CPU (hours per epoch at "
                "full size; fine for `kazari demo`)")
        rec.set("training.mixed_precision", "no", "CPUs train in fp32")
        rec.set("training.train_batch_size", 1, "one image per step keeps CPU memory and step time low")
        rec.set("training.gradient_checkpointing", False, "not needed without a GPU memory limit")
        return rec
    if gpu.bf16:
        rec.set("training.mixed_precision", "bf16", f"{gpu.name} (compute capability {gpu.capability[0]}."
                f"{gpu.capability[1]}, Ampere or newer) supports bf16: fp16's speed without its overflows")
    else:
        rec.set("training.mixed_precision", "fp16", f"{gpu.name} (compute capability {gpu.capability[0]}."
                f"{gpu.capability[1]}) predates Ampere: no fast bf16, so fp16")
    free = gpu.free_gb
    for ckpt in (False, True):
        batches = [b for b in (8, 6, 4, 2, 1) if _needed_gb(b, resolution, ckpt) <= free]
        if batches:
            batch = batches[0]
            break
    else:
        batch, ckpt = 1, True
    need = _needed_gb(batch, resolution, ckpt)
    rec.set("training.train_batch_size", batch,
            f"{free:.1f} GB free VRAM fits batch {batch} at {resolution} px (about {need:.1f} GB)")
    rec.set("training.gradient_checkpointing", ckpt,
            "recomputes activations so the batch fits (about 20% slower)" if ckpt
            else "enough VRAM without recomputing activations (faster)")
    tight = free < _needed_gb(1, resolution, False) + 2
    base = optimizer.removesuffix("8bit")
    if tight and base in ("AdamW", "Lion"):
        if bnb:
            rec.set("optimizer.optimizer_type", base + "8bit",
                    f"{free:.1f} GB is tight: the 8-bit {base} keeps its state in a quarter of the memory")
        else:
            rec.reasons["optimizer.optimizer_type"] = (
                f"{free:.1f} GB is tight: an 8-bit optimizer would help — pip install bitsandbytes")
    if _needed_gb(1, resolution, True) > free:
        rec.set("dataset.resolution", "512,512", f"even batch 1 at {resolution} px needs about "
                f"{_needed_gb(1, resolution, True):.1f} GB; 512 px fits {free:.1f} GB")
    return rec
