"""Full training state on disk, for exact resume: ``<output>/<name>-state/`` (or ``-{epoch:06d}-state``).

A state folder holds ``lora.safetensors`` (trainable weights in fp32), ``state.pt`` (optimizer,
scheduler, grad scaler, counters, every RNG state, the data order) and ``state.json`` (the same
counters, readable). It is written to a temporary sibling folder and swapped in with renames, so a
crash or a full disk mid-save leaves the previous state intact. ``state.pt`` holds only tensors and
plain containers, so it is read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tagging.errors import UserError

STATE_VERSION = 1


@dataclass
class Counters:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs fully done
    batch_in_epoch: int = 0  # batches of epoch+1 already consumed (resume point)
    images_seen: int = 0
    data_order: list[list[int]] = field(default_factory=list)  # the batches of epoch+1
    dataset_keys: list[str] = field(default_factory=list)  # image keys, to detect a changed dataset
    seed: int | None = None  # the run's seed (drawn at random when the config leaves it unset)


def capture_rng(generators: dict[str, Any]) -> dict[str, Any]:
    """RNG states: Python, NumPy, torch CPU/CUDA global, plus the run's own generators."""
    py_state = random.getstate()
    # legacy=True is numpy's default at run time (its stubs say otherwise): the MT19937 tuple
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # the global generator is always MT19937
    out: dict[str, Any] = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    for name, gen in generators.items():
        if isinstance(gen, random.Random):
            s = gen.getstate()
            out[f"py:{name}"] = [s[0], list(s[1]), s[2]]
        else:
            out[f"torch:{name}"] = gen.get_state()
    return out


def restore_rng(state: dict[str, Any], generators: dict[str, Any]) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in generators.items():
        if isinstance(gen, random.Random):
            key = f"py:{name}"
            if key in state:
                v, internal, gauss = state[key]
                gen.setstate((v, tuple(internal), gauss))
        elif f"torch:{name}" in state:
            gen.set_state(state[f"torch:{name}"])


def save_state(folder: Path, *, lora_state: dict[str, torch.Tensor], optimizer, scheduler, scaler,
               counters: Counters, rng: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write a complete state folder atomically (temp folder + rename); returns ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in lora_state.items()},
                  str(tmp / "lora.safetensors"))
        blob = {
            "version": STATE_VERSION,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            "counters": asdict(counters),
            "rng": rng,
        }
        torch.save(blob, tmp / "state.pt")
        info = {"version": STATE_VERSION, **{k: v for k, v in asdict(counters).items() if k != "data_order"},
                **(extra or {})}
        info.pop("dataset_keys", None)
        (tmp / "state.json").write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        # Swap: old -> .old, tmp -> folder, drop .old. Between the renames the old state still exists.
        old = folder.with_name(folder.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


@dataclass
class LoadedState:
    lora_state: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any] | None
    counters: Counters
    rng: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # state.json: counters + the recorded settings


def load_state(folder: Path | str) -> LoadedState:
    folder = Path(folder)
    old = folder.with_name(folder.name + ".old")
    if not (folder / "state.pt").is_file() and (old / "state.pt").is_file():
        folder = old  # killed between the two renames of save_state: the previous state is complete
    blob_path = folder / "state.pt"
    lora_path = folder / "lora.safetensors"
    if not blob_path.is_file() or not lora_path.is_file():
        raise UserError(
            f"{folder} is not a kazari training state folder (state.pt and lora.safetensors are missing).",
            path=folder,
            hint="Pass the `<output_name>-state` folder written with [output] save_state = true, or a "
            "stop request.",
        )
    try:
        blob = torch.load(blob_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"Cannot read training state {blob_path}: {exc}.", path=blob_path,
                        hint="The file is damaged; resume from an older state folder.") from exc
    if blob.get("version") != STATE_VERSION:
        raise UserError(f"{blob_path} was written by another kazari version ({blob.get('version')}).",
                        path=blob_path, hint="Resume with the kazari version that wrote it.")
    try:
        info = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    try:
        lora_state = load_file(str(lora_path))
    except Exception as exc:  # truncated or garbage: safetensors raises its own error types
        raise UserError(f"Cannot read {lora_path}: the file is damaged or truncated ({exc}).", path=lora_path,
                        hint="Resume from an older state folder (an epoch's -state), or start a fresh run "
                        "without --resume.") from exc
    return LoadedState(
        lora_state=lora_state,
        optimizer=blob["optimizer"],
        scheduler=blob["scheduler"],
        scaler=blob["scaler"],
        counters=Counters(**blob["counters"]),
        rng=blob["rng"],
        info=info if isinstance(info, dict) else {},
    )
