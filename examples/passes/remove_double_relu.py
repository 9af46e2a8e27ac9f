"""Example custom pass: Relu(Relu(x)) -> Relu(x), since Relu is idempotent (docs/writing-passes.md)."""

from dataclasses import dataclass

from dlc.dialects.onnx import OPS
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriteWalker, RewritePattern, op_type_rewrite_pattern

ReluOp = OPS["Relu"]


class RemoveDoubleRelu(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: ReluOp, rewriter) -> None:
        if isinstance(op.operands[0].owner, ReluOp):  # the outer Relu repeats the inner one's work
            rewriter.replace(op, [], [op.operands[0]])


@dataclass(frozen=True)
class RemoveDoubleReluPass(ModulePass):
    """Replace Relu(Relu(x)) by Relu(x)."""

    name = "remove-double-relu"

    def apply(self, ctx, op: ModuleOp) -> None:
        PatternRewriteWalker(RemoveDoubleRelu()).rewrite_module(op)
