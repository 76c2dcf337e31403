"""A tiny but real ONNX tagger whose scores are a known function of the input pixels.

Built with the ``onnx`` helper API (no training, no download) and shipped by the demo. It
"recognises" the synthetic dataset's features (``tagging.synthetic``): the mean colour of the hair
region decides the ``*_hair`` tags and the character tag (pink hair -> ``uiharu_kazari``), a
background patch the ``*_background`` tags, and the brightness of the four corners of the padded
square the linear ``white_border`` score. Because every score has a closed form (:func:`reference_scores`),
the tests can prove preprocessing (white background and padding, size, BGR, 0..255, NHWC) and the
thresholds end to end through onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagging.atomic import atomic_write_bytes, atomic_write_text
from tagging.synthetic import BACKGROUNDS, HAIR_COLOURS, HAIR_REGION
from tagging.tagger.labels import CHARACTER, GENERAL, RATING

# Constant scores (bias-only outputs): ratings and the tags every synthetic image deserves.
WD14_RATINGS = {"general": 0.88, "sensitive": 0.10, "questionable": 0.015, "explicit": 0.005}
DD_RATINGS = {"rating:safe": 0.9, "rating:questionable": 0.08, "rating:explicit": 0.02}
CONSTANT_GENERAL = {"1girl": 0.96, "solo": 0.93, "simple_background": 0.8, "long_hair": 0.74}
HAIR_SIGMA = 48.0  # RGB distance at which a colour tag's score falls to 1/e
BACKGROUND_SIGMA = 40.0
CHARACTER_SIGMA = 20.0  # tighter: the character tag needs a near-exact hair colour
# Background is sampled top-left of the head, inside the central square that every synthetic
# aspect ratio keeps (a 3:2 crop loses 1/6 of the square on each side), clear of hair and arms.
BACKGROUND_REGION = (0.18, 0.18, 0.26, 0.26)
# white_border = WHITE_BORDER_GAIN * corner brightness: linear, so the tests can check exact
# values; kept under the default 0.35 so that demo captions do not get it for padded images.
WHITE_BORDER_GAIN = 0.3
CORNER_FRACTION = 8  # each corner patch is 1/8 of the side
CHARACTER_TAG = "uiharu_kazari"
CHARACTER_HAIR = "pink_hair"  # the synthetic character's fixed hair colour


@dataclass(frozen=True)
class TinySpec:
    """Everything the closed form needs (also what the model was built from)."""

    size: int
    profile: str  # "wd14" or "deepdanbooru"
    names: tuple[str, ...]
    categories: tuple[int, ...]
    hair_tags: tuple[str, ...]
    hair_rgb: np.ndarray  # (K, 3)
    background_tags: tuple[str, ...]
    background_rgb: np.ndarray  # (B, 3)
    character_rgb: np.ndarray  # (3,)
    constants: dict[str, float]


def tiny_spec(size: int = 448, profile: str = "wd14") -> TinySpec:
    ratings = WD14_RATINGS if profile == "wd14" else DD_RATINGS
    hair_tags = tuple(HAIR_COLOURS)
    bg_tags = tuple(BACKGROUNDS)
    names = [*ratings, *CONSTANT_GENERAL, "white_border", *bg_tags, *hair_tags, CHARACTER_TAG]
    n_general = len(CONSTANT_GENERAL) + 1 + len(bg_tags) + len(hair_tags)
    cats = [RATING] * len(ratings) + [GENERAL] * n_general + [CHARACTER]
    return TinySpec(
        size=size,
        profile=profile,
        names=tuple(names),
        categories=tuple(cats),
        hair_tags=hair_tags,
        hair_rgb=np.asarray([HAIR_COLOURS[t] for t in hair_tags], dtype=np.float32),
        background_tags=bg_tags,
        background_rgb=np.asarray([BACKGROUNDS[t] for t in bg_tags], dtype=np.float32),
        character_rgb=np.asarray(HAIR_COLOURS[CHARACTER_HAIR], dtype=np.float32),
        constants={**ratings, **CONSTANT_GENERAL},
    )


def region_box(region: tuple[float, float, float, float], size: int) -> tuple[int, int, int, int]:
    """Fractions of the padded square (left, top, right, bottom) -> pixels (at least 1x1)."""
    x0, y0, x1, y1 = region
    left, top = int(x0 * size), int(y0 * size)
    right, bottom = max(left + 1, int(round(x1 * size))), max(top + 1, int(round(y1 * size)))
    return left, top, right, bottom


def hair_box(size: int) -> tuple[int, int, int, int]:
    return region_box(HAIR_REGION, size)


def background_box(size: int) -> tuple[int, int, int, int]:
    return region_box(BACKGROUND_REGION, size)


def _corner(size: int) -> int:
    return max(1, size // CORNER_FRACTION)


def reference_scores(batch: np.ndarray, spec: TinySpec) -> np.ndarray:
    """The model's function in numpy: NHWC batch as the model receives it -> (N, n_tags)."""
    x = np.asarray(batch, dtype=np.float64)
    # DeepDanbooru input is RGB 0..1; WD14 input is BGR, and the formulas are in RGB 0..255.
    x = x * 255.0 if spec.profile == "deepdanbooru" else x[..., ::-1]
    left, top, right, bottom = hair_box(spec.size)
    hair = x[:, top:bottom, left:right, :].mean(axis=(1, 2))  # (N, 3) RGB
    left, top, right, bottom = background_box(spec.size)
    bg = x[:, top:bottom, left:right, :].mean(axis=(1, 2))
    c = _corner(spec.size)
    corners = [x[:, :c, :c], x[:, :c, -c:], x[:, -c:, :c], x[:, -c:, -c:]]
    border = np.mean([p.mean(axis=(1, 2, 3)) for p in corners], axis=0) * (WHITE_BORDER_GAIN / 255.0)

    def similarity(mean: np.ndarray, colours: np.ndarray, sigma: float) -> np.ndarray:
        d2 = ((mean[:, None, :] - colours[None].astype(np.float64)) ** 2).sum(-1)
        return np.exp(-d2 / sigma**2)

    bg_scores = similarity(bg, spec.background_rgb, BACKGROUND_SIGMA)
    hair_scores = similarity(hair, spec.hair_rgb, HAIR_SIGMA)
    char = similarity(hair, spec.character_rgb[None], CHARACTER_SIGMA)
    consts = np.tile(np.asarray(list(spec.constants.values())), (x.shape[0], 1))
    return np.concatenate([consts, border[:, None], bg_scores, hair_scores, char], axis=1).astype(np.float32)


def build_model_bytes(spec: TinySpec, nchw: bool = False, batch: int | None = None) -> bytes:
    """Serialise the tiny tagger as an ONNX model (opset 17) implementing reference_scores.

    ``nchw`` builds a channels-first variant (same function), like some third-party exports;
    ``batch`` fixes the batch dimension, like WD14 exports before v2.1.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    s = spec.size
    nodes = []
    inits = []

    def const(name: str, value) -> str:
        arr = np.asarray(value)
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    x = "input"
    if nchw:
        x = node("Transpose", [x], "input_nhwc", perm=[0, 2, 3, 1])
    if spec.profile == "deepdanbooru":  # RGB 0..1 in; work in RGB 0..255
        rgb = node("Mul", [x, const("k255", np.float32(255.0))], "rgb")
    else:  # BGR 0..255 in; reverse the channel axis to get RGB
        rgb = node("Slice", [x, const("rs", np.array([-1], np.int64)), const("re", np.array([-4], np.int64)),
                             const("ra", np.array([3], np.int64)), const("rstep", np.array([-1], np.int64))], "rgb")

    def region_mean(tag: str, top: int, bottom: int, left: int, right: int, axes: list[int]) -> str:
        cut = node("Slice", [rgb, const(f"{tag}_s", np.array([top, left], np.int64)),
                             const(f"{tag}_e", np.array([bottom, right], np.int64)),
                             const(f"{tag}_a", np.array([1, 2], np.int64))], f"{tag}_cut")
        return node("ReduceMean", [cut], f"{tag}_mean", axes=axes, keepdims=0)

    left, top, right, bottom = hair_box(s)
    hair = region_mean("hair", top, bottom, left, right, [1, 2])  # (N, 3)
    c = _corner(s)
    corner_means = [
        region_mean("c0", 0, c, 0, c, [1, 2, 3]),
        region_mean("c1", 0, c, s - c, s, [1, 2, 3]),
        region_mean("c2", s - c, s, 0, c, [1, 2, 3]),
        region_mean("c3", s - c, s, s - c, s, [1, 2, 3]),
    ]
    acc = node("Add", corner_means[:2], "c01")
    acc = node("Add", [acc, corner_means[2]], "c012")
    acc = node("Add", [acc, corner_means[3]], "c0123")
    white = node("Mul", [acc, const("k_white", np.float32(WHITE_BORDER_GAIN / (4 * 255.0)))], "white_flat")
    white = node("Unsqueeze", [white, const("ax1", np.array([1], np.int64))], "white")  # (N, 1)
    left, top, right, bottom = background_box(s)
    bg = region_mean("bg", top, bottom, left, right, [1, 2])

    def similarity(tag: str, mean: str, colours: np.ndarray, sigma: float) -> str:
        """exp(-|mean - colour|^2 / sigma^2) for each colour: (N, 3) -> (N, K)."""
        m3 = node("Unsqueeze", [mean, const(f"{tag}_ax", np.array([1], np.int64))], f"{tag}_m3")  # (N, 1, 3)
        diff = node("Sub", [m3, const(f"{tag}_rgb", colours[None].astype(np.float32))], f"{tag}_diff")
        d2 = node("ReduceSum", [node("Mul", [diff, diff], f"{tag}_sq"), const(f"{tag}_ax2", np.array([2], np.int64))],
                  f"{tag}_d2", keepdims=0)
        neg = node("Mul", [d2, const(f"{tag}_k", np.float32(-1.0 / sigma**2))], f"{tag}_neg")
        return node("Exp", [neg], f"{tag}_scores")

    bg_scores = similarity("bgc", bg, spec.background_rgb, BACKGROUND_SIGMA)
    hair_scores = similarity("hairc", hair, spec.hair_rgb, HAIR_SIGMA)
    char = similarity("char", hair, spec.character_rgb[None], CHARACTER_SIGMA)
    # Constant rows broadcast to the batch: 0 * white + constants.
    zero = node("Mul", [white, const("k0", np.float32(0.0))], "zero_col")
    consts = node("Add", [zero, const("consts", np.asarray([list(spec.constants.values())], np.float32))], "consts_b")
    node("Concat", [consts, white, bg_scores, hair_scores, char], "output", axis=1)

    b = batch or "batch"
    graph = helper.make_graph(
        nodes, "kazari_tiny_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [b, 3, s, s] if nchw else [b, s, s, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [b, len(spec.names)])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kazari")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    helper.set_model_props(model, {"kazari.profile": spec.profile, "kazari.tiny": "1"})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def selected_tags_csv(spec: TinySpec) -> str:
    rows = ["tag_id,name,category,count"]
    rows += [f"{i},{n},{c},{1000 - i}" for i, (n, c) in enumerate(zip(spec.names, spec.categories, strict=True))]
    return "\n".join(rows) + "\n"


def build_tiny_tagger(folder: Path | str, size: int = 448, profile: str = "wd14", nchw: bool = False,
                      batch: int | None = None) -> Path:
    """Write ``model.onnx`` plus ``selected_tags.csv`` (WD14) or ``tags.txt`` (DeepDanbooru).

    Returns the folder, ready for ``--model``. Rebuilding gives identical bytes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = tiny_spec(size, profile)
    atomic_write_bytes(folder / "model.onnx", build_model_bytes(spec, nchw, batch))
    if profile == "deepdanbooru":
        atomic_write_text(folder / "tags.txt", "\n".join(spec.names) + "\n")
        chars = [n for n, c in zip(spec.names, spec.categories, strict=True) if c == CHARACTER]
        atomic_write_text(folder / "tags-character.txt", "\n".join(chars) + "\n")
    else:
        atomic_write_text(folder / "selected_tags.csv", selected_tags_csv(spec))
    return folder
