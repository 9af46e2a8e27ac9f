"""SiLU (Mul(x, Sigmoid(x))) and HardSwish after a Conv, Gemm or MatMul join its kernel and are
applied as its outputs are stored: by the GEMM micro-kernel's tile (dlc/codegen/
ukernel_epilogues.py), by a depthwise conv's loops (passes/lowering/rules/conv.py). dlc vs
onnxruntime on inputs with NaNs and large values, through both depthwise lowerings; the
compiled IR shows no loop left for the activation where the GEMM applies it.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

CONVS = {  # name: (x shape, weight shape, attributes)
    "pointwise": ([1, 16, 9, 11], [24, 16, 1, 1], {}),
    "pointwise_7x7_map": ([1, 19, 7, 7], [40, 19, 1, 1], {}),  # output channels in the lanes
    "im2col_3x3_s2": ([1, 8, 13, 12], [16, 8, 3, 3], {"pads": [1] * 4, "strides": [2, 2]}),
    "depthwise_3x3": ([1, 8, 9, 10], [8, 1, 3, 3], {"pads": [1] * 4, "group": 8}),
    "depthwise_5x5_s2": ([2, 6, 14, 13], [6, 1, 5, 5], {"pads": [2] * 4, "strides": [2, 2], "group": 6}),
    "depthwise_7x7_map": ([1, 20, 7, 7], [20, 1, 5, 5], {"pads": [2] * 4, "group": 20}),
}


def _activation(kind: str, x: str, out: str) -> list:
    if kind == "silu":
        return [helper.make_node("Sigmoid", [x], [f"{out}_gate"]), helper.make_node("Mul", [x, f"{out}_gate"], [out])]
    return [helper.make_node("HardSwish", [x], [out])]


def _conv_model(name: str, kind: str, residual: bool = False) -> onnx.ModelProto:
    x_shape, w_shape, attrs = CONVS[name]
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, w_shape).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(-1, 1, w_shape[:1]).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    if residual:
        conv_alone = _model(nodes, inputs, "c", inits)
        c_shape = [d.dim_value for d in conv_alone.graph.output[0].type.tensor_type.shape.dim]
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, c_shape))
        nodes.append(helper.make_node("Add", ["c", "r"], ["s"]))
    nodes += _activation(kind, "s" if residual else "c", "y")
    return _model(nodes, inputs, "y", inits)


def _model(nodes, inputs, output: str, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    feeds = {}
    for value in model.graph.input:
        x = rng.uniform(-8, 8, [d.dim_value for d in value.type.tensor_type.shape.dim]).astype(np.float32)
        x.flat[::13] = np.nan
        x.flat[5::17] = rng.choice([-200.0, 200.0, 90.0, -90.0], x.flat[5::17].size)  # exp's clamps
        feeds[value.name] = x
    return feeds


def _check(model: onnx.ModelProto, threads: int = 1) -> None:
    import dlc

    feeds = _feeds(model)
    got = dlc.compile(model, threads=threads).run(feeds)["y"]
    want = run_onnxruntime(model, feeds)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.fixture(params=["boxes", "phase_planes", "row_pitch"])
def lowering(request, monkeypatch):
    from passes.lowering.rules import conv

    monkeypatch.setattr(conv, "MIN_INTERIOR_SHARE", 0.0 if request.param == "boxes" else 1.01)
    monkeypatch.setattr(conv, "ROW_PITCH_CONV", request.param == "row_pitch")
    monkeypatch.setattr(conv, "PHASE_PITCH_CONV", request.param == "row_pitch")
    monkeypatch.setattr(conv, "STRIDED_SHORT_ROW", 0 if request.param == "boxes" else conv.STRIDED_SHORT_ROW)
    monkeypatch.setenv("DLC_CACHE", "0")  # the cache key does not see the module constant
    return request.param


@pytest.mark.parametrize("kind", ["silu", "hardswish"])
@pytest.mark.parametrize("name", CONVS)
def test_conv_activation_matches_onnxruntime(name, kind, lowering):
    if lowering != "boxes" and not name.startswith("depthwise"):
        pytest.skip("only depthwise convs have the phase-plane and row-pitch lowerings; this conv "
                    "has one lowering, run by the 'boxes' case")
    _check(_conv_model(name, kind))


@pytest.mark.parametrize("kind", ["silu", "hardswish"])
@pytest.mark.parametrize("name", ["pointwise", "pointwise_7x7_map", "depthwise_3x3"])
def test_after_a_residual_add(name, kind):
    _check(_conv_model(name, kind, residual=True))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["silu", "hardswish"])
def test_gemm_and_matmul(kind, threads):
    """Gemm (bias per column, transposed B) and MatMul, the row counts ragged against mr."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.uniform(-1, 1, (37, 29)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.uniform(-1, 1, (37,)).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.uniform(-1, 1, (37, 45)).astype(np.float32), "w2")
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), *_activation(kind, "h", "a"),
             helper.make_node("MatMul", ["a", "w2"], ["m"]), *_activation(kind, "m", "y")]
    _check(_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [19, 29])], "y", [w1, b1, w2]),
           threads)


@pytest.mark.parametrize("kind", ["silu", "hardswish"])
def test_the_gemm_applies_it(kind):
    """The micro-kernel declaration carries the activation and no loop over the output is left."""
    from dlc.driver import compile_model

    module = compile_model(_conv_model("pointwise", kind), compile_to="linalg").module
    text = str(module)
    assert f'activation = "{kind}"' in text
    assert "linalg.generic" not in text


def test_a_gate_used_elsewhere_stays_a_loop():
    """Sigmoid(x) also read by another node: the Mul is not SiLU of the conv alone, so the conv
    stores x and the Sigmoid and Mul run as their own loop, with the same results."""
    model = _conv_model("pointwise", "silu")
    graph = model.graph
    graph.output.append(helper.make_tensor_value_info("y_gate", TensorProto.FLOAT, None))
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    import dlc

    feeds = _feeds(model)
    got = dlc.compile(model).run(feeds)
    for name, want in zip(["y", "y_gate"], run_onnxruntime(model, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["pointwise", "pointwise_7x7_map", "depthwise_5x5_s2"])
def test_fused_silu_is_the_unfused_one_bit_for_bit(name):
    """The micro-kernel's SiLU (ukernel_epilogues.py) and the depthwise loops' are the sequence
    approximate-math makes of the separate Sigmoid and Mul: fusing changes no bit."""
    import dlc

    model = _conv_model(name, "silu")
    feeds = _feeds(model)
    fused = dlc.compile(model).run(feeds)["y"]
    unfused = dlc.compile(model, fusion="none").run(feeds)["y"]
    assert fused.tobytes() == unfused.tobytes()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tail", ["none", "relu6", "residual"])
def test_pointwise_conv_over_a_small_map_puts_channels_in_the_lanes(tail, threads):
    """A 1x1 conv over a 7x7 map is Y^T = X^T @ W^T with x read in place (an implicit GEMM of one
    tap: 7 pixels a row, channels 49 floats apart) and C stored transposed into y, the bias,
    Relu6 or a residual Add in the store; against onnxruntime."""
    from dlc.driver import compile_model

    x_shape, w_shape, _ = CONVS["pointwise_7x7_map"]
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, w_shape).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(-1, 1, w_shape[:1]).astype(np.float32), "b")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if tail != "none" else "y"])]
    if tail == "relu6":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
        inits += [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    elif tail == "residual":
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, w_shape[0], 7, 7]))
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"]))
    model = _model(nodes, inputs, "y", inits)
    text = str(compile_model(model, compile_to="linalg").module)
    # no copy of x, no transpose of y: the GEMM alone
    assert "a_window_channel = 49 : i64, c_transposed = 1" in text
    assert "linalg.generic" not in text.split("func.func @main")[0]
    import dlc

    feeds = _feeds(model)
    for value in feeds.values():  # finite: a NaN would spread over a whole pixel's channels
        value[np.isnan(value)] = 0.5
    got = dlc.compile(model, threads=threads).run(feeds)["y"]
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-5, atol=1e-4)
