"""ONNX comparison and logic operators (Equal, Less, ..., And, Or, Xor, Not, Where, IsNaN, IsInf)
and the bitwise ones (BitwiseAnd, BitwiseOr, BitwiseXor, BitwiseNot, opset 18; BitShift, opset 28)
on integers.

Mirrors the ONNX specs at opset 21 (https://onnx.ai/onnx/operators/) with numpy
broadcasting; booleans are i1. Float comparisons are IEEE ordered: false when a NaN is involved.
"""

from __future__ import annotations

from xdsl.dialects import arith

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import BOOL, FLOAT, INT, UINT, element_kind, require_kinds
from passes.lowering.utils.linalg_builder import Body

_COMPARISONS = {  # op -> (relation for Body.compare, element kinds the spec allows)
    "Equal": ("eq", (FLOAT, INT, UINT, BOOL)),
    "Less": ("lt", (FLOAT, INT, UINT)),
    "LessOrEqual": ("le", (FLOAT, INT, UINT)),
    "Greater": ("gt", (FLOAT, INT, UINT)),
    "GreaterOrEqual": ("ge", (FLOAT, INT, UINT)),
}

_LOGIC = {"And": Body.and_, "Or": Body.or_, "Xor": Body.xor}


@lowers(*_COMPARISONS)
def lower_comparison(kb, op, ins, outs) -> None:
    relation, kinds = _COMPARISONS[op.onnx_type]
    require_kinds(op, ins, kinds)
    kb.elementwise(ins, outs[0], lambda b, a: [b.compare(relation, a[0], a[1])])


@lowers(*_LOGIC)
def lower_logic(kb, op, ins, outs) -> None:
    require_kinds(op, ins, (BOOL,))
    formula = _LOGIC[op.onnx_type]
    kb.elementwise(ins, outs[0], lambda b, a: [formula(b, a[0], a[1])])


@lowers("Not")
def lower_not(kb, op, ins, outs) -> None:
    require_kinds(op, ins, (BOOL,))
    kb.elementwise(ins, outs[0], lambda b, a: [b.xor(a[0], b.const(1))])


@lowers("Where")
def lower_where(kb, op, ins, outs) -> None:
    require_kinds(op, ins[:1], (BOOL,))
    require_kinds(op, ins[1:], (FLOAT, INT, UINT, BOOL))
    kb.elementwise(ins, outs[0], lambda b, a: [b.select(a[0], a[1], a[2])])


@lowers("IsNaN")
def lower_is_nan(kb, op, ins, outs) -> None:
    require_kinds(op, ins, (FLOAT,))
    kb.elementwise(ins, outs[0], lambda b, a: [b.is_nan(a[0])])


@lowers("IsInf")
def lower_is_inf(kb, op, ins, outs) -> None:
    require_kinds(op, ins, (FLOAT,))
    signs = [s for s, attr in ((1, "detect_positive"), (-1, "detect_negative")) if op.attr(attr, 1)]

    def body(b: Body, args):
        x = args[0]
        hits = [b.compare("eq", x, b.const(sign * float("inf"), x.type)) for sign in signs]
        if not hits:  # both detections off: the spec's output is all false
            return [b.const(0)]
        return [hits[0] if len(hits) == 1 else b.or_(*hits)]

    kb.elementwise(ins, outs[0], body)


_BITWISE = {"BitwiseAnd": Body.and_, "BitwiseOr": Body.or_, "BitwiseXor": Body.xor}


@lowers(*_BITWISE)
def lower_bitwise(kb, op, ins, outs) -> None:
    require_kinds(op, ins, (INT, UINT))
    formula = _BITWISE[op.onnx_type]
    kb.elementwise(ins, outs[0], lambda b, a: [formula(b, a[0], a[1])])


@lowers("BitwiseNot")
def lower_bitwise_not(kb, op, ins, outs) -> None:
    require_kinds(op, ins, (INT, UINT))

    def body(b: Body, args):
        x = args[0]
        if element_kind(x.type) == INT:
            return [b.xor(x, b.const(-1))]
        # xDSL 0.75 verifies no constant of an unsigned type: all ones is (x - x) - 1, the 1
        # a true (x == x) widened
        one = b.cast(b.compare("eq", x, x), x.type)
        return [b.xor(x, b.sub(b.sub(x, x), one))]

    kb.elementwise(ins, outs[0], body)


@lowers("BitShift")
def lower_bit_shift(kb, op, ins, outs) -> None:
    """BitShift with opset 28's meaning (signed types too): a right shift of a signed X is
    arithmetic; an amount outside [0, width) gives what the sign fill alone gives, -1 for a
    right shift of a negative signed X and 0 otherwise (LLVM's shl/ashr/lshr would be poison:
    the amount is replaced by 0 first, then the result by the fill). Until the importer reads
    opset 28's type lists, only unsigned X reaches it (ONNX inference at 21 refuses signed)."""
    require_kinds(op, ins, (INT, UINT))
    left = op.attr("direction", "") == "LEFT"
    if not left and op.attr("direction", "") != "RIGHT":
        raise UnsupportedError(f"{op.describe()}: attribute 'direction' is "
                               f"'{op.attr('direction', '')}'; expected 'LEFT' or 'RIGHT'")
    signed = element_kind(ins[0].type.element_type) == INT

    def body(b: Body, args):
        x, y = args
        zero = b.sub(x, x)  # xDSL 0.75 verifies no constant of an unsigned type: built from x
        width = b.cast(b.compare("eq", x, x), x.type)  # 1, doubled up to the bit width
        for _ in range(x.type.width.data.bit_length() - 1):
            width = b.add(width, width)
        in_range = b.math(arith.CmpiOp, y, width, "ult")  # negative y: huge
        amount = b.select(in_range, y, zero)
        if left:
            shifted, fill = b.math(arith.ShLIOp, x, amount), zero
        elif signed:
            shifted = b.math(arith.ShRSIOp, x, amount)
            fill = b.math(arith.ShRSIOp, x, b.const(x.type.width.data - 1))
        else:
            shifted, fill = b.math(arith.ShRUIOp, x, amount), zero
        return [b.select(in_range, shifted, fill)]

    kb.elementwise(ins, outs[0], body)
