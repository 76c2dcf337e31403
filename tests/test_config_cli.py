"""`kazari config new/check/show/import-kohya/export-kohya` and the generated docs/config.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from trainer.config import load_config, preset
from trainer.config.docs import DOC_PATH, render_manual
from trainer.config.schema import field_specs
from tui.cli import main


def setup_project(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model_index.json").write_text("{}")
    folder = tmp_path / "data" / "10_kazari"
    folder.mkdir(parents=True)
    for i, size in enumerate([(64, 64), (64, 128), (128, 64)]):
        Image.new("RGB", size).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("kazari, 1girl")
    return tmp_path


def new_config(tmp_path: Path, *extra: str) -> Path:
    path = tmp_path / "train.toml"
    assert main(["config", "new", "--preset", "quick-test", "-o", str(path),
                 "--set", "model.pretrained_model=model", "--set", "dataset.train_data_dir=data", *extra]) == 0
    return path


def test_new_then_check_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_project(tmp_path)
    path = new_config(tmp_path)
    assert load_config(path) == preset("quick-test", model={"pretrained_model": tmp_path / "model"},
                                       dataset={"train_data_dir": tmp_path / "data"}).resolve_paths(tmp_path)
    capsys.readouterr()
    assert main(["config", "check", str(path)]) == 0
    assert "valid (0 error(s)" in capsys.readouterr().out


def test_new_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.toml"
    path.write_text("# mine\n")
    assert main(["config", "new", "-o", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err and path.read_text() == "# mine\n"
    assert main(["config", "new", "-o", str(path), "--force"]) == 0
    assert "[optimizer]" in path.read_text()


def test_new_with_unknown_set_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "new", "-o", str(tmp_path / "x.toml"), "--set", "network.dim=4"]) == 2
    assert "network.network_dim" in capsys.readouterr().err


def test_check_invalid_exits_1_with_messages_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_project(tmp_path)
    path = new_config(tmp_path)
    path.write_text(path.read_text().replace('resolution = "64,64"', 'resolution = "100,64"'))
    capsys.readouterr()
    assert main(["config", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "error: " in out and "dataset.resolution" in out and "invalid" in out
    assert main(["config", "check", str(path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is False and data["version"] == 1
    (err,) = data["errors"]
    assert err["key"] == "dataset.resolution" and err["value"] == "100,64" and isinstance(err["line"], int)


def test_show_prints_values_and_derived_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_project(tmp_path)
    path = new_config(tmp_path)
    capsys.readouterr()
    assert main(["config", "show", str(path), "--speed", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "network_dim = 4" in out and "(default)" in out
    assert "folder 10_kazari: 3 images x 10 repeats = 30" in out
    assert "steps: 30 per epoch x 2 epochs = 60" in out and "estimated time: 30s" in out
    assert main(["config", "show", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["derived"]["total_steps"] == 60 and data["config"]["network"]["network_dim"] == 4


def test_import_and_export_kohya_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_project(tmp_path)
    path = new_config(tmp_path)
    capsys.readouterr()
    assert main(["config", "export-kohya", str(path), "-o", str(tmp_path / "kohya")]) == 0
    out = capsys.readouterr().out
    assert "accelerate launch" in out and "train_network.py" in out
    assert (tmp_path / "kohya" / "config.toml").exists() and (tmp_path / "kohya" / "dataset.toml").exists()
    back = tmp_path / "back.toml"
    assert main(["config", "import-kohya", str(tmp_path / "kohya" / "config.toml"), "--dataset-config",
                 str(tmp_path / "kohya" / "dataset.toml"), "-o", str(back)]) == 0
    assert load_config(back) == load_config(path)


def test_import_keeps_unknown_options_as_comments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "sd.toml"
    src.write_text('[a]\nresolution = "512,512"\nmax_train_epochs = 4\nlr_restart_cycles = 2\n')
    out = tmp_path / "k.toml"
    assert main(["config", "import-kohya", str(src), "-o", str(out)]) == 0
    assert "not imported: lr_restart_cycles = 2" in capsys.readouterr().out
    assert "#   lr_restart_cycles = 2" in out.read_text()


def test_docs_config_md_is_up_to_date() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == render_manual(), (
        "docs/config.md is stale: run `python -m trainer.config.docs --write`")


def test_docs_document_every_key() -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    for spec in field_specs():
        assert f"## [{spec.section}]" in text
        assert f"| `{spec.name}` | {spec.description}" in text


def test_check_syntax_error_is_invalid_and_missing_file_is_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[network]\nnetwork_dim = \n")
    assert main(["config", "check", str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["errors"][0]["code"] == "syntax" and data["errors"][0]["line"] == 2
    assert main(["config", "check", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_never_clobbers_an_edited_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_project(tmp_path)
    path = new_config(tmp_path)
    out = tmp_path / "kohya"
    assert main(["config", "export-kohya", str(path), "-o", str(out)]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["config", "export-kohya", str(path), "-o", str(out)]) == 0  # same content: untouched
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    edited = (out / "config.toml").read_text() + "# my own note\n"
    (out / "config.toml").write_text(edited)
    capsys.readouterr()
    assert main(["config", "export-kohya", str(path), "-o", str(out)]) == 2
    assert "config.toml already exists" in capsys.readouterr().err
    assert (out / "config.toml").read_text() == edited
    assert main(["config", "export-kohya", str(path), "-o", str(out), "--force"]) == 0
    assert "# my own note" not in (out / "config.toml").read_text()


def test_output_of_the_wrong_kind_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_project(tmp_path)
    path = new_config(tmp_path)
    capsys.readouterr()
    assert main(["config", "new", "-o", str(tmp_path / "data"), "--force"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["config", "export-kohya", str(path), "-o", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "Traceback" not in err


def test_new_with_a_value_of_the_wrong_type_says_what_to_type(tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["config", "new", "-o", str(tmp_path / "n.toml"), "--set", "network.network_dim=abc"]) == 2
    err = capsys.readouterr().err
    assert "network.network_dim" in err and "whole number, e.g. 64" in err and "base 10" not in err
    assert not (tmp_path / "n.toml").exists()
