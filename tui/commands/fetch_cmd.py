"""`kazari fetch` — download a character's images and their tags from a booru into a kohya folder.

Images are checked, deduplicated (md5 and perceptual hash) and written atomically; captions come
from the posts' own tags as one undoable edit; `.kazari/sources.jsonl` records every image's site,
post id and URLs. Ctrl-C stops after the current image and keeps everything complete; running the
same command again resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from tui.commands.argtypes import positive_int, seconds

JSON_VERSION = 1


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    from tagging.gather.boorus import SITES
    from tagging.gather.fetch import CAPTION_MODES, DEFAULT_EXCLUDE
    from tagging.gather.http import HttpOptions

    p = sub.add_parser(
        "fetch",
        help="download a character's images and tags from Danbooru/Gelbooru/Safebooru",
        description="Fetch images of a character from a booru with their tags into a kohya folder "
        "(see docs/gather.md). Credentials come from KAZARI_DANBOORU_LOGIN/KAZARI_DANBOORU_API_KEY or "
        "KAZARI_GELBOORU_API_KEY/KAZARI_GELBOORU_USER_ID, else ~/.config/kazari/credentials.toml, and "
        "are never written anywhere.",
    )
    p.add_argument("tags", nargs="+", metavar="TAG", help="search tags, e.g. uiharu_kazari (-tag excludes)")
    p.add_argument("--site", choices=SITES, default="danbooru", help="which site software (default danbooru)")
    p.add_argument("--base-url", metavar="URL", default=None,
                   help="another instance of the same software (a mirror, a self-hosted booru)")
    p.add_argument("--limit", type=positive_int, default=40, metavar="N", help="images wanted in the folder (default 40)")
    p.add_argument("--rating", type=_list, default=None, metavar="g,s",
                   help="keep only these ratings (g general, s sensitive, q questionable, e explicit)")
    p.add_argument("--min-side", type=int, default=512, metavar="PX", help="skip images whose short side is smaller (default 512)")
    p.add_argument("--exclude", type=_list, default=None, metavar="TAG,TAG",
                   help=f"skip posts with any of these tags (default {','.join(DEFAULT_EXCLUDE)}; 'none' for none)")
    p.add_argument("--into", type=Path, default=None, metavar="ROOT/N_name",
                   help="kohya image folder to fill (default ./<tag>/2_<trigger or tag>)")
    p.add_argument("--trigger", default=None, metavar="WORD",
                   help="first tag of every caption (default: the character profile's, else the folder's)")
    p.add_argument("--caption", choices=CAPTION_MODES, default="tags", help="write captions from the post tags (default) or none")
    p.add_argument("--copyright", action="store_true", help="also put the copyright (series) tags into captions")
    p.add_argument("--interval", type=seconds, default=HttpOptions.interval, metavar="S",
                   help=f"seconds between requests (default {HttpOptions.interval})")
    p.add_argument("--json", action="store_true", help="print a JSON report (stable; see docs/cli.md)")
    p.set_defaults(func=run)


def _progress_bar(enabled: bool):
    if not enabled:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("fetching"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("fetch", total=None, note="")

    def on_progress(p) -> None:
        bar.update(task, completed=p.done, total=p.limit,
                   note=f"seen {p.seen}, skipped {p.skipped}, failed {p.failed} {p.note}"[:60])

    return bar, on_progress


def run(args: argparse.Namespace) -> int:
    from tagging.gather.fetch import DEFAULT_EXCLUDE, FetchOptions, fetch
    from tagging.gather.http import HttpOptions
    from tui.commands.tag_cmd import _cancel_on_sigint

    exclude = DEFAULT_EXCLUDE if args.exclude is None else tuple(t for t in args.exclude if t != "none")
    first = next((t for t in args.tags if not t.startswith("-")), "images")
    into = args.into or Path(first) / f"2_{args.trigger or first}"
    options = FetchOptions(
        tags=tuple(args.tags), site=args.site, limit=args.limit,
        ratings=frozenset(args.rating) if args.rating else None, min_side=max(0, args.min_side),
        exclude=exclude, caption=args.caption, copyright=args.copyright, trigger=args.trigger,
        base_url=args.base_url,
    )
    cancel = threading.Event()
    bar, on_progress = _progress_bar(sys.stderr.isatty() and not args.json)
    with _cancel_on_sigint(cancel, quiet=args.json):
        if bar is not None:
            bar.start()
        try:
            report = fetch(options, into, http=HttpOptions(interval=args.interval), on_progress=on_progress,
                           cancel=cancel)
        finally:
            if bar is not None:
                bar.stop()
    if args.json:
        print(json.dumps(json_report(report, options), ensure_ascii=False, indent=2))
    else:
        print_report(report, options)
    return 130 if report.cancelled else 0


def json_report(report, options) -> dict:
    return {
        "version": JSON_VERSION,
        "site": report.site,
        "root": str(report.root),
        "folder": str(report.folder),
        "limit": options.limit,
        "cancelled": report.cancelled,
        "requests": report.requests,
        "counts": {"saved": len(report.saved), "existing": len(report.existing), "skipped": len(report.skipped),
                   "duplicates": len(report.duplicates), "failed": len(report.failed),
                   "captioned": len(report.captioned)},
        "saved": [{"key": a.key, "post_id": a.post_id, "md5": a.md5, "tags": a.tags} for a in report.saved],
        "existing": report.existing,
        "skipped": [{"post_id": i, "reason": r} for i, r in report.skipped],
        "duplicates": [{"post_id": i, "of": k} for i, k in report.duplicates],
        "failed": [{"post_id": i, "reason": r} for i, r in report.failed],
    }


def print_report(report, options) -> None:
    print(f"Saved {len(report.saved)} new image(s) into {report.folder} from {report.site} "
          f"({len(report.existing)} already there, {len(report.skipped)} skipped, "
          f"{len(report.duplicates)} duplicate(s), {len(report.failed)} failed; {report.requests} requests).")
    for post_id, reason in report.failed:
        print(f"  failed: post {post_id}: {reason}")
    if report.captioned:
        print(f"Captioned {len(report.captioned)} image(s) from the posts' tags: one step in the undo history.")
    if report.done < options.limit and not report.cancelled:
        print(f"The search ran out after {report.done} of {options.limit} image(s); loosen --exclude/--rating/"
              "--min-side or add another site.")
    if report.cancelled:
        print("Cancelled: every saved file is complete; run the same command again to continue.")
    print(f"Attribution (site, post id, source URL): {report.root / '.kazari' / 'sources.jsonl'}")
