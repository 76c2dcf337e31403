"""Reliability harness shared by the tests and ``bench/reliability_bench.py``.

* kill-while-saving: a child opens a dataset, edits every caption and saves; the parent kills it
  with SIGKILL at a random moment (or the child kills itself at a named phase of the save) and
  checks that every caption holds its old or new content (never torn) and, once the dataset is
  opened again (which recovers the interrupted save), that captions and history agree: a new
  caption can be undone, an undone one was recorded.
* concurrent writers: two ``kazari dataset edit`` processes at once; an edit that reports success
  must be in every caption (a lost update otherwise), a refused one in none.

``FAMILIES`` is the bench's registry (name -> ``family(trials, workdir, rng) -> counts``); other
packages add theirs with ``@register_family("name")`` (the bench imports ``trainer.reliability``
if it exists).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

NEW_TAG = "reliability_" + "x" * 200  # long, so a torn write cannot look like the old content

# argv: root, action (edit|undo), tag, crash phase (none | a Dataset save phase | half)
_CHILD = """
import os, signal, sys
import tagging.dataset as dsm
from tagging.dataset import Dataset
from tagging.edits import AddTag
root, action, tag, crash = sys.argv[1:5]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if crash == "half":  # die after renaming half of the captions
    real = dsm.atomic_write_many
    def half(items, **kw):
        items = list(items)
        if any(".kazari" not in str(p) for p, _ in items):
            real(items[: len(items) // 2])
            die()
        return real(items, **kw)
    dsm.atomic_write_many = half
elif crash != "none":
    dsm._phase_hook = lambda name: die() if name == crash else None
ds = Dataset.open(root)
if action == "edit":
    ds.apply(AddTag(tag))
else:
    assert ds.undo() is not None
print("SAVING", flush=True)
ds.save()
print("DONE", flush=True)
"""
CRASH_PHASES = ("originals", "intent", "half", "captions", "committed")
FAMILIES: dict[str, Callable[[int, Path, random.Random], dict[str, int]]] = {}


def register_family(name: str) -> Callable[[Callable[..., dict[str, int]]], Callable[..., dict[str, int]]]:
    """Add a bench family: ``func(trials, workdir, rng) -> {"trials": n, "<failure kind>": count, ...}``."""
    def add(func: Callable[..., dict[str, int]]) -> Callable[..., dict[str, int]]:
        FAMILIES[name] = func
        return func
    return add


@dataclass
class TrialResult:
    killed_during_save: bool
    old: int = 0
    new: int = 0
    bad: list[str] = field(default_factory=list)


def make_caption_dataset(root: Path, n: int) -> dict[str, bytes]:
    """Tiny images (1x1 PNG bytes) + captions; returns caption name -> old bytes."""
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    png = buf.getvalue()
    folder = root / "10_kazari"
    folder.mkdir(parents=True, exist_ok=True)
    old = {}
    for i in range(n):
        (folder / f"{i:05d}.png").write_bytes(png)
        data = f"kazari, 1girl, tag{i}, solo\n".encode()
        (folder / f"{i:05d}.txt").write_bytes(data)
        old[f"{i:05d}.txt"] = data
    return old


def _env() -> dict[str, str]:
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start_saving_child(template: Path, workdir: Path, action: str = "edit",
                        crash: str = "none") -> subprocess.Popen[str]:
    """A fresh copy of ``template`` in ``workdir`` and a child process that saves an edit (or undo) to it."""
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(template, workdir)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(workdir), action, NEW_TAG, crash],
        stdout=subprocess.PIPE, text=True, env=_env(),
    )
    return proc


def _pipe(stream: IO[str] | None) -> IO[str]:
    """A child's pipe that was asked for (``subprocess.PIPE``), so never None."""
    assert stream is not None
    return stream


def _with_new_tag(caption: bytes) -> bytes:
    return caption.rstrip(b"\n") + b", " + NEW_TAG.encode() + b"\n"


def run_trial(template: Path, workdir: Path, old: dict[str, bytes], max_delay: float, rng: random.Random) -> TrialResult:
    """Copy ``template``, start a saving child, SIGKILL it after a random delay, check every caption."""
    from tagging.dataset import Dataset

    proc = _start_saving_child(template, workdir)
    out = _pipe(proc.stdout)
    line = out.readline()
    if line.strip() != "SAVING":
        proc.kill()
        raise RuntimeError(f"saving child failed to start: {line!r}")
    time.sleep(rng.uniform(0, max_delay))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL and "DONE" not in (out.read() or "")
    out.close()
    result = TrialResult(killed_during_save=killed)
    folder = workdir / "10_kazari"
    for name, before in old.items():
        data = (folder / name).read_bytes()
        if data == before:
            result.old += 1
        elif data == _with_new_tag(before):
            result.new += 1
        else:
            result.bad.append(f"{name}: {data[:60]!r}")
    # Originals kept so far must be complete copies of the old content.
    for orig in (workdir / ".kazari" / "originals").rglob("*.txt"):
        if orig.read_bytes() != old[orig.name]:
            result.bad.append(f"original {orig.name} is damaged")
    # The dataset must reopen and finish the job.
    ds = Dataset.open(workdir)
    from tagging.edits import AddTag

    ds.apply(AddTag(NEW_TAG))
    ds.save()
    for name, before in old.items():
        if (folder / name).read_bytes() != _with_new_tag(before):
            result.bad.append(f"{name}: not saved after recovery")
    return result


def calibrate(template: Path, workdir: Path, action: str = "edit") -> float:
    """Seconds from the child's SAVING line to its exit, for picking kill delays."""
    proc = _start_saving_child(template, workdir, action)
    out = _pipe(proc.stdout)
    out.readline()
    start = time.perf_counter()
    out.read()
    proc.wait()
    out.close()
    return time.perf_counter() - start


# ---- kills during edit / undo, with recovery checks -----------------------------------------------

@dataclass
class KillVerdict:
    """One killed save, judged after the dataset was opened again."""

    killed: bool
    torn: list[str] = field(default_factory=list)   # captions neither old nor new (before recovery)
    state: str = ""                                  # "old", "new" or "mixed" after recovery
    un_undoable: bool = False                        # captions and history disagree (see kill_trial)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _caption_states(folder: Path, old: dict[str, bytes]) -> tuple[int, int, list[str]]:
    n_old = n_new = 0
    bad = []
    for name, before in old.items():
        data = (folder / name).read_bytes()
        if data == before:
            n_old += 1
        elif data == _with_new_tag(before):
            n_new += 1
        else:
            bad.append(f"{name}: {data[:60]!r}")
    return n_old, n_new, bad


def make_edited_template(template: Path, n: int) -> dict[str, bytes]:
    """A dataset whose captions hold NEW_TAG through a recorded (undoable) edit; returns the old bytes."""
    from tagging.dataset import Dataset
    from tagging.edits import AddTag

    old = make_caption_dataset(template, n)
    ds = Dataset.open(template)
    ds.apply(AddTag(NEW_TAG))
    ds.save()
    return old


def _is_our_edit(change: object) -> bool:
    return change is not None and NEW_TAG in getattr(change, "label", "")


def judge_after_kill(workdir: Path, old: dict[str, bytes], action: str) -> KillVerdict:
    """Open the killed dataset (recovering it) and check captions against the history.

    edit: new captions need the edit on top of the undo stack and undoing it must restore every
    caption; old captions must not have the edit recorded. undo: old captions need the undo
    recorded (the edit on top of the redo stack, and redo must bring the new text back); new
    captions need the edit still undoable. Anything else counts as ``un_undoable``.
    """
    from tagging.dataset import Dataset

    folder = workdir / "10_kazari"
    verdict = KillVerdict(killed=True)
    verdict.torn = _caption_states(folder, old)[2]
    ds = Dataset.open(workdir)
    verdict.warnings = list(ds.warnings)
    n_old, n_new, bad = _caption_states(folder, old)
    verdict.torn += [b for b in bad if b not in verdict.torn]
    verdict.state = "mixed" if (n_old and n_new) or bad else ("new" if n_new else "old")
    top = ds.history[-1] if ds.history else None
    redo_top = ds.redo_stack[-1] if ds.redo_stack else None
    if verdict.state == "mixed":
        verdict.un_undoable = True
        verdict.problems.append(f"after recovery {n_old} old, {n_new} new, {len(bad)} other captions")
        return verdict
    if verdict.state == "new":
        if not _is_our_edit(top):
            verdict.un_undoable = True
            verdict.problems.append("captions hold the edit but it is not on the undo stack")
            return verdict
        ds.undo()
        ds.save()
        if _caption_states(folder, old)[0] != len(old):
            verdict.un_undoable = True
            verdict.problems.append("undo after recovery did not restore every caption")
    else:
        if action == "edit" and _is_our_edit(top):
            verdict.un_undoable = True
            verdict.problems.append("captions are old but the edit is recorded as done")
        if action == "undo":
            if not _is_our_edit(redo_top):
                verdict.un_undoable = True
                verdict.problems.append("captions were undone but the undo is not recorded")
                return verdict
            ds.redo()
            ds.save()
            if _caption_states(folder, old)[1] != len(old):
                verdict.un_undoable = True
                verdict.problems.append("redo after recovery did not bring every caption back")
    return verdict


def kill_trial(template: Path, workdir: Path, old: dict[str, bytes], action: str, *,
               crash: str = "none", max_delay: float = 0.0, rng: random.Random | None = None) -> KillVerdict:
    """One save (``action`` edit or undo) killed at phase ``crash``, or by SIGKILL after a random delay."""
    proc = _start_saving_child(template, workdir, action, crash)
    out = _pipe(proc.stdout)
    line = out.readline()
    if line.strip() != "SAVING":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"saving child failed to start: {line!r}")
    if crash == "none":
        time.sleep((rng or random.Random()).uniform(0, max_delay))
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    rest = out.read() or ""
    out.close()
    verdict = judge_after_kill(workdir, old, action)
    verdict.killed = proc.returncode == -signal.SIGKILL and "DONE" not in rest
    return verdict


def _kill_family(action: str, trials: int, workdir: Path, rng: random.Random, n: int = 200) -> dict[str, int]:
    template = workdir / f"template-{action}"
    if template.exists():
        shutil.rmtree(template)
    old = make_caption_dataset(template, n) if action == "edit" else make_edited_template(template, n)
    save_time = calibrate(template, workdir / "calibrate", action)
    counts: Counter[str] = Counter()
    for i in range(trials):
        # One trial in four dies at a named phase; the rest at a random moment of the save.
        crash = CRASH_PHASES[i // 4 % len(CRASH_PHASES)] if i % 4 == 0 else "none"
        v = kill_trial(template, workdir / "trial", old, action, crash=crash, max_delay=save_time * 1.1, rng=rng)
        counts["trials"] += 1
        counts["killed_mid_save"] += v.killed
        counts["torn_files"] += len(v.torn)
        counts["un_undoable"] += v.un_undoable
        counts[f"ended_{v.state}"] += 1
        counts["recovered"] += any("interrupted" in w for w in v.warnings)
    return dict(counts)


@register_family("kill-during-edit")
def kill_during_edit(trials: int, workdir: Path, rng: random.Random) -> dict[str, int]:
    return _kill_family("edit", trials, workdir, rng)


@register_family("kill-during-undo")
def kill_during_undo(trials: int, workdir: Path, rng: random.Random) -> dict[str, int]:
    return _kill_family("undo", trials, workdir, rng)


# ---- concurrent writers ------------------------------------------------------------------------------

@dataclass
class RaceResult:
    codes: tuple[int, int]
    lost_updates: int = 0          # edits reported as saved that are missing from a caption
    torn: list[str] = field(default_factory=list)
    refused: int = 0
    stderr: tuple[str, str] = ("", "")


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tui.cli", *argv]


def race_trial(template: Path, workdir: Path, old: dict[str, bytes], delay: float,
               lock_wait: float | None = None) -> RaceResult:
    """Two ``kazari dataset edit --add`` processes (tags ``race_a``/``race_b``), the second ``delay`` s later."""
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(template, workdir)
    env = _env()
    if lock_wait is not None:
        env["KAZARI_LOCK_WAIT"] = str(lock_wait)
    procs = []
    for i, tag in enumerate(("race_a", "race_b")):
        if i:
            time.sleep(delay)
        procs.append(subprocess.Popen(
            _cli("dataset", "edit", str(workdir), "--add", tag), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env=env,
        ))
    errs = (procs[0].communicate()[1], procs[1].communicate()[1])
    result = RaceResult(codes=(procs[0].returncode, procs[1].returncode), stderr=errs)
    return _judge_race(result, workdir / "10_kazari", old)


def _judge_race(result: RaceResult, folder: Path, old: dict[str, bytes]) -> RaceResult:
    from tagging.captions import parse_caption

    now = {}
    for name, before in old.items():
        tags = parse_caption((folder / name).read_text(encoding="utf-8"))
        base = parse_caption(before.decode())
        if tags[: len(base)] != base or not set(tags[len(base):]) <= {"race_a", "race_b"}:
            result.torn.append(f"{name}: {tags}")
        now[name] = tags
    for tag, code in zip(("race_a", "race_b"), result.codes, strict=True):
        present = [tag in tags for tags in now.values()]
        if code == 0 and not all(present):
            result.lost_updates += 1
        elif code != 0:
            result.refused += 1
            if any(present):
                result.torn.append(f"refused edit {tag} is in {sum(present)} caption(s)")
    return result


_LOADED_CHILD = """
import sys
from tagging.dataset import Dataset
from tagging.edits import AddTag
from tagging.errors import ConflictError, UserError
ds = Dataset.open(sys.argv[1])
ds.apply(AddTag(sys.argv[2]))
print("LOADED", flush=True)
sys.stdin.readline()
try:
    ds.save()
except ConflictError as err:
    print(err, file=sys.stderr)
    sys.exit(3)
except UserError as err:
    print(err, file=sys.stderr)
    sys.exit(2)
"""


def loaded_race_trial(template: Path, workdir: Path, old: dict[str, bytes], lock_wait: float = 5.0) -> RaceResult:
    """Two writers that both loaded the dataset (like two TUIs) save at the same moment."""
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(template, workdir)
    env = dict(_env(), KAZARI_LOCK_WAIT=str(lock_wait))
    procs = [subprocess.Popen([sys.executable, "-c", _LOADED_CHILD, str(workdir), tag], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for tag in ("race_a", "race_b")]
    for p in procs:
        if _pipe(p.stdout).readline().strip() != "LOADED":
            for q in procs:
                q.kill()
            raise RuntimeError("loaded writer failed to start: " + (_pipe(p.stderr).read() or ""))
    for p in procs:  # "go" to both, as close together as two writes can be
        _pipe(p.stdin).write("go\n")
        _pipe(p.stdin).flush()
    outs = [p.communicate() for p in procs]
    result = RaceResult(codes=(procs[0].returncode, procs[1].returncode), stderr=(outs[0][1], outs[1][1]))
    return _judge_race(result, workdir / "10_kazari", old)


@register_family("concurrent-writers")
def concurrent_writers(trials: int, workdir: Path, rng: random.Random, n: int = 300) -> dict[str, int]:
    template = workdir / "template-race"
    if template.exists():
        shutil.rmtree(template)
    old = make_caption_dataset(template, n)
    counts: Counter[str] = Counter()
    for i in range(trials):
        if i % 2:
            r = loaded_race_trial(template, workdir / "race", old)
            counts["loaded_trials"] += 1
        else:
            # Short waits make the second CLI edit refuse sometimes, long ones make it wait: both are tested.
            r = race_trial(template, workdir / "race", old, delay=rng.uniform(0, 0.6),
                           lock_wait=rng.choice([0.0, 0.3, 5.0]))
            counts["cli_trials"] += 1
        counts["trials"] += 1
        counts["lost_updates"] += r.lost_updates
        counts["torn_files"] += len(r.torn)
        counts["refused_writers"] += r.refused
        counts["both_saved"] += r.codes == (0, 0)
    return dict(counts)


# ---- disk full during a caption save -------------------------------------------------------------
# The trial runs inside `unshare --user --map-root-user --mount`: a private mount namespace where an
# unprivileged process may mount a small tmpfs that only it sees and that vanishes with it, so
# nothing on the machine is touched. A filler file leaves a random amount of space free, the save
# runs out of it at some step, then the filler is removed and the dataset opened again.
_DISK_FULL_CHILD = """
import json, os, random, sys
from pathlib import Path
from tagging import reliability as r
from tagging.dataset import Dataset
from tagging.edits import AddTag
from tagging.errors import UserError
mnt, trials, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
out = {"trials": 0, "save_failed": 0, "torn_files": 0, "un_undoable": 0, "traceback_errors": 0}
for i in range(trials):
    root = mnt / "ds"
    old = r.make_caption_dataset(root, 40)
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    keep = rng.randrange(0, 160) * 4096
    filler = mnt / "filler"
    try:
        with open(filler, "wb") as fh:
            fh.write(b"\\0" * max(0, free - keep))
    except OSError:
        pass
    ds = Dataset.open(root)
    ds.apply(AddTag(r.NEW_TAG))
    try:
        ds.save()
    except UserError:
        out["save_failed"] += 1
    except Exception:
        out["traceback_errors"] += 1
    filler.unlink()
    v = r.judge_after_kill(root, old, "edit")
    out["trials"] += 1
    out["torn_files"] += len(v.torn)
    out["un_undoable"] += v.un_undoable
    import shutil
    shutil.rmtree(root)
print(json.dumps(out))
"""


def disk_full_supported() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@register_family("disk-full")
def disk_full(trials: int, workdir: Path, rng: random.Random) -> dict[str, int]:
    if not disk_full_supported():
        return {"trials": 0, "skipped_no_unshare": 1}
    import json

    mnt = workdir / "tmpfs"
    mnt.mkdir(parents=True, exist_ok=True)
    script = (f"mount -t tmpfs -o size=1m kazari-bench {mnt} && exec {sys.executable} -c \"$0\" "
              f"{mnt} {trials} {rng.randrange(2**31)}")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, _DISK_FULL_CHILD],
                          capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise RuntimeError(f"disk-full child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
