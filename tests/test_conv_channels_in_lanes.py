"""Convolutions over small maps with the output channels in the vector lanes (issue 15): KxK and
1x1 convs run as an implicit GEMM (passes/lowering/rules/conv.py `_implicit_gemm_conv`,
tests/test_conv_implicit_gemm.py), reading A in place from the padded input and storing C
transposed, so no copy of the input and no transpose of the output (a strided 1x1 conv over a
small map copied its im2col and transposed its result before). Against onnxruntime
(onnx__Conv.html), on one and two threads, and a check that each case takes that path."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

# name: x shape, w shape, Conv attributes, tail after the Conv
CASES = {
    "3x3_pad1_7x7_relu": ([1, 24, 7, 7], [40, 24, 3, 3], {"pads": [1] * 4}, "relu"),
    "3x3_s2_14x14_to_7x7": ([1, 16, 14, 14], [48, 16, 3, 3], {"pads": [1] * 4, "strides": [2, 2]}, "none"),
    "3x3_s2_odd_13x13": ([1, 16, 13, 13], [32, 16, 3, 3], {"pads": [0, 0, 1, 1], "strides": [2, 2]}, "none"),
    "3x3_dilated_6x6_residual": ([1, 8, 6, 6], [40, 8, 3, 3], {"pads": [2] * 4, "dilations": [2, 2]}, "residual"),
    "1x3_unpadded_5x9": ([1, 12, 5, 9], [64, 12, 1, 3], {}, "none"),
    "3x3_14x14_deep": ([1, 120, 14, 14], [32, 120, 3, 3], {"pads": [1] * 4}, "relu"),
    "1x1_deep_14x14_residual": ([1, 256, 14, 14], [40, 256, 1, 1], {}, "residual"),
    "1x1_7x7_relu": ([1, 48, 7, 7], [24, 48, 1, 1], {}, "relu"),
}


def _model(name: str):
    x_shape, w_shape, attrs, tail = CASES[name]
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, w_shape).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(-1, 1, w_shape[:1]).astype(np.float32), "b")]
    out = [1, w_shape[0], *(
        (n + attrs.get("pads", [0] * 4)[i] + attrs.get("pads", [0] * 4)[i + 2]
         - attrs.get("dilations", [1, 1])[i] * (k - 1) - 1) // attrs.get("strides", [1, 1])[i] + 1
        for i, (n, k) in enumerate(zip(x_shape[2:], w_shape[2:])))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if tail != "none" else "y"], **attrs)]
    if tail == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif tail == "residual":
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, out))
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"]))
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_small_map_conv_as_implicit_gemm_matches_onnxruntime(name, threads):
    import dlc
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    model, out = _model(name)
    pixels = out[2] * out[3]
    # the path on an AVX-512 CPU (the rule for 1x1 convs depends on the registers; below)
    options = CompileOptions(threads=threads, cpu="x86-64-v4")
    text = str(compile_model(model, options=options, compile_to="linalg").module)
    assert f"m = {pixels} : i64" in text and "c_transposed = 1" in text, "not an implicit GEMM"
    if "pads" not in CASES[name][2]:  # a padded conv copies x into its padded buffer, nothing else
        assert "linalg.generic" not in text.split("func.func @main")[0], "a copy or a transpose beside the GEMM"
    rng = np.random.default_rng(3)
    feeds = {i.name: rng.uniform(-1, 1, [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    got = dlc.compile(model, threads=threads).run(feeds)["y"]
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name, implicit", [("1x1_deep_14x14_residual", False), ("1x1_7x7_relu", True)])
def test_avx2_keeps_the_implicit_pointwise_gemm_for_small_maps_only(name, implicit):
    """With 16 vector registers (x86-64-v3) a window tile is 4 x 24, reading a cache line of x's
    plane for 4 pixels per k step: a 1x1 conv over 14x14 runs W @ X there (rows of 8 lanes fill
    196 pixels to 98%), a 7x7 map keeps the implicit GEMM (49 pixels fill W @ X's lanes worse)."""
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    model, out = _model(name)
    text = str(compile_model(model, options=CompileOptions(threads=1, cpu="x86-64-v3"), compile_to="linalg").module)
    assert ("c_transposed = 1" in text) == implicit, text.split("func.func @main")[0][-1500:]


@pytest.mark.parametrize("threads", [1, 16])
def test_a_strided_pointwise_conv_runs_w_at_col(threads):
    """A strided 1x1 conv onto a 7x7 map keeps W @ col (its im2col per block): as an implicit GEMM
    its window A would read a cache line per k step for 7 of its floats."""
    import dlc
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 14, 14])
    w = numpy_helper.from_array(np.random.default_rng(2).uniform(-1, 1, [64, 32, 1, 1]).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2])], "strided", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 7, 7])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    text = str(compile_model(model, options=CompileOptions(threads=threads), compile_to="linalg").module)
    assert "dlc.im2col" in text and "m = 64 : i64" in text and "c_transposed" not in text
    feeds = {"x": np.random.default_rng(4).uniform(-1, 1, [1, 32, 14, 14]).astype(np.float32)}
    np.testing.assert_allclose(dlc.compile(model, threads=threads).run(feeds)["y"], run_onnxruntime(model, feeds)[0],
                               rtol=1e-5, atol=1e-4)


def test_a_wide_map_keeps_pixels_in_the_lanes():
    """28x28 pixels fill the lanes as well as 32 channels, and 8 channels deep the implicit GEMM's
    transposed store would cost more than its k steps: a strided 1x1 conv onto a 28x28 map runs
    W @ col with its im2col per block."""
    from dlc.driver import compile_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 56, 56])
    w = numpy_helper.from_array(np.ones([32, 8, 1, 1], np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2])], "wide", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 28, 28])], [w])
    text = str(compile_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                             compile_to="linalg").module)
    assert "dlc.im2col" in text and "m = 32 : i64" in text


@pytest.mark.parametrize("name", ["3x3_pad1_7x7_relu", "3x3_14x14_deep"])
def test_small_map_conv_is_bit_identical_across_thread_counts(name):
    import dlc

    model, _ = _model(name)
    x = np.random.default_rng(5).uniform(-1, 1, CASES[name][0]).astype(np.float32)
    one = dlc.compile(model, threads=1).run({"x": x})["y"]
    for threads in (2, 4):
        assert dlc.compile(model, threads=threads).run({"x": x})["y"].tobytes() == one.tobytes(), threads


def _linalg_of_3x3_conv(channels: int, side: int, threads: int) -> str:
    """The linalg phase of a 3x3, pad 1 conv of `channels` -> `channels` over side x side, compiled
    for `threads`."""
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    shape = [1, channels, side, side]
    w = numpy_helper.from_array(np.ones([channels, channels, 3, 3], np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # the direct conv (`--no-winograd`; the default runs the 14x14 one as Winograd)
    options = CompileOptions(threads=threads, winograd=False)
    return str(compile_model(model, options=options, compile_to="linalg").module)


@pytest.mark.parametrize("channels, side", [(512, 7), (256, 14)])
@pytest.mark.parametrize("threads", [1, 2, 4, 16])
def test_resnet_small_map_convs_take_the_implicit_gemm_on_any_thread_count(channels, side, threads):
    """ResNet's 3x3 512 -> 512 over 7x7 and 256 -> 256 over 14x14 took channels-in-lanes (a
    copied im2col) on few threads and W @ col above (on the 16-core Xeon at 16 threads the
    14x14 one ran 0.42 ms as W @ col against 0.52). The implicit GEMM copies nothing and splits
    output rows and channels: on that Xeon, new/old 0.76 (7x7) and 0.83 (14x14) at 16 threads,
    0.80 and 0.75 at 4 (benchmarks/README.md, "Implicit-GEMM convolutions")."""
    text = _linalg_of_3x3_conv(channels, side, threads)
    assert f"m = {side * side} : i64" in text and "c_transposed = 1" in text and "dlc.im2col" not in text
