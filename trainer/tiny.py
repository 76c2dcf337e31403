"""Tiny random-weight SD1.x models for tests and CPU benches (no download, a few MB).

API (stable, other modules and tests code against it)::

    make_tiny_sd(folder, seed=0) -> Path
        A diffusers folder (unet, vae, text_encoder, tokenizer, scheduler, model_index.json) with the
        SD1 *architecture* (same block types, layer counts and module names as SD1.5, so a LoRA on it
        has the same 192 U-Net / 72 text-encoder modules) but tiny widths. Deterministic from ``seed``;
        loads offline with ``trainer.models.load_sd1`` or ``StableDiffusionPipeline.from_pretrained``.
    make_tiny_single_file(diffusers_folder, out_path) -> Path
        The same weights as an A1111-style single file with the original (LDM) key names:
        ``.safetensors``, or a ``.ckpt`` (``{"state_dict": ...}`` pickle) when ``out_path`` ends in .ckpt.
    diffusers_to_ldm(unet_sd, vae_sd, te_sd, layers_per_block=2) -> dict
        The key renaming behind ``make_tiny_single_file`` (also usable on full-size weights).
    TINY_SIZE = 64
        The image size (pixels) the tiny model is meant for: 64x64 -> 8x8 latents.

The tokenizer is a small byte-level BPE (vocab.json + merges.txt in CLIP's format: 256 byte symbols,
the same with the ``</w>`` end-of-word suffix, learned merges, then the two special tokens) because
CLIP's real vocabulary cannot be downloaded in tests.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

TINY_SIZE = 64
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"

# Words the tiny BPE learns its merges from: booru-style tags, so tokenization looks plausible.
_CORPUS = ["1girl", "solo", "long", "hair", "short", "hair", "blue", "eyes", "red", "eyes", "green", "eyes", "blonde", "hair", "black", "hair", "white", "hair", "smile", "open", "mouth", "looking", "at", "viewer", "simple", "background", "white", "background", "upper", "body", "full", "body", "dress", "skirt", "shirt", "school", "uniform", "hat", "ribbon", "bow", "twintails", "ponytail", "standing", "sitting", "outdoors", "indoors", "sky", "cloud", "tree", "flower", "masterpiece", "best", "quality", "lowres", "bad", "anatomy", "bad", "hands", "worst", "quality", "a", "photo", "of", "a", "cat", "dog", "girl", "boy", "portrait", "character", "kazari", "anime", "illustration"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (printable bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, (chr(c) for c in chars), strict=True))


def _learn_merges(n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE on the fixed corpus; ties broken lexicographically so the result is deterministic."""
    b2u = _bytes_to_unicode()
    words: Counter[tuple[str, ...]] = Counter()
    for w in _CORPUS:
        sym = [b2u[b] for b in w.encode("utf-8")]
        sym[-1] += "</w>"
        words[tuple(sym)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:], strict=False):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: Counter = Counter()
        for word, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges


def write_tiny_tokenizer(folder: Path | str, n_merges: int = 200) -> Path:
    """Write a CLIPTokenizer-compatible vocab.json/merges.txt (+ configs) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges = _learn_merges(n_merges)
    for a, b in merges:
        if a + b not in vocab_list:
            vocab_list.append(a + b)
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=1), encoding="utf-8")
    return folder


def tiny_unet_config() -> dict:
    """SD1 U-Net layout (3 cross-attention down blocks, 2 resnets each, conv proj_in) at tiny width."""
    return {
        "sample_size": TINY_SIZE // 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "block_out_channels": [16, 32, 32, 32],
        "layers_per_block": 2,
        "norm_num_groups": 8,
        "cross_attention_dim": 32,
        "attention_head_dim": 2,
        "use_linear_projection": False,
    }


def tiny_vae_config() -> dict:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [8, 8, 16, 16],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "latent_channels": 4,
        "sample_size": TINY_SIZE,
        "scaling_factor": 0.18215,
    }


def tiny_text_config(vocab_size: int, bos_id: int, eos_id: int) -> dict:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 12,  # as SD1's CLIP-L: 72 LoRA modules, clip_skip up to 12
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "projection_dim": 32,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,
    }


def make_tiny_sd(folder: Path | str, seed: int = 0) -> Path:
    """Build (or rebuild) the tiny SD1 diffusers folder at ``folder`` and return its path."""
    from transformers.utils import logging as hf_logging

    # Importing the pipeline makes transformers note that torchvision is absent (it is not needed);
    # silence that one import without changing the process's logging for later warnings.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    finally:
        hf_logging.set_verbosity(verbosity)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok_dir = write_tiny_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_config())
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**tiny_vae_config())
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_text_config(len(vocab), vocab[BOS], vocab[EOS])))
    from trainer.models import sd1_scheduler_config

    scheduler = PNDMScheduler.from_config(sd1_scheduler_config("pndm"))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # A few-MB model needs no "Writing model shards" bar painted over the caller's output.
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        pipe.save_pretrained(str(folder), safe_serialization=True)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    # Keep our vocab.json/merges.txt next to whatever the tokenizer serialised (tokenizer.json).
    write_tiny_tokenizer(folder / "tokenizer")
    return folder


# ---------------------------------------------------------------------------------------------
# diffusers -> original (LDM / A1111) key names. Facts from the SD1 LDM layout: input_blocks[0] is
# conv_in, then per down block `layers_per_block` (resnet, attention) pairs and one downsampler;
# output_blocks hold `layers_per_block + 1` (resnet, attention[, upsampler]) per up block.
# ---------------------------------------------------------------------------------------------

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_resnet(rest: str) -> str:
    for src, dst in _RESNET.items():
        if rest.startswith(src + "."):
            return dst + rest[len(src) :]
    return rest


def _unet_key(key: str, lpb: int, up_has_attn: list[bool]) -> str:
    p = key.split(".")
    simple = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    for src, dst in simple.items():
        if key.startswith(src + "."):
            return dst + key[len(src) :]
    if p[0] == "down_blocks":
        i = int(p[1])
        if p[2] == "downsamplers":  # down_blocks.i.downsamplers.0.conv.weight
            return f"input_blocks.{(i + 1) * (lpb + 1)}.0.op." + ".".join(p[5:])
        j = int(p[3])
        idx = 1 + i * (lpb + 1) + j
        rest = ".".join(p[4:])
        if p[2] == "resnets":
            return f"input_blocks.{idx}.0.{_rename_resnet(rest)}"
        return f"input_blocks.{idx}.1.{rest}"
    if p[0] == "mid_block":
        j = int(p[2])
        rest = ".".join(p[3:])
        if p[1] == "resnets":
            return f"middle_block.{2 * j}.{_rename_resnet(rest)}"
        return f"middle_block.1.{rest}"
    if p[0] == "up_blocks":
        i = int(p[1])
        if p[2] == "upsamplers":
            slot = 2 if up_has_attn[i] else 1
            return f"output_blocks.{i * (lpb + 1) + lpb}.{slot}.conv." + ".".join(p[5:])
        j = int(p[3])
        idx = i * (lpb + 1) + j
        rest = ".".join(p[4:])
        if p[2] == "resnets":
            return f"output_blocks.{idx}.0.{_rename_resnet(rest)}"
        return f"output_blocks.{idx}.1.{rest}"
    raise KeyError(f"unexpected U-Net key {key}")


def _vae_key(key: str, n_blocks: int) -> tuple[str, bool]:
    """Return (ldm key, is_attention_linear) — LDM's VAE attention uses 1x1 convs."""
    p = key.split(".")
    if p[0] in ("quant_conv", "post_quant_conv"):
        return key, False
    side = p[0]
    rest = p[1:]
    body = ".".join(rest)
    if rest[0] in ("conv_in", "conv_out"):
        return key, False
    if rest[0] == "conv_norm_out":
        return f"{side}.norm_out." + ".".join(rest[1:]), False
    if rest[0] in ("down_blocks", "up_blocks"):
        i = int(rest[1])
        name = "down" if rest[0] == "down_blocks" else "up"
        level = i if name == "down" else n_blocks - 1 - i
        if rest[2] in ("downsamplers", "upsamplers"):
            sample = "downsample" if name == "down" else "upsample"
            return f"{side}.{name}.{level}.{sample}." + ".".join(rest[4:]), False
        j = int(rest[3])
        tail = ".".join(rest[4:]).replace("conv_shortcut", "nin_shortcut")
        return f"{side}.{name}.{level}.block.{j}.{tail}", False
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            return f"{side}.mid.block_{int(rest[2]) + 1}." + ".".join(rest[3:]), False
        tail = ".".join(rest[3:])
        for src, dst in _VAE_ATTN.items():
            if tail.startswith(src + "."):
                is_linear = src != "group_norm"
                return f"{side}.mid.attn_1.{dst}" + tail[len(src) :], is_linear
    raise KeyError(f"unexpected VAE key {key} ({body})")


def diffusers_to_ldm(
    unet_sd: dict[str, torch.Tensor],
    vae_sd: dict[str, torch.Tensor],
    te_sd: dict[str, torch.Tensor],
    layers_per_block: int = 2,
    up_block_types: list[str] | None = None,
    vae_blocks: int = 4,
) -> dict[str, torch.Tensor]:
    """Rename diffusers state dicts to one original-SD state dict (``model.diffusion_model.`` etc.)."""
    up_types = up_block_types or ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    up_has_attn = ["CrossAttn" in t for t in up_types]
    out: dict[str, torch.Tensor] = {}
    for k, v in unet_sd.items():
        out["model.diffusion_model." + _unet_key(k, layers_per_block, up_has_attn)] = v
    for k, v in vae_sd.items():
        new, is_linear = _vae_key(k, vae_blocks)
        if is_linear and k.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]
        out["first_stage_model." + new] = v
    for k, v in te_sd.items():
        if k.endswith("position_ids"):
            continue
        name = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + name] = v
    return out


def make_tiny_single_file(diffusers_folder: Path | str, out_path: Path | str) -> Path:
    """Write the diffusers folder's weights as an A1111-style ``.safetensors`` or ``.ckpt``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    from trainer.models import EMBEDDED_CONFIG_KEY

    src = Path(diffusers_folder)
    out_path = Path(out_path)
    unet = UNet2DConditionModel.from_pretrained(str(src), subfolder="unet")
    vae = AutoencoderKL.from_pretrained(str(src), subfolder="vae")
    te = CLIPTextModel.from_pretrained(str(src), subfolder="text_encoder")
    sd = diffusers_to_ldm(
        unet.state_dict(),
        vae.state_dict(),
        te.state_dict(),
        layers_per_block=unet.config.layers_per_block,
        up_block_types=list(unet.config.up_block_types),
        vae_blocks=len(vae.config.block_out_channels),
    )
    sd = {k: v.detach().contiguous().clone() for k, v in sd.items()}
    # Real SD1.5 files are converted with the shipped configs; the tiny sizes travel with the file.
    configs = json.dumps(
        {
            "unet": dict(unet.config),
            "vae": dict(vae.config),
            "text_encoder": te.config.to_dict(),
        },
        default=list,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix.lower() == ".ckpt":
        torch.save({"state_dict": sd, "global_step": 0, EMBEDDED_CONFIG_KEY: configs}, out_path)
    else:
        save_file(sd, str(out_path), metadata={EMBEDDED_CONFIG_KEY: configs})
    return out_path
