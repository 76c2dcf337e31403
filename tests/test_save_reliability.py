"""Kill a saving process at random moments: every caption must be old or new, never torn."""

import os
import random
from pathlib import Path

import pytest

from tagging.reliability import calibrate, make_caption_dataset, run_trial

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses SIGKILL")


def test_kill_while_saving_never_tears_a_caption(tmp_path: Path) -> None:
    template = tmp_path / "template"
    old = make_caption_dataset(template, 120)
    save_time = calibrate(template, tmp_path / "calibrate")
    rng = random.Random(1234)
    results = [run_trial(template, tmp_path / f"trial{i}", old, save_time * 1.1, rng) for i in range(5)]
    for r in results:
        assert r.bad == []
        assert r.old + r.new == len(old)
    # The trials must really interrupt saves, or the test proves nothing.
    assert any(r.killed_during_save for r in results)


def test_atomic_write_many_writes_all_and_leaves_no_temp_files(tmp_path: Path) -> None:
    from tagging.atomic import atomic_write_many

    files = [(tmp_path / f"{i}.txt", f"content {i}".encode()) for i in range(40)]
    files.append((tmp_path / "0.txt", b"last wins"))
    atomic_write_many(files)
    assert (tmp_path / "0.txt").read_bytes() == b"last wins"
    assert (tmp_path / "39.txt").read_bytes() == b"content 39"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.txt" for i in range(40))


def test_atomic_write_many_failure_leaves_old_files_and_no_temp_files(tmp_path: Path) -> None:
    from tagging.atomic import atomic_write_many

    (tmp_path / "a.txt").write_bytes(b"old")
    with pytest.raises(OSError):
        atomic_write_many([(tmp_path / "a.txt", b"new")] * 1 + [(tmp_path / "missing_dir" / f"{i}.txt", b"x") for i in range(12)])
    assert (tmp_path / "a.txt").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_gives_new_files_the_umask_mode_and_keeps_existing_modes(tmp_path) -> None:
    import os
    import stat

    from tagging.atomic import atomic_write_bytes

    old = os.umask(0o022)
    try:
        import importlib

        import tagging.atomic as atomic

        importlib.reload(atomic)
        fresh = tmp_path / "fresh.safetensors"
        atomic.atomic_write_bytes(fresh, b"x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # readable by A1111 running as another user
        kept = tmp_path / "kept.txt"
        kept.write_text("a")
        kept.chmod(0o600)
        atomic_write_bytes(kept, b"b")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert kept.read_bytes() == b"b"
    finally:
        os.umask(old)
        importlib.reload(atomic)
