"""`kazari clean` — remove backgrounds (anime-segmentation ISNet ONNX), crop, cap sizes, drop duplicates.

Replaced images are one undoable step (`kazari dataset undo`), originals kept under
`.kazari/originals/images/`; duplicates and too-small images go to `.kazari/trash/`. Ctrl-C stops
after the current batch and keeps what is done.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from tui.commands.argtypes import positive_int

JSON_VERSION = 1


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (use e.g. 0.05)") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from tagging.gather.clean import BACKGROUNDS
    from tagging.gather.segment import DEFAULT_SEG_MODEL

    p = sub.add_parser(
        "clean",
        help="remove backgrounds, crop to the character, cap image sizes, trash duplicates",
        description="Clean a dataset's images (see docs/gather.md). Every change is undoable; originals are kept.",
    )
    p.add_argument("root", metavar="ROOT", help="dataset folder")
    p.add_argument("--remove-bg", action="store_true", help="cut the character out of the background")
    p.add_argument("--model", default=DEFAULT_SEG_MODEL, metavar="anime-seg|PATH",
                   help="segmentation model: anime-seg (skytnt/anime-seg from the HF cache), an .onnx file or a folder")
    p.add_argument("--background", choices=BACKGROUNDS, default="white",
                   help="composite on white (default) or keep transparency (PNG)")
    p.add_argument("--crop", choices=("subject",), default=None, help="crop to the character's box")
    p.add_argument("--margin", type=_fraction, default=0.05, metavar="F",
                   help="margin around the subject's box, as a fraction of its size (default 0.05)")
    p.add_argument("--min-side", type=positive_int, default=None, metavar="PX", help="trash images whose short side is smaller")
    p.add_argument("--max-side", type=positive_int, default=None, metavar="PX", help="downscale images whose long side is larger")
    p.add_argument("--dedupe", action="store_true", help="trash exact and near duplicates (lint's perceptual hash)")
    p.add_argument("--where", default=None, metavar="QUERY", help='only images whose tags match, e.g. "solo AND NOT comic"')
    p.add_argument("--batch", type=positive_int, default=4, metavar="N", help="images per model call (default 4)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="onnxruntime device")
    p.add_argument("--caption-ext", default=".txt", metavar="EXT", help="caption extension (default .txt)")
    p.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    p.add_argument("--json", action="store_true", help="print a JSON report (stable; see docs/cli.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tagging.dataset import Dataset
    from tagging.errors import UserError
    from tagging.gather.clean import CleanOptions, clean_dataset
    from tagging.gather.segment import Segmenter
    from tui.commands.tag_cmd import _cancel_on_sigint

    options = CleanOptions(remove_bg=args.remove_bg, background=args.background, crop=args.crop == "subject",
                           margin=args.margin, min_side=args.min_side, max_side=args.max_side, dedupe=args.dedupe,
                           where=args.where, dry_run=args.dry_run, batch_size=args.batch)
    if options.crop and not options.remove_bg:
        raise UserError("--crop subject needs --remove-bg (the subject's box comes from the mask).")
    if not (options.remove_bg or options.max_side or options.min_side or options.dedupe):
        raise UserError("Nothing to do.", hint="Pass --remove-bg, --max-side, --min-side or --dedupe.")
    ds = Dataset.open(args.root, caption_ext=args.caption_ext)
    segmenter = Segmenter.load(args.model, device=args.device) if options.remove_bg else None
    cancel = threading.Event()
    bar = task = None
    if sys.stderr.isatty() and not args.json:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("cleaning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=True)
        task = bar.add_task("clean", total=None)
    with _cancel_on_sigint(cancel, quiet=args.json):
        if bar is not None:
            bar.start()
        try:
            report = clean_dataset(ds, options, segmenter, cancel=cancel, on_progress=(
                (lambda p: bar.update(task, completed=p.done, total=p.total)) if bar is not None else None))
        finally:
            if bar is not None:
                bar.stop()
    if args.json:
        print(json.dumps(json_report(ds, report, segmenter), ensure_ascii=False, indent=2))
    else:
        print_report(report, segmenter)
    return 130 if report.cancelled else 0


def json_report(ds, report, segmenter) -> dict:
    return {
        "version": JSON_VERSION,
        "root": str(ds.root),
        "dry_run": report.dry_run,
        "cancelled": report.cancelled,
        "model": None if segmenter is None else str(segmenter.model_path),
        "input_size": None if segmenter is None else segmenter.size,
        "providers": None if segmenter is None else segmenter.providers,
        "counts": {"changed": len(report.changed), "empty_mask": len(report.empty), "full_mask": len(report.full),
                   "unchanged": len(report.unchanged), "small": len(report.small),
                   "duplicates": len(report.duplicates), "failed": len(report.failed),
                   "untouched": len(report.untouched)},
        "changed": [{"key": k, "what": v} for k, v in report.changed.items()],
        "empty_mask": report.empty,
        "full_mask": report.full,
        "small": report.small,
        "duplicates": [{"key": k, "of": o} for k, o in report.duplicates],
        "failed": [{"key": k, "reason": r} for k, r in report.failed],
        "untouched": report.untouched,
    }


def print_report(report, segmenter) -> None:
    verb = "Would change" if report.dry_run else "Changed"
    where = "" if segmenter is None else f" with {segmenter.model_path.name} ({segmenter.size}px, {segmenter.providers[0]})"
    print(f"{verb} {len(report.changed)} image(s){where}; {len(report.unchanged)} needed nothing, "
          f"{len(report.failed)} failed.")
    for key, what in report.changed.items():
        print(f"  {key}: {what}")
    for key in report.empty:
        print(f"  not changed: {key}: the model found no character (empty mask)")
    for key in report.full:
        print(f"  not changed: {key}: the mask covers the whole frame (no background found)")
    trash = "would go" if report.dry_run else "went"
    for key, other in report.duplicates:
        print(f"  duplicate: {key} of {other} ({trash} to the trash)")
    for key in report.small:
        print(f"  too small: {key} ({trash} to the trash)")
    for key, reason in report.failed:
        print(f"  failed: {key}: {reason}")
    if report.cancelled:
        print(f"Cancelled: {len(report.untouched)} image(s) left untouched.")
    if not report.dry_run and (report.changed or report.duplicates or report.small):
        print("Originals are kept: `kazari dataset undo ROOT` puts them back.")
