"""Fixed-noise validation loss: the diffusion loss on a few training images at fixed timesteps and
fixed noise, computed at every save.

The training loss jumps with each step's random timesteps; this one uses the same images,
captions (as read at the start), latents (the VAE mean, no sampling), timesteps (spread evenly over
the schedule) and noise (drawn once on the CPU from a fixed seed) every time, so two saves differ
only by the LoRA weights. Same weights => bit-identical value. Each value is stored in the saved
LoRA's metadata (``kazari_validation_loss``, read by ``kazari judge``) and sent out as a
``ValidationLoss`` event (the Train screen shows it beside the training loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

NOISE_SEED = 20240607  # any constant: what matters is that it never changes between saves


@dataclass
class _Item:
    latents: torch.Tensor  # (T, C, h, w): the image's latent repeated per timestep
    noise: torch.Tensor
    timesteps: torch.Tensor
    caption: str


class FixedValidation:
    """Built once per run (``prepare``); ``compute`` gives the loss for the current weights."""

    def __init__(self, items: list[_Item], schedule: Any, autocast_dtype: torch.dtype | None,
                 weight_dtype: torch.dtype) -> None:
        self.items = items
        self.schedule = schedule
        self.autocast_dtype = autocast_dtype
        self.weight_dtype = weight_dtype

    @classmethod
    def prepare(cls, data: Any, vae: Any, schedule: Any, device: torch.device, *, images: int = 4,
                timesteps: int = 4, autocast_dtype: torch.dtype | None = None,
                weight_dtype: torch.dtype = torch.float32) -> FixedValidation | None:
        """The first ``images`` training images in key order (None when ``images`` is 0)."""
        from trainer.data import load_pixels

        if images <= 0:
            return None
        chosen = sorted((i for i, im in enumerate(data.images) if not im.is_reg),
                        key=lambda i: data.images[i].key)[:images]
        n_t = max(1, int(timesteps))
        ts = torch.tensor([int((k + 0.5) * schedule.num_timesteps / n_t) for k in range(n_t)], device=device)
        items = []
        scale = float(vae.config.scaling_factor)
        for n, i in enumerate(chosen):
            im = data.images[i]
            pixels = load_pixels(im.path, im.bucket, False, im.resized).unsqueeze(0)
            with torch.no_grad():
                dist = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist
                lat = (dist.mean * scale).to(weight_dtype)
            gen = torch.Generator().manual_seed(NOISE_SEED + n)
            noise = torch.randn((n_t, *lat.shape[1:]), generator=gen).to(device=device, dtype=weight_dtype)
            items.append(_Item(lat.expand(n_t, *lat.shape[1:]).contiguous(), noise, ts,
                               ", ".join(data.raw_tags(i))))
        return cls(items, schedule, autocast_dtype, weight_dtype) if items else None

    @torch.no_grad()
    def compute(self, unet: Any, encode: Callable[[list[str]], torch.Tensor]) -> float:
        """Mean MSE over the fixed (image, timestep, noise) triples for the current weights."""
        s = self.schedule
        total, count = 0.0, 0
        for item in self.items:
            t = item.timesteps
            b = t.shape[0]
            a = s.sqrt_alpha[t].view(b, 1, 1, 1).to(item.latents.dtype)
            o = s.sqrt_one_minus_alpha[t].view(b, 1, 1, 1).to(item.latents.dtype)
            noisy = a * item.latents + o * item.noise
            target = a * item.noise - o * item.latents if s.prediction_type == "v_prediction" else item.noise
            dt = self.autocast_dtype
            device_type = item.latents.device.type
            with torch.autocast(device_type, dtype=dt or torch.float32, enabled=dt is not None):
                cond = encode([item.caption] * b).to(self.weight_dtype)
                pred = unet(noisy, t, cond, return_dict=False)[0]
            total += float(F.mse_loss(pred.float(), target.float(), reduction="sum"))
            count += pred.numel()
        return total / max(count, 1)


META_KEY = "kazari_validation_loss"  # in the saved LoRA's metadata: the value travels with the file


def read_validation_loss(lora: Path) -> float | None:
    """The validation loss recorded in a saved LoRA (None: not recorded, or not a safetensors file)."""
    if Path(lora).suffix.lower() != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(lora), framework="pt") as f:
            value = (f.metadata() or {}).get(META_KEY)
        return float(value) if value is not None else None
    except (OSError, ValueError, RuntimeError):
        return None


class RunValidation:
    """The training loop's hook: ``start`` once, ``at_save`` after each LoRA file is written."""

    def __init__(self, fixed: FixedValidation, unet: Any, encode: Callable[[list[str]], torch.Tensor],
                 emit: Callable[[Any], None]) -> None:
        self.fixed, self.unet, self.encode, self.emit = fixed, unet, encode, emit
        self.last: float | None = None

    @classmethod
    def start(cls, run: Any, data: Any, bundle: Any, schedule: Any, device: torch.device,
              autocast_dtype: torch.dtype | None, weight_dtype: torch.dtype) -> RunValidation | None:
        cfg = run.cfg
        j = cfg.judge
        if run.rank != 0 or j.validation_images <= 0:
            return None
        fixed = FixedValidation.prepare(data, bundle.vae, schedule, device, images=j.validation_images,
                                        timesteps=j.validation_timesteps, autocast_dtype=autocast_dtype,
                                        weight_dtype=weight_dtype)
        if fixed is None:
            return None
        return cls(fixed, bundle.unet, lambda caps: run._encode_text(bundle, caps), run.emit)

    def annotate(self, metadata: dict[str, str]) -> dict[str, str]:
        """Compute the loss for the weights about to be saved and add it to their metadata."""
        from trainer import events as ev

        self.last = None
        try:
            self.last = self.fixed.compute(self.unet, self.encode)
        except Exception as exc:  # a diagnostic must never cost the run
            self.emit(ev.TrainWarning(f"Validation loss skipped: {type(exc).__name__}: {exc}"))
            return metadata
        return {**metadata, META_KEY: repr(self.last)}

    def announce(self, lora_path: Path, epoch: int, step: int) -> None:
        from trainer import events as ev

        if self.last is not None:
            self.emit(ev.ValidationLoss(epoch=epoch, step=step, loss=self.last, path=Path(lora_path)))
