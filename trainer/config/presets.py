"""Named starting points for a config.

``anime-character`` is the Akegarasu lora-scripts recipe the project was seeded with (768x768,
batch 2, 10 epochs, dim 64 / alpha 32, clip skip 2, Lion at 5e-5 / TE 6e-6, cosine with one restart,
warmup 50, fp16, seed 1337, cached latents, 225 tokens, shuffled .txt captions, buckets 256-1024)
plus keep_tokens 1 so the trigger word stays first. It is also what a bare ``TrainConfig()`` holds.
"""

from __future__ import annotations

from typing import Any

from tagging.errors import UserError
from trainer.config.schema import TrainConfig

_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "anime-character": {},
    # 8 GB cards: 512 px, one image per step, checkpointed activations, a smaller rank.
    "low-vram": {
        "dataset": {"resolution": "512,512"},
        "network": {"network_dim": 32, "network_alpha": 16.0},
        "training": {"train_batch_size": 1, "gradient_checkpointing": True},
    },
    # Seconds per epoch on a CPU with the tiny random model (trainer.tiny) and the demo dataset.
    "quick-test": {
        "dataset": {
            "resolution": "64,64", "min_bucket_reso": 64, "max_bucket_reso": 128,
            "max_token_length": 75,
        },
        "network": {"network_dim": 4, "network_alpha": 4.0},
        "optimizer": {
            "optimizer_type": "AdamW", "learning_rate": 1e-3, "unet_lr": 1e-3, "text_encoder_lr": 1e-4,
            "lr_scheduler": "constant", "lr_warmup_steps": 0,
        },
        "training": {"max_train_epochs": 2, "train_batch_size": 1, "mixed_precision": "no",
                     "device": "auto"},
        "output": {"save_precision": "float"},
    },
}

PRESETS: tuple[str, ...] = tuple(_OVERRIDES)

DESCRIPTIONS = {
    "anime-character": "the seed recipe: 768 px, batch 2, dim 64/alpha 32, Lion, 10 epochs (12+ GB GPU)",
    "low-vram": "8 GB GPUs: 512 px, batch 1, dim 32/alpha 16, gradient checkpointing",
    "quick-test": "tiny CPU smoke run: 64 px, dim 4, 2 epochs, batch 1, AdamW",
}


def preset(name: str = "anime-character", **sections: dict[str, Any]) -> TrainConfig:
    """A config from a named preset; ``sections`` override keys, e.g. ``dataset={"train_data_dir": p}``."""
    if name not in _OVERRIDES:
        raise UserError(
            f"Unknown preset {name!r}.", hint=f"Use one of: {', '.join(PRESETS)}.")
    data: dict[str, dict[str, Any]] = {}
    for source in (_OVERRIDES[name], sections):
        for section, values in source.items():
            data.setdefault(section, {}).update(values)
    return TrainConfig.model_validate(data, strict=False)
