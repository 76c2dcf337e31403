"""Full-size SD1.5 single files in the shapes found in the wild load with the file's exact weights.

The files are written once for this module from one random fp16 state dict (``trainer.sd15_random``;
about 2 GB each): the canonical A1111 layout, a wrapped ``.ckpt`` in the old text-encoder layout
with float position_ids, schedule buffers and junk, a pruned (no VAE) mixed-precision file with EMA
weights, and separate VAE files in three layouts. Every loaded tensor is compared with the file.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tagging.errors import UserError
from trainer.checkpoint_inspect import EMA, TE, TE_NEW, UNET, VAE, inspect_file
from trainer.models import load_sd1, sd15_vae_config
from trainer.sd15_random import random_sd15_state_dict
from trainer.tiny import diffusers_to_ldm, write_tiny_tokenizer

pytestmark = pytest.mark.slow

JUNK = {
    "control_model.zero_convs.0.0.weight": torch.zeros(4, 4),
    "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha": torch.tensor(1.0),
    "embedding_manager.embedder.weight": torch.zeros(2, 2),
}
SCHEDULE = {"alphas_cumprod": torch.linspace(1, 0, 1000), "betas": torch.linspace(0, 1, 1000),
            "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7, dtype=torch.int32)}


def _ema_key(k: str) -> str:
    return EMA + "".join(k.split(".")[1:])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd15")
    out = {"tok": write_tiny_tokenizer(root / "tok")}
    sd = random_sd15_state_dict(torch.float16, seed=1)

    out["canonical"] = root / "canonical.safetensors"
    save_file(sd, str(out["canonical"]))

    # .ckpt wrapper, old text-encoder layout, damaged float position_ids, buffers and junk.
    old = {(TE + k[len(TE_NEW):] if k.startswith(TE_NEW) else k): v for k, v in sd.items()}
    old[TE + "embeddings.position_ids"] = (torch.arange(77) + 0.3).half()[None]
    out["wrapped_old"] = root / "wrapped_old.ckpt"
    torch.save({"state_dict": {**old, **SCHEDULE, **JUNK}, "global_step": 470000}, out["wrapped_old"])
    del old

    # Pruned (no VAE), text encoder in fp32, EMA in bf16, int position_ids.
    pruned = {k: v for k, v in sd.items() if not k.startswith(VAE)}
    pruned.update({k: v.float() for k, v in pruned.items() if k.startswith(TE)})
    pruned.update({_ema_key(k): (v + 0.5).bfloat16() for k, v in sd.items() if k.startswith(UNET)})
    pruned[TE_NEW + "embeddings.position_ids"] = torch.arange(77)[None]
    out["pruned_ema"] = root / "pruned_ema_mixed.safetensors"
    save_file({**pruned, **SCHEDULE}, str(out["pruned_ema"]))
    del pruned

    vae = {k: v for k, v in sd.items() if k.startswith(VAE)}
    out["vae_ldm"] = root / "vae-ldm.safetensors"
    save_file({k[len(VAE):]: v for k, v in vae.items()}, str(out["vae_ldm"]))
    out["vae_prefixed"] = root / "vae-prefixed.ckpt"
    torch.save({"state_dict": {**vae, "loss.discriminator.main.0.weight": torch.zeros(3)}}, out["vae_prefixed"])
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    out["vae_diffusers"] = root / "vae-diffusers.pt"
    torch.save(convert_ldm_vae_checkpoint(vae, sd15_vae_config()), out["vae_diffusers"])
    del sd, vae
    return out


def _loaded_ldm(b) -> dict[str, torch.Tensor]:
    return diffusers_to_ldm(b.unet.state_dict(), b.vae.state_dict(), b.text_encoder.state_dict())


def _expected(path, rename=lambda k: k, keep=lambda k: True):
    with safe_open(str(path), "pt") as f:
        for k in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            if keep(k) and not k.endswith("position_ids"):  # rebuilt by the text encoder, not loaded
                yield rename(k), f.get_tensor(k)


ALL_BLOCKS = ("model.diffusion_model.input_blocks", "model.diffusion_model.middle_block",
              "model.diffusion_model.output_blocks", "first_stage_model.encoder.down",
              "first_stage_model.decoder.up", "cond_stage_model.transformer.text_model")


def _assert_weights(got: dict[str, torch.Tensor], expected, min_count: int, blocks_needed=ALL_BLOCKS) -> None:
    n = 0
    blocks = set()
    for k, v in expected:
        assert k in got, f"{k} not in the loaded model"
        assert torch.equal(got[k], v.to(got[k].dtype)), f"{k} differs from the file"
        n += 1
        blocks.add(".".join(k.split(".")[:3]))
    assert n >= min_count
    # every top-level block of the U-Net, VAE and text encoder was compared
    for b in blocks_needed:
        assert any(x.startswith(b) for x in blocks), b


def test_canonical_fp16_file_loads_with_its_exact_weights(files):
    b = load_sd1(files["canonical"], tokenizer=files["tok"], dtype=torch.float16, vae_dtype=torch.float16)
    assert b.unet.dtype == torch.float16
    _assert_weights(_loaded_ldm(b), _expected(files["canonical"]), min_count=1130)
    assert [n.level for n in b.report.notes] == ["ok", "info", "ok"]


def test_wrapped_ckpt_in_old_layout_gives_the_canonical_model(files):
    ref = load_sd1(files["canonical"], tokenizer=files["tok"], dtype=torch.float16, vae_dtype=torch.float16)
    b = load_sd1(files["wrapped_old"], tokenizer=files["tok"], dtype=torch.float16, vae_dtype=torch.float16)
    for a, c in ((ref.unet, b.unet), (ref.text_encoder, b.text_encoder), (ref.vae, b.vae)):
        sa, sc = a.state_dict(), c.state_dict()
        assert set(sa) == set(sc) and all(torch.equal(sa[k], sc[k]) for k in sa)
    for name, buf in b.text_encoder.named_buffers():  # the damaged float ids are not used
        if name.endswith("position_ids"):
            assert torch.equal(buf.flatten()[:77], torch.arange(77))
    r = b.report
    assert r.wrapped and r.text_encoder_layout == "old" and r.position_ids == "float"
    assert sorted(r.junk_keys) == sorted(JUNK)
    text = "\n".join(r.lines())
    assert "old layout" in text and "3 unrelated keys ignored" in text and "position_ids stored as float" in text


def test_pruned_file_requires_a_vae(files):
    with pytest.raises(UserError, match="no VAE weights") as info:
        load_sd1(files["pruned_ema"], tokenizer=files["tok"], dtype=torch.float16)
    assert "[model] vae" in str(info.value) and str(files["pruned_ema"]) in str(info.value)


def test_mixed_pruned_ema_file_uses_regular_weights_by_default(files):
    # fp16 keeps the module's memory low; the fp32 text encoder is still cast as it is read
    b = load_sd1(files["pruned_ema"], vae=files["vae_ldm"], tokenizer=files["tok"], dtype=torch.float16,
                 vae_dtype=torch.float32)
    assert b.text_encoder.dtype == torch.float16 and b.vae.dtype == torch.float32
    got = _loaded_ldm(b)
    _assert_weights(got, list(_expected(files["pruned_ema"], keep=lambda k: k.startswith((UNET, TE))))
                    + list(_expected(files["vae_ldm"], rename=lambda k: VAE + k)), min_count=1130)
    r = b.report
    assert r.ema_present and r.weights_used == "regular"
    assert r.precisions["unet"] == {"float16": 686} and r.precisions["text_encoder"] == {"float32": 196}
    assert r.precisions["ema"] == {"bfloat16": 686}
    text = "\n".join(r.lines())
    assert "EMA weights present (686 tensors) — using non-EMA" in text and "VAE from vae-ldm.safetensors" in text
    assert "Mixed precisions" in text


def test_use_ema_takes_the_ema_unet_and_a_prefixed_ckpt_vae(files):
    b = load_sd1(files["pruned_ema"], vae=files["vae_prefixed"], tokenizer=files["tok"], dtype=torch.bfloat16,
                 vae_dtype=torch.float16, use_ema=True)
    got = _loaded_ldm(b)
    with safe_open(str(files["pruned_ema"]), "pt") as f:
        unet_keys = [k for k in f.keys() if k.startswith(UNET)]  # noqa: SIM118
        for k in unet_keys:
            assert torch.equal(got[k], f.get_tensor(_ema_key(k)).to(torch.bfloat16)), k
            assert not torch.equal(got[k], f.get_tensor(k).to(torch.bfloat16)), k
    _assert_weights(got, list(_expected(files["pruned_ema"], keep=lambda k: k.startswith(TE)))
                    + list(_expected(files["canonical"], keep=lambda k: k.startswith(VAE))), min_count=400,
                    blocks_needed=ALL_BLOCKS[3:])
    assert b.vae.dtype == torch.float16 and b.report.weights_used == "ema"


def test_diffusers_layout_vae_file_matches_the_ldm_one(files):
    b = load_sd1(files["canonical"], vae=files["vae_diffusers"], tokenizer=files["tok"], dtype=torch.float16,
                 vae_dtype=torch.float32)
    assert b.vae.dtype == torch.float32
    _assert_weights(_loaded_ldm(b), _expected(files["canonical"]), min_count=1130)


def test_inspect_reads_only_headers_and_names_every_feature(files):
    r = inspect_file(files["pruned_ema"])
    assert r.family == "sd1" and r.loadable and not r.vae_present and r.ema_present
    assert r.position_ids == "int" and r.text_encoder_layout == "new"
    assert inspect_file(files["pruned_ema"], use_ema=True).weights_used == "ema"
    v = inspect_file(files["vae_ldm"])
    assert v.family == "vae" and not v.loadable and "[model] vae" in v.reason
