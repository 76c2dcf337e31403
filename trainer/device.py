"""The one rule for which device a run uses (training, sampling, the grid)."""

from __future__ import annotations

import torch

from tagging.errors import UserError


def resolve_device(want: str = "auto", *, local_rank: int | None = None, key: str = "[training] device") -> torch.device:
    """``"auto"`` = the GPU when PyTorch sees one, else the CPU; ``"cuda"`` without a GPU is a user error.

    ``local_rank`` picks the GPU of one process in a multi-GPU run.
    """
    want = (want or "auto").lower()
    if want not in ("auto", "cuda", "cpu"):
        raise UserError(f'{key} = "{want}" is not a device kazari knows.', hint='Use "auto", "cuda" or "cpu".')
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f'{key} = "cuda" but PyTorch sees no CUDA GPU.',
                        hint='Install a CUDA build of PyTorch (see `kazari doctor`) or use "auto".')
    return torch.device("cuda", torch.cuda.current_device() if local_rank is None else local_rank)
