"""Helpers that build `linalg.generic` ops on memrefs, used by the onnx-to-linalg rules.

Mirrors MLIR's linalg.generic (https://mlir.llvm.org/docs/Dialects/Linalg/):
indexing maps from loop dims to operand indices, iterator types, and a scalar
body. `Body` writes that scalar body with arith/math ops typed by the element
type, so one rule serves f32, f64 and integer tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from xdsl.builder import Builder
from xdsl.dialects import arith, math, memref
from xdsl.dialects.builtin import (
    AffineMapAttr,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    Signedness,
    StringAttr,
    UnitAttr,
)
from xdsl.dialects.linalg import ops as linalg
from xdsl.dialects.linalg.attrs import IteratorTypeAttr
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.ir.affine import AffineConstantExpr, AffineDimExpr, AffineExpr, AffineMap
from xdsl.rewriter import InsertPoint

from dialects.types import element_type_for, is_float
from dialects.weights import weights_of

PARALLEL = IteratorTypeAttr.parallel()
REDUCTION = IteratorTypeAttr.reduction()


def dim(i: int) -> AffineExpr:
    return AffineDimExpr(i)


def cst(value: int) -> AffineExpr:
    return AffineConstantExpr(value)


def affine_map(num_dims: int, results: Sequence[AffineExpr]) -> AffineMapAttr:
    return AffineMapAttr(AffineMap(num_dims, 0, tuple(results)))


def identity_map(rank: int) -> AffineMapAttr:
    return affine_map(rank, [dim(i) for i in range(rank)])


def broadcast_exprs(in_shape: Sequence[int], out_shape: Sequence[int],
                    dims: Sequence[AffineExpr]) -> list[AffineExpr]:
    """Numpy broadcasting of `in_shape` to `out_shape` (right-aligned; size-1 dims read index 0).

    `dims` are the loop expressions of the output dims.
    """
    offset = len(out_shape) - len(in_shape)
    return [cst(0) if size == 1 and out_shape[offset + i] != 1 else dims[offset + i]
            for i, size in enumerate(in_shape)]


def broadcast_map(in_shape: Sequence[int], out_shape: Sequence[int]) -> AffineMapAttr:
    rank = len(out_shape)
    return affine_map(rank, broadcast_exprs(in_shape, out_shape, [dim(i) for i in range(rank)]))


class Body:
    """Builds the scalar body of a linalg.generic; methods pick the op by element type."""

    def __init__(self, block: Block, element_type: Attribute):
        self.block = block
        self.type = element_type
        self.float = is_float(element_type)

    def _add(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0]

    def const(self, value: float | int, type: Attribute | None = None) -> SSAValue:
        type = type or self.type
        if is_float(type):
            return self._add(arith.ConstantOp(FloatAttr(float(value), type)))
        if isinstance(type, IndexType):
            return self._add(arith.ConstantOp.from_int_and_width(int(value), IndexType()))
        return self._add(arith.ConstantOp(IntegerAttr(int(value), type)))

    def add(self, a, b, in_order: bool = False):
        """a + b. `in_order`: a float sum whose terms must not be reassociated (fastmath<contract>
        replaces the emitter's default reassoc): a sliding window's taps are a 3-trip loop that
        LLVM would otherwise vectorise instead of the output row (AveragePool ran 3x slower)."""
        if not self.float:
            return self._add(arith.AddiOp(a, b))
        return self._add(arith.AddfOp(a, b, flags=arith.FastMathFlagsAttr(("contract",)) if in_order else None))

    def sub(self, a, b):
        return self._add(arith.SubfOp(a, b) if self.float else arith.SubiOp(a, b))

    def mul(self, a, b):
        return self._add(arith.MulfOp(a, b) if self.float else arith.MuliOp(a, b))

    def div(self, a, b):
        return self._add(arith.DivfOp(a, b) if self.float else arith.DivSIOp(a, b))

    def max(self, a, b):
        """NaN-propagating maximum, as ONNX Max/Relu/MaxPool behave in onnxruntime."""
        if self.type == IntegerType(1):  # bool: true > false, but signed i1 has true = -1
            return self._add(arith.OrIOp(a, b))
        return self._add(arith.MaximumfOp(a, b) if self.float else arith.MaxSIOp(a, b))

    def min(self, a, b):
        if self.type == IntegerType(1):
            return self._add(arith.AndIOp(a, b))
        return self._add(arith.MinimumfOp(a, b) if self.float else arith.MinSIOp(a, b))

    def neg(self, a):
        return self._add(arith.NegfOp(a)) if self.float else self.sub(self.const(0), a)

    def cmp(self, predicate: str, a, b):
        """predicate: a name of arith.cmpf ('olt', 'ogt', 'oeq', 'une', ...) or cmpi ('slt', ...)."""
        return self._add(arith.CmpfOp(a, b, predicate) if self.float else arith.CmpiOp(a, b, predicate))

    def select(self, cond, a, b):
        return self._add(arith.SelectOp(cond, a, b))

    def math(self, op_class: type[Operation], *args):
        return self._add(op_class(*args))

    def exp(self, a):
        return self.math(math.ExpOp, a)

    def sqrt(self, a):
        return self.math(math.SqrtOp, a)

    def tanh(self, a):
        return self.math(math.TanhOp, a)

    def sigmoid(self, a):
        one = self.const(1.0)
        return self.div(one, self.add(one, self.exp(self.neg(a))))

    def index(self, loop_dim: int) -> SSAValue:
        return self._add(linalg.IndexOp(loop_dim))

    def index_to(self, index: SSAValue, type: Attribute) -> SSAValue:
        """An index value converted to `type` (integer or float)."""
        as_int = self._add(arith.IndexCastOp(index, IntegerType(64)))
        if is_float(type):
            return self._add(arith.SIToFPOp(as_int, type))
        return as_int

    def cast(self, value: SSAValue, to: Attribute) -> SSAValue:
        """Numeric conversion between element types (ONNX Cast semantics for the common cases)."""
        src = value.type
        if src == to:
            return value
        if is_float(src) and is_float(to):
            wider = _bitwidth(to) > _bitwidth(src)
            return self._add(arith.ExtFOp(value, to) if wider else arith.TruncFOp(value, to))
        if is_float(src):
            if to == IntegerType(1):
                return self._add(arith.CmpfOp(value, self.const(0.0, src), "une"))  # NaN -> true
            return self._add(arith.FPToSIOp(value, to))
        if is_float(to):
            if src == IntegerType(1):
                return self._add(arith.UIToFPOp(value, to))
            return self._add(arith.SIToFPOp(value, to))
        if to == IntegerType(1):
            return self._add(arith.CmpiOp(value, self.const(0, src), "ne"))
        if _bitwidth(to) > _bitwidth(src):
            return self._add(arith.ExtUIOp(value, to) if src == IntegerType(1) else arith.ExtSIOp(value, to))
        return self._add(arith.TruncIOp(value, to))

    # --- data-dependent indexing (movement and indexing rules) --------------------------------
    # Gather-like rules read a memref captured from the kernel function at an index computed
    # in the body (linalg bodies may use values defined above; linalg-to-loops keeps them).
    # Index arithmetic uses `b.on(IndexType())` (below).

    def load(self, source: SSAValue, indices: Sequence[SSAValue]) -> SSAValue:
        """source[indices], with `index`-typed indices the caller has kept in bounds."""
        return self._add(memref.LoadOp.get(source, list(indices)))

    def index_from(self, value: SSAValue) -> SSAValue:
        """A signed integer (or float, truncated toward zero) scalar as an `index`."""
        if is_float(value.type):
            value = self._add(arith.FPToSIOp(value, IntegerType(64)))
        return self._add(arith.IndexCastOp(value, IndexType()))
    # --- end of data-dependent indexing --------------------------------------------------------

    # --- Added for the elementwise, logic and cast rules (rules/elementwise.py, logic.py, cast.py).

    def on(self, element_type: Attribute) -> Body:
        """A Body writing into the same block whose typed ops and constants use `element_type`."""
        return Body(self.block, element_type)

    def compare(self, relation: str, a, b):
        """a <relation> b for relation in eq, ne, lt, le, gt, ge, typed by the operands.

        Float comparisons are ordered (false when either side is NaN), except `ne`, which is
        true for NaN as in C and numpy. Integers compare signed unless their type is unsigned.
        """
        if is_float(a.type):
            predicate = "une" if relation == "ne" else "o" + relation
            return self._add(arith.CmpfOp(a, b, predicate))
        sign = "u" if _is_unsigned(a.type) else "s"
        predicate = relation if relation in ("eq", "ne") else sign + relation
        return self._add(arith.CmpiOp(a, b, predicate))

    def is_nan(self, a):
        return self._add(arith.CmpfOp(a, a, "uno"))

    def remsi(self, a, b):
        """Integer remainder with the dividend's sign (C `%`); xDSL 0.75 has no arith.remf."""
        return self._add(arith.RemSIOp(a, b))

    def divui(self, a, b):
        return self._add(arith.DivUIOp(a, b))

    def and_(self, a, b):
        return self._add(arith.AndIOp(a, b))

    def or_(self, a, b):
        return self._add(arith.OrIOp(a, b))

    def xor(self, a, b):
        return self._add(arith.XOrIOp(a, b))

    # --- End of the elementwise/logic/cast additions.


def _is_unsigned(type: Attribute) -> bool:  # part of the elementwise/logic/cast additions
    return isinstance(type, IntegerType) and type.signedness.data == Signedness.UNSIGNED


def _bitwidth(type: Attribute) -> int:
    return type.bitwidth if hasattr(type, "bitwidth") else type.width.data


BodyFn = Callable[[Body, Sequence[SSAValue]], Sequence[SSAValue]]


class KernelBuilder:
    """Inserts linalg ops into a kernel function; asks the pass for scratch buffers."""

    def __init__(self, builder: Builder, scratch: Callable[[MemRefType], SSAValue]):
        self.builder = builder
        self._scratch = scratch
        # Set by kernels-to-linalg for a contraction whose elementwise tail a GEMM micro-kernel
        # may apply in its store (passes/lowering/utils/elementwise_fusion.py GemmEpilogue).
        self.epilogue = None
        # Set by a rule that computes its op another way than the op's FLOPs count (Winograd):
        # the FLOPs it does not execute, and what it ran as (the kernel's `dlc.executed_flops`
        # and `dlc.algorithm`, which --profile's rooflines read).
        self.flops_not_executed = 0
        self.algorithms: list[str] = []
        # Why a rule chose what it did where a user would ask (a 3x3 conv left direct: why not
        # Winograd): the kernel's `dlc.lowering`, which `dlc explain` prints.
        self.decisions: list[str] = []

    def scratch(self, type: MemRefType) -> SSAValue:
        """A buffer private to this kernel call (planned into the arena by plan-memory)."""
        return self._scratch(type)

    def insert(self, op: Operation) -> Operation:
        self.builder.insert(op)
        return op

    def constant(self, anchor: Operation, hint: str, array: np.ndarray) -> SSAValue:
        """`array` as a new weight of the module holding `anchor` (a table, a reordered
        filter), read here through memref.get_global: it stays out of the IR's text."""
        module = anchor.get_toplevel_object()
        name = weights_of(module).add(hint, array)
        type = MemRefType(element_type_for(array.dtype), list(array.shape))
        module.body.block.add_op(memref.GlobalOp.get(StringAttr(name), type, UnitAttr(), constant=UnitAttr()))
        return self.insert(memref.GetGlobalOp(name, type)).memref

    def generic(self, inputs: Sequence[SSAValue], outputs: Sequence[SSAValue],
                maps: Sequence[AffineMapAttr], iterators: Sequence[Attribute], body: BodyFn,
                doc: str | None = None) -> linalg.GenericOp:
        """`linalg.generic` whose scalar body is written by `body(Body, block_args)`."""
        arg_types = [v.type.element_type for v in (*inputs, *outputs)]
        block = Block(arg_types=arg_types)
        out_type = outputs[0].type.element_type
        yielded = body(Body(block, out_type), block.args)
        block.add_op(linalg.YieldOp(*yielded))
        op = linalg.GenericOp(list(inputs), list(outputs), Region(block), list(maps), list(iterators))
        if doc:
            from xdsl.dialects.builtin import StringAttr
            op.attributes["dlc.doc"] = StringAttr(doc)
        return self.insert(op)

    def elementwise(self, inputs: Sequence[SSAValue], output: SSAValue, body: BodyFn) -> linalg.GenericOp:
        """out[i...] = body(in0[bcast(i)], in1[bcast(i)], ...) with numpy broadcasting."""
        out_shape = output.type.get_shape()
        maps = [broadcast_map(v.type.get_shape(), out_shape) for v in inputs]
        maps.append(identity_map(len(out_shape)))
        return self.generic(inputs, [output], maps, [PARALLEL] * len(out_shape),
                            lambda b, args: body(b, args[: len(inputs)]))

    def fill(self, output: SSAValue, value: float | int) -> linalg.GenericOp:
        rank = len(output.type.get_shape())
        return self.generic([], [output], [identity_map(rank)], [PARALLEL] * rank,
                            lambda b, args: [b.const(value)])

    def copy(self, source: SSAValue, output: SSAValue, out_map: AffineMapAttr | None = None
             ) -> linalg.GenericOp:
        """output[out_map(i)] = source[i] (identity when out_map is None)."""
        rank = len(source.type.get_shape())
        return self.generic([source], [output], [identity_map(rank), out_map or identity_map(rank)],
                            [PARALLEL] * rank, lambda b, args: [args[0]])

    # --- views (movement rules) ---------------------------------------------------------------

    def subview(self, source: SSAValue, offsets: Sequence[int], sizes: Sequence[int],
                strides: Sequence[int] | None = None) -> SSAValue:
        """A static strided window of `source` (memref.subview): reads and writes go through it.

        linalg infers loop bounds from operand shapes, so a copy into or out of part of a
        buffer is a generic over a window of exactly the part's shape.
        """
        strides = list(strides or [1] * len(offsets))
        view = memref.SubviewOp.from_static_parameters(source, source.type, list(offsets),
                                                       list(sizes), strides)
        return self.insert(view).result
    # --- end of views --------------------------------------------------------------------------


def insertion_at_end(block: Block) -> Builder:
    return Builder(InsertPoint.at_end(block))
