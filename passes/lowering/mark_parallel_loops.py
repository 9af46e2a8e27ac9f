"""Lower each worthwhile data-parallel `linalg.generic` of a kernel to loops and mark the loop
that threads may share `dlc.parallel` (OpenMP's `parallel for`, static schedule).

The marked loop is the nest's first loop of more than one iteration (leading loops of one
iteration, like a batch of 1, share nothing). It must be a parallel dimension whose
iterations write disjoint elements of every output, so threads never race and each element
is computed as in a serial run (bit-identical results). The LLVM emitter outlines it onto
the runtime's thread pool; xDSL's convert-linalg-to-loops lowers the generics left over.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from xdsl.context import Context
from xdsl.dialects import arith, func, memref, scf
from xdsl.dialects.builtin import ModuleOp, StridedLayoutAttr, UnitAttr
from xdsl.dialects.linalg.attrs import IteratorType
from xdsl.dialects.linalg.ops import GenericOp
from xdsl.ir import SSAValue
from xdsl.ir.affine import (
    AffineBinaryOpExpr,
    AffineBinaryOpKind,
    AffineConstantExpr,
    AffineDimExpr,
    AffineExpr,
    AffineMap,
)
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.transforms.convert_linalg_to_loops import LowerLinalgStructuredOpPattern

PARALLEL_ATTR = "dlc.parallel"
# Waking the thread pool costs ~5-20 us: smaller nests (~10 us of work) stay serial.
MIN_ITERATIONS = 1 << 15
# What one innermost iteration of a nest is taken to cost (MIN_ITERATIONS of them ~10 us):
# the emitter sizes a marked loop's thread count from it (dlc/codegen/parallel_loops.py).
ITERATION_SECONDS = 10e-6 / MIN_ITERATIONS
# An innermost iteration of up to this many arithmetic ops counts as one iteration of work; a
# body with k times as many counts as k (an NHWC depthwise 5x5 conv computes 2-4 outputs of 25
# taps in one: 100-200 ops, where an elementwise op has 1-4). Without it, such a nest of 13K
# iterations (672 channels over 14x14) looked like 13 us and ran serially at any thread count.
COMPUTATIONS_PER_ITERATION = 8


def body_weight(block) -> int:
    """Iterations of work one run of `block` (a generic's body, an innermost loop's) stands for:
    its arithmetic ops over COMPUTATIONS_PER_ITERATION, at least 1."""
    computations = sum(1 for op in block.ops if op.dialect_name() in ("arith", "math")
                       and not isinstance(op, arith.ConstantOp))
    return max(1, computations // COMPUTATIONS_PER_ITERATION)


_VIEWS = (memref.ReinterpretCastOp, memref.CollapseShapeOp, memref.ExpandShapeOp, memref.CastOp,
          memref.SubviewOp, memref.ViewOp)


def linear_form(expr: AffineExpr, num_dims: int) -> list[int] | None:
    """Coefficients of d0..dN-1 in `expr` (constant terms dropped), or None if not linear."""
    if isinstance(expr, AffineDimExpr):
        return [int(i == expr.position) for i in range(num_dims)]
    if isinstance(expr, AffineConstantExpr):
        return [0] * num_dims
    if not isinstance(expr, AffineBinaryOpExpr):
        return None  # a symbol: unknown at compile time
    lhs, rhs = linear_form(expr.lhs, num_dims), linear_form(expr.rhs, num_dims)
    if lhs is None or rhs is None:
        return None
    if expr.kind == AffineBinaryOpKind.Add:
        return [a + b for a, b in zip(lhs, rhs)]
    if expr.kind == AffineBinaryOpKind.Mul and isinstance(expr.rhs, AffineConstantExpr):
        return [a * expr.rhs.value for a in lhs]
    if expr.kind == AffineBinaryOpKind.Mul and isinstance(expr.lhs, AffineConstantExpr):
        return [b * expr.lhs.value for b in rhs]
    return None  # floordiv, ceildiv, mod


def separates(expr: AffineExpr, dim: int, trips: tuple[int, ...]) -> bool:
    """True when two iterations with different `dim` always give `expr` different values:
    its coefficient outweighs everything the other dimensions can add (d_dim itself, or a
    row-major flattening like `d1 * 3364 + d2 * 58 + d3` with d2 < 58, d3 < 58)."""
    coefficients = linear_form(expr, len(trips))
    if coefficients is None or coefficients[dim] == 0:
        return False
    others = sum(abs(c) * (t - 1) for i, (c, t) in enumerate(zip(coefficients, trips)) if i != dim)
    return abs(coefficients[dim]) > others


def _root(value: SSAValue) -> SSAValue:
    """The buffer a memref view was taken from."""
    while isinstance(value.owner, _VIEWS):
        value = value.owner.operands[0]
    return value


def parallel_dim(op: GenericOp) -> int | None:
    """The loop dimension threads may split, or None when this generic should stay serial."""
    if op.res:
        return None
    trips = tuple(operand.type.get_shape()[index] for operand, index, _ in op.get_loop_bound_sources())
    if prod(trips) * body_weight(op.body.block) < MIN_ITERATIONS or all(t <= 1 for t in trips):
        return None
    dim = next(i for i, t in enumerate(trips) if t != 1)
    if trips[dim] < 2 or op.get_iterator_types().data[dim].data != IteratorType.PARALLEL:
        return None
    maps = [m.data for m in op.get_indexing_maps().data]
    outputs = list(zip(op.outputs, maps[len(op.inputs):]))
    if any(m.num_symbols or not any(separates(e, dim, trips) for e in m.results) for _, m in outputs):
        return None  # some iterations would write the same element
    # Another iteration must not read what this one writes: an input sharing a written
    # buffer must be that very value, accessed through the same map (an in-place epilogue).
    roots = [_root(value) for value, _ in outputs]
    for value, affine_map in zip(op.inputs, maps):
        for (written, written_map), root in zip(outputs, roots):
            if _root(value) == root and (value, affine_map) != (written, written_map):
                return None
    # Outputs that are views of one buffer (the int8 depthwise conv writes four output pixels
    # of a row, y[..., 0::4, :] to y[..., 3::4, :]) are disjoint between iterations when, in
    # that buffer's elements, each iteration of `dim` keeps to a range shorter than its step.
    # Views of one buffer whose footprints do not overlap at all (Winograd's 16 planes of V, each
    # written at one point of every tile) are as good as separate buffers, each checked alone.
    for root in set(roots):
        group = [output for output, r in zip(outputs, roots) if r == root]
        if len(group) > 1 and not _disjoint_between_iterations(group, dim, trips) and not (
                _apart(group, trips) and all(_disjoint_between_iterations([view], dim, trips) for view in group)):
            return None
    return dim


def _footprint(value: SSAValue, affine_map: AffineMap, trips: tuple[int, ...], relative: bool = False):
    """(element coefficients per loop dim, lowest element, highest element) that `value` (a
    static strided view) is written at through `affine_map` over the loop's `trips`, or None.
    With `relative`, a view at a run-time offset counts from that offset (elements of one view
    compare with each other, never with another view's)."""
    layout = value.type.layout
    offset = layout.get_offset() if isinstance(layout, StridedLayoutAttr) else 0
    if offset is None and relative:
        offset = 0
    try:
        strides = value.type.get_strides()
    except Exception:  # a dynamic stride or offset: nothing is known
        return None
    if not isinstance(offset, int) or strides is None or any(not isinstance(s, int) for s in strides):
        return None
    coefficients, constant = [0] * len(trips), offset
    for stride, expr in zip(strides, affine_map.results):
        form = linear_form(expr, len(trips))
        if form is None:
            return None
        coefficients = [c + stride * f for c, f in zip(coefficients, form)]
        constant += stride * AffineMap(len(trips), 0, (expr,)).eval([0] * len(trips), [])[0]
    spread = [c * (t - 1) for c, t in zip(coefficients, trips)]
    return coefficients, constant + sum(min(0, s) for s in spread), constant + sum(max(0, s) for s in spread)


def _apart(outputs, trips: tuple[int, ...]) -> bool:
    """Whether the element ranges `outputs` ((view, map) pairs) write over the whole loop lie
    apart: no element of one view's range is in another's."""
    ranges = []
    for value, affine_map in outputs:
        footprint = _footprint(value, affine_map, trips)
        if footprint is None:
            return False
        ranges.append(footprint[1:])
    ranges.sort()
    return all(high < low for (_, high), (low, _) in zip(ranges, ranges[1:]))


def _disjoint_between_iterations(outputs, dim: int, trips: tuple[int, ...]) -> bool:
    """True when iterations with different `dim` write disjoint elements of the buffer that
    `outputs` ((view, map) pairs of static strided views) share: every view moves by the same
    step C per iteration of `dim`, and all the elements one iteration writes lie within fewer
    than |C| consecutive ones."""
    steps, lowest, highest = set(), None, None
    one_view = len({value for value, _ in outputs}) == 1
    for value, affine_map in outputs:
        footprint = _footprint(value, affine_map, trips, relative=one_view)
        if footprint is None:
            return False
        coefficients, low, high = footprint
        steps.add(coefficients[dim])
        # one iteration of `dim`: the range without dim's own spread
        own = coefficients[dim] * (trips[dim] - 1)
        low, high = low - min(0, own), high - max(0, own)
        lowest = low if lowest is None else min(lowest, low)
        highest = high if highest is None else max(highest, high)
    (step,) = steps if len(steps) == 1 else (0,)
    return step != 0 and highest - lowest < abs(step)


def _in_kernel_body(op: GenericOp) -> bool:
    """Whether `op` is a top-level op of a kernel (a private function; never @main) or sits in
    its serial loops (Winograd's loop over blocks of rows): loops without loop-carried values,
    none of them a parallel loop already, so a region opens on each iteration."""
    parent = op.parent_op()
    while isinstance(parent, scf.ForOp) and not parent.iter_args and PARALLEL_ATTR not in parent.attributes:
        parent = parent.parent_op()
    return isinstance(parent, func.FuncOp) and parent.sym_visibility is not None \
        and parent.sym_visibility.data == "private"


class LowerParallelGeneric(RewritePattern):
    """Lower a data-parallel generic with xDSL's pattern, then mark its splittable loop."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: GenericOp, rewriter: PatternRewriter) -> None:
        if not _in_kernel_body(op):
            return
        dim = parallel_dim(op)
        if dim is None:
            return
        after = op.next_op  # the nest is inserted right before op, which is then erased
        assert after is not None, "a function body ends with its terminator"
        LowerLinalgStructuredOpPattern().match_and_rewrite(op, rewriter)
        loop = after.prev_op
        for _ in range(dim):  # loops are nested in dimension order, d0 outermost
            loop = next(o for o in loop.body.block.ops if isinstance(o, scf.ForOp))
        assert isinstance(loop, scf.ForOp)
        loop.attributes[PARALLEL_ATTR] = UnitAttr()


@dataclass(frozen=True)
class MarkParallelLoopsPass(ModulePass):
    """Lower data-parallel generics of kernels to loops whose outer loop is marked dlc.parallel."""

    name = "mark-parallel-loops"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(LowerParallelGeneric(), apply_recursively=False).rewrite_module(op)
