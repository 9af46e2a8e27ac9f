"""InstanceNormalization, GroupNormalization (opset 21: scale and bias per channel), LRN and
LpNormalization.

Mirrors https://onnx.ai/onnx/operators/onnx__InstanceNormalization.html,
onnx__GroupNormalization.html, onnx__LRN.html and onnx__LpNormalization.html. Instance normalisation is group
normalisation with one channel per group; both reuse LayerNormalization's statistics.
"""

from __future__ import annotations

from math import prod

from xdsl.dialects import math
from xdsl.dialects.builtin import MemRefType
from xdsl.ir import SSAValue

from dialects.diagnostics import UnsupportedError
from passes.lowering.kernels_to_linalg import reshape_view
from passes.lowering.rules import lowers
from passes.lowering.rules.conv import pad_into
from passes.lowering.rules.movement import normalize_axis
from passes.lowering.rules.normalization import mean_and_inv_std
from passes.lowering.rules.reduction import keepdims_shape, reduce_into, require_float, update_in_place
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, cst, dim, identity_map


def _group_norm(kb, op, x: SSAValue, scale: SSAValue, bias: SSAValue, y: SSAValue,
                groups: int) -> None:
    """y = (x - mean) * inv_std * scale[c] + bias[c], statistics per (image, group).

    x [N, C, *spatial] is seen as [N, G, C/G, S] so a group's values are the last two dims.
    """
    require_float(op, x)
    shape = x.type.get_shape()
    if len(shape) < 2 or groups <= 0 or shape[1] % groups:
        raise UnsupportedError(f"{op.describe()}: {groups} groups do not divide the channels of "
                               f"the input {x.type}")
    n, channels = shape[0], shape[1]
    per_group, pixels = channels // groups, prod(shape[2:])
    grouped = [n, groups, per_group, pixels]
    xv = reshape_view(kb.builder, x, grouped)
    stats_type = MemRefType(y.type.element_type, [n, groups, 1, 1])
    mean, inv_std = kb.scratch(stats_type), kb.scratch(stats_type)
    mean_and_inv_std(kb, xv, [2, 3], mean, inv_std, op.attr("epsilon", 1e-5))
    channel = affine_map(4, [dim(1) * per_group + dim(2)])
    stats = affine_map(4, [dim(0), dim(1), cst(0), cst(0)])

    def normalise(b, a):
        return [b.add(b.mul(b.mul(b.sub(a[0], a[1]), a[2]), a[3]), a[4])]

    kb.generic([xv, mean, inv_std, scale, bias], [reshape_view(kb.builder, y, grouped)],
               [identity_map(4), stats, stats, channel, channel, identity_map(4)],
               [PARALLEL] * 4, normalise)


@lowers("InstanceNormalization")
def lower_instance_norm(kb, op, ins, outs) -> None:
    x, scale, bias = ins
    _group_norm(kb, op, x, scale, bias, outs[0], x.type.get_shape()[1])


@lowers("GroupNormalization")
def lower_group_norm(kb, op, ins, outs) -> None:
    x, scale, bias = ins
    if op.attr("stash_type", 1) != 1:
        raise UnsupportedError(f"{op.describe()}: stash_type {op.attr('stash_type')} is not "
                               "supported (statistics are computed in float32)")
    channels = x.type.get_shape()[1]
    if tuple(scale.type.get_shape()) != (channels,):
        raise UnsupportedError(f"{op.describe()}: expected scale and bias of {channels} values "
                               f"(one per channel, opset 21), got {scale.type}")
    _group_norm(kb, op, x, scale, bias, outs[0], op.attr("num_groups"))


@lowers("LRN")
def lower_lrn(kb, op, ins, outs) -> None:
    """y = x / (bias + alpha / size * sum of x^2 over `size` neighbouring channels)^beta."""
    x, y = ins[0], outs[0]
    require_float(op, x)
    shape = x.type.get_shape()
    if len(shape) < 2:
        raise UnsupportedError(f"{op.describe()}: input {x.type} has no channel axis")
    size = op.attr("size")
    alpha, beta, bias = op.attr("alpha", 1e-4), op.attr("beta", 0.75), op.attr("bias", 1.0)
    element_type = y.type.element_type
    # The window of channel c is [c - (size-1)//2, c + ceil((size-1)/2)]: zero-pad the channels.
    padded = kb.scratch(MemRefType(element_type, [shape[0], shape[1] + size - 1, *shape[2:]]))
    pad_into(kb, x, padded, [0, (size - 1) // 2] + [0] * (len(shape) - 2), 0.0)
    sums = kb.scratch(MemRefType(element_type, list(shape)))
    kb.fill(sums, 0.0)
    # Loops (n, k, c, spatial...): a [size] scratch bounds the tap loop k (pooling's idiom).
    rank = len(shape)
    num_dims = rank + 1
    n, k, c = dim(0), dim(1), dim(2)
    rest = [dim(3 + i) for i in range(rank - 2)]
    bounds = kb.scratch(MemRefType(element_type, [size]))
    kb.generic([padded, bounds], [sums],
               [affine_map(num_dims, [n, c + k, *rest]), affine_map(num_dims, [k]),
                affine_map(num_dims, [n, c, *rest])],
               [PARALLEL, REDUCTION] + [PARALLEL] * (rank - 1),
               lambda b, a: [b.add(a[2], b.mul(a[0], a[0]))])
    kb.elementwise([x, sums], y, lambda b, a: [b.div(a[0], b.math(
        math.PowFOp, b.add(b.const(bias), b.mul(b.const(alpha / size), a[1])), b.const(beta)))])


@lowers("LpNormalization")
def lower_lp_normalization(kb, op, ins, outs) -> None:
    """y = x / ||x||_p along `axis` (p = 1 or 2); a zero norm gives 0, as onnxruntime does."""
    x, y = ins[0], outs[0]
    require_float(op, x)
    shape = x.type.get_shape()
    axis = normalize_axis(op, op.attr("axis", -1), len(shape))
    p = op.attr("p", 2)
    if p not in (1, 2):
        raise UnsupportedError(f"{op.describe()}: attribute 'p' is {p}; LpNormalization takes 1 or 2")
    norm = kb.scratch(MemRefType(y.type.element_type, keepdims_shape(shape, [axis])))
    if p == 1:
        reduce_into(kb, x, norm, [axis], 0.0, lambda b, acc, v: b.add(acc, b.math(math.AbsFOp, v)))
    else:
        reduce_into(kb, x, norm, [axis], 0.0, lambda b, acc, v: b.add(acc, b.mul(v, v)))
        update_in_place(kb, norm, lambda b, acc: b.sqrt(acc))

    def divide(b, args):
        value, length = args[0], args[1]
        return [b.select(b.cmp("oeq", length, b.const(0.0)), b.const(0.0), b.div(value, length))]

    kb.elementwise([x, norm], y, divide)
