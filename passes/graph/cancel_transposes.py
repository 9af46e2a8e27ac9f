"""`cancel-transposes`: compose Transpose chains, and drop those that permute nothing.

Mirrors https://onnx.ai/onnx/operators/onnx__Transpose.html: output dim i is
input dim perm[i] (perm defaults to the reversed dims), so Transpose(Transpose(x,
p1), p2) is Transpose(x, q) with q[i] = p1[p2[i]], the identity when q is.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, ModuleOp, i64
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from dialects.onnx import OPS
from passes.graph.utils.constants import producer, replace_with

TransposeOp = OPS["Transpose"]


def _perm(op: TransposeOp) -> list[int]:
    rank = len(op.operands[0].type.get_shape())
    return list(op.attr("perm", list(reversed(range(rank)))))


class CancelTransposes(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: TransposeOp, rewriter: PatternRewriter) -> None:
        source, perm = op.operands[0], _perm(op)
        inner = producer(source, "Transpose")
        if inner is not None:
            source, inner_perm = inner.operands[0], _perm(inner)
            perm = [inner_perm[p] for p in perm]
        if perm == list(range(len(perm))):
            rewriter.replace(op, [], [source])
        elif inner is not None:
            attributes = {**op.attributes, "perm": DenseArrayBase.from_list(i64, perm)}
            replace_with(rewriter, op, [source], attributes)
        else:
            return
        if inner is not None and not inner.results[0].uses:
            rewriter.erase(inner)


@dataclass(frozen=True)
class CancelTransposesPass(ModulePass):
    """Compose Transpose(Transpose(x)) into one Transpose; remove identity Transposes."""

    name = "cancel-transposes"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(CancelTransposes()).rewrite_module(op)
