"""Tiny segmentation ONNX models for tests and benches (built with ``onnx``, no download).

``build_colour_key_model``: the mask is a known function of the pixels, "not the background
colour": ``clip(k * sum_c |x_c - bg_c| - 0.5, 0, 1)`` on an NCHW RGB 0..1 input. A test feeding it
a picture on that background proves the whole chain (range, channel order, layout, padding crop,
resize back): the wrong range, BGR or padding shows up as a wrong mask.

``build_random_model``: a segmentation-shaped random conv net of about ``params`` parameters (for
bench/clean_bench.py), NCHW input of a fixed size, 1-channel sigmoid output at full resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build_colour_key_model(path: Path, size: int, background: tuple[float, float, float] = (0.0, 0.0, 1.0),
                           gain: float = 10.0, batch: int | str = "N") -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    bg = numpy_helper.from_array(np.asarray(background, dtype=np.float32).reshape(1, 3, 1, 1), "bg")
    consts = [bg, numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
              numpy_helper.from_array(np.array(gain, dtype=np.float32), "gain"),
              numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
              numpy_helper.from_array(np.array(0.0, dtype=np.float32), "lo"),
              numpy_helper.from_array(np.array(1.0, dtype=np.float32), "hi")]
    nodes = [
        helper.make_node("Sub", ["img", "bg"], ["d"]),
        helper.make_node("Abs", ["d"], ["ad"]),
        helper.make_node("ReduceSum", ["ad", "axes"], ["dist"], keepdims=1),
        helper.make_node("Mul", ["dist", "gain"], ["g"]),
        helper.make_node("Sub", ["g", "half"], ["s"]),
        helper.make_node("Clip", ["s", "lo", "hi"], ["mask"]),
    ]
    graph = helper.make_graph(
        nodes, "colour_key_seg",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, 1, size, size])],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def build_random_model(path: Path, size: int, params: int = 100_000_000, seed: int = 0) -> tuple[Path, int]:
    """Strided encoder -> heavy bottleneck convs -> upsampled 1-channel mask. Returns (path, parameters)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    total = 0

    def conv(name: str, x: str, cin: int, cout: int, k: int, stride: int) -> str:
        nonlocal total
        w = (rng.standard_normal((cout, cin, k, k), dtype=np.float32) * (1.0 / np.sqrt(cin * k * k))).astype(np.float32)
        b = np.zeros(cout, dtype=np.float32)
        inits.extend([numpy_helper.from_array(w, name + "_w"), numpy_helper.from_array(b, name + "_b")])
        total += w.size + b.size
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [name], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
        return name + "_r"

    x = conv("e1", "img", 3, 32, 3, 2)
    x = conv("e2", x, 32, 64, 3, 2)
    x = conv("e3", x, 64, 128, 3, 2)
    x = conv("e4", x, 128, 256, 3, 2)
    x = conv("e5", x, 256, 512, 3, 2)  # size / 32
    width = 1024
    x = conv("b0", x, 512, width, 3, 1)
    per = 9 * width * width + width
    for i in range(max(1, round((params - total) / per))):
        x = conv(f"b{i + 1}", x, width, width, 3, 1)
    # 1x1 head, then back to full resolution.
    w = (rng.standard_normal((1, width, 1, 1), dtype=np.float32) * 0.01).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "head_w"))
    total += w.size
    nodes.append(helper.make_node("Conv", [x, "head_w"], ["logits"]))
    inits.append(numpy_helper.from_array(np.array([1, 1, 32, 32], dtype=np.float32), "scales"))
    nodes.append(helper.make_node("Resize", ["logits", "", "scales"], ["up"], mode="linear"))
    nodes.append(helper.make_node("Sigmoid", ["up"], ["mask"]))
    graph = helper.make_graph(
        nodes, "random_seg",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, size, size])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = Path(path)
    onnx.save(model, str(path))
    return path, total
