from pathlib import Path

import pytest

from tagging.dataset import Dataset
from tagging.errors import UserError
from tagging.features import classify_tag, default_rules, parse_rules, suggest_features
from tagging.synthetic import make_character_dataset


@pytest.mark.parametrize(
    ("tag", "category"),
    [
        ("pink_hair", "hair"), ("long hair", "hair"), ("twintails", "hair"), ("hair_between_eyes", "hair"),
        ("blue_eyes", "eyes"), ("heterochromia", "eyes"), ("dark_skin", "skin"), ("cat_ears", "ears"),
        ("horns", "horns"), ("fox_tail", "tail"), ("angel_wings", "wings"), ("halo", "halo"),
        ("hair_flower", "accessory"), ("hairband", "accessory"), ("hair_ornament", "accessory"),
        ("hairclip", "accessory"), ("star_hair_ornament", "accessory"),
        ("closed_eyes", None), ("looking_at_viewer", None), ("smile", None), ("white_background", None),
        ("1girl", None), ("dress", None), ("hair_blowing", None), ("pubic_hair", None), ("chair", None),
    ],
)
def test_classify(tag: str, category: str | None) -> None:
    assert classify_tag(tag) == category


def test_rules_are_data_and_validated() -> None:
    assert len(default_rules()) > 50
    rules = parse_rules("action,match,pattern,category\ninclude,exact,magic_mark,mark\n")
    assert classify_tag("magic_mark", rules) == "mark" and classify_tag("pink_hair", rules) is None
    with pytest.raises(UserError, match="Bad row"):
        parse_rules("action,match,pattern,category\nmaybe,exact,x,y\n")


def test_suggest_on_synthetic_character(tmp_path: Path) -> None:
    root = make_character_dataset(tmp_path / "ds", n_images=12, size=64)
    ds = Dataset.open(root)
    (result,) = suggest_features(ds)
    tags = {f.tag: f for f in result.features}
    assert {"pink_hair", "long_hair", "hair_flower", "blue_eyes", "hair_ornament"} <= set(tags)
    assert not {"smile", "closed_eyes", "1girl", "looking_at_viewer", "simple_background"} & set(tags)
    assert all(f.share >= 0.35 for f in result.features)
    assert result.folder == "10_kazari" and result.images == 12
    # A stricter threshold drops the less frequent ones.
    strict = suggest_features(ds, threshold=0.99)[0]
    assert all(f.share >= 0.99 for f in strict.features)
    with pytest.raises(UserError):
        suggest_features(ds, threshold=0)
