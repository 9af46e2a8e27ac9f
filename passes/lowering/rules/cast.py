"""ONNX Cast and CastLike between float32/64, int8-64 and bool tensors.

Mirrors https://onnx.ai/onnx/operators/onnx__Cast.html at opset 21: float -> int truncates
toward zero, anything -> bool is `!= 0` (NaN is true), int -> narrower int wraps. Unsigned
integers convert by value (zero-extended); float -> unsigned goes through int64 and wraps, as
onnxruntime's static_cast does on x86 (fptoui of an out-of-range value would be poison).
`saturate` only concerns float8 targets, which are rejected like float16, bfloat16 and strings.
"""

from __future__ import annotations

from xdsl.dialects import arith
from xdsl.dialects.builtin import i1, i64

from dialects.diagnostics import UnsupportedError
from dialects.types import is_float
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import (
    BOOL,
    FLOAT,
    INT,
    UINT,
    element_kind,
    is_unsigned,
    require_kinds,
)


@lowers("Cast", "CastLike")
def lower_cast(kb, op, ins, outs) -> None:
    require_kinds(op, [ins[0], outs[0]], (FLOAT, INT, UINT, BOOL))
    to = outs[0].type.element_type
    kinds = [element_kind(v.type.element_type) for v in (ins[0], outs[0])]
    for value, kind in zip((ins[0], outs[0]), kinds):
        if kind == UINT and _width(value.type.element_type) == 64 and ins[0].type != outs[0].type:
            raise UnsupportedError(f"{op.describe()}: Cast from or to uint64 is not supported on cpu",
                                   "cast through int64 in the model instead")
    unsigned = UINT in kinds
    kb.elementwise(ins[:1], outs[0], lambda b, a: [(_convert_unsigned if unsigned else _convert)(b, a[0], to)])


def _width(type) -> int:
    return type.width.data


def _convert_unsigned(b, x, to):
    """A conversion from or to an unsigned integer type, by value through int64 (which holds
    every uint8-32 and int value exactly)."""
    if x.type == to:
        return x
    if to == i1:
        return b.compare("ne", x, b.const(0, x.type))
    if is_float(x.type):
        wide = b.math(arith.FPToSIOp, x, i64)
    elif _width(x.type) == 64:
        return b.math(arith.SIToFPOp, x, to) if is_float(to) else b.math(arith.TruncIOp, x, to)
    else:
        wide = b.math(arith.ExtUIOp if x.type == i1 or is_unsigned(x) else arith.ExtSIOp, x, i64)
    if is_float(to):
        return b.math(arith.SIToFPOp, wide, to)
    return wide if to == i64 else b.math(arith.TruncIOp, wide, to)


def _convert(b, x, to):
    if to == i1 and is_float(x.type):
        # Body.cast picks cmpi for float -> i1 (it dispatches on the i1 result type).
        return b.compare("ne", x, b.const(0.0, x.type))
    return b.cast(x, to)
