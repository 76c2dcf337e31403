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


@dataclass
class StepOptions:
    """The step's host-cost paths (issue 17); ``baseline()`` is the code as it was before them.

    - ``lora_cast_once``: under autocast, LoRA computes in the autocast dtype from weights cast once
      per step (``LoRANetwork.compute_weights``) instead of autocast casting each weight and input per call;
    - ``channels_last``: U-Net and latents in NHWC (cuDNN's native layout: no per-conv transposes);
    - ``foreach_optimizer``: fused AdamW / foreach Lion and SGD on every device, not per-tensor loops;
    - ``compile``: ``torch.compile(unet, fullgraph=True)`` (the LoRA casts then fuse inside the graph).
    """

    lora_cast_once: bool = True
    channels_last: bool = True
    foreach_optimizer: bool = True
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str | None = None  # None = inductor; tests use "aot_eager" (same graph, no codegen)

    @classmethod
    def baseline(cls) -> StepOptions:
        return cls(lora_cast_once=False, channels_last=False, foreach_optimizer=False, compile=False)

    def prepare_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if self.channels_last and latents.dim() == 4:
            return latents.contiguous(memory_format=torch.channels_last)
        return latents


class TrainStep:
    """One optimizer step's device work, shared by ``TrainingRun`` and the benches.

        step = TrainStep(unet, network, optimizer, scheduler, scaler, schedule, options=StepOptions(), ...)
        loss = step.forward_backward(latents, cond, sample_weights)   # per micro-batch
        lrs = step.optimizer_step()          # clip, step, zero_grad, scheduler; the lrs this step USED

    Nothing here reads a device value on the host (fp16's GradScaler aside), so a CUDA host can
    queue the next step while the GPU works.
    """

    def __init__(self, unet: torch.nn.Module, network, optimizer: torch.optim.Optimizer, scheduler,
                 scaler: torch.amp.GradScaler | None, schedule: NoiseSchedule, *, options: StepOptions | None = None,
                 autocast_dtype: torch.dtype | None = None, max_grad_norm: float = 0.0,
                 generator: torch.Generator | None = None, noise_offset: float = 0.0,
                 min_snr_gamma: float | None = None, accumulation: int = 1) -> None:
        self.options = options or StepOptions()
        self.network, self.optimizer, self.scheduler = network, optimizer, scheduler
        self.scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
        self.schedule, self.autocast_dtype = schedule, autocast_dtype
        self.max_grad_norm, self.generator = max_grad_norm, generator
        self.noise_offset, self.min_snr_gamma, self.accumulation = noise_offset, min_snr_gamma, accumulation
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        if self.options.channels_last:
            unet.to(memory_format=torch.channels_last)
        self.model = unet
        if self.options.compile:
            mode = self.options.compile_mode
            extra = {"mode": mode} if mode else {}
            if self.options.compile_backend:
                extra["backend"] = self.options.compile_backend
            self.model = torch.compile(unet, fullgraph=True, **extra)

    def forward_backward(self, latents: torch.Tensor, cond: torch.Tensor,
                         sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of one micro-batch, its gradients accumulated into the LoRA weights; returns the loss."""
        o = self.options
        # Backward inside too: gradient checkpointing re-runs the LoRA forwards during backward.
        with self.network.compute_weights(self.autocast_dtype, enabled=o.lora_cast_once and not o.compile):
            loss = diffusion_loss(self.model, o.prepare_latents(latents), cond, self.schedule,
                                  generator=self.generator, noise_offset=self.noise_offset,
                                  min_snr_gamma=self.min_snr_gamma, sample_weights=sample_weights,
                                  autocast_dtype=self.autocast_dtype)
            scaled = loss / self.accumulation if self.accumulation != 1 else loss
            self.scaler.scale(scaled).backward()
        return loss

    def optimizer_step(self) -> dict[str, float]:
        """Clip, step, clear the gradients and advance the schedule; returns the lr per group that
        this step used (read before the scheduler moves on, plain floats: no device read)."""
        from trainer.optim import current_lrs

        lrs = current_lrs(self.optimizer)
        if self.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=_foreach_ok(self.params))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return lrs

    def run(self, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """One micro-batch and its optimizer step (what the benches time)."""
        loss = self.forward_backward(latents, cond)
        self.optimizer_step()
        return loss


def _foreach_ok(params: list[torch.Tensor]) -> bool | None:
    # One norm kernel for all LoRA grads (the default on CUDA); CPU has foreach kernels too.
    return True if params and all(p.device.type in ("cpu", "cuda") for p in params) else None
