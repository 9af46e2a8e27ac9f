"""Pooling: MaxPool, AveragePool, LpPool, GlobalMaxPool, GlobalAveragePool (1-D/2-D/3-D).

Mirrors https://onnx.ai/onnx/operators/onnx__MaxPool.html, onnx__AveragePool.html and
onnx__LpPool.html (pads, auto_pad, strides, dilations, ceil_mode, count_include_pad, p). Windows,
padding and the split of the outputs into boxes that read x in place come from conv.py; the
global pools are reductions over the spatial axes.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects import math
from xdsl.dialects.builtin import IndexType, MemRefType
from xdsl.ir import SSAValue

from dialects.diagnostics import UnsupportedError
from passes.lowering.kernels_to_linalg import reshape_view, view_at
from passes.lowering.rules import lowers
from passes.lowering.rules.conv import (
    MAX_UNROLLED_TAPS,
    SHORT_ROW,
    Window,
    _block_view,
    _Box,
    _boxes,
    _flat_interior,
    _flat_view,
    pad_into,
    padded_input,
    window_of,
)
from passes.lowering.rules.reduction import reduce_into, require_float, update_in_place
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, cst, dim


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
    window = _window(op, x, y)
    if len(op.results) > 1 and op.results[1].uses:
        _max_pool_with_indices(kb, op, x, y, outs[1], window)
        return
    maximum = lambda b, acc, v: b.max(acc, v)
    if _pool_in_place(kb, x, y, window, maximum, -np.inf, fold=_max_of_taps):
        return
    # -inf padding never wins the max, so padded taps need no bounds check.
    kb.fill(y, -np.inf)
    _pool(kb, padded_input(kb, x, window, -np.inf), y, window, maximum)


def _max_pool_with_indices(kb, op, x: SSAValue, y: SSAValue, indices: SSAValue, window: Window) -> None:
    """MaxPool's Indices output: the flat index into x of the first tap, in the window's
    row-major order as onnxruntime scans it, that holds the maximum (storage_order 0: row-major
    over [N, C, *spatial]; 1: the spatial dims column-major). Padding is never picked; a NaN
    maximum picks the first NaN. One pass for y, then one that finds the tap holding it."""
    order = op.attr("storage_order", 0)
    if order not in (0, 1):
        raise UnsupportedError(f"{op.describe()}: storage_order {order} is not 0 or 1")
    shape = x.type.get_shape()
    spatial = list(shape[2:])
    rank = len(spatial)
    source = padded_input(kb, x, window, -np.inf)
    kb.fill(y, -np.inf)
    _pool(kb, source, y, window, lambda b, acc, v: b.max(acc, v))
    sizes = spatial if order == 0 else spatial[::-1]
    strides = [int(np.prod(sizes[i + 1:])) for i in range(rank)]
    strides = strides if order == 0 else strides[::-1]
    plane = int(np.prod(spatial))
    outputs = [dim(2 + i) for i in range(rank)]
    taps = [dim(2 + rank + i) for i in range(rank)]
    lead = [dim(0), dim(1)]
    num_dims = 2 + 2 * rank

    def body(b, args):
        value, maximum, _, found = args
        i = b.on(IndexType())
        flat = i.mul(i.add(i.mul(b.index(0), i.const(shape[1])), b.index(1)), i.const(plane))
        inside = None
        for d in range(rank):
            position = i.sub(i.add(i.mul(b.index(2 + d), i.const(window.strides[d])),
                                   i.mul(b.index(2 + rank + d), i.const(window.dilations[d]))),
                             i.const(window.pads_begin[d]))
            within = i.and_(i.cmp("sge", position, i.const(0)), i.cmp("slt", position, i.const(spatial[d])))
            inside = within if inside is None else i.and_(inside, within)
            flat = i.add(flat, i.mul(position, i.const(strides[d])))
        holds = b.or_(b.compare("eq", value, maximum), b.is_nan(value))
        first = b.and_(b.and_(holds, inside), b.compare("eq", found, b.const(-1)))
        return [b.select(first, b.index_to(flat, found.type), found)]

    kb.fill(indices, -1)
    bounds = kb.scratch(MemRefType(x.type.element_type, list(window.kernel)))  # as in _pool
    kb.generic([source, y, bounds], [indices],
               [affine_map(num_dims, [*lead, *window.taps(outputs, taps)]),
                affine_map(num_dims, [*lead, *outputs]), affine_map(num_dims, taps),
                affine_map(num_dims, [*lead, *outputs])],
               [PARALLEL] * (2 + rank) + [REDUCTION] * rank, body)


@lowers("AveragePool")
def lower_average_pool(kb, op, ins, outs) -> None:
    x, y = ins[0], outs[0]
    require_float(op, x)
    window = _window(op, x, y)
    short_row = y.type.get_shape()[-1] < SHORT_ROW
    add = lambda b, acc, v: b.add(acc, v, in_order=short_row)
    counted = _counted_region(op, x, window)
    if counted is None:
        counted = ([0] * len(window.kernel), list(window.padded_extent(x.type.get_shape()[2:])))
    if _pool_in_place(kb, x, y, window, add, 0.0, finish=lambda b, acc, n: b.div(acc, n),
                      count=lambda box: _box_count(window, box, counted)):
        return
    kb.fill(y, 0.0)
    _pool(kb, padded_input(kb, x, window, 0.0), y, window, add)
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
    add = lambda b, acc, v: b.add(acc, v, in_order=short_row)
    term = lambda b, v: _abs_power(b, v, p)
    if p == 2:
        root = lambda b, acc: b.sqrt(acc)
    elif p != 1:
        root = lambda b, acc: b.math(math.PowFOp, acc, b.const(1.0 / p))
    else:
        root = None
    if _pool_in_place(kb, x, y, window, add, 0.0, term=term,
                      finish=None if root is None else lambda b, acc, n: root(b, acc)):
        return
    kb.fill(y, 0.0)
    _pool(kb, padded_input(kb, x, window, 0.0), y, window, lambda b, acc, v: add(b, acc, term(b, v)))
    if root is not None:
        update_in_place(kb, y, root)


def _pool_in_place(kb, x: SSAValue, y: SSAValue, window: Window, combine, init: float,
                   term: Callable | None = None, finish: Callable | None = None,
                   count: Callable[[_Box], int] | None = None, fold: Callable | None = None) -> bool:
    """y = finish(combine of term(x) over the taps of each window that read x, n), with no
    padded copy of x: one loop nest per box of output positions whose windows read the
    same taps of x (conv's `_boxes`: the interior, and the border rows and columns). A 2-D
    stride-1 interior runs as one flat row that also covers the border columns between its
    rows (`_edge_columns`).

    The copy cost more than the pooling (MaxPool 3x3/2 pad 1 64x112x112: 0.84 ms against
    onnxruntime's 0.51). `init` starts a looped accumulation (kernels of more than
    MAX_UNROLLED_TAPS taps) and stands for a tap that reads padding; n is `count(box)`
    (AveragePool's divisor; None without `count`); `fold(b, taps)` replaces the left fold
    of `combine`. A box whose windows read only padding is set to `init`, or init/count.
    False, with nothing emitted, when the border takes more boxes than conv's MAX_BOXES.
    """
    x_spatial, y_spatial = x.type.get_shape()[2:], y.type.get_shape()[2:]
    boxes = _boxes(window, x_spatial)
    if boxes is None:
        return False
    term = term or (lambda b, v: v)
    step = lambda b, acc, v: combine(b, acc, term(b, v))
    fold = fold or (lambda b, values: functools.reduce(lambda acc, v: step(b, acc, v), values[1:],
                                                       term(b, values[0])))
    unrolled = int(np.prod(window.kernel)) <= MAX_UNROLLED_TAPS
    # The interior first: the flat interior writes into the border boxes, which overwrite it.
    boxes.sort(key=lambda box: box.taps != tuple((0, k) for k in window.kernel))
    flat = unrolled and len(boxes) > 1 and _flat_interior(window, x_spatial, y_spatial)
    edges = None
    if flat and len(y_spatial) == 2 and boxes[0].taps == tuple((0, k) for k in window.kernel):
        boxes, edges = _edge_columns(kb, y, boxes, init, count)
    for box in boxes:
        begins = [a for a, _ in box.outputs]
        sizes = [b - a for a, b in box.outputs]
        y_box = _block_view(kb, y, begins, sizes, 1)
        if any(first == end for first, end in box.taps):
            n = None if count is None else count(box)
            kb.fill(y_box, init if n is None else init / n if n else np.nan)
            continue
        # Where the first tap of the box's first output reads x.
        starts = [a * s + first * d - p for a, (first, _), s, d, p in
                  zip(begins, box.taps, window.strides, window.dilations, window.pads_begin)]
        divisor = None if count is None else float(count(box))
        if unrolled:
            _pool_unrolled(kb, x, starts, y, box, window, fold, finish, divisor,
                           flat=flat and box is boxes[0], edges=edges if box is boxes[0] else None)
            continue
        kb.fill(y_box, init)
        taps = tuple(end - first for first, end in box.taps)
        extent = [(o - 1) * s + (t - 1) * d + 1
                  for o, t, s, d in zip(sizes, taps, window.strides, window.dilations)]
        zeros = (0,) * len(taps)
        _pool(kb, _block_view(kb, x, starts, extent, 1), y_box,
              Window(taps, window.strides, window.dilations, zeros, zeros, tuple(sizes)),
              step, batch_dims=3)
        if finish is not None:
            update_in_place(kb, y_box, lambda b, acc, n=divisor: finish(b, acc, None if n is None else b.const(n)))
    return True


@dataclass(frozen=True)
class _Edges:
    """Over the flat interior row: a 1/0 row per column tap `masked[m]` that reads padding at
    some of its positions (`masks[m]`), and each position's divisor (None without counts)."""

    masks: SSAValue
    masked: tuple[int, ...]
    divisors: SSAValue | None
    init: float


def _edge_columns(kb, y: SSAValue, boxes: list[_Box], init: float, count) -> tuple[list[_Box], _Edges | None]:
    """Let the flat interior row (boxes[0], 2-D) also compute the border columns between its
    rows, a mask dropping the column taps that fall on padding there; the column boxes keep
    only the outputs the flat row does not reach (the first row's left ones and the last
    row's right ones).

    Down a column LLVM gathered the taps one by one: the column boxes took 45% of MaxPool
    3x3 pad 1 480x14x14 and 60% of AveragePool 3x3 pad 1 2048x8x8.
    """
    interior = boxes[0]
    (r0, r1), (c0, c1) = interior.outputs
    width = y.type.get_shape()[3]
    columns = [box for box in boxes[1:] if box.outputs[0] == (r0, r1)]
    if r1 - r0 < 2 or not columns:
        return boxes, None
    length = (r1 - 1 - r0) * width + c1 - c0
    masked = tuple(t for t in range(interior.taps[1][1])
                   if any(not first <= t < end for first, end in (box.taps[1] for box in columns)))
    element_type = y.type.element_type
    masks = kb.scratch(MemRefType(element_type, [len(masked), length]))
    kb.fill(masks, 1.0)
    divisors = None
    if count is not None:
        divisors = kb.scratch(MemRefType(element_type, [length]))
        kb.fill(divisors, float(count(interior)))
    for box in columns:
        # The flat row's positions in this column: every width-th from the first.
        first = (box.outputs[1][0] - c0) % width
        rows = -(-(length - first) // width)
        for m, t in enumerate(masked):
            if not box.taps[1][0] <= t < box.taps[1][1]:
                kb.fill(view_at(kb.builder, masks, m * length + first, [rows], [width]), 0.0)
        if divisors is not None:
            kb.fill(view_at(kb.builder, divisors, first, [rows], [width]), float(count(box)))
    trimmed = [_Box(((r0, r0 + 1) if box.outputs[1][0] < c0 else (r1 - 1, r1), box.outputs[1]), box.taps)
               for box in columns]
    others = [box for box in boxes[1:] if box not in columns]
    return [interior, *others, *trimmed], _Edges(masks, masked, divisors, init)


def _pool_unrolled(kb, x: SSAValue, starts: Sequence[int], y: SSAValue, box: _Box, window: Window,
                   fold, finish, divisor: float | None, flat: bool, edges: _Edges | None) -> None:
    """y[box] = finish(fold(the box's taps), divisor), the taps unrolled in the body so each
    output is stored once (a loop over the taps reloads and stores it per tap); the box's
    first output's first tap reads x at `starts`. `edges`: the flat row's masks and divisors.

    The views are those of conv's `_accumulate_unrolled`: `flat`, the box's rows walked as
    one flat row (`_flat_interior`); for strides > 1 one view of the windows with each tap
    at its offset in the map (interleaved loads); else a view per tap.
    """
    firsts = [first for first, _ in box.taps]
    tap_list = list(itertools.product(*(range(first, end) for first, end in box.taps)))
    # Where tap t of the box's first output reads x.
    tap_starts = [[s + (t - f) * d for s, t, f, d in zip(starts, tap, firsts, window.dilations)]
                  for tap in tap_list]
    begins = [a for a, _ in box.outputs]
    out_box = [b - a for a, b in box.outputs]
    if flat:
        y_shape = y.type.get_shape()
        y_strides = [int(np.prod(y_shape[i + 1:])) for i in range(2, len(y_shape))]
        out_box = [sum((size - 1) * stride for size, stride in zip(out_box, y_strides)) + 1]
    lead = [dim(0), dim(1), dim(2)]
    positions = [dim(3 + i) for i in range(len(out_box))]
    num_dims = 3 + len(out_box)
    if flat:
        inputs = [_flat_view(kb, x, tap_start, out_box[0], 1) for tap_start in tap_starts]
        maps = [affine_map(num_dims, [*lead, *positions])] * len(tap_list)
        y_box = _flat_view(kb, y, begins, out_box[0], 1)
    elif all(s > 1 for s in window.strides):
        extent = [(o - 1) * s + (end - 1 - first) * d + 1 for o, s, (first, end), d
                  in zip(out_box, window.strides, box.taps, window.dilations)]
        inputs = [_block_view(kb, x, starts, extent, 1)] * len(tap_list)
        maps = [affine_map(num_dims, [*lead, *window.taps(positions, [cst(t - f) for t, f
                                                                      in zip(tap, firsts)])])
                for tap in tap_list]
        y_box = _block_view(kb, y, begins, out_box, 1)
    else:
        inputs = [_block_view(kb, x, tap_start, out_box, 1, window.strides) for tap_start in tap_starts]
        maps = [affine_map(num_dims, [*lead, *positions])] * len(tap_list)
        y_box = _block_view(kb, y, begins, out_box, 1)
    count = len(tap_list)
    if edges is not None:
        length = out_box[0]
        inputs += [view_at(kb.builder, edges.masks, m * length, [length]) for m in range(len(edges.masked))]
        inputs += [] if edges.divisors is None else [edges.divisors]
        maps += [affine_map(num_dims, positions)] * (len(inputs) - count)
    maps.append(affine_map(num_dims, [*lead, *positions]))

    def body(b, a):
        values = list(a[:count])
        if edges is not None:
            for m, t in enumerate(edges.masked):
                reads_x = b.cmp("ogt", a[count + m], b.const(0.0))
                values = [b.select(reads_x, v, b.const(edges.init)) if tap[1] == t else v
                          for v, tap in zip(values, tap_list)]
        acc = fold(b, values)
        if finish is None:
            return [acc]
        if edges is not None and edges.divisors is not None:
            return [finish(b, acc, a[count + len(edges.masked)])]
        return [finish(b, acc, None if divisor is None else b.const(divisor))]

    kb.generic(inputs, [y_box], maps, [PARALLEL] * num_dims, body)


def _box_count(window: Window, box: _Box, counted: tuple[Sequence[int], Sequence[int]]) -> int:
    """How many taps of the windows of `box` fall in the counted region [begin, end) of the
    padded input: the same for each of its outputs (the box is one border position per dim,
    or the interior, where every tap reads x)."""
    count = 1
    for (a, _), k, s, d, lo, hi in zip(box.outputs, window.kernel, window.strides, window.dilations,
                                       *counted):
        count *= sum(lo <= a * s + t * d < hi for t in range(k))
    return count


def _max_of_taps(b, values: Sequence[SSAValue]) -> SSAValue:
    """The max of a window's taps, NaN if any is NaN (as arith.maximumf chained).

    `v > acc ? v : acc` is one x86 max instruction; whether a NaN is present is then tested
    once per pair of taps (an unordered compare of two values), where each maximumf tests its
    own operand. MaxPool 3x3 192x30x30 against onnxruntime: 1.5x with maximumf, 0.88x.
    """
    acc = values[0]
    for v in values[1:]:
        acc = b.select(b.cmp("ogt", v, acc), v, acc)
    pairs = zip(values[0::2], [*values[1::2], values[-1]])
    unordered = functools.reduce(b.or_, [b.cmp("uno", u, v) for u, v in pairs])
    return b.select(unordered, b.const(np.nan), acc)


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


# GlobalAveragePool sums planes of fewer elements than this in vector-wide partial sums.
GAP_LANES_BELOW = 64


@lowers("GlobalMaxPool", "GlobalAveragePool")
def lower_global_pool(kb, op, ins, outs) -> None:
    x, y = ins[0], outs[0]
    require_float(op, x)
    shape = x.type.get_shape()
    # One flat axis per channel, not a loop per spatial dim: LLVM vectorises a reduction
    # along its innermost loop only, and a 14- or 7-long row left most lanes idle
    # (GlobalAveragePool 480x14x14: 0.031 ms, 12 GB/s from L2).
    flat = [*shape[:2], int(np.prod(shape[2:]))]
    x, y = reshape_view(kb.builder, x, flat), reshape_view(kb.builder, y, [*shape[:2], 1])
    axes = [2]
    if op.onnx_type == "GlobalMaxPool":
        reduce_into(kb, x, y, axes, -np.inf, lambda b, acc, v: b.max(acc, v), associative=True)
        return
    # A 7x7 plane's sum in LANES-wide partial sums (`reduce_into`'s associative path: the sum
    # is reassociated, as the GEMMs' are): LLVM unrolled a 49-long row and summed 16 channels
    # at a time with gathers (1152x7x7: 0.045-0.055 ms, 0.029-0.039 in lanes, ort 0.024-0.033);
    # from 14x14 on it vectorises the row itself (672x14x14: 0.017 ms, 0.085 in lanes).
    in_lanes = flat[-1] < GAP_LANES_BELOW
    reduce_into(kb, x, y, axes, 0.0, lambda b, acc, v: b.add(acc, v), associative=in_lanes)
    size = float(np.prod(shape[2:]))
    update_in_place(kb, y, lambda b, acc: b.div(acc, b.const(size)))
