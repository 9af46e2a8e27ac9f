"""ONNX Cast and CastLike between float32/64, int8-64 and bool tensors.

Mirrors https://onnx.ai/onnx/operators/onnx__Cast.html at opset 21: float -> int truncates
toward zero, anything -> bool is `!= 0` (NaN is true), int -> narrower int wraps.
`saturate` only concerns float8 targets, which are rejected like float16, bfloat16 and strings.
"""

from __future__ import annotations

from xdsl.dialects.builtin import i1

from dialects.types import is_float
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import BOOL, FLOAT, INT, require_kinds


@lowers("Cast", "CastLike")
def lower_cast(kb, op, ins, outs) -> None:
    require_kinds(op, [ins[0], outs[0]], (FLOAT, INT, BOOL))
    to = outs[0].type.element_type
    kb.elementwise(ins[:1], outs[0], lambda b, a: [_convert(b, a[0], to)])


def _convert(b, x, to):
    if to == i1 and is_float(x.type):
        # Body.cast picks cmpi for float -> i1 (it dispatches on the i1 result type).
        return b.compare("ne", x, b.const(0.0, x.type))
    return b.cast(x, to)
