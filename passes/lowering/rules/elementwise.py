"""Elementwise ONNX operators (numpy broadcasting) -> one linalg.generic each.

Mirrors the ONNX spec's elementwise ops (https://onnx.ai/onnx/operators/); the
scalar formulas follow the spec's definitions (e.g. Sigmoid = 1 / (1 + exp(-x))).
"""

from __future__ import annotations

from xdsl.dialects import math

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers

_BINARY = {
    "Add": lambda b, x, y: b.add(x, y),
    "Sub": lambda b, x, y: b.sub(x, y),
    "Mul": lambda b, x, y: b.mul(x, y),
    "Div": lambda b, x, y: b.div(x, y),
}

_UNARY = {
    "Relu": lambda b, x, op: b.max(x, b.const(0)),
    "Sigmoid": lambda b, x, op: b.sigmoid(x),
    "Tanh": lambda b, x, op: b.tanh(x),
    "Exp": lambda b, x, op: b.exp(x),
    "Sqrt": lambda b, x, op: b.sqrt(x),
    "Neg": lambda b, x, op: b.neg(x),
    "Abs": lambda b, x, op: b.math(math.AbsFOp, x) if b.float else b.max(x, b.neg(x)),
    "Log": lambda b, x, op: b.math(math.LogOp, x),
    "Reciprocal": lambda b, x, op: b.div(b.const(1.0), x),
    "LeakyRelu": lambda b, x, op: b.select(b.cmp("olt", x, b.const(0.0)),
                                           b.mul(x, b.const(op.attr("alpha", 0.01))), x),
}


def _require_float(op, kb_out) -> None:
    from dialects.types import is_float

    if not is_float(kb_out.type.element_type):
        raise UnsupportedError(f"{op.describe()}: {op.onnx_type} on {kb_out.type.element_type} tensors "
                               "is not supported on cpu (float only)")


@lowers(*_BINARY)
def lower_binary(kb, op, ins, outs) -> None:
    formula = _BINARY[op.onnx_type]
    kb.elementwise(ins, outs[0], lambda b, a: [formula(b, a[0], a[1])])


@lowers(*_UNARY)
def lower_unary(kb, op, ins, outs) -> None:
    if op.onnx_type not in ("Relu", "Neg", "Abs"):
        _require_float(op, outs[0])
    formula = _UNARY[op.onnx_type]
    kb.elementwise(ins[:1], outs[0], lambda b, a: [formula(b, a[0], op)])
