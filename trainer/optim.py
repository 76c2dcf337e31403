"""Optimizers and learning-rate schedules, by the names sd-scripts users know.

``build_optimizer`` takes param groups that already carry their own ``lr`` (U-Net / text encoder)
and the ``[optimizer] optimizer_args`` table. ``build_scheduler`` reproduces the schedules of
diffusers' ``get_scheduler`` (which sd-scripts uses) as plain ``LambdaLR`` objects, so their
state round-trips through ``state_dict`` for exact resume.
"""

from __future__ import annotations

import ast
import importlib
import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch

from tagging.errors import UserError

OPTIMIZERS = ("AdamW", "AdamW8bit", "Lion", "Lion8bit", "Prodigy", "SGD", "SGDNesterov")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")

_CANONICAL = {name.lower(): name for name in OPTIMIZERS}
_CANONICAL[""] = "AdamW"  # sd-scripts' default when optimizer_type is empty


class OptimizerError(UserError):
    """An optimizer or scheduler setting cannot be used."""


def _coerce(value: Any) -> Any:
    # Values typed as strings in a TOML table ("0.9,0.999", "True", "1e-2") become Python values,
    # the same way sd-scripts' `optimizer_args = ["betas=0.9,0.999"]` is read.
    if not isinstance(value, str):
        return tuple(value) if isinstance(value, list) else value
    text = value.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_optimizer_args(args: dict[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """``{"weight_decay": 0.01}`` or ``["weight_decay=0.01", "betas=0.9,0.999"]`` -> kwargs."""
    if not args:
        return {}
    if isinstance(args, dict):
        return {str(k): _coerce(v) for k, v in args.items()}
    out: dict[str, Any] = {}
    for item in args:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise OptimizerError(
                f"[optimizer] optimizer_args entry {item!r} is not key=value.",
                hint='Write it as a table, e.g. optimizer_args = { weight_decay = 0.01 }.',
            )
        out[key.strip()] = _coerce(value)
    return out


def _import_extra(module: str, install: str, optimizer: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptimizerError(
            f"[optimizer] optimizer_type = {optimizer!r} needs the Python package {module!r}, which is not "
            f"installed ({exc}).",
            hint=f"Install it with `pip install {install}`, or choose AdamW or Lion.",
        ) from exc


def canonical_optimizer_name(name: str) -> str:
    key = (name or "").strip().lower()
    if key not in _CANONICAL:
        raise OptimizerError(
            f"[optimizer] optimizer_type = {name!r} is not supported.",
            hint=f"Use one of: {', '.join(OPTIMIZERS)}.",
        )
    return _CANONICAL[key]


def build_optimizer(
    optimizer_type: str,
    param_groups: list[dict[str, Any]],
    optimizer_args: dict[str, Any] | Iterable[str] | None = None,
    *,
    prefer_fused: bool = True,
) -> torch.optim.Optimizer:
    """Create the optimizer. Each group must hold ``params`` and ``lr`` (and may hold a ``name``).

    ``prefer_fused``: fused AdamW and foreach Lion/SGD on every device (a handful of kernels per step
    for all LoRA tensors instead of a few per tensor); False is the behaviour before issue 17 (fused
    AdamW on CUDA only, per-tensor Lion from lion-pytorch), kept for the benches' baseline."""
    name = canonical_optimizer_name(optimizer_type)
    kwargs = parse_optimizer_args(optimizer_args)
    groups = [g for g in param_groups if list(g["params"])]
    if not groups:
        raise OptimizerError(
            "Nothing to train: every parameter group is empty.",
            hint="Check [network] train_unet_only / train_text_encoder_only and the learning rates.",
        )
    lr = groups[0]["lr"]
    devices = {p.device.type for g in groups for p in g["params"]}
    on_cuda = devices == {"cuda"}
    fusable = on_cuda or (prefer_fused and devices <= {"cpu", "cuda"})
    choose = "fused" not in kwargs and "foreach" not in kwargs
    try:
        if name == "AdamW":
            if fusable and choose:
                kwargs["fused"] = True  # one kernel for all LoRA tensors: fewer launches per step
            return torch.optim.AdamW(groups, lr=lr, **kwargs)
        if name in ("SGD", "SGDNesterov"):
            if prefer_fused and choose:
                kwargs["foreach"] = True
            if name == "SGDNesterov":
                kwargs.setdefault("momentum", 0.9)
                kwargs["nesterov"] = True
            return torch.optim.SGD(groups, lr=lr, **kwargs)
        if name == "Lion":
            if prefer_fused and set(kwargs) <= {"betas", "weight_decay"}:
                from trainer.lion import ForeachLion

                return ForeachLion(groups, lr=lr, **kwargs)
            lion = _import_extra("lion_pytorch", "lion-pytorch", name)
            return lion.Lion(groups, lr=lr, **kwargs)
        if name in ("AdamW8bit", "Lion8bit"):
            bnb = _import_extra("bitsandbytes", "'kazari[bnb]'", name)
            return getattr(bnb.optim, name)(groups, lr=lr, **kwargs)
        if name == "Prodigy":
            prodigy = _import_extra("prodigyopt", "'kazari[prodigy]'", name)
            return prodigy.Prodigy(groups, lr=lr, **kwargs)
    except TypeError as exc:  # an unknown keyword in optimizer_args
        raise OptimizerError(
            f"[optimizer] optimizer_args {sorted(kwargs)} are not accepted by {name}: {exc}.",
            hint="Remove or rename the offending key.",
        ) from exc
    raise AssertionError(name)  # pragma: no cover - canonical_optimizer_name covers every name


def _optimizer_class(name: str):
    """The optimizer's class, or None when its optional package is not installed."""
    import importlib
    import importlib.util

    where = {"AdamW": ("torch.optim", "AdamW"), "SGD": ("torch.optim", "SGD"), "SGDNesterov": ("torch.optim", "SGD"),
             "Lion": ("lion_pytorch", "Lion"), "AdamW8bit": ("bitsandbytes.optim", "AdamW8bit"),
             "Lion8bit": ("bitsandbytes.optim", "Lion8bit"), "Prodigy": ("prodigyopt", "Prodigy")}[name]
    if importlib.util.find_spec(where[0].split(".")[0]) is None:
        return None
    try:
        return getattr(importlib.import_module(where[0]), where[1])
    except Exception:  # a broken optional install: build_optimizer reports it at train time
        return None


def optimizer_arg_problems(optimizer_type: str, optimizer_args: dict[str, Any] | Iterable[str] | None) -> list[str]:
    """What is wrong with ``optimizer_args`` for this optimizer, checked against its constructor's
    signature: unknown names (with a close match) and values of the wrong type (against the default).
    Empty when fine, or when the optimizer's package is missing (nothing to check against)."""
    import difflib
    import inspect

    kwargs = parse_optimizer_args(optimizer_args)
    if not kwargs:
        return []
    name = canonical_optimizer_name(optimizer_type)
    cls = _optimizer_class(name)
    if cls is None:
        return []
    params = {k: v for k, v in inspect.signature(cls.__init__).parameters.items()
              if k not in ("self", "params") and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)}
    problems = []
    for key, value in kwargs.items():
        if key == "lr":
            problems.append("`lr` is set by [optimizer] learning_rate / unet_lr / text_encoder_lr, not optimizer_args")
            continue
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{name} has no argument `{key}`{hint}; it accepts {', '.join(p for p in params if p != 'lr')}")
            continue
        default = params[key].default
        if default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, tuple):
            ok = (isinstance(value, (list, tuple)) and len(value) == len(default)
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
        else:
            ok = True
        if not ok:
            problems.append(f"`{key} = {value!r}` has the wrong type for {name} (its default is {default!r})")
    return problems


# --- schedules -------------------------------------------------------------------------------
# Each returns the multiplier of the base lr at `step` (0-based count of scheduler steps done).


def _constant(step: int) -> float:
    return 1.0


def _constant_with_warmup(step: int, *, warmup: int) -> float:
    return step / max(1, warmup) if step < warmup else 1.0


def _linear(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _cosine(step: int, *, warmup: int, total: int, cycles: float = 0.5) -> float:
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)))


def _cosine_restarts(step: int, *, warmup: int, total: int, cycles: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))


def _polynomial(step: int, *, warmup: int, total: int, power: float, lr_init: float, lr_end: float) -> float:
    if step < warmup:
        return step / max(1, warmup)
    if step > total:
        return lr_end / lr_init
    remaining = 1 - (step - warmup) / max(1, total - warmup)
    return ((lr_init - lr_end) * remaining**power + lr_end) / lr_init


def resolve_warmup(warmup: float | int, total_steps: int) -> int:
    """sd-scripts: a float below 1 is a fraction of the total steps, rounded down (``int(...)``)."""
    if isinstance(warmup, float) and 0 < warmup < 1:
        return int(warmup * total_steps)
    return int(warmup or 0)


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: float | int = 0,
    num_cycles: int = 1,
    power: float = 1.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` with diffusers' formulas; one scheduler step per optimizer step."""
    key = (name or "constant").strip().lower()
    warmup = resolve_warmup(warmup_steps, total_steps)
    total = max(1, int(total_steps))
    fn: Callable[[int], float]
    if key == "constant":
        fn = _constant if warmup == 0 else partial(_constant_with_warmup, warmup=warmup)
    elif key == "constant_with_warmup":
        fn = partial(_constant_with_warmup, warmup=warmup)
    elif key == "linear":
        fn = partial(_linear, warmup=warmup, total=total)
    elif key == "cosine":
        fn = partial(_cosine, warmup=warmup, total=total)
    elif key == "cosine_with_restarts":
        fn = partial(_cosine_restarts, warmup=warmup, total=total, cycles=max(1, int(num_cycles or 1)))
    elif key == "polynomial":
        lr_init = optimizer.defaults["lr"]
        lr_end = min(1e-7, lr_init)  # diffusers' default end lr
        fn = partial(_polynomial, warmup=warmup, total=total, power=float(power or 1.0),
                     lr_init=lr_init, lr_end=lr_end)
    else:
        raise OptimizerError(
            f"[optimizer] lr_scheduler = {name!r} is not supported.",
            hint=f"Use one of: {', '.join(SCHEDULERS)}.",
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [fn] * len(optimizer.param_groups))


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Learning rate per named group; Prodigy/D-adapt report d*lr, the lr they really use."""
    out: dict[str, float] = {}
    for i, group in enumerate(optimizer.param_groups):
        lr = float(group["lr"])
        if "d" in group:
            lr *= float(group["d"])
        out[str(group.get("name", f"group{i}"))] = lr
    return out
