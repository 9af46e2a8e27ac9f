"""A stride-1 3x3 Conv by Winograd's minimal filtering F(2x2, 3x3) or F(4x4, 3x3) (Lavin and
Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016), for lower_conv (conv.py).
Written here for F(2x2, 3x3), the default (`WinogradForm` F2X2); F(4x4, 3x3) (`--winograd f4`,
F4X4) is the same with 6x6 input tiles 4 apart, 36 points and 4x4 outputs a tile.

Each 2x2 block of outputs of a channel pair is Y = A^T [(G g G^T) * (B^T d B)] A, d the 4x4 input
tile under it: 16 multiplies where the direct conv makes 36. Summed over input channels, the
product is 16 GEMMs, one per point xi of the 4x4 transform: M[xi] = V[xi] @ U[xi], V[xi] the
[tiles, C] transformed input, U[xi] the [C, CO] transformed filter (computed here at compile
time, in float64, then rounded). So a conv does 16/36 of the direct conv's multiply-adds in its
GEMMs (ResNet-18's 64 -> 64 over 56x56: 16 GEMMs of 784 x 64 x 64), plus two passes over maps
of 16 values a tile:

1. input transform: the padded NCHW input's 4x4 tiles, 2 apart, into V [16][C][tiles]
   (a tile's 16 values 0, +1, -1 combinations of its inputs);
2. 16 GEMMs (dlc/codegen/ukernels.py) in one batched call (one parallel region), A = V[xi] read
   transposed (tiles contiguous), C = M[xi] [CO, tiles] stored transposed, so both transforms
   run along the tiles of a row;
3. output transform: each tile's 16 values of M into its 2x2 outputs, with the bias, the
   residual and the activation the conv's elementwise tail holds (GemmEpilogue) applied as
   each output is stored.

All three run once a pass, over a block of tile rows of one image whose V and M stay in L2
(`row_blocks`); the passes are scf.for loops over images and blocks, x, y and the residual seen
at each pass's run-time offset (`strided<[...], offset: ?>`), so a conv's code is that of one
pass (two where the last block is shorter) whatever its batch and map. An odd map (27x27,
55x55) is covered by whole tiles over an input padded with zeros past it; the overhanging
tiles' outputs beyond it are computed and never stored. The transforms add and
subtract only (B and A hold 0 and +-1, G halves): against a float64 reference the error is
2.2-2.9e-7 of the output's scale, the direct conv's 4.8-7.9e-7 (its sums run over 9C products;
tests/test_winograd.py bounds it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from xdsl.builder import Builder
from xdsl.dialects import arith, scf
from xdsl.dialects.builtin import IndexType, MemRefType
from xdsl.ir import Block, Region, SSAValue
from xdsl.rewriter import InsertPoint

from dialects.gemm_ukernel import pack_b, window_conv_tiles
from passes.lowering.kernels_to_linalg import view_at
from passes.lowering.utils.linalg_builder import PARALLEL, affine_map, cst, dim
from passes.lowering.utils.ukernel_calls import emit_gemm_call, take_epilogue
from passes.target_info import target_info


@dataclass(frozen=True)
class WinogradForm:
    """F(m x m, 3x3): its B^T [t, t], G [t, 3] and A^T [m, t], t = m + 2 (Lavin and Gray)."""

    name: str
    input_transform: np.ndarray
    filter_transform: np.ndarray
    output_transform: np.ndarray

    @property
    def out(self) -> int:
        """Output tile edge m."""
        return self.output_transform.shape[0]

    @property
    def tile(self) -> int:
        """Input tile edge t = m + 3 - 1."""
        return self.input_transform.shape[0]

    @property
    def points(self) -> int:
        """Points of the transform: GEMMs a pass, planes of V and M."""
        return self.tile * self.tile


# Lavin and Gray, section 4.1: B and A hold 0 and +-1, G halves.
F2X2 = WinogradForm("F(2x2, 3x3)",
                    np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
                    np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
                    np.array([[1, 1, 1, 0], [0, 1, -1, -1]]))
# 36 GEMMs doing 1/4 of the direct conv's multiply-adds (`--winograd f4`), the Toom-Cook
# construction over the points 0, 1, -1, 1/2, -2 and infinity, which Barabasz et al. ("Error
# analysis and improving the accuracy of Winograd convolution", 2020) found the most accurate
# for F(4x4, 3x3). Measured against a float64 reference (64 -> 64 over 56x56, float32
# arithmetic as compiled), relative error: Lavin and Gray's points 0, +-1, +-2 5.3e-6; these
# 2.7e-6; the direct conv 1.2e-6, F(2x2, 3x3) 3.5e-7. B^T's rows hold more nonzero terms (5
# against 3) and its input transform costs a little more; the conv ran 0.80 ms against 0.81.
F4X4 = WinogradForm("F(4x4, 3x3)",
                    np.array([[1, -3 / 2, -2, 3 / 2, 1, 0], [0, -1, 1 / 2, 5 / 2, 1, 0], [0, 1, -5 / 2, 1 / 2, 1, 0],
                              [0, -2, -1, 2, 1, 0], [0, 1 / 2, -1, -1 / 2, 1, 0], [0, 1, -3 / 2, -2, 3 / 2, 1]]),
                    np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [-1 / 3, 1 / 3, -1 / 3],
                              [-16 / 15, -8 / 15, -4 / 15], [1 / 15, -2 / 15, 4 / 15], [0, 0, 1]]),
                    np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 1 / 2, -2, 0], [0, 1, 1, 1 / 4, 4, 0],
                              [0, 1, -1, 1 / 8, -8, 1]]))


def transformed_filter(weights: np.ndarray, form: WinogradForm = F2X2) -> np.ndarray:
    """U [t^2, C, CO] of a [CO, C, 3, 3] filter: U[t a + b, c, o] = (G g[o, c] G^T)[a, b],
    computed in float64, then rounded."""
    g = weights.astype(np.float64)
    u = np.einsum("ai,ocij,bj->abco", form.filter_transform, g, form.filter_transform)
    return np.ascontiguousarray(u.reshape(form.points, *u.shape[2:]).astype(np.float32))


def _linear(b, coefficients, values: list[SSAValue]) -> SSAValue:
    """sum(c * v) over the nonzero coefficients, from a term of coefficient 1 where there is
    one: adds and subtracts for +-1, a multiply by the constant otherwise."""
    terms = [(float(c), v) for c, v in zip(coefficients, values) if c]
    first = next((i for i, (c, _) in enumerate(terms) if c == 1), 0)
    coefficient, total = terms[first]
    if coefficient != 1:
        total = b.mul(total, b.const(coefficient))
    for coefficient, value in terms[:first] + terms[first + 1:]:
        if abs(coefficient) != 1:
            value = b.mul(value, b.const(abs(coefficient)))
        total = b.add(total, value) if coefficient > 0 else b.sub(total, value)
    return total


def _transform(b, matrix: np.ndarray, tile: list[list[SSAValue]]) -> list[list[SSAValue]]:
    """matrix @ tile @ matrix^T on a square tile of values (rows first)."""
    rows = [[_linear(b, row, [tile[i][j] for i in range(len(tile))]) for j in range(len(tile[0]))]
            for row in matrix]
    return [[_linear(b, row, line) for row in matrix] for line in rows]


def row_blocks(rows: int, cols: int, channels: int, out_channels: int, l2_bytes: int,
               threads: int = 1, points: int = F2X2.points) -> list[tuple[int, int]]:
    """(first, count) of each block of tile rows one pass takes, split evenly: as many rows as
    keep the block's V and M (`points` floats a tile and channel each) within a quarter of L2, or
    within U's size where U is larger (each pass streams all of U from L2 or beyond).

    On threads, each thread's L2 takes half of its share, so the transforms of a pass have
    enough work to split (mark-parallel-loops' MIN_ITERATIONS): the 64 -> 64 conv over 56x56 at
    two threads 0.71 ms in blocks of 4 rows, 0.63 in blocks of 7 (direct 0.70-0.73).
    One thread on the Xeon VM, rows a block -> ms (the direct conv and onnxruntime alongside):
    64 -> 64 over 56x56 (28 tile rows) 1 / 2 / 4 / 7 / 28: 0.94 / 0.95 / 1.06 / 1.13 / 1.27 (1.48,
    1.46); 128 -> 128 over 28x28, 1 / 4 / 14: 0.87 / 0.83 / 0.99 (1.40, 1.35); 256 -> 256 over
    14x14, 1 / 2 / 7: 1.36 / 1.09 / 0.89 (1.32, 1.36)."""
    per_row = 4 * points * (channels + out_channels) * cols
    share = l2_bytes // 4 if threads == 1 else threads * l2_bytes // 2
    budget = max(share, 4 * points * channels * out_channels)
    most = max(1, budget // per_row)
    count = -(-rows // most)
    size = -(-rows // count)
    return [(first, min(size, rows - first)) for first in range(0, rows, size)]


# The 16 planes of V (and of M) lie this many bytes past a multiple of 4 KiB apart: 17 cache
# lines, so plane k's rows fall on line k * 17 mod 64 of a page, 16 different L1 sets. Planes a
# multiple of 4 KiB apart (a block of 4 tile rows of 28 over 64 channels: 28 KiB) put the 16
# streams an input transform writes, and the GEMMs read, on one set: 1.80 ms for the 64 -> 64
# conv over 56x56 in blocks of 4 rows against 1.06 skewed.
PLANE_SKEW_BYTES = 17 * 64


def plane_stride(floats: int) -> int:
    """The smallest stride of at least `floats` floats whose bytes are PLANE_SKEW_BYTES past a
    multiple of 4 KiB."""
    return floats + (PLANE_SKEW_BYTES - 4 * floats) % 4096 // 4


def covered_extent(size: int, form: WinogradForm = F2X2) -> int:
    """The rows (or columns) of `form`'s output tiles that cover `size` of them."""
    return -(-size // form.out) * form.out


def winograd_conv(kb, op, padded: SSAValue, weights: np.ndarray, bias: SSAValue | None, y: SSAValue,
                  activate: Callable, out_nhwc: bool = False, form: WinogradForm = F2X2) -> None:
    """y [N, CO, H, W] = conv3x3(x) (+ bias, + the epilogue's residual, activation), `padded`
    x [N, C, H' + 2, W' + 2] with a zero border of one and zeros past x up to H' and W', the
    height and width of the output tiles that cover y (`covered_extent`). `activate(b, value,
    name)` applies an activation as conv.py's loops do. One pass per image and block of tile
    rows (`row_blocks`), its V and M in scratch buffers the passes share. With `out_nhwc`
    (pointwise-convs-nhwc's 3x3 conv feeding a 1x1 one) y is [N, H, W, CO]: the GEMMs store M
    as rows of output channels, which the output transform reads and writes along the lanes.

    Where the tiles overhang y (an odd map under F(2x2): GoogLeNet's 27x27 and 55x55), the
    output transform of the last tile column, and of the last tile row, is a loop of its own
    that stores only their outputs inside y."""
    batch, channels, padded_h, padded_w = padded.type.get_shape()
    if out_nhwc:
        _, height, width, out_channels = y.type.get_shape()
    else:
        _, out_channels, height, width = y.type.get_shape()
    out = form.out
    rows, cols = -(-height // out), -(-width // out)
    assert (padded_h, padded_w) == (rows * out + 2, cols * out + 2), (padded.type, y.type)
    f32 = padded.type.element_type
    points = form.points
    target = target_info(op.get_toplevel_object())
    blocks = row_blocks(rows, cols, channels, out_channels, target.l2_bytes, target.threads, points)
    most = max(count for _, count in blocks)
    v = kb.scratch(MemRefType(f32, [points * plane_stride(channels * most * cols)]))
    m = kb.scratch(MemRefType(f32, [points * plane_stride(out_channels * most * cols)]))

    # U[xi] packed for the register tile of each block's GEMMs (it is no kernel argument, so
    # pack-weights does not see it); blocks of one size share their GEMM's spec.
    filters = transformed_filter(weights, form)
    tiles_of = {count: window_conv_tiles(cols, count, out_channels, channels, 1, target.vector_width,
                                         target.l2_bytes, target.threads) for _, count in blocks}
    packed = {}
    for sizes in tiles_of.values():
        nr = sizes["nr"]
        if nr not in packed:
            panels = np.stack([pack_b(filters[xi], nr) for xi in range(points)])
            packed[nr] = kb.constant(op, "winograd_filter", panels.reshape(points, -1)), panels[0].size

    epilogue = take_epilogue(kb)
    residual = epilogue.residual if epilogue is not None else None
    activation = epilogue.activation if epilogue is not None else None
    # Element offsets of an image and of a tile row in x (padded), and in y and the residual.
    x_image, x_row = channels * padded_h * padded_w, out * padded_w
    y_image, y_row = out_channels * height * width, out * width * (out_channels if out_nhwc else 1)

    def one_pass(image: int | SSAValue, first: int | SSAValue, count: int, stored_rows: int) -> None:
        """The pass over tile rows [first, first + count) of `image`, storing `stored_rows` rows
        of y (out * count, fewer where the last tile row overhangs y)."""
        tiles = count * cols
        v_stride, m_stride = plane_stride(channels * tiles), plane_stride(out_channels * tiles)
        x_offset = _linear_index(kb, [(image, x_image), (first, x_row)])
        x_block = view_at(kb.builder, padded, x_offset, [channels, out * count + 2, padded_w],
                          [padded_h * padded_w, padded_w, 1])
        v_block = view_at(kb.builder, v, 0, [points, channels, count, cols], [v_stride, tiles, cols, 1])
        _input_transform(kb, x_block, v_block, form)
        sizes = tiles_of[count]
        u, per_point = packed[sizes["nr"]]
        # M[xi] = V[xi] @ U[xi] for all points in one call (one parallel region), each the
        # 1x1 implicit-GEMM conv of a map of `tiles` pixels in rows of `cols` (a window A:
        # channel c's plane at c * tiles), its C stored into M[xi]: transposed into its
        # planes, or as rows with `out_nhwc`.
        emit_gemm_call(kb, op, v, u, m, m=tiles, n=out_channels, k=channels, a_row_stride=1, a_k_stride=1,
                       b_layout="packed", ldb=out_channels, ldc=out_channels if out_nhwc else tiles,
                       a_group=cols, a_group_stride=cols, a_window_h=1, a_window_w=1, a_window_row=cols,
                       a_window_col=1, a_window_channel=tiles, c_transposed=0 if out_nhwc else 1,
                       batch=dict(count=points, a=v_stride, b=per_point, c=m_stride), **sizes)

        def store(ty0: int, ty_count: int, tx0: int, tx_count: int, out_rows: int, out_cols: int) -> None:
            """The output transform of tiles [ty0, +ty_count) x [tx0, +tx_count) of the pass,
            storing the first out_rows x out_cols outputs of each (fewer than out x out where
            the tiles overhang y)."""
            rows_stored = ty_count * out if out_rows == out else out_rows  # an edge is one tile deep
            cols_stored = tx_count * out if out_cols == out else out_cols
            if out_nhwc:  # M[xi] as rows of output channels
                m_region = view_at(kb.builder, m, (ty0 * cols + tx0) * out_channels,
                                   [points, ty_count, tx_count, out_channels],
                                   [m_stride, cols * out_channels, out_channels, 1])
                y_shape = [rows_stored, cols_stored, out_channels]
                y_strides = [width * out_channels, out_channels, 1]
                pixel = (out * ty0 * width + out * tx0) * out_channels
            else:  # M[xi] as planes of output channels
                m_region = view_at(kb.builder, m, ty0 * cols + tx0, [points, out_channels, ty_count, tx_count],
                                   [m_stride, tiles, cols, 1])
                y_shape, y_strides = [out_channels, rows_stored, cols_stored], [height * width, width, 1]
                pixel = out * ty0 * width + out * tx0
            y_offset = _linear_index(kb, [(image, y_image), (first, y_row), (1, pixel)])
            y_region = view_at(kb.builder, y, y_offset, y_shape, y_strides)
            r_region = None if residual is None else view_at(kb.builder, residual, y_offset, y_shape, y_strides)
            _output_transform(kb, m_region, bias, r_region, y_region, activation, activate, out_nhwc, form,
                              out_rows, out_cols)

        # Tiles inside y, then those overhanging its right edge, its bottom edge, the corner.
        edge_rows, edge_cols = stored_rows % out, width % out
        inside_rows, inside_cols = count - (edge_rows > 0), cols - (edge_cols > 0)
        if inside_rows and inside_cols:
            store(0, inside_rows, 0, inside_cols, out, out)
        if inside_rows and edge_cols:
            store(0, inside_rows, inside_cols, 1, out, edge_cols)
        if edge_rows and inside_cols:
            store(inside_rows, 1, 0, inside_cols, edge_rows, out)
        if edge_rows and edge_cols:
            store(inside_rows, 1, inside_cols, 1, edge_rows, edge_cols)

    # The passes as loops (over images, and over the blocks of rows of one size), so a conv's
    # code is one or two passes' whatever its map and batch: 14 passes of straight-line code
    # for each 64 -> 64 conv over 56x56 made ResNet-18's one-thread compile 9.0 s against 2.4.
    size = blocks[0][1]
    uniform = sum(1 for _, count in blocks if count == size)  # all but a shorter last block
    if height < rows * out and uniform == len(blocks):
        uniform -= 1  # the last block stores fewer rows of y: a pass of its own

    def one_image(image: int | SSAValue) -> None:
        if uniform:
            _serial_loop(kb, uniform, lambda block: one_pass(image, _linear_index(kb, [(block, size)]), size,
                                                             out * size))
        if uniform < len(blocks):
            first, count = blocks[-1]
            one_pass(image, first, count, min(out * count, height - out * first))

    _serial_loop(kb, batch, one_image)
    # What the conv executes against the direct conv's 2 C CO 9 FLOPs an output pixel: its
    # GEMMs' 2 C CO points a tile, and the transforms' adds and multiplies (counted from their
    # bodies: per channel and tile in, per output channel and tile out).
    tiles = batch * rows * cols
    input_ops, output_ops = _transform_ops(form)
    executed = tiles * (2 * points * channels * out_channels + input_ops * channels + output_ops * out_channels)
    kb.flops_not_executed += 2 * 9 * channels * out_channels * batch * height * width - executed
    kb.algorithms.append(f"Winograd {form.name}")


def _transform_ops(form: WinogradForm) -> tuple[int, int]:
    """Arithmetic ops of one tile's input transform and of its output transform (without the
    bias, residual and activation the direct conv's count leaves out too)."""
    from xdsl.dialects.builtin import f32

    from passes.lowering.utils.linalg_builder import Body

    counts = []
    for matrix, size in ((form.input_transform, form.tile), (form.output_transform, form.tile)):
        block = Block(arg_types=[f32] * (size * size))
        tile = [list(block.args[i * size:(i + 1) * size]) for i in range(size)]
        _transform(Body(block, f32), matrix, tile)
        counts.append(sum(1 for op in block.ops if op.name in ("arith.addf", "arith.subf", "arith.mulf")))
    return counts[0], counts[1]


def _linear_index(kb, terms: list[tuple[int | SSAValue, int]]) -> int | SSAValue:
    """sum(value * coefficient) over `terms`: an int where every value is one, else an index
    value computed where kb inserts."""
    constant = sum(value * coefficient for value, coefficient in terms if isinstance(value, int))
    total: SSAValue | None = None
    for value, coefficient in terms:
        if isinstance(value, int):
            continue
        if coefficient != 1:
            value = kb.insert(arith.MuliOp(value, kb.insert(arith.ConstantOp.from_int_and_width(
                coefficient, IndexType())).result)).result
        total = value if total is None else kb.insert(arith.AddiOp(total, value)).result
    if total is None:
        return constant
    if constant:
        total = kb.insert(arith.AddiOp(total, kb.insert(arith.ConstantOp.from_int_and_width(
            constant, IndexType())).result)).result
    return total


def _serial_loop(kb, trips: int, emit: Callable[[int | SSAValue], None]) -> None:
    """emit(i) for i in range(trips): inline where trips is 1, else once, into the body of an
    scf.for over i (each of its transforms still a parallel region: mark-parallel-loops)."""
    if trips == 1:
        emit(0)
        return
    bounds = [kb.insert(arith.ConstantOp.from_int_and_width(value, IndexType())).result for value in (0, trips, 1)]
    body = Block(arg_types=[IndexType()])
    kb.insert(scf.ForOp(*bounds, [], Region(body)))
    outside = kb.builder
    kb.builder = Builder(InsertPoint.at_end(body))
    try:
        emit(body.args[0])
    finally:
        kb.builder = outside
    body.add_op(scf.YieldOp())


def _input_transform(kb, x_block: SSAValue, v_block: SSAValue, form: WinogradForm) -> None:
    """V[xi, c, ty, tx] = (B^T d B)[xi], d = x_block[c, m ty : m ty + t, m tx : m tx + t]."""
    points, size, out = form.points, form.tile, form.out
    c, ty, tx = dim(0), dim(1), dim(2)
    taps = [affine_map(3, [c, ty * out + i, tx * out + j]) for i in range(size) for j in range(size)]
    stores = [affine_map(3, [cst(xi), c, ty, tx]) for xi in range(points)]

    def body(b, args):
        tile = [list(args[i * size:(i + 1) * size]) for i in range(size)]
        return [value for row in _transform(b, form.input_transform, tile) for value in row]

    kb.generic([x_block] * points, [v_block] * points, taps + stores, [PARALLEL] * 3, body,
               doc="winograd input transform")


def _output_transform(kb, m_block, bias, r_block, y_block, activation, activate, out_nhwc: bool,
                      form: WinogradForm, out_rows: int, out_cols: int) -> None:
    """y_block[o, m ty + a, m tx + b] = act((A^T M A)[a, b] + bias[o] + R[o, m ty + a, m tx + b]),
    over (o, ty, tx), a < out_rows and b < out_cols (fewer than m where the tiles overhang y);
    with `out_nhwc` y_block[m ty + a, m tx + b, o] over (ty, tx, o)."""
    points, size, out = form.points, form.tile, form.out
    kept = [(a, b) for a in range(out_rows) for b in range(out_cols)]
    if out_nhwc:
        ty, tx, o = dim(0), dim(1), dim(2)
        reads = [affine_map(3, [cst(xi), ty, tx, o]) for xi in range(points)]
        outputs = [affine_map(3, [ty * out + a, tx * out + b, o]) for a, b in kept]
    else:
        o, ty, tx = dim(0), dim(1), dim(2)
        reads = [affine_map(3, [cst(xi), o, ty, tx]) for xi in range(points)]
        outputs = [affine_map(3, [o, ty * out + a, tx * out + b]) for a, b in kept]
    inputs, maps = [m_block] * points, list(reads)
    if bias is not None:
        inputs.append(bias)
        maps.append(affine_map(3, [o]))  # dim 0 or 2
    if r_block is not None:
        inputs += [r_block] * len(outputs)
        maps += outputs
    maps += outputs

    def body(b, args):
        tile = [list(args[i * size:(i + 1) * size]) for i in range(size)]
        rest = list(args[points:])
        shift = rest.pop(0) if bias is not None else None
        results = []
        transformed = _transform(b, form.output_transform, tile)
        for index, value in enumerate(transformed[a][c] for a, c in kept):
            if shift is not None:
                value = b.add(value, shift)
            if r_block is not None:
                value = b.add(value, rest[index])
            results.append(activate(b, value, activation))
        return results

    kb.generic(inputs, [y_block] * len(outputs), maps, [PARALLEL] * 3, body, doc="winograd output transform")
