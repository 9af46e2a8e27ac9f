"""Move the memref views a `dlc.parallel` loop uses into the loop, so the loop captures the
buffers they view rather than each view, as MLIR's `-loop-invariant-code-motion` does in
reverse (and as its `-async-parallel-for` outlining clones constants into the body).

The LLVM emitter outlines a `dlc.parallel` scf.for (mark-parallel-loops) into a body function
that takes every value the loop uses from outside as a parameter (dlc/codegen/parallel_loops.py).
A convolution's border regions read one input through a dozen `memref.reinterpret_cast`
views: a dozen pointer parameters, all the same pointer, none of which may be `noalias`
(they alias each other), so LLVM's vectorizer puts run-time overlap checks between every
pair in front of every loop, and its loop strength reduction works over every one of them
(EfficientNet-B0's 5x5 depthwise kernels: 36 parameters, the kernels' LLVM part 3.4 -> 2.2
CPU-s). Views of a static layout (reinterpret_cast, subview, cast, collapse_shape,
expand_shape with a single operand) cost no code (the emitter's `_alias`: the same base
pointer, the layout in the type), so a copy inside the loop is free; the loop then captures
the viewed buffer once. The views are pure and their operand comes from outside the loop,
so the copy reads the same memref on every iteration: nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import scf
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from passes.lowering.mark_parallel_loops import PARALLEL_ATTR

# Views the emitter translates to their operand's pointer (dlc/codegen/emit_ops.py `_alias`).
VIEW_OPS = frozenset({"memref.reinterpret_cast", "memref.subview", "memref.cast",
                      "memref.collapse_shape", "memref.expand_shape"})


def _view(value: SSAValue, loop: Operation) -> Operation | None:
    """The static view op outside `loop` that defines `value`, if any."""
    owner = value.owner
    if (isinstance(owner, Operation) and owner.name in VIEW_OPS and len(owner.operands) == 1
            and not loop.is_ancestor(owner)):
        return owner
    return None


def _parallel(op: Operation) -> bool:
    return isinstance(op, scf.ForOp) and PARALLEL_ATTR in op.attributes


def _ancestors(op: Operation):
    parent = op.parent_op()
    while parent is not None:
        yield parent
        parent = parent.parent_op()


def sink_views(loop: scf.ForOp) -> list[Operation]:
    """Copy the outside views `loop` uses (and the views they view) to the top of its body and
    use the copies inside; return the outside views that copies replaced."""
    body = loop.body.block
    anchor = body.first_op
    copies: dict[SSAValue, SSAValue] = {}
    replaced: list[Operation] = []

    def inside(value: SSAValue) -> SSAValue:
        if value in copies:
            return copies[value]
        view = _view(value, loop)
        if view is None:
            return value
        source = inside(view.operands[0])  # a view of a view: its source first, above it
        copy = view.clone()
        copy.operands[0] = source
        body.insert_op_before(copy, anchor)
        copies[value] = copy.results[0]
        replaced.append(view)
        return copy.results[0]

    for op in list(loop.body.walk()):
        if any(_view(value, loop) for value in op.operands):
            op.operands = [inside(value) for value in op.operands]
    return replaced


@dataclass(frozen=True)
class SinkViewsIntoParallelLoops(ModulePass):
    """Copy the static memref views a `dlc.parallel` loop uses into its body."""

    name = "sink-views-into-parallel-loops"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        replaced: list[Operation] = []
        for loop in list(op.walk()):
            # A dlc.parallel loop inside another runs in place, within the outer one's body.
            if _parallel(loop) and not any(_parallel(outer) for outer in _ancestors(loop)):
                replaced += sink_views(loop)
        # The outside views no other op uses any more; a view before the view of it, so the
        # last use of each chain goes first.
        for view in reversed(replaced):
            if view.parent is not None and not any(result.uses for result in view.results):
                view.detach()
                view.erase()
