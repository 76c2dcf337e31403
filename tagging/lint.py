"""Dataset checks with stable codes and severities (the list is in docs/dataset.md).

``lint(ds)`` reports what would break or weaken training: empty or unreadable captions (an
empty caption stops sd-scripts), duplicate tags, a missing or misplaced trigger word, tiny,
corrupt or truncated images, near-duplicate images (perceptual hash), folders and files
sd-scripts would skip, and tags that look like escaped prompt syntax.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagging import captions

ERROR, WARNING, INFO = "error", "warning", "info"

# code -> severity. Codes are a stable contract (CLI --json, docs/dataset.md): add, never rename.
CODES: dict[str, str] = {
    "dataset-empty": ERROR,
    "folder-unnumbered": WARNING,
    "folder-zero-repeats": WARNING,
    "folder-nested": WARNING,
    "image-at-root": WARNING,
    "image-unsupported": WARNING,
    "caption-missing": WARNING,
    "caption-orphan": WARNING,
    "caption-empty": ERROR,
    "caption-encoding": ERROR,
    "caption-unreadable": ERROR,
    "caption-not-file": ERROR,
    "caption-bom": WARNING,
    "caption-multiline": WARNING,
    "caption-long": WARNING,
    "caption-shared": WARNING,
    "tag-duplicate": WARNING,
    "tag-escaped": WARNING,
    "tag-prompt-syntax": WARNING,
    "trigger-missing": WARNING,
    "trigger-not-first": WARNING,
    "image-small": WARNING,
    "image-corrupt": ERROR,
    "image-truncated": ERROR,
    "image-unreadable": ERROR,
    "image-not-file": WARNING,
    "image-near-duplicate": WARNING,
    "feature-present": WARNING,
    "character-profile-bad": ERROR,
}

# Short side in px. sd-scripts' default min_bucket_reso is 256: anything smaller is always upscaled.
DEFAULT_MIN_SIZE = 256
# pHash with a 16x16 DCT (256 bits): a re-saved, resized or JPEG-compressed copy lands at 0-4,
# while different drawings of the same character in one style stay above ~16 (the 64-bit pHash
# cannot tell those apart).
HASH_SIZE = 16
DEFAULT_NEAR_DUP_DISTANCE = 10
LONG_CAPTION_BYTES = 4096
LINT_WORKERS = 4
# Prompt-weight syntax that sd-scripts trains literally unless --weighted_captions: "(tag:1.2)",
# "[tag]", "{tag}", "<lora:x:1>", "tag:1.2".
_PROMPT_SYNTAX = re.compile(r"^\(.*\)$|^\[.*\]$|^\{.*\}$|^<.*>$|:\s*-?\d+(\.\d+)?\)?$")


def min_size_for_resolution(resolution: str | None) -> int:
    """The image-small threshold for a training resolution ``"W,H"``: half its short side.

    Bucketing scales every image to about the training area, so an image below half the
    resolution is upscaled more than 2x and trains blur. No (or an unreadable) resolution gives
    DEFAULT_MIN_SIZE, which is half of SD1's 512.
    """
    try:
        sides = [int(part) for part in str(resolution).split(",")] if resolution else []
    except ValueError:
        sides = []
    if not sides or min(sides) < 2:
        return DEFAULT_MIN_SIZE
    return min(sides) // 2


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    path: Path
    message: str
    key: str | None = None

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        path = self.path
        if root is not None:
            try:
                path = self.path.relative_to(root)
            except ValueError:
                pass
        return {
            "code": self.code, "severity": self.severity, "path": path.as_posix(),
            "key": self.key, "message": self.message,
        }


def _finding(code: str, path: Path, message: str, key: str | None = None) -> Finding:
    return Finding(code, CODES[code], path, message, key)


def lint(
    dataset: Any,
    min_size: int = DEFAULT_MIN_SIZE,
    check_images: bool = True,
    near_duplicate_distance: int = DEFAULT_NEAR_DUP_DISTANCE,
    trigger: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Finding]:
    """All findings, in folder/image order. ``trigger`` overrides the folder names' trigger words.

    ``check_images`` decodes every image (corrupt/truncated/near-duplicate checks); without it
    only headers are read for the size check.
    """
    findings: list[Finding] = []
    if not dataset.images:
        findings.append(_finding(
            "dataset-empty", dataset.root,
            f"No training images found in {dataset.root}. Put images in subfolders named like '10_trigger'.",
        ))
    for skip in dataset.skipped:
        code = skip.code if skip.code in CODES else "folder-nested"
        findings.append(_finding(code, skip.path, f"{skip.path}: {skip.reason}."))
    items = dataset.all_images
    for item in items:
        findings.extend(_caption_findings(item, trigger))
    findings.extend(_shared_captions(dataset))
    findings.extend(_profile_findings(dataset))
    if check_images:
        findings.extend(_image_findings(items, min_size, near_duplicate_distance, progress))
    else:
        for item in items:
            w, h = item.size
            if (w, h) != (0, 0) and min(w, h) < min_size:
                findings.append(_small(item, w, h, min_size))
            elif (w, h) == (0, 0):  # without decoding, an unreadable header is all we can tell
                why = getattr(item, "size_error", None) or "its header cannot be read"
                findings.append(_finding(
                    "image-unreadable", item.path,
                    f"{item.path}: {why}; it cannot be trained on. Re-export it as PNG or trash it.", item.key,
                ))
    return findings


def _caption_findings(item: Any, trigger: str | None) -> list[Finding]:
    out: list[Finding] = []
    path, key = item.caption_path, item.key
    if item.caption_error:
        code = getattr(item, "caption_error_code", None) or (
            "caption-encoding" if "UTF-8" in item.caption_error else "caption-unreadable")
        return [_finding(code if code in CODES else "caption-unreadable", path, item.caption_error, key)]
    if not item.caption_exists:
        return out  # reported as caption-missing by the scan
    tags = item.tags
    if not tags:
        out.append(_finding(
            "caption-empty", path,
            f"{path} is empty; sd-scripts stops training on an empty caption. Add tags or trash the image.", key,
        ))
        return out
    if item.has_bom:
        out.append(_finding(
            "caption-bom", path,
            f"{path} starts with a UTF-8 BOM; sd-scripts reads it into the first tag. Saving from kazari removes it.",
            key,
        ))
    try:
        raw = item.caption_path.read_bytes()
    except OSError:
        raw = b""
    text = raw.decode("utf-8", errors="replace").strip("\r\n\ufeff")
    if "\n" in text or "\r" in text:
        out.append(_finding(
            "caption-multiline", path, f"{path} has several lines; sd-scripts only reads the first one.", key,
        ))
    if len(raw) > LONG_CAPTION_BYTES:
        out.append(_finding(
            "caption-long", path,
            f"{path} is {len(raw)} bytes; far beyond the 75-225 tokens the text encoder sees. Prune it.", key,
        ))
    dups = captions.duplicate_tags(tags)
    if dups:
        out.append(_finding("tag-duplicate", path, f"{path}: duplicate tag(s) {', '.join(dups)}.", key))
    for tag in tags:
        if tag in captions.KAOMOJI:
            continue
        if "\\" in tag:
            out.append(_finding(
                "tag-escaped", path,
                f"{path}: tag {tag!r} contains backslash escapes; sd-scripts trains them literally. "
                "Use the 'unescape-parens' normalisation if they came from a prompt-style tagger.", key,
            ))
        elif _PROMPT_SYNTAX.search(tag):
            out.append(_finding(
                "tag-prompt-syntax", path,
                f"{path}: tag {tag!r} looks like prompt weighting syntax, which sd-scripts trains as text "
                "(unless weighted captions are enabled).", key,
            ))
    folder = item.folder
    # Regularisation images are generic class images: they never carry the trigger.
    want = None if folder.is_reg else (trigger if trigger is not None else folder.trigger)
    if want:
        if want not in tags:
            out.append(_finding("trigger-missing", path, f"{path}: trigger word {want!r} is missing.", key))
        elif tags[0] != want:
            out.append(_finding(
                "trigger-not-first", path,
                f"{path}: trigger word {want!r} is not the first tag (keep_tokens=1 expects it first).", key,
            ))
    return out


def _profile_findings(dataset: Any) -> list[Finding]:
    """Fixed features (``.kazari/character.toml``) still present in captions after pruning."""
    from tagging.character import features_present, load_character, profile_path
    from tagging.errors import UserError

    path = profile_path(dataset.root)
    try:
        profile = load_character(dataset.root)
    except UserError as err:
        return [_finding("character-profile-bad", path, str(err))]
    out = []
    for tag, keys in features_present(profile, dataset.images).items():
        n = len(keys)
        out.append(_finding(
            "feature-present", path,
            f"feature tag {tag} present in {n} caption{'s' if n != 1 else ''} after pruning (e.g. {keys[0]}); "
            "a fixed feature left in some captions is learnt from the tag there, not from the trigger. "
            f"Remove it (Tags screen d, or kazari dataset edit --remove {tag}) or forget the feature "
            f"(kazari dataset character --remove-feature {tag}).",
        ))
    return out


def _shared_captions(dataset: Any) -> list[Finding]:
    out = []
    for folder in (*dataset.folders, *dataset.reg_folders):
        counts = Counter(item.caption_path for item in folder.images)
        for path, n in counts.items():
            if n > 1:
                out.append(_finding(
                    "caption-shared", path,
                    f"{path} is the caption of {n} images with the same name and different extensions; "
                    "rename one so each image has its own caption.",
                ))
    return out


def _small(item: Any, w: int, h: int, min_size: int) -> Finding:
    return _finding(
        "image-small", item.path,
        f"{item.path} is {w}x{h}; its short side is below {min_size} px, so it will be upscaled and blurry.",
        item.key,
    )


def _check_image(item: Any, min_size: int) -> tuple[list[Finding], Any]:
    """Decode one image fully (truncation only shows on a full decode); return findings and its hash."""
    from PIL import Image

    try:
        with Image.open(item.path) as im:
            im.load()
            w, h = im.size
            digest = perceptual_hash(im)
    except OSError as err:
        truncated = "truncated" in str(err).lower()
        return [_finding(
            "image-truncated" if truncated else "image-corrupt", item.path,
            f"{item.path} cannot be decoded ({err}); re-export or trash it.", item.key,
        )], None
    except Exception as err:  # noqa: BLE001 - PIL raises many types for junk files
        return [_finding(
            "image-corrupt", item.path, f"{item.path} cannot be decoded ({err}); re-export or trash it.", item.key,
        )], None
    return ([_small(item, w, h, min_size)] if min(w, h) < min_size else []), digest


def perceptual_hash(image: Any) -> Any:
    """The near-duplicate hash lint uses (256-bit pHash) as a flat bool array."""
    import imagehash

    return imagehash.phash(image, hash_size=HASH_SIZE).hash.flatten()


def hash_distance(a: Any, b: Any) -> int:
    """Hamming distance of two :func:`perceptual_hash` values (0 = same picture)."""
    return int((a != b).sum())


def _image_findings(
    items: list[Any], min_size: int, distance: int, progress: Callable[[int, int], None] | None
) -> list[Finding]:
    from concurrent.futures import ThreadPoolExecutor

    out: list[Finding] = []
    hashes: list[tuple[Any, Any]] = []
    # Decoding releases the GIL, so a few threads overlap I/O and zlib/JPEG work.
    workers = max(1, min(LINT_WORKERS, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda it: _check_image(it, min_size), items)
        for n, (item, (found, digest)) in enumerate(zip(items, results, strict=True), 1):
            out.extend(found)
            if digest is not None:
                hashes.append((item, digest))
            if progress is not None:
                progress(n, len(items))
    out.extend(_near_duplicates(hashes, distance))
    return out


def _near_duplicates(hashes: list[tuple[Any, Any]], distance: int) -> list[Finding]:
    import numpy as np

    if len(hashes) < 2 or distance < 0:
        return []
    values = np.packbits(np.array([h for _, h in hashes], dtype=bool), axis=1)  # (n, 32) bytes
    popcount = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)
    first_match: dict[int, tuple[int, int]] = {}
    block = 64  # rows per step: keeps the (block, n, 32) xor small for 10k images
    for start in range(0, len(values), block):
        chunk = values[start:start + block]
        xor = chunk[:, None, :] ^ values[None, :, :]
        dist = popcount[xor].sum(axis=2)
        rows, cols = np.nonzero(dist <= distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if c < i and i not in first_match:  # report each image once, against its first match
                first_match[i] = (c, int(dist[r, c]))
    out = []
    for i, (j, d) in sorted(first_match.items()):
        item, other = hashes[i][0], hashes[j][0]
        out.append(_finding(
            "image-near-duplicate", item.path,
            f"{item.path} is a near-duplicate of {other.key} (pHash distance {d}); keep the better one.",
            item.key,
        ))
    return out


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)
