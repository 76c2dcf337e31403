"""Dashboard overhead and Dataset-screen first paint.

1. Training step time with the TUI attached (headless app via ``run_test``, Train screen open and
   drawing at its normal 4 Hz) versus the bare ``TrainingRun`` with a no-op callback: same tiny
   model, same config, runs alternated (A B A B ...) so machine load drifts hit both equally.
   Step time = median interval between consecutive ``StepEvent``s (model loading and caching
   excluded). Aim: the TUI run ≤ 1% slower.
2. Time to first paint of the Dataset screen on a 10,000-image dataset: from app start until the
   image list is drawn, plus how long a key press takes to move the selection while lint still runs.

    .venv/bin/python bench/dashboard_bench.py [--images 10000] [--reps 2] [--steps 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _config(ws: Path, steps: int):
    from trainer.config import load_config
    from trainer.config.document import ConfigDocument

    doc = ConfigDocument.load(ws / "kazari.toml")
    doc.set("training.max_train_epochs", max(1, steps // 4))
    doc.set("sample.sample_every_n_epochs", 0)
    doc.set("output.save_every_n_epochs", 0)
    doc.save()
    return load_config(ws / "kazari.toml")


def _median_interval(stamps: list[float], skip: int = 3) -> float:
    gaps = [b - a for a, b in zip(stamps[skip:], stamps[skip + 1 :], strict=False)]
    return statistics.median(gaps) if gaps else float("nan")


def headless_step_time(cfg) -> float:
    from trainer.events import StepEvent
    from trainer.run import TrainingRun

    stamps: list[float] = []

    def on_event(event) -> None:
        if isinstance(event, StepEvent):
            stamps.append(time.perf_counter())

    TrainingRun(cfg, on_event=on_event).run()
    return _median_interval(stamps)


def tui_step_time(ws: Path, cfg) -> tuple[float, int]:
    from trainer.events import StepEvent
    from tui.app import make_app

    app = make_app(ws, log_to_file=False, start_mode="train")
    stamps: list[float] = []
    redraws = 0

    async def main() -> None:
        nonlocal redraws
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            screen = app.screen
            original_redraw = screen._redraw

            def counting_redraw(*args, **kwargs) -> None:
                nonlocal redraws
                redraws += 1
                original_redraw(*args, **kwargs)

            screen._redraw = counting_redraw
            bridge = app.training.start(cfg)
            run = app.training.run

            def on_event(event) -> None:
                if isinstance(event, StepEvent):
                    stamps.append(time.perf_counter())
                bridge(event)

            run._on_event = on_event  # the worker thread has not reached the first step yet
            screen.view = type(screen.view)()
            screen._timer.resume()
            while app.training.running:
                await asyncio.sleep(0.1)
            await pilot.pause(0.5)

    asyncio.run(main())
    return _median_interval(stamps), redraws


def first_paint(n_images: int) -> dict[str, float]:
    from PIL import Image

    from tui.app import make_app

    root = Path(tempfile.mkdtemp(prefix="kazari-10k-"))
    folder = root / "dataset" / "10_kazari"
    folder.mkdir(parents=True)
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 160)).save(buf, "PNG")
    data = buf.getvalue()
    for i in range(n_images):
        (folder / f"{i:05d}.png").write_bytes(data)
        (folder / f"{i:05d}.txt").write_text(f"kazari, 1girl, solo, tag_{i % 50}, pose_{i % 7}\n")

    from tagging.dataset import Dataset

    t0 = time.perf_counter()
    Dataset.open(root / "dataset")
    open_s = time.perf_counter() - t0

    app = make_app(root, log_to_file=False)
    result: dict[str, float] = {"images": n_images, "dataset_open_s": open_s}

    async def main() -> None:
        start = time.perf_counter()
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            while len(getattr(screen, "visible_keys", [])) < n_images:
                await asyncio.sleep(0.01)
            await pilot.pause()  # the frame with the list has been composed
            result["first_paint_s"] = time.perf_counter() - start
            result["lint_still_running"] = float(app.lint_pending)
            t1 = time.perf_counter()
            key = screen.current_key
            await pilot.press("n")
            while screen.current_key == key:
                await asyncio.sleep(0.005)
            await pilot.pause()
            result["key_to_next_image_s"] = time.perf_counter() - t1
            while app.lint_pending:
                await asyncio.sleep(0.1)
            result["lint_done_s"] = time.perf_counter() - start

    asyncio.run(main())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (both runs)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tui.testing import make_workspace

    ws = make_workspace(Path(tempfile.mkdtemp(prefix="kazari-bench-")) / "ws", images=4, tagger=False,
                        sd_model=True)
    cfg = _config(ws, args.steps)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"# training overhead: tiny SD1, 64 px, batch 1, {args.steps} steps, device {device}, "
          f"torch threads {args.threads}, {args.reps} alternated reps")
    bare, tui = [], []
    for rep in range(args.reps):
        bare.append(headless_step_time(cfg))
        t, redraws = tui_step_time(ws, cfg)
        tui.append(t)
        print(f"rep {rep}: headless {bare[-1] * 1000:.1f} ms/step, with TUI {tui[-1] * 1000:.1f} ms/step "
              f"({redraws} dashboard redraws)")
    b, t = statistics.median(bare), statistics.median(tui)
    print(f"median step: headless {b * 1000:.1f} ms, TUI attached {t * 1000:.1f} ms, "
          f"ratio {t / b:.3f} ({(t / b - 1) * 100:+.1f}%)")

    fp = first_paint(args.images)
    print(f"# Dataset screen on {fp['images']:.0f} images (64x64 PNG + caption each)")
    print(f"Dataset.open alone: {fp['dataset_open_s']:.2f} s")
    print(f"app start → image list painted: {fp['first_paint_s']:.2f} s "
          f"(lint still running then: {'yes' if fp['lint_still_running'] else 'no'})")
    print(f"key 'n' → next image shown (lint in background): {fp['key_to_next_image_s'] * 1000:.0f} ms")
    print(f"lint finished after: {fp['lint_done_s']:.1f} s")


if __name__ == "__main__":
    main()
