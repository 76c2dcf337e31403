"""Exact resume on CPU: a stopped or killed run, resumed from its state, ends with the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_train_support import make_config, tiny_dataset, tiny_model

from tagging.errors import UserError
from trainer import events as ev
from trainer.lora import read_lora_file
from trainer.run import TrainingRun
from trainer.state import load_state

pytestmark = pytest.mark.slow


class Killed(Exception):
    """Stands for the process dying (power cut, kill -9) in the middle of a step."""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    return {"model": tiny_model(root), "data": tiny_dataset(root / "data", n=4, repeats=1)}


def _cfg(env, out: Path):
    # Everything that consumes randomness is on: caption shuffle + tag dropout, flip, noise offset, min-SNR,
    # a warmup + cosine schedule and both U-Net and text-encoder LoRA.
    return make_config(env["model"], env["data"], out,
                       dataset={"flip_aug": True, "caption_tag_dropout_rate": 0.2},
                       optimizer={"lr_scheduler": "cosine", "lr_warmup_steps": 2},
                       training={"max_train_epochs": 3, "noise_offset": 0.05, "min_snr_gamma": 5.0},
                       output={"save_precision": "float", "save_state": True})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_lora_file(path)[0]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[0]}"


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ref")
    result = TrainingRun(_cfg(env, out)).run()
    assert isinstance(result, ev.Finished) and result.step == 6
    return _weights(result.final_path)


def test_stop_mid_epoch_then_resume_gives_the_same_weights(env, reference, tmp_path: Path) -> None:
    cfg = _cfg(env, tmp_path / "out")
    run = TrainingRun(cfg)
    run._on_event = lambda e: run.request_stop() if isinstance(e, ev.StepEvent) and e.step == 3 else None
    stopped = run.run()
    assert isinstance(stopped, ev.Finished) and stopped.stopped_early and stopped.step == 3
    state = load_state(stopped.state_dir)
    assert (state.counters.step, state.counters.epoch, state.counters.batch_in_epoch) == (3, 1, 1)
    assert len(state.counters.data_order) == 2  # the batches of epoch 2, the one in progress

    events: list = []
    resumed = TrainingRun(cfg, on_event=events.append, resume_from=stopped.state_dir).run()
    assert isinstance(resumed, ev.Finished) and not resumed.stopped_early and resumed.step == 6
    started = events[0]
    assert isinstance(started, ev.RunStarted) and (started.start_step, started.start_epoch) == (3, 1)
    assert [e.step for e in events if isinstance(e, ev.StepEvent)] == [4, 5, 6]
    _assert_same(_weights(resumed.final_path), reference)


def test_kill_then_resume_from_last_epoch_state_gives_the_same_weights(env, reference, tmp_path: Path) -> None:
    cfg = _cfg(env, tmp_path / "out")

    def die(e) -> None:
        if isinstance(e, ev.StepEvent) and e.step == 5:
            raise Killed()

    with pytest.raises(Killed):
        TrainingRun(cfg, on_event=die).run()
    state_dir = tmp_path / "out" / "t-000002-state"
    assert (state_dir / "state.pt").is_file() and not (tmp_path / "out" / "t.safetensors").exists()
    resumed = TrainingRun(cfg, resume_from=state_dir).run()
    assert isinstance(resumed, ev.Finished) and resumed.step == 6
    _assert_same(_weights(resumed.final_path), reference)


def test_resume_from_a_folder_that_is_not_a_state(env, tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    result = TrainingRun(_cfg(env, tmp_path / "out"), resume_from=tmp_path / "nothing").run()
    assert isinstance(result, ev.Failed) and result.kind == "user"
    assert "not a kazari training state" in result.message
    with pytest.raises(UserError):
        load_state(tmp_path / "nothing")


def test_state_save_is_atomic_and_survives_a_kill_between_renames(tmp_path: Path) -> None:
    from trainer.state import Counters, capture_rng, save_state

    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(lin.parameters())
    folder = tmp_path / "t-state"
    save_state(folder, lora_state=lin.state_dict(), optimizer=opt, scheduler=None, scaler=None,
               counters=Counters(step=1), rng=capture_rng({}))
    save_state(folder, lora_state=lin.state_dict(), optimizer=opt, scheduler=None, scaler=None,
               counters=Counters(step=2), rng=capture_rng({}))
    assert load_state(folder).counters.step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t-state"]  # no temp or .old leftovers
    folder.rename(tmp_path / "t-state.old")  # as if killed after the first rename of a third save
    assert load_state(folder).counters.step == 2
