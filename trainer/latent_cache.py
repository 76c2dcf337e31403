"""VAE latents cached in memory or on disk, keyed so that a stale latent can never be reused.

sd-scripts names its ``.npz`` after the image and never checks the image again, so an image edited
after caching trains on the old latent (kohya_ss #1629). Here the key is a hash of the image *bytes*,
the transform (bucket size, crop, flip, resize method) and the VAE's identity: edit the image or swap
the VAE and the key changes. Disk entries live in ``<dataset root>/.kazari/latents/<key>.safetensors``
and are written atomically; unused ones are simply never read again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tagging.atomic import atomic_write_bytes

# Bump when the resize/crop code changes so that old disk entries stop matching.
TRANSFORM_VERSION = "resize-cover-center-v1"


def file_digest(path: Path | str) -> str:
    """sha256 of a file's content (the image bytes, not its name or mtime)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def vae_fingerprint(vae: torch.nn.Module) -> str:
    """A cheap identity for a VAE: its config and a few weight tensors, hashed."""
    h = hashlib.sha256(repr(sorted(dict(getattr(vae, "config", {})).items())).encode())
    state = vae.state_dict()
    for name in sorted(state)[:4] + sorted(state)[-4:]:
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def latent_key(image_digest: str, bucket: tuple[int, int], flip: bool, vae_id: str,
               resized: tuple[int, int] | None = None) -> str:
    size = f"{resized[0]}x{resized[1]}" if resized else "auto"
    spec = f"{image_digest}|{size}->{bucket[0]}x{bucket[1]}|flip={int(flip)}|{TRANSFORM_VERSION}|vae={vae_id}"
    return hashlib.sha256(spec.encode()).hexdigest()[:40]


class LatentCache:
    """``mode``: "memory" (this run only), "disk" (also persisted under ``folder``) or "off"."""

    def __init__(self, mode: str = "memory", folder: Path | str | None = None) -> None:
        if mode not in ("memory", "disk", "off"):
            raise ValueError(f"cache mode {mode!r}")
        if mode == "disk" and folder is None:
            raise ValueError("disk cache needs a folder")
        self.mode = mode
        self.folder = Path(folder) if folder is not None else None
        self._mem: dict[str, torch.Tensor] = {}
        self.disk_hits = 0

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        if key in self._mem:
            return self._mem[key]
        if self.mode == "disk":
            path = self._path(key)
            if path.is_file():
                try:
                    tensor = load_tensors(path.read_bytes())["latents"]
                except Exception:  # a torn or foreign file: re-encode instead of failing the run
                    return None
                self._mem[key] = tensor
                self.disk_hits += 1
                return tensor
        return None

    def put(self, key: str, latents: torch.Tensor) -> None:
        latents = latents.detach().to("cpu").contiguous()
        self._mem[key] = latents
        if self.mode == "disk":
            assert self.folder is not None
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self._path(key), save_tensors({"latents": latents}))

    def __contains__(self, key: str) -> bool:
        return key in self._mem

    def __len__(self) -> int:
        return len(self._mem)
