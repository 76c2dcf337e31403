"""The sub-commands share one set of argparse checkers, so one mistake reads the same everywhere."""

from __future__ import annotations

import pytest

from tui.cli import main


@pytest.mark.parametrize("argv", [["fetch", "x", "--limit", "0"], ["tag", "x", "--batch", "0"],
                                  ["tag", "x", "--max-tags", "0"]])
def test_zero_is_refused_with_one_wording(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "0 must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [("x", "'x' is not a number of seconds"),
                                            ("4000", "4000 must be between 0 and 3600 seconds")])
def test_fetch_interval_is_checked(value, message, capsys):
    with pytest.raises(SystemExit):
        main(["fetch", "x", "--interval", value])
    assert message in capsys.readouterr().err


def test_clean_pixel_options_use_the_shared_checker(capsys):
    with pytest.raises(SystemExit):
        main(["clean", "x", "--min-side", "0"])
    assert "0 must be at least 1" in capsys.readouterr().err
