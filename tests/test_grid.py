"""Epoch x weight grid: layout, labels, reuse, in-place swaps, progress/cancel, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tagging.errors import UserError
from trainer.grid import build_grid, find_run_loras, grid_geometry
from trainer.lora import LoRANetwork
from trainer.models import load_sd1
from trainer.sampling import Sampler
from trainer.tiny import make_tiny_sd

torch.set_num_threads(1)
PROMPT = "1girl, smile --w 64 --h 64 --s 3 --l 5"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    folder = make_tiny_sd(root / "sd")
    b = load_sd1(folder)
    net = LoRANetwork(b.unet, b.text_encoder, dim=4, alpha=4)
    out = root / "run"
    for e, name in ((1, "char-000001"), (2, "char-000002"), (3, "char")):
        g = torch.Generator().manual_seed(e)
        with torch.no_grad():
            for lora in net.loras:
                lora.lora_up.weight.normal_(0, 0.1 * e, generator=g)
        net.save(out / f"{name}.safetensors", {"ss_epoch": str(e)})
    (out / "other-000001.safetensors").write_bytes((out / "char-000001.safetensors").read_bytes())
    return {"folder": folder, "run": out}


def _arr(img):
    return np.asarray(img, dtype=np.float32)


def test_find_run_loras_orders_epochs_then_last(run):
    rows = find_run_loras(run["run"])
    assert [label for label, _ in rows] == ["epoch 1", "epoch 2", "last"]
    assert [p.name for _, p in rows] == ["char-000001.safetensors", "char-000002.safetensors", "char.safetensors"]
    assert [p.name for _, p in find_run_loras(run["run"], "other")] == ["other-000001.safetensors"]
    with pytest.raises(UserError):
        find_run_loras(run["run"] / "nope")


def test_find_run_loras_lists_the_step_saves_of_a_stopped_run(run, tmp_path):
    # A stopped run leaves epoch files and a -stepNNNNNNNN file but no final one: its last weights
    # must still be on the grid.
    data = (run["run"] / "char-000001.safetensors").read_bytes()
    for name in ("char-000001", "char-step00000078", "char-step00000012", "char-000002"):
        (tmp_path / f"{name}.safetensors").write_bytes(data)
    rows = find_run_loras(tmp_path)
    assert [label for label, _ in rows] == ["epoch 1", "epoch 2", "step 12", "step 78"]
    assert rows[-1][1].name == "char-step00000078.safetensors"


def test_grid_layout_labels_files_and_same_noise(run, tmp_path):
    b = load_sd1(run["folder"])
    seen = []
    result = build_grid(b, run["run"], [PROMPT], weights=[0, 0.5, 1], seeds=[11], out_dir=tmp_path,
                        progress=lambda d, t, c: seen.append((d, t)))
    assert result.complete and not result.cancelled
    assert result.rows == ["epoch 1", "epoch 2", "last"] and result.weights == [0, 0.5, 1]
    assert seen[-1] == (9, 9) and len(seen) == 9
    # weight 0 is the base model for every epoch, rendered once and reused
    base = Sampler(load_sd1(run["folder"]), "euler_a").generate(PROMPT, seed=11)
    for r in range(3):
        assert np.array_equal(_arr(result.cell(0, r, 0).image), _arr(base))
    assert [result.cell(0, r, 0).reused for r in range(3)] == [False, True, True]
    # the labelled grid: cells pasted at their row/column
    grid = Image.open(result.grid_paths[(0, 0)]).convert("RGB")
    left, top, w, h = grid_geometry(64, 64, 3, 3)
    assert grid.size == (w, h)
    for r in range(3):
        for c in range(3):
            crop = grid.crop((left + c * 64, top + r * 64, left + (c + 1) * 64, top + (r + 1) * 64))
            assert np.array_equal(_arr(crop), _arr(result.cell(0, r, c).image))
    # header area carries text (not blank)
    assert _arr(grid.crop((left, 0, w, top))).min() < 128
    index = json.loads(result.index_path.read_text())
    assert index["complete"] and [r["label"] for r in index["rows"]] == ["epoch 1", "epoch 2", "last"]
    assert len(index["cells"]) == 9 and all((tmp_path / c["path"]).is_file() for c in index["cells"])
    assert "parameters" in Image.open(tmp_path / index["cells"][4]["path"]).text
    # base model left without LoRA hooks afterwards
    assert np.array_equal(_arr(Sampler(b, "euler_a").generate(PROMPT, seed=11)), _arr(base))


def test_in_place_swap_equals_fresh_loading(run):
    b = load_sd1(run["folder"])
    result = build_grid(b, run["run"], [PROMPT], weights=[0.7], seeds=[5])
    for r, (_, path) in enumerate(find_run_loras(run["run"])):
        s = Sampler(load_sd1(run["folder"]), "euler_a")
        s.set_lora(path, weight=0.7)
        fresh = s.generate(PROMPT, seed=5)
        assert np.allclose(_arr(result.cell(0, r, 0).image), _arr(fresh), atol=1)


def test_cancel_keeps_the_cells_already_done(run, tmp_path):
    b = load_sd1(run["folder"])
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 6  # a few denoising steps in

    result = build_grid(b, run["run"], [PROMPT], weights=[0.5, 1], seeds=[1], out_dir=tmp_path, cancel=cancel)
    assert result.cancelled and not result.complete
    done = [k for k in result.cells]
    assert 0 < len(done) < 6
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["complete"] is False and len(index["cells"]) == len(done)
    assert result.grid_paths[(0, 0)].is_file()


def test_explicit_lora_list_and_several_prompts(run):
    b = load_sd1(run["folder"])
    files = [run["run"] / "char.safetensors", run["run"] / "char-000001.safetensors"]
    result = build_grid(b, files, [PROMPT, "solo --w 64 --h 64 --s 2"], weights=[1], seeds=[1, 2])
    assert result.rows == ["char", "epoch 1"]
    assert len(result.cells) == 2 * 2 * 2 and len(result.grid_images) == 4
    with pytest.raises(UserError, match="does not exist"):
        build_grid(b, [run["run"] / "nope.safetensors"], [PROMPT])
    with pytest.raises(UserError, match="steps = 0"):  # 0 steps used to decode pure noise
        build_grid(b, files, [PROMPT], weights=[1], steps=0)


def test_a_foreign_lora_is_named_and_leaves_the_previous_grid_alone(run, tmp_path):
    b = load_sd1(run["folder"])
    out = tmp_path / "g"
    build_grid(b, [run["run"] / "char.safetensors"], [PROMPT], weights=[1], seeds=[1], out_dir=out)
    before = {p.name: p.read_bytes() for p in out.glob("*") if p.is_file()}
    foreign = tmp_path / "sdxl_lora.safetensors"  # an SDXL-style module name: no match in SD1
    from safetensors.torch import save_file

    save_file({"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(foreign))
    with pytest.raises(UserError, match="sdxl_lora.safetensors is not an SD1.x LoRA"):
        build_grid(b, [foreign], [PROMPT], weights=[1], seeds=[1], out_dir=out)
    assert {p.name: p.read_bytes() for p in out.glob("*") if p.is_file()} == before


def test_cli_grid_from_run_dir(run, tmp_path, capsys):
    from tui.cli import main

    code = main([
        "grid", str(run["run"]), "--model", str(run["folder"]), "--weights", "0,1", "--prompt", "1girl --w 64 --h 64",
        "--seed", "3", "--steps", "2", "--sampler", "euler", "-o", str(tmp_path / "g"), "--device", "cpu", "--json",
    ])
    assert code == 0
    index = json.loads(capsys.readouterr().out)
    assert index["weights"] == [0.0, 1.0] and len(index["cells"]) == 6 and index["seeds"] == [3]
    assert (tmp_path / "g" / index["grids"][0]["path"]).is_file()
    assert main(["grid", str(run["run"]), "--prompt", "x"]) == 2  # no --model: clear error, exit 2
    if not torch.cuda.is_available():  # used to be a traceback from deep inside torch
        assert main(["grid", str(run["run"]), "--model", str(run["folder"]), "--prompt", "x",
                     "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_cli_grid_from_config_uses_its_model_prompts_and_output(run, tmp_path, capsys):
    from tui.cli import main

    cfg = tmp_path / "char.toml"
    cfg.write_text(
        "[model]\n"
        f'pretrained_model = "{run["folder"].as_posix()}"\n'
        "[dataset]\n"
        f'train_data_dir = "{(tmp_path / "data").as_posix()}"\n'
        "max_token_length = 150\n"
        "[training]\n"
        "clip_skip = 2\n"
        "[output]\n"
        f'output_dir = "{run["run"].as_posix()}"\n'
        'output_name = "char"\n'
        "[sample]\n"
        'sample_prompts = ["1girl, solo --w 64 --h 64 --s 2 --d 9"]\n'
        'sample_sampler = "ddim"\n',
        encoding="utf-8",
    )
    out = tmp_path / "g"
    assert main(["grid", str(cfg), "--weights", "1", "-o", str(out), "--device", "cpu", "--json"]) == 0
    index = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in index["rows"]] == ["epoch 1", "epoch 2", "last"]
    assert index["prompts"][0].startswith("1girl, solo") and index["seeds"] == [9]
    params = Image.open(out / index["cells"][0]["path"]).text["parameters"]
    assert "Sampler: DDIM" in params and "Clip skip: 2" in params


def test_rebuilding_a_grid_keeps_the_previous_one_numbered(run, tmp_path):
    from trainer.grid import GridSource, render_run_grid

    out = tmp_path / "grid"
    source = GridSource(model=run["folder"], device="cpu")
    files = [run["run"] / "char.safetensors"]
    render_run_grid(source, files, [PROMPT], weights=[1], seeds=[1], out_dir=out)
    first = (out / "index.json").read_bytes()
    render_run_grid(source, files, [PROMPT], weights=[0.5], seeds=[1], out_dir=out)
    assert (tmp_path / "grid-1" / "index.json").read_bytes() == first
    assert json.loads((out / "index.json").read_text())["weights"] == [0.5]
    render_run_grid(source, files, [PROMPT], weights=[1], seeds=[1], out_dir=out)
    assert (tmp_path / "grid-2" / "index.json").is_file()


@pytest.mark.parametrize("front", ["config", "cli"])
def test_grid_loads_the_ema_unet_when_the_config_trained_on_it(run, tmp_path, monkeypatch, front):
    # [model] use_ema picks the U-Net the LoRA was trained on; the grid must load the same one.
    import trainer.models
    from trainer.config import load_config
    from trainer.grid import GridSource, load_base

    seen: dict = {}

    def fake_load_sd1(path, **kw):
        seen.update(kw)
        raise UserError("stop here")

    monkeypatch.setattr(trainer.models, "load_sd1", fake_load_sd1)
    cfg = tmp_path / "char.toml"
    cfg.write_text(
        f'[model]\npretrained_model = "{run["folder"].as_posix()}"\nuse_ema = true\n'
        f'[dataset]\ntrain_data_dir = "{(tmp_path / "data").as_posix()}"\n'
        f'[output]\noutput_dir = "{run["run"].as_posix()}"\n'
        '[sample]\nsample_prompts = ["1girl --w 64 --h 64 --s 2"]\n',
        encoding="utf-8",
    )
    if front == "config":
        with pytest.raises(UserError, match="stop here"):
            load_base(GridSource.from_config(load_config(cfg, check=False), device="cpu"))
    else:
        from tui.cli import main

        assert main(["grid", str(cfg), "--weights", "1", "-o", str(tmp_path / "g"), "--device", "cpu"]) == 2
    assert seen["use_ema"] is True
