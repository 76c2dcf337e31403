"""What a single-file SD checkpoint or VAE holds, and its weights in one canonical layout.

API (stable)::

    inspect_keys(entries, path, use_ema=False) -> CheckpointReport
        ``entries``: key -> TensorInfo(dtype name, shape). Reads nothing itself, so a
        ``.safetensors`` file is inspected from its header alone (``read_entries``).
    read_entries(path) -> (entries, wrapped)   # header of a .safetensors; tensors of a .ckpt (mmap)
    inspect_file(path, use_ema=False) -> CheckpointReport
    canonical_sd1(sd, use_ema=False) -> dict    # the weights in the canonical A1111 layout (see below)
    vae_layout(keys) -> "ldm" | "diffusers" | None
    canonical_vae(sd) -> (dict, layout)         # a VAE file's weights without prefix/junk

The canonical SD1 layout is what diffusers' converters expect: ``model.diffusion_model.*``,
``first_stage_model.*`` and ``cond_stage_model.transformer.text_model.*``, no ``position_ids``
(the text encoder builds its own 0..76), no EMA copy, no schedule buffers or junk. Community files
differ from it in ways this module undoes: a ``state_dict`` wrapper, EMA weights beside the
regular ones (``model_ema.<key without dots>``), the old text-encoder layout without
``text_model.``, ``position_ids`` stored as float (often damaged by an fp16 conversion), pruned
files without a VAE, and stray keys (LoRA or ControlNet leftovers).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

UNET = "model.diffusion_model."
VAE = "first_stage_model."
TE = "cond_stage_model.transformer."
TE_NEW = TE + "text_model."
EMA = "model_ema."
POSITION_IDS = TE_NEW + "embeddings.position_ids"
UNET_IN = UNET + "input_blocks.0.0.weight"
CLIP_POS = TE_NEW + "embeddings.position_embedding.weight"
_TE_OLD_PARTS = ("embeddings.", "encoder.", "final_layer_norm.")

# Buffers the original LDM training code saved with every model: expected, carry no weights.
SCHEDULE_BUFFERS = frozenset(
    {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
        "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights",
        "model_ema.decay", "model_ema.num_updates",
    }
)
_EMA_MIN_KEYS = 100  # a few model_ema.* counters are not EMA weights (same threshold as diffusers)


class TensorInfo(NamedTuple):
    dtype: str  # "float16", "float32", "bfloat16", "int64"...
    shape: tuple[int, ...]


@dataclass
class Note:
    level: str  # "ok" | "info" | "warn" | "error"
    message: str


@dataclass
class CheckpointReport:
    path: str
    family: str  # "sd1" | "sdxl" | "sd2" | "inpainting" | "lora" | "vae" | "unknown"
    wrapped: bool = False  # a .ckpt with a {"state_dict": ...} wrapper
    text_encoder_layout: str | None = None  # "new" (text_model.*) | "old"
    precisions: dict[str, dict[str, int]] = field(default_factory=dict)  # component -> dtype -> tensors
    ema_present: bool = False
    weights_used: str = "regular"  # "regular" | "ema"
    vae_present: bool = False
    position_ids: str = "absent"  # "absent" | "int" | "float"
    junk_keys: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    loadable: bool = True
    reason: str | None = None

    def add(self, level: str, message: str) -> None:
        self.notes.append(Note(level, message))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The lint-style report: one line per finding, worst first within the order found."""
        marks = {"ok": "ok  ", "info": "info", "warn": "warn", "error": "FAIL"}
        return [f"{marks.get(n.level, n.level)}  {n.message}" for n in self.notes]


def _component(key: str) -> str:
    if key.startswith(UNET):
        return "unet"
    if key.startswith(VAE):
        return "vae"
    if key.startswith(TE):
        return "text_encoder"
    if key.startswith(EMA):
        return "ema"
    return "other"


def _flat_ema_key(unet_key: str) -> str:
    # LDM's EMA stores "model.diffusion_model.a.b.weight" as "model_ema.diffusion_modelabweight".
    return EMA + "".join(unet_key.split(".")[1:])


def _is_old_te_key(key: str) -> bool:
    return key.startswith(TE) and key[len(TE):].startswith(_TE_OLD_PARTS)


def _ema_keys(keys: Any) -> list[str]:
    return [k for k in keys if k.startswith(EMA) and k not in SCHEDULE_BUFFERS]


def _family(entries: dict[str, TensorInfo]) -> tuple[str, str | None]:
    keys = entries.keys()
    if any(k.startswith("conditioner.embedders.") for k in keys):
        return "sdxl", "an SDXL checkpoint; kazari trains SD1.x LoRAs only"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2", "an SD2.x checkpoint (OpenCLIP text encoder); kazari trains SD1.x LoRAs only"
    if UNET_IN not in entries:
        if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_")) or ".lora_down." in k for k in keys):
            return "lora", "a LoRA, not a base model"
        if vae_layout(keys):
            return "vae", "a VAE, not a base model (use it as [model] vae)"
        return "unknown", f"no Stable Diffusion U-Net (key {UNET_IN} missing)"
    if len(entries[UNET_IN].shape) > 1 and entries[UNET_IN].shape[1] != 4:
        return "inpainting", f"an inpainting/other model ({entries[UNET_IN].shape[1]} U-Net input channels)"
    return "sd1", None


def inspect_keys(entries: dict[str, TensorInfo], path: Path | str, use_ema: bool = False,
                 wrapped: bool = False) -> CheckpointReport:
    """The report for one checkpoint's key -> (dtype, shape) table."""
    family, problem = _family(entries)
    rep = CheckpointReport(path=str(path), family=family, wrapped=wrapped)
    precisions: dict[str, Counter[str]] = {}
    for k, info in entries.items():
        if info.dtype.startswith(("float", "bfloat")) and k not in SCHEDULE_BUFFERS:
            precisions.setdefault(_component(k), Counter())[info.dtype] += 1
    rep.precisions = {c: dict(sorted(cnt.items())) for c, cnt in sorted(precisions.items()) if c != "other"}
    if problem:
        rep.loadable, rep.reason = False, problem
        rep.add("error", f"This file is {problem}.")
        return rep
    rep.add("ok", "SD1.x model (U-Net with 4 input channels, CLIP ViT-L text encoder)")
    if wrapped:
        rep.add("info", "Pickled checkpoint with a state_dict wrapper (read with weights_only=True)")
    mixed = {c: d for c, d in rep.precisions.items() if c != "ema"}
    kinds = sorted({dtype for counts in mixed.values() for dtype in counts})
    if len(kinds) > 1:
        rep.add("info", "Mixed precisions (" + ", ".join(
            f"{c} {'/'.join(d)}" for c, d in mixed.items()) + "); all weights are cast to the training dtype")
    elif kinds:
        rep.add("info", f"Weights in {kinds[0]}; cast to the training dtype as they are read")

    old = [k for k in entries if _is_old_te_key(k)]
    new = any(k.startswith(TE_NEW) for k in entries)
    if old and not new:
        rep.text_encoder_layout = "old"
        rep.add("info", "Text encoder in the old layout (cond_stage_model.transformer.* without text_model.); "
                        "renamed on load")
    elif new:
        rep.text_encoder_layout = "new"
    if rep.text_encoder_layout is None:
        rep.loadable, rep.reason = False, f"no CLIP text encoder (key {CLIP_POS} missing)"
        rep.add("error", f"The file has no CLIP text encoder (key {CLIP_POS} missing).")

    pos = entries.get(POSITION_IDS) or entries.get(TE + "embeddings.position_ids")
    if pos is not None:
        rep.position_ids = "int" if pos.dtype.startswith(("int", "uint")) else "float"
        if rep.position_ids == "float":
            rep.add("warn", "position_ids stored as float (an fp16-conversion artefact that can shift tokens); "
                            "ignored, the text encoder uses 0..76")

    n_ema = len(_ema_keys(entries))
    rep.ema_present = n_ema >= _EMA_MIN_KEYS
    if rep.ema_present:
        rep.weights_used = "ema" if use_ema else "regular"
        if use_ema:
            rep.add("info", f"EMA weights present ({n_ema} tensors) — using EMA ([model] use_ema = true)")
        else:
            rep.add("info", f"EMA weights present ({n_ema} tensors) — using non-EMA "
                            "(set [model] use_ema = true to train on the EMA weights)")
    elif use_ema:
        rep.add("warn", "[model] use_ema is set but the file has no EMA weights — using the regular weights")

    rep.vae_present = any(k.startswith(VAE) for k in entries)
    if rep.vae_present:
        rep.add("ok", "VAE included")
    else:
        rep.add("warn", "No VAE in the file (a pruned model): set [model] vae to an SD1 VAE file, "
                        "e.g. vae-ft-mse-840000-ema-pruned.safetensors")

    rep.junk_keys = sorted(k for k in entries if _component(k) == "other" and k not in SCHEDULE_BUFFERS)
    if rep.junk_keys:
        shown = ", ".join(rep.junk_keys[:3]) + (" ..." if len(rep.junk_keys) > 3 else "")
        rep.add("info", f"{len(rep.junk_keys)} unrelated keys ignored ({shown})")
    return rep


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


SAFETENSORS_DTYPES = {"F16": "float16", "F32": "float32", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
              "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
              "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def read_entries(path: Path) -> tuple[dict[str, TensorInfo], bool]:
    """Key -> TensorInfo without loading weights where the format allows; (entries, wrapped)."""
    import json
    import struct

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > 100_000_000:
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
        return {
            k: TensorInfo(SAFETENSORS_DTYPES.get(v["dtype"], v["dtype"].lower()), tuple(v["shape"]))
            for k, v in header.items()
            if k != "__metadata__"
        }, False
    from trainer.models import (  # ckpt: mmap-loaded tensors (no copy of the weights)
        WRAPPED_KEY,
        read_state_dict,
    )

    sd, meta = read_state_dict(path)
    entries = {k: TensorInfo(_dtype_name(v.dtype), tuple(v.shape)) for k, v in sd.items()}
    return entries, meta.get(WRAPPED_KEY) == "1"


def inspect_file(path: Path | str, use_ema: bool = False) -> CheckpointReport:
    """Inspect a single-file checkpoint; unreadable files give ``UserError`` from the reader."""
    from tagging.errors import UserError

    path = Path(path).expanduser()
    try:
        entries, wrapped = read_entries(path)
    except UserError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{path} is not a readable checkpoint ({err}).", path=path,
                        hint="Re-download it, or check the path.") from err
    return inspect_keys(entries, path, use_ema=use_ema, wrapped=wrapped)


def needed_key(key: str, ema: bool) -> bool:
    """Whether loading reads ``key``: the EMA U-Net or the regular one (never both), VAE, text encoder."""
    if key.startswith(UNET):
        return not ema
    if key.startswith(EMA):
        return ema and key not in SCHEDULE_BUFFERS
    return key.startswith((VAE, TE)) and not key.endswith("position_ids")


def uses_ema(keys: Any, use_ema: bool) -> bool:
    return use_ema and len(_ema_keys(keys)) >= _EMA_MIN_KEYS


def canonical_sd1(sd: dict[str, Any], use_ema: bool = False, keys: Any = None) -> dict[str, Any]:
    """The model's weights in the canonical layout (tensors shared, not copied).

    ``keys``: every key of the file, when ``sd`` holds only the ``needed_key`` ones. With
    ``use_ema`` and EMA weights in the file, every U-Net tensor comes from its EMA copy; a U-Net
    tensor without one raises ``KeyError`` (never a silent mix of EMA and regular weights).
    """
    keys = list(sd) if keys is None else list(keys)
    ema = uses_ema(keys, use_ema)
    out: dict[str, Any] = {}
    for k in keys:
        if k.startswith(UNET):
            out[k] = sd[_flat_ema_key(k)] if ema else sd[k]
        elif k.startswith(VAE):
            out[k] = sd[k]
        elif k.startswith(TE):
            name = TE_NEW + k[len(TE):] if _is_old_te_key(k) else k
            if not name.endswith("embeddings.position_ids"):
                out[name] = sd[k]
    return out


# --------------------------------------------------------------------------------------- VAE files

_VAE_DIFFUSERS_HINTS = ("encoder.down_blocks.", "decoder.up_blocks.", "encoder.mid_block.")
_VAE_LDM_HINTS = ("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")
# Diffusers VAEs saved before 0.15 name the mid-block attention projections differently.
_OLD_DIFFUSERS_ATTN = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def vae_layout(keys: Any) -> str | None:
    """"ldm" (encoder.down.*) or "diffusers" (encoder.down_blocks.*) for bare or prefixed VAE keys."""
    bare = [k.removeprefix(VAE) for k in keys]
    if any(k.startswith(_VAE_DIFFUSERS_HINTS) for k in bare):
        return "diffusers"
    if any(k.startswith(_VAE_LDM_HINTS) for k in bare):
        return "ldm"
    return None


def canonical_vae(sd: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A VAE file's own weights, bare keys (``encoder.*``, ``decoder.*``, ``quant_conv.*``...).

    A full checkpoint given as VAE keeps only its ``first_stage_model.`` part; training leftovers
    (``loss.*`` discriminator, EMA counters) are dropped.
    """
    if any(k.startswith(VAE) for k in sd):
        sd = {k[len(VAE):]: v for k, v in sd.items() if k.startswith(VAE)}
    keep = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
    sd = {k: v for k, v in sd.items() if k.startswith(keep)}
    layout = vae_layout(sd)
    if layout == "diffusers":
        renamed = {}
        for k, v in sd.items():
            if ".attentions." in k:
                for old, new in _OLD_DIFFUSERS_ATTN.items():
                    k = k.replace(old, new)
            renamed[k] = v
        sd = renamed
    return sd, layout


# --------------------------------------------------------------------------------------- whole model


def inspect_vae_file(path: Path | str) -> tuple[str | None, str | None]:
    """(layout, problem) of a separate VAE file; problem None when it looks loadable."""
    path = Path(path).expanduser()
    if path.is_dir():
        ok = (path / "config.json").is_file() or (path / "vae" / "config.json").is_file()
        return ("diffusers", None) if ok else (None, f"{path} has no config.json (not a diffusers VAE folder)")
    entries, _ = read_entries(path)
    if any(k.startswith(UNET) for k in entries):
        entries = {k: v for k, v in entries.items() if k.startswith(VAE)}
    layout = vae_layout(entries)
    return layout, None if layout else f"{path} has no VAE encoder/decoder weights"


def inspect_model(path: Path | str, vae: Path | str | None = None, use_ema: bool = False,
                  load: bool = False, tokenizer: Path | str | None = None) -> CheckpointReport:
    """What training would get from ``path`` (+ ``vae``); ``load`` really loads it on the CPU.

    Raises ``UserError`` only for a path that does not exist (a usage error); everything wrong
    with the files themselves ends in ``report.loadable = False`` with the reason.
    """
    from tagging.errors import UserError

    path = Path(path).expanduser()
    for p, what in ((path, "Model"), (Path(vae).expanduser() if vae else None, "VAE")):
        if p is not None and not p.exists():
            raise UserError(f"{what} {p} does not exist.", path=p, hint="Check the path.")
    if path.is_dir():
        rep = CheckpointReport(path=str(path), family="sd1", text_encoder_layout="diffusers", vae_present=(
            path / "vae").is_dir())
        rep.add("ok", "diffusers model folder (unet/, text_encoder/, vae/)")
    else:
        try:
            rep = inspect_file(path, use_ema=use_ema)
        except UserError as err:
            rep = CheckpointReport(path=str(path), family="unknown", loadable=False, reason=str(err))
            rep.add("error", str(err))
            return rep
    if vae is not None and rep.loadable:
        try:
            layout, problem = inspect_vae_file(vae)
        except (UserError, OSError, ValueError) as err:
            layout, problem = None, str(err)
        if problem:
            rep.loadable, rep.reason = False, problem
            rep.add("error", f"VAE: {problem}")
        else:
            rep.add("ok", f"Separate VAE {Path(vae).name} ({layout} layout) replaces the model's own")
    elif rep.loadable and not rep.vae_present:
        rep.loadable = False
        rep.reason = "the file has no VAE; pass --vae (or set [model] vae) to an SD1 VAE file"
    if load and rep.loadable:
        import torch

        from trainer.models import load_sd1

        try:
            load_sd1(path, vae=vae, tokenizer=tokenizer, dtype=torch.float16, vae_dtype=torch.float32,
                     use_ema=use_ema)
        except UserError as err:
            rep.loadable, rep.reason = False, str(err)
            rep.add("error", f"Loading failed: {err}")
        else:
            rep.add("ok", "Loaded as training loads it (U-Net, text encoder, VAE, tokenizer), offline")
    return rep
