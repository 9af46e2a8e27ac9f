"""The importer gives ONNX shape inference and the version converter its weights as typed inputs
(dlc/frontend/importer.py, _VALUE_ELEMENTS): they never serialise the weights, and the imported
model is the same."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import dlc.frontend.importer as importer
from dialects.weights import weights_of


def _model(opset: int) -> onnx.ModelProto:
    """x[1, 256] -> MatMul by a 256x512 weight (1 MB) -> Reshape by a constant shape -> Relu."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((256, 512)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([2, 256], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Reshape", ["h", "shape"], ["r"], name="reshape"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 256])], [weight, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [13, 21])
def test_inference_and_conversion_never_see_the_weights(monkeypatch, opset):
    seen = []
    infer, convert = onnx.shape_inference.infer_shapes, importer.version_converter.convert_version

    def infer_recording(model, *args, **kwargs):
        seen.append(("infer", model.ByteSize()))
        return infer(model, *args, **kwargs)

    def convert_recording(model, *args, **kwargs):
        seen.append(("convert", model.ByteSize()))
        return convert(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", infer_recording)
    monkeypatch.setattr(importer.version_converter, "convert_version", convert_recording)
    model = _model(opset)
    module = importer.import_model(model)
    assert any(kind == "infer" for kind, _ in seen)
    assert (opset != 21) == any(kind == "convert" for kind, _ in seen)
    assert max(size for _, size in seen) < 4096, seen  # the weight alone is 512 KiB
    weights = weights_of(module)
    np.testing.assert_array_equal(weights["w"], numpy_helper.to_array(model.graph.initializer[0]))
    assert "tensor<2x256xf32>" in str(module)  # the Reshape's constant shape was still read


def test_same_module_as_before_the_weights_left():
    """The weights' stand-in inputs are gone from the imported model: @main takes `x` alone."""
    module = importer.import_model(_model(13))
    text = str(module)
    assert text.count("func.func @main(%x: tensor<1x256xf32>) ->") == 1
    assert "onnx.weight" in text
