"""AffineGrid: the sampling grid of an affine transform, theta applied to the normalised
coordinates of every output pixel (2-D and 3-D).

Mirrors https://onnx.ai/onnx/operators/onnx__AffineGrid.html (opset 20): grid[n, ..., k] =
sum_j theta[n, k, j] * base_j, base = (x, y[, z], 1) with x from the last spatial axis; a
coordinate i of an axis of size L is 2i/(L-1) - 1 with align_corners (-1 when L = 1), else
(2i+1)/L - 1. (-1 for L = 1 is onnx's reference and torch's; onnxruntime 1.32 gives +1 there.)
The output's static shape stands for the 'size' input, which a run checks (its
channel count is free: the grid does not depend on it).
"""

from __future__ import annotations

from xdsl.dialects.builtin import IndexType

from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, require_kinds
from passes.lowering.rules.movement import is_empty, require_shape_values
from passes.lowering.utils.linalg_builder import PARALLEL, identity_map


@lowers("AffineGrid")
def lower_affine_grid(kb, op, ins, outs) -> None:
    theta, size = ins
    out = outs[0]
    require_kinds(op, [theta], (FLOAT,))
    shape = list(out.type.get_shape())  # [N, *spatial, S]
    spatial = shape[1:-1]
    rank = len(shape)
    require_shape_values(kb, op, 1, "size", size, [shape[0], None, *spatial])
    if is_empty(out):
        return
    align = bool(op.attr("align_corners", 0))

    def body(b, args):
        i = b.on(IndexType())
        k = b.index(rank - 1)
        total = b.load(theta, [b.index(0), k, i.const(len(spatial))])  # the 1 of base
        for j in range(len(spatial)):
            axis = len(spatial) - j  # x from the last spatial axis
            length = spatial[axis - 1]
            at = b.index_to(b.index(axis), b.type)
            if align:
                coordinate = b.const(-1.0) if length == 1 else \
                    b.sub(b.mul(at, b.const(2.0 / (length - 1))), b.const(1.0))
            else:
                coordinate = b.sub(b.div(b.add(b.mul(at, b.const(2.0)), b.const(1.0)), b.const(float(length))),
                                   b.const(1.0))
            total = b.add(total, b.mul(b.load(theta, [b.index(0), k, i.const(j)]), coordinate))
        return [total]

    kb.generic([], [out], [identity_map(rank)], [PARALLEL] * rank, body)
