"""Contractions: MatMul (numpy matmul semantics, batched, broadcasting) and Gemm.

Mirrors the ONNX spec for MatMul and Gemm. float32 contractions call the GEMM
micro-kernel (passes/lowering/utils/ukernel_calls.py); the rest lower to one
linalg.generic with loops ordered (batch, m, k, n), so the innermost loop walks
contiguous rows of B and the output and LLVM vectorises it.
"""

from __future__ import annotations

import itertools
from math import prod

from dialects.diagnostics import UnsupportedError
from dialects.onnx import WeightOp
from passes.lowering.kernels_to_linalg import reshape_view, view_at
from passes.lowering.rules import lowers
from passes.lowering.utils.linalg_builder import (
    PARALLEL,
    REDUCTION,
    affine_map,
    broadcast_exprs,
    broadcast_map,
    dim,
)
from passes.lowering.utils.ukernel_calls import emit_gemm_call, is_f32_memref, take_epilogue

# Batched MatMuls become one micro-kernel call per batch; beyond this many, a loop nest.
MAX_GEMM_CALLS = 256


def is_constant(op, index: int) -> bool:
    """Is operand `index` of `op` a weight (known at compile time, so it can be packed)?"""
    return len(op.operands) > index and isinstance(op.operands[index].owner, WeightOp)


def _batch_offset(index, shape, batch_shape) -> int:
    """Element offset of broadcast batch `index` in a [*shape, rows, cols] operand."""
    offset, stride = 0, 1
    shape = [1] * (len(batch_shape) - len(shape)) + list(shape)
    for i in reversed(range(len(batch_shape))):
        offset += (index[i] if shape[i] != 1 else 0) * stride
        stride *= shape[i]
    return offset


def _matmul_gemm(kb, op, a, b, out) -> bool:
    """MatMul as micro-kernel calls; False when the shapes call for the loop nest instead."""
    a_shape, b_shape, out_shape = a.type.get_shape(), b.type.get_shape(), out.type.get_shape()
    a2, b2 = len(a_shape) >= 2, len(b_shape) >= 2
    m = a_shape[-2] if a2 else 1
    k = a_shape[-1]
    n = b_shape[-1] if b2 else 1
    batch_shape = list(out_shape[: len(out_shape) - int(a2) - int(b2)])
    a_batch, b_batch = list(a_shape[:-2]) if a2 else [], list(b_shape[:-2]) if b2 else []
    if 0 in (m, n, k) or prod(batch_shape) > MAX_GEMM_CALLS:
        return False
    spec = dict(k=k, n=n, a_row_stride=k, a_k_stride=1, ldb=n, ldc=n)
    b_matrix_size, a_matrix_size = k * n, m * k
    epilogue = take_epilogue(kb)
    if epilogue is not None and epilogue.activation:
        spec["activation"] = epilogue.activation
    residual = epilogue.residual if epilogue is not None else None
    if prod(b_batch) == 1 and prod(a_batch) == prod(batch_shape):
        # B is shared: A's batch rows are consecutive, so it is one (batch*m) x k GEMM.
        rows = m * prod(batch_shape)
        emit_gemm_call(kb, op, reshape_view(kb.builder, a, [rows, k]), reshape_view(kb.builder, b, [k, n]),
                       reshape_view(kb.builder, out, [rows, n]), m=rows,
                       residual_buffer=None if residual is None else reshape_view(kb.builder, residual, [rows, n]),
                       **spec)
        return True
    for index in itertools.product(*[range(s) for s in batch_shape]):
        a_view = view_at(kb.builder, a, _batch_offset(index, a_batch, batch_shape) * a_matrix_size, [m, k])
        b_view = view_at(kb.builder, b, _batch_offset(index, b_batch, batch_shape) * b_matrix_size, [k, n])
        c_offset = _batch_offset(index, batch_shape, batch_shape) * m * n
        c_view = view_at(kb.builder, out, c_offset, [m, n])
        r_view = None if residual is None else view_at(kb.builder, residual, c_offset, [m, n])
        emit_gemm_call(kb, op, a_view, b_view, c_view, m=m, residual_buffer=r_view, **spec)
    return True


@lowers("MatMul")
def lower_matmul(kb, op, ins, outs) -> None:
    a, b = ins
    out = outs[0]
    if is_f32_memref(a, b, out) and _matmul_gemm(kb, op, a, b, out):
        return
    a_shape, b_shape, out_shape = a.type.get_shape(), b.type.get_shape(), out.type.get_shape()
    a2, b2 = len(a_shape) >= 2, len(b_shape) >= 2
    batch = len(out_shape) - int(a2) - int(b2)
    batch_shape = out_shape[:batch]
    batch_dims = [dim(i) for i in range(batch)]
    m = dim(batch) if a2 else None
    k = dim(batch + int(a2))
    n = dim(batch + int(a2) + 1) if b2 else None
    num_dims = batch + int(a2) + 1 + int(b2)
    a_exprs = broadcast_exprs(a_shape[:-2], batch_shape, batch_dims) + ([m, k] if a2 else [k])
    b_exprs = broadcast_exprs(b_shape[:-2], batch_shape, batch_dims) + ([k, n] if b2 else [k])
    out_exprs = batch_dims + ([m] if a2 else []) + ([n] if b2 else [])
    iterators = [PARALLEL] * batch + ([PARALLEL] if a2 else []) + [REDUCTION] + ([PARALLEL] if b2 else [])
    kb.fill(out, 0.0)
    kb.generic([a, b], [out], [affine_map(num_dims, a_exprs), affine_map(num_dims, b_exprs),
                               affine_map(num_dims, out_exprs)], iterators,
               lambda body, args: [body.add(args[2], body.mul(args[0], args[1]))])


def _gemm_ukernel(kb, op, a, b, c, out, alpha, beta, trans_a, trans_b) -> bool:
    m, n = out.type.get_shape()
    k = a.type.get_shape()[0 if trans_a else 1]
    if alpha != 1.0 or (c is not None and beta not in (0.0, 1.0)) or (trans_b and not is_constant(op, 1)):
        return False
    spec = dict(m=m, n=n, k=k, a_row_stride=1 if trans_a else k, a_k_stride=m if trans_a else 1,
                ldb=n, ldc=n, b_trans=int(trans_b))
    bias = residual = None
    if c is not None and beta == 1.0:
        c_shape = list(c.type.get_shape())
        if c_shape in ([n], [1, n]) and n > 1:
            bias, spec["bias"] = reshape_view(kb.builder, c, [n]), "row"
        elif c_shape == [m, 1] and m > 1:
            bias, spec["bias"] = reshape_view(kb.builder, c, [m]), "col"
        elif c_shape == [m, n]:
            residual = c
        else:
            return False  # a scalar C: the loop nest handles it
    epilogue = take_epilogue(kb, has_residual=residual is not None)
    if epilogue is not None:
        residual = residual if epilogue.residual is None else epilogue.residual
        if epilogue.activation:
            spec["activation"] = epilogue.activation
    emit_gemm_call(kb, op, a, b, out, bias_buffer=bias, residual_buffer=residual, **spec)
    return True


@lowers("Gemm")
def lower_gemm(kb, op, ins, outs) -> None:
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    out = outs[0]
    alpha, beta = op.attr("alpha", 1.0), op.attr("beta", 1.0)
    trans_a, trans_b = op.attr("transA", 0), op.attr("transB", 0)
    if len(a.type.get_shape()) != 2 or len(b.type.get_shape()) != 2:
        raise UnsupportedError(f"{op.describe()}: Gemm needs 2-D A and B, got {a.type} and {b.type}")
    if is_f32_memref(a, b, c, out) and _gemm_ukernel(kb, op, a, b, c, out, alpha, beta, trans_a, trans_b):
        return
    m, k, n = dim(0), dim(1), dim(2)
    out_shape = out.type.get_shape()
    if c is not None and beta != 0.0:
        c_map = broadcast_map(c.type.get_shape(), out_shape)
        kb.generic([c], [out], [c_map, affine_map(2, [dim(0), dim(1)])], [PARALLEL, PARALLEL],
                   lambda body, args: [args[0] if beta == 1.0 else body.mul(args[0], body.const(beta))])
    else:
        kb.fill(out, 0.0)

    def multiply_add(body, args):
        product = body.mul(args[0], args[1])
        if alpha != 1.0:
            product = body.mul(product, body.const(alpha))
        return [body.add(args[2], product)]

    kb.generic([a, b], [out], [affine_map(3, [k, m] if trans_a else [m, k]),
                               affine_map(3, [n, k] if trans_b else [k, n]),
                               affine_map(3, [m, n])],
               [PARALLEL, REDUCTION, PARALLEL], multiply_add)
