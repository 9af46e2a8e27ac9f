"""The importer folds ConstantOfShape itself (dlc/frontend/importer.py `_DIRECT`), not through a
ReferenceEvaluator per node: the same arrays, dtype included, as onnx's reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from dialects.onnx import CANONICAL_OPSET
from dlc.frontend.importer import _evaluate

VALUES = {
    "default": None,
    "float32": np.array([0.01], np.float32),
    "float64": np.array([-2.5], np.float64),
    "float16": np.array([1.5], np.float16),
    "int64": np.array([7], np.int64),
    "int8": np.array([-3], np.int8),
    "bool": np.array([True]),
}


@pytest.mark.parametrize("shape", [[2, 3], [0, 4], [], [1]], ids=["2x3", "0x4", "scalar", "1"])
@pytest.mark.parametrize("value", list(VALUES), ids=list(VALUES))
def test_constant_of_shape_folds_as_the_reference_evaluator(value, shape):
    attributes = {} if VALUES[value] is None else {"value": numpy_helper.from_array(VALUES[value])}
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"], **attributes)
    dims = np.array(shape, np.int64)
    got = _evaluate(node, [dims])[0]
    want = ReferenceEvaluator(node, opsets={"": CANONICAL_OPSET}).run(None, {"shape": dims})[0]
    assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def test_constant_of_shape_with_a_value_of_two_elements_is_left_to_the_reference_evaluator():
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"],
                            value=numpy_helper.from_array(np.array([1.0, 2.0], np.float32)))
    with pytest.raises(ValueError, match="single element"):
        _evaluate(node, [np.array([2], np.int64)])
