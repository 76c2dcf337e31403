"""The data pipeline: buckets in batches, per-epoch order, repeats, reg images, captions, latent cache."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_train_support import make_config, tiny_dataset, write_images

from trainer.data import (
    CaptionOptions,
    DataPipeline,
    fill_latent_cache,
    load_pixels,
    process_caption,
)
from trainer.latent_cache import LatentCache


def _pipeline(tmp_path: Path, **dataset) -> DataPipeline:
    cfg = make_config(tmp_path / "no-model", tmp_path / "data", tmp_path / "out", dataset=dataset)
    return DataPipeline.from_config(cfg)


@pytest.fixture
def mixed_sizes(tmp_path: Path) -> Path:
    # 128x128 -> (128,128); 192x64 -> (192,64); 64x192 -> (64,192) at resolution 128 (min 64, max 256).
    tiny_dataset(tmp_path / "data", n=9, repeats=3, sizes=[(128, 128), (192, 64), (64, 192)])
    return tmp_path


def test_batches_never_mix_buckets_and_repeats_are_counted(mixed_sizes: Path) -> None:
    pipe = _pipeline(mixed_sizes, resolution="128,128", min_bucket_reso=64, max_bucket_reso=256)
    pipe.batch_size = 2
    assert {im.bucket for im in pipe.images} == {(128, 128), (192, 64), (64, 192)}
    assert pipe.images_per_epoch == 27
    batches = pipe.epoch_batches(1)
    for batch in batches:
        assert len({pipe.images[i].bucket for i in batch}) == 1, "a batch mixed buckets"
        assert 1 <= len(batch) <= 2
    seen = Counter(i for b in batches for i in b)
    assert all(seen[i] == 3 for i in range(9)), "each image must appear `repeats` times per epoch"
    # 9 images per bucket (3 each x 3 repeats) -> ceil(9/2) = 5 batches per bucket.
    assert len(batches) == pipe.batches_per_epoch == 15
    # Loaded pixels have the bucket's size.
    for i in (0, 1, 2):
        im = pipe.images[i]
        px = load_pixels(im.path, im.bucket, resized=im.resized)
        assert tuple(px.shape) == (3, im.bucket[1], im.bucket[0])
        assert float(px.min()) >= -1.0 and float(px.max()) <= 1.0


def test_epoch_order_is_reproducible_and_changes_each_epoch(mixed_sizes: Path) -> None:
    pipe = _pipeline(mixed_sizes, resolution="128,128", min_bucket_reso=64, max_bucket_reso=256)
    again = _pipeline(mixed_sizes, resolution="128,128", min_bucket_reso=64, max_bucket_reso=256)
    assert pipe.epoch_batches(1) == again.epoch_batches(1)
    assert pipe.epoch_batches(1) != pipe.epoch_batches(2)
    again.seed += 1
    assert pipe.epoch_batches(1) != again.epoch_batches(1)


def test_keep_tokens_shuffle_and_dropouts() -> None:
    tags = ["kazari", "1girl", "smile", "hat", "pink hair"]
    opts = CaptionOptions(shuffle_caption=True, keep_tokens=1)
    rng = random.Random(0)
    orders = set()
    for _ in range(200):
        out = process_caption(tags, opts, rng, epoch=1).split(", ")
        assert out[0] == "kazari" and sorted(out) == sorted(tags)
        orders.add(tuple(out))
    assert len(orders) > 10, "the flexible tags were not shuffled"
    two = CaptionOptions(shuffle_caption=True, keep_tokens=2)
    assert all(process_caption(tags, two, rng, 1).split(", ")[:2] == ["kazari", "1girl"] for _ in range(50))
    # Tag dropout never drops kept tags, and drops about the asked fraction of the others.
    drop = CaptionOptions(keep_tokens=1, caption_tag_dropout_rate=0.5)
    kept = [process_caption(tags, drop, rng, 1).split(", ") for _ in range(400)]
    assert all(k[0] == "kazari" for k in kept)
    frac = sum(len(k) - 1 for k in kept) / (400 * 4)
    assert 0.4 < frac < 0.6
    # No shuffle and no dropout: the caption is the tags in order.
    assert process_caption(tags, CaptionOptions(), rng, 1) == ", ".join(tags)
    assert process_caption(tags, CaptionOptions(caption_dropout_rate=1.0), rng, 1) == ""
    every2 = CaptionOptions(caption_dropout_every_n_epochs=2)
    assert process_caption(tags, every2, rng, 1) != "" and process_caption(tags, every2, rng, 2) == ""


def test_captions_are_reread_each_epoch_and_missing_caption_uses_trigger(tmp_path: Path) -> None:
    write_images(tmp_path / "data" / "2_kazari girl", {"a.png": "kazari, smile", "b.png": None})
    pipe = _pipeline(tmp_path, shuffle_caption=False)
    a = next(i for i, im in enumerate(pipe.images) if im.path.name == "a.png")
    b = next(i for i, im in enumerate(pipe.images) if im.path.name == "b.png")
    pipe.reload_captions()
    assert pipe.raw_tags(a) == ["kazari", "smile"]
    assert pipe.raw_tags(b) == ["kazari girl"]  # sd-scripts: class tokens from the folder name
    (tmp_path / "data" / "2_kazari girl" / "a.txt").write_text("kazari, frown, hat", encoding="utf-8")
    assert pipe.raw_tags(a) == ["kazari", "smile"]  # not before the next epoch starts
    pipe.reload_captions()
    assert pipe.raw_tags(a) == ["kazari", "frown", "hat"]
    assert pipe.tag_frequency() == {"2_kazari girl": {"kazari": 1, "frown": 1, "hat": 1, "kazari girl": 1}}
    assert pipe.dataset_dirs() == {"2_kazari girl": {"n_repeats": 2, "img_count": 2}}


def test_regularisation_images_balance_the_training_count(tmp_path: Path) -> None:
    tiny_dataset(tmp_path / "data", n=3, repeats=2)  # 6 training images per epoch
    write_images(tmp_path / "reg" / "1_girl", {"r1.png": "1girl", "r2.png": "1girl"}, seed=9)
    pipe = _pipeline(tmp_path, reg_data_dir=str(tmp_path / "reg"), prior_loss_weight=0.5)
    reg = [im for im in pipe.images if im.is_reg]
    assert len(reg) == 2 and sum(im.repeats for im in reg) == 6
    assert pipe.images_per_epoch == 12 and pipe.num_reg_images == 2 and pipe.num_train_images == 3
    weights = pipe.sample_weights(list(range(len(pipe.images))))
    assert weights == [0.5 if im.is_reg else 1.0 for im in pipe.images]
    # ss_reg_dataset_dirs carries the folder's repeats (1_girl -> 1), as sd-scripts writes it.
    assert pipe.dataset_dirs(reg=True) == {"1_girl": {"n_repeats": 1, "img_count": 2}}
    # sd-scripts' round-robin: first the folder repeats, then +1 each until the count is reached.
    from trainer.config.derived import balanced_reg_repeats

    assert balanced_reg_repeats([1, 1, 1], 7) == [3, 2, 2]
    assert balanced_reg_repeats([5], 3) == [5]
    assert balanced_reg_repeats([], 3) == []


def _tiny_vae():
    from diffusers import AutoencoderKL

    from trainer.tiny import tiny_vae_config

    torch.manual_seed(0)
    return AutoencoderKL(**tiny_vae_config()).eval()


def test_latent_cache_is_keyed_by_content_and_reused_from_disk(tmp_path: Path) -> None:
    tiny_dataset(tmp_path / "data", n=2)
    pipe = _pipeline(tmp_path, flip_aug=True)
    vae = _tiny_vae()
    cache_dir = tmp_path / "cache"
    progress = []
    keys = fill_latent_cache(pipe, LatentCache("disk", cache_dir), vae, "vae1",
                             on_progress=lambda d, t, r: progress.append((d, t, r)))
    assert progress[0] == (0, 4, 0) and progress[-1] == (4, 4, 0)
    assert all(len(k) == 2 and k[0] != k[1] for k in keys)  # flip_aug: plain and mirrored latents
    assert len(list(cache_dir.glob("*.safetensors"))) == 4
    first = LatentCache("disk", cache_dir)
    progress.clear()
    fill_latent_cache(pipe, first, vae, "vae1", on_progress=lambda d, t, r: progress.append((d, t, r)))
    assert progress == [(4, 4, 4)]  # everything reused, nothing encoded
    # The mirrored latent is the encoding of the mirrored image, not a flipped latent.
    lat = first.get(keys[0][0])
    assert tuple(lat.shape) == (4, 8, 8)
    # Editing an image changes its key: the stale latent is never used.
    path = pipe.images[0].path
    Image.new("RGB", (64, 64), (10, 200, 30)).save(path)
    keys2 = pipe.cache_keys("vae1")
    assert keys2[0] != keys[0] and keys2[1] == keys[1]
    progress.clear()
    second = LatentCache("disk", cache_dir)
    fill_latent_cache(pipe, second, vae, "vae1", on_progress=lambda d, t, r: progress.append((d, t, r)))
    assert progress[0] == (2, 4, 2) and progress[-1] == (4, 4, 2)
    assert not torch.equal(second.get(keys2[0][0]), lat)
    # Another VAE -> other keys.
    assert pipe.cache_keys("vae2")[1] != keys[1]


def test_cached_latents_do_not_depend_on_encoding_order(tmp_path: Path) -> None:
    tiny_dataset(tmp_path / "data", n=3)
    pipe = _pipeline(tmp_path)
    vae = _tiny_vae()
    a, b = LatentCache("memory"), LatentCache("memory")
    keys = fill_latent_cache(pipe, a, vae, "v", batch_size=3)
    fill_latent_cache(pipe, b, vae, "v", batch_size=1)
    for (k,) in keys:
        assert torch.allclose(a.get(k), b.get(k), atol=1e-5)


def test_flip_loads_the_mirror_image(tmp_path: Path) -> None:
    write_images(tmp_path / "img", {"x.png": None}, size=(64, 64))
    path = tmp_path / "img" / "x.png"
    plain = load_pixels(path, (64, 64))
    flipped = load_pixels(path, (64, 64), flip=True)
    assert torch.equal(plain.flip(-1), flipped)


def test_no_images_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data" / "5_empty").mkdir(parents=True)
    from tagging.errors import UserError

    with pytest.raises(UserError, match="train_data_dir"):
        _pipeline(tmp_path)


def test_exif_rotated_photo_gets_the_bucket_of_its_upright_shape(tmp_path: Path) -> None:
    # A phone photo: stored 192x64 (landscape) with EXIF "rotate 90" -> shown 64x192 (portrait).
    folder = tmp_path / "data" / "2_char"
    folder.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (192, 64), (200, 30, 30)).save(folder / "photo.jpg", exif=exif.tobytes())
    (folder / "photo.txt").write_text("char, 1girl", encoding="utf-8")
    pipe = _pipeline(tmp_path, resolution="128,128", min_bucket_reso=64, max_bucket_reso=256)
    (im,) = pipe.images
    assert im.size == (64, 192)
    bw, bh = im.bucket
    assert bh > bw  # portrait bucket, so the upright image is not squashed
    pixels = load_pixels(im.path, im.bucket, resized=im.resized)
    assert pixels.shape == (3, bh, bw)


def test_promised_batches_are_the_batches_run(tmp_path: Path) -> None:
    """Config screen / `config show` figures and the trainer share one epoch plan (trainer.plan)."""
    from trainer.config.derived import derived_figures

    data = tmp_path / "data"
    (data / "3_kazari").mkdir(parents=True)
    (data / "reg" / "1_girl").mkdir(parents=True)
    for i, size in enumerate([(64, 64), (64, 64), (128, 64)]):
        Image.new("RGB", size, "white").save(data / "3_kazari" / f"{i}.png")
        (data / "3_kazari" / f"{i}.txt").write_text("kazari, 1girl\n")
    # A phone photo stored 128x64 but shown (and trained) upright as 64x128.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (128, 64), "white").save(data / "3_kazari" / "phone.jpg", exif=exif)
    (data / "3_kazari" / "bad.png").write_bytes(b"not an image at all")  # header unreadable: left out
    for i in range(2):
        Image.new("RGB", (64, 64), "gray").save(data / "reg" / "1_girl" / f"r{i}.png")
    cfg = make_config(tmp_path / "no-model", data, tmp_path / "out",
                      dataset={"reg_data_dir": str(data / "reg"), "enable_bucket": True,
                               "resolution": "128,128", "max_bucket_reso": 256},
                      training={"train_batch_size": 2})
    pipeline = DataPipeline.from_config(cfg)
    figures = derived_figures(cfg)
    assert pipeline.batches_per_epoch == figures.batches_per_epoch
    assert pipeline.images_per_epoch == figures.samples_per_epoch == 2 * 4 * 3  # reg balanced to 12
    phone = next(im for im in pipeline.images if im.key.endswith("phone.jpg"))
    assert phone.bucket == (64, 192)  # a portrait bucket, in both the plan and the figures
    assert figures.buckets.get(phone.bucket) == 3
