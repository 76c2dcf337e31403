"""Judging cost vs rendering the grid it judges (same run, same process, tiny models on CPU).

    python bench/judge_bench.py                    # tiny SD + tiny tagger (448 px input), CPU
    python bench/judge_bench.py --size 128 --steps 10 --seeds 2

Renders the evaluation grid once (timed), then judges it ``--repeat`` times with a cold tagger
cache (tagging + flat-image check + scoring + judge.json + plot; timed, best kept). Prints both and
the ratio judge / render (aim: <= 0.15).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tagging.character import CharacterProfile, save_character  # noqa: E402
from tagging.synthetic import make_character_dataset  # noqa: E402
from tagging.tagger.tiny import build_tiny_tagger  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.grid import GridSource, load_base, render_run_grid  # noqa: E402
from trainer.judge import judge, plan_judge  # noqa: E402
from trainer.lora import LoRANetwork  # noqa: E402
from trainer.models import load_sd1  # noqa: E402
from trainer.tiny import make_tiny_sd  # noqa: E402


def _run(tmp: Path, sd: Path, epochs: int) -> Path:
    b = load_sd1(sd)
    net = LoRANetwork(b.unet, b.text_encoder, dim=8, alpha=8)
    out = tmp / "run"
    for e in range(1, epochs + 1):
        g = torch.Generator().manual_seed(e)
        with torch.no_grad():
            for lora in net.loras:
                lora.lora_up.weight.normal_(0, 0.05 * e, generator=g)
        net.save(out / (f"char-{e:06d}.safetensors" if e < epochs else "char.safetensors"), {"ss_epoch": str(e)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--weights", default="0,0.4,0.6,0.8,1")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--tagger-size", type=int, default=448)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)  # stable figures on a shared machine
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        sd = make_tiny_sd(tmp / "sd")
        data = make_character_dataset(tmp / "data", n_images=8, trigger="kazari", size=64, seed=0)
        save_character(data, CharacterProfile(trigger="kazari", features=["pink_hair"]))
        run = _run(tmp, sd, args.epochs)
        tagger = build_tiny_tagger(tmp / "tagger", size=args.tagger_size)
        cfg = TrainConfig.model_validate({
            "model": {"pretrained_model": str(sd)}, "dataset": {"train_data_dir": str(data)},
            "training": {"device": "cpu"}, "output": {"output_dir": str(run), "output_name": "char"},
            "sample": {"sample_prompts": [f"kazari --w {args.size} --h {args.size} --s {args.steps}"]},
            "judge": {"seed_count": args.seeds},
        }, strict=False)
        weights = [float(w) for w in args.weights.split(",")]
        plan = plan_judge(cfg, tagger=tagger, weights=weights)
        source = GridSource.from_config(cfg)
        bundle = load_base(source)
        t0 = time.perf_counter()
        grid = render_run_grid(source, plan.rows, [p.spec for p in plan.prompts], weights=plan.weights,
                               seeds=plan.seeds, out_dir=plan.out_dir, bundle=bundle)
        render = time.perf_counter() - t0
        n_images = len(grid.cells)
        best = float("inf")
        for _ in range(args.repeat):
            shutil.rmtree(plan.out_dir / ".kazari", ignore_errors=True)  # cold tagger cache every time
            t0 = time.perf_counter()
            result = judge(plan, source, bundle=bundle)
            best = min(best, time.perf_counter() - t0)
            assert result.grid_reused, "the judge re-rendered a grid that matched its plan"
        pick = result.recommendation
        print(f"cells {n_images} ({len(plan.rows)} LoRAs x {len(weights)} weights x {len(plan.prompts)} prompts "
              f"x {len(plan.seeds)} seeds), {args.size}px, {args.steps} steps, tagger {args.tagger_size}px")
        print(f"render grid : {render:.2f} s")
        print(f"judge       : {best:.2f} s (tag + score + judge.json + plot, cold tagger cache)")
        print(f"ratio judge/render: {best / render:.3f}  (aim <= 0.15)")
        print(f"pick: {pick.label} at {pick.weight:g}" if pick else "pick: none")


if __name__ == "__main__":
    main()
