"""Equal large ConstantOfShape fills are one read-only array (dlc/frontend/importer.py
`_SHARED_FILLS`): a model that makes its weights that way (the light model zoo) fills each
distinct weight once; a fold that rescales one makes a new array, so the model still
computes what onnxruntime does."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import assert_matches_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from dialects.weights import weights_of
from dlc.frontend.importer import _evaluate, import_model


def _fill(output: str, shape: list[int], value: float) -> list[onnx.NodeProto]:
    shape_name = f"{output}_shape"
    return [helper.make_node("Constant", [], [shape_name],
                             value=numpy_helper.from_array(np.array(shape, np.int64))),
            helper.make_node("ConstantOfShape", [shape_name], [output],
                             value=numpy_helper.from_array(np.array([value], np.float32)))]


def _two_convs() -> onnx.ModelProto:
    """Two 64x64x3x3 convolutions whose weights are equal fills (147 KiB each), each with its
    BatchNormalization (different scales): folding rescales each weight differently."""
    nodes = [*_fill("w1", [64, 64, 3, 3], 0.02), *_fill("w2", [64, 64, 3, 3], 0.02)]
    initializers = []
    for index, scale in ((1, 0.5), (2, 3.0)):
        for name, value in (("scale", scale), ("bias", 0.1), ("mean", 0.0), ("var", 1.0)):
            initializers.append(numpy_helper.from_array(np.full(64, value, np.float32), f"{name}{index}"))
    nodes += [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
              helper.make_node("BatchNormalization", ["c1", "scale1", "bias1", "mean1", "var1"], ["b1"]),
              helper.make_node("Relu", ["b1"], ["r1"]),
              helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
              helper.make_node("BatchNormalization", ["c2", "scale2", "bias2", "mean2", "var2"], ["y"])]
    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 64, 6, 6]) for name in "xy")
    graph = helper.make_graph(nodes, "two_convs", [x], [y], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_equal_large_fills_are_one_read_only_array():
    store = weights_of(import_model(_two_convs()))
    assert store["w1"] is store["w2"]
    assert not store["w1"].flags.writeable
    assert store["w1"].dtype == np.float32 and float(store["w1"].flat[0]) == np.float32(0.02)


def test_small_fills_are_their_own_arrays():
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"],
                            value=numpy_helper.from_array(np.array([1.0], np.float32)))
    first, second = (_evaluate(node, [np.array([4, 4], np.int64)])[0] for _ in range(2))
    assert first is not second and first.flags.writeable


def test_folds_of_a_shared_fill_still_match_onnxruntime():
    assert_matches_onnxruntime(_two_convs())
