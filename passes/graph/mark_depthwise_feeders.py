"""`mark-depthwise-feeders`: mark the 1x1 convs whose output a depthwise conv reads.

An inverted-residual block (MobileNetV2/V3, EfficientNet) expands its input with a 1x1 conv,
activates it and hands it to a depthwise conv. Lowered to threads, the 1x1 conv (W @ X) split
its pixels over the cores and the depthwise conv its channels, so half of every core's input
lay in another core's cache. The marked conv (`dlc.feeds_depthwise`) splits its output
channels instead (passes/lowering/rules/conv.py `_conv_as_gemm`), as the depthwise conv
does, and each core reads back the channels it wrote. Nothing else changes: a mark, not a
rewrite. Only ops between the two that touch each element alone (activations, SiLU's
Sigmoid and Mul) may stand between them, and every path out of the conv must end in
depthwise convs.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from dialects.onnx import OnnxOp

FEEDS_DEPTHWISE = "dlc.feeds_depthwise"
# Ops that keep an element where it is: what may stand between the conv and its depthwise readers.
ELEMENTWISE = frozenset({"Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Mul"})
MOST_STEPS = 4  # Conv -> Sigmoid -> Mul -> depthwise Conv is three


def is_pointwise_conv(op: Operation) -> bool:
    """A 2-D conv with a 1x1 kernel, unit strides, no padding and one group."""
    if not isinstance(op, OnnxOp) or op.onnx_type != "Conv" or op.attr("group", 1) != 1:
        return False
    w_shape = op.operands[1].type.get_shape()
    return (len(w_shape) == 4 and tuple(w_shape[2:]) == (1, 1) and set(op.attr("strides", [1])) == {1}
            and not any(op.attr("pads", [0])) and op.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID"))


def is_depthwise_conv(op: Operation) -> bool:
    """A conv with one input channel per group and more than one group."""
    if not isinstance(op, OnnxOp) or op.onnx_type != "Conv":
        return False
    groups = op.attr("group", 1)
    return groups > 1 and op.operands[1].type.get_shape()[1] == 1


def feeds_only_depthwise(value: SSAValue) -> bool:
    """Whether every path of uses from `value` reaches a depthwise conv's input x within
    MOST_STEPS elementwise ops, and no other op reads any of them."""
    found, frontier = False, [value]
    for _ in range(MOST_STEPS):
        following = []
        for current in frontier:
            for use in current.uses:
                user = use.operation
                if is_depthwise_conv(user) and use.index == 0:
                    found = True
                elif isinstance(user, OnnxOp) and user.onnx_type in ELEMENTWISE and len(user.results) == 1:
                    following.append(user.results[0])
                else:
                    return False
        if not following:
            return found
        frontier = list(dict.fromkeys(following))
    return False


@dataclass(frozen=True)
class MarkDepthwiseFeedersPass(ModulePass):
    """Mark 1x1 convs read only by depthwise convs (through elementwise ops) `dlc.feeds_depthwise`."""

    name = "mark-depthwise-feeders"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for conv in op.walk():
            if is_pointwise_conv(conv) and feeds_only_depthwise(conv.results[0]):
                conv.attributes[FEEDS_DEPTHWISE] = UnitAttr()
