"""`kazari doctor [--output-dir DIR] [--json]` — what this machine can do, each missing piece with its fix."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_MARKS = {"ok": "ok  ", "info": "info", "warn": "warn", "missing": "MISS"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Python, torch/CUDA, GPU, extras, caches and disk",
                       description="Report what this machine can do for training; every missing piece "
                       "comes with the command that fixes it. Exit 0 (1 when something required is missing).")
    p.add_argument("--output-dir", type=Path, default=Path("."), help="where LoRAs will be saved (free disk)")
    p.add_argument("--json", action="store_true", help="machine-readable report (see docs/cli.md)")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from trainer.doctor import run_checks

    checks = run_checks(args.output_dir)
    if args.json:
        print(json.dumps([c.to_json() for c in checks], indent=2))
    else:
        for c in checks:
            print(f"{_MARKS.get(c.status, c.status)}  {c.name:<15} {c.detail}")
            if c.fix:
                print(f"      {'':<15} fix: {c.fix}")
    return 1 if any(c.status == "missing" for c in checks) else 0
