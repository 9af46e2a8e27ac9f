"""`fuse-matmul-add`: MatMul(A, B) + C of 2-D A and B becomes Gemm(A, B, C).

Mirrors the ONNX Gemm spec (https://onnx.ai/onnx/operators/onnx__Gemm.html):
Y = A @ B + C with C unidirectionally broadcastable to (M, N), so the bias is
added as the contraction's initial value. Batched (3-D and up) MatMul + bias is
left as it is: Gemm is 2-D only, and the lowering adds the bias in its own kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from dialects.onnx import OPS
from passes.graph.utils.constants import only_user, producer, replace_with

AddOp = OPS["Add"]


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """ONNX unidirectional broadcasting: `shape` stretches to `target`, never the reverse."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


class FuseMatMulAdd(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: AddOp, rewriter: PatternRewriter) -> None:
        for product, bias in (op.operands, reversed(op.operands)):
            matmul = producer(product, "MatMul")
            if matmul is None or only_user(product) is not op or product.type != op.results[0].type:
                continue
            a, b = matmul.operands
            out_shape = tuple(product.type.get_shape())
            if (len(a.type.get_shape()) == 2 and len(b.type.get_shape()) == 2
                    and _broadcasts_to(tuple(bias.type.get_shape()), out_shape)):
                replace_with(rewriter, op, [a, b, bias], matmul.attributes, onnx_type="Gemm")
                rewriter.erase(matmul)
                return


@dataclass(frozen=True)
class FuseMatMulAddPass(ModulePass):
    """Fuse 2-D MatMul followed by a bias Add into one Gemm."""

    name = "fuse-matmul-add"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FuseMatMulAdd()).rewrite_module(op)
