"""`kazari model inspect`: the report, exit 0 loadable / 1 not / 2 usage; the report logged on load."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainer.models import load_sd1
from trainer.tiny import make_tiny_sd, make_tiny_single_file
from tui.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    folder = make_tiny_sd(root / "sd")
    st = make_tiny_single_file(folder, root / "tiny.safetensors")
    from safetensors import safe_open

    with safe_open(str(st), "pt") as f:
        meta = f.metadata()
    sd = load_file(str(st))
    pruned = root / "pruned.safetensors"
    save_file({k: v for k, v in sd.items() if not k.startswith("first_stage_model.")}, str(pruned), metadata=meta)
    vae = root / "vae.safetensors"
    save_file({k.removeprefix("first_stage_model."): v for k, v in sd.items()
               if k.startswith("first_stage_model.")}, str(vae))
    return {"folder": folder, "st": st, "pruned": pruned, "vae": vae, "root": root}


def test_loadable_file_exit_0_with_the_report(tiny, capsys):
    assert main(["model", "inspect", str(tiny["st"])]) == 0
    out = capsys.readouterr().out
    assert "SD1.x model" in out and "VAE included" in out and out.strip().endswith("loadable")


def test_pruned_file_needs_a_vae(tiny, capsys):
    assert main(["model", "inspect", str(tiny["pruned"])]) == 1
    assert "NOT loadable" in capsys.readouterr().out
    assert main(["model", "inspect", str(tiny["pruned"]), "--vae", str(tiny["vae"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["loadable"] and not data["vae_present"] and data["family"] == "sd1"
    assert any("ldm layout" in n["message"] for n in data["notes"])


def test_load_really_loads_and_wrong_files_exit_1(tiny, capsys):
    assert main(["model", "inspect", str(tiny["st"]), "--load", "--tokenizer", str(tiny["folder"])]) == 0
    assert "Loaded as training loads it" in capsys.readouterr().out
    lora = tiny["root"] / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 4)}, str(lora))
    assert main(["model", "inspect", str(lora)]) == 1
    assert "a LoRA, not a base model" in capsys.readouterr().out
    broken = tiny["root"] / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["model", "inspect", str(broken)]) == 1
    assert main(["model", "inspect", str(tiny["st"]), "--vae", str(tiny["st"]), "--json"]) == 0  # full file as VAE


def test_usage_errors_exit_2(tiny, capsys):
    assert main(["model", "inspect", str(tiny["root"] / "nope.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["model", "inspect"])
    assert info.value.code == 2


def test_training_load_logs_the_same_report(tiny, caplog):
    with caplog.at_level(logging.INFO, logger="kazari.model"):
        load_sd1(tiny["pruned"], vae=tiny["vae"], tokenizer=tiny["folder"])
    text = caplog.text
    assert "pruned.safetensors" in text and "No VAE in the file" in text and "VAE from vae.safetensors" in text
