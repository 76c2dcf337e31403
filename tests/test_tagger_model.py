"""End to end through onnxruntime with the tiny tagger: its scores are a closed-form function of
the pixels, so these tests prove white background/padding, input size, BGR, 0..255 and NHWC."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tagging.errors import UserError
from tagging.tagger import Tagger, TagOptions, select_tags, tiny
from tagging.tagger.models import resolve_model


@pytest.fixture(scope="module")
def model32(tmp_path_factory):
    return tiny.build_tiny_tagger(tmp_path_factory.mktemp("tiny32"), size=32)


@pytest.fixture(scope="module")
def tagger32(model32):
    return Tagger.load(model32, device="cpu")


def _scores(tagger: Tagger, img: Image.Image, tmp_path) -> dict[str, float]:
    path = tmp_path / "img.png"
    img.save(path)
    run = tagger.score_images([("k", path)], batch_size=1)
    assert not run.failed
    return dict(zip(tagger.labels.names, run.scores["k"].tolist(), strict=True))


def _character_image(size: int, hair: tuple[int, int, int], background=(255, 255, 255)) -> Image.Image:
    img = Image.new("RGB", (size, size), background)
    left, top, right, bottom = tiny.hair_box(size)
    m = max(2, size // 8)  # hair extends past the region, as in tagging.synthetic, so resizing keeps it exact
    img.paste(Image.new("RGB", (right - left + 2 * m, bottom - top + 2 * m), hair), (left - m, top - m))
    return img


def test_onnx_graph_computes_the_closed_form(model32):
    import onnxruntime as ort

    spec = tiny.tiny_spec(32)
    sess = ort.InferenceSession(str(model32 / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    assert np.allclose(sess.run(None, {"input": x})[0], tiny.reference_scores(x, spec), atol=1e-5)


def test_size_is_read_from_the_model(tmp_path):
    for size in (24, 40):
        tagger = Tagger.load(tiny.build_tiny_tagger(tmp_path / str(size), size=size), device="cpu")
        assert tagger.size == size
        scores = _scores(tagger, _character_image(100, (245, 140, 190)), tmp_path)
        assert scores["pink_hair"] > 0.95


def test_bgr_channel_order(tagger32, tmp_path):
    scores = _scores(tagger32, _character_image(32, (210, 40, 40)), tmp_path)  # red hair
    assert scores["red_hair"] > 0.99
    assert scores["blue_hair"] < 0.01  # what an RGB/BGR mix-up would report


def test_range_is_0_255_not_normalised(tagger32, tmp_path):
    scores = _scores(tagger32, Image.new("RGB", (32, 32), (100, 100, 100)), tmp_path)
    assert scores["white_border"] == pytest.approx(tiny.WHITE_BORDER_GAIN * 100 / 255, abs=1e-5)


def test_padding_is_white_and_centred(tagger32, tmp_path):
    # A black 64x32 landscape image: the corners of the padded square are padding only.
    scores = _scores(tagger32, Image.new("RGB", (64, 32), (0, 0, 0)), tmp_path)
    assert scores["white_border"] == pytest.approx(tiny.WHITE_BORDER_GAIN, abs=1e-5)
    # Centred: the hair region of a 1:2 crop of a square character still finds the hair.
    square = _character_image(64, (70, 110, 230))
    crop = square.crop((16, 0, 48, 64))  # centred portrait crop, as tagging.synthetic makes
    scores = _scores(tagger32, crop, tmp_path)
    assert scores["blue_hair"] > 0.95


def test_transparency_is_white(tagger32, tmp_path):
    scores = _scores(tagger32, Image.new("RGBA", (32, 32), (0, 0, 0, 0)), tmp_path)
    assert scores["white_border"] == pytest.approx(tiny.WHITE_BORDER_GAIN, abs=1e-5)
    assert scores["white_background"] > 0.99


def test_thresholds_end_to_end(tagger32, tmp_path):
    path = tmp_path / "grey.png"
    Image.new("RGB", (32, 32), (200, 200, 200)).save(path)  # white_border = 0.3*200/255 = 0.235
    scores = tagger32.score_images([("g", path)]).scores["g"]
    assert "white_border" in select_tags(scores, tagger32.labels, TagOptions(general=0.23)).tags
    assert "white_border" not in select_tags(scores, tagger32.labels, TagOptions(general=0.24)).tags


def test_character_tag_only_for_the_characters_hair(tagger32, tmp_path):
    pink = _scores(tagger32, _character_image(32, (245, 140, 190)), tmp_path)
    purple = _scores(tagger32, _character_image(32, (150, 80, 200)), tmp_path)
    assert pink["uiharu_kazari"] > 0.85 > purple["uiharu_kazari"]


def test_deepdanbooru_profile_detected_from_tags_txt(tmp_path):
    tagger = Tagger.load(tiny.build_tiny_tagger(tmp_path / "dd", size=32, profile="deepdanbooru"), device="cpu")
    assert tagger.profile.name == "deepdanbooru"
    assert tagger.labels.names[0] == "rating:safe"
    scores = _scores(tagger, _character_image(32, (210, 40, 40)), tmp_path)
    assert scores["red_hair"] > 0.99 and scores["uiharu_kazari"] < 0.5


def test_channels_first_export_gets_a_transposed_batch(tmp_path):
    tagger = Tagger.load(tiny.build_tiny_tagger(tmp_path / "nchw", size=32, nchw=True), device="cpu")
    assert tagger.spec.nchw and tagger.size == 32
    scores = _scores(tagger, _character_image(32, (210, 40, 40)), tmp_path)
    assert scores["red_hair"] > 0.99 and scores["blue_hair"] < 0.01


def test_fixed_batch_export_is_fed_one_model_batch_at_a_time(tmp_path):
    tagger = Tagger.load(tiny.build_tiny_tagger(tmp_path / "b1", size=32, batch=2), device="cpu")
    assert tagger.spec.fixed_batch == 2
    items = []
    for i, colour in enumerate([(210, 40, 40), (70, 110, 230), (60, 170, 90)]):  # odd count: padded batch
        p = tmp_path / f"f{i}.png"
        _character_image(32, colour).save(p)
        items.append((str(i), p))
    run = tagger.score_images(items, batch_size=8)
    hair = list(tiny.HAIR_COLOURS)
    idx = [tagger.labels.names.index(t) for t in hair]
    top = {k: hair[int(np.argmax(v[idx]))] for k, v in run.scores.items()}
    assert top == {"0": "red_hair", "1": "blue_hair", "2": "green_hair"}


def test_profile_option_overrides(model32):
    assert Tagger.load(model32, device="cpu", profile="deepdanbooru").profile.name == "deepdanbooru"


def test_batched_equals_single(tagger32, tmp_path):
    rng = np.random.default_rng(3)
    items = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(p)
        items.append((str(i), p))
    batched = tagger32.score_images(items, batch_size=4, workers=2)
    single = tagger32.score_images(items, batch_size=1, workers=1)
    for k, _ in items:
        assert np.allclose(batched.scores[k], single.scores[k], atol=1e-6)


def test_unreadable_image_is_reported_and_skipped(tagger32, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (8, 8)).save(good)
    bad.write_bytes(b"\x89PNG broken")
    run = tagger32.score_images([("bad", bad), ("good", good), ("gone", tmp_path / "missing.png")])
    assert set(run.scores) == {"good"}
    reasons = dict(run.failed)
    assert "not a readable image" in reasons["bad"] and "cannot read" in reasons["gone"]


def test_progress_and_cancel(tagger32, tmp_path, monkeypatch):
    """Contract: after cancel, at most the one batch already at the model is scored."""
    import threading

    items = []
    for i in range(12):
        p = tmp_path / f"c{i}.png"
        Image.new("RGB", (8, 8), (i, i, i)).save(p)
        items.append((f"c{i}", p))
    real_predict, real_prepare = tagger32.predict, tagger32.prepare
    for _ in range(10):
        prepared = threading.Semaphore(0)
        calls = []

        def prepare(data, prepared=prepared):
            out = real_prepare(data)
            prepared.release()
            return out

        def predict(batch, calls=calls, prepared=prepared):
            # The first batch waits until the next two batches' images are ready, so they queue up
            # behind it: the case where a cancel used to let every queued batch through.
            if not calls:
                for _ in range(6):
                    assert prepared.acquire(timeout=10)
            calls.append(len(batch))
            return real_predict(batch)

        monkeypatch.setattr(tagger32, "prepare", prepare)
        monkeypatch.setattr(tagger32, "predict", predict)
        cancel = threading.Event()
        seen = []

        def on_progress(p, seen=seen, cancel=cancel):
            seen.append(p.done)
            cancel.set()  # cancel as the first batch is reported

        run = tagger32.score_images(items, batch_size=2, workers=2, on_progress=on_progress, cancel=cancel)
        assert run.cancelled and seen[0] == 2
        assert len(run.scores) in (2, 4), len(run.scores)  # the reported batch + at most one more
        assert seen[-1] == len(run.scores) == 2 * len(calls)


# ---- bad models -----------------------------------------------------------------------------

def test_csv_row_count_mismatch(tmp_path):
    folder = tiny.build_tiny_tagger(tmp_path / "m", size=16)
    csv = (folder / "selected_tags.csv").read_text().splitlines()
    (folder / "selected_tags.csv").write_text("\n".join(csv[:-1]) + "\n")
    with pytest.raises(UserError, match="tags but the model"):
        Tagger.load(folder, device="cpu")


def test_corrupt_model_is_user_error(tmp_path):
    folder = tiny.build_tiny_tagger(tmp_path / "m", size=16)
    (folder / "model.onnx").write_bytes(b"garbage" * 10)
    with pytest.raises(UserError, match="Cannot load the tagger model"):
        Tagger.load(folder, device="cpu")


def test_missing_tag_list_is_user_error(tmp_path):
    folder = tiny.build_tiny_tagger(tmp_path / "m", size=16)
    (folder / "selected_tags.csv").unlink()
    with pytest.raises(UserError, match="no selected_tags.csv"):
        resolve_model(folder)


def test_unexpected_input_shape_is_user_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])], "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 5])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path / "bad"
    folder.mkdir()
    onnx.save(model, folder / "model.onnx")
    (folder / "selected_tags.csv").write_text("tag_id,name,category,count\n" + "".join(f"{i},t{i},0,1\n" for i in range(5)))
    with pytest.raises(UserError, match=r"shape \['batch', 5\]"):
        Tagger.load(folder, device="cpu")


def test_cuda_without_provider_is_user_error(model32):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA onnxruntime")
    with pytest.raises(UserError, match="onnxruntime-gpu"):
        Tagger.load(model32, device="cuda")
