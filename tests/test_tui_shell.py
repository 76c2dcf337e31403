"""The app shell: modes, keys in help/palette/footer, log capture, the trainer→UI bridge."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from pathlib import Path

import pytest

from trainer.events import CheckpointSaved, Finished, RunStarted, StepEvent
from tui.app import KazariApp, make_app
from tui.bridge import EventBridge
from tui.help import HelpScreen, describe_bindings
from tui.logcapture import LogSink
from tui.testing import screen_text, wait_for_text
from tui.widgets.logview import LogScreen
from tui.workspace import resolve_workspace


def _step(i: int, total: int = 1000) -> StepEvent:
    return StepEvent(step=i, total_steps=total, epoch=1, loss=1.0 / i, smoothed_loss=0.5, lrs={"unet": 1e-4})


def test_bridge_keeps_latest_step_and_every_curve_point() -> None:
    bridge = EventBridge()
    bridge(RunStarted(10, 5, 2, 5, 5, 0, 5, 1, 1))
    for i in range(1, 101):
        bridge(_step(i))
    bridge(CheckpointSaved(Path("a.safetensors"), 1, 100, "epoch"))
    drained = bridge.drain()
    assert drained is not None
    assert drained.step.step == 100  # latest value wins
    assert drained.new_points.steps == list(range(1, 101))  # but the curve keeps every point
    assert [type(e).__name__ for e in drained.events] == ["RunStarted", "CheckpointSaved"]
    assert bridge.drain() is None  # nothing new → the UI does no work


def test_bridge_is_safe_across_threads() -> None:
    bridge = EventBridge()
    seen: list[int] = []

    def produce() -> None:
        for i in range(1, 5001):
            bridge(_step(i, 5000))
        bridge(Finished(5000, 1, None, 1.0))

    t = threading.Thread(target=produce)
    t.start()
    while t.is_alive():
        d = bridge.drain()
        if d:
            seen.extend(d.new_points.steps)
    d = bridge.drain()
    if d:
        seen.extend(d.new_points.steps)
    assert seen == list(range(1, 5001))


def test_log_sink_collapses_progress_bars(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "log" / "k.log")
    sink.write("Loading:  10%\rLoading:  50%\rLoading: 100%\n", "stderr")
    sink.write("partial ")
    sink.write("line\n")
    sink.close()
    assert sink.tail() == ["[stderr] Loading: 100%", "partial line"]
    text = (tmp_path / "log" / "k.log").read_text()
    assert "Loading: 100%" in text and "10%" not in text


def test_workspace_resolution(tmp_path: Path) -> None:
    (tmp_path / "dataset" / "5_kazari").mkdir(parents=True)
    ws = resolve_workspace(tmp_path)
    assert ws.dataset_root == tmp_path / "dataset"
    assert ws.config_path is None
    (tmp_path / "kazari.toml").write_text('[dataset]\ntrain_data_dir = "dataset"\n')
    ws = resolve_workspace(tmp_path)
    assert ws.config_path == tmp_path / "kazari.toml"
    assert ws.display(tmp_path / "dataset" / "x.png") == "dataset/x.png"


def _run(app: KazariApp, scenario, size=(80, 24)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await scenario(app, pilot)

    asyncio.run(main())


def test_modes_switch_by_number_keys_and_help_lists_every_action(tmp_path: Path) -> None:
    app = make_app(tmp_path, log_to_file=False)

    async def scenario(app, pilot) -> None:
        seen = []
        for key, mode in zip("123456", ["dataset", "tagger", "tags", "config", "train", "grid"], strict=True):
            await pilot.press("escape", key)
            await pilot.pause()
            seen.append(app.current_mode)
            assert mode in seen[-1]
            screen = app.screen
            rows = describe_bindings(screen)
            described = {r.description for r in rows}
            # every screen binding with a description shows in help (and so in the palette)
            own = {b.description for b in type(screen).BINDINGS if b.description and b.show}
            assert own <= described, own - described
            assert {"Dataset", "Grid", "Help", "Log", "Quit"} <= described
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "Build grid" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)

    _run(app, scenario)


def test_command_palette_runs_a_screen_action(tmp_path: Path) -> None:
    app = make_app(tmp_path, log_to_file=False, start_mode="tags")

    async def scenario(app, pilot) -> None:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Grid")
        await pilot.pause(0.5)
        assert "Grid" in screen_text(app)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.current_mode == "grid"

    _run(app, scenario)


def test_command_palette_leaves_out_cursor_movement(tmp_path: Path) -> None:
    from tui.help import BindingsProvider
    from tui.testing import make_workspace

    ws = make_workspace(tmp_path / "ws", images=2, tagger=False)
    app = make_app(ws, log_to_file=False)

    async def scenario(app, pilot) -> None:
        while app.busy:
            await asyncio.sleep(0.05)
        await pilot.pause()
        listed = {row.action for row in describe_bindings(app.screen)}
        assert {"cursor_down", "page_down"} <= listed  # the focused table's keys are in the help
        provider = BindingsProvider(app.screen)
        actions = {row.action for row in provider._rows()}
        assert not actions & {"cursor_up", "cursor_down", "page_down", "scroll_home", "select_cursor"}
        assert "quit" in actions and len(actions) >= 5  # the screen's and the app's own actions stay

    _run(app, scenario)


def test_library_output_goes_to_the_log_not_the_screen(tmp_path: Path) -> None:
    app = make_app(tmp_path, log_to_file=True)

    async def scenario(app, pilot) -> None:
        warnings.warn("diffusers says hello", UserWarning, stacklevel=1)
        logging.getLogger("transformers").warning("a library warning")
        print("a stray print from a dependency")
        await pilot.pause(0.2)
        assert "stray print" not in screen_text(app)
        await pilot.press("ctrl+l")
        text = await wait_for_text(app, pilot, "a library warning")
        assert isinstance(app.screen, LogScreen)
        assert "stray print" in text

    _run(app, scenario)
    log = (tmp_path / ".kazari" / "logs" / "kazari.log").read_text()
    for needle in ("diffusers says hello", "a library warning", "a stray print from a dependency"):
        assert needle in log


def test_open_command_rejects_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli import main

    assert main(["open", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "kazari demo" in err


def test_big_datasets_are_linted_in_a_child_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tui.session
    from tagging.dataset import Dataset
    from tagging.lint import lint
    from tui.testing import make_workspace

    ws = make_workspace(tmp_path / "ws", images=3, tagger=False)
    (ws / "dataset" / "1_kazari" / "0001.txt").write_text("")  # an empty caption is a finding
    # The workspace's config (resolution 64,64) sets the small-image threshold, in the child too.
    expected = [(f.code, f.key) for f in lint(Dataset.open(ws / "dataset"), min_size=32)]
    assert expected and "image-small" not in {code for code, _ in expected}
    monkeypatch.setattr(tui.session, "LINT_IN_PROCESS_ABOVE", 0)
    launched = []
    real_popen = __import__("subprocess").Popen

    def spy(cmd, *args, **kwargs):
        launched.append(cmd)
        return real_popen(cmd, *args, **kwargs)

    monkeypatch.setattr("subprocess.Popen", spy)
    app = make_app(ws, log_to_file=False)

    async def scenario(app, pilot) -> None:
        while app.busy:
            await asyncio.sleep(0.05)
        await pilot.pause()

    _run(app, scenario)
    assert any("tui.lint_worker" in part for cmd in launched for part in cmd)
    assert [(f.code, f.key) for f in app.session.findings] == expected


def test_lint_threshold_follows_the_training_resolution(tmp_path: Path) -> None:
    """The small-image check uses the config's resolution; an edit in the Config screen counts."""
    from tagging.dataset import Dataset
    from tagging.lint import lint
    from tui.session import Session
    from tui.testing import make_workspace

    ws = make_workspace(tmp_path / "ws", images=3, tagger=False)  # 64 px images, resolution 64,64
    session = Session(resolve_workspace(ws), LogSink(None))
    assert session.lint_min_size() == 32  # from kazari.toml before the config is opened
    ds = Dataset.open(ws / "dataset")
    assert "image-small" not in {f.code for f in session.run_lint(ds)}
    doc = session.config_document()
    doc.set("dataset.resolution", "256,256")
    assert session.lint_min_size() == 128
    assert {f.key for f in session.run_lint(ds) if f.code == "image-small"} == {i.key for i in ds.images}
    assert {f.key for f in lint(ds) if f.code == "image-small"} == {i.key for i in ds.images}
