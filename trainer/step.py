"""One training step's maths, shared by the training loop and ``bench/train_bench.py``.

Everything here stays on the device: no ``.item()``, no Python branching on tensor values, so the
host can queue the next step while the GPU works. (fp16's GradScaler is the one unavoidable sync:
it must know whether the gradients overflowed before stepping; bf16 has no such sync.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tagging.errors import UserError


@dataclass
class NoiseSchedule:
    """The DDPM quantities the loss needs, precomputed on the training device."""

    sqrt_alpha: torch.Tensor  # sqrt(alphas_cumprod), shape (T,)
    sqrt_one_minus_alpha: torch.Tensor
    snr: torch.Tensor  # alphas_cumprod / (1 - alphas_cumprod)
    num_timesteps: int
    prediction_type: str = "epsilon"

    @classmethod
    def from_scheduler(cls, scheduler, device: torch.device | str) -> NoiseSchedule:
        acp = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        prediction = getattr(scheduler.config, "prediction_type", "epsilon")
        return cls(acp.sqrt(), (1.0 - acp).sqrt(), acp / (1.0 - acp), len(acp), prediction)


def diffusion_loss(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    generator: torch.Generator | None = None,
    noise_offset: float = 0.0,
    min_snr_gamma: float | None = None,
    sample_weights: torch.Tensor | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Noise the latents at random timesteps, predict, and return the weighted MSE (a 0-d tensor).

    ``latents`` are already scaled by the VAE's scaling factor. ``sample_weights`` carries the
    prior loss weight of regularisation images (1.0 for training images).
    """
    device = latents.device
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    if noise_offset:
        # Offset noise (Guttenberg): a per-channel constant lets the model shift overall brightness.
        offset = torch.randn((b, latents.shape[1], 1, 1), generator=generator, device=device, dtype=latents.dtype)
        noise = noise + noise_offset * offset
    t = torch.randint(0, schedule.num_timesteps, (b,), generator=generator, device=device)
    a = schedule.sqrt_alpha[t].view(b, 1, 1, 1).to(latents.dtype)
    s = schedule.sqrt_one_minus_alpha[t].view(b, 1, 1, 1).to(latents.dtype)
    noisy = a * latents + s * noise
    v_pred = schedule.prediction_type == "v_prediction"
    target = a * noise - s * latents if v_pred else noise

    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        pred = unet(noisy, t, encoder_hidden_states, return_dict=False)[0]

    loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if sample_weights is not None:
        loss = loss * sample_weights
    if min_snr_gamma:
        # Min-SNR weighting (Hang et al. 2023), as sd-scripts' apply_snr_weight for epsilon targets.
        snr = schedule.snr[t]
        weight = torch.clamp(snr, max=min_snr_gamma) / snr
        if schedule.prediction_type == "v_prediction":
            weight = torch.clamp(snr, max=min_snr_gamma) / (snr + 1)
        loss = loss * weight
    return loss.mean()


def set_attention(unet: torch.nn.Module, mode: str) -> None:
    """"sdpa" (PyTorch scaled_dot_product_attention, diffusers' default), "xformers" or "math"."""
    mode = (mode or "sdpa").lower()
    if mode == "xformers":
        try:
            import xformers.ops  # noqa: F401
        except ImportError as exc:
            raise UserError(
                "[training] attention = \"xformers\" but the xformers package is not installed.",
                hint="Install it (`pip install 'kazari[xformers]'`, matching your torch build) or use "
                "attention = \"sdpa\", which is as fast on PyTorch 2.",
            ) from exc
        unet.enable_xformers_memory_efficient_attention()
    elif mode == "math":
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())
    elif mode == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
    else:
        raise UserError(
            f"[training] attention = {mode!r} is not known.", hint='Use "sdpa", "xformers" or "math".'
        )
