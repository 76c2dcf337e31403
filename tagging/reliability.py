"""Kill-while-saving check shared by the reliability test and the bench.

A child process opens a dataset, edits every caption and saves; the parent kills it with
SIGKILL at a random moment during the save, then verifies that every caption holds either its
old or its new content (never torn or empty) and that the dataset reopens and saves cleanly.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NEW_TAG = "reliability_" + "x" * 200  # long, so a torn write cannot look like the old content

_CHILD = """
import sys
from tagging.dataset import Dataset
from tagging.edits import AddTag
ds = Dataset.open(sys.argv[1])
ds.apply(AddTag(sys.argv[2]))
print("SAVING", flush=True)
ds.save()
print("DONE", flush=True)
"""


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


def _start_saving_child(template: Path, workdir: Path) -> subprocess.Popen[str]:
    """A fresh copy of ``template`` in ``workdir`` and a child process that saves an edit to it."""
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(template, workdir)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(workdir), NEW_TAG], stdout=subprocess.PIPE, text=True, env=_env()
    )
    assert proc.stdout is not None
    return proc


def _with_new_tag(caption: bytes) -> bytes:
    return caption.rstrip(b"\n") + b", " + NEW_TAG.encode() + b"\n"


def run_trial(template: Path, workdir: Path, old: dict[str, bytes], max_delay: float, rng: random.Random) -> TrialResult:
    """Copy ``template``, start a saving child, SIGKILL it after a random delay, check every caption."""
    from tagging.dataset import Dataset

    proc = _start_saving_child(template, workdir)
    line = proc.stdout.readline()
    if line.strip() != "SAVING":
        proc.kill()
        raise RuntimeError(f"saving child failed to start: {line!r}")
    time.sleep(rng.uniform(0, max_delay))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL and "DONE" not in (proc.stdout.read() or "")
    proc.stdout.close()
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


def calibrate(template: Path, workdir: Path) -> float:
    """Seconds from the child's SAVING line to its exit, for picking kill delays."""
    proc = _start_saving_child(template, workdir)
    proc.stdout.readline()
    start = time.perf_counter()
    proc.stdout.read()
    proc.wait()
    proc.stdout.close()
    return time.perf_counter() - start
