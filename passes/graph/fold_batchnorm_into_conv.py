"""`fold-batchnorm-into-conv`: fold inference BatchNormalization into the Conv, Gemm or MatMul before it.

Mirrors https://onnx.ai/onnx/operators/onnx__BatchNormalization.html: in
inference, y = (x - mean) * s + beta with s = scale / sqrt(var + epsilon), one
value per channel (axis 1); so w' = w * s per output channel and
b' = (b - mean) * s + beta, and the BatchNormalization disappears.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
from passes.graph.utils.channel_affine import fold_channel_affine, foldable_producer
from passes.graph.utils.constants import constant_of

BatchNormOp = OPS["BatchNormalization"]


def _scale_and_shift(bn: BatchNormOp) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, beta - mean * s) in float64; None unless in inference mode with constant parameters."""
    params = [constant_of(value) for value in bn.operands[1:5]]
    if bn.attr("training_mode", 0) or len(bn.results) != 1 or any(p is None for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    scale = gamma / np.sqrt(var + bn.attr("epsilon", 1e-5))
    return scale, beta - mean * scale


class FoldBatchNorm(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: BatchNormOp, rewriter: PatternRewriter) -> None:
        producer = foldable_producer(op.operands[0], op)
        affine = _scale_and_shift(op) if producer is not None else None
        if affine is not None:
            fold_channel_affine(rewriter, producer, op, *affine)


@dataclass(frozen=True)
class FoldBatchnormIntoConvPass(ModulePass):
    """Fold inference BatchNormalization into the weights and bias of the Conv/Gemm/MatMul before it."""

    name = "fold-batchnorm-into-conv"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FoldBatchNorm()).rewrite_module(op)
