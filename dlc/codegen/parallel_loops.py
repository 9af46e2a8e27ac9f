"""Loops on the thread pool: a `dlc.parallel` scf.for (passes/lowering/mark_parallel_loops.py)
is outlined into a body function and a worker the runtime's pool runs chunk by chunk.

As MLIR's async-parallel-for outlines an scf.parallel into a function its runtime calls per
block, but on dlc's own pool (dlc/runtime/thread_pool.py): with one thread (or no pool) the
same outlined body runs the whole range, so results do not depend on the thread count.

How many threads a loop takes follows from its work, as `thread_grid` (dialects/gemm_ukernel.py)
does for GEMMs: a loop nest of I innermost iterations is ~I * ITERATION_SECONDS of work (an
iteration of many arithmetic ops counting as several: `body_weight`), and
each thread beyond the caller costs the region THREAD_SECONDS, so it takes the count t that
minimises I * ITERATION_SECONDS / t + THREAD_SECONDS * (t - 1) (`threads_for_work`): a nest
of 32K iterations 6 threads, of 200K or more 14 or more (all of them at 16). A nest worth one thread
runs on the caller's thread without touching the pool.
"""

from __future__ import annotations

from llvmlite import ir
from xdsl.dialects import arith, func, scf
from xdsl.dialects.builtin import IntegerAttr, MemRefType
from xdsl.ir import Block, Operation, SSAValue

from dialects.gemm_ukernel import THREAD_SECONDS
from dlc.codegen.emit_ops import OpRules
from dlc.codegen.emitter_base import rule
from dlc.codegen.llvm_types import I64, PTR, VOID
from dlc.codegen.runtime_abi import PARALLEL_TYPE, WORKER_TYPE, indirect_call, slot
from passes.lowering.mark_parallel_loops import ITERATION_SECONDS, PARALLEL_ATTR, body_weight

# What an outlined loop's worker reads from its `data` argument, as 8-byte slots; the
# loop's captured values follow.
LOOP_DATA_FIELDS = ("lb", "step", "trip", "per_item", "weights", "runtime")
# Ops whose memref result is a view of their first operand.
_VIEW_OPS = frozenset({"memref.view", "memref.reinterpret_cast", "memref.subview", "memref.cast",
                       "memref.collapse_shape", "memref.expand_shape", "memref.assume_alignment"})


def _captured(op: Operation) -> list[SSAValue]:
    """Values the body of loop `op` uses but does not define, in first-use order."""
    inside = set(op.regions[0].block.args)
    used: dict[SSAValue, None] = {}
    for inner in op.regions[0].walk():
        used.update((v, None) for v in inner.operands if v not in inside)
        inside.update(inner.results)
        inside.update(a for region in inner.regions for block in region.blocks for a in block.args)
    return [v for v in used if v not in inside]


def _view_root(value: SSAValue) -> SSAValue:
    """The memref a chain of views starts from (views share their root's memory)."""
    while isinstance(value.owner, Operation) and value.owner.name in _VIEW_OPS:
        value = value.owner.operands[0]
    return value


def _constant(value: SSAValue) -> int | None:
    owner = value.owner
    if isinstance(owner, arith.ConstantOp) and isinstance(owner.value, IntegerAttr):
        return owner.value.value.data
    return None


def _trip(loop: scf.ForOp) -> int | None:
    """The iteration count of `loop` when its bounds and step are constants."""
    lb, ub, step = (_constant(v) for v in (loop.lb, loop.ub, loop.step))
    if lb is None or ub is None or not step or step < 0:
        return None
    return max(0, -((lb - ub) // step))


def _block_iterations(block: Block) -> int | None:
    """Innermost iterations one run of `block` makes: the sum over its loop nests of their
    trip products (the larger branch of an scf.if), at least 1; None if a bound is dynamic,
    a region op could repeat its body any number of times (scf.while) or a call does work
    this count cannot see (a micro-kernel, an ONNX Loop's body)."""
    total, loops = 0, False
    for op in block.ops:
        if isinstance(op, scf.ForOp):
            loops = True
            trip, body = _trip(op), _block_iterations(op.body.block)
            if trip is None or body is None:
                return None
            total += trip * body
        elif isinstance(op, scf.IfOp):
            loops = True
            branches = [_block_iterations(b) for region in op.regions for b in region.blocks]
            if None in branches:
                return None
            total += max(branches, default=0)
        elif op.regions or isinstance(op, func.CallOp) or op.name == "loop.run":  # loop.run: an ONNX Loop
            return None
    return max(total, 1) if loops else body_weight(block)  # an innermost body: its ops' worth


def nest_iterations(loop: scf.ForOp) -> int | None:
    """Innermost iterations of the whole nest under `loop` (None: not known at compile time)."""
    trip, body = _trip(loop), _block_iterations(loop.body.block)
    return None if trip is None or body is None else trip * body


def threads_for_work(seconds: float) -> int:
    """The thread count t minimising seconds / t + THREAD_SECONDS * (t - 1): the least t with
    t * (t + 1) >= seconds / THREAD_SECONDS (one more thread would save less than it costs).
    Threads that cost nothing (THREAD_SECONDS <= 0, as a benchmark may set it) are all taken."""
    if THREAD_SECONDS <= 0:
        return 1 << 30
    t = 1
    while t * (t + 1) * THREAD_SECONDS < seconds:
        t += 1
    return t


class ParallelLoops(OpRules):
    """scf.for's rule: a `dlc.parallel` loop goes to the pool, any other is emitted in place."""

    parallel_loops: dict[str, int]  # kernel -> loops outlined so far

    @rule("scf.for")
    def _for(self, op: Operation) -> None:
        lb, ub, step, *inits = self._operands(op)
        if PARALLEL_ATTR in op.attributes and not inits and not self.in_parallel_loop:
            self._parallel_for(op, lb, ub, step)
        else:
            self._loop(op, lb, ub, step, inits)

    def _parallel_for(self, op: Operation, lb: ir.Value, ub: ir.Value, step: ir.Value) -> None:
        """Run a `dlc.parallel` loop serially or split over the runtime's threads.

        The loop takes `used` = min(threads, trip, `threads_for_work` of its nest's iterations)
        threads; a nest worth one thread is emitted as a plain call on the caller's thread.
        Otherwise the pool's `parallel` runs `KERNEL_parN(data, item)` for the
        ceil(trip / per_item) items of per_item = ceil(trip / used) iterations each (the
        fewest items whose longest is that short: none is empty), on whichever threads claim
        them; item t calls `KERNEL_parN_body(captured..., lo, hi, weights, runtime)` on its
        contiguous chunk [lo, hi): every element is computed as in the serial loop.
        """
        b = self.builder
        captured = [v for v in dict.fromkeys([*_captured(op), op.operands[2]])
                    if not isinstance(self.values[v], ir.Constant)]
        body = self._outline_loop(op, captured)
        args = [self.values[v] for v in captured]
        iterations = nest_iterations(op)
        worth = None if iterations is None else threads_for_work(iterations * ITERATION_SECONDS)
        if worth == 1:
            b.call(body, [*args, lb, ub, self.weights, self.runtime])
            return
        trip = self._trip_count(lb, ub, step)
        threads = self.runtime_field("num_threads")
        used = b.select(b.icmp_signed("<", threads, trip), threads, trip)
        if worth is not None:
            cap = ir.Constant(I64, worth)
            used = b.select(b.icmp_signed("<", used, cap), used, cap)
        parallel = self.runtime_field("parallel")
        serial = b.or_(b.icmp_signed("<=", used, ir.Constant(I64, 1)),
                       b.icmp_unsigned("==", parallel, ir.Constant(PTR, None)))
        with b.if_else(serial) as (then, otherwise):
            with then:
                # One thread runs the same outlined body over the whole range, so results do
                # not depend on the thread count (the body's vectorised reductions are the same).
                b.call(body, [*args, lb, ub, self.weights, self.runtime])
            with otherwise:
                one = ir.Constant(I64, 1)
                per_item = b.sdiv(b.add(trip, b.sub(used, one)), used)
                items = b.sdiv(b.add(trip, b.sub(per_item, one)), per_item)
                fields = [lb, step, trip, per_item, self.weights, self.runtime]
                data = self._entry_alloca(ir.ArrayType(I64, len(fields) + len(args)), "loop_data", 8)
                for i, value in enumerate([*fields, *args]):
                    b.store(value, slot(b, data, i), align=8)  # any scalar or pointer fits a slot
                worker = self._loop_worker(body, [a.type for a in args])
                indirect_call(b, parallel, PARALLEL_TYPE, [worker, data, items])

    def _trip_count(self, lb: ir.Value, ub: ir.Value, step: ir.Value) -> ir.Value:
        """max(0, ceil((ub - lb) / step)) for a positive step (folded when all are constants)."""
        if all(isinstance(v, ir.Constant) for v in (lb, ub, step)):
            return ir.Constant(I64, max(0, -((lb.constant - ub.constant) // step.constant)))
        b = self.builder
        span = b.sub(ub, lb)
        trip = b.sdiv(b.add(span, b.sub(step, ir.Constant(I64, 1))), step)
        return b.select(b.icmp_signed(">", span, ir.Constant(I64, 0)), trip, ir.Constant(I64, 0))

    def _outline_loop(self, op: Operation, captured: list[SSAValue]) -> ir.Function:
        """`void KERNEL_parN_body(captured..., i64 lo, i64 hi, ptr weights, ptr runtime)`."""
        kernel = self.builder.function.name
        index = self.parallel_loops.get(kernel, 0)
        self.parallel_loops[kernel] = index + 1
        types = [self.values[v].type for v in captured]
        fn = ir.Function(self.llvm, ir.FunctionType(VOID, [*types, I64, I64, PTR, PTR]),
                         f"{kernel}_par{index}_body")
        fn.linkage = "internal"
        # noinline: one copy of the body serves every thread count, so results are the same
        # for 1 and N threads (an inlined copy may be vectorised differently).
        fn.attributes = self._function_attributes("noinline")
        *params, lo, hi, weights, runtime = fn.args
        lo.name, hi.name, weights.name, runtime.name = "lo", "hi", "weights", "runtime"
        # Captured memrefs are views of the kernel's noalias buffers: those with a root of
        # their own keep `noalias`, which the vectorizer needs to skip run-time overlap checks.
        roots = [_view_root(v) if isinstance(v.type, MemRefType) else None for v in captured]
        for value, param, root in zip(captured, params, roots):
            param.name = self._name(value)
            if root is not None:
                param.add_attribute("captures(none)")
                if self.noalias and roots.count(root) == 1:
                    param.add_attribute("noalias")
        values = {v: c for v, c in self.values.items() if isinstance(c, ir.Constant)}
        values.update(zip(captured, params))
        with self._function_state(fn, values, weights, runtime, in_parallel_loop=True) as b:
            self._loop(op, lo, hi, self.values[op.operands[2]], [])
            b.ret_void()
        return fn

    def _loop_worker(self, body: ir.Function, types: list[ir.Type]) -> ir.Function:
        """`void KERNEL_parN(ptr data, i64 item)`: chunk `item` of the loop (`LOOP_DATA_FIELDS`),
        iterations [item * per_item, min((item + 1) * per_item, trip))."""
        worker = ir.Function(self.llvm, WORKER_TYPE, body.name.removesuffix("_body"))
        worker.linkage = "internal"
        worker.attributes.add("nounwind")
        b = ir.IRBuilder(worker.append_basic_block("entry"))
        data, item = worker.args
        field_types = {"weights": PTR, "runtime": PTR}
        field = {name: b.load(slot(b, data, i), name, align=8, typ=field_types.get(name, I64))
                 for i, name in enumerate(LOOP_DATA_FIELDS)}
        args = [b.load(slot(b, data, len(LOOP_DATA_FIELDS) + i), typ=t, align=8) for i, t in enumerate(types)]
        trip, per_item = field["trip"], field["per_item"]
        first = b.mul(item, per_item)
        last = b.add(first, per_item)
        last = b.select(b.icmp_signed("<", last, trip), last, trip)
        with b.if_then(b.icmp_signed("<", first, last)):
            lo = b.add(field["lb"], b.mul(first, field["step"]))
            hi = b.add(field["lb"], b.mul(last, field["step"]))
            b.call(body, [*args, lo, hi, field["weights"], field["runtime"]])
        b.ret_void()
        return worker
