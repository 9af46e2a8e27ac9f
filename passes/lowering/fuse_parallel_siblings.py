"""Run consecutive data-parallel generics of a kernel in one parallel loop over the axis they
share, instead of one thread-pool region each (or, for the small ones, serially).

A depthwise convolution is lowered as one generic per box of outputs (the interior, four
edges, four corners: passes/lowering/rules/conv.py); each is a parallel region of its own if
large enough and serial otherwise, so at 16 threads the border boxes ran on one core after
the interior was spread over all of them, each line of y moving between cores (MobileNetV2's
576-channel 14x14 depthwise convs took longer at 16 threads than at one). Here such siblings
become

    scf.for %c = 0 to C { every sibling's loops, with its channel loop replaced by %c } {dlc.parallel}

as MLIR's affine-loop-fusion fuses sibling loops over a shared dimension, so a thread does
all boxes of its channels in one region, in the original order.

Legal when every buffer the siblings write (R, or a chain: a depthwise conv's padded planes,
filled and copied, then read by its taps into y) has C elements on its first axis of more than
one element (all axes before it are of size 1), and every access of every sibling to every
written buffer - reads included - stays inside the slice R[.., c, ..] selected by the sibling's
loop over that axis: iteration c of one sibling never touches what iteration c' != c of
another reads or writes, so running sibling after sibling per channel computes every element
as the serial order does (bit-identical). Other operands are only read (the group writes
nothing else). A depthwise 5x5/2 conv over 672x14x14 ran its fills, copies and taps as three
regions and some serial loops: 2.5x onnxruntime's time at two threads, 1.06x as one loop.
Accesses are checked through their view (a `memref.reinterpret_cast` of R with a static
strided layout, or R itself): address = offset + sum(stride_k * map_k(d)).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from xdsl.context import Context
from xdsl.dialects import arith, func, memref, scf
from xdsl.dialects.builtin import IndexType, MemRefType, ModuleOp, NoneAttr, UnitAttr
from xdsl.dialects.linalg.attrs import IteratorType
from xdsl.dialects.linalg.ops import GenericOp
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint, Rewriter
from xdsl.transforms.convert_linalg_to_loops import LowerLinalgStructuredOpPattern

from passes.lowering.mark_parallel_loops import _VIEWS, MIN_ITERATIONS, PARALLEL_ATTR, _root, linear_form


@dataclass(frozen=True)
class _Axis:
    """The axis of written buffer `root` that a group splits: `size` elements `stride` apart."""

    root: SSAValue
    size: int
    stride: int


def _split_axis(root: SSAValue) -> _Axis | None:
    """The first axis of more than one element of a row-major buffer, if all before it are 1,
    and it is not the innermost: split over contiguous elements (an NHWC map's channels, a
    [1, 1, 1, C] mean of them), each sibling's loop over them would leave the inner loops
    walking x C floats apart, one element at a time (a ReduceMean of 32x112x112: 0.39 ms)."""
    if not isinstance(root.type, MemRefType) or not isinstance(root.type.layout, NoneAttr):
        return None
    shape = root.type.get_shape()
    if any(size < 0 for size in shape):
        return None
    strides = MemRefType.strides_for_shape(shape)
    axis = next((i for i, size in enumerate(shape) if size > 1), None)
    return None if axis is None or strides[axis] == 1 else _Axis(root, shape[axis], strides[axis])


def _layout(value: SSAValue, root: SSAValue) -> tuple[int, list[int]] | None:
    """(offset, strides) of `value` in elements of `root`: root itself, or a static
    reinterpret_cast of it; None for any other view (not analysed)."""
    if value is root:
        return 0, list(MemRefType.strides_for_shape(root.type.get_shape()))
    owner = value.owner
    if isinstance(owner, memref.ReinterpretCastOp) and owner.source is root:
        strides, offset = value.type.get_strides(), value.type.get_offset()
        if strides is None or offset is None or None in strides:
            return None
        return offset, list(strides)
    return None


def _sibling_dim(op: GenericOp, axes: dict[SSAValue, _Axis]) -> int | None:
    """The loop dimension of `op` that walks the split axis of every buffer in `axes` (the
    group's written buffers, `op`'s own among them) such that each of its iterations touches
    one slice of each only; None when there is none. `op` must write only buffers of `axes`."""
    if op.res:
        return None
    written = {_root(value) for value in op.outputs}
    if not written <= set(axes):
        return None
    trips = [operand.type.get_shape()[index] for operand, index, _ in op.get_loop_bound_sources()]
    iterators = [it.data for it in op.get_iterator_types().data]
    maps = [m.data for m in op.get_indexing_maps().data]
    accesses = []  # (axis, constant part, coefficient per dim) of each access to a group buffer
    for value, affine_map in zip(op.operands, maps):
        if not isinstance(value.type, MemRefType) or _root(value) not in axes:
            continue
        axis = axes[_root(value)]
        layout = _layout(value, axis.root)
        forms = [linear_form(expr, len(trips)) for expr in affine_map.results]
        if layout is None or affine_map.num_symbols or None in forms:
            return None
        offset, strides = layout
        constants = affine_map.eval([0] * len(trips), [])
        constant = offset + sum(s * c for s, c in zip(strides, constants))
        coefficients = [sum(s * form[d] for s, form in zip(strides, forms)) for d in range(len(trips))]
        accesses.append((axis, constant, coefficients))
    size = next(iter(axes.values())).size
    for dim, (trip, iterator) in enumerate(zip(trips, iterators)):
        if trip != size or iterator != IteratorType.PARALLEL:
            continue
        if all(coefficients[dim] == axis.stride and _within_slice(constant, coefficients, dim, trips, axis.stride)
               for axis, constant, coefficients in accesses):
            return dim
    return None


def _within_slice(constant: int, coefficients: list[int], dim: int, trips: list[int], stride: int) -> bool:
    """Whether constant + sum over the other dims of coefficient * index stays in [0, stride)."""
    low = constant + sum(min(0, c * (t - 1)) for d, (c, t) in enumerate(zip(coefficients, trips)) if d != dim)
    high = constant + sum(max(0, c * (t - 1)) for d, (c, t) in enumerate(zip(coefficients, trips)) if d != dim)
    return 0 <= low and high < stride


def _pure(op: Operation) -> bool:
    """Ops a group may step over: views and constants (no memory effect)."""
    return isinstance(op, (*_VIEWS, arith.ConstantOp))


def _groups(block: Block) -> list[tuple[_Axis, list[tuple[GenericOp, int]]]]:
    """Runs of consecutive generics (views and constants between them allowed) that split one
    axis, of C elements, of every buffer they write: a sibling writing a buffer of its own
    joins when that buffer's split axis has C elements too and every member's every access to
    every written buffer stays in slice c of it (a depthwise conv's padded planes, filled and
    copied channel by channel, then read by its taps channel by channel into y)."""
    groups: list[tuple[_Axis, list[tuple[GenericOp, int]]]] = []
    members: list[tuple[GenericOp, int]] = []
    axes: dict[SSAValue, _Axis] = {}

    def close() -> None:
        if members:
            groups.append((next(iter(axes.values())), list(members)))
        members.clear()
        axes.clear()

    for op in block.ops:
        if isinstance(op, GenericOp):
            joined = _join(op, members, axes) if members else None
            if joined is not None:
                axes.update(joined[0])
                members.append((op, joined[1]))
                continue
            close()
            roots = {_root(value) for value in op.outputs}
            axis = _split_axis(next(iter(roots))) if len(roots) == 1 else None
            dim = _sibling_dim(op, {axis.root: axis}) if axis is not None else None
            if dim is not None:
                axes[axis.root] = axis
                members.append((op, dim))
        elif not _pure(op):
            close()
    close()
    return [g for g in groups if len(g[1]) > 1 and sum(_iterations(op) for op, _ in g[1]) >= MIN_ITERATIONS]


def _join(op: GenericOp, members: list[tuple[GenericOp, int]],
          axes: dict[SSAValue, _Axis]) -> tuple[dict[SSAValue, _Axis], int] | None:
    """(the group's written buffers with `op`'s, `op`'s split dim) when `op` can join the group
    `members` (writing `axes`), else None. A buffer new to the group must split on as many
    elements, and the earlier members must keep to their slice of it too."""
    size = next(iter(axes.values())).size
    new = {root: _split_axis(root) for root in {_root(value) for value in op.outputs} if root not in axes}
    if any(axis is None or axis.size != size for axis in new.values()):
        return None
    wider = {**axes, **new}
    dim = _sibling_dim(op, wider)
    if dim is None or (new and any(_sibling_dim(member, wider) != old for member, old in members)):
        return None
    return wider, dim


def _iterations(op: GenericOp) -> int:
    return prod(operand.type.get_shape()[index] for operand, index, _ in op.get_loop_bound_sources())


def _fuse(axis: _Axis, members: list[tuple[GenericOp, int]]) -> None:
    """One loop over the split axis, marked dlc.parallel, in place of the group's last member,
    holding each member's loop nest with its loop over that axis replaced by the shared index."""
    last = members[-1][0]
    bounds = [arith.ConstantOp.from_int_and_width(v, IndexType()) for v in (0, axis.size, 1)]
    body = Block(arg_types=[IndexType()])
    body.add_op(scf.YieldOp())
    loop = scf.ForOp(*bounds, [], Region(body))
    loop.attributes[PARALLEL_ATTR] = UnitAttr()
    Rewriter.insert_op([*bounds, loop], InsertPoint.before(last))
    channel = body.args[0]
    for op, dim in members:
        op.detach()
        yield_op = body.last_op
        Rewriter.insert_op(op, InsertPoint.before(yield_op))
        LowerLinalgStructuredOpPattern().match_and_rewrite(op, PatternRewriter(op))
        nest = yield_op.prev_op
        for _ in range(dim):  # loops are nested in dimension order, d0 outermost
            nest = next(o for o in nest.body.block.ops if isinstance(o, scf.ForOp))
        assert isinstance(nest, scf.ForOp)
        Rewriter.erase_op(nest.body.block.last_op)  # its scf.yield
        Rewriter.inline_block(nest.body.block, InsertPoint.before(nest), [channel])
        Rewriter.erase_op(nest)


@dataclass(frozen=True)
class FuseParallelSiblingsPass(ModulePass):
    """Consecutive generics of a kernel that split the same axis of the buffer they write run
    in one dlc.parallel loop over that axis."""

    name = "fuse-parallel-siblings"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for function in op.ops:
            if not isinstance(function, func.FuncOp) or function.sym_visibility is None \
                    or function.sym_visibility.data != "private" or not function.body.blocks:
                continue  # kernels are private functions; @main only calls them
            for axis, members in _groups(function.body.block):
                _fuse(axis, members)
