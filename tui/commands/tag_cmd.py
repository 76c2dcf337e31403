"""`kazari tag` — auto-tag a dataset with a WD14-family (or DeepDanbooru) ONNX tagger.

Writes go through the dataset engine as one undoable edit. Ctrl-C stops after the current batch
and saves the images already tagged; the rest stay untouched (a second Ctrl-C aborts at once).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import contextmanager

from tagging.errors import UserError
from tui.commands.argtypes import positive_int

JSON_VERSION = 1


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (use e.g. 0.35)") from None
    if value != value or value in (float("inf"), float("-inf")):  # NaN would silently select nothing
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number (use e.g. 0.35)")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; thresholds are 0..1 (above 1 disables the category)")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from tagging.tagger.models import KNOWN_MODELS
    from tagging.tagger.select import DEFAULT_CHARACTER, DEFAULT_GENERAL, MODES

    p = sub.add_parser(
        "tag",
        help="auto-tag a dataset with a WD14 tagger (ONNX)",
        description="Auto-tag the images of a dataset with a WD14-family ONNX tagger. Scores are cached "
        "per image under ROOT/.kazari/tagger-cache, so re-running with other thresholds is instant. "
        "Known model names: " + ", ".join(KNOWN_MODELS) + ".",
    )
    p.add_argument("root", metavar="ROOT", help="dataset folder (N_name sub-folders or plain images)")
    p.add_argument("--model", required=True, metavar="NAME|PATH",
                   help="folder with model.onnx + selected_tags.csv, a Hugging Face repo id, or a known name")
    p.add_argument("--general", type=_threshold, default=DEFAULT_GENERAL, metavar="T",
                   help=f"general-tag threshold (default {DEFAULT_GENERAL})")
    p.add_argument("--character", type=_threshold, default=DEFAULT_CHARACTER, metavar="T",
                   help=f"character-tag threshold (default {DEFAULT_CHARACTER})")
    p.add_argument("--mcut", action="store_true", help="choose thresholds per image by the largest score gap (MCut)")
    p.add_argument("--mode", choices=MODES, default="overwrite",
                   help="overwrite captions, append new tags, or skip images that have tags (default overwrite)")
    p.add_argument("--exclude", nargs="+", action="extend", default=[], metavar="TAG",
                   help="tags never to write (commas also separate; '_' and ' ' are equivalent)")
    p.add_argument("--ignore-character", action="store_true",
                   help="write the model's tags as they are: do not honour ROOT/.kazari/character.toml "
                   "(by default its features and never-add tags are never written, recognised character "
                   "tags are only suggested, and the trigger stays first)")
    p.add_argument("--spaces", action="store_true", help="write 'long hair' instead of 'long_hair' (kaomoji kept)")
    p.add_argument("--ratings", action="store_true", help="append the top rating tag")
    p.add_argument("--max-tags", type=positive_int, default=None, metavar="N",
                   help="keep at most N general+character tags per image (highest scores)")
    p.add_argument("--batch", type=positive_int, default=8, metavar="N", help="images per model call (default 8)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="onnxruntime device (auto: CUDA if onnxruntime-gpu sees a GPU, else CPU)")
    p.add_argument("--profile", choices=("auto", "wd14", "deepdanbooru"), default="auto",
                   help="preprocessing profile (auto: from the model's metadata / tag-list format)")
    p.add_argument("--caption-ext", default=".txt", metavar="EXT", help="caption extension (default .txt)")
    p.add_argument("--dry-run", action="store_true", help="show what would be written; write no caption")
    p.add_argument("--json", action="store_true", help="print a JSON report (stable; see docs/tagger.md)")
    p.set_defaults(func=run)


@contextmanager
def _cancel_on_sigint(cancel: threading.Event, quiet: bool):
    """First Ctrl-C: finish the current batch and keep results. Second: abort now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        if not quiet:
            print("\nkazari: stopping after this batch (Ctrl-C again to abort)...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress_bar(enabled: bool):
    if not enabled:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("tagging"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[note]}"), console=Console(stderr=True), transient=True)
    task = bar.add_task("tag", total=None, note="")

    def on_progress(p) -> None:
        note = f"cached {p.cached}" + (f", failed {p.failed}" if p.failed else "")
        bar.update(task, completed=p.done, total=p.total, note=note)

    return bar, on_progress


def run(args: argparse.Namespace) -> int:
    from tagging.dataset import Dataset
    from tagging.tagger import Tagger, TagOptions, tag_dataset

    exclude = tuple(t.strip() for item in args.exclude for t in item.split(",") if t.strip())
    options = TagOptions(general=args.general, character=args.character, mcut=args.mcut, ratings=args.ratings,
                         spaces=args.spaces, exclude=exclude, max_tags=args.max_tags)
    ds = Dataset.open(args.root, caption_ext=args.caption_ext)
    if not ds.images:
        raise UserError(f"The dataset {ds.root} has no training images to tag.",
                        hint="Point ROOT at the folder holding the N_name image folders.")
    tagger = Tagger.load(args.model, device=args.device, profile=args.profile)
    cancel = threading.Event()
    bar, on_progress = _progress_bar(sys.stderr.isatty())
    with _cancel_on_sigint(cancel, quiet=args.json):
        if bar is not None:
            bar.start()
        try:
            report = tag_dataset(ds, tagger, options, args.mode, batch_size=args.batch, dry_run=args.dry_run,
                                 on_progress=on_progress, cancel=cancel,
                                 honour_character=not args.ignore_character)
        finally:
            if bar is not None:
                bar.stop()
    if args.json:
        print(json.dumps(_json_report(args, ds, tagger, report), ensure_ascii=False, indent=2))
    else:
        _print_report(args, ds, tagger, report)
    return 130 if report.cancelled else 0


def _json_report(args, ds, tagger, report) -> dict:
    images = []
    for key, result in report.results.items():
        images.append({
            "key": key,
            "tags": report.final.get(key, list(ds.image(key).tags)),
            "changed": key in report.final,
            "general": {n: round(s, 4) for n, s in result.general},
            "characters": {n: round(s, 4) for n, s in result.character},
            "rating": None if result.rating is None else {"tag": result.rating[0], "score": round(result.rating[1], 4)},
        })
    return {
        "version": JSON_VERSION,
        "root": str(ds.root),
        "model": args.model,
        "model_id": tagger.model_id,
        "profile": tagger.profile.name,
        "input_size": tagger.size,
        "providers": tagger.providers,
        "mode": args.mode,
        "dry_run": bool(args.dry_run),
        "cancelled": report.cancelled,
        "counts": {
            "images": len(ds.images),
            "tagged": len(report.results),
            "changed": len(report.final),
            "from_cache": report.cached,
            "skipped": len(report.skipped),
            "failed": len(report.failed),
            "untouched": len(report.untouched),
        },
        "images": images,
        "skipped": report.skipped,
        "failed": [{"key": k, "reason": r} for k, r in report.failed],
        "untouched": report.untouched,
        "characters": [{"tag": t, "images": n} for t, n in report.characters.most_common()],
        "character_profile": None if report.character is None else {
            "trigger": report.character.trigger,
            "features": report.character.features,
            "never_add": report.character.never_add,
            "offered": [{"tag": t, "images": n} for t, n in report.character_offers()],
        },
    }


def _print_report(args, ds, tagger, report) -> None:
    out = sys.stdout
    if args.dry_run:
        for key, tags in report.final.items():
            print(f"{key}: {', '.join(tags)}", file=out)
    verb = "Would change" if args.dry_run else "Changed"
    print(
        f"{verb} {len(report.final)} of {len(report.results)} tagged image(s) with {args.model} "
        f"({tagger.profile.name}, {tagger.size}px, {tagger.providers[0]}; mode {args.mode}); "
        f"{report.cached} from cache, {len(report.skipped)} skipped, {len(report.failed)} failed.",
        file=out,
    )
    for key, reason in report.failed:
        print(f"  failed: {key}: {reason}", file=out)
    if report.cancelled:
        print(f"Cancelled: {len(report.untouched)} image(s) left untouched; tagged ones were "
              f"{'not written (dry run)' if args.dry_run else 'saved'}.", file=out)
    profile = report.character
    if profile is not None and not profile.is_empty:
        kept = profile.features + profile.never_add
        print(f"Character profile honoured: {len(kept)} tag(s) never written"
              f"{' (' + ', '.join(kept[:6]) + (', …' if len(kept) > 6 else '') + ')' if kept else ''}"
              f"{f', trigger {profile.trigger} first' if profile.trigger else ''}"
              " (--ignore-character turns this off).", file=out)
    offers = report.character_offers()
    suggestions = report.trigger_suggestions()
    if offers:
        shown = ", ".join(f"{t} ({n} image{'s' if n != 1 else ''})" for t, n in offers[:3])
        print(f"Character tags recognised and NOT written (trigger-word candidates): {shown}. Keep them out "
              f"for good: kazari dataset character {args.root} --never {' '.join(t for t, _ in offers[:3])}",
              file=out)
    elif suggestions and profile is None:
        shown = ", ".join(f"{t} ({n} image{'s' if n != 1 else ''})" for t, n in suggestions)
        print(f"Character tags recognised (trigger-word candidates): {shown}", file=out)
    if not args.dry_run and report.final:
        print("The change is one step in the dataset's undo history.", file=out)
