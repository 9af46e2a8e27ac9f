"""Resize (opset 11-21; Upsample imports as Resize): nearest, linear and cubic, antialias.

Mirrors https://onnx.ai/onnx/operators/onnx__Resize.html and its reference implementation
(onnx/reference/ops/op_resize.py): resizing is separable, so each resized axis is one
generic that reads a few taps of the previous axis' result. Coordinates and weights are
float32, as onnxruntime computes them, from scales/sizes/roi read at run time when they
are not constants (the output shape is static either way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import math
from xdsl.dialects.builtin import IndexType, MemRefType, NoneType, f32
from xdsl.ir import SSAValue

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, require_kinds
from passes.lowering.rules.movement import constant_input, copy_into, is_empty, normalize_axis
from passes.lowering.utils.linalg_builder import PARALLEL, identity_map

_COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                     "asymmetric", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_SUPPORT = {"linear": 1, "cubic": 2}  # half-width of the interpolation kernel, in input pixels
# float32 like onnxruntime: the reference's float64 rounds some coordinates that land on a
# nearest_mode tie (x.5) the other way. The backend suite passes either way.
COORDINATES = f32


@dataclass(frozen=True)
class _Resize:
    """What one Resize node asks for, with its inputs: scales/sizes/roi as memrefs (run time)
    or arrays (constants)."""

    op: object
    mode: str
    coordinates: str
    nearest: str
    cubic_a: float
    antialias: bool
    exclude_outside: bool
    extrapolation: float
    policy: str
    axes: list[int]  # the axes scales/sizes/roi list, in their order
    in_shape: tuple[int, ...]
    scales: SSAValue | np.ndarray | None
    sizes: SSAValue | np.ndarray | None
    roi: SSAValue | np.ndarray | None


def _operand(op, ins, index: int):
    """Input `index` as a constant array, its memref when computed at run time, or None when
    absent or empty (Resize's way to omit roi/scales/sizes)."""
    if index >= len(ins) or ins[index] is None or isinstance(op.operands[index].type, NoneType):
        return None
    if 0 in ins[index].type.get_shape():
        return None
    value = constant_input(op, index, required=False)
    return ins[index] if value is None else value.reshape(-1)


def _read(op, ins, shape) -> _Resize:
    rank = len(shape)
    mode = op.attr("mode", "nearest")
    coordinates = op.attr("coordinate_transformation_mode", "half_pixel")
    nearest = op.attr("nearest_mode", "round_prefer_floor")
    policy = op.attr("keep_aspect_ratio_policy", "stretch")
    for name, value, allowed in (("mode", mode, ("nearest", *_SUPPORT)),
                                 ("coordinate_transformation_mode", coordinates, _COORDINATE_MODES),
                                 ("nearest_mode", nearest, _NEAREST_MODES),
                                 ("keep_aspect_ratio_policy", policy,
                                  ("stretch", "not_larger", "not_smaller"))):
        if value not in allowed:
            raise UnsupportedError(f"{op.describe()}: {name} '{value}' is not one of "
                                   f"{', '.join(allowed)}")
    axes = op.attr("axes")
    axes = list(range(rank)) if axes is None else [normalize_axis(op, a, rank) for a in axes]
    scales, sizes = _operand(op, ins, 2), _operand(op, ins, 3)
    if (scales is None) == (sizes is None):
        raise UnsupportedError(f"{op.describe()}: exactly one of 'scales' and 'sizes' must be given")
    return _Resize(op, mode, coordinates, nearest, op.attr("cubic_coeff_a", -0.75),
                   bool(op.attr("antialias", 0)) and mode != "nearest",
                   bool(op.attr("exclude_outside", 0)), op.attr("extrapolation_value", 0.0),
                   policy, axes, tuple(shape), scales, sizes,
                   _operand(op, ins, 1) if coordinates == "tf_crop_and_resize" else None)


def _listed(f, values, k: int) -> SSAValue:
    """Element k of a scales/sizes/roi input as a COORDINATES value."""
    if isinstance(values, np.ndarray):
        return f.const(float(values[k]))
    element = f.on(IndexType()).load(values, [f.on(IndexType()).const(k)])
    return f.cast(element, COORDINATES)


def _coordinate(f, r: _Resize, x, scale, k: int, in_size: int, out_size: int):
    """(x_original, outside): the input coordinate output position x maps to, and for
    tf_crop_and_resize whether it falls outside the input (else None)."""
    half = f.const(0.5)
    width = f.mul(scale, f.const(float(in_size)))  # the un-rounded output size
    half_pixel = f.sub(f.div(f.add(x, half), scale), half)
    mode = r.coordinates
    if mode == "half_pixel":
        return half_pixel, None
    if mode == "half_pixel_symmetric":
        adjustment = f.div(f.const(float(out_size)), width)
        offset = f.mul(f.const(in_size / 2), f.sub(f.const(1.0), adjustment))
        return f.add(offset, half_pixel), None
    if mode == "pytorch_half_pixel":
        return (f.const(0.0) if out_size == 1 else half_pixel), None
    if mode == "asymmetric":
        return f.div(x, scale), None
    last = f.const(float(in_size - 1))
    if mode == "align_corners":
        # The un-rounded width, as the reference and the backend suite's expected outputs
        # have it (onnxruntime divides by the integer output length minus 1).
        return f.select(f.compare("eq", width, f.const(1.0)), f.const(0.0),
                        f.div(f.mul(x, last), f.sub(width, f.const(1.0)))), None
    # tf_crop_and_resize: the roi lists all starts, then all ends, per listed axis.
    if r.roi is None:
        raise UnsupportedError(f"{r.op.describe()}: tf_crop_and_resize needs the 'roi' input")
    start, end = _listed(f, r.roi, k), _listed(f, r.roi, k + len(r.axes))
    extent = f.sub(end, start)
    if out_size == 1:
        x_ori = f.add(f.div(f.mul(extent, last), f.const(2.0)), f.mul(start, last))
    else:
        spread = f.div(f.mul(f.mul(x, extent), last), f.const(float(out_size - 1)))
        x_ori = f.add(spread, f.mul(start, last))
    outside = f.or_(f.compare("lt", x_ori, f.const(0.0)), f.compare("gt", x_ori, last))
    return x_ori, outside


def _floor(f, x):
    return f.math(math.FloorOp, x)


def _nearest(f, r: _Resize, x_ori, in_size: int):
    """The input index nearest_mode picks for coordinate x_ori (in [0, in_size - 1])."""
    i = f.on(IndexType())
    low = _floor(f, x_ori)
    index = low
    if r.nearest != "floor":
        ratio, half = f.sub(x_ori, low), f.const(0.5)
        up = {"round_prefer_floor": lambda: f.compare("gt", ratio, half),
              "round_prefer_ceil": lambda: f.compare("ge", ratio, half),
              "ceil": lambda: f.compare("gt", ratio, f.const(0.0))}[r.nearest]()
        index = f.select(up, f.add(low, f.const(1.0)), low)
    return _clamp(i, i.index_from(index), in_size)


def _clamp(i, index, size: int):
    return i.max(i.min(index, i.const(size - 1)), i.const(0))


def _kernel(f, mode: str, a: float, t):
    """The interpolation kernel at distance t >= 0 (linear: the tent; cubic: Keys' with a)."""
    one = f.const(1.0)
    if mode == "linear":
        return f.max(f.sub(one, t), f.const(0.0))
    t2 = f.mul(t, t)
    t3 = f.mul(t2, t)
    near = f.add(f.sub(f.mul(f.const(a + 2), t3), f.mul(f.const(a + 3), t2)), one)
    far = f.add(f.sub(f.mul(f.const(a), t3), f.mul(f.const(5 * a), t2)),
                f.sub(f.mul(f.const(8 * a), t), f.const(4 * a)))
    return f.select(f.compare("le", t, one), near,
                    f.select(f.compare("lt", t, f.const(2.0)), far, f.const(0.0)))


def _first_tap(r: _Resize, in_size: int, out_size: int, scale: float | None) -> int:
    """Offset of the first tap from floor(x): -support + 1 unless antialias stretches the
    kernel by 1/scale. With a run-time scale, scale >= out/in bounds the stretch; taps
    beyond the true kernel get weight 0."""
    support = _SUPPORT[r.mode]
    if not r.antialias:
        return 1 - support
    if scale is None:
        scale = out_size / in_size if out_size else 1.0
        scale *= 1 - 1e-6  # margin: floor(in * scale) == out only bounds scale from below
    return int(np.floor(-support / min(scale, 1.0)) + 1)


def _static_scale(r: _Resize, k: int, in_size: int, out_size: int) -> float | None:
    if isinstance(r.scales, np.ndarray):
        return float(r.scales[k])
    if r.scales is None and r.policy == "stretch":
        return out_size / in_size
    return None  # sizes with keep_aspect_ratio_policy: computed in the body


def _interpolated(f, r: _Resize, source, indices, axis: int, x_ori, scale, in_size: int,
                  first: int):
    """sum_j w_j * source[..., x0 + j, ...] over taps j in [first, 1 - first]."""
    i = f.on(IndexType())
    low = _floor(f, x_ori)
    # The reference puts an integral coordinate at ratio 1 from the pixel before it.
    integral = f.compare("eq", low, x_ori)
    low = f.select(integral, f.sub(low, f.const(1.0)), low)
    ratio = f.sub(x_ori, low)
    stretch = f.min(scale, f.const(1.0)) if r.antialias else f.const(1.0)
    base = i.index_from(low)
    weights, taps = [], []
    for j in range(first, 2 - first):
        distance = f.math(math.AbsFOp, f.sub(f.const(float(j)), ratio))
        weight = _kernel(f, r.mode, r.cubic_a, f.mul(distance, stretch))
        tap = i.add(base, i.const(j))
        if r.exclude_outside:
            inside = i.and_(i.cmp("sge", tap, i.const(0)), i.cmp("slt", tap, i.const(in_size)))
            weight = f.select(inside, weight, f.const(0.0))
        weights.append(weight)
        taps.append(_clamp(i, tap, in_size))
    if r.antialias or r.exclude_outside:
        total = weights[0]
        for w in weights[1:]:
            total = f.add(total, w)
        total = f.select(f.compare("eq", total, f.const(0.0)), f.const(1.0), total)
        weights = [f.div(w, total) for w in weights]
    value = None
    for weight, tap in zip(weights, taps):
        point = f.cast(f.load(source, [*indices[:axis], tap, *indices[axis + 1:]]), COORDINATES)
        term = f.mul(weight, point)
        value = term if value is None else f.add(value, term)
    return value


def _resize_axis(kb, r: _Resize, source, target, axis: int, k: int) -> None:
    """target = source resized along `axis` (listed k-th in scales/sizes/roi)."""
    in_size, out_size = source.type.get_shape()[axis], target.type.get_shape()[axis]
    rank = len(target.type.get_shape())
    first = _first_tap(r, in_size, out_size, _static_scale(r, k, in_size, out_size)) \
        if r.mode != "nearest" else 0

    def body(b, args):
        f = b.on(COORDINATES)
        indices = [b.index(d) for d in range(rank)]
        scale = _scale_value(f, r, k, in_size, out_size)
        x = b.index_to(indices[axis], COORDINATES)
        x_ori, outside = _coordinate(f, r, x, scale, k, in_size, out_size)
        if r.mode == "nearest":
            tap = _nearest(f, r, x_ori, in_size)
            value = b.load(source, [*indices[:axis], tap, *indices[axis + 1:]])
        else:
            value = b.cast(_interpolated(f, r, source, indices, axis, x_ori, scale, in_size,
                                         first), b.type)
        if outside is not None:
            value = b.select(outside, b.const(r.extrapolation), value)
        return [value]

    kb.generic([], [target], [identity_map(rank)], [PARALLEL] * rank, body)


def _scale_value(f, r: _Resize, k: int, in_size: int, out_size: int) -> SSAValue:
    """The scale factor of listed axis k as a COORDINATES value, as the reference derives it."""
    if r.scales is not None:
        return _listed(f, r.scales, k)
    if r.policy == "stretch":  # sizes[k] is then the static output size
        return f.const(out_size / in_size)
    # One scale for all listed axes: the smallest (not_larger) or largest of the ratios.
    ratios = [f.div(_listed(f, r.sizes, j), f.const(float(r.in_shape[a])))
              for j, a in enumerate(r.axes)]
    pick = f.min if r.policy == "not_larger" else f.max
    scale = ratios[0]
    for ratio in ratios[1:]:
        scale = pick(scale, ratio)
    return scale


def _is_identity(r: _Resize, k: int, in_size: int, out_size: int) -> bool:
    """An axis that provably stays as it is: same size, a constant scale of 1, no crop."""
    return (in_size == out_size and r.coordinates != "tf_crop_and_resize"
            and _static_scale(r, k, in_size, out_size) == 1.0)


@lowers("Resize")
def lower_resize(kb, op, ins, outs) -> None:
    x, y = ins[0], outs[0]
    r = _read(op, ins, x.type.get_shape())
    if r.mode != "nearest":
        require_kinds(op, [x], (FLOAT,))
    if is_empty(y):
        return
    if is_empty(x):
        raise UnsupportedError(f"{op.describe()}: cannot resize an empty tensor {x.type}")
    out_shape = y.type.get_shape()
    steps = [(axis, k) for k, axis in enumerate(r.axes)
             if not _is_identity(r, k, x.type.get_shape()[axis], out_shape[axis])]
    if not steps:
        copy_into(kb, x, y)
        return
    source, shape = x, list(x.type.get_shape())
    for n, (axis, k) in enumerate(steps):
        shape[axis] = out_shape[axis]
        target = y if n == len(steps) - 1 else kb.scratch(MemRefType(y.type.element_type, shape))
        _resize_axis(kb, r, source, target, axis, k)
        source = target
