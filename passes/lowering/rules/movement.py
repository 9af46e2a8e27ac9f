"""Shape and data-movement ONNX operators as linalg copies over affine index maps and windows.

Mirrors the ONNX operator spec at opset 21 (https://onnx.ai/onnx/operators/): Transpose,
Concat, Split, Slice, Expand, Tile, Pad, DepthToSpace, SpaceToDepth, CenterCropPad, plus the
copy used for outputs. Every generic loops over the buffer it writes; reads are affine in those loops,
except for Slice/Pad whose starts or pads come at run time, which load at computed indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd, prod

import numpy as np
import onnx.defs
from xdsl.dialects import memref
from xdsl.dialects.builtin import IndexType, IntegerType, MemRefType, NoneType
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Block, Region, SSAValue
from xdsl.ir.affine import AffineExpr

from dialects.diagnostics import UnsupportedError
from dialects.onnx import CANONICAL_OPSET, WeightOp
from dialects.weights import weights_of
from passes.lowering.rules import lowers
from passes.lowering.utils.linalg_builder import (
    PARALLEL,
    Body,
    affine_map,
    broadcast_exprs,
    cst,
    dim,
    identity_map,
)
from passes.lowering.utils.runtime_checks import error_code, flag_if, status_word
from passes.target_info import target_info

# --- shared helpers ---------------------------------------------------------------------------


def constant_input(op, index: int, required: bool = True) -> np.ndarray | None:
    """The value of input `index` when it is a weight; None when the input is absent.

    A present input that is computed at run time raises UnsupportedError when `required`
    (the rule needs its value at compile time), else gives None.
    """
    if index >= len(op.operands) or isinstance(op.operands[index].type, NoneType):
        return None
    owner = op.operands[index].owner
    if isinstance(owner, WeightOp):
        return weights_of(op.get_toplevel_object())[owner.weight_name]
    if not required:
        return None
    name = onnx.defs.get_schema(op.onnx_type, CANONICAL_OPSET, "").inputs[index].name
    raise UnsupportedError(
        f"{op.describe()}: input '{name}' (#{index}) must be a constant, but it is computed at "
        "run time", "dlc folds inputs that depend only on initializers and static shapes; "
        "make this input an initializer")


def is_empty(buffer: SSAValue) -> bool:
    return 0 in buffer.type.get_shape()


def normalize_axis(op, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise UnsupportedError(f"{op.describe()}: axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def copy_into(kb, source, output) -> None:
    if source.type.get_shape() != output.type.get_shape():
        raise UnsupportedError(f"internal: copy between shapes {source.type} and {output.type}")
    kb.copy(source, output)


def read_affine(kb, source, output, exprs: Sequence[AffineExpr]) -> None:
    """output[i] = source[exprs(i)]: a generic over the output's loops.

    linalg takes each loop's bound from the first operand that indexes it by a plain dK,
    so an `exprs` entry may be a plain dK only where source and output sizes agree.
    """
    if is_empty(output):
        return
    rank = len(output.type.get_shape())
    kb.generic([source], [output], [affine_map(rank, exprs), identity_map(rank)],
               [PARALLEL] * rank, lambda b, args: [args[0]])


def window(kb, buffer, offsets, sizes, strides=None):
    """`buffer` seen through a static window (itself when the window is all of it)."""
    if tuple(sizes) == tuple(buffer.type.get_shape()) and not any(offsets):
        return buffer
    return kb.subview(buffer, offsets, sizes, strides)


def copy_window(kb, source, output, source_offsets, output_offsets, sizes) -> None:
    """output[output_offsets + i] = source[source_offsets + i] for i < sizes."""
    if 0 in sizes:
        return
    kb.copy(window(kb, source, source_offsets, sizes), window(kb, output, output_offsets, sizes))


# --- Transpose, Concat, Split, Slice ----------------------------------------------------------


@lowers("Transpose")
def lower_transpose(kb, op, ins, outs) -> None:
    rank = len(ins[0].type.get_shape())
    perm = op.attr("perm") or list(reversed(range(rank)))
    if sorted(perm) != list(range(rank)):
        raise UnsupportedError(f"{op.describe()}: perm {perm} is not a permutation of 0..{rank - 1}")
    if _tiled_transpose(kb, op, ins[0], outs[0], perm):
        return
    # Loop over the output; input index of axis perm[i] is output loop i.
    in_exprs = [None] * rank
    for out_axis, in_axis in enumerate(perm):
        in_exprs[in_axis] = dim(out_axis)
    read_affine(kb, ins[0], outs[0], in_exprs)


def _swapped_blocks(shape, perm) -> tuple[int, int, int] | None:
    """(lead, a, b) when `perm` keeps its first axes and swaps the two runs of axes after them:
    the input seen as [lead, a, b] becomes [lead, b, a] (NCHW -> NHWC: [N, C, H*W] -> [N, H*W,
    C]; a batched matrix transpose); else None."""
    rank = len(perm)
    kept = next((i for i in range(rank) if perm[i] != i), rank)
    if kept == rank:
        return None
    split = perm[kept]
    if list(perm[kept:]) != [*range(split, rank), *range(kept, split)]:
        return None
    return prod(shape[:kept]), prod(shape[kept:split]), prod(shape[split:])


# Rows of the input a tiled Transpose reads together (see `_tiled_transpose`).
_TRANSPOSE_TILE = 16
_LINE = 64  # bytes in a cache line
_L1_SETS = 64  # sets of L1 (32 KiB 8-way and 48 KiB 12-way caches alike)


def _column_reads_thrash(rows: int, row_bytes: int, l1_bytes: int) -> bool:
    """Whether reading one element from each of `rows` rows `row_bytes` apart, again for every
    output row, misses L1: the lines the rows touch exceed half of the L1 sets they map to
    (rows 1 KiB apart fall in 4 of 64 sets; 64-byte rows are one line each)."""
    if row_bytes < _LINE:
        lines, sets = -(-rows * row_bytes // _LINE), _L1_SETS
    else:
        step = row_bytes // _LINE if row_bytes % _LINE == 0 else 1
        lines, sets = rows, _L1_SETS // gcd(_L1_SETS, step)
    ways = max(l1_bytes // (_LINE * _L1_SETS), 1)
    return lines > sets * ways // 2


def _reshaped(kb, buffer, shape) -> SSAValue:
    """A contiguous buffer seen with another static shape (kernels_to_linalg's reshape_view,
    which this module cannot import: kernels_to_linalg loads the rules)."""
    strides = [prod(shape[i + 1:]) for i in range(len(shape))]
    return kb.insert(memref.ReinterpretCastOp(buffer, [], [], [], [0], list(shape), strides,
                                              MemRefType(buffer.type.element_type, list(shape)))).result


def _tiled_transpose(kb, op, source, output, perm) -> bool:
    """A Transpose that swaps two runs of axes ([lead, a, b] -> [lead, b, a], a % 16 == 0)
    whose output-order loop misses L1 (`_column_reads_thrash`: that loop reads a column of the
    a rows per output row), looped as (lead, a // 16, b, 16) instead: 16 input rows at a time,
    which stay in L1 while b walks along them. Attention's K^T (128x256 float32, rows 1 KiB
    apart) 0.033 -> 0.014-0.018 ms (`--profile`); by thread CPU in one process, 53 -> 31 us,
    a uint8 NHWC -> NCHW 56x56x64 map 164 -> 90 us, float32 148 -> 103; NCHW -> NHWC of 64
    channels stays on the plain loop (its 64 rows fit L1; tiled it took 1.17-1.28x as long).
    False: not this shape, or the plain loop is fine."""
    blocks = _swapped_blocks(source.type.get_shape(), perm)
    if blocks is None or is_empty(output):
        return False
    lead, a, b = blocks
    t = _TRANSPOSE_TILE
    element = source.type.element_type
    row_bytes = b * max(getattr(element, "bitwidth", 32) // 8, 1)
    if a % t or a < 2 * t or b < 2 or not _column_reads_thrash(
            a, row_bytes, target_info(op.get_toplevel_object()).l1_bytes):
        return False
    kb.generic([_reshaped(kb, source, [lead, a // t, t, b])], [_reshaped(kb, output, [lead, b, a // t, t])],
               [affine_map(4, [dim(0), dim(1), dim(3), dim(2)]), affine_map(4, [dim(0), dim(2), dim(1), dim(3)])],
               [PARALLEL] * 4, lambda _b, args: [args[0]])
    return True


def _along(rank: int, axis: int, value: int) -> list[int]:
    """Offsets that are `value` along `axis`, 0 elsewhere."""
    return [value if i == axis else 0 for i in range(rank)]


@lowers("Concat")
def lower_concat(kb, op, ins, outs) -> None:
    shape = outs[0].type.get_shape()
    rank = len(shape)
    axis = normalize_axis(op, op.attr("axis"), rank)
    offset = 0
    for source in ins:
        sizes = source.type.get_shape()
        copy_window(kb, source, outs[0], [0] * rank, _along(rank, axis, offset), sizes)
        offset += sizes[axis]


@lowers("Split")
def lower_split(kb, op, ins, outs) -> None:
    # The output shapes are static, so they already say where each piece starts: the
    # `split` input and `num_outputs` attribute need not be read.
    shape = ins[0].type.get_shape()
    axis = normalize_axis(op, op.attr("axis", 0), len(shape))
    offset = 0
    for result, output in zip(op.results, outs):
        sizes = result.type.get_shape()
        if output is not None:
            copy_window(kb, ins[0], output, _along(len(shape), axis, offset), [0] * len(shape), sizes)
        offset += sizes[axis]


@lowers("Slice")
def lower_slice(kb, op, ins, outs) -> None:
    if not all(_is_known(op, i) for i in range(1, 5)):
        _runtime_slice(kb, op, ins, outs[0])
        return
    shape = ins[0].type.get_shape()
    rank = len(shape)
    starts, ends = constant_input(op, 1), constant_input(op, 2)
    axes = constant_input(op, 3)
    axes = list(range(len(starts))) if axes is None else [normalize_axis(op, int(a), rank) for a in axes]
    steps = constant_input(op, 4)
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    if 0 in steps:
        raise UnsupportedError(f"{op.describe()}: a step of 0 is invalid")
    offsets, sizes, strides = [0] * rank, list(shape), [1] * rank
    reversed_axes = set()
    for axis, start, end, step in zip(axes, starts, ends, steps):
        # Python's slice clamping is ONNX's: negative starts/ends count from the end, then
        # clamp to [0, n] for positive steps and [-1, n-1] for negative ones.
        picked = range(*slice(int(start), int(end), step).indices(shape[axis]))
        sizes[axis], strides[axis] = len(picked), abs(step)
        if len(picked):
            offsets[axis] = min(picked[0], picked[-1])
        if step < 0:
            reversed_axes.add(axis)
    if tuple(sizes) != tuple(outs[0].type.get_shape()):
        raise UnsupportedError(f"internal: {op.describe()} selects {sizes}, "
                               f"its result is {outs[0].type.get_shape()}")
    if is_empty(outs[0]):
        return
    # A window with positive strides, read backwards along negative-step axes.
    exprs = [cst(sizes[i] - 1) - dim(i) if i in reversed_axes else dim(i) for i in range(rank)]
    read_affine(kb, window(kb, ins[0], offsets, sizes, strides), outs[0], exprs)


# --- Expand, Tile -----------------------------------------------------------------------------


@lowers("Expand")
def lower_expand(kb, op, ins, outs) -> None:
    # The output shape is static: the broadcast needs no value of the `shape` input. Not
    # kb.elementwise: elementwise fusion would take `shape` for a broadcast operand.
    out_shape = outs[0].type.get_shape()
    read_affine(kb, ins[0], outs[0],
                broadcast_exprs(ins[0].type.get_shape(), out_shape, [dim(i) for i in range(len(out_shape))]))


@lowers("Tile")
def lower_tile(kb, op, ins, outs) -> None:
    in_shape, out_shape = ins[0].type.get_shape(), outs[0].type.get_shape()
    exprs = [dim(i) if n == m else dim(i) % n for i, (n, m) in enumerate(zip(in_shape, out_shape))]
    read_affine(kb, ins[0], outs[0], exprs)


# --- Pad --------------------------------------------------------------------------------------


def _pads(op, rank: int) -> tuple[list[int], list[int]]:
    """Per-axis (begin, end) pads from the `pads` and optional `axes` inputs."""
    pads = [int(p) for p in constant_input(op, 1)]
    axes = constant_input(op, 3)
    axes = list(range(rank)) if axes is None else [normalize_axis(op, int(a), rank) for a in axes]
    if len(pads) != 2 * len(axes):
        raise UnsupportedError(f"{op.describe()}: {len(pads)} pads for {len(axes)} axes "
                               f"(expected {2 * len(axes)})")
    begins, ends = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[i], pads[i + len(axes)]
    return begins, ends


@lowers("Pad")
def lower_pad(kb, op, ins, outs) -> None:
    shape = ins[0].type.get_shape()
    mode = op.attr("mode", "constant")
    if mode != "constant" and mode not in _BORDER_INDEX:
        raise UnsupportedError(f"{op.describe()}: unknown mode '{mode}' "
                               "(expected constant, reflect, edge or wrap)")
    if is_empty(outs[0]):
        return
    if not (_is_known(op, 1) and _is_known(op, 3)):
        _runtime_pad(kb, op, ins, outs[0], mode)
        return
    begins, ends = _pads(op, len(shape))
    # Negative pads crop, before any padding: onnxruntime does so, and wrap depends on it.
    sizes = [n - max(0, -b) - max(0, -e) for n, b, e in zip(shape, begins, ends)]
    source = window(kb, ins[0], [max(0, -b) for b in begins], sizes) if min(sizes) > 0 else None
    begins, ends = [max(0, b) for b in begins], [max(0, e) for e in ends]
    if mode == "constant":
        _fill_pad_value(kb, op, ins, outs[0])
        if source is not None:
            copy_window(kb, source, outs[0], [0] * len(shape), begins, sizes)
        return
    if source is None:
        raise UnsupportedError(f"{op.describe()}: mode '{mode}' cannot pad an empty tensor")
    if mode == "reflect" and any(max(b, e) >= n for b, e, n in zip(begins, ends, sizes)):
        raise UnsupportedError(f"{op.describe()}: reflect pads {begins + ends} must be smaller "
                               f"than the (cropped) input dims {sizes}")
    _pad_border(kb, source, outs[0], begins, _BORDER_INDEX[mode])


def _fill_pad_value(kb, op, ins, output) -> None:
    value = constant_input(op, 2, required=False)
    if value is not None or len(ins) < 3 or ins[2] is None:
        kb.fill(output, 0 if value is None else value.reshape(-1)[0].item())
        return
    # A run-time scalar: read it through a map to its only element.
    rank = len(output.type.get_shape())
    value_map = affine_map(rank, [cst(0)] * len(ins[2].type.get_shape()))
    kb.generic([ins[2]], [output], [value_map, identity_map(rank)], [PARALLEL] * rank,
               lambda b, args: [args[0]])


def _clamp(b, i, n):
    """i clamped to [0, n - 1]; n is a Python int or an `index` value."""
    last = b.const(n - 1) if isinstance(n, int) else b.sub(n, b.const(1))
    return b.max(b.min(i, last), b.const(0))


# Border rules: the source index for position i of a padded axis, where i = d - begin runs
# past [0, n) by at most the pads. n is a Python int or an `index` value.


def _edge(b, i, n):
    return _clamp(b, i, n)


def _reflect(b, i, n):
    # One mirror each side is exact: pads of n or more are refused (or clamped at run time).
    n = b.const(n) if isinstance(n, int) else n
    mirrored = b.select(b.cmp("slt", i, b.const(0)), b.neg(i), i)
    last = b.sub(n, b.const(1))
    high = b.cmp("sgt", mirrored, last)
    return b.select(high, b.sub(b.add(last, last), mirrored), mirrored)


def _wrap(b, i, n):
    # remsi keeps the dividend's sign: ((i rem n) + n) rem n is the non-negative modulo.
    n = b.const(n) if isinstance(n, int) else n
    return b.remsi(b.add(b.remsi(i, n), n), n)


_BORDER_INDEX = {"edge": _edge, "reflect": _reflect, "wrap": _wrap}


def _pad_border(kb, source, output, begins, border_index) -> None:
    """Pad modes that read the input near the border: out[d] = in[f(d - begin, n)] per axis.

    `begins` are non-negative here: lower_pad has cropped `source` already.
    """
    shape, out_shape = source.type.get_shape(), output.type.get_shape()

    def body(b, args):
        i = b.on(IndexType())
        indices = [border_index(i, i.sub(i.index(axis), i.const(begin)), n) if begin or n != m
                   else i.index(axis)
                   for axis, (begin, n, m) in enumerate(zip(begins, shape, out_shape))]
        # The formulas stay in bounds for valid pads; the clamp keeps any load in bounds.
        return [b.load(source, [_clamp(i, x, n) for x, n in zip(indices, shape)])]

    rank = len(out_shape)
    kb.generic([], [output], [identity_map(rank)], [PARALLEL] * rank, body)


# --- Slice and Pad with starts/steps/pads/axes computed at run time ---------------------------
# The result shape is static (declared or inferred), so only where the reads start varies:
# each generic loops over the output and loads the input at indices computed in its body.


def _is_known(op, index: int) -> bool:
    """Is input `index` absent or a compile-time constant?"""
    return (index >= len(op.operands) or isinstance(op.operands[index].type, NoneType)
            or constant_input(op, index, required=False) is not None)


def _present(ins, index: int):
    return ins[index] if index < len(ins) else None


def _per_axis(i, ins, values_index: int, axes_index: int, rank: int, defaults, count: int):
    """Per data axis, the run-time values of a per-listed-axis input (`count` per axis).

    Input `values_index` holds `count` groups of one value per listed axis (Slice: starts;
    Pad: all begins, then all ends); the optional `axes` input lists the axes (all by
    default; negative ones count from the end). Returns [axis][group] `index` values.
    """
    values = ins[values_index]
    listed = values.type.get_shape()[0] // count
    axes = _present(ins, axes_index)
    result = [[i.const(v) for v in defaults] for _ in range(rank)]
    for k in range(listed):
        if axes is None:
            axis = i.const(k)
        else:
            axis = i.index_from(i.load(axes, [i.const(k)]))
            axis = i.select(i.cmp("slt", axis, i.const(0)), i.add(axis, i.const(rank)), axis)
        group = [i.index_from(i.load(values, [i.const(k + g * listed)])) for g in range(count)]
        for d in range(rank):
            hit = i.cmp("eq", axis, i.const(d))
            result[d] = [i.select(hit, v, old) for v, old in zip(group, result[d])]
    return result


def _runtime_slice(kb, op, ins, output) -> None:
    if is_empty(output):
        return
    data = ins[0]
    shape = data.type.get_shape()
    rank = len(shape)
    steps = _present(ins, 4)

    def body(b, args):
        i = b.on(IndexType())
        starts = _per_axis(i, ins, 1, 3, rank, [0], 1)
        step_of = _per_axis(i, ins, 4, 3, rank, [1], 1) if steps is not None else None
        indices = []
        for d, n in enumerate(shape):
            start, step = starts[d][0], step_of[d][0] if step_of else i.const(1)
            # As the spec says: negative starts count from the end, then clamp to [0, n] for
            # positive steps and to [0, n - 1] for negative ones.
            start = i.select(i.cmp("slt", start, i.const(0)), i.add(start, i.const(n)), start)
            upper = i.select(i.cmp("slt", step, i.const(0)), i.const(n - 1), i.const(n))
            start = i.max(i.min(start, upper), i.const(0))
            indices.append(_clamp(i, i.add(start, i.mul(i.index(d), step)), n))
        return [b.load(data, indices)]

    kb.generic([], [output], [identity_map(rank)], [PARALLEL] * rank, body)


def _runtime_pad(kb, op, ins, output, mode: str) -> None:
    data = ins[0]
    shape = data.type.get_shape()
    rank = len(shape)
    if is_empty(data) and mode != "constant":
        raise UnsupportedError(f"{op.describe()}: mode '{mode}' cannot pad an empty tensor")
    value = _present(ins, 2) if mode == "constant" else None

    def body(b, args):
        i = b.on(IndexType())
        pads = _per_axis(i, ins, 1, 3, rank, [0, 0], 2)
        inside, indices = None, []
        for d, n in enumerate(shape):
            begin, end = pads[d]
            zero = i.const(0)
            # Negative pads crop before any padding, as lower_pad does: the source is the
            # window [low, n - high) of the axis, m long.
            low, high = i.max(i.neg(begin), zero), i.max(i.neg(end), zero)
            m = i.sub(i.sub(i.const(n), low), high)
            offset = i.sub(i.index(d), i.max(begin, zero))
            if mode == "constant":
                within = i.and_(i.cmp("sge", offset, zero), i.cmp("slt", offset, m))
                inside = within if inside is None else i.and_(inside, within)
                source = offset
            else:
                source = _BORDER_INDEX[mode](i, offset, i.max(m, i.const(1)))
            indices.append(_clamp(i, i.add(low, source), n))
        if mode != "constant":
            return [b.load(data, indices)]
        pad_value = b.const(0) if value is None else b.load(value, [i.const(0)] * len(value.type.get_shape()))
        if is_empty(data):
            return [pad_value]
        return [b.select(inside, b.load(data, indices), pad_value)]

    kb.generic([], [output], [identity_map(rank)], [PARALLEL] * rank, body)


# --- DepthToSpace, SpaceToDepth ---------------------------------------------------------------


def _blocksize(op, shape) -> int:
    if len(shape) != 4:
        raise UnsupportedError(f"{op.describe()}: expected a 4-D NCHW input, got shape {shape}")
    return op.attr("blocksize")


@lowers("DepthToSpace")
def lower_depth_to_space(kb, op, ins, outs) -> None:
    bs = _blocksize(op, ins[0].type.get_shape())
    channels = outs[0].type.get_shape()[1]
    n, c, y, x = (dim(i) for i in range(4))
    within = (y % bs) * bs + x % bs  # position inside the bs x bs block
    mode = op.attr("mode", "DCR")
    if mode == "DCR":  # depth, column, row: the block position is the major channel index
        channel = within * channels + c
    elif mode == "CRD":
        channel = c * (bs * bs) + within
    else:
        raise UnsupportedError(f"{op.describe()}: unknown mode '{mode}' (expected DCR or CRD)")
    read_affine(kb, ins[0], outs[0], [n, channel, y // bs, x // bs])


@lowers("SpaceToDepth")
def lower_space_to_depth(kb, op, ins, outs) -> None:
    bs = _blocksize(op, ins[0].type.get_shape())
    channels = ins[0].type.get_shape()[1]
    n, c, y, x = (dim(i) for i in range(4))
    block = c // channels  # by * bs + bx: output channels are block-major
    read_affine(kb, ins[0], outs[0], [n, c % channels, y * bs + block // bs, x * bs + block % bs])


def require_shape_values(kb, op, index: int, name: str, given, wanted: list[int]) -> None:
    """Input `index` (a 1-D shape-like tensor, memref `given`) must hold `wanted` (None: any value
    there), the sizes the output was compiled with: a constant is compared now, a run-time one
    by a loop that only checks it (a generic without outputs), failing the run otherwise."""
    if not wanted:
        return
    constant = constant_input(op, index, required=False)
    if constant is not None:
        if [int(v) if w is not None else None for v, w in zip(constant.reshape(-1), wanted)] != wanted:
            raise UnsupportedError(f"{op.describe()}: input '{name}' is {constant.reshape(-1).tolist()} "
                                   f"but the output was inferred with {wanted}")
        return
    status = status_word(kb)
    shown = [w if w is not None else "any" for w in wanted]
    code = error_code(op, f"{op.describe()}: input '{name}' is not {shown}, the sizes this model "
                          "was compiled for (dlc compiles static shapes)")
    block = Block(arg_types=[given.type.element_type])
    b, i = Body(block, given.type.element_type), Body(block, IndexType())
    checked = [k for k, w in enumerate(wanted) if w is not None]
    expected, matters = b.const(wanted[checked[-1]]), i.const(0, IntegerType(1))
    for k in checked:
        here = i.cmp("eq", b.index(0), i.const(k))
        expected, matters = b.select(here, b.const(wanted[k]), expected), i.or_(matters, here)
    flag_if(b, status, i.and_(matters, b.compare("ne", block.args[0], expected)), code)
    block.add_op(linalg.YieldOp())
    kb.insert(linalg.GenericOp([given], [], Region(block), [identity_map(1)], [PARALLEL]))


@lowers("CenterCropPad")
def lower_center_crop_pad(kb, op, ins, outs) -> None:
    """Each axis in 'axes' cropped or zero-padded about its centre to the output's size, the odd
    element at the end (onnx__CenterCropPad, opset 18): the output's static shape is the
    'shape' input's value, which a run checks (a different value fails it, never reads past x)."""
    x, shape_input = ins
    out = outs[0]
    in_shape, out_shape = x.type.get_shape(), out.type.get_shape()
    rank = len(in_shape)
    axes = [normalize_axis(op, a, rank) for a in (op.attr("axes") or range(rank))]
    require_shape_values(kb, op, 1, "shape", shape_input, [out_shape[a] for a in axes])
    if is_empty(out):
        return
    # The part of x the output keeps starts at (in - out) // 2 where cropped and lands at
    # (out - in) // 2 where padded.
    sizes = [min(i, o) for i, o in zip(in_shape, out_shape)]
    source = [max(i - o, 0) // 2 for i, o in zip(in_shape, out_shape)]
    target = [max(o - i, 0) // 2 for i, o in zip(in_shape, out_shape)]
    if sizes != list(out_shape):
        kb.fill(out, 0)
    copy_window(kb, x, out, source, target, sizes)
