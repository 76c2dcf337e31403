"""The training run end to end on CPU with the tiny SD1 model: events, files, metadata, failures."""

from __future__ import annotations

import errno
import json
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from test_train_support import make_config, tiny_dataset, tiny_model

import trainer.run as run_mod
from trainer import events as ev
from trainer.run import TrainingRun, _oom_message

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    return {"model": tiny_model(root), "data": tiny_dataset(root / "data", n=4, repeats=1), "root": root}


def _run(cfg, **kw) -> tuple[object, list]:
    events: list = []
    run = TrainingRun(cfg, on_event=events.append, **kw)
    result = run.run()
    return result, events


def test_events_files_and_metadata(env, tmp_path: Path) -> None:
    cfg = make_config(env["model"], env["data"], tmp_path / "out",
                      output={"save_precision": "float"}, dataset={"flip_aug": True},
                      logging={"logging_dir": str(tmp_path / "logs")})
    result, events = _run(cfg)
    (log,) = (tmp_path / "logs").glob("t_*.jsonl")
    logged = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in logged if r["event"] == "StepEvent"] == [1, 2, 3, 4]
    assert logged[0]["event"] == "RunStarted" and logged[-1]["event"] == "Finished"
    assert isinstance(result, ev.Finished), getattr(result, "message", result)
    kinds = [type(e).__name__ for e in events]
    # Order: started, caching, steps..., epoch end, checkpoint, steps..., epoch end, final, finished.
    assert kinds[0] == "RunStarted" and kinds[-1] == "Finished"
    assert kinds.index("CachingProgress") < kinds.index("StepEvent")
    started = events[0]
    assert (started.total_steps, started.steps_per_epoch, started.total_epochs) == (4, 2, 2)
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    assert [s.step for s in steps] == [1, 2, 3, 4] and [s.epoch for s in steps] == [1, 1, 2, 2]
    assert all(s.total_steps == 4 and s.loss > 0 and s.lrs == {"text_encoder": 1e-4, "unet": 1e-3} for s in steps)
    assert steps[-1].smoothed_loss == pytest.approx(sum(s.loss for s in steps) / 4)
    assert all(s.images_per_s > 0 and s.gpu_mem_gb is None for s in steps)
    ends = [i for i, k in enumerate(kinds) if k == "EpochEnd"]
    step_idx = [i for i, k in enumerate(kinds) if k == "StepEvent"]
    assert step_idx[1] < ends[0] < step_idx[2] and step_idx[3] < ends[1]
    saved = [e for e in events if isinstance(e, ev.CheckpointSaved)]
    assert [(s.path.name, s.kind, s.epoch, s.step) for s in saved] == [
        ("t-000001.safetensors", "epoch", 1, 2), ("t.safetensors", "final", 2, 4)]
    assert result.final_path == tmp_path / "out" / "t.safetensors" and result.step == 4

    # The file: kohya keys for U-Net (192) and text encoder (72) modules, fp32 as asked, ss_* metadata.
    with safe_open(str(result.final_path), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
        dtypes = {f.get_tensor(k).dtype for k in keys}
    names = {k.split(".")[0] for k in keys}
    assert sum(n.startswith("lora_unet_") for n in names) == 192
    assert sum(n.startswith("lora_te_") for n in names) == 72
    assert dtypes == {torch.float32}
    expect = {
        "ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "4.0",
        "ss_steps": "4", "ss_epoch": "2", "ss_num_epochs": "2", "ss_max_train_steps": "4",
        "ss_num_batches_per_epoch": "2", "ss_seed": "1234", "ss_clip_skip": "2", "ss_resolution": "(64, 64)",
        "ss_learning_rate": "0.001", "ss_unet_lr": "0.001", "ss_text_encoder_lr": "0.0001",
        "ss_lr_scheduler": "constant", "ss_mixed_precision": "no", "ss_num_train_images": "4",
        "ss_num_reg_images": "0", "ss_flip_aug": "True", "ss_shuffle_caption": "True", "ss_keep_tokens": "1",
        "ss_cache_latents": "True", "ss_sd_model_name": "tiny-model", "ss_base_model_version": "sd_v1",
        "ss_v2": "False", "ss_output_name": "t", "ss_max_token_length": "75", "ss_batch_size_per_device": "2",
        "modelspec.architecture": "stable-diffusion-v1/lora", "modelspec.encoder_layer": "2",
    }
    assert {k: meta.get(k) for k in expect} == expect
    from importlib.metadata import version

    assert meta["modelspec.implementation_version"] == version("diffusers")
    assert meta["ss_optimizer"].startswith("torch.optim.adamw.AdamW")
    assert json.loads(meta["ss_dataset_dirs"]) == {"1_kazari": {"n_repeats": 1, "img_count": 4}}
    freq = json.loads(meta["ss_tag_frequency"])["1_kazari"]
    assert freq["kazari"] == 4 and freq["pink hair"] == 4 and freq["tag0"] == 1
    assert json.loads(meta["ss_bucket_info"])["buckets"]["0"] == {"resolution": [64, 64], "count": 4}
    from trainer.lora import read_lora_file, safetensors_hashes

    tensors, _ = read_lora_file(result.final_path)
    assert (meta["sshs_model_hash"], meta["sshs_legacy_hash"]) == safetensors_hashes(tensors, meta)
    with safe_open(str(tmp_path / "out" / "t-000001.safetensors"), "pt") as f:
        assert (f.metadata()["ss_epoch"], f.metadata()["ss_steps"]) == ("1", "2")


def _fixed_eval_loss(cfg, lora_path: Path | None) -> float:
    """Loss of the tiny model on the dataset's images with fixed noise and timesteps."""
    from trainer.data import DataPipeline, encode_latents, load_pixels
    from trainer.lora import LoRANetwork
    from trainer.models import load_sd1
    from trainer.step import NoiseSchedule, diffusion_loss
    from trainer.text_encoding import encode_prompts

    bundle = load_sd1(cfg.model.pretrained_model)
    if lora_path is not None:
        LoRANetwork.from_weights(lora_path, bundle.unet, bundle.text_encoder)
    data = DataPipeline.from_config(cfg)
    data.reload_captions()
    g = torch.Generator().manual_seed(0)
    px = torch.stack([load_pixels(im.path, im.bucket) for im in data.images])
    with torch.no_grad():
        lat = encode_latents(bundle.vae, px, g)
        cond = encode_prompts(bundle.tokenizer, bundle.text_encoder,
                              [", ".join(data.raw_tags(i)) for i in range(len(data.images))], clip_skip=2)
        sched = NoiseSchedule.from_scheduler(bundle.noise_scheduler, "cpu")
        g.manual_seed(1)
        return sum(float(diffusion_loss(bundle.unet, lat, cond, sched, generator=g)) for _ in range(8)) / 8


def test_loss_goes_down_when_overfitting(env, tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", n=2, repeats=4)
    cfg = make_config(env["model"], data, tmp_path / "out",
                      dataset={"shuffle_caption": False},
                      network={"network_dim": 8, "network_alpha": 8, "train_unet_only": True},
                      optimizer={"learning_rate": 1e-2, "unet_lr": 1e-2},
                      training={"max_train_epochs": 4, "train_batch_size": 2},
                      output={"save_every_n_epochs": 0, "save_precision": "float"})
    result, events = _run(cfg)
    assert isinstance(result, ev.Finished)
    before = _fixed_eval_loss(cfg, None)
    after = _fixed_eval_loss(cfg, result.final_path)
    assert after < 0.85 * before, (before, after)  # measured: 1.12 -> 0.86 in 16 steps


def test_requests_pause_save_sample_stop(env, tmp_path: Path) -> None:
    cfg = make_config(env["model"], env["data"], tmp_path / "out",
                      training={"max_train_epochs": 3},
                      sample={"sample_prompts": ["kazari, 1girl --w 64 --h 64 --s 2 --d 7 --l 1"],
                              "sample_every_n_epochs": 1})
    events: list = []
    run = TrainingRun(cfg, on_event=events.append)
    paused_at: list[float] = []

    def on_event(e) -> None:
        events.append(e)
        if isinstance(e, ev.StepEvent) and e.step == 1:
            run.request_save()
            run.request_sample()
            run.pause()
            paused_at.append(time.perf_counter())
        if isinstance(e, ev.StepEvent) and e.step == 3:
            run.request_stop()

    run._on_event = on_event
    thread = threading.Thread(target=run.run, daemon=True)
    thread.start()
    try:
        # The loop parks right after step 1 and cannot step while parked: no timing involved.
        assert run.parked.wait(timeout=120), "the paused run never parked"
        n_paused = sum(isinstance(e, ev.StepEvent) for e in events)
        assert paused_at and run.paused and n_paused == 1, "a paused run must not take more steps"
        run.resume()
        thread.join(timeout=120)
    finally:
        run.request_stop()  # never leave a paused thread behind, whatever failed
    assert not thread.is_alive()
    result = run.result
    assert isinstance(result, ev.Finished) and result.stopped_early and result.step == 3
    out = tmp_path / "out"
    assert (out / "t-step00000001.safetensors").is_file()  # save now
    samples = [e for e in events if isinstance(e, ev.SampleReady)]
    assert [(s.step, s.epoch) for s in samples] == [(1, 1), (2, 1)]  # "sample now", then epoch 1's
    assert all(s.path.is_file() and s.image.size == (64, 64) for s in samples)
    assert samples[1].path.name.startswith("t_e000001_00_") and "parameters" in samples[1].image.info
    # Stop = resumable state + the weights so far; not the final file.
    assert result.state_dir == out / "t-state" and (out / "t-state" / "state.pt").is_file()
    assert result.final_path == out / "t-step00000003.safetensors" and result.final_path.is_file()
    assert not (out / "t.safetensors").exists()


def test_nan_loss_stops_with_clear_message_and_keeps_last_checkpoint(env, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = run_mod.diffusion_loss

    def nan_on_third(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(run_mod, "diffusion_loss", nan_on_third)
    cfg = make_config(env["model"], env["data"], tmp_path / "out")
    result, events = _run(cfg)
    assert isinstance(result, ev.Failed) and result.kind == "nan"
    assert "NaN" in result.message and "learning rate" in result.message and "step 3" in result.message
    assert result.last_checkpoint == tmp_path / "out" / "t-000001.safetensors"
    assert result.last_checkpoint.is_file() and not (tmp_path / "out" / "t.safetensors").exists()
    with safe_open(str(result.last_checkpoint), "pt") as f:
        names = f.keys()
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in names)


def test_disk_full_at_save_keeps_previous_checkpoint(env, tmp_path: Path, monkeypatch) -> None:
    import trainer.lora as lora_mod

    real = lora_mod.atomic_write_bytes
    calls = {"n": 0}

    def full_disk(path, data):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(lora_mod, "atomic_write_bytes", full_disk)
    cfg = make_config(env["model"], env["data"], tmp_path / "out")
    result, _ = _run(cfg)
    assert isinstance(result, ev.Failed) and result.kind == "disk"
    assert "disk is full" in result.message and "t-000001.safetensors" in result.message
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["t-000001.safetensors"]


def test_oom_is_reported_with_settings_to_lower(env, tmp_path: Path, monkeypatch) -> None:
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(run_mod, "diffusion_loss", oom)
    cfg = make_config(env["model"], env["data"], tmp_path / "out")
    result, _ = _run(cfg)
    assert isinstance(result, ev.Failed) and result.kind == "oom"
    for setting in ("train_batch_size = 2", "gradient_checkpointing = true", "max_bucket_reso", "network_dim"):
        assert setting in result.message
    assert "gradient_checkpointing" not in _oom_message(cfg.with_value("training.gradient_checkpointing", True))


def test_gradient_accumulation_counts_optimizer_steps(env, tmp_path: Path) -> None:
    cfg = make_config(env["model"], env["data"], tmp_path / "out",
                      training={"max_train_epochs": 1, "train_batch_size": 1, "gradient_accumulation_steps": 3},
                      network={"train_unet_only": True})
    result, events = _run(cfg)
    assert isinstance(result, ev.Finished)
    started = events[0]
    # 4 batches of 1, accumulated by 3 -> 2 optimizer steps (the last one takes the leftover batch).
    assert (started.batches_per_epoch, started.steps_per_epoch) == (4, 2)
    assert [e.step for e in events if isinstance(e, ev.StepEvent)] == [1, 2]
    assert [e.lrs for e in events if isinstance(e, ev.StepEvent)][0] == {"unet": 1e-3}


def test_user_mistakes_are_failed_events_not_tracebacks(env, tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "missing.safetensors", env["data"], tmp_path / "out")
    result, events = _run(cfg)
    assert isinstance(result, ev.Failed) and result.kind == "user"
    assert "missing.safetensors" in result.message
    assert events == [result]


def test_bad_preview_prompt_fails_before_any_training(env, tmp_path: Path) -> None:
    # A typo in a sample prompt used to surface only at the first preview, after a whole epoch.
    cfg = make_config(env["model"], env["data"], tmp_path / "out",
                      sample={"sample_prompts": ["1girl --w abc"], "sample_every_n_epochs": 1})
    result, events = _run(cfg)
    assert isinstance(result, ev.Failed) and result.kind == "user" and result.step == 0
    assert "--w abc" in result.message
    assert events == [result] and not (tmp_path / "out").exists()


def test_gradient_checkpointing_trains_the_same_weights(env, tmp_path: Path) -> None:
    def train(gc: bool) -> dict:
        cfg = make_config(env["model"], env["data"], tmp_path / f"out{gc}",
                          training={"max_train_epochs": 1, "gradient_checkpointing": gc},
                          output={"save_precision": "float"})
        result, _ = _run(cfg)
        assert isinstance(result, ev.Finished)
        from trainer.lora import read_lora_file

        return read_lora_file(result.final_path)[0]

    plain, ckpt = train(False), train(True)
    ups = [k for k in plain if "lora_up" in k]
    assert any(plain[k].abs().sum() > 0 for k in ups if k.startswith("lora_unet"))
    assert any(plain[k].abs().sum() > 0 for k in ups if k.startswith("lora_te"))
    for k in plain:
        assert torch.allclose(plain[k], ckpt[k], atol=1e-6), k


def test_a_new_run_moves_the_previous_runs_checkpoints_aside(tmp_path: Path) -> None:
    # The earlier run's files (often the epoch the user picked) must survive a re-run of the config.
    from trainer.run import keep_previous_outputs

    names = ["t.safetensors", "t-000001.safetensors", "t-step00000012.ckpt", "t-state", "t-000002-state",
             "t2.safetensors", "other-000001.safetensors", "t-1.safetensors"]
    for n in names:
        (tmp_path / n).mkdir() if n.endswith("state") else (tmp_path / n).write_text(n)
    dest = keep_previous_outputs(tmp_path, "t")
    assert dest is not None and dest.parent == tmp_path / ".kazari" / "previous"
    assert sorted(p.name for p in dest.iterdir()) == sorted(names[:5])
    assert (dest / "t-000001.safetensors").read_text() == "t-000001.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kazari", "other-000001.safetensors",
                                                            "t-1.safetensors", "t2.safetensors"]
    assert keep_previous_outputs(tmp_path, "t") is None  # nothing left to move


def test_every_run_passes_the_full_config_check(env, tmp_path: Path) -> None:
    """The Train screen builds runs from the schema alone: the run itself must refuse what
    `kazari train` refuses, before loading anything, and pass the warnings on."""
    bad = make_config(env["model"], env["data"], tmp_path / "out", dataset={"resolution": "700,700"},
                      network={"train_unet_only": True}, optimizer={"unet_lr": 0.0})
    result, events = _run(bad)
    assert isinstance(result, ev.Failed) and result.kind == "user"
    assert "dataset.resolution" in result.message and "unet_lr" in result.message
    assert not (tmp_path / "out").exists()  # refused before any output was made
    warned = make_config(env["model"], env["data"], tmp_path / "out2", network={"network_alpha": 8},
                         training={"max_train_epochs": 1})
    result, events = _run(warned)
    assert isinstance(result, ev.Finished)
    assert any(isinstance(e, ev.TrainWarning) and "network_alpha" in e.message for e in events)
