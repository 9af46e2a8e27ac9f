"""Differential tests of fusion: random DAGs of fusion-prone ops, fused == unfused == onnxruntime.

A seeded generator builds graphs of elementwise chains with broadcasting (per-channel and
scalar constants), contractions with epilogues, reductions (Softmax, ReduceMean, the
decomposed LayerNorm), views between kernels and values with several consumers; each is
compiled with --fusion none, elementwise and all and run on the same inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import random_feeds, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from dlc.driver import compile_model
from dlc.fusion_report import explain
from dlc.targets import CompileOptions

UNARY = ["Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs"]
BINARY = ["Add", "Mul", "Sub", "Max"]
SHAPE = [2, 4, 6]  # batch, channels, width: small, so every graph compiles quickly


def random_graph(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits, nodes, values = [], [], ["x"]
    counter = iter(range(10_000))

    def name(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    def constant(shape) -> str:
        n = name("c")
        inits.append(numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(np.float32), n))
        return n

    for _ in range(int(rng.integers(4, 10))):
        source = values[int(rng.integers(0, len(values)))]  # any earlier value: multi-consumer
        kind = rng.choice(["unary", "binary", "const", "matmul", "softmax", "reduce", "view", "layernorm"],
                          p=[.22, .2, .18, .1, .08, .08, .07, .07])
        out = name("v")
        if kind == "unary":
            nodes.append(helper.make_node(str(rng.choice(UNARY)), [source], [out], name=out))
        elif kind == "binary":
            other = values[int(rng.integers(0, len(values)))]
            nodes.append(helper.make_node(str(rng.choice(BINARY)), [source, other], [out], name=out))
        elif kind == "const":  # broadcasting: per-channel, per-width or scalar
            shape = [[1, SHAPE[1], 1], [SHAPE[2]], []][int(rng.integers(0, 3))]
            nodes.append(helper.make_node(str(rng.choice(BINARY)), [source, constant(shape)], [out], name=out))
        elif kind == "matmul":
            nodes.append(helper.make_node("MatMul", [source, constant([SHAPE[2], SHAPE[2]])], [out], name=out))
        elif kind == "softmax":
            nodes.append(helper.make_node("Softmax", [source], [out], name=out, axis=-1))
        elif kind == "reduce":  # keepdims, then broadcast back: a reduction with neighbours
            mean = name("m")
            axes = name("axes")
            inits.append(numpy_helper.from_array(np.array([-1], np.int64), axes))
            nodes.append(helper.make_node("ReduceMean", [source, axes], [mean], name=mean, keepdims=1))
            nodes.append(helper.make_node("Sub", [source, mean], [out], name=out))
        elif kind == "view":  # a Reshape between kernels, then back
            flat, shape_in, shape_out = name("f"), name("s"), name("s")
            inits.append(numpy_helper.from_array(np.array([SHAPE[0], -1], np.int64), shape_in))
            inits.append(numpy_helper.from_array(np.array(SHAPE, np.int64), shape_out))
            relu = name("r")
            nodes.append(helper.make_node("Reshape", [source, shape_in], [flat], name=flat))
            nodes.append(helper.make_node("Relu", [flat], [relu], name=relu))
            nodes.append(helper.make_node("Reshape", [relu, shape_out], [out], name=out))
        else:  # decomposed LayerNormalization, as exporters write it
            axes = name("axes")
            inits.append(numpy_helper.from_array(np.array([-1], np.int64), axes))
            mean, centred, square, var, shifted, std = (name(p) for p in ("m", "d", "q", "v", "e", "s"))
            nodes += [helper.make_node("ReduceMean", [source, axes], [mean], name=mean),
                      helper.make_node("Sub", [source, mean], [centred], name=centred),
                      helper.make_node("Mul", [centred, centred], [square], name=square),
                      helper.make_node("ReduceMean", [square, axes], [var], name=var),
                      helper.make_node("Add", [var, constant([])], [shifted], name=shifted),
                      helper.make_node("Sqrt", [shifted], [std], name=std),
                      helper.make_node("Div", [centred, std], [out], name=out)]
        values.append(out)
    outputs = [values[-1]] + ([values[len(values) // 2]] if len(values) > 3 else [])
    graph = helper.make_graph(nodes, f"random{seed}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in dict.fromkeys(outputs)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("seed", range(12))
def test_fused_equals_unfused_equals_onnxruntime(seed):
    model = random_graph(seed)
    feeds = random_feeds(model, seed)
    expected = run_onnxruntime(model, feeds)
    results = {}
    for fusion in ("none", "elementwise", "all"):
        executable = compile_model(model, options=CompileOptions(fusion=fusion, threads=1)).executable
        results[fusion] = list(executable.run(feeds).values())
        for got, want in zip(results[fusion], expected):
            # Tolerance: float32 sums of 6 terms (MatMul, ReduceMean) and exp/tanh within a few
            # ulp; the differences fusion may cause are reassociation only.
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"fusion={fusion}")
    for got, want in zip(results["all"], results["none"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fusion_reduces_kernels_on_random_graphs():
    fewer = 0
    for seed in range(12):
        model = random_graph(seed)
        count = {f: explain(model, fusion=f).splitlines()[0].split()[0] for f in ("none", "all")}
        assert int(count["all"]) <= int(count["none"])
        fewer += int(count["all"]) < int(count["none"])
    assert fewer >= 6  # fusion must actually happen on most of these graphs


def test_decomposed_layernorm_and_softmax_each_become_one_kernel():
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    eps = numpy_helper.from_array(np.array(1e-5, np.float32), "eps")
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="mean"),
             helper.make_node("Sub", ["x", "m"], ["d"], name="centre"),
             helper.make_node("Mul", ["d", "d"], ["q"], name="square"),
             helper.make_node("ReduceMean", ["q", "axes"], ["v"], name="var"),
             helper.make_node("Add", ["v", "eps"], ["e"], name="eps_add"),
             helper.make_node("Sqrt", ["e"], ["s"], name="std"),
             helper.make_node("Div", ["d", "s"], ["ln"], name="normalise"),
             helper.make_node("Softmax", ["ln"], ["y"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)], [axes, eps])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    text = explain(model)
    assert text.splitlines()[0].startswith("1 kernels from 8 nodes"), text
    assert "normalise: joined" in text and "softmax: joined" in text


def test_explain_names_every_node_and_the_rule_that_kept_nodes_apart():
    from conftest import ROOT

    text = explain(ROOT / "examples" / "models" / "cnn.onnx")
    model = onnx.load(ROOT / "examples" / "models" / "cnn.onnx")
    kept = {n.name for n in model.graph.node if n.op_type not in ("BatchNormalization", "Flatten")}
    for node in kept:  # BatchNormalization is folded into the convs before fusion
        assert node in text
    assert "- apart: block.a.conv <- pool: inputs of a contraction are not fused" in text
    assert "+ block.relu: joined residual's kernel (elementwise epilogue of a contraction)" in text
    none = explain(ROOT / "examples" / "models" / "cnn.onnx", fusion="none")
    assert "--fusion=none" in none and "joined" not in none
