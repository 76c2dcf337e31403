"""Grid screen + judge: heatmap, per-cell breakdown, the recommendation preselected for "choose";
the waiting message while training; an 80x24 snapshot of a judged run."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable

from tui.app import make_app
from tui.testing import make_workspace, screen_text, wait_for_text

pytestmark = pytest.mark.slow


def _set_judge_keys(ws: Path, **values) -> None:
    from trainer.config.document import ConfigDocument

    doc = ConfigDocument.load(ws / "kazari.toml")
    for key, value in values.items():
        doc.set_text(f"judge.{key}", value)
    doc.save()


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from trainer.config import load_config
    from trainer.run import TrainingRun

    torch.set_num_threads(1)
    root = make_workspace(tmp_path_factory.mktemp("judge") / "ws", images=2, epochs=2, tagger=True,
                          sd_model=True, sample_steps=2)
    _set_judge_keys(root, tagger="models/tagger", seed_count="1", validation_images="1")
    TrainingRun(load_config(root / "kazari.toml")).run()
    return root


async def _until(pilot, cond, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await pilot.pause(0.2)


def test_judge_heatmap_breakdown_and_choose_the_recommendation(ws: Path) -> None:
    app = make_app(ws, log_to_file=False, start_mode="grid")

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            screen = app.screen
            await wait_for_text(app, pilot, "j judges every cell")
            await pilot.press("w", "ctrl+u", *"0,1", "enter")
            await pilot.pause()
            await pilot.press("j")
            await _until(pilot, lambda: screen.judgement is not None and screen.judging is None)
            await pilot.pause(0.3)
            judgement = screen.judgement
            pick = judgement["recommendation"]
            text = screen_text(app)
            assert "★" in text and "Keep " in text
            table = screen.query_one("#gr-table", DataTable)
            rows = screen.job.rows
            r = [p.name for _, p in rows].index(Path(pick["lora"]).name)
            c = screen.job.weights.index(pick["weight"])
            assert (table.cursor_coordinate.row, table.cursor_coordinate.column) == (r, c + 1)
            # per-cell breakdown of the selection
            text = await wait_for_text(app, pilot, "★ recommended")
            assert "adherence" in text and "features" in text and "leakage" in text
            source = screen.query_one("#gr-preview").source  # the judge's own image of the cell
            assert source is not None and source.is_file() and "judge" in source.parts
            # heatmap: a judged cell shows its score
            score = next(x["score"] for x in judgement["cells"] if x["row"] == pick["row"] and x["col"] == pick["col"])
            assert f"{score:.2f}★" in text
            # another cell's breakdown when the cursor moves
            await pilot.press("left")
            await pilot.pause()
            assert "★ recommended" not in screen_text(app) or c == 0
            await pilot.press("right")
            await pilot.pause()
            await pilot.press("e")  # choose: the cursor still sits on the recommendation
            await pilot.pause()
            final = ws / "output" / "final" / "kazari.safetensors"
            assert final.read_bytes() == Path(pick["lora"]).read_bytes()

    asyncio.run(main())
    assert (ws / "output" / "judge" / "judge.json").is_file()
    # A new Grid screen shows the last judgement from disk with the recommendation preselected.
    app2 = make_app(ws, log_to_file=False, start_mode="grid")

    async def again() -> None:
        async with app2.run_test(size=(120, 40)) as pilot:
            text = await wait_for_text(app2, pilot, "judged: keep")
            assert "★" in text

    asyncio.run(again())


def test_while_training_the_grid_waits_for_the_first_saved_epoch(tmp_path: Path, monkeypatch) -> None:
    root = make_workspace(tmp_path / "ws", images=2, tagger=False)
    app = make_app(root, log_to_file=False, start_mode="grid")

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            # as seen while a run is going, before its first save
            monkeypatch.setattr(type(app.training), "running", property(lambda self: True))
            app.screen.refresh_view()
            text = await wait_for_text(app, pilot, "waiting for the first saved epoch")
            assert "train first" not in text
            (root / "output").mkdir()  # the run has created its folder: still no LoRA in it
            app.screen.refresh_view()
            text = await wait_for_text(app, pilot, "waiting for the first saved epoch")
            assert "--lora" not in text and "kazari grid" not in text

    asyncio.run(main())


def _judged_workspace(root: Path) -> Path:
    """A run folder with three LoRA files and a fixed judge.json (no rendering: deterministic)."""
    ws = make_workspace(root, images=2, tagger=False)
    out = ws / "output"
    out.mkdir()
    files = ["kazari-000001.safetensors", "kazari-000002.safetensors", "kazari.safetensors"]
    for name in files:
        (out / name).write_bytes(name.encode())
    weights = [0.0, 0.4, 0.6, 0.8, 1.0]
    scores = [[0.0, 0.1, 0.2, 0.3, 0.35], [0.0, 0.55, 0.8, 0.93, 0.9], [0.0, 0.6, 0.7, 0.4, 0.2]]
    cells = []
    for r, name in enumerate(files):
        for c, w in enumerate(weights):
            cells.append({"row": r, "col": c, "label": ["epoch 1", "epoch 2", "last"][r], "weight": w,
                          "recall": 1.0 if r else 0.25, "adherence": 0.8, "leakage": 0.0, "identity": None,
                          "corruption": 0.0, "score": scores[r][c], "missing_features": [],
                          "ignored_tags": [], "leaked_tags": [], "lora": str(out / name)})
    judge = {"format": 1, "cells": cells, "weights": weights,
             "recommendation": {"row": 1, "col": 3, "label": "epoch 2", "weight": 0.8, "score": 0.93,
                                "lora": str(out / files[1]), "reason": "Keep epoch 2 at weight 0.8."}}
    (out / "judge").mkdir()
    (out / "judge" / "judge.json").write_text(json.dumps(judge), encoding="utf-8")
    return ws


def test_judged_grid_snapshot_80x24(snap_compare, tmp_path: Path) -> None:
    ws = _judged_workspace(tmp_path / "ws")
    app = make_app(ws, log_to_file=False, start_mode="grid")

    async def settle(pilot) -> None:
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_train_status_shows_the_validation_loss_beside_the_training_loss() -> None:
    from trainer.events import StepEvent, ValidationLoss
    from tui.bridge import EventBridge
    from tui.screens.train.state import RunView

    bridge = EventBridge()
    view = RunView()
    bridge(StepEvent(step=3, total_steps=9, epoch=1, loss=0.25, smoothed_loss=0.2))
    view.fold(bridge.drain())
    assert " val " not in view.status_line()  # nothing saved yet
    bridge(ValidationLoss(epoch=1, step=3, loss=0.123456, path=Path("out/k-000001.safetensors")))
    view.fold(bridge.drain())
    line = view.status_line()
    assert "loss 0.2500 (avg 0.2000) · val 0.1235 ·" in line


def test_a_judgement_older_than_the_run_files_is_not_shown(tmp_path: Path) -> None:
    import os

    from trainer.grid import find_run_loras
    from tui.screens.grid.job import load_last_judgement, recommended_cell

    ws = _judged_workspace(tmp_path / "ws")
    rows = find_run_loras(ws / "output")
    judgement = load_last_judgement(ws / "output", rows)
    assert recommended_cell(judgement, rows, [0.0, 0.4, 0.6, 0.8, 1.0]) == (1, 3)
    later = (ws / "output" / "judge" / "judge.json").stat().st_mtime + 10
    os.utime(rows[0][1], (later, later))  # a new training run rewrote epoch 1
    assert load_last_judgement(ws / "output", rows) is None
