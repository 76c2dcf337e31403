"""Tag selection from scores (thresholds, MCut, ratings, order, spaces, exclude, max) and tag lists."""

from __future__ import annotations

import numpy as np
import pytest

from tagging.errors import UserError
from tagging.tagger.labels import CHARACTER, GENERAL, RATING, Labels, parse_selected_tags, parse_tags_txt
from tagging.tagger.select import TagOptions, mcut_threshold, merge_tags, select_tags

CSV = """tag_id,name,category,count
1,general,9,10
2,sensitive,9,10
3,questionable,9,10
4,explicit,9,10
5,1girl,0,10
6,long_hair,0,10
7,^_^,0,10
8,smile,0,10
9,hat,0,10
10,uiharu_kazari,4,10
11,misaka_mikoto,4,10
"""
LABELS = parse_selected_tags(CSV)
#                  ratings               1girl long  ^_^  smile hat   uiharu misaka
SCORES = np.array([0.7, 0.2, 0.05, 0.05, 0.98, 0.5, 0.36, 0.35, 0.1, 0.9, 0.85], dtype=np.float32)


def test_csv_categories_and_order():
    assert LABELS.names[4] == "1girl"
    assert LABELS.rating_idx.tolist() == [0, 1, 2, 3]
    assert LABELS.general_idx.tolist() == [4, 5, 6, 7, 8]
    assert LABELS.character_idx.tolist() == [9, 10]


def test_default_thresholds_are_strict_and_per_category():
    r = select_tags(SCORES, LABELS)
    assert [n for n, _ in r.general] == ["1girl", "long_hair", "^_^"]  # smile == 0.35 is not > 0.35
    assert [n for n, _ in r.character] == ["uiharu_kazari"]  # 0.85 is not > 0.85
    assert r.rating is None
    assert r.tags == ["1girl", "uiharu_kazari", "long_hair", "^_^"]  # by confidence, across categories
    exact = select_tags(SCORES, LABELS, TagOptions(general=0.5))  # long_hair is exactly 0.5
    assert [n for n, _ in exact.general] == ["1girl"]


def test_custom_thresholds():
    r = select_tags(SCORES, LABELS, TagOptions(general=0.4, character=0.5))
    assert [n for n, _ in r.general] == ["1girl", "long_hair"]
    assert [n for n, _ in r.character] == ["uiharu_kazari", "misaka_mikoto"]
    assert select_tags(SCORES, LABELS, TagOptions(character=1.01)).character == []


def test_ratings_option_appends_top_rating_last():
    r = select_tags(SCORES, LABELS, TagOptions(ratings=True))
    assert r.rating == ("general", pytest.approx(0.7))
    assert r.tags[-1] == "general"


def test_spaces_keep_kaomoji_and_exclude_matches_either_spelling():
    r = select_tags(SCORES, LABELS, TagOptions(spaces=True, exclude=("Long Hair",)))
    assert r.tags == ["1girl", "uiharu kazari", "^_^"]


def test_max_tags_keeps_highest_scores_across_categories():
    r = select_tags(SCORES, LABELS, TagOptions(max_tags=2, general=0.0, character=0.0))
    assert r.tags == ["1girl", "uiharu_kazari"]


def test_mcut_threshold_is_midpoint_of_largest_gap():
    assert mcut_threshold(np.array([0.9, 0.8, 0.3, 0.2])) == pytest.approx(0.55)
    r = select_tags(SCORES, LABELS, TagOptions(mcut=True))
    # general sorted 0.98 .5 .36 .35 .1: largest gap 0.98-0.5 -> only 1girl
    assert [n for n, _ in r.general] == ["1girl"]
    # characters 0.9, 0.85: one gap, midpoint 0.875 (> the 0.15 floor)
    assert [n for n, _ in r.character] == ["uiharu_kazari"]


def test_merge_modes():
    assert merge_tags(["kazari", "smile"], ["1girl", "smile"], "overwrite") == ["1girl", "smile"]
    assert merge_tags(["kazari", "long hair"], ["1girl", "long_hair"], "append") == ["kazari", "long hair", "1girl"]
    assert merge_tags(["kazari"], ["1girl"], "skip") is None
    assert merge_tags([], ["1girl"], "skip") == ["1girl"]


def test_csv_wrong_columns_is_user_error():
    with pytest.raises(UserError, match="tag_id,name,category,count"):
        parse_selected_tags("id,tag\n1,a\n", "x/selected_tags.csv")


def test_csv_bad_row_names_the_line():
    with pytest.raises(UserError, match="line 3"):
        parse_selected_tags("tag_id,name,category,count\n1,a,0,1\n2,b,notanint,1\n", "t.csv")


def test_output_size_mismatch_is_user_error():
    with pytest.raises(UserError, match="11 tags but the model m.onnx outputs 12"):
        LABELS.check_output_size(12, "m.onnx")


def test_tags_txt_ratings_and_characters():
    labels = parse_tags_txt("1girl\nrating:safe\nkazari\n", {"kazari"})
    assert labels.categories.tolist() == [GENERAL, RATING, CHARACTER]


def test_labels_json_round_trip():
    again = Labels.from_json(LABELS.to_json())
    assert again.names == LABELS.names and again.character_idx.tolist() == [9, 10]
