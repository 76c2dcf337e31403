"""The client check: diffusers' own kohya loader reproduces kazari's in-process LoRA images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.lora import LoRANetwork
from trainer.models import load_sd1, sd1_scheduler_config
from trainer.tiny import make_tiny_sd

torch.set_num_threads(1)
# diffusers needs peft to load LoRAs: a dev dependency, deliberately not skipped when missing.


def _pipe(b):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=b.vae,
        text_encoder=b.text_encoder,
        tokenizer=b.tokenizer,
        unet=b.unet,
        scheduler=EulerDiscreteScheduler.from_config(sd1_scheduler_config("euler")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _image(pipe):
    return pipe(
        "1girl, smile, blue eyes",
        negative_prompt="lowres",
        num_inference_steps=6,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
    ).images[0]


def _lora_layers(module):
    return sum(1 for _, m in module.named_modules() if hasattr(m, "lora_A") and len(m.lora_A) > 0)


@pytest.mark.parametrize("conv_dim", [None, 2])
def test_diffusers_load_lora_weights_matches_kazari(tmp_path, conv_dim):
    folder = make_tiny_sd(tmp_path / "sd")
    ours = load_sd1(folder)
    base = _image(_pipe(ours))
    net = LoRANetwork(ours.unet, ours.text_encoder, dim=4, alpha=2, conv_dim=conv_dim, conv_alpha=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lora in net.loras:
            lora.lora_up.weight.normal_(0, 0.3, generator=g)
    path = net.save(tmp_path / "char.safetensors", {"ss_network_dim": "4"})
    kazari_img = _image(_pipe(ours))

    theirs = load_sd1(folder)
    pipe = _pipe(theirs)
    pipe.load_lora_weights(str(path))
    diffusers_img = _image(pipe)

    # every module of the file became a LoRA layer in diffusers (no key silently dropped)
    assert _lora_layers(theirs.text_encoder) == len(net.text_encoder_loras) == 72
    assert _lora_layers(theirs.unet) == len(net.unet_loras)
    assert np.abs(kazari_img - base).max() > 0.05  # the LoRA does change the image
    assert np.abs(kazari_img - diffusers_img).max() < 2e-3
