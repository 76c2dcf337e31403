"""The judge: metrics rank known-good above known-bad; the reason names the failing metric."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from tagging.synthetic import BACKGROUNDS, draw_character
from tagging.tagger import Tagger
from tagging.tagger.tiny import build_tiny_tagger
from trainer.judge.found_tags import tag_images
from trainer.judge.prompts import build_eval_prompts, default_prompt_lines, positive_tags
from trainer.judge.score import CellScore, ImageTagsFound, Weights, combined_score, recommend, score_cells

ROWS = ["epoch 1 (underfit)", "epoch 2 (good)", "epoch 3 (overfit)"]
WEIGHTS = [0.0, 0.5, 1.0]
SEEDS = [1, 2]
FEATURES = ["pink_hair"]
PROMPTS = ["kazari", "kazari, blue_background"]  # trigger alone; + a place the dataset never shows
LEAK = ["white_background"]  # every training image has it


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return Tagger.load(build_tiny_tagger(tmp_path_factory.mktemp("tagger") / "tiny", size=64))


def _character(seed: int, hair: str, background: str) -> Image.Image:
    """The synthetic character with the given hair colour on a chosen flat background."""
    drawing = draw_character(random.Random(seed), size=128, hair=hair)
    drawn_bg = next(t for t in drawing.tags if t in BACKGROUNDS)
    arr = np.asarray(drawing.image).copy()
    mask = np.all(arr == BACKGROUNDS[drawn_bg], axis=-1)
    arr[mask] = BACKGROUNDS[background]
    return Image.fromarray(arr)


def fake_generator(row: int, weight: float, prompt: int, seed: int) -> Image.Image:
    """What each kind of LoRA draws: the base model (weight 0) knows neither hair nor trigger."""
    asked_bg = "blue_background" if prompt == 1 else "white_background"
    if weight == 0 or row == 0:  # base model / underfit: brown hair, follows the prompt
        return _character(seed, "brown_hair", asked_bg)
    if row == 1:  # good: pink hair, follows the prompt
        return _character(seed, "pink_hair", asked_bg)
    return _character(seed, "pink_hair", "white_background")  # overfit: ignores the prompt


def _judge_fake(tagger, tmp_path, weights=WEIGHTS):
    items, where = [], {}
    for r in range(len(ROWS)):
        for c, w in enumerate(weights):
            for p in range(len(PROMPTS)):
                for s in SEEDS:
                    key = f"r{r}_c{c}_p{p}_s{s}.png"
                    fake_generator(r, w, p, s).save(tmp_path / key)
                    items.append((key, tmp_path / key))
                    where[key] = (r, c, p, s)
    found = tag_images(tagger, items, tmp_path)
    images = [ImageTagsFound(*where[k][:3], where[k][3], found[k]) for k, _ in items]
    prompts = build_eval_prompts(PROMPTS, "kazari", FEATURES, tagger.labels.names)
    cells = score_cells(images, ROWS, weights, [p.asked for p in prompts], FEATURES, LEAK)
    return cells, found


def test_fake_generator_carries_the_features_the_tiny_tagger_reads(tagger, tmp_path):
    _, found = _judge_fake(tagger, tmp_path)
    assert "pink_hair" in found["r1_c2_p0_s1.png"] and "pink_hair" not in found["r0_c2_p0_s1.png"]
    assert "blue_background" in found["r1_c2_p1_s1.png"] and "blue_background" not in found["r2_c2_p1_s1.png"]
    assert "white_background" in found["r2_c2_p1_s1.png"]


def test_underfit_good_overfit_rank_and_the_reason_names_the_failing_metric(tagger, tmp_path):
    cells, _ = _judge_fake(tagger, tmp_path)
    best = {r: max(c.score for c in cells if c.row == r and c.weight > 0) for r in range(3)}
    assert best[0] < best[1] > best[2]
    under = next(c for c in cells if c.row == 0 and c.weight == 1)
    over = next(c for c in cells if c.row == 2 and c.weight == 1)
    good = next(c for c in cells if c.row == 1 and c.weight == 1)
    assert (under.recall, under.adherence) == (0.0, 1.0)
    assert (good.recall, good.adherence, good.leakage) == (1.0, 1.0, 0.0)
    assert (over.recall, over.adherence, over.leakage) == (1.0, 0.0, 1.0)
    assert over.ignored_tags == ["blue_background"] and over.leaked_tags == ["white_background"]
    pick = recommend(cells, FEATURES)
    assert pick.label == "epoch 2 (good)" and pick.weight > 0
    assert "all 1 feature from the trigger alone" in pick.reason
    assert "Epoch 1 (underfit) is underfit" in pick.reason and "feature recall 0.00" in pick.reason
    assert "ignores 'blue_background'" in pick.reason and "prompt adherence 0.00" in pick.reason
    assert "leakage 1.00" in pick.reason  # the overfit epoch draws the training background unprompted
    # weight 0 is the base model: baseline recall 0, never recommended
    base = next(c for c in cells if c.row == 1 and c.weight == 0)
    assert base.recall == 0.0 and "base model 0.00" in pick.reason


def test_a_partial_overfit_loses_to_a_steady_epoch(tagger, tmp_path):
    # Without weight 0 there is no baseline: generic tags are still not leaks.
    cells, _ = _judge_fake(tagger, tmp_path, weights=[0.5, 1.0])
    pick = recommend(cells, FEATURES)
    assert pick.row == 1
    assert all(c.leakage == 0 for c in cells if c.row == 1)


def test_combined_score_formula():
    cell = CellScore(0, 0, "e", 1.0, recall=1.0, adherence=0.5)
    b2 = 4.0
    assert combined_score(cell, Weights(beta=2)) == pytest.approx((1 + b2) * 0.5 / (b2 * 0.5 + 1))
    # fidelity counts more than adherence with beta > 1
    swapped = CellScore(0, 0, "e", 1.0, recall=0.5, adherence=1.0)
    assert combined_score(swapped) < combined_score(cell)
    leaky = CellScore(0, 0, "e", 1.0, recall=1.0, adherence=1.0, leakage=0.5)
    assert combined_score(leaky, Weights(leak_penalty=0.5)) == pytest.approx(0.75)
    broken = CellScore(0, 0, "e", 1.0, recall=1.0, adherence=1.0, corruption=1.0)
    assert combined_score(broken) == 0
    only = CellScore(0, 0, "e", 1.0, adherence=0.8)  # no features known: adherence alone
    assert combined_score(only) == pytest.approx(0.8)


def test_eval_prompts_defaults_and_asked_tags():
    lines = default_prompt_lines(["school_uniform", "beach"])
    assert lines[0] == "{trigger}" and "bikini" in lines[1] and "forest" in lines[2] and "from_behind" in lines[3]
    prompts = build_eval_prompts(["{trigger}, (bikini:1.2), masterpiece, pink_hair --w 64 --h 64"], "kazari",
                                 ["pink_hair"], known_tags=["bikini", "pink_hair"])
    assert prompts[0].spec.prompt.startswith("kazari,") and prompts[0].asked == ("bikini",)
    assert positive_tags("a, <lora:x:1>, b c") == ["a", "b_c"]


# ------------------------------------------------------------------------------- CCIP identity


def _tiny_ccip(folder, threshold=0.05):
    """A stand-in with CCIP's interface: feature = mean normalised colour, metric = squared distance."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    feat = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["output"], axes=[2, 3], keepdims=0)], "feat",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 384, 384])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3])])
    ax0 = numpy_helper.from_array(np.array([0], np.int64), "ax0")
    ax1 = numpy_helper.from_array(np.array([1], np.int64), "ax1")
    ax2 = numpy_helper.from_array(np.array([2], np.int64), "ax2")
    metric = helper.make_graph(
        [helper.make_node("Unsqueeze", ["input", "ax1"], ["a"]), helper.make_node("Unsqueeze", ["input", "ax0"], ["b"]),
         helper.make_node("Sub", ["a", "b"], ["d"]), helper.make_node("Mul", ["d", "d"], ["d2"]),
         helper.make_node("ReduceSum", ["d2", "ax2"], ["output"], keepdims=0)], "metric",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", "n"])], initializer=[ax0, ax1, ax2])
    for name, graph in (("model_feat.onnx", feat), ("model_metrics.onnx", metric)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(folder / name))
    (folder / "metrics.json").write_text(json.dumps({"threshold": threshold}))
    return folder


def test_ccip_identity_with_a_tiny_stand_in_model(tmp_path):
    from trainer.judge.identity import CCIP, resolve_ccip

    model = CCIP(resolve_ccip(_tiny_ccip(tmp_path / "ccip")))
    pink = [Image.new("RGB", (64, 64), (245, 140, 190)) for _ in range(3)]
    scores = model.identity_scores([pink[0], Image.new("RGB", (64, 64), (40, 60, 200))], pink)
    assert scores == [1.0, 0.0]


def test_ccip_offline_and_incomplete_folder_are_clear_errors(tmp_path, monkeypatch):
    from tagging.errors import UserError
    from trainer.judge.identity import resolve_ccip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not in the Hugging Face cache") as err:
        resolve_ccip("ccip-caformer-24-randaug-pruned", cache_dir=tmp_path / "hf")
    assert "identity = false" in str(err.value) and "hf download deepghs/ccip_onnx" in str(err.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_feat.onnx").write_bytes(b"x")
    with pytest.raises(UserError, match="lacks model_metrics.onnx, metrics.json"):
        resolve_ccip(tmp_path / "half")


def test_prompt_file_keeps_the_trigger_and_takes_missing_options_from_the_defaults(tmp_path):
    from trainer.prompts import PromptSpec

    path = tmp_path / "eval.txt"
    path.write_text("# mine\n{trigger}\n\n{trigger}, blue_background --s 3\n", encoding="utf-8")
    defaults = PromptSpec(prompt="", width=64, height=64, steps=2)
    prompts = build_eval_prompts(path, "kazari", [], ["blue_background"], defaults)
    assert [p.spec.prompt for p in prompts] == ["kazari", "kazari, blue_background"]
    assert [(p.spec.width, p.spec.steps) for p in prompts] == [(64, 2), (64, 3)]
    assert prompts[1].asked == ("blue_background",) and prompts[0].scored_asked == ()
    unseen = build_eval_prompts(["{trigger}, bikini"], "kazari", [], ["blue_background"])
    assert unseen[0].scored_asked is None and unseen[0].unmeasured == ("bikini",)
