"""`remove-identity`: replace each ONNX Identity by its input.

Mirrors https://onnx.ai/onnx/operators/onnx__Identity.html (output = input).
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

IdentityOp = OPS["Identity"]


class RemoveIdentity(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: IdentityOp, rewriter: PatternRewriter) -> None:
        if op.operands[0].type == op.results[0].type:
            rewriter.replace(op, [], [op.operands[0]])


@dataclass(frozen=True)
class RemoveIdentityPass(ModulePass):
    """Replace each Identity op by its input."""

    name = "remove-identity"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(RemoveIdentity()).rewrite_module(op)
