"""Concats run in place (passes/lowering/kernels_to_linalg.py `_concats_in_place`): the kernels
that make a Concat's inputs write straight into its output, the Concat kernel goes, and every
output matches the copying build bit for bit and onnxruntime to float tolerance. Where the
slices are not contiguous, or an input or the output is also a model output, the Concat still
copies."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import dlc
import passes.lowering.kernels_to_linalg as k2l
from dlc.tools.oracle import onnxruntime_session

RNG = np.random.default_rng(0)


def _weight(name, shape):
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.2).astype(np.float32), name)


def _fire(axis=1, extra_outputs=(), concat_inputs=("e1", "e3"), batch=1):
    """A SqueezeNet fire module: squeeze 1x1, then 1x1 and 3x3 expands concatenated and read by
    a 1x1 conv; the 1x1 expand's output is also read by a Sigmoid (a reader of a slice)."""
    nodes = [helper.make_node("Conv", ["x", "ws"], ["s0"], name="squeeze"),
             helper.make_node("Relu", ["s0"], ["s"], name="squeeze_relu"),
             helper.make_node("Conv", ["s", "w1"], ["e1"], name="expand1"),
             helper.make_node("Conv", ["s", "w3"], ["e3"], pads=[1] * 4, name="expand3"),
             helper.make_node("Concat", list(concat_inputs), ["cat"], axis=axis, name="cat"),
             helper.make_node("Sigmoid", ["e1"], ["side"], name="side")]
    channels = sum({"e1": 8, "e1x": 8, "e3": 12}[name] for name in concat_inputs)
    if axis == 1:
        nodes.append(helper.make_node("Conv", ["cat", "wo"], ["y"], name="out"))
        y_shape = [batch, 6, 9, 9]
        inits = [_weight("wo", [6, channels, 1, 1])]
    else:
        nodes.append(helper.make_node("Relu", ["cat"], ["y"], name="out"))
        y_shape = [batch, 8, 18, 9]
        inits = []
    inits += [_weight("ws", [4, 5, 1, 1]), _weight("w1", [8, 4, 1, 1]), _weight("w3", [12, 4, 3, 3])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape),
               helper.make_tensor_value_info("side", TensorProto.FLOAT, [batch, 8, 9, 9])]
    shapes = {"e3": [batch, 12, 9, 9], "cat": [batch, channels, 9, 9]}
    outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes[name]) for name in extra_outputs]
    graph = helper.make_graph(nodes, "fire", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 5, 9, 9])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _kernel_names(model, threads) -> list[str]:
    """The kernel functions of the model's loops phase."""
    from dlc.driver import CompileOptions, compile_model

    loops = compile_model(model, compile_to="loops", options=CompileOptions(threads=threads)).module
    return [op.sym_name.data for op in loops.ops if hasattr(op, "sym_name") and op.sym_name.data.startswith("k")]


def _run(model, threads, in_place, monkeypatch):
    """(outputs, feeds, kernel names) of the model compiled with or without Concats in place."""
    monkeypatch.setattr(k2l, "CONCAT_IN_PLACE", in_place)
    monkeypatch.setenv("DLC_CACHE", "0")
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    return dlc.compile(model, threads=threads).run(feeds), feeds, _kernel_names(model, threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_fire_module_writes_its_expands_into_the_concat(threads, monkeypatch):
    model = _fire()
    copied, feeds, copying_kernels = _run(model, threads, False, monkeypatch)
    placed, _, kernels = _run(model, threads, True, monkeypatch)
    assert any("Concat" in name for name in copying_kernels)
    assert not any("Concat" in name for name in kernels), kernels
    for name, value in copied.items():
        assert placed[name].tobytes() == value.tobytes(), name
    expected = onnxruntime_session(model).run(None, feeds)
    for name, value in zip(("y", "side"), expected):
        np.testing.assert_allclose(placed[name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["rows_of_a_batch", "input_returned", "output_returned", "same_input_twice"])
def test_concats_that_must_copy_still_copy_and_compute_the_same(case, monkeypatch):
    model = {"rows_of_a_batch": lambda: _fire(axis=2, concat_inputs=("e1", "e1x")),
             "input_returned": lambda: _fire(extra_outputs=("e3",)),
             "output_returned": lambda: _fire(extra_outputs=("cat",)),
             "same_input_twice": lambda: _fire(concat_inputs=("e1", "e1"))}[case]()
    if case == "rows_of_a_batch":  # two row blocks of one channel block: slices of rows 9 long
        model.graph.node.insert(3, helper.make_node("Neg", ["e1"], ["e1x"], name="neg"))
    placed, feeds, kernels = _run(model, 1, True, monkeypatch)
    assert any("Concat" in name for name in kernels), kernels
    expected = onnxruntime_session(model).run(None, feeds)
    for output, value in zip(model.graph.output, expected):
        np.testing.assert_allclose(placed[output.name], value, rtol=1e-4, atol=1e-5)


def _dense_block():
    """A DenseNet block: each layer's Concat takes the previous Concat's output and the layer's
    conv, and the next layer reads it (pre-activation: Relu, then conv)."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1] * 4, name="stem")]
    inits = [_weight("w0", [4, 5, 3, 3])]
    previous, channels = "c0", 4
    for layer in range(3):
        nodes += [helper.make_node("Relu", [previous], [f"r{layer}"], name=f"relu{layer}"),
                  helper.make_node("Conv", [f"r{layer}", f"w{layer + 1}"], [f"g{layer}"], pads=[1] * 4,
                                   name=f"grow{layer}"),
                  helper.make_node("Concat", [previous, f"g{layer}"], [f"cat{layer}"], axis=1, name=f"cat{layer}")]
        inits.append(_weight(f"w{layer + 1}", [3, channels, 3, 3]))
        previous, channels = f"cat{layer}", channels + 3
    nodes.append(helper.make_node("Conv", [previous, "wo"], ["y"], name="out"))
    inits.append(_weight("wo", [6, channels, 1, 1]))
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 9, 9])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_dense_block_nests_its_concats_in_one_buffer(threads, monkeypatch):
    model = _dense_block()
    copied, feeds, copying_kernels = _run(model, threads, False, monkeypatch)
    placed, _, kernels = _run(model, threads, True, monkeypatch)
    assert sum("Concat" in name for name in copying_kernels) == 3
    assert not any("Concat" in name for name in kernels), kernels
    assert placed["y"].tobytes() == copied["y"].tobytes()
    expected = onnxruntime_session(model).run(None, feeds)[0]
    np.testing.assert_allclose(placed["y"], expected, rtol=1e-4, atol=1e-5)
