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


def _unary_chain(opset: int, out_shape: list[int], *ops: tuple[str, dict]) -> onnx.ModelProto:
    """x[2, 3, 4] through `ops` (op type, attributes) in a row to y[out_shape]."""
    names = ["x", *(f"t{i}" for i in range(len(ops) - 1)), "y"]
    nodes = [helper.make_node(op, [names[i]], [names[i + 1]], name=f"n{i}", **attrs)
             for i, (op, attrs) in enumerate(ops)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_an_older_opset_whose_ops_kept_their_schema_is_relabelled_not_converted(monkeypatch):
    """Relu (14) and Abs (13) are the same at opset 17 and at the canonical 21: the opset is
    relabelled and the version converter (a copy of the model) never runs."""
    import dlc

    def refuse(*args, **kwargs):
        raise AssertionError("the version converter ran")

    monkeypatch.setattr(importer.version_converter, "convert_version", refuse)
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    got = dlc.compile(_unary_chain(17, [2, 3, 4], ("Relu", {}), ("Abs", {}))).run({"x": x})["y"]
    np.testing.assert_array_equal(got, np.abs(np.maximum(x, 0)))


def test_an_older_opset_with_a_changed_op_is_converted(monkeypatch):
    """ReduceMean's axes became an input at opset 18: a model at 17 goes through the version
    converter, and its attribute still says which axis."""
    import dlc

    convert, calls = importer.version_converter.convert_version, []
    monkeypatch.setattr(importer.version_converter, "convert_version",
                        lambda *args, **kwargs: (calls.append(True), convert(*args, **kwargs))[1])
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    got = dlc.compile(_unary_chain(17, [2, 1, 4], ("Relu", {}), ("ReduceMean", {"axes": [1]}))).run({"x": x})["y"]
    assert calls == [True]
    np.testing.assert_allclose(got, np.maximum(x, 0).mean(axis=1, keepdims=True), rtol=1e-6)
