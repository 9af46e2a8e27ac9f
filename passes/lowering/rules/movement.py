"""Data-movement ONNX operators (Transpose, Concat) and the copy used for outputs.

Mirrors the ONNX spec: Transpose permutes axes (default: reversed), Concat
joins inputs along `axis` (negative counts from the end).
"""

from __future__ import annotations

from dialects.diagnostics import UnsupportedError
from passes.lowering.linalg_builder import PARALLEL, affine_map, dim, identity_map
from passes.lowering.rules import lowers


def copy_into(kb, source, output) -> None:
    if source.type.get_shape() != output.type.get_shape():
        raise UnsupportedError(f"internal: copy between shapes {source.type} and {output.type}")
    kb.copy(source, output)


@lowers("Transpose")
def lower_transpose(kb, op, ins, outs) -> None:
    rank = len(ins[0].type.get_shape())
    perm = op.attr("perm") or list(reversed(range(rank)))
    if sorted(perm) != list(range(rank)):
        raise UnsupportedError(f"{op.describe()}: perm {perm} is not a permutation of 0..{rank - 1}")
    # Loop over the output; input index of axis perm[i] is output loop i.
    in_exprs = [None] * rank
    for out_axis, in_axis in enumerate(perm):
        in_exprs[in_axis] = dim(out_axis)
    kb.generic([ins[0]], [outs[0]], [affine_map(rank, in_exprs), identity_map(rank)],
               [PARALLEL] * rank, lambda b, a: [a[0]])


@lowers("Concat")
def lower_concat(kb, op, ins, outs) -> None:
    rank = len(outs[0].type.get_shape())
    axis = op.attr("axis")
    axis = axis + rank if axis < 0 else axis
    offset = 0
    for source in ins:
        size = source.type.get_shape()[axis]
        if size:
            exprs = [dim(i) + offset if i == axis else dim(i) for i in range(rank)]
            kb.copy(source, outs[0], affine_map(rank, exprs))
        offset += size
