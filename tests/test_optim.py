"""Optimizers and LR schedules: every combination constructs and steps; schedules match diffusers."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from trainer.optim import (
    OPTIMIZERS,
    SCHEDULERS,
    OptimizerError,
    build_optimizer,
    build_scheduler,
    current_lrs,
    parse_optimizer_args,
)

_EXTRA_MODULE = {"AdamW8bit": "bitsandbytes", "Lion8bit": "bitsandbytes", "Prodigy": "prodigyopt"}


def _available(name: str) -> bool:
    mod = _EXTRA_MODULE.get(name)
    return mod is None or importlib.util.find_spec(mod) is not None


def _groups():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(3, 2)
    return a, b, [{"name": "text_encoder", "params": list(a.parameters()), "lr": 1e-3},
                  {"name": "unet", "params": list(b.parameters()), "lr": 2e-3}]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_and_scheduler_constructs_and_steps(name: str, scheduler: str) -> None:
    if not _available(name):
        with pytest.raises(OptimizerError, match="pip install"):
            build_optimizer(name, _groups()[2])
        return
    a, b, groups = _groups()
    before = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    opt = build_optimizer(name, groups, {"weight_decay": 0.0} if name != "Prodigy" else {})
    sched = build_scheduler(scheduler, opt, total_steps=10, warmup_steps=2, num_cycles=2, power=2.0)
    x = torch.randn(5, 4)
    for _ in range(3):
        loss = b(a(x)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    after = [p.detach() for p in (*a.parameters(), *b.parameters())]
    assert any(not torch.equal(x0, x1) for x0, x1 in zip(before, after, strict=True)), "weights did not move"
    lrs = current_lrs(opt)
    assert set(lrs) == {"text_encoder", "unet"}
    assert all(math.isfinite(v) and v >= 0 for v in lrs.values())


def _diffusers_lrs(name: str, total: int, warmup: int, cycles: int, power: float) -> list[float]:
    from diffusers.optimization import get_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    kwargs = {"num_warmup_steps": warmup, "num_training_steps": total}
    if name == "cosine_with_restarts":
        kwargs["num_cycles"] = cycles
    if name == "polynomial":
        kwargs["power"] = power
    if name == "constant":
        kwargs = {}
    if name == "constant_with_warmup":
        kwargs = {"num_warmup_steps": warmup}
    sched = get_scheduler(name, opt, **kwargs)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedules_match_diffusers(name: str) -> None:
    total, warmup, cycles, power = 40, 0 if name == "constant" else 6, 3, 2.0
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = build_scheduler(name, opt, total_steps=total, warmup_steps=warmup, num_cycles=cycles, power=power)
    mine = []
    for _ in range(total):
        mine.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert mine == pytest.approx(_diffusers_lrs(name, total, warmup, cycles, power), rel=1e-9, abs=1e-12)


def test_restarts_really_restart_and_warmup_ramps() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler("cosine_with_restarts", opt, total_steps=30, warmup_steps=0, num_cycles=3)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0) and lrs[20] == pytest.approx(1.0)
    assert lrs[9] < 0.1
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s2 = build_scheduler("linear", opt2, total_steps=100, warmup_steps=0.1)  # a fraction: 10 steps
    ramp = []
    for _ in range(12):
        ramp.append(opt2.param_groups[0]["lr"])
        opt2.step()
        s2.step()
    assert ramp[0] == 0.0 and ramp[5] == pytest.approx(0.5) and ramp[10] == pytest.approx(1.0)


def test_scheduler_state_round_trips_for_resume() -> None:
    a, b, groups = _groups()
    opt = build_optimizer("AdamW", groups)
    sched = build_scheduler("cosine", opt, total_steps=20, warmup_steps=3)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = build_optimizer("AdamW", _groups()[2])
    sched2 = build_scheduler("cosine", opt2, total_steps=20, warmup_steps=3)
    sched2.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())
    sched.step()
    sched2.step()
    assert current_lrs(opt) == pytest.approx(current_lrs(opt2))


def test_optimizer_args_parsing_and_errors() -> None:
    assert parse_optimizer_args({"weight_decay": "0.01", "betas": "0.9,0.99", "amsgrad": "True"}) == {
        "weight_decay": 0.01, "betas": (0.9, 0.99), "amsgrad": True}
    assert parse_optimizer_args(["weight_decay=0.1", "betas=0.9,0.999"]) == {"weight_decay": 0.1,
                                                                             "betas": (0.9, 0.999)}
    assert parse_optimizer_args({"betas": [0.8, 0.9]}) == {"betas": (0.8, 0.9)}
    with pytest.raises(OptimizerError, match="not key=value"):
        parse_optimizer_args(["weight_decay"])
    with pytest.raises(OptimizerError, match="not supported"):
        build_optimizer("Adamax9000", _groups()[2])
    with pytest.raises(OptimizerError, match="not accepted by AdamW"):
        build_optimizer("AdamW", _groups()[2], {"momentumz": 0.3})
    with pytest.raises(OptimizerError, match="lr_scheduler"):
        build_scheduler("exponential", build_optimizer("SGD", _groups()[2]), total_steps=3)
    assert build_optimizer("adamw", _groups()[2]).__class__ is torch.optim.AdamW  # case-blind like sd-scripts


def test_fractional_warmup_rounds_down_as_sd_scripts() -> None:
    from trainer.optim import resolve_warmup

    # sd-scripts: int(lr_warmup_steps * num_training_steps) for a float; whole numbers are steps.
    assert resolve_warmup(0.1, 25) == 2 and resolve_warmup(0.05, 10) == 0 and resolve_warmup(0.5, 30) == 15
    assert resolve_warmup(3, 25) == 3 and resolve_warmup(0, 25) == 0
