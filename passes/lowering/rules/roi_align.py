"""RoiAlign: each region of interest pooled to a fixed output_height x output_width grid of
bins, each bin the average (or max) of bilinear samples of X.

Mirrors https://onnx.ai/onnx/operators/onnx__RoiAlign.html (opset 16: coordinate_transformation_mode
half_pixel by default) and its reference implementation (onnx/reference/ops/op_roi_align.py,
onnxruntime's roialign.cc): roi r = (x1, y1, x2, y2) * spatial_scale, shifted by -0.5 for
half_pixel (else its sides are at least 1); a bin of size (h/oh, w/ow) takes
sampling_ratio^2 samples, or ceil(h/oh) x ceil(w/ow) when sampling_ratio is 0. A sample
outside [-1, H] x [-1, W] counts as 0; one inside reads the 4 pixels about max(y, 0), max(x, 0)
(the last row/column repeats at the border). 'avg' divides the sum by the sample count;
'max' takes the largest weighted corner (w1*v1, ..., w4*v4: the spec's and onnxruntime's
definition, not the max of the interpolated values).

The sample count of a bin depends on the roi (read at run time), so each output element runs
an scf.for over its samples with a run-time trip count (the reduction carried in iter_args).
A roi that asks for more than MAX_SAMPLES_PER_AXIS + the map's size samples per bin and axis
(a roi far larger than the feature map: a wrong spatial_scale) fails the run with a DlcError,
as does a batch index outside [0, N); indices are kept inside X either way.
"""

from __future__ import annotations

from xdsl.dialects import math, scf
from xdsl.dialects.builtin import IndexType, IntegerType
from xdsl.ir import Block, Region

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, INT, require_kinds
from passes.lowering.rules.movement import is_empty
from passes.lowering.utils.linalg_builder import PARALLEL, Body, identity_map
from passes.lowering.utils.runtime_checks import error_code, flag_if, status_word

MAX_SAMPLES_PER_AXIS = 64  # past the map's own size: a bin may not ask for more samples than this


@lowers("RoiAlign")
def lower_roi_align(kb, op, ins, outs) -> None:
    x, rois, batch_indices = ins
    out = outs[0]
    require_kinds(op, [x, rois], (FLOAT,))
    require_kinds(op, [batch_indices], (INT,))
    n_images, _, height, width = _shape4(op, x)
    n_rois, _, out_h, out_w = out.type.get_shape()
    if list(rois.type.get_shape()) != [n_rois, 4] or list(batch_indices.type.get_shape()) != [n_rois]:
        raise UnsupportedError(f"{op.describe()}: inputs 'rois' {list(rois.type.get_shape())} and "
                               f"'batch_indices' {list(batch_indices.type.get_shape())} must be "
                               f"[{n_rois}, 4] and [{n_rois}]")
    mode = op.attr("mode", "avg")
    transform = op.attr("coordinate_transformation_mode", "half_pixel")
    if mode not in ("avg", "max") or transform not in ("half_pixel", "output_half_pixel"):
        raise UnsupportedError(f"{op.describe()}: mode '{mode}' / coordinate_transformation_mode "
                               f"'{transform}' is not avg or max / half_pixel or output_half_pixel")
    if is_empty(out):
        return
    if height == 0 or width == 0 or n_images == 0:
        raise UnsupportedError(f"{op.describe()}: input 'X' of shape {list(x.type.get_shape())} has "
                               "no pixel to sample")
    ratio = int(op.attr("sampling_ratio", 0))
    if ratio < 0:
        raise UnsupportedError(f"{op.describe()}: sampling_ratio {ratio} is negative")
    scale = float(op.attr("spatial_scale", 1.0))
    half_pixel = transform == "half_pixel"
    status = status_word(kb)
    bad_batch = error_code(op, f"{op.describe()}: input 'batch_indices' holds an index outside "
                               f"[0, {n_images})")
    limits = (height + MAX_SAMPLES_PER_AXIS, width + MAX_SAMPLES_PER_AXIS)
    too_many = error_code(op, f"{op.describe()}: a roi asks for more than {limits[0]} x {limits[1]} "
                              "sampling points per bin (it is far larger than the feature map: check "
                              "spatial_scale, or set sampling_ratio)")

    def body(b, args):
        i = b.on(IndexType())
        r, c, bin_y, bin_x = (b.index(d) for d in range(4))
        image = b.index_from(b.on(batch_indices.type.element_type).load(batch_indices, [r]))
        outside = i.cmp("uge", image, i.const(n_images))  # negative ones too, as unsigned
        flag_if(b, status, outside, bad_batch)
        image = b.select(outside, i.const(0), image)
        corner = [b.cast(b.on(rois.type.element_type).load(rois, [r, i.const(k)]), b.type) for k in range(4)]
        offset = b.const(0.5 if half_pixel else 0.0)
        start_x, start_y, end_x, end_y = (b.sub(b.mul(v, b.const(scale)), offset) for v in corner)
        roi_w, roi_h = b.sub(end_x, start_x), b.sub(end_y, start_y)
        if not half_pixel:
            roi_w, roi_h = b.max(roi_w, b.const(1.0)), b.max(roi_h, b.const(1.0))
        bin_h, bin_w = b.div(roi_h, b.const(float(out_h))), b.div(roi_w, b.const(float(out_w)))
        if ratio > 0:
            grid_h, grid_w = i.const(ratio), i.const(ratio)
            count = b.const(float(ratio * ratio))
        else:
            grid_h = _sample_count(b, i, bin_h, limits[0], status, too_many)
            grid_w = _sample_count(b, i, bin_w, limits[1], status, too_many)
            count = b.max(b.index_to(i.mul(grid_h, grid_w), b.type), b.const(1.0))
        y_base = b.add(start_y, b.mul(b.index_to(bin_y, b.type), bin_h))
        x_base = b.add(start_x, b.mul(b.index_to(bin_x, b.type), bin_w))
        y_step, x_step = b.div(bin_h, b.index_to(grid_h, b.type)), b.div(bin_w, b.index_to(grid_w, b.type))

        def sample(s: Body, iy, ix):
            """The sample's 4 weighted corners, (w1*v1, w2*v2, w3*v3, w4*v4)."""
            half = s.const(0.5)
            y = s.add(y_base, s.mul(s.add(s.index_to(iy, s.type), half), y_step))
            xx = s.add(x_base, s.mul(s.add(s.index_to(ix, s.type), half), x_step))
            away = s.or_(s.or_(s.compare("lt", y, s.const(-1.0)), s.compare("gt", y, s.const(float(height)))),
                         s.or_(s.compare("lt", xx, s.const(-1.0)), s.compare("gt", xx, s.const(float(width)))))
            (y_low, y_high, ly), (x_low, x_high, lx) = _axis(s, y, height), _axis(s, xx, width)
            one, zero = s.const(1.0), s.const(0.0)
            hy, hx = s.sub(one, ly), s.sub(one, lx)
            corners = []
            for row, wy in ((y_low, hy), (y_high, ly)):
                for col, wx in ((x_low, hx), (x_high, lx)):
                    weight = s.select(away, zero, s.mul(wy, wx))
                    corners.append(s.mul(weight, s.load(x, [image, c, row, col])))
            return corners

        return [_reduce(b, i, grid_h, grid_w, sample, mode, count)]

    rank = 4
    kb.generic([], [out], [identity_map(rank)], [PARALLEL] * rank, body)


def _shape4(op, x):
    shape = x.type.get_shape()
    if len(shape) != 4:
        raise UnsupportedError(f"{op.describe()}: input 'X' has shape {list(shape)}; RoiAlign takes "
                               "[N, C, H, W]")
    return shape


def _sample_count(b, i, bin_size, limit: int, status, code):
    """ceil(bin_size) as an index in [0, limit] (more is flagged; NaN gives 0)."""
    wanted = b.math(math.CeilOp, bin_size)
    too_many = b.compare("gt", wanted, b.const(float(limit)))
    flag_if(b, status, too_many, code)
    wanted = b.select(b.compare("gt", wanted, b.const(0.0)), wanted, b.const(0.0))
    return b.index_from(b.select(too_many, b.const(float(limit)), wanted))


def _axis(s: Body, v, length: int):
    """(low, high, fraction) of a sample coordinate on an axis of `length` pixels (the
    reference's clamp to >= 0 and its repeated last pixel), low/high as in-range indices."""
    v = s.select(s.compare("gt", v, s.const(0.0)), v, s.const(0.0))  # NaN -> 0
    last = s.const(float(length - 1))
    low = s.math(math.FloorOp, v)
    at_end = s.compare("ge", low, last)
    low = s.select(at_end, last, low)
    v = s.select(at_end, last, v)
    high = s.select(at_end, last, s.add(low, s.const(1.0)))
    return s.index_from(low), s.index_from(high), s.sub(v, low)


def _reduce(b: Body, i: Body, grid_h, grid_w, sample, mode: str, count):
    """Sum (avg) or max over the grid_h x grid_w samples: two scf.for loops, the accumulator (and
    for max a 'seen one' flag) in iter_args. avg divides by count; max of no sample is 0."""
    zero, step = i.const(0), i.const(1)
    flag = IntegerType(1)
    inits = [b.const(0.0)] if mode == "avg" else [b.const(0.0), b.const(0, flag)]

    def for_loop(into: Body, upper, carried, fill) -> list:
        """scf.for k in [0, upper) carrying `carried`; fill(Body, k, carried) gives the next."""
        block = Block(arg_types=[IndexType(), *[v.type for v in carried]])
        block.add_op(scf.YieldOp(*fill(Body(block, b.type), block.args[0], list(block.args[1:]))))
        loop = scf.ForOp(zero, upper, step, carried, Region(block))
        into.block.add_op(loop)
        return list(loop.results)

    def one_sample(s: Body, iy, ix, carried):
        corners = sample(s, iy, ix)
        if mode == "avg":
            total = carried[0]
            for v in corners:
                total = s.add(total, v)
            return [total]
        best = corners[0]
        for v in corners[1:]:
            best = s.select(s.compare("gt", v, best), v, best)  # the reference's max(): first wins ties
        better = s.or_(s.xor(carried[1], s.const(1, flag)), s.compare("gt", best, carried[0]))
        return [s.select(better, best, carried[0]), s.const(1, flag)]

    results = for_loop(b, grid_h, inits, lambda s, iy, carried: for_loop(
        s, grid_w, carried, lambda t, ix, inner: one_sample(t, iy, ix, inner)))
    return b.div(results[0], count) if mode == "avg" else results[0]
