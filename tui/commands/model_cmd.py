"""`kazari model inspect PATH [--vae PATH] [--load] [--json]` — what a base model file holds.

Exit codes: 0 the model is loadable, 1 it is not (the reason is printed), 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("model", help="inspect base model files (checkpoints, VAEs)",
                            description="Inspect SD1.x base model files.")
    msub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    p = msub.add_parser(
        "inspect",
        help="what a checkpoint holds and whether kazari can train on it",
        description="Report a checkpoint's family, key layout, precisions, EMA weights (and which are "
        "used), VAE, and unrelated keys. Exit 0 when loadable, 1 when not, 2 for usage errors.",
    )
    p.add_argument("path", type=Path, help=".safetensors/.ckpt file or diffusers folder")
    p.add_argument("--vae", type=Path, help="separate VAE file or folder, as [model] vae")
    p.add_argument("--use-ema", action="store_true", help="report as with [model] use_ema = true")
    p.add_argument("--tokenizer", type=Path, help="local CLIP tokenizer folder (for --load offline)")
    p.add_argument("--load", action="store_true", help="also load it on the CPU as training would")
    p.add_argument("--json", action="store_true", help="machine-readable report (see docs/cli.md)")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from trainer.checkpoint_inspect import inspect_model

    rep = inspect_model(args.path, vae=args.vae, use_ema=args.use_ema, load=args.load, tokenizer=args.tokenizer)
    if args.json:
        print(json.dumps(rep.to_json(), indent=2))
    else:
        print(f"{rep.path}: {rep.family}")
        for line in rep.lines():
            print("  " + line)
        print("loadable" if rep.loadable else f"NOT loadable: {rep.reason}")
    return 0 if rep.loadable else 1
