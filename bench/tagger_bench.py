"""Tagger pipeline overhead: full pipeline (read, hash, decode, preprocess, batch, infer) vs the
model alone on pre-made tensors, on a compute-bound random-weight ONNX model of ~100 M parameters.

    .venv/bin/python bench/tagger_bench.py [--n 8] [--batch 4] [--repeats 2]

The model is a ViT-like stack built here with the onnx helper API (NHWC 448x448x3 in, as WD14):
a 32x32-patch convolution to 196 tokens of width 1024, residual MLP blocks (1024->4096->1024),
mean pooling and a sigmoid head over 10 000 tags. Images are 1536x1024 PNGs with noise, so
decoding is not trivially cheap. Both timings are taken in the same run with the same session;
the best of ``--repeats`` alternating rounds is reported, since the machine is shared.
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

from tagging.tagger import ScoreCache, Tagger  # noqa: E402
from tagging.tagger.pipeline import default_workers, usable_cpus  # noqa: E402


def build_model(folder: Path, size: int, dim: int, hidden: int, blocks: int, n_tags: int, patch: int) -> int:
    """Write model.onnx + selected_tags.csv; return the parameter count."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []
    params = 0

    def weight(name: str, shape: tuple[int, ...], fan_in: int) -> str:
        nonlocal params
        arr = (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(fan_in)).astype(np.float32)
        inits.append(numpy_helper.from_array(arr, name))
        params += arr.size
        return name

    def const(name: str, arr) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    nodes.append(helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))
    nodes.append(helper.make_node("Mul", ["nchw", const("scale", np.float32(1 / 255))], ["x0"]))
    nodes.append(helper.make_node("Conv", ["x0", weight("patch_w", (dim, 3, patch, patch), 3 * patch * patch)],
                                  ["p"], strides=[patch, patch], kernel_shape=[patch, patch]))
    tokens = (size // patch) ** 2
    nodes.append(helper.make_node("Reshape", ["p", const("tok_shape", np.array([0, dim, tokens], np.int64))], ["pt"]))
    nodes.append(helper.make_node("Transpose", ["pt"], ["h0"], perm=[0, 2, 1]))
    h = "h0"
    for b in range(blocks):
        nodes.append(helper.make_node("MatMul", [h, weight(f"w1_{b}", (dim, hidden), dim)], [f"a{b}"]))
        nodes.append(helper.make_node("Relu", [f"a{b}"], [f"r{b}"]))
        nodes.append(helper.make_node("MatMul", [f"r{b}", weight(f"w2_{b}", (hidden, dim), hidden)], [f"m{b}"]))
        nodes.append(helper.make_node("Add", [h, f"m{b}"], [f"h{b + 1}"]))
        h = f"h{b + 1}"
    nodes.append(helper.make_node("ReduceMean", [h], ["pooled"], axes=[1], keepdims=0))
    nodes.append(helper.make_node("MatMul", ["pooled", weight("head", (dim, n_tags), dim)], ["logits"]))
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["output"]))
    graph = helper.make_graph(
        nodes, "bench_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_tags])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    rows = ["tag_id,name,category,count"] + [f"{i},tag_{i},{9 if i < 4 else 0},1" for i in range(n_tags)]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n")
    return params


def make_images(folder: Path, n: int, w: int, h: int) -> list[tuple[str, Path]]:
    rng = np.random.default_rng(1)
    items = []
    for i in range(n):
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        noise = rng.integers(0, 48, (h, w, 3), dtype=np.uint8)
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = folder / f"{i:03d}.png"
        Image.fromarray(arr).save(path, compress_level=1)
        items.append((f"{i:03d}.png", path))
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="images")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--blocks", type=int, default=11)
    ap.add_argument("--tags", type=int, default=10000)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: ORT's)")
    ap.add_argument("--no-cache", action="store_true", help="time the pipeline without the score cache")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="kazari-tagger-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "model").mkdir()
        (tmp / "images").mkdir()
        t0 = time.perf_counter()
        params = build_model(tmp / "model", args.size, args.dim, args.hidden, args.blocks, args.tags, args.patch)
        t_build = time.perf_counter() - t0
        items = make_images(tmp / "images", args.n, 1536, 1024)
        tagger = Tagger.load(tmp / "model", device=args.device, threads=args.threads)

        t0 = time.perf_counter()
        arrays = [tagger.prepare(p.read_bytes()) for _, p in items]
        t_prep = (time.perf_counter() - t0) / args.n
        batches = [np.stack(arrays[i:i + args.batch]) for i in range(0, args.n, args.batch)]
        tagger.predict(batches[0])  # warm-up: ORT allocates and plans on the first run

        model_times, pipe_times = [], []
        cache = None
        for r in range(args.repeats):
            t0 = time.perf_counter()
            for b in batches:
                tagger.predict(b)
            model_times.append(time.perf_counter() - t0)
            # A fresh cache each round: the realistic first run (hash + write scores included).
            cache = None if args.no_cache else ScoreCache(tmp / f"cache{r}")
            t0 = time.perf_counter()
            run = tagger.score_images(items, cache=cache, batch_size=args.batch, workers=args.workers)
            pipe_times.append(time.perf_counter() - t0)
            assert len(run.scores) == args.n and not run.failed and run.cached == 0
        if cache is not None:  # second run over the same images: every score from the cache
            cached = ScoreCache(cache.dir.parent.parent)
            t0 = time.perf_counter()
            again = tagger.score_images(items, cache=cached, batch_size=args.batch)
            t_cached = time.perf_counter() - t0
            assert again.cached == args.n

        model_s, pipe_s = min(model_times), min(pipe_times)
        print(f"model: {params / 1e6:.1f} M parameters, input {args.size}x{args.size} NHWC, "
              f"{(args.size // args.patch) ** 2} tokens x {args.dim}, {args.blocks} blocks, {args.tags} tags "
              f"(built in {t_build:.1f} s); providers {tagger.providers}, ORT threads {args.threads or 'default'}, "
              f"workers {args.workers or default_workers()} of {usable_cpus()} usable CPUs")
        print(f"images: {args.n} x 1536x1024 PNG, batch {args.batch}, repeats {args.repeats} (best of), "
              f"score cache {'off' if args.no_cache else 'on (fresh each round)'}")
        print(f"preprocess alone (serial): {t_prep * 1000:.1f} ms/image")
        print(f"model only (pre-made tensors): {model_s:.2f} s = {args.n / model_s:.2f} images/s")
        print(f"full pipeline:                 {pipe_s:.2f} s = {args.n / pipe_s:.2f} images/s")
        if cache is not None:
            print(f"re-run from score cache:       {t_cached * 1000:.1f} ms = {args.n / t_cached:.0f} images/s")
        print("all rounds (s): model " + " ".join(f"{t:.2f}" for t in model_times)
              + " | pipeline " + " ".join(f"{t:.2f}" for t in pipe_times))
        print(f"overhead: {100 * (pipe_s / model_s - 1):+.1f}% (ratio {pipe_s / model_s:.3f}; aim <= 1.10)")


if __name__ == "__main__":
    main()
