"""Reliability in bulk: kill, race and starve kazari's writers and count what was lost.

    .venv/bin/python bench/reliability_bench.py --trials 100 [--families kill-during-edit,concurrent-writers]

Families come from the registry ``tagging.reliability.FAMILIES`` (kill-during-edit,
kill-during-undo, concurrent-writers, disk-full); ``trainer.reliability`` is imported when it
exists: it may register families itself with ``@register_family``, or, if it offers
``FAMILIES`` (phase names), ``make_env`` and ``run_trial`` as bench/train_reliability_bench.py
uses them, they become one ``kill-during-train`` family (trials round-robin over the phases).
Each family returns counts; the ones that must be zero are printed first: lost updates,
un-undoable edits, torn files, non-identical resumes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tagging.reliability import FAMILIES  # noqa: E402

# Modules that add families to the registry when imported (optional: skipped if absent).
PLUGIN_MODULES = ("trainer.reliability",)
MUST_BE_ZERO = ("lost_updates", "un_undoable", "torn_files", "non_identical_resumes", "unloadable_leftovers",
                "traceback_errors", "trial_errors")


def load_plugins() -> list[str]:
    loaded = []
    for name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        loaded.append(name)
        _adopt_phase_harness(module)
    return loaded


def _adopt_phase_harness(module: object) -> None:
    """A trainer harness with phases + make_env + run_trial (no registry of its own) becomes one family."""
    phases = getattr(module, "FAMILIES", None)
    make_env, run_trial = getattr(module, "make_env", None), getattr(module, "run_trial", None)
    if "kill-during-train" in FAMILIES or not isinstance(phases, tuple) or not (make_env and run_trial):
        return

    def kill_during_train(trials: int, workdir: Path, rng: random.Random) -> dict[str, int]:
        counts = {"trials": 0, "non_identical_resumes": 0, "unloadable_leftovers": 0, "trial_errors": 0,
                  "killed_in_phase": 0, "resumed_from_state": 0}
        env = make_env(workdir / "env")
        for i in range(trials):
            trial = run_trial(env, phases[i % len(phases)], workdir / "trial", rng)
            counts["trials"] += 1
            counts["killed_in_phase"] += bool(trial.killed_in_phase)
            counts["resumed_from_state"] += bool(trial.resumed_from_state)
            counts["non_identical_resumes"] += not trial.identical
            counts["unloadable_leftovers"] += bool(trial.unloadable)
            counts["trial_errors"] += bool(trial.error)
        return counts

    FAMILIES["kill-during-train"] = kill_during_train


def main(argv: list[str] | None = None) -> int:
    plugins = load_plugins()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per family")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated, from: {', '.join(FAMILIES)}")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true", help="print the counts as JSON too")
    # kill -9 loses no page cache, so a RAM folder tests the same crash states without fsync waits.
    parser.add_argument("--workdir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where trial datasets live (default /dev/shm when present)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    rng = random.Random(args.seed)
    results: dict[str, dict[str, int]] = {}
    work = Path(tempfile.mkdtemp(prefix="kazari-reliability-", dir=args.workdir))
    try:
        for name in names:
            start = time.perf_counter()
            counts = FAMILIES[name](args.trials, work / name, rng)
            counts["seconds"] = round(time.perf_counter() - start, 1)
            results[name] = counts
            zero = {k: counts.get(k, 0) for k in MUST_BE_ZERO if k in counts}
            rest = {k: v for k, v in counts.items() if k not in zero}
            print(f"{name:20} {json.dumps(zero)}  {json.dumps(rest)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(c.get("trials", 0) for c in results.values())
    bad = {k: sum(c.get(k, 0) for c in results.values()) for k in MUST_BE_ZERO}
    print(f"total: {total} trials; " + ", ".join(f"{k} {v}" for k, v in bad.items())
          + (f" (plugins: {', '.join(plugins)})" if plugins else ""))
    if args.json:
        print(json.dumps({"families": results, "total_trials": total, "must_be_zero": bad}))
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
