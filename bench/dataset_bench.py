"""Dataset engine bench: open / stats / bulk edit / save on N captioned images, plus kill-while-saving.

    .venv/bin/python bench/dataset_bench.py [--n 10000] [--kill-trials 20] [--lint]

Prints absolute figures and ratios against baselines measured in the same run (reading every
caption with a bare loop; the same tag removal as a bare list comprehension; writing the
changed files with plain, non-atomic writes). Targets (issue 2): open <= 1 s, bulk remove
<= 50 ms, save writes only the changed files.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tagging.dataset import Dataset  # noqa: E402
from tagging.edits import RemoveTags  # noqa: E402
from tagging.lint import lint  # noqa: E402
from tagging.reliability import calibrate, make_caption_dataset, run_trial  # noqa: E402
from tagging.stats import tag_frequency  # noqa: E402
from tagging.synthetic import make_character_dataset  # noqa: E402

REMOVE = ["solo", "smile", "simple_background", "looking_at_viewer", "upper_body"]


def timed(func):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="images (default 10000)")
    parser.add_argument("--size", type=int, default=48, help="long side of the generated PNGs (default 48)")
    parser.add_argument("--kill-trials", type=int, default=20, help="kill-while-saving trials (default 20)")
    parser.add_argument("--kill-captions", type=int, default=300, help="captions per kill trial (default 300)")
    parser.add_argument("--lint", action="store_true", help="also time a full lint (decodes every image)")
    parser.add_argument("--dir", help="work folder (default: a temp folder, removed afterwards)")
    args = parser.parse_args()

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="kazari-bench-"))
    try:
        run(args, work)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    print(f"kazari dataset bench: N={args.n} images ({args.size}px PNG), python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, work dir {work}")
    gen_t, root = timed(lambda: make_character_dataset(work / "ds", n_images=args.n, size=args.size, seed=0))
    print(f"generate           {gen_t:8.2f} s   ({gen_t / args.n * 1000:.2f} ms/image)")
    gen512, _ = timed(lambda: make_character_dataset(work / "ds512", n_images=20, size=512, seed=1))
    print(f"generate 512px     {gen512 / 20 * 1000:8.1f} ms/image (target < 50 ms)")

    captions = sorted((root / "10_kazari").glob("*.txt"))
    gc.collect()
    base_read, _ = timed(lambda: [p.read_bytes() for p in captions])
    open_t, ds = timed(lambda: Dataset.open(root))
    print(f"open               {open_t * 1000:8.1f} ms  (target <= 1000 ms; {open_t / base_read:.1f}x a bare "
          f"read of every caption = {base_read * 1000:.1f} ms)")

    stats_t, rows = timed(lambda: tag_frequency(ds))
    print(f"stats              {stats_t * 1000:8.1f} ms  ({len(rows)} distinct tags)")

    lists = [list(i.tags) for i in ds.images]
    drop = set(REMOVE)
    base_rm, _ = timed(lambda: [[t for t in tags if t not in drop] for tags in lists])
    rm_t, change = timed(lambda: ds.apply(RemoveTags(REMOVE)))
    print(f"bulk remove 5 tags {rm_t * 1000:8.1f} ms  (target <= 50 ms; {len(change)} images changed, "
          f"{rm_t / base_rm:.1f}x a bare list comprehension = {base_rm * 1000:.1f} ms)")
    undo_t, _ = timed(ds.undo)
    redo_t, _ = timed(ds.redo)
    print(f"undo / redo        {undo_t * 1000:8.1f} / {redo_t * 1000:.1f} ms")

    # Make only ~10% of captions differ from disk to show that save writes just those.
    ds.undo()
    subset = [i.key for i in ds.images[:: 10]]
    ds.apply(RemoveTags(REMOVE), keys=subset)
    dirty = len(ds.dirty_keys)
    save_t, report = timed(ds.save)
    changed_paths = [ds.image(k).caption_path for k in report.written]
    texts = [ds.image(k).caption_bytes() for k in report.written]

    def plain_write() -> None:
        for p, data in zip(changed_paths, texts, strict=True):
            with open(p, "wb") as fh:
                fh.write(data)

    base_save, _ = timed(plain_write)
    print(f"save               {save_t * 1000:8.1f} ms  (wrote {len(report.written)} of {len(ds.images)} captions "
          f"= the {dirty} changed; originals kept {len(report.originals_kept)}; {save_t / base_save:.1f}x plain "
          f"non-atomic writes = {base_save * 1000:.1f} ms)")
    ds.apply(RemoveTags(REMOVE))
    all_t, all_report = timed(ds.save)
    print(f"save all changed   {all_t * 1000:8.1f} ms  (bulk edit of every caption: wrote {len(all_report.written)}, "
          f"originals kept {len(all_report.originals_kept)})")

    # Memory in a separate pass: tracemalloc slows allocation-heavy code several times over.
    ds = change = lists = None  # type: ignore[assignment]
    shutil.rmtree(root / ".kazari")  # measure a first open, without the edit history made above
    gc.collect()
    tracemalloc.start()
    ds = Dataset.open(root)
    _, peak_open = tracemalloc.get_traced_memory()
    tag_frequency(ds)
    ds.apply(RemoveTags(REMOVE))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory        {peak / 2**20:8.1f} MiB traced by Python for open+stats+bulk remove "
          f"(open alone {peak_open / 2**20:.1f} MiB); process max RSS {rss:.0f} MiB")

    if args.lint:
        lint_t, findings = timed(lambda: lint(Dataset.open(root), min_size=32))
        print(f"lint (decode all)  {lint_t:8.2f} s   ({len(findings)} findings)")

    if args.kill_trials:
        template = work / "kill-template"
        old = make_caption_dataset(template, args.kill_captions)
        save_time = calibrate(template, work / "kill-calibrate")
        rng = random.Random(42)
        killed = mixed = bad = 0
        for _ in range(args.kill_trials):
            r = run_trial(template, work / "kill-trial", old, save_time * 1.1, rng)
            killed += r.killed_during_save
            mixed += bool(r.old and r.new)
            bad += len(r.bad)
            for line in r.bad[:3]:
                print("   TORN:", line)
        print(f"kill-while-saving  {args.kill_trials} trials x {args.kill_captions} captions (save takes "
              f"{save_time * 1000:.0f} ms): {killed} killed mid-save, {mixed} left a mix of old and new files, "
              f"{bad} torn/empty captions")


if __name__ == "__main__":
    main()
