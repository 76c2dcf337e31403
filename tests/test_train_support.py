"""Shared helpers for the trainer tests (no tests here): a tiny SD1 model, a tiny dataset, a config.

Everything is CPU and tiny: the tiny model (``trainer.tiny``) works on 64x64 images, so a training
step takes a fraction of a second on one core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from trainer.config.schema import TrainConfig

torch.set_num_threads(1)

_MODEL_CACHE: dict[str, Path] = {}


def tiny_model(root: Path) -> Path:
    """Build the tiny diffusers model once per test session (it is deterministic)."""
    key = "model"
    if key not in _MODEL_CACHE:
        from trainer.tiny import make_tiny_sd

        _MODEL_CACHE[key] = make_tiny_sd(root / "tiny-model")
    return _MODEL_CACHE[key]


def write_images(folder: Path, captions: dict[str, str], size: tuple[int, int] = (64, 64), seed: int = 0) -> None:
    """Distinct, smooth random images (noise blurred by upsampling) with caption files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, caption in captions.items():
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.Resampling.BILINEAR).save(folder / name)
        if caption is not None:
            (folder / name).with_suffix(".txt").write_text(caption, encoding="utf-8")


def tiny_dataset(root: Path, n: int = 4, repeats: int = 1, sizes: list[tuple[int, int]] | None = None) -> Path:
    caps = {f"{i:03d}.png": f"kazari, 1girl, tag{i}, pink hair" for i in range(n)}
    folder = root / f"{repeats}_kazari"
    if sizes is None:
        write_images(folder, caps)
    else:
        for i, (name, cap) in enumerate(caps.items()):
            write_images(folder, {name: cap}, size=sizes[i % len(sizes)], seed=i)
    return root


def make_config(model: Path, data: Path, out: Path, **sections: dict[str, Any]) -> TrainConfig:
    base: dict[str, dict[str, Any]] = {
        "model": {"pretrained_model": str(model)},
        "dataset": {"train_data_dir": str(data), "resolution": "64,64", "min_bucket_reso": 64,
                    "max_bucket_reso": 128, "cache_latents": "memory", "max_token_length": 75,
                    "shuffle_caption": True, "keep_tokens": 1},
        "network": {"network_dim": 4, "network_alpha": 4},
        "optimizer": {"optimizer_type": "AdamW", "learning_rate": 1e-3, "unet_lr": 1e-3,
                      "text_encoder_lr": 1e-4, "lr_warmup_steps": 0, "lr_scheduler": "constant"},
        "training": {"max_train_epochs": 2, "train_batch_size": 2, "mixed_precision": "no", "device": "cpu",
                     "seed": 1234},
        "output": {"output_dir": str(out), "output_name": "t", "save_every_n_epochs": 1, "save_state": False},
        "sample": {"sample_every_n_epochs": 0},
        "logging": {"logging_dir": None},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return TrainConfig.model_validate(base, strict=False)
