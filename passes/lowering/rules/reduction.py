"""Reductions: ReduceSum/Mean/Max/Min/Prod/SumSquare/L1/L2/LogSum/LogSumExp at opset 18+.

Mirrors the ONNX spec (https://onnx.ai/onnx/operators/onnx__ReduceSum.html): `axes` is
the optional second input (a constant, or computed at run time: then the static shapes say
which axes, or the few readings they allow are all computed and the run-time value picks
one), `keepdims` and `noop_with_empty_axes` attributes. Also holds the reduction helpers
that pooling and normalization share.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects import math
from xdsl.dialects.builtin import IndexType, IntegerType, MemRefType, NoneType, Signedness
from xdsl.ir import Attribute, SSAValue

from dialects.diagnostics import UnsupportedError
from dialects.onnx import WeightOp
from dialects.types import is_float, numpy_dtype
from dialects.weights import weights_of
from passes.lowering.kernels_to_linalg import reshape_view
from passes.lowering.rules import lowers
from passes.lowering.utils.linalg_builder import (
    PARALLEL,
    REDUCTION,
    Body,
    affine_map,
    broadcast_map,
    cst,
    dim,
    identity_map,
)
from passes.lowering.utils.runtime_checks import error_code, flag_if, status_word

Step = Callable[..., SSAValue]  # step(body, accumulator, x, *extras) -> new accumulator


def require_float(op, value: SSAValue) -> None:
    if not is_float(value.type.element_type):
        raise UnsupportedError(f"{op.describe()}: {op.onnx_type} on {value.type.element_type} "
                               "tensors is not supported on cpu (float only)",
                               "cast the input to float32 first")


def lowest(element_type: Attribute) -> float | int:
    """The identity of max: -inf for floats, false for bools, the smallest integer otherwise."""
    if numpy_dtype(element_type) == np.bool_:
        return 0
    return -np.inf if is_float(element_type) else int(np.iinfo(numpy_dtype(element_type)).min)


def highest(element_type: Attribute) -> float | int:
    """The identity of min: +inf for floats, true for bools, the largest integer otherwise."""
    if numpy_dtype(element_type) == np.bool_:
        return -1  # i1 all ones: true
    return np.inf if is_float(element_type) else int(np.iinfo(numpy_dtype(element_type)).max)


def keepdims_shape(shape: Sequence[int], axes: Sequence[int]) -> list[int]:
    return [1 if i in axes else size for i, size in enumerate(shape)]


# Lanes of the partial results of an associative reduction: one AVX-512 vector of f32.
LANES = 16


def reduce_into(kb, source: SSAValue, out: SSAValue, axes: Sequence[int], init: float,
                step: Step, extras: Sequence[SSAValue] = (), associative: bool = False) -> None:
    """out = fold of `step` over `axes` of `source`, starting from `init`.

    Loops run in `source`'s dim order so the innermost loop walks contiguous input.
    `out` has the reduced axes either dropped or kept as size 1 (its rank tells);
    `extras` are keepdims-shaped buffers read at the output position (e.g. a max).
    `associative`: `step` may fold partial results in any order (max, min), so a reduced
    innermost axis is folded in vector lanes first (`_reduce_in_lanes`).
    """
    rank = len(source.type.get_shape())
    if associative and not extras and rank - 1 in axes and source.type.get_shape()[-1] >= 2 * LANES:
        _reduce_in_lanes(kb, source, out, axes, init, step)
        return
    keep = len(out.type.get_shape()) == rank
    out_exprs = [cst(0) if i in axes else dim(i) for i in range(rank) if keep or i not in axes]
    keep_map = affine_map(rank, [cst(0) if i in axes else dim(i) for i in range(rank)])
    iterators = [REDUCTION if i in axes else PARALLEL for i in range(rank)]
    kb.fill(out, init)
    n = len(extras)
    kb.generic([source, *extras], [out],
               [identity_map(rank), *[keep_map] * n, affine_map(rank, out_exprs)], iterators,
               lambda b, a: [step(b, a[n + 1], a[0], *a[1:n + 1])])


def _reduce_in_lanes(kb, source: SSAValue, out: SSAValue, axes: Sequence[int], init: float,
                     step: Step) -> None:
    """reduce_into for an associative step over a long innermost axis, tiled by LANES.

    A fold along the innermost axis is a loop-carried chain: LLVM vectorises it only for
    reductions it recognises, and a NaN-propagating max is not one (ReduceMax over 128
    floats ran 9x slower than onnxruntime). Here the axis is cut into blocks of LANES: each
    block folds elementwise into partial[..., lane], a loop over lanes that vectorises like
    any elementwise op; then the lanes, and the axis' tail past the last whole block,
    fold into out.
    """
    shape = source.type.get_shape()
    rank = len(shape)
    element_type = source.type.element_type
    blocks, tail = divmod(shape[-1], LANES)
    keep = len(out.type.get_shape()) == rank
    out_exprs = [cst(0) if i in axes else dim(i) for i in range(rank) if keep or i not in axes]
    reducing = [REDUCTION if i in axes else PARALLEL for i in range(rank)]
    outer = [dim(i) for i in range(rank - 1)]
    out_shape = out.type.get_shape()

    # partial[..., lane] = fold over blocks of source[..., block * LANES + lane]; loops (..., block, lane).
    partial = kb.scratch(MemRefType(element_type, [*out_shape, LANES]))
    kb.fill(partial, init)
    block_bounds = kb.scratch(MemRefType(element_type, [blocks]))  # bounds the block loop, never read
    lane = dim(rank)
    kb.generic([source, block_bounds], [partial],
               [affine_map(rank + 1, [*outer, dim(rank - 1) * LANES + lane]),
                affine_map(rank + 1, [dim(rank - 1)]),
                affine_map(rank + 1, [*out_exprs, lane])],
               [*reducing, PARALLEL], lambda b, a: [step(b, a[2], a[0])])

    # out = fold of the lanes, then of the tail.
    out_rank = len(out_shape)
    kb.fill(out, init)
    kb.generic([partial], [out],
               [identity_map(out_rank + 1), affine_map(out_rank + 1, [dim(i) for i in range(out_rank)])],
               [PARALLEL] * out_rank + [REDUCTION], lambda b, a: [step(b, a[1], a[0])])
    if tail:
        tail_bounds = kb.scratch(MemRefType(element_type, [tail]))
        kb.generic([source, tail_bounds], [out],
                   [affine_map(rank, [*outer, dim(rank - 1) + blocks * LANES]),
                    affine_map(rank, [dim(rank - 1)]), affine_map(rank, out_exprs)],
                   reducing, lambda b, a: [step(b, a[2], a[0])])


def update_in_place(kb, out: SSAValue, fn: Callable[..., SSAValue],
                    inputs: Sequence[SSAValue] = ()) -> None:
    """out[i] = fn(body, out[i], *inputs[bcast(i)]) with numpy broadcasting of `inputs`."""
    shape = out.type.get_shape()
    maps = [broadcast_map(v.type.get_shape(), shape) for v in inputs] + [identity_map(len(shape))]
    n = len(inputs)
    kb.generic(list(inputs), [out], maps, [PARALLEL] * len(shape),
               lambda b, a: [fn(b, a[n], *a[:n])])


def constant_value(op, index: int) -> np.ndarray | None:
    """The value of constant operand `index` of `op` (None when absent or omitted)."""
    if index >= len(op.operands) or isinstance(op.operands[index].type, NoneType):
        return None
    owner = op.operands[index].owner
    if not isinstance(owner, WeightOp):
        raise UnsupportedError(f"{op.describe()}: input {index} must be a constant (an initializer "
                               "or Constant node); dlc compiles static graphs only")
    store = weights_of(owner.get_toplevel_object())
    if owner.weight_name not in store:
        raise UnsupportedError(f"{op.describe()}: the value of constant '{owner.weight_name}' is "
                               "not available to the lowering")
    return store[owner.weight_name]


def _axes_from_shapes(op) -> list[tuple[tuple[int, ...], list[int]]]:
    """The choices of reduced axes when `axes` arrives at run time, read off the static shapes:
    (the axes the input names, the axes to reduce) for each reading that fits.

    dlc compiles for static shapes, so the result type fixes what is reduced: with keepdims,
    the axes whose size became 1 (size-1 axes are reduced or not to taste: reducing them
    changes nothing), one choice; without, the input axes missing from the result, which
    equal sizes can leave ambiguous ([3, 2, 2] -> [3, 2]: axis 1 or 2). The lowering then
    computes each choice and picks by the run-time value (`for_each_axes_choice`).
    """
    in_shape = list(op.operands[0].type.get_shape())
    out_shape = list(op.results[0].type.get_shape())
    if op.attr("keepdims", 1):
        if len(out_shape) != len(in_shape):
            raise UnsupportedError(f"{op.describe()}: result rank {len(out_shape)} does not match "
                                   f"input rank {len(in_shape)} with keepdims=1")
        return [((), [i for i, (a, b) in enumerate(zip(in_shape, out_shape)) if a != b])]
    choices = {}
    for removed in itertools.combinations(range(len(in_shape)), len(in_shape) - len(out_shape)):
        kept = [size for i, size in enumerate(in_shape) if i not in removed]
        if kept == out_shape:
            choices[removed] = [i for i in removed if in_shape[i] != 1]
    named = list(op.operands[1].type.get_shape())
    if len({tuple(a) for a in choices.values()}) > 1 and named != [len(in_shape) - len(out_shape)]:
        raise UnsupportedError(f"{op.describe()}: the axes input is computed at run time and the "
                               f"shapes {in_shape} -> {out_shape} do not say which axes it names",
                               "make axes a constant (an initializer or Constant node)")
    if len({tuple(a) for a in choices.values()}) == 1:
        return [((), next(iter(choices.values())))]
    return list(choices.items())


def for_each_axes_choice(kb, op, axes_input, out, lower: Callable[[SSAValue, list[int]], None]
                         ) -> None:
    """lower(out, axes) for the reduced axes; when only the run-time `axes` tells which (see
    _axes_from_shapes), lower(scratch, axes) for each choice, then out = the choice whose axes
    the run-time values name (in any order, negative ones counting from the end). Values
    naming none of them fail the run with a DlcError; the output then holds the last choice."""
    rank = len(op.operands[0].type.get_shape())
    if len(op.operands) < 2 or isinstance(op.operands[1].type, NoneType) \
            or isinstance(op.operands[1].owner, WeightOp):
        lower(out, reduced_axes(op, rank))
        return
    choices = _axes_from_shapes(op)
    if len(choices) == 1:
        lower(out, choices[0][1])
        return
    results = []
    for removed, axes in choices:
        result = kb.scratch(MemRefType(out.type.element_type, out.type.get_shape()))
        lower(result, axes)
        results.append((removed, result))
    status = status_word(kb)
    code = error_code(op, f"{op.describe()}: input 'axes' names none of the reductions its "
                          f"result shape {list(out.type.get_shape())} allows ("
                          + ", ".join(str(list(r)) for r, _ in choices) + ")")
    count = axes_input.type.get_shape()[0]
    out_rank = len(out.type.get_shape())

    def pick(b, args):
        i = b.on(IndexType())
        named = [b.load(axes_input, [i.const(j)]) for j in range(count)]
        a = b.on(named[0].type)
        chosen, matched = args[len(results) - 1], None
        for k, (removed, _) in reversed(list(enumerate(results))):
            match = None
            for value in named:  # every named axis is one of `removed` (as many as there are)
                hit = None
                for axis in removed:
                    either = a.or_(a.compare("eq", value, a.const(axis)),
                                   a.compare("eq", value, a.const(axis - rank)))
                    hit = either if hit is None else a.or_(hit, either)
                match = hit if match is None else a.and_(match, hit)
            chosen = b.select(match, args[k], chosen)
            matched = match if matched is None else a.or_(matched, match)
        flag_if(b, status, a.xor(matched, a.const(1, IntegerType(1))), code)
        return [chosen]

    kb.generic([r for _, r in results], [out], [identity_map(out_rank)] * (len(results) + 1),
               [PARALLEL] * out_rank, pick)


def reduced_axes(op, rank: int) -> list[int]:
    """The axes an opset-18 reduction reduces: its `axes` input, normalised and sorted."""
    if len(op.operands) > 1 and not isinstance(op.operands[1].type, NoneType) \
            and not isinstance(op.operands[1].owner, WeightOp):
        choices = _axes_from_shapes(op)
        if len(choices) != 1:
            raise UnsupportedError(f"{op.describe()}: internal: the run-time axes leave "
                                   f"{len(choices)} choices; lower through for_each_axes_choice")
        return choices[0][1]
    axes = constant_value(op, 1)
    if axes is None or axes.size == 0:
        return [] if op.attr("noop_with_empty_axes", 0) else list(range(rank))
    normalised = sorted({int(a) + rank if a < 0 else int(a) for a in axes.reshape(-1)})
    if any(not 0 <= a < rank for a in normalised):
        raise UnsupportedError(f"{op.describe()}: axes {axes.tolist()} are out of range for "
                               f"rank {rank}")
    return normalised


def _abs(b: Body, x: SSAValue) -> SSAValue:
    return b.math(math.AbsFOp, x) if b.float else b.max(x, b.neg(x))


def _log(b: Body, x: SSAValue) -> SSAValue:
    return b.math(math.LogOp, x)


def _add(b: Body, acc: SSAValue, x: SSAValue) -> SSAValue:
    return b.add(acc, x)


def _add_square(b: Body, acc: SSAValue, x: SSAValue) -> SSAValue:
    return b.add(acc, b.mul(x, x))


@dataclass(frozen=True)
class _Reduction:
    init: Callable[[Attribute], float | int]  # element type -> identity of `step`
    step: Step
    finish: Callable[[Body, SSAValue, int], SSAValue] | None = None  # (body, acc, count)
    float_only: bool = False
    associative: bool = False  # partial results fold in any order (reduce_into's lanes)


def _zero(element_type: Attribute) -> int:
    return 0


def _one(element_type: Attribute) -> int:
    return 1


_REDUCTIONS = {
    "ReduceSum": _Reduction(_zero, _add),
    "ReduceMean": _Reduction(_zero, _add, lambda b, acc, n: b.div(acc, b.const(n)), True),
    "ReduceMax": _Reduction(lowest, lambda b, acc, x: b.max(acc, x), associative=True),
    "ReduceMin": _Reduction(highest, lambda b, acc, x: b.min(acc, x), associative=True),
    "ReduceProd": _Reduction(_one, lambda b, acc, x: b.mul(acc, x)),
    "ReduceSumSquare": _Reduction(_zero, _add_square),
    "ReduceL1": _Reduction(_zero, lambda b, acc, x: b.add(acc, _abs(b, x))),
    "ReduceL2": _Reduction(_zero, _add_square, lambda b, acc, n: b.sqrt(acc), True),
    "ReduceLogSum": _Reduction(_zero, _add, lambda b, acc, n: _log(b, acc), True),
}


def _check_element_type(op, element_type: Attribute, float_only: bool) -> None:
    # Body's integer ops are the signed ones (arith.maxsi, divsi): unsigned would be wrong.
    unsigned = (isinstance(element_type, IntegerType)
                and element_type.signedness.data != Signedness.SIGNLESS)
    if unsigned or (float_only and not is_float(element_type)):
        raise UnsupportedError(f"{op.describe()}: {op.onnx_type} on {element_type} tensors is not "
                               "supported on cpu", "cast the input to float32 first")


@lowers(*_REDUCTIONS)
def lower_reduce(kb, op, ins, outs) -> None:
    source, out = ins[0], outs[0]
    reduction = _REDUCTIONS[op.onnx_type]
    element_type = out.type.element_type
    _check_element_type(op, element_type, reduction.float_only)
    shape = source.type.get_shape()

    def lower(out, axes):
        reduce_into(kb, source, out, axes, reduction.init(element_type), reduction.step,
                    associative=reduction.associative)
        if reduction.finish is not None:
            count = int(np.prod([shape[a] for a in axes]))
            update_in_place(kb, out, lambda b, acc: reduction.finish(b, acc, count))

    for_each_axes_choice(kb, op, ins[1] if len(ins) > 1 else None, out, lower)


@lowers("ReduceLogSumExp")
def lower_reduce_log_sum_exp(kb, op, ins, outs) -> None:
    """log(sum(exp(x - max))) + max: subtracting the max keeps exp from overflowing."""
    source, out = ins[0], outs[0]
    element_type = out.type.element_type
    _check_element_type(op, element_type, float_only=True)
    shape = source.type.get_shape()

    def lower(out, axes):
        peak = kb.scratch(MemRefType(element_type, keepdims_shape(shape, axes)))
        reduce_into(kb, source, peak, axes, lowest(element_type), lambda b, acc, x: b.max(acc, x),
                    associative=True)
        reduce_into(kb, source, out, axes, 0.0,
                    lambda b, acc, x, m: b.add(acc, b.exp(b.sub(x, _finite_or_zero(b, m)))), [peak])
        if len(out.type.get_shape()) != len(shape):  # keepdims=0: see the max with out's shape
            peak = reshape_view(kb.builder, peak, out.type.get_shape())
        update_in_place(kb, out, lambda b, acc, m: b.add(_log(b, acc), _finite_or_zero(b, m)), [peak])

    for_each_axes_choice(kb, op, ins[1] if len(ins) > 1 else None, out, lower)


def _finite_or_zero(b: Body, m: SSAValue) -> SSAValue:
    """An infinite max is not subtracted: x - inf would give NaN where the true result is +-inf."""
    is_inf = b.cmp("oeq", b.math(math.AbsFOp, m), b.const(np.inf))
    return b.select(is_inf, b.const(0.0), m)
