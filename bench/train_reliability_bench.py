"""Kill -9 during training, then resume: counts of non-identical resumes and unloadable checkpoints.

    python bench/train_reliability_bench.py --trials 25 [--families caching-disk,state-save] [--seed 0]

Families (phases of a run killed with SIGKILL): caching-memory, caching-disk, mid-epoch,
checkpoint-save, state-save; trials go round-robin over them. Each trial: a child trains the tiny
SD1 model and is killed in its phase; every checkpoint/state left must load; then the user's next
step runs (`--resume` from the newest state, or a fresh run when none was left) and its final LoRA is
compared with an uninterrupted run's, tensor for tensor. See trainer/reliability.py.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.reliability import FAMILIES, make_env, run_trial  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    families = [f for f in args.families.split(",") if f]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        p.error(f"unknown families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    rng = random.Random(args.seed)
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    problems: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kazari-train-reliab-") as tmp:
        env = make_env(Path(tmp) / "env")
        for i in range(args.trials):
            family = families[i % len(families)]
            trial = run_trial(env, family, Path(tmp) / "trial", rng)
            r = rows[family]
            r["trials"] += 1
            r["killed in phase"] += trial.killed_in_phase
            r["resumed from a state"] += trial.resumed_from_state
            r["non-identical resumes"] += not trial.identical
            r["unloadable leftovers"] += bool(trial.unloadable)
            r["errors"] += bool(trial.error)
            for text in trial.unloadable + ([trial.error] if trial.error else []):
                problems.append(f"trial {i} ({family}): {text}")
            print(f"[{i + 1}/{args.trials}] {family}: killed_in_phase={trial.killed_in_phase} "
                  f"from_state={trial.resumed_from_state} identical={trial.identical} "
                  f"unloadable={len(trial.unloadable)}{' error=' + trial.error if trial.error else ''}", flush=True)
    cols = ["trials", "killed in phase", "resumed from a state", "non-identical resumes", "unloadable leftovers",
            "errors"]
    print(f"\n{'family':16s} " + " ".join(f"{c:>22s}" for c in cols))
    total = defaultdict(int)
    for family in families:
        if family in rows:
            print(f"{family:16s} " + " ".join(f"{rows[family][c]:22d}" for c in cols))
            for c in cols:
                total[c] += rows[family][c]
    print(f"{'total':16s} " + " ".join(f"{total[c]:22d}" for c in cols))
    print(f"\n{time.perf_counter() - t0:.0f} s")
    for line in problems:
        print(line)
    return 1 if total["non-identical resumes"] or total["unloadable leftovers"] or total["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
