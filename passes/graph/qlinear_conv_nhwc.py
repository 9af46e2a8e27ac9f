"""`qlinear-conv-nhwc`: QLinearConvs that run on the integer GEMM read and write NHWC, so
consecutive ones pass their bytes on without transposes, and their patches are rows of C bytes.

onnx__QLinearConv.html computes in NCHW. The integer GEMM (passes/lowering/rules/quantize.py)
computes C[pixel, channel], which is NHWC; a patch row of an NHWC x is KH runs of KW*C
contiguous bytes where an NCHW x gives KH*KW*C single bytes. So each QLinearConv that the
integer GEMM takes (`integer_conv_refusal`, the lowering's own test) becomes one with
`dlc.layout = "NHWC"`: x [N, H, W, C], w [CO, KH, KW, C] (a new weight), y [N, OH, OW, CO],
between Transpose(x, [0, 2, 3, 1]) and Transpose(y, [0, 3, 1, 2]). A conv whose x is such a
Transpose of an NHWC result reads that result directly; dce removes the Transposes left without
users. onnxruntime's NHWC transformer does the same to its QLinearConvs. A GEMM conv whose
result is only transposed back writes NCHW itself (`dlc.y_layout = "NCHW"`, by tiles). A depthwise conv
(`depthwise_refusal`: group = C, one filter per channel) goes to NHWC too, its weight as
[1, KH, KW, C]: the lowering's depthwise kernel runs along C. Any other grouped conv goes to
NHWC with its weight as [CO, KH, KW, C/G]: the lowering runs an integer GEMM per group.

A BatchNormalization between such convs (a QDQ model quantized without onnxruntime's
quant_pre_process keeps it: DequantizeLinear -> BatchNormalization -> QuantizeLinear after every
conv) would hold the Transposes apart, since onnx__BatchNormalization.html fixes its channel
axis at 1. One with constant parameters, reading a Transpose to NCHW (or a per-tensor
DequantizeLinear of one), becomes (x - mean) * factor + B in NHWC, factor = scale / sqrt(var +
epsilon) as the BatchNormalization lowering computes it (the same float32 operations, so the
same bits): Sub, Mul and Add by [C] constants on the last axis, which fuse into one kernel.
The Transposes then sink on and cancel (MobileNetV2 int8 had 69 Transpose kernels, 28% of its
kernel time on one Zen 4 core).

A nonzero weight zero point is folded here when w - w_zero fits int8 (a uint8 weight with zero
point 128, say): the new weight is w - w_zero with zero point 0, the same products in int32.

CPU only (the driver runs it for the cpu target): npu-sim lowers QLinearConv in NCHW.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, ModuleOp, StringAttr, TensorType, f32, i64
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from dialects.onnx import OPS, OnnxOp, WeightOp
from dialects.onnx_eval import evaluate
from dialects.types import element_type_for, numpy_dtype
from dialects.weights import weights_of
from passes.graph.sink_transposes import sink_transposes
from passes.graph.utils.constants import constant_of, is_absent, producer
from passes.graph.utils.layouts import TO_NCHW, TO_NHWC
from passes.lowering.rules.quantize import NHWC, depthwise_refusal, integer_conv_refusal


def _centered_weight(w: np.ndarray, w_zero: np.ndarray) -> np.ndarray | None:
    """w - w_zero (per tensor or per output channel) as int8, or None when it does not fit."""
    zero = w_zero.astype(np.int64).reshape([-1] + [1] * (w.ndim - 1))
    centered = w.astype(np.int64) - zero
    if centered.min(initial=0) < -128 or centered.max(initial=0) > 127:
        return None
    return centered.astype(np.int8)


def _rewrite_plan(op: OnnxOp):
    """(the int8 weight, centered, in OIHW) when `op` takes the integer GEMM in NHWC, else None."""
    if op.attributes.get("dlc.layout") is not None or len(op.operands) < 8:
        return None
    x, w_value = op.operands[0], op.operands[3]
    constants = [constant_of(op.operands[i]) for i in (1, 2, 3, 4, 5, 6, 7)]
    if any(c is None for c in constants):
        return None
    x_scale, x_zero, w, w_scale, w_zero, _, _ = constants
    bias = np.zeros(1, np.int32) if is_absent(op, 8) else constant_of(op.operands[8])
    if x_scale.size != 1 or w.ndim != 4 or w_scale.size not in (1, w.shape[0]) or w_zero.size not in (1, w.shape[0]):
        return None
    if numpy_dtype(op.results[0].type.element_type) not in (np.dtype(np.uint8), np.dtype(np.int8)):
        return None
    centered = _centered_weight(w, w_zero)
    if centered is None:
        return None
    y_shape, x_shape = op.results[0].type.get_shape(), x.type.get_shape()
    group = op.attr("group", 1)
    if group != 1 and depthwise_refusal(numpy_dtype(x.type.element_type), x_shape, w_value.type.get_shape(),
                                        y_shape, x_shape[1] if len(x_shape) == 4 else 0, group, centered,
                                        x_zero, bias) is None:
        return centered
    if integer_conv_refusal(numpy_dtype(x.type.element_type), x_shape, w_value.type.get_shape(),
                            y_shape, group, centered, np.zeros(1, np.int8), x_zero, bias,
                            one_image=False) is not None:
        return None
    return centered


def _depthwise(op: OnnxOp) -> bool:
    """A depthwise conv (one filter per channel): its weight [C, 1, KH, KW]."""
    w_shape = op.operands[3].type.get_shape()
    return op.attr("group", 1) != 1 and w_shape[1] == 1 and w_shape[0] == op.attr("group", 1)


def transpose_before(before, value, perm: list[int], name: str):
    """Transpose(value, perm) inserted before `before`, named `name`."""
    shape = value.type.get_shape()
    result = TensorType(value.type.element_type, [shape[p] for p in perm])
    op = OPS["Transpose"].create(operands=[value], result_types=[result],
                                 attributes={"perm": DenseArrayBase.from_list(i64, perm),
                                             "onnx_node_name": StringAttr(name)})
    Rewriter.insert_op(op, InsertPoint.before(before))
    return op


def weight_before(before, hint: str, array: np.ndarray):
    """A new weight holding `array`, its `onnx.weight` op inserted before `before`."""
    name = weights_of(before.get_toplevel_object()).add(hint, array)
    op = WeightOp(name, TensorType(element_type_for(array.dtype), array.shape))
    Rewriter.insert_op(op, InsertPoint.before(before))
    return op.result


def _to_nhwc(op: OnnxOp, centered: np.ndarray) -> OnnxOp:
    name = op.node_name or "qlinearconv"
    x = op.operands[0]
    inner = producer(x, "Transpose")
    if inner is not None and list(inner.attr("perm", [])) == TO_NCHW:
        x_nhwc = inner.operands[0]  # the NHWC result of an earlier conv, read directly
    else:
        x_nhwc = transpose_before(op, x, TO_NHWC, f"{name}.to_nhwc").results[0]
    if not _depthwise(op):
        w = weight_before(op, f"{name}.w_ohwi", np.ascontiguousarray(centered.transpose(0, 2, 3, 1)))
    else:  # depthwise: [1, KH, KW, C], a tap's C weights contiguous as x's C bytes are
        w = weight_before(op, f"{name}.w_1hwc", np.ascontiguousarray(centered.transpose(1, 2, 3, 0)))
    w_zero = weight_before(op, f"{name}.w_zero0", np.zeros(op.operands[5].type.get_shape(), np.int8))
    operands = list(op.operands)
    operands[0], operands[3], operands[5] = x_nhwc, w, w_zero
    y = op.results[0]
    y_shape = y.type.get_shape()
    attributes = {**op.attributes, "dlc.layout": StringAttr(NHWC)}
    new = OPS["QLinearConv"].create(operands=operands, attributes=attributes, result_types=[
        TensorType(y.type.element_type, [y_shape[p] for p in TO_NHWC])])
    Rewriter.insert_op(new, InsertPoint.before(op))
    back = OPS["Transpose"].create(operands=[new.results[0]], result_types=[y.type],
                                   attributes={"perm": DenseArrayBase.from_list(i64, TO_NCHW),
                                               "onnx_node_name": StringAttr(f"{name}.to_nchw")})
    Rewriter.insert_op(back, InsertPoint.after(new))
    y.replace_all_uses_with(back.results[0])
    Rewriter.erase_op(op)
    if inner is not None and not inner.results[0].uses:
        Rewriter.erase_op(inner)
    return new


@dataclass(frozen=True)
class QlinearConvNhwcPass(ModulePass):
    """Integer-GEMM QLinearConvs in NHWC, with the Transposes between two of them removed."""

    name = "qlinear-conv-nhwc"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        convs = [o for o in op.walk() if isinstance(o, OnnxOp) and o.onnx_type == "QLinearConv"]
        rewritten = []
        for conv in convs:  # in program order: a conv's producer is rewritten first
            centered = _rewrite_plan(conv)
            if centered is not None:
                rewritten.append(_to_nhwc(conv, centered))
        if rewritten:  # the float ops between them (a residual Add, a BatchNormalization) in NHWC too
            sink_transposes(op)
            if any([_batchnorm_to_nhwc(bn) for bn in op.walk()
                    if isinstance(bn, OnnxOp) and bn.onnx_type == "BatchNormalization"]):
                sink_transposes(op)
        for conv in rewritten:
            _nchw_result(conv)


def _folded(value) -> np.ndarray | None:
    """A weight, or the DequantizeLinear of weights that fold-constants (after this pass) would
    make one: quantize_static quantizes a BatchNormalization's scale too."""
    array = constant_of(value)
    op = producer(value, "DequantizeLinear")
    if array is not None or op is None:
        return array
    inputs = [None if is_absent(op, i) else constant_of(op.operands[i]) for i in range(len(op.operands))]
    if any(a is None for i, a in enumerate(inputs) if not is_absent(op, i)):
        return None
    try:
        return np.asarray(evaluate(op, inputs)[0], np.float32)  # as fold-constants computes it
    except Exception:  # noqa: BLE001 - onnx.reference raises anything; the lowering reports it
        return None


def _single_use(value) -> bool:
    return len(list(value.uses)) == 1


def _batchnorm_to_nhwc(bn: OnnxOp) -> bool:
    """BatchNormalization(Transpose(y, TO_NCHW)), or of DequantizeLinear(Transpose(y, TO_NCHW))
    per tensor, with constant float32 parameters: as Sub/Mul/Add on y's NHWC layout and a
    Transpose to NCHW after (which sink_transposes moves on). Whether it was rewritten."""
    if len(bn.results) != 1 or bn.attr("training_mode", 0) or len(bn.operands) != 5:
        return False
    x = bn.operands[0]
    shape = x.type.get_shape() if isinstance(x.type, TensorType) else []
    params = [_folded(v) for v in bn.operands[1:]]
    if len(shape) != 4 or x.type.element_type != f32 or any(
            p is None or p.dtype != np.float32 or p.size != shape[1] for p in params):
        return False
    dequantize = producer(x, "DequantizeLinear")
    inner = dequantize.operands[0] if dequantize is not None else x
    transpose = producer(inner, "Transpose")
    if transpose is None or list(transpose.attr("perm", [])) != TO_NCHW or not _single_use(inner):
        return False
    if dequantize is not None:
        quantization = [constant_of(dequantize.operands[i]) for i in range(1, len(dequantize.operands))
                        if not is_absent(dequantize, i)]
        if not _single_use(x) or any(q is None or q.size != 1 for q in quantization):
            return False  # a per-axis or computed scale (or zero point) stays in NCHW
    name = bn.node_name or "batchnorm"
    scale, bias, mean, var = (p.reshape(-1) for p in params)
    factor = scale / np.sqrt(var + np.float32(bn.attr("epsilon", 1e-5)))  # as lower_batch_norm
    value = transpose.operands[0]
    nhwc = TensorType(f32, value.type.get_shape())
    if dequantize is not None:
        new = OPS["DequantizeLinear"].create(operands=[value, *dequantize.operands[1:]], result_types=[nhwc],
                                             attributes=dict(dequantize.attributes))
        Rewriter.insert_op(new, InsertPoint.before(bn))
        value = new.results[0]
    for kind, constant, hint in (("Sub", mean, "mean"), ("Mul", factor, "factor"), ("Add", bias, "bias")):
        operand = weight_before(bn, f"{name}.{hint}_nhwc", np.ascontiguousarray(constant, np.float32))
        new = OPS[kind].create(operands=[value, operand], result_types=[nhwc],
                               attributes={"onnx_node_name": StringAttr(f"{name}.{kind.lower()}_nhwc")})
        Rewriter.insert_op(new, InsertPoint.before(bn))
        value = new.results[0]
    back = transpose_before(bn, value, TO_NCHW, f"{name}.to_nchw")
    bn.results[0].replace_all_uses_with(back.results[0])
    Rewriter.erase_op(bn)
    if dequantize is not None:
        Rewriter.erase_op(dequantize)
    if not transpose.results[0].uses:
        Rewriter.erase_op(transpose)
    return True


def _nchw_result(conv: OnnxOp) -> None:
    """A GEMM conv whose NHWC result only Transposes back to NCHW writes NCHW itself
    (`dlc.y_layout`): its lowering transposes by tiles, faster than a Transpose kernel."""
    users = [use.operation for use in conv.results[0].uses]
    if conv.attr("group", 1) != 1 or not users or any(
            getattr(u, "onnx_type", None) != "Transpose" or list(u.attr("perm", [])) != TO_NCHW for u in users):
        return
    attributes = {**conv.attributes, "dlc.y_layout": StringAttr("NCHW")}
    new = OPS["QLinearConv"].create(operands=list(conv.operands), attributes=attributes,
                                    result_types=[users[0].results[0].type])
    Rewriter.insert_op(new, InsertPoint.before(conv))
    for user in users:
        user.results[0].replace_all_uses_with(new.results[0])
        Rewriter.erase_op(user)
    Rewriter.erase_op(conv)
