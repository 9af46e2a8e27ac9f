"""Translate the `loops` phase (func/scf/arith/math/memref/affine in xDSL) into LLVM IR text.

Mirrors MLIR's `convert-{scf,arith,math,memref,func}-to-llvm` plus its LLVM IR translation,
but writes llvmlite IR directly, with "bare pointer" memrefs (statically shaped, so a pointer).
This driver declares the functions, emits their bodies with the rules of emit_ops.py,
parallel_loops.py and gemm_calls.py, and translates func (calls, returns, the entry's ABI).
The GEMMs the micro-kernel declarations specify can be emitted alone (`emit_gemms`), by a
process that compiles them while this one still runs the passes (dlc/codegen/native.py
`start_gemms_apart`); the rest of the module then declares them (`gemms_apart`).
"""

from __future__ import annotations

from llvmlite import ir
from xdsl.dialects import func, scf
from xdsl.dialects.builtin import MemRefType, ModuleOp, StringAttr, SymbolRefAttr
from xdsl.ir import Operation, SSAValue

from dialects.loop import RunOp
from dialects.types import byte_size
from dlc.codegen.emit_ops import LIBM_NAMES
from dlc.codegen.emitter_base import rule
from dlc.codegen.gemm_calls import GemmCalls
from dlc.codegen.llvm_types import FASTMATH_FLAGS, I1, I64, PTR, VOID, llvm_type
from dlc.codegen.parallel_loops import ParallelLoops
from dlc.codegen.runtime_abi import WORKER_TYPE
from passes.target_info import target_info

__all__ = ["LLVMEmitter", "emit_gemms", "emit_llvm", "entry_symbol", "gemm_declarations",
           "profile_sites"]


def entry_symbol(entry: str = "main") -> str:
    """The exported symbol of the entry function `@entry`: `void dlc_<entry>(ptr, ptr)`."""
    return f"dlc_{entry}"


def emit_llvm(
    module: ModuleOp,
    weight_offsets: dict[str, int],
    entry: str = "main",
    *,
    fastmath: bool = True,
    noalias: bool = True,
    profile: bool = False,
) -> str:
    """Translate a `loops`-phase module into LLVM IR text.

    ABI: `@entry(%a0, ..., %aN)` becomes `void dlc_<entry>(ptr %buffers, ptr %weights,
    ptr %runtime)`, where `buffers[i]` is the pointer for `%ai`, a `memref.get_global @w`
    is `weights + weight_offsets["w"]` bytes, and `runtime` points to the runtime context
    (`RUNTIME_FIELDS`: thread-pool entry points, thread count, profile counters). Other
    functions become internal LLVM functions taking trailing `ptr %weights, ptr %runtime`;
    their memref parameters are `noalias` (when `noalias`: the memory planner never passes
    overlapping buffers to one call). `fastmath` puts `reassoc contract` (never
    `nnan`/`ninf`) on fadd/fsub/fmul. With `profile`, the entry adds the nanoseconds spent
    in its i-th kernel call to `runtime->profile[i]` (call sites: `profile_sites`).

    When a process is compiling this module's GEMMs already (dlc/codegen/native.py
    `start_gemms_apart`, for the declarations the module still has), they are only declared
    here, and the text ends with the comment that tells `compile_objects` where their objects are.
    """
    from dlc.codegen import native

    emitter = LLVMEmitter(module, weight_offsets, entry, fastmath=fastmath, noalias=noalias, profile=profile)
    apart = native.gemms_apart_of(module)
    plan = apart.plan(module) if apart is not None else None
    if plan is None:
        return emitter.emit()
    emitter.gemms_apart = plan["kernels"]
    return apart.declared(emitter.emit(), plan["declarations"])


def gemm_declarations(module: ModuleOp) -> list[func.FuncOp]:
    """The module's micro-kernel declarations (`dlc.ukernel`), in the order `emit` meets them."""
    return [op for op in module.ops if isinstance(op, func.FuncOp) and not op.body.blocks
            and "dlc.ukernel" in op.attributes]


def emit_gemms(module: ModuleOp) -> tuple[str, dict[str, tuple]]:
    """The code of the module's micro-kernel declarations alone, as `emit_llvm` writes it: (LLVM
    IR text, {declaration: (GemmSpec, GEMM function, worker, im2col geometry)}), a worker being
    a function name or (pack function, multiply function, pack items). Every function is
    internal; what the kernels call is in the second item."""
    emitter = LLVMEmitter(module, {})
    kernels = {}
    for f in gemm_declarations(module):
        emitter._ukernel(f)
        spec, function, worker, conv = emitter.ukernels[f.sym_name.data]
        worker = worker.name if isinstance(worker, ir.Function) else (worker[0].name, worker[1].name, worker[2])
        kernels[f.sym_name.data] = (spec, function.name, worker, conv)
    return str(emitter.llvm), kernels


def profile_sites(module: ModuleOp, entry: str = "main") -> list[str]:
    """Callee names of the entry's kernel calls, in the order `profile` counts them."""
    main = next(f for f in module.ops if isinstance(f, func.FuncOp) and f.sym_name.data == entry)
    defined = {f.sym_name.data for f in module.ops if isinstance(f, func.FuncOp) and f.body.blocks}
    return [op.callee.root_reference.data for op in main.body.block.ops
            if isinstance(op, func.CallOp) and op.callee.root_reference.data in defined]


# A kernel that moves at most this many bytes and computes at most this many FLOPs
# (the `dlc.bytes` and `dlc.flops` that kernels-to-linalg records) keeps its loops rolled
# (`llvm.loop.unroll.disable`), all but its reductions: it runs in microseconds however it is
# compiled, but O3 fully unrolls loops of constant trip counts and then SLP-vectorises the
# straight line, which was most of a small model's LLVM time (an Attention over [2, 4, 72]:
# 0.94 -> 0.36 s of LLVM; Zen 1 VM). A loop nest that holds a reduction is left to O3 whole:
# the order in which a float reduction is summed follows how LLVM unrolls and vectorises the
# nest, and it decides rounding and overflow (a 17-wide ReduceProd through 3e38, with its nest
# rolled, overflowed in vector lanes where O3's unrolled chain and onnxruntime did not).
# The benchmark set's kernels are far larger and keep O3's code as it was.
SMALL_KERNEL_BYTES = 32 * 1024
SMALL_KERNEL_FLOPS = 32 * 1024


def _small_kernel(f: func.FuncOp) -> bool:
    """Whether kernel `f` is small enough to keep its loops rolled (SMALL_KERNEL_BYTES)."""
    flops, moved = f.attributes.get("dlc.flops"), f.attributes.get("dlc.bytes")
    return (flops is not None and moved is not None and flops.value.data <= SMALL_KERNEL_FLOPS
            and moved.value.data <= SMALL_KERNEL_BYTES)


def _loops_to_keep_rolled(kernel: func.FuncOp) -> frozenset[Operation]:
    """The scf.for loops of `kernel` that neither are nor hold a reduction. A reduction loop
    carries a value from one iteration to the next, or stores to an element that does not
    depend on its induction variable (its index or the view it stores into)."""
    def reduces(loop: scf.ForOp) -> bool:
        if loop.iter_args:
            return True
        derived = {loop.body.block.args[0]}  # what the induction variable reaches
        for op in loop.body.walk():
            if op.name.endswith(".store") or op.name == "memref.copy":
                # (value or source, then the memref written and its indices)
                if not any(operand in derived for operand in op.operands[1:]):
                    return True  # every iteration writes this element
            elif any(operand in derived for operand in op.operands):
                derived.update(op.results)
                derived.update(arg for region in op.regions for block in region.blocks for arg in block.args)
        return False

    loops = [op for op in kernel.walk() if isinstance(op, scf.ForOp)]
    holding = set()  # loops that are or hold a reduction
    for loop in loops:
        if loop not in holding and reduces(loop):
            holding.update(op for op in loop.walk() if isinstance(op, scf.ForOp))  # a nest's order stays O3's
            parent = loop.parent_op()
            while parent is not None and parent is not kernel:
                holding.add(parent)
                parent = parent.parent_op()
    return frozenset(loop for loop in loops if loop not in holding)


# loop.run swaps two buffers per carried value instead of copying the state back each
# iteration (measured in benchmarks/README.md "Native loops"; benchmarks/native_loops.py
# `copies` compiles both ways).
PING_PONG = True


class LLVMEmitter(ParallelLoops, GemmCalls):
    """Emits one llvmlite module for one xDSL module; one `rule` method per op (family)."""

    def __init__(
        self,
        module: ModuleOp,
        weight_offsets: dict[str, int],
        entry: str = "main",
        *,
        fastmath: bool = True,
        noalias: bool = True,
        profile: bool = False,
    ):
        self.module = module
        self.profile = profile
        self.ukernels = {}
        self.ukernel_by_spec = {}
        self.gemm_by_spec = {}
        # The target's, as the passes read it: `dlc.vector_bits` on the module (the driver writes
        # it), or passes/target_info.py's documented default on a module that has none.
        self.vector_width = target_info(module).vector_width
        self.profile_site = 0
        self.weight_offsets = weight_offsets
        self.entry = entry
        self.fastmath = FASTMATH_FLAGS if fastmath else ()
        self.noalias = noalias
        self.llvm = ir.Module(name=entry_symbol(entry))
        self.functions = {}
        self.parallel_loops = {}
        self.values = {}  # the per-function state is set by _function_state
        self.in_parallel_loop = False
        self.loop_body_symbols = set()
        # {declaration: (spec, function, worker, geometry)} of GEMMs compiled elsewhere (`emit_gemms`'s)
        self.gemms_apart: dict[str, tuple] | None = None

    # -- module and functions -----------------------------------------------------------------

    def emit(self) -> str:
        funcs = [op for op in self.module.ops if isinstance(op, func.FuncOp)]
        if self.entry not in {f.sym_name.data for f in funcs}:
            raise ValueError(f"llvm emitter: entry function @{self.entry} not found")
        for op in self.module.ops:
            if not isinstance(op, (func.FuncOp, ModuleOp)) and op.name != "memref.global":
                # memref.global ops are weights: they live in the weight blob, not in LLVM IR.
                raise NotImplementedError(f"llvm emitter: no rule for {op.name} at module level")
        bodies = _loop_body_functions(self.module, "")
        self.loop_body_symbols = {f.sym_name.data for f in bodies}
        funcs += bodies
        # Declare every function first so calls may precede their callee's definition.
        for f in funcs:
            self.functions[f.sym_name.data] = self._declare_function(f)
        for f in funcs:
            if f.body.blocks:
                self._emit_function(f, self.functions[f.sym_name.data])
        return str(self.llvm)

    def _declare_function(self, f: func.FuncOp) -> ir.Function:
        name = f.sym_name.data
        if not f.body.blocks and "dlc.ukernel" not in f.attributes and name in self.functions:
            return self.functions[name]  # an external function a loop body declares too
        inputs, outputs = f.function_type.inputs.data, f.function_type.outputs.data
        if len(outputs) > 1:
            raise NotImplementedError(f"llvm emitter: @{name} returns more than one value")
        if name == self.entry:
            if outputs or not all(isinstance(t, MemRefType) for t in inputs):
                raise NotImplementedError(
                    f"llvm emitter: entry @{name} must take only memrefs and return nothing"
                )
            fn = ir.Function(self.llvm, ir.FunctionType(VOID, [PTR, PTR, PTR]), entry_symbol(name))
            fn.args[0].name, fn.args[1].name, fn.args[2].name = "buffers", "weights", "runtime"
            pointer_args = list(fn.args)
        elif not f.body.blocks and "dlc.ukernel" in f.attributes:
            return self._ukernel(f)
        elif not f.body.blocks:
            # A declaration: an external C function taking bare pointers, nothing assumed.
            ret = llvm_type(outputs[0]) if outputs else VOID
            fn = ir.Function(self.llvm, ir.FunctionType(ret, [*map(llvm_type, inputs)]), name)
            pointer_args = []
        else:
            if name in LIBM_NAMES or name.startswith(("llvm.", "dlc_")):
                raise ValueError(f"llvm emitter: function name @{name} is reserved")
            ret = llvm_type(outputs[0]) if outputs else VOID
            fn = ir.Function(self.llvm, ir.FunctionType(ret, [*map(llvm_type, inputs), PTR, PTR]), name)
            fn.linkage = "internal"
            fn.args[-2].name, fn.args[-1].name = "weights", "runtime"
            pointer_args = [a for a, t in zip(fn.args, inputs) if isinstance(t, MemRefType)]
            pointer_args.append(fn.args[-2])
        for arg in pointer_args:
            arg.add_attribute("captures(none)")  # kernels never store a pointer anywhere
            if self.noalias:
                arg.add_attribute("noalias")
        fn.attributes = self._function_attributes()
        return fn

    def _ukernel(self, f: func.FuncOp) -> ir.Function:
        """The micro-kernel a declaration specifies (gemm_calls.py), or, when another process
        compiles the GEMMs (`gemms_apart`), external declarations of what the kernels call."""
        if self.gemms_apart is None:
            return super()._ukernel(f)
        spec, name, worker, conv = self.gemms_apart[f.sym_name.data]

        def external(symbol: str, kind: ir.FunctionType) -> ir.Function:
            known = self.llvm.globals.get(symbol)
            return known if known is not None else ir.Function(self.llvm, kind, symbol)

        function = external(name, ir.FunctionType(VOID, [PTR] * 5))
        worker = external(worker, WORKER_TYPE) if isinstance(worker, str) else \
            (external(worker[0], WORKER_TYPE), external(worker[1], WORKER_TYPE), worker[2])
        self.ukernels[f.sym_name.data] = (spec, function, worker, conv)
        return function

    def _emit_function(self, f: func.FuncOp, fn: ir.Function) -> None:
        if len(f.body.blocks) != 1:
            raise NotImplementedError(
                f"llvm emitter: @{f.sym_name.data} has {len(f.body.blocks)} blocks "
                "(cf is not supported)"
            )
        block = f.body.block
        is_entry = f.sym_name.data == self.entry
        self.rolled_loops = _loops_to_keep_rolled(f) if _small_kernel(f) else frozenset()
        weights, runtime = (fn.args[1], fn.args[2]) if is_entry else (fn.args[-2], fn.args[-1])
        with self._function_state(fn, {}, weights, runtime):
            if is_entry:
                buffers = fn.args[0]
                for i, arg in enumerate(block.args):
                    slot = self.builder.gep(buffers, [ir.Constant(I64, i)], True, source_etype=PTR)
                    self.values[arg] = self.builder.load(slot, self._name(arg), align=8, typ=PTR)
            else:
                for arg, param in zip(block.args, fn.args):
                    param.name = self._name(arg)
                    self.values[arg] = param
            self._emit_ops(block)

    # -- func ---------------------------------------------------------------------------------

    @rule("func.call")
    def _call(self, op: Operation) -> None:
        assert isinstance(op, func.CallOp)
        callee = self.functions.get(op.callee.root_reference.data)
        if callee is None:
            raise ValueError(f"llvm emitter: call to unknown function @{op.callee}")
        if op.callee.root_reference.data in self.ukernels:
            self._call_ukernel(op)
            return
        arguments = self._operands(op)
        internal = callee.linkage == "internal"
        if internal:  # our kernels take the weights base and the runtime context last
            arguments += [self.weights, self.runtime]
        timed = self.profile and internal and self._in_entry()
        start = self._now_ns() if timed else None
        result = self.builder.call(callee, arguments)
        if timed:
            self._add_profile(self.profile_site, self.builder.sub(self._now_ns(), start))
            self.profile_site += 1
        if op.results:
            self._set(op, result)

    def _in_entry(self) -> bool:
        return self.builder.function.name == entry_symbol(self.entry)

    def _now_ns(self) -> ir.Value:
        """CLOCK_MONOTONIC in nanoseconds, from libc's clock_gettime (a vDSO call, ~20 ns)."""
        clock = self._declare("clock_gettime", ir.IntType(32), [ir.IntType(32), PTR])
        timespec = self._entry_alloca(ir.ArrayType(I64, 2), "timespec", 8)
        self.builder.call(clock, [ir.Constant(ir.IntType(32), 1), timespec])
        seconds = self.builder.load(self.builder.gep(timespec, [ir.Constant(I64, 0)], True, source_etype=I64),
                                    typ=I64, align=8)
        nanos = self.builder.load(self.builder.gep(timespec, [ir.Constant(I64, 1)], True, source_etype=I64),
                                  typ=I64, align=8)
        return self.builder.add(self.builder.mul(seconds, ir.Constant(I64, 1_000_000_000)), nanos)

    def _add_profile(self, site: int, elapsed: ir.Value) -> None:
        counters = self.runtime_field("profile")
        slot = self.builder.gep(counters, [ir.Constant(I64, site)], True, source_etype=I64)
        self.builder.store(self.builder.add(self.builder.load(slot, typ=I64, align=8), elapsed), slot, align=8)

    @rule("func.return")
    def _return(self, op: Operation) -> None:
        if op.operands:
            self.builder.ret(self.values[op.operands[0]])
        else:
            self.builder.ret_void()


    # -- loop (dialects/loop.py) ---------------------------------------------------------------

    @rule("loop.run")
    def _loop_run(self, op: Operation) -> None:
        """The native loop of an outlined Loop body (dialects/loop.py):

            cond_in = cond (or true); i = 0; state = inits
            while i < trips (or forever) and cond_in:
                out = temps if i is even else finals          # ping-pong: never the state read
                iter = i; body(iter, cond_in, state, outer -> cond_out, out, scans[i]...)
                state = out; cond_in = cond_out; i += 1
            finals = state (a copy only where state is not finals already)

        The carried state is never copied inside the loop: each iteration reads one buffer and
        writes the other (the body's arguments stay distinct, so `noalias` holds), and one copy
        at the end puts the last state in the outputs (PING_PONG; before, every iteration copied
        each temporary back into its output).
        """
        assert isinstance(op, RunOp)
        parts = op.parts()
        b = self.builder
        callee = self.functions.get(f"{op.body_name}.main")
        if callee is None:
            raise ValueError(f"llvm emitter: loop.run of unknown body @{op.body_name}")
        memcpy = self._declare("llvm.memcpy.p0.p0.i64", VOID, [PTR, PTR, I64, I1])
        i8 = ir.IntType(8)

        def copy(target: SSAValue, source: SSAValue) -> None:
            b.call(memcpy, [self.values[target], self.values[source], ir.Constant(I64, byte_size(source.type)),
                            ir.Constant(I1, 0)])

        def truth(flag: SSAValue) -> ir.Value:  # a bool buffer holds one byte, 0 or 1
            return b.icmp_unsigned("!=", b.load(self.values[flag], typ=i8, align=1), ir.Constant(i8, 0))

        if not PING_PONG:
            for init, final in zip(parts["inits"], parts["finals"]):
                copy(final, init)
        trips = b.load(self.values[parts["trips"][0]], typ=I64, align=8) if parts["trips"] \
            else ir.Constant(I64, (1 << 63) - 1)
        running = truth(parts["cond"][0]) if parts["cond"] else ir.Constant(I1, 1)
        b.store(b.zext(running, i8), self.values[parts["cond_in"][0]], align=1)
        sliced = [*parts["scan_inputs"], *parts["scans"]]
        for length in sorted({v.type.get_shape()[0] for v in sliced})[:1]:  # never past a sliced buffer
            trips = b.select(b.icmp_signed("<", trips, ir.Constant(I64, length)), trips, ir.Constant(I64, length))
        slice_bytes = [byte_size(v.type) // max(v.type.get_shape()[0], 1) for v in sliced]
        reverse = op.reverse.get_values()

        fn = b.function
        guard = b.block
        header = fn.append_basic_block("loop.body")
        end = fn.append_basic_block("loop.end")
        zero = ir.Constant(I64, 0)
        b.cbranch(b.and_(b.icmp_signed("<", zero, trips), running), header, end)
        b.position_at_end(header)
        index = b.phi(I64, "loop.i")
        index.add_incoming(zero, guard)
        states, outs = [], []
        if PING_PONG:
            for init in parts["inits"]:
                states.append(b.phi(PTR, "loop.state"))
                states[-1].add_incoming(self.values[init], guard)
            odd = b.trunc(index, I1)
            outs = [b.select(odd, self.values[final], self.values[temp])
                    for final, temp in zip(parts["finals"], parts["temps"])]
        else:
            states = [self.values[v] for v in parts["finals"]]
            outs = [self.values[v] for v in parts["temps"]]
        b.store(index, self.values[parts["iter"][0]], align=8)
        # Slice i (M-1-i reversed) of each scan input and output: i < M, the first axis's length.
        backwards = b.sub(b.sub(trips, ir.Constant(I64, 1)), index) if any(reverse) else None
        slices = [b.gep(self.values[v], [b.mul(backwards if flag else index, ir.Constant(I64, size))],
                        inbounds=True, source_etype=i8)
                  for v, size, flag in zip(sliced, slice_bytes, reverse)]
        scan_inputs, scans = slices[:len(parts["scan_inputs"])], slices[len(parts["scan_inputs"]):]
        arguments = [self.values[v] for v in (*parts["iter"], *parts["cond_in"])] + states
        arguments += scan_inputs + [self.values[v] for v in (*parts["outer"], *parts["cond_out"])] + outs
        b.call(callee, [*arguments, *scans, self.values[parts["arena"][0]], self.weights, self.runtime])
        if not PING_PONG:
            for temp, final in zip(parts["temps"], parts["finals"]):
                copy(final, temp)
        copy(parts["cond_in"][0], parts["cond_out"][0])
        following = b.add(index, ir.Constant(I64, 1), "loop.next", flags=("nsw",))
        go_on = b.and_(b.icmp_signed("<", following, trips), truth(parts["cond_in"][0]))
        if parts["status"]:
            go_on = b.and_(go_on, self._body_status_ok(op, parts))
        index.add_incoming(following, b.block)
        latch = b.block
        for state, out in zip(states if PING_PONG else [], outs):
            state.add_incoming(out, latch)
        b.cbranch(go_on, header, end)
        b.position_at_end(end)
        if PING_PONG:
            lasts = []
            for init, out in zip(parts["inits"], outs):
                lasts.append(b.phi(PTR, "loop.last"))
                lasts[-1].add_incoming(self.values[init], guard)
                lasts[-1].add_incoming(out, latch)
            for final, last in zip(parts["finals"], lasts):
                with b.if_then(b.icmp_unsigned("!=", last, self.values[final])):
                    b.call(memcpy, [self.values[final], last, ir.Constant(I64, byte_size(final.type)),
                                    ir.Constant(I1, 0)])

    def _body_status_ok(self, op: RunOp, parts: dict) -> ir.Value:
        """After a call of a body with run-time checks: its status word (in its arena, which it
        zeroes at each call) translated into this kernel's by `codes`; true when it is 0."""
        b, i32 = self.builder, ir.IntType(32)
        codes = list(op.codes.get_values())
        table = ir.GlobalVariable(self.llvm, ir.ArrayType(i32, len(codes) + 1),
                                  self.llvm.get_unique_name(f"{op.body_name}.codes"))
        table.initializer = ir.Constant(ir.ArrayType(i32, len(codes) + 1), [0, *codes])
        table.global_constant, table.linkage = True, "internal"
        at = b.gep(self.values[parts["arena"][0]], [ir.Constant(I64, op.status_offset.value.data)],
                   inbounds=True, source_etype=ir.IntType(8))
        code = b.load(at, typ=i32, align=4)
        # A code outside the table (never written by a body) still reports, as the last one.
        known = b.select(b.icmp_unsigned("<=", code, ir.Constant(i32, len(codes))), code,
                         ir.Constant(i32, len(codes)))
        slot = b.gep(table, [ir.Constant(I64, 0), b.zext(known, I64)], inbounds=True,
                     source_etype=table.value_type)
        ok = b.icmp_unsigned("==", code, ir.Constant(i32, 0))
        with b.if_then(b.not_(ok)):
            b.store(b.load(slot, typ=i32, align=4), self.values[parts["status"][0]], align=4)
        return ok


def _loop_body_functions(module: ModuleOp, prefix: str) -> list[func.FuncOp]:
    """The functions of the Loop bodies nested in `module` (dialects/loop.py), from copies whose
    symbols are prefixed with the body's path (`loop_0.main`, `loop_0.k0_Add`, `loop_0.loop_1.main`):
    each body is its own symbol table, and its kernels' names repeat the outer module's."""
    found = []
    for body in module.ops:
        if not isinstance(body, ModuleOp):
            continue
        if body.sym_name is None:
            raise ValueError("llvm emitter: a nested module without a name")
        path = f"{prefix}{body.sym_name.data}."
        copy = body.clone()
        defined = {f.sym_name.data for f in copy.ops if isinstance(f, func.FuncOp)
                   if f.body.blocks or "dlc.ukernel" in f.attributes}
        for op in (inner for f in copy.ops if isinstance(f, func.FuncOp) for inner in f.walk()):
            if isinstance(op, func.FuncOp) and op.sym_name.data in defined:
                op.sym_name = StringAttr(path + op.sym_name.data)
            elif isinstance(op, func.CallOp) and op.callee.root_reference.data in defined:
                op.callee = SymbolRefAttr(path + op.callee.root_reference.data)
            elif isinstance(op, RunOp):
                op.body = SymbolRefAttr(path + op.body_name)
        found += [f for f in copy.ops if isinstance(f, func.FuncOp)]
        found += _loop_body_functions(copy, path)
    return found
