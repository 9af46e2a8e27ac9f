"""Reductions: ReduceSum/Mean/Max/Min/Prod/SumSquare/L1/L2/LogSum/LogSumExp at opset 18+.

Mirrors the ONNX spec (https://onnx.ai/onnx/operators/onnx__ReduceSum.html): `axes` is
the optional second input (a constant here), `keepdims` and `noop_with_empty_axes`
attributes. Also holds the reduction helpers that pooling and normalization share.
"""

from __future__ import annotations

import itertools

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects import math
from xdsl.dialects.builtin import IntegerType, MemRefType, NoneType, Signedness
from xdsl.ir import Attribute, SSAValue

from dialects.diagnostics import UnsupportedError
from dialects.onnx import WeightOp
from dialects.types import is_float, numpy_dtype
from dialects.weights import weights_of
from passes.lowering.kernels_to_linalg import reshape_view
from passes.lowering.linalg_builder import (
    PARALLEL,
    REDUCTION,
    Body,
    affine_map,
    broadcast_map,
    cst,
    dim,
    identity_map,
)
from passes.lowering.rules import lowers

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


def reduce_into(kb, source: SSAValue, out: SSAValue, axes: Sequence[int], init: float,
                step: Step, extras: Sequence[SSAValue] = ()) -> None:
    """out = fold of `step` over `axes` of `source`, starting from `init`.

    Loops run in `source`'s dim order so the innermost loop walks contiguous input.
    `out` has the reduced axes either dropped or kept as size 1 (its rank tells);
    `extras` are keepdims-shaped buffers read at the output position (e.g. a max).
    """
    rank = len(source.type.get_shape())
    keep = len(out.type.get_shape()) == rank
    out_exprs = [cst(0) if i in axes else dim(i) for i in range(rank) if keep or i not in axes]
    keep_map = affine_map(rank, [cst(0) if i in axes else dim(i) for i in range(rank)])
    iterators = [REDUCTION if i in axes else PARALLEL for i in range(rank)]
    kb.fill(out, init)
    n = len(extras)
    kb.generic([source, *extras], [out],
               [identity_map(rank), *[keep_map] * n, affine_map(rank, out_exprs)], iterators,
               lambda b, a: [step(b, a[n + 1], a[0], *a[1:n + 1])])


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


def _axes_from_shapes(op) -> list[int]:
    """Reduced axes when `axes` arrives at run time: read off the static result shape.

    dlc compiles for static shapes, so the result type already fixes what is reduced: with
    keepdims, the axes whose size became 1; without, the input axes missing from the result.
    Size-1 axes are included or not to taste (reducing them changes nothing); any other
    ambiguity is an error.
    """
    in_shape = list(op.operands[0].type.get_shape())
    out_shape = list(op.results[0].type.get_shape())
    if op.attr("keepdims", 1):
        if len(out_shape) != len(in_shape):
            raise UnsupportedError(f"{op.describe()}: result rank {len(out_shape)} does not match "
                                   f"input rank {len(in_shape)} with keepdims=1")
        return [i for i, (a, b) in enumerate(zip(in_shape, out_shape)) if a != b]
    candidates = set()
    for removed in itertools.combinations(range(len(in_shape)), len(in_shape) - len(out_shape)):
        kept = [size for i, size in enumerate(in_shape) if i not in removed]
        if kept == out_shape:
            candidates.add(tuple(i for i in removed if in_shape[i] != 1))
    if len(candidates) != 1:
        raise UnsupportedError(f"{op.describe()}: the axes input is computed at run time and the "
                               f"shapes {in_shape} -> {out_shape} do not say which axes it names",
                               "make axes a constant (an initializer or Constant node)")
    return list(candidates.pop())


def reduced_axes(op, rank: int) -> list[int]:
    """The axes an opset-18 reduction reduces: its `axes` input, normalised and sorted."""
    if len(op.operands) > 1 and not isinstance(op.operands[1].type, NoneType) \
            and not isinstance(op.operands[1].owner, WeightOp):
        return _axes_from_shapes(op)
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


def _zero(element_type: Attribute) -> int:
    return 0


def _one(element_type: Attribute) -> int:
    return 1


_REDUCTIONS = {
    "ReduceSum": _Reduction(_zero, _add),
    "ReduceMean": _Reduction(_zero, _add, lambda b, acc, n: b.div(acc, b.const(n)), True),
    "ReduceMax": _Reduction(lowest, lambda b, acc, x: b.max(acc, x)),
    "ReduceMin": _Reduction(highest, lambda b, acc, x: b.min(acc, x)),
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
    axes = reduced_axes(op, len(shape))
    reduce_into(kb, source, out, axes, reduction.init(element_type), reduction.step)
    if reduction.finish is not None:
        count = int(np.prod([shape[a] for a in axes]))
        update_in_place(kb, out, lambda b, acc: reduction.finish(b, acc, count))


@lowers("ReduceLogSumExp")
def lower_reduce_log_sum_exp(kb, op, ins, outs) -> None:
    """log(sum(exp(x - max))) + max: subtracting the max keeps exp from overflowing."""
    source, out = ins[0], outs[0]
    element_type = out.type.element_type
    _check_element_type(op, element_type, float_only=True)
    shape = source.type.get_shape()
    axes = reduced_axes(op, len(shape))
    peak = kb.scratch(MemRefType(element_type, keepdims_shape(shape, axes)))
    reduce_into(kb, source, peak, axes, lowest(element_type), lambda b, acc, x: b.max(acc, x))
    reduce_into(kb, source, out, axes, 0.0,
                lambda b, acc, x, m: b.add(acc, b.exp(b.sub(x, _finite_or_zero(b, m)))), [peak])
    if len(out.type.get_shape()) != len(shape):  # keepdims=0: see the max with out's shape
        peak = reshape_view(kb.builder, peak, out.type.get_shape())
    update_in_place(kb, out, lambda b, acc, m: b.add(_log(b, acc), _finite_or_zero(b, m)), [peak])


def _finite_or_zero(b: Body, m: SSAValue) -> SSAValue:
    """An infinite max is not subtracted: x - inf would give NaN where the true result is +-inf."""
    is_inf = b.cmp("oeq", b.math(math.AbsFOp, m), b.const(np.inf))
    return b.select(is_inf, b.const(0.0), m)
