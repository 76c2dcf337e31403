"""Fetch a character's images and tags from a booru into a kohya folder.

Each image is checked (md5 against the post, full decode, size), skipped when the folder already
has it (md5: a re-run resumes) or a near-duplicate of one it has (lint's perceptual hash), then
written atomically and recorded in ``.kazari/sources.jsonl``. Captions are made from the post's
own tags and written at the end as ONE undoable edit through the dataset engine. Cancelling (or
Ctrl-C) stops between images: every file on disk is complete, and a re-run captions any image a
kill left without one.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagging import captions
from tagging.atomic import atomic_write_bytes
from tagging.dataset import IMAGE_EXTENSIONS, Dataset, parse_folder_name
from tagging.errors import UserError
from tagging.gather.boorus import RATINGS, Post, credentials, make_site
from tagging.gather.http import Cancelled, Client, FetchError, HttpOptions, redact
from tagging.gather.sources import append_sources, read_sources
from tagging.lint import DEFAULT_NEAR_DUP_DISTANCE, hash_distance, perceptual_hash

# What a character dataset rarely wants (gather.md: comics, monochrome, several characters...).
DEFAULT_EXCLUDE = ("comic", "monochrome", "greyscale", "multiple_girls", "text_focus", "sketch", "4koma")
CAPTION_MODES = ("tags", "none")


@dataclass(frozen=True)
class FetchOptions:
    tags: tuple[str, ...]  # the search; "-tag" entries are exclusions
    site: str = "danbooru"
    limit: int = 40
    ratings: frozenset[str] | None = None  # None: any rating
    min_side: int = 0
    exclude: tuple[str, ...] = ()
    caption: str = "tags"
    copyright: bool = False
    trigger: str | None = None  # None: the profile's trigger, else the folder's
    base_url: str | None = None
    per_page: int | None = None
    near_duplicate_distance: int = DEFAULT_NEAR_DUP_DISTANCE

    @property
    def include(self) -> list[str]:
        return [t for t in self.tags if not t.startswith("-")]

    @property
    def excluded(self) -> list[str]:
        return captions.dedupe([*(t[1:] for t in self.tags if t.startswith("-") and len(t) > 1), *self.exclude])


@dataclass(frozen=True)
class Arrival:
    key: str
    path: Path
    post_id: int
    md5: str
    tags: list[str]


@dataclass(frozen=True)
class FetchProgress:
    done: int  # images in the folder that count toward the limit (saved now + already there)
    limit: int
    seen: int  # posts looked at
    skipped: int
    failed: int
    note: str = ""


@dataclass
class FetchReport:
    root: Path
    folder: Path
    site: str
    saved: list[Arrival] = field(default_factory=list)
    existing: list[int] = field(default_factory=list)  # post ids already in the folder (md5)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # filtered out: (post id, reason)
    duplicates: list[tuple[int, str]] = field(default_factory=list)  # (post id, key it resembles)
    failed: list[tuple[int, str]] = field(default_factory=list)
    captioned: list[str] = field(default_factory=list)
    cancelled: bool = False
    requests: int = 0
    change: Any = None
    pending_captions: dict[str, list[str]] = field(default_factory=dict)  # key -> caption tags

    @property
    def done(self) -> int:
        return len(self.saved) + len(self.existing)


def target_folder(into: Path) -> tuple[Path, Path]:
    """(dataset root, image folder): ``ROOT/2_kazari`` -> (ROOT, ROOT/2_kazari); a plain folder is its own root."""
    into = Path(into).expanduser()
    if into.exists() and not into.is_dir():
        raise UserError(f"--into {into} is a file, not a folder.", hint="Pass a folder such as ROOT/2_kazari.")
    parsed = parse_folder_name(into.name)
    if parsed is not None and parsed[0] < 1:
        raise UserError(f"--into {into}: the repeat count {parsed[0]} is below 1 (sd-scripts would skip it).",
                        hint="Name the folder like 2_kazari.")
    return (into.parent if parsed else into), into


def filter_reason(post: Post, options: FetchOptions) -> str | None:
    """Why ``post`` is not wanted (None: fetch it). Checks everything the server could not."""
    if post.deleted:
        return "deleted or banned post"
    if not post.file_url:
        return "no file_url (restricted post; needs an account with access)"
    if post.ext not in IMAGE_EXTENSIONS:
        return f"not a still image ({post.ext or 'no extension'})"
    if options.ratings and post.rating not in options.ratings:
        return f"rating {post.rating or '?'} not wanted"
    tags = post.tags
    # Metatags ("rating:g", "order:score") are the server's business; they are no post tags.
    missing = [t for t in options.include if t not in tags and ":" not in t]
    if missing:
        return f"lacks {', '.join(missing)}"
    hit = [t for t in options.excluded if t in tags and ":" not in t]
    if hit:
        return f"excluded tag {', '.join(hit)}"
    if options.min_side and post.width and post.height and min(post.width, post.height) < options.min_side:
        return f"{post.width}x{post.height} is below --min-side {options.min_side}"
    return None


def caption_tags(post: Post, trigger: str | None, *, copyright: bool = False,
                 blocked: Callable[[str], bool] = lambda t: False) -> list[str]:
    """Trigger first, then character, (copyright), general tags; booru underscores kept."""
    tags = [*post.character, *(post.copyright if copyright else ()), *post.general]
    out = [t for t in captions.dedupe(tags) if t != trigger and "," not in t and not blocked(t)]
    return [trigger, *out] if trigger else out


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _decode(data: bytes):
    """Full decode (truncation only shows there) -> (size, perceptual hash); raises on junk."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size, perceptual_hash(im)


def _scan_folder(folder: Path) -> dict[str, tuple[str, Any]]:
    """md5 -> (file name, perceptual hash or None) for the images already in ``folder``."""
    out: dict[str, tuple[str, Any]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or path.name.startswith("."):
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        try:
            digest = _decode(data)[1]
        except Exception:  # noqa: BLE001 - a broken file is lint's business; it just cannot match
            digest = None
        out[_md5(data)] = (path.name, digest)
    return out


def _hash_hex(digest: Any) -> str:
    import numpy as np

    return "" if digest is None else np.packbits(np.asarray(digest, dtype=bool)).tobytes().hex()


def _hash_from_hex(text: str) -> Any:
    import numpy as np

    try:
        return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8)).astype(bool)
    except ValueError:
        return None


def _record(post: Post, key: str, digest: Any = None) -> dict[str, Any]:
    return {
        "phash": _hash_hex(digest),
        "key": key, "site": post.site, "post_id": post.id, "md5": post.md5, "file_url": post.file_url,
        "page_url": post.page_url, "source": post.source, "rating": post.rating,
        "artist": list(post.artist), "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def fetch(
    options: FetchOptions,
    into: Path,
    *,
    http: HttpOptions = HttpOptions(),
    env: dict[str, str] | None = None,
    on_progress: Callable[[FetchProgress], None] | None = None,
    on_arrival: Callable[[Arrival], None] | None = None,
    cancel: threading.Event | None = None,
    write: bool = True,
) -> FetchReport:
    """Fetch up to ``options.limit`` images into ``into``; see the module docstring.

    ``write=False`` leaves the captions in ``report.pending_captions`` for the caller to write with
    :func:`write_captions` on its own open dataset (the workbench does that on its UI thread).
    """
    if options.caption not in CAPTION_MODES:
        raise UserError(f"--caption {options.caption!r} is not one of {', '.join(CAPTION_MODES)}.")
    if options.ratings and not options.ratings <= set(RATINGS):
        raise UserError(f"--rating {','.join(sorted(options.ratings))} has unknown ratings; use g, s, q, e.")
    if not options.include:
        raise UserError("No search tag given.", hint='Pass the character tag, e.g. kazari fetch "uiharu_kazari".')
    site = make_site(options.site, options.base_url, options.per_page)
    root, folder = target_folder(into)
    folder.mkdir(parents=True, exist_ok=True)
    from tagging.character import load_character

    profile = load_character(root)
    parsed = parse_folder_name(folder.name) if folder != root else None
    folder_trigger = parsed[1].split()[0] if parsed and parsed[1].split() else None
    trigger = options.trigger or profile.trigger or folder_trigger
    key_prefix = "" if folder == root else folder.name + "/"

    report = FetchReport(root=root, folder=folder, site=site.name)
    cancel = cancel or threading.Event()
    known = _scan_folder(folder)
    at_start = set(known)
    counted: set[str] = set()  # files already there that a post has matched (each counts once)
    records = read_sources(root)
    recorded = {(r.get("site"), r.get("post_id")) for r in records}
    # md5 -> key of every image fetched before: a cleaned image has a new md5, a rejected one is
    # in the trash, and neither may be downloaded again.
    earlier = {str(r["md5"]): str(r.get("key", "")) for r in records if r.get("md5")}
    # Pictures rejected earlier still block their near-duplicates (their hash is in the record).
    removed = [(str(r.get("key", "")) + " (removed)", _hash_from_hex(str(r.get("phash", ""))))
               for r in records if r.get("phash") and _with_stem(root / str(r.get("key", ""))) is None]
    pending_captions: dict[str, list[str]] = {}

    def progress(note: str = "") -> None:
        if on_progress is not None:
            on_progress(FetchProgress(report.done, options.limit, seen, len(report.skipped), len(report.failed), note))

    auth, params = credentials(site.name, env)
    client = Client(http, auth=auth, params=params, cancel=cancel)
    seen = 0
    error: FetchError | None = None
    try:
        progress("searching")
        for post in site.posts(client, options.include, options.excluded):
            if report.done >= options.limit:
                break
            if cancel.is_set():
                report.cancelled = True
                break
            seen += 1
            reason = filter_reason(post, options)
            if reason is not None:
                report.skipped.append((post.id, reason))
                progress()
                continue
            name = f"{site.name}_{post.id}{'.jpg' if post.ext == '.jpeg' else post.ext}"
            if post.md5 in known and (post.md5 not in at_start or post.md5 in counted):
                report.duplicates.append((post.id, key_prefix + known[post.md5][0]))  # same file, 2 posts
                progress()
                continue
            if post.md5 in known:
                have = known[post.md5][0]
                counted.add(post.md5)
                report.existing.append(post.id)
                key = key_prefix + have
                if (site.name, post.id) not in recorded:  # a kill between image and record
                    append_sources(root, [_record(post, key)])
                    recorded.add((site.name, post.id))
                if not (folder / have).with_suffix(".txt").exists():
                    pending_captions[key] = caption_tags(post, trigger, copyright=options.copyright,
                                                         blocked=profile.blocks)
                progress(f"already have {have}")
                continue
            if post.md5 and post.md5 in earlier:
                present = _with_stem(root / earlier[post.md5])
                if present is not None and post.md5 not in counted:
                    counted.add(post.md5)
                    report.existing.append(post.id)
                    progress(f"already have {present.name}")
                elif present is not None:
                    report.duplicates.append((post.id, earlier[post.md5]))
                else:
                    report.skipped.append((post.id, "removed from the dataset earlier (trash); not fetched again"))
                    progress()
                continue
            path = folder / name
            if path.exists():  # same name, different bytes (the post's file was replaced): keep the user's
                report.failed.append((post.id, f"{path.name} already exists with other content; not overwritten"))
                progress()
                continue
            got = _download(client, post, options.min_side)
            if isinstance(got, str):
                (report.skipped if "--min-side" in got else report.failed).append((post.id, got))
                progress()
                continue
            body, digest = got
            twin = _near_duplicate(digest, [*known.values(), *removed], options.near_duplicate_distance)
            if twin is not None:
                report.duplicates.append((post.id, twin if twin.endswith(" (removed)") else key_prefix + twin))
                progress(f"near-duplicate of {twin}")
                continue
            atomic_write_bytes(path, body)
            key = key_prefix + name
            append_sources(root, [_record(post, key, digest)])
            recorded.add((site.name, post.id))
            known[_md5(body)] = (name, digest)
            tags = caption_tags(post, trigger, copyright=options.copyright, blocked=profile.blocks)
            pending_captions[key] = tags
            arrival = Arrival(key, path, post.id, post.md5 or _md5(body), tags)
            report.saved.append(arrival)
            if on_arrival is not None:
                on_arrival(arrival)
            progress(f"saved {name}")
    except Cancelled:
        report.cancelled = True
    except FetchError as err:  # the site stopped answering: caption what arrived, then say so
        error = err
    finally:
        report.requests = client.requests_made
        client.close()
    if options.caption == "tags":
        report.pending_captions = pending_captions
        if write and pending_captions:
            report.change, report.captioned = write_captions(Dataset.open(root), pending_captions, site.name)
    if error is not None:
        error.report = report
        raise error
    return report


def _download(client: Client, post: Post, min_side: int) -> tuple[bytes, Any] | str:
    """(bytes, perceptual hash) of a checked download, or why it is not usable."""
    try:
        resp, body = client.get(post.file_url or "", api=False)
    except FetchError as err:
        return str(err).split(" kept failing")[0] + ": kept failing"
    if resp.status_code >= 400:
        return f"HTTP {resp.status_code} for {redact(post.file_url or '')}"
    if post.md5 and _md5(body) != post.md5:
        return "download does not match the post's md5 (truncated or altered)"
    try:
        (w, h), digest = _decode(body)
    except Exception as err:  # noqa: BLE001 - any decoder failure is about this file
        return f"not a readable image ({type(err).__name__})"
    if min_side and min(w, h) < min_side:
        return f"{w}x{h} is below --min-side {min_side}"
    return body, digest


def _with_stem(path: Path) -> Path | None:
    """``path`` or an image with the same stem (a clean may turn .jpg into .png); None if gone."""
    if path.is_file():
        return path
    for ext in IMAGE_EXTENSIONS:
        other = path.with_suffix(ext)
        if other.is_file():
            return other
    return None


def _near_duplicate(digest: Any, known: Iterable[tuple[str, Any]], distance: int) -> str | None:
    if distance < 0:
        return None
    for name, other in known:
        if other is not None and hash_distance(digest, other) <= distance:
            return name
    return None


def write_captions(ds: Dataset, tags_by_key: dict[str, list[str]], site: str):
    """Captions for fetched images as one undoable edit (saved at once) -> (change, keys)."""
    from tagging.edits import SetTags

    present = {k: v for k, v in tags_by_key.items() if k in {i.key for i in ds.images}}
    if not present:
        return None, []
    change = ds.apply(SetTags(present, label=f"captions of {len(present)} image(s) fetched from {site}"))
    ds.save()
    return change, sorted(change.keys)
