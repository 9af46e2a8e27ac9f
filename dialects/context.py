"""An xDSL context that knows every dialect dlc's phases use (to parse any phase's text).

As mlir-opt registers every dialect of the tree: dlc's own (onnx, kernel, npu, loop) and the
upstream ones the lowering reaches (func, arith, math, memref, scf, affine, linalg).
"""

from __future__ import annotations

from xdsl.context import Context


def make_context() -> Context:
    """A context with every dialect dlc's phases use."""
    from xdsl.dialects import affine, arith, func, linalg, math, memref, scf
    from xdsl.dialects.builtin import Builtin

    from dialects.arith_remf import RemFOp
    from dialects.kernel import KERNEL
    from dialects.loop import LOOP
    from dialects.npu import NPU
    from dialects.onnx import ONNX

    ctx = Context()
    for dialect in (Builtin, func.Func, arith.Arith, math.Math, memref.MemRef, scf.Scf,
                    affine.Affine, linalg.Linalg, ONNX, KERNEL, NPU, LOOP):
        ctx.load_dialect(dialect)
    ctx.load_op(RemFOp)  # arith.remf, missing from xDSL 0.75's arith
    return ctx
