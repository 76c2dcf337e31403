"""Issue 11, trainer side: one run per output folder, TERM/HUP stop cleanly and resume, resume checks
settings, killed saves leave nothing behind, damaged files and full disks give clear errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_support import make_config, tiny_dataset, tiny_model

from trainer import events as ev
from trainer.lora import read_lora_file
from trainer.output_lock import LOCK_NAME, OutputBusy, OutputLock
from trainer.resume import clean_stale_state_temps, find_resume_state, resolve_state_folder
from trainer.run import TrainingRun

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliab")
    return {"model": tiny_model(root), "data": tiny_dataset(root / "data", n=2, repeats=1), "root": root}


def _cfg(env, out: Path, **sections):
    sections.setdefault("training", {})
    sections["training"] = {"max_train_epochs": 3, "train_batch_size": 1, **sections["training"]}
    sections.setdefault("output", {})
    sections["output"] = {"save_precision": "float", **sections["output"]}
    return make_config(env["model"], env["data"], out, **sections)


def _run(cfg, **kw):
    events: list = []
    result = TrainingRun(cfg, on_event=events.append, **kw).run()
    return result, events


@pytest.fixture(scope="module")
def stopped(env) -> Path:
    """The output folder of a run stopped after its first step (holds t-state at step 1)."""
    out = env["root"] / "stopped"
    run = TrainingRun(_cfg(env, out))
    run._on_event = lambda e: run.request_stop() if isinstance(e, ev.StepEvent) and e.step == 1 else None
    result = run.run()
    assert isinstance(result, ev.Finished) and result.stopped_early and result.state_dir == out / "t-state"
    return out


def _copy_state(stopped: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(stopped, out)
    return out


# ----- hole 3: one run per output folder -----------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_output_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    import socket

    with OutputLock(tmp_path):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(OutputBusy, match=f"pid {os.getpid()}"):
            OutputLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()  # released
    # A lock left by a killed process on this host is stale.
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": 0}))
    with OutputLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_second_run_into_a_locked_output_folder_refuses_and_touches_nothing(env, tmp_path: Path, capsys) -> None:
    from trainer.config import render_toml
    from tui.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "t.safetensors").write_bytes(b"an earlier run's file")
    cfg = _cfg(env, out)
    with OutputLock(out):  # stands for run A, alive and writing
        result, _ = _run(cfg)
        assert isinstance(result, ev.Failed) and result.kind == "user"
        assert f"pid {os.getpid()}" in result.message and str(out) in result.message
        path = tmp_path / "train.toml"
        path.write_text(render_toml(cfg), encoding="utf-8")
        assert main(["train", str(path), "--plain"]) == 2
        assert "Another kazari training run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["t.safetensors"]  # nothing moved aside or written
    assert (out / "t.safetensors").read_bytes() == b"an earlier run's file"


# ----- hole 7: killed state saves ---------------------------------------------------------------------
def test_stale_temp_state_folders_are_removed_only_ours(tmp_path: Path) -> None:
    ours = tmp_path / ".t-state.k2j4_x.tmp"
    ours.mkdir()
    (ours / "lora.safetensors").write_bytes(b"x" * 1000)
    (ours / "state.pt").write_bytes(b"half")
    foreign = tmp_path / ".t-state.abc.tmp"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a state file")
    other = tmp_path / ".something.tmp"
    other.mkdir()
    assert clean_stale_state_temps(tmp_path) == [ours]
    assert not ours.exists() and foreign.exists() and other.exists()


def test_a_run_cleans_the_temp_state_of_a_killed_save(env, stopped: Path, tmp_path: Path) -> None:
    out = _copy_state(stopped, tmp_path)
    temp = out / ".t-state.zz91ab.tmp"  # a kill during save_state leaves a full-size temp folder
    shutil.copytree(out / "t-state", temp)
    result, events = _run(_cfg(env, out), resume_from=out / "t-state")
    assert isinstance(result, ev.Finished)
    assert not temp.exists()
    assert any(isinstance(e, ev.TrainWarning) and temp.name in e.message for e in events)


# ----- hole 4: TERM / HUP, the newest state, bare --resume ---------------------------------------------
def test_sigterm_saves_a_state_and_bare_resume_finishes_identically(env, tmp_path: Path, capsys,
                                                                      monkeypatch) -> None:
    from trainer.config import render_toml
    from tui.cli import main

    # Bit-identical needs the same float reduction order: one thread here, in the child, and in
    # the in-process resume (kazari's thread plan reads KAZARI_THREADS).
    monkeypatch.setenv("KAZARI_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _sigterm_then_resume(env, tmp_path, capsys, render_toml, main)
    finally:
        torch.set_num_threads(threads)


def _sigterm_then_resume(env, tmp_path: Path, capsys, render_toml, main) -> None:
    ref, _ = _run(_cfg(env, tmp_path / "ref"))
    assert isinstance(ref, ev.Finished) and ref.step == 6

    out = tmp_path / "out"
    cfg = _cfg(env, out)
    path = tmp_path / "train.toml"
    path.write_text(render_toml(cfg), encoding="utf-8")
    child_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = ("import torch, sys; torch.set_num_threads(1); from tui.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, "train", str(path), "--plain"], stderr=subprocess.PIPE,
                            text=True, env=child_env, cwd=tmp_path)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # SIGTERM once the first epoch is done (as `docker stop` would)
        lines.append(line)
        if line.startswith("epoch 1/3"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM, "".join(lines) + rest
    assert "SIGTERM: stopping after this step" in rest and "Traceback" not in rest
    state = out / "t-state"
    assert (state / "state.pt").is_file() and not (out / LOCK_NAME).exists()
    found = find_resume_state(cfg)
    assert found is not None and found.path == state and found.step >= 2

    # A later kill caught between the two renames of the next save: only t-state.old is left.
    state.rename(out / "t-state.old")
    assert resolve_state_folder(state) == out / "t-state.old"
    assert find_resume_state(cfg).path == out / "t-state.old"
    assert main(["train", str(path), "--plain", "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"resuming from {out / 't-state.old'}" in err
    a, b = read_lora_file(out / "t.safetensors")[0], read_lora_file(ref.final_path)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert find_resume_state(cfg) is None  # finished: nothing to resume
    assert main(["train", str(path), "--plain", "--resume"]) == 2
    assert "no unfinished training state" in capsys.readouterr().err


def test_the_newest_state_is_kept_by_default_while_the_run_can_resume(env, tmp_path: Path) -> None:
    class Killed(Exception):
        pass

    def die(e) -> None:
        if isinstance(e, ev.StepEvent) and e.step == 5:
            raise Killed()

    cfg = _cfg(env, tmp_path / "out")  # save_state = false: no per-epoch states, but the newest one
    with pytest.raises(Killed):
        TrainingRun(cfg, on_event=die).run()
    found = find_resume_state(cfg)
    assert found is not None and found.path == tmp_path / "out" / "t-state" and found.step == 4
    assert not list((tmp_path / "out").glob("t-0*-state"))
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released even on a crash


# ----- hole 5: changed settings at resume ---------------------------------------------------------------
def test_resume_into_another_optimizer_type_is_refused(env, stopped: Path, tmp_path: Path) -> None:
    out = _copy_state(stopped, tmp_path)
    cfg = _cfg(env, out, optimizer={"optimizer_type": "SGD"})
    result, _ = _run(cfg, resume_from=out / "t-state")
    assert isinstance(result, ev.Failed) and result.kind == "user"
    assert 'optimizer_type = "AdamW"' in result.message and '"SGD"' in result.message
    assert "without --resume" in result.message


def test_resume_with_a_changed_lr_warns_and_the_new_lr_applies(env, stopped: Path, tmp_path: Path) -> None:
    out = _copy_state(stopped, tmp_path)
    cfg = _cfg(env, out, optimizer={"unet_lr": 5e-4, "optimizer_args": {"weight_decay": 0.5}})
    result, events = _run(cfg, resume_from=out / "t-state")
    assert isinstance(result, ev.Finished)
    warnings = [e.message for e in events if isinstance(e, ev.TrainWarning)]
    assert any("unet_lr 0.001 -> 0.0005" in w and "new value applies" in w for w in warnings), warnings
    assert any("optimizer_args changed" in w for w in warnings), warnings
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    assert steps and all(s.lrs["unet"] == pytest.approx(5e-4) for s in steps)


@pytest.mark.parametrize("recorded", [True, False], ids=["settings-recorded", "older-state"])
def test_resume_with_another_network_shape_names_the_resume_folder(env, stopped: Path, tmp_path: Path,
                                                                  recorded: bool) -> None:
    out = _copy_state(stopped, tmp_path)
    if not recorded:  # a state written before kazari recorded its settings
        info = json.loads((out / "t-state" / "state.json").read_text())
        info.pop("settings")
        (out / "t-state" / "state.json").write_text(json.dumps(info))
    result, _ = _run(_cfg(env, out, network={"network_dim": 8, "network_alpha": 8}), resume_from=out / "t-state")
    assert isinstance(result, ev.Failed) and result.kind == "user"
    assert str(out / "t-state") in result.message and "network shape" in result.message
    assert "network_weights" not in result.message


# ----- damaged files, full disks ---------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_state_lora_is_a_clear_error(env, stopped: Path, tmp_path: Path, capsys, damage: str) -> None:
    from trainer.config import render_toml
    from tui.cli import main

    out = _copy_state(stopped, tmp_path)
    lora = out / "t-state" / "lora.safetensors"
    data = lora.read_bytes()
    lora.write_bytes(b"\x00garbage" * 10 if damage == "garbage" else data[: len(data) // 2])
    path = tmp_path / "train.toml"
    path.write_text(render_toml(_cfg(env, out)), encoding="utf-8")
    assert main(["train", str(path), "--plain", "--resume", str(out / "t-state")]) == 2
    err = capsys.readouterr().err
    assert str(lora) in err and "damaged or truncated" in err and "Traceback" not in err


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_network_weights_are_a_clear_error(env, stopped: Path, tmp_path: Path, capsys, damage: str) -> None:
    from trainer.config import render_toml
    from tui.cli import main

    weights = tmp_path / "start.safetensors"
    data = (stopped / "t-step00000001.safetensors").read_bytes()
    weights.write_bytes(b"\x00garbage" * 10 if damage == "garbage" else data[: len(data) // 2])
    path = tmp_path / "train.toml"
    path.write_text(render_toml(_cfg(env, tmp_path / "out", network={"network_weights": str(weights)})),
                    encoding="utf-8")
    assert main(["train", str(path), "--plain"]) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and "Traceback" not in err


def test_disk_full_while_writing_the_state_is_a_clear_failure(env, tmp_path: Path, monkeypatch) -> None:
    import trainer.state as state_mod

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(state_mod.torch, "save", full)
    result, _ = _run(_cfg(env, tmp_path / "out"))
    assert isinstance(result, ev.Failed) and result.kind == "disk" and "disk is full" in result.message
    assert "t-000001.safetensors" in result.message
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp, lock released


def test_logs_on_a_full_disk_do_not_break_the_run_or_its_error(env, tmp_path: Path, monkeypatch) -> None:
    import builtins

    import trainer.run as run_mod

    class FullFile:
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = builtins.open

    def fake_open(file, mode="r", *a, **k):
        if str(file).endswith(".jsonl"):
            return FullFile()
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(run_mod, "open", fake_open, raising=False)
    cfg = _cfg(env, tmp_path / "out", training={"max_train_epochs": 1}, logging={"logging_dir": str(tmp_path / "logs")})
    result, events = _run(cfg)
    assert isinstance(result, ev.Finished)
    assert any(isinstance(e, ev.TrainWarning) and "event log" in e.message for e in events)
