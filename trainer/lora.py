"""LoRA / LoCon network for SD1.x in kohya-ss/sd-scripts' file format (``networks/lora.py``).

API (stable)::

    net = LoRANetwork(unet, text_encoder, dim=16, alpha=8, conv_dim=None, conv_alpha=None,
                      train_unet=True, train_text_encoder=True, multiplier=1.0)
    net.apply_to()                 # patch the frozen modules' forward (done by the constructor)
    net.multiplier = 0.6           # any time, no rebuild
    net.param_groups(unet_lr, text_encoder_lr) -> list[dict]   # "params", "lr", "name"; lr 0 -> group
                                                               # omitted and those params frozen
    net.load_weights(path) -> None # continue training / swap a LoRA in place (same layout)
    net.state_dict()               # exact kohya keys
    net.save(path, metadata, dtype=torch.float16, format=None)  # atomic; safetensors/ckpt/pt
    net.remove()                   # restore the original forwards
    LoRANetwork.from_weights(path, unet, text_encoder, multiplier=1.0) -> LoRANetwork  # dims from file
    read_lora_file(path) -> (state_dict, metadata)
    safetensors_hashes(tensors, metadata) -> (sshs_model_hash, sshs_legacy_hash)
    modelspec_sha256(tensors) -> "0x..."    # modelspec.hash_sha256
    count_targets(unet, text_encoder, conv=False) -> (n_unet, n_te)

Format facts (checked against sd-scripts): targets are every ``Linear``/``Conv2d`` inside the U-Net's
``Transformer2DModel`` blocks (1x1 convs keep 4-D weights) and inside CLIP's attention/MLP blocks;
with ``conv_dim`` also inside ``ResnetBlock2D``/``Downsample2D``/``Upsample2D`` (3x3 convs get
conv_dim/conv_alpha, Linear and 1x1 there get dim/alpha). Name = ``lora_unet_`` or ``lora_te_`` +
module path with ``.`` -> ``_`` (the text encoder path starts at ``text_model``). Keys:
``<name>.lora_down.weight``, ``<name>.lora_up.weight``, ``<name>.alpha`` (0-d). ``lora_down`` is
kaiming-uniform (a=sqrt(5)), ``lora_up`` zeros, scale = alpha / dim, output
``org(x) + up(down(x)) * multiplier * scale``. ``sshs_model_hash`` is the sha256 of the safetensors
bytes after the header and ``sshs_legacy_hash`` 8 hex of sha256 of 64 KiB at 1 MiB, both computed on
the file serialised with only the ``ss_*`` metadata (so user metadata can change without changing them).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tagging.atomic import atomic_write_bytes
from tagging.errors import UserError

UNET_TARGETS = ("Transformer2DModel",)
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TE_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
PREFIX_UNET = "lora_unet"
PREFIX_TE = "lora_te"
SAVE_FORMATS = ("safetensors", "ckpt", "pt")


class LoRAModule(nn.Module):
    """Low-rank update added to one frozen Linear/Conv2d; the frozen module is not a child."""

    def __init__(self, name: str, org: nn.Module, dim: int, alpha: float | None, multiplier: float = 1.0):
        super().__init__()
        self.lora_name = name
        alpha = dim if alpha is None or alpha == 0 else alpha
        if isinstance(org, nn.Conv2d):
            self.lora_down = nn.Conv2d(
                org.in_channels, dim, org.kernel_size, org.stride, org.padding, bias=False
            )
            self.lora_up = nn.Conv2d(dim, org.out_channels, (1, 1), (1, 1), bias=False)
        else:
            self.lora_down = nn.Linear(org.in_features, dim, bias=False)
            self.lora_up = nn.Linear(dim, org.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.dim = dim
        self.scale = float(alpha) / dim
        self.multiplier = multiplier
        # A list hides the frozen module from state_dict()/parameters() (it is not ours to save).
        self._org: list[nn.Module] = [org]
        self._org_forward: Any = None

    @property
    def org_module(self) -> nn.Module:
        return self._org[0]

    def hook(self) -> None:
        if self._org_forward is None:
            self._org_forward = self.org_module.forward
            self.org_module.forward = self.forward

    def unhook(self) -> None:
        if self._org_forward is not None:
            self.org_module.forward = self._org_forward
            self._org_forward = None

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self._org_forward(x, *args, **kwargs)
        if self.multiplier == 0:
            return out
        w = self.lora_down.weight
        # Frozen parts may be fp16 while the LoRA stays fp32; autocast handles the mix itself.
        if x.dtype != w.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(w.dtype)
        delta = self.lora_up(self.lora_down(x))
        return out + (delta * (self.multiplier * self.scale)).to(out.dtype)


def _te_root_path(text_encoder: nn.Module) -> str:
    # kohya's names start at CLIPTextModel.text_model; transformers >= 5.6 flattened that level away.
    return "" if hasattr(text_encoder, "text_model") else "text_model."


def _candidates(
    root: nn.Module, targets: tuple[str, ...], prefix: str, path_prefix: str = ""
) -> Iterator[tuple[str, nn.Module, bool]]:
    """(lora_name, module, is_3x3_conv) for each Linear/Conv2d inside a target block."""
    for name, module in root.named_modules():
        if module.__class__.__name__ not in targets:
            continue
        for child_name, child in module.named_modules():
            if isinstance(child, nn.Linear | nn.Conv2d) and child_name:
                is_conv3 = isinstance(child, nn.Conv2d) and child.kernel_size != (1, 1)
                full = f"{prefix}.{path_prefix}{name}.{child_name}".replace(".", "_")
                yield full, child, is_conv3


def _all_targets(unet: nn.Module | None, text_encoder: nn.Module | None, conv: bool) -> dict:
    # Text encoder first, then U-Net: sd-scripts' module (and state_dict) order.
    found: dict[str, tuple[nn.Module, bool]] = {}
    if text_encoder is not None:
        for name, mod, is_conv3 in _candidates(text_encoder, TE_TARGETS, PREFIX_TE, _te_root_path(text_encoder)):
            found.setdefault(name, (mod, is_conv3))
    if unet is not None:
        targets = UNET_TARGETS + (UNET_CONV_TARGETS if conv else ())
        for name, mod, is_conv3 in _candidates(unet, targets, PREFIX_UNET):
            found.setdefault(name, (mod, is_conv3))
    return found


def count_targets(unet: nn.Module | None, text_encoder: nn.Module | None, conv: bool = False) -> tuple[int, int]:
    """How many LoRA modules the U-Net and text encoder get (192 and 72 for SD1.5 without conv)."""
    names = _all_targets(unet, text_encoder, conv)
    n_unet = sum(1 for n, (_, c3) in names.items() if n.startswith(PREFIX_UNET + "_") and not c3)
    n_te = sum(1 for n in names if n.startswith(PREFIX_TE + "_"))
    if conv:
        n_unet = sum(1 for n in names if n.startswith(PREFIX_UNET + "_"))
    return n_unet, n_te


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # Creating ~800 small modules next to a loaded model triggers repeated full GC passes over
    # every live tensor/module (4x the construction time); nothing here creates cycles worth collecting.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class LoRANetwork(nn.Module):
    """All LoRA modules of one network; ``state_dict()`` keys are kohya's file keys."""

    def __init__(
        self,
        unet: nn.Module | None,
        text_encoder: nn.Module | None,
        dim: int = 4,
        alpha: float | None = 1.0,
        conv_dim: int | None = None,
        conv_alpha: float | None = None,
        train_unet: bool = True,
        train_text_encoder: bool = True,
        multiplier: float = 1.0,
        modules_dim: dict[str, int] | None = None,
        modules_alpha: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        if dim is not None and dim < 1 and modules_dim is None:
            raise UserError(f"network_dim = {dim} must be at least 1.", hint="Typical values are 8 to 64.")
        if not train_unet and not train_text_encoder:
            raise UserError(
                "train_unet_only and train_text_encoder_only cannot both leave nothing to train.",
                hint="Set at most one of [network] train_unet_only / train_text_encoder_only.",
            )
        self._multiplier = multiplier
        self.unet_loras: list[LoRAModule] = []
        self.text_encoder_loras: list[LoRAModule] = []
        conv = bool(conv_dim) or modules_dim is not None
        targets = _all_targets(
            unet if train_unet else None, text_encoder if train_text_encoder else None, conv
        )
        with _gc_paused():
            self._create(targets, dim, alpha, conv_dim, conv_alpha, multiplier, modules_dim, modules_alpha)
        self.dim, self.alpha, self.conv_dim, self.conv_alpha = dim, alpha, conv_dim, conv_alpha
        self.apply_to()

    def _create(self, targets, dim, alpha, conv_dim, conv_alpha, multiplier, modules_dim, modules_alpha) -> None:
        for name, (org, is_conv3) in targets.items():
            if modules_dim is not None:
                if name not in modules_dim:
                    continue
                m_dim, m_alpha = modules_dim[name], (modules_alpha or {}).get(name)
            elif is_conv3:
                if not conv_dim:
                    continue
                m_dim, m_alpha = conv_dim, conv_alpha
            else:
                m_dim, m_alpha = dim, alpha
            lora = LoRAModule(name, org, m_dim, m_alpha, multiplier)
            self.add_module(name, lora)
            (self.unet_loras if name.startswith(PREFIX_UNET + "_") else self.text_encoder_loras).append(lora)

    # ------------------------------------------------------------------ structure
    @property
    def loras(self) -> list[LoRAModule]:
        return self.text_encoder_loras + self.unet_loras

    def apply_to(self) -> None:
        for lora in self.loras:
            lora.hook()

    def remove(self) -> None:
        for lora in self.loras:
            lora.unhook()

    @property
    def multiplier(self) -> float:
        return self._multiplier

    @multiplier.setter
    def multiplier(self, value: float) -> None:
        self._multiplier = float(value)
        for lora in self.loras:
            lora.multiplier = self._multiplier

    def layout(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """name -> (down shape, up shape): two networks with equal layouts can swap weights in place."""
        return {
            lora.lora_name: (tuple(lora.lora_down.weight.shape), tuple(lora.lora_up.weight.shape))
            for lora in self.loras
        }

    # ------------------------------------------------------------------ optimisation
    def param_groups(self, unet_lr: float | None, text_encoder_lr: float | None) -> list[dict[str, Any]]:
        """Optimizer groups: ``{"name", "params", "lr"}``; a part with lr 0 is frozen and left out."""
        groups = []
        for name, loras, lr in (
            ("text_encoder", self.text_encoder_loras, text_encoder_lr),
            ("unet", self.unet_loras, unet_lr),
        ):
            params = [p for lora in loras for p in lora.parameters()]
            if not params:
                continue
            if lr is not None and lr == 0:
                for p in params:
                    p.requires_grad_(False)
                continue
            group: dict[str, Any] = {"name": name, "params": params}
            if lr is not None:
                group["lr"] = lr
            groups.append(group)
        return groups

    # ------------------------------------------------------------------ weights
    def load_weights(self, path: Path | str | dict[str, torch.Tensor], *, source: Path | str | None = None) -> None:
        """Copy a saved LoRA's tensors into this network (same module layout required).

        ``source`` names the file in error messages when ``path`` is an already-read state dict."""
        sd = path if isinstance(path, dict) else read_lora_file(Path(path))[0]
        mine = self.state_dict()
        where = str(source or "the given weights") if isinstance(path, dict) else str(path)
        missing = sorted(set(mine) - set(sd))
        extra = sorted(set(sd) - set(mine))
        if extra or any(k.endswith(".weight") for k in missing):
            raise UserError(
                f"{where} does not match this network: {len(extra)} unexpected and {len(missing)} missing keys "
                f"(e.g. {(extra or missing)[0]}).",
                path=None if isinstance(path, dict) else path,
                hint="Use weights trained with the same network_dim/conv_dim and U-Net/text-encoder choice.",
            )
        for k, v in sd.items():
            if mine[k].shape != v.shape:
                raise UserError(
                    f"{where}: {k} has shape {tuple(v.shape)} but this network expects {tuple(mine[k].shape)}.",
                    hint="network_dim/conv_dim must match the file (or leave network_weights empty).",
                )
        with torch.no_grad():
            for k, v in sd.items():
                mine[k].copy_(v.to(mine[k].dtype))
        for lora in self.loras:  # scale follows the loaded alpha
            lora.scale = float(lora.alpha) / lora.dim

    @classmethod
    def from_weights(
        cls,
        path: Path | str | dict[str, torch.Tensor],
        unet: nn.Module | None,
        text_encoder: nn.Module | None,
        multiplier: float = 1.0,
        *,
        source: Path | str | None = None,
    ) -> LoRANetwork:
        """A network shaped like a saved file (dims/alphas per module), with its weights loaded.

        ``source`` names the file in error messages when ``path`` is an already-read state dict."""
        sd = path if isinstance(path, dict) else read_lora_file(Path(path))[0]
        modules_dim: dict[str, int] = {}
        modules_alpha: dict[str, float] = {}
        for k, v in sd.items():
            name, _, rest = k.partition(".")
            if rest == "lora_down.weight":
                modules_dim[name] = int(v.shape[0])
            elif rest == "alpha":
                modules_alpha[name] = float(v)
        for name, d in modules_dim.items():
            modules_alpha.setdefault(name, float(d))  # old files without alpha: alpha = dim
        known = _all_targets(unet, text_encoder, conv=True)
        unknown = sorted(set(modules_dim) - set(known))
        where = str(source or "the given weights") if isinstance(path, dict) else str(path)
        if unknown or not modules_dim:
            raise UserError(
                f"{where} is not an SD1.x LoRA for this model"
                + (f": {len(unknown)} modules have no match (e.g. {unknown[0]})." if unknown else ": no LoRA keys."),
                path=source if isinstance(path, dict) else path,
                hint="Check that the file is a kohya-format LoRA trained on SD1.x (not SDXL/SD2, not LyCoris).",
            )
        has_te = any(n.startswith(PREFIX_TE + "_") for n in modules_dim)
        has_unet = any(n.startswith(PREFIX_UNET + "_") for n in modules_dim)
        net = cls(
            unet,
            text_encoder,
            train_unet=has_unet,
            train_text_encoder=has_te,
            multiplier=multiplier,
            modules_dim=modules_dim,
            modules_alpha=modules_alpha,
        )
        net.load_weights({k: v for k, v in sd.items()}, source=source)
        return net

    def save(
        self,
        path: Path | str,
        metadata: dict[str, str] | None = None,
        dtype: torch.dtype | None = None,
        format: str | None = None,
    ) -> Path:
        """Write the LoRA atomically (temp file + rename): the previous file survives a failed save."""
        path = Path(path)
        fmt = (format or path.suffix.lstrip(".") or "safetensors").lower()
        if fmt not in SAVE_FORMATS:
            raise UserError(f"save format {fmt!r} is not supported.", hint="Use safetensors, ckpt or pt.")
        tensors = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in self.state_dict().items()}
        if fmt == "safetensors":
            from safetensors.torch import save as st_save

            meta = {str(k): str(v) for k, v in (metadata or {}).items()}
            model_hash, legacy_hash = safetensors_hashes(tensors, meta)
            meta["sshs_model_hash"] = model_hash
            meta["sshs_legacy_hash"] = legacy_hash
            data = st_save(tensors, meta)
        else:
            buf = io.BytesIO()
            torch.save(tensors, buf)
            data = buf.getvalue()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        return path


def safetensors_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as sd-scripts computes them (only ``ss_*`` metadata)."""
    from safetensors.torch import save as st_save

    data = st_save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header_len = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_len :]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy_hash


def modelspec_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """``modelspec.hash_sha256`` as sd-scripts' ``sai_model_spec``: sha256 over each tensor's
    safetensors data bytes, in state-dict order, written as ``0x<hex>``."""
    h = hashlib.sha256()
    for v in tensors.values():
        # A single tensor's data is its raw little-endian bytes (safetensors' payload).
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"0x{h.hexdigest()}"


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a LoRA file (.safetensors; .ckpt/.pt with ``weights_only=True``)."""
    if not path.is_file():
        raise UserError(f"LoRA file {path} does not exist.", path=path)
    if path.suffix.lower() not in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
        raise UserError(f"{path} is not a LoRA file.", path=path,
                        hint="Give a .safetensors LoRA (or a .ckpt/.pt one written by kohya or kazari).")
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
        except Exception as err:
            raise UserError(f"{path} is not a readable .safetensors LoRA ({err}).", path=path) from err
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        # torch's own text is long and suggests weights_only=False, which kazari will not do.
        raise UserError(
            f"{path} could not be loaded safely: it is damaged, not a LoRA, or a pickle holding more than "
            f"tensors ({type(err).__name__}).",
            path=path,
            hint="kazari reads pickled LoRAs with weights_only=True; convert the file to .safetensors.",
        ) from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not contain a LoRA state dict.", path=path)
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}
