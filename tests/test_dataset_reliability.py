"""Nothing lost: one writer at a time, write-ahead caption saves, leftovers cleaned (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tagging.dataset as dsm
from tagging import reliability
from tagging.dataset import Dataset
from tagging.edits import AddTag
from tagging.errors import ConflictError
from tagging.lockfile import FileLock, LockBusy, dataset_lock
from tui.cli import main

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses flock, SIGKILL and FIFOs")

K1 = "10_kazari/001.png"
HOLDER = """
import sys
from tagging.lockfile import dataset_lock
with dataset_lock(sys.argv[1], command="holder --edits"):
    print("LOCKED", flush=True)
    sys.stdin.readline()
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))


@pytest.fixture
def holder(small_dataset: Path):
    """Another process holding the dataset lock until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(small_dataset)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "LOCKED"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=30)


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "lock"}


# ---- 1. one writer at a time ----------------------------------------------------------------------

def test_second_writer_refuses_naming_the_holder_and_changes_nothing(capsys, small_dataset, holder, monkeypatch):
    monkeypatch.setenv("KAZARI_LOCK_WAIT", "0.2")
    before = _files(small_dataset)
    for argv in (["edit", str(small_dataset), "--add", "x"], ["undo", str(small_dataset)],
                 ["revert", str(small_dataset)], ["repeats", str(small_dataset), "10_kazari", "4"]):
        assert main(["dataset", *argv]) == 2
        err = capsys.readouterr().err
        assert f"process {holder.pid} on " in err and "holder --edits" in err and "since" in err, err
        assert "Traceback" not in err
    assert _files(small_dataset) == before
    # The TUI path (load without the lock, save later) refuses too, before writing anything.
    ds = Dataset.open(small_dataset)
    ds.apply(AddTag("x"))
    with pytest.raises(LockBusy):
        ds.save()
    assert _files(small_dataset) == before


def test_lock_of_a_dead_process_is_taken_over(small_dataset: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(small_dataset)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "LOCKED"
    proc.kill()  # kill -9: no release, the record still names it
    proc.wait()
    lock = small_dataset / ".kazari" / "lock"
    lock.write_text(f'{{"pid": {proc.pid}, "host": "x", "command": "dead", "since": 0}}')
    with Dataset.locked(small_dataset, wait=0) as ds:  # flock is free again: taken over at once
        ds.apply(AddTag("after"))
        ds.save()  # nests in the held lock
    assert "after" in (small_dataset / "10_kazari/001.txt").read_text()


def test_lock_without_flock_uses_the_holder_record(tmp_path: Path, monkeypatch) -> None:
    import errno
    import socket

    import tagging.lockfile as lf

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lf.fcntl, "flock", no_flock)
    path = tmp_path / "lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(f'{{"pid": {dead.pid}, "host": "{socket.gethostname()}", "command": "old", "since": 0}}')
    lock = FileLock(path)
    assert lock.try_acquire()  # a dead pid on this host: stale, taken over
    lock.release()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path.write_text(f'{{"pid": {alive.pid}, "host": "{socket.gethostname()}", "command": "live", "since": 0}}')
        with pytest.raises(LockBusy, match=f"process {alive.pid} .*'live'"):
            FileLock(path, "The dataset").acquire(wait=0)
    finally:
        alive.kill()
        alive.wait()


def test_two_cli_edits_at_once_never_lose_an_update(tmp_path: Path) -> None:
    template = tmp_path / "template"
    old = reliability.make_caption_dataset(template, 30)
    waited = reliability.race_trial(template, tmp_path / "w1", old, delay=0.0, lock_wait=20)
    assert waited.codes == (0, 0) and waited.lost_updates == 0 and waited.torn == []  # the second waited
    refused = reliability.race_trial(template, tmp_path / "w2", old, delay=0.0, lock_wait=0)
    assert refused.lost_updates == 0 and refused.torn == []
    assert all(code in (0, 2) for code in refused.codes)
    for code, err in zip(refused.codes, refused.stderr, strict=True):
        assert code == 0 or "is being changed by process" in err


def test_two_loaded_writers_saving_together_never_lose_an_update(tmp_path: Path) -> None:
    """Like two TUIs: both loaded before either saved; the re-check inside the lock refuses the second."""
    template = tmp_path / "template"
    old = reliability.make_caption_dataset(template, 60)
    r = reliability.loaded_race_trial(template, tmp_path / "w", old)
    assert sorted(r.codes) == [0, 3] and r.lost_updates == 0 and r.torn == []


def test_save_rechecks_conflicts_inside_the_lock(small_dataset: Path) -> None:
    a, b = Dataset.open(small_dataset), Dataset.open(small_dataset)
    a.apply(AddTag("from_a"))
    b.apply(AddTag("from_b"))
    a.save()
    with pytest.raises(ConflictError):
        b.save()
    assert "from_a" in (small_dataset / "10_kazari/001.txt").read_text()


# ---- 2. history as a write-ahead log --------------------------------------------------------------

class _Crash(BaseException):
    pass


def _crash_at(monkeypatch, phase: str) -> None:
    if phase == "half":
        real = dsm.atomic_write_many

        def half(items, **kw):
            items = list(items)
            if any(".kazari" not in str(p) for p, _ in items):
                real(items[: len(items) // 2])
                raise _Crash
            return real(items, **kw)

        monkeypatch.setattr(dsm, "atomic_write_many", half)
    else:
        def hook(name: str) -> None:
            if name == phase:
                raise _Crash

        monkeypatch.setattr(dsm, "_phase_hook", hook)


EDIT_ENDS = {"originals": "old", "intent": "old", "half": "new", "captions": "new", "committed": "new"}


@pytest.mark.parametrize("action", ["edit", "undo"])
@pytest.mark.parametrize("phase", list(EDIT_ENDS))
def test_crash_at_each_phase_leaves_captions_and_history_in_agreement(tmp_path, monkeypatch, action, phase):
    root = tmp_path / "ds"
    if action == "edit":
        old = reliability.make_caption_dataset(root, 12)
    else:
        old = reliability.make_edited_template(root, 12)
    ds = Dataset.open(root)
    if action == "edit":
        ds.apply(AddTag(reliability.NEW_TAG))
    else:
        ds.undo()
    _crash_at(monkeypatch, phase)
    with pytest.raises(_Crash):
        ds.save()
    monkeypatch.undo()
    verdict = reliability.judge_after_kill(root, old, action)
    assert verdict.torn == [] and not verdict.un_undoable, verdict.problems
    expected = EDIT_ENDS[phase] if action == "edit" else {"old": "new", "new": "old"}[EDIT_ENDS[phase]]
    assert verdict.state == expected
    told = " ".join(verdict.warnings)
    if phase in ("half", "captions"):
        assert "kazari completed it" in told
    elif phase == "intent":
        assert "rolled it back" in told
    assert not (root / ".kazari" / "history.pending.json").exists()


@pytest.mark.parametrize(("action", "phase"), [("edit", "half"), ("undo", "intent"), ("undo", "half")])
def test_real_kill_at_a_phase_is_recovered_on_open(tmp_path: Path, action: str, phase: str) -> None:
    template = tmp_path / "template"
    old = (reliability.make_caption_dataset if action == "edit" else reliability.make_edited_template)(template, 30)
    verdict = reliability.kill_trial(template, tmp_path / "w", old, action, crash=phase)
    assert verdict.killed and verdict.torn == [] and not verdict.un_undoable, verdict.problems
    assert any("interrupted" in w for w in verdict.warnings)


def test_cli_prints_the_recovery(capsys, tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "ds"
    reliability.make_caption_dataset(root, 4)
    ds = Dataset.open(root)
    ds.apply(AddTag("zz"))
    _crash_at(monkeypatch, "half")
    with pytest.raises(_Crash):
        ds.save()
    monkeypatch.undo()
    assert main(["dataset", "history", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "kazari: warning: The previous save (add zz (end)) was interrupted after 2 of 4" in err
    assert "add zz" in out  # completed, so it is in the history and can be undone


def test_an_intent_while_another_process_holds_the_lock_is_left_alone(tmp_path, monkeypatch) -> None:
    root = tmp_path / "ds"
    old = reliability.make_caption_dataset(root, 6)
    ds = Dataset.open(root)
    ds.apply(AddTag("zz"))
    _crash_at(monkeypatch, "intent")
    with pytest.raises(_Crash):
        ds.save()
    monkeypatch.undo()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout.readline().strip() == "LOCKED"
        Dataset.open(root)  # the holder's save could be in flight: no recovery now
        assert (root / ".kazari" / "history.pending.json").exists()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    Dataset.open(root)
    assert not (root / ".kazari" / "history.pending.json").exists()
    assert reliability._caption_states(root / "10_kazari", old)[0] == len(old)


# ---- 3. leftovers ---------------------------------------------------------------------------------

def test_stale_temp_files_of_ours_are_removed_on_open(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.apply(AddTag("x"))
    ds.save()  # creates .kazari/originals
    folder = small_dataset / "10_kazari"
    old_time = time.time() - 3600
    stale = [folder / ".001.txt.ab12cd_9.tmp", small_dataset / ".kazari/originals/10_kazari/.002.txt.zz99zz99.tmp",
             small_dataset / ".kazari/.history.jsonl.k2k2k2k2.tmp"]
    fresh = folder / ".002.txt.qq11qq11.tmp"
    not_ours = [folder / ".notes.tmp", folder / ".001.txt.tmp", folder / "keep.ab12cd34.tmp"]
    for path in [*stale, fresh, *not_ours]:
        path.write_text("partial")
    for path in [*stale, *not_ours]:
        os.utime(path, (old_time, old_time))
    ds = Dataset.open(small_dataset)
    assert [p.exists() for p in stale] == [False, False, False]
    assert fresh.exists() and all(p.exists() for p in not_ours)
    assert any("Removed 3 temporary file(s)" in w for w in ds.warnings)


def test_stale_temp_files_stay_while_a_writer_holds_the_lock(small_dataset: Path, holder) -> None:
    tmp = small_dataset / "10_kazari" / ".001.txt.ab12cd34.tmp"
    tmp.write_text("partial")
    os.utime(tmp, (time.time() - 3600,) * 2)
    Dataset.open(small_dataset)
    assert tmp.exists()


# ---- 4. bad inputs --------------------------------------------------------------------------------

def _cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # A subprocess with a timeout: a regression that blocks on a FIFO must fail, not hang the suite.
    return subprocess.run([sys.executable, "-m", "tui.cli", "dataset", *argv], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def test_fifo_caption_and_image_never_block(capsys, small_dataset: Path) -> None:
    os.unlink(small_dataset / "10_kazari/002.txt")
    os.mkfifo(small_dataset / "10_kazari/002.txt")
    os.mkfifo(small_dataset / "10_kazari/004.png")
    r = _cli("lint", str(small_dataset), "--json")
    assert r.returncode == 1, r.stderr
    import json

    codes = {(f["code"], f["path"]) for f in json.loads(r.stdout)["findings"]}
    assert ("caption-not-file", "10_kazari/002.txt") in codes
    assert ("image-not-file", "10_kazari/004.png") in codes
    # Lint opened every file without blocking, so the rest can run in this process.
    assert main(["dataset", "info", str(small_dataset)]) == 0
    assert "[image-not-file] 10_kazari/004.png" in capsys.readouterr().out
    assert main(["dataset", "edit", str(small_dataset), "--add", "new_tag"]) == 0
    out = capsys.readouterr().out
    assert "changed 3 of 4 caption(s); 1 skipped (cannot be read, left untouched):" in out
    assert "skipped 10_kazari/002.txt:" in out and "FIFO" in out


def test_caption_that_is_a_folder_is_reported_not_missing(small_dataset: Path) -> None:
    os.unlink(small_dataset / "10_kazari/001.txt")
    (small_dataset / "10_kazari/001.txt").mkdir()
    ds = Dataset.open(small_dataset)
    item = ds.image(K1)
    assert item.caption_exists and item.caption_error_code == "caption-not-file" and "a folder" in item.caption_error
    assert [(u.key, u.code) for u in ds.unusable_images()] == [(K1, "caption-not-file")]
    from tagging.lint import lint

    assert [f.code for f in lint(ds, min_size=1, check_images=False) if f.key == K1] == ["caption-not-file"]


def _bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_images_with_unreadable_headers_are_reported_with_the_reason(small_dataset: Path) -> None:
    folder = small_dataset / "10_kazari"
    (folder / "001.png").write_bytes(b"")
    (folder / "002.png").write_bytes(b"this is not a png")
    (folder / "003.png").write_bytes(_bomb_png())
    ds = Dataset.open(small_dataset)
    reasons = {u.key: u.reason for u in ds.unusable_images()}
    assert "empty (0 bytes)" in reasons[K1]
    assert "header cannot be read" in reasons["10_kazari/002.png"]
    assert "decompression-bomb" in reasons["10_kazari/003.png"]
    from tagging.lint import lint

    for check_images in (False, True):
        flagged = {f.key for f in lint(ds, check_images=check_images) if f.severity == "error"}
        assert {K1, "10_kazari/002.png", "10_kazari/003.png"} <= flagged


def test_deeply_nested_query_is_a_clear_error(capsys, small_dataset: Path) -> None:
    for query in ("(" * 3000 + "solo" + ")" * 3000, "NOT " * 3000 + "solo"):
        assert main(["dataset", "stats", str(small_dataset), "--where", query]) == 2
        err = capsys.readouterr().err
        assert "nests parentheses or NOTs more than" in err and "Traceback" not in err


def test_symlinked_caption_is_written_through_and_stays_a_link(small_dataset: Path, tmp_path: Path) -> None:
    target = tmp_path / "shared" / "real.txt"
    target.parent.mkdir()
    link = small_dataset / "10_kazari/001.txt"
    target.write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(target)
    ds = Dataset.open(small_dataset)
    ds.apply(AddTag("linked"), keys=[K1])
    ds.save()
    assert link.is_symlink() and "linked" in target.read_text()
    ds = Dataset.open(small_dataset)
    ds.undo()
    ds.save()
    assert link.is_symlink() and "linked" not in target.read_text()


@pytest.mark.parametrize("ext", ["/../../x", "../x", ".txt/..", "..", ".t xt", "a/b"])
def test_caption_ext_with_a_path_is_refused(capsys, small_dataset: Path, ext: str) -> None:
    before = _files(small_dataset)
    for action in ("info", "edit"):
        argv = ["dataset", action, str(small_dataset), "--caption-ext", ext]
        assert main([*argv, "--add", "x"] if action == "edit" else argv) == 2
        err = capsys.readouterr().err
        assert "Caption extension" in err and "no path separators" in err
    assert _files(small_dataset) == before
    assert not (small_dataset / ".kazari").exists()


def test_lock_is_free_after_a_cli_edit(capsys, small_dataset: Path) -> None:
    assert main(["dataset", "edit", str(small_dataset), "--add", "x"]) == 0
    with dataset_lock(small_dataset, wait=0):
        pass
    assert (small_dataset / ".kazari" / "lock").read_text() == ""  # released: no holder named


def test_a_save_whose_history_append_failed_is_never_rolled_back_later(tmp_path, monkeypatch) -> None:
    """Full disk at the commit, a second save in the same session, then a kill before its captions."""
    import errno

    import tagging.history as history

    root = tmp_path / "ds"
    old = reliability.make_caption_dataset(root, 4)
    ds = Dataset.open(root)
    ds.apply(AddTag("first"))
    real = history.History._write_pending

    def full(self, txn):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(history.History, "_write_pending", full)
    ds.save()  # captions written; the history append fails (a warning)
    assert any("Could not write the edit history" in w for w in ds.warnings)
    monkeypatch.setattr(history.History, "_write_pending", real)
    ds.apply(AddTag("second"))
    _crash_at(monkeypatch, "intent")
    with pytest.raises(_Crash):
        ds.save()
    monkeypatch.undo()
    again = Dataset.open(root)
    assert any("kazari completed it" in w for w in again.warnings)
    for name in old:
        assert (root / "10_kazari" / name).read_text().rstrip("\n").endswith("first, second")
    assert [c.label for c in again.history] == ["add first (end)", "add second (end)"]
    again.undo()
    again.undo()
    again.save()
    assert all((root / "10_kazari" / n).read_bytes() == b for n, b in old.items())
