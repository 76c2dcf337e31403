"""Reliability in bulk: kill, race and starve kazari's writers and count what was lost.

    .venv/bin/python bench/reliability_bench.py --trials 100 [--families kill-during-edit,concurrent-writers]

Families come from the registry ``tagging.reliability.FAMILIES`` (kill-during-edit,
kill-during-undo, concurrent-writers, disk-full); ``trainer.reliability`` is imported when it
exists so its families (kill-during-train...) register themselves with ``@register_family``.
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
MUST_BE_ZERO = ("lost_updates", "un_undoable", "torn_files", "non_identical_resumes", "traceback_errors")


def load_plugins() -> list[str]:
    loaded = []
    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
    return loaded


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
