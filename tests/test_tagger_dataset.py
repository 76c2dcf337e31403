"""Tagging a real (synthetic) dataset: merge modes, one undoable edit, score cache, re-thresholding,
cancel, bad images."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from tagging.dataset import Dataset
from tagging.synthetic import BACKGROUNDS, make_character_dataset
from tagging.tagger import Tagger, TagOptions, rethreshold, tag_dataset, tiny
from tagging.tagger.cache import CACHE_DIR

N = 8


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return Tagger.load(tiny.build_tiny_tagger(tmp_path_factory.mktemp("tiny"), size=64), device="cpu")


@pytest.fixture
def root(tmp_path):
    return make_character_dataset(tmp_path / "ds", n_images=N, size=96)


def _captions(root):
    return {p.name: p.read_text() for p in sorted(root.glob("*/*.txt"))}


def test_overwrite_writes_all_as_one_undoable_edit(root, tagger):
    before = _captions(root)
    ds = Dataset.open(root)
    report = tag_dataset(ds, tagger, TagOptions(), "overwrite", batch_size=3, honour_character=False)
    assert len(report.results) == N and not report.failed
    after = _captions(root)
    assert after != before
    for text in after.values():
        assert text.startswith(("blue_background", "grey_background", "green_background", "yellow_background",
                                "white_background", "pink_hair"))
        tags = text.strip().split(", ")
        assert "pink_hair" in tags and "uiharu_kazari" in tags and "kazari" not in tags
    assert report.trigger_suggestions() == [("uiharu_kazari", N)]
    assert len(ds.history) == 1
    ds.undo()
    ds.save()
    assert _captions(root) == before


def test_character_profile_is_honoured_in_every_mode(root, tagger):
    """Pruned features are never re-added, the model's character tag is offered instead of
    written, and the trigger stays first — in append and overwrite mode (the issue-12 bug)."""
    from tagging.character import load_character, record_pruned, save_character
    from tagging.edits import RemoveTags

    ds = Dataset.open(root)
    ds.apply(RemoveTags(["pink_hair", "long_hair"]))
    ds.save()
    assert record_pruned(root, ["pink_hair", "long_hair"]) == ["pink_hair", "long_hair"]
    report = tag_dataset(ds, tagger, TagOptions(), "append")
    for item in ds.images:
        assert "pink_hair" not in item.tags and "long_hair" not in item.tags and "uiharu_kazari" not in item.tags
    assert report.character_offers() == [("uiharu_kazari", N)]
    had_trigger = {item.key for item in ds.images if "kazari" in item.tags}
    assert had_trigger
    report = tag_dataset(ds, tagger, TagOptions(), "overwrite")
    for item in ds.images:
        if item.key in had_trigger:  # folder 10_kazari: overwrite no longer drops it
            assert item.tags[0] == "kazari", item.tags
        assert not {"pink_hair", "long_hair", "uiharu_kazari"} & set(item.tags)
    profile = load_character(root)
    profile.trigger = "kz"
    profile.add_never(["uiharu_kazari"])
    save_character(root, profile)
    report = tag_dataset(ds, tagger, TagOptions(), "overwrite")
    assert all(item.tags[0] == "kz" for item in ds.images)
    assert report.character_offers() == []  # now known to the profile
    report = tag_dataset(ds, tagger, TagOptions(), "overwrite", honour_character=False)
    assert all("pink_hair" in item.tags and "uiharu_kazari" in item.tags for item in ds.images)


def test_background_and_hair_match_the_synthetic_truth(root, tagger):
    ds = Dataset.open(root)
    truth = {it.key: set(it.tags) & set(BACKGROUNDS) for it in ds.images}
    report = tag_dataset(ds, tagger, TagOptions(), "overwrite", dry_run=True)
    for key, result in report.results.items():
        got = {t for t in result.tags if t in BACKGROUNDS}
        if truth[key]:  # captions with deliberate mistakes still carry the background tag
            assert got == truth[key], key


def test_append_keeps_existing_and_adds_new_only(root, tagger):
    ds = Dataset.open(root)
    first = ds.images[0]
    old = list(first.tags)
    tag_dataset(ds, tagger, TagOptions(), "append", honour_character=False)
    new = Dataset.open(root).image(first.key).tags
    assert new[: len(old)] == old
    assert "uiharu_kazari" in new and len(new) == len(set(new))


def test_skip_leaves_captioned_images_and_tags_the_rest(root, tagger):
    cap = root / "10_kazari" / "0001.txt"
    cap.unlink()
    before = _captions(root)
    ds = Dataset.open(root)
    report = tag_dataset(ds, tagger, TagOptions(), "skip")
    assert len(report.skipped) == N - 1 and list(report.results) == ["10_kazari/0001.png"]
    after = _captions(root)
    assert all(after[name] == text for name, text in before.items())
    assert "pink_hair" in after["0001.txt"]


def test_dry_run_writes_nothing_but_fills_the_cache(root, tagger):
    before = _captions(root)
    report = tag_dataset(Dataset.open(root), tagger, TagOptions(), "overwrite", dry_run=True)
    assert report.final and report.change is None
    assert _captions(root) == before
    assert list((root / CACHE_DIR).glob("*/*/*.npy"))


def test_second_run_uses_cache_without_model_or_reading_images(root, tagger, monkeypatch):
    tag_dataset(Dataset.open(root), tagger, TagOptions(), "overwrite", dry_run=True)
    monkeypatch.setattr(tagger, "predict", lambda batch: pytest.fail("model ran"))
    monkeypatch.setattr("tagging.tagger.pipeline.content_hash", lambda data: pytest.fail("image re-read"))
    report = tag_dataset(Dataset.open(root), tagger, TagOptions(), "overwrite", dry_run=True)
    assert report.cached == N and len(report.results) == N


def test_changed_image_misses_the_cache(root, tagger):
    tag_dataset(Dataset.open(root), tagger, TagOptions(), "overwrite", dry_run=True)
    img = root / "10_kazari" / "0000.png"
    Image.new("RGB", (96, 96), (0, 0, 0)).save(img)
    report = tag_dataset(Dataset.open(root), tagger, TagOptions(), "overwrite", dry_run=True)
    assert report.cached == N - 1
    assert "pink_hair" not in report.results["10_kazari/0000.png"].tags


def test_rethreshold_from_cache_is_instant_and_writes_nothing(root, tagger, monkeypatch):
    tag_dataset(Dataset.open(root), tagger, TagOptions(), "overwrite", dry_run=True)
    before = _captions(root)
    monkeypatch.setattr(Tagger, "predict", lambda self, batch: pytest.fail("model ran"))
    ds = Dataset.open(root)
    low = rethreshold(ds, TagOptions(general=0.2))
    high = rethreshold(ds, TagOptions(general=0.9))
    assert low.model_id == tagger.model_id and not low.missing
    key = ds.images[1].key  # 2:3 portrait, so the padded corners are white
    assert "white_border" in low.results[key].tags  # 0.3 > 0.2
    assert "white_border" not in high.results[key].tags and "long_hair" not in high.results[key].tags
    assert all(s > 0.9 for _, s in high.results[key].general) and "pink_hair" in high.results[key].tags
    assert _captions(root) == before


def test_rethreshold_without_cache_is_user_error(root):
    from tagging.errors import UserError

    with pytest.raises(UserError, match="no cached tagger scores"):
        rethreshold(Dataset.open(root), TagOptions())


def test_cancel_keeps_tagged_images_and_leaves_the_rest(root, tagger):
    before = _captions(root)
    cancel = threading.Event()
    report = tag_dataset(Dataset.open(root), tagger, TagOptions(), "overwrite", batch_size=3, workers=1,
                         on_progress=lambda p: cancel.set(), cancel=cancel)
    done = len(report.results)
    assert report.cancelled and done in (3, 6) and len(report.untouched) == N - done
    after = _captions(root)
    changed = [n for n in before if after[n] != before[n]]
    assert len(changed) == done
    untouched_names = {k.split("/")[1].replace(".png", ".txt") for k in report.untouched}
    assert all(after[n] == before[n] for n in untouched_names)


def test_bad_image_reported_others_tagged(root, tagger):
    (root / "10_kazari" / "0003.png").write_bytes(b"corrupt")
    report = tag_dataset(Dataset.open(root), tagger, TagOptions(), "overwrite")
    assert [k for k, _ in report.failed] == ["10_kazari/0003.png"]
    assert len(report.results) == N - 1


def test_cached_scores_are_the_model_scores(root, tagger):
    ds = Dataset.open(root)
    tag_dataset(ds, tagger, TagOptions(), "overwrite", dry_run=True)
    key = ds.images[0].key
    fresh = tagger.score_images([(key, ds.image(key).path)]).scores[key]
    from tagging.tagger.apply import cached_scores

    got, missing = cached_scores(root, tagger.model_id, [(key, ds.image(key).path)], len(tagger.labels))
    assert not missing and np.array_equal(got[key], fresh)


def test_damaged_cache_index_and_labels_are_misses_not_crashes(root, tagger):
    tag_dataset(Dataset.open(root), tagger, TagOptions(), "overwrite", dry_run=True)
    cache = root / CACHE_DIR
    (cache / "hashes.json").write_text('{"10_kazari/0000.png": 5, "10_kazari/0001.png": [1, 2]}')
    report = tag_dataset(Dataset.open(root), tagger, TagOptions(), "overwrite", dry_run=True)
    assert report.cached == N  # hashes recomputed; the score files themselves are intact
    (cache / tagger.model_id / "labels.json").write_text("[1, 2, 3]")
    from tagging.errors import UserError

    with pytest.raises(UserError, match="No cached scores"):
        rethreshold(Dataset.open(root), TagOptions(), model_id=tagger.model_id)
