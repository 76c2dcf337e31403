"""WD14-family (and DeepDanbooru) ONNX auto-tagger.

Typical use (CLI and TUI alike)::

    from tagging.tagger import Tagger, TagOptions, tag_dataset, rethreshold
    tagger = Tagger.load("wd-swinv2-v3")            # or a folder / repo id
    report = tag_dataset(ds, tagger, TagOptions(general=0.35), mode="append",
                         on_progress=cb, cancel=event)   # one undoable SetTags edit
    again = rethreshold(ds, TagOptions(general=0.5))     # from cached scores, writes nothing

No torch here: onnxruntime, numpy and Pillow only.
"""

from tagging.tagger.apply import (
    Rethreshold,
    TagReport,
    apply_tags,
    character_offers,
    merged_tags,
    rethreshold,
    tag_dataset,
)
from tagging.tagger.cache import ScoreCache
from tagging.tagger.labels import Labels, load_labels
from tagging.tagger.models import DEFAULT_MODEL, KNOWN_MODELS, ModelFiles, resolve_model
from tagging.tagger.pipeline import Progress, ScoreRun, Tagger
from tagging.tagger.preprocess import DEEPDANBOORU, PROFILES, WD14, Profile
from tagging.tagger.select import MODES, ImageTags, TagOptions, mcut_threshold, merge_tags, select_tags

__all__ = [
    "DEEPDANBOORU", "DEFAULT_MODEL", "KNOWN_MODELS", "MODES", "PROFILES", "WD14",
    "ImageTags", "Labels", "ModelFiles", "Profile", "Progress", "Rethreshold", "ScoreCache", "ScoreRun",
    "TagOptions", "TagReport", "Tagger",
    "apply_tags", "character_offers", "load_labels", "mcut_threshold", "merge_tags", "merged_tags", "resolve_model",
    "rethreshold", "select_tags", "tag_dataset",
]
