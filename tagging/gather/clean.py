"""Clean a dataset's images: remove backgrounds, crop to the subject, cap the size, drop duplicates.

Images are decoded and prepared by worker threads while the model runs a batch (onnxruntime
releases the GIL), and composited/encoded by the same workers afterwards. Every replaced image
goes through ``Dataset.replace_images`` as ONE undoable step with the originals kept; duplicates
and too-small images go to the trash (also undoable). Images whose mask is empty or covers the
whole frame are reported and left alone. Cancelling stops after the current batch and keeps what
is done.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from tagging.errors import UserError
from tagging.gather.segment import (
    Segmenter,
    composite_white,
    coverage,
    postprocess,
    preprocess,
    subject_box,
    with_alpha,
)
from tagging.tagger.pipeline import _describe, default_workers

if TYPE_CHECKING:
    from tagging.dataset import Dataset

BACKGROUNDS = ("white", "transparent")
EMPTY_COVERAGE = 0.002  # below: the model found no character
FULL_COVERAGE = 0.995  # above: it found no background


@dataclass(frozen=True)
class CleanOptions:
    remove_bg: bool = False
    background: str = "white"
    crop: bool = False  # crop to the subject's box (needs remove_bg)
    margin: float = 0.05
    min_side: int | None = None  # trash images whose short side is smaller
    max_side: int | None = None  # downscale images whose long side is larger
    dedupe: bool = False  # trash near-duplicates (lint's perceptual hash)
    where: str | None = None  # tag query selecting the images
    dry_run: bool = False
    batch_size: int = 4
    workers: int | None = None


@dataclass(frozen=True)
class CleanProgress:
    done: int
    total: int
    key: str | None = None


@dataclass
class CleanReport:
    changed: dict[str, str] = field(default_factory=dict)  # key -> what was done
    empty: list[str] = field(default_factory=list)
    full: list[str] = field(default_factory=list)
    small: list[str] = field(default_factory=list)  # trashed (or would be)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (trashed key, the one kept)
    failed: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # nothing to do (e.g. already small enough)
    untouched: list[str] = field(default_factory=list)  # not reached before cancel
    cancelled: bool = False
    dry_run: bool = False
    change: Any = None
    replacements: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # key -> (new name, bytes)
    trash: list[str] = field(default_factory=list)  # keys that go (went) to the trash


def _select(ds: Dataset, where: str | None, keys: Iterable[str] | None) -> list:
    items = list(ds.images) if keys is None else [ds.image(k) for k in keys]
    if where:
        from tagging.query import compile_query

        pred = compile_query(where)
        items = [i for i in items if pred(i.tags)]
    return items


def _load_rgb(data: bytes) -> tuple[np.ndarray, str]:
    from tagging.tagger.preprocess import open_first_frame, to_rgb_on_white

    image = open_first_frame(data)
    fmt = image.format or "PNG"
    return np.asarray(to_rgb_on_white(image)), fmt


def _cap(arr: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = arr.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return arr
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    mode = "RGBA" if arr.shape[2] == 4 else "RGB"
    # Downscaling for training: an area filter (Lanczos) keeps detail without aliasing.
    return np.asarray(Image.fromarray(arr, mode).resize(size, Image.Resampling.LANCZOS))


def _encode(arr: np.ndarray, name: str, fmt: str) -> tuple[str, bytes]:
    """Encode keeping the file's format; alpha needs PNG (the extension changes then)."""
    stem, ext = name.rsplit(".", 1) if "." in name else (name, "png")
    buf = io.BytesIO()
    image = Image.fromarray(arr, "RGBA" if arr.shape[2] == 4 else "RGB")
    if arr.shape[2] == 4 and fmt not in ("PNG", "WEBP"):
        image.save(buf, "PNG")
        return f"{stem}.png", buf.getvalue()
    if fmt == "JPEG":
        image.save(buf, "JPEG", quality=95)
    elif fmt == "WEBP":
        image.save(buf, "WEBP", lossless=True)
    elif fmt == "BMP" and arr.shape[2] == 3:
        image.save(buf, "BMP")
    else:
        image.save(buf, "PNG")
        return f"{stem}.png", buf.getvalue()
    return f"{stem}.{ext}", buf.getvalue()


def finish_image(rgb: np.ndarray, mask: np.ndarray | None, options: CleanOptions) -> tuple[np.ndarray, list[str]]:
    """Composite / crop / cap one image -> (pixels, what was done)."""
    done: list[str] = []
    out = rgb
    if mask is not None:
        out = with_alpha(rgb, mask) if options.background == "transparent" else composite_white(rgb, mask)
        done.append(f"background {options.background}")
        if options.crop:
            box = subject_box(mask, options.margin)
            if box is not None and box != (0, 0, rgb.shape[1], rgb.shape[0]):
                left, top, right, bottom = box
                out = out[top:bottom, left:right]
                done.append(f"cropped to {right - left}x{bottom - top}")
    capped = _cap(out, options.max_side)
    if capped is not out:
        done.append(f"downscaled to {capped.shape[1]}x{capped.shape[0]}")
    return np.ascontiguousarray(capped), done


def clean_dataset(
    ds: Dataset,
    options: CleanOptions,
    segmenter: Segmenter | None = None,
    *,
    keys: Iterable[str] | None = None,
    on_progress: Callable[[CleanProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> CleanReport:
    if options.background not in BACKGROUNDS:
        raise UserError(f"--background {options.background!r} is not one of {', '.join(BACKGROUNDS)}.")
    if options.crop and not options.remove_bg:
        raise UserError("--crop subject needs --remove-bg (the subject's box comes from the mask).")
    if not 0 <= options.margin <= 1:
        raise UserError(f"--margin {options.margin} must be between 0 and 1 (a fraction of the subject's size).")
    if options.remove_bg and segmenter is None:
        raise ValueError("remove_bg needs a Segmenter")
    report = CleanReport(dry_run=options.dry_run)
    cancel = cancel or threading.Event()
    items = _select(ds, options.where, keys)
    trash: list[str] = []
    if options.dedupe:
        report.duplicates = _duplicates(ds, {i.key for i in items})
        trash += [k for k, _ in report.duplicates]
    if options.min_side:
        for item in items:
            w, h = item.size
            if (w, h) != (0, 0) and min(w, h) < options.min_side and item.key not in trash:
                report.small.append(item.key)
                trash.append(item.key)
    items = [i for i in items if i.key not in set(trash)]
    report.trash = trash
    if options.remove_bg or options.max_side:
        report.replacements = _process(items, options, segmenter, report, on_progress, cancel)
    if not options.dry_run:
        apply_clean(ds, report, options)
    return report


def apply_clean(ds: Dataset, report: CleanReport, options: CleanOptions) -> None:
    """Write a computed clean: replacements as one undoable step, then the trash moves."""
    if report.replacements:
        report.change = ds.replace_images(report.replacements, _label(options, len(report.replacements)))
    for key in report.trash:
        ds.trash(key)
    report.dry_run = False


def _label(options: CleanOptions, n: int) -> str:
    what = [f"background removed ({options.background})"] if options.remove_bg else []
    if options.crop:
        what.append("cropped")
    if options.max_side:
        what.append(f"max side {options.max_side}")
    return f"clean {n} image(s): {', '.join(what)}"


def _duplicates(ds: Dataset, selected: set[str]) -> list[tuple[str, str]]:
    """Near-duplicates (and exact copies) by lint's perceptual hash: (the later one, the one it copies)."""
    from tagging.lint import lint

    out = []
    for f in lint(ds, check_images=True):
        if f.code == "image-near-duplicate" and f.key in selected:
            other = f.message.split(" is a near-duplicate of ", 1)[1].split(" (pHash", 1)[0]
            out.append((f.key, other))
    return out


def _process(items, options: CleanOptions, segmenter: Segmenter | None, report: CleanReport,
             on_progress, cancel: threading.Event) -> dict[str, tuple[str, bytes]]:
    """The threaded, batched pass: load+prepare in workers, model in this thread, finish in workers."""
    size = segmenter.size if segmenter is not None else 0
    batch_size = max(1, options.batch_size)
    workers = options.workers or default_workers()
    total, done = len(items), 0
    replacements: dict[str, tuple[str, bytes]] = {}

    def load(item):
        try:
            data = item.path.read_bytes()
            rgb, fmt = _load_rgb(data)
        except Exception as err:  # noqa: BLE001 - any decoder failure is about this file
            return None, _describe(err)
        tensor, geom = preprocess(rgb, size) if segmenter is not None and options.remove_bg else (None, None)
        return (rgb, fmt, tensor, geom), None

    def finish(item, rgb, fmt, raw, geom):
        mask = None if raw is None else postprocess(raw, geom)
        if mask is not None:
            cover = coverage(mask)
            if cover < EMPTY_COVERAGE:
                return "empty", None
            if cover > FULL_COVERAGE:
                return "full", None
        pixels, did = finish_image(rgb, mask, options)
        if not did:
            return "same", None
        name, data = _encode(pixels, item.name, fmt)
        return ", ".join(did), (name, data)

    def report_done(item, result) -> None:
        nonlocal done
        what, payload = result
        if what == "empty":
            report.empty.append(item.key)
        elif what == "full":
            report.full.append(item.key)
        elif what == "failed":
            report.failed.append((item.key, payload))
        elif what == "same":
            report.unchanged.append(item.key)
        elif payload is not None:
            report.changed[item.key] = what
            replacements[item.key] = payload
        done += 1
        if on_progress is not None:
            on_progress(CleanProgress(done, total, item.key))

    window = batch_size * 2 + workers
    pending: deque[tuple[Any, Future]] = deque()
    finishing: deque[tuple[Any, Future]] = deque()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kazari-clean") as pool:
        try:
            while True:
                while finishing and finishing[0][1].done():
                    item, fut = finishing.popleft()
                    report_done(item, fut.result())
                if cancel.is_set():
                    report.cancelled = True
                    break
                while len(pending) < window:
                    nxt = next(it, None)
                    if nxt is None:
                        break
                    pending.append((nxt, pool.submit(load, nxt)))
                if not pending:
                    break
                batch: list[tuple[Any, Any]] = []  # (item, its (rgb, fmt, tensor, geom))
                while pending and len(batch) < batch_size:
                    item, fut = pending.popleft()
                    loaded, error = fut.result()
                    if loaded is None:
                        report_done(item, ("failed", error))
                    else:
                        batch.append((item, loaded))
                if not batch:
                    continue
                raws: list[Any] = [None] * len(batch)
                if segmenter is not None and options.remove_bg:
                    raws = list(segmenter.predict(np.stack([loaded[2] for _, loaded in batch])))
                for (item, loaded), raw in zip(batch, raws, strict=True):
                    finishing.append((item, pool.submit(finish, item, loaded[0], loaded[1], raw, loaded[3])))
            for item, fut in finishing:
                report_done(item, fut.result())
        finally:
            for _, fut in pending:
                fut.cancel()
    reached = {*report.changed, *report.empty, *report.full, *report.unchanged, *(k for k, _ in report.failed)}
    report.untouched = [i.key for i in items if i.key not in reached]
    return replacements


