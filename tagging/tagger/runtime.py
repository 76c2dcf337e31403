"""onnxruntime session, execution providers and the model's input contract."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tagging.errors import UserError
from tagging.onnx_session import DEVICES, providers_for  # noqa: F401 - re-exported for callers
from tagging.onnx_session import open_session as _open_session
from tagging.tagger.preprocess import DEEPDANBOORU, PROFILES, WD14, Profile

PROFILE_KEY = "kazari.profile"  # optional model metadata naming the preprocessing profile


@dataclass(frozen=True)
class InputSpec:
    name: str
    size: int
    nchw: bool  # some exports put channels first; the batch is transposed for them
    fixed_batch: int | None = None  # older exports (WD14 v1/v2 before v2.1) take exactly N images


def open_session(model_path: Path, device: str = "auto", threads: int | None = None):
    """Load a tagger model (the shared onnxruntime setup, with the tagger's wording)."""
    return _open_session(model_path, device, threads, what="tagger model",
                         hint="The file is missing, truncated or not an ONNX model; download model.onnx again.")


def input_spec(session, model_path: Path) -> InputSpec:
    """Read the input size from the model (never assume 448); reject shapes we cannot feed."""
    inp = session.get_inputs()[0]
    shape = list(inp.shape)
    bad = UserError(
        f"The model {model_path} has input {inp.name!r} of shape {shape}; a tagger needs one image "
        "batch shaped [batch, size, size, 3] (or [batch, 3, size, size]) with a fixed size.",
        path=model_path,
        hint="Use a WD14 or DeepDanbooru ONNX export.",
    )
    if len(shape) != 4 or "float" not in str(inp.type):
        raise bad
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    if shape[3] == 3 and isinstance(shape[1], int) and shape[1] == shape[2]:
        return InputSpec(inp.name, shape[1], nchw=False, fixed_batch=fixed)
    if shape[1] == 3 and isinstance(shape[2], int) and shape[2] == shape[3]:
        return InputSpec(inp.name, shape[2], nchw=True, fixed_batch=fixed)
    raise bad


def output_size(session) -> int | None:
    """Number of tag scores the model emits, or None when the export leaves it dynamic."""
    shape = session.get_outputs()[0].shape
    last = shape[-1] if shape else None
    return last if isinstance(last, int) else None


def detect_profile(session, labels_path: Path, requested: str = "auto") -> Profile:
    """Preprocessing profile: the option, else the model's metadata, else the tag-list format."""
    if requested != "auto":
        if requested not in PROFILES:
            raise UserError(f"--profile {requested!r} is not one of auto, {', '.join(PROFILES)}.")
        return PROFILES[requested]
    meta = session.get_modelmeta().custom_metadata_map or {}
    named = meta.get(PROFILE_KEY, "").strip().lower()
    if named in PROFILES:
        return PROFILES[named]
    return DEEPDANBOORU if labels_path.name == "tags.txt" else WD14
