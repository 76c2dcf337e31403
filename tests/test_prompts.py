"""sd-scripts prompt-file syntax."""

from __future__ import annotations

import pytest

from tagging.errors import UserError
from trainer.prompts import PromptSpec, load_prompts, parse_prompt_line


def test_all_options():
    s = parse_prompt_line("1girl, smile --n lowres, bad hands --w 640 --h 768 --s 28 --l 6.5 --d 1234 --ss euler_a --am 0.8")
    assert s == PromptSpec("1girl, smile", "lowres, bad hands", 640, 768, 28, 6.5, 1234, "euler_a", 0.8)
    assert parse_prompt_line(s.to_line()) == s


def test_defaults_rounding_and_clamping():
    s = parse_prompt_line("masterpiece, 1girl")
    assert (s.width, s.height, s.steps, s.cfg_scale, s.seed, s.negative_prompt) == (512, 512, 30, 7.5, None, "")
    s = parse_prompt_line("x --w 515 --h 20 --s 5000")
    assert (s.width, s.height, s.steps) == (512, 64, 1000)
    d = PromptSpec("", steps=12, width=64, height=64)
    assert parse_prompt_line("x --d 3", defaults=d) == PromptSpec("x", width=64, height=64, steps=12, seed=3)


def test_bad_lines_are_user_errors():
    with pytest.raises(UserError, match="--w abc"):
        parse_prompt_line("x --w abc")
    with pytest.raises(UserError, match="unknown option `--zz`"):
        parse_prompt_line("x --zz 3")
    with pytest.raises(UserError, match="empty"):
        parse_prompt_line("--w 512")
    assert parse_prompt_line("x --cn control.png").prompt == "x"  # ControlNet option accepted, ignored
    # Options of sd-scripts' other model families (guidance, frames, flow shift) are skipped, as there.
    shared = parse_prompt_line("x --g 3.5 --f 1 --fs 3.0 --w 640")
    assert (shared.prompt, shared.width, shared.cfg_scale) == ("x", 640, 7.5)


def test_prompt_file_and_lists(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("# previews\n1girl --d 1\n\nsolo, smile --n lowres\n", encoding="utf-8")
    specs = load_prompts(f)
    assert [s.prompt for s in specs] == ["1girl", "solo, smile"] and specs[1].negative_prompt == "lowres"
    assert load_prompts(str(f)) == specs
    assert [s.prompt for s in load_prompts(["a --s 3", "# c", "b"])] == ["a", "b"]
    assert load_prompts("single prompt --s 4")[0].steps == 4
    with pytest.raises(UserError, match="line 2"):
        load_prompts(["ok", "bad --s x"])
    with pytest.raises(UserError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")
