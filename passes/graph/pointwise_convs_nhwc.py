"""`pointwise-convs-nhwc`: a bottleneck model's float 1x1 convs read and write NHWC, the KxK
convs between them read NCHW and write NHWC, so no tensor but the model's ends is transposed.

onnx__Conv.html computes in NCHW. As W @ X (passes/lowering/rules/conv.py) a 1x1 conv's B reads
x a channel plane per k step: up to 2048 streams, and at 16 threads each thread's share of a
plane is a few pixels of a cache line. In NHWC it is C[pixel, channel] = A @ W^T with A x's
contiguous pixel rows and the output channels in the vector lanes (ResNet-50's 1x1 convs at 16
threads on the 16-core Xeon, per kernel: 0.16-0.20 ms in NCHW, 0.10-0.11 in NHWC). A KxK conv
is faster reading NCHW (its window A broadcasts a few pixels of one channel plane from a line or
two; in NHWC a channel's taps are a float in each of 3 x (mr + 2) lines: 0.23 -> 0.30 ms), and
its implicit GEMM computes the same C[pixel, channel], which it stores transposed into NCHW
planes only because its reader wants NCHW. So here each conv reads the layout it is fast in and
writes the layout its reader wants (benchmarks/README.md, "1x1 convs in NHWC, KxK convs
between layouts"):

1. Every float 1x1 conv (one group, constant weight, static shapes) becomes NHWC in and out
   (`dlc.layout = "NHWC"`, x [N, H, W, C], w unchanged, y [N, OH, OW, CO]) between a Transpose
   of x to NHWC and one of y back; sink-transposes moves the Transposes down through the ops
   between convs (Relu, a residual Add) until pairs meet and cancel.
2. A Transpose left next to a conv, with only Relu/Clip/HardSwish or a SiLU between (each read
   only by the next), is absorbed
   into the conv's store (`dlc.out_layout`): an NHWC conv whose result is transposed to NCHW
   (a 1x1 reduce feeding a 3x3 conv) writes NCHW, a KxK conv whose result is transposed to NHWC
   (a 3x3 conv feeding a 1x1 expand) writes NHWC. A global average pool of a Transpose to NCHW
   becomes a ReduceMean of the NHWC tensor; where the map has other readers (a squeeze-and-
   excitation block's Mul by its gate), the Transposes sink once more, past the broadcast gate,
   and the block runs in NHWC (MobileNetV3, EfficientNet).
3. A function's rewrite is kept only if the Transposes it leaves move at most MAX_TRANSPOSED_SHARE of the
   elements its NHWC convs read and write: ResNet-50 keeps two (after the stem's MaxPool and
   before the GlobalAveragePool); a SqueezeNet fire module, whose Concat of a 1x1 and a 3x3 conv
   feeds the next 1x1 conv, would transpose every Concat, and stays in NCHW.

A float depthwise conv (group = C = CO) goes to NHWC with the 1x1 convs around it, its channels
in the vector lanes (a mobile block's expand, depthwise and project convs then pass NHWC on
without a Transpose); a function with any other grouped conv keeps NCHW. onnxruntime's NCHWc transformer
(onnxruntime/core/optimizer/nchwc_transformer.cc) likewise converts the convs it can and keeps
its reorders between layouts few. CPU only (the driver runs it for the cpu target).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType, f32
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from dialects.onnx import OPS, OnnxOp, WeightOp
from passes.graph.qlinear_conv_nhwc import transpose_before, weight_before
from passes.graph.sink_transposes import sink_transposes
from passes.graph.utils.constants import producer
from passes.graph.utils.layouts import NCHW, NHWC, TO_NCHW, TO_NHWC, conv_layouts
from passes.lowering.rules.conv import MIN_GEMM_ROWS

# Ops between a conv and a Transpose that the Transpose is absorbed through: the conv's GEMM
# applies them as it stores (elementwise, one operand, the result's size).
ABSORBED_THROUGH = frozenset({"Relu", "Clip", "HardSwish"})
# A function's rewrite is kept when the Transposes it adds move at most this share of the
# elements its NHWC convs read and write: ResNet-50 0.017 (two Transposes for 36 convs), against
# ResNet-18 0.67 (three 1x1 shortcut convs, each input transposed) and SqueezeNet 0.56.
MAX_TRANSPOSED_SHARE = 0.25


def _static_f32(value: SSAValue) -> bool:
    shape = value.type.get_shape() if isinstance(value.type, TensorType) else []
    return len(shape) == 4 and value.type.element_type == f32 and all(d > 0 for d in shape)


def _float_conv(op: Operation) -> bool:
    """A float 2-D Conv of one group, a constant 4-D weight, static shapes and at least
    MIN_GEMM_ROWS output channels (fewer run as direct loops in NCHW), not yet rewritten."""
    if not (isinstance(op, OnnxOp) and op.onnx_type == "Conv" and op.attr("group", 1) == 1
            and conv_layouts(op) == (NCHW, NCHW)):
        return False
    x, w, y = op.operands[0], op.operands[1], op.results[0]
    return (_static_f32(x) and _static_f32(y) and isinstance(w.owner, WeightOp) and _static_f32(w)
            and y.type.get_shape()[1] >= MIN_GEMM_ROWS)


def _depthwise(op: Operation) -> bool:
    """A float 2-D depthwise Conv (one filter per channel, group = C = CO), a constant weight and
    static shapes, not yet rewritten: in NHWC its channels fill the vector lanes
    (passes/lowering/rules/conv.py `_nhwc_depthwise_conv`)."""
    if not (isinstance(op, OnnxOp) and op.onnx_type == "Conv" and conv_layouts(op) == (NCHW, NCHW)):
        return False
    x, w, y = op.operands[0], op.operands[1], op.results[0]
    if not (_static_f32(x) and _static_f32(y) and isinstance(w.owner, WeightOp) and _static_f32(w)):
        return False
    channels = x.type.get_shape()[1]
    return op.attr("group", 1) == channels > 1 and list(w.type.get_shape()[:2]) == [channels, 1] \
        and y.type.get_shape()[1] == channels


def _pointwise(op: Operation) -> bool:
    return _float_conv(op) and all(k == 1 for k in op.operands[1].type.get_shape()[2:])


def _windowed(op: Operation) -> bool:
    """A KxK float conv: the implicit GEMM that reads an NCHW window and can store either layout."""
    return _float_conv(op) and any(k > 1 for k in op.operands[1].type.get_shape()[2:])


def _permuted(value_type: TensorType, perm: list[int]) -> TensorType:
    shape = value_type.get_shape()
    return TensorType(value_type.element_type, [shape[p] for p in perm])


def _to_nhwc(op: OnnxOp) -> OnnxOp:
    """Step 1 for one 1x1 conv: NHWC in and out, between Transposes."""
    name = op.node_name or "conv"
    x = op.operands[0]
    inner = producer(x, "Transpose")
    if inner is not None and list(inner.attr("perm", [])) == TO_NCHW:
        x_nhwc = inner.operands[0]  # an earlier rewritten conv's NHWC result, read directly
    else:  # one Transpose of x for all the convs reading it (a block's first conv and its shortcut)
        earlier = next((u.operation for u in x.uses if isinstance(u.operation, OnnxOp)
                        and u.operation.onnx_type == "Transpose" and list(u.operation.attr("perm", [])) == TO_NHWC
                        and u.operation.parent is op.parent and u.operation.is_before_in_block(op)), None)
        x_nhwc = (earlier or transpose_before(op, x, TO_NHWC, f"{name}.to_nhwc")).results[0]
    y = op.results[0]
    new = OPS["Conv"].create(operands=[x_nhwc, *op.operands[1:]],
                             attributes={**op.attributes, "dlc.layout": StringAttr(NHWC)},
                             result_types=[_permuted(y.type, TO_NHWC)])
    Rewriter.insert_op(new, InsertPoint.before(op))
    back = transpose_before(op, new.results[0], TO_NCHW, f"{name}.to_nchw")
    y.replace_all_uses_with(back.results[0])
    Rewriter.erase_op(op)
    if inner is not None and not inner.results[0].uses:
        Rewriter.erase_op(inner)
    return new


def _absorb(transpose: OnnxOp) -> bool:
    """Step 2 for one Transpose: into the store of the conv it transposes, if it can be."""
    perm = list(transpose.attr("perm", []))
    if perm not in (TO_NCHW, TO_NHWC):
        return False
    chain, value, uses = [], transpose.operands[0], 1
    while True:  # up through single-use Relu/Clip/HardSwish, or a SiLU, to the conv
        owner = value.owner
        if len(list(value.uses)) != uses or not isinstance(owner, OnnxOp):
            return False
        if owner.onnx_type == "Conv":
            break
        silu = _silu_of(owner)
        if silu is not None:  # x * Sigmoid(x): x read by both
            chain += [owner, silu.owner]
            value, uses = silu.owner.operands[0], 2
            continue
        if owner.onnx_type not in ABSORBED_THROUGH:
            return False
        chain.append(owner)
        value, uses = owner.operands[0], 1
    conv = owner
    x_layout, y_layout = conv_layouts(conv)
    if perm == TO_NCHW and (x_layout, y_layout) == (NHWC, NHWC) and conv.attr("group", 1) == 1:
        out_layout = NCHW
    elif perm == TO_NHWC and (x_layout, y_layout) == (NCHW, NCHW) and _windowed(conv):
        out_layout = NHWC
    else:
        return False
    # Rebuilt in the new layout: the conv, then each op after it on the new ops' results.
    rebuilt: dict[SSAValue, SSAValue] = {}
    for op in [conv, *reversed(chain)]:
        operands = [rebuilt.get(operand, operand) for operand in op.operands]
        attributes = dict(op.attributes)
        if op is conv:
            attributes["dlc.out_layout"] = StringAttr(out_layout)
        new = OPS[op.onnx_type].create(operands=operands, attributes=attributes,
                                       result_types=[_permuted(op.results[0].type, perm)])
        Rewriter.insert_op(new, InsertPoint.before(transpose))
        rebuilt[op.results[0]] = value = new.results[0]
    transpose.results[0].replace_all_uses_with(value)
    Rewriter.erase_op(transpose)
    for op in [*chain, conv]:  # each read only by those after it, now erased
        Rewriter.erase_op(op)
    return True


def _silu_of(op: OnnxOp) -> SSAValue | None:
    """The Sigmoid result of `op` when `op` is a SiLU's Mul, x * Sigmoid(x) (either order), the
    Sigmoid read by this Mul alone."""
    if op.onnx_type != "Mul" or len(op.operands) != 2:
        return None
    for gate, x in (op.operands, reversed(op.operands)):
        sigmoid = gate.owner
        if (isinstance(sigmoid, OnnxOp) and sigmoid.onnx_type == "Sigmoid" and sigmoid.operands[0] == x
                and len(list(gate.uses)) == 1):
            return gate
    return None


def _global_average(op: Operation) -> bool:
    """A GlobalAveragePool, or an AveragePool whose unpadded window is the whole map (ResNet-50's
    7x7 one): the mean of each channel."""
    if not isinstance(op, OnnxOp) or op.onnx_type not in ("GlobalAveragePool", "AveragePool"):
        return False
    if op.onnx_type == "GlobalAveragePool":
        return True
    spatial = op.operands[0].type.get_shape()[2:]
    return (list(op.attr("kernel_shape", [])) == list(spatial) and not any(op.attr("pads", [0]))
            and op.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID") and not op.attr("ceil_mode", 0)
            and all(d == 1 for d in op.results[0].type.get_shape()[2:]))


def _pool_in_nhwc(transpose: OnnxOp, trial: bool) -> bool:
    """Step 2 for a Transpose to NCHW that global average pools read: each becomes a ReduceMean
    over the NHWC tensor's H and W (channels in the vector lanes) and a Transpose of its
    [N, 1, 1, C] result (ResNet-50's last 2048 x 7x7 map: 0.076 -> 0.015 ms on a core). The
    Transpose goes when nothing else reads it; a squeeze-and-excitation block's Mul, which also
    reads it, then takes it on (sink-transposes, its gate broadcast). A `trial`'s function lies
    outside the module, whose weights the ReduceMean's axes would join: there it takes none."""
    users = [use.operation for use in transpose.results[0].uses]
    pools = [user for user in users if _global_average(user)]
    if list(transpose.attr("perm", [])) != TO_NCHW or not pools:
        return False
    x = transpose.operands[0]
    n, _, _, c = x.type.get_shape()
    for pool in pools:
        name = pool.node_name or "pool"
        axes = [] if trial else [weight_before(pool, f"{name}.axes", np.array([1, 2], np.int64))]
        mean = OPS["ReduceMean"].create(operands=[x, *axes], result_types=[TensorType(f32, [n, 1, 1, c])],
                                        attributes={"onnx_node_name": StringAttr(f"{name}.nhwc")})
        Rewriter.insert_op(mean, InsertPoint.before(pool))
        back = transpose_before(pool, mean.results[0], TO_NCHW, f"{name}.to_nchw")
        pool.results[0].replace_all_uses_with(back.results[0])
        Rewriter.erase_op(pool)
    if not transpose.results[0].uses:
        Rewriter.erase_op(transpose)
    return True


def _rewrite(function: Operation, trial: bool = False) -> tuple[int, int]:
    """Steps 1 and 2 on one function: (elements its NHWC convs read and write, elements the
    Transposes it adds move)."""
    convs = [o for o in function.walk() if isinstance(o, OnnxOp) and o.onnx_type == "Conv"]
    if any(conv.attr("group", 1) != 1 and not _depthwise(conv) for conv in convs):
        return 0, 0
    before = _transposed_elements(function)
    rewritten = [_to_nhwc(conv) for conv in convs if _pointwise(conv) or _depthwise(conv)]  # producers first
    if not rewritten:
        return 0, 0
    sink_transposes(function)
    for op in list(function.walk()):
        if isinstance(op, OnnxOp) and op.onnx_type == "Transpose" and op.parent is not None:
            _absorb(op) or _pool_in_nhwc(op, trial)
    # With the pools' Transposes gone, a squeeze-and-excitation block's Mul takes its map's on
    # (its gate transposed alone) until it meets the project conv's.
    if sink_transposes(function):
        for op in list(function.walk()):
            if isinstance(op, OnnxOp) and op.onnx_type == "Transpose" and op.parent is not None:
                _absorb(op)
    converted = sum(int(np.prod(c.operands[0].type.get_shape())) + int(np.prod(c.results[0].type.get_shape()))
                    for c in rewritten)
    return converted, _transposed_elements(function) - before


def _transposed_elements(function: Operation) -> int:
    return sum(int(np.prod(t.results[0].type.get_shape())) for t in function.walk()
               if isinstance(t, OnnxOp) and t.onnx_type == "Transpose")


@dataclass(frozen=True)
class PointwiseConvsNhwcPass(ModulePass):
    """1x1 and depthwise float convs in NHWC, KxK convs reading NCHW and writing their reader's layout."""

    name = "pointwise-convs-nhwc"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for function in [f for f in op.ops if isinstance(f, func.FuncOp)]:
            converted, moved = _rewrite(function.clone(), trial=True)
            if converted and moved <= MAX_TRANSPOSED_SHARE * converted:
                _rewrite(function)
