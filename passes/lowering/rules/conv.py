"""Conv (1-D/2-D/3-D, groups, pads, auto_pad, strides, dilations, bias).

Mirrors https://onnx.ai/onnx/operators/onnx__Conv.html. float32 KxK convolutions with a
weight filter, and unit-stride 1x1 ones over small maps or deep inputs (`_implicit_pointwise`),
run as an implicit GEMM that reads the padded input in place and stores into y's channel planes
(`_implicit_gemm_conv`); other float32 2-D convolutions with enough output channels per group
run as W @ X or im2col + the GEMM micro-kernel (a 1x1 conv over 1x1 maps as a Gemm with the
weights as B); the others (depthwise, 3-D, other dtypes) as direct loop
nests (`_direct_conv`), depthwise convs on small maps over zero-padded phase planes
(`_phase_flat_conv`), with a Relu/ReLU6/SiLU/HardSwish after them applied as outputs are stored. A 1-D conv
is lowered as the 2-D conv of unit height it is. Also holds the
sliding-window arithmetic (`Window`) and explicit padding that the pooling rules share.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import IndexType, MemRefType
from xdsl.ir import BlockArgument, SSAValue
from xdsl.ir.affine import AffineExpr

from dialects.diagnostics import UnsupportedError
from dialects.gemm_ukernel import vector_registers
from dialects.onnx import WeightOp
from dialects.weights import weights_of
from passes.graph.mark_depthwise_feeders import FEEDS_DEPTHWISE
from passes.graph.utils.layouts import NCHW, NHWC, conv_layouts
from passes.lowering.kernels_to_linalg import reshape_view, view_at
from passes.lowering.rules import lowers
from passes.lowering.rules.winograd import F2X2, F4X4, WinogradForm, covered_extent, winograd_conv
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, cst, dim, identity_map
from passes.lowering.utils.ukernel_calls import emit_gemm_call, is_f32_memref, take_epilogue


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
# An im2col block's columns take at most this share of L2, so the GEMM reads them from L2
# right after they are written (a whole-image im2col of VGG's first layers is 115 MB,
# streamed through DRAM twice).
IM2COL_L2_SHARE = 0.5
# A whole-part im2col's columns cross L3 this many times (written, read back) against a
# blocked one's re-reads of A (`_im2col_plan`).
IM2COL_L3_TRIPS = 2
# The widest register tile (four vectors): every block holds at least one such panel, so a
# user's nr (--tile) always fits.
WIDEST_PANEL_VECTORS = 4


def _take_bias_and_epilogue(kb, spec: dict, bias: SSAValue | None, axis: str) -> SSAValue | None:
    """Put the bias (one per row or column of the GEMM's C, `axis`) and the activation of the
    epilogue this conv takes (a following Relu, SiLU...) into the GEMM `spec`; return the
    epilogue's residual buffer, which the GEMM's store adds, or None."""
    if bias is not None:
        spec["bias"] = axis
    epilogue = take_epilogue(kb)
    if epilogue is not None and epilogue.activation:
        spec["activation"] = epilogue.activation
    return epilogue.residual if epilogue is not None else None


def _conv_as_gemm(kb, op, x, w, bias, y, window: Window, groups: int) -> bool:
    """Conv as GEMM micro-kernel calls, one per (image, group).

    Per image and group, Y[Cout_g, OH*OW] = W[Cout_g, Cin_g*KH*KW] @ col[Cin_g*KH*KW, OH*OW]
    (+ bias per row). col is the input itself for a 1x1, stride-1, unpadded conv; else it is
    im2col of the padded input, which the GEMM builds itself a block of columns at a time
    (`_im2col_plan`, dlc/codegen/im2col.py).
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
    spec = dict(m=rows, n=pixels, k=depth, a_row_stride=depth, a_k_stride=1, ldb=pixels, ldc=pixels)
    if pointwise and FEEDS_DEPTHWISE in op.attributes:
        # Its threads split the output channels, as the depthwise conv that reads them does
        # (passes/graph/mark_depthwise_feeders.py): each core reads back what it wrote.
        spec["split_rows"] = 1
    residual = _take_bias_and_epilogue(kb, spec, bias, "col")
    im2col = scratch = padded = None
    if not pointwise:
        padded = padded_input(kb, x, window, 0.0)
        im2col = _im2col_plan(op, window, in_group, rows, depth, pixels, padded.type.get_shape()[2:])
        spec.update(b_layout="window", ldb=im2col["width"])  # a block: depth x width floats
        if im2col.get("shared"):  # the whole im2col, in panels of any nr up to the widest
            from passes.target_info import target_info

            widest = WIDEST_PANEL_VECTORS * max(target_info(op.get_toplevel_object()).vector_bits // 32, 1)
            size = depth * (pixels + widest - 1)
        else:
            size = im2col["tm"] * im2col["tn"] * depth * spec["ldb"]
        scratch = kb.scratch(MemRefType(x.type.element_type, [size]))
    for n in range(batch):
        for g in range(groups):
            channel = g * in_group
            if pointwise:
                source = view_at(kb.builder, x, (n * x_shape[1] + channel) * pixels, [depth, pixels])
            else:
                _, all_channels, height, width = padded.type.get_shape()
                source = view_at(kb.builder, padded, (n * all_channels + channel) * height * width,
                                 [in_group, height, width])
            offset = (n * out_channels + g * rows) * pixels
            emit_gemm_call(
                kb, op, view_at(kb.builder, w, g * rows * depth, [rows, depth]), source,
                view_at(kb.builder, y, offset, [rows, pixels]),
                bias_buffer=None if bias is None else view_at(kb.builder, bias, g * rows, [rows]),
                residual_buffer=None if residual is None else view_at(kb.builder, residual, offset, [rows, pixels]),
                im2col=im2col, scratch=scratch, **spec)
    return True


def _pointwise_as_row_gemm(kb, op, x, w, bias, y, window: Window, groups: int) -> bool:
    """A 1x1 conv over 1x1 maps (squeeze-and-excitation's fcs) as the Gemm it is:
    Y[N, Cout] = X[N, Cin] @ W[Cout, Cin]^T + bias, the weights packed as a transposed B.

    As `_conv_as_gemm` it would be W @ X with one column per image: the micro-kernel computes
    whole register tiles of columns, so 1 of its 16-64 columns did work (MobileNetV3's SE
    1x1 convs 960->240 and 240->960: 1.5-2.8 GFLOP/s, 0.17-0.26 ms each).
    """
    spatial = y.type.get_shape()[2:]
    if (groups != 1 or int(np.prod(spatial)) != 1 or any(k != 1 for k in window.kernel)
            or x.type.get_shape()[2:] != spatial or any(window.pads_begin)
            or not isinstance(op.operands[1].owner, WeightOp) or not is_f32_memref(x, w, bias, y)):
        return False
    batch, in_channels = x.type.get_shape()[:2]
    out_channels = w.type.get_shape()[0]
    spec = dict(m=batch, n=out_channels, k=in_channels, a_row_stride=in_channels, a_k_stride=1,
                ldb=out_channels, ldc=out_channels, b_trans=1)
    residual = _take_bias_and_epilogue(kb, spec, bias, "row")
    def matrix(value: SSAValue, columns: int) -> SSAValue:
        return reshape_view(kb.builder, value, [value.type.get_shape()[0], columns])

    emit_gemm_call(kb, op, matrix(x, in_channels), matrix(w, in_channels), matrix(y, out_channels),
                   bias_buffer=bias, residual_buffer=None if residual is None else matrix(residual, out_channels),
                   **spec)
    return True


# KxK float convs run as an implicit GEMM (`_implicit_gemm_conv`); False keeps them on
# im2col + W @ col (for A/B measurements).
IMPLICIT_GEMM_CONVS = True
# Unless `--no-winograd` (CompileOptions.winograd), stride-1 3x3 float convs over maps of at
# least WINOGRAD_MIN_PIXELS run as Winograd F(2x2, 3x3) (winograd.py): 16 GEMMs doing 16/36 of
# the direct conv's multiply-adds, between an input and an output transform (ResNet-18 on one
# VM core 24.0 -> 19.1 ms, at two threads 11.7 -> 10.2), or with `--winograd f4` F(4x4, 3x3)
# where it covers the map (1/4 of them: 0.98 -> 0.80 ms for 64 -> 64 over 56x56). Over 7x7
# maps the transformed filter (16/9 of the filter's bytes, streamed once a run) costs more than
# the multiply-adds saved. Results round differently from the direct conv's.
WINOGRAD_CONVS = True
WINOGRAD_MIN_PIXELS = 14 * 14  # pixels its 2x2 output tiles cover (an odd map's overhang counted)
# Smaller maps, down to this, where the channels' harmonic mean (below) is at least twice the
# least: f2 / direct at 1 / 4 / 16 threads on the 16-core Xeon, 512 -> 512 over 12x12 0.60 /
# 0.59 / 0.57, 256 -> 384 0.65 / 0.64 / 0.60, but 64 -> 64 0.80 / 1.32 / 1.33 and 64 -> 128
# 0.72 / 1.06 / 1.35 (`python benchmarks/winograd.py --force`); AlexNet 29.6 -> 29.0 ms and
# ZFNet 49.9 -> 48.0 on one VM thread, their 3x3 convs over 12x12. 7x7 maps stay direct.
WINOGRAD_SMALL_MIN_PIXELS = 10 * 10
# Where the tiles overhang an odd map, the last tile column's and row's output transforms are
# loops of one tile across (scalar), costing in proportion to CO (rows + cols) where the GEMMs
# save in proportion to C CO rows cols: such a conv needs C rows cols >= this (rows + cols),
# over a map of at least WINOGRAD_OVERHANG_MIN_PIXELS. f2 / direct, C rows cols / (rows + cols)
# in brackets, at 1 / 4 / 16 threads on the 16-core Xeon (`python benchmarks/winograd.py
# --force --threads 1,4,16`): 128 -> 192 over 27x27 (896) 0.66 / 0.69 / 0.68, 64 -> 192 over
# 55x55 (896) 0.67 / 1.02 / 0.76; 64 -> 64 over 27x27 (448) 0.80 / 0.83 / 1.42, 48 -> 192 over
# 27x27 (336) 0.79 / 0.92 / 1.24; over 13x13, 256 -> 384 (896) 0.72 / 0.84 / 1.15, 128 -> 128
# (448) 0.85 / 1.06 / 1.66, 64 -> 256 (224) 0.95 / 1.47 / 2.03.
WINOGRAD_OVERHANG_MIN_DEPTH = 896
WINOGRAD_OVERHANG_MIN_PIXELS = 28 * 28  # covered: 27x27 maps and larger
# ...and whose channels' harmonic mean 2 C CO / (C + CO) is at least this: the GEMMs save
# 5 C CO multiply-adds a pixel, the transforms cost in proportion to C + CO. One and two threads
# on the VM, ms direct -> Winograd: 16 -> 64 over 56x56 0.38 -> 0.35 and 0.20 -> 0.30; 32 -> 128
# over 28x28 0.36 -> 0.28 and 0.20 -> 0.20; 48 -> 192 over 14x14 0.19 -> 0.14 and 0.11 -> 0.09;
# 64 -> 64 over 56x56 1.40 -> 0.90 and 0.73 -> 0.63.
WINOGRAD_MIN_HARMONIC_CHANNELS = 64
# 1x1 convs take it where its transposed store (a register transpose per tile, paid once per
# k block) is small next to the tile's k steps, or where W @ X fills the lanes badly
# (`_implicit_pointwise`).
IMPLICIT_GEMM_POINTWISE = True
SMALL_MAP_PIXELS = 64  # 7x7 maps, whose pixels fill the vector lanes worse than channels do
POINTWISE_DEEP = 512
POINTWISE_MID_DEPTH, POINTWISE_MID_PIXELS = 256, 256
POINTWISE_MOST_THREADS = 8


def _implicit_pointwise(pixels: int, depth: int, threads: int, vector_width: int) -> bool:
    """Whether a unit-stride 1x1 conv over `pixels` output pixels from `depth` channels, compiled
    for `threads`, runs as an implicit GEMM rather than W @ X. (A strided one keeps W @ col: its
    window A reads a cache line per k step for 7 of its floats; ResNet-50's 2048 <- 1024 stride
    2 onto 7x7 ran 1.15-1.19x as long at 4-16 threads on the Xeon.)

    Measured (implicit / W @ X per kernel, `dlc run --profile` builds of ResNet-50 on the 16-core
    Xeon, and layers interleaved on Zen 4): 7x7 maps gain on any thread count (2048 <- 512 and
    512 <- 2048: 0.72-0.85 at 1-16 threads, W @ X filling 49 of 64 lanes); 14x14 maps from depth
    256 and 28x28 ones from depth 512 gain up to 8 threads (1024 <- 256, 128 <- 512: 0.85-0.89 at
    4 and 8) but lose at 16 (256 <- 1024: 1.33-1.37), where each core's share of x comes from L3
    and a window A brings in a cache line per k step for 14-28 floats of it; shallow convs lose
    (384 <- 64, 576 <- 96 over 14x14: 1.02-1.04 on Zen 4: few k steps per transposed store).

    With 16 vector registers (AVX2) the window tile is 4 x 24, so each k step brings in a cache
    line of x's plane for 4 pixels, and W @ X's rows of 8 lanes fill 169 pixels to 96%: only
    small maps gain. Zen 1, one thread, `kernels.py --builds`: SqueezeNet's 1000 <- 512 over
    13x13 5.95 -> 5.13 ms as W @ X, its 48/64 <- 256-512 convs 0.15-0.42 -> 0.12-0.34;
    MobileNetV2's 14x14 convs from 384/576 channels 0.35 -> 0.29 and 0.71 -> 0.64."""
    if pixels <= SMALL_MAP_PIXELS:
        return True
    if vector_registers(vector_width) < 32:
        return False
    return threads <= POINTWISE_MOST_THREADS and (
        depth >= POINTWISE_DEEP or (depth >= POINTWISE_MID_DEPTH and pixels <= POINTWISE_MID_PIXELS))


# Activations the micro-kernel applies to C in place after its store (dlc/codegen/
# ukernel_epilogues.py IN_PLACE), reading C's rows: a transposed C has none, so these stay a
# loop of their own, except HardSwish, which it applies in registers before the store
# (IN_REGISTERS_TRANSPOSED: MobileNetV3's stem and its 160 -> 960 convs over 7x7 made a second
# pass over y for it).
_SEPARATE_LOOP_ACTIVATIONS = ("silu",)


def _winograd_form(kb, op, x, w, bias, y, window: Window, groups: int,
                   out_nhwc: bool = False) -> WinogradForm | None:
    """The Winograd form a Conv runs as (`_winograd_refusal`): with `--winograd f4`, F(4x4,
    3x3) where its output tiles cover the map exactly (height and width multiples of 4), else
    F(2x2, 3x3); None for the direct conv, saying why in the kernel's decisions where a
    stride-1 3x3 conv stays direct."""
    refusal = _winograd_refusal(op, x, w, bias, y, window, groups, out_nhwc)
    if refusal is not None:
        if refusal:
            kb.decisions.append(f"{op.describe()} stays a direct conv, not Winograd: {refusal}")
        return None
    shape = y.type.get_shape()
    height, width = shape[1:3] if out_nhwc else shape[2:4]
    from passes.target_info import target_info

    largest = target_info(op.get_toplevel_object()).winograd
    return F4X4 if largest >= F4X4.out and height % 4 == 0 and width % 4 == 0 else F2X2


def _winograd_input(kb, x: SSAValue, form: WinogradForm) -> SSAValue:
    """x [N, C, H, W] padded with zeros as winograd_conv reads it: one row and column before,
    and after up to the output tiles that cover the map, plus one."""
    n, c, height, width = x.type.get_shape()
    extent = [covered_extent(height, form) + 2, covered_extent(width, form) + 2]
    padded = kb.scratch(MemRefType(x.type.element_type, [n, c, *extent]))
    pad_into(kb, x, padded, [0, 0, 1, 1], 0.0)
    return padded


def _winograd_refusal(op, x, w, bias, y, window: Window, groups: int, out_nhwc: bool = False) -> str | None:
    """None where a Conv runs as Winograd (unless `--no-winograd`): a float 2-D conv of one group, 3x3,
    stride 1, no dilation, a zero pad of one on every side, a constant filter, channels whose
    harmonic mean is at least WINOGRAD_MIN_HARMONIC_CHANNELS over a map whose 2x2 output tiles
    cover at least WINOGRAD_MIN_PIXELS pixels (twice that over one of WINOGRAD_SMALL_MIN_PIXELS
    or more); over an odd map, whose last row and column of tiles overhang it, 27x27 or more
    (WINOGRAD_OVERHANG_MIN_PIXELS) and enough input channels (WINOGRAD_OVERHANG_MIN_DEPTH).
    Else why not: "" for a conv of another kind (not a stride-1 3x3 float conv with a constant
    filter, or Winograd off), the rule a stride-1 3x3 conv missed for one the rules keep direct."""
    from passes.target_info import target_info

    target = target_info(op.get_toplevel_object())
    if not (WINOGRAD_CONVS and target.winograd
            and op.onnx_type == "Conv" and groups == 1 and window.kernel == (3, 3)
            and window.strides == (1, 1) and window.dilations == (1, 1)
            and window.pads_begin == (1, 1) and window.pads_end == (1, 1)
            and isinstance(op.operands[1].owner, WeightOp) and is_f32_memref(x, w, y)
            and (bias is None or is_f32_memref(bias))):
        return ""
    _, channels, height, width = x.type.get_shape()
    if out_nhwc:
        _, oh, ow, out_channels = y.type.get_shape()
    else:
        _, out_channels, oh, ow = y.type.get_shape()
    if (oh, ow) != (height, width):
        return ""
    rows, cols = covered_extent(oh) // 2, covered_extent(ow) // 2  # F(2x2)'s tiles
    harmonic, covered = 2 * channels * out_channels / (channels + out_channels), 4 * rows * cols
    shape = f"{channels} -> {out_channels} channels over {oh}x{ow}"
    if covered < WINOGRAD_SMALL_MIN_PIXELS:
        return f"{shape}: too few output tiles ({rows * cols}) to amortise the transformed filter"
    if covered < WINOGRAD_MIN_PIXELS and harmonic < 2 * WINOGRAD_MIN_HARMONIC_CHANNELS:
        return (f"{shape}: on a map this small the channels' harmonic mean must be at least "
                f"{2 * WINOGRAD_MIN_HARMONIC_CHANNELS} (it is {harmonic:.0f})")
    if harmonic < WINOGRAD_MIN_HARMONIC_CHANNELS:
        return (f"{shape}: the transforms would cost what the GEMMs save (the channels' harmonic mean "
                f"{harmonic:.0f} is under {WINOGRAD_MIN_HARMONIC_CHANNELS})")
    if (2 * rows, 2 * cols) != (oh, ow):
        if covered < WINOGRAD_OVERHANG_MIN_PIXELS:
            return f"{shape}: on an odd map this small the overhanging tiles would cost more than the GEMMs save"
        if channels * rows * cols < WINOGRAD_OVERHANG_MIN_DEPTH * (rows + cols):
            return (f"{shape}: the tiles overhanging the odd map would cost more than the GEMMs save "
                    f"({channels} input channels are too few)")
    return None


def _unread_argument(value: SSAValue) -> bool:
    """Whether `value` is a kernel argument, or a whole view of one, that nothing reads yet."""
    from xdsl.dialects import memref

    if any(True for _ in value.uses):
        return False
    while isinstance(value.owner, memref.ReinterpretCastOp):
        value = value.owner.source
        if len(list(value.uses)) != 1:
            return False
    return isinstance(value, BlockArgument)


def _implicit_gemm_conv(kb, op, x, w, bias, y, window: Window, groups: int, out_nhwc: bool = False) -> bool:
    """A KxK conv as an implicit GEMM, per image Y^T[P, Cout] = A @ W^T with the output
    channels in the vector lanes and A read in place from the padded NCHW input: element
    (pixel (oh, ow), (c, i, j)) is padded[c, oh*sh + i*dh, ow*sw + j*dw] (GemmSpec's window A).
    No im2col: the micro-kernel broadcasts mr pixels of one output row, which lie sw floats
    apart (one or two cache lines), against nr output channels of the packed filter, and
    stores the finished tile transposed (in registers) into the channels' planes of Y
    (`c_transposed`), the bias, a residual Add and the activation applied first. Every lane
    does work whatever the map's size (W @ col fills 49 of 64 lanes on a 7x7 map), and threads
    split output rows and channels with nothing shared but the filter, as onnxruntime's NCHWc
    direct convolutions do. With `out_nhwc` (pointwise-convs-nhwc's, for a 1x1 conv reading y)
    y is [N, OH, OW, CO] and the tiles are stored as they are, rows of output channels.
    """
    from dialects.gemm_ukernel import window_conv_tiles
    from passes.target_info import target_info

    x_shape, y_shape = x.type.get_shape(), y.type.get_shape()
    if out_nhwc:
        y_shape = [y_shape[0], y_shape[3], *y_shape[1:3]]
    # The filter must reach the GEMM as a kernel argument nothing else reads, which pack-weights
    # replaces by its packed copy (a Conv's weight; not a QLinearConv's dequantized one).
    target = target_info(op.get_toplevel_object())
    if all(k == 1 for k in window.kernel) and not (
            IMPLICIT_GEMM_POINTWISE and len(y_shape) == 4 and all(s == 1 for s in window.strides)
            and _implicit_pointwise(y_shape[2] * y_shape[3], x_shape[1], target.threads, target.vector_width)):
        return False
    if (not IMPLICIT_GEMM_CONVS or groups != 1 or len(y_shape) != 4
            or op.onnx_type != "Conv" or not isinstance(op.operands[1].owner, WeightOp)
            or not _unread_argument(w) or not is_f32_memref(x, w, bias, y) or y_shape[1] < MIN_GEMM_ROWS
            or 0 in y_shape):
        return False
    batch, channels = x_shape[:2]
    out_channels, (oh, ow) = y_shape[1], y_shape[2:]
    (kh, kw), (sh, sw), (dh, dw) = window.kernel, window.strides, window.dilations
    epilogue = getattr(kb, "epilogue", None)
    if epilogue is not None and epilogue.activation in _SEPARATE_LOOP_ACTIVATIONS and epilogue.residual is not None:
        return False  # act(conv + R) with an in-place activation: the GEMM paths' epilogue
    padded = padded_input(kb, x, window, 0.0)
    hp, wp = padded.type.get_shape()[2:]
    pixels, depth = oh * ow, channels * kh * kw
    spec = dict(m=batch * pixels, n=out_channels, k=depth, a_row_stride=sw, a_k_stride=1, ldb=out_channels,
                ldc=pixels, b_trans=1, a_group=ow, a_group_stride=sh * wp,
                a_image_groups=oh if batch > 1 else 0, a_image_stride=channels * hp * wp if batch > 1 else 0,
                a_window_h=kh, a_window_w=kw, a_window_row=dh * wp, a_window_col=dw, a_window_channel=hp * wp,
                c_transposed=0 if out_nhwc else 1,
                **window_conv_tiles(ow, batch * oh, out_channels, depth, kh * kw, target.vector_width,
                                    target.l2_bytes, target.threads))
    if bias is not None:
        spec["bias"] = "row"
    residual = None
    if epilogue is not None and epilogue.activation not in _SEPARATE_LOOP_ACTIVATIONS:  # else its own loop
        epilogue = take_epilogue(kb)
        residual = epilogue.residual
        if epilogue.activation:
            spec["activation"] = epilogue.activation
    def matrix(buffer: SSAValue, rows: int) -> SSAValue:
        return reshape_view(kb.builder, buffer, [rows, int(np.prod(buffer.type.get_shape())) // rows])

    if out_nhwc:
        spec["ldc"] = out_channels
    c_rows = batch * pixels if out_nhwc else batch * out_channels
    emit_gemm_call(kb, op, matrix(padded, batch * channels), matrix(w, out_channels), matrix(y, c_rows),
                   bias_buffer=bias, residual_buffer=None if residual is None else matrix(residual, c_rows), **spec)
    return True


def _nhwc_conv(kb, op, x, w, bias, y, out_nchw: bool) -> None:
    """A conv that pointwise-convs-nhwc rewrote (x [N, H, W, C], w [CO, C, KH, KW]) as one GEMM
    C[pixel, channel] = A @ W^T, the weights packed as a transposed B, C's rows y's pixels: a 1x1
    stride-1 unpadded conv's A is x itself ([N*H*W, C]); any other's is read in place from the
    padded x (a window A: pixel (oh, ow)'s element (c, i, j) at padded[n, oh*sh + i*dh, ow*sw +
    j*dw, c], so k runs over the weight's own (c, i, j) order). y is [N, OH, OW, CO], or with
    `out_nchw` [N, CO, OH, OW]: the window A's GEMM then stores its tiles transposed into y's
    channel planes (`c_transposed`), as the NCHW implicit GEMM does. The bias, a residual Add (in
    y's layout) and the activation go into the GEMM's store, as for the NCHW paths."""
    from dialects.gemm_ukernel import window_conv_tiles
    from passes.target_info import target_info

    batch, height, width, channels = x.type.get_shape()
    out_channels, in_channels, kh, kw = w.type.get_shape()
    oh, ow = y.type.get_shape()[2:] if out_nchw else y.type.get_shape()[1:3]
    if in_channels != channels or op.attr("group", 1) != 1 or not is_f32_memref(x, w, bias, y):
        raise UnsupportedError(f"{op.describe()}: an NHWC conv off the float GEMM (x "
                               f"{[batch, height, width, channels]}, w {[out_channels, in_channels, kh, kw]}, "
                               f"group {op.attr('group', 1)})",
                               "report this: pointwise-convs-nhwc and the lowering disagree")
    window = window_of(op, [height, width], [kh, kw], [oh, ow])
    (sh, sw), (dh, dw) = window.strides, window.dilations
    depth, pixels = channels * kh * kw, batch * oh * ow
    spec = dict(m=pixels, n=out_channels, k=depth, a_k_stride=1, ldb=out_channels, ldc=out_channels, b_trans=1)
    epilogue = getattr(kb, "epilogue", None)
    if out_nchw and epilogue is not None and epilogue.activation in _SEPARATE_LOOP_ACTIVATIONS:
        # A transposed C has no rows to apply it to in place: the epilogue stays a loop of its own.
        residual = None
        if bias is not None:
            spec["bias"] = "row"
    else:
        residual = _take_bias_and_epilogue(kb, spec, bias, "row")
    pointwise = (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and (oh, ow) == (height, width) and not any(window.pads_begin)
    if pointwise and not out_nchw:  # only a window A's GEMM stores C transposed
        a = reshape_view(kb.builder, x, [pixels, channels])
        spec.update(a_row_stride=channels)
    else:
        padded, hp, wp = padded_nhwc(kb, x, window)
        info = target_info(op.get_toplevel_object())
        a = reshape_view(kb.builder, padded, [batch * hp * wp, channels])
        spec.update(a_row_stride=sw * channels, a_group=ow, a_group_stride=sh * wp * channels,
                    a_image_groups=oh if batch > 1 else 0, a_image_stride=hp * wp * channels if batch > 1 else 0,
                    a_window_h=kh, a_window_w=kw, a_window_row=dh * wp * channels, a_window_col=dw * channels,
                    a_window_channel=1,
                    **window_conv_tiles(ow, batch * oh, out_channels, depth, kh * kw, info.vector_width,
                                        info.l2_bytes, info.threads))

    if out_nchw:
        spec.update(c_transposed=1, ldc=oh * ow)

    def matrix(buffer: SSAValue, columns: int) -> SSAValue:
        return reshape_view(kb.builder, buffer, [int(np.prod(buffer.type.get_shape())) // columns, columns])

    c_columns = oh * ow if out_nchw else out_channels
    emit_gemm_call(kb, op, a, matrix(w, depth), matrix(y, c_columns), bias_buffer=bias,
                   residual_buffer=None if residual is None else matrix(residual, c_columns), **spec)


def padded_nhwc(kb, x: SSAValue, window: Window, value: float = 0.0) -> tuple[SSAValue, int, int]:
    """x [N, H, W, C] padded with `value` as `window` reads it, and the padded height and width
    (x itself when nothing is padded)."""
    n, h, w_, channels = x.type.get_shape()
    hp, wp = window.padded_extent([h, w_])
    if (hp, wp) == (h, w_):
        return x, hp, wp
    padded = kb.scratch(MemRefType(x.type.element_type, [n, hp, wp, channels]))
    pad_into(kb, x, padded, [0, *window.pads_begin, 0], value)
    return padded, hp, wp


def _im2col_plan(op, window: Window, channels: int, rows: int, depth: int, pixels: int, padded_hw) -> dict:
    """The `dlc.im2col` of a convolution's GEMM: its geometry, and its work items.

    Items form a tm x tn grid over Y (row parts x column parts, `thread_grid` for the module's
    thread count); each builds its columns in blocks of `width` columns that take at most
    IM2COL_L2_SHARE of L2, into a buffer of its own, then multiplies that block, so the
    columns are read from the L2 of the core that wrote them (with several threads, im2col
    then GEMM as two loops left half of each GEMM's columns in the other core's L2: 3x3 convs
    scaled 1.42-1.59x on 2 threads). A row part would repeat its column part's im2col, so a
    grid of several row parts (`shared`: small maps of many channels, ResNet-18's 7x7 layers
    512 x 49 x 4608 on 15 row parts at 16 threads) builds the whole im2col once, panels and
    channel ranges split over the threads, into one buffer that every item then reads: on the
    16-core Xeon those layers took 0.70 ms against onnxruntime's 0.31, each of 15 threads
    building all 0.9 MB of columns.
    """
    from dialects.gemm_ukernel import choose_tiles
    from passes.target_info import target_info

    info = target_info(op.get_toplevel_object())
    lanes = max(info.vector_bits // 32, 1)
    mr, nr = choose_tiles(rows, pixels, depth, lanes, info.l1_bytes, info.l2_bytes, "window")[:2]
    panels = -(-pixels // nr)
    taps = window.kernel[0] * window.kernel[1]
    tm, tn = _im2col_grid(-(-rows // mr), panels, info.threads, mr, nr, depth, pixels, taps)
    part = -(-panels // tn) * nr  # columns per column part
    fitting = int(info.l2_bytes * IM2COL_L2_SHARE) // (4 * depth) // nr * nr
    width = max(WIDEST_PANEL_VECTORS * lanes, min(fitting, part))
    # Each block streams the item's rows of A (the weights) again: block only when that costs
    # less than the part's columns going to L3 and back, which is twice their size (written
    # out, read back in). A 14x14 layer, 256 x 2304 weights, 196 columns, one thread: 1.67-1.72
    # ms in three blocks, 1.48-1.61 ms in one; a 28x28 one, 128 x 1152 weights, 784 columns:
    # 0.91 (median) to 0.97 (min) in nine blocks of 96 against one (im2col alone 0.11-0.17 ms
    # against 0.13-0.51, the columns' 3.6 MB no longer through L3; interleaved, thread CPU).
    if -(-rows // tm) * (-(-part // width) - 1) > IM2COL_L3_TRIPS * part:
        width = max(width, part)
    kh, kw = window.kernel
    plan = dict(channels=channels, kh=kh, kw=kw, sh=window.strides[0], sw=window.strides[1],
                dh=window.dilations[0], dw=window.dilations[1], hp=padded_hw[0], wp=padded_hw[1],
                ow=window.out[1], tm=tm, tn=tn, width=width)
    if tm > 1:
        plan["shared"] = 1
    return plan


# What a byte of shared columns costs a GEMM part, as a multiple of a byte it streams from memory:
# the columns of a shared im2col were written by the other cores (dirty lines in their L2),
# where the weights' rows are clean lines every core reads from L3. Fitted to one same-process
# sweep of ResNet-18's layers at 16 threads on the 16-core Xeon (benchmarks/README.md, "Measured
# on the 16 cores (2026-12-03, fifth session)"): at 1 it ordered 4 of the 13 pairs of grids that
# differ by more than 8% wrongly (4 x 4 before 2 x 7 on the 14x14 layers, 2 x 7 ran 0.331 ms
# against 0.423 and 0.168 against 0.230; 15 x 1 before 8 x 2, 0.225 against 0.203); at 2, two;
# from 3 on, none. The layers then take 2 x 7 and 8 x 2 at 16 threads.
SHARED_COLUMN_COST = 3


def _im2col_grid(row_blocks: int, panels: int, threads: int, mr: int, nr: int, depth: int, pixels: int,
                 taps: int) -> tuple[int, int]:
    """`thread_grid` for an im2col conv, its model told where the columns come from. A grid of
    one row part builds each part's columns in L2 blocks from the input (which holds a tap's
    share of their bytes), so they are not streamed; a grid of several row parts shares one
    whole im2col, built in a region of its own (the input read, the columns written to L3,
    split over the threads) and streamed back. Without these terms a 28x28 3x3 conv, 128 x 784 x
    1152, split 2 x 2 at 4 threads (13-row blocks: 65 tiles for its busiest part against 70 in 1
    x 4) and ran 0.75 ms against onnxruntime's 0.43 on the 16-core Xeon."""
    from dialects.gemm_ukernel import CORE_BYTES_PER_S, grid_seconds

    if threads <= 1:
        return 1, 1
    best = None
    for tm in range(1, min(threads, row_blocks) + 1):
        for tn in range(1, min(threads // tm, panels) + 1):
            seconds = grid_seconds(row_blocks, panels, tm, tn, mr=mr, nr=nr, k=depth)
            if tm == 1:
                seconds -= 4 * depth * -(-panels // tn) * nr * (1 - 1 / taps) / CORE_BYTES_PER_S
            else:
                seconds += 2 * 4 * depth * pixels / (tm * tn) / CORE_BYTES_PER_S
                # ... and each part's columns, written by other cores, cost it more than
                # `grid_seconds` charges for bytes read from memory.
                seconds += ((SHARED_COLUMN_COST - 1) * 4 * depth * -(-panels // tn) * nr
                            / CORE_BYTES_PER_S)
            if best is None or (seconds, tm * tn) < best[0]:
                best = (seconds, tm * tn), (tm, tn)
    return best[1]


@lowers("Conv")
def lower_conv(kb, op, ins, outs) -> None:
    x, w, bias = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    y = outs[0]
    x_shape, w_shape, y_shape = x.type.get_shape(), w.type.get_shape(), y.type.get_shape()
    groups = op.attr("group", 1)
    x_layout, y_layout = conv_layouts(op)
    if x_layout == NHWC and groups != 1:  # pointwise-convs-nhwc's depthwise convs
        _nhwc_depthwise_conv(kb, op, x, bias, y)
        return
    if x_layout == NHWC:  # pointwise-convs-nhwc's 1x1 convs
        _nhwc_conv(kb, op, x, w, bias, y, out_nchw=y_layout == NCHW)
        return
    if y_layout == NHWC:  # a KxK conv reading NCHW for a 1x1 conv that reads NHWC
        n, oh, ow, co = y_shape
        window = _conv_window(op, x_shape, w_shape, [n, co, oh, ow], groups)
        form = _winograd_form(kb, op, x, w, bias, y, window, groups, out_nhwc=True)
        if form is not None:
            winograd_conv(kb, op, _winograd_input(kb, x, form), constant_operand(op, 1), bias, y, _activate,
                          out_nhwc=True, form=form)
            return
        if not _implicit_gemm_conv(kb, op, x, w, bias, y, window, groups, out_nhwc=True):
            raise UnsupportedError(f"{op.describe()}: an NHWC output off the implicit-GEMM conv path",
                                   "report this: pointwise-convs-nhwc and the lowering disagree")
        return
    window = _conv_window(op, x_shape, w_shape, y_shape, groups)
    if len(window.kernel) == 1:
        x, w, y, window = _as_unit_height(kb, x, w, y, window)
    if _pointwise_as_row_gemm(kb, op, x, w, bias, y, window, groups):
        return
    form = _winograd_form(kb, op, x, w, bias, y, window, groups)
    if form is not None:
        winograd_conv(kb, op, _winograd_input(kb, x, form), constant_operand(op, 1), bias, y, _activate,
                      form=form)
        return
    if _implicit_gemm_conv(kb, op, x, w, bias, y, window, groups):
        return
    if _conv_as_gemm(kb, op, x, w, bias, y, window, groups):
        return
    if _phase_flat_worthwhile(x, w, window):
        if _row_pitch_conv_fits(x, w, y, window, groups):
            _row_pitch_conv(kb, x, w, bias, y, window)
            return
        taps = _phase_pitch_plan(x, w, y, window, groups) if window.strides != (1, 1) else None
        if taps is not None:
            _phase_pitch_conv(kb, x, w, bias, y, window, taps)
            return
        from passes.target_info import target_info

        lanes = target_info(op.get_toplevel_object()).vector_width
        _phase_flat_conv(kb, x, w, bias, y, window, groups, lanes)
        return
    taps = _phase_pitch_plan(x, w, y, window, groups) if _strided_wide_kernel(x, w, window) else None
    if taps is not None:
        _phase_pitch_conv(kb, x, w, bias, y, window, taps)
        return
    _direct_conv(kb, x, w, bias, y, window, groups)


def _nhwc_depthwise_conv(kb, op, x: SSAValue, bias: SSAValue | None, y: SSAValue) -> None:
    """A float depthwise conv in NHWC (pointwise-convs-nhwc: x [N, H, W, C], w [C, 1, KH, KW] as
    ONNX has it, y [N, OH, OW, C]) with the channels in the vector lanes: every load is a
    contiguous vector of C whatever the map's size or stride, where NCHW rows of 7 or a stride
    of 2 leave lanes empty or need gathers (EfficientNet-B0's 5x5 1152x7x7: 0.118 ms against
    onnxruntime's NCHWc 0.067; 5x5/2 144 from 56x56: 0.300 against 0.149). The filter becomes
    [KH*KW, C] at compile time; x is read in place, one pass per box of outputs whose windows
    read the same taps (`_boxes`: a padded copy of MobileNetV2's 96x112x112 map cost more than
    its conv; threads split the interior's rows, the thin border boxes run on the caller), two
    output columns a pass; the bias starts each sum and the activation after it is applied as
    each output is stored."""
    weights = constant_operand(op, 1)
    if weights is None or not is_f32_memref(x, y):
        raise UnsupportedError(f"{op.describe()}: an NHWC depthwise conv needs a constant float32 weight "
                               "and float32 x and y", "report this: pointwise-convs-nhwc and the lowering disagree")
    n, h, width, c = x.type.get_shape()
    _, _, kh, kw = op.operands[1].type.get_shape()
    _, oh, ow, _ = y.type.get_shape()
    window = window_of(op, [h, width], [kh, kw], [oh, ow])
    boxes = _boxes(window, [h, width])
    source = x
    if boxes is None:  # large pads: a padded copy, read as one box
        source, h, width = padded_nhwc(kb, x, window, 0.0)
        boxes = [_Box(((0, oh), (0, ow)), ((0, kh), (0, kw)))]
        window = Window(window.kernel, window.strides, window.dilations, (0, 0), (0, 0), window.out)
    flat = reshape_view(kb.builder, source, [n * h * width * c])
    taps = kb.constant(op, "depthwise_taps", np.ascontiguousarray(weights.reshape(c, kh * kw).T))
    if bias is None:
        bias = kb.constant(op, "depthwise_bias", np.zeros(c, np.float32))
    activation = _take_activation(kb)

    def combine(b, pairs, params):
        total = params[0] if not pairs else _chained_sum(b, params[0], [b.mul(v, t) for v, t in pairs])
        return _activate(b, total, activation)

    for box in boxes:
        (first, end) = box.outputs[1]
        blocks, rest = divmod(end - first, FLOAT_DEPTHWISE_BLOCK)
        for start, block, count in ((first, FLOAT_DEPTHWISE_BLOCK, blocks),
                                    (first + blocks * FLOAT_DEPTHWISE_BLOCK, 1, rest)):
            if count:
                depthwise_nhwc_columns(kb, y, flat, taps, [bias], (h, width, c), window, box.outputs[0],
                                       start, block, count, box.taps, None, combine)


def constant_operand(op, index: int) -> np.ndarray | None:
    """Operand `index` of `op` when it is a weight (known at compile time), else None."""
    if index >= len(op.operands) or not isinstance(op.operands[index].owner, WeightOp):
        return None
    owner = op.operands[index].owner
    return weights_of(owner.get_toplevel_object()).get(owner.weight_name)


# Output pixels of a row computed together by an NHWC depthwise kernel: their taps overlap (a
# 3x3 stride-1 conv reads 6 input columns for 4 outputs, not 12), and each element of x is
# loaded (and, int8, widened) once per block. 144 channels 56x56 3x3 int8 (benchmarks/int8.py's
# mobile), interleaved in one process: the whole model 0.90 of its time with blocks of one
# pixel; 8 no faster than 4.
DEPTHWISE_BLOCK = 4
# The float kernel's block: its sums run in SUM_CHAINS chains an output, and 4 outputs of a 5x5
# window keep 16 sums and 40 loaded vectors live, past the 32 registers. EfficientNet-B0, one
# thread, `kernels.py --builds`, 4 -> 2: 5x5 240 over 28x28 0.231 -> 0.162 ms, 5x5 672 over
# 14x14 0.151 -> 0.135, the run 8.85 -> 8.72; MobileNetV2's 3x3 convs within noise (4.45 -> 4.47).
FLOAT_DEPTHWISE_BLOCK = 2


def depthwise_nhwc_columns(kb, out: SSAValue, flat: SSAValue, w_taps: SSAValue, params: list[SSAValue],
                           source_dims, window: Window, rows: tuple[int, int], first: int, block: int,
                           blocks: int, taps, load, combine) -> None:
    """out[:, rows, first + block*b + k, :] for b < blocks and k < block of an NHWC depthwise
    conv, in one pass over C innermost, through the taps [i0, i1) x [j0, j1) (`taps`; those
    reading x for every one of these outputs): each input column the block reads is an operand,
    loaded once (`load(b, element)`; None: as it is), and each of the block's pixels an output,
    `combine(b, pairs, channel_params)` of its (loaded x, filter tap) pairs in tap order and
    the values of `params` ([C] buffers) at its channel. `flat` is the source [N, H, W, C]
    (`source_dims` (H, W, C)) flattened, which `window`'s pads offset (0 for a padded copy);
    `w_taps` the filter as [KH*KW, C]."""
    hs, ws, c = source_dims
    _, kw = window.kernel
    sh, sw = window.strides
    dh, dw = window.dilations
    top, left = window.pads_begin
    (i0, i1), (j0, j1) = taps
    n = out.type.get_shape()[0]
    r0, r1 = rows
    columns = sorted({k * sw + j * dw for k in range(block) for j in range(j0, j1)})
    reads = [(i, u) for i in range(i0, i1) for u in columns]
    read_index = {r: t for t, r in enumerate(reads)}
    per_channel = affine_map(4, [dim(3)])

    def read_map(i, u):
        # The block's first output (r0, first) reads x at (r0*sh + i*dh - top, first*sw + u - left).
        offset = (r0 * sh + i * dh - top) * (ws * c) + (first * sw + u - left) * c
        return affine_map(4, [dim(0) * (hs * ws * c) + dim(1) * (sh * ws * c)
                              + dim(2) * (block * sw * c) + dim(3) + offset])

    outputs = [kb.subview(out, [0, r0, first + k, 0], [n, r1 - r0, blocks, c], [1, 1, block, 1])
               for k in range(block)]
    box_taps = [(i, j) for i in range(i0, i1) for j in range(j0, j1)]
    n_reads, n_taps = len(reads), len(box_taps)

    def body(b, a):
        loaded = {}  # read index -> its loaded value, made as the taps first need it (row by row)
        pairs = [[] for _ in range(block)]
        for t, (i, j) in enumerate(box_taps):
            for k in range(block):
                r = read_index[i, k * sw + j * dw]
                if r not in loaded:
                    loaded[r] = a[r] if load is None else load(b, a[r])
                pairs[k].append((loaded[r], a[n_reads + t]))
        channel = list(a[n_reads + n_taps:n_reads + n_taps + len(params)])
        return [combine(b, pairs[k], channel) for k in range(block)]

    kb.generic([flat] * n_reads + [w_taps] * n_taps + list(params), outputs,
               [read_map(i, u) for i, u in reads] + [affine_map(4, [cst(i * kw + j), dim(3)]) for i, j in box_taps]
               + [per_channel] * len(params) + [identity_map(4)] * block, [PARALLEL] * 4, body)


def _as_unit_height(kb, x: SSAValue, w: SSAValue, y: SSAValue, window: Window):
    """A 1-D conv as the 2-D conv it is with a unit height: x [N, C, 1, L], w [O, C/G, 1, K],
    y [N, O, 1, L'] (free views), so it takes the 2-D paths (im2col + GEMM, flat depthwise
    rows). A speech front end's Conv1d 512->512 k3/2 over 3199 samples ran 3.9x onnxruntime
    as a direct loop nest, where the same work as a 1x3 Conv2d ran 0.9x.
    """
    def unit(value: SSAValue) -> SSAValue:
        shape = value.type.get_shape()
        return reshape_view(kb.builder, value, [*shape[:2], 1, shape[2]])

    window = Window((1, *window.kernel), (1, *window.strides), (1, *window.dilations),
                    (0, *window.pads_begin), (0, *window.pads_end), (1, *window.out))
    return unit(x), unit(w), unit(y), window


# Kernels of at most this many taps are unrolled into the loop body, so each output is
# loaded and stored once (a loop over the taps reloads and stores the output row per tap:
# LLVM cannot keep it in registers, not knowing that x and y do not overlap). 5x5 covers
# the depthwise kernels of MobileNet/EfficientNet-like models.
MAX_UNROLLED_TAPS = 25
# Unrolled taps are summed in this many independent chains: one chain of FMAs waits an FMA
# latency per tap for each output vector (depthwise 5x5 480x14x14: 25 dependent FMAs per
# vector, 1.46x onnxruntime).
SUM_CHAINS = 4
# A conv whose border would need more boxes than this (large pads) reads a padded copy of
# its input instead: each box is one more loop nest for LLVM to compile.
MAX_BOXES = 25


# The activations a direct conv applies as it stores each output (`_activate`).
STORED_ACTIVATIONS = ("relu", "relu6", "silu", "hardswish")
# ...of which a direct conv over boxes applies these in one flat pass over its output instead.
IN_PASS_AFTER = ("silu", "hardswish")


def _flat_tap_operands(kb, tap_views: list, w, taps: int, channels: int, masks, mask_count: int,
                       pixels: int, bias) -> tuple[list, list]:
    """The operands and maps of a depthwise conv's flat tap loop over [batch, channels, pixels]:
    each tap's view of the input, each tap's weight per channel, each row mask per pixel, the
    bias per channel, then the output."""
    inputs, maps = list(tap_views), [identity_map(3)] * len(tap_views)
    for t in range(len(tap_views)):
        inputs.append(view_at(kb.builder, w, t, [channels], [taps]))
        maps.append(affine_map(3, [dim(1)]))
    for i in range(mask_count):
        inputs.append(view_at(kb.builder, masks, i * pixels, [pixels], [1]))
        maps.append(affine_map(3, [dim(2)]))
    if bias is not None:
        inputs.append(bias)
        maps.append(affine_map(3, [dim(1)]))
    maps.append(identity_map(3))
    return inputs, maps


def _take_activation(kb) -> str | None:
    """The activation right after a direct conv (no residual Add), which the conv then
    applies as it stores each output: MobileNetV2's depthwise convs otherwise made one more
    in-place pass over their output (4.8 MB at 96x112x112); a SiLU (EfficientNet) one more
    pass over a buffer of its own."""
    epilogue = getattr(kb, "epilogue", None)
    # Only those `_activate` computes: were gemm_epilogue to learn another, it stays unfused.
    if epilogue is None or epilogue.residual is not None or epilogue.activation not in STORED_ACTIVATIONS:
        return None
    return take_epilogue(kb).activation


def _activate(b, value: SSAValue, activation: str | None) -> SSAValue:
    """The activation as its own loop computes it: Relu/ReLU6 with NaN-propagating max/min,
    SiLU as Mul(x, Sigmoid(x)), HardSwish as elementwise.py's x * max(0, min(1, x/6 + 1/2))."""
    if activation is None:
        return value
    assert activation in STORED_ACTIVATIONS, activation  # _take_activation takes no other
    if activation == "silu":
        return b.mul(value, b.sigmoid(value))
    if activation == "hardswish":
        gate = b.add(b.mul(b.const(1 / 6), value), b.const(0.5))
        return b.mul(value, b.max(b.const(0.0), b.min(b.const(1.0), gate)))
    value = b.max(value, b.const(0.0))
    return b.min(value, b.const(6.0)) if activation == "relu6" else value


# A depthwise conv whose interior box (the outputs whose windows lie inside x) holds less
# than this share of its outputs runs on phase planes (`_phase_flat_conv`) instead of
# boxes: each border box is a short scalar loop nest. Depthwise 5x5 960x7x7 (interior 9 of
# 49 outputs) ran 4.8x onnxruntime in 25 boxes.
MIN_INTERIOR_SHARE = 0.8
# A strided depthwise conv whose output rows are shorter than this runs on phase planes,
# whatever its interior: the boxes' interleaved reads of rows this short vectorise poorly
# (3x3/2 192x28x28, interior 169 of 196 outputs: 0.17 ms in boxes, 0.11 on phase planes,
# interleaved; 144x56x56, rows of 28: 0.10-0.14 in boxes, 0.32-0.37 on phase planes).
STRIDED_SHORT_ROW = 16
ROW_PITCH_CONV = True
PHASE_PITCH_CONV = True


def _phase_flat_worthwhile(x: SSAValue, w: SSAValue, window: Window) -> bool:
    """Whether a conv is a 2-D depthwise one with unrolled taps and a small interior, or a
    strided one whose output rows are short."""
    w_shape = w.type.get_shape()
    if (len(window.kernel) != 2 or w_shape[1] != 1 or int(np.prod(window.kernel)) > MAX_UNROLLED_TAPS
            or not is_f32_memref(x, w)):
        return False
    if all(s > 1 for s in window.strides) and window.out[-1] < STRIDED_SHORT_ROW:
        return True
    interior = 1
    for o, s, k, d, p, n in zip(window.out, window.strides, window.kernel, window.dilations,
                                window.pads_begin, x.type.get_shape()[2:]):
        lo = min(o, -(-p // s))
        interior *= max(0, min(o, (n - 1 + p - (k - 1) * d) // s + 1) - lo)
    return interior < MIN_INTERIOR_SHARE * int(np.prod(window.out))


# Strided depthwise convs with kernels at least this wide run as `_phase_pitch_conv` on any map
# (where its plan applies): their boxes are many and their windows wide. Interleaved, thread
# CPU, both orders, boxes -> phase pitch: 5x5/2 144x56x56 + SiLU 0.71-0.76, 240x56x56
# 0.81-0.92, 64x112x112 + SiLU 0.80-0.81; 3x3/2 kept its boxes (96x112x112 + SiLU 0.52 ms
# in boxes, 0.87 on phase planes; 144x56x56 0.11 against 0.14).
STRIDED_WIDE_KERNEL = 5


def _strided_wide_kernel(x: SSAValue, w: SSAValue, window: Window) -> bool:
    """Whether a conv is a 2-D depthwise one, strided both ways, whose unrolled taps span at
    least STRIDED_WIDE_KERNEL in each direction."""
    return (len(window.kernel) == 2 and w.type.get_shape()[1] == 1 and all(s > 1 for s in window.strides)
            and min(window.kernel) >= STRIDED_WIDE_KERNEL and int(np.prod(window.kernel)) <= MAX_UNROLLED_TAPS
            and is_f32_memref(x, w))


def _phase_flat_conv(kb, x: SSAValue, w: SSAValue, bias: SSAValue | None, y: SSAValue,
                     window: Window, groups: int, lanes: int) -> None:
    """A depthwise conv (one input channel per group, 2-D, taps unrolled) as one flat loop per
    channel over zero-padded phase planes, then a copy of the outputs into y.

    The padded input is split into sh x sw phase planes (plane (a, b) holds padded rows
    a, a+sh, ... and columns b, b+sw, ...), so every tap of a strided conv reads one plane
    with unit stride at a fixed offset. Outputs are computed on the planes' row pitch P: the
    output a flat step further reads each plane a flat step further, so one loop of
    ceil((OH-1)*P + OW, lanes) outputs covers the whole map with full vectors, and the
    outputs past OW in each row (their taps wrap into the next row) are never copied out.
    Reads stay inside the planes, which get zero rows at the end to cover the last vector.
    """
    batch, in_channels, height, width = x.type.get_shape()
    out_channels = w.type.get_shape()[0]
    (kh, kw), (sh, sw), (dh, dw) = window.kernel, window.strides, window.dilations
    (ph, pw), (oh, ow) = window.pads_begin, window.out
    pitch = max(ow + (kw - 1) * dw // sw, (width - 1 + pw) // sw + 1)
    length = -(-((oh - 1) * pitch + ow) // lanes) * lanes
    reach = length + ((kh - 1) * dh // sh) * pitch + (kw - 1) * dw // sw
    rows = max(-(-reach // pitch), (height - 1 + ph) // sh + 1)
    plane = rows * pitch
    phase = batch * in_channels * plane
    phases = kb.scratch(MemRefType(x.type.element_type, [sh * sw * phase]))
    kb.fill(phases, 0.0)
    for a, b in itertools.product(range(sh), range(sw)):
        h0, w0 = (a - ph) % sh, (b - pw) % sw  # the first row/column of x in this plane
        count_h, count_w = len(range(h0, height, sh)), len(range(w0, width, sw))
        if not count_h or not count_w:
            continue
        source = view_at(kb.builder, x, h0 * width + w0, [batch, in_channels, count_h, count_w],
                         [in_channels * height * width, height * width, sh * width, sw])
        start = (a * sw + b) * phase + (h0 + ph - a) // sh * pitch + (w0 + pw - b) // sw
        kb.copy(source, view_at(kb.builder, phases, start, [batch, in_channels, count_h, count_w],
                                [in_channels * plane, plane, pitch, 1]))
    out_rows = -(-length // pitch)
    y_flat = kb.scratch(MemRefType(y.type.element_type, [batch * out_channels * out_rows * pitch]))
    per_group = out_channels // groups
    n, g, oc, ic, f = (dim(i) for i in range(5))
    inputs, maps = [], []
    taps = list(itertools.product(range(kh), range(kw)))
    for i, j in taps:
        a, b = i * dh % sh, j * dw % sw
        start = (a * sw + b) * phase + (i * dh // sh) * pitch + j * dw // sw
        inputs.append(view_at(kb.builder, phases, start, [batch, groups, 1, length],
                              [in_channels * plane, plane, plane, 1]))
        maps.append(affine_map(5, [n, g, ic, f]))
    w_view = reshape_view(kb.builder, w, [groups, per_group, 1, kh, kw])
    inputs += [w_view] * len(taps)
    maps += [affine_map(5, [g, oc, ic, cst(i), cst(j)]) for i, j in taps]
    if bias is not None:
        inputs.append(reshape_view(kb.builder, bias, [groups, per_group]))
        maps.append(affine_map(5, [g, oc]))
    maps.append(affine_map(5, [n, g, oc, f]))
    count = len(taps)

    activation = _take_activation(kb)
    # SiLU/HardSwish in the flat loop's whole vectors: in the copy out, over rows of OW
    # (7 at 7x7), they ran 1.8x slower (depthwise 3x3 1152x7x7 + SiLU: 0.17 against 0.09 ms).
    in_taps = activation in IN_PASS_AFTER

    def body(b, args):
        products = [b.mul(args[t], args[count + t]) for t in range(count)]
        total = _chained_sum(b, args[-2] if bias is not None else None, products)
        return [_activate(b, total, activation if in_taps else None)]

    out_plane = out_rows * pitch
    y_view = view_at(kb.builder, y_flat, 0, [batch, groups, per_group, length],
                     [out_channels * out_plane, per_group * out_plane, out_plane, 1])
    kb.generic(inputs, [y_view], maps, [PARALLEL] * 3 + [REDUCTION, PARALLEL], body)
    kb.elementwise([view_at(kb.builder, y_flat, 0, [batch, out_channels, oh, ow],
                            [out_channels * out_plane, out_plane, pitch, 1])], y,
                   lambda b, a: [_activate(b, a[0], None if in_taps else activation)])


def _row_pitch_conv_fits(x: SSAValue, w: SSAValue, y: SSAValue, window: Window, groups: int) -> bool:
    """Whether `_row_pitch_conv` computes this conv: depthwise (one channel in, one out per
    group), stride 1, output rows as long as x's."""
    x_shape, w_shape = x.type.get_shape(), w.type.get_shape()
    return (ROW_PITCH_CONV and window.strides == (1, 1) and w_shape[1] == 1 and groups == x_shape[1] == w_shape[0]
            and window.out[1] == x_shape[3])


def _row_pitch_conv(kb, x: SSAValue, w: SSAValue, bias: SSAValue | None, y: SSAValue, window: Window) -> None:
    """A stride-1 depthwise conv whose output rows are as long as x's (`_row_pitch_conv_fits`)
    as one flat loop per channel over the output, written straight into y.

    On x's own row pitch W, output q reads x at q + (ti*dh - ph)*W + tj*dw - pw for tap (ti, tj):
    x is copied once, whole, between runs of zeros as long as the taps reach before its first
    and after its last element, so the rows above and below x read zeros. A tap whose column
    falls outside x reads the neighbouring row's end instead: each tap column's partial sum is
    selected away there (a select, so a NaN in that row does not leak) by a 0/1 mask over the
    output positions, built once. Phase planes pad the rows instead, on a pitch wider than OW,
    so their outputs need a copy out: over rows of 7, LLVM ran it as gathers and scatters of
    the rows' columns (1152x7x7: 37% of the conv's time, its taps 12%).
    """
    batch, channels, height, width = x.type.get_shape()
    (kh, kw), (dh, dw), (ph, pw) = window.kernel, window.dilations, window.pads_begin
    oh, ow = window.out
    f32 = x.type.element_type
    first = -(ph * width + pw)  # the tap offset reaching furthest back
    last = ((kh - 1) * dh - ph) * width + (kw - 1) * dw - pw
    front = max(0, -first)
    back = max(0, (oh * ow - 1 + last) - (height * width - 1))
    plane = front + height * width + back
    shifts = [tj * dw - pw for tj in range(kw)]
    masked = [t for t, shift in enumerate(shifts) if shift != 0]
    masks = kb.scratch(MemRefType(f32, [max(1, len(masked)) * oh * ow]))
    if masked:
        def mask_body(b, args):
            ib = b.on(IndexType())
            column = ib.remsi(b.index(1), ib.const(ow))
            shift = ib.const(0)
            for i, t in enumerate(masked):  # the row's tap column (few: a chain of selects)
                shift = b.select(ib.compare("eq", b.index(0), ib.const(i)), ib.const(shifts[t]), shift)
            read = ib.add(column, shift)
            inside = ib.and_(ib.compare("ge", read, ib.const(0)), ib.compare("lt", read, ib.const(width)))
            return [b.select(inside, b.const(1.0), b.const(0.0))]

        kb.generic([], [reshape_view(kb.builder, masks, [len(masked), oh * ow])], [identity_map(2)],
                   [PARALLEL] * 2, mask_body)
    # A channel's plane is a row of its own, so that its zeros, its copy of x and the taps
    # run channel by channel in one parallel loop (fuse-parallel-siblings); the copy covers
    # the middle of each plane, so only the runs before and after it are filled.
    planes = kb.scratch(MemRefType(f32, [batch * channels, plane]))
    for offset, length in ((0, front), (front + height * width, back)):
        if length:
            kb.fill(view_at(kb.builder, planes, offset, [batch * channels, length], [plane, 1]), 0.0)
    kb.copy(reshape_view(kb.builder, x, [batch, channels, height * width]),
            view_at(kb.builder, planes, front, [batch, channels, height * width],
                    [channels * plane, plane, 1]))
    taps = list(itertools.product(range(kh), range(kw)))
    inputs, maps = _flat_tap_operands(
        kb, [view_at(kb.builder, planes, front + (ti * dh - ph) * width + tj * dw - pw,
                     [batch, channels, oh * ow], [channels * plane, plane, 1]) for ti, tj in taps],
        w, kh * kw, channels, masks, len(masked), oh * ow, bias)
    count = len(taps)
    activation = _take_activation(kb)

    def body(b, args):
        sums = []
        for tj in range(kw):
            products = [b.mul(args[t], args[count + t]) for t, (_, column) in enumerate(taps) if column == tj]
            partial = _chained_sum(b, None, products)
            if tj in masked:
                keep = b.cmp("ogt", args[2 * count + masked.index(tj)], b.const(0.5))
                partial = b.select(keep, partial, b.const(0.0))
            sums.append(partial)
        total = args[2 * count + len(masked)] if bias is not None else None
        for partial in sums:
            total = partial if total is None else b.add(total, partial, in_order=True)
        return [_activate(b, total, activation)]

    kb.generic(inputs, [reshape_view(kb.builder, y, [batch, channels, oh * ow])], maps, [PARALLEL] * 3, body)


def _phase_pitch_plan(x: SSAValue, w: SSAValue, y: SSAValue, window: Window, groups: int):
    """For a strided depthwise conv: per tap, its phase (a, b) of x's rows and columns and its
    (row, column) offset in that phase's plane, with the planes' rows OW long; None unless every
    phase has at most OW columns (so a plane row holds a phase row)."""
    x_shape, w_shape = x.type.get_shape(), w.type.get_shape()
    if not (PHASE_PITCH_CONV and w_shape[1] == 1 and groups == x_shape[1] == w_shape[0]):
        return None
    height, width = x_shape[2:]
    (kh, kw), (sh, sw), (dh, dw) = window.kernel, window.strides, window.dilations
    (ph, pw), ow = window.pads_begin, window.out[1]
    if any(len(range(b, width, sw)) > ow for b in range(sw)):
        return None
    taps = []
    for ti, tj in itertools.product(range(kh), range(kw)):
        a, b = (ti * dh - ph) % sh, (tj * dw - pw) % sw
        taps.append((a, b, (ti * dh - ph - a) // sh, (tj * dw - pw - b) // sw))
    return taps


def _phase_pitch_conv(kb, x: SSAValue, w: SSAValue, bias: SSAValue | None, y: SSAValue, window: Window,
                      taps) -> None:
    """A strided depthwise conv as `_row_pitch_conv` does a stride-1 one: x's row and column
    phases are copied into planes whose rows are OW long (phase (a, b) holds x[a::sh, b::sw]),
    so output q = oh*OW + ow reads tap t's plane at q + R_t*OW + C_t, one flat loop per channel
    straight into y; a tap column outside its phase's columns is selected away by a mask. The
    phase planes' copy out (rows of 7 or 14 from a wider pitch) was gathers and scatters.
    """
    batch, channels, height, width = x.type.get_shape()
    (kh, kw), (sh, sw) = window.kernel, window.strides
    oh, ow = window.out
    f32 = x.type.element_type
    rows = {a: len(range(a, height, sh)) for a in range(sh)}
    cols = {b: len(range(b, width, sw)) for b in range(sw)}
    offsets = [r * ow + c for _, _, r, c in taps]
    front = max(0, -min(offsets))
    back = max(0, (oh * ow - 1 + max(offsets)) - (max(rows.values()) * ow - 1))
    plane = front + max(rows.values()) * ow + back
    stride = sh * sw * plane  # a channel's planes
    keys = sorted({(c, cols[b]) for _, b, _, c in taps if c < 0 or ow + c > cols[b]})
    masks = kb.scratch(MemRefType(f32, [max(1, len(keys)) * oh * ow]))
    if keys:
        def mask_body(bb, args):
            ib = bb.on(IndexType())
            column = ib.remsi(bb.index(1), ib.const(ow))
            shift, limit = ib.const(0), ib.const(0)
            for i, (c, count) in enumerate(keys):
                here = ib.compare("eq", bb.index(0), ib.const(i))
                shift = bb.select(here, ib.const(c), shift)
                limit = bb.select(here, ib.const(count), limit)
            read = ib.add(column, shift)
            inside = ib.and_(ib.compare("ge", read, ib.const(0)), ib.compare("lt", read, limit))
            return [bb.select(inside, bb.const(1.0), bb.const(0.0))]

        kb.generic([], [reshape_view(kb.builder, masks, [len(keys), oh * ow])], [identity_map(2)],
                   [PARALLEL] * 2, mask_body)
    # A channel's planes are a row of their own, so fuse-parallel-siblings runs the fills, the
    # copies and the taps channel by channel in one parallel loop: a channel's planes are
    # written and read back from L1, in one thread-pool region rather than three or more.
    planes = kb.scratch(MemRefType(f32, [batch * channels, stride]))
    if all(count == ow for count in cols.values()):
        # The copies below write each plane's rows whole: only the runs before and after them
        # need zeros (a fill of the whole planes was a tenth of a 3x3/2 240x28x28 conv).
        for a, b in itertools.product(range(sh), range(sw)):
            start = (a * sw + b) * plane
            for offset, length in ((start, front), (start + front + rows[a] * ow, plane - front - rows[a] * ow)):
                if length:
                    kb.fill(view_at(kb.builder, planes, offset, [batch * channels, length], [stride, 1]), 0.0)
        # One copy per row phase: x's rows read whole, each pair (a run of sw) of columns
        # split over the sw column phases' planes, which lie `plane` apart.
        for a in range(sh):
            if rows[a]:
                source = view_at(kb.builder, x, a * width, [batch, channels, rows[a], ow, sw],
                                 [channels * height * width, height * width, sh * width, sw, 1])
                kb.copy(source, view_at(kb.builder, planes, a * sw * plane + front, [batch, channels, rows[a], ow, sw],
                                        [channels * stride, stride, ow, 1, plane]))
    else:
        kb.fill(planes, 0.0)
        for a, b in itertools.product(range(sh), range(sw)):
            if not rows[a] or not cols[b]:
                continue
            source = view_at(kb.builder, x, a * width + b, [batch, channels, rows[a], cols[b]],
                             [channels * height * width, height * width, sh * width, sw])
            kb.copy(source, view_at(kb.builder, planes, (a * sw + b) * plane + front,
                                    [batch, channels, rows[a], cols[b]], [channels * stride, stride, ow, 1]))
    inputs, maps = _flat_tap_operands(
        kb, [view_at(kb.builder, planes, (a * sw + b) * plane + front + r * ow + c,
                     [batch, channels, oh * ow], [channels * stride, stride, 1]) for a, b, r, c in taps],
        w, kh * kw, channels, masks, len(keys), oh * ow, bias)
    count = len(taps)
    activation = _take_activation(kb)
    key_of = [(c, cols[b]) if (c, cols[b]) in keys else None for _, b, _, c in taps]

    def body(bb, args):
        total = args[2 * count + len(keys)] if bias is not None else None
        for key in [None, *keys]:
            products = [bb.mul(args[t], args[count + t]) for t in range(count) if key_of[t] == key]
            if not products:
                continue
            partial = _chained_sum(bb, None, products)
            if key is not None:
                keep = bb.cmp("ogt", args[2 * count + keys.index(key)], bb.const(0.5))
                partial = bb.select(keep, partial, bb.const(0.0))
            total = partial if total is None else bb.add(total, partial, in_order=True)
        return [_activate(bb, total, activation)]

    kb.generic(inputs, [reshape_view(kb.builder, y, [batch, channels, oh * ow])], maps, [PARALLEL] * 3, body)


@dataclass(frozen=True)
class _Box:
    """Output positions [begin, end) per spatial dim, and the taps [first, end) per dim
    that read x (not padding) for every one of them."""

    outputs: tuple[tuple[int, int], ...]
    taps: tuple[tuple[int, int], ...]


def _direct_conv(kb, x, w, bias, y, window: Window, groups: int) -> None:
    """y = conv(x, w) + bias as direct loop nests, one per box of output positions whose
    windows read the same taps of x (`_boxes`), with no padded copy of x: it cost more than
    the convolution itself (depthwise 3x3/2 96x112x112: 1.02 ms with it, 0.35 ms without).

    A depthwise conv (one input channel per group) with unrolled taps computes each output
    in one go, bias included; the others first set y to the bias and then add to it.
    """
    boxes = _boxes(window, x.type.get_shape()[2:])
    if boxes is None:
        x = padded_input(kb, x, window, 0.0)
        zeros = (0,) * len(window.kernel)
        window = Window(window.kernel, window.strides, window.dilations, zeros, zeros, window.out)
        boxes = _boxes(window, x.type.get_shape()[2:])  # one box: every tap reads x
    w_shape = w.type.get_shape()
    unrolled = int(np.prod(window.kernel)) <= MAX_UNROLLED_TAPS
    one_pass = unrolled and w_shape[1] == 1
    activation = _take_activation(kb) if one_pass else None  # each output is stored once
    # SiLU/HardSwish in the boxes' bodies ran slower than one flat pass after them (depthwise
    # 3x3 144x56x56 + SiLU: 0.42 against 0.38 ms), unlike Relu/ReLU6.
    after = activation if activation in IN_PASS_AFTER else None
    activation = None if after else activation
    rank = len(y.type.get_shape())
    if not one_pass:
        if bias is not None:  # the accumulation starts from the bias of each output channel
            kb.generic([bias], [y], [affine_map(rank, [dim(1)]), identity_map(rank)],
                       [PARALLEL] * rank, lambda b, a: [a[0]])
        else:
            kb.fill(y, 0.0)
    # The interior first: the flat interior writes into the border boxes, which overwrite it.
    boxes.sort(key=lambda box: box.taps != tuple((0, k) for k in window.kernel))
    flat = one_pass and len(boxes) > 1 and _flat_interior(window, x.type.get_shape()[2:],
                                                          y.type.get_shape()[2:])
    for box in boxes:
        y_box = _block_view(kb, y, [a for a, _ in box.outputs], [b - a for a, b in box.outputs],
                            groups)
        if any(first == end for first, end in box.taps):  # its windows read only padding
            if one_pass and bias is not None:
                bias_view = reshape_view(kb.builder, bias, [groups, w_shape[0] // groups])
                kb.generic([bias_view], [y_box],
                           [affine_map(rank + 1, [dim(1), dim(2)]), identity_map(rank + 1)],
                           [PARALLEL] * (rank + 1), lambda b, a: [_activate(b, a[0], activation)])
            elif one_pass:
                kb.fill(y_box, 0.0)
            continue
        # Where the first tap of the box's first output reads x.
        starts = [a * s + first * d - p for (a, _), (first, _), s, d, p in
                  zip(box.outputs, box.taps, window.strides, window.dilations, window.pads_begin)]
        if unrolled:
            _accumulate_unrolled(kb, x, starts, w, bias if one_pass else None, y, box, window,
                                 groups, overwrite=one_pass, flat=flat and box is boxes[0],
                                 activation=activation)
        else:
            _accumulate_looped(kb, x, starts, w, y_box, window, groups, box.taps)
    if after:
        # Over [N, C, pixels]: the pass is split on the channels like the boxes, so that
        # fuse-parallel-siblings runs it in their loop, each channel activated while in cache
        # (one flat pass over y was a second thread-pool region).
        shape = y.type.get_shape()
        rows_y = reshape_view(kb.builder, y, [*shape[:2], int(np.prod(shape[2:]))])
        kb.elementwise([rows_y], rows_y, lambda b, a: [_activate(b, a[0], after)])


def _boxes(window: Window, in_spatial: Sequence[int]) -> list[_Box] | None:
    """The output positions split into boxes over which each tap reads either x or padding
    for every output (None if that takes more than MAX_BOXES boxes).

    Per spatial dim: the interior range, whose windows lie inside x, and each border
    position on its own; boxes are their products (3x3 pad 1: the interior, four edges and
    four corners). A box reads x in place through only the taps that do not hit padding.
    """
    per_dim = []
    for o, s, k, d, p, n in zip(window.out, window.strides, window.kernel, window.dilations,
                                window.pads_begin, in_spatial):
        # Outputs lo .. hi-1 read padded positions o*s .. o*s + (k-1)*d, all within p .. p+n-1.
        lo = min(o, -(-p // s))
        hi = max(lo, min(o, (n - 1 + p - (k - 1) * d) // s + 1))
        per_dim.append([(i, i + 1) for i in range(lo)] + ([(lo, hi)] if lo < hi else [])
                       + [(i, i + 1) for i in range(hi, o)])
    if int(np.prod([len(ranges) for ranges in per_dim])) > MAX_BOXES:
        return None
    taps = [[_taps_reading_x(r, s, k, d, p, n) for r in ranges]
            for ranges, s, k, d, p, n in zip(per_dim, window.strides, window.kernel,
                                              window.dilations, window.pads_begin, in_spatial)]
    return [_Box(tuple(outputs), tuple(box_taps))
            for outputs, box_taps in zip(itertools.product(*per_dim), itertools.product(*taps))]


def _taps_reading_x(outputs: tuple[int, int], s: int, k: int, d: int, p: int, n: int
                    ) -> tuple[int, int]:
    """[first, end) of the taps t with 0 <= o*s + t*d - p < n for every o in outputs."""
    a, b = outputs
    first = max(0, -((a * s - p) // d))
    end = min(k, (n - 1 + p - (b - 1) * s) // d + 1)
    return first, max(first, end)


def _block_view(kb, buffer: SSAValue, starts: Sequence[int], extent: Sequence[int], groups: int,
                steps: Sequence[int] | None = None) -> SSAValue:
    """buffer[:, :, starts .. starts + extent] of a contiguous [N, C, *spatial] buffer as
    [N, G, C/G, *extent], no copy, taking every steps-th element (default 1) of each
    spatial dim."""
    batch, channels, *spatial = full = buffer.type.get_shape()
    strides = [int(np.prod(full[i + 1:])) for i in range(len(full))]
    offset = sum(s * stride for s, stride in zip(starts, strides[2:]))
    strides[2:] = [stride * step for stride, step in zip(strides[2:], steps or [1] * len(spatial))]
    return view_at(kb.builder, buffer, offset, [batch, groups, channels // groups, *extent],
                   [strides[0], strides[1] * (channels // groups), *strides[1:]])


def _accumulate_unrolled(kb, x: SSAValue, starts: Sequence[int], w: SSAValue,
                         bias: SSAValue | None, y: SSAValue, box: _Box, window: Window,
                         groups: int, overwrite: bool, flat: bool = False,
                         activation: str | None = None) -> None:
    """y[box] += sum over the box's taps of x * w, or y[box] = bias + ... when `overwrite`,
    the taps unrolled in the body; the box's first output's first tap reads x at `starts`.

    Loops (n, g, oc, ic, o...): the innermost loop walks a contiguous output row, and each
    output is loaded and stored once. `flat`: the box's rows are walked as one flat row
    from its first output to its last (see `_flat_interior`).
    """
    w_shape = w.type.get_shape()
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
    spatial = len(out_box)
    n, g, oc, ic = dim(0), dim(1), dim(2), dim(3)
    positions = [dim(4 + i) for i in range(spatial)]
    num_dims = 4 + spatial
    if flat:
        inputs = [_flat_view(kb, x, tap_start, out_box[0], groups) for tap_start in tap_starts]
        maps = [affine_map(num_dims, [n, g, ic, *positions])] * len(tap_list)
        y_box = _flat_view(kb, y, begins, out_box[0], groups)
    elif all(step > 1 for step in window.strides):
        # One view of the window, each tap at its own offset in the map: LLVM sees the taps
        # as loads from one pointer and reads them as interleaved groups (whole vectors and
        # shuffles). A view per tap (a pointer each once the loop is outlined for threads)
        # became gathers: depthwise 3x3/2 96x112x112 0.53 ms against 0.35 ms.
        extent = [(o - 1) * s + (end - 1 - first) * d + 1 for o, s, (first, end), d
                  in zip(out_box, window.strides, box.taps, window.dilations)]
        inputs = [_block_view(kb, x, starts, extent, groups)] * len(tap_list)
        maps = [affine_map(num_dims, [n, g, ic, *window.taps(positions, [cst(t - f) for t, f
                                                                        in zip(tap, firsts)])])
                for tap in tap_list]
        y_box = _block_view(kb, y, begins, out_box, groups)
    else:
        # A view per tap, [N, G, C/G, *outputs] from the tap's first element: a stride-1 tap
        # in the map (`o + 0` is `o`) would make linalg take the loop bound from the window.
        inputs = [_block_view(kb, x, tap_start, out_box, groups, window.strides)
                  for tap_start in tap_starts]
        maps = [affine_map(num_dims, [n, g, ic, *positions])] * len(tap_list)
        y_box = _block_view(kb, y, begins, out_box, groups)
    w_view = reshape_view(kb.builder, w, [groups, w_shape[0] // groups, *w_shape[1:]])
    inputs += [w_view] * len(tap_list)
    maps += [affine_map(num_dims, [g, oc, ic, *(cst(t) for t in tap)]) for tap in tap_list]
    if bias is not None:
        inputs.append(reshape_view(kb.builder, bias, [groups, w_shape[0] // groups]))
        maps.append(affine_map(num_dims, [g, oc]))
    maps.append(affine_map(num_dims, [n, g, oc, *positions]))
    count = len(tap_list)

    def body(b, a):
        products = [b.mul(a[t], a[count + t]) for t in range(count)]
        start = a[-2] if bias is not None else None if overwrite else a[-1]
        return [_activate(b, _chained_sum(b, start, products), activation)]

    kb.generic(inputs, [y_box], maps, [PARALLEL] * 3 + [REDUCTION] + [PARALLEL] * spatial, body)


def _chained_sum(b, start, terms):
    """start + the sum of `terms` as SUM_CHAINS independent chains added pairwise, in that
    order (in_order: LLVM would linearise a reassociable tree back into one chain; each
    product still contracts into its chain's FMA)."""
    chains = [terms[i::SUM_CHAINS] for i in range(min(SUM_CHAINS, len(terms)))]
    if start is not None:
        chains[0] = [start, *chains[0]]
    sums = []
    for chain in chains:
        acc = chain[0]
        for term in chain[1:]:
            acc = b.add(acc, term, in_order=True)
        sums.append(acc)
    while len(sums) > 1:
        sums = [b.add(*sums[i:i + 2], in_order=True) if i + 1 < len(sums) else sums[i]
                for i in range(0, len(sums), 2)]
    return sums[0]


def _flat_view(kb, buffer: SSAValue, starts: Sequence[int], length: int, groups: int) -> SSAValue:
    """[N, G, C/G, length]: `length` consecutive elements of each channel plane of a
    contiguous [N, C, *spatial] buffer from position `starts`, no copy."""
    full = buffer.type.get_shape()
    batch, channels = full[:2]
    strides = [int(np.prod(full[i + 1:])) for i in range(len(full))]
    offset = sum(s * stride for s, stride in zip(starts, strides[2:]))
    return view_at(kb.builder, buffer, offset, [batch, groups, channels // groups, length],
                   [strides[0], strides[1] * (channels // groups), strides[1], 1])


def _flat_interior(window: Window, x_spatial: Sequence[int], y_spatial: Sequence[int]) -> bool:
    """Whether the interior box may run as one flat row per channel: a stride-1 conv whose
    input and output planes have the same row pitch (pads keep the size), so that the
    output a flat step further reads the input a flat step further for every tap.

    The flat row also covers the border outputs between two interior rows; they get
    wrong sums (their taps wrap around into the next row), which the border boxes,
    computed after the interior, overwrite. Its reads stay between the first and the last
    interior output's windows, inside x. Depthwise 3x3 960x7x7 against onnxruntime: 1.42x
    with rows of 5 (LLVM vectorised across the rows, with masked gathers), 0.96x flat;
    384x14x14 0.89x and 0.79x.
    """
    x_strides = [int(np.prod(x_spatial[i + 1:])) for i in range(len(x_spatial))]
    y_strides = [int(np.prod(y_spatial[i + 1:])) for i in range(len(y_spatial))]
    return len(x_spatial) > 1 and all(
        s * xs == ys for s, xs, ys in zip(window.strides, x_strides, y_strides))


def _accumulate_looped(kb, x: SSAValue, starts: Sequence[int], w: SSAValue, y: SSAValue,
                       window: Window, groups: int, taps: Sequence[tuple[int, int]]) -> None:
    """y += conv(x, w) over `taps` with a loop over them (kernels too large to unroll); the
    other arguments as in `_accumulate_unrolled`.

    Loops (n, g, oc, ic, o_outer..., k..., o_last): the innermost loop walks a contiguous
    output row, and the taps run inside the outer output positions so that row stays in L1
    while every tap adds to it (a whole output plane per tap does not fit for large images).
    """
    w_shape = w.type.get_shape()
    out_box = y.type.get_shape()[3:]
    spatial = len(window.kernel)
    n, g, oc, ic = dim(0), dim(1), dim(2), dim(3)
    outer = [dim(4 + i) for i in range(spatial - 1)]
    tap_dims = [dim(3 + spatial + i) for i in range(spatial)]
    positions = [*outer, dim(3 + 2 * spatial)]
    num_dims = 4 + 2 * spatial
    extent = [(o - 1) * s + (end - 1 - first) * d + 1
              for o, s, (first, end), d in zip(out_box, window.strides, taps, window.dilations)]
    w_strides = [int(np.prod(w_shape[i + 1:])) for i in range(len(w_shape))]
    w_offset = sum(first * stride for (first, _), stride in zip(taps, w_strides[2:]))
    w_taps = [end - first for first, end in taps]
    w_view = view_at(kb.builder, w, w_offset, [groups, w_shape[0] // groups, w_shape[1], *w_taps],
                     [w_strides[0] * (w_shape[0] // groups), *w_strides])
    in_order = out_box[-1] < SHORT_ROW
    kb.generic([_block_view(kb, x, starts, extent, groups), w_view], [y],
               [affine_map(num_dims, [n, g, ic, *window.taps(positions, tap_dims)]),
                affine_map(num_dims, [g, oc, ic, *tap_dims]),
                affine_map(num_dims, [n, g, oc, *positions])],
               [PARALLEL] * 3 + [REDUCTION] + [PARALLEL] * (spatial - 1) + [REDUCTION] * spatial
               + [PARALLEL],
               lambda b, a: [b.add(a[2], b.mul(a[0], a[1]), in_order=in_order)])
