"""Issue 11 bad inputs on the trainer side: each ends in a one-paragraph error (exit 2, or `config
check` reporting invalid), no traceback, nothing written."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from test_config_cli import new_config, setup_project

from tagging.errors import UserError
from trainer.config import load_config
from tui.cli import main


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse rejects a bad option value with exit 2
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return rc, text


def test_config_with_a_utf8_bom_is_accepted(tmp_path: Path, capsys) -> None:
    path = new_config(setup_project(tmp_path))
    capsys.readouterr()
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Windows Notepad saves it
    rc, text = _run(["config", "check", str(path)], capsys)
    assert rc == 0 and "Empty key" not in text
    assert load_config(path).training.max_train_epochs >= 1


@pytest.mark.parametrize("command", [["config", "check"], ["config", "show"], ["train"], ["grid"]])
@pytest.mark.parametrize("body", ['[training]\nseed = 1\nseed = 2\n', '[training]\nseed = 1\n[training]\nseed = 2\n',
                                  'training.seed = 1\n[training]\nseed = 2\n'], ids=["key", "table", "dotted"])
def test_duplicate_keys_are_a_clear_error(tmp_path: Path, capsys, command: list[str], body: str) -> None:
    path = tmp_path / "dup.toml"
    path.write_text(body, encoding="utf-8")
    rc, text = _run([*command, str(path)], capsys)
    assert rc == (1 if command == ["config", "check"] else 2)
    assert f"{path}:" in text and ("already exists" in text or "Redefinition" in text)


def _set_optimizer_args(path: Path, value: str) -> None:
    text, n = re.subn(r"(?m)^optimizer_args = .*$", f"optimizer_args = {value}", path.read_text(encoding="utf-8"))
    assert n == 1
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(("args", "expect"), [
    ('{ weight_dacay = 0.01 }', "did you mean weight_decay"),
    ('{ weight_decay = "high" }', "wrong type"),
    ('{ betas = [0.9] }', "wrong type"),
    ('{ lr = 0.1 }', "learning_rate"),
    ('["nonsense"]', "wrong shape"),
])
def test_config_check_rejects_bad_optimizer_args(tmp_path: Path, capsys, args: str, expect: str) -> None:
    path = new_config(setup_project(tmp_path))
    _set_optimizer_args(path, args)
    capsys.readouterr()
    rc, out = _run(["config", "check", str(path)], capsys)
    assert rc == 1 and "optimizer_args" in out and expect in out, out


def test_config_check_accepts_good_optimizer_args(tmp_path: Path, capsys) -> None:
    path = new_config(setup_project(tmp_path))
    _set_optimizer_args(path, "{ weight_decay = 0.01, betas = [0.9, 0.99] }")
    capsys.readouterr()
    rc, out = _run(["config", "check", str(path)], capsys)
    assert rc == 0, out


@pytest.mark.parametrize(("line", "expect"), [("kazari --w abc", "needs a number"),
                                              ("kazari --w 100000", "too large"), ("kazari --zz 3", "unknown option")])
def test_config_check_rejects_bad_sample_prompts(tmp_path: Path, capsys, line: str, expect: str) -> None:
    path = new_config(setup_project(tmp_path))
    capsys.readouterr()
    text, n = re.subn(r"(?m)^sample_prompts = .*$", f'sample_prompts = ["{line}"]', path.read_text(encoding="utf-8"))
    assert n == 1
    path.write_text(text, encoding="utf-8")
    rc, out = _run(["config", "check", str(path)], capsys)
    assert rc == 1 and "sample_prompts" in out and expect in out, out
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text(f"# previews\n{line}\n", encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"sample_prompts = .*", f'sample_prompts = "{prompt_file.as_posix()}"', text)
    path.write_text(text, encoding="utf-8")
    rc, out = _run(["config", "check", str(path)], capsys)
    assert rc == 1 and expect in out and "line 2" in out, out


def test_grid_refuses_a_huge_sample_size_before_loading_anything(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    rc, out = _run(["grid", str(tmp_path / "run"), "--model", str(tmp_path / "no-model"),
                    "--prompt", "kazari, 1girl --w 100000 --h 512"], capsys)
    assert rc == 2 and "--w 100000" in out and "too large" in out and "GiB" in out
    assert not (tmp_path / "run" / "grid").exists()


def test_grid_refuses_an_output_path_that_is_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "taken").write_text("a file")
    for out_path in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        rc, out = _run(["grid", str(tmp_path / "run"), "--model", str(tmp_path / "m"), "--prompt", "kazari",
                        "-o", str(out_path)], capsys)
        assert rc == 2 and "is a file" in out
    assert (tmp_path / "taken").read_text() == "a file"


@pytest.mark.parametrize("weights", ["nan,1", "0,inf", "-inf"])
def test_grid_refuses_non_finite_weights(tmp_path: Path, capsys, weights: str) -> None:
    (tmp_path / "run").mkdir()
    rc, out = _run(["grid", str(tmp_path / "run"), "--model", str(tmp_path / "m"), f"--weights={weights}"], capsys)
    assert rc == 2 and "finite" in out
    from trainer.grid import check_weights

    with pytest.raises(UserError, match="not a finite number"):
        check_weights([float(w) for w in weights.split(",")])
    assert check_weights([0, 0.5]) == [0.0, 0.5] and all(math.isfinite(w) for w in check_weights([1]))


def test_grid_refuses_out_of_range_steps(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    rc, out = _run(["grid", str(tmp_path / "run"), "--model", str(tmp_path / "m"), "--prompt", "kazari",
                    "--steps", "100000000"], capsys)
    assert rc == 2 and "--steps" in out
