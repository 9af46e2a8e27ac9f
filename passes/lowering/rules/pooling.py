"""Pooling: MaxPool, AveragePool, LpPool, GlobalMaxPool, GlobalAveragePool (1-D/2-D/3-D).

Mirrors https://onnx.ai/onnx/operators/onnx__MaxPool.html, onnx__AveragePool.html and
onnx__LpPool.html (pads, auto_pad, strides, dilations, ceil_mode, count_include_pad, p). Windows and padding
come from conv.py; the global pools are reductions over the spatial axes.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import math
from xdsl.dialects.builtin import MemRefType
from xdsl.ir import SSAValue

from dialects.diagnostics import UnsupportedError
from passes.lowering.linalg_builder import PARALLEL, REDUCTION, affine_map, dim
from passes.lowering.rules import lowers
from passes.lowering.rules.conv import SHORT_ROW, Window, pad_into, padded_input, window_of
from passes.lowering.rules.reduction import reduce_into, require_float, update_in_place


def _window(op, x: SSAValue, y: SSAValue) -> Window:
    kernel = op.attr("kernel_shape")
    spatial = x.type.get_shape()[2:]
    if kernel is None or len(kernel) != len(spatial):
        raise UnsupportedError(f"{op.describe()}: kernel_shape {kernel} should give one size per "
                               f"spatial dim of the input {x.type}")
    return window_of(op, spatial, kernel, y.type.get_shape()[2:])


def _pool(kb, source: SSAValue, out: SSAValue, window: Window, step, batch_dims: int = 2) -> None:
    """out[..., o] = step(out[..., o], source[..., o*s + k*d]) over all taps k (out pre-filled).

    Loops are (batch..., o_outer..., k..., o_last), as for Conv: the innermost walks a
    contiguous output row, which stays in L1 while every tap updates it. A [K...] scratch
    bounds the tap loops: its block arg is unused, so nothing is loaded (linalg's pooling
    idiom).
    """
    spatial = len(window.kernel)
    lead = [dim(i) for i in range(batch_dims)]
    outer = [dim(batch_dims + i) for i in range(spatial - 1)]
    taps = [dim(batch_dims + spatial - 1 + i) for i in range(spatial)]
    positions = [*outer, dim(batch_dims + 2 * spatial - 1)]
    num_dims = batch_dims + 2 * spatial
    bounds = kb.scratch(MemRefType(source.type.element_type, list(window.kernel)))
    kb.generic([source, bounds], [out],
               [affine_map(num_dims, [*lead, *window.taps(positions, taps)]),
                affine_map(num_dims, taps),
                affine_map(num_dims, [*lead, *positions])],
               [PARALLEL] * (batch_dims + spatial - 1) + [REDUCTION] * spatial + [PARALLEL],
               lambda b, a: [step(b, a[2], a[0])])


@lowers("MaxPool")
def lower_max_pool(kb, op, ins, outs) -> None:
    x, y = ins[0], outs[0]
    require_float(op, x)
    if len(op.results) > 1 and op.results[1].uses:
        raise UnsupportedError(f"{op.describe()}: the Indices output of MaxPool is not supported",
                               "use only the first output")
    window = _window(op, x, y)
    # -inf padding never wins the max, so padded taps need no bounds check.
    kb.fill(y, -np.inf)
    _pool(kb, padded_input(kb, x, window, -np.inf), y, window, lambda b, acc, v: b.max(acc, v))


@lowers("AveragePool")
def lower_average_pool(kb, op, ins, outs) -> None:
    x, y = ins[0], outs[0]
    require_float(op, x)
    window = _window(op, x, y)
    short_row = y.type.get_shape()[-1] < SHORT_ROW
    kb.fill(y, 0.0)
    _pool(kb, padded_input(kb, x, window, 0.0), y, window, lambda b, acc, v: b.add(acc, v, in_order=short_row))
    counted = _counted_region(op, x, window)
    if counted is None:
        size = float(np.prod(window.kernel))
        update_in_place(kb, y, lambda b, acc: b.div(acc, b.const(size)))
    else:
        counts = _tap_counts(kb, x, window, counted)
        update_in_place(kb, y, lambda b, acc, n: b.div(acc, n), [counts])


@lowers("LpPool")
def lower_lp_pool(kb, op, ins, outs) -> None:
    """y = (sum over the window of |x|^p)^(1/p); padding adds zeros, which add nothing."""
    x, y = ins[0], outs[0]
    require_float(op, x)
    p = op.attr("p", 2)
    if p <= 0:
        raise UnsupportedError(f"{op.describe()}: p={p} must be positive")
    window = _window(op, x, y)
    short_row = y.type.get_shape()[-1] < SHORT_ROW
    kb.fill(y, 0.0)
    _pool(kb, padded_input(kb, x, window, 0.0), y, window,
          lambda b, acc, v: b.add(acc, _abs_power(b, v, p), in_order=short_row))
    if p == 2:
        update_in_place(kb, y, lambda b, acc: b.sqrt(acc))
    elif p != 1:
        update_in_place(kb, y, lambda b, acc: b.math(math.PowFOp, acc, b.const(1.0 / p)))


def _abs_power(b, v, p: int):
    if p == 2:  # a product is exact where pow may differ in the last bit
        return b.mul(v, v)
    magnitude = b.math(math.AbsFOp, v)
    return magnitude if p == 1 else b.math(math.PowFOp, magnitude, b.const(float(p)))


def _counted_region(op, x: SSAValue, window: Window) -> tuple[list[int], list[int]] | None:
    """[begin, end) per spatial dim of the padded input that the divisor counts.

    None when that is the whole padded input, so the divisor is the kernel size. As in
    onnxruntime, count_include_pad=1 counts the explicit pads but not what ceil_mode
    reads beyond them; count_include_pad=0 counts only real input.
    """
    spatial = x.type.get_shape()[2:]
    extent = window.padded_extent(spatial)
    if op.attr("count_include_pad", 0):
        begin = [0] * len(spatial)
        end = [b + n + e for b, n, e in zip(window.pads_begin, spatial, window.pads_end)]
    else:
        begin = list(window.pads_begin)
        end = [b + n for b, n in zip(window.pads_begin, spatial)]
    if all(lo == 0 and hi == size for lo, hi, size in zip(begin, end, extent)):
        return None
    return begin, end


def _tap_counts(kb, x: SSAValue, window: Window, counted: tuple[list[int], list[int]]) -> SSAValue:
    """Per output position [O...], how many window taps fall in the counted region.

    Computed in-kernel by pooling a 0/1 mask of the padded spatial extent: no weight
    needs to be added from a rule, and it costs one small pass over [O...] x [K...].
    """
    element_type = x.type.element_type
    begin, end = counted
    ones = kb.scratch(MemRefType(element_type, [hi - lo for lo, hi in zip(begin, end)]))
    kb.fill(ones, 1.0)
    mask = kb.scratch(MemRefType(element_type, list(window.padded_extent(x.type.get_shape()[2:]))))
    pad_into(kb, ones, mask, begin, 0.0)
    counts = kb.scratch(MemRefType(element_type, list(window.out)))
    kb.fill(counts, 0.0)
    _pool(kb, mask, counts, window, lambda b, acc, v: b.add(acc, v, in_order=True), batch_dims=0)
    return counts


@lowers("GlobalMaxPool", "GlobalAveragePool")
def lower_global_pool(kb, op, ins, outs) -> None:
    x, y = ins[0], outs[0]
    require_float(op, x)
    shape = x.type.get_shape()
    axes = list(range(2, len(shape)))
    if op.onnx_type == "GlobalMaxPool":
        reduce_into(kb, x, y, axes, -np.inf, lambda b, acc, v: b.max(acc, v), associative=True)
        return
    reduce_into(kb, x, y, axes, 0.0, lambda b, acc, v: b.add(acc, v))
    size = float(np.prod(shape[2:]))
    update_in_place(kb, y, lambda b, acc: b.div(acc, b.const(size)))
