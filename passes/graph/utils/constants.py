"""Shared helpers of the graph passes: weights as compile-time constants, absent inputs, uses.

Weights live outside the IR (dialects/weights.py): a pass reads an operand's
array through its `onnx.weight` op and adds new arrays as new weights, never
changing an existing array (other ops may read it).
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import NoneType, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from dialects.onnx import OPS, OnnxOp, WeightOp
from dialects.types import element_type_for
from dialects.weights import weights_of


def constant_of(value: SSAValue) -> np.ndarray | None:
    """The array of `value` if an `onnx.weight` defines it and the store holds it, else None."""
    owner = value.owner
    if not isinstance(owner, WeightOp):
        return None
    return weights_of(owner.get_toplevel_object()).get(owner.weight_name)


def is_absent(op: Operation, index: int) -> bool:
    """Whether optional operand `index` of `op` is missing (omitted or `onnx.none`)."""
    return index >= len(op.operands) or isinstance(op.operands[index].type, NoneType)


def only_user(value: SSAValue) -> Operation | None:
    """The one op using `value` (once), or None when it has zero or several uses."""
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


def producer(value: SSAValue, onnx_type: str) -> OnnxOp | None:
    """The op defining `value` when it is an `onnx_type` op, else None."""
    owner = value.owner
    return owner if isinstance(owner, OnnxOp) and owner.onnx_type == onnx_type else None


def add_weight(rewriter: PatternRewriter, before: Operation, hint: str, array: np.ndarray) -> SSAValue:
    """Store `array` as a new weight and insert its `onnx.weight` op before `before`."""
    name = weights_of(before.get_toplevel_object()).add(hint, array)
    op = WeightOp(name, TensorType(element_type_for(array.dtype), array.shape))
    rewriter.insert(op, InsertPoint.before(before))
    return op.result


def replace_with(rewriter: PatternRewriter, old: OnnxOp, operands: list[SSAValue],
                 attributes: dict | None = None, onnx_type: str | None = None) -> OnnxOp:
    """Replace `old` by an op of its type (or `onnx_type`) and result types on new operands.

    The attributes, node name included, are `old`'s unless `attributes` is given.
    """
    cls = OPS[onnx_type] if onnx_type else type(old)
    new = cls.create(operands=operands, result_types=[r.type for r in old.results],
                     attributes=dict(old.attributes if attributes is None else attributes))
    rewriter.replace(old, new)
    return new
