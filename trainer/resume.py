"""Finding, checking and tidying resumable training states (one place for the CLI and the TUI).

* :func:`find_resume_state` — the newest valid, unfinished state of a config's output folder
  (``kazari train --resume`` without a folder, the Train screen's "resume the stopped run");
* :func:`resolve_state_folder` — a named state folder, or its ``.old`` twin when a kill landed
  between the two renames of ``trainer.state.save_state``;
* :func:`settings_of` / :func:`compare_settings` — the optimizer and network settings a state was
  saved with, against the config resuming it: refuse what cannot work (another optimizer type),
  warn about what changes the run (lr, scheduler, optimizer_args) and say which value applies;
* :func:`clean_stale_state_temps` — temp state folders left by a kill during a save.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagging.errors import UserError

_STATE_FILES = {"lora.safetensors", "state.pt", "state.json"}


@dataclass(frozen=True)
class StateInfo:
    path: Path  # the folder to pass as resume_from
    step: int
    epoch: int
    batch_in_epoch: int


def _is_state(folder: Path) -> bool:
    return (folder / "state.pt").is_file() and (folder / "lora.safetensors").is_file()


def _info(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def resolve_state_folder(folder: Path | str) -> Path:
    """``folder`` if it is a state; its ``.old`` twin if the kill came between the renames."""
    folder = Path(folder)
    if _is_state(folder):
        return folder
    old = folder.with_name(folder.name + ".old")
    if not folder.exists() and _is_state(old):
        return old
    if not folder.exists():
        raise UserError(f"--resume {folder}: no such folder.", path=folder,
                        hint="Pass the <output_name>-state folder from the output directory, or use --resume "
                        "without a folder to pick the newest state of this config.")
    return folder  # load_state explains what is missing


def _state_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(name)}(-\d{{6}})?-state(\.old)?$")


def list_states(out_dir: Path | str, output_name: str) -> list[StateInfo]:
    """Every complete state folder of ``output_name`` in ``out_dir``, newest (most steps) first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    pattern = _state_pattern(output_name)
    found: dict[Path, StateInfo] = {}
    for p in out_dir.iterdir():
        if not pattern.match(p.name) or not p.is_dir() or not _is_state(p):
            continue
        info = _info(p)
        if info is None or info.get("output_name", output_name) != output_name:
            continue
        if p.name.endswith(".old") and _is_state(p.with_name(p.name[:-4])):
            continue  # the newer twin exists: .old is a leftover
        try:
            found[p] = StateInfo(p, int(info["step"]), int(info["epoch"]), int(info.get("batch_in_epoch", 0)))
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(found.values(), key=lambda s: (s.step, not s.path.name.endswith(".old")), reverse=True)


def find_resume_state(cfg) -> StateInfo | None:
    """The newest state of ``cfg``'s output that still has training left to do, or None."""
    total = cfg.training.max_train_epochs
    for st in list_states(cfg.output.output_dir, cfg.output.output_name):
        if st.epoch < total:
            return st
    return None


# ----- settings recorded with a state -------------------------------------------------------------
_SETTINGS = ("optimizer.optimizer_type", "optimizer.optimizer_args", "optimizer.learning_rate",
             "optimizer.unet_lr", "optimizer.text_encoder_lr", "optimizer.lr_scheduler",
             "optimizer.lr_warmup_steps", "optimizer.lr_scheduler_num_cycles", "optimizer.lr_scheduler_power",
             "network.network_dim", "network.network_alpha", "network.conv_dim", "network.conv_alpha")


def settings_of(cfg) -> dict[str, Any]:
    """The settings a state records (to compare at resume), as plain JSON values."""
    from trainer.optim import canonical_optimizer_name

    out: dict[str, Any] = {}
    for key in _SETTINGS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if name == "optimizer_type":
            value = canonical_optimizer_name(value)
        out[key] = json.loads(json.dumps(value, default=str))
    return out


@dataclass
class SettingsDiff:
    refuse: str | None
    warnings: list[str]
    changed: set[str]


def compare_settings(saved: dict[str, Any] | None, cfg, folder: Path) -> SettingsDiff:
    """What changed between the state's settings and ``cfg``; ``refuse`` is the UserError text."""
    if not saved:  # a state written before settings were recorded
        return SettingsDiff(None, [], set())
    now = settings_of(cfg)
    changed = {k for k in _SETTINGS if k in saved and saved[k] != now[k]}
    opt = "optimizer.optimizer_type"
    if opt in changed:
        return SettingsDiff(
            f"The state in {folder} was saved with optimizer_type = \"{saved[opt]}\", but this config uses "
            f"\"{now[opt]}\"; an optimizer's saved moments cannot drive another optimizer. Set [optimizer] "
            f"optimizer_type = \"{saved[opt]}\" to resume, or start a fresh run without --resume to train "
            f"with {now[opt]}.", [], changed)
    shape = [k for k in changed if k.startswith("network.")]
    if shape:
        diffs = ", ".join(f"{k.split('.')[1]} {saved[k]} -> {now[k]}" for k in sorted(shape))
        return SettingsDiff(
            f"The state in {folder} belongs to another network shape ({diffs}). Resume with the [network] "
            "settings it was saved with, or start a fresh run without --resume.", [], changed)
    warnings = []
    lr_keys = sorted(k for k in changed if k.split(".")[1] in ("learning_rate", "unet_lr", "text_encoder_lr"))
    if lr_keys:
        diffs = ", ".join(f"{k.split('.')[1]} {saved[k]} -> {now[k]}" for k in lr_keys)
        warnings.append(f"Learning rate changed since the state in {folder} was saved ({diffs}): the new value "
                        "applies from the resumed step on, scaled by the schedule.")
    sched = sorted(k for k in changed if k.split(".")[1].startswith("lr_"))
    if sched:
        diffs = ", ".join(f"{k.split('.')[1]} {saved[k]} -> {now[k]}" for k in sched)
        warnings.append(f"The learning-rate schedule changed since the state in {folder} was saved ({diffs}): "
                        "the new schedule applies from the resumed step on (its position is kept).")
    if "optimizer.optimizer_args" in changed:
        warnings.append(
            f"optimizer_args changed since the state in {folder} was saved "
            f"({saved['optimizer.optimizer_args']} -> {now['optimizer.optimizer_args']}): the new values apply; "
            "the optimizer's saved moments are kept.")
    return SettingsDiff(None, warnings, changed)


def apply_new_hyperparameters(optimizer, scheduler, new_lrs: list[float], new_args: dict[str, Any],
                              changed: set[str]) -> None:
    """After loading a state: let the config's lr / optimizer_args win over the saved ones."""
    if any(k.split(".")[1] in ("learning_rate", "unet_lr", "text_encoder_lr") for k in changed):
        for i, group in enumerate(optimizer.param_groups):
            group["initial_lr"] = new_lrs[i]
            scheduler.base_lrs[i] = new_lrs[i]
            group["lr"] = new_lrs[i] * scheduler.lr_lambdas[i](scheduler.last_epoch)
    if "optimizer.optimizer_args" in changed:
        for group in optimizer.param_groups:
            for key, value in new_args.items():
                if key in group:
                    group[key] = tuple(value) if isinstance(group[key], tuple) else value


# ----- leftovers ------------------------------------------------------------------------------------
_TEMP = re.compile(r"^\..+-state\.[A-Za-z0-9_]+\.tmp$")


def clean_stale_state_temps(out_dir: Path | str) -> list[Path]:
    """Remove temp state folders of killed saves (``.<name>-state.XXXX.tmp``); returns them.

    Call it while holding the output folder's lock (no other run of ours can be writing there).
    Only folders of our naming that hold nothing but state files are removed.
    """
    out_dir = Path(out_dir)
    removed: list[Path] = []
    if not out_dir.is_dir():
        return removed
    for p in out_dir.iterdir():
        if not _TEMP.match(p.name) or not p.is_dir() or p.is_symlink():
            continue
        try:
            names = {c.name for c in p.iterdir()}
        except OSError:
            continue
        if names <= _STATE_FILES and all((p / n).is_file() for n in names):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def lock_output_dir(out_dir: Path, warn) -> Any:
    """Lock ``out_dir`` for a run (:class:`~trainer.output_lock.OutputLock`) and tidy killed saves.

    ``warn(event)`` receives a ``TrainWarning`` naming what was removed."""
    from trainer.events import TrainWarning
    from trainer.output_lock import OutputLock

    lock = OutputLock(out_dir).acquire()
    try:
        removed = clean_stale_state_temps(out_dir)
    except OSError:
        removed = []
    if removed:
        warn(TrainWarning(f"Removed {len(removed)} unfinished state folder(s) left in {out_dir} by an interrupted "
                          f"save: {', '.join(p.name for p in removed)}."))
    return lock


def drop_rolling_state(out_dir: Path, output_name: str) -> None:
    """A finished run's rolling ``<name>-state`` (kept only while a run can be resumed) goes."""
    for name in (f"{output_name}-state", f"{output_name}-state.old"):
        p = Path(out_dir) / name
        if p.is_dir() and not p.is_symlink() and {c.name for c in p.iterdir()} <= _STATE_FILES:
            shutil.rmtree(p, ignore_errors=True)
