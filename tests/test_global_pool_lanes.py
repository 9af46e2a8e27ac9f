"""GlobalAveragePool over small planes (passes/lowering/rules/pooling.py: fewer than
GAP_LANES_BELOW elements, summed in vector-wide partial sums, then the lanes and the tail)
against onnxruntime: whole blocks of lanes and tails, batches, a NaN and an infinity in one
channel, and a plane too short for lanes (the plain sum)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper


def _model(shape):
    import onnx

    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


@pytest.mark.parametrize("shape", [[2, 37, 7, 7], [1, 5, 6, 9], [1, 3, 4, 8], [1, 4, 5, 5], [1, 6, 7]])
def test_small_planes_match_onnxruntime(shape):
    import dlc

    x = np.random.default_rng(0).uniform(-4, 4, shape).astype(np.float32)
    x.reshape(shape[0], shape[1], -1)[0, 1, 3] = np.nan
    x.reshape(shape[0], shape[1], -1)[0, 2, -1] = np.inf
    got = dlc.compile(_model(shape)).run({"x": x})["y"]
    want = run_onnxruntime(_model(shape), {"x": x})[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
