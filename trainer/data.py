"""The training data pipeline: which image goes in which batch, its pixels, latents and caption.

Semantics follow sd-scripts (``library/train_util.py``) because users' settings assume them:

* every image appears ``repeats`` times per epoch (``10_name`` folder = 10 repeats); regularisation
  images are repeated until they match the training images' count, and weigh
  ``prior_loss_weight`` in the loss;
* images go to aspect-ratio buckets (``trainer.buckets``); a batch never mixes buckets; the epoch's
  batch order is shuffled from ``seed + epoch`` so it is reproducible and resumable;
* an image is resized to *cover* its bucket and centre-cropped;
* captions are re-read from disk (through ``tagging.captions``) at the start of every epoch, so tag
  edits made between epochs or runs apply; then caption dropout, keep_tokens + shuffle, tag dropout;
* flip augmentation with cached latents: as sd-scripts, both the image and its mirror are encoded
  once, and each step picks one of the two at random (so caching stays exact and flip still works).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from tagging.captions import read_caption_file
from tagging.errors import DatasetError, UserError
from trainer.latent_cache import LatentCache, file_digest, latent_key
from trainer.plan import plan_epoch


@dataclass(frozen=True)
class TrainImage:
    key: str  # dataset key, e.g. "10_kazari/001.png" (reg images: "reg/<key>")
    path: Path
    caption_path: Path | None
    folder: str  # folder name, e.g. "10_kazari"
    trigger: str  # class tokens from the folder name, used when the caption file is missing
    repeats: int  # times per epoch (reg images: adjusted to balance the training set)
    is_reg: bool
    size: tuple[int, int]  # original (w, h)
    bucket: tuple[int, int]  # training (w, h), multiples of 8
    resized: tuple[int, int] | None = None  # size before the centre crop (None: computed on load)
    folder_repeats: int = 0  # N of the N_name folder (reg images' ``repeats`` are balanced instead)


@dataclass(frozen=True)
class CaptionOptions:
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0


def process_caption(tags: list[str], opts: CaptionOptions, rng: random.Random, epoch: int) -> str:
    """sd-scripts' process_caption order: dropout, then keep_tokens split, shuffle, tag dropout."""
    if opts.caption_dropout_rate > 0 and rng.random() < opts.caption_dropout_rate:
        return ""
    n = opts.caption_dropout_every_n_epochs
    if n > 0 and epoch % n == 0:
        return ""
    if opts.shuffle_caption or opts.caption_tag_dropout_rate > 0:
        fixed, flex = list(tags[: opts.keep_tokens]), list(tags[opts.keep_tokens :])
        if opts.shuffle_caption:
            rng.shuffle(flex)
        if opts.caption_tag_dropout_rate > 0:
            flex = [t for t in flex if rng.random() >= opts.caption_tag_dropout_rate]
        tags = fixed + flex
    return ", ".join(tags)


def decode_problem(path: Path) -> str | None:
    """Why ``path`` cannot be decoded to the end (truncated, damaged, a decompression bomb), or None."""
    try:
        if not path.is_file():
            return "it is not a regular file"
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (64, 64))  # scaled decode: still reads the whole stream, 8x faster
            im.load()
    except Image.DecompressionBombError as exc:
        return f"it is too large to decode safely ({exc})"
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for truncated/garbage data
        return f"it cannot be decoded ({exc})"
    return None


def resize_cover_crop(img: Image.Image, bucket: tuple[int, int],
                      resized: tuple[int, int] | None = None) -> Image.Image:
    """Scale so the image covers the bucket, then centre-crop the overflow (sd-scripts' trim).

    ``resized`` is ``trainer.buckets.Placement.resized`` when known (sd-scripts' rounding)."""
    bw, bh = bucket
    w, h = img.size
    if resized is None:
        scale = max(bw / w, bh / h)
        resized = (max(bw, round(w * scale)), max(bh, round(h * scale)))
    nw, nh = max(bw, resized[0]), max(bh, resized[1])
    if (nw, nh) != (w, h):
        # Area-like filter when shrinking (as cv2.INTER_AREA), Lanczos when enlarging.
        resample = Image.Resampling.BOX if nw < w else Image.Resampling.LANCZOS
        img = img.resize((nw, nh), resample)
    left, top = (nw - bw) // 2, (nh - bh) // 2
    return img.crop((left, top, left + bw, top + bh))


def load_pixels(path: Path, bucket: tuple[int, int], flip: bool = False,
                resized: tuple[int, int] | None = None) -> torch.Tensor:
    """(3, H, W) float tensor in [-1, 1], RGB; transparency is composited on white."""
    try:
        with Image.open(path) as opened:
            im = ImageOps.exif_transpose(opened)
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            img = im.convert("RGB")
    except OSError as exc:
        raise DatasetError(f"Cannot read image {path}: {exc}.", path=path,
                           hint="Re-save it as PNG/JPEG or move it out of the dataset.") from exc
    img = resize_cover_crop(img, bucket, resized)
    if flip:
        img = ImageOps.mirror(img)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class DataPipeline:
    """Images, buckets and per-epoch batches of a dataset; captions and pixels on demand."""

    def __init__(self, images: list[TrainImage], *, batch_size: int, seed: int,
                 captions: CaptionOptions = CaptionOptions(), flip_aug: bool = False,
                 prior_loss_weight: float = 1.0, root: Path | None = None) -> None:
        if not images:
            raise DatasetError("The dataset has no usable training images.",
                               hint="train_data_dir must be the parent of folders named like 10_name.")
        self.images = images
        self.batch_size = max(1, int(batch_size))
        self.seed = int(seed)
        self.captions = captions
        self.flip_aug = flip_aug
        self.prior_loss_weight = float(prior_loss_weight)
        self.root = root
        self._tags: dict[str, list[str]] = {}
        self.warnings: list[str] = []  # images left out / captions not used, one sentence each

    # ----- construction from a config -----------------------------------------------------------
    @classmethod
    def from_config(cls, cfg) -> DataPipeline:
        """Open ``cfg.dataset.train_data_dir`` (and reg_data_dir) with the dataset engine."""
        from tagging.dataset import Dataset

        d = cfg.dataset
        ds = Dataset.open(Path(d.train_data_dir), caption_ext=d.caption_extension,
                          reg_root=Path(d.reg_data_dir) if d.reg_data_dir else None)
        if not any(f.images for f in ds.folders):
            raise DatasetError(
                f"No training images found under {d.train_data_dir}.", path=d.train_data_dir,
                hint="train_data_dir must be the parent of folders named like 10_name holding images.")
        # The same plan the promised step counts come from; here damaged images are found too
        # (decoded now, not when their first batch comes: they must not end the run mid-way).
        plan = plan_epoch(cfg, ds, decode_check=decode_problem)
        warnings = [f"{it.path} is left out of training: {why}. Re-save it as PNG/JPEG or move it out of "
                    "the dataset (`kazari dataset lint` lists such files)." for it, why in plan.left_out]
        images: list[TrainImage] = []
        for p in plan.images:
            it, f = p.item, p.folder
            cap = Path(it.caption_path) if it.caption_path else None
            if cap is not None and (cap.exists() or cap.is_symlink()) and not cap.is_file():
                warnings.append(f"The caption {cap} is not a regular file (a folder, a FIFO or a broken link); "
                                f"{it.path} trains with its folder's class tokens only. Replace it with a text file.")
            images.append(TrainImage(
                key=it.key, path=Path(it.path), caption_path=cap, folder=f.name,
                trigger=getattr(f, "class_tokens", "") or f.trigger or "", repeats=p.repeats, is_reg=p.is_reg,
                size=p.size, bucket=p.placement.bucket, resized=p.placement.resized, folder_repeats=f.repeats))
        if not images and warnings:
            raise DatasetError(f"No training image of {d.train_data_dir} can be read: {warnings[0]}",
                               path=d.train_data_dir)
        opts = CaptionOptions(d.shuffle_caption, d.keep_tokens, d.caption_dropout_rate,
                              d.caption_dropout_every_n_epochs or 0, d.caption_tag_dropout_rate)
        pipe = cls(images, batch_size=cfg.training.train_batch_size, seed=cfg.training.seed or 0,
                   captions=opts, flip_aug=d.flip_aug, prior_loss_weight=d.prior_loss_weight, root=ds.root)
        pipe.warnings = warnings
        return pipe

    # ----- counts ---------------------------------------------------------------------------------
    @property
    def num_train_images(self) -> int:
        return sum(1 for im in self.images if not im.is_reg)

    @property
    def num_reg_images(self) -> int:
        return sum(1 for im in self.images if im.is_reg)

    @property
    def images_per_epoch(self) -> int:
        return sum(im.repeats for im in self.images)

    def bucket_members(self) -> dict[tuple[int, int], list[int]]:
        """Bucket -> image indices, each index repeated ``repeats`` times (sorted bucket order)."""
        out: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(self.images):
            out.setdefault(im.bucket, []).extend([i] * im.repeats)
        return dict(sorted(out.items()))

    @property
    def batches_per_epoch(self) -> int:
        return sum(math.ceil(len(m) / self.batch_size) for m in self.bucket_members().values())

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch`` (1-based) as lists of image indices; a function of seed+epoch."""
        rng = random.Random(self.seed + epoch)
        batches: list[list[int]] = []
        for members in self.bucket_members().values():
            members = list(members)
            rng.shuffle(members)
            batches.extend(members[i : i + self.batch_size] for i in range(0, len(members), self.batch_size))
        rng.shuffle(batches)
        return batches

    # ----- captions ---------------------------------------------------------------------------------
    def reload_captions(self) -> None:
        """Read every caption file again (called at each epoch start).

        Only regular files are read: opening a FIFO would block the run forever."""
        tags: dict[str, list[str]] = {}
        for im in self.images:
            if im.caption_path is not None and im.caption_path.is_file():
                tags[im.key] = read_caption_file(im.caption_path)
            else:
                tags[im.key] = [im.trigger] if im.trigger else []
        self._tags = tags

    def raw_tags(self, index: int) -> list[str]:
        if not self._tags:
            self.reload_captions()
        return self._tags[self.images[index].key]

    def caption(self, index: int, rng: random.Random, epoch: int) -> str:
        return process_caption(self.raw_tags(index), self.captions, rng, epoch)

    def sample_weights(self, batch: Sequence[int]) -> list[float]:
        return [self.prior_loss_weight if self.images[i].is_reg else 1.0 for i in batch]

    # ----- metadata helpers --------------------------------------------------------------------
    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """sd-scripts' ss_tag_frequency: {folder: {tag (lowercase): images carrying it}}."""
        out: dict[str, dict[str, int]] = {}
        for i, im in enumerate(self.images):
            if im.is_reg:
                continue
            freq = out.setdefault(im.folder, {})
            for tag in self.raw_tags(i):
                t = tag.strip().lower()
                if t:
                    freq[t] = freq.get(t, 0) + 1
        return out

    def dataset_dirs(self, reg: bool = False) -> dict[str, dict[str, int]]:
        """sd-scripts' ss_dataset_dirs: {folder: {"n_repeats": N, "img_count": M}}."""
        out: dict[str, dict[str, int]] = {}
        for im in self.images:
            if im.is_reg != reg:
                continue
            # sd-scripts writes the folder's own repeats, also for regularisation folders.
            entry = out.setdefault(im.folder, {"n_repeats": im.folder_repeats or im.repeats, "img_count": 0})
            entry["img_count"] += 1
        return out

    def bucket_info(self) -> dict:
        members = self.bucket_members()
        return {"buckets": {str(i): {"resolution": list(b), "count": len(m)}
                            for i, (b, m) in enumerate(members.items())}}

    # ----- latents ----------------------------------------------------------------------------------
    def cache_keys(self, vae_id: str) -> list[tuple[str, ...]]:
        """Per image: the latent cache key(s) (two with flip_aug: plain and mirrored)."""
        keys = []
        for im in self.images:
            digest = file_digest(im.path)
            variants = (False, True) if self.flip_aug else (False,)
            keys.append(tuple(latent_key(digest, im.bucket, f, vae_id, im.resized) for f in variants))
        return keys


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE-encode (B,3,H,W) pixels in [-1,1] to scaled latents (a sample of the posterior)."""
    dist = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
    noise = torch.randn(dist.mean.shape, generator=generator, device=dist.mean.device, dtype=dist.mean.dtype)
    latents = dist.mean + dist.std * noise
    return latents * float(vae.config.scaling_factor)


def _seed_from_key(key: str) -> int:
    return int(key[:15], 16)


def fill_latent_cache(pipe: DataPipeline, cache: LatentCache, vae, vae_id: str, *,
                      on_progress: Callable[[int, int, int], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> list[tuple[str, ...]]:
    """Encode every image (and mirror) not yet cached; returns the keys per image.

    Each image is encoded alone (a batch of one) and the posterior sample of each latent is seeded
    from its key, so a cached latent is bit-identical whatever else is encoded, in which order, and
    whether it came from disk or was just computed: the VAE's output for a batch of 4 differs from
    single images by ~1e-6 (batched kernels), which made a cache refilled after a kill differ.
    """
    keys = pipe.cache_keys(vae_id)
    todo: list[tuple[int, int]] = []  # (image index, variant)
    reused = 0
    for i, ks in enumerate(keys):
        for v, k in enumerate(ks):
            if cache.get(k) is None:
                todo.append((i, v))
            else:
                reused += 1
    total = sum(len(ks) for ks in keys)
    done = reused
    if on_progress:
        on_progress(done, total, reused)
    for i, v in todo:
        if should_stop and should_stop():
            return keys
        im = pipe.images[i]
        pixels = load_pixels(im.path, im.bucket, v == 1, im.resized)[None]
        with torch.no_grad():
            dist = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
        key = keys[i][v]
        g = torch.Generator(device=dist.mean.device).manual_seed(_seed_from_key(key))
        noise = torch.randn(dist.mean[0].shape, generator=g, device=dist.mean.device, dtype=dist.mean.dtype)
        latent = (dist.mean[0] + dist.std[0] * noise) * float(vae.config.scaling_factor)
        if not torch.isfinite(latent).all():
            raise UserError(
                f"The VAE produced NaN/inf latents for {im.path}.",
                hint="This is the classic fp16 VAE overflow: load the VAE in fp32 (no half VAE) "
                "or use an fp16-fixed VAE ([model] vae).")
        cache.put(key, latent.float())
        done += 1
        if on_progress:
            on_progress(done, total, reused)
    return keys


def iter_batch_items(batch: Sequence[int], rng: random.Random, flip_aug: bool) -> Iterator[tuple[int, bool]]:
    """(image index, flip?) per batch member; the flip coin comes from the run's caption RNG."""
    for i in batch:
        yield i, (flip_aug and rng.random() < 0.5)
