"""Training-step throughput of kazari's LoRA trainer on the full-size SD1.5 U-Net (random weights).

What is timed is the real training step (``trainer.step.diffusion_loss`` + backward + gradient
clipping + optimizer step, with ``trainer.lora.LoRANetwork`` on the U-Net's 192 transformer
modules), fed with cached (random) latents and text states, as a run with cache_latents does.
Nothing is downloaded: the U-Net is built from the shipped SD1.5 config with random weights.

    python bench/train_bench.py --device cuda                     # 512/768 x batch 1/2/8 x bf16/fp16/fp32
    python bench/train_bench.py --device cuda --res 512 --batch 8 --precision bf16 --profile
    python bench/train_bench.py --device cuda --compile --channels-last --json out.json
    python bench/train_bench.py                                   # no GPU: the tiny model on CPU

Reported per configuration: images/s, step time (ms), peak VRAM (GiB), and MFU. MFU uses the
issue's convention: a training step costs 3x the U-Net forward; the forward FLOPs are counted once
per resolution with ``torch.utils.flop_counter`` (the issue's estimate, 0.85 TFLOP per image at
512², is printed next to it). A LoRA step really does less than 3x (no weight gradients for the
frozen U-Net), so this MFU is "useful work as if fully trained" — comparable across runs.
The timed loop does no host sync per step (except fp16's GradScaler, which must check for inf).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trainer.lora import LoRANetwork  # noqa: E402
from trainer.step import NoiseSchedule, StepOptions, TrainStep, set_attention  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Dense peak TFLOP/s (bf16/fp16 tensor cores, and TF32 for fp32) by GPU name fragment.
PEAKS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0), "L40S": (362.0, 183.0),
         "4090": (165.0, 82.6), "3090": (71.0, 35.6), "A10": (125.0, 62.5)}
ISSUE_FWD_TFLOP_512 = 0.85


def parse_list(text: str, cast=str) -> list:
    return [cast(x.strip()) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_bench.py",
        description="Images/s, step time, peak VRAM and MFU of kazari's LoRA training step on the SD1.5 "
        "U-Net with random weights (no download). On CPU it runs the tiny test model instead.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                   help="cuda = full-size SD1.5 U-Net; cpu = tiny model (auto picks cuda when available)")
    p.add_argument("--res", default=None, help="comma list of square resolutions (cuda: 512,768; cpu: 64)")
    p.add_argument("--batch", default=None, help="comma list of batch sizes (cuda: 1,2,8; cpu: 1,2)")
    p.add_argument("--precision", default=None, help="comma list of bf16,fp16,fp32 (cpu: fp32)")
    p.add_argument("--attention", default=None,
                   help="comma list of sdpa,xformers,math (default: sdpa, plus xformers on cuda when installed)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per config (cuda 30, cpu 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (cuda 8, cpu 1)")
    p.add_argument("--lora-dim", type=int, default=32, help="LoRA rank (alpha = dim/2)")
    p.add_argument("--tokens", type=int, default=77, choices=[77, 152, 227],
                   help="text states per sample: 77 (75 tokens), 152 or 227 (max_token_length 150/225)")
    p.add_argument("--optimizer", default="AdamW", help="optimizer name as in the config (AdamW, Lion, SGD...)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute U-Net activations")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the U-Net; every config compiles anew in its warmup (not timed), so "
                   "select few configs and raise --warmup")
    p.add_argument("--compile-mode", default="default",
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="torch.compile mode with --compile (reduce-overhead = CUDA graphs, against a "
                   "host-bound step)")
    p.add_argument("--channels-last", action="store_true",
                   help="with --baseline: U-Net and latents in channels_last (the new step always uses it)")
    p.add_argument("--baseline", action="store_true",
                   help="the step as before issue 17: autocast casts the fp32 LoRA per call, NCHW, "
                   "optimizers as before (StepOptions.baseline())")
    p.add_argument("--sync-check", action="store_true",
                   help="cuda: torch.cuda.set_sync_debug_mode('error') during the timed steps (not with fp16, "
                   "whose GradScaler must sync)")
    p.add_argument("--profile", action="store_true",
                   help="after the benches, profile the first config with torch.profiler and print top ops")
    p.add_argument("--profile-rows", type=int, default=25)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak dense TFLOP/s for MFU (default: known GPUs' bf16/fp16 peak, TF32 for fp32)")
    p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON to this path")
    return p


def unet_config(tiny: bool) -> dict:
    if tiny:
        from trainer.tiny import tiny_unet_config

        return tiny_unet_config()
    from trainer.models import sd15_unet_config

    return {k: v for k, v in sd15_unet_config().items() if not k.startswith("_") and k != "architectures"}


def make_unet(device: torch.device | str, tiny: bool):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config(tiny))
    unet.requires_grad_(False)
    return unet


def count_forward_flops(tiny: bool, res: int, tokens: int) -> float | None:
    """FLOPs of one U-Net forward for one image, counted by torch's FlopCounterMode on the *meta*
    device (shapes only: instant, no memory, and the same whatever attention kernel is timed)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        unet = make_unet("meta", tiny)
        lat = torch.randn(1, 4, res // 8, res // 8, device="meta")
        cond = torch.randn(1, tokens, unet.config.cross_attention_dim, device="meta")
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            unet(lat, torch.tensor([500], device="meta"), cond, return_dict=False)
        return float(counter.get_total_flops())
    except Exception:  # an op without a meta kernel: fall back to the issue's estimate
        return None


def peak_tflops(device: torch.device, precision: str, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (half, tf32) in PEAKS.items():
        if key in name:
            return tf32 if precision == "fp32" else half
    return None


class Bench:
    def __init__(self, args, device: torch.device, tiny: bool) -> None:
        self.args, self.device, self.tiny = args, device, tiny
        self.unet = make_unet(device, tiny)
        from diffusers import DDPMScheduler

        from trainer.models import sd1_scheduler_config

        self.schedule = NoiseSchedule.from_scheduler(DDPMScheduler(**sd1_scheduler_config("ddpm")), device)
        self.flops: dict[int, float | None] = {}

    def setup(self, precision: str, attention: str):
        """U-Net in the weight dtype with a fresh LoRA; returns (step_fn, network, optimizer)."""
        from trainer.optim import build_optimizer

        dtype = DTYPES[precision]
        unet = self.unet.to(dtype)
        set_attention(unet, attention)
        if self.args.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            unet.train()
        net = LoRANetwork(unet, None, dim=self.args.lora_dim, alpha=self.args.lora_dim / 2,
                          train_text_encoder=False)
        try:
            net.to(self.device, torch.float32)
            groups = net.param_groups(unet_lr=1e-4, text_encoder_lr=None)
            opt = build_optimizer(self.args.optimizer, groups, {}, prefer_fused=not self.args.baseline)
        except BaseException:
            net.remove()  # never leave a LoRA hooked into the shared U-Net for the next config
            raise
        from trainer.optim import build_scheduler

        autocast = None if precision == "fp32" else dtype
        if self.args.compile:
            torch._dynamo.reset()  # each config compiles afresh (new LoRA modules, new shapes)
        a = self.args
        options = StepOptions.baseline() if a.baseline else StepOptions()
        if a.channels_last:
            options.channels_last = True
        options.compile = a.compile
        options.compile_mode = None if a.compile_mode == "default" else a.compile_mode
        scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        gen = torch.Generator(device=self.device).manual_seed(0)
        train_step = TrainStep(unet, net, opt, build_scheduler("constant", opt, total_steps=10**6), scaler,
                               self.schedule, options=options, autocast_dtype=autocast, max_grad_norm=1.0,
                               generator=gen)
        self.options = options

        def step(latents, cond):
            loss = train_step.forward_backward(latents, cond)
            train_step.optimizer_step()
            return loss

        return step, net, opt

    def inputs(self, res: int, batch: int, precision: str):
        dtype = DTYPES[precision]
        g = torch.Generator(device=self.device).manual_seed(1)
        lat = torch.randn(batch, 4, res // 8, res // 8, generator=g, device=self.device, dtype=dtype)
        lat = self.options.prepare_latents(lat)
        cond = torch.randn(batch, self.args.tokens, self.unet.config.cross_attention_dim, generator=g,
                           device=self.device, dtype=dtype)
        return lat, cond

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run_one(self, res: int, batch: int, precision: str, attention: str) -> dict:
        a = self.args
        row = {"res": res, "batch": batch, "precision": precision, "attention": attention,
               "compile": a.compile and a.compile_mode, "channels_last": a.channels_last or not a.baseline,
               "gradient_checkpointing": a.gradient_checkpointing, "lora_dim": a.lora_dim, "tokens": a.tokens,
               "optimizer": a.optimizer, "model": "tiny" if self.tiny else "sd15", "baseline": a.baseline}
        net = None
        try:
            step, net, _ = self.setup(precision, attention)
            lat, cond = self.inputs(res, batch, precision)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            for _ in range(a.warmup):
                step(lat, cond)
            self.sync()
            check = a.sync_check and self.device.type == "cuda" and precision != "fp16"
            if check:
                torch.cuda.set_sync_debug_mode("error")  # any host sync in the timed steps raises
            t0 = time.perf_counter()
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            for _ in range(a.steps):
                loss = step(lat, cond)
            if check:
                torch.cuda.set_sync_debug_mode("default")
            if self.device.type == "cuda":
                end.record()
                end.synchronize()
                seconds = start.elapsed_time(end) / 1000.0
            else:
                seconds = time.perf_counter() - t0
            row["final_loss"] = float(loss.detach())
            row["step_ms"] = 1000.0 * seconds / a.steps
            row["images_per_s"] = batch * a.steps / seconds
            row["peak_vram_gib"] = (torch.cuda.max_memory_allocated(self.device) / 2**30
                                    if self.device.type == "cuda" else None)
            if res not in self.flops:
                self.flops[res] = count_forward_flops(self.tiny, res, a.tokens)
            fwd = self.flops[res]
            row["fwd_tflop_per_image"] = fwd / 1e12 if fwd else None
            row["issue_estimate_fwd_tflop"] = ISSUE_FWD_TFLOP_512 * (res / 512) ** 2
            peak = peak_tflops(self.device, precision, a.peak_tflops)
            row["peak_tflops"] = peak
            used = fwd if fwd else row["issue_estimate_fwd_tflop"] * 1e12
            row["achieved_tflops"] = 3 * used * row["images_per_s"] / 1e12
            row["mfu"] = row["achieved_tflops"] / peak if peak else None
            row["status"] = "ok"
        except torch.OutOfMemoryError:
            row["status"] = "oom"
        except Exception as exc:  # one config failing (e.g. xformers missing) must not stop the others
            row["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        finally:
            if net is not None:
                net.remove()
            if self.device.type == "cuda" and self.args.sync_check:
                torch.cuda.set_sync_debug_mode("default")
            self.unet.to(memory_format=torch.contiguous_format)  # the next config chooses its own layout
            if self.args.gradient_checkpointing:
                self.unet.disable_gradient_checkpointing()
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return row

    def profile(self, res: int, batch: int, precision: str, attention: str) -> str:
        from torch.profiler import ProfilerActivity, profile

        step, net, _ = self.setup(precision, attention)
        try:
            lat, cond = self.inputs(res, batch, precision)
            for _ in range(3):
                step(lat, cond)
            self.sync()
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            with profile(activities=acts) as prof:
                for _ in range(3):
                    step(lat, cond)
                self.sync()
            averages = prof.key_averages()
            keys = ("device_time_total", "cuda_time_total") if self.device.type == "cuda" else ("cpu_time_total",)
            for key in keys:  # the column's name changed across torch versions
                try:
                    return averages.table(sort_by=key, row_limit=self.args.profile_rows)
                except (AttributeError, KeyError, ValueError):
                    continue
            return averages.table(row_limit=self.args.profile_rows)
        finally:
            net.remove()


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # diffusers warns on every dtype cast of the U-Net; the bench casts on purpose
        from diffusers.utils import logging as dlogging

        dlogging.set_verbosity_error()
    except ImportError:
        pass
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("train_bench: --device cuda but PyTorch sees no CUDA GPU", file=sys.stderr)
        return 2
    tiny = device.type == "cpu"
    if tiny:
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True  # what "fp32" training uses on Ampere+ in practice
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    res_list = parse_list(args.res or ("64" if tiny else "512,768"), int)
    batch_list = parse_list(args.batch or ("1,2" if tiny else "1,2,8"), int)
    prec_list = parse_list(args.precision or ("fp32" if tiny else "bf16,fp16,fp32"))
    if args.attention is None:
        import importlib.util

        has_xformers = not tiny and importlib.util.find_spec("xformers") is not None
        args.attention = "sdpa,xformers" if has_xformers else "sdpa"
    attn_list = parse_list(args.attention)
    for p in prec_list:
        if p not in DTYPES:
            print(f"train_bench: unknown precision {p!r} (use bf16, fp16, fp32)", file=sys.stderr)
            return 2
    if tiny and any(p != "fp32" for p in prec_list):
        print("train_bench: note: CPU autocast in fp16/bf16 is not what training uses; timing anyway")
    args.steps = args.steps or (3 if tiny else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 8)

    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"}
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    print(f"# kazari train_bench  {env}")
    print(f"# steps={args.steps} warmup={args.warmup} lora_dim={args.lora_dim} tokens={args.tokens} "
          f"optimizer={args.optimizer} compile={args.compile} channels_last={args.channels_last or not args.baseline} baseline={args.baseline} "
          f"grad_ckpt={args.gradient_checkpointing} model={'tiny (CPU)' if tiny else 'SD1.5 U-Net, random weights'}")
    bench = Bench(args, device, tiny)
    header = (f"{'res':>5} {'batch':>5} {'prec':>5} {'attn':>8} {'img/s':>8} {'step ms':>9} {'VRAM GiB':>9} "
              f"{'TFLOP/s':>8} {'MFU':>6}  status")
    print(header)
    rows = []
    for res in res_list:
        for batch in batch_list:
            for prec in prec_list:
                for attn in attn_list:
                    row = bench.run_one(res, batch, prec, attn)
                    rows.append(row)
                    mfu = None if row.get("mfu") is None else 100 * row["mfu"]
                    print(f"{res:>5} {batch:>5} {prec:>5} {attn:>8} {fmt(row.get('images_per_s'), '8.2f')} "
                          f"{fmt(row.get('step_ms'), '9.1f')} {fmt(row.get('peak_vram_gib'), '9.2f')} "
                          f"{fmt(row.get('achieved_tflops'), '8.1f')} {fmt(mfu, '5.1f')}%  {row['status']}",
                          flush=True)
    for res, fl in sorted(bench.flops.items()):
        if fl:
            print(f"# forward FLOPs per image at {res}²: {fl / 1e12:.3f} TFLOP counted "
                  f"(issue estimate {ISSUE_FWD_TFLOP_512 * (res / 512) ** 2:.3f}); MFU = 3 x forward x img/s / peak")
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        best = max(ok, key=lambda r: r["images_per_s"])
        print(f"# best: {best['images_per_s']:.1f} img/s at {best['res']}² batch {best['batch']} "
              f"{best['precision']} {best['attention']}")
    out = {"env": env, "args": dict(vars(args)), "results": rows}

    def write_json() -> None:
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
            print(f"# wrote {args.json_path}")

    write_json()  # before profiling, so a profiler failure cannot lose the figures
    if args.profile:
        cfg = (res_list[0], batch_list[-1], prec_list[0], attn_list[0])
        print(f"\n# torch.profiler, res={cfg[0]} batch={cfg[1]} {cfg[2]} {cfg[3]} (3 steps)")
        try:
            out["profile"] = bench.profile(*cfg)
            print(out["profile"])
        except Exception as exc:
            print(f"# profiling failed: {type(exc).__name__}: {exc}")
        write_json()
    return 0 if ok or not rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
