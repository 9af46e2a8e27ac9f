"""`fuse-qdq-contractions`: DequantizeLinear -> Conv/MatMul -> QuantizeLinear becomes one
QLinearConv/QLinearMatMul, an integer kernel (int32 accumulation, requantization in its store).

Mirrors onnxruntime's QDQ selectors (onnxruntime/core/optimizer/qdq_transformer), so dlc
computes what onnxruntime's optimised session computes: x and y quantized per tensor, the
weight a constant quantized per tensor or per output channel (or, for a MatMul of two
activations, any tensor quantized per tensor), a Conv bias an int32 constant
dequantized with scale x_scale * w_scale (what quantize_static writes). Where a pattern is left
in float, the contraction says why in `dlc.quantized` (as fuse-kernels records `dlc.apart`).
Runs before fold-constants, which would turn the weights' DequantizeLinear into float weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from dialects.onnx import OPS
from dialects.types import numpy_dtype
from passes.graph.utils.constants import constant_of, is_absent, only_user, producer

QuantizeOp = OPS["QuantizeLinear"]
_TARGET = {"Conv": "QLinearConv", "MatMul": "QLinearMatMul"}
_BYTES = (np.dtype(np.int8), np.dtype(np.uint8))


def _is_scalar(value) -> bool:
    return int(np.prod(value.type.get_shape())) == 1


def _dequantized(value, what: str):
    """The DequantizeLinear writing `value` as (input, scale, zero point), or the reason not."""
    dq = producer(value, "DequantizeLinear")
    if dq is None:
        return None, f"{what} is not the output of a DequantizeLinear"
    if is_absent(dq, 2):
        return None, f"{what}'s DequantizeLinear has no zero point"
    if dq.attr("block_size", 0):
        return None, f"{what} is quantized by blocks"
    return dq, ""


def _why_not(op, quantize) -> str | tuple:
    """The operands of the integer op, or the reason the pattern stays in float."""
    if is_absent(quantize, 2) or not (_is_scalar(quantize.operands[1]) and _is_scalar(quantize.operands[2])):
        return "y is not quantized per tensor with a zero point"
    if numpy_dtype(quantize.results[0].type.element_type) not in _BYTES:
        return "y is not quantized to 8 bits"
    x, reason = _dequantized(op.operands[0], "the data input")
    if x is None:
        return reason
    if not (_is_scalar(x.operands[1]) and _is_scalar(x.operands[2])):
        return "the data input is not quantized per tensor"
    w, reason = _dequantized(op.operands[1], "the weight")
    if w is None:
        return reason
    for value, what in ((x.operands[0], "the data input"), (w.operands[0], "the weight")):
        if numpy_dtype(value.type.element_type) not in _BYTES:
            return f"{what} is not quantized to 8 bits"
    w_shape = w.operands[0].type.get_shape()
    channel_axis = 0 if op.onnx_type == "Conv" else len(w_shape) - 1
    if constant_of(w.operands[0]) is None and (op.onnx_type == "Conv" or not _is_scalar(w.operands[1])):
        # A MatMul of two activations (attention's Q.K^T, P.V) is quantized per tensor.
        return "the weight is computed at run time and not quantized per tensor"
    if op.onnx_type == "MatMul" and len(w_shape) != 2 and not _is_scalar(w.operands[1]):
        return "the weight of the MatMul is quantized per column but is not a matrix"
    if not _is_scalar(w.operands[1]) and w.attr("axis", 1) % len(w_shape) != channel_axis:
        return "the weight is not quantized per tensor or per output channel"
    operands = [x.operands[0], x.operands[1], x.operands[2], w.operands[0], w.operands[1],
                w.operands[2], quantize.operands[1], quantize.operands[2]]
    if op.onnx_type == "Conv" and not is_absent(op, 2):
        bias = _int32_bias(op.operands[2], x.operands[1], w.operands[1])
        if isinstance(bias, str):
            return bias
        operands.append(bias)
    return tuple(operands)


def _int32_bias(value, x_scale, w_scale):
    """The int32 bias of a Conv, when it is DequantizeLinear(int32, x_scale * w_scale, 0)."""
    dq = producer(value, "DequantizeLinear")
    reason = "the bias is not an int32 constant dequantized with scale x_scale * w_scale"
    if dq is None:
        return reason
    arrays = [constant_of(v) for v in (dq.operands[0], dq.operands[1], x_scale, w_scale)]
    zero = None if is_absent(dq, 2) else constant_of(dq.operands[2])
    if any(a is None for a in arrays) or arrays[0].dtype != np.int32 or (zero is not None and zero.any()):
        return reason
    bias_scale, xs, ws = (np.asarray(a, np.float32).reshape(-1) for a in arrays[1:])
    if not np.array_equal(np.broadcast_to(bias_scale, ws.shape), (xs * ws).astype(np.float32)):
        return reason
    return dq.operands[0]


class FuseQdqContraction(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, quantize: QuantizeOp, rewriter: PatternRewriter) -> None:
        op = quantize.operands[0].owner
        if getattr(op, "onnx_type", None) not in ("Conv", "MatMul", "Gemm") or "dlc.quantized" in op.attributes:
            return
        if only_user(op.results[0]) is not quantize:
            found = "its float result has other users"
        elif op.onnx_type == "Gemm":
            found = "Gemm has no integer form in dlc yet (QGemm is not an ONNX operator)"
        else:
            found = _why_not(op, quantize)
        if isinstance(found, str):
            op.attributes["dlc.quantized"] = StringAttr(f"left in float: {found}")
            rewriter.handle_operation_modification(op)
            return
        attributes = dict(op.attributes)
        attributes["dlc.quantized"] = StringAttr("integer kernel: DequantizeLinear -> "
                                                 f"{op.onnx_type} -> QuantizeLinear")
        fused = OPS[_TARGET[op.onnx_type]].create(operands=list(found), attributes=attributes,
                                                  result_types=[quantize.results[0].type])
        rewriter.replace_op(quantize, fused)
        rewriter.erase_op(op)


@dataclass(frozen=True)
class FuseQdqContractionsPass(ModulePass):
    """DequantizeLinear -> Conv/MatMul -> QuantizeLinear into QLinearConv/QLinearMatMul."""

    name = "fuse-qdq-contractions"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FuseQdqContraction()).rewrite_module(op)
