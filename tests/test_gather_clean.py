"""Background removal: each preprocessing step, a tiny colour-key ONNX model end to end, undo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tagging.dataset import Dataset
from tagging.errors import UserError
from tagging.gather.clean import CleanOptions, clean_dataset
from tagging.gather.segment import (
    Segmenter,
    fit_size,
    postprocess,
    preprocess,
    resize_bilinear,
    resolve_seg_model,
    subject_box,
)
from tagging.gather.tiny_seg import build_colour_key_model

BLUE, RED = (0, 0, 255), (255, 0, 0)


def subject_picture(w: int = 120, h: int = 80, box=(30, 20, 70, 60)) -> np.ndarray:
    """A red rectangle (the "character") on a blue background."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:] = BLUE
    left, top, right, bottom = box
    arr[top:bottom, left:right] = RED
    return arr


# ---- each step, as the reference get_mask does it ----
def test_fit_size_truncates_the_short_side_like_the_reference():
    assert fit_size(100, 200, 64) == (32, 64)
    assert fit_size(300, 200, 1024) == (1024, 682)  # int(1024 * 200 / 300) = 682 (not rounded to 683)
    assert fit_size(50, 50, 64) == (64, 64)


def test_bilinear_matches_opencv_half_pixel_rule():
    row = np.array([[0.0, 100.0]], dtype=np.float32)
    # Upscale 2 -> 4: samples at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
    assert resize_bilinear(row, 4, 1)[0].tolist() == [0.0, 25.0, 75.0, 100.0]
    # Downscale 4 -> 2 without antialiasing: samples at 0.5 and 2.5.
    assert resize_bilinear(np.array([[0.0, 10.0, 20.0, 30.0]]), 2, 1)[0].tolist() == [5.0, 25.0]


def test_preprocess_range_layout_padding_and_channel_order():
    rgb = np.zeros((100, 200, 3), dtype=np.uint8)
    rgb[:] = (255, 128, 0)
    tensor, geom = preprocess(rgb, 64)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == np.float32  # NCHW without the batch axis
    assert (geom.h, geom.w, geom.top, geom.left) == (32, 64, 16, 0)
    assert np.allclose(tensor[:, 16:48, :].reshape(3, -1).T, [1.0, 128 / 255, 0.0])  # RGB, 0..1
    assert not tensor[:, :16].any() and not tensor[:, 48:].any()  # black padding, centred


def test_postprocess_crops_the_padding_and_resizes_back():
    geom = preprocess(np.zeros((100, 200, 3), np.uint8), 64)[1]
    pred = np.zeros((1, 64, 64), dtype=np.float32)
    pred[0, 16:48, 32:] = 1.0  # right half of the pasted area
    mask = postprocess(pred, geom)
    assert mask.shape == (100, 200)
    assert mask[:, :98].max() == 0 and mask[:, 102:].min() == 1


def test_subject_box_margin():
    mask = np.zeros((100, 100), np.float32)
    mask[20:60, 40:60] = 1
    assert subject_box(mask, 0.0) == (40, 20, 60, 60)
    assert subject_box(mask, 0.1) == (38, 16, 62, 64)
    assert subject_box(np.zeros((5, 5)), 0.1) is None


# ---- the tiny model end to end ----
@pytest.fixture
def seg_model(tmp_path):
    (tmp_path / "models").mkdir()
    return build_colour_key_model(tmp_path / "models" / "seg.onnx", size=48)


def test_tiny_model_mask_is_the_subject(seg_model):
    seg = Segmenter(seg_model)
    assert seg.size == 48  # read from the model
    mask = seg.mask(subject_picture())
    assert mask.shape == (80, 120)
    assert mask[25:55, 35:65].min() > 0.99  # inside the red box
    assert mask[:15].max() < 0.01 and mask[:, :25].max() < 0.01 and mask[:, 75:].max() < 0.01


def _dataset(tmp_path, images: dict[str, np.ndarray], fmt="PNG"):
    folder = tmp_path / "ds" / "5_kazari"
    folder.mkdir(parents=True)
    for name, arr in images.items():
        Image.fromarray(arr).save(folder / name, fmt)
        (folder / name).with_suffix(".txt").write_text("kazari, 1girl\n")
    return tmp_path / "ds"


def test_clean_white_crop_undo_redo(tmp_path, seg_model):
    flat = np.zeros((64, 64, 3), np.uint8)
    flat[:] = BLUE  # nothing but background: an empty mask
    full = np.zeros((64, 64, 3), np.uint8)
    full[:] = RED  # subject everywhere: a full mask
    root = _dataset(tmp_path, {"a.png": subject_picture(), "empty.png": flat, "full.png": full})
    original = (root / "5_kazari" / "a.png").read_bytes()
    ds = Dataset.open(root)
    report = clean_dataset(ds, CleanOptions(remove_bg=True, crop=True, margin=0.1), Segmenter(seg_model))
    assert report.empty == ["5_kazari/empty.png"] and report.full == ["5_kazari/full.png"]
    assert list(report.changed) == ["5_kazari/a.png"]
    with Image.open(root / "5_kazari" / "a.png") as im:
        out = np.asarray(im.convert("RGB"))
    # Box 40x40 grown by 10% (4 px) each side -> 48x48; the blue background became white.
    assert out.shape == (48, 48, 3)
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[24, 24]) == RED
    assert (root / "5_kazari" / "empty.png").exists() and (root / "5_kazari" / "a.txt").read_text() == "kazari, 1girl\n"
    # One undo step brings the original back byte for byte; redo re-applies it.
    assert ds.history[-1].kind == "images"
    ds.undo()
    assert (root / "5_kazari" / "a.png").read_bytes() == original
    ds2 = Dataset.open(root)  # redo works after a restart too (the history is on disk)
    ds2.redo()
    with Image.open(root / "5_kazari" / "a.png") as im:
        assert im.size == (48, 48)


def test_transparent_jpeg_becomes_png_and_undo_restores_the_jpeg(tmp_path, seg_model):
    root = _dataset(tmp_path, {"b.jpg": subject_picture()}, fmt="JPEG")
    ds = Dataset.open(root)
    clean_dataset(ds, CleanOptions(remove_bg=True, background="transparent"), Segmenter(seg_model))
    folder = root / "5_kazari"
    assert sorted(p.name for p in folder.iterdir()) == ["b.png", "b.txt"]
    with Image.open(folder / "b.png") as im:
        assert im.mode == "RGBA" and im.getpixel((0, 0))[3] == 0 and im.getpixel((50, 40))[3] == 255
    assert [i.key for i in ds.images] == ["5_kazari/b.png"]
    ds.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["b.jpg", "b.txt"]
    assert [i.key for i in ds.images] == ["5_kazari/b.jpg"]


def test_dry_run_where_max_side_min_side_and_dedupe(tmp_path, seg_model):
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    root = _dataset(tmp_path, {"big.png": big, "copy.png": big, "small.png": subject_picture(40, 30, (5, 5, 20, 20))})
    (root / "5_kazari" / "small.txt").write_text("kazari, hat\n")
    ds = Dataset.open(root)
    dry = clean_dataset(ds, CleanOptions(max_side=150, dry_run=True))
    assert set(dry.changed) == {"5_kazari/big.png", "5_kazari/copy.png"} and dry.change is None
    assert Image.open(root / "5_kazari" / "big.png").size == (200, 300)
    only_hat = clean_dataset(ds, CleanOptions(remove_bg=True, where="hat", dry_run=True), Segmenter(seg_model))
    assert list(only_hat.changed) == ["5_kazari/small.png"]
    report = clean_dataset(ds, CleanOptions(max_side=150, min_side=35, dedupe=True))
    assert report.duplicates == [("5_kazari/copy.png", "5_kazari/big.png")] and report.small == ["5_kazari/small.png"]
    assert Image.open(root / "5_kazari" / "big.png").size == (100, 150)
    assert sorted(p.name for p in (root / "5_kazari").iterdir()) == ["big.png", "big.txt"]
    assert (root / ".kazari" / "trash" / "5_kazari" / "copy.png").exists()


def test_model_resolution_errors(tmp_path, monkeypatch):
    from tagging.gather import segment

    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(UserError, match="not an .onnx"):
        resolve_seg_model(tmp_path / "x.txt")
    monkeypatch.setattr(segment, "hub_files", lambda *a, **k: (_ for _ in ()).throw(UserError("offline: hf download")))
    with pytest.raises(UserError, match="hf download"):
        resolve_seg_model("anime-seg")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(UserError, match="Cannot load the segmentation model"):
        Segmenter(bad)


def test_offline_message_names_the_download(tmp_path, monkeypatch):
    from tagging import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hf_offline", lambda: True)
    with pytest.raises(UserError) as err:
        resolve_seg_model("anime-seg", cache_dir=tmp_path / "empty-cache")
    assert "skytnt/anime-seg" in str(err.value) and "isnetis.onnx" in str(err.value)


def test_cli_clean_json(tmp_path, seg_model, capsys):
    from tui.cli import main

    root = _dataset(tmp_path, {"a.png": subject_picture()})
    original = (root / "5_kazari" / "a.png").read_bytes()
    code = main(["clean", str(root), "--remove-bg", "--model", str(seg_model), "--crop", "subject", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["counts"]["changed"] == 1 and out["changed"][0]["key"] == "5_kazari/a.png"
    assert out["input_size"] == 48
    assert main(["dataset", "undo", str(root)]) == 0
    assert (root / "5_kazari" / "a.png").read_bytes() == original
    capsys.readouterr()
    assert main(["clean", str(root), "--crop", "subject"]) == 2
    assert "--remove-bg" in capsys.readouterr().err


def test_cancel_stops_after_the_current_batch_and_keeps_what_is_done(tmp_path, seg_model):
    import threading

    pictures = {f"{i}.png": subject_picture(box=(30 + i, 20, 70, 60)) for i in range(6)}
    root = _dataset(tmp_path, pictures)
    ds = Dataset.open(root)
    cancel = threading.Event()
    report = clean_dataset(ds, CleanOptions(remove_bg=True, batch_size=1, workers=1), Segmenter(seg_model),
                           on_progress=lambda p: cancel.set(), cancel=cancel)
    assert report.cancelled and report.changed and report.untouched
    assert len(report.changed) + len(report.untouched) == 6
    assert len(ds.history[-1].extra["files"]) == len(report.changed)  # what was done is one undo step


def test_fixed_batch_model_and_bad_input_shapes(tmp_path):
    fixed = Segmenter(build_colour_key_model(tmp_path / "one.onnx", size=40, batch=1))
    assert fixed.fixed_batch == 1 and fixed.size == 40
    batch = np.zeros((3, 3, 40, 40), np.float32)
    assert fixed.predict(batch).shape == (3, 40, 40)  # split into model-sized calls
    root = _dataset(tmp_path, {f"{i}.png": subject_picture() for i in range(3)})
    report = clean_dataset(Dataset.open(root), CleanOptions(remove_bg=True, batch_size=4), fixed)
    assert len(report.changed) == 3
    with pytest.raises(UserError, match=r"\[batch, 3, size, size\]"):
        Segmenter(build_colour_key_model(tmp_path / "dyn.onnx", size="S"))  # type: ignore[arg-type]
