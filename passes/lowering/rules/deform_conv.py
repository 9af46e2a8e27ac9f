"""DeformConv: a 2-D convolution whose every kernel tap samples X at a learned offset
(deformable convolution v1/v2: optional bias B and modulation mask).

Mirrors https://onnx.ai/onnx/operators/onnx__DeformConv.html (opset 19) and its reference
implementation (onnx/reference/ops/op_deform_conv.py): tap (kh, kw) of output (i, j) reads
X[b, c] bilinearly at y = -pad_top + stride_h*i + dilation_h*kh + offset[b, g, kh, kw, 0, i, j]
and x likewise (offset [N, offset_group*kH*kW*2, oH, oW]; g is c's offset group), 0 outside X
(GridSample linear/zeros/align_corners=1 at those pixel coordinates), times
mask[b, g, kh, kw, i, j], then the usual grouped convolution with W and B.

How: as im2col does, one generic gathers the sampled, masked columns
cols[b, c, kh, kw, i, j] (every read clamped into X, an out-of-range tap weighted 0, so no
offset value leaves X), then per group a contraction of W with its columns adds into the
output, which starts as the bias.
"""

from __future__ import annotations

from xdsl.dialects import math
from xdsl.dialects.builtin import IndexType, MemRefType, NoneType

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, require_kinds
from passes.lowering.rules.movement import is_empty
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, dim, identity_map


def _ints(op, name: str, default: list[int]) -> list[int]:
    value = op.attr(name)
    return default if value is None else [int(v) for v in value]


@lowers("DeformConv")
def lower_deform_conv(kb, op, ins, outs) -> None:
    x, w, offset = ins[0], ins[1], ins[2]
    bias = ins[3] if len(ins) > 3 and ins[3] is not None and not isinstance(op.operands[3].type, NoneType) else None
    mask = ins[4] if len(ins) > 4 and ins[4] is not None and not isinstance(op.operands[4].type, NoneType) else None
    out = outs[0]
    require_kinds(op, [x, w, offset, bias, mask], (FLOAT,))
    x_shape, w_shape, out_shape = x.type.get_shape(), w.type.get_shape(), out.type.get_shape()
    if len(x_shape) != 4:
        raise UnsupportedError(f"{op.describe()}: input 'X' has shape {list(x_shape)}; dlc lowers 2-D "
                               "DeformConv ([N, C, H, W]) only")
    n, channels, height, width = x_shape
    out_channels, per_group, kh, kw = w_shape
    _, _, oh, ow = out_shape
    group = int(op.attr("group", 1))
    offset_group = int(op.attr("offset_group", 1))
    strides = _ints(op, "strides", [1, 1])
    dilations = _ints(op, "dilations", [1, 1])
    pads = _ints(op, "pads", [0, 0, 0, 0])
    if channels != per_group * group or out_channels % group or channels % offset_group or \
            list(offset.type.get_shape()) != [n, offset_group * kh * kw * 2, oh, ow]:
        raise UnsupportedError(f"{op.describe()}: shapes X {list(x_shape)}, W {list(w_shape)}, offset "
                               f"{list(offset.type.get_shape())} do not fit group {group} and offset_group "
                               f"{offset_group}")
    if is_empty(out):
        return
    per_offset_group = channels // offset_group
    element = x.type.element_type

    # cols[b, c, p, q, i, j] = mask * X[b, c] sampled at the tap's deformed position.
    cols = kb.scratch(MemRefType(element, [n, channels, kh, kw, oh, ow]))

    def sample(b, args):
        i = b.on(IndexType())
        batch, c, p, q, oi, oj = (b.index(d) for d in range(6))
        g = i.div(c, i.const(per_offset_group))
        tap = i.add(i.mul(g, i.const(kh * kw)), i.add(i.mul(p, i.const(kw)), q))  # (g, p, q) flattened
        dy = b.load(offset, [batch, i.add(i.mul(tap, i.const(2)), i.const(0)), oi, oj])
        dx = b.load(offset, [batch, i.add(i.mul(tap, i.const(2)), i.const(1)), oi, oj])
        base_y = i.add(i.mul(oi, i.const(strides[0])), i.mul(p, i.const(dilations[0])))
        base_x = i.add(i.mul(oj, i.const(strides[1])), i.mul(q, i.const(dilations[1])))
        y = b.add(b.sub(b.index_to(base_y, b.type), b.const(float(pads[0]))), dy)
        xx = b.add(b.sub(b.index_to(base_x, b.type), b.const(float(pads[1]))), dx)
        y0, x0 = b.math(math.FloorOp, y), b.math(math.FloorOp, xx)
        ly, lx = b.sub(y, y0), b.sub(xx, x0)
        one = b.const(1.0)
        total = b.const(0.0)
        for row, wy in ((y0, b.sub(one, ly)), (b.add(y0, one), ly)):
            for col, wx in ((x0, b.sub(one, lx)), (b.add(x0, one), lx)):
                inside = b.and_(b.and_(b.compare("ge", row, b.const(0.0)),
                                       b.compare("le", row, b.const(float(height - 1)))),
                                b.and_(b.compare("ge", col, b.const(0.0)),
                                       b.compare("le", col, b.const(float(width - 1)))))
                r = b.index_from(_clamp(b, row, height))
                s = b.index_from(_clamp(b, col, width))
                pixel = b.select(inside, b.load(x, [batch, c, r, s]), b.const(0.0))
                total = b.add(total, b.mul(b.mul(wy, wx), pixel))
        if mask is not None:
            total = b.mul(total, b.load(mask, [batch, tap, oi, oj]))
        return [total]

    kb.generic([], [cols], [identity_map(6)], [PARALLEL] * 6, sample)

    # out = B (or 0), then per group out[b, o, i, j] += W[o, c, p, q] * cols[b, c, p, q, i, j].
    if bias is not None:
        kb.generic([bias], [out], [affine_map(4, [dim(1)]), identity_map(4)], [PARALLEL] * 4,
                   lambda b, args: [args[0]])
    else:
        kb.fill(out, 0.0)
    per_out = out_channels // group
    loops = 7  # (b, o, i, j, c, p, q)
    for g in range(group):
        w_g = kb.subview(w, [g * per_out, 0, 0, 0], [per_out, per_group, kh, kw])
        cols_g = kb.subview(cols, [0, g * per_group, 0, 0, 0, 0], [n, per_group, kh, kw, oh, ow])
        out_g = kb.subview(out, [0, g * per_out, 0, 0], [n, per_out, oh, ow])
        maps = [affine_map(loops, [dim(1), dim(4), dim(5), dim(6)]),
                affine_map(loops, [dim(0), dim(4), dim(5), dim(6), dim(2), dim(3)]),
                affine_map(loops, [dim(0), dim(1), dim(2), dim(3)])]
        kb.generic([w_g, cols_g], [out_g], maps, [PARALLEL] * 4 + [REDUCTION] * 3,
                   lambda b, args: [b.add(args[2], b.mul(args[0], args[1]))])


def _clamp(b, value, length: int):
    """value clamped to [0, length-1]; NaN gives 0."""
    value = b.select(b.compare("gt", value, b.const(0.0)), value, b.const(0.0))
    top = b.const(float(length - 1))
    return b.select(b.compare("lt", value, top), value, top)
