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
        cast = self._cast
        if cast is not None:
            return self._forward_cast(x, cast, *args, **kwargs)
        out = self._org_forward(x, *args, **kwargs)
        if self.multiplier == 0:
            return out
        w = self.lora_down.weight
        # Frozen parts may be fp16 while the LoRA stays fp32; autocast handles the mix itself.
        if x.dtype != w.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(w.dtype)
        delta = self.lora_up(self.lora_down(x))
        return out + (delta * (self.multiplier * self.scale)).to(out.dtype)

    # Set by LoRANetwork.compute_weights for one step: (down, up) already in the compute dtype.
    _cast: tuple[torch.Tensor, torch.Tensor] | None = None

    def _forward_cast(self, x: torch.Tensor, cast: tuple[torch.Tensor, torch.Tensor], *args: Any,
                      **kwargs: Any) -> torch.Tensor:
        """The same maths in the compute dtype: the input is cast once for the frozen module and the
        LoRA together (autocast would cast it for each), the weights were cast once for the step."""
        down, up = cast
        if x.dtype != down.dtype and x.is_floating_point():
            x = x.to(down.dtype)
        out = self._org_forward(x, *args, **kwargs)
        if self.multiplier == 0:
            return out
        factor = self.multiplier * self.scale
        if down.dim() == 2 and out.dtype == down.dtype:
            if x.dim() == 4:  # a 1x1 conv (proj_in/proj_out): a matmul over channels in NHWC
                if not (x.is_contiguous(memory_format=torch.channels_last)
                        and out.is_contiguous(memory_format=torch.channels_last)):
                    down, up = down[:, :, None, None], up[:, :, None, None]
                    return self._conv_delta(x, out, down, up, factor)
                y = _LoRAMatmul.apply(out.permute(0, 2, 3, 1), x.permute(0, 2, 3, 1), down, up, factor)
                return y.permute(0, 3, 1, 2)
            return _LoRAMatmul.apply(out, x, down, up, factor)
        if down.dim() == 4:
            return self._conv_delta(x, out, down, up, factor)
        h = torch.nn.functional.linear(torch.nn.functional.linear(x, down), up)
        return out + (h * factor).to(out.dtype)

    def _conv_delta(self, x: torch.Tensor, out: torch.Tensor, down: torch.Tensor, up: torch.Tensor,
                    factor: float) -> torch.Tensor:
        d = self.lora_down
        h = torch.nn.functional.conv2d(x, down, None, d.stride, d.padding)
        h = torch.nn.functional.conv2d(h, up)
        return out + (h * factor).to(out.dtype)


class _LoRAMatmul(torch.autograd.Function):
    """``out + factor * (x @ down^T) @ up^T`` over the last dim as ONE autograd node: two matmuls
    (the second fused with the scale and the residual add in ``addmm``) forward, four backward,
    instead of ~27 dispatched ops and ~8 autograd nodes per module and step."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, x: torch.Tensor, down: torch.Tensor, up: torch.Tensor, factor: float):
        x2 = x.reshape(-1, x.shape[-1])
        h = torch.mm(x2, down.t())
        y = torch.addmm(out.reshape(-1, out.shape[-1]), h, up.t(), alpha=factor)
        ctx.save_for_backward(x2, h, down, up)
        ctx.factor, ctx.x_shape = factor, x.shape
        return y.view(out.shape)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x2, h, down, up = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1]) * ctx.factor
        grad_up = g2.t().mm(h)
        gh = g2.mm(up)
        grad_down = gh.t().mm(x2)
        grad_x = gh.mm(down).view(ctx.x_shape) if ctx.needs_input_grad[1] else None
        return g, grad_x, grad_down, grad_up, None


class _CastFlat(torch.autograd.Function):
    """All LoRA weights of one flat fp32 buffer -> their compute-dtype copies in ONE cast kernel.

    Backward writes the gradients, cast to fp32, into a persistent fp32 buffer with one
    ``_foreach_copy_`` and hands its views to the weights as ``.grad`` (adding when a gradient is
    already there: accumulation), instead of one cast and one accumulation node per weight."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, dtype: torch.dtype, group: _FlatGroup, *params: torch.Tensor):
        low = flat.to(dtype)
        ctx.group = group
        return tuple(part.view(shape) for part, shape in zip(low.split(group.sizes), group.matrix_shapes,
                                                             strict=True))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        group: _FlatGroup = ctx.group
        fresh = [i for i, p in enumerate(group.params) if p.requires_grad and p.grad is None]
        if fresh:
            torch._foreach_copy_([group.grad_mats[i] for i in fresh], [grads[i] for i in fresh])
            for i in fresh:
                group.params[i].grad = group.grad_views[i]
        done = set(fresh)
        more = [i for i, p in enumerate(group.params) if p.requires_grad and i not in done]
        if more:  # gradient accumulation: add to what the earlier micro-batches left
            torch._foreach_add_([group.params[i].grad.view(group.matrix_shapes[i]) for i in more],
                                [grads[i] for i in more])
        return (None, None, None, *(None for _ in group.params))


class _FlatGroup:
    """One (device, dtype) group of LoRA weights: views of ``flat``, and their gradient buffer."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        self.sizes = [p.numel() for p in params]
        self.matrix_shapes = [_matrix_shape(p) for p in params]
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1) for p in params])
            for p, part in zip(params, self.flat.split(self.sizes), strict=True):
                p.data = part.view(p.shape)
        grad_flat = torch.zeros_like(self.flat)
        parts = grad_flat.split(self.sizes)
        self.grad_views = [part.view(p.shape) for p, part in zip(params, parts, strict=True)]
        self.grad_mats = [part.view(shape) for shape, part in zip(self.matrix_shapes, parts, strict=True)]

    def intact(self) -> bool:
        return all(_is_view_of(p, self.flat, off) for p, off in zip(self.params, _offsets(self.params), strict=True))


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

    # ------------------------------------------------------------------ compute dtype
    def _flat_groups(self) -> list[_FlatGroup]:
        """The LoRA weights as views of one contiguous buffer per (device, dtype), made once and
        made again whenever something (``.to()``, a load) replaced a weight's storage."""
        params = [p for lora in self.loras for p in (lora.lora_down.weight, lora.lora_up.weight)]
        groups: list[_FlatGroup] | None = getattr(self, "_flat", None)
        if groups is not None and sum(len(g.params) for g in groups) == len(params) and all(
                g.intact() for g in groups):
            return groups
        by_kind: dict[tuple, list[torch.nn.Parameter]] = {}
        for p in params:
            by_kind.setdefault((p.device, p.dtype), []).append(p)
        self._flat = [_FlatGroup(ps) for ps in by_kind.values()]
        return self._flat

    @contextlib.contextmanager
    def compute_weights(self, dtype: torch.dtype | None, enabled: bool = True) -> Iterator[None]:
        """For one step: every LoRA computes in ``dtype`` (the autocast dtype) from weights cast ONCE
        (one kernel per weight buffer, not one per weight and call); the fp32 weights stay the
        optimizer's master copy and receive fp32 gradients. ``dtype`` None or fp32 = no change."""
        if not enabled or dtype is None or not self.loras:
            yield
            return
        owner = {id(p): (lora, i) for lora in self.loras
                 for i, p in enumerate((lora.lora_down.weight, lora.lora_up.weight))}
        cast: dict[LoRAModule, list] = {lora: [None, None] for lora in self.loras}
        try:
            for group in self._flat_groups():
                if group.flat.dtype == dtype or not group.flat.is_floating_point():
                    continue
                low = _CastFlat.apply(group.flat, dtype, group, *group.params)
                for p, w in zip(group.params, low, strict=True):
                    lora, i = owner[id(p)]
                    cast[lora][i] = w
            for lora, (down, up) in cast.items():
                if down is not None and up is not None:
                    lora._cast = (down, up)
            yield
        finally:
            for lora in self.loras:
                lora._cast = None

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
        # A copy: the weights are views of one shared buffer (compute_weights), which safetensors refuses.
        tensors = {k: v.detach().to("cpu", dtype or v.dtype, copy=True).contiguous()
                   for k, v in self.state_dict().items()}
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


def _matrix_shape(p: torch.Tensor) -> tuple[int, ...]:
    """Linear and 1x1-conv weights as (out, in) matrices; 3x3 conv weights keep their shape."""
    if p.dim() == 4 and p.shape[2:] == (1, 1):
        return (p.shape[0], p.shape[1])
    return tuple(p.shape)


def _offsets(params: list[torch.Tensor]) -> list[int]:
    out, off = [], 0
    for p in params:
        out.append(off)
        off += p.numel()
    return out


def _is_view_of(p: torch.Tensor, flat: torch.Tensor, offset: int) -> bool:
    return (p.device == flat.device and p.dtype == flat.dtype and p.is_contiguous()
            and p.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
            and p.data_ptr() == flat.data_ptr() + offset * flat.element_size())


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
