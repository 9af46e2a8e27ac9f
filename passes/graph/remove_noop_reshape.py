"""`remove-noop-reshape`: drop shape-only ops that keep the type, and merge Reshape chains.

Mirrors the ONNX Reshape/Flatten/Squeeze/Unsqueeze specs: they only reinterpret
the shape of a row-major buffer, so one whose output type equals its input type
is the identity, and Reshape(view(x)) equals Reshape(x) to the same static type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from dialects.onnx import OnnxOp
from passes.graph.utils.constants import add_weight, constant_of, replace_with

SHAPE_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


def _is_shape_op(op: Operation | None) -> bool:
    return isinstance(op, OnnxOp) and op.onnx_type in SHAPE_OPS


class RemoveNoopShapeOp(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: OnnxOp, rewriter: PatternRewriter) -> None:
        if _is_shape_op(op) and op.operands[0].type == op.results[0].type:
            rewriter.replace(op, [], [op.operands[0]])


class MergeReshapeChain(RewritePattern):
    """Reshape(view(x), shape) -> Reshape(x, shape): the inner view's shape is never seen."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: OnnxOp, rewriter: PatternRewriter) -> None:
        inner = op.operands[0].owner
        if op.onnx_type != "Reshape" or not _is_shape_op(inner):
            return
        shape = constant_of(op.operands[1])
        if shape is not None and (op.attr("allowzero", 0) or not (shape == 0).any()):
            new_shape = op.operands[1]
        else:
            # 0 copies a dimension of the (now different) input: spell out the static shape.
            static = np.array(op.results[0].type.get_shape(), dtype=np.int64)
            new_shape = add_weight(rewriter, op, f"{op.node_name or 'reshape'}.shape", static)
        replace_with(rewriter, op, [inner.operands[0], new_shape])
        if not inner.results[0].uses:
            rewriter.erase(inner)


@dataclass(frozen=True)
class RemoveNoopReshapePass(ModulePass):
    """Remove Reshape/Flatten/Squeeze/Unsqueeze ops that keep their input type; merge Reshape chains."""

    name = "remove-noop-reshape"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        patterns = GreedyRewritePatternApplier([RemoveNoopShapeOp(), MergeReshapeChain()])
        PatternRewriteWalker(patterns).rewrite_module(op)
