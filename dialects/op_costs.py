"""Work estimates of ONNX ops: floating-point operations (a multiply-add counts 2).

Used for profiles (achieved GFLOP/s), rooflines and placement summaries. Elementwise
and reduction ops count one operation per input element, as profilers usually do. The integer
contractions (QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger) count 2 per multiply-add
as their float forms do, so an int8 conv's GFLOP/s reads as int8 ops per second.
"""

from __future__ import annotations

from math import prod

from dialects.op_classes import CONTRACTION, op_class


def _shape(value) -> list[int]:
    return list(value.type.get_shape()) if hasattr(value.type, "get_shape") else []


def flops(op) -> int:
    """FLOPs of one onnx-dialect op, from its static operand and result types."""
    kind = op.onnx_type
    outputs = sum(prod(_shape(r)) for r in op.results)
    if kind == "Conv":
        weight = _shape(op.operands[1])  # [Cout, Cin/group, k...]
        return 2 * prod(_shape(op.results[0])) * prod(weight[1:])
    if kind == "ConvTranspose":
        weight = _shape(op.operands[1])  # [Cin, Cout/group, k...]
        return 2 * prod(_shape(op.operands[0])) * prod(weight[1:])
    if kind in ("QLinearConv", "ConvInteger"):
        # The weight is [CO, C/group, k...], or after qlinear-conv-nhwc [CO, KH, KW, C/group]
        # ([1, KH, KW, C] depthwise): each of the N*pixels*CO outputs takes prod(w)/CO MACs.
        weight = _shape(op.operands[3 if kind == "QLinearConv" else 1])
        y = _shape(op.results[0])
        layout = op.attributes.get("dlc.y_layout") or op.attributes.get("dlc.layout")
        channels = y[-1] if getattr(layout, "data", "NCHW") == "NHWC" else y[1] if len(y) > 1 else 1
        return 2 * prod(y) * prod(weight) // max(channels, 1)
    if kind in ("MatMul", "Gemm", "QLinearMatMul", "MatMulInteger"):
        a = _shape(op.operands[0])
        k = a[0] if kind == "Gemm" and op.attr("transA", 0) else a[-1]
        return 2 * prod(_shape(op.results[0])) * k
    if op_class(kind) == CONTRACTION:
        return 2 * outputs
    inputs = sum(prod(_shape(v)) for v in op.operands if hasattr(v.type, "get_shape"))
    return max(inputs, outputs)
