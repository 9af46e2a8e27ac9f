"""`fold-scale-into-conv`: fold Mul/Add by a per-output-channel constant into Conv/Gemm weights.

Conv(x, w, b) * s = Conv(x, w * s, b * s) and Conv(x, w, b) + a = Conv(x, w, b + a)
when s and a hold one value per output channel (axis 1, see
https://onnx.ai/onnx/operators/onnx__Conv.html); likewise for the columns of a
2-D Gemm. It fires only when the constant broadcasts along axis 1 alone and the
result keeps the Conv's type, so the fold is exact up to float rounding.
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

from dialects.onnx import OnnxOp
from passes.graph.utils.channel_affine import channel_vector, fold_channel_affine, foldable_producer
from passes.graph.utils.constants import constant_of


class FoldScale(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: OnnxOp, rewriter: PatternRewriter) -> None:
        if op.onnx_type not in ("Mul", "Add"):
            return
        for value, other in (op.operands, reversed(op.operands)):
            producer = foldable_producer(value, op)
            constant = constant_of(other)
            if producer is None or producer.onnx_type == "MatMul" or constant is None:
                continue
            same_dtype = constant.dtype == constant_of(producer.operands[1]).dtype
            if value.type != op.results[0].type or not same_dtype:
                continue
            vector = channel_vector(constant, tuple(value.type.get_shape()))
            if vector is not None:
                scale, shift = (vector, None) if op.onnx_type == "Mul" else (None, vector)
                fold_channel_affine(rewriter, producer, op, scale, shift)
                return


@dataclass(frozen=True)
class FoldScaleIntoConvPass(ModulePass):
    """Fold Mul/Add by a per-output-channel constant after Conv/Gemm into its weights and bias."""

    name = "fold-scale-into-conv"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FoldScale()).rewrite_module(op)
