"""NonZero and Compress: the elements (or slices) an input selects, packed in order.

Mirrors https://onnx.ai/onnx/operators/onnx__NonZero.html (opset 13: the indices of the nonzero
elements of X, [rank, count], row-major order, as numpy.nonzero; NaN is nonzero) and
https://onnx.ai/onnx/operators/onnx__Compress.html (opset 11: the slices of 'input' along
'axis' whose 'condition' entry is true, in order; without 'axis', the elements of the
flattened input; a condition shorter than the axis drops the rest).

How many elements are selected depends on the values, and dlc compiles static shapes: the
selected count is the output's declared size (the model's declared output shape, or a shape
given at compile time). A run whose input selects a different number fails with a DlcError
naming both counts (never a short or overlong write). The rank of each selected element (how
many selected ones precede it) is a counting reduction, O(n^2) compares for n candidates, then
output j gathers the element of rank j: no serial scan, every loop stays parallel. That suits
masks of a few thousand elements; a 50,000-element NonZero takes ~2.5e9 compares.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import IndexType, IntegerType, MemRefType
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Block, Region

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import BOOL, FLOAT, INT, UINT, require_kinds
from passes.lowering.rules.movement import constant_input, normalize_axis
from passes.lowering.utils.linalg_builder import (
    PARALLEL,
    REDUCTION,
    Body,
    affine_map,
    cst,
    dim,
    identity_map,
)
from passes.lowering.utils.runtime_checks import error_code, flag_if, status_word

I64 = IntegerType(64)


def _selected(b: Body, value):
    """Whether a candidate is selected: nonzero (NaN is, as in numpy), true for bool."""
    return b.on(value.type).compare("ne", value, b.on(value.type).const(0))


def _flat(i: Body, indices, shape) -> object:
    """The row-major position of `indices` in `shape`, as an index."""
    flat = i.const(0)
    stride = 1
    for index, size in zip(reversed(indices), reversed(shape)):
        flat = i.add(flat, i.mul(index, i.const(stride)))
        stride *= size
    return flat


def _ranks(kb, candidates, shape, where) -> object:
    """rank[p] = #{selected q : q before p in row-major order} (int64, shaped like the
    candidates); `where(b, value)` says whether a candidate is selected."""
    rank = len(shape)
    ranks = kb.scratch(MemRefType(I64, shape))
    kb.fill(ranks, 0)
    loops = 2 * rank  # (p's dims, q's dims)
    at_q = affine_map(loops, [dim(rank + d) for d in range(rank)])
    at_p = affine_map(loops, [dim(d) for d in range(rank)])

    def count(b, args):
        value, acc = args
        i = b.on(IndexType())
        before = i.cmp("ult", _flat(i, [b.index(rank + d) for d in range(rank)], shape),
                       _flat(i, [b.index(d) for d in range(rank)], shape))
        hit = b.and_(where(b, value), before)
        return [b.add(acc, b.cast(hit, I64))]

    kb.generic([candidates], [ranks], [at_q, at_p], [PARALLEL] * rank + [REDUCTION] * rank, count)
    return ranks


def _require_count(kb, op, candidates, shape, where, wanted: int, what: str) -> None:
    """Fail the run unless exactly `wanted` candidates are selected."""
    rank = len(shape)
    total = kb.scratch(MemRefType(I64, [1]))
    kb.fill(total, 0)
    kb.generic([candidates], [total], [identity_map(rank), affine_map(rank, [cst(0)])],
               [REDUCTION] * rank, lambda b, args: [b.add(args[1], b.cast(where(b, args[0]), I64))])
    status = status_word(kb)
    code = error_code(op, f"{op.describe()}: {what} is not {wanted}, the output size this model was "
                          "compiled for (dlc compiles static shapes: the output's declared shape fixes it)")
    block = Block(arg_types=[I64])
    b = Body(block, I64)
    flag_if(b, status, b.compare("ne", block.args[0], b.const(wanted)), code)
    block.add_op(linalg.YieldOp())
    kb.insert(linalg.GenericOp([total], [], Region(block), [identity_map(1)], [PARALLEL]))


def _nonzero(b, value):
    return _selected(b, value)


@lowers("NonZero")
def lower_nonzero(kb, op, ins, outs) -> None:
    x, out = ins[0], outs[0]
    require_kinds(op, [x], (FLOAT, INT, UINT, BOOL))
    shape = list(x.type.get_shape())
    rank = len(shape)
    if rank == 0:
        raise UnsupportedError(f"{op.describe()}: input 'X' is a scalar; dlc lowers NonZero of rank >= 1")
    count = out.type.get_shape()[1]
    _require_count(kb, op, x, shape, _nonzero, count, "the number of nonzero elements of input 'X'")
    if count == 0 or 0 in shape:
        return
    ranks = _ranks(kb, x, shape, _nonzero)
    # out[d, j] = coordinate d of the nonzero element of rank j; loops (d, j, the element's dims).
    kb.fill(out, 0)
    loops = 2 + rank
    at_element = affine_map(loops, [dim(2 + d) for d in range(rank)])

    def pick(b, args):
        value, place, acc = args
        i = b.on(IndexType())
        hit = b.and_(_nonzero(b, value), b.compare("eq", place, b.index_to(b.index(1), I64)))
        coordinate = b.index(2 + rank - 1)
        for d in range(rank - 1):  # the element's coordinate on axis d, for the row d names
            coordinate = i.select(i.cmp("eq", b.index(0), i.const(d)), b.index(2 + d), coordinate)
        return [b.select(hit, b.index_to(coordinate, I64), acc)]

    kb.generic([x, ranks], [out], [at_element, at_element, affine_map(loops, [dim(0), dim(1)])],
               [PARALLEL, PARALLEL] + [REDUCTION] * rank, pick)


@lowers("Compress")
def lower_compress(kb, op, ins, outs) -> None:
    data, condition = ins
    out = outs[0]
    require_kinds(op, [condition], (BOOL,))
    shape = list(data.type.get_shape())
    axis = op.attr("axis")
    length = int(np.prod(shape)) if axis is None else shape[normalize_axis(op, axis, len(shape))]
    if axis is not None:
        axis = normalize_axis(op, axis, len(shape))
    cond_shape = list(condition.type.get_shape())
    if len(cond_shape) != 1:
        raise UnsupportedError(f"{op.describe()}: input 'condition' has shape {cond_shape}; it must be 1-D")
    usable = min(cond_shape[0], length)  # entries past the axis' end select nothing that exists
    if usable < cond_shape[0]:
        # ONNX allows a longer condition only when its extra entries are false; a constant one
        # is checked now, a run-time one by counting within the axis (the others may be true).
        constant = constant_input(op, 1, required=False)
        if constant is not None and constant.reshape(-1)[usable:].any():
            raise UnsupportedError(f"{op.describe()}: input 'condition' selects index {usable} or later, "
                                   f"past the end ({length}) of the compressed axis")
    view = kb.subview(condition, [0], [usable]) if usable < cond_shape[0] else condition
    count = out.type.get_shape()[0 if axis is None else axis]
    _require_count(kb, op, view, [usable], lambda b, v: v, count,
                   "the number of true entries of input 'condition'")
    if 0 in out.type.get_shape():
        return
    ranks = _ranks(kb, view, [usable], lambda b, v: v)
    # source[j] = the position of the true entry of rank j; loops (j, k).
    source = kb.scratch(MemRefType(I64, [count]))
    kb.fill(source, 0)

    def pick(b, args):
        flag, place, acc = args
        hit = b.and_(flag, b.compare("eq", place, b.index_to(b.index(0), I64)))
        return [b.select(hit, b.index_to(b.index(1), I64), acc)]

    at_k = affine_map(2, [dim(1)])
    kb.generic([view, ranks], [source], [at_k, at_k, affine_map(2, [dim(0)])], [PARALLEL, REDUCTION], pick)

    out_rank = len(out.type.get_shape())

    def gather(b, args):
        i = b.on(IndexType())
        picked = b.index_from(args[0])  # in [0, usable): a rank's position, or the fill 0
        if axis is not None:
            return [b.load(data, [picked if d == axis else b.index(d) for d in range(out_rank)])]
        coordinates, rest = [], picked
        for size in reversed(shape):
            coordinates.append(i.remsi(rest, i.const(size)) if size else rest)
            rest = i.div(rest, i.const(size)) if size else rest
        return [b.load(data, list(reversed(coordinates)))]

    source_map = affine_map(out_rank, [dim(0 if axis is None else axis)])
    kb.generic([source], [out], [source_map, identity_map(out_rank)], [PARALLEL] * out_rank, gather)
