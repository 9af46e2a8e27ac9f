"""What every family of the LLVM emitter's rules shares: the table from op name to rule, the
module and per-function state (builder, SSA values, weights and runtime pointers) and the
helpers that read them (addresses of memref elements, entry-block allocas, runtime fields).

The rules live by concern (emit_ops.py: arith/math/affine/memref/scf; parallel_loops.py:
dlc.parallel loops on the thread pool; gemm_calls.py: micro-kernel calls); llvm_emitter.py
puts them together, as MLIR's convert-*-to-llvm patterns are populated into one conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from llvmlite import ir
from xdsl.dialects.builtin import MemRefType, ModuleOp
from xdsl.ir import Block, Operation, SSAValue

from dialects.memref_layout import pointer_strides_and_offset
from dlc.codegen.function_attributes import FunctionAttributes
from dlc.codegen.llvm_types import I64, PTR, llvm_type
from dlc.codegen.runtime_abi import RUNTIME_FIELDS

Rule = Callable[["EmitterBase", Operation], None]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register a method as the translation of the ops `names`."""

    def register(method: Rule) -> Rule:
        for name in names:
            RULES[name] = method
        return method

    return register


class EmitterBase:
    """The state one LLVM emitter holds while it emits one module (set up by `LLVMEmitter`)."""

    module: ModuleOp
    llvm: ir.Module
    vector_width: int  # fp32 lanes per vector, for micro-kernels and prefer-vector-width
    fastmath: tuple[str, ...]
    noalias: bool
    weight_offsets: dict[str, int]
    functions: dict[str, ir.Function]
    # Per-function state, set by _function_state.
    builder: ir.IRBuilder
    entry_block: ir.Block
    weights: ir.Value
    runtime: ir.Value
    values: dict[SSAValue, ir.Value]
    in_parallel_loop: bool  # emitting a loop body that threads share

    def _function_attributes(self, *extra: str) -> ir.values.FunctionAttributes:
        """nounwind (+ `extra`), and the target's vector width: LLVM otherwise stops at 256-bit
        vectors on AVX-512 hosts (its default prefer-vector-width).

        No memcpy or memmove calls made from copy loops (`no-builtin-*`): LLVM turned a pad's
        row copies into a libc memcpy per row, whose `rep movsb` on Zen 1 (glibc 2.36) ran
        far slower when source and destination lay at certain page offsets of each other:
        ResNet-18's stem conv, its 3 x 224 rows of 896 bytes copied into the padded input,
        took 11.6-13.4 ms instead of 7.4-7.8 for 22 of 64 placements of the input against the
        arena, 7.4-8.2 for all 64 with the copies vectorised here."""
        return FunctionAttributes(("nounwind", *extra), {"prefer-vector-width": str(32 * self.vector_width),
                                                         "no-builtin-memcpy": "", "no-builtin-memmove": ""})

    @contextmanager
    def _function_state(self, fn: ir.Function, values: dict[SSAValue, ir.Value], weights: ir.Value,
                        runtime: ir.Value, *, in_parallel_loop: bool = False) -> Iterator[ir.IRBuilder]:
        """Emit into a new entry block of `fn`; the previous function's state comes back after
        (a loop outlined for threads is emitted in the middle of its kernel)."""
        names = ("builder", "entry_block", "values", "weights", "runtime", "in_parallel_loop",
                 "_index_values", "_plus_constant")
        saved = [getattr(self, name, None) for name in names]
        self.entry_block = fn.append_basic_block("entry")
        self.builder = ir.IRBuilder(self.entry_block)
        self.values, self.weights, self.runtime = values, weights, runtime
        self.in_parallel_loop = in_parallel_loop
        self._index_values, self._plus_constant = {}, {}
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
            rule_of_op = RULES.get(op.name)
            if rule_of_op is None:
                raise NotImplementedError(f"llvm emitter: no rule for {op.name}")
            rule_of_op(self, op)
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

    def runtime_field(self, name: str) -> ir.Value:
        """Load field `name` (RUNTIME_FIELDS) of the runtime context."""
        slot = self.builder.gep(self.runtime, [ir.Constant(I64, RUNTIME_FIELDS.index(name))], True,
                                source_etype=I64)
        return self.builder.load(slot, name, align=8, typ=I64 if name == "num_threads" else PTR)

    def _index_op(self, opname: str, lhs: ir.Value, rhs: ir.Value, flags: tuple[str, ...] = ()) -> ir.Value:
        """`lhs opname rhs` on i64 indices, emitted once per block: a window of 25 loads
        (a 5x5 depthwise conv) recomputed the same row and column products for every load,
        ~10 instructions each that LLVM's early passes then had to fold away again."""
        key = (self.builder.block, opname, _operand_key(lhs), _operand_key(rhs), flags)
        value = self._index_values.get(key)
        if value is None:
            value = self._index_values[key] = getattr(self.builder, opname)(lhs, rhs, flags=flags)
        return value

    def _element_pointer(self, memref: SSAValue, indices: Sequence[SSAValue]) -> ir.Value:
        """Address of memref[indices]: base + (offset + sum(index_k * stride_k)) elements."""
        t = memref.type
        assert isinstance(t, MemRefType)
        strides, offset = pointer_strides_and_offset(t)
        # Constant indices, and the constant of an index `x + c` (a window's tap), are folded
        # here, so the taps of a window share one sum and differ by a constant; the rest is
        # summed with `nsw`, since an in-bounds address cannot overflow i64 (the gep below is
        # `inbounds` too).
        constant = offset
        linear: ir.Value | None = None
        for index, stride in zip(indices, strides):
            term = self.values[index]
            while id(term) in self._plus_constant:
                term, addend = self._plus_constant[id(term)]
                constant += addend * stride
            if isinstance(term, ir.Constant):
                constant += term.constant * stride
                continue
            if stride != 1:
                term = self._index_op("mul", term, ir.Constant(I64, stride), ("nsw",))
            linear = term if linear is None else self._index_op("add", linear, term, ("nsw",))
        if constant:
            c = ir.Constant(I64, constant)
            linear = c if linear is None else self._index_op("add", linear, c, ("nsw",))
        b = self.builder
        base = self.values[memref]
        if linear is None:
            return base
        return b.gep(base, [linear], inbounds=True, source_etype=llvm_type(t.element_type))

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


def _operand_key(value: ir.Value) -> object:
    """An operand as a dictionary key: a constant by its value, anything else by identity."""
    return ("constant", value.constant) if isinstance(value, ir.Constant) else id(value)
