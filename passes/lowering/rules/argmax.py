"""ArgMax, ArgMin (axis, keepdims, select_last_index) and Hardmax (one-hot of the first argmax).

Mirrors https://onnx.ai/onnx/operators/onnx__ArgMax.html, onnx__ArgMin.html and
onnx__Hardmax.html (opset 13). NaN wins, as in numpy's argmax/argmin: the first NaN
(the last one with select_last_index) is the answer.
"""

from __future__ import annotations

from xdsl.dialects.builtin import IntegerType, MemRefType
from xdsl.ir import SSAValue

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, INT, require_kinds
from passes.lowering.rules.movement import is_empty, normalize_axis
from passes.lowering.rules.reduction import highest, keepdims_shape, lowest
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, cst, dim, identity_map


def arg_extreme_into(kb, x: SSAValue, index: SSAValue, axis: int, largest: bool,
                     last: bool) -> None:
    """index = position of the max (or min) of x along `axis`; `index` is int64, its rank
    tells whether the axis is kept (size 1) or dropped.

    One pass keeps the best value so far in a keepdims-shaped scratch beside the index.
    """
    shape = x.type.get_shape()
    rank = len(shape)
    element_type = x.type.element_type
    best = kb.scratch(MemRefType(element_type, keepdims_shape(shape, [axis])))
    kb.fill(best, lowest(element_type) if largest else highest(element_type))
    kb.fill(index, 0)
    keep = len(index.type.get_shape()) == rank
    best_exprs = [cst(0) if i == axis else dim(i) for i in range(rank)]
    index_exprs = [e for i, e in enumerate(best_exprs) if keep or i != axis]
    relation = ("ge" if last else "gt") if largest else ("le" if last else "lt")

    def body(b, args):
        value, best_value, best_index = args
        better = b.compare(relation, value, best_value)
        if b.float:  # a NaN beats every number, and only a later NaN with select_last_index
            nan_wins = b.is_nan(value)
            if not last:
                nan_wins = b.and_(nan_wins, b.xor(b.is_nan(best_value), b.const(1, IntegerType(1))))
            better = b.or_(better, nan_wins)
        position = b.index_to(b.index(axis), IntegerType(64))
        return [b.select(better, value, best_value), b.select(better, position, best_index)]

    kb.generic([x], [best, index],
               [identity_map(rank), affine_map(rank, best_exprs), affine_map(rank, index_exprs)],
               [REDUCTION if i == axis else PARALLEL for i in range(rank)], body)


def _check(op, x: SSAValue) -> None:
    require_kinds(op, [x], (FLOAT, INT))
    if is_empty(x):
        raise UnsupportedError(f"{op.describe()}: {op.onnx_type} of an empty tensor {x.type} "
                               "is undefined")


@lowers("ArgMax", "ArgMin")
def lower_arg_extreme(kb, op, ins, outs) -> None:
    x = ins[0]
    _check(op, x)
    axis = normalize_axis(op, op.attr("axis", 0), len(x.type.get_shape()))
    arg_extreme_into(kb, x, outs[0], axis, op.onnx_type == "ArgMax",
                     bool(op.attr("select_last_index", 0)))


@lowers("Hardmax")
def lower_hardmax(kb, op, ins, outs) -> None:
    x, y = ins[0], outs[0]
    _check(op, x)
    shape = x.type.get_shape()
    rank = len(shape)
    axis = normalize_axis(op, op.attr("axis", -1), rank)
    index = kb.scratch(MemRefType(IntegerType(64), keepdims_shape(shape, [axis])))
    arg_extreme_into(kb, x, index, axis, largest=True, last=False)

    def one_hot(b, args):
        here = b.on(IntegerType(64)).compare("eq", b.index_to(b.index(axis), IntegerType(64)),
                                              args[0])
        return [b.select(here, b.const(1), b.const(0))]

    kb.generic([index], [y], [affine_map(rank, [cst(0) if i == axis else dim(i) for i in range(rank)]),
                              identity_map(rank)], [PARALLEL] * rank, one_hot)
