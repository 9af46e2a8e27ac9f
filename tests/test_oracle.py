"""The tools' one oracle (dlc/tools/oracle.py): verify and the fuzzer take their per-operator
tolerance from the same model, inputs are deterministic by seed, and a missing onnxruntime
says how to install it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

from dlc.errors import DlcError
from dlc.tools import oracle
from dlc.tools.fuzz import checks as fuzz
from dlc.tools.verify import tolerance_for

SHAPE = (2, 3, 4)


def softmax_model(opset: int, **attributes):
    node = helper.make_node("Softmax", ["x"], ["y"], **attributes)
    graph = helper.make_graph([node], "softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def softmax(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    e = np.exp(x - x.max(axis=axes, keepdims=True))
    return (e / e.sum(axis=axes, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("opset,attributes,length", [
    (11, {"axis": 1}, 3 * 4),  # before opset 13: coerced to 2-D, all axes from `axis` on
    (11, {}, 3 * 4),           # ... and `axis` defaults to 1
    (13, {"axis": 1}, 3),      # from opset 13: that one axis
    (13, {}, 4),               # ... defaulting to the last
])
def test_softmax_reduction_length_follows_the_opset(opset, attributes, length):
    node = softmax_model(opset, **attributes).graph.node[0]
    assert oracle.reduction_length(node, [SHAPE], SHAPE, opset) == length


def test_verify_and_fuzz_share_the_tolerance_of_softmax_at_opset_11():
    model = softmax_model(11, axis=1)
    node = model.graph.node[0]
    x = np.random.default_rng(0).uniform(-2, 2, SHAPE).astype(np.float32)
    y = softmax(x, (1, 2))
    ulps, rule = oracle.operator_ulps(node, [SHAPE], SHAPE, oracle.model_opset(model))
    assert "K=12" in rule and ulps == oracle.SUM_ULPS_PER_TERM * 12 + 12
    eps = float(np.finfo(np.float32).eps)

    tol, verify_rule = tolerance_for(node, [x], y, opset=11)  # verify: ulps of |y| + mean |y|
    assert verify_rule.startswith(rule)
    np.testing.assert_allclose(tol, ulps * eps * (np.abs(y) + np.abs(y).mean()))

    # The fuzzer: the same ulps, of the largest magnitude upstream, times its safety factor.
    fuzz_tol = fuzz.tolerances(model, {"x": x, "y": y})["y"]
    assert fuzz_tol == pytest.approx(fuzz.SAFETY * eps * ulps * max(np.abs(x).max(), np.abs(y).max()))


def test_random_inputs_are_deterministic_by_seed_and_in_range():
    model = helper.make_model(helper.make_graph([], "inputs", [
        helper.make_tensor_value_info("f", TensorProto.FLOAT, [3, 5]),
        helper.make_tensor_value_info("i", TensorProto.INT64, [7]),
        helper.make_tensor_value_info("b", TensorProto.BOOL, [4]),
        helper.make_tensor_value_info("n", TensorProto.FLOAT, ["N", 2])], []))
    specs = oracle.input_specs(model)
    assert [(s.name, s.shape, s.dtype) for s in specs] == [
        ("f", (3, 5), "float32"), ("i", (7,), "int64"), ("b", (4,), "bool"), ("n", (1, 2), "float32")]
    first = oracle.random_inputs(specs, seed=3, float_range=(-2.0, 2.0), int_range=(-3, 4))
    again = oracle.random_inputs(specs, seed=3, float_range=(-2.0, 2.0), int_range=(-3, 4))
    other = oracle.random_inputs(specs, seed=4, float_range=(-2.0, 2.0), int_range=(-3, 4))
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["f"], other["f"])
    assert first["f"].dtype == np.float32 and np.all(np.abs(first["f"]) <= 2)
    assert first["i"].dtype == np.int64 and first["i"].min() >= -3 and first["i"].max() < 4
    assert first["b"].dtype == bool
    # The fuzzer's feeds are the oracle's, in the generator's ranges.
    fuzz_feeds = fuzz.make_feeds(model, 3)
    assert all(np.array_equal(first[k], fuzz_feeds[k]) for k in first)


def test_session_runs_and_exposes_intermediates():
    pytest.importorskip("onnxruntime")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    exposed = oracle.expose_outputs(model, [helper.make_tensor_value_info("r", TensorProto.FLOAT, [3])])
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    for level in oracle.GRAPH_OPTIMISATION_LEVELS:
        values = oracle.run_onnxruntime(exposed, {"x": x}, graph_optimisation=level)
        assert list(values) == ["y", "r"]
        np.testing.assert_array_equal(values["r"], np.maximum(x, 0))
    assert len(model.graph.output) == 1  # the original is left alone


def test_missing_onnxruntime_names_the_test_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(DlcError, match="onnxruntime") as error:
        oracle.onnxruntime_session(b"")
    assert "dlc[test]" in str(error.value)
