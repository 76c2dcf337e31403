"""The character a dataset trains: its trigger word, its fixed features and its never-add tags.

A character LoRA binds the character's fixed features (hair colour, the hair flower...) to the
trigger word, so those tags are pruned from the captions. Every later step must know which tags
they were: the tagger must not write them back, lint checks they stay pruned, and the judge asks
whether the trained LoRA draws them from the trigger alone. The profile is part of the dataset,
stored in ``<root>/.kazari/character.toml``::

    trigger = "kazari"
    features = ["pink_hair", "long_hair", "hair_flower"]
    never_add = ["uiharu_kazari"]

Missing file = empty profile (nothing recorded yet). Writes are atomic and refuse to clobber a
file someone else changed since it was loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError

from tagging.atomic import atomic_write_text
from tagging.errors import ConflictError, DatasetError
from tagging.query import Tagged

PROFILE_NAME = "character.toml"
STATE_DIR = ".kazari"


def profile_path(root: Path | str) -> Path:
    return Path(root) / STATE_DIR / PROFILE_NAME


def _tag_list(value: object, key: str, path: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise DatasetError(
            f"{path}: `{key}` must be a list of tag strings, e.g. {key} = [\"pink_hair\"].", path=path,
            hint="Fix the file by hand or remove it to start a new profile.",
        )
    return _unique(t.strip() for t in value if t.strip())


def _unique(tags: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for tag in tags:
        seen.setdefault(tag, None)
    return list(seen)


@dataclass
class CharacterProfile:
    """Trigger word, fixed features and never-add tags of one dataset's character."""

    trigger: str = ""
    features: list[str] = field(default_factory=list)
    never_add: list[str] = field(default_factory=list)
    # The file text this profile was read from (None: no file); saving refuses if it changed.
    loaded_text: str | None = field(default=None, repr=False, compare=False)

    @property
    def is_empty(self) -> bool:
        return not (self.trigger or self.features or self.never_add)

    def blocks(self, tag: str) -> bool:
        """True for a tag no automatic step may add to a caption (a feature or a never-add tag)."""
        return tag in self.features or tag in self.never_add

    def add_features(self, tags: Iterable[str]) -> list[str]:
        """Record ``tags`` as fixed features; returns the ones that were new."""
        new = [t for t in _unique(tags) if t and t not in self.features and t != self.trigger]
        self.features.extend(new)
        return new

    def remove_features(self, tags: Iterable[str]) -> list[str]:
        drop = set(tags)
        gone = [t for t in self.features if t in drop]
        self.features = [t for t in self.features if t not in drop]
        return gone

    def add_never(self, tags: Iterable[str]) -> list[str]:
        new = [t for t in _unique(tags) if t and t not in self.never_add and t != self.trigger]
        self.never_add.extend(new)
        return new

    def remove_never(self, tags: Iterable[str]) -> list[str]:
        drop = set(tags)
        gone = [t for t in self.never_add if t in drop]
        self.never_add = [t for t in self.never_add if t not in drop]
        return gone

    def to_toml(self) -> str:
        doc = tomlkit.document()
        doc.add(tomlkit.comment("The character this dataset trains (kazari). Features are pruned from"))
        doc.add(tomlkit.comment("captions so the trigger word learns them; never_add tags are never written."))
        doc["trigger"] = self.trigger
        doc["features"] = list(self.features)
        doc["never_add"] = list(self.never_add)
        return tomlkit.dumps(doc)


def load_character(root: Path | str) -> CharacterProfile:
    """The dataset's profile; an empty one when none was recorded. Bad files raise ``DatasetError``."""
    path = profile_path(root)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return CharacterProfile()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(
            f"Cannot read the character profile {path}: {err}.", path=path,
            hint="Fix its permissions or encoding (UTF-8), or move it away to start a new profile.",
        ) from err
    try:
        data = tomlkit.parse(text).unwrap()
    except TOMLKitError as err:
        raise DatasetError(
            f"The character profile {path} is not valid TOML ({err}).", path=path,
            hint="Fix the line named, or move the file away to start a new profile.",
        ) from err
    unknown = sorted(set(data) - {"trigger", "features", "never_add"})
    if unknown:
        raise DatasetError(
            f"{path}: unknown key(s) {', '.join(unknown)}; the profile has trigger, features and never_add.",
            path=path, hint="Rename or remove those keys.",
        )
    trigger = data.get("trigger", "")
    if not isinstance(trigger, str):
        raise DatasetError(f'{path}: `trigger` must be a string, e.g. trigger = "kazari".', path=path)
    return CharacterProfile(
        trigger=trigger.strip(),
        features=_tag_list(data.get("features", []), "features", path),
        never_add=_tag_list(data.get("never_add", []), "never_add", path),
        loaded_text=text,
    )


def save_character(root: Path | str, profile: CharacterProfile, *, force: bool = False) -> bool:
    """Write the profile atomically; returns False when the file already says the same.

    Refuses (``ConflictError``) when the file changed on disk since ``profile`` was loaded,
    unless ``force``.
    """
    path = profile_path(root)
    try:
        current: str | None = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        current = None
    if not force and current != profile.loaded_text:
        raise ConflictError(
            f"The character profile {path} changed on disk since kazari read it.", path=path,
            hint="Reload the dataset to see the other change, or save with force to overwrite it.",
        )
    text = profile.to_toml()
    if current == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    profile.loaded_text = text
    return True


def tag_key(tag: str) -> str:
    """Comparison key for tags: case, spaces and underscores do not matter (``Pink Hair`` = ``pink_hair``)."""
    return tag.strip().lower().replace(" ", "_")


def honour_profile(
    current: list[str], merged: list[str], profile: CharacterProfile, folder_trigger: str | None = None,
) -> list[str]:
    """``merged`` (an automatic step's new caption for an image now tagged ``current``) with the
    profile applied: features and never-add tags the step introduced are dropped (tags the user
    kept in the caption stay), and the trigger word — the profile's, or the folder's when the
    caption already had it — is first, exactly once."""
    blocked = {tag_key(t) for t in (*profile.features, *profile.never_add)}
    had = {tag_key(t) for t in current}
    out = [t for t in merged if tag_key(t) not in blocked or tag_key(t) in had]
    trigger = profile.trigger or (folder_trigger if folder_trigger and tag_key(folder_trigger) in had else "")
    if trigger:
        out = [trigger, *(t for t in out if tag_key(t) != tag_key(trigger))]
    return out


def record_pruned(root: Path | str, tags: Iterable[str]) -> list[str]:
    """Record pruned feature tags in the dataset's profile (saved at once); returns the new ones."""
    profile = load_character(root)
    new = profile.add_features(tags)
    if new:
        save_character(root, profile)
    return new


def features_present(profile: CharacterProfile, images: Iterable[Tagged]) -> dict[str, list[str]]:
    """Feature tag -> keys of the images whose caption still carries it (lint after pruning)."""
    wanted = {tag_key(t): t for t in profile.features}
    found: dict[str, list[str]] = {}
    for item in images:
        for tag in item.tags:
            name = wanted.get(tag_key(tag))
            if name is not None:
                found.setdefault(name, []).append(item.key)
    return found
