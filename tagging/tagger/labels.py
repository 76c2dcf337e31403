"""Tag lists of tagger models: WD14 ``selected_tags.csv`` and DeepDanbooru ``tags.txt``.

Row order is output order. WD14 categories: 9 = rating, 0 = general, 4 = character (any other
category is kept as general). DeepDanbooru has no categories in ``tags.txt``; ratings are the
``rating:*`` tags and characters are listed in an optional ``tags-character.txt``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagging.errors import UserError

RATING, GENERAL, CHARACTER = 9, 0, 4
CATEGORY_NAMES = {RATING: "rating", GENERAL: "general", CHARACTER: "character"}


@dataclass(frozen=True)
class Labels:
    """Tag names and categories in model output order."""

    names: tuple[str, ...]
    categories: np.ndarray  # int array, same length as names
    source: str = ""
    rating_idx: np.ndarray = field(init=False, repr=False)
    general_idx: np.ndarray = field(init=False, repr=False)
    character_idx: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cats = np.asarray(self.categories, dtype=np.int64)
        object.__setattr__(self, "categories", cats)
        object.__setattr__(self, "rating_idx", np.flatnonzero(cats == RATING))
        object.__setattr__(self, "character_idx", np.flatnonzero(cats == CHARACTER))
        object.__setattr__(self, "general_idx", np.flatnonzero((cats != RATING) & (cats != CHARACTER)))

    def __len__(self) -> int:
        return len(self.names)

    def to_json(self) -> dict:
        return {"names": list(self.names), "categories": [int(c) for c in self.categories]}

    @classmethod
    def from_json(cls, data: dict, source: str = "") -> Labels:
        return cls(tuple(data["names"]), np.asarray(data["categories"], dtype=np.int64), source)

    def check_output_size(self, n_outputs: int, model_path: Path | str) -> None:
        """Raise a UserError when the model's output length is not the number of tags."""
        if n_outputs != len(self.names):
            raise UserError(
                f"The tag list {self.source} has {len(self.names)} tags but the model {model_path} "
                f"outputs {n_outputs} scores, so tags would be misattributed.",
                path=self.source,
                hint="Use the tag list that was downloaded together with this model.onnx.",
            )


def parse_selected_tags(text: str, source: str = "selected_tags.csv") -> Labels:
    """Parse WD14 ``selected_tags.csv`` (header ``tag_id,name,category,count``)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise UserError(f"The tag list {source} is empty.", path=source,
                        hint="Download selected_tags.csv again from the model's repository.")
    cols = [h.strip().lower() for h in header]
    if "name" not in cols or "category" not in cols:
        raise UserError(
            f"The tag list {source} has columns {header!r}; expected the WD14 header "
            "'tag_id,name,category,count'.",
            path=source,
            hint="Point --model at a folder with the model's own selected_tags.csv.",
        )
    i_name, i_cat = cols.index("name"), cols.index("category")
    names: list[str] = []
    cats: list[int] = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            name = row[i_name].strip()
            cat = int(row[i_cat])
        except (IndexError, ValueError):
            raise UserError(
                f"The tag list {source} line {lineno} is malformed ({','.join(row)!r}): every row needs "
                "a tag name and an integer category.",
                path=source,
                hint="Download selected_tags.csv again from the model's repository.",
            ) from None
        if not name:
            raise UserError(f"The tag list {source} line {lineno} has an empty tag name.", path=source,
                            hint="Download selected_tags.csv again from the model's repository.")
        names.append(name)
        cats.append(cat)
    if not names:
        raise UserError(f"The tag list {source} has a header but no tags.", path=source,
                        hint="Download selected_tags.csv again from the model's repository.")
    return Labels(tuple(names), np.asarray(cats, dtype=np.int64), str(source))


def parse_tags_txt(text: str, characters: set[str] | None = None, source: str = "tags.txt") -> Labels:
    """Parse a DeepDanbooru ``tags.txt`` (one tag per line, output order)."""
    names = [line.strip() for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    if not names:
        raise UserError(f"The tag list {source} has no tags.", path=source,
                        hint="Use the tags.txt shipped with the DeepDanbooru model.")
    characters = characters or set()
    cats = [RATING if n.startswith("rating:") else CHARACTER if n in characters else GENERAL for n in names]
    return Labels(tuple(names), np.asarray(cats, dtype=np.int64), str(source))


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"The tag list {path} is not UTF-8 text.", path=path,
                        hint="Download it again from the model's repository.") from None
    except OSError as err:
        raise UserError(f"Cannot read the tag list {path}: {err.strerror or err}.", path=path,
                        hint="Check that the file exists and is readable.") from None


def load_labels(path: Path | str) -> Labels:
    """Load ``selected_tags.csv`` or ``tags.txt`` (with ``tags-character.txt`` beside it)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return parse_selected_tags(_read_text(path), str(path))
    chars_file = path.with_name("tags-character.txt")
    chars = set(parse_tags_txt(_read_text(chars_file), source=str(chars_file)).names) if chars_file.exists() else None
    return parse_tags_txt(_read_text(path), chars, str(path))
