"""Sampler on the tiny model: seeds, LoRA weight, samplers, long prompts, PNG parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tagging.errors import UserError
from trainer.lora import LoRANetwork
from trainer.models import load_sd1
from trainer.sampling import Sampler, make_scheduler, save_png
from trainer.tiny import make_tiny_sd

torch.set_num_threads(1)
LINE = "1girl, smile --n lowres --w 64 --h 64 --s 4 --l 6"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sampling") / "sd")


@pytest.fixture(scope="module")
def lora_file(folder, tmp_path_factory):
    b = load_sd1(folder)
    net = LoRANetwork(b.unet, b.text_encoder, dim=4, alpha=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lora in net.loras:
            lora.lora_up.weight.normal_(0, 0.2, generator=g)
    return net.save(tmp_path_factory.mktemp("l") / "char.safetensors", {"ss_output_name": "char"})


def _arr(img):
    return np.asarray(img, dtype=np.float32)


def test_same_seed_same_image_other_seed_differs(folder):
    s = Sampler(load_sd1(folder), "euler_a")
    a, b, c = s.generate(LINE, seed=7), s.generate(LINE, seed=7), s.generate(LINE, seed=8)
    assert a.size == (64, 64) and a.mode == "RGB"
    assert np.array_equal(_arr(a), _arr(b))
    assert not np.array_equal(_arr(a), _arr(c))
    assert a.info["seed"] == 7


def test_weight_zero_is_the_base_model_and_distance_grows_with_weight(folder, lora_file):
    base = Sampler(load_sd1(folder), "euler").generate(LINE, seed=3)
    s = Sampler(load_sd1(folder), "euler")
    s.set_lora(lora_file)
    imgs = {w: s.generate(LINE, seed=3, weight=w) for w in (0.0, 0.5, 1.0)}
    assert np.array_equal(_arr(imgs[0.0]), _arr(base))
    d = {w: np.abs(_arr(imgs[w]) - _arr(base)).mean() for w in imgs}
    assert 0 == d[0.0] < d[0.5] < d[1.0]


@pytest.mark.parametrize("name", ["euler_a", "euler", "dpmpp_2m_karras", "ddim", "DPM++ 2M Karras", "k_euler_a"])
def test_samplers(folder, name):
    img = Sampler(load_sd1(folder), name).generate(LINE, seed=1)
    assert np.isfinite(_arr(img)).all() and _arr(img).std() > 0
    assert type(make_scheduler(name)).__name__.endswith("Scheduler")


def test_unknown_sampler_is_user_error(folder):
    with pytest.raises(UserError, match="Unknown sampler"):
        Sampler(load_sd1(folder), "warp_drive")


def test_long_prompt_and_clip_skip_change_conditioning(folder):
    b = load_sd1(folder)
    long = ", ".join(["long hair", "blue eyes", "smile"] * 30)
    s75, s225 = Sampler(b, "euler", max_token_length=75), Sampler(b, "euler", max_token_length=225)
    assert s225.encode([long]).shape[1] == 227 and s75.encode([long]).shape[1] == 77
    tail_differs = Sampler(b, "euler", max_token_length=225).generate(f"{long} --w 64 --h 64 --s 3", seed=1)
    head_only = Sampler(b, "euler", max_token_length=75).generate(f"{long} --w 64 --h 64 --s 3", seed=1)
    assert not np.array_equal(_arr(tail_differs), _arr(head_only))
    skip2 = Sampler(b, "euler", clip_skip=2).generate(LINE, seed=1)
    skip1 = Sampler(b, "euler", clip_skip=1).generate(LINE, seed=1)
    assert not np.array_equal(_arr(skip1), _arr(skip2))


def test_png_has_a1111_parameters(folder, lora_file, tmp_path):
    s = Sampler(load_sd1(folder), "dpmpp_2m_karras", clip_skip=2)
    s.set_lora(lora_file, weight=0.8)
    path = save_png(s.generate(LINE, seed=42), tmp_path / "x.png")
    text = Image.open(path).text["parameters"]
    first, neg, params = text.split("\n")
    assert first == "1girl, smile <lora:char:0.8>"
    assert neg == "Negative prompt: lowres"
    assert "Steps: 4, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 42, Size: 64x64" in params
    assert "Clip skip: 2" in params and "Lora hashes:" in params


def test_sample_prompts_yields_each_prompt(folder):
    s = Sampler(load_sd1(folder), "euler_a")
    out = list(s.sample_prompts(["a --w 64 --h 64 --s 2 --d 1", "# skip", "b --w 64 --h 64 --s 2 --d 2"]))
    assert [p for p, _ in out] == ["a", "b"]
    assert all(isinstance(img, Image.Image) for _, img in out)


def test_generation_leaves_global_rng_streams_alone(folder):
    import random

    s = Sampler(load_sd1(folder), "euler_a")
    py_state, torch_state = random.getstate(), torch.random.get_rng_state()
    img = s.generate("x --w 64 --h 64 --s 2")  # random seed picked
    assert random.getstate() == py_state and torch.equal(torch.random.get_rng_state(), torch_state)
    assert 0 <= img.info["seed"] < 2**31
