from pathlib import Path

import pytest

from tagging.dataset import Dataset
from tagging.stats import cooccurrence, cooccurring, step_counts, tag_frequency


def test_tag_frequency_counts_images_and_sorts(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    rows = tag_frequency(ds)
    top = {(r.tag, r.count) for r in rows[:3]}
    assert top == {("kazari", 4), ("1girl", 4), ("pink_hair", 4)}
    assert rows[0].share == 1.0
    assert [r.count for r in rows] == sorted((r.count for r in rows), reverse=True)
    by_name = tag_frequency(ds, sort="name")
    assert [r.tag for r in by_name] == sorted(r.tag for r in rows)
    # A duplicate inside one caption counts once.
    assert tag_frequency([["a", "a"], ["b"]])[0].count == 1
    with pytest.raises(ValueError):
        tag_frequency(ds, sort="size")


def test_cooccurrence(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    co = cooccurrence(ds, "solo", "smile")
    assert (co.both, co.only_a, co.only_b, co.neither) == (1, 1, 0, 2)
    assert co.p_b_given_a == 0.5 and co.jaccard == 0.5
    rows = cooccurring(ds, "solo")
    assert rows[0].tag in {"kazari", "1girl", "pink_hair"} and rows[0].share == 1.0


def test_step_counts_per_folder_and_total(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)  # 3 images x 10 + 1 image x 3 = 33 samples per epoch
    s = step_counts(ds, epochs=4, batch_size=2)
    assert s.train_samples_per_epoch == 33 and s.reg_samples_per_epoch == 0
    assert s.steps_per_epoch == 17 and s.total_steps == 68
    main = next(f for f in s.folders if f.name == "10_kazari")
    assert (main.images, main.repeats, main.samples_per_epoch, main.steps) == (3, 10, 30, 60.0)
    assert s.to_dict()["total_steps"] == 68


def test_step_counts_doubles_with_regularisation_and_grad_accum() -> None:
    s = step_counts([("10_a", 20, 10), ("1_reg", 100, 1, True)], epochs=2, batch_size=4, gradient_accumulation_steps=2)
    assert s.samples_per_epoch == 400 and s.steps_per_epoch == 50 and s.total_steps == 100
    with pytest.raises(ValueError):
        step_counts([], batch_size=0)
