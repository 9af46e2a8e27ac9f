"""`fold-constants`: evaluate at compile time each ONNX op whose operands are all weights.

Each result becomes a new weight, computed by onnx.reference (the ONNX spec in
numpy, dialects/onnx_eval.py). The importer folds the model it reads; this pass
folds what later graph passes expose. Ops that are not Pure (random ones) stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, NoneType
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.traits import Pure

from dialects.onnx import OnnxOp
from dialects.onnx_eval import check_foldable, evaluate
from dialects.types import numpy_dtype
from passes.graph.utils.constants import add_weight, constant_of


def _constant_inputs(op: OnnxOp) -> list[np.ndarray | None] | None:
    """The operands' arrays (None for an absent input), or None if one is not a weight."""
    inputs = []
    for operand in op.operands:
        array = None if isinstance(operand.type, NoneType) else constant_of(operand)
        if array is None and not isinstance(operand.type, NoneType):
            return None
        inputs.append(array)
    return inputs


def _fold(op: OnnxOp, inputs: list[np.ndarray | None]) -> list[np.ndarray] | None:
    """The results cast to the IR's element types, or None where evaluation fails or disagrees."""
    check_foldable(op.describe(), op.onnx_type, inputs)  # a CompileError, not a silent non-fold
    try:
        arrays = evaluate(op, inputs)
    except Exception:  # noqa: BLE001 - onnx.reference raises anything; the lowering reports it precisely
        return None
    folded = []
    for array, result in zip(arrays, op.results):
        if array.shape != tuple(result.type.get_shape()):
            return None
        folded.append(array.astype(numpy_dtype(result.type.element_type), copy=False))
    return folded


class FoldConstantOp(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: OnnxOp, rewriter: PatternRewriter) -> None:
        if not op.has_trait(Pure) or not op.results:
            return
        inputs = _constant_inputs(op)
        folded = None if inputs is None else _fold(op, inputs)
        if folded is None:
            return
        hint = op.node_name or op.onnx_type.lower()
        names = [hint] if len(folded) == 1 else [f"{hint}.{i}" for i in range(len(folded))]
        weights = [add_weight(rewriter, op, name, array) for name, array in zip(names, folded)]
        rewriter.replace(op, [], weights)


@dataclass(frozen=True)
class FoldConstantsPass(ModulePass):
    """Evaluate ops whose operands are all weights at compile time into new weights."""

    name = "fold-constants"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FoldConstantOp()).rewrite_module(op)
