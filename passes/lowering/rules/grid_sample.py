"""GridSample: X sampled at the normalised coordinates of a grid (2-D and 3-D, any mode).

Mirrors https://onnx.ai/onnx/operators/onnx__GridSample.html (opset 20; opset 16's 4-D
'bilinear'/'bicubic' import as 'linear'/'cubic') and its reference implementation
(onnx/reference/ops/op_grid_sample.py, torch's GridSampler.h): Y[n, c, *p] interpolates
X[n, c] at grid[n, *p, :], whose last axis lists (x, y[, z]), x for X's last axis. A coordinate
g of an axis of length L denormalises to (g+1)/2 * (L-1) with align_corners, else
((g+1)*L - 1)/2. Outside [x_min, x_max] (0 and L-1 aligned, else -0.5 and L-0.5) 'border'
clamps it to [0, L-1] and 'reflection' reflects it back; 'nearest' rounds it half to even
first. (Except cubic with 'border': as torch and onnxruntime, only each tap is clamped; the
reference clamps the coordinate first, which differs within 2 pixels outside X. No node test
has that pair; a torch export expects torch's answer.) The taps (1 nearest, 2 linear, 4 cubic
with a = -0.75, per axis) read X through the padding mode: 0 outside X ('zeros'), the nearest
edge ('border'), the reflected index ('reflection'); linear and cubic interpolate axis by axis,
the last axis first, as the reference does.

Every index is clamped into X after the padding rule (a NaN coordinate reads X's first
element, as the float compares are ordered), so no grid value makes a read leave X.
"""

from __future__ import annotations

from xdsl.dialects import math
from xdsl.dialects.builtin import IndexType

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, require_kinds
from passes.lowering.rules.movement import is_empty
from passes.lowering.utils.linalg_builder import PARALLEL, identity_map

_MODES = {"linear": "linear", "bilinear": "linear", "nearest": "nearest", "cubic": "cubic",
          "bicubic": "cubic"}
_PADDING = ("zeros", "border", "reflection")
CUBIC_A = -0.75  # the spec's (and torch's) cubic convolution coefficient


def _cubic_weights(b, t):
    """Keys' cubic convolution weights of the taps at -1, 0, 1, 2 for a fraction t in [0, 1)."""
    a = CUBIC_A

    def far(d):  # |d| in [1, 2): ((a*d - 5a)*d + 8a)*d - 4a
        return b.sub(b.mul(b.add(b.mul(b.sub(b.mul(b.const(a), d), b.const(5 * a)), d), b.const(8 * a)), d),
                     b.const(4 * a))

    def near(d):  # |d| in [0, 1): ((a+2)*d - (a+3))*d*d + 1
        return b.add(b.mul(b.mul(b.sub(b.mul(b.const(a + 2), d), b.const(a + 3)), d), d), b.const(1.0))

    one = b.const(1.0)
    return [far(b.add(t, one)), near(t), near(b.sub(one, t)), far(b.sub(b.const(2.0), t))]


def _reflect(b, x, low: float, high: float):
    """x reflected by the near border until it lies in [low, high] (the reference's
    _gs_reflect), in float arithmetic only: the parity of the number of reflections is
    floor(n/2) == n/2, so no float-to-int conversion sees an out-of-range value."""
    span = high - low
    if span <= 0:  # a length-1 aligned axis: every coordinate reflects to its only pixel
        return b.const(low)
    below, above = b.compare("lt", x, b.const(low)), b.compare("gt", x, b.const(high))
    distance = b.select(below, b.sub(b.const(low), x), b.sub(x, b.const(high)))
    turns = b.math(math.FloorOp, b.div(distance, b.const(span)))
    rest = b.sub(distance, b.mul(turns, b.const(span)))
    half = b.mul(turns, b.const(0.5))
    even = b.compare("eq", b.math(math.FloorOp, half), half)
    from_low, from_high = b.add(b.const(low), rest), b.sub(b.const(high), rest)
    reflected_below = b.select(even, from_low, from_high)
    reflected_above = b.select(even, from_high, from_low)
    return b.select(below, reflected_below, b.select(above, reflected_above, x))


@lowers("GridSample")
def lower_grid_sample(kb, op, ins, outs) -> None:
    x, grid = ins
    out = outs[0]
    require_kinds(op, [x, grid], (FLOAT,))
    in_shape, grid_shape, out_shape = x.type.get_shape(), grid.type.get_shape(), out.type.get_shape()
    spatial = list(in_shape[2:])
    dims = len(spatial)
    if dims < 1 or grid_shape[-1] != dims or len(grid_shape) != dims + 2:
        raise UnsupportedError(f"{op.describe()}: input 'grid' has shape {list(grid_shape)}; for 'X' of shape "
                               f"{list(in_shape)} it must be [N, *output spatial ({dims} axes), {dims}]")
    mode = _MODES.get(op.attr("mode", "linear"))
    padding = op.attr("padding_mode", "zeros")
    if mode is None or padding not in _PADDING:
        raise UnsupportedError(f"{op.describe()}: mode '{op.attr('mode', 'linear')}' / padding_mode "
                               f"'{padding}' is not one of {sorted(_MODES)} / {list(_PADDING)}")
    if is_empty(out):
        return
    align = bool(op.attr("align_corners", 0))
    if 0 in spatial:  # nothing to sample: the zeros padding of an empty image (others refuse it)
        if padding != "zeros":
            raise UnsupportedError(f"{op.describe()}: 'X' has an empty spatial axis; padding_mode "
                                   f"'{padding}' has no pixel to read")
        kb.fill(out, 0.0)
        return
    rank = len(out_shape)

    def body(b, args):
        i = b.on(IndexType())
        g = b.on(grid.type.element_type)
        n = b.index(0)
        where = [b.index(d) for d in range(2, rank)]
        coordinates = []
        for axis, length in enumerate(spatial):
            value = b.cast(g.load(grid, [n, *where, i.const(dims - 1 - axis)]), b.type)
            if align:
                low, high = 0.0, float(length - 1)
                x_axis = b.mul(b.mul(b.add(value, b.const(1.0)), b.const(0.5)), b.const(float(length - 1)))
            else:
                low, high = -0.5, length - 0.5
                x_axis = b.mul(b.sub(b.mul(b.add(value, b.const(1.0)), b.const(float(length))), b.const(1.0)),
                               b.const(0.5))
            if mode == "nearest":
                x_axis = b.math(math.RoundEvenOp, x_axis)
            if padding == "border" and mode != "cubic":  # cubic: each tap clamps (torch, onnxruntime)
                outside = b.or_(b.compare("lt", x_axis, b.const(low)), b.compare("gt", x_axis, b.const(high)))
                x_axis = b.select(outside, _clamp(b, x_axis, length), x_axis)
            elif padding == "reflection":
                x_axis = _reflect(b, x_axis, low, high)
            coordinates.append((x_axis, length, low, high))

        def tap(position, length, low, high):
            """(index, valid) of the tap at float `position` (an integer value) of an axis."""
            if padding == "reflection":
                # a reflected tap is a whole number already (the reference's int() changes nothing)
                position = _reflect(b, position, low, high)
            valid = None
            if padding == "zeros":
                valid = b.and_(b.compare("ge", position, b.const(0.0)),
                               b.compare("le", position, b.const(float(length - 1))))
            return b.index_from(_clamp(b, position, length)), valid

        def pixel(indices, valids):
            value = b.load(x, [n, b.index(1), *indices])
            valids = [v for v in valids if v is not None]
            if not valids:
                return value
            ok = valids[0]
            for v in valids[1:]:
                ok = b.and_(ok, v)
            return b.select(ok, value, b.const(0.0))

        if mode == "nearest":
            taps = [tap(position, length, low, high) for position, length, low, high in coordinates]
            return [pixel([t[0] for t in taps], [t[1] for t in taps])]

        offsets = (0, 1) if mode == "linear" else (-1, 0, 1, 2)
        axis_taps, axis_weights = [], []
        for position, length, low, high in coordinates:
            base = b.math(math.FloorOp, position)
            t = b.sub(position, base)
            axis_weights.append([b.sub(b.const(1.0), t), t] if mode == "linear" else _cubic_weights(b, t))
            axis_taps.append([tap(b.add(base, b.const(float(o))), length, low, high) for o in offsets])

        def interpolate(axis, indices, valids):
            """Along `axis` of the pixels whose earlier axes are at `indices` (the last axis first)."""
            if axis == dims:
                return pixel(indices, valids)
            total = None
            for (index, valid), weight in zip(axis_taps[axis], axis_weights[axis]):
                term = b.mul(weight, interpolate(axis + 1, [*indices, index], [*valids, valid]))
                total = term if total is None else b.add(total, term)
            return total

        return [interpolate(0, [], [])]

    kb.generic([], [out], [identity_map(rank)], [PARALLEL] * rank, body)


def _clamp(b, value, length: int):
    """value clamped to [0, length-1]; NaN gives 0 (the ordered compares are false for it)."""
    value = b.select(b.compare("gt", value, b.const(0.0)), value, b.const(0.0))
    top = b.const(float(length - 1))
    return b.select(b.compare("lt", value, top), value, top)
