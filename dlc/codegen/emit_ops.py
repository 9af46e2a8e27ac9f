"""The op table of the LLVM emitter: arith, math, affine, memref and scf to LLVM IR.

Mirrors MLIR's `convert-{arith,math,memref,scf}-to-llvm` plus its LLVM IR translation, but
writes llvmlite IR directly, with "bare pointer" memrefs (statically shaped, so a pointer).
One `rule` method per op (family); scf.for's rule, which may hand a loop to the thread pool,
is in parallel_loops.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from llvmlite import ir
from xdsl.dialects.arith import IntegerOverflowAttr
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, FloatAttr, IntegerAttr
from xdsl.ir import Operation
from xdsl.ir.affine import (
    AffineBinaryOpExpr,
    AffineBinaryOpKind,
    AffineConstantExpr,
    AffineDimExpr,
    AffineExpr,
    AffineSymExpr,
)

from dialects.memref_layout import has_dynamic_offset, is_contiguous, pointer_strides_and_offset
from dlc.codegen.emitter_base import EmitterBase, rule
from dlc.codegen.llvm_types import (
    FASTMATH_FLAGS,
    I1,
    I8,
    I64,
    PTR,
    VOID,
    byte_size,
    float_suffix,
    llvm_type,
)

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

# Names a kernel may not take: the libm functions the rules call.
LIBM_NAMES = frozenset(
    n + s for n in (*_LIBM_UNARY.values(), *_LIBM_BINARY.values()) for s in ("", "f")
)


class LoopID(ir.values.MDValue):
    """A loop's metadata node: distinct and naming itself first, `!7 = distinct !{!7, !8}`, as
    LLVM requires of `!llvm.loop` (llvmlite's add_metadata makes neither)."""

    def __init__(self, module: ir.Module, properties: Sequence[ir.values.MDValue]):
        super().__init__(module, properties, name=str(len(module.metadata)))

    def descr(self, buf) -> None:
        references = ", ".join([self.get_reference(), *(p.get_reference() for p in self.operands)])
        buf += (f"distinct !{{ {references} }}", "\n")

    __eq__ = object.__eq__  # each loop its own node, never merged with an equal one
    __hash__ = object.__hash__


class OpRules(EmitterBase):
    """The rules of the ops that translate one to one (or to a few instructions)."""

    # The loops LLVM must not unroll in the function being emitted (llvm_emitter.py
    # SMALL_KERNEL_BYTES): scf.for ops.
    rolled_loops: frozenset[Operation] = frozenset()

    # -- scf ----------------------------------------------------------------------------------

    def _loop(self, op: Operation, lb: ir.Value, ub: ir.Value, step: ir.Value,
              inits: Sequence[ir.Value]) -> None:
        """Emit a rotated loop in LLVM's canonical (loop-simplify) form.

        guard -> preheader -> body (header: phis ... latch: iv += step; iv < ub?) -> exit -> end
        The body runs at least once past the guard, so LoopRotate has nothing left to do and the
        vectorizer sees a dedicated preheader, one latch and a dedicated exit.
        """
        b = self.builder
        body = op.regions[0].block
        if (isinstance(lb, ir.Constant) and isinstance(ub, ir.Constant) and isinstance(step, ir.Constant)
                and lb.constant < ub.constant <= lb.constant + step.constant):
            # One iteration (a batch or channel axis of size 1): the body in place, its index a
            # constant. LLVM deletes such a loop anyway, but the loop kept the axis' stride in
            # every address (`mul %iv, 125440`), so kernels equal but for the size of that
            # unused axis were different text and merge_identical_functions could not share
            # them (DenseNet-121: 59 BatchNormalization bodies, ~4 CPU-s of LLVM).
            self.values.update(zip(body.args, [lb, *inits]))
            self.values.update(zip(op.results, self._emit_ops(body)))
            return
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
        back_edge = b.cbranch(b.icmp_signed("<", next_iv, ub), header, exit_block)
        if op in self.rolled_loops:
            back_edge.set_metadata("llvm.loop", LoopID(self.llvm, [self.llvm.add_metadata(
                [ir.MetaDataString(self.llvm, "llvm.loop.unroll.disable")])]))
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

    @rule("scf.if")
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

    @rule("arith.constant")
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

    @rule(*_FLOAT_BINARY)
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

    @rule("arith.negf")
    def _negf(self, op: Operation) -> None:
        self._set(op, self.builder.fneg(*self._operands(op), self._name(op.results[0])))

    @rule(*_INT_BINARY)
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

    @rule("arith.floordivsi")
    def _floordivsi(self, op: Operation) -> None:
        self._set(op, self._floordiv(*self._operands(op)))

    @rule("arith.ceildivsi")
    def _ceildivsi(self, op: Operation) -> None:
        self._set(op, self._ceildiv(*self._operands(op)))

    @rule("arith.ceildivui")
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

    @rule(*_INT_INTRINSIC_BINARY)
    def _int_minmax(self, op: Operation) -> None:
        lhs, rhs = self._operands(op)
        t = lhs.type
        fn = self._declare(f"llvm.{_INT_INTRINSIC_BINARY[op.name]}.i{t.width}", t, [t, t])
        self._set(op, self.builder.call(fn, [lhs, rhs], self._name(op.results[0])))

    @rule("arith.cmpi")
    def _cmpi(self, op: Operation) -> None:
        signed, cmp = _CMPI[op.properties["predicate"].value.data]
        compare = self.builder.icmp_signed if signed else self.builder.icmp_unsigned
        self._set(op, compare(cmp, *self._operands(op), self._name(op.results[0])))

    @rule("arith.cmpf")
    def _cmpf(self, op: Operation) -> None:
        predicate = _CMPF[op.properties["predicate"].value.data]
        # llvmlite passes an LLVM predicate name ("ueq", "uno", "true", ...) through unchanged.
        self._set(op, self.builder.fcmp_ordered(predicate, *self._operands(op)))

    @rule("arith.select")
    def _select(self, op: Operation) -> None:
        self._set(op, self.builder.select(*self._operands(op), self._name(op.results[0])))

    @rule(
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

    @rule(*_FLOAT_INTRINSIC_UNARY, *_FLOAT_INTRINSIC_BINARY, "math.fma")
    def _float_intrinsic(self, op: Operation) -> None:
        args = self._operands(op)
        t = args[0].type
        base = (_FLOAT_INTRINSIC_UNARY | _FLOAT_INTRINSIC_BINARY | {"math.fma": "fma"})[op.name]
        fn = self._declare(f"llvm.{base}.{float_suffix(t)}", t, [t] * len(args))
        self._set(op, self.builder.call(fn, args, self._name(op.results[0])))

    @rule("arith.maximumf", "arith.minimumf")
    def _nan_propagating_max_min(self, op: Operation) -> None:
        """max/min that return NaN when either operand is NaN (ONNX Max/Min, MaxPool, ReduceMax),
        as compares and selects: `llvm.maximum` left MaxPool's strided loops scalar (4.7x slower
        than onnxruntime on a 3x3/2 pool), while compare+select vectorises."""
        a, b = self._operands(op)
        builder = self.builder
        wins = builder.fcmp_ordered(">" if op.name == "arith.maximumf" else "<", a, b)
        chosen = builder.select(wins, a, b)  # b when b is NaN
        self._set(op, builder.select(builder.fcmp_unordered("uno", a, a), a, chosen, self._name(op.results[0])))

    @rule(*_LIBM_UNARY, *_LIBM_BINARY)
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

    @rule("math.rsqrt")
    def _rsqrt(self, op: Operation) -> None:
        (x,) = self._operands(op)
        sqrt = self._declare(f"llvm.sqrt.{float_suffix(x.type)}", x.type, [x.type])
        root = self.builder.call(sqrt, [x])
        self._set(op, self.builder.fdiv(ir.Constant(x.type, 1.0), root, self._name(op.results[0])))

    @rule("math.fpowi")
    def _fpowi(self, op: Operation) -> None:
        x, n = self._operands(op)
        fn = self._declare(
            f"llvm.powi.{float_suffix(x.type)}.i{n.type.width}", x.type, [x.type, n.type]
        )
        self._set(op, self.builder.call(fn, [x, n], self._name(op.results[0])))

    @rule("math.absi", *_INT_COUNT)
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

    @rule("affine.apply")
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
        match expr.kind:
            case AffineBinaryOpKind.Add:
                if isinstance(rhs, ir.Constant) and isinstance(lhs, ir.Constant):
                    return ir.Constant(I64, lhs.constant + rhs.constant)
                value = self._index_op("add", lhs, rhs)
                if isinstance(rhs, ir.Constant):  # `x + c`: addresses fold c (_element_pointer)
                    self._plus_constant[id(value)] = (lhs, rhs.constant)
                return value
            case AffineBinaryOpKind.Mul:
                return self._index_op("mul", lhs, rhs)
            case AffineBinaryOpKind.FloorDiv:
                return self._floordiv(lhs, rhs)
            case AffineBinaryOpKind.CeilDiv:
                return self._ceildiv(lhs, rhs)
            case AffineBinaryOpKind.Mod:
                return self._mod(lhs, rhs)
        raise NotImplementedError(f"llvm emitter: affine expression {expr}")

    # -- memref -------------------------------------------------------------------------------

    @rule("memref.load")
    def _load(self, op: Operation) -> None:
        memref, *indices = op.operands
        element = memref.type.element_type
        ptr = self._element_pointer(memref, indices)
        value = self.builder.load(
            ptr, self._name(op.results[0]), align=byte_size(element), typ=llvm_type(element)
        )
        self._set(op, value)

    @rule("memref.store")
    def _store(self, op: Operation) -> None:
        value, memref, *indices = op.operands
        ptr = self._element_pointer(memref, indices)
        self.builder.store(self.values[value], ptr, align=byte_size(memref.type.element_type))

    @rule("memref.get_global")
    def _get_global(self, op: Operation) -> None:
        name = op.properties["name"].root_reference.data
        if name not in self.weight_offsets:
            raise KeyError(f"llvm emitter: no weight offset for memref.global @{name}")
        offset = ir.Constant(I64, self.weight_offsets[name])
        self._set(
            op, self.builder.gep(self.weights, [offset], inbounds=True, source_etype=I8, name=name)
        )

    @rule("memref.view")
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

    @rule(
        "memref.reinterpret_cast",
        "memref.subview",
        "memref.cast",
        "memref.collapse_shape",
        "memref.expand_shape",
    )
    def _alias(self, op: Operation) -> None:
        """Views that keep the base pointer: the new shape, strides and offset are all in the
        (static) result type, which loads and stores read. MLIR's bare-pointer convention.
        A reinterpret_cast at a run-time offset (one offset operand) is the exception: its
        pointer is the source's advanced by the offset, and its type's offset `?` reads as 0
        (`pointer_strides_and_offset`). reinterpret_cast's offset counts from its source's
        base, so the source must not itself be a view at a run-time offset (whose pointer is
        advanced already); of such a view only views that keep the offset (casts, reshapes)
        may be taken."""
        source = op.operands[0]
        if op.name == "memref.reinterpret_cast" and len(op.operands) == 2 and not op.sizes and not op.strides:
            if has_dynamic_offset(source.type):
                raise NotImplementedError("llvm emitter: memref.reinterpret_cast at a run-time offset "
                                          f"of a view at a run-time offset ({source.type})")
            shift = self.values[op.operands[1]]
            self._set(op, self.builder.gep(self.values[source], [shift], inbounds=True,
                                           source_etype=llvm_type(source.type.element_type),
                                           name=self._name(op.results[0])))
            return
        if len(op.operands) != 1:
            raise NotImplementedError(
                f"llvm emitter: {op.name} with dynamic offsets, sizes or strides"
            )
        pointer_strides_and_offset(op.results[0].type)  # rejects dynamic strides early
        if op.name in ("memref.reinterpret_cast", "memref.subview") and has_dynamic_offset(source.type):
            raise NotImplementedError(f"llvm emitter: {op.name} of a view at a run-time offset ({source.type})")
        self._set(op, self.values[source])

    @rule("memref.dim")
    def _dim(self, op: Operation) -> None:
        memref, index = op.operands
        position = self.values[index]
        if not isinstance(position, ir.Constant):
            raise NotImplementedError("llvm emitter: memref.dim with a dynamic index")
        self._set(op, ir.Constant(I64, memref.type.get_shape()[position.constant]))

    @rule("memref.copy")
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

    @rule("memref.alloca")
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

    @rule("memref.dealloc", "memref.assume_alignment")
    def _no_code(self, op: Operation) -> None:
        """Ops with no run-time effect here (no heap memrefs; alignment is not exploited)."""
        for result, operand in zip(op.results, op.operands):
            self.values[result] = self.values[operand]
