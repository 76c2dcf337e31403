"""Tag operations: small value objects that turn one image's tag list into a new one.

An operation never touches files; ``Dataset.apply(op, keys)`` runs it over images, records the
before/after of every image that changed as one undoable ``Change``, and ``Dataset.save`` writes
the captions. Operations are serialisable (``to_dict`` / ``op_from_dict``) so the undo history
can be stored in the dataset and read back after a restart.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tagging import captions
from tagging.errors import UserError


def _tag_tuple(tags: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        return (tags,)
    return tuple(tags)


def _occurrences(wanted: Sequence[str], tags: list[str]) -> list[str]:
    # Every occurrence is kept (duplicates are for the user to fix, not for a move to drop).
    return [t for w in captions.dedupe(wanted) for t in tags if t == w]


class TagOp:
    """Base class. Subclasses are frozen dataclasses implementing ``transform``."""

    kind: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[TagOp]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            TagOp._registry[cls.kind] = cls

    def transform(self, tags: list[str], key: str) -> list[str]:
        raise NotImplementedError

    def default_keys(self) -> list[str] | None:
        """Keys the op targets when ``apply`` gets ``keys=None``; None means every image."""
        return None

    def describe(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> TagOp:
        raise NotImplementedError


def op_from_dict(data: Mapping[str, Any]) -> TagOp:
    """Rebuild an operation stored by ``to_dict`` (history file)."""
    cls = TagOp._registry.get(str(data.get("op")))
    if cls is None:
        raise UserError(f"Unknown tag operation {data.get('op')!r} in the edit history.")
    return cls._from_dict(data)


@dataclass(frozen=True, init=False)
class RemoveTags(TagOp):
    """Remove every occurrence of the given tags."""

    tags: tuple[str, ...]
    _drop: frozenset[str] = field(init=False, repr=False, compare=False)  # the tags, for set lookups
    kind: ClassVar[str] = "remove"

    def __init__(self, tags: str | Iterable[str]) -> None:
        object.__setattr__(self, "tags", _tag_tuple(tags))
        object.__setattr__(self, "_drop", frozenset(self.tags))

    def transform(self, tags: list[str], key: str) -> list[str]:
        drop = self._drop
        if drop.isdisjoint(tags):
            return tags
        return [t for t in tags if t not in drop]

    def describe(self) -> str:
        return "remove " + ", ".join(self.tags)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.kind, "tags": list(self.tags)}

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> RemoveTags:
        return cls(d["tags"])


@dataclass(frozen=True)
class ReplaceTag(TagOp):
    """Rename ``old`` to ``new`` in place; if ``new`` is then present twice, the first one stays."""

    old: str
    new: str
    kind: ClassVar[str] = "replace"

    def __post_init__(self) -> None:
        if not self.new.strip() or "," in self.new:
            raise UserError(
                f"Cannot replace {self.old!r} with {self.new!r}: the new tag must be non-empty and contain no comma."
            )

    def transform(self, tags: list[str], key: str) -> list[str]:
        if self.old not in tags:
            return tags
        return captions.dedupe_one(  # merge: the renamed tag may already exist
            [self.new if t == self.old else t for t in tags], self.new
        )

    def describe(self) -> str:
        return f"replace {self.old} -> {self.new}"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.kind, "old": self.old, "new": self.new}

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> ReplaceTag:
        return cls(d["old"], d["new"])


@dataclass(frozen=True)
class AddTag(TagOp):
    """Add a tag at ``"front"``, ``"end"`` or an index (clamped); images that have it keep it where it is."""

    tag: str
    position: str | int = "end"
    kind: ClassVar[str] = "add"

    def __post_init__(self) -> None:
        if not self.tag.strip() or "," in self.tag:
            raise UserError(f"Cannot add tag {self.tag!r}: a tag must be non-empty and contain no comma.")
        if not isinstance(self.position, int) and self.position not in ("front", "end"):
            raise UserError(f"Tag position {self.position!r} is not valid; use 'front', 'end' or a number.")

    def transform(self, tags: list[str], key: str) -> list[str]:
        if self.tag in tags:
            return tags
        if self.position == "front":
            index = 0
        elif self.position == "end":
            index = len(tags)
        else:
            index = max(0, min(int(self.position), len(tags)))
        return [*tags[:index], self.tag, *tags[index:]]

    def describe(self) -> str:
        where = self.position if isinstance(self.position, str) else f"position {self.position}"
        return f"add {self.tag} ({where})"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.kind, "tag": self.tag, "position": self.position}

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> AddTag:
        return cls(d["tag"], d.get("position", "end"))


@dataclass(frozen=True, init=False)
class MoveToFront(TagOp):
    """Move the given tags (those present) to the front, in the order given."""

    tags: tuple[str, ...]
    kind: ClassVar[str] = "to-front"

    def __init__(self, tags: str | Iterable[str]) -> None:
        object.__setattr__(self, "tags", _tag_tuple(tags))

    def transform(self, tags: list[str], key: str) -> list[str]:
        moved = _occurrences(self.tags, tags)
        wanted = set(self.tags)
        return [*moved, *[t for t in tags if t not in wanted]]

    def describe(self) -> str:
        return "move to front " + ", ".join(self.tags)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.kind, "tags": list(self.tags)}

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> MoveToFront:
        return cls(d["tags"])


@dataclass(frozen=True, init=False)
class MoveToEnd(TagOp):
    """Move the given tags (those present) to the end, in the order given."""

    tags: tuple[str, ...]
    kind: ClassVar[str] = "to-end"

    def __init__(self, tags: str | Iterable[str]) -> None:
        object.__setattr__(self, "tags", _tag_tuple(tags))

    def transform(self, tags: list[str], key: str) -> list[str]:
        moved = _occurrences(self.tags, tags)
        wanted = set(self.tags)
        return [*[t for t in tags if t not in wanted], *moved]

    def describe(self) -> str:
        return "move to end " + ", ".join(self.tags)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.kind, "tags": list(self.tags)}

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> MoveToEnd:
        return cls(d["tags"])


@dataclass(frozen=True)
class SetTrigger(TagOp):
    """Make ``name`` the first tag, exactly once (other occurrences removed)."""

    name: str
    kind: ClassVar[str] = "trigger"

    def __post_init__(self) -> None:
        if not self.name.strip() or "," in self.name:
            raise UserError(f"Trigger word {self.name!r} must be non-empty and contain no comma.")

    def transform(self, tags: list[str], key: str) -> list[str]:
        return [self.name, *[t for t in tags if t != self.name]]

    def describe(self) -> str:
        return f"trigger {self.name} first"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.kind, "name": self.name}

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> SetTrigger:
        return cls(d["name"])


@dataclass(frozen=True, init=False)
class DropPattern(TagOp):
    """Remove tags matching glob patterns (``*``, ``?``, ``[...]``; case-sensitive like the tags)."""

    patterns: tuple[str, ...]
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)  # every pattern, compiled
    kind: ClassVar[str] = "drop"

    def __init__(self, patterns: str | Iterable[str]) -> None:
        object.__setattr__(self, "patterns", _tag_tuple(patterns))
        # One compiled regex for all patterns keeps bulk edits over 10k images fast.
        object.__setattr__(
            self, "_regex", re.compile("|".join(fnmatch.translate(p) for p in self.patterns) or "(?!)")
        )

    def transform(self, tags: list[str], key: str) -> list[str]:
        match = self._regex.match
        return [t for t in tags if not match(t)]

    def describe(self) -> str:
        return "drop " + ", ".join(self.patterns)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.kind, "patterns": list(self.patterns)}

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> DropPattern:
        return cls(d["patterns"])


@dataclass(frozen=True, init=False)
class SetTags(TagOp):
    """Replace whole tag lists: ``SetTags([...])`` for the given keys, or ``SetTags({key: [...]})``.

    The mapping form is how the auto-tagger writes its results: one undoable step for all images.
    """

    tags: tuple[str, ...] | None
    per_key: dict[str, tuple[str, ...]] | None
    label: str
    kind: ClassVar[str] = "set"

    def __init__(self, tags: Iterable[str] | Mapping[str, Iterable[str]], label: str = "") -> None:
        if isinstance(tags, Mapping):
            object.__setattr__(self, "tags", None)
            object.__setattr__(self, "per_key", {str(k): _tag_tuple(v) for k, v in tags.items()})
        else:
            object.__setattr__(self, "tags", _tag_tuple(tags))
            object.__setattr__(self, "per_key", None)
        object.__setattr__(self, "label", label)

    def transform(self, tags: list[str], key: str) -> list[str]:
        if self.per_key is not None:
            new = self.per_key.get(key)
            return tags if new is None else list(new)
        return list(self.tags or ())

    def default_keys(self) -> list[str] | None:
        return list(self.per_key) if self.per_key is not None else None

    def describe(self) -> str:
        if self.label:
            return self.label
        if self.per_key is not None:
            return f"set tags of {len(self.per_key)} image(s)"
        return "set tags to " + ", ".join(self.tags or ())

    def to_dict(self) -> dict[str, Any]:
        # The per-image before/after is in the Change itself; only a summary is needed here.
        return {"op": self.kind, "label": self.describe()}

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> SetTags:
        return cls({}, label=d.get("label", ""))


@dataclass(frozen=True)
class Normalize(TagOp):
    """Explicit spelling conversions the user asked for.

    ``mode``: ``underscores-to-spaces`` (kaomoji kept), ``spaces-to-underscores``,
    ``escape-parens``, ``unescape-parens``, ``dedupe`` (drop repeated tags).
    """

    mode: str
    kind: ClassVar[str] = "normalize"
    MODES: ClassVar[dict[str, Any]] = {
        "underscores-to-spaces": captions.underscores_to_spaces,
        "spaces-to-underscores": captions.spaces_to_underscores,
        "escape-parens": captions.escape_parens,
        "unescape-parens": captions.unescape_parens,
        "dedupe": None,
    }

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise UserError(f"Unknown normalisation {self.mode!r}; choose one of: {', '.join(self.MODES)}.")

    def transform(self, tags: list[str], key: str) -> list[str]:
        func = self.MODES[self.mode]
        if func is None:
            return captions.dedupe(tags)
        return [func(t) for t in tags]

    def describe(self) -> str:
        return f"normalise: {self.mode}"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.kind, "mode": self.mode}

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> Normalize:
        return cls(d["mode"])


# ---- recorded changes ---------------------------------------------------------------------------

@dataclass
class Change:
    """One undoable step: what was done and the state of every affected item before and after.

    ``kind`` is ``"tags"`` (``before``/``after`` map key -> tag list), ``"repeats"``
    (``extra`` holds ``old``/``new`` folder names) or ``"trash"`` (``extra`` holds the moved paths).
    """

    label: str
    kind: str = "tags"
    before: dict[str, list[str]] = field(default_factory=dict)
    after: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    op: TagOp | None = None
    time: float = field(default_factory=time.time)
    id: int = 0

    @property
    def keys(self) -> list[str]:
        """Images whose tags this change altered."""
        return list(self.after)

    def __len__(self) -> int:
        return len(self.after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "kind": self.kind,
            "time": self.time,
            "op": self.op.to_dict() if self.op else None,
            "before": self.before,
            "after": self.after,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Change:
        op = None
        if d.get("op"):
            try:
                op = op_from_dict(d["op"])
            except (UserError, KeyError, TypeError):
                op = None  # an op from a newer kazari: the before/after is what matters
        return cls(
            label=str(d.get("label", "")),
            kind=str(d.get("kind", "tags")),
            before={k: list(v) for k, v in dict(d.get("before") or {}).items()},
            after={k: list(v) for k, v in dict(d.get("after") or {}).items()},
            extra=dict(d.get("extra") or {}),
            op=op,
            time=float(d.get("time", 0.0)),
            id=int(d.get("id", 0)),
        )


class Chain(TagOp):
    """Several operations applied in order as ONE undoable step (e.g. one CLI ``edit`` call)."""

    kind: ClassVar[str] = "chain"

    def __init__(self, ops: Iterable[TagOp]) -> None:
        self.ops = tuple(ops)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Chain) and other.ops == self.ops

    def __hash__(self) -> int:
        return hash(self.ops)

    def __repr__(self) -> str:
        return f"Chain({list(self.ops)!r})"

    def transform(self, tags: list[str], key: str) -> list[str]:
        for op in self.ops:
            tags = op.transform(tags, key)
        return tags

    def default_keys(self) -> list[str] | None:
        keys: list[str] = []
        for op in self.ops:
            own = op.default_keys()
            if own is None:
                return None
            keys.extend(k for k in own if k not in keys)
        return keys

    def describe(self) -> str:
        return "; ".join(op.describe() for op in self.ops)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.kind, "ops": [op.to_dict() for op in self.ops]}

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> Chain:
        return cls(op_from_dict(o) for o in d["ops"])
