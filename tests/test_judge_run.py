"""The judge on a real tiny run (CLI end to end) and the fixed-noise validation loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomlkit
import torch
from test_train_support import make_config, tiny_dataset, tiny_model

from tagging.character import CharacterProfile, save_character
from tagging.tagger.tiny import build_tiny_tagger
from trainer import events as ev
from trainer.run import TrainingRun
from trainer.validation import read_validation_loss

pytestmark = pytest.mark.slow
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge")
    data = tiny_dataset(root / "data", n=4, repeats=1)
    save_character(data, CharacterProfile(trigger="kazari", features=["pink_hair"]))
    cfg = make_config(tiny_model(root), data, root / "out",
                      training={"max_train_epochs": 3}, output={"save_precision": "float"},
                      sample={"sample_prompts": ["kazari --w 64 --h 64 --s 2 --l 5"], "sample_every_n_epochs": 0},
                      judge={"validation_images": 2, "validation_timesteps": 3, "seed_count": 1})
    events: list = []
    run = TrainingRun(cfg, on_event=events.append)
    result = run.run()
    assert isinstance(result, ev.Finished), getattr(result, "message", result)
    path = root / "kazari.toml"
    path.write_text(tomlkit.dumps(cfg.to_toml_data()), encoding="utf-8")
    return {"cfg": cfg, "events": events, "run": run, "toml": path, "root": root,
            "tagger": build_tiny_tagger(root / "tagger", size=64)}


def test_validation_loss_is_emitted_at_each_save_and_differs_between_epochs(trained):
    vals = [e for e in trained["events"] if isinstance(e, ev.ValidationLoss)]
    assert [v.epoch for v in vals] == [1, 2, 3]
    assert len({v.loss for v in vals}) == 3
    out = trained["root"] / "out"
    files = ["t-000001.safetensors", "t-000002.safetensors", "t.safetensors"]
    assert [v.path.name for v in vals] == files
    # the value travels with the file, in its metadata
    assert [read_validation_loss(out / f) for f in files] == [v.loss for v in vals]


def test_validation_loss_is_bit_identical_for_the_same_weights(trained):
    run = trained["run"]
    hook = run._validation
    a = hook.fixed.compute(hook.unet, hook.encode)
    b = hook.fixed.compute(hook.unet, hook.encode)
    assert a == b  # bit-identical, not approximately
    last = [e for e in trained["events"] if isinstance(e, ev.ValidationLoss)][-1]
    assert a == last.loss  # the final weights are still loaded: same value as at their save
    # other weights: other value
    with torch.no_grad():
        for lora in run.network.loras:
            lora.lora_up.weight.mul_(0.5)
    c = hook.fixed.compute(hook.unet, hook.encode)
    with torch.no_grad():
        for lora in run.network.loras:
            lora.lora_up.weight.mul_(2.0)
    assert c != a and hook.fixed.compute(hook.unet, hook.encode) == a


def test_kazari_judge_end_to_end(trained, capsys):
    from tui.cli import main

    args = ["judge", str(trained["toml"]), "--tagger", str(trained["tagger"]), "--weights", "0,1", "--json"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    out = trained["root"] / "out"
    judge_dir = out / "judge"
    assert (judge_dir / "judge.json").is_file() and (judge_dir / data["plot"]).is_file()
    rows = data["rows"]
    assert [r["label"] for r in rows] == ["epoch 1", "epoch 2", "last"]
    assert len(data["cells"]) == len(rows) * len(data["weights"]) == 6
    assert all(len(c["images"]) == 4 and (judge_dir / c["images"][0]).is_file() for c in data["cells"])
    assert {(c["row"], c["col"]) for c in data["cells"]} == {(r, c) for r in range(3) for c in range(2)}
    pick = data["recommendation"]
    saved = {p.name for p in out.glob("*.safetensors")}
    assert Path(pick["lora"]).name in saved and pick["weight"] == 1.0 and pick["reason"].startswith("Keep ")
    assert data["features"] == ["pink_hair"] and data["trigger"] == "kazari"
    assert [p["line"].split(" --")[0] for p in data["prompts"]][0] == "kazari"
    assert len(data["validation"]) == 3
    from PIL import Image

    assert Image.open(judge_dir / data["plot"]).size[0] > 400
    # Judging again reuses the grid (same plan) and the cached tagger scores.
    mtime = (judge_dir / "index.json").stat().st_mtime_ns
    assert main(args[:-1]) == 0
    text = capsys.readouterr().out
    assert "Keep " in text and "val loss" in text
    assert (judge_dir / "index.json").stat().st_mtime_ns == mtime


def test_kazari_judge_on_a_run_folder_with_a_prompt_file(trained, tmp_path, capsys):
    from tui.cli import main

    out = trained["root"] / "out"
    assert main(["judge", str(out), "--prompts", "x.txt"]) == 2  # no --model: a clear error
    assert "--model" in capsys.readouterr().err
    prompts = tmp_path / "eval.txt"
    prompts.write_text("{trigger} --w 64 --h 64 --s 2\n{trigger}, bikini --w 64 --h 64 --s 2\n", encoding="utf-8")
    cfg = trained["cfg"]
    code = main(["judge", str(out), "--model", str(cfg.model.pretrained_model), "--dataset",
                 str(cfg.dataset.train_data_dir), "--tagger", str(trained["tagger"]), "--prompts", str(prompts),
                 "--weights", "1", "--seeds", "3", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert data["seeds"] == [3] and len(data["cells"]) == 3 and data["trigger"] == "kazari"
    assert data["prompts"][1]["unmeasured"] == ["bikini"]  # the tiny tagger has no such tag
    assert "bikini, which the tagger" in captured.err
    assert (out / "judge-1" / "judge.json").is_file()  # the earlier judgement was kept, numbered
