"""`kazari train CONFIG.toml [--resume DIR]`: trains end to end, Ctrl-C stops and saves, resume works."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from test_train_support import make_config, tiny_dataset, tiny_model

from trainer.config import render_toml
from tui.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    return {"model": tiny_model(root), "data": tiny_dataset(root / "data", n=2, repeats=1)}


def _write(env, tmp_path: Path, **sections) -> Path:
    cfg = make_config(env["model"], env["data"], tmp_path / "out", **sections)
    path = tmp_path / "train.toml"
    path.write_text(render_toml(cfg), encoding="utf-8")
    return path


def test_train_command_trains_and_reports(env, tmp_path: Path, capsys) -> None:
    path = _write(env, tmp_path, training={"max_train_epochs": 2, "train_batch_size": 1})
    assert main(["train", str(path), "--plain"]) == 0
    err = capsys.readouterr().err
    assert "2 epochs x 2 steps = 4 steps on cpu" in err
    assert "epoch 2/2: step 4" in err and "saved final" in err and "done in" in err
    assert (tmp_path / "out" / "t.safetensors").is_file()


def test_ctrl_c_stops_saves_state_and_resume_finishes(env, tmp_path: Path, capsys, monkeypatch) -> None:
    path = _write(env, tmp_path, training={"max_train_epochs": 3, "train_batch_size": 1})
    import trainer.run as run_mod

    real = run_mod.TrainingRun.emit
    sent = {"done": False}

    def emit(self, event):  # deliver a real SIGINT to ourselves after the second step
        real(self, event)
        if type(event).__name__ == "StepEvent" and event.step == 2 and not sent["done"]:
            sent["done"] = True
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(run_mod.TrainingRun, "emit", emit)
    assert threading.current_thread() is threading.main_thread()
    assert main(["train", str(path), "--plain"]) == 130
    err = capsys.readouterr().err
    state = tmp_path / "out" / "t-state"
    assert "stopping after this step" in err and f"--resume {state}" in err
    assert (state / "state.pt").is_file() and (tmp_path / "out" / "t-step00000002.safetensors").is_file()
    monkeypatch.setattr(run_mod.TrainingRun, "emit", real)
    assert main(["train", str(path), "--plain", "--resume", str(state)]) == 0
    err = capsys.readouterr().err
    assert "resuming at step 2" in err and (tmp_path / "out" / "t.safetensors").is_file()


def test_ctrl_c_while_caching_says_nothing_was_saved(env, tmp_path: Path, capsys, monkeypatch) -> None:
    path = _write(env, tmp_path)
    import trainer.run as run_mod

    real = run_mod.TrainingRun.emit

    def emit(self, event):  # Ctrl-C during latent caching: the run ends before its first step
        real(self, event)
        if type(event).__name__ == "CachingProgress" and event.done == 0:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(run_mod.TrainingRun, "emit", emit)
    assert main(["train", str(path), "--plain"]) == 130
    err = capsys.readouterr().err
    assert "nothing was saved" in err and "--resume None" not in err


def test_bad_config_and_bad_resume_are_one_paragraph_errors(env, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[training]\nmax_train_epochs = "ten"\n', encoding="utf-8")
    assert main(["train", str(bad)]) == 2
    assert "max_train_epochs" in capsys.readouterr().err
    good = _write(env, tmp_path)
    assert main(["train", str(good), "--resume", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_quick_test_preset_from_config_new_trains_on_the_synthetic_dataset(env, tmp_path: Path, capsys) -> None:
    from tagging.synthetic import make_character_dataset

    data = make_character_dataset(tmp_path / "data", n_images=3, repeats=1, size=64)
    path = tmp_path / "quick.toml"
    sets = [f"model.pretrained_model={env['model']}", f"dataset.train_data_dir={data}",
            f"output.output_dir={tmp_path / 'out'}", "output.output_name=quick"]
    argv = ["config", "new", "--preset", "quick-test", "-o", str(path)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0, capsys.readouterr()
    assert main(["train", str(path), "--plain", "--device", "cpu"]) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "quick.safetensors").is_file()
    assert (tmp_path / "out" / "quick-000001.safetensors").is_file()
