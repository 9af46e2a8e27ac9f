"""The LLVM types of MLIR types, as MLIR's LLVM type converter with "bare pointer" memrefs (a
statically shaped memref is a pointer), and the fast-math flags all generated code uses."""

from __future__ import annotations

from llvmlite import ir
from xdsl.dialects.builtin import (
    Float16Type,
    Float32Type,
    Float64Type,
    IndexType,
    IntegerType,
    MemRefType,
)
from xdsl.ir import Attribute

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I64 = ir.IntType(64)
PTR = ir.PointerType()  # LLVM >= 17 has only opaque pointers
VOID = ir.VoidType()

# Only reassociation and contraction: NaN and Inf must behave as in onnxruntime (DESIGN.md).
FASTMATH_FLAGS = ("reassoc", "contract")


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


def float_suffix(t: ir.Type) -> str:
    if isinstance(t, ir.FloatType):
        return "f32"
    if isinstance(t, ir.DoubleType):
        return "f64"
    if isinstance(t, ir.HalfType):
        return "f16"
    raise NotImplementedError(f"llvm emitter: {t} is not a floating-point type")

