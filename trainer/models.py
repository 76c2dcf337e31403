"""Load an SD1.x base model (single file or diffusers folder) into one bundle, offline.

API (stable)::

    bundle = load_sd1(path, vae=None, tokenizer=None, dtype=torch.float32, device="cpu",
                      vae_dtype=None, config=None)
    bundle.unet / .text_encoder / .vae / .tokenizer   # diffusers / transformers modules, frozen (eval)
    bundle.noise_scheduler                             # DDPMScheduler with SD1's training betas
    bundle.model_name                                  # file or folder name (for ss_sd_model_name)
    bundle.model_hash / bundle.model_sha256            # legacy 8-hex and full sha256 (lazy; None for folders)
    bundle.vae_name, bundle.vae_hash, bundle.vae_sha256
    bundle.path, bundle.device, bundle.dtype, bundle.vae_scale_factor

    sd1_scheduler_config(kind="ddpm") -> dict           # SD1 betas for any diffusers scheduler class
    sd15_unet_config() / sd15_vae_config() / sd15_text_config() -> dict   # full-size SD1.5 shapes
    build_sd1_random(device="cpu", dtype=torch.float32, config_dir=None) -> (unet, text_encoder, vae)
        random weights with the SD1.5 architecture (or ``config_dir``'s) — for benches, no download.
    SD1_CONFIG_DIR                                     # the shipped configs (trainer/sd1_configs/*.json)
    write_sd1_configs(folder, configs=None) -> folder  # as a diffusers config folder (from_single_file)

Single files (``.safetensors``, ``.ckpt``/``.pt`` read with ``weights_only=True``) are converted with
diffusers' ``from_single_file`` using component configs that never come from the network: the
``config`` argument, else the configs embedded by ``trainer.tiny`` (metadata key
``kazari.sd1_configs``), else the shipped SD1.5 configs when the tensor shapes are SD1.5's.
Every user mistake (missing file, SDXL/SD2/inpainting model, unreadable pickle, no tokenizer) is a
``UserError`` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tagging.errors import UserError
from trainer.checkpoint_inspect import (
    SAFETENSORS_DTYPES,
    CheckpointReport,
    TensorInfo,
    canonical_sd1,
    canonical_vae,
    inspect_keys,
    needed_key,
    uses_ema,
)

_log = logging.getLogger("kazari.model")
SD1_CONFIG_DIR = Path(__file__).with_name("sd1_configs")
CLIP_TOKENIZER_REPO = "openai/clip-vit-large-patch14"
EMBEDDED_CONFIG_KEY = "kazari.sd1_configs"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

_SD1_BETAS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def sd1_scheduler_config(kind: str = "ddpm") -> dict[str, Any]:
    """SD1's noise schedule as a diffusers scheduler config (``clip_sample`` off, as sd-scripts)."""
    cfg: dict[str, Any] = dict(_SD1_BETAS, clip_sample=False, prediction_type="epsilon")
    if kind == "pndm":
        cfg.update(skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    elif kind in ("ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras"):
        cfg.update(steps_offset=1, set_alpha_to_one=False)
    return cfg


_COMPONENTS = ("unet", "vae", "text_encoder", "scheduler")


def _config_name(component: str) -> str:
    return "scheduler_config.json" if component == "scheduler" else "config.json"


def _read_config(component: str, config_dir: Path | None = None) -> dict[str, Any]:
    """A component config from a diffusers-layout ``config_dir``, else the shipped SD1.5 one."""
    path = config_dir / component / _config_name(component) if config_dir else SD1_CONFIG_DIR / f"{component}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def write_sd1_configs(folder: Path, configs: dict[str, dict[str, Any]] | None = None) -> Path:
    """Lay out component configs (default: the shipped SD1.5 ones) as a diffusers config folder."""
    configs = configs or {c: _read_config(c) for c in _COMPONENTS}
    for component, cfg in configs.items():
        (folder / component).mkdir(parents=True, exist_ok=True)
        (folder / component / _config_name(component)).write_text(json.dumps(cfg), encoding="utf-8")
    return folder


def sd15_unet_config() -> dict[str, Any]:
    return _read_config("unet")


def sd15_vae_config() -> dict[str, Any]:
    return _read_config("vae")


def sd15_text_config() -> dict[str, Any]:
    return _read_config("text_encoder")


def _init_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k != "architectures"}


def build_sd1_random(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config_dir: Path | None = None,
) -> tuple[Any, Any, Any]:
    """Random-weight U-Net, CLIP text encoder and VAE with SD1.5's architecture (for benches).

    ``device="meta"`` builds the modules without allocating weights (for counting modules).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        unet = UNet2DConditionModel(**_init_kwargs(_read_config("unet", config_dir)))
        vae = AutoencoderKL(**_init_kwargs(_read_config("vae", config_dir)))
        te_cfg = _init_kwargs(_read_config("text_encoder", config_dir))
        te_cfg.pop("model_type", None)
        text_encoder: torch.nn.Module = CLIPTextModel(CLIPTextConfig(**te_cfg))
    if str(device) != "meta" and dtype != torch.float32:
        unet, vae, text_encoder = (m.to(dtype=dtype) for m in (unet, vae, text_encoder))
    return unet, text_encoder, vae


# --------------------------------------------------------------------------------------- hashes


def legacy_model_hash(path: Path) -> str:
    """A1111's old 8-hex model hash (sha256 of 64 KiB at offset 1 MiB), as ``ss_sd_model_hash``."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------- bundle


@dataclass
class SD1Bundle:
    unet: Any
    text_encoder: Any
    vae: Any
    tokenizer: Any
    noise_scheduler: Any
    path: Path
    vae_path: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    report: CheckpointReport | None = None  # what the single file held (None for diffusers folders)
    _hashes: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def model_name(self) -> str:
        return self.path.name

    @property
    def vae_name(self) -> str | None:
        return self.vae_path.name if self.vae_path else None

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _hash(self, key: str, path: Path | None, fn) -> str | None:
        if key not in self._hashes:
            self._hashes[key] = fn(path) if path is not None and path.is_file() else None
        return self._hashes[key]

    @property
    def model_hash(self) -> str | None:
        return self._hash("model", self.path, legacy_model_hash)

    @property
    def model_sha256(self) -> str | None:
        return self._hash("model256", self.path, file_sha256)

    @property
    def vae_hash(self) -> str | None:
        return self._hash("vae", self.vae_path, legacy_model_hash)

    @property
    def vae_sha256(self) -> str | None:
        return self._hash("vae256", self.vae_path, file_sha256)


# --------------------------------------------------------------------------------------- loading


def _first_line(err: Exception) -> str:
    line = (str(err).strip().splitlines() or [""])[0]
    # torch's weights_only refusal starts with advice to disable it: keep only what went wrong.
    return "not a plain tensor pickle" if line.startswith("Weights only load failed") else line[:200]


WRAPPED_KEY = "kazari.wrapped"  # metadata marker: the .ckpt held a {"state_dict": ...} wrapper


def _cast(key: str, t: torch.Tensor, dtype: torch.dtype | None, vae_dtype: torch.dtype | None) -> torch.Tensor:
    want = vae_dtype if key.startswith("first_stage_model.") and vae_dtype is not None else dtype
    if want is None or not t.is_floating_point() or t.dtype == want:
        return t
    return t.to(want)


def read_state_dict(
    path: Path,
    dtype: torch.dtype | None = None,
    vae_dtype: torch.dtype | None = None,
    entries: dict[str, TensorInfo] | None = None,
    want: Callable[[str], bool] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and (safetensors) metadata of a checkpoint; pickles only with ``weights_only=True``.

    Float tensors are cast to ``dtype`` (``first_stage_model.*`` to ``vae_dtype``) one at a time as
    they are read, so a mixed fp16/fp32 file never exists twice in memory; both files are mapped
    (safetensors' mmap, ``torch.load(mmap=True)``) rather than read whole first. ``entries``, if
    given, receives each tensor's dtype and shape as stored in the file (for the report); ``want``
    limits which tensors are read (a .safetensors' others are never touched).
    """

    def take(key: str, t: torch.Tensor) -> torch.Tensor:
        if entries is not None:
            entries[key] = TensorInfo(str(t.dtype).removeprefix("torch."), tuple(t.shape))
        return _cast(key, t, dtype, vae_dtype)

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata: dict[str, str] = dict(f.metadata() or {})
                sd = {}
                for k in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if want is None or want(k):
                        sd[k] = take(k, f.get_tensor(k))
                    elif entries is not None:
                        sl = f.get_slice(k)
                        entries[k] = TensorInfo(SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype()), tuple(sl.get_shape()))
            return sd, metadata
        except Exception as err:  # corrupt header, truncated download...
            raise UserError(
                f"{path} is not a readable .safetensors file ({err}).",
                path=path,
                hint="Re-download it, or point the setting at another checkpoint.",
            ) from err
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):  # only the legacy (pre-zip) format cannot be mapped
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        # Not torch's own text: it runs to a page and suggests weights_only=False, which kazari will not do.
        raise UserError(
            f"{path} could not be loaded safely as a checkpoint ({type(err).__name__}: "
            f"{_first_line(err)}). kazari only reads pickled checkpoints with torch.load(weights_only=True), "
            "which refuses damaged files and files that hold more than tensors (code, training callbacks).",
            path=path,
            hint="Use the .safetensors version of this model, or convert the file to .safetensors.",
        ) from err
    metadata = {}
    if isinstance(obj, dict) and isinstance(obj.get(EMBEDDED_CONFIG_KEY), str):
        metadata[EMBEDDED_CONFIG_KEY] = obj[EMBEDDED_CONFIG_KEY]
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
        metadata[WRAPPED_KEY] = "1"
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not contain a state dict.", path=path)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if entries is not None:
        entries.update({k: TensorInfo(str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in tensors.items()})
    return {k: _cast(k, v, dtype, vae_dtype) for k, v in tensors.items() if want is None or want(k)}, metadata


def _safetensors_keys(path: Path) -> list[str]:
    from trainer.checkpoint_inspect import read_entries

    try:
        return list(read_entries(path)[0])
    except (OSError, ValueError):
        return []  # read_state_dict gives the error with the fix


_UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
_UNET_ATTN2_K = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_CLIP_POS = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"


def _wrong_family(path: Path, what: str) -> UserError:
    return UserError(
        f"{path} is {what}, but kazari trains LoRAs for Stable Diffusion 1.x only.",
        path=path,
        hint="Choose an SD1.x checkpoint (e.g. an SD1.5-based anime model) as [model] pretrained_model.",
    )


def check_single_file_family(path: Path, sd: Mapping[str, torch.Tensor | None]) -> None:
    """Reject SDXL, SD2 (OpenCLIP, incl. v-prediction) and inpainting checkpoints with a clear message.

    ``sd`` holds every key of the file; a key whose tensor was not read maps to None.
    """
    if any(k.startswith("conditioner.embedders.") for k in sd):
        raise _wrong_family(path, "an SDXL checkpoint")
    if any(k.startswith("cond_stage_model.model.") for k in sd):
        raise _wrong_family(path, "an SD2.x checkpoint (OpenCLIP text encoder, often v-prediction)")
    if _UNET_IN not in sd:
        raise UserError(
            f"{path} has no Stable Diffusion U-Net (key {_UNET_IN} missing); it may be a LoRA, a VAE "
            "or an embedding rather than a base model.",
            path=path,
            hint="Set [model] pretrained_model to a full SD1.x checkpoint.",
        )
    unet_in = sd[_UNET_IN]
    if unet_in is not None and unet_in.shape[1] != 4:
        raise _wrong_family(path, f"an inpainting/other model ({unet_in.shape[1]} U-Net input channels)")
    if _CLIP_POS not in sd and _CLIP_POS.replace("text_model.", "") not in sd:
        raise UserError(
            f"{path} has no CLIP text encoder (key {_CLIP_POS} missing).",
            path=path,
            hint="Use a full SD1.x checkpoint that includes the text encoder.",
        )


def _config_dir_for(path: Path, sd: dict[str, torch.Tensor], metadata: dict[str, str], tmp: Path) -> Path:
    embedded = metadata.get(EMBEDDED_CONFIG_KEY)
    if embedded:
        return write_sd1_configs(tmp, json.loads(embedded))
    channels = sd[_UNET_IN].shape[0]
    context = sd[_UNET_ATTN2_K].shape[1] if _UNET_ATTN2_K in sd else None
    if channels == 320 and context == 768:
        return write_sd1_configs(tmp)
    raise UserError(
        f"{path} has an SD1-like layout but unusual sizes (base channels {channels}, context {context}); "
        "kazari only ships the SD1.5 configs.",
        path=path,
        hint="Convert it to a diffusers folder and point [model] pretrained_model at that folder.",
    )


def _check_folder_family(path: Path) -> None:
    try:
        unet_cfg = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(
            f"{path} is not a diffusers model folder (unet/config.json unreadable: {err}).",
            path=path,
            hint="Point [model] pretrained_model at a .safetensors/.ckpt file or a diffusers folder.",
        ) from err
    if unet_cfg.get("addition_embed_type") or unet_cfg.get("cross_attention_dim") == 2048:
        raise _wrong_family(path, "an SDXL model")
    if unet_cfg.get("cross_attention_dim") == 1024:
        raise _wrong_family(path, "an SD2.x model")
    if unet_cfg.get("in_channels", 4) != 4:
        raise _wrong_family(path, "an inpainting/other model")
    sched = path / "scheduler" / "scheduler_config.json"
    if sched.is_file():
        try:
            pred = json.loads(sched.read_text(encoding="utf-8")).get("prediction_type", "epsilon")
        except ValueError:
            pred = "epsilon"
        if pred == "v_prediction":
            raise _wrong_family(path, "a v-prediction model")


def _check_tokenizer(tok: Any) -> None:
    # transformers 5 returns an empty tokenizer (only specials) instead of failing on missing files.
    if len(tok) <= 256:
        raise ValueError(f"tokenizer has only {len(tok)} tokens (vocab.json/merges.txt missing?)")


def load_tokenizer(tokenizer: Path | str | None, fallback_folder: Path | None = None) -> Any:
    """CLIP tokenizer from ``tokenizer`` (folder), else ``fallback_folder``, else the HF cache/download."""
    from transformers import CLIPTokenizer

    candidates: list[Path] = []
    if tokenizer is not None:
        t = Path(tokenizer).expanduser()
        if not t.is_dir():
            raise UserError(
                f"Tokenizer folder {t} does not exist.",
                path=t,
                hint="Set [model] tokenizer to a folder holding vocab.json and merges.txt (or tokenizer.json).",
            )
        candidates += [t / "tokenizer", t] if (t / "tokenizer").is_dir() else [t]
    elif fallback_folder is not None and fallback_folder.is_dir():
        candidates.append(fallback_folder)
    for c in candidates:
        try:
            tok = CLIPTokenizer.from_pretrained(str(c), local_files_only=True)
            _check_tokenizer(tok)
            return tok
        except Exception as err:
            raise UserError(
                f"Could not read a CLIP tokenizer from {c}: {err}.",
                path=c,
                hint="The folder needs vocab.json and merges.txt (or tokenizer.json) of CLIP ViT-L/14.",
            ) from err
    last: Exception | None = None
    for local_only in (True, False):
        if not local_only and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
            break
        try:
            tok = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_REPO, local_files_only=local_only)
            _check_tokenizer(tok)
            return tok
        except Exception as err:  # not cached / no network
            last = err
    raise UserError(
        f"No CLIP tokenizer is available: it is not in the Hugging Face cache and could not be downloaded "
        f"({type(last).__name__}).",
        hint=f"Connect once so kazari can cache {CLIP_TOKENIZER_REPO}, or set [model] tokenizer to a local "
        "folder holding its vocab.json and merges.txt.",
    )


def _load_vae(vae: Path, config_dir: Path, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL

    if vae.is_dir():
        sub = "vae" if (vae / "vae" / "config.json").is_file() else None
        try:
            return AutoencoderKL.from_pretrained(str(vae), subfolder=sub, torch_dtype=dtype, local_files_only=True)
        except Exception as err:
            raise UserError(f"Could not load the VAE folder {vae}: {err}.", path=vae) from err
    sd, _ = read_state_dict(vae, dtype=dtype)
    sd, layout = canonical_vae(sd)
    if layout is None:
        raise UserError(
            f"{vae} does not look like a VAE (no encoder/decoder weights).",
            path=vae,
            hint="Point [model] vae at an SD1 VAE file (.safetensors/.pt/.ckpt) or a diffusers VAE folder.",
        )
    try:
        if layout == "diffusers":
            cfg = _init_kwargs(_read_config("vae", config_dir if (config_dir / "vae").is_dir() else None))
            with torch.device("meta"):
                model = AutoencoderKL(**cfg)
            model.load_state_dict(sd, strict=True, assign=True)
            return model.to(dtype)
        return AutoencoderKL.from_single_file(
            sd, config=str(config_dir), subfolder="vae", torch_dtype=dtype, local_files_only=True
        )
    except Exception as err:
        raise UserError(
            f"{vae} could not be loaded as an SD1 VAE ({layout} layout): {_first_line(err)}.",
            path=vae,
            hint="Use an SD1.x VAE (e.g. vae-ft-mse-840000-ema-pruned.safetensors) or leave [model] vae empty.",
        ) from err


def load_sd1(
    path: Path | str,
    vae: Path | str | None = None,
    tokenizer: Path | str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    vae_dtype: torch.dtype | None = None,
    config: Path | str | None = None,
    use_ema: bool = False,
) -> SD1Bundle:
    """Load an SD1.x model; frozen modules in ``dtype`` (VAE in ``vae_dtype`` if given) on ``device``.

    A single file's lint-style report (``bundle.report``) is also logged to ``kazari.model``;
    ``use_ema`` picks the file's EMA U-Net weights where it has them.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    path = Path(path).expanduser()
    vae_path = Path(vae).expanduser() if vae else None
    if not path.exists():
        raise UserError(
            f"Base model {path} does not exist.",
            path=path,
            hint="Set [model] pretrained_model to an SD1.x .safetensors/.ckpt file or a diffusers folder.",
        )
    if vae_path is not None and not vae_path.exists():
        raise UserError(f"VAE {vae_path} does not exist.", path=vae_path, hint="Fix [model] vae or leave it empty.")
    vae_dtype = vae_dtype or dtype
    config_dir = Path(config) if config else None

    report: CheckpointReport | None = None
    with tempfile.TemporaryDirectory(prefix="kazari-sd1cfg-") as tmp:
        if path.is_dir():
            _check_folder_family(path)
            try:
                unet = UNet2DConditionModel.from_pretrained(
                    str(path), subfolder="unet", torch_dtype=dtype, local_files_only=True
                )
                text_encoder = CLIPTextModel.from_pretrained(
                    str(path), subfolder="text_encoder", torch_dtype=dtype, local_files_only=True
                )
                vae_model = (
                    None
                    if vae_path
                    else AutoencoderKL.from_pretrained(
                        str(path), subfolder="vae", torch_dtype=vae_dtype, local_files_only=True
                    )
                )
            except UserError:
                raise
            except Exception as err:
                raise UserError(
                    f"Could not load the diffusers folder {path}: {err}.",
                    path=path,
                    hint="Check that unet/, text_encoder/ and vae/ hold config.json and weights.",
                ) from err
            tok = load_tokenizer(tokenizer, path / "tokenizer")
            cfg_for_vae = path
        else:
            if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
                raise UserError(
                    f"{path} is not a model file kazari can read (expected one of {', '.join(SINGLE_FILE_SUFFIXES)}).",
                    path=path,
                )
            entries: dict[str, TensorInfo] = {}
            # Only what the model uses is read: the EMA U-Net or the regular one, never both.
            st = path.suffix.lower() == ".safetensors"
            ema = st and uses_ema(_safetensors_keys(path), use_ema)
            sd, metadata = read_state_dict(path, dtype=dtype, vae_dtype=vae_dtype, entries=entries,
                                           want=(lambda k: needed_key(k, ema) or k == _UNET_IN) if st else None)
            check_single_file_family(path, {**dict.fromkeys(entries), **sd})
            report = inspect_keys(entries, path, use_ema=use_ema, wrapped=metadata.get(WRAPPED_KEY) == "1")
            if not report.vae_present and vae_path is None:
                raise UserError(
                    f"{path} has no VAE weights (a pruned model that ships without first_stage_model.*).",
                    path=path,
                    hint="Set [model] vae to an SD1 VAE file, e.g. vae-ft-mse-840000-ema-pruned.safetensors "
                    "(or the VAE its author recommends).",
                )
            try:
                sd = canonical_sd1(sd, use_ema=use_ema, keys=entries)
            except KeyError as err:
                raise UserError(
                    f"{path} has EMA weights for only part of the U-Net ({err.args[0]} missing).",
                    path=path,
                    hint="Set [model] use_ema = false to train on the regular weights.",
                ) from err
            cfg = config_dir or _config_dir_for(path, sd, metadata, Path(tmp))
            unet, text_encoder, vae_model = _from_single_file(path, sd, cfg, dtype, vae_dtype, need_vae=not vae_path)
            del sd
            tok = load_tokenizer(tokenizer)
            cfg_for_vae = cfg
        if vae_path is not None:
            vae_model = _load_vae(vae_path, cfg_for_vae, vae_dtype)
            if report is not None:
                report.add("ok", f"VAE from {vae_path.name}")

    if len(tok) > text_encoder.config.vocab_size:
        raise UserError(
            f"The tokenizer has {len(tok)} tokens but the text encoder of {path} only {text_encoder.config.vocab_size}.",
            path=path,
            hint="Use the CLIP ViT-L/14 tokenizer that belongs to this model ([model] tokenizer).",
        )
    device = torch.device(device)
    assert vae_model is not None  # the model's own VAE, or [model] vae loaded above
    modules: tuple[torch.nn.Module, ...] = (unet, text_encoder, vae_model)
    for m in modules:
        m.requires_grad_(False)
        m.eval()
        if device.type != "cpu":  # loaded on the CPU; .to() on CPU would only log diffusers' dtype note
            m.to(device)
    noise_scheduler = DDPMScheduler(**sd1_scheduler_config("ddpm"))
    if report is not None:
        for line in report.lines():
            _log.info("%s: %s", path.name, line)
    return SD1Bundle(
        unet=unet,
        text_encoder=text_encoder,
        vae=vae_model,
        tokenizer=tok,
        noise_scheduler=noise_scheduler,
        path=path,
        vae_path=vae_path,
        device=device,
        dtype=dtype,
        report=report,
    )


def _from_single_file(
    path: Path,
    sd: dict[str, torch.Tensor],
    cfg: Path,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    need_vae: bool,
) -> tuple[Any, Any, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel

    try:
        unet = UNet2DConditionModel.from_single_file(
            sd, config=str(cfg), subfolder="unet", torch_dtype=dtype, local_files_only=True
        )
        text_encoder = create_diffusers_clip_model_from_ldm(
            CLIPTextModel, sd, subfolder="text_encoder", config=str(cfg), torch_dtype=dtype, local_files_only=True
        )
        vae = (
            AutoencoderKL.from_single_file(
                sd, config=str(cfg), subfolder="vae", torch_dtype=vae_dtype, local_files_only=True
            )
            if need_vae
            else None
        )
    except UserError:
        raise
    except Exception as err:
        raise UserError(
            f"{path} could not be converted as an SD1.x checkpoint: {err}.",
            path=path,
            hint="Check that the file is a complete SD1.x model (not a LoRA, VAE or pruned U-Net only).",
        ) from err
    return unet, text_encoder, vae
