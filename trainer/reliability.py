"""Kill-during-train check shared by the reliability test and ``bench/train_reliability_bench.py``.

A child process trains the tiny SD1 model; the parent SIGKILLs it in one phase (latent caching into
memory or onto disk, mid-epoch, while a checkpoint or a training state is being saved), checks that
every checkpoint and state left behind loads, then runs what a user would run next — ``kazari train
--resume`` when a state exists, a fresh run otherwise — and compares the final LoRA with an
uninterrupted run's, tensor for tensor.

The child announces each phase on stdout (``PHASE name``) and lingers a few milliseconds there, so
that the kill lands inside it; the lingering changes no number.
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

FAMILIES = ("caching-memory", "caching-disk", "mid-epoch", "checkpoint-save", "state-save")

_CHILD = r"""
import sys, time
import torch
torch.set_num_threads(1)
from trainer import events as ev
from trainer.config import load_config
from trainer.resume import find_resume_state
from trainer.run import TrainingRun

cfg_path, phase, linger = sys.argv[1], sys.argv[2], float(sys.argv[3])
cfg = load_config(cfg_path)

def say(name):
    print("PHASE " + name, flush=True)
    time.sleep(linger)

if phase == "state-save":
    import trainer.state as st
    real_save = st.torch.save
    def slow_save(*a, **k):
        say("state-save")
        return real_save(*a, **k)
    st.torch.save = slow_save
elif phase == "checkpoint-save":
    import trainer.lora as lora
    real_write = lora.atomic_write_bytes
    def slow_write(path, data):
        say("checkpoint-save")
        return real_write(path, data)
    lora.atomic_write_bytes = slow_write

def on_event(e):
    if phase.startswith("caching") and isinstance(e, ev.CachingProgress) and e.done < e.total:
        say(phase)
    elif phase == "mid-epoch" and isinstance(e, ev.StepEvent):
        say("mid-epoch")

resume = None
if phase == "resume":
    found = find_resume_state(cfg)
    resume = found.path if found else None
    print("RESUME " + str(resume), flush=True)
result = TrainingRun(cfg, on_event=on_event, resume_from=resume).run()
print("RESULT " + type(result).__name__ + " " + str(getattr(result, "message", "")).replace("\n", " "), flush=True)
"""


@dataclass
class TrainEnv:
    root: Path
    model: Path
    data: Path


@dataclass
class TrainTrial:
    family: str
    killed_in_phase: bool
    resumed_from_state: bool = False
    identical: bool = False
    unloadable: list[str] = field(default_factory=list)
    error: str = ""


def make_env(root: Path, n_images: int = 4) -> TrainEnv:
    """The tiny model and a tiny captioned dataset (deterministic)."""
    import numpy as np
    from PIL import Image

    from trainer.tiny import make_tiny_sd

    root = Path(root)
    model = make_tiny_sd(root / "tiny-model")
    folder = root / "data" / "1_kazari"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_images):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((64, 64), Image.Resampling.BILINEAR).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"kazari, 1girl, tag{i}, pink hair", encoding="utf-8")
    return TrainEnv(root, model, root / "data")


def write_config(env: TrainEnv, out: Path, cache: str, path: Path) -> Path:
    from trainer.config import render_toml
    from trainer.config.schema import TrainConfig

    cfg = TrainConfig.model_validate({
        "model": {"pretrained_model": str(env.model)},
        "dataset": {"train_data_dir": str(env.data), "resolution": "64,64", "min_bucket_reso": 64,
                    "max_bucket_reso": 128, "cache_latents": cache, "max_token_length": 75,
                    "shuffle_caption": True, "keep_tokens": 1, "flip_aug": True},
        "network": {"network_dim": 4, "network_alpha": 4},
        "optimizer": {"optimizer_type": "AdamW", "learning_rate": 1e-3, "unet_lr": 1e-3, "text_encoder_lr": 1e-4,
                      "lr_scheduler": "cosine", "lr_warmup_steps": 2},
        "training": {"max_train_epochs": 3, "train_batch_size": 2, "mixed_precision": "no", "device": "cpu",
                     "seed": 1234, "noise_offset": 0.05},
        "output": {"output_dir": str(out), "output_name": "t", "save_every_n_epochs": 1, "save_state": False,
                   "save_precision": "float"},
        "sample": {"sample_every_n_epochs": 0},
    }, strict=False)
    path.write_text(render_toml(cfg), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # the same kernels in every child
    return env


def _child(cfg: Path, phase: str, linger: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(cfg), phase, str(linger)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=_env())


def _finish(proc: subprocess.Popen[str]) -> str:
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait()
    if proc.stdout:
        proc.stdout.close()
    return out


def reference(env: TrainEnv, cache: str) -> dict:
    """Final LoRA tensors of an uninterrupted run (computed once per cache mode, in a child)."""
    from trainer.lora import read_lora_file

    out = env.root / f"reference-{cache}"
    final = out / "t.safetensors"
    if not final.is_file():
        shutil.rmtree(out, ignore_errors=True)
        cfg = write_config(env, out, cache, env.root / f"reference-{cache}.toml")
        text = _finish(_child(cfg, "none"))
        if "RESULT Finished" not in text:
            raise RuntimeError(f"reference run failed: {text[-500:]}")
    return read_lora_file(final)[0]


def _check_leftovers(out: Path, cfg_path: Path) -> list[str]:
    """Every checkpoint and state folder left after the kill must load."""
    from tagging.errors import UserError
    from trainer.config import load_config
    from trainer.lora import read_lora_file
    from trainer.resume import list_states
    from trainer.state import load_state

    bad: list[str] = []
    if not out.is_dir():
        return bad
    for p in sorted(out.glob("*.safetensors")):
        try:
            read_lora_file(p)
        except UserError as exc:
            bad.append(f"{p.name}: {exc}")
    cfg = load_config(cfg_path, check=False)
    for st in list_states(out, cfg.output.output_name):
        try:
            load_state(st.path)
        except UserError as exc:
            bad.append(f"{st.path.name}: {exc}")
    return bad


def run_trial(env: TrainEnv, family: str, workdir: Path, rng: random.Random) -> TrainTrial:
    """Kill a training child in ``family``'s phase, check what it left, resume, compare."""
    import torch

    from trainer.lora import read_lora_file

    cache = "disk" if family == "caching-disk" else "memory"
    ref = reference(env, cache)
    if family == "caching-disk":  # start from an empty disk cache, so the kill lands in its filling
        shutil.rmtree(env.data / ".kazari" / "latents", ignore_errors=True)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    out = workdir / "out"
    cfg = write_config(env, out, cache, workdir / "train.toml")
    # Which occurrence of the phase to hit: caching has 8 latents, mid-epoch 6 steps, saves 2-3 each.
    nth = {"caching-memory": rng.randint(1, 7), "caching-disk": rng.randint(1, 7), "mid-epoch": rng.randint(1, 6),
           "checkpoint-save": rng.randint(1, 2), "state-save": rng.randint(1, 2)}[family]
    proc = _child(cfg, family, linger=0.03)
    seen = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("PHASE "):
            seen += 1
            if seen == nth:
                time.sleep(rng.uniform(0, 0.03))
                proc.send_signal(signal.SIGKILL)
                break
        elif line.startswith("RESULT"):
            break
    tail = _finish(proc)
    trial = TrainTrial(family, killed_in_phase=proc.returncode == -signal.SIGKILL and "RESULT" not in tail)
    trial.unloadable = _check_leftovers(out, cfg)
    text = _finish(_child(cfg, "resume"))
    trial.resumed_from_state = "RESUME None" not in text
    if "RESULT Finished" not in text:
        trial.error = text.strip().splitlines()[-1] if text.strip() else "resume child died"
        return trial
    got = read_lora_file(out / "t.safetensors")[0]
    trial.identical = got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in got)
    return trial
