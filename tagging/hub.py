"""Model files from the Hugging Face cache: cached first (no network), then a download, else a clear error.

Shared by every ONNX model kazari runs (the tagger, the background remover), so "offline and not
cached" always reads the same way and always says what to download.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from tagging.errors import UserError


def hf_offline() -> bool:
    """True when huggingface_hub downloads are disabled (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def hub_files(repo: str, filenames: Sequence[str], *, name: str, hint: str,
              cache_dir: Path | None = None, offline: Callable[[], bool] | None = None) -> list[Path]:
    """Local paths of ``filenames`` from ``repo``: the cached snapshot if present, else downloaded.

    ``name`` is what the user typed (for messages); ``hint`` says how to get the files by hand.
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - it is a declared dependency
        raise UserError(f"Model {name!r} is a Hugging Face repo but huggingface_hub is not installed.",
                        hint=hint) from None

    def fetch(local_only: bool) -> list[Path]:
        return [Path(hf_hub_download(repo, f, cache_dir=cache_dir, local_files_only=local_only))
                for f in filenames]

    try:
        return fetch(local_only=True)  # cached: no network at all
    except Exception:
        pass
    if (offline or hf_offline)():
        raise UserError(f"Model {name!r} ({repo}) is not in the Hugging Face cache and downloads are "
                        "disabled (HF_HUB_OFFLINE is set).", hint=hint)
    try:
        return fetch(local_only=False)
    except Exception as err:  # network down, repo gone, disk full: all fixable by the user
        raise UserError(f"Could not download model {name!r} ({repo}): {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else 'no details'}.", hint=hint) from None
