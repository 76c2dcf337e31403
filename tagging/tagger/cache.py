"""Raw tagger scores cached per image, keyed by model id + image content hash.

Layout under ``<dataset root>/.kazari/tagger-cache/``::

    hashes.json                      image key -> [size, mtime_ns, blake2b]  (skip re-reading files)
    <model id>/labels.json           the model's tag names + categories (re-threshold w/o model)
    <model id>/<hh>/<hash>.npy       float32 scores, one file per distinct image content

Keyed by content, so a renamed or copied image hits the cache and an edited one misses it.
The cache is derived data: files are replaced atomically (a reader never sees half a file) but
not fsynced, and an unreadable entry is simply a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from tagging.tagger.labels import Labels

CACHE_DIR = Path(".kazari") / "tagger-cache"


def content_hash(data: bytes) -> str:
    # BLAKE2b: collision-safe like SHA-256 but ~1.5x faster in pure software (no SHA-NI needed),
    # and hashlib releases the GIL, so worker threads hash in parallel.
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def _replace_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ScoreCache:
    """Score store for one dataset; thread-safe for the tagger's worker threads."""

    def __init__(self, root: Path | str) -> None:
        self.dir = Path(root) / CACHE_DIR
        self._lock = threading.Lock()
        self._hashes: dict[str, list] | None = None
        self._hashes_dirty = False

    # ---- image key -> content hash (stat check avoids re-reading unchanged images) ----
    def _load_hashes(self) -> dict[str, list]:
        if self._hashes is None:
            try:
                data = json.loads((self.dir / "hashes.json").read_text("utf-8"))
                self._hashes = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._hashes = {}
        return self._hashes

    def known_hash(self, key: str, path: Path) -> str | None:
        """The cached content hash of ``path`` if its size and mtime are unchanged."""
        try:
            st = path.stat()
        except OSError:
            return None
        with self._lock:
            entry = self._load_hashes().get(key)
        # The index is derived data: any odd entry (hand-edited, other version) is just a miss.
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return str(entry[2])
        return None

    def remember_hash(self, key: str, path: Path, digest: str, st: os.stat_result | None = None) -> None:
        try:
            st = st or path.stat()
        except OSError:
            return
        with self._lock:
            self._load_hashes()[key] = [st.st_size, st.st_mtime_ns, digest]
            self._hashes_dirty = True

    def flush(self) -> None:
        """Write the hash index if it changed (call at the end of a run and on cancel)."""
        with self._lock:
            if not self._hashes_dirty or self._hashes is None:
                return
            data = json.dumps(self._hashes, separators=(",", ":")).encode()
            self._hashes_dirty = False
        with contextlib.suppress(OSError):
            _replace_write(self.dir / "hashes.json", data)

    # ---- per-model scores ----
    def _score_path(self, model_id: str, digest: str) -> Path:
        return self.dir / model_id / digest[:2] / f"{digest}.npy"

    def get(self, model_id: str, digest: str, n_tags: int | None = None) -> np.ndarray | None:
        try:
            arr = np.load(self._score_path(model_id, digest), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if arr.ndim != 1 or (n_tags is not None and arr.shape[0] != n_tags):
            return None
        return arr.astype(np.float32, copy=False)

    def put(self, model_id: str, digest: str, scores: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(scores, dtype=np.float32).reshape(-1), allow_pickle=False)
        # A full disk or read-only dataset only costs the cache, never the tagging run.
        with contextlib.suppress(OSError):
            _replace_write(self._score_path(model_id, digest), buf.getvalue())

    def save_labels(self, model_id: str, labels: Labels) -> None:
        path = self.dir / model_id / "labels.json"
        data = json.dumps(labels.to_json(), ensure_ascii=False).encode("utf-8")
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                return
        with contextlib.suppress(OSError):
            _replace_write(path, data)

    def load_labels(self, model_id: str) -> Labels | None:
        path = self.dir / model_id / "labels.json"
        try:
            return Labels.from_json(json.loads(path.read_text("utf-8")), source=str(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # damaged file: a cache miss
            return None

    def models(self) -> list[str]:
        """Model ids that have cached scores here (most recently used first)."""
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.iterdir() if (p / "labels.json").is_file()]
        return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]
