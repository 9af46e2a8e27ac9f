"""pointwise-convs-nhwc end to end: a bottleneck network (1x1 convs in NHWC, the 3x3 convs
between layouts, a strided stage with its 1x1 shortcut, batch 2) matches onnxruntime, and its
results are bit-identical across thread counts; so do mobile blocks (depthwise convs in NHWC,
squeeze-and-excitation gates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import random_feeds, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper
from test_parallel_loops import _with_threads

import dlc
from dlc.driver import CompileOptions, compile_model
from passes.pipeline import PassInstrumentation


def _bottleneck_net(batch: int = 2, blocks: int = 4, residual: str = "Add") -> object:
    rng = np.random.default_rng(0)
    nodes, weights = [], []

    def conv(x, cin, cout, k, stride=1, name="conv"):
        w = numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k))
                                    .astype(np.float32), f"{name}.w")
        b = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"{name}.b")
        weights.extend([w, b])
        nodes.append(helper.make_node("Conv", [x, w.name, b.name], [name], name=name, strides=[stride] * 2,
                                      pads=[k // 2] * 4))
        return name

    def relu(x):
        nodes.append(helper.make_node("Relu", [x], [f"{x}.relu"]))
        return f"{x}.relu"

    x = relu(conv("x", 8, 32, 3, name="stem"))
    channels = 32
    for i in range(blocks):
        stride, out = (2, 64) if i == 1 else (1, channels)
        h = relu(conv(x, channels, out // 4, 1, name=f"b{i}.reduce"))
        h = relu(conv(h, out // 4, out // 4, 3, stride, name=f"b{i}.spatial"))
        h = conv(h, out // 4, out, 1, name=f"b{i}.expand")
        shortcut = conv(x, channels, out, 1, stride, name=f"b{i}.down") if (stride, out) != (1, channels) else x
        nodes.append(helper.make_node(residual, [h, shortcut], [f"b{i}.sum"]))
        x, channels = relu(f"b{i}.sum"), out
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    graph = helper.make_graph(
        nodes, "bottlenecks", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, 12, 12])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [batch, channels, 1, 1])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bottleneck_network_in_nhwc_matches_onnxruntime_at_every_thread_count():
    model = _bottleneck_net()
    graph = str(compile_model(model, compile_to="graph").module)
    assert graph.count('dlc.layout = "NHWC"') == 9  # each block's reduce and expand, the shortcut
    # Each 3x3 conv writes its expand conv's layout, the stem the NHWC the first block reads.
    assert graph.count('dlc.out_layout = "NHWC"') == 5
    assert graph.count('"onnx.Transpose"') == 1  # the pooled [2, 1, 1, 64] back to NCHW
    assert graph.count('"onnx.ReduceMean"') == 1  # the GlobalAveragePool, over the NHWC map
    feeds = random_feeds(model)
    compiled = dlc.compile(model, threads=1)
    serial = compiled.run(feeds)["pooled"]
    for threads in (2, 3):
        np.testing.assert_array_equal(_with_threads(compiled, threads).run(feeds)["pooled"], serial,
                                      err_msg=f"{threads} threads")
    # float32 sums of at most 288 products in another order than onnxruntime's
    np.testing.assert_allclose(serial, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_the_nhwc_build_computes_what_the_nchw_build_does():
    """The layouts move no value: the GEMMs sum each output over the weight's (c, i, j) order
    either way, so the two builds agree to float32 rounding of a different split of k."""
    model = _bottleneck_net(batch=1, blocks=3)
    feeds = random_feeds(model, seed=1)
    options = CompileOptions(threads=1)
    nhwc = compile_model(model, options=options)
    nchw = compile_model(model, options=options,
                         instrument=PassInstrumentation(disabled=frozenset({"pointwise-convs-nhwc"})))
    assert "NHWC" in str(compile_model(model, compile_to="graph").module)
    np.testing.assert_allclose(nchw.executable.run(feeds)["pooled"], nhwc.executable.run(feeds)["pooled"],
                               rtol=1e-5, atol=1e-6)


def test_a_residual_written_as_sum_joins_the_expand_convs_store():
    """ResNet-50 as exported from Caffe2 writes its residuals as Sum: the expand conv's GEMM adds
    it and applies the Relu as it stores, as it does an Add (no loop over the output left)."""
    model = _bottleneck_net(batch=1, blocks=2, residual="Sum")
    linalg = str(compile_model(model, compile_to="linalg").module)
    assert linalg.count("residual = 1") == 2
    feeds = random_feeds(model)
    got = dlc.compile(model, threads=2).run(feeds)["pooled"]
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_a_padded_1x1_conv_pads_its_nhwc_input():
    """A 1x1 conv with pads (legal, if rare) reads a padded NHWC copy of its input."""
    from onnx import numpy_helper

    model = _bottleneck_net(batch=2, blocks=4)
    pool = model.graph.node[-1]
    weight = np.random.default_rng(3).standard_normal((64, 64, 1, 1)).astype(np.float32) * 0.1
    model.graph.initializer.append(numpy_helper.from_array(weight, "padded.w"))
    model.graph.node.insert(len(model.graph.node) - 1, helper.make_node(
        "Conv", [pool.input[0], "padded.w"], ["padded"], pads=[1, 1, 1, 1], name="padded"))
    pool.input[0] = "padded"
    assert 'onnx_node_name = "padded", dlc.layout = "NHWC"' in str(compile_model(model, compile_to="graph").module)
    feeds = random_feeds(model)
    np.testing.assert_allclose(dlc.compile(model, threads=2).run(feeds)["pooled"], run_onnxruntime(model, feeds)[0],
                               rtol=1e-4, atol=1e-5)


def _mobile_block(channels: int, size: int, kernel: int, stride: int, pads: list[int], dilation: int = 1,
                  activation: str = "Clip", bias: bool = True, batch: int = 1) -> object:
    """expand 1x1 -> activation -> depthwise -> activation -> project 1x1: the three convs go to
    NHWC together (the block's input and result are its only Transposes)."""
    rng = np.random.default_rng(kernel * 100 + size)
    hidden = channels * 3
    def weight(shape, scale, name):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    weights = [weight((hidden, channels, 1, 1), 0.3, "e"), weight((hidden, 1, kernel, kernel), 0.3, "d"),
               weight(hidden, 0.1, "db"), weight((channels, hidden, 1, 1), 0.3, "p"),
               numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(6.0), "hi")]
    nodes = []

    def act(x, name):
        if activation == "SiLU":
            nodes.extend([helper.make_node("Sigmoid", [x], [f"{name}.s"]),
                          helper.make_node("Mul", [x, f"{name}.s"], [name])])
        elif activation == "Clip":
            nodes.append(helper.make_node("Clip", [x, "lo", "hi"], [name]))
        else:
            nodes.append(helper.make_node(activation, [x], [name]))
        return name

    nodes.append(helper.make_node("Conv", ["x", "e"], ["expand"], name="expand"))
    h = act("expand", "expand.act")
    padding = {"auto_pad": pads} if isinstance(pads, str) else {"pads": pads}
    nodes.append(helper.make_node("Conv", [h, "d", "db"] if bias else [h, "d"], ["dw"], name="depthwise",
                                  group=hidden, strides=[stride] * 2, dilations=[dilation] * 2, **padding))
    h = act("dw", "dw.act")
    nodes.append(helper.make_node("Conv", [h, "p"], ["y"], name="project"))
    if isinstance(pads, str):  # SAME_UPPER / SAME_LOWER: ceil(size / stride)
        out = -(-size // stride)
    else:
        out = (size + pads[0] + pads[2] - dilation * (kernel - 1) - 1) // stride + 1
    graph = helper.make_graph(nodes, "mobile", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               [batch, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, channels, out, out])],
                              weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("channels, size, kernel, stride, pads, dilation, activation, bias, batch", [
    (16, 14, 3, 1, [1, 1, 1, 1], 1, "Clip", True, 1),       # MobileNetV2's 3x3 with ReLU6
    (16, 15, 3, 2, [1, 1, 1, 1], 1, "Relu", True, 1),       # stride 2 from an odd map
    (8, 16, 3, 2, [0, 0, 1, 1], 1, "Clip", False, 1),       # asymmetric pads, no bias, 24 channels
    (16, 7, 5, 1, [2, 2, 2, 2], 1, "SiLU", True, 1),        # EfficientNet's 5x5 over 7x7: every box a border
    (16, 28, 5, 2, [2, 2, 2, 2], 1, "HardSwish", True, 1),  # 5x5 stride 2
    (16, 9, 3, 1, [2, 2, 2, 2], 2, "Relu", True, 1),        # dilated
    (16, 9, 7, 1, [3, 3, 3, 3], 1, "Relu", True, 1),        # 7 x 7 boxes: over MAX_BOXES, a padded copy
    (8, 15, 3, 2, "SAME_UPPER", 1, "Relu", True, 2),        # batch 2, auto_pad
])
def test_depthwise_convs_in_nhwc_match_onnxruntime(channels, size, kernel, stride, pads, dilation, activation, bias,
                                                   batch):
    """The NHWC depthwise kernel (passes/lowering/rules/conv.py `_nhwc_depthwise_conv`): boxes of
    outputs reading x in place (or a padded copy), blocks of 4 output columns, the activation in
    its store; bit-identical across thread counts, onnxruntime's values to float32 rounding of
    at most 49 products summed in another order."""
    model = _mobile_block(channels, size, kernel, stride, pads, dilation, activation, bias, batch)
    graph = str(compile_model(model, compile_to="graph").module)
    assert 'onnx_node_name = "depthwise", dlc.layout = "NHWC"' in graph, graph
    feeds = random_feeds(model)
    compiled = dlc.compile(model, threads=1)
    serial = compiled.run(feeds)["y"]
    np.testing.assert_array_equal(_with_threads(compiled, 2).run(feeds)["y"], serial)
    np.testing.assert_allclose(serial, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation, gate", [("hardswish", "hardsigmoid"), ("silu", "sigmoid")])
def test_squeeze_and_excitation_blocks_run_in_nhwc_and_match_onnxruntime(activation, gate):
    """A MobileNetV3 block (HardSwish, HardSigmoid gate) and an EfficientNet one (SiLU, Sigmoid
    gate): the pool becomes a ReduceMean of the NHWC map, the gate's Mul runs in NHWC (its
    Transpose sunk past the broadcast gate), and no Transpose is left inside the block."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from models import GraphBuilder, _float_input, _mbconv

    g = GraphBuilder(0)
    y = _mbconv(g, "x", 24, 24, 5, 1, 96, 24, activation, "relu", gate, name="block")
    model = g.model("se", [_float_input("x", [1, 24, 14, 14])], {"y": y})
    graph = str(compile_model(model, compile_to="graph").module)
    assert graph.count('dlc.layout = "NHWC"') == 5  # expand, depthwise, the gate's two, project
    assert '"onnx.GlobalAveragePool"' not in graph and graph.count('"onnx.Transpose"') == 1  # x's
    feeds = random_feeds(model)
    compiled = dlc.compile(model, threads=1)
    serial = compiled.run(feeds)["y"]
    np.testing.assert_array_equal(_with_threads(compiled, 2).run(feeds)["y"], serial)
    np.testing.assert_allclose(serial, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_an_nhwc_depthwise_conv_with_a_weight_known_only_at_run_time_is_refused_by_name(tmp_path, capsys):
    """MLIR written by hand may mark a depthwise conv NHWC whose weight is an input: the lowering
    needs the filter at compile time, and says so for that node (exit 1, no traceback)."""
    from test_cli import run_cli

    source = tmp_path / "dw.mlir"
    source.write_text("""
builtin.module {
  func.func @main(%x: tensor<1x6x6x32xf32>, %w: tensor<32x1x3x3xf32>) -> tensor<1x6x6x32xf32> {
    %0 = "onnx.Conv"(%x, %w) {pads = array<i64: 1, 1, 1, 1>, group = 32 : i64, onnx_node_name = "dw",
                              dlc.layout = "NHWC"}
        : (tensor<1x6x6x32xf32>, tensor<32x1x3x3xf32>) -> tensor<1x6x6x32xf32>
    func.return %0 : tensor<1x6x6x32xf32>
  }
}
""")
    code, _, err = run_cli(capsys, "compile", str(source), "-o", str(tmp_path / "dw.dlc"))
    assert code == 1 and "Traceback" not in err
    assert "node 'dw' (Conv): an NHWC depthwise conv needs a constant float32 weight" in err
