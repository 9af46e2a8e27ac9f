"""`remove-dropout`: replace inference-mode ONNX Dropout by its input.

Mirrors https://onnx.ai/onnx/operators/onnx__Dropout.html: when `training_mode`
is absent or false, output = data and `ratio` is ignored. A Dropout in training
mode, one whose mode is computed at run time, or one whose mask is used stays.
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
from passes.graph.utils.constants import constant_of, is_absent

DropoutOp = OPS["Dropout"]


def _is_inference(op: DropoutOp) -> bool:
    if is_absent(op, 2):
        return True
    mode = constant_of(op.operands[2])
    return mode is not None and not bool(mode.reshape(-1)[0])


class RemoveDropout(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: DropoutOp, rewriter: PatternRewriter) -> None:
        mask_used = any(result.uses for result in op.results[1:])
        if _is_inference(op) and not mask_used and op.operands[0].type == op.results[0].type:
            rewriter.replace(op, [], [op.operands[0], *[None] * (len(op.results) - 1)])


@dataclass(frozen=True)
class RemoveDropoutPass(ModulePass):
    """Replace inference-mode Dropout ops (mask unused) by their input."""

    name = "remove-dropout"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(RemoveDropout()).rewrite_module(op)
