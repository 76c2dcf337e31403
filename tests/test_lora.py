"""LoRANetwork: kohya keys/shapes/counts, init, multiplier, groups, save formats and hashes, grads."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
from safetensors import safe_open

from tagging.errors import UserError
from trainer.lora import LoRAModule, LoRANetwork, count_targets, read_lora_file
from trainer.models import build_sd1_random, load_sd1
from trainer.tiny import make_tiny_sd

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("lora") / "sd")


@pytest.fixture()
def bundle(folder):
    return load_sd1(folder)


def _randomize(net, seed=0, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in net.loras:
            lora.lora_up.weight.normal_(0, std, generator=g)


def _unet_out(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 77, b.unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return b.unet(x, 500, encoder_hidden_states=ctx).sample


def test_full_size_sd15_gets_192_unet_and_72_te_modules_with_kohya_names():
    unet, te, _ = build_sd1_random(device="meta")
    assert count_targets(unet, te) == (192, 72)
    net = LoRANetwork(unet, te, dim=4, alpha=1)
    sd = net.state_dict()
    assert len(sd) == (192 + 72) * 3
    assert sd["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape == (4, 320, 1, 1)
    assert sd["lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"].shape == (320, 4, 1, 1)
    k = "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj"
    assert sd[f"{k}.lora_up.weight"].shape == (10240, 4)
    assert sd["lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k.lora_down.weight"].shape == (4, 768)
    assert sd["lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_up.weight"].shape == (1280, 4)
    assert sd["lora_te_text_model_encoder_layers_11_mlp_fc2.lora_down.weight"].shape == (4, 3072)
    assert sd["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"].ndim == 0
    assert all(k.startswith(("lora_unet_", "lora_te_text_model_encoder_layers_")) for k in sd)
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in sd)
    # LoCon adds the 3x3 convs (and the Linear/1x1 in resnets) of the U-Net
    locon = LoRANetwork(unet, te, dim=4, alpha=1, conv_dim=2, conv_alpha=1).state_dict()
    assert locon["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"].shape == (2, 320, 3, 3)
    assert locon["lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight"].shape == (4, 1280)
    assert "lora_unet_down_blocks_0_downsamplers_0_conv.alpha" in locon
    assert "lora_unet_up_blocks_0_upsamplers_0_conv.alpha" in locon


def test_kohya_init_keeps_the_model_unchanged(bundle):
    before = _unet_out(bundle)
    net = LoRANetwork(bundle.unet, bundle.text_encoder, dim=4, alpha=2)
    assert all(torch.count_nonzero(lora.lora_up.weight) == 0 for lora in net.loras)
    assert all(torch.count_nonzero(lora.lora_down.weight) > 0 for lora in net.loras)
    assert net.loras[0].scale == 0.5
    assert torch.equal(before, _unet_out(bundle))


def test_multiplier_scales_the_update_linearly_and_remove_restores(bundle):
    base = _unet_out(bundle)
    net = LoRANetwork(bundle.unet, bundle.text_encoder, dim=4, alpha=4)
    _randomize(net)
    full = _unet_out(bundle)
    net.multiplier = 0.5
    half = _unet_out(bundle)
    net.multiplier = 0.0
    assert torch.equal(_unet_out(bundle), base)
    assert not torch.allclose(full, base, atol=1e-3)
    assert 0 < (half - base).norm() < (full - base).norm()
    # per module the update is exactly multiplier * scale * up(down(x))
    lora = net.unet_loras[5]
    x = torch.randn(2, lora.org_module.in_features)
    with torch.no_grad():
        net.multiplier = 0.0
        y0 = lora.org_module(x)
        net.multiplier = 0.7
        y7 = lora.org_module(x)
        expected = lora.lora_up(lora.lora_down(x)) * 0.7 * lora.scale
    assert torch.allclose(y7 - y0, expected, atol=1e-5)
    net.multiplier = 1.0
    net.remove()
    assert torch.equal(_unet_out(bundle), base)


def test_unet_only_and_te_only(bundle):
    u = LoRANetwork(bundle.unet, bundle.text_encoder, dim=2, train_text_encoder=False)
    assert u.text_encoder_loras == [] and len(u.unet_loras) == 192
    assert all(k.startswith("lora_unet_") for k in u.state_dict())
    u.remove()
    t = LoRANetwork(bundle.unet, bundle.text_encoder, dim=2, train_unet=False)
    assert t.unet_loras == [] and len(t.text_encoder_loras) == 72
    t.remove()
    with pytest.raises(UserError):
        LoRANetwork(bundle.unet, bundle.text_encoder, train_unet=False, train_text_encoder=False)


def test_param_groups_separate_lrs_and_zero_lr_freezes(bundle):
    net = LoRANetwork(bundle.unet, bundle.text_encoder, dim=2)
    groups = net.param_groups(unet_lr=1e-4, text_encoder_lr=5e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("text_encoder", 5e-5), ("unet", 1e-4)]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    groups = net.param_groups(unet_lr=1e-4, text_encoder_lr=0)
    assert [g["name"] for g in groups] == ["unet"]
    assert not any(p.requires_grad for lora in net.text_encoder_loras for p in lora.parameters())
    torch.optim.AdamW(groups)  # groups are valid optimizer input


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt", "pt"])
def test_save_formats_roundtrip_in_save_precision(bundle, tmp_path, fmt):
    net = LoRANetwork(bundle.unet, bundle.text_encoder, dim=4, alpha=1)
    _randomize(net)
    path = net.save(tmp_path / f"x.{fmt}", {"ss_network_dim": "4", "ss_output_name": "x"}, dtype=torch.float16)
    sd, meta = read_lora_file(path)
    assert set(sd) == set(net.state_dict())
    assert all(v.dtype == torch.float16 for v in sd.values())
    if fmt == "safetensors":
        assert meta["ss_network_dim"] == "4"
        # sshs_model_hash = sha256 of everything after the header (sd-scripts' addnet hash)
        data = path.read_bytes()
        n = int.from_bytes(data[:8], "little")
        assert meta["sshs_model_hash"] == hashlib.sha256(data[8 + n :]).hexdigest()
        assert len(meta["sshs_legacy_hash"]) == 8
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left
    # LoRA params stay fp32 in memory
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_legacy_hash_ignores_non_ss_metadata(bundle, tmp_path):
    net = LoRANetwork(bundle.unet, bundle.text_encoder, dim=4)
    _randomize(net)
    a = net.save(tmp_path / "a.safetensors", {"ss_seed": "1"})
    b = net.save(tmp_path / "b.safetensors", {"ss_seed": "1", "modelspec.title": "x"})
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        ma, mb = fa.metadata(), fb.metadata()
    assert ma["sshs_legacy_hash"] == mb["sshs_legacy_hash"]
    assert ma["sshs_model_hash"] == mb["sshs_model_hash"]


def test_failed_save_keeps_previous_file(bundle, tmp_path, monkeypatch):
    net = LoRANetwork(bundle.unet, bundle.text_encoder, dim=4)
    path = net.save(tmp_path / "keep.safetensors", {})
    before = path.read_bytes()
    _randomize(net)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        net.save(path, {})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]


def test_continue_training_and_from_weights(bundle, folder, tmp_path):
    net = LoRANetwork(bundle.unet, bundle.text_encoder, dim=4, alpha=2, conv_dim=2, conv_alpha=1)
    _randomize(net)
    path = net.save(tmp_path / "w.safetensors", {})
    out = _unet_out(bundle)
    net.remove()

    fresh = load_sd1(folder)
    again = LoRANetwork(fresh.unet, fresh.text_encoder, dim=4, alpha=2, conv_dim=2, conv_alpha=1)
    again.load_weights(path)
    assert torch.allclose(_unet_out(fresh), out, atol=1e-5)
    again.remove()

    other = LoRANetwork.from_weights(path, fresh.unet, fresh.text_encoder)
    assert other.layout() == net.layout()
    assert torch.allclose(_unet_out(fresh), out, atol=1e-5)
    other.remove()

    wrong = LoRANetwork(fresh.unet, fresh.text_encoder, dim=8)
    with pytest.raises(UserError, match="does not match|shape"):
        wrong.load_weights(path)


def test_from_weights_rejects_foreign_keys(bundle, tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "sdxl.safetensors"
    save_file({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 32)}, str(bad))
    with pytest.raises(UserError, match="not an SD1.x LoRA"):
        LoRANetwork.from_weights(bad, bundle.unet, bundle.text_encoder)
    # An already-read state dict still names its file in the message (the grid passes dicts).
    sd = read_lora_file(bad)[0]
    with pytest.raises(UserError, match="sdxl.safetensors is not an SD1.x LoRA"):
        LoRANetwork.from_weights(sd, bundle.unet, bundle.text_encoder, source=bad)


def test_unreadable_lora_files_are_short_user_errors(tmp_path):
    (tmp_path / "cfg.toml").write_text("[model]\n", encoding="utf-8")
    with pytest.raises(UserError, match="is not a LoRA file"):
        read_lora_file(tmp_path / "cfg.toml")
    (tmp_path / "bad.ckpt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="could not be loaded safely") as info:
        read_lora_file(tmp_path / "bad.ckpt")
    assert "weights_only` set to `False`" not in str(info.value)  # never suggest running pickled code


def test_gradient_checkpointing_and_bf16_autocast_train_only_lora(bundle):
    net = LoRANetwork(bundle.unet, bundle.text_encoder, dim=4)
    _randomize(net, std=0.05)
    bundle.unet.enable_gradient_checkpointing()
    bundle.unet.train()
    x = torch.randn(2, 4, 8, 8)
    ctx = torch.randn(2, 77, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bundle.unet(x, torch.tensor([10, 900]), encoder_hidden_states=ctx).sample
    out.float().pow(2).mean().backward()
    grads = [lora.lora_down.weight.grad for lora in net.unet_loras]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in bundle.unet.parameters())
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_lora_on_half_precision_frozen_module_without_autocast():
    org = torch.nn.Linear(8, 8).to(torch.bfloat16)
    lora = LoRAModule("lora_unet_x", org, 4, 4)
    lora.hook()
    torch.nn.init.ones_(lora.lora_up.weight)
    y = org(torch.randn(3, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and lora.lora_up.weight.dtype == torch.float32


def test_modelspec_hash_matches_per_tensor_safetensors_payload(bundle):
    from safetensors.torch import save as st_save

    from trainer.lora import modelspec_sha256

    net = LoRANetwork(bundle.unet, bundle.text_encoder, dim=2)
    sd = {k: v.to(torch.float16) for k, v in net.state_dict().items()}
    h = hashlib.sha256()
    for v in sd.values():
        blob = st_save({"tensor": v})
        h.update(blob[8 + int.from_bytes(blob[:8], "little") :])
    assert modelspec_sha256(sd) == f"0x{h.hexdigest()}"
    assert next(iter(net.state_dict())).startswith("lora_te_")  # sd-scripts order: text encoder first
