"""Residual blocks whose Add input dies with the conv write their output over it
(passes/lowering/overwrite_dead_residuals.py): outputs match the build that keeps a buffer per
output bit for bit (1 and 2 threads: the GEMM's tiles split over threads read R where they
write C) and onnxruntime to float tolerance; the arena shrinks. Where the residual is also a
model output or read again later, its kernel keeps an output buffer of its own."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import dlc
from dlc.driver import CompileOptions, compile_model
from dlc.tools.oracle import onnxruntime_session
from passes.lowering.overwrite_dead_residuals import OverwriteDeadResidualsPass

RNG = np.random.default_rng(0)


def _weight(name, shape):
    fan_in = int(np.prod(shape[1:]))
    return numpy_helper.from_array((RNG.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)


def _blocks(wide: int = 96, extra_outputs=(), reread=False):
    """A stem, an identity basic block (3x3 convs over `wide` channels: k = 9 * wide, past one
    kc block of the caches' choice for wide = 96) and a bottleneck with a projection shortcut."""
    conv = helper.make_node
    nodes = [conv("Conv", ["x", "ws"], ["s0"], pads=[1] * 4, name="stem"),
             conv("Relu", ["s0"], ["h"], name="stem_relu"),
             conv("Conv", ["h", "wa"], ["a0"], pads=[1] * 4, name="block0_a"),
             conv("Relu", ["a0"], ["a"], name="block0_a_relu"),
             conv("Conv", ["a", "wb"], ["b"], pads=[1] * 4, name="block0_b"),
             conv("Add", ["b", "h"], ["y0s"], name="block0_add"),
             conv("Relu", ["y0s"], ["y0"], name="block0_relu"),
             conv("Conv", ["y0", "wp"], ["p"], name="block1_projection"),
             conv("Conv", ["y0", "wr"], ["r0"], name="block1_reduce"),
             conv("Relu", ["r0"], ["r"], name="block1_reduce_relu"),
             conv("Conv", ["r", "we"], ["e"], name="block1_expand"),
             conv("Add", ["e", "p"], ["y1s"], name="block1_add"),
             conv("Relu", ["y1s"], ["y1"], name="block1_relu"),
             conv("GlobalAveragePool", ["y1"], ["y"], name="pool")]  # y1 not itself an output
    if reread:  # h read again by a kernel after block0's
        nodes += [conv("Conv", ["y0", "wq"], ["q"], name="late_conv"),
                  conv("Mul", ["h", "q"], ["again"], name="reread")]
    inits = [_weight("ws", [wide, 3, 3, 3]), _weight("wa", [wide, wide, 3, 3]), _weight("wb", [wide, wide, 3, 3]),
             _weight("wp", [128, wide, 1, 1]), _weight("wq", [wide, wide, 1, 1]), _weight("wr", [32, wide, 1, 1]),
             _weight("we", [128, 32, 1, 1])]
    shapes = {"y": [1, 128, 1, 1], "h": [1, wide, 8, 8], "again": [1, wide, 8, 8]}
    outputs = ["y", *extra_outputs] + (["again"] if reread else [])
    graph = helper.make_graph(nodes, "blocks", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _build(model, threads, overwrite, monkeypatch, tiles=None):
    """(outputs, feeds, kernels that overwrite their residual, arena bytes)."""
    monkeypatch.setenv("DLC_CACHE", "0")
    if not overwrite:
        monkeypatch.setattr(OverwriteDeadResidualsPass, "apply", lambda self, ctx, module: None)
    feeds = {"x": np.random.default_rng(1).standard_normal([1, 3, 8, 8]).astype(np.float32)}
    outputs = dlc.compile(model, threads=threads, tiles=tiles).run(feeds)
    options = CompileOptions(threads=threads, tiles=tiles)
    linalg = compile_model(model, compile_to="linalg", options=options).module
    functions = [op for op in linalg.ops if hasattr(op, "sym_name")]
    overwriting = [f.sym_name.data for f in functions if "dlc.overwrites_residual" in f.attributes]
    main = next(f for f in functions if f.sym_name.data == "main")
    monkeypatch.undo()
    return outputs, feeds, overwriting, main.attributes["dlc.arena_size"].value.data


@pytest.mark.parametrize("threads", [1, 2])
def test_residual_blocks_write_over_their_dying_residuals(threads, monkeypatch):
    model = _blocks()
    apart, feeds, none, apart_arena = _build(model, threads, False, monkeypatch)
    over, _, overwriting, arena = _build(model, threads, True, monkeypatch)
    assert none == [] and len(overwriting) == 2, overwriting
    assert arena < apart_arena
    assert over["y"].tobytes() == apart["y"].tobytes()
    expected = onnxruntime_session(model).run(None, feeds)[0]
    np.testing.assert_allclose(over["y"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["residual_returned", "residual_read_again"])
def test_a_residual_still_needed_keeps_its_buffer(case, monkeypatch):
    model = _blocks(wide=16, extra_outputs=("h",)) if case == "residual_returned" else _blocks(wide=16, reread=True)
    over, feeds, overwriting, _ = _build(model, 1, True, monkeypatch)
    assert len(overwriting) == 1, overwriting  # block1's projection dies; block0's h does not
    expected = onnxruntime_session(model).run(None, feeds)
    for output, value in zip(model.graph.output, expected):
        np.testing.assert_allclose(over[output.name], value, rtol=1e-4, atol=1e-4)


def test_a_users_kc_that_splits_k_keeps_the_residual_apart(monkeypatch):
    """`--tile *:kc=432` splits block0's 3x3 GEMM (k = 864) in two k blocks, whose first would
    overwrite R: that kernel keeps its own output; block1's 1x1 expand (k = 32) still overwrites."""
    model = _blocks()
    over, feeds, overwriting, _ = _build(model, 1, True, monkeypatch, tiles="*:kc=432")
    assert len(overwriting) == 1, overwriting
    expected = onnxruntime_session(model).run(None, feeds)[0]
    np.testing.assert_allclose(over["y"], expected, rtol=1e-4, atol=1e-4)


def test_a_residual_that_is_also_the_convs_input_keeps_its_buffer(monkeypatch):
    """y = Relu(Conv1x1(h) + h): h, dead after, is the GEMM's A as well as its R; written over,
    later tiles would read outputs as inputs."""
    conv = helper.make_node
    nodes = [conv("Conv", ["x", "ws"], ["s0"], pads=[1] * 4, name="stem"),
             conv("Relu", ["s0"], ["h"], name="stem_relu"),
             conv("Conv", ["h", "w1"], ["c"], name="pointwise"),
             conv("Add", ["c", "h"], ["s"], name="add"),
             conv("Relu", ["s"], ["r"], name="relu"),
             conv("GlobalAveragePool", ["r"], ["y"], name="pool")]
    graph = helper.make_graph(nodes, "self_residual",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 1, 1])],
                              [_weight("ws", [64, 3, 3, 3]), _weight("w1", [64, 64, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    over, feeds, overwriting, _ = _build(model, 1, True, monkeypatch)
    assert overwriting == [], overwriting
    expected = onnxruntime_session(model).run(None, feeds)[0]
    np.testing.assert_allclose(over["y"], expected, rtol=1e-4, atol=1e-4)
