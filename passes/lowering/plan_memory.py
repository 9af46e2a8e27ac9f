"""Static memory planning: every `memref.alloc` in @main becomes a view of one arena.

Like TFLite's and IREE's static planners: buffers get liveness intervals over
@main's op sequence (an alias made by `memref.reinterpret_cast` keeps its source
alive), then offsets are assigned greedily, largest first, reusing space whose
intervals do not overlap. Offsets are 64-byte aligned (an AVX-512 vector). The
arena becomes @main's last argument; its size is `dlc.arena_size` on @main.

Kernels with run-time checks (utils/runtime_checks.py) each take a status word: all of them
share one slot after the planned buffers, which @main zeroes first; its offset is
`dlc.status_offset` on @main (absent when nothing is checked).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, func, memref
from xdsl.dialects.builtin import (
    FunctionType,
    IndexType,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    i8,
    i32,
    i64,
)
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from dialects.types import byte_size
from passes.lowering.utils.runtime_checks import SETS_STATUS, STATUS_TYPE

ALIGNMENT = 64
_ALIASING = (memref.ReinterpretCastOp, memref.CollapseShapeOp, memref.ExpandShapeOp, memref.CastOp, memref.ViewOp)


def _align(size: int) -> int:
    return (size + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def liveness(ops: list[Operation], allocs: list[memref.AllocOp]) -> dict[memref.AllocOp, tuple[int, int]]:
    """[first, last] op index during which each alloc's memory must stay untouched."""
    position = {op: i for i, op in enumerate(ops)}
    intervals = {}
    for alloc in allocs:
        last = position[alloc]
        pending: list[SSAValue] = [alloc.memref]
        while pending:
            value = pending.pop()
            for use in value.uses:
                user = use.operation
                while user.parent_op() is not None and user not in position:
                    user = user.parent_op()  # a use nested in a loop counts at the loop
                if user in position:
                    last = max(last, position[user])
                if isinstance(use.operation, _ALIASING):
                    pending.append(use.operation.results[0])
        intervals[alloc] = (position[alloc], last)
    return intervals


_BUCKET = 64  # positions of @main per stretch in assign_offsets


def assign_offsets(sizes: dict[object, int], intervals: dict[object, tuple[int, int]]) -> tuple[dict, int]:
    """Greedy best-fit by decreasing size; returns (offset per buffer, arena size)."""
    placed: list[tuple[int, int, tuple[int, int]]] = []  # (offset, size, interval)
    # Placed buffers by stretch of _BUCKET positions they are live in: a buffer's conflicts
    # are read from its own stretches, not from every buffer placed (quadratic in buffers).
    by_stretch: dict[int, list[int]] = {}
    offsets = {}
    for key in sorted(sizes, key=lambda k: (-sizes[k], intervals[k])):
        size, (start, end) = _align(sizes[key]), intervals[key]
        stretches = range(min(start, end) // _BUCKET, max(start, end) // _BUCKET + 1)
        nearby = {index for stretch in stretches for index in by_stretch.get(stretch, ())}
        conflicts = sorted((o, s) for o, s, (a, b) in (placed[index] for index in nearby)
                           if not (b < start or end < a))
        offset = 0
        best = None
        for other_offset, other_size in conflicts:
            gap = other_offset - offset
            if gap >= size and (best is None or gap < best[1]):
                best = (offset, gap)
            offset = max(offset, other_offset + other_size)
        chosen = best[0] if best else offset
        offsets[key] = chosen
        for stretch in stretches:
            by_stretch.setdefault(stretch, []).append(len(placed))
        placed.append((chosen, size, (start, end)))
    arena = max((o + s for o, s, _ in placed), default=0)
    return offsets, arena


def status_allocs(module: ModuleOp, main_block: Block) -> list[memref.AllocOp]:
    """The allocs @main passes to kernel arguments that a run-time check writes."""
    kernels = {f.sym_name.data: f for f in module.ops
               if isinstance(f, func.FuncOp) and f.body.blocks}
    found = []
    for call in main_block.ops:
        if not isinstance(call, func.CallOp) or call.callee.root_reference.data not in kernels:
            continue
        callee = kernels[call.callee.root_reference.data]
        for operand, arg in zip(call.arguments, callee.body.block.args):
            if (isinstance(operand.owner, memref.AllocOp)
                    and any(SETS_STATUS in use.operation.attributes for use in arg.uses)):
                found.append(operand.owner)
    return found


def _zeroed_status(arena: SSAValue, offset: int, block: Block) -> SSAValue:
    """The status word at `offset` in the arena, set to 0 when @main starts."""
    at = arith.ConstantOp.from_int_and_width(offset, IndexType())
    view = memref.ViewOp(arena, at.result, [], STATUS_TYPE)
    zero = arith.ConstantOp.from_int_and_width(0, i32)
    first = arith.ConstantOp.from_int_and_width(0, IndexType())
    store = memref.StoreOp.get(zero.result, view.result, [first.result])
    Rewriter.insert_op([at, view, zero, first, store], InsertPoint.at_start(block))
    return view.result


@dataclass(frozen=True)
class PlanMemoryPass(ModulePass):
    """Place all intermediate buffers of @main in one arena, reusing memory by liveness."""

    name = "plan-memory"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        main = next(f for f in op.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "main")
        block = main.body.block
        ops = list(block.ops)
        status = status_allocs(op, block)
        allocs = [o for o in ops if isinstance(o, memref.AllocOp) and o not in status]
        intervals = liveness(ops, allocs)
        offsets, arena_size = assign_offsets({a: byte_size(a.memref.type) for a in allocs}, intervals)
        status_offset = _align(arena_size)
        if status:
            arena_size = status_offset + ALIGNMENT
        arena = block.insert_arg(MemRefType(i8, [max(arena_size, ALIGNMENT)]), len(block.args))
        if status:
            status_word = _zeroed_status(arena, status_offset, block)
            for alloc in status:
                alloc.memref.replace_all_uses_with(status_word)
                Rewriter.erase_op(alloc)
            main.attributes["dlc.status_offset"] = IntegerAttr(status_offset, i64)
        for alloc in allocs:
            index = arith.ConstantOp.from_int_and_width(offsets[alloc], IndexType())
            view = memref.ViewOp(arena, index.result, [], alloc.memref.type)
            Rewriter.insert_op([index, view], InsertPoint.before(alloc))
            alloc.memref.replace_all_uses_with(view.result)
            Rewriter.erase_op(alloc)
        main.function_type = FunctionType.from_lists([a.type for a in block.args], [])
        main.attributes["dlc.arena_size"] = IntegerAttr(arena_size, i64)
