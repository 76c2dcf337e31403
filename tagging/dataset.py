"""A character-LoRA dataset on disk (kohya ``N_name`` layout or a plain folder) and its edits.

``Dataset.open`` scans folders and reads every caption (never decodes images: sizes come
lazily from headers). Edits change tags in memory as recorded, undoable ``Change`` steps;
``save`` writes only the changed captions, atomically, after keeping each file's original
under ``.kazari/originals/`` and refusing to clobber a caption edited on disk meanwhile.

Writers hold the dataset lock (``.kazari/lock``, see ``tagging.lockfile``) for every write, and
a caption save is a write-ahead transaction (see ``tagging.history``): a kill at any moment
leaves captions and history that agree once the dataset is opened again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagging import captions
from tagging.atomic import atomic_write_bytes, atomic_write_many
from tagging.edits import Change, TagOp
from tagging.errors import ConflictError, DatasetError, UserError
from tagging.history import History
from tagging.lockfile import dataset_lock, try_hold
from tagging.safe_io import NotRegularFile, read_regular_bytes

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
# Image types sd-scripts does not read without extra plugins: reported, not silently ignored.
UNSUPPORTED_IMAGE_EXTENSIONS = frozenset({".gif", ".avif", ".jxl", ".tif", ".tiff", ".heic", ".heif"})
STATE_DIR = ".kazari"
REG_PREFIX = "@reg/"
_NATURAL = re.compile(r"(\d+)")
# A caption extension is one dot and a plain word (".txt", ".caption", ".tags.txt"): never a path.
_CAPTION_EXT = re.compile(r"^\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
# Temp files of tagging.atomic (mkstemp: ".<name>.<8 random chars>.tmp").
_OUR_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
# A temp file is only removed when no kazari writer holds the dataset lock (so no save of ours is
# in flight) AND it is this old: an atomic write stages and renames within seconds, so a minute
# also spares the temp file of another program (or host) that writes the same pattern right now.
STALE_TEMP_S = 60.0
# Test hook: called with a phase name at each step of a caption save ("originals", "intent",
# "captions", "committed"); the reliability harness kills the process there.
_phase_hook: Callable[[str], None] | None = None


def _phase(name: str) -> None:
    if _phase_hook is not None:
        _phase_hook(name)


def _natural_key(name: str) -> list[object]:
    # "img2" before "img10", like a file manager shows them.
    return [int(p) if p.isdigit() else p.lower() for p in _NATURAL.split(name)]


def _digest(data: bytes | None) -> bytes | None:
    return None if data is None else hashlib.blake2b(data, digest_size=16).digest()


def parse_folder_name(name: str) -> tuple[int, str] | None:
    """``"10_kazari girl"`` -> ``(10, "kazari girl")``, as sd-scripts reads it; None if not numbered."""
    head, _, rest = name.partition("_")
    try:
        return int(head), rest
    except ValueError:
        return None


def holds_dataset(folder: Path | str) -> bool:
    """True when ``folder`` is a dataset root: it has a kohya ``N_name`` sub-folder, or images directly
    in it (a plain folder, read with 1 repeat). The one rule the CLI and the workbench use to find it."""
    try:
        _dirs, root_images, numbered = _root_layout(Path(folder).expanduser())
    except DatasetError:
        return False
    return bool(root_images or numbered)


@dataclass(frozen=True)
class Skipped:
    """A file or folder that sd-scripts would skip or treat specially, with the reason."""

    path: Path
    reason: str
    code: str


@dataclass(eq=False)
class Folder:
    path: Path
    name: str
    repeats: int
    trigger: str | None
    class_tokens: str = ""
    images: list[ImageItem] = field(default_factory=list)
    is_reg: bool = False
    plain: bool = False  # a plain folder of images (no N_ prefix, repeats 1)


class ImageItem:
    """One image and its caption. ``tags`` is the current (in-memory) list; never mutate it in place."""

    __slots__ = (
        "key", "name", "caption_name", "folder", "tags", "caption_error", "caption_exists",
        "_disk_tags", "_disk_digest", "_newline", "_size", "has_bom", "_path", "_caption_path",
        "caption_error_code", "_size_error",
    )

    def __init__(self, key: str, path: Path | str, caption_path: Path | str, folder: Folder) -> None:
        self.key = key
        # The scanner passes bare file names; anything else is reduced to one.
        self.name = path if type(path) is str and "/" not in path else os.path.basename(path)
        self.caption_name = (
            caption_path if type(caption_path) is str and "/" not in caption_path else os.path.basename(caption_path)
        )
        self.folder = folder
        self.tags: list[str] = []
        self.caption_error: str | None = None  # non-UTF-8, binary, unreadable: item is read-only
        self.caption_error_code: str | None = None  # the lint code for caption_error
        self._size_error: str | None = None
        self.caption_exists = False
        self.has_bom = False
        self._disk_tags: list[str] = []
        self._disk_digest: bytes | None = None
        self._newline = "\n"
        self._size: tuple[int, int] | None = None
        # Path objects are built on first use: constructing 20,000 of them dominated open().
        self._path: Path | None = None
        self._caption_path: Path | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = self.folder.path / self.name
        return self._path

    @property
    def caption_path(self) -> Path:
        if self._caption_path is None:
            self._caption_path = self.folder.path / self.caption_name
        return self._caption_path

    def _moved(self) -> None:
        """The folder was renamed: forget cached paths."""
        self._path = self._caption_path = None

    def __repr__(self) -> str:
        return f"ImageItem({self.key!r}, tags={len(self.tags)})"

    @property
    def disk_tags(self) -> list[str]:
        """Tags as last read from / written to disk."""
        return self._disk_tags

    @property
    def has_changes(self) -> bool:
        return self.caption_error is None and self.tags != self._disk_tags

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) from the file header (no decode); (0, 0) if the header is unreadable."""
        if self._size is None:
            size, self._size_error = probe_image(self.path)
            self._size = size or (0, 0)
        return self._size

    @property
    def size_error(self) -> str | None:
        """Why the header could not be read (None when ``size`` is known); reads the header."""
        self.size  # noqa: B018 - fills the cache
        return self._size_error

    def load_caption(self) -> None:
        """(Re)read the caption from disk; problems are stored in ``caption_error``."""
        self.caption_error = None
        self.caption_error_code = None
        self.has_bom = False
        cap = os.path.join(self.folder.path, self.caption_name)
        try:
            data = read_regular_bytes(cap)  # a FIFO or device must never block the scan
        except FileNotFoundError:
            self.caption_exists = False
            self._disk_digest = None
            self._disk_tags = []
            self.tags = []
            return
        except NotRegularFile as err:
            self.caption_exists = True
            self.caption_error_code = "caption-not-file"
            self.caption_error = (
                f"{self.caption_path} {err.strerror}; it is not read as a caption and nothing is written "
                f"to it. Replace it with a plain-text caption file or move it out of the dataset."
            )
            self._disk_digest = None
            self._disk_tags = []
            self.tags = []
            return
        except OSError as err:
            self.caption_exists = True
            self.caption_error_code = "caption-unreadable"
            self.caption_error = f"cannot read {self.caption_path}: {err.strerror or err}"
            self._disk_digest = None
            self._disk_tags = []
            self.tags = []
            return
        self.caption_exists = True
        self._disk_digest = _digest(data)
        try:
            text = captions.decode_caption_bytes(data, cap)
        except DatasetError as err:
            self.caption_error = str(err)
            self.caption_error_code = "caption-encoding"
            self._disk_tags = []
            self.tags = []
            return
        self.has_bom = data.startswith(b"\xef\xbb\xbf")
        self._newline = "\r\n" if text.endswith("\r\n") else ("\n" if text.endswith(("\n", "\r")) else "")
        self._disk_tags = captions.parse_caption(text)
        self.tags = self._disk_tags

    def caption_bytes(self) -> bytes:
        """What ``save`` writes: the tags in booru style, keeping the file's line ending."""
        return (captions.format_caption(self.tags) + self._newline).encode("utf-8")


def read_image_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the image header only (PIL opens lazily)."""
    return probe_image(path)[0]


def probe_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(size, None) from the header, or (None, why) for a header that cannot be used."""
    import warnings

    from PIL import Image

    from tagging.safe_io import regular_file_problem

    kind = regular_file_problem(path)
    if kind is not None:  # PIL would block forever on a FIFO
        return None, f"it is {kind}, not an image file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError as err:
        return None, f"its header claims a decompression-bomb size ({err})"
    except Exception as err:  # noqa: BLE001 - PIL raises many types for junk files
        if os.path.exists(path) and os.path.getsize(path) == 0:
            return None, "it is empty (0 bytes)"
        return None, f"its header cannot be read ({err})"
    if w <= 0 or h <= 0:
        return None, f"its header gives a size of {w}x{h}"
    return (w, h), None


@dataclass(frozen=True)
class Unusable:
    """An image that cannot be trained on as it is, and why (``code`` is a lint code)."""

    key: str
    path: Path
    reason: str
    code: str


@dataclass
class SaveReport:
    written: list[str] = field(default_factory=list)
    originals_kept: list[str] = field(default_factory=list)
    overwritten_conflicts: list[str] = field(default_factory=list)


@dataclass
class RevertReport:
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class Dataset:
    """Open with :meth:`Dataset.open`. Single-threaded: edit and read from the same thread."""

    def __init__(self, root: Path, caption_ext: str, reg_root: Path | None) -> None:
        self.root = root
        self.caption_ext = caption_ext
        self.reg_root = reg_root
        self.folders: list[Folder] = []
        self.reg_folders: list[Folder] = []
        self.skipped: list[Skipped] = []
        self.images: list[ImageItem] = []
        self.warnings: list[str] = []
        self._index: dict[str, ImageItem] = {}
        self._dirty: set[str] = set()
        self.history_log = History(self.state_dir / "history.jsonl", on_warning=self.warnings.append)
        self._temp_candidates: list[Path] = []
        # Seconds a write waits for another writer's lock (None: KAZARI_LOCK_WAIT or 5 s). The TUI
        # uses a short wait: a save on the UI thread must not freeze it for long.
        self.lock_wait: float | None = None

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | str, caption_ext: str = ".txt", reg_root: Path | str | None = None) -> Dataset:
        """Scan ``root`` (and ``reg_root``); raises DatasetError for a missing/unreadable root."""
        ext = check_caption_ext(caption_ext)
        root_path = _check_root(Path(root).expanduser(), "Dataset folder")
        reg_path = _check_root(Path(reg_root).expanduser(), "Regularisation folder") if reg_root else None
        ds = cls(root_path, ext, reg_path)
        ds._recover()
        ds._scan()
        ds._clean_stale_temps()
        return ds

    @classmethod
    @contextlib.contextmanager
    def locked(cls, root: Path | str, caption_ext: str = ".txt", reg_root: Path | str | None = None,
               *, wait: float | None = None) -> Iterator[Dataset]:
        """Open the dataset holding its write lock for the whole ``with`` block (load, edit, save).

        A second writer waits up to ``wait`` seconds (default 5, ``KAZARI_LOCK_WAIT``) and then
        raises ``LockBusy`` naming the holder; nothing has been read or written by then.
        """
        check_caption_ext(caption_ext)
        root_path = _check_root(Path(root).expanduser(), "Dataset folder")
        with dataset_lock(root_path, wait=wait):
            yield cls.open(root_path, caption_ext, reg_root)

    def write_lock(self, wait: float | None = None) -> contextlib.AbstractContextManager[object]:
        """Hold the dataset's one-writer lock (nests with ``Dataset.locked``)."""
        return dataset_lock(self.root, wait=self.lock_wait if wait is None else wait)

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def _scan(self) -> None:
        temps = self._temp_candidates = []
        self.folders, skipped = _scan_root(self.root, self.caption_ext, is_reg=False, temps=temps)
        self.skipped = skipped
        self.reg_folders = []
        if self.reg_root is not None:
            self.reg_folders, reg_skipped = _scan_root(self.reg_root, self.caption_ext, is_reg=True, temps=temps)
            self.skipped.extend(reg_skipped)
        for folder in (*self.folders, *self.reg_folders):
            parsed = parse_folder_name(folder.path.name) if folder.plain else None
            note = (
                f"{folder.path} is itself named like a kohya folder ({parsed[0]} repeats) but was opened as "
                "the dataset root, so it is read as a plain folder with 1 repeat; open its parent folder "
                "instead (sd-scripts' train_data_dir is the parent too)."
            ) if parsed else None
            if note and note not in self.warnings:  # _scan also runs on reload
                self.warnings.append(note)
        self._reindex()
        for item in self._all_items():
            item.load_caption()
        self._dirty.clear()

    def _all_items(self) -> Iterable[ImageItem]:
        for folder in (*self.folders, *self.reg_folders):
            yield from folder.images

    def _reindex(self) -> None:
        self.images = [item for folder in self.folders for item in folder.images]
        self._index = {item.key: item for item in self._all_items()}

    def reload(self) -> None:
        """Re-read everything from disk, discarding unsaved edits (the history is kept)."""
        self._scan()

    # ---- crash recovery -------------------------------------------------------------------------
    def _recover(self) -> None:
        """Complete or roll back a caption save that a crash interrupted (its intent file is left).

        Only with the lock free (or held by us): an intent while another process holds the lock
        is that process's save in flight. The choice: if any caption already holds its new text,
        the save had started renaming, so it is completed (the remaining captions written, the
        history appended) - the disk already shows part of the edit and completing it keeps it
        undoable. If none does, nothing of it reached the captions: it is rolled back (dropped).
        A caption that holds neither text was changed by someone since; it is left alone.
        """
        log = self.history_log
        if not log.intent_path.exists():
            return
        try:
            with try_hold(self.state_dir / "lock", f"The dataset {self.root}") as held:
                if held is None:
                    return
                record = log.read_intent()
                if record is None:
                    return
                self._apply_intent(record)
        except (OSError, UserError) as err:
            self.warnings.append(
                f"An interrupted save in {self.root} could not be recovered now "
                f"({getattr(err, 'strerror', None) or err}); it is retried when the dataset is opened again."
            )

    def _apply_intent(self, record: dict) -> None:
        log = self.history_log
        if record.get("damaged"):
            self.warnings.append(f"{log.intent_path} is damaged and was ignored (moved aside).")
            os.replace(log.intent_path, log.intent_path.with_suffix(".damaged"))
            return
        log._ensure()  # noqa: SLF001 - the txn set comes from the log
        if record["txn"] in log.txns:  # killed after the history append, before deleting the intent
            log.drop_intent()
            return
        if record.get("moves"):
            self._apply_move_intent(record)
            return
        states = []
        mids = record.get("mids", {})
        for stored, old, new in record["files"]:
            path = self.root / stored if not os.path.isabs(stored) else Path(stored)
            old_b = None if old is None else old.encode("utf-8", "surrogateescape")
            new_b = new.encode("utf-8", "surrogateescape")
            try:
                current: bytes | None = read_regular_bytes(path)
            except FileNotFoundError:
                current = None
            except OSError:
                current = b"\0unreadable"
            earlier = [t.encode("utf-8", "surrogateescape") for t in mids.get(stored, [])]
            state = "new" if current == new_b else ("old" if current == old_b or current in earlier else "other")
            states.append((path, new_b, state))
        others = [str(p) for p, _, st in states if st == "other"]
        note = (f" {len(others)} caption(s) changed since were left alone: {', '.join(others[:5])}."
                if others else "")
        label = _intent_label(record)
        # "started": an earlier save of this session wrote its captions but could not log them.
        if record.get("started") or any(st == "new" for _, _, st in states):
            todo = [(p, b) for p, b, st in states if st == "old"]
            if todo:
                atomic_write_many(todo)
            log.commit_recovered(record)
            self.warnings.append(
                f"The previous save ({label}) was interrupted after {len(states) - len(todo) - len(others)} of "
                f"{len(states)} caption(s); kazari completed it and recorded it in the history, so it can be "
                f"undone.{note}"
            )
        else:
            log.drop_intent()
            self.warnings.append(
                f"The previous save ({label}) was interrupted before any caption was written; kazari rolled it "
                f"back: captions and history are as before it.{note}"
            )

    def _apply_move_intent(self, record: dict) -> None:
        log = self.history_log

        def path(stored: str) -> Path:
            return Path(stored) if os.path.isabs(stored) else self.root / stored

        moves = [(path(a), path(b)) for a, b in record["moves"]]
        done = [m for m in moves if not os.path.lexists(m[0]) and os.path.lexists(m[1])]
        todo = [m for m in moves if os.path.lexists(m[0]) and not os.path.lexists(m[1])]
        label = _intent_label(record)
        if done:
            for src, dst in todo:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), dst)
            log.commit_recovered(record)
            self.warnings.append(
                f"The previous change ({label}) was interrupted after {len(done)} of {len(moves)} file move(s); "
                "kazari completed it and recorded it in the history, so it can be undone."
            )
        else:
            log.drop_intent()
            self.warnings.append(
                f"The previous change ({label}) was interrupted before any file was moved; kazari rolled it back."
            )

    def _clean_stale_temps(self) -> None:
        """Remove temp files our atomic writes left behind when killed (see STALE_TEMP_S)."""
        candidates = list(self._temp_candidates)
        originals = self._originals_dir
        if originals.is_dir():
            for folder, _dirs, files in os.walk(originals):
                candidates.extend(Path(folder) / f for f in files if _OUR_TEMP.match(f))
        if self.state_dir.is_dir():
            candidates.extend(p for p in _list_dir_names(self.state_dir) if _OUR_TEMP.match(p.name))
        self._temp_candidates = []
        if not candidates:
            return
        now = time.time()
        stale = []
        for path in candidates:
            try:
                if now - path.lstat().st_mtime >= STALE_TEMP_S:
                    stale.append(path)
            except OSError:
                continue
        if not stale:
            return
        removed = 0
        try:
            with try_hold(self.state_dir / "lock", f"The dataset {self.root}") as held:
                if held is None:
                    return  # a writer is active: its temp files may be in use
                for path in stale:
                    with contextlib.suppress(OSError):
                        path.unlink()  # partial copies of a write never committed: not user data
                        removed += 1
        except UserError:
            return  # a read-only dataset: nothing can be cleaned (or was written by us)
        if removed:
            self.warnings.append(
                f"Removed {removed} temporary file(s) left by an interrupted save (e.g. {stale[0].name}); "
                "the captions themselves are complete."
            )

    def unusable_images(self) -> list[Unusable]:
        """Training and regularisation images that cannot be used as they are, with the reason.

        Reads each image header (cached). The trainer warns with these; lint reports the same.
        Covers: a header that cannot be read (empty, garbage, decompression-bomb size), and a
        caption that is not a readable regular file (a folder, FIFO...) or cannot be decoded.
        """
        out: list[Unusable] = []
        for item in self._all_items():
            if item.size_error is not None:
                out.append(Unusable(item.key, item.path, f"{item.path}: {item.size_error}; it cannot be "
                                    "trained on. Re-export it as PNG or trash it.", "image-unreadable"))
            if item.caption_error is not None:
                out.append(Unusable(item.key, item.caption_path, item.caption_error,
                                    item.caption_error_code or "caption-unreadable"))
        return out

    # ---- lookup -------------------------------------------------------------------------------
    def image(self, key: str) -> ImageItem:
        try:
            return self._index[key]
        except KeyError:
            raise UserError(f"No image {key!r} in dataset {self.root}.") from None

    def folder(self, name: str) -> Folder:
        for folder in (*self.folders, *self.reg_folders):
            if folder.name == name:
                return folder
        raise UserError(
            f"No folder {name!r} in dataset {self.root}; folders: {', '.join(f.name for f in self.folders) or 'none'}."
        )

    def _find_folder(self, name: str, is_reg: bool) -> Folder:
        for folder in self.reg_folders if is_reg else self.folders:
            if folder.name == name:
                return folder
        raise UserError(f"Folder {name!r} is no longer in dataset {self.root}; it was renamed or removed on disk.")

    @property
    def all_images(self) -> list[ImageItem]:
        """Training images followed by regularisation images."""
        return list(self._all_items())

    # ---- tag edits ----------------------------------------------------------------------------
    def apply(self, op: TagOp, keys: Iterable[str] | None = None) -> Change:
        """Apply ``op`` to ``keys`` (None: every training image, or the op's own keys).

        Images whose caption could not be read (non-UTF-8...) are left alone. The returned
        ``Change`` lists the images that changed; an op that changes nothing is not recorded.
        """
        if keys is None:
            keys = op.default_keys()
        items = self.images if keys is None else [self.image(k) for k in keys]
        before: dict[str, list[str]] = {}
        after: dict[str, list[str]] = {}
        transform = op.transform
        for item in items:  # the hot loop of every bulk edit: keep it lean
            tags = item.tags
            new = transform(tags, item.key)
            if new is not tags and new != tags and item.caption_error is None:
                before[item.key] = tags
                after[item.key] = new
        change = Change(label=op.describe(), kind="tags", before=before, after=after, op=op)
        if after:
            self._set_tags(after)
            self.history_log.record(change)
        return change

    def _set_tags(self, tags_by_key: dict[str, list[str]]) -> None:
        index, dirty = self._index, self._dirty
        for key, tags in tags_by_key.items():
            index[key].tags = tags  # a fresh list from the op; lists are replaced, never mutated
        # "Maybe dirty": dirty_keys compares with the disk state, so an undo back to it is clean.
        dirty.update(tags_by_key)

    @property
    def history(self) -> list[Change]:
        """Undoable changes, oldest first (survives a restart via ``.kazari/history.jsonl``)."""
        return list(self.history_log.undo_stack)

    @property
    def redo_stack(self) -> list[Change]:
        """Undone changes; the last one is what ``redo`` re-applies."""
        return list(self.history_log.redo_stack)

    @property
    def can_undo(self) -> bool:
        return bool(self.history_log.undo_stack)

    @property
    def can_redo(self) -> bool:
        return bool(self.history_log.redo_stack)

    def undo(self) -> Change | None:
        """Undo the last change (None if there is none). Tag changes need a ``save`` to hit disk."""
        change = self.history_log.pop_undo()
        if change is not None:
            self._replay(change, forward=False)
        return change

    def redo(self) -> Change | None:
        change = self.history_log.pop_redo()
        if change is not None:
            self._replay(change, forward=True)
        return change

    def _replay(self, change: Change, forward: bool) -> None:
        if change.kind == "tags":
            expect, target = (change.before, change.after) if forward else (change.after, change.before)
            # Only touch images still in the state this change left them in: anything else was
            # edited outside this history (e.g. on disk) and must not be clobbered.
            apply_now = {}
            skipped = []
            for key, tags in target.items():
                item = self._index.get(key)
                if item is not None and item.tags == expect.get(key):
                    apply_now[key] = tags
                else:
                    skipped.append(key)
            self._set_tags(apply_now)
            change.extra["skipped"] = skipped
        elif change.kind == "repeats":
            old, new = change.extra["old"], change.extra["new"]
            src, dst = (old, new) if forward else (new, old)
            reg = bool(change.extra.get("reg"))
            with self.write_lock():
                moves = self._rename_moves(self._find_folder(src, reg), dst)
                txn = self._moves_txn(moves, lambda: self._rename_folder(src, dst, is_reg=reg))
                self.history_log.flush(txn)
        elif change.kind == "trash":
            with self.write_lock():
                if forward:
                    item = self.image(change.extra["key"])
                    moves, _ = self._trash_plan(item)
                    txn = self._moves_txn(moves, lambda: self._trash_item(item, change))
                else:
                    txn = self._moves_txn(self._restore_moves(change), lambda: self._restore_item(change))
                self.history_log.flush(txn)
        elif change.kind == "images":
            entries = change.extra["files"]
            with self.write_lock():
                for entry in (entries if forward else reversed(entries)):
                    if forward:
                        self._redo_replace(entry, change.id)
                    else:
                        self._undo_replace(entry, change.id)
                self._reindex()
                self.history_log.flush()

    # ---- structural edits (take effect on disk at once) ---------------------------------------
    def set_repeats(self, folder_name: str, repeats: int) -> Change:
        """Rename ``N_name`` to ``repeats_name`` (refuses to overwrite an existing folder)."""
        folder = self.folder(folder_name)
        if folder.plain:
            raise UserError(
                f"{folder.path} is a plain image folder, which has no repeat count in its name. "
                "Move the images into a subfolder named like '10_trigger' to set repeats."
            )
        if not isinstance(repeats, int) or repeats < 1:
            raise UserError(f"Repeats must be a whole number of at least 1, not {repeats!r}.")
        new_name = f"{repeats}_{folder.class_tokens}" if folder.class_tokens or "_" in folder.name else str(repeats)
        if new_name == folder.name:
            return Change(label=f"repeats of {folder.name} unchanged", kind="repeats")
        if (folder.path.parent / new_name).exists():
            raise UserError(
                f"Cannot rename {folder.path} to {new_name}: that folder already exists. Merge or rename it first."
            )
        change = Change(
            label=f"repeats {folder.name} -> {new_name}", kind="repeats",
            extra={"old": folder.name, "new": new_name, "reg": folder.is_reg},
        )
        with self.write_lock():
            event = self.history_log.next_do_event(change)
            txn = self._moves_txn(self._rename_moves(folder, new_name),
                                  lambda: self._rename_folder(folder.name, new_name, folder.is_reg), [event])
            self.history_log.record(change)
            self.history_log.flush(txn)
        return change

    def _rename_moves(self, folder: Folder, new: str) -> list[tuple[Path, Path]]:
        moves = [(folder.path, folder.path.parent / new)]
        base = self._originals_dir / "reg" if folder.is_reg else self._originals_dir
        if (base / folder.name).exists() and not (base / new).exists():
            moves.append((base / folder.name, base / new))
        return moves

    def _rename_folder(self, old: str, new: str, is_reg: bool = False) -> None:
        folder = self._find_folder(old, is_reg)
        target = folder.path.parent / new
        if target.exists():
            raise UserError(f"Cannot rename {folder.path} to {target}: that folder already exists.")
        try:
            os.rename(folder.path, target)
        except OSError as err:
            raise UserError(f"Cannot rename {folder.path} to {target}: {err.strerror or err}.") from None
        # Originals follow their folder so revert still finds them.
        base = self._originals_dir / "reg" if folder.is_reg else self._originals_dir
        if (base / old).exists() and not (base / new).exists():
            os.rename(base / old, base / new)
        parsed = parse_folder_name(new) or (folder.repeats, folder.class_tokens)
        folder.path, folder.name, folder.repeats = target, new, parsed[0]
        prefix = (REG_PREFIX if folder.is_reg else "") + new + "/"
        for item in folder.images:
            old_key = item.key
            item.key = prefix + item.name
            item._moved()
            if old_key in self._dirty:
                self._dirty.discard(old_key)
                self._dirty.add(item.key)
        self._reindex()

    def trash(self, key: str) -> Change:
        """Move an image and its caption to ``.kazari/trash/`` (undoable; nothing is deleted)."""
        item = self.image(key)
        change = Change(label=f"trash {key}", kind="trash", extra={"key": key})
        with self.write_lock():
            moves, planned = self._trash_plan(item)
            planned_change = Change(label=change.label, kind="trash", extra={**change.extra, **planned})
            event = self.history_log.next_do_event(planned_change)
            txn = self._moves_txn(moves, lambda: self._trash_item(item, change), [event])
            self.history_log.record(change)
            self.history_log.flush(txn)
        return change

    def _trash_plan(self, item: ImageItem) -> tuple[list[tuple[Path, Path]], dict[str, Any]]:
        """Where trashing ``item`` moves its files, and the ``extra`` the change will hold."""
        trash = self.state_dir / "trash" / _relative_key(item.key)
        dest_image = _free_path(trash.parent / item.path.name)
        moves = [(item.path, dest_image)]
        extra: dict[str, Any] = {"image": dest_image.relative_to(self.root).as_posix()}
        if item.caption_path.exists():
            dest_caption = _free_path(dest_image.with_name(dest_image.stem + self.caption_ext))
            moves.append((item.caption_path, dest_caption))
            extra["caption"] = dest_caption.relative_to(self.root).as_posix()
        extra.update(tags=list(item.tags), folder=item.folder.name, reg=item.folder.is_reg)
        return moves, extra

    def _restore_moves(self, change: Change) -> list[tuple[Path, Path]]:
        folder = self._find_folder(change.extra["folder"], bool(change.extra.get("reg")))
        image_path = folder.path / change.extra["key"].rsplit("/", 1)[-1]
        moves = [(self.root / change.extra["image"], image_path)]
        if "caption" in change.extra:
            moves.append((self.root / change.extra["caption"], image_path.with_name(image_path.stem + self.caption_ext)))
        return moves

    def _trash_item(self, item: ImageItem, change: Change) -> None:
        moves, _ = self._trash_plan(item)  # the same paths the intent recorded
        dest_image = moves[0][1]
        moved: dict[str, str] = {}
        try:
            dest_image.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(item.path), dest_image)
            moved["image"] = dest_image.relative_to(self.root).as_posix()
            if len(moves) > 1:
                dest_caption = moves[1][1]
                shutil.move(str(item.caption_path), dest_caption)
                moved["caption"] = dest_caption.relative_to(self.root).as_posix()
        except OSError as err:
            if "image" in moved and "caption" not in moved and item.caption_path.exists():
                # The caption could not follow: put the image back so no half-trashed pair is left
                # behind outside the undo history.
                with contextlib.suppress(OSError):
                    shutil.move(str(dest_image), item.path)
            raise UserError(f"Cannot move {item.path} to the trash: {err.strerror or err}.") from None
        change.extra.update(moved)
        change.extra.update(tags=list(item.tags), folder=item.folder.name, reg=item.folder.is_reg)
        item.folder.images.remove(item)
        self._dirty.discard(item.key)
        self._reindex()

    def _restore_item(self, change: Change) -> None:
        key = change.extra["key"]
        folder = self._find_folder(change.extra["folder"], bool(change.extra.get("reg")))
        image_path = folder.path / key.rsplit("/", 1)[-1]
        caption_path = image_path.with_name(image_path.stem + self.caption_ext)
        if image_path.exists():
            raise UserError(f"Cannot restore {key} from the trash: {image_path} exists again.")
        if "caption" in change.extra and caption_path.exists():
            # A caption written there since the trash must not be clobbered by the trashed one.
            raise UserError(f"Cannot restore {key} from the trash: {caption_path} exists again.",
                            hint="Move or delete that caption, then undo again.")
        try:
            shutil.move(str(self.root / change.extra["image"]), image_path)
            if "caption" in change.extra:
                try:
                    shutil.move(str(self.root / change.extra["caption"]), caption_path)
                except OSError:
                    shutil.move(str(image_path), self.root / change.extra["image"])  # all or nothing
                    raise
        except OSError as err:
            raise UserError(f"Cannot restore {key} from the trash: {err.strerror or err}.",
                            hint=f"The files are still in {self.state_dir / 'trash'}.") from None
        item = ImageItem(key, image_path, caption_path, folder)
        item.load_caption()
        folder.images.append(item)
        folder.images.sort(key=lambda i: _natural_key(i.path.name))
        self._reindex()
        self._set_tags({key: change.extra.get("tags", item.tags)})

    # ---- image replacement (background removal, crops): the original is kept ----------------
    def replace_images(self, new_files: Mapping[str, tuple[str, bytes]], label: str) -> Change:
        """Replace images' pixels: ``key -> (new file name, bytes)``, as ONE undoable step.

        The new name must keep the stem (so the caption still belongs to it; only the extension may
        change, e.g. .jpg -> .png for transparency). Each original moves to
        ``.kazari/originals/images/`` before the new file is written atomically; undo puts the
        originals back and keeps the replaced files in the trash (redo uses them).
        """
        with self.write_lock():
            return self._replace_images(new_files, label)

    def _replace_images(self, new_files: Mapping[str, tuple[str, bytes]], label: str) -> Change:
        entries: list[dict[str, Any]] = []
        change = Change(label=label, kind="images", extra={"files": entries})
        for key, (new_name, data) in new_files.items():
            item = self.image(key)
            if Path(new_name).stem != item.path.stem or "/" in new_name:
                raise UserError(f"Cannot replace {key} with {new_name!r}: the file name must keep its stem.")
            new_path = item.folder.path / new_name
            if new_name != item.name and new_path.exists():
                raise UserError(f"Cannot replace {key}: {new_path} already exists.",
                                hint="Move or rename that file, then run the command again.")
            store = _free_path(self._originals_dir / "images" / _relative_key(key))
            store.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.move(str(item.path), store)
                try:
                    atomic_write_bytes(new_path, data)
                except BaseException:
                    shutil.move(str(store), item.path)  # all or nothing for this image
                    raise
            except OSError as err:
                if entries:
                    self.history_log.record(change)  # the images already replaced stay undoable
                    self.history_log.flush()
                raise UserError(f"Cannot replace {item.path}: {err.strerror or err}.",
                                hint="Check free space and permissions; images done so far are one undo step.") from None
            entries.append({"key": key, "new_key": self._rekey(item, new_name),
                            "original": store.relative_to(self.root).as_posix(),
                            "digest": hashlib.blake2b(data, digest_size=16).hexdigest()})
        self._reindex()
        if entries:
            self.history_log.record(change)
            self.history_log.flush()
        return change

    def _rekey(self, item: ImageItem, new_name: str) -> str:
        old_key = item.key
        item.key = old_key.rsplit("/", 1)[0] + "/" + new_name if "/" in old_key else new_name
        item.name = new_name
        item._moved()
        item._size = None
        if old_key in self._dirty:
            self._dirty.discard(old_key)
            self._dirty.add(item.key)
        return item.key

    def _stash_path(self, entry: dict[str, Any], change_id: int) -> Path:
        # Deterministic (the change id is unique), so redo finds it after a restart too.
        return self.state_dir / "trash" / "replaced" / str(change_id) / _relative_key(entry["new_key"])

    def _undo_replace(self, entry: dict[str, Any], change_id: int) -> None:
        item = self.image(entry["new_key"])
        current = _read_or_none(item.path)
        if current is None or hashlib.blake2b(current, digest_size=16).hexdigest() != entry["digest"]:
            raise UserError(f"Cannot undo the replacement of {entry['key']}: {item.path} changed on disk since.",
                            hint=f"The original is kept in {self.root / entry['original']}.")
        stash = self._stash_path(entry, change_id)
        stash.parent.mkdir(parents=True, exist_ok=True)
        old_path = item.folder.path / entry["key"].rsplit("/", 1)[-1]
        shutil.move(str(item.path), stash)
        shutil.move(str(self.root / entry["original"]), old_path)
        self._rekey(item, old_path.name)

    def _redo_replace(self, entry: dict[str, Any], change_id: int) -> None:
        item = self.image(entry["key"])
        stash = self._stash_path(entry, change_id)
        if not stash.exists():
            raise UserError(f"Cannot redo the replacement of {entry['key']}: the replaced file is gone from the trash.")
        new_path = item.folder.path / entry["new_key"].rsplit("/", 1)[-1]
        store = self.root / entry["original"]
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(item.path), store)
        shutil.move(str(stash), new_path)
        self._rekey(item, new_path.name)

    # ---- saving -------------------------------------------------------------------------------
    @property
    def dirty_keys(self) -> list[str]:
        """Images whose in-memory tags differ from their caption on disk."""
        dirty = self._dirty
        return [item.key for item in self._all_items() if item.key in dirty and item.has_changes]

    @property
    def _originals_dir(self) -> Path:
        return self.state_dir / "originals"

    def _original_path(self, item: ImageItem) -> Path:
        return self._originals_dir / _relative_key(item.key, item.caption_path.name)

    def conflicts(self, keys: Iterable[str] | None = None) -> list[str]:
        """Changed images whose caption file was modified on disk since it was loaded."""
        out = []
        for key in self.dirty_keys if keys is None else keys:
            item = self._index[key]
            if _digest(_read_or_none(item.caption_path)) != item._disk_digest:
                out.append(key)
        return out

    def read_only_items(self, keys: Iterable[str] | None = None) -> list[ImageItem]:
        """Selected images (None: all training images) whose caption edits skip: ``caption_error`` says why."""
        items = self.images if keys is None else [self.image(k) for k in keys]
        return [item for item in items if item.caption_error is not None]

    def save(self, force: bool = False) -> SaveReport:
        """Write changed captions atomically; keep originals first; refuse on-disk conflicts.

        Holds the dataset lock throughout, so the conflict check and the writes see the same disk
        (LockBusy if another writer keeps it). The writes are one write-ahead transaction: the
        intent (old and new text of every caption, and the history events) is durable before the
        first caption changes, and the history records it after the last one.
        """
        with self.write_lock():
            return self._save_locked(force)

    def _save_locked(self, force: bool) -> SaveReport:
        dirty = self.dirty_keys
        report = SaveReport()
        if not dirty:
            self.history_log.flush()
            return report
        current = {k: _read_or_none(self._index[k].caption_path) for k in dirty}
        conflicts = [k for k in dirty if _digest(current[k]) != self._index[k]._disk_digest]
        if conflicts and not force:
            shown = ", ".join(str(self._index[k].caption_path) for k in conflicts[:5])
            more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
            err = ConflictError(
                f"Not saved: {len(conflicts)} caption file(s) changed on disk since kazari loaded them "
                f"({shown}{more}).",
                path=self._index[conflicts[0]].caption_path,
                hint="Reload the dataset to pick up the other edits (your unsaved edits to those files are "
                "dropped), or save with force to overwrite them.",
                keys=conflicts,
            )
            raise err
        report.overwritten_conflicts = conflicts
        items = [self._index[k] for k in dirty]
        payload = [(_write_target(item.caption_path), item.caption_bytes()) for item in items]
        try:
            self._keep_originals(items, report, current)
            _phase("originals")
            txn = self._write_intent([(path, current[item.key], data) for item, (path, data)
                                      in zip(items, payload, strict=True)])
            _phase("intent")
            atomic_write_many(payload)
            _phase("captions")
        except OSError as err:
            raise UserError(
                f"Saving captions failed ({err.strerror or err}: {getattr(err, 'filename', '')}); "
                "files already written are complete, the rest are unchanged.",
                hint="Check free space and write permission, then save again.",
            ) from None
        for item, (_, data) in zip(items, payload, strict=True):
            item._disk_digest = _digest(data)
            item._disk_tags = item.tags
            item.caption_exists = True
            item.has_bom = False
            report.written.append(item.key)
        self._dirty.clear()
        self.history_log.flush(txn)
        _phase("committed")
        return report

    def _stored(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)  # a reg root elsewhere, or a symlink target outside

    def _write_intent(self, files: list[tuple[Path, bytes | None, bytes]], moves: Sequence[tuple[Path, Path]] = (),
                      extra_events: list[dict] | None = None) -> str:
        def text(data: bytes) -> str:
            return data.decode("utf-8", "surrogateescape")

        return self.history_log.write_intent(
            [(self._stored(p), None if old is None else text(old), text(new)) for p, old, new in files],
            [(self._stored(a), self._stored(b)) for a, b in moves], extra_events,
        )

    def _moves_txn(self, moves: list[tuple[Path, Path]], action: Callable[[], None],
                   extra_events: list[dict] | None = None) -> str:
        """Run a structural edit's file moves as a write-ahead transaction; returns its txn for ``flush``.

        ``action`` does the moves (and undoes its own partial work when it fails); the caller
        holds the lock and flushes the history afterwards.
        """
        txn = self._write_intent([], moves, extra_events)
        _phase("intent")
        try:
            action()
        except UserError:  # refused, or failed and put back what it had moved: nothing to recover
            self.history_log.drop_intent()
            raise
        _phase("moved")
        return txn

    def _keep_originals(self, items: Sequence[ImageItem], report: SaveReport,
                        current: dict[str, bytes | None] | None = None) -> None:
        writes: list[tuple[Path, bytes]] = []
        for item in items:
            orig = self._original_path(item)
            absent = orig.with_name(orig.name + ".absent")
            if orig.exists() or absent.exists():
                continue
            orig.parent.mkdir(parents=True, exist_ok=True)
            data = current[item.key] if current is not None else _read_or_none(item.caption_path)
            # A marker says "there was no caption": revert then moves the created one to the trash.
            writes.append((absent, b"") if data is None else (orig, data))
            report.originals_kept.append(item.key)
        if writes:
            atomic_write_many(writes)

    def revert_all(self) -> RevertReport:
        """Put every caption back as it arrived (byte for byte) and clear the undo history.

        Captions kazari created are moved to the trash. Unsaved edits are discarded. Each caption
        that is overwritten is first copied to ``.kazari/trash/before-revert/`` (revert clears the
        undo history, so this copy is the only way back to hand edits made since).
        """
        with self.write_lock():
            return self._revert_locked()

    def _revert_locked(self) -> RevertReport:
        report = RevertReport()
        writes: list[tuple[Path, bytes, bytes | None]] = []  # (target, restored bytes, bytes it replaces)
        backups: list[tuple[Path, bytes]] = []
        for item in self._all_items():
            orig = self._original_path(item)
            absent = orig.with_name(orig.name + ".absent")
            if absent.exists() and item.caption_path.exists():
                dest = _free_path(self.state_dir / "trash" / _relative_key(item.key, item.caption_path.name))
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(item.caption_path), dest)
                report.removed.append(item.key)
            elif orig.exists():
                data = orig.read_bytes()
                current = _read_or_none(item.caption_path)
                if current != data:
                    writes.append((_write_target(item.caption_path), data, current))
                    report.restored.append(item.key)
                    if current is not None:
                        rel = _relative_key(item.key, item.caption_path.name)
                        backup = _free_path(self.state_dir / "trash" / "before-revert" / rel)
                        backups.append((backup, current))
        try:
            if backups:
                for backup, _ in backups:
                    backup.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_many(backups)  # the copies are safe on disk before any caption changes
            self.history_log.pending.clear()
            self.history_log.clear()  # queues the revert event: logged with the writes below
            txn = self._write_intent([(path, cur, data) for path, data, cur in writes]) if writes else None
            if writes:
                atomic_write_many([(path, data) for path, data, _ in writes])
        except OSError as err:
            self.history_log = History(self.history_log.path, on_warning=self.warnings.append)  # as on disk
            raise UserError(
                f"Revert failed ({err.strerror or err}: {getattr(err, 'filename', '')}); captions already "
                "written are complete, the rest are unchanged and the history is kept.",
                hint="Check free space and write permission, then revert again.",
            ) from None
        for item in self._all_items():
            item.load_caption()
        self._dirty.clear()
        self.history_log.flush(txn)
        return report


# ---- scanning helpers ---------------------------------------------------------------------------

def _check_root(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what} {path} does not exist.", path=path, hint="Check the path (and its spelling).")
    if not path.is_dir():
        raise DatasetError(
            f"{what} {path} is a file, not a folder.", path=path,
            hint="Pass the folder that contains the N_name subfolders (or the images).",
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise DatasetError(f"{what} {path} cannot be read (permission denied).", path=path)
    return path.resolve()


def _list_dir(path: Path, natural: bool = True) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: _natural_key(e.name)) if natural else list(it)
    except OSError as err:
        raise DatasetError(f"Cannot list folder {path}: {err.strerror or err}.", path=path) from None


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _root_layout(root: Path) -> tuple[list[os.DirEntry[str]], list[os.DirEntry[str]], list[os.DirEntry[str]]]:
    """A root's visible sub-folders, its images, and its kohya ``N_name`` sub-folders."""
    entries = [e for e in _list_dir(root) if not e.name.startswith(".")]
    dirs = [e for e in entries if _is_dir(e)]
    root_images = [e for e in entries if not _is_dir(e) and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS]
    numbered = [e for e in dirs if parse_folder_name(e.name) is not None]
    return dirs, root_images, numbered


def _scan_root(root: Path, caption_ext: str, is_reg: bool,
               temps: list[Path] | None = None) -> tuple[list[Folder], list[Skipped]]:
    dirs, root_images, numbered = _root_layout(root)
    skipped: list[Skipped] = []
    folders: list[Folder] = []
    if root_images and not numbered:
        # A plain folder of images: sd-scripts would need it as a subset with num_repeats = 1.
        folder = Folder(root, root.name, 1, None, "", is_reg=is_reg, plain=True)
        _scan_folder(folder, "" if not is_reg else REG_PREFIX, caption_ext, skipped, temps)
        for d in dirs:
            skipped.append(Skipped(Path(d.path), "subfolder inside a plain image folder is not read", "folder-nested"))
        return [folder], skipped
    for d in dirs:
        parsed = parse_folder_name(d.name)
        if parsed is None:
            skipped.append(Skipped(
                Path(d.path),
                f"folder name {d.name!r} does not start with a repeat count like '10_'; sd-scripts ignores it",
                "folder-unnumbered",
            ))
            continue
        repeats, class_tokens = parsed
        if repeats < 1:
            skipped.append(Skipped(
                Path(d.path), f"repeat count {repeats} in {d.name!r} is below 1; sd-scripts skips this folder",
                "folder-zero-repeats",
            ))
            continue
        trigger = class_tokens.split()[0] if class_tokens.split() else None
        folder = Folder(Path(d.path), d.name, repeats, trigger, class_tokens, is_reg=is_reg)
        _scan_folder(folder, (REG_PREFIX if is_reg else "") + d.name + "/", caption_ext, skipped, temps)
        folders.append(folder)
    for f in root_images:
        skipped.append(Skipped(
            Path(f.path), "image directly in the dataset root is not read; move it into an N_name folder",
            "image-at-root",
        ))
    return folders, skipped


def _scan_folder(folder: Folder, key_prefix: str, caption_ext: str, all_skipped: list[Skipped],
                 temps: list[Path] | None = None) -> None:
    skipped: list[Skipped] = []
    entries = _list_dir(folder.path, natural=False)  # only the images get sorted, below
    names = {e.name for e in entries}
    image_stems: set[str] = set()
    caption_files: list[os.DirEntry[str]] = []
    cap_lower = caption_ext.lower()
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            if temps is not None and name.endswith(".tmp") and _OUR_TEMP.match(name):
                temps.append(Path(entry.path))
            continue
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        lower = "." + ext.lower()
        if lower in IMAGE_EXTENSIONS:
            if entry.is_dir():
                skipped.append(Skipped(Path(entry.path), "nested folder is not read by sd-scripts", "folder-nested"))
                continue
            if not entry.is_file():  # a FIFO, socket, device or broken link: reading it could hang
                from tagging.safe_io import regular_file_problem

                kind = regular_file_problem(entry.path) or "a broken link"
                skipped.append(Skipped(Path(entry.path), f"it is {kind}, not an image file; it is not read",
                                       "image-not-file"))
                continue
            caption_name = stem + caption_ext
            folder.images.append(ImageItem(key_prefix + name, name, caption_name, folder))
            image_stems.add(stem)
            if caption_name not in names:
                skipped.append(Skipped(
                    Path(entry.path), f"image has no {caption_ext} caption; sd-scripts uses the folder name as its caption",
                    "caption-missing",
                ))
        elif lower == cap_lower and name.endswith(caption_ext):
            caption_files.append(entry)
        elif _is_dir(entry):
            skipped.append(Skipped(Path(entry.path), "nested folder is not read by sd-scripts", "folder-nested"))
        elif lower in UNSUPPORTED_IMAGE_EXTENSIONS:
            skipped.append(Skipped(
                Path(entry.path), f"{lower} images are not read by sd-scripts; convert to PNG", "image-unsupported",
            ))
    folder.images.sort(key=lambda i: _natural_key(i.name))
    for entry in sorted(caption_files, key=lambda e: _natural_key(e.name)):
        if entry.name[: -len(caption_ext)] not in image_stems and not _is_dir(entry):
            skipped.append(Skipped(Path(entry.path), "caption without a matching image", "caption-orphan"))
    skipped.sort(key=lambda s: _natural_key(s.path.name))
    all_skipped.extend(skipped)


def check_caption_ext(caption_ext: str) -> str:
    """``".txt"`` (a bare ``"txt"`` gets its dot); DatasetError for anything that is not a plain extension."""
    ext = caption_ext if caption_ext.startswith(".") or "/" in caption_ext or "\\" in caption_ext else "." + caption_ext
    if ext.lower() in IMAGE_EXTENSIONS or not _CAPTION_EXT.match(ext):
        raise DatasetError(
            f"Caption extension {caption_ext!r} is not usable: it must be a dot and a plain name such as "
            "'.txt' or '.caption' (letters, digits, '-' or '_'; no path separators, no '..'), and not an "
            "image extension.",
            hint="Pass e.g. --caption-ext .txt (or caption_extension = \".txt\" in the config).",
        )
    return ext


def _list_dir_names(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as it:
            return [Path(e.path) for e in it]
    except OSError:
        return []


def _intent_label(record: dict) -> str:
    labels = [e.get("change", {}).get("label") or f"{e.get('event')} of step {e.get('id', '?')}"
              for e in record.get("events", [])]
    labels = [str(x) for x in labels if x]
    text = "; ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
    return text or "caption writes"


def _write_target(path: Path) -> Path:
    """Where a caption write lands: through a symlink to its target, so the link itself stays."""
    if os.path.islink(path):
        return Path(os.path.realpath(path))
    return path


def _relative_key(key: str, filename: str | None = None) -> str:
    rel = ("reg/" + key.removeprefix(REG_PREFIX)) if key.startswith(REG_PREFIX) else key
    if filename is not None:
        rel = rel.rsplit("/", 1)[0] + "/" + filename if "/" in rel else filename
    return rel


def _free_path(path: Path) -> Path:
    """``path``, or ``name (2).ext``... if taken: the trash never overwrites an earlier item."""
    candidate, n = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
        n += 1
    return candidate


def _read_or_none(path: Path) -> bytes | None:
    try:
        return read_regular_bytes(path)
    except FileNotFoundError:
        return None
    except OSError as err:  # permission denied, a folder in the way...: say which file, never guess
        raise UserError(f"Cannot read {path}: {err.strerror or err}; nothing was saved.", path=path,
                        hint="Check the file's permissions, then try again.") from None


__all__ = [
    "Dataset", "Folder", "ImageItem", "Skipped", "SaveReport", "RevertReport", "Unusable", "parse_folder_name",
    "read_image_size", "probe_image", "check_caption_ext", "IMAGE_EXTENSIONS",
]
