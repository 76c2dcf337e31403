"""Text-to-image with a loaded SD1 bundle plus an optional LoRA at a weight.

API (stable)::

    s = Sampler(bundle, sampler="euler_a", clip_skip=None, max_token_length=75, network=None)
    s.set_lora(path_or_network, weight=1.0)  # in place when the layout matches the current LoRA
    s.weight = 0.6                           # LoRA multiplier, no reload
    img = s.generate(spec_or_line, seed=None, weight=None, cancel=None)   # PIL image with
          # img.info["parameters"] (A1111 text) and img.info["seed"]
    for prompt, img in s.sample_prompts(lines_or_file): ...               # training previews
    save_png(img, path)                      # PNG with the A1111 ``parameters`` text chunk (atomic)
    make_scheduler(name) / SAMPLER_NAMES / sampler_label(name)

Samplers: every sd-scripts ``--sample_sampler`` name (ddim, pndm, lms, euler, euler_a, heun, dpm_2,
dpm_2_a, dpmsolver, dpmsolver++, dpmsingle, k_*) plus ``dpmpp_2m``/``dpmpp_2m_karras``; the A1111
labels ("Euler a", "DPM++ 2M Karras", ...) are accepted too. The initial noise comes only from the
seed (CPU generator), so the same seed gives the same noise whatever LoRA or weight is active.
Text goes through ``trainer.text_encoding`` (clip_skip, 75/150/225 chunks) exactly as in training.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from tagging.atomic import atomic_write_bytes
from tagging.errors import UserError
from trainer.lora import LoRANetwork, read_lora_file
from trainer.models import SD1Bundle, sd1_scheduler_config
from trainer.prompts import PromptSpec, load_prompts, parse_prompt_line
from trainer.text_encoding import CHUNK, check_text_settings, encode_prompts

# name -> (diffusers class, extra config, A1111 label)
_SAMPLERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PLMS"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "dpm_2": ("KDPM2DiscreteScheduler", {}, "DPM2"),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}, "DPM2 a"),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}, "DPM2M"),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, "DPM++ 2M"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, "DPM++ 2M"),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
        "DPM++ 2M Karras",
    ),
    "dpmsingle": ("DPMSolverSinglestepScheduler", {}, "DPM++ singlestep"),
}
_ALIASES = {f"k_{n}": n for n in ("lms", "euler", "euler_a", "dpm_2", "dpm_2_a")}
_ALIASES.update({label.lower(): name for name, (_, _, label) in _SAMPLERS.items()})
_ALIASES.update({"dpm++ 2m karras": "dpmpp_2m_karras", "dpm++ 2m": "dpmpp_2m", "euler_ancestral": "euler_a"})
SAMPLER_NAMES = tuple(_SAMPLERS) + tuple(k for k in _ALIASES if k.startswith("k_"))


def _canonical(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _SAMPLERS:
        raise UserError(
            f"Unknown sampler {name!r}.",
            hint=f"Use one of: {', '.join(_SAMPLERS)} (or the A1111 names such as 'Euler a', 'DPM++ 2M Karras').",
        )
    return key


def sampler_label(name: str) -> str:
    """The A1111 display name, as written in the PNG ``parameters`` chunk."""
    return _SAMPLERS[_canonical(name)][2]


def make_scheduler(name: str) -> Any:
    """A fresh diffusers scheduler with SD1's betas for a sampler name."""
    import diffusers

    cls_name, extra, _ = _SAMPLERS[_canonical(name)]
    cfg = dict(sd1_scheduler_config("ddim"), **extra)
    return getattr(diffusers, cls_name).from_config(cfg)


def a1111_parameters(spec: PromptSpec, seed: int, sampler: str, clip_skip: int | None, extra: dict[str, str]) -> str:
    """A1111's ``parameters`` text: prompt, ``Negative prompt:`` line, then ``Key: value`` pairs."""
    lines = [spec.prompt]
    if spec.negative_prompt:
        lines.append(f"Negative prompt: {spec.negative_prompt}")
    items = {
        "Steps": str(spec.steps),
        "Sampler": sampler_label(sampler),
        "CFG scale": f"{spec.cfg_scale:g}",
        "Seed": str(seed),
        "Size": f"{spec.width}x{spec.height}",
        **extra,
    }
    if clip_skip and clip_skip > 1:
        items["Clip skip"] = str(clip_skip)
    lines.append(", ".join(f"{k}: {v}" for k, v in items.items()))
    return "\n".join(lines)


def save_png(image: Any, path: Path | str) -> Path:
    """Save a PIL image as PNG with its ``parameters`` text chunk (A1111's PNG-info), atomically."""
    import io

    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    info = PngInfo()
    if "parameters" in image.info:
        info.add_text("parameters", str(image.info["parameters"]))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


class Cancelled(Exception):
    """Raised inside :meth:`Sampler.generate` when its ``cancel`` callback returns True."""


class Sampler:
    """Generates images from one loaded base model; the LoRA and its weight can change between calls."""

    def __init__(
        self,
        bundle: SD1Bundle,
        sampler: str = "euler_a",
        clip_skip: int | None = None,
        max_token_length: int | None = 75,
        network: LoRANetwork | None = None,
        weight: float | None = None,
    ) -> None:
        self.bundle = bundle
        self.sampler = _canonical(sampler)
        self.clip_skip = clip_skip
        self.max_token_length = max_token_length or CHUNK
        check_text_settings(clip_skip, self.max_token_length, bundle.text_encoder.config.num_hidden_layers)
        self.network = network
        self.lora_name: str | None = None
        self.lora_hash: str | None = None
        if weight is not None:
            self.weight = weight

    # ------------------------------------------------------------------ LoRA
    @property
    def weight(self) -> float:
        return self.network.multiplier if self.network is not None else 0.0

    @weight.setter
    def weight(self, value: float) -> None:
        if self.network is not None:
            self.network.multiplier = value

    def set_lora(self, lora: Path | str | LoRANetwork | None, weight: float = 1.0) -> None:
        """Activate a LoRA; a file with the current layout is copied into the live modules in place."""
        if isinstance(lora, LoRANetwork) or lora is None:
            if self.network is not None and self.network is not lora:
                self.network.remove()
            self.network = lora
            self.lora_name = self.lora_hash = None
        else:
            path = Path(lora)
            sd, meta = read_lora_file(path)
            if self.network is not None and _layout_of(sd) == self.network.layout():
                self.network.load_weights(sd, source=path)
            else:
                if self.network is not None:
                    self.network.remove()
                self.network = LoRANetwork.from_weights(sd, self.bundle.unet, self.bundle.text_encoder, source=path)
                self.network.to(self.bundle.device)
            self.lora_name = path.stem
            self.lora_hash = meta.get("sshs_model_hash", "")[:12] or None
        self.weight = weight

    # ------------------------------------------------------------------ generation
    def _spec(self, spec: PromptSpec | str) -> PromptSpec:
        return parse_prompt_line(spec) if isinstance(spec, str) else spec

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        te = self.bundle.text_encoder
        return encode_prompts(self.bundle.tokenizer, te, list(texts), self.clip_skip, self.max_token_length)

    @torch.no_grad()
    def generate(
        self,
        spec: PromptSpec | str,
        seed: int | None = None,
        weight: float | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Any:
        """One image (PIL) for ``spec``; ``seed``/``weight`` override the spec's ``--d``/``--am``."""
        from PIL import Image

        spec = self._spec(spec)
        b = self.bundle
        if weight is None:
            weight = spec.multiplier
        if weight is not None:
            self.weight = weight
        seed = seed if seed is not None else spec.seed
        if seed is None or seed < 0:
            # OS entropy, not the global `random`/torch streams: training previews must not shift them.
            seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        sampler = _canonical(spec.sampler) if spec.sampler else self.sampler
        scheduler = make_scheduler(sampler)
        device = b.device
        scheduler.set_timesteps(spec.steps, device=device)

        unet_dtype = next(b.unet.parameters()).dtype
        use_cfg = spec.cfg_scale != 1.0
        texts = [spec.negative_prompt, spec.prompt] if use_cfg else [spec.prompt]
        context = self.encode(texts).to(unet_dtype)

        factor = b.vae_scale_factor
        shape = (1, b.unet.config.in_channels, spec.height // factor, spec.width // factor)
        gen = torch.Generator("cpu").manual_seed(seed)
        latents = torch.randn(shape, generator=gen, dtype=torch.float32).to(device)
        latents = latents * scheduler.init_noise_sigma
        step_gen = torch.Generator("cpu").manual_seed(seed + 1)  # ancestral noise, also seed-only
        autocast = torch.autocast(device.type, dtype=unet_dtype, enabled=device.type == "cuda" and unet_dtype != torch.float32)
        for t in scheduler.timesteps:
            if cancel is not None and cancel():
                raise Cancelled()
            inp = torch.cat([latents] * 2) if use_cfg else latents
            inp = scheduler.scale_model_input(inp, t)
            with autocast:
                noise = b.unet(inp.to(unet_dtype), t, encoder_hidden_states=context).sample.float()
            if use_cfg:
                uncond, cond = noise.chunk(2)
                noise = uncond + spec.cfg_scale * (cond - uncond)
            latents = _step(scheduler, noise, t, latents, step_gen)
        vae_dtype = next(b.vae.parameters()).dtype
        scale = getattr(b.vae.config, "scaling_factor", 0.18215)
        pixels = b.vae.decode((latents / scale).to(vae_dtype)).sample.float()
        arr = ((pixels[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        image = Image.fromarray(arr, "RGB")

        extra = {"Model hash": b.model_hash or "", "Model": Path(b.model_name).stem}
        shown = spec
        if self.network is not None and self.weight != 0 and self.lora_name:
            # A1111 records LoRAs as <lora:name:weight> in the prompt; PNG info then reproduces the image.
            shown = PromptSpec(**{**spec.__dict__, "prompt": f"{spec.prompt} <lora:{self.lora_name}:{self.weight:g}>"})
            if self.lora_hash:
                extra["Lora hashes"] = f'"{self.lora_name}: {self.lora_hash}"'
        extra = {k: v for k, v in extra.items() if v}
        image.info["parameters"] = a1111_parameters(shown, seed, sampler, self.clip_skip, extra)
        image.info["seed"] = seed
        return image

    def sample_prompts(
        self, prompts: str | Path | Sequence[str] | Sequence[PromptSpec], cancel: Callable[[], bool] | None = None
    ) -> Iterator[tuple[str, Any]]:
        """(prompt text, image) for every prompt of a list or prompt file (training previews)."""
        specs: list[PromptSpec]
        if isinstance(prompts, (str, Path)):
            specs = load_prompts(prompts)
        else:  # specs already, or the lines of a prompt file
            given = list(prompts)
            specs = [p for p in given if isinstance(p, PromptSpec)]
            if len(specs) < len(given):
                specs = load_prompts([p for p in given if isinstance(p, str)])
        for spec in specs:
            yield spec.prompt, self.generate(spec, cancel=cancel)


def _step(scheduler: Any, noise: torch.Tensor, t: Any, latents: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    import inspect

    if "generator" in inspect.signature(scheduler.step).parameters:
        return scheduler.step(noise, t, latents, generator=gen).prev_sample
    return scheduler.step(noise, t, latents).prev_sample


def _layout_of(sd: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    downs = {k[: -len(".lora_down.weight")]: tuple(v.shape) for k, v in sd.items() if k.endswith(".lora_down.weight")}
    return {n: (d, tuple(sd[f"{n}.lora_up.weight"].shape)) for n, d in downs.items() if f"{n}.lora_up.weight" in sd}
