"""Grid cost vs the same number of images with one fixed LoRA (same run, same model, same settings).

    python bench/grid_bench.py                 # tiny model on CPU (works everywhere)
    python bench/grid_bench.py --full --device cuda --size 512 --steps 20   # SD1.5 architecture, random weights

Prints seconds for both and the ratio grid / fixed (aim <= 1.1). Weights include 0 by default
(the grid renders weight 0 once per prompt, so it can beat the baseline); --no-zero leaves it out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.grid import build_grid  # noqa: E402
from trainer.lora import LoRANetwork  # noqa: E402
from trainer.models import SD1Bundle, build_sd1_random, load_sd1, sd1_scheduler_config  # noqa: E402
from trainer.sampling import Sampler  # noqa: E402
from trainer.tiny import make_tiny_sd, write_tiny_tokenizer  # noqa: E402


def _bundle(args, tmp: Path) -> SD1Bundle:
    if not args.full:
        return load_sd1(make_tiny_sd(tmp / "sd"), device=args.device)
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    dtype = torch.float16 if args.device == "cuda" else torch.float32
    unet, te, vae = build_sd1_random(device=args.device, dtype=dtype)
    for m in (unet, te, vae):
        m.requires_grad_(False).eval()
    tok = CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(tmp / "tok")))  # ids < 49408: fine for timing
    return SD1Bundle(unet, te, vae, tok, DDPMScheduler(**sd1_scheduler_config()), path=tmp / "random-sd15",
                     device=torch.device(args.device), dtype=dtype)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="full-size SD1.5 architecture (random weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--weights", default="0,0.4,0.6,0.8,1")
    ap.add_argument("--no-zero", action="store_true")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(1)  # stable figures on a shared machine
    weights = [float(w) for w in args.weights.split(",") if not (args.no_zero and float(w) == 0)]
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        b = _bundle(args, tmp)
        net = LoRANetwork(b.unet, b.text_encoder, dim=args.dim, alpha=args.dim / 2).to(b.device)
        files = []
        for e in range(args.epochs):
            with torch.no_grad():
                for lora in net.loras:
                    lora.lora_up.weight.normal_(0, 0.01 * (e + 1))
            files.append(net.save(tmp / "run" / f"bench-{e + 1:06d}.safetensors", {}))
        net.remove()
        line = f"1girl, solo, smile --w {args.size} --h {args.size} --s {args.steps} --l 7"
        s = Sampler(b, "euler_a")
        s.set_lora(files[0], weight=1.0)
        s.generate(line, seed=1)  # warm-up (kernels, allocator)
        sync = torch.cuda.synchronize if b.device.type == "cuda" else (lambda: None)
        n = args.epochs * len(weights)

        def fixed_run() -> float:
            s.set_lora(files[0], weight=1.0)
            sync()
            t0 = time.perf_counter()
            for i in range(n):
                s.generate(line, seed=1 + i % 3)
            sync()
            return time.perf_counter() - t0

        def grid_run() -> tuple[float, int]:
            s.set_lora(None)
            t0 = time.perf_counter()
            res = build_grid(b, files, [line], weights=weights, seeds=[1], out_dir=tmp / "grid")
            sync()
            return time.perf_counter() - t0, len(res.cells)

        # Alternate the two and keep each one's best: the machine is shared, single runs are noisy.
        fixed_times, grid_times = [], []
        for _ in range(args.repeat):
            fixed_times.append(fixed_run())
            g, cells = grid_run()
            grid_times.append(g)
        fixed, grid = min(fixed_times), min(grid_times)
        kind = "SD1.5 arch (random)" if args.full else "tiny SD1"
        print(f"model={kind} device={args.device} size={args.size} steps={args.steps} lora_dim={args.dim} "
              f"epochs={args.epochs} weights={weights}")
        print(f"fixed LoRA, {n} images: {fixed:.2f} s ({fixed / n:.3f} s/img)")
        print(f"grid {args.epochs}x{len(weights)} ({cells} cells, files written): {grid:.2f} s")
        print(f"all runs (s): fixed {[round(t, 2) for t in fixed_times]} grid {[round(t, 2) for t in grid_times]}")
        print(f"ratio grid/fixed = {grid / fixed:.3f}")


if __name__ == "__main__":
    main()
