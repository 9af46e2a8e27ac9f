"""Translate the `loops` phase (func/scf/arith/math/memref/affine in xDSL) into LLVM IR text.

Mirrors MLIR's `convert-{scf,arith,math,memref,func}-to-llvm` plus its LLVM IR translation,
but writes llvmlite IR directly, with "bare pointer" memrefs (statically shaped, so a pointer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from math import prod

from llvmlite import ir
from xdsl.dialects import func
from xdsl.dialects.arith import IntegerOverflowAttr
from xdsl.dialects.builtin import (
    DenseIntOrFPElementsAttr,
    Float16Type,
    Float32Type,
    Float64Type,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    NoneAttr,
    StridedLayoutAttr,
)
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.ir.affine import (
    AffineBinaryOpExpr,
    AffineBinaryOpKind,
    AffineConstantExpr,
    AffineDimExpr,
    AffineExpr,
    AffineSymExpr,
)

from dlc.codegen.im2col import counted_loop
from dlc.errors import CompileError
from passes.lowering.mark_parallel_loops import PARALLEL_ATTR

__all__ = ["LLVMEmitter", "emit_llvm", "entry_symbol"]

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I64 = ir.IntType(64)
PTR = ir.PointerType()  # LLVM >= 17 has only opaque pointers
VOID = ir.VoidType()

# Only reassociation and contraction: NaN and Inf must behave as in onnxruntime (DESIGN.md).
FASTMATH_FLAGS = ("reassoc", "contract")

# ---------------------------------------------------------------------------------------------
# Op tables: MLIR op name -> LLVM instruction, intrinsic or libm function.
# ---------------------------------------------------------------------------------------------

_FLOAT_BINARY = {  # name -> (llvmlite builder method, may carry fast-math flags)
    "arith.addf": ("fadd", True),
    "arith.subf": ("fsub", True),
    "arith.mulf": ("fmul", True),
    "arith.divf": ("fdiv", False),
    "arith.remf": ("frem", False),  # fmod semantics, as arith.remf
}
_INT_BINARY = {  # name -> llvmlite builder method
    "arith.addi": "add",
    "arith.subi": "sub",
    "arith.muli": "mul",
    "arith.divsi": "sdiv",
    "arith.divui": "udiv",
    "arith.remsi": "srem",
    "arith.remui": "urem",
    "arith.andi": "and_",
    "arith.ori": "or_",
    "arith.xori": "xor",
    "arith.shli": "shl",
    "arith.shrsi": "ashr",
    "arith.shrui": "lshr",
}
# LLVM intrinsics that exist since long before LLVM 15 (llvmlite >= 0.44 is supported).
_FLOAT_INTRINSIC_UNARY = {
    "math.exp": "exp",
    "math.exp2": "exp2",
    "math.log": "log",
    "math.log2": "log2",
    "math.log10": "log10",
    "math.sqrt": "sqrt",
    "math.absf": "fabs",
    "math.floor": "floor",
    "math.ceil": "ceil",
    "math.round": "round",
    "math.roundeven": "roundeven",
    "math.trunc": "trunc",
    "math.sin": "sin",
    "math.cos": "cos",
}
_FLOAT_INTRINSIC_BINARY = {
    "math.powf": "pow",
    "math.copysign": "copysign",
    "arith.maxnumf": "maxnum",  # returns the non-NaN operand
    "arith.minnumf": "minnum",
}
# No intrinsic before LLVM 19 (and on x86 the newer ones become these libm calls anyway).
_LIBM_UNARY = {
    "math.tan": "tan",
    "math.asin": "asin",
    "math.acos": "acos",
    "math.atan": "atan",
    "math.sinh": "sinh",
    "math.cosh": "cosh",
    "math.tanh": "tanh",
    "math.asinh": "asinh",
    "math.acosh": "acosh",
    "math.atanh": "atanh",
    "math.erf": "erf",
    "math.erfc": "erfc",
    "math.log1p": "log1p",
    "math.expm1": "expm1",
    "math.cbrt": "cbrt",
}
_LIBM_BINARY = {"math.atan2": "atan2"}
_INT_INTRINSIC_BINARY = {
    "arith.maxsi": "smax",
    "arith.minsi": "smin",
    "arith.maxui": "umax",
    "arith.minui": "umin",
}
_INT_COUNT = {"math.ctlz": "ctlz", "math.cttz": "cttz", "math.ctpop": "ctpop"}

# arith.cmpi predicate number -> (signed comparison?, llvmlite operator)
_CMPI = {
    0: (True, "=="), 1: (True, "!="),
    2: (True, "<"), 3: (True, "<="), 4: (True, ">"), 5: (True, ">="),
    6: (False, "<"), 7: (False, "<="), 8: (False, ">"), 9: (False, ">="),
}  # fmt: skip
# arith.cmpf predicate number -> LLVM fcmp predicate (MLIR uses LLVM's names and order).
_CMPF = (
    "false", "oeq", "ogt", "oge", "olt", "ole", "one", "ord",
    "ueq", "ugt", "uge", "ult", "ule", "une", "uno", "true",
)  # fmt: skip

_LIBM_NAMES = frozenset(
    n + s for n in (*_LIBM_UNARY.values(), *_LIBM_BINARY.values()) for s in ("", "f")
)


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
    """
    return LLVMEmitter(module, weight_offsets, entry, fastmath=fastmath, noalias=noalias,
                       profile=profile).emit()


def _host_vector_bits() -> int:
    from dlc.runtime.mcjit import host_cpu

    features = host_cpu()[1]
    return 512 if "+avx512f" in features else 256 if "+avx2" in features and "+fma" in features else 128


def _indirect_call(b: ir.IRBuilder, pointer: ir.Value, type: ir.FunctionType, args) -> ir.Value:
    """Call through a function pointer. llvmlite reads the callee's `function_type`, which an
    opaque pointer lacks, so the pointer is wrapped in a callee that has one."""
    return b.call(_TypedCallee(pointer, type), args)


class _TypedCallee:
    """A function pointer value with the function type llvmlite's CallInstr asks for."""

    def __init__(self, pointer: ir.Value, function_type: ir.FunctionType):
        self.pointer, self.function_type, self.type = pointer, function_type, pointer.type

    def get_reference(self) -> str:
        return self.pointer.get_reference()


# Smaller GEMMs run on one thread: waking the pool (~5-20 us) costs more than it saves
# (a million multiply-adds take ~10 us on a core; ResNet-50's 1x2048x1000 classifier, just
# over it, reads 8 MB of weights and scales with threads).
MIN_PARALLEL_MACS = 1 << 20
# Thread counts the GEMM work grids are tabulated for (more threads share the last grid).
GRID_TABLE_THREADS = 64

# The runtime context the entry receives, as consecutive 8-byte fields.
RUNTIME_FIELDS = ("parallel", "num_threads", "profile")
# `parallel(worker, data, items)` (dlc/runtime/thread_pool.py) runs `worker(data, i)` for i < items.
PARALLEL_TYPE = ir.FunctionType(VOID, [PTR, PTR, I64])
WORKER_TYPE = ir.FunctionType(VOID, [PTR, I64])

# What an outlined loop's worker reads from its `data` argument, as 8-byte slots; the
# loop's captured values follow.
LOOP_DATA_FIELDS = ("lb", "step", "trip", "chunks", "weights", "runtime")
# Ops whose memref result is a view of their first operand.
_VIEW_OPS = frozenset({"memref.view", "memref.reinterpret_cast", "memref.subview", "memref.cast",
                       "memref.collapse_shape", "memref.expand_shape", "memref.assume_alignment"})


def _slot(b: ir.IRBuilder, data: ir.Value, i: int) -> ir.Value:
    """Address of the i-th 8-byte slot of a parallel region's argument block."""
    return b.gep(data, [ir.Constant(I64, i)], True, source_etype=I64)


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


def profile_sites(module: ModuleOp, entry: str = "main") -> list[str]:
    """Callee names of the entry's kernel calls, in the order `profile` counts them."""
    main = next(f for f in module.ops if isinstance(f, func.FuncOp) and f.sym_name.data == entry)
    defined = {f.sym_name.data for f in module.ops if isinstance(f, func.FuncOp) and f.body.blocks}
    return [op.callee.root_reference.data for op in main.body.block.ops
            if isinstance(op, func.CallOp) and op.callee.root_reference.data in defined]


# ---------------------------------------------------------------------------------------------
# Types and memref layouts
# ---------------------------------------------------------------------------------------------


def llvm_type(t: Attribute) -> ir.Type:
    """The LLVM type of an MLIR scalar or (bare-pointer) memref type."""
    if isinstance(t, IndexType):
        return I64
    if isinstance(t, IntegerType):
        return ir.IntType(t.width.data)  # signless, signed and unsigned are all iN
    if isinstance(t, Float32Type):
        return ir.FloatType()
    if isinstance(t, Float64Type):
        return ir.DoubleType()
    if isinstance(t, Float16Type):
        return ir.HalfType()
    if isinstance(t, MemRefType):
        return PTR
    raise NotImplementedError(f"llvm emitter: no LLVM type for {t}")


def byte_size(t: Attribute) -> int:
    """Bytes one element of scalar type `t` occupies in memory."""
    if isinstance(t, IndexType):
        return 8
    if isinstance(t, IntegerType):
        return (t.width.data + 7) // 8
    if isinstance(t, Float16Type | Float32Type | Float64Type):
        return {Float16Type: 2, Float32Type: 4, Float64Type: 8}[type(t)]
    raise NotImplementedError(f"llvm emitter: no element size for {t}")


def strides_and_offset(t: MemRefType) -> tuple[tuple[int, ...], int]:
    """Static element strides and offset of a memref (identity layout: row-major, offset 0)."""
    shape = t.get_shape()
    if any(d < 0 for d in shape):
        raise NotImplementedError(f"llvm emitter: dynamic shapes are not supported ({t})")
    if isinstance(t.layout, NoneAttr):
        strides = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        return tuple(strides), 0
    if isinstance(t.layout, StridedLayoutAttr):
        strides, offset = t.layout.get_strides(), t.layout.get_offset()
        if offset is None or any(s is None for s in strides):
            raise NotImplementedError(f"llvm emitter: dynamic strides/offset in {t}")
        return tuple(strides), offset  # type: ignore[arg-type]
    raise NotImplementedError(f"llvm emitter: unsupported memref layout {t.layout}")


def is_contiguous(t: MemRefType) -> bool:
    """True when the memref's elements are dense and row-major (any static offset)."""
    row_major = strides_and_offset(MemRefType(t.element_type, t.get_shape()))[0]
    strides = strides_and_offset(t)[0]
    # Strides of size-1 dimensions never matter.
    return all(s == r or d == 1 for s, r, d in zip(strides, row_major, t.get_shape()))


def _float_suffix(t: ir.Type) -> str:
    if isinstance(t, ir.FloatType):
        return "f32"
    if isinstance(t, ir.DoubleType):
        return "f64"
    if isinstance(t, ir.HalfType):
        return "f16"
    raise NotImplementedError(f"llvm emitter: {t} is not a floating-point type")


# ---------------------------------------------------------------------------------------------
# The emitter
# ---------------------------------------------------------------------------------------------

_Rule = Callable[["LLVMEmitter", Operation], None]
_RULES: dict[str, _Rule] = {}


def _rule(*names: str) -> Callable[[_Rule], _Rule]:
    """Register a method as the translation of the ops `names`."""

    def register(method: _Rule) -> _Rule:
        for name in names:
            _RULES[name] = method
        return method

    return register


class LLVMEmitter:
    """Emits one llvmlite module for one xDSL module; one `_rule` method per op (family)."""

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
        self.ukernels: dict[str, tuple] = {}  # declaration name -> (GemmSpec, function, worker)
        self.ukernel_by_spec: dict[object, tuple[ir.Function, ir.Function]] = {}
        self.gemm_by_spec: dict[object, ir.Function] = {}  # one GEMM per spec, whoever calls it
        # Floats per vector for micro-kernels: the target's (module attribute) or this host's.
        bits = module.attributes.get("dlc.vector_bits")
        self.vector_width = (bits.value.data if isinstance(bits, IntegerAttr) else _host_vector_bits()) // 32
        self.profile_site = 0
        self.weight_offsets = weight_offsets
        self.entry = entry
        self.fastmath = FASTMATH_FLAGS if fastmath else ()
        self.noalias = noalias
        self.llvm = ir.Module(name=entry_symbol(entry))
        self.functions: dict[str, ir.Function] = {}
        self.parallel_loops: dict[str, int] = {}  # kernel -> loops outlined so far
        # Per-function state, set by _function_state.
        self.builder: ir.IRBuilder
        self.entry_block: ir.Block
        self.weights: ir.Value
        self.runtime: ir.Value
        self.values: dict[SSAValue, ir.Value] = {}
        self.in_parallel_loop = False  # emitting a loop body that threads share

    # -- module and functions -----------------------------------------------------------------

    def emit(self) -> str:
        funcs = [op for op in self.module.ops if isinstance(op, func.FuncOp)]
        if self.entry not in {f.sym_name.data for f in funcs}:
            raise ValueError(f"llvm emitter: entry function @{self.entry} not found")
        for op in self.module.ops:
            if not isinstance(op, func.FuncOp) and op.name != "memref.global":
                # memref.global ops are weights: they live in the weight blob, not in LLVM IR.
                raise NotImplementedError(f"llvm emitter: no rule for {op.name} at module level")
        # Declare every function first so calls may precede their callee's definition.
        for f in funcs:
            self.functions[f.sym_name.data] = self._declare_function(f)
        for f in funcs:
            if f.body.blocks:
                self._emit_function(f, self.functions[f.sym_name.data])
        return str(self.llvm)

    def _declare_function(self, f: func.FuncOp) -> ir.Function:
        name = f.sym_name.data
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
            if name in _LIBM_NAMES or name.startswith(("llvm.", "dlc_")):
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

    def _function_attributes(self, *extra: str) -> ir.values.FunctionAttributes:
        """nounwind (+ `extra`), and the target's vector width: LLVM otherwise stops at 256-bit
        vectors on AVX-512 hosts (its default prefer-vector-width)."""
        from dlc.codegen.function_attributes import FunctionAttributes

        return FunctionAttributes(("nounwind", *extra), {"prefer-vector-width": str(32 * self.vector_width)})

    def _emit_function(self, f: func.FuncOp, fn: ir.Function) -> None:
        if len(f.body.blocks) != 1:
            raise NotImplementedError(
                f"llvm emitter: @{f.sym_name.data} has {len(f.body.blocks)} blocks "
                "(cf is not supported)"
            )
        block = f.body.block
        is_entry = f.sym_name.data == self.entry
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

    @contextmanager
    def _function_state(self, fn: ir.Function, values: dict[SSAValue, ir.Value], weights: ir.Value,
                        runtime: ir.Value, *, in_parallel_loop: bool = False) -> Iterator[ir.IRBuilder]:
        """Emit into a new entry block of `fn`; the previous function's state comes back after
        (a loop outlined for threads is emitted in the middle of its kernel)."""
        names = ("builder", "entry_block", "values", "weights", "runtime", "in_parallel_loop")
        saved = [getattr(self, name, None) for name in names]
        self.entry_block = fn.append_basic_block("entry")
        self.builder = ir.IRBuilder(self.entry_block)
        self.values, self.weights, self.runtime = values, weights, runtime
        self.in_parallel_loop = in_parallel_loop
        try:
            yield self.builder
        finally:
            for name, value in zip(names, saved):
                setattr(self, name, value)

    # -- blocks and dispatch ------------------------------------------------------------------

    def _emit_ops(self, block: Block) -> Sequence[ir.Value]:
        """Emit `block`; return the operands of its scf.yield (the region's results), if any."""
        for op in block.ops:
            if op.name == "scf.yield":
                return [self.values[v] for v in op.operands]
            rule = _RULES.get(op.name)
            if rule is None:
                raise NotImplementedError(f"llvm emitter: no rule for {op.name}")
            rule(self, op)
        return []

    def _name(self, value: SSAValue) -> str:
        return value.name_hint or ""

    def _set(self, op: Operation, value: ir.Value) -> None:
        self.values[op.results[0]] = value

    def _operands(self, op: Operation) -> list[ir.Value]:
        return [self.values[v] for v in op.operands]

    def _declare(self, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
        """Get or declare an external function (an LLVM intrinsic or a libm function)."""
        existing = self.llvm.globals.get(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.llvm, ir.FunctionType(ret, args), name)
        fn.attributes.add("nounwind")
        return fn

    # -- func ---------------------------------------------------------------------------------

    @_rule("func.call")
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

    # -- micro-kernels (passes/lowering/utils/ukernel_calls.py) --------------------------------------

    def _ukernel(self, f: func.FuncOp) -> ir.Function:
        """Generate the micro-kernel a `dlc.ukernel` declaration specifies."""
        from dialects.gemm_ukernel import GemmSpec, gemm_spec
        from dlc.codegen.ukernels import emit_gemm
        from dlc.runtime.host import host_caches

        kind = f.attributes["dlc.ukernel"].data
        if kind != "gemm":
            raise NotImplementedError(f"llvm emitter: unknown micro-kernel kind '{kind}'")
        fields = gemm_spec(f)
        if fields.pop("b_trans", 0) and fields.get("b_layout") != "packed":
            raise ValueError(f"llvm emitter: @{f.sym_name.data} reads a transposed B that was not "
                             "packed (run pack-weights)")
        fields["accumulate"] = bool(fields.get("accumulate", 0))
        fields["residual"] = bool(fields.get("residual", 0))
        l1_bytes, l2_bytes = host_caches()
        spec = GemmSpec(**fields, vector_width=self.vector_width, l1_bytes=l1_bytes, l2_bytes=l2_bytes)
        conv = None
        if "dlc.im2col" in f.attributes:
            conv = {key: value.value.data for key, value in f.attributes["dlc.im2col"].data.items()}
        key = (spec, tuple(sorted(conv.items())) if conv else None)
        # Models repeat layer shapes (ResNet-50: 54 GEMMs, 21 distinct): generate each once,
        # and each GEMM once for all the convolutions (geometries, grids) that use it.
        if key not in self.ukernel_by_spec:
            if spec not in self.gemm_by_spec:
                self.gemm_by_spec[spec] = emit_gemm(self.llvm, f.sym_name.data, spec)
            function = self.gemm_by_spec[spec]
            if conv is None:
                worker = self._parallel_worker(function.name, spec)
            else:
                worker = self._im2col_worker(f.sym_name.data, function.name, spec, conv, len(self.ukernel_by_spec))
            self.ukernel_by_spec[key] = (function, worker)
        function, worker = self.ukernel_by_spec[key]
        self.ukernels[f.sym_name.data] = (spec, function, worker, conv)
        return function

    def _im2col_worker(self, symbol: str, name: str, spec, conv: dict, index: int) -> ir.Function:
        """`void NAME_conv(ptr data, i64 item)` for a convolution whose B is im2col of its padded
        input (`dlc.im2col`, passes/lowering/rules/conv.py): item i is row part i % tm and
        column part i / tm of C; it builds its columns, `width` at a time, in its own block of
        the scratch buffer (so they are in this core's L2) and multiplies each block at once.

        `data` holds {A, padded input, C, bias, R, scratch}.
        """
        from dlc.codegen.im2col import Im2colSpec, emit_im2col

        geometry = Im2colSpec(**{f: conv[f] for f in Im2colSpec.__dataclass_fields__})
        tm, tn, width = conv["tm"], conv["tn"], conv["width"]
        if not spec.nr <= width <= spec.ldb or geometry.depth != spec.k:
            raise CompileError(f"@{symbol}: an im2col block of {width} columns cannot hold a panel of nr={spec.nr} "
                               f"(depth {geometry.depth}, k {spec.k})", "choose nr <= the block width")
        im2col = emit_im2col(self.llvm, f"{name}_im2col{index}", geometry, spec.nr)
        worker = ir.Function(self.llvm, WORKER_TYPE, f"{name}_conv{index}")
        worker.linkage = "internal"
        worker.attributes.add("nounwind")
        # One copy serves the pool and the in-turn loop: inlined there too, LLVM optimised its
        # im2col twice (ResNet-50 compiled in 9.3 s instead of 6.2 s for two threads).
        worker.attributes.add("noinline")
        b = ir.IRBuilder(worker.append_basic_block("entry"))
        data, item = worker.args

        def const(value: int) -> ir.Constant:
            return ir.Constant(I64, value)

        def minimum(x, y):
            return b.select(b.icmp_signed("<", x, y), x, y)

        a, padded, c, bias, residual, scratch = [b.load(_slot(b, data, i), typ=PTR, align=8) for i in range(6)]
        row_part, col_part = b.urem(item, const(tm)), b.udiv(item, const(tm))
        first_block = b.sdiv(b.mul(row_part, const(spec.row_blocks)), const(tm))
        last_block = b.sdiv(b.mul(b.add(row_part, const(1)), const(spec.row_blocks)), const(tm))
        first_row = b.mul(first_block, const(spec.mr))
        last_row = minimum(b.mul(last_block, const(spec.mr)), const(spec.m))
        per_part = -(-spec.panels // tn)
        first_panel = b.mul(col_part, const(per_part))
        last_panel = minimum(b.add(first_panel, const(per_part)), const(spec.panels))
        block = b.gep(scratch, [b.mul(item, const(spec.k * spec.ldb))], inbounds=True, source_etype=ir.FloatType())
        range_fn = self.llvm.globals[f"{name}_range"]
        step = width // spec.nr  # panels per block

        def column_block(panel):
            end_panel = minimum(b.add(panel, const(step)), last_panel)
            j0 = b.mul(panel, const(spec.nr))
            j1 = minimum(b.mul(end_panel, const(spec.nr)), const(spec.n))
            b.call(im2col, [padded, block, j0, j1])
            b.call(range_fn, [a, block, c, bias, residual, panel, end_panel, first_row, last_row])

        counted_loop(b, first_panel, last_panel, column_block, step)
        b.ret_void()
        return worker

    def _parallel_worker(self, name: str, spec) -> ir.Function:
        """`void NAME_worker(ptr data, i64 item)`: item i of a tm x tn grid over C
        (`thread_grid`: mr-row blocks split tm ways, nr-column panels tn ways) runs its block.

        `data` holds {A, B, C, bias, R, tm}; item i is row part i % tm of column part i / tm.
        """
        worker = ir.Function(self.llvm, WORKER_TYPE, f"{name}_worker")
        worker.linkage = "internal"
        worker.attributes.add("nounwind")
        b = ir.IRBuilder(worker.append_basic_block("entry"))
        data, item = worker.args

        def const(value: int) -> ir.Constant:
            return ir.Constant(I64, value)

        pointers = [b.load(_slot(b, data, i), typ=PTR, align=8) for i in range(5)]
        tm = b.load(_slot(b, data, 5), typ=I64, align=8)
        tn = b.udiv(self._thread_grid_items(b, data), tm)
        row_part, col_part = b.urem(item, tm), b.udiv(item, tm)
        blocks, panels = const(spec.row_blocks), const(spec.panels)

        def share(part, parts, total):  # [part*total/parts, (part+1)*total/parts): even shares
            return (b.sdiv(b.mul(part, total), parts),
                    b.sdiv(b.mul(b.add(part, const(1)), total), parts))

        first_panel, last_panel = share(col_part, tn, panels)
        first_block, last_block = share(row_part, tm, blocks)
        first_row = b.mul(first_block, const(spec.mr))
        last_row = b.mul(last_block, const(spec.mr))
        last_row = b.select(b.icmp_signed("<", last_row, const(spec.m)), last_row, const(spec.m))
        b.call(self.llvm.globals[f"{name}_range"], [*pointers, first_panel, last_panel, first_row, last_row])
        b.ret_void()
        return worker

    @staticmethod
    def _thread_grid_items(b: ir.IRBuilder, data: ir.Value) -> ir.Value:
        """tm * tn, the grid's item count, stored after tm in a GEMM worker's data."""
        return b.load(_slot(b, data, 6), typ=I64, align=8)

    def _thread_grid_of(self, b: ir.IRBuilder, spec, threads: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(tm, tn) of `thread_grid` for `threads`, read from a table made at compile time for
        1..GRID_TABLE_THREADS threads (more threads use the last entry)."""
        from dialects.gemm_ukernel import thread_grid

        table_name = f"dlc_grid_{spec.row_blocks}x{spec.panels}_{spec.mr}x{spec.nr}x{spec.k}"
        if table_name in self.llvm.globals:
            table = self.llvm.globals[table_name]
        else:
            entries = [thread_grid(spec.row_blocks, spec.panels, t, mr=spec.mr, nr=spec.nr, k=spec.k)
                       for t in range(1, GRID_TABLE_THREADS + 1)]
            typ = ir.ArrayType(I64, 2 * GRID_TABLE_THREADS)
            table = ir.GlobalVariable(self.llvm, typ, table_name)
            table.initializer = ir.Constant(typ, [v for entry in entries for v in entry])
            table.global_constant = True
            table.linkage = "internal"
        most = ir.Constant(I64, GRID_TABLE_THREADS)
        index = b.sub(b.select(b.icmp_signed("<", threads, most), threads, most), ir.Constant(I64, 1))
        index = b.select(b.icmp_signed("<", index, ir.Constant(I64, 0)), ir.Constant(I64, 0), index)

        def entry(offset: int) -> ir.Value:
            slot = b.add(b.mul(index, ir.Constant(I64, 2)), ir.Constant(I64, offset))
            return b.load(b.gep(table, [ir.Constant(I64, 0), slot], True, source_etype=table.value_type),
                          typ=I64, align=8)

        return entry(0), entry(1)

    def _call_ukernel(self, op: Operation) -> None:
        """Call a micro-kernel: serially, or split over the runtime's threads."""
        spec, function, worker, conv = self.ukernels[op.callee.root_reference.data]
        b = self.builder
        pointers = [self._element_pointer(v, []) for v in op.operands]
        if conv is not None:
            self._call_conv_worker(worker, pointers, spec, conv)
            return
        args = pointers[:3]
        cursor = 3
        for present in (spec.bias is not None, spec.residual):
            if present:
                args.append(pointers[cursor])
                cursor += 1
            else:
                args.append(ir.Constant(PTR, None))
        if spec.panels * spec.row_blocks < 2 or spec.m * spec.n * spec.k < MIN_PARALLEL_MACS:
            b.call(function, args)
            return
        threads = self.runtime_field("num_threads")
        parallel = self.runtime_field("parallel")
        serial = b.or_(b.icmp_signed("<=", threads, ir.Constant(I64, 1)),
                       b.icmp_unsigned("==", parallel, ir.Constant(PTR, None)))
        with b.if_else(serial) as (then, otherwise):
            with then:
                b.call(function, args)
            with otherwise:
                tm, tn = self._thread_grid_of(b, spec, threads)
                items = b.mul(tm, tn)
                data = self._entry_alloca(ir.ArrayType(I64, 7), "gemm_data", 8)
                for i, value in enumerate([*args, tm, items]):
                    b.store(value, _slot(b, data, i), align=8)
                _indirect_call(b, parallel, PARALLEL_TYPE, [worker, data, items])

    def _call_conv_worker(self, worker: ir.Function, pointers: list[ir.Value], spec, conv: dict) -> None:
        """Run an im2col convolution's tm x tn items (`_im2col_worker`) on the pool, or in turn."""
        b = self.builder
        a, padded, c, *rest = pointers
        bias = rest.pop(0) if spec.bias is not None else ir.Constant(PTR, None)
        residual = rest.pop(0) if spec.residual else ir.Constant(PTR, None)
        (scratch,) = rest
        data = self._entry_alloca(ir.ArrayType(I64, 6), "conv_data", 8)
        for i, value in enumerate([a, padded, c, bias, residual, scratch]):
            b.store(value, _slot(b, data, i), align=8)
        items = ir.Constant(I64, conv["tm"] * conv["tn"])

        def in_turn():
            counted_loop(b, ir.Constant(I64, 0), items, lambda i: b.call(worker, [data, i]))

        if conv["tm"] * conv["tn"] == 1 or self.in_parallel_loop:
            in_turn()
            return
        parallel = self.runtime_field("parallel")
        serial = b.or_(b.icmp_signed("<=", self.runtime_field("num_threads"), ir.Constant(I64, 1)),
                       b.icmp_unsigned("==", parallel, ir.Constant(PTR, None)))
        with b.if_else(serial) as (then, otherwise):
            with then:
                in_turn()
            with otherwise:
                _indirect_call(b, parallel, PARALLEL_TYPE, [worker, data, items])

    def _in_entry(self) -> bool:
        return self.builder.function.name == entry_symbol(self.entry)

    def runtime_field(self, name: str) -> ir.Value:
        """Load field `name` (RUNTIME_FIELDS) of the runtime context."""
        slot = self.builder.gep(self.runtime, [ir.Constant(I64, RUNTIME_FIELDS.index(name))], True,
                                source_etype=I64)
        return self.builder.load(slot, name, align=8, typ=I64 if name == "num_threads" else PTR)

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

    @_rule("func.return")
    def _return(self, op: Operation) -> None:
        if op.operands:
            self.builder.ret(self.values[op.operands[0]])
        else:
            self.builder.ret_void()

    # -- scf ----------------------------------------------------------------------------------

    @_rule("scf.for")
    def _for(self, op: Operation) -> None:
        lb, ub, step, *inits = self._operands(op)
        if PARALLEL_ATTR in op.attributes and not inits and not self.in_parallel_loop:
            self._parallel_for(op, lb, ub, step)
        else:
            self._loop(op, lb, ub, step, inits)

    def _loop(self, op: Operation, lb: ir.Value, ub: ir.Value, step: ir.Value,
              inits: Sequence[ir.Value]) -> None:
        """Emit a rotated loop in LLVM's canonical (loop-simplify) form.

        guard -> preheader -> body (header: phis ... latch: iv += step; iv < ub?) -> exit -> end
        The body runs at least once past the guard, so LoopRotate has nothing left to do and the
        vectorizer sees a dedicated preheader, one latch and a dedicated exit.
        """
        b = self.builder
        body = op.regions[0].block
        fn = b.function
        guard = b.block
        preheader = fn.append_basic_block("for.preheader")
        header = fn.append_basic_block("for.body")

        b.position_at_end(preheader)
        b.branch(header)
        b.position_at_end(header)
        iv = b.phi(lb.type, self._name(body.args[0]) or "iv")
        iv.add_incoming(lb, preheader)
        carried = []
        for arg, init in zip(body.args[1:], inits):
            phi = b.phi(init.type, self._name(arg))
            phi.add_incoming(init, preheader)
            carried.append(phi)
        self.values.update(zip(body.args, [iv, *carried]))

        yielded = self._emit_ops(body)
        latch = b.block
        # Exit blocks are appended after the body's blocks, so the IR reads top to bottom.
        exit_block = fn.append_basic_block("for.exit")
        end = fn.append_basic_block("for.end")
        # nsw: iv < ub on entry to the latch, so iv + step cannot wrap for any sane bound.
        next_iv = b.add(iv, step, "iv.next", flags=("nsw",))
        b.cbranch(b.icmp_signed("<", next_iv, ub), header, exit_block)
        iv.add_incoming(next_iv, latch)
        for phi, value in zip(carried, yielded):
            phi.add_incoming(value, latch)
        b.position_at_end(exit_block)
        b.branch(end)

        b.position_at_end(guard)
        may_skip = True
        if isinstance(lb, ir.Constant) and isinstance(ub, ir.Constant):
            # Static bounds (the usual case): no run-time guard.
            runs = lb.constant < ub.constant
            b.branch(preheader if runs else end)
            may_skip = not runs
        else:
            b.cbranch(b.icmp_signed("<", lb, ub), preheader, end)

        b.position_at_end(end)
        for result, init, value in zip(op.results, inits, yielded):
            phi = b.phi(init.type, self._name(result))
            if may_skip:
                phi.add_incoming(init, guard)  # the loop did not run
            phi.add_incoming(value, exit_block)
            self.values[result] = phi

    # -- loops on the thread pool (dlc.parallel) ----------------------------------------------

    def _parallel_for(self, op: Operation, lb: ir.Value, ub: ir.Value, step: ir.Value) -> None:
        """Run a `dlc.parallel` loop serially or split over the runtime's threads.

        With one thread (or no pool) the loop runs inline. Otherwise the pool's `parallel`
        runs `KERNEL_parN(data, item)` for min(threads, trip) items, on whichever threads claim
        them; item t calls `KERNEL_parN_body(captured..., lo, hi, weights, runtime)` on the t-th
        contiguous chunk [lo, hi) of ceil(trip / threads) iterations: every element is computed
        as in the serial loop.
        """
        b = self.builder
        captured = [v for v in dict.fromkeys([*_captured(op), op.operands[2]])
                    if not isinstance(self.values[v], ir.Constant)]
        body = self._outline_loop(op, captured)
        args = [self.values[v] for v in captured]
        trip = self._trip_count(lb, ub, step)
        threads = self.runtime_field("num_threads")
        used = b.select(b.icmp_signed("<", threads, trip), threads, trip)
        parallel = self.runtime_field("parallel")
        serial = b.or_(b.icmp_signed("<=", used, ir.Constant(I64, 1)),
                       b.icmp_unsigned("==", parallel, ir.Constant(PTR, None)))
        with b.if_else(serial) as (then, otherwise):
            with then:
                # One thread runs the same outlined body over the whole range, so results do
                # not depend on the thread count (the body's vectorised reductions are the same).
                b.call(body, [*args, lb, ub, self.weights, self.runtime])
            with otherwise:
                fields = [lb, step, trip, used, self.weights, self.runtime]
                data = self._entry_alloca(ir.ArrayType(I64, len(fields) + len(args)), "loop_data", 8)
                for i, value in enumerate([*fields, *args]):
                    b.store(value, _slot(b, data, i), align=8)  # any scalar or pointer fits a slot
                worker = self._loop_worker(body, [a.type for a in args])
                _indirect_call(b, parallel, PARALLEL_TYPE, [worker, data, used])

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
        the item-th of `chunks` contiguous runs of ceil(trip / chunks) iterations."""
        worker = ir.Function(self.llvm, WORKER_TYPE, body.name.removesuffix("_body"))
        worker.linkage = "internal"
        worker.attributes.add("nounwind")
        b = ir.IRBuilder(worker.append_basic_block("entry"))
        data, item = worker.args
        field_types = {"weights": PTR, "runtime": PTR}
        field = {name: b.load(_slot(b, data, i), name, align=8, typ=field_types.get(name, I64))
                 for i, name in enumerate(LOOP_DATA_FIELDS)}
        args = [b.load(_slot(b, data, len(LOOP_DATA_FIELDS) + i), typ=t, align=8) for i, t in enumerate(types)]
        trip, chunks, one = field["trip"], field["chunks"], ir.Constant(I64, 1)
        per_chunk = b.sdiv(b.add(trip, b.sub(chunks, one)), chunks)
        first = b.mul(item, per_chunk)
        last = b.add(first, per_chunk)
        last = b.select(b.icmp_signed("<", last, trip), last, trip)
        with b.if_then(b.icmp_signed("<", first, last)):
            lo = b.add(field["lb"], b.mul(first, field["step"]))
            hi = b.add(field["lb"], b.mul(last, field["step"]))
            b.call(body, [*args, lo, hi, field["weights"], field["runtime"]])
        b.ret_void()
        return worker

    @_rule("scf.if")
    def _if(self, op: Operation) -> None:
        b = self.builder
        cond = self.values[op.operands[0]]
        head = b.block
        branches = []  # (first block, values yielded, last block) for then and else
        for name, region in (("if.then", op.regions[0]), ("if.else", op.regions[1])):
            first = b.function.append_basic_block(name)
            b.position_at_end(first)
            values = self._emit_ops(region.block) if region.blocks else []
            branches.append((first, values, b.block))
        end = b.function.append_basic_block("if.end")
        for _, _, last in branches:
            b.position_at_end(last)
            b.branch(end)
        b.position_at_end(head)
        b.cbranch(cond, branches[0][0], branches[1][0])
        b.position_at_end(end)
        for i, result in enumerate(op.results):
            phi = b.phi(llvm_type(result.type), self._name(result))
            for _, values, last in branches:
                phi.add_incoming(values[i], last)
            self.values[result] = phi

    # -- arith: constants, arithmetic, comparisons, casts --------------------------------------

    @_rule("arith.constant")
    def _constant(self, op: Operation) -> None:
        attr = op.properties["value"]
        t = llvm_type(op.results[0].type)
        if isinstance(attr, IntegerAttr):
            value = attr.value.data
            if isinstance(t, ir.IntType):
                # Normalise to the two's-complement range of the width (i1 `true` may be -1).
                bits = t.width
                value &= (1 << bits) - 1
                if bits > 1 and value >= 1 << (bits - 1):
                    value -= 1 << bits
            self._set(op, ir.Constant(t, value))
        elif isinstance(attr, FloatAttr):
            self._set(op, ir.Constant(t, attr.value.data))  # inf and nan print as hex
        elif isinstance(attr, DenseIntOrFPElementsAttr):
            raise NotImplementedError("llvm emitter: vector/tensor constants are not supported")
        else:
            raise NotImplementedError(f"llvm emitter: constant {attr}")

    @_rule(*_FLOAT_BINARY)
    def _float_binary(self, op: Operation) -> None:
        method, reassociable = _FLOAT_BINARY[op.name]
        lhs, rhs = self._operands(op)
        flags = self.fastmath if reassociable else ()
        own = op.properties.get("fastmath")
        if reassociable and own is not None and own.data:  # the op's own flags replace the default
            flags = tuple(sorted(flag for flag in own.data if flag in FASTMATH_FLAGS)) if self.fastmath else ()
        self._set(
            op, getattr(self.builder, method)(lhs, rhs, self._name(op.results[0]), flags=flags)
        )

    @_rule("arith.negf")
    def _negf(self, op: Operation) -> None:
        self._set(op, self.builder.fneg(*self._operands(op), self._name(op.results[0])))

    @_rule(*_INT_BINARY)
    def _int_binary(self, op: Operation) -> None:
        lhs, rhs = self._operands(op)
        overflow = op.properties.get("overflowFlags")  # arith's nsw/nuw carry over to LLVM
        flags = (
            tuple(sorted(map(str, overflow.data)))
            if isinstance(overflow, IntegerOverflowAttr)
            else ()
        )
        method = getattr(self.builder, _INT_BINARY[op.name])
        self._set(op, method(lhs, rhs, self._name(op.results[0]), flags=flags))

    @_rule("arith.floordivsi")
    def _floordivsi(self, op: Operation) -> None:
        self._set(op, self._floordiv(*self._operands(op)))

    @_rule("arith.ceildivsi")
    def _ceildivsi(self, op: Operation) -> None:
        self._set(op, self._ceildiv(*self._operands(op)))

    @_rule("arith.ceildivui")
    def _ceildivui(self, op: Operation) -> None:
        b = self.builder
        lhs, rhs = self._operands(op)
        rem_nonzero = b.icmp_unsigned("!=", b.urem(lhs, rhs), ir.Constant(lhs.type, 0))
        self._set(op, b.add(b.udiv(lhs, rhs), b.zext(rem_nonzero, lhs.type)))

    def _floordiv(self, a: ir.Value, d: ir.Value) -> ir.Value:
        """Signed division rounding towards -inf: sdiv truncates, so step down when the
        remainder is non-zero and its sign differs from the divisor's."""
        b = self.builder
        q, r = b.sdiv(a, d), b.srem(a, d)
        adjust = self._remainder_needs_fix(r, d, same_sign=False)
        return b.sub(q, b.zext(adjust, a.type))

    def _ceildiv(self, a: ir.Value, d: ir.Value) -> ir.Value:
        """Signed division rounding towards +inf."""
        b = self.builder
        q, r = b.sdiv(a, d), b.srem(a, d)
        adjust = self._remainder_needs_fix(r, d, same_sign=True)
        return b.add(q, b.zext(adjust, a.type))

    def _mod(self, a: ir.Value, d: ir.Value) -> ir.Value:
        """Remainder with the divisor's sign (affine `mod`, Python `%`)."""
        b = self.builder
        r = b.srem(a, d)
        adjust = self._remainder_needs_fix(r, d, same_sign=False)
        return b.select(adjust, b.add(r, d), r)

    def _remainder_needs_fix(self, r: ir.Value, d: ir.Value, *, same_sign: bool) -> ir.Value:
        b = self.builder
        zero = ir.Constant(r.type, 0)
        nonzero = b.icmp_signed("!=", r, zero)
        signs_differ = b.xor(b.icmp_signed("<", r, zero), b.icmp_signed("<", d, zero))
        condition = b.not_(signs_differ) if same_sign else signs_differ
        return b.and_(nonzero, condition)

    @_rule(*_INT_INTRINSIC_BINARY)
    def _int_minmax(self, op: Operation) -> None:
        lhs, rhs = self._operands(op)
        t = lhs.type
        fn = self._declare(f"llvm.{_INT_INTRINSIC_BINARY[op.name]}.i{t.width}", t, [t, t])
        self._set(op, self.builder.call(fn, [lhs, rhs], self._name(op.results[0])))

    @_rule("arith.cmpi")
    def _cmpi(self, op: Operation) -> None:
        signed, cmp = _CMPI[op.properties["predicate"].value.data]
        compare = self.builder.icmp_signed if signed else self.builder.icmp_unsigned
        self._set(op, compare(cmp, *self._operands(op), self._name(op.results[0])))

    @_rule("arith.cmpf")
    def _cmpf(self, op: Operation) -> None:
        predicate = _CMPF[op.properties["predicate"].value.data]
        # llvmlite passes an LLVM predicate name ("ueq", "uno", "true", ...) through unchanged.
        self._set(op, self.builder.fcmp_ordered(predicate, *self._operands(op)))

    @_rule("arith.select")
    def _select(self, op: Operation) -> None:
        self._set(op, self.builder.select(*self._operands(op), self._name(op.results[0])))

    @_rule(
        "arith.index_cast", "arith.index_castui", "arith.extsi", "arith.extui", "arith.trunci",
        "arith.sitofp", "arith.uitofp", "arith.fptosi", "arith.fptoui",
        "arith.extf", "arith.truncf", "arith.bitcast",
    )  # fmt: skip
    def _cast(self, op: Operation) -> None:
        b = self.builder
        (value,) = self._operands(op)
        src, dst = value.type, llvm_type(op.results[0].type)
        name = self._name(op.results[0])
        if op.name in ("arith.index_cast", "arith.index_castui"):
            if src.width == dst.width:  # index <-> i64: the same LLVM type
                result = value
            elif src.width > dst.width:
                result = b.trunc(value, dst, name)
            elif op.name == "arith.index_cast":
                result = b.sext(value, dst, name)
            else:
                result = b.zext(value, dst, name)
        else:
            method = {
                "arith.extsi": b.sext, "arith.extui": b.zext, "arith.trunci": b.trunc,
                "arith.sitofp": b.sitofp, "arith.uitofp": b.uitofp,
                "arith.fptosi": b.fptosi, "arith.fptoui": b.fptoui,
                "arith.extf": b.fpext, "arith.truncf": b.fptrunc, "arith.bitcast": b.bitcast,
            }[op.name]  # fmt: skip
            result = method(value, dst, name)
        self._set(op, result)

    # -- math ---------------------------------------------------------------------------------

    @_rule(*_FLOAT_INTRINSIC_UNARY, *_FLOAT_INTRINSIC_BINARY, "math.fma")
    def _float_intrinsic(self, op: Operation) -> None:
        args = self._operands(op)
        t = args[0].type
        base = (_FLOAT_INTRINSIC_UNARY | _FLOAT_INTRINSIC_BINARY | {"math.fma": "fma"})[op.name]
        fn = self._declare(f"llvm.{base}.{_float_suffix(t)}", t, [t] * len(args))
        self._set(op, self.builder.call(fn, args, self._name(op.results[0])))

    @_rule("arith.maximumf", "arith.minimumf")
    def _nan_propagating_max_min(self, op: Operation) -> None:
        """max/min that return NaN when either operand is NaN (ONNX Max/Min, MaxPool, ReduceMax),
        as compares and selects: `llvm.maximum` left MaxPool's strided loops scalar (4.7x slower
        than onnxruntime on a 3x3/2 pool), while compare+select vectorises."""
        a, b = self._operands(op)
        builder = self.builder
        wins = builder.fcmp_ordered(">" if op.name == "arith.maximumf" else "<", a, b)
        chosen = builder.select(wins, a, b)  # b when b is NaN
        self._set(op, builder.select(builder.fcmp_unordered("uno", a, a), a, chosen, self._name(op.results[0])))

    @_rule(*_LIBM_UNARY, *_LIBM_BINARY)
    def _libm(self, op: Operation) -> None:
        args = self._operands(op)
        t = args[0].type
        base = (_LIBM_UNARY | _LIBM_BINARY)[op.name]
        if isinstance(t, ir.FloatType):
            symbol = base + "f"
        elif isinstance(t, ir.DoubleType):
            symbol = base
        else:
            raise NotImplementedError(f"llvm emitter: {op.name} on {t} has no libm function")
        fn = self._declare(symbol, t, [t] * len(args))
        self._set(op, self.builder.call(fn, args, self._name(op.results[0])))

    @_rule("math.rsqrt")
    def _rsqrt(self, op: Operation) -> None:
        (x,) = self._operands(op)
        sqrt = self._declare(f"llvm.sqrt.{_float_suffix(x.type)}", x.type, [x.type])
        root = self.builder.call(sqrt, [x])
        self._set(op, self.builder.fdiv(ir.Constant(x.type, 1.0), root, self._name(op.results[0])))

    @_rule("math.fpowi")
    def _fpowi(self, op: Operation) -> None:
        x, n = self._operands(op)
        fn = self._declare(
            f"llvm.powi.{_float_suffix(x.type)}.i{n.type.width}", x.type, [x.type, n.type]
        )
        self._set(op, self.builder.call(fn, [x, n], self._name(op.results[0])))

    @_rule("math.absi", *_INT_COUNT)
    def _int_unary(self, op: Operation) -> None:
        (x,) = self._operands(op)
        t = x.type
        if op.name == "math.ctpop":
            fn, args = self._declare(f"llvm.ctpop.i{t.width}", t, [t]), [x]
        else:
            # The i1 flag says whether INT_MIN (abs) or zero (ctlz/cttz) is poison: it is not.
            base = "abs" if op.name == "math.absi" else _INT_COUNT[op.name]
            fn, args = self._declare(f"llvm.{base}.i{t.width}", t, [t, I1]), [x, ir.Constant(I1, 0)]
        self._set(op, self.builder.call(fn, args, self._name(op.results[0])))

    # -- affine -------------------------------------------------------------------------------

    @_rule("affine.apply")
    def _affine_apply(self, op: Operation) -> None:
        affine_map = op.properties["map"].data
        if len(affine_map.results) != 1:
            raise NotImplementedError("llvm emitter: affine.apply with several results")
        operands = self._operands(op)
        dims, symbols = operands[: affine_map.num_dims], operands[affine_map.num_dims :]
        self._set(op, self._affine(affine_map.results[0], dims, symbols))

    def _affine(
        self, expr: AffineExpr, dims: Sequence[ir.Value], symbols: Sequence[ir.Value]
    ) -> ir.Value:
        if isinstance(expr, AffineDimExpr):
            return dims[expr.position]
        if isinstance(expr, AffineSymExpr):
            return symbols[expr.position]
        if isinstance(expr, AffineConstantExpr):
            return ir.Constant(I64, expr.value)
        assert isinstance(expr, AffineBinaryOpExpr)
        lhs = self._affine(expr.lhs, dims, symbols)
        rhs = self._affine(expr.rhs, dims, symbols)
        b = self.builder
        match expr.kind:
            case AffineBinaryOpKind.Add:
                return b.add(lhs, rhs)
            case AffineBinaryOpKind.Mul:
                return b.mul(lhs, rhs)
            case AffineBinaryOpKind.FloorDiv:
                return self._floordiv(lhs, rhs)
            case AffineBinaryOpKind.CeilDiv:
                return self._ceildiv(lhs, rhs)
            case AffineBinaryOpKind.Mod:
                return self._mod(lhs, rhs)
        raise NotImplementedError(f"llvm emitter: affine expression {expr}")

    # -- memref -------------------------------------------------------------------------------

    def _element_pointer(self, memref: SSAValue, indices: Sequence[SSAValue]) -> ir.Value:
        """Address of memref[indices]: base + (offset + sum(index_k * stride_k)) elements."""
        b = self.builder
        t = memref.type
        assert isinstance(t, MemRefType)
        strides, offset = strides_and_offset(t)
        # Constant indices are folded here; the rest is summed with `nsw`, since an in-bounds
        # address cannot overflow i64 (the gep below is `inbounds` too).
        constant = offset
        linear: ir.Value | None = None
        for index, stride in zip(indices, strides):
            term = self.values[index]
            if isinstance(term, ir.Constant):
                constant += term.constant * stride
                continue
            if stride != 1:
                term = b.mul(term, ir.Constant(I64, stride), flags=("nsw",))
            linear = term if linear is None else b.add(linear, term, flags=("nsw",))
        if constant:
            c = ir.Constant(I64, constant)
            linear = c if linear is None else b.add(linear, c, flags=("nsw",))
        base = self.values[memref]
        if linear is None:
            return base
        return b.gep(base, [linear], inbounds=True, source_etype=llvm_type(t.element_type))

    @_rule("memref.load")
    def _load(self, op: Operation) -> None:
        memref, *indices = op.operands
        element = memref.type.element_type
        ptr = self._element_pointer(memref, indices)
        value = self.builder.load(
            ptr, self._name(op.results[0]), align=byte_size(element), typ=llvm_type(element)
        )
        self._set(op, value)

    @_rule("memref.store")
    def _store(self, op: Operation) -> None:
        value, memref, *indices = op.operands
        ptr = self._element_pointer(memref, indices)
        self.builder.store(self.values[value], ptr, align=byte_size(memref.type.element_type))

    @_rule("memref.get_global")
    def _get_global(self, op: Operation) -> None:
        name = op.properties["name"].root_reference.data
        if name not in self.weight_offsets:
            raise KeyError(f"llvm emitter: no weight offset for memref.global @{name}")
        offset = ir.Constant(I64, self.weight_offsets[name])
        self._set(
            op, self.builder.gep(self.weights, [offset], inbounds=True, source_etype=I8, name=name)
        )

    @_rule("memref.view")
    def _view(self, op: Operation) -> None:
        source, byte_shift, *sizes = op.operands
        if sizes:
            raise NotImplementedError("llvm emitter: memref.view with dynamic sizes")
        # The result has an identity layout; its base is the source's base + byte_shift.
        base = self.values[source]
        self._set(
            op,
            self.builder.gep(
                base,
                [self.values[byte_shift]],
                inbounds=True,
                source_etype=I8,
                name=self._name(op.results[0]),
            ),
        )

    @_rule(
        "memref.reinterpret_cast",
        "memref.subview",
        "memref.cast",
        "memref.collapse_shape",
        "memref.expand_shape",
    )
    def _alias(self, op: Operation) -> None:
        """Views that keep the base pointer: the new shape, strides and offset are all in the
        (static) result type, which loads and stores read. MLIR's bare-pointer convention."""
        if len(op.operands) != 1:
            raise NotImplementedError(
                f"llvm emitter: {op.name} with dynamic offsets, sizes or strides"
            )
        strides_and_offset(op.results[0].type)  # rejects dynamic layouts early
        self._set(op, self.values[op.operands[0]])

    @_rule("memref.dim")
    def _dim(self, op: Operation) -> None:
        memref, index = op.operands
        position = self.values[index]
        if not isinstance(position, ir.Constant):
            raise NotImplementedError("llvm emitter: memref.dim with a dynamic index")
        self._set(op, ir.Constant(I64, memref.type.get_shape()[position.constant]))

    @_rule("memref.copy")
    def _copy(self, op: Operation) -> None:
        source, target = op.operands
        for t in (source.type, target.type):
            if not is_contiguous(t):
                raise NotImplementedError(f"llvm emitter: memref.copy of non-contiguous {t}")
        size = prod(source.type.get_shape()) * byte_size(source.type.element_type)
        memcpy = self._declare("llvm.memcpy.p0.p0.i64", VOID, [PTR, PTR, I64, I1])
        destination_ptr = self._element_pointer(target, [])
        source_ptr = self._element_pointer(source, [])
        self.builder.call(
            memcpy, [destination_ptr, source_ptr, ir.Constant(I64, size), ir.Constant(I1, 0)]
        )

    @_rule("memref.alloca")
    def _alloca(self, op: Operation) -> None:
        t = op.results[0].type
        if op.operands:
            raise NotImplementedError("llvm emitter: memref.alloca with dynamic sizes")
        # Static allocas go to the entry block: one stack slot per function, even when the op
        # sits in a loop (LLVM would otherwise grow the stack every iteration).
        array = ir.ArrayType(llvm_type(t.element_type), prod(t.get_shape()))
        alignment = op.properties.get("alignment")
        align = max(64, alignment.value.data if isinstance(alignment, IntegerAttr) else 0)
        self._set(op, self._entry_alloca(array, self._name(op.results[0]), align))

    def _entry_alloca(self, type: ir.Type, name: str, align: int) -> ir.Value:
        """A stack slot in the entry block (so a slot used in a loop is allocated once)."""
        entry = ir.IRBuilder(self.entry_block)
        entry.position_at_start(self.entry_block)
        slot = entry.alloca(type, name=name)
        slot.type = PTR  # llvmlite types allocas as `[N x T]*` (typed pointers) by default
        slot.align = align
        # An IRBuilder appends at a remembered index; inserting before it in the same block
        # leaves that index one short, so re-anchor the main builder at its block's end.
        self.builder.position_at_end(self.builder.block)
        return slot

    @_rule("memref.dealloc", "memref.assume_alignment")
    def _no_code(self, op: Operation) -> None:
        """Ops with no run-time effect here (no heap memrefs; alignment is not exploited)."""
        for result, operand in zip(op.results, op.operands):
            self.values[result] = self.values[operand]
