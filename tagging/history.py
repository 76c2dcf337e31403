"""The persistent undo/redo log in ``<root>/.kazari/history.jsonl``.

The file is append-only JSON lines: ``{"event": "do", "change": {...}}``, ``{"event": "undo", "id": n}``,
``{"event": "redo", "id": n}`` and ``{"event": "revert"}`` (which clears both stacks). Replaying it
rebuilds the undo and redo stacks after a restart. A line torn by a crash is ignored, and a long
log is compacted (rewritten atomically) to the events that rebuild the current stacks.

Write-ahead: events are appended as one ``{"event": "commit", "txn": T, "events": [...]}`` line.
A save that writes captions first records its intent durably in ``.kazari/history.pending.json``
(the events plus each caption's old and new text), then writes the captions, then appends the
commit line and deletes the intent. A crash in between leaves the intent file; the next writer to
open the dataset completes or rolls it back (``Dataset._recover``), so the captions on disk and
the history never disagree.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from tagging.atomic import atomic_write_text
from tagging.edits import Change

COMPACT_AFTER_LINES = 400
MAX_UNDO = 200  # older steps are dropped at compaction; the originals still allow a full revert
# A bulk edit of 10,000 captions is a few MB of JSON; cap the log so it never grows without bound.
MAX_LOG_BYTES = 32 * 2**20
INTENT_NAME = "history.pending.json"


class History:
    """Undo/redo stacks plus the events not yet written to the log.

    The log is read on first use, not when the dataset opens: a long history must not slow
    down opening a dataset that is only being looked at.
    """

    def __init__(self, path: Path, on_warning: Any = None) -> None:
        self.path = path
        self._undo: list[Change] = []
        self._redo: list[Change] = []
        self.pending: list[dict[str, Any]] = []
        self.next_id = 1
        self._lines_on_disk = 0
        self._bytes_on_disk = 0
        self._loaded = False
        self._on_warning = on_warning
        self.txns: set[str] = set()  # transactions committed to the log (for recovering an intent)
        # Files of an intent whose commit failed (full disk): carried into the next intent, whose
        # events still include that save's, so recovery can never roll back captions already written.
        self._carried: list[tuple[str, str | None, str]] = []

    @property
    def intent_path(self) -> Path:
        return self.path.with_name(INTENT_NAME)

    @property
    def undo_stack(self) -> list[Change]:
        self._ensure()
        return self._undo

    @property
    def redo_stack(self) -> list[Change]:
        self._ensure()
        return self._redo

    def _ensure(self) -> None:
        if not self._loaded:
            self._loaded = True
            for warning in self.load():
                if self._on_warning is not None:
                    self._on_warning(warning)

    # ---- in-memory stack operations (each queues the matching log event) ----
    def record(self, change: Change) -> None:
        self._ensure()
        change.id = self.next_id
        self.next_id += 1
        self._undo.append(change)
        self._redo.clear()
        self.pending.append({"event": "do", "change": change.to_dict()})

    def pop_undo(self) -> Change | None:
        self._ensure()
        if not self._undo:
            return None
        change = self._undo.pop()
        self._redo.append(change)
        self.pending.append({"event": "undo", "id": change.id})
        return change

    def pop_redo(self) -> Change | None:
        self._ensure()
        if not self._redo:
            return None
        change = self._redo.pop()
        self._undo.append(change)
        self.pending.append({"event": "redo", "id": change.id})
        return change

    def clear(self) -> None:
        self._ensure()
        self._undo.clear()
        self._redo.clear()
        self.pending.append({"event": "revert"})

    # ---- persistence ----
    def load(self) -> list[str]:
        """Replay the log; return warnings about lines that could not be used."""
        warnings: list[str] = []
        try:
            raw = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return warnings
        except OSError as err:
            return [f"Cannot read the edit history {self.path}: {err.strerror or err}; undo starts empty."]
        lines = raw.splitlines()
        self._lines_on_disk = len(lines)
        self._bytes_on_disk = len(raw)
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                self._replay(event)
            except (ValueError, KeyError, TypeError, AttributeError):
                warnings.append(f"{self.path}: line {number} is damaged and was ignored.")
        return warnings

    def _replay(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "commit":
            for inner in event["events"]:
                self._replay(inner)
            self.txns.add(str(event["txn"]))
        elif kind == "txn":
            self.txns.add(str(event["txn"]))
        elif kind == "do":
            change = Change.from_dict(event["change"])
            self._undo.append(change)
            self._redo.clear()
            self.next_id = max(self.next_id, change.id + 1)
        elif kind == "undo":
            if self._undo and self._undo[-1].id == event["id"]:
                self._redo.append(self._undo.pop())
        elif kind == "redo":
            if self._redo and self._redo[-1].id == event["id"]:
                self._undo.append(self._redo.pop())
        elif kind == "revert":
            self._undo.clear()
            self._redo.clear()

    # ---- write-ahead intent ----
    def write_intent(self, files: list[tuple[str, str | None, str]]) -> str:
        """Durably record what a save is about to do; returns its transaction id.

        ``files``: (caption path as stored, old text or None if absent, new text). Text is
        decoded with ``surrogateescape`` so any bytes round-trip through JSON.
        """
        self._ensure()
        txn = uuid.uuid4().hex
        merged: dict[str, tuple[str, str | None, str]] = {}
        mids: dict[str, list[str]] = {}  # texts a carried save already wrote, superseded by this one
        for path, old, new in [*self._carried, *files]:
            if path in merged:
                mids.setdefault(path, []).append(merged[path][2])
                old = merged[path][1]
            merged[path] = (path, old, new)
        files = list(merged.values())
        record = {"txn": txn, "time": time.time(), "pid": os.getpid(), "events": self.pending, "files": files,
                  "started": bool(self._carried), "mids": mids}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.intent_path, json.dumps(record, ensure_ascii=True))
        self._carried = files
        return txn

    def read_intent(self) -> dict[str, Any] | None:
        """The intent left by an interrupted save, or None. A damaged one is reported and ignored."""
        try:
            raw = self.intent_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            if self._on_warning is not None:
                self._on_warning(f"Cannot read {self.intent_path} ({err.strerror or err}); it was left alone.")
            return None
        try:
            record = json.loads(raw)
            record["txn"] = str(record["txn"])
            record["events"] = list(record["events"])
            record["files"] = [(str(p), o, str(n)) for p, o, n in record["files"]]
            record["started"] = bool(record.get("started"))
            record["mids"] = {str(k): [str(t) for t in v] for k, v in dict(record.get("mids") or {}).items()}
            return record
        except (ValueError, KeyError, TypeError):
            # atomic_write_text never leaves a torn intent; a damaged one was not written by us.
            return {"damaged": True}

    def drop_intent(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.intent_path)

    def commit_recovered(self, record: dict[str, Any]) -> None:
        """Append the events of an interrupted save whose captions are now all written."""
        self._ensure()
        events = record["events"]
        for event in events:
            self._replay(event)
        saved, self.pending = self.pending, list(events)
        try:
            self._write_pending(record["txn"])
        finally:
            self.pending = saved
        self.drop_intent()

    def flush(self, txn: str | None = None) -> None:
        """Append the pending events as one commit line (one fsync), compacting a long log.

        Then the intent of this save (if any) is deleted: the log now says what the captions say.
        A log that cannot be written (read-only medium, full disk) is a warning, not a failure:
        the captions are already saved; the events stay pending for the next try, and the intent
        stays so a restart can still record them.
        """
        if not self.pending:
            if txn is not None:
                self.drop_intent()
                self._carried = []
            return
        self._ensure()
        try:
            self._write_pending(txn or uuid.uuid4().hex)
            self.drop_intent()
            self._carried = []
        except OSError as err:
            if self._on_warning is not None:
                self._on_warning(
                    f"Could not write the edit history {self.path} ({err.strerror or err}); "
                    "undo works in this session only."
                )

    def _write_pending(self, txn: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"event": "commit", "txn": txn, "events": self.pending}, ensure_ascii=True) + "\n"
        if (self._lines_on_disk + 1 > COMPACT_AFTER_LINES
                or self._bytes_on_disk + len(text) > MAX_LOG_BYTES):
            self._compact(txn)
            self.txns.add(txn)
            self.pending.clear()
            return
        with open(self.path, "ab") as fh:
            # A crash may have left a torn last line; start on a fresh line so ours stays readable.
            if fh.tell() > 0:
                with open(self.path, "rb") as rd:
                    rd.seek(-1, os.SEEK_END)
                    if rd.read(1) != b"\n":
                        text = "\n" + text
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        self._lines_on_disk += 1
        self._bytes_on_disk += len(text)
        self.txns.add(txn)
        self.pending.clear()

    def _compact(self, txn: str) -> None:
        del self._undo[:-MAX_UNDO]
        dumps = [json.dumps({"event": "do", "change": c.to_dict()}, ensure_ascii=True) for c in self._undo]
        # Keep the newest steps within half the size cap (always at least the last one).
        budget, keep = MAX_LOG_BYTES // 2, 0
        for line in reversed(dumps):
            if keep and budget - len(line) < 0:
                break
            budget -= len(line)
            keep += 1
        del self._undo[: len(self._undo) - keep]
        lines = dumps[len(dumps) - keep:]
        # Redo entries: re-do them in their original order, then undo them newest first.
        lines += [json.dumps({"event": "do", "change": c.to_dict()}, ensure_ascii=True) for c in reversed(self._redo)]
        lines += [json.dumps({"event": "undo", "id": c.id}) for c in self._redo]
        lines.append(json.dumps({"event": "txn", "txn": txn}))  # recovery asks "was this one logged?"
        text = "".join(line + "\n" for line in lines)
        atomic_write_text(self.path, text)
        self._lines_on_disk = len(lines)
        self._bytes_on_disk = len(text)
