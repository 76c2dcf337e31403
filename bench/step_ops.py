"""Host-cost proxies of one training step, measurable without a GPU (issue 17).

The host cost of a step that is bound by Python/autograd/kernel launches is a count: the number of
operator dispatches does not depend on the device. This bench builds the full-size SD1.5 U-Net
(shipped config, random weights, no download) on the CPU, hooks a LoRA into its 192 transformer
modules, and counts with a ``TorchDispatchMode`` what one real training step dispatches
(``trainer.step.diffusion_loss`` + backward + gradient clipping + optimizer step + scheduler):

- ``ops_per_step``: every aten operator call (forward, backward and optimizer);
- ``casts_per_step``: dtype casts (``_to_copy`` to another dtype, ``copy_`` between dtypes);
- ``lora_ops_per_step``: the ops of the LoRA modules (their forward, and the backward nodes they made);
- ``host_syncs_per_step``: calls that read a device value on the host (``.item()``/``.cpu()``/
  ``nonzero``-style ops whose output size depends on data).

It runs at the smallest latent size (8x8 = 64 px) under CPU autocast in bf16 (the weight dtype and
autocast dtype a bf16 GPU run uses), so the casts it counts are those autocast makes on the GPU.
``baseline`` is the same step with the issue-17 paths switched off (``StepOptions.baseline()``).
``graph_breaks`` is ``torch._dynamo.explain`` of the LoRA-wrapped *tiny* U-Net's loss (CPU-cheap).

    python bench/step_ops.py                 # full SD1.5, bf16, dim 64, batch 1 (about 3.5 GB RAM)
    python bench/step_ops.py --json          # one JSON object on stdout
    python bench/step_ops.py --model tiny    # the tiny test model (seconds)
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trainer.lora import LoRANetwork  # noqa: E402
from trainer.optim import build_optimizer, build_scheduler  # noqa: E402
from trainer.step import NoiseSchedule, StepOptions, TrainStep, set_attention  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
_aten = torch.ops.aten
# Ops whose result the host must wait for (a device->host read, or an output sized by data).
SYNC_OPS = {_aten._local_scalar_dense.default, _aten.nonzero.default, _aten.masked_select.default,
            _aten.unique_consecutive.default, _aten._unique2.default, _aten.repeat_interleave.Tensor}


class StepCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active; ``lora`` is toggled by the LoRA wrappers."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.total = self.casts = self.lora = self.syncs = 0
        self.in_lora = False
        self.stops: set = set()
        self.lora_nodes: set[int] = set()  # autograd nodes created by LoRA forward ops
        self._keep: list = []  # keeps those nodes alive so their ids stay unique

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.total += 1
        self.ops[str(func.overloadpacket.__name__)] += 1
        if _is_cast(func, args, kwargs, out):
            self.casts += 1
        if func in SYNC_OPS:
            self.syncs += 1
        node = torch._C._current_autograd_node()
        if self.in_lora or (node is not None and id(node) in self.lora_nodes):
            self.lora += 1
        return out

    def note_lora_output(self, y: torch.Tensor, stops: set) -> None:
        """Mark the autograd nodes between a LoRA module's output and its weights as LoRA's,
        stopping at the frozen module's output and at the module's input (``stops``)."""
        stack = [y.grad_fn] if isinstance(y, torch.Tensor) and y.grad_fn is not None else []
        while stack:
            node = stack.pop()
            if node is None or id(node) in self.lora_nodes or node in stops:
                continue
            if type(node).__name__ == "AccumulateGrad":
                continue
            self.lora_nodes.add(id(node))
            self._keep.append(node)
            stack.extend(n for n, _ in node.next_functions if n is not None and id(n) not in self.lora_nodes)


def _is_cast(func, args, kwargs, out) -> bool:
    if func is _aten._to_copy.default:
        src = args[0]
        return isinstance(src, torch.Tensor) and isinstance(out, torch.Tensor) and src.dtype != out.dtype
    if func is _aten.copy_.default:
        return args[0].dtype != args[1].dtype
    return False


def instrument_lora(net: LoRANetwork, counter_ref: list) -> None:
    """Route each LoRA module's own ops through the counter's ``in_lora`` flag (the frozen module's
    ops stay outside it); works for both the per-call and the cast-once LoRA paths."""
    for lora in net.loras:
        org_call = lora._org_forward

        def org_forward(x, *a, _org=org_call, **k):
            c = counter_ref[0]
            was, c.in_lora = c.in_lora, False
            try:
                out = _org(x, *a, **k)
            finally:
                c.in_lora = was
            c.stops.add(out.grad_fn)
            return out

        lora._org_forward = org_forward
        lora_forward = lora.forward

        def forward(x, *a, _fwd=lora_forward, **k):
            c = counter_ref[0]
            c.in_lora, c.stops = True, {x.grad_fn}
            try:
                out = _fwd(x, *a, **k)
            finally:
                c.in_lora = False
            c.note_lora_output(out, c.stops)
            return out

        lora.org_module.forward = forward


def make_unet(model: str, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    if model == "tiny":
        from trainer.tiny import tiny_unet_config

        cfg = tiny_unet_config()
    else:
        from trainer.models import sd15_unet_config

        cfg = {k: v for k, v in sd15_unet_config().items() if not k.startswith("_") and k != "architectures"}
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg).to(dtype)
    unet.requires_grad_(False)
    set_attention(unet, "sdpa")
    return unet


def schedule():
    from diffusers import DDPMScheduler

    from trainer.models import sd1_scheduler_config

    return NoiseSchedule.from_scheduler(DDPMScheduler(**sd1_scheduler_config("ddpm")), "cpu")


def count(unet, options: StepOptions, args) -> dict:
    """Ops of one training step (the second: the first creates the optimizer state)."""
    dtype = DTYPES[args.precision]
    autocast = None if args.precision == "fp32" else dtype
    net = LoRANetwork(unet, None, dim=args.lora_dim, alpha=args.lora_dim / 2, train_text_encoder=False)
    try:
        net.to("cpu", torch.float32)
        groups = net.param_groups(unet_lr=1e-4, text_encoder_lr=None)
        # The code before issue 17 used fused AdamW on CUDA: count that, not CPU's per-tensor loop.
        opt_args = {} if options.foreach_optimizer else ({"fused": True} if args.optimizer == "AdamW" else {})
        opt = build_optimizer(args.optimizer, groups, opt_args, prefer_fused=options.foreach_optimizer)
        sched = build_scheduler("constant", opt, total_steps=100)
        step = TrainStep(unet, net, opt, sched, None, schedule(), options=options, autocast_dtype=autocast,
                         max_grad_norm=1.0, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        lat = torch.randn(args.batch, 4, args.res // 8, args.res // 8, generator=g).to(dtype)
        cond = torch.randn(args.batch, 77, unet.config.cross_attention_dim, generator=g).to(dtype)
        lat = options.prepare_latents(lat)
        ref: list = [StepCounter()]
        instrument_lora(net, ref)
        step.run(lat, cond)  # warm-up: optimizer state
        counter = StepCounter()
        ref[0] = counter
        with counter:
            step.run(lat, cond)
        return {"ops_per_step": counter.total, "casts_per_step": counter.casts,
                "lora_ops_per_step": counter.lora, "host_syncs_per_step": counter.syncs,
                "top_ops": dict(counter.ops.most_common(args.top))}
    finally:
        net.remove()
        gc.collect()


def graph_breaks(options: StepOptions) -> int | None:
    """Graph breaks of the tiny LoRA-wrapped U-Net's loss under ``torch._dynamo.explain``."""
    try:
        import torch._dynamo as dynamo
    except ImportError:
        return None
    unet = make_unet("tiny", torch.float32)
    net = LoRANetwork(unet, None, dim=4, alpha=4, train_text_encoder=False)
    try:
        sch = schedule()
        lat = options.prepare_latents(torch.randn(1, 4, 8, 8))
        cond = torch.randn(1, 77, unet.config.cross_attention_dim)
        from trainer.step import diffusion_loss

        def loss_fn(lat, cond):
            return diffusion_loss(unet, lat, cond, sch, generator=None)

        dynamo.reset()
        return int(dynamo.explain(loss_fn)(lat, cond).graph_break_count)
    finally:
        net.remove()
        dynamo.reset()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="step_ops.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sd15", choices=["sd15", "tiny"])
    p.add_argument("--precision", default="bf16", choices=list(DTYPES))
    p.add_argument("--res", type=int, default=64, help="image size in pixels (latent = res/8)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--lora-dim", type=int, default=64)
    p.add_argument("--optimizer", default="AdamW", help="AdamW or Lion (the new path uses foreach/fused)")
    p.add_argument("--top", type=int, default=12, help="how many of the most frequent ops to list")
    p.add_argument("--no-graph-breaks", action="store_true", help="skip the torch._dynamo.explain pass")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    try:
        from diffusers.utils import logging as dlogging

        dlogging.set_verbosity_error()
    except ImportError:
        pass
    unet = make_unet(args.model, DTYPES[args.precision])
    new = count(unet, StepOptions(), args)
    base = count(unet, StepOptions.baseline(), args)
    del unet
    gc.collect()
    out = {**{k: v for k, v in new.items() if k != "top_ops"},
           "baseline": {k: v for k, v in base.items() if k != "top_ops"},
           "casts_ratio": new["casts_per_step"] / max(1, base["casts_per_step"]),
           "ops_reduction": 1 - new["ops_per_step"] / max(1, base["ops_per_step"]),
           "graph_breaks": None if args.no_graph_breaks else graph_breaks(StepOptions()),
           "config": {"model": args.model, "precision": args.precision, "res": args.res, "batch": args.batch,
                      "lora_dim": args.lora_dim, "optimizer": args.optimizer, "torch": torch.__version__,
                      "device": "cpu (CPU autocast stands for the GPU's)"},
           "top_ops": new["top_ops"], "baseline_top_ops": base["top_ops"]}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"# step_ops  {out['config']}")
    print(f"{'':24}{'baseline':>10}{'new':>10}{'ratio':>8}")
    for key in ("ops_per_step", "casts_per_step", "lora_ops_per_step", "host_syncs_per_step"):
        b, n = base[key], new[key]
        print(f"{key:24}{b:>10}{n:>10}{(n / b if b else float('nan')):>8.2f}")
    print(f"graph_breaks (tiny model, dynamo.explain): {out['graph_breaks']}")
    print("top ops (new):", ", ".join(f"{k} {v}" for k, v in new["top_ops"].items()))
    print("top ops (baseline):", ", ".join(f"{k} {v}" for k, v in base["top_ops"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
