"""`kazari grid CONFIG.toml|RUN_DIR` — the epoch x weight XY grid of a training run (see docs/grid.md)."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from pathlib import Path

from tagging.errors import UserError


def _weights(text: str) -> list[float]:
    try:
        weights = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weights expects numbers separated by commas, got {text!r}") from None
    if not all(math.isfinite(w) for w in weights):
        raise argparse.ArgumentTypeError(f"--weights expects finite numbers (no nan/inf), got {text!r}")
    return weights


def _check_output(out: Path) -> None:
    """The grid writes PNGs and index.json into ``out``: it must be (or become) a folder."""
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise UserError(f"The grid output {out} cannot be a folder: {p} is a file.", path=p,
                            hint="Pass -o with a folder path (it is created if missing).")
        if p.exists():
            return


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grid",
        help="render every saved epoch at several LoRA weights as one labelled grid per prompt",
        description="Epoch x weight XY grid: rows = saved epochs (or --lora files), columns = weights.",
    )
    p.add_argument("source", type=Path, help="training config (.toml) or a run's output folder")
    p.add_argument("--lora", type=Path, nargs="+", default=None, help="explicit LoRA files (rows, in order)")
    p.add_argument("--weights", type=_weights, default=None, help="comma list, default 0,0.4,0.6,0.8,1")
    p.add_argument("--prompt", nargs="+", default=None, help="prompt lines (sd-scripts syntax allowed)")
    p.add_argument("--seed", type=int, nargs="+", default=None, help="seed(s); same noise in every cell")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (overrides --s of the prompts)")
    p.add_argument("--sampler", default=None, help="euler_a, euler, dpmpp_2m_karras, ddim, ... (default euler_a)")
    p.add_argument("--model", type=Path, default=None, help="base model (needed with a RUN_DIR)")
    p.add_argument("--tokenizer", type=Path, default=None, help="CLIP tokenizer folder (offline use)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help="auto | cuda | cpu")
    p.add_argument("-o", "--output", type=Path, default=None, help="output folder (default RUN_DIR/grid)")
    p.add_argument("--json", action="store_true", help="print the index as JSON instead of a summary")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> dict:
    src: Path = args.source
    s: dict = {"clip_skip": None, "max_token_length": 75, "prompts": None, "sampler": None, "vae": None,
               "tokenizer": args.tokenizer, "model": args.model, "run_dir": None, "output_name": None, "use_ema": False}
    if src.is_file() and src.suffix.lower() == ".toml":
        from trainer.config import load_config

        cfg = load_config(src, check=False)  # the grid needs no dataset; load_sd1 checks the model
        s.update(
            model=args.model or cfg.model.pretrained_model,
            vae=cfg.model.vae,
            tokenizer=args.tokenizer or cfg.model.tokenizer,
            run_dir=Path(cfg.output.output_dir),
            output_name=cfg.output.output_name,
            clip_skip=cfg.training.clip_skip,
            max_token_length=cfg.dataset.max_token_length,
            prompts=cfg.sample.sample_prompts or None,
            sampler=cfg.sample.sample_sampler,
            use_ema=cfg.model.use_ema,
        )
    elif src.is_dir():
        s["run_dir"] = src
    else:
        raise UserError(
            f"{src} is neither a training config (.toml) nor a run folder.",
            path=src,
            hint="Usage: kazari grid CONFIG.toml|RUN_DIR [--lora FILE...] [--weights 0,0.5,1] ...",
        )
    if s["model"] is None:
        raise UserError(
            f"No base model for {src}: a run folder does not say which checkpoint it was trained on.",
            hint="Pass --model PATH, or give the training CONFIG.toml instead of the folder.",
        )
    return s


def run(args: argparse.Namespace) -> int:
    from trainer.grid import DEFAULT_WEIGHTS, GridSource, load_base, render_run_grid

    s = _settings(args)
    loras = list(args.lora) if args.lora else s["run_dir"]
    prompts = args.prompt or s["prompts"]
    if not prompts:
        raise UserError("No prompt for the grid.", hint="Pass --prompt TEXT or set [sample] sample_prompts.")
    out = args.output or (Path(s["run_dir"]) / "grid" if s["run_dir"] else Path("grid"))
    _check_output(out)
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise UserError(f"--steps {args.steps} is out of range.", hint="Use 1 to 1000 sampling steps (20-30 is usual).")
    from trainer.prompts import load_prompts

    load_prompts(prompts)  # a bad line (or a --w 100000) fails now, before the model loads
    source = GridSource(model=s["model"], vae=s["vae"], tokenizer=s["tokenizer"], device=args.device,
                        clip_skip=s["clip_skip"], max_token_length=s["max_token_length"],
                        sampler=args.sampler or s["sampler"] or "euler_a", output_name=s["output_name"],
                        use_ema=s["use_ema"])
    bundle = load_base(source)

    live = sys.stderr.isatty()  # a log file gets one line per cell, not a run of carriage returns

    def progress(done: int, total: int, cell) -> None:
        if not args.json:
            text = f"[{done}/{total}] {cell.label} weight {cell.weight:g}"
            print(f"\r{text}" if live else text, end="" if live else "\n", file=sys.stderr, flush=True)

    # Ctrl-C cancels cooperatively, so the cells already rendered are kept (partial grid + index).
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = render_run_grid(
            source, loras, prompts, weights=args.weights or DEFAULT_WEIGHTS, seeds=args.seed, out_dir=out,
            steps=args.steps, progress=progress, cancel=stop, bundle=bundle,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps(json.loads(result.index_path.read_text(encoding="utf-8")), indent=1))
    else:
        if live:
            print(file=sys.stderr)
        for path in result.grid_paths.values():
            print(path)
    if result.cancelled:
        print("kazari: grid interrupted; the finished cells were kept", file=sys.stderr)
        return 130
    return 0
