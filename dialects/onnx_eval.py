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

from dialects.diagnostics import CompileError, UnsupportedError
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


def division_error(op_type: str, inputs: list) -> str | None:
    """Why an integer Div/Mod of these arrays is an ONNX error (a 0 in 'B', or the type's
    minimum in 'A' where 'B' holds -1), worded as the cpu run-time check; None otherwise."""
    if op_type not in ("Div", "Mod") or len(inputs) < 2 or any(a is None for a in inputs[:2]):
        return None
    x, y = (np.asarray(a) for a in inputs[:2])
    if not np.issubdtype(y.dtype, np.integer):
        return None
    if (y == 0).any():
        return "integer division by zero (input 'B' holds a 0)"
    if np.issubdtype(x.dtype, np.signedinteger):
        low = np.iinfo(x.dtype).min
        if ((x == low) & (y == -1)).any():  # broadcasts as the op does
            return f"integer overflow (input 'A' holds the minimum {x.dtype}, {low}, where 'B' holds -1)"
    return None


def check_foldable(describe: str, op_type: str, inputs: list) -> None:
    """Refuse to fold what ONNX calls an error at run time (onnxruntime raises "Integer
    division by zero"): folding would answer where every run fails."""
    reason = division_error(op_type, inputs)
    if reason is not None:
        raise CompileError(f"{describe}: {reason}, on constant inputs",
                           "ONNX calls this an error on every run; fix the model's constant divisor")


def evaluate(op: OnnxOp, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run `op` on `inputs` (None for an absent optional input); one array per result.
    An integer Div/Mod by zero (or INT_MIN / -1) is a CompileError naming the op."""
    check_foldable(op.describe(), op.onnx_type, inputs)
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if value is not None else "" for i, value in enumerate(inputs)]
    outputs = [f"out{i}" for i in range(len(op.results))]
    evaluator = ReferenceEvaluator(node_proto(op, names, outputs), opsets={"": CANONICAL_OPSET})
    feeds = {name: value for name, value in zip(names, inputs) if name}
    return [np.asarray(result) for result in evaluator.run(None, feeds)]
