"""KxK float convolutions as an implicit GEMM (issue 15): passes/lowering/rules/conv.py
`_implicit_gemm_conv` reads A in place from the padded NCHW input (GemmSpec's window A: no
im2col), multiplies by the packed filter with the output channels in the vector lanes, and
scatters each finished vector into the channels' planes of y (`c_transposed`), bias, residual
Add and activation applied first. Checked against onnxruntime (onnx__Conv.html) on one and two
threads, bit for bit across thread counts, and that each case takes that path."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

# name: x shape, w shape, Conv attributes, tail after the Conv, bias
CASES = {
    "3x3_28x28_relu": ([1, 16, 28, 28], [32, 16, 3, 3], {"pads": [1] * 4}, "relu", True),
    "3x3_s2_odd_13x13": ([1, 16, 13, 13], [24, 16, 3, 3], {"pads": [0, 0, 1, 1], "strides": [2, 2]}, "none", True),
    "3x3_dilated_residual_relu": ([1, 8, 9, 11], [40, 8, 3, 3], {"pads": [2] * 4, "dilations": [2, 2]},
                                  "residual_relu", True),
    "5x5_s2_17_channels_no_bias": ([1, 5, 11, 11], [17, 5, 5, 5], {"pads": [1] * 4, "strides": [2, 2]}, "relu",
                                   False),
    "7x7_s2_stem": ([1, 3, 32, 32], [16, 3, 7, 7], {"pads": [3] * 4, "strides": [2, 2]}, "relu", True),
    "3x3_batch3_residual": ([3, 12, 7, 7], [20, 12, 3, 3], {"pads": [1] * 4}, "residual", True),
    "1x3_unpadded_5x9": ([1, 12, 5, 9], [64, 12, 1, 3], {}, "none", True),
    "3x3_silu_own_loop": ([1, 4, 6, 6], [16, 4, 3, 3], {"pads": [1] * 4}, "silu", True),
    "3x3_s2_hardswish_in_registers": ([1, 3, 20, 20], [16, 3, 3, 3], {"pads": [1] * 4, "strides": [2, 2]},
                                      "hardswish", True),
    "3x3_hardswish_after_residual": ([1, 6, 7, 7], [24, 6, 3, 3], {"pads": [1] * 4}, "residual_hardswish", True),
    "conv1d_k3_s2": ([2, 24, 33], [32, 24, 3], {"strides": [2]}, "relu", True),
    # 1x1 windows run four channels a k-loop iteration, then one at a time: 13 = 4 * 3 + 1
    "1x1_7x7_13_channels_residual_relu": ([1, 13, 7, 7], [24, 13, 1, 1], {}, "residual_relu", True),
    "1x1_6x6_8_channels": ([1, 8, 6, 6], [16, 8, 1, 1], {}, "none", False),
}


def _model(name: str):
    x_shape, w_shape, attrs, tail, with_bias = CASES[name]
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, w_shape).astype(np.float32), "w")]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.uniform(-1, 1, w_shape[:1]).astype(np.float32), "b"))
    rank = len(x_shape) - 2
    pads = attrs.get("pads", [0] * 2 * rank)
    out = [x_shape[0], w_shape[0], *(
        (n + pads[i] + pads[i + rank] - attrs.get("dilations", [1] * rank)[i] * (k - 1) - 1)
        // attrs.get("strides", [1] * rank)[i] + 1
        for i, (n, k) in enumerate(zip(x_shape[2:], w_shape[2:])))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"] if with_bias else ["x", "w"],
                              ["c" if tail != "none" else "y"], **attrs)]
    if tail.startswith("residual"):
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, out))
        nodes.append(helper.make_node("Add", ["c", "r"], ["y" if tail == "residual" else "a"]))
    if tail in ("relu", "residual_relu"):
        nodes.append(helper.make_node("Relu", ["a" if tail == "residual_relu" else "c"], ["y"]))
    elif tail in ("hardswish", "residual_hardswish"):
        nodes.append(helper.make_node("HardSwish", ["a" if tail == "residual_hardswish" else "c"], ["y"]))
    elif tail == "silu":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(model):
    rng = np.random.default_rng(3)
    return {i.name: rng.uniform(-1, 1, [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_implicit_gemm_conv_matches_onnxruntime(name, threads):
    import dlc
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    model = _model(name)
    text = str(compile_model(model, options=CompileOptions(threads=threads), compile_to="linalg").module)
    assert "a_window_h" in text and "c_transposed = 1" in text and "dlc.im2col" not in text, "not an implicit GEMM"
    feeds = _feeds(model)
    got = dlc.compile(model, threads=threads).run(feeds)["y"]
    # Sums of up to 147 products of values in [-1, 1] (|y| up to ~20): float32 rounding in
    # another order than onnxruntime's differs by a few ulp of the partial sums.
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["3x3_s2_hardswish_in_registers", "3x3_hardswish_after_residual"])
def test_hardswish_is_applied_in_the_gemms_registers(name):
    """A transposed C has no rows to read back after its store, so HardSwish (5 operations a
    vector) is applied to the tile in registers: the GEMM carries it and no loop follows (it
    was a second pass over y: MobileNetV3's stem, its 160 -> 960 convs over 7x7)."""
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    text = str(compile_model(_model(name), options=CompileOptions(threads=1), compile_to="linalg").module)
    assert 'activation = "hardswish"' in text and "c_transposed = 1" in text
    kernel = text[text.index("func.func private @k0_"):]
    after_gemm = kernel[kernel.index("func.call @dlc_gemm"):kernel.index("func.return")]
    assert "linalg.generic" not in after_gemm, "HardSwish left as a loop of its own"


def test_implicit_gemm_conv_is_bit_identical_across_thread_counts():
    """Threads split output rows and channels; each output's k order stays the same."""
    import dlc

    model = _model("3x3_batch3_residual")
    feeds = _feeds(model)
    results = [dlc.compile(model, threads=t).run(feeds)["y"] for t in (1, 2, 3)]
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_the_filter_is_stored_once(tmp_path):
    """pack-weights replaces the filter by its packed copy: the artifact holds no second copy."""
    import dlc

    model = _model("3x3_28x28_relu")
    dlc.compile(model).save(tmp_path / "a")
    filter_bytes = 32 * 16 * 3 * 3 * 4
    assert (tmp_path / "a" / "weights.bin").stat().st_size < 1.5 * filter_bytes


@pytest.mark.parametrize("cpu", ["haswell", "x86-64"])
def test_narrower_vectors_transpose_their_tiles_too(cpu):
    """AVX2 (8 lanes) and SSE (4): the tile's register transpose and its masked runs of rows
    work at any vector width (this host runs code built for an older CPU)."""
    import dlc

    model = _model("3x3_batch3_residual")
    feeds = _feeds(model)
    got = dlc.compile(model, threads=2, cpu=cpu).run(feeds)["y"]
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-5, atol=1e-4)
