"""ConvTranspose (1-D/2-D/3-D: strides, pads, output_padding, output_shape, auto_pad,
group, dilations, bias).

Mirrors https://onnx.ai/onnx/operators/onnx__ConvTranspose.html: every input pixel i
scatters x[i] * w[k] to output position i*s + k*d - pad_begin. The scatter is one generic
whose output map is that affine sum, written into a zero buffer wide enough for every
tap; the output is then a window of it plus the bias.
"""

from __future__ import annotations

from xdsl.dialects.builtin import MemRefType

from dialects.diagnostics import UnsupportedError
from passes.lowering.kernels_to_linalg import reshape_view
from passes.lowering.rules import lowers
from passes.lowering.rules.conv import grouped_view
from passes.lowering.rules.movement import is_empty, window
from passes.lowering.rules.reduction import require_float
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, dim, identity_map


def _ints(op, name: str, default: list[int]) -> list[int]:
    value = op.attr(name) or default
    if len(value) != len(default):
        raise UnsupportedError(f"{op.describe()}: attribute {name}={value} should have "
                               f"{len(default)} values")
    return [int(v) for v in value]


def _pads_begin(op, in_spatial, kernel, out_spatial, strides, dilations) -> list[int]:
    """Leading pad per spatial dim, as the spec derives it when output_shape or auto_pad
    SAME_* leave the pads to the compiler (the output size is the result type's)."""
    rank = len(in_spatial)
    auto_pad = op.attr("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return [0] * rank
    if auto_pad == "NOTSET" and op.attr("output_shape") is None:
        return _ints(op, "pads", [0] * 2 * rank)[:rank]
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedError(f"{op.describe()}: auto_pad '{auto_pad}' is not one of NOTSET, "
                               "VALID, SAME_UPPER, SAME_LOWER")
    output_padding = _ints(op, "output_padding", [0] * rank)
    totals = [s * (n - 1) + p + (k - 1) * d + 1 - o for s, n, p, k, d, o in
              zip(strides, in_spatial, output_padding, kernel, dilations, out_spatial)]
    # Floor division, as the reference's Python: a negative total grows the end.
    return [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]


@lowers("ConvTranspose")
def lower_conv_transpose(kb, op, ins, outs) -> None:
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    y = outs[0]
    require_float(op, x)
    x_shape, w_shape, y_shape = x.type.get_shape(), w.type.get_shape(), y.type.get_shape()
    groups = op.attr("group", 1)
    spatial = len(x_shape) - 2
    kernel = list(w_shape[2:])
    if x_shape[1] != w_shape[0] or x_shape[1] % groups or y_shape[1] != w_shape[1] * groups:
        raise UnsupportedError(f"{op.describe()}: input {x.type}, weight {w.type}, output "
                               f"{y.type} and group={groups} are inconsistent")
    if is_empty(y):
        return
    strides = _ints(op, "strides", [1] * spatial)
    dilations = _ints(op, "dilations", [1] * spatial)
    begin = _pads_begin(op, x_shape[2:], kernel, y_shape[2:], strides, dilations)
    # Full scatter extent, shifted right where a negative pad puts output before position 0.
    reach = [(n - 1) * s + (k - 1) * d + 1 for n, s, k, d in zip(x_shape[2:], strides, kernel, dilations)]
    shift = [max(0, -b) for b in begin]
    extent = [max(r + sh, o + b + sh) for r, sh, o, b in zip(reach, shift, y_shape[2:], begin)]
    direct = not any(begin) and not any(shift) and extent == list(y_shape[2:])
    full = y if direct else kb.scratch(MemRefType(y.type.element_type, [*y_shape[:2], *extent]))
    if direct and bias is not None:
        _add_bias(kb, None, bias, y)
    else:
        kb.fill(full, 0.0)
    _scatter(kb, x, w, full, groups, strides, dilations, shift)
    if not direct:
        source = window(kb, full, [0, 0, *(b + sh for b, sh in zip(begin, shift))], y_shape)
        _add_bias(kb, source, bias, y)


def _add_bias(kb, source, bias, y) -> None:
    """y = source + bias[channel] (source None: the bias alone; bias None: a copy)."""
    rank = len(y.type.get_shape())
    inputs = [v for v in (source, bias) if v is not None]
    maps = ([identity_map(rank)] if source is not None else []) + \
        ([affine_map(rank, [dim(1)])] if bias is not None else [])
    kb.generic(inputs, [y], [*maps, identity_map(rank)], [PARALLEL] * rank,
               lambda b, a: [b.add(a[0], a[1]) if len(inputs) == 2 else a[0]])


def _scatter(kb, x, w, full, groups: int, strides, dilations, shift) -> None:
    """full[n, g, m, i*s + k*d + shift] += x[n, g, c, i] * w[g, c, m, k].

    Loops (n, g, m, c, k..., i...); c, k and i are reductions: several (i, k) pairs write
    the same output element, so those loops must not be split between threads.
    """
    spatial = len(strides)
    n, g, m, c = dim(0), dim(1), dim(2), dim(3)
    taps = [dim(4 + j) for j in range(spatial)]
    pixels = [dim(4 + spatial + j) for j in range(spatial)]
    num_dims = 4 + 2 * spatial
    w_shape = w.type.get_shape()
    w_view = reshape_view(kb.builder, w, [groups, w_shape[0] // groups, *w_shape[1:]])
    positions = [i * s + k * d + sh for i, k, s, d, sh in zip(pixels, taps, strides, dilations, shift)]
    kb.generic([grouped_view(kb, x, groups), w_view], [grouped_view(kb, full, groups)],
               [affine_map(num_dims, [n, g, c, *pixels]), affine_map(num_dims, [g, c, m, *taps]),
                affine_map(num_dims, [n, g, m, *positions])],
               [PARALLEL] * 3 + [REDUCTION] * (1 + 2 * spatial),
               lambda b, a: [b.add(a[2], b.mul(a[0], a[1]))])
