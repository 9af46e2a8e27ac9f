"""`arith.remf`, which xDSL 0.75's arith dialect lacks: the float remainder with the dividend's
sign (C fmod), as MLIR's arith.remf (https://mlir.llvm.org/docs/Dialects/ArithOps/#arithremf-arithremfop).

An exact remainder cannot be built from the other arith ops (a - trunc(a / b) * b rounds once
the quotient passes 2^24); the LLVM emitter writes it as `frem` (dlc/codegen/emit_ops.py).
make_context adds it to arith (dialects/context.py), so phase text holding it parses again.

    %r = arith.remf %a, %b : f32
"""

from __future__ import annotations

from xdsl.dialects.arith import FloatingPointLikeBinaryOperation
from xdsl.irdl import irdl_op_definition


@irdl_op_definition
class RemFOp(FloatingPointLikeBinaryOperation):
    name = "arith.remf"
