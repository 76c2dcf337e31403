"""The tiny SD1 model: SD1 layout at tiny width, deterministic, offline, faithful single-file export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from trainer.tiny import make_tiny_sd, make_tiny_single_file, write_tiny_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


def test_folder_has_every_component_and_is_small(tiny):
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny / sub).is_dir(), sub
    assert json.loads((tiny / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    size = sum(p.stat().st_size for p in tiny.rglob("*") if p.is_file())
    assert size < 20 * 2**20


def test_same_seed_same_weights_other_seed_differs(tiny, tmp_path):
    again = make_tiny_sd(tmp_path / "again", seed=0)
    other = make_tiny_sd(tmp_path / "other", seed=1)
    a = load_file(str(tiny / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(again / "unet" / "diffusion_pytorch_model.safetensors"))
    c = load_file(str(other / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_tokenizer_is_bpe_with_clip_specials(tmp_path):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(tmp_path / "tok")))
    ids = tok("1girl, long hair").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.pad_token_id == tok.eos_token_id  # as SD1's CLIP tokenizer
    # merges learned from the corpus make common words single tokens, unknown words fall back to bytes
    assert len(tok("hair").input_ids) == 3
    assert len(tok("zqxj").input_ids) > 3
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "1girl,longhair"


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_uses_original_sd_key_names(tiny, tmp_path, suffix):
    out = make_tiny_single_file(tiny, tmp_path / f"tiny{suffix}")
    sd = torch.load(out, weights_only=True)["state_dict"] if suffix == ".ckpt" else load_file(str(out))
    assert "model.diffusion_model.input_blocks.0.0.weight" in sd
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in sd
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in sd  # upsampler of the plain up block
    assert "model.diffusion_model.output_blocks.5.2.conv.weight" in sd  # upsampler after attention
    assert "first_stage_model.decoder.up.3.block.0.conv1.weight" in sd
    assert sd["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in sd
    assert not any(k.startswith("unet.") or "down_blocks" in k for k in sd)
