"""Background-removal pipeline overhead: the full clean pass (read, decode, preprocess, batch, infer,
mask back to size, composite, crop, encode) vs the model alone on pre-made tensors, on a random-weight
segmentation-shaped ONNX model of ~100 M parameters.

    .venv/bin/python bench/clean_bench.py [--n 4] [--batch 2] [--size 1024] [--repeats 2]

The model (tagging/gather/tiny_seg.py ``build_random_model``) is a strided conv encoder down to
size/32, a stack of 3x3 convolutions of width 1024 (where the parameters are), a 1x1 head and a x32
bilinear upsample with a sigmoid: NCHW RGB in, one mask channel out at full size, as isnetis.
Images are 1536x1024 noisy PNGs. The clean pass runs as a dry run (everything but the final file
moves, which are a few ms). Both timings use the same session; the best of ``--repeats``
alternating rounds is reported, since the machine is shared. On a small CPU use --size 512.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tagging.dataset import Dataset  # noqa: E402
from tagging.gather.clean import CleanOptions, clean_dataset  # noqa: E402
from tagging.gather.segment import Segmenter, preprocess  # noqa: E402
from tagging.gather.tiny_seg import build_random_model  # noqa: E402
from tagging.tagger.pipeline import default_workers, usable_cpus  # noqa: E402


def make_images(folder: Path, n: int, w: int, h: int) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for i in range(n):
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        arr = np.clip(base + rng.integers(0, 48, (h, w, 3), dtype=np.uint8), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:03d}.png", compress_level=1)
        (folder / f"{i:03d}.txt").write_text("kazari, 1girl\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="images")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024, help="model input size (isnetis: 1024)")
    ap.add_argument("--params", type=int, default=100_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: ORT's)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="kazari-clean-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model, params = build_random_model(tmp / "seg.onnx", args.size, args.params)
        t_build = time.perf_counter() - t0
        make_images(tmp / "ds" / "1_kazari", args.n, 1536, 1024)
        ds = Dataset.open(tmp / "ds")
        seg = Segmenter(model, device=args.device, threads=args.threads)

        t0 = time.perf_counter()
        tensors = [preprocess(np.asarray(Image.open(i.path).convert("RGB")), seg.size)[0] for i in ds.images]
        t_prep = (time.perf_counter() - t0) / args.n
        batches = [np.stack(tensors[i:i + args.batch]) for i in range(0, args.n, args.batch)]
        seg.predict(batches[0])  # warm-up: ORT allocates and plans on the first run

        options = CleanOptions(remove_bg=True, crop=True, dry_run=True, batch_size=args.batch, workers=args.workers)
        model_times, pipe_times = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for b in batches:
                seg.predict(b)
            model_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = clean_dataset(ds, options, seg)
            pipe_times.append(time.perf_counter() - t0)
            assert not report.failed and len(report.changed) + len(report.empty) + len(report.full) == args.n

        model_s, pipe_s = min(model_times), min(pipe_times)
        print(f"model: {params / 1e6:.1f} M parameters, input {args.size}x{args.size} NCHW (built in {t_build:.1f} s); "
              f"providers {seg.providers}, ORT threads {args.threads or 'default'}, "
              f"workers {args.workers or default_workers()} of {usable_cpus()} usable CPUs")
        print(f"images: {args.n} x 1536x1024 PNG, batch {args.batch}, repeats {args.repeats} (best of)")
        print(f"preprocess alone (serial): {t_prep * 1000:.1f} ms/image")
        print(f"model only (pre-made tensors): {model_s:.2f} s = {args.n / model_s:.2f} images/s")
        print(f"full clean pipeline:           {pipe_s:.2f} s = {args.n / pipe_s:.2f} images/s")
        print("all rounds (s): model " + " ".join(f"{t:.2f}" for t in model_times)
              + " | pipeline " + " ".join(f"{t:.2f}" for t in pipe_times))
        print(f"overhead: {100 * (pipe_s / model_s - 1):+.1f}% (ratio {pipe_s / model_s:.3f}; aim <= 1.10)")


if __name__ == "__main__":
    main()
