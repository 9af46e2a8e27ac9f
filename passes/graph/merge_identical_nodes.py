"""`merge-identical-nodes`: common-subexpression elimination for the onnx dialect.

xDSL's `cse` compares every attribute, and each imported op carries its own
`onnx_node_name`, so it never merges two ONNX nodes. This pass merges ops of one
type on the same operands with the same attributes apart from that name, and
`onnx.weight` ops whose arrays are equal (same type and bytes). Random ops are
not Pure and stay apart.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter
from xdsl.traits import Pure

from dialects.onnx import NoneOp, OnnxOp, WeightOp
from passes.graph.utils.constants import constant_of


def _weight_key(op: WeightOp, hash_content: bool) -> tuple:
    array = constant_of(op.result) if hash_content else None
    # A digest, not the bytes, so the table does not copy every weight.
    content = op.weight_name if array is None else hashlib.blake2b(np.ascontiguousarray(array)).digest()
    return ("weight", op.result.type, content)


def _key(op: Operation) -> tuple | None:
    """What two ops must share to compute the same values; None for ops never merged."""
    if isinstance(op, NoneOp):
        return ("none",)
    if not isinstance(op, OnnxOp) or not op.has_trait(Pure) or op.regions:
        return None
    attributes = tuple(sorted((k, v) for k, v in op.attributes.items() if k != "onnx_node_name"))
    return (op.name, tuple(op.operands), attributes, tuple(op.result_types))


def merge_identical(block: Block) -> None:
    # Only weights that share a type can be equal: hash just those (VGG-19 holds 548 MB).
    weight_types = Counter(op.result.type for op in block.ops if isinstance(op, WeightOp))
    first: dict[tuple, Operation] = {}
    for op in list(block.ops):
        if isinstance(op, WeightOp):
            key = _weight_key(op, weight_types[op.result.type] > 1)
        else:
            key = _key(op)
        if key is None:
            continue
        if key in first:
            Rewriter.replace_op(op, [], list(first[key].results))
        else:
            first[key] = op


@dataclass(frozen=True)
class MergeIdenticalNodesPass(ModulePass):
    """Merge ONNX ops that compute the same values (CSE ignoring node names; equal weights)."""

    name = "merge-identical-nodes"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for function in op.walk():
            if isinstance(function, func.FuncOp) and function.body.blocks:
                merge_identical(function.body.block)
