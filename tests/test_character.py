"""The character profile: persisted, validated, never clobbering a concurrent change."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagging.character import CharacterProfile, load_character, profile_path, save_character
from tagging.errors import ConflictError, DatasetError


def test_missing_profile_is_empty_and_round_trips(tmp_path: Path) -> None:
    profile = load_character(tmp_path)
    assert profile.is_empty
    profile.trigger = "kazari"
    assert profile.add_features(["pink_hair", "pink_hair", "kazari", "long_hair"]) == ["pink_hair", "long_hair"]
    profile.add_never(["uiharu_kazari"])
    assert save_character(tmp_path, profile) is True
    assert save_character(tmp_path, profile) is False  # unchanged: not rewritten
    again = load_character(tmp_path)
    assert again == profile
    assert again.blocks("pink_hair") and again.blocks("uiharu_kazari") and not again.blocks("smile")


def test_bad_profile_names_the_file(tmp_path: Path) -> None:
    path = profile_path(tmp_path)
    path.parent.mkdir()
    path.write_text('features = "pink_hair"\n')
    with pytest.raises(DatasetError, match="character.toml.*features"):
        load_character(tmp_path)
    path.write_text("trigger = [\n")
    with pytest.raises(DatasetError, match="not valid TOML"):
        load_character(tmp_path)


def test_save_refuses_a_file_changed_on_disk(tmp_path: Path) -> None:
    profile = CharacterProfile(trigger="kazari")
    save_character(tmp_path, profile)
    stale = load_character(tmp_path)
    profile_path(tmp_path).write_text('trigger = "other"\n')
    stale.add_features(["pink_hair"])
    with pytest.raises(ConflictError):
        save_character(tmp_path, stale)
    assert save_character(tmp_path, stale, force=True)
    assert load_character(tmp_path).features == ["pink_hair"]
