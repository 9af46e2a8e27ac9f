"""Evaluate one onnx-dialect op on numpy arrays with onnx.reference (the ONNX spec in numpy).

Used by compile-time folding (`fold-constants`); `node_proto` is the op -> ONNX
NodeProto conversion, the inverse of the importer's attribute mapping (see the
attribute table in dialects/onnx.py).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    StringAttr,
)
from xdsl.ir import Attribute

from dialects.diagnostics import UnsupportedError
from dialects.onnx import CANONICAL_OPSET, OnnxOp
from dialects.types import numpy_dtype


def onnx_attribute(name: str, value: Attribute) -> onnx.AttributeProto:
    """One attribute of an onnx-dialect op as an ONNX AttributeProto."""
    if isinstance(value, IntegerAttr):
        return helper.make_attribute(name, value.value.data)
    if isinstance(value, FloatAttr):
        return helper.make_attribute(name, float(value.value.data))
    if isinstance(value, StringAttr):
        return helper.make_attribute(name, value.data)
    if isinstance(value, DenseArrayBase):
        kind = onnx.AttributeProto.INTS if "i" in str(value.elt_type) else onnx.AttributeProto.FLOATS
        return helper.make_attribute(name, list(value.get_values()), attr_type=kind)
    if isinstance(value, ArrayAttr):
        strings = [s.data for s in value.data]
        return helper.make_attribute(name, strings, attr_type=onnx.AttributeProto.STRINGS)
    if isinstance(value, DenseIntOrFPElementsAttr):
        array = np.array(value.get_values(), dtype=numpy_dtype(value.get_element_type()))
        tensor = onnx.numpy_helper.from_array(array.reshape(value.get_shape()), name)
        return helper.make_attribute(name, tensor)
    raise UnsupportedError(f"attribute {name}={value} has no ONNX equivalent")


def node_proto(op: OnnxOp, inputs: list[str], outputs: list[str]) -> onnx.NodeProto:
    """`op` as an ONNX node reading `inputs` ("" for an absent one) and writing `outputs`."""
    node = helper.make_node(op.onnx_type, inputs, outputs, name=op.node_name)
    node.attribute.extend(onnx_attribute(name, value) for name, value in op.attributes.items()
                          if name != "onnx_node_name")
    return node


def evaluate(op: OnnxOp, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run `op` on `inputs` (None for an absent optional input); one array per result."""
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if value is not None else "" for i, value in enumerate(inputs)]
    outputs = [f"out{i}" for i in range(len(op.results))]
    evaluator = ReferenceEvaluator(node_proto(op, names, outputs), opsets={"": CANONICAL_OPSET})
    feeds = {name: value for name, value in zip(names, inputs) if name}
    return [np.asarray(result) for result in evaluator.run(None, feeds)]
