"""Tensors computed from their positions alone: EyeLike and the window functions HannWindow,
HammingWindow and BlackmanWindow.

Mirrors https://onnx.ai/onnx/operators/onnx__EyeLike.html (opset 9: k, dtype; only the
input's shape is read) and onnx__HannWindow.html, onnx__HammingWindow.html,
onnx__BlackmanWindow.html (opset 17: periodic, output_datatype; input 'size'). A window is
sum_j a_j cos(2 pi j n / N) with N = size when periodic, size - 1 otherwise, evaluated in
float64 and rounded once, as onnx's reference does. dlc compiles static shapes, so the
output's length is the size; a run-time 'size' other than it fails the run with a DlcError
(the loop runs over the static length only).
"""

from __future__ import annotations

import math as pymath

from xdsl.dialects import math
from xdsl.dialects.builtin import IndexType, f64

from dialects.diagnostics import CompileError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import BOOL, FLOAT, INT, require_kinds
from passes.lowering.rules.movement import constant_input
from passes.lowering.utils.linalg_builder import PARALLEL, identity_map
from passes.lowering.utils.runtime_checks import error_code, flag_if, status_word


@lowers("EyeLike")
def lower_eye_like(kb, op, ins, outs) -> None:
    out = outs[0]
    require_kinds(op, [out], (FLOAT, INT, BOOL))
    k = int(op.attr("k", 0))

    def body(b, args):
        i = b.on(IndexType())
        # column - row == k, in signed index arithmetic
        on_diagonal = i.cmp("eq", i.sub(b.index(1), b.index(0)), i.const(k))
        return [b.select(on_diagonal, b.const(1), b.const(0))]

    kb.generic([], [out], [identity_map(2)], [PARALLEL] * 2, body)


_WINDOWS = {  # op -> coefficients a_j of cos(2 pi j n / N)
    "HannWindow": (0.5, -0.5),
    "HammingWindow": (25 / 46, -(1 - 25 / 46)),
    "BlackmanWindow": (0.42, -0.5, 0.08),
}


@lowers(*_WINDOWS)
def lower_window(kb, op, ins, outs) -> None:
    out = outs[0]
    require_kinds(op, [out], (FLOAT, INT))
    length = out.type.get_shape()[0]
    constant = constant_input(op, 0, required=False)
    if constant is not None and int(constant.reshape(-1)[0]) != length:
        raise CompileError(f"{op.describe()}: input 'size' is {int(constant.reshape(-1)[0])} but the "
                           f"output has {length} elements", "fix the model's size or output shape")
    check = None
    if constant is None:
        check = (status_word(kb), error_code(
            op, f"{op.describe()}: input 'size' is not {length}, the output length this model "
                "was compiled for (dlc compiles static shapes)"))
    period = length if op.attr("periodic", 1) else length - 1
    coefficients = _WINDOWS[op.onnx_type]

    def body(b, args):
        if check is not None:
            size = b.load(ins[0], [b.const(0, IndexType())] * len(ins[0].type.get_shape()))
            s = b.on(size.type)
            flag_if(b, check[0], s.compare("ne", size, s.const(length)), check[1])
        d = b.on(f64)
        n = b.index_to(b.index(0), f64)
        step = 2 * pymath.pi / period if period > 0 else 0.0
        total = d.const(coefficients[0])
        for j, a in enumerate(coefficients[1:], start=1):
            angle = d.mul(n, d.const(step * j))
            total = d.add(total, d.mul(d.const(a), d.math(math.CosOp, angle)))
        return [b.cast(total, out.type.element_type)]

    kb.generic([], [out], [identity_map(1)], [PARALLEL], body)
