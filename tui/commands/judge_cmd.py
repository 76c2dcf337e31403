"""`kazari judge RUN_DIR|CONFIG` — score every epoch × weight cell and recommend the LoRA to keep.

See docs/judge.md. Builds the evaluation grid in RUN_DIR/judge/ when missing (kazari grid's
machinery), tags it, scores it, prints a table and the recommendation, writes judge.json and
judge.png there.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from tagging.errors import UserError


def _numbers(kind):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.replace(" ", "").split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "judge",
        help="score every saved epoch at several weights and recommend the LoRA to keep",
        description="Judge a run: feature recall, prompt adherence, leakage (and CCIP identity) per "
        "epoch × weight cell, a combined score and a recommendation with its reason.",
    )
    p.add_argument("source", type=Path, help="training config (.toml) or a run's output folder")
    p.add_argument("--tagger", default=None, metavar="NAME|PATH",
                   help="tagger model (default: the dataset's last-used one, else [judge] tagger)")
    p.add_argument("--prompts", type=Path, default=None, metavar="FILE",
                   help="evaluation prompt file ({trigger} allowed; default [judge] prompts or the built-in set)")
    p.add_argument("--seeds", type=_numbers(int), default=None, help="comma list of seeds")
    p.add_argument("--weights", type=_numbers(float), default=None, help="comma list, default 0,0.4,0.6,0.8,1")
    p.add_argument("--trigger", default=None, help="trigger word (default: the character profile's)")
    p.add_argument("--model", type=Path, default=None, help="base model (needed with a RUN_DIR)")
    p.add_argument("--dataset", type=Path, default=None, help="training dataset (with a RUN_DIR)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default=None, help="auto | cuda | cpu")
    p.add_argument("--rebuild", action="store_true", help="render the evaluation grid again even if it matches")
    p.add_argument("--json", action="store_true", help="print judge.json instead of the table")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace):
    from trainer.config import TrainConfig, load_config

    src: Path = args.source
    if src.is_file() and src.suffix.lower() == ".toml":
        cfg = load_config(src, check=False)
    elif src.is_dir():
        if args.model is None:
            raise UserError(
                f"No base model for {src}: a run folder does not say which checkpoint it was trained on.",
                hint="Pass --model PATH (and --dataset DIR for the character), or give the training CONFIG.toml.",
            )
        import re

        from trainer.grid import find_run_loras

        name = re.sub(r"-(\d{6}|step\d{8})$", "", find_run_loras(src)[-1][1].stem)
        cfg = TrainConfig.model_validate({"output": {"output_dir": str(src), "output_name": name}}, strict=False)
    else:
        raise UserError(f"{src} is neither a training config (.toml) nor a run folder.", path=src,
                        hint="Usage: kazari judge CONFIG.toml|RUN_DIR [--model PATH] [--tagger NAME|PATH] ...")
    updates = {"model.pretrained_model": args.model, "dataset.train_data_dir": args.dataset,
               "training.device": args.device}
    for key, value in updates.items():
        if value is not None:
            cfg = cfg.with_value(key, value)
    return cfg


def run(args: argparse.Namespace) -> int:
    from trainer.grid import GridSource
    from trainer.judge import judge, plan_judge
    from trainer.judge.report import score_table

    cfg = _config(args)
    plan = plan_judge(cfg, tagger=args.tagger, prompts=args.prompts, seeds=args.seeds, weights=args.weights,
                      trigger=args.trigger)
    for i, p in enumerate(plan.prompts, 1):
        if p.unmeasured:
            print(f"kazari: evaluation prompt {i} asks for {', '.join(p.unmeasured)}, which the tagger "
                  f"{plan.tagger_name} has no tag for; {'not scored' if not p.asked else 'the rest is scored'}",
                  file=sys.stderr)
    source = GridSource.from_config(cfg)
    live = sys.stderr.isatty()

    def progress(stage: str, done: int, total: int) -> None:
        if args.json:
            return
        text = f"[{stage} {done}/{total}]"
        print(f"\r{text}" if live else text, end="" if live else "\n", file=sys.stderr, flush=True)

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = judge(plan, source, rebuild=args.rebuild, progress=progress, cancel=stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    if live and not args.json:
        print(file=sys.stderr)
    if args.json:
        print(result.json_path.read_text(encoding="utf-8"), end="")
        return 0
    print(score_table(result))
    print()
    pick = result.recommendation
    print(pick.reason if pick is not None else "No LoRA cell with a weight above 0 to recommend.")
    print(f"\n{result.json_path}\n{result.plot_path}")
    return 0
