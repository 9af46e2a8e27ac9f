"""Conv (1-D/2-D/3-D, groups, pads, auto_pad, strides, dilations, bias).

Mirrors https://onnx.ai/onnx/operators/onnx__Conv.html. float32 2-D convolutions with
enough output channels per group run as im2col + the GEMM micro-kernel; the others
(depthwise, 1-D/3-D, other dtypes) as one linalg.generic. Also holds the sliding-window
arithmetic (`Window`) and explicit padding that the pooling rules share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import MemRefType
from xdsl.ir import SSAValue
from xdsl.ir.affine import AffineExpr

from dialects.diagnostics import UnsupportedError
from passes.lowering.kernels_to_linalg import reshape_view, view_at
from passes.lowering.linalg_builder import PARALLEL, REDUCTION, affine_map, dim, identity_map
from passes.lowering.rules import lowers
from passes.lowering.ukernel_calls import emit_gemm_call, is_f32_memref, take_epilogue


@dataclass(frozen=True)
class Window:
    """A sliding window over the spatial dims: output o, tap k reads padded input o*s + k*d."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    out: tuple[int, ...]

    def padded_extent(self, in_spatial: Sequence[int]) -> tuple[int, ...]:
        """Size of the padded input: the explicit pads, grown where ceil_mode reads past them."""
        reach = [(o - 1) * s + (k - 1) * d + 1
                 for o, s, k, d in zip(self.out, self.strides, self.kernel, self.dilations)]
        return tuple(max(b + n + e, r)
                     for b, n, e, r in zip(self.pads_begin, in_spatial, self.pads_end, reach))

    def taps(self, positions: Sequence[AffineExpr], taps: Sequence[AffineExpr]) -> list[AffineExpr]:
        """Padded-input index read by output `positions` at window `taps` (loop dims)."""
        return [o * s + k * d for o, k, s, d in zip(positions, taps, self.strides, self.dilations)]


def window_of(op, in_spatial: Sequence[int], kernel: Sequence[int],
              out_spatial: Sequence[int]) -> Window:
    """Read strides, dilations, pads and auto_pad of a Conv or pooling op.

    The output size comes from the (shape-inferred) result type, so ceil_mode needs no
    arithmetic here: a window reaching past the explicit pads just reads more padding.
    """
    rank = len(in_spatial)
    strides = _ints(op, "strides", [1] * rank, rank)
    dilations = _ints(op, "dilations", [1] * rank, rank)
    auto_pad = op.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = _ints(op, "pads", [0] * 2 * rank, 2 * rank)
        begin, end = pads[:rank], pads[rank:]
    elif auto_pad == "VALID":
        begin = end = [0] * rank
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        totals = [max(0, (o - 1) * s + (k - 1) * d + 1 - n)
                  for o, s, k, d, n in zip(out_spatial, strides, kernel, dilations, in_spatial)]
        # SAME_UPPER puts the odd extra pad at the end, SAME_LOWER at the beginning.
        small = [t // 2 for t in totals]
        large = [t - t // 2 for t in totals]
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    else:
        raise UnsupportedError(f"{op.describe()}: auto_pad '{auto_pad}' is not one of NOTSET, "
                               "VALID, SAME_UPPER, SAME_LOWER")
    if any(p < 0 for p in (*begin, *end)):
        raise UnsupportedError(f"{op.describe()}: negative pads {[*begin, *end]} are not supported")
    return Window(tuple(kernel), tuple(strides), tuple(dilations), tuple(begin), tuple(end),
                  tuple(out_spatial))


def _ints(op, name: str, default: list[int], length: int) -> list[int]:
    value = op.attr(name) or default
    if len(value) != length:
        raise UnsupportedError(f"{op.describe()}: attribute {name}={value} should have {length} "
                               "values (one per spatial dim)")
    return [int(v) for v in value]


def pad_into(kb, source: SSAValue, target: SSAValue, offsets: Sequence[int], value: float) -> None:
    """target = `value` everywhere, with `source` copied in at `offsets` (one per dim).

    The copy writes through a flat view of `target`: a map result that is a plain loop
    dim must span the operand's whole dim, which a pad at only the end of a dim breaks.
    """
    kb.fill(target, value)
    shape, target_shape = source.type.get_shape(), target.type.get_shape()
    if len(shape) == 1:  # a lone `d0 + 0` would fold back to a plain dim
        source = reshape_view(kb.builder, source, [1, *shape])
        target_shape, offsets = [1, *target_shape], [0, *offsets]
    strides = [int(np.prod(target_shape[i + 1:])) for i in range(len(target_shape))]
    flat = reshape_view(kb.builder, target, [int(np.prod(target_shape))])
    index = dim(0) * strides[0] + offsets[0] * strides[0]
    for i in range(1, len(strides)):
        index = index + (dim(i) + offsets[i]) * strides[i]
    kb.copy(source, flat, affine_map(len(strides), [index]))


def padded_input(kb, x: SSAValue, window: Window, value: float) -> SSAValue:
    """x [N, C, *spatial] padded with `value` as `window` reads it (x itself if it needs none)."""
    shape = x.type.get_shape()
    extent = window.padded_extent(shape[2:])
    if tuple(extent) == tuple(shape[2:]):
        return x
    padded = kb.scratch(MemRefType(x.type.element_type, [*shape[:2], *extent]))
    pad_into(kb, x, padded, [0, 0, *window.pads_begin], value)
    return padded


def grouped_view(kb, buffer: SSAValue, groups: int) -> SSAValue:
    """[A, B, *rest] seen as [A, G, B/G, *rest] (a free view of the contiguous buffer)."""
    a, b, *rest = buffer.type.get_shape()
    return reshape_view(kb.builder, buffer, [a, groups, b // groups, *rest])


def _conv_window(op, x_shape, w_shape, y_shape, groups: int) -> Window:
    """The window of a Conv, after checking its shapes and attributes agree."""
    kernel = list(w_shape[2:])
    if op.attr("kernel_shape") not in (None, kernel):
        raise UnsupportedError(f"{op.describe()}: kernel_shape {op.attr('kernel_shape')} does not "
                               f"match the weight's spatial shape {kernel}")
    if x_shape[1] != w_shape[1] * groups or w_shape[0] % groups:
        raise UnsupportedError(f"{op.describe()}: {x_shape[1]} input channels, weight {w_shape} "
                               f"and group={groups} are inconsistent")
    return window_of(op, x_shape[2:], kernel, y_shape[2:])


# Convolutions with fewer output channels per group than this (depthwise ones) run as a
# direct loop nest: a GEMM with so few rows cannot fill the micro-kernel's register tile.
MIN_GEMM_ROWS = 8
# Output rows shorter than this are summed in order (Body.add in_order): LLVM unrolls such a
# row completely and then vectorises the 3-tap window instead. Depthwise 3x3 against
# onnxruntime, reassociated vs in order: 28 wide 2.87x vs 0.97x, 14 wide 1.94x vs 0.83x,
# 56 wide 1.07x vs 1.28x; AveragePool 3x3 28 wide 3.09x vs 1.21x, 112 wide 1.14x vs 1.30x.
SHORT_ROW = 32
MAX_GEMM_CALLS = 256
MAX_IM2COL_BLOCKS = 8


def _conv_as_gemm(kb, op, x, w, bias, y, window: Window, groups: int) -> bool:
    """Conv as im2col + GEMM micro-kernel calls, one per (image, group).

    Per image and group, Y[Cout_g, OH*OW] = W[Cout_g, Cin_g*KH*KW] @ col[Cin_g*KH*KW, OH*OW]
    (+ bias per row). col is the input itself for a 1x1, stride-1, unpadded conv; else it is
    gathered from the padded input by one copy loop (innermost over output columns).
    """
    x_shape, w_shape, y_shape = x.type.get_shape(), w.type.get_shape(), y.type.get_shape()
    batch, out_channels, spatial = y_shape[0], y_shape[1], y_shape[2:]
    rows = out_channels // groups
    in_group = w_shape[1]
    if (not is_f32_memref(x, w, bias, y) or len(spatial) != 2 or rows < MIN_GEMM_ROWS
            or batch * groups > MAX_GEMM_CALLS):
        return False
    depth = in_group * int(np.prod(w_shape[2:]))
    pixels = int(np.prod(spatial))
    pointwise = (all(k == 1 for k in window.kernel) and all(s == 1 for s in window.strides)
                 and not any(window.pads_begin) and tuple(spatial) == tuple(x_shape[2:]))
    block_rows = spatial[0] if pointwise else _im2col_block_rows(op, depth, spatial)
    blocks = -(-spatial[0] // block_rows)
    if batch * groups * blocks > MAX_GEMM_CALLS:
        block_rows, blocks = spatial[0], 1
    padded = None if pointwise else padded_input(kb, x, window, 0.0)
    block_pixels = block_rows * spatial[1]
    col = None if pointwise else kb.scratch(MemRefType(x.type.element_type, [depth, block_pixels]))
    spec = dict(m=rows, k=depth, a_row_stride=depth, a_k_stride=1, ldc=pixels)
    if bias is not None:
        spec["bias"] = "col"
    epilogue = take_epilogue(kb)  # a residual Add and/or activation applied in the GEMM's store
    residual = epilogue.residual if epilogue is not None else None
    if epilogue is not None and epilogue.activation:
        spec["activation"] = epilogue.activation
    for n in range(batch):
        for g in range(groups):
            channel = g * in_group
            for first_row in range(0, spatial[0], block_rows):
                # Output rows [first_row, first_row + rows_here): their im2col columns, then the
                # GEMM into that column block of Y (row stride: all the pixels).
                rows_here = min(block_rows, spatial[0] - first_row)
                width = rows_here * spatial[1]
                if pointwise:
                    source = view_at(kb.builder, x, (n * x_shape[1] + channel) * pixels, [depth, pixels])
                else:
                    source = view_at(kb.builder, col, 0, [depth, width])
                    _im2col(kb, padded, source, window, n, channel, in_group, first_row, rows_here)
                offset = (n * out_channels + g * rows) * pixels + first_row * spatial[1]
                emit_gemm_call(
                    kb, op, view_at(kb.builder, w, g * rows * depth, [rows, depth]), source,
                    view_at(kb.builder, y, offset, [rows, width], [pixels, 1]),
                    bias_buffer=None if bias is None else view_at(kb.builder, bias, g * rows, [rows]),
                    residual_buffer=None if residual is None
                    else view_at(kb.builder, residual, offset, [rows, width], [pixels, 1]),
                    n=width, ldb=width, **spec)
    return True


def _im2col_block_rows(op, depth: int, spatial) -> int:
    """Output rows per im2col block: its [depth, rows * width] columns take at most half of L2,
    so the GEMM reads them from L2 right after they are written (a whole-image im2col of
    VGG's first layers is 115 MB, streamed through DRAM twice).

    On one thread only: each block is two fork-joins more, and on two threads ResNet-18 ran
    30.5 ms blocked against 28.5 ms whole (on one, 45.7 against 49.9 ms), until a block's
    im2col and GEMM run in one parallel region."""
    from passes.tiling.target_info import target_info

    info = target_info(op.get_toplevel_object())
    height, width = spatial
    if info.threads > 1:
        return height
    budget = info.l2_bytes // 2
    # Each block is one more im2col loop nest for LLVM to optimise: at most MAX_IM2COL_BLOCKS
    # (VGG-19 on one thread: unbounded 357 ms and a 32 s compile, 8 blocks 364 ms and 23 s,
    # whole images 427 ms and 17 s).
    fewest_rows = -(-height // MAX_IM2COL_BLOCKS)
    return max(fewest_rows, min(height, budget // (4 * depth * width)))


def _im2col(kb, padded, col, window: Window, image: int, channel: int, channels: int,
            first_row: int = 0, rows_here: int | None = None) -> None:
    """col[c, kh, kw, oh, ow] = padded[image, channel + c, (first_row + oh)*sh + kh*dh, ow*sw + kw*dw]
    for output rows first_row .. first_row + rows_here (all of them by default)."""
    kh, kw = window.kernel
    oh, ow = window.out
    oh = oh if rows_here is None else rows_here
    c, th, tw, ph, pw = (dim(i) for i in range(5))
    rows, cols = window.taps([ph + first_row, pw], [th, tw])
    col_view = reshape_view(kb.builder, col, [channels, kh, kw, oh, ow])
    # Read the group's channels through a view of exactly that many: `c + 0` folds to a
    # plain dim, whose bound linalg would take from all of padded's channels.
    _, all_channels, height, width = padded.type.get_shape()
    group = view_at(kb.builder, padded, (image * all_channels + channel) * height * width,
                    [channels, height, width])
    kb.generic([group], [col_view], [affine_map(5, [c, rows, cols]), identity_map(5)],
               [PARALLEL] * 5, lambda b, a: [a[0]])


@lowers("Conv")
def lower_conv(kb, op, ins, outs) -> None:
    x, w, bias = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    y = outs[0]
    x_shape, w_shape, y_shape = x.type.get_shape(), w.type.get_shape(), y.type.get_shape()
    groups = op.attr("group", 1)
    window = _conv_window(op, x_shape, w_shape, y_shape, groups)
    if _conv_as_gemm(kb, op, x, w, bias, y, window, groups):
        return

    rank = len(y_shape)
    if bias is not None:  # the accumulation starts from the bias of each output channel
        kb.generic([bias], [y], [affine_map(rank, [dim(1)]), identity_map(rank)],
                   [PARALLEL] * rank, lambda b, a: [a[0]])
    else:
        kb.fill(y, 0.0)

    # Loops (n, g, oc, ic, o_outer..., k..., o_last): the innermost loop walks a contiguous
    # output row, and the taps run inside the outer output positions so that row stays in L1
    # while every tap adds to it (a whole output plane per tap does not fit for large images).
    # Groups are a loop of their own over [N, G, C/G, ...] views of x, w and y.
    spatial = rank - 2
    n, g, oc, ic = dim(0), dim(1), dim(2), dim(3)
    outer = [dim(4 + i) for i in range(spatial - 1)]
    taps = [dim(3 + spatial + i) for i in range(spatial)]
    positions = [*outer, dim(3 + 2 * spatial)]
    num_dims = 4 + 2 * spatial
    x_view = grouped_view(kb, padded_input(kb, x, window, 0.0), groups)
    w_view = reshape_view(kb.builder, w, [groups, w_shape[0] // groups, *w_shape[1:]])
    kb.generic([x_view, w_view], [grouped_view(kb, y, groups)],
               [affine_map(num_dims, [n, g, ic, *window.taps(positions, taps)]),
                affine_map(num_dims, [g, oc, ic, *taps]),
                affine_map(num_dims, [n, g, oc, *positions])],
               [PARALLEL] * 3 + [REDUCTION] + [PARALLEL] * (spatial - 1) + [REDUCTION] * spatial
               + [PARALLEL],
               lambda b, a: [b.add(a[2], b.mul(a[0], a[1]), in_order=y_shape[-1] < SHORT_ROW)])
