"""One device rule for training, sampling and the grid (trainer.device)."""

from __future__ import annotations

import pytest
import torch

from tagging.errors import UserError
from trainer.config import preset
from trainer.device import resolve_device


def test_auto_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(UserError, match='--device = "cuda" but PyTorch sees no CUDA GPU'):
        resolve_device("cuda", key="--device")
    with pytest.raises(UserError, match="not a device"):
        resolve_device("tpu")


def test_the_grid_screen_job_uses_the_rule(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """It used to fall through to CUDA loading instead of the clear error."""
    from tui.screens.grid.job import GridJob

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = preset("anime-character")
    cfg.training.device = "cuda"
    with pytest.raises(UserError, match="no CUDA GPU"):
        GridJob(cfg=cfg, weights=[1.0]).run()


def test_unset_lr_means_learning_rate_but_zero_is_zero() -> None:
    o = preset("anime-character").optimizer
    o.unet_lr, o.text_encoder_lr = None, 0.0
    assert o.effective_unet_lr == o.learning_rate and o.effective_text_encoder_lr == 0.0
