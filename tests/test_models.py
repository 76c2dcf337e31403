"""Loading SD1.x offline from a diffusers folder, a single .safetensors and a .ckpt; family checks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from tagging.errors import UserError
from trainer.models import (
    SD1_CONFIG_DIR,
    build_sd1_random,
    legacy_model_hash,
    load_sd1,
    sd15_unet_config,
)
from trainer.tiny import make_tiny_sd, make_tiny_single_file

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    folder = make_tiny_sd(root / "sd")
    return {
        "folder": folder,
        "st": make_tiny_single_file(folder, root / "tiny.safetensors"),
        "ckpt": make_tiny_single_file(folder, root / "tiny.ckpt"),
    }


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    return all(torch.equal(sa[k], sb[k].reshape(sa[k].shape)) for k in sa)


def test_folder_loads_offline_with_sd1_training_scheduler(tiny):
    b = load_sd1(tiny["folder"])
    assert b.model_name == "sd"
    assert b.model_hash is None  # folders have no file hash
    s = b.noise_scheduler
    assert type(s).__name__ == "DDPMScheduler"
    assert s.config.num_train_timesteps == 1000 and s.config.beta_schedule == "scaled_linear"
    assert s.config.beta_start == 0.00085 and s.config.beta_end == 0.012 and not s.config.clip_sample
    assert not any(p.requires_grad for p in b.unet.parameters())
    assert b.vae_scale_factor == 8


@pytest.mark.parametrize("kind", ["st", "ckpt"])
def test_single_file_gives_the_folder_weights(tiny, kind):
    ref = load_sd1(tiny["folder"])
    b = load_sd1(tiny[kind], tokenizer=tiny["folder"])
    assert _same(ref.unet, b.unet) and _same(ref.text_encoder, b.text_encoder) and _same(ref.vae, b.vae)
    assert b.model_hash == legacy_model_hash(tiny[kind]) and len(b.model_hash) == 8
    assert len(b.model_sha256) == 64


def test_dtype_and_separate_vae(tiny, tmp_path):
    # a standalone VAE file with bare LDM keys (as vae-ft-mse-*.safetensors)
    from safetensors.torch import load_file

    sd = load_file(str(tiny["st"]))
    vae_sd = {k.removeprefix("first_stage_model."): v * 0 + 0.5 for k, v in sd.items() if k.startswith("first_stage_model.")}
    vae_file = tmp_path / "my.vae.safetensors"
    save_file(vae_sd, str(vae_file))
    b = load_sd1(tiny["st"], vae=vae_file, tokenizer=tiny["folder"], dtype=torch.bfloat16, vae_dtype=torch.float32)
    assert b.unet.dtype == torch.bfloat16 and b.text_encoder.dtype == torch.bfloat16
    assert b.vae.dtype == torch.float32
    assert torch.all(b.vae.decoder.conv_out.weight == 0.5)
    assert b.vae_name == "my.vae.safetensors" and len(b.vae_hash) == 8


class _Payload:
    """Stands for arbitrary code in a pickle: weights_only loading must refuse it."""


def test_ckpt_with_code_objects_is_refused(tiny, tmp_path):
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload()}, bad)
    with pytest.raises(UserError, match="weights_only=True"):
        load_sd1(bad, tokenizer=tiny["folder"])


def test_wrong_families_are_named(tmp_path):
    x = torch.zeros(1)
    cases = {
        "sdxl.safetensors": ({"conditioner.embedders.1.model.ln_final.weight": x}, "SDXL"),
        "sd2.safetensors": ({"cond_stage_model.model.ln_final.weight": x}, "SD2"),
        "lora.safetensors": ({"lora_unet_x.alpha": x}, "no Stable Diffusion U-Net"),
        "inpaint.safetensors": ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 9, 3, 3)}, "inpainting"),
    }
    for name, (sd, words) in cases.items():
        save_file(sd, str(tmp_path / name))
        with pytest.raises(UserError, match=words) as info:
            load_sd1(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


def test_wrong_family_folders(tiny, tmp_path):
    for change, words in (({"cross_attention_dim": 1024}, "SD2"), ({"cross_attention_dim": 2048}, "SDXL")):
        folder = tmp_path / f"m{change['cross_attention_dim']}"
        (folder / "unet").mkdir(parents=True)
        cfg = json.loads((tiny["folder"] / "unet" / "config.json").read_text())
        (folder / "unet" / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(UserError, match=words):
            load_sd1(folder)
    vpred = tmp_path / "vpred"
    shutil.copytree(tiny["folder"], vpred)
    cfg_file = vpred / "scheduler" / "scheduler_config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "prediction_type": "v_prediction"}))
    with pytest.raises(UserError, match="v-prediction"):
        load_sd1(vpred)


def test_missing_model_and_missing_tokenizer_are_clear(tiny, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        load_sd1(tmp_path / "nope.safetensors")
    with pytest.raises(UserError, match="Tokenizer folder"):
        load_sd1(tiny["st"], tokenizer=tmp_path / "no-tok")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError, match=r"\[model\] tokenizer"):
        load_sd1(tiny["st"])


def test_full_size_sd15_architecture_builds_on_meta():
    unet, te, vae = build_sd1_random(device="meta")
    assert unet.config.block_out_channels == (320, 640, 1280, 1280) or list(unet.config.block_out_channels) == [320, 640, 1280, 1280]
    assert te.config.hidden_size == 768 and te.config.num_hidden_layers == 12
    assert sum(p.numel() for p in unet.parameters()) == pytest.approx(859.5e6, rel=0.01)
    assert sum(p.numel() for p in te.parameters()) == pytest.approx(123.1e6, rel=0.01)
    assert sd15_unet_config()["cross_attention_dim"] == 768
    assert (SD1_CONFIG_DIR / "scheduler.json").is_file()


def test_sd15_single_file_layout_converts_with_the_shipped_configs(tmp_path):
    """A1111 SD1.5 key names (from our reverse mapping) go back onto the shipped architecture through
    diffusers' own converters: the shipped configs and the mapping agree on every tensor (meta device)."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    from trainer.models import _config_dir_for
    from trainer.tiny import diffusers_to_ldm

    unet, te, vae = build_sd1_random(device="meta")
    ldm = diffusers_to_ldm(unet.state_dict(), vae.state_dict(), te.state_dict())
    cfg_dir = _config_dir_for(tmp_path / "model.safetensors", ldm, {}, tmp_path / "cfg")
    assert json.loads((cfg_dir / "unet" / "config.json").read_text()) == sd15_unet_config()
    for ours, theirs in (
        (unet.state_dict(), convert_ldm_unet_checkpoint(ldm, dict(unet.config))),
        (vae.state_dict(), convert_ldm_vae_checkpoint(ldm, dict(vae.config))),
        (te.state_dict(), {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(ldm).items()}),
    ):
        ours = {k: v for k, v in ours.items() if not k.endswith("position_ids")}
        assert set(ours) == set(theirs)
        assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_a1111_extras_and_fp16_file_load(tiny, tmp_path):
    """Real A1111 files carry position_ids, EMA counters and schedule tensors, often in fp16."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    sd = load_file(str(tiny["st"]))
    with safe_open(str(tiny["st"]), "pt") as f:
        meta = f.metadata()
    sd = {k: v.half() for k, v in sd.items()}
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    sd["alphas_cumprod"] = torch.ones(1000)
    sd["model_ema.num_updates"] = torch.tensor(0)
    save_file(sd, str(tmp_path / "a1111.safetensors"), metadata=meta)
    b = load_sd1(tmp_path / "a1111.safetensors", tokenizer=tiny["folder"])
    ref = load_sd1(tiny["folder"])
    assert b.unet.dtype == torch.float32
    w, w_ref = b.unet.conv_in.weight, ref.unet.conv_in.weight
    assert torch.allclose(w, w_ref, atol=1e-3) and not torch.equal(w, w_ref)  # went through fp16
