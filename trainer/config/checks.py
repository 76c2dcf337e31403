"""Consistency and file-system checks of a schema-valid config (errors and warnings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from trainer.buckets import adjust_bucket_range
from trainer.config.errors import ConfigIssue
from trainer.config.lines import line_of
from trainer.config.schema import WARMUP_SCHEDULERS, TrainConfig, field_spec

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


class _Collector:
    def __init__(self, text: str, path: Path | None) -> None:
        self.text = text
        self.path = path
        self.issues: list[ConfigIssue] = []

    def add(self, severity: Literal["error", "warning"], key: str, message: str, fix: str, value: object = ...,
            code: str = "") -> None:
        kwargs: dict[str, object] = {} if value is ... else {"value": value}
        self.issues.append(ConfigIssue(
            severity, key, message, fix, line=line_of(self.text, key) if self.text else None,
            path=self.path, code=code, **kwargs))

    def error(self, key: str, message: str, fix: str, value: object = ..., code: str = "") -> None:
        self.add("error", key, message, fix, value, code)

    def warn(self, key: str, message: str, fix: str, value: object = ..., code: str = "") -> None:
        self.add("warning", key, message, fix, value, code)


def _near(n: int, step: int = 64) -> tuple[int, int]:
    low = max(step, n - n % step)
    return (low, low) if low == n else (low, low + step if n > low else low)


def check_config(cfg: TrainConfig, *, text: str = "", path: Path | None = None,
                 dataset: bool = True, files: bool = True) -> list[ConfigIssue]:
    """All consistency problems of ``cfg`` (paths must already be resolved for ``files``)."""
    c = _Collector(text, path)
    _check_values(cfg, c)
    if files:
        _check_paths(cfg, c)
        if dataset:
            _check_dataset(cfg, c)
    return c.issues


def _check_values(cfg: TrainConfig, c: _Collector) -> None:
    d, n, o, t, out = cfg.dataset, cfg.network, cfg.optimizer, cfg.training, cfg.output
    w, h = d.resolution_wh
    for key in ("dataset.max_data_loader_n_workers", "dataset.persistent_data_loader_workers"):
        if cfg.get(key) != field_spec(key).default:
            c.warn(key, "is ignored: kazari loads images in the training process (kept for sd-scripts configs)",
                   'remove it; to speed up loading, set cache_latents = "memory" or "disk"', cfg.get(key), "ignored")
    if w % 64 or h % 64 or w < 64 or h < 64:
        c.error("dataset.resolution", "each side must be a multiple of 64 (the VAE and U-Net downsample by 64)",
                f'use multiples of 64, e.g. resolution = "{_near(w)[0]},{_near(h)[0]}" or '
                f'"{_near(w)[1]},{_near(h)[1]}"', d.resolution, "resolution")
    if d.bucket_reso_steps % 8:
        c.error("dataset.bucket_reso_steps", "must be a multiple of 8 (one latent pixel = 8 image pixels)",
                "use 64 (the usual) or another multiple of 8", d.bucket_reso_steps, "bucket-step")
    # sd-scripts checks the range whenever buckets are on, bucket_no_upscale or not
    # (library/train_util.py, adjust_min_max_bucket_reso_by_steps).
    if d.enable_bucket:
        lo, hi = adjust_bucket_range(d.min_bucket_reso, d.max_bucket_reso, d.bucket_reso_steps)
        if d.min_bucket_reso > d.max_bucket_reso:
            c.error("dataset.min_bucket_reso", f"is larger than max_bucket_reso ({d.max_bucket_reso})",
                    "swap the two values", d.min_bucket_reso, "bucket-range")
        if lo > min(w, h):
            c.error("dataset.min_bucket_reso", f"is larger than the smaller side of the resolution ({min(w, h)})",
                    f"set min_bucket_reso to at most {min(w, h)}, e.g. 256", d.min_bucket_reso, "bucket-range")
        if hi < max(w, h):
            c.error("dataset.max_bucket_reso", f"is smaller than the larger side of the resolution ({max(w, h)})",
                    f"set max_bucket_reso to at least {max(w, h)}, e.g. {max(1024, max(w, h))}",
                    d.max_bucket_reso, "bucket-range")
        for key, value, new in (("dataset.min_bucket_reso", d.min_bucket_reso, lo),
                                ("dataset.max_bucket_reso", d.max_bucket_reso, hi)):
            if value != new:
                c.warn(key, f"is not a multiple of bucket_reso_steps ({d.bucket_reso_steps}); {new} will be used",
                       f"write {new}", value, "bucket-step")
    if n.network_alpha > n.network_dim:
        c.warn("network.network_alpha", f"is larger than network_dim ({n.network_dim}): the LoRA update is "
               f"scaled up by {n.network_alpha / n.network_dim:g}x, which often burns the model or gives NaN loss",
               f"use alpha at most dim (e.g. {n.network_dim} or {n.network_dim // 2 or 1}), or lower the learning rate",
               n.network_alpha, "alpha-gt-dim")
    if n.conv_alpha is not None and n.conv_dim is not None and n.conv_alpha > n.conv_dim:
        c.warn("network.conv_alpha", f"is larger than conv_dim ({n.conv_dim})",
               "use conv_alpha at most conv_dim", n.conv_alpha, "alpha-gt-dim")
    if n.conv_alpha is not None and n.conv_dim is None:
        c.warn("network.conv_alpha", "has no effect without conv_dim", "set conv_dim too, or remove conv_alpha",
               n.conv_alpha, "unused")
    if n.train_unet_only and n.train_text_encoder_only:
        c.error("network.train_text_encoder_only", "cannot be combined with train_unet_only: nothing would be trained",
                "set at most one of network.train_unet_only and network.train_text_encoder_only to true",
                True, "exclusive")
    if n.train_text_encoder_only and o.text_encoder_lr == 0:
        c.error("optimizer.text_encoder_lr", "is 0 while only the text encoder is trained: nothing would be trained",
                "raise text_encoder_lr (e.g. 5e-5) or set network.train_text_encoder_only = false", 0.0, "nothing")
    if n.train_unet_only and o.unet_lr == 0:
        c.error("optimizer.unet_lr", "is 0 while only the U-Net is trained: nothing would be trained",
                "raise unet_lr (e.g. 1e-4) or set network.train_unet_only = false", 0.0, "nothing")
    if o.lr_warmup_steps and o.lr_scheduler not in WARMUP_SCHEDULERS:
        c.warn("optimizer.lr_warmup_steps", f'is set but lr_scheduler "{o.lr_scheduler}" has no warmup '
               "(sd-scripts refuses this combination)",
               'use lr_scheduler = "constant_with_warmup", or set lr_warmup_steps = 0', o.lr_warmup_steps, "warmup")
    if o.lr_scheduler_num_cycles > 1 and o.lr_scheduler != "cosine_with_restarts":
        c.warn("optimizer.lr_scheduler_num_cycles", f'only applies to cosine_with_restarts, not "{o.lr_scheduler}"',
               'use lr_scheduler = "cosine_with_restarts" or set lr_scheduler_num_cycles = 1',
               o.lr_scheduler_num_cycles, "unused")
    if o.optimizer_type == "Prodigy" and o.learning_rate < 0.1:
        c.warn("optimizer.learning_rate", "is tiny for Prodigy, which adapts the step size itself and expects about 1.0",
               "set learning_rate, unet_lr and text_encoder_lr to 1.0 with Prodigy", o.learning_rate, "prodigy-lr")
    needs = {"AdamW8bit": "bitsandbytes", "Lion8bit": "bitsandbytes", "Prodigy": "prodigyopt", "Lion": "lion_pytorch"}
    module = needs.get(o.optimizer_type)
    if module and importlib.util.find_spec(module) is None:
        c.warn("optimizer.optimizer_type", f"needs the Python package {module}, which is not installed",
               f"pip install {module.replace('_', '-')}, or choose AdamW", o.optimizer_type, "missing-package")
    if t.attention == "xformers" and importlib.util.find_spec("xformers") is None:
        c.warn("training.attention", "xformers is not installed", 'pip install xformers, or use attention = "sdpa"',
               t.attention, "missing-package")
    if out.save_model_as != "safetensors":
        c.warn("output.save_model_as", f"{out.save_model_as} files are Python pickles: loading one from someone "
               "else can run code, and many tools only read safetensors",
               'use save_model_as = "safetensors" (preferred)', out.save_model_as, "pickle-format")
    if out.save_every_n_epochs > t.max_train_epochs:
        c.warn("output.save_every_n_epochs", f"exceeds max_train_epochs ({t.max_train_epochs}): only the final "
               "LoRA is saved, so the epoch grid has one column", "use 1 to compare every epoch",
               out.save_every_n_epochs, "few-saves")
    if isinstance(cfg.sample.sample_prompts, list):
        for i, line in enumerate(cfg.sample.sample_prompts):
            if not line.strip():
                c.warn("sample.sample_prompts", f"prompt {i + 1} is empty", "remove the empty line", line, "empty")
            elif not line.lstrip().startswith("#"):
                _check_prompt_line(c, line, f"prompt {i + 1}")
    if o.optimizer_args:
        _check_optimizer_args(cfg, c)


def _check_prompt_line(c: _Collector, line: str, where: str) -> None:
    from tagging.errors import UserError
    from trainer.prompts import parse_prompt_line

    try:
        parse_prompt_line(line, where=where)
    except UserError as exc:
        c.error("sample.sample_prompts", str(exc).split(" Prompt lines use ")[0].rstrip("."),
                "prompt lines use sd-scripts syntax: `prompt --n negative --w 512 --h 512 --s 28 --l 7 --d 1234`",
                line, "bad-prompt")


def _check_optimizer_args(cfg: TrainConfig, c: _Collector) -> None:
    from tagging.errors import UserError
    from trainer.optim import optimizer_arg_problems

    try:
        problems = optimizer_arg_problems(cfg.optimizer.optimizer_type, cfg.optimizer.optimizer_args)
    except UserError as exc:  # an unparseable entry or an unknown optimizer_type
        problems = [str(exc)]
    for problem in problems:
        c.error("optimizer.optimizer_args", problem, "fix or remove that entry (see the optimizer's documentation)",
                cfg.optimizer.optimizer_args, "optimizer-args")


def _check_exists(c: _Collector, key: str, value: Path | None, *, required: str = "", folder: bool | None = None,
                  what: str = "path") -> bool:
    if value is None:
        if required:
            c.error(key, "is not set", required, code="required")
        return False
    if not value.exists():
        c.error(key, f"the {what} does not exist", "check the path; relative paths are read from the config "
                "file's folder", value, "missing-path")
        return False
    if folder is True and not value.is_dir():
        c.error(key, "must be a folder, not a file", "point it to the folder", value, "not-a-folder")
        return False
    if folder is False and value.is_dir():
        c.error(key, "must be a file, not a folder", "point it to the file", value, "not-a-file")
        return False
    return True


def _check_paths(cfg: TrainConfig, c: _Collector) -> None:
    m = cfg.model
    if _check_exists(c, "model.pretrained_model", m.pretrained_model, what="model",
                     required='point it to an SD 1.x .safetensors/.ckpt file or a diffusers folder, e.g. '
                              'pretrained_model = "models/anime-base.safetensors"'):
        p = m.pretrained_model
        assert p is not None
        if p.is_dir() and not ((p / "model_index.json").exists() or (p / "unet").is_dir()):
            c.error("model.pretrained_model", "the folder is not a diffusers model (no model_index.json or unet/)",
                    "point it to a diffusers folder or a single .safetensors/.ckpt file", p, "bad-model")
        elif p.is_file() and p.suffix.lower() not in MODEL_SUFFIXES:
            c.warn("model.pretrained_model", f"unexpected file type {p.suffix!r}",
                   "use a .safetensors or .ckpt checkpoint", p, "bad-model")
        elif p.is_file() and p.suffix.lower() in (".ckpt", ".pt", ".bin"):
            c.warn("model.pretrained_model", "is a pickle checkpoint (loaded with weights_only=True)",
                   "prefer a .safetensors copy when one exists", p, "pickle-format")
    _check_exists(c, "model.vae", m.vae, what="VAE")
    _check_exists(c, "model.tokenizer", m.tokenizer, folder=True, what="tokenizer folder")
    _check_exists(c, "network.network_weights", cfg.network.network_weights, folder=False, what="LoRA file")
    _check_exists(c, "dataset.train_data_dir", cfg.dataset.train_data_dir, folder=True, what="dataset folder",
                  required='set it to the folder holding your N_name image folders, e.g. train_data_dir = "dataset"')
    _check_exists(c, "dataset.reg_data_dir", cfg.dataset.reg_data_dir, folder=True, what="folder")
    prompts = cfg.sample.sample_prompts
    if isinstance(prompts, Path) and _check_exists(c, "sample.sample_prompts", prompts, folder=False,
                                                   what="prompt file"):
        from tagging.errors import UserError
        from trainer.prompts import load_prompts

        try:
            load_prompts(prompts)
        except UserError as exc:
            c.error("sample.sample_prompts", str(exc).split(" Prompt lines use ")[0].rstrip("."),
                    "prompt lines use sd-scripts syntax: `prompt --n negative --w 512 --h 512 --s 28 --l 7`",
                    prompts, "bad-prompt")
    out = cfg.output.output_dir
    if out.exists() and not out.is_dir():
        c.error("output.output_dir", "is a file, not a folder", "choose a folder name", out, "not-a-folder")


def _check_dataset(cfg: TrainConfig, c: _Collector) -> None:
    d = cfg.dataset
    if d.train_data_dir is None or not d.train_data_dir.is_dir():
        return
    if d.reg_data_dir is not None and not d.reg_data_dir.is_dir():
        return
    from tagging.dataset import Dataset, parse_folder_name
    from tagging.errors import DatasetError

    try:
        ds = Dataset.open(d.train_data_dir, caption_ext=d.caption_extension, reg_root=d.reg_data_dir)
    except DatasetError as exc:
        c.error("dataset.train_data_dir", str(exc), "fix the dataset folder (see `kazari dataset lint`)",
                d.train_data_dir, "dataset")
        return
    images = [it for f in ds.folders for it in f.images]
    if not ds.folders or not images:
        skipped = [s for s in ds.skipped if s.code.startswith("folder-") or s.code == "image-at-root"]
        reason = f" ({skipped[0].reason})" if skipped else ""
        c.error("dataset.train_data_dir", f"has no usable image folders{reason}",
                "put the images in subfolders named like 10_mychar (10 = repeats, mychar = trigger word) "
                "directly inside it", d.train_data_dir, "no-images")
        return
    unreadable = [it for it in images if min(it.size) <= 0]
    if unreadable:
        c.warn("dataset.train_data_dir", f"{len(unreadable)} image(s) cannot be read (e.g. {unreadable[0].key})",
               "run `kazari dataset lint` and fix or remove them", d.train_data_dir, "unreadable-images")
    plain = [f for f in ds.folders if f.plain and parse_folder_name(f.path.name) is not None]
    if plain:
        # train_data_dir = "data/10_kazari" instead of "data": the 10 repeats would be silently lost.
        c.warn("dataset.train_data_dir", f"is itself an N_name folder ({plain[0].name}); its repeat count is "
               "ignored and it trains as a plain folder with 1 repeat",
               f"set train_data_dir to its parent folder, e.g. train_data_dir = \"{d.train_data_dir.parent.as_posix()}\"",
               d.train_data_dir, "root-is-subset")
    ignored = [s for s in ds.skipped if s.code in ("folder-unnumbered", "folder-zero-repeats", "image-at-root")]
    if ignored:
        c.warn("dataset.train_data_dir", f"{len(ignored)} folder(s)/file(s) will not be trained: {ignored[0].reason}",
               "rename folders to N_name, or move stray images into one", d.train_data_dir, "ignored-files")
    if d.reg_data_dir is not None and not [it for f in ds.reg_folders for it in f.images]:
        c.error("dataset.reg_data_dir", "has no usable image folders",
                "use N_name subfolders of class images, or unset reg_data_dir", d.reg_data_dir, "no-images")
