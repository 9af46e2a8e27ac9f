"""Per-operator benchmark: one ONNX node at a shape real models use, dlc vs onnxruntime.

    python benchmarks/ops.py                  # every case, one thread
    python benchmarks/ops.py -k Pool --threads 2

A model-level ratio hides which operator is slow; this finds it (a 3x3/2 MaxPool ran 4.7x
slower than onnxruntime until its max became compare+select). Each case is a one-node
graph (two for the Conv+Relu epilogue); runs alternate between dlc and onnxruntime.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dlc  # noqa: E402
from dlc.tools.bench import median_latencies  # noqa: E402
from dlc.tools.oracle import onnxruntime_session, random_inputs  # noqa: E402


def _model(op: str, x_shape, attrs=None, weights=(), extra_nodes=(), opset: int = 21) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(np.float32) if isinstance(shape, tuple)
                                     else np.asarray(shape), name) for name, shape in weights]
    last = "y" if not extra_nodes else "t"
    nodes = [helper.make_node(op, ["x", *[n for n, _ in weights]], [last], **(attrs or {}))]
    for i, extra in enumerate(extra_nodes):
        nodes.append(helper.make_node(extra, [last], ["y" if i == len(extra_nodes) - 1 else f"t{i}"]))
        last = f"t{i}"
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    # IR version 10: what onnxruntime 1.20+ reads (newer onnx packages write newer ones).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def _squeeze_excite(x_shape, squeezed: int, gate: str) -> onnx.ModelProto:
    """x * gate(W2 @ act(W1 @ mean(x))): GlobalAveragePool, two 1x1 convs, a per-channel Mul.
    The first activation is Relu before a HardSigmoid gate (MobileNetV3), SiLU before Sigmoid
    (EfficientNet)."""
    rng = np.random.default_rng(0)
    channels = x_shape[1]
    weights = {"w1": (squeezed, channels, 1, 1), "b1": (squeezed,), "w2": (channels, squeezed, 1, 1),
               "b2": (channels,)}
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(np.float32), name)
             for name, shape in weights.items()]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Conv", ["pooled", "w1", "b1"], ["squeezed"])]
    if gate == "Sigmoid":
        nodes += [helper.make_node("Sigmoid", ["squeezed"], ["s_gate"]),
                  helper.make_node("Mul", ["squeezed", "s_gate"], ["act"])]
    else:
        nodes.append(helper.make_node("Relu", ["squeezed"], ["act"]))
    nodes += [helper.make_node("Conv", ["act", "w2", "b2"], ["excited"]),
              helper.make_node(gate, ["excited"], ["scale"]),
              helper.make_node("Mul", ["x", "scale"], ["y"])]
    return _graph(nodes, x_shape, inits)


def _silu(x_shape) -> onnx.ModelProto:
    """x * Sigmoid(x), as torch.onnx writes SiLU."""
    return _graph([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
                  x_shape, [])


def _graph(nodes, x_shape, inits, opset: int = 21) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "case", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def _torch_init(shape, hidden: int = 256) -> np.ndarray:
    bound = 1 / np.sqrt(hidden)
    return np.random.default_rng(0).uniform(-bound, bound, shape).astype(np.float32)


def cases() -> dict[str, onnx.ModelProto]:
    conv = lambda cin, cout, k, **a: [("w", (cout, cin // a.get("group", 1), k, k)), ("b", (cout,))]  # noqa: E731
    return {
        "Conv 3x3 64->64 56x56 +Relu": _model("Conv", [1, 64, 56, 56], {"pads": [1] * 4}, conv(64, 64, 3),
                                               ["Relu"]),
        "Conv 3x3/2 128->256 28x28": _model("Conv", [1, 128, 28, 28], {"pads": [1] * 4, "strides": [2, 2]},
                                            conv(128, 256, 3)),
        "Conv 1x1 256->64 56x56": _model("Conv", [1, 256, 56, 56], {}, conv(256, 64, 1)),
        "Conv 1x1 1024->256 14x14": _model("Conv", [1, 1024, 14, 14], {}, conv(1024, 256, 1)),
        "Conv 3x3 512->512 7x7": _model("Conv", [1, 512, 7, 7], {"pads": [1] * 4}, conv(512, 512, 3)),
        # MobileNetV2's last stage: 49 output columns fill 49 of the 64 lanes of 4 vectors
        "Conv 1x1 320->1280 7x7": _model("Conv", [1, 320, 7, 7], {}, conv(320, 1280, 1)),
        "Conv 1x1 160->960 7x7": _model("Conv", [1, 160, 7, 7], {}, conv(160, 960, 1)),
        "Conv 7x7/2 3->64 224x224": _model("Conv", [1, 3, 224, 224], {"pads": [3] * 4, "strides": [2, 2]},
                                           conv(3, 64, 7)),
        **{f"Conv dw 3x3{'/2' if s == 2 else ''} {c} {h}x{h}":
           _model("Conv", [1, c, h, h], {"pads": [1] * 4, "group": c, "strides": [s, s]},
                  conv(c, c, 3, group=c))
           # MobileNetV2's depthwise convs (its slowest kernels against onnxruntime)
           for c, h, s in [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1),
                           (192, 28, 2), (384, 14, 1), (576, 14, 2), (960, 7, 1)]},
        "Conv dw 3x3/2 96 112x112 +Relu": _model("Conv", [1, 96, 112, 112],
                                                 {"pads": [1] * 4, "group": 96, "strides": [2, 2]},
                                                 conv(96, 96, 3, group=96), ["Relu"]),
        "MaxPool 3x3/2 64x112x112": _model("MaxPool", [1, 64, 112, 112],
                                           {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}),
        "MaxPool 3x3/1 192x28x28": _model("MaxPool", [1, 192, 28, 28], {"kernel_shape": [3, 3], "pads": [1] * 4}),
        "MaxPool 3x3/2 unpadded 64x112x112": _model("MaxPool", [1, 64, 112, 112],
                                                    {"kernel_shape": [3, 3], "strides": [2, 2]}),
        # SqueezeNet's: odd maps, no padding (111 -> 55, 55 -> 27, 27 -> 13)
        **{f"MaxPool 3x3/2 unpadded {c}x{h}x{h}": _model("MaxPool", [1, c, h, h],
                                                        {"kernel_shape": [3, 3], "strides": [2, 2]})
           for c, h in [(64, 111), (128, 55), (256, 27)]},
        "AveragePool 3x3/1 192x28x28": _model("AveragePool", [1, 192, 28, 28],
                                              {"kernel_shape": [3, 3], "pads": [1] * 4}),
        "AveragePool 3x3/1 incl pad 192x28x28": _model("AveragePool", [1, 192, 28, 28],
                                                       {"kernel_shape": [3, 3], "pads": [1] * 4,
                                                        "count_include_pad": 1}),
        "GlobalAveragePool 2048x7x7": _model("GlobalAveragePool", [1, 2048, 7, 7]),
        "Relu 64x112x112": _model("Relu", [1, 64, 112, 112]),
        "Sigmoid 64x112x112": _model("Sigmoid", [1, 64, 112, 112]),
        "Softmax 12x128x128": _model("Softmax", [1, 12, 128, 128], {"axis": -1}),
        "LayerNormalization 128x768": _model("LayerNormalization", [1, 128, 768], {"axis": -1},
                                             [("scale", (768,)), ("bias", (768,))]),
        "Gelu 128x3072": _model("Gelu", [1, 128, 3072], opset=20),
        "MatMul 128x768 @ 768x768": _model("MatMul", [1, 128, 768], {}, [("w", (768, 768))]),
        "MatMul 1x2048 @ 2048x1000": _model("MatMul", [1, 2048], {}, [("w", (2048, 1000))]),
        # A speech encoder's front end (wav2vec2): 1-D convs over a 16,000-sample signal; the
        # 1xK Conv2d beside each does the same work.
        "Conv1d k10/5 1->512 16000": _model("Conv", [1, 1, 16000], {"strides": [5]},
                                            [("w", (512, 1, 10)), ("b", (512,))]),
        "Conv1d k3/2 512->512 3199": _model("Conv", [1, 512, 3199], {"strides": [2]},
                                            [("w", (512, 512, 3)), ("b", (512,))]),
        "Conv 1x3/2 512->512 1x3199": _model("Conv", [1, 512, 1, 3199], {"strides": [1, 2]},
                                             [("w", (512, 512, 1, 3)), ("b", (512,))]),
        "Conv1d k3/2 512->512 399": _model("Conv", [1, 512, 399], {"strides": [2]},
                                           [("w", (512, 512, 3)), ("b", (512,))]),
        # Mobile blocks (MobileNetV3, EfficientNet): depthwise 5x5, squeeze-and-excitation,
        # SiLU and HardSwish.
        **{f"Conv dw 5x5{'/2' if s == 2 else ''} {c} {h}x{h}":
           _model("Conv", [1, c, h, h], {"pads": [2] * 4, "group": c, "strides": [s, s]},
                  conv(c, c, 5, group=c))
           for c, h, s in [(240, 28, 1), (240, 28, 2), (480, 14, 1), (672, 14, 2), (960, 7, 1)]},
        "SE 480x14x14 (GAP,1x1,Relu,1x1,HardSigmoid,Mul)": _squeeze_excite([1, 480, 14, 14], 120, "HardSigmoid"),
        "SE 672x7x7 (GAP,1x1,SiLU,1x1,Sigmoid,Mul)": _squeeze_excite([1, 672, 7, 7], 28, "Sigmoid"),
        "HardSwish 96x56x56": _model("HardSwish", [1, 96, 56, 56]),
        "SiLU 96x56x56 (Sigmoid, Mul)": _silu([1, 96, 56, 56]),
        "Transpose 128x12x64 -> 12x128x64": _model("Transpose", [1, 128, 12, 64], {"perm": [0, 2, 1, 3]}),
        # Recurrent layers (issue 18): seq 64, batch 1, 128 features, hidden 256, biases. Weights
        # as torch initialises them, U(-1/sqrt(hidden), 1/sqrt(hidden)): with U(-1, 1) the RNN is
        # chaotic and two correct runtimes part ways after a few steps.
        **{f"{kind} h256 seq64 b1": _model(kind, [64, 1, 128], {"hidden_size": 256},
                                           [(name, _torch_init(shape)) for name, shape in
                                            [("W", (1, gates * 256, 128)), ("R", (1, gates * 256, 256)),
                                             ("B", (1, 2 * gates * 256))]])
           for kind, gates in [("LSTM", 4), ("GRU", 3), ("RNN", 1)]},
        "ReduceMean 128x768 last axis": _model("ReduceMean", [1, 128, 768], {"keepdims": 1},
                                               [("axes", np.array([-1], np.int64))]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("-k", default="", help="only cases whose name matches this regex")
    args = parser.parse_args(argv)
    print(f"{'operator':36s} {'dlc ms':>9s} {'ort ms':>9s} {'dlc/ort':>8s}")
    ratios = []
    for name, model in cases().items():
        if not re.search(args.k, name):
            continue
        compiled = dlc.compile(model, threads=args.threads)
        feeds = random_inputs(compiled.inputs)
        session = onnxruntime_session(model, threads=args.threads)
        got, want = compiled.run(feeds)["y"], session.run(None, feeds)[0]
        if not np.allclose(got, want, rtol=1e-3, atol=1e-3):
            print(f"{name:36s} WRONG: max |error| {np.max(np.abs(got - want)):.3g}")
            continue
        latency = median_latencies({"dlc": functools.partial(compiled.run, feeds),
                                    "ort": functools.partial(session.run, None, feeds)}, args.repeat)
        ratio = latency["dlc"] / latency["ort"]
        ratios.append(ratio)
        print(f"{name:36s} {latency['dlc'] * 1e3:9.3f} {latency['ort'] * 1e3:9.3f} {ratio:8.2f}", flush=True)
    if ratios:
        print(f"{'geomean':36s} {'':9s} {'':9s} {float(np.exp(np.mean(np.log(ratios)))):8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
