"""Full-size random SD1.5 single-file state dicts, built fast (no module init), for tests and benches.

API::

    sd15_ldm_shapes() -> dict[str, tuple[int, ...]]      # every tensor of an A1111-layout SD1.5 file
    random_sd15_state_dict(dtype=torch.float16, seed=0) -> dict[str, torch.Tensor]

The weights are a tiled random pattern shifted per tensor (distinct values in every tensor, so
equality checks after loading mean something) — built in a couple of seconds where a real module
initialisation of 1.07 B parameters takes minutes on a small CPU.
"""

from __future__ import annotations

import torch


def sd15_ldm_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of a full SD1.5 checkpoint in the original (LDM) layout, from a meta-device build."""
    from trainer.models import build_sd1_random
    from trainer.tiny import diffusers_to_ldm

    unet, te, vae = build_sd1_random(device="meta")
    ldm = diffusers_to_ldm(unet.state_dict(), vae.state_dict(), te.state_dict())
    return {k: tuple(v.shape) for k, v in ldm.items()}


def random_sd15_state_dict(dtype: torch.dtype = torch.float16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full-size SD1.5 LDM state dict with cheap pseudo-random values (about 2 GB in fp16)."""
    shapes = sorted(sd15_ldm_shapes().items())
    largest = max(torch.Size(s).numel() for _, s in shapes)
    gen = torch.Generator().manual_seed(seed)
    base = (torch.randn(largest + (1 << 16), generator=gen) * 0.02).to(dtype)
    out: dict[str, torch.Tensor] = {}
    for i, (key, shape) in enumerate(shapes):
        n = torch.Size(shape).numel()
        start = (i * 7919) % (base.numel() - n + 1)  # a different window of the base per tensor
        out[key] = base[start : start + n].clone().view(shape)
    return out
