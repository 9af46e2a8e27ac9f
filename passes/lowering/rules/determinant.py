"""Det: the determinant of each square matrix in the last two axes.

Mirrors https://onnx.ai/onnx/operators/onnx__Det.html (opset 11; 22 widens the types). As
onnxruntime (Eigen's partial-pivoting LU), Gaussian elimination with partial pivoting: at each
step the row with the largest |pivot| moves up (each swap negates the determinant), and the
determinant is the product of the pivots; a zero pivot column gives 0, never a division by 0.
The elimination is unrolled into the loop body of one matrix (n^3/3 multiply-adds), so the
order is bounded; the batch is a parallel loop.
"""

from __future__ import annotations

from xdsl.dialects import math
from xdsl.dialects.builtin import IndexType

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, require_kinds
from passes.lowering.rules.movement import is_empty
from passes.lowering.utils.linalg_builder import PARALLEL, identity_map

MAX_ORDER = 8  # an unrolled 8x8 elimination is ~1,000 scalar ops; larger ones would bloat code


@lowers("Det")
def lower_det(kb, op, ins, outs) -> None:
    x, out = ins[0], outs[0]
    require_kinds(op, [x], (FLOAT,))
    shape = x.type.get_shape()
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise UnsupportedError(f"{op.describe()}: input 'X' has shape {list(shape)}; expected "
                               "[..., M, M] (square matrices in the last two axes)")
    n = shape[-1]
    if n > MAX_ORDER:
        raise UnsupportedError(f"{op.describe()}: {n}x{n} matrices; dlc unrolls the elimination "
                               f"for orders up to {MAX_ORDER}")
    if is_empty(out):
        return
    batch = len(shape) - 2

    def body(b, args):
        i = b.on(IndexType())
        lead = [b.index(d) for d in range(batch)]
        a = [[b.load(x, [*lead, i.const(r), i.const(c)]) for c in range(n)] for r in range(n)]
        zero = b.const(0.0)
        det = b.const(1.0)
        for k in range(n):
            for r in range(k + 1, n):  # bring the largest |a[., k]| up, one conditional swap each
                swap = b.compare("gt", b.math(math.AbsFOp, a[r][k]), b.math(math.AbsFOp, a[k][k]))
                upper = [b.select(swap, lo, hi) for hi, lo in zip(a[k][k:], a[r][k:])]
                lower = [b.select(swap, hi, lo) for hi, lo in zip(a[k][k:], a[r][k:])]
                a[k][k:], a[r][k:] = upper, lower
                det = b.select(swap, b.neg(det), det)
            pivot = a[k][k]
            det = b.mul(det, pivot)
            singular = b.compare("eq", pivot, zero)
            for r in range(k + 1, n):
                factor = b.select(singular, zero, b.div(a[r][k], pivot))
                for c in range(k + 1, n):
                    a[r][c] = b.sub(a[r][c], b.mul(factor, a[k][c]))
        return [det]

    kb.generic([], [out], [identity_map(batch)], [PARALLEL] * batch, body)
