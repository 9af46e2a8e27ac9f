"""A compile to code keeps only the weights its IR still reads (dlc/driver.py
`drop_unused_weights`, after the graph and linalg stages): the arrays that fold-batchnorm-into-conv
and pack-weights replaced are gone from the store, with the `memref.global` ops nothing reads,
and the model still computes what onnxruntime does."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import assert_matches_onnxruntime
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import memref

from dialects.weights import weights_of
from dlc.driver import compile_model, drop_unused_weights


def _conv_bn_matmul() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def const(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    initializers = [const("w", 16, 8, 3, 3), const("scale", 16), const("bias", 16), const("mean", 16),
                    numpy_helper.from_array(rng.uniform(0.5, 2.0, 16).astype(np.float32), "var"),
                    const("fc", 16 * 8 * 8, 32)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"], name="bn"),
             helper.make_node("Relu", ["b"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "flat"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "fc"], ["y"], name="matmul")]
    initializers.append(numpy_helper.from_array(np.array([1, 16 * 8 * 8], np.int64), "flat"))
    graph = helper.make_graph(nodes, "conv_bn_matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _read_weights(module) -> set[str]:
    return {op.name_.root_reference.data for op in module.walk() if isinstance(op, memref.GetGlobalOp)}


def test_the_store_holds_what_the_code_reads(monkeypatch):
    monkeypatch.setenv("DLC_CACHE", "0")
    dropped = []

    def counting(module):
        before = set(weights_of(module))
        drop_unused_weights(module)
        dropped.append(before - set(weights_of(module)))

    monkeypatch.setattr("dlc.driver.drop_unused_weights", counting)
    result = compile_model(_conv_bn_matmul(), compile_to="exe")
    assert "w" in dropped[0]  # the conv's weight, replaced by the one BN scaled
    assert dropped[1]  # the weights pack-weights packed or padded
    store = weights_of(result.module)
    assert set(store) == _read_weights(result.module)
    globals_ = {op.sym_name.data for op in result.module.walk() if isinstance(op, memref.GlobalOp)}
    assert globals_ <= set(store)


def test_nothing_is_dropped_below_code(monkeypatch):
    """--compile-to a phase keeps every weight: the sidecar of `-o NAME.mlir` is as before."""
    monkeypatch.setenv("DLC_CACHE", "0")
    result = compile_model(_conv_bn_matmul(), compile_to="linalg")
    assert "w" in weights_of(result.module)


def test_still_matches_onnxruntime():
    assert_matches_onnxruntime(_conv_bn_matmul())
