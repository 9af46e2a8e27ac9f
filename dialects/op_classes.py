"""Operator classes for fusion, as TVM's operator patterns classify them.

ELEMENTWISE: out[i] = f(in0[bcast(i)], ...), one scalar formula per element.
INJECTIVE: each output element copies one input element (Transpose, Concat, ...).
REDUCTION: combines many input elements per output (Reduce*, Softmax, norms, pooling).
CONTRACTION: multiply-accumulate over a shared dim (MatMul, Gemm, Conv).
OPAQUE: anything else (fusion treats it as a wall).
"""

from __future__ import annotations

ELEMENTWISE, INJECTIVE, REDUCTION, CONTRACTION, OPAQUE, VIEW = (
    "elementwise", "injective", "reduction", "contraction", "opaque", "view")

_ELEMENTWISE = {
    "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos",
    "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Erf", "Sigmoid", "Tanh",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Softplus",
    "Softsign", "Mish", "Gelu", "ThresholdedRelu", "Shrink", "Clip", "Add", "Sub", "Mul", "Div", "Pow",
    "Mod", "Max", "Min", "Sum", "Mean", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
    "And", "Or", "Xor", "Not", "Where", "IsNaN", "IsInf", "Cast", "CastLike", "BitShift",
    "BatchNormalization",  # inference: a per-channel affine map
    # Per tensor, one formula per element that fused kernels inline (passes/lowering/rules/
    # quantize.py): an int8 model's DequantizeLinear -> float ops -> QuantizeLinear is one loop.
    "QuantizeLinear", "DequantizeLinear",
}
_INJECTIVE = {"Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Expand",
              "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "Trilu", "OneHot", "Range", "ConstantOfShape"}
_REDUCTION = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "Softmax",
              "LogSoftmax", "Hardmax", "LayerNormalization", "GroupNormalization",
              "InstanceNormalization", "LpNormalization", "GlobalAveragePool", "GlobalMaxPool",
              "MaxPool", "AveragePool", "LpPool", "LRN"}
_CONTRACTION = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"}
_VIEW = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}


def op_class(onnx_type: str) -> str:
    """The fusion class of an ONNX op type."""
    if onnx_type in _ELEMENTWISE:
        return ELEMENTWISE
    if onnx_type in _CONTRACTION:
        return CONTRACTION
    if onnx_type in _REDUCTION:
        return REDUCTION
    if onnx_type in _INJECTIVE:
        return INJECTIVE
    if onnx_type in _VIEW:
        return VIEW
    return OPAQUE
