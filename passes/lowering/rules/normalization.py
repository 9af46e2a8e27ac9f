"""Normalisations: BatchNormalization (inference and training_mode), Softmax, LogSoftmax, LayerNormalization.

Mirrors the ONNX spec at opset 13+ for Softmax/LogSoftmax (one `axis`), opset 15 for
BatchNormalization and opset 17 for LayerNormalization
(https://onnx.ai/onnx/operators/onnx__Softmax.html and siblings).
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import math, memref
from xdsl.dialects.builtin import MemRefType, StringAttr, UnitAttr, f32, f64
from xdsl.ir import SSAValue

from dialects.diagnostics import UnsupportedError
from dialects.weights import weights_of
from passes.graph.utils.constants import constant_of
from passes.lowering.kernels_to_linalg import reshape_view
from passes.lowering.rules import lowers
from passes.lowering.rules.reduction import (
    keepdims_shape,
    lowest,
    reduce_into,
    require_float,
    update_in_place,
)
from passes.lowering.utils.linalg_builder import PARALLEL, affine_map, dim, identity_map


def _axis(op, rank: int, default: int) -> int:
    axis = op.attr("axis", default)
    if not -rank <= axis < rank:
        raise UnsupportedError(f"{op.describe()}: axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


@lowers("BatchNormalization")
def lower_batch_norm(kb, op, ins, outs) -> None:
    """y = (x - mean) * (scale / sqrt(var + eps)) + B, per channel (axis 1)."""
    x, scale, bias, mean, var = ins
    y = outs[0]
    require_float(op, x)
    rank = len(x.type.get_shape())
    if rank < 2:
        raise UnsupportedError(f"{op.describe()}: input {x.type} has no channel axis")
    epsilon = op.attr("epsilon", 1e-5)
    if op.attr("training_mode", 0):
        _batch_norm_training(kb, op, ins, outs, epsilon)
        return
    # The per-channel factor is computed once, not per element: at compile time when scale and
    # var are weights, else by a loop of the kernel.
    factor = _constant_factor(kb, op, y.type.element_type, epsilon)
    if factor is None:
        factor = kb.scratch(MemRefType(y.type.element_type, [x.type.get_shape()[1]]))
        kb.elementwise([scale, var], factor,
                       lambda b, a: [b.div(a[0], b.sqrt(b.add(a[1], b.const(epsilon))))])
    channel = affine_map(rank, [dim(1)])
    kb.generic([x, mean, factor, bias], [y], [identity_map(rank), channel, channel, channel,
                                             identity_map(rank)], [PARALLEL] * rank,
               lambda b, a: [b.add(b.mul(b.sub(a[0], a[1]), a[2]), a[3])])


def _constant_factor(kb, op, element_type, epsilon: float) -> SSAValue | None:
    """scale / sqrt(var + epsilon) as a new weight read in the kernel, when scale and var are
    weights of `element_type` (float32 or float64): the same IEEE operations in the same type
    as the kernel's loop, so the same bits. The loop, one per BatchNormalization that no Conv
    absorbed, cost LLVM ~10 ms each (vectorised with its remainder): DenseNet-121 has 58."""
    scale, var = constant_of(op.operands[1]), constant_of(op.operands[4])
    dtype = {f32: np.float32, f64: np.float64}.get(element_type)
    if dtype is None or scale is None or var is None or scale.dtype != dtype or var.dtype != dtype:
        return None
    factor = scale.reshape(-1) / np.sqrt(var.reshape(-1) + dtype(epsilon))
    module = op.get_toplevel_object()
    name = weights_of(module).add(f"{op.node_name}.factor", factor)
    type = MemRefType(element_type, [factor.size])
    module.body.block.insert_op_before(
        memref.GlobalOp.get(StringAttr(name), type, UnitAttr(), constant=UnitAttr()), module.body.block.first_op)
    return kb.insert(memref.GetGlobalOp(name, type)).memref


def _batch_norm_training(kb, op, ins, outs, epsilon: float) -> None:
    """training_mode=1 (opset 15): normalise with the batch's own mean and (population)
    variance per channel, and write the running statistics
    input * momentum + batch * (1 - momentum) to the optional outputs 1 and 2."""
    x, scale, bias, mean, var = ins
    y = outs[0]
    shape = x.type.get_shape()
    rank, channels = len(shape), shape[1]
    axes = [a for a in range(rank) if a != 1]
    count = float(np.prod([shape[a] for a in axes]))
    element_type = y.type.element_type
    batch_mean = kb.scratch(MemRefType(element_type, [channels]))
    reduce_into(kb, x, batch_mean, axes, 0.0, lambda b, acc, v: b.add(acc, v))
    update_in_place(kb, batch_mean, lambda b, s: b.div(s, b.const(count)))

    def add_squared_deviation(b, acc, v, m):
        deviation = b.sub(v, m)
        return b.add(acc, b.mul(deviation, deviation))

    batch_var = kb.scratch(MemRefType(element_type, [channels]))
    reduce_into(kb, x, batch_var, axes, 0.0, add_squared_deviation,
                [reshape_view(kb.builder, batch_mean, keepdims_shape(shape, axes))])
    update_in_place(kb, batch_var, lambda b, s: b.div(s, b.const(count)))
    factor = kb.scratch(MemRefType(element_type, [channels]))
    kb.elementwise([scale, batch_var], factor,
                   lambda b, a: [b.div(a[0], b.sqrt(b.add(a[1], b.const(epsilon))))])
    channel = affine_map(rank, [dim(1)])
    kb.generic([x, batch_mean, factor, bias], [y], [identity_map(rank), channel, channel, channel,
                                                   identity_map(rank)], [PARALLEL] * rank,
               lambda b, a: [b.add(b.mul(b.sub(a[0], a[1]), a[2]), a[3])])
    momentum = op.attr("momentum", 0.9)
    for running, given, batch in zip(outs[1:3], (mean, var), (batch_mean, batch_var)):
        if running is not None:
            kb.elementwise([given, batch], running, lambda b, a: [
                b.add(b.mul(a[0], b.const(momentum)), b.mul(a[1], b.const(1.0 - momentum)))])


def _row_max(kb, x: SSAValue, axes: list[int]) -> SSAValue:
    """max of x over `axes` (kept as size 1), for numerically stable exponentials."""
    element_type = x.type.element_type
    peak = kb.scratch(MemRefType(element_type, keepdims_shape(x.type.get_shape(), axes)))
    reduce_into(kb, x, peak, axes, lowest(element_type), lambda b, acc, v: b.max(acc, v), associative=True)
    return peak


@lowers("Softmax")
def lower_softmax(kb, op, ins, outs) -> None:
    """y = exp(x - max) / sum(exp(x - max)) along `axis`."""
    x, y = ins[0], outs[0]
    require_float(op, x)
    shape = x.type.get_shape()
    axes = [_axis(op, len(shape), -1)]
    peak = _row_max(kb, x, axes)
    kb.elementwise([x, peak], y, lambda b, a: [b.exp(b.sub(a[0], a[1]))])
    total = kb.scratch(MemRefType(y.type.element_type, keepdims_shape(shape, axes)))
    reduce_into(kb, y, total, axes, 0.0, lambda b, acc, v: b.add(acc, v))
    # One division per row, then products: a vector divide costs several multiplies
    # (x * (1/s) is within an ulp of x / s).
    update_in_place(kb, total, lambda b, s: b.div(b.const(1.0), s))
    update_in_place(kb, y, lambda b, v, r: b.mul(v, r), [total])


@lowers("LogSoftmax")
def lower_log_softmax(kb, op, ins, outs) -> None:
    """y = x - max - log(sum(exp(x - max))) along `axis`."""
    x, y = ins[0], outs[0]
    require_float(op, x)
    shape = x.type.get_shape()
    axes = [_axis(op, len(shape), -1)]
    peak = _row_max(kb, x, axes)
    total = kb.scratch(MemRefType(y.type.element_type, keepdims_shape(shape, axes)))
    reduce_into(kb, x, total, axes, 0.0,
                lambda b, acc, v, m: b.add(acc, b.exp(b.sub(v, m))), [peak])
    kb.elementwise([x, peak, total], y,
                   lambda b, a: [b.sub(b.sub(a[0], a[1]), b.math(math.LogOp, a[2]))])


@lowers("LayerNormalization")
def lower_layer_norm(kb, op, ins, outs) -> None:
    """y = (x - mean) * inv_std * scale + B over the dims from `axis` on."""
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    y = outs[0]
    require_float(op, x)
    if op.attr("stash_type", 1) != 1:
        raise UnsupportedError(f"{op.describe()}: stash_type {op.attr('stash_type')} is not "
                               "supported (statistics are computed in float32)")
    shape = x.type.get_shape()
    axes = list(range(_axis(op, len(shape), -1), len(shape)))
    # The optional Mean and InvStdDev outputs have the keepdims shape: reuse them as scratch.
    stats_type = MemRefType(y.type.element_type, keepdims_shape(shape, axes))
    mean = outs[1] if len(outs) > 1 and outs[1] is not None else kb.scratch(stats_type)
    inv_std = outs[2] if len(outs) > 2 and outs[2] is not None else kb.scratch(stats_type)
    mean_and_inv_std(kb, x, axes, mean, inv_std, op.attr("epsilon", 1e-5))

    def normalise(b, a):
        scaled = b.mul(b.mul(b.sub(a[0], a[1]), a[2]), a[3])
        return [b.add(scaled, a[4]) if bias is not None else scaled]

    kb.elementwise([x, mean, inv_std, scale, *([bias] if bias is not None else [])], y, normalise)


def mean_and_inv_std(kb, x: SSAValue, axes: list[int], mean: SSAValue, inv_std: SSAValue,
                epsilon: float) -> None:
    """mean and 1 / sqrt(variance + epsilon) of x over `axes` (two passes, as ONNX defines it)."""
    count = float(np.prod([x.type.get_shape()[a] for a in axes]))
    reduce_into(kb, x, mean, axes, 0.0, lambda b, acc, v: b.add(acc, v))
    update_in_place(kb, mean, lambda b, s: b.div(s, b.const(count)))

    def add_squared_deviation(b, acc, v, m):
        deviation = b.sub(v, m)
        return b.add(acc, b.mul(deviation, deviation))

    reduce_into(kb, x, inv_std, axes, 0.0, add_squared_deviation, [mean])
    update_in_place(kb, inv_std, lambda b, s: b.div(
        b.const(1.0), b.sqrt(b.add(b.div(s, b.const(count)), b.const(epsilon)))))
