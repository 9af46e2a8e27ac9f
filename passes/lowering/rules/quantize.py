"""Quantization operators: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
MatMulInteger, ConvInteger, QLinearMatMul and QLinearConv -> linalg.

Mirrors the ONNX specs at opset 21 (https://onnx.ai/onnx/operators/onnx__QuantizeLinear.html
and the pages of the others). Where the spec leaves the arithmetic open, the formulas follow
onnxruntime's CPU kernels, since that is what users compare against:
- quantize: `x / scale` (a division, not a multiply by 1/scale), round half to even, add the
  zero point, saturate; all in the input's float type, so huge inputs saturate;
- the integer contractions widen both sides to int32 and subtract the zero points first (the
  padding of ConvInteger/QLinearConv then reads as 0, as in both references);
- requantization (QLinearMatMul/QLinearConv): float32(acc) * float32(a_scale * b_scale /
  y_scale), round half to even, add y's zero point, saturate (MlasRequantizeOutput).
A MatMul of a uint8 A (zero point per tensor) by a constant int8 B (zero point 0, as
onnxruntime's tools write weights) runs on the integer GEMM micro-kernel (u8 x s8 -> s32,
vpdpbusd; dialects/gemm_ukernel.py): B is packed at compile time (pack-weights) and the zero
point term -a_zero * (column sums of B) is folded into an int32 bias, at compile time when
a_zero is constant (in the kernel, n multiplies, when it is computed at run time, as
DynamicQuantizeLinear's). The other contractions run on the float32 GEMM micro-kernel where
float32 is provably exact (constant weights small enough that every partial sum stays below
2**24, as with reduce_range), else on contraction.py's and conv.py's int32 loop nests.
"""

from __future__ import annotations

from math import prod

import numpy as np
from xdsl.dialects import arith, math
from xdsl.dialects.builtin import IntegerAttr, IntegerType, MemRefType, Signedness, StringAttr, f32, i32
from xdsl.ir import SSAValue

from dialects.diagnostics import UnsupportedError
from dialects.gemm_ukernel import choose_tiles, pack_b_u8s8
from dialects.onnx import WeightOp
from dialects.types import is_float, numpy_dtype
from passes.lowering.kernels_to_linalg import reshape_view, view_at
from passes.lowering.rules import lowers
from passes.lowering.rules.contraction import lower_matmul
from passes.lowering.rules.conv import (
    DEPTHWISE_BLOCK,
    Window,
    constant_operand,
    depthwise_nhwc_columns,
    lower_conv,
    window_of,
)
from passes.lowering.utils.linalg_builder import (
    PARALLEL,
    REDUCTION,
    Body,
    affine_map,
    broadcast_exprs,
    cst,
    dim,
    identity_map,
)
from passes.lowering.utils.ukernel_calls import emit_gemm_call
from passes.target_info import target_info

_QUANT_TYPES = (np.int8, np.uint8, np.int16, np.uint16)


def _unsigned(type) -> bool:
    return isinstance(type, IntegerType) and type.signedness.data == Signedness.UNSIGNED


def widen(b: Body, value: SSAValue, to) -> SSAValue:
    """An integer of any signedness as `to` (a wider integer or a float), keeping its value."""
    if value.type == to:
        return value
    unsigned = _unsigned(value.type)
    if is_float(to):
        return b.math(arith.UIToFPOp if unsigned else arith.SIToFPOp, value, to)
    return b.math(arith.ExtUIOp if unsigned else arith.ExtSIOp, value, to)


def saturate(b: Body, value: SSAValue, to) -> SSAValue:
    """A float already rounded to an integer, clamped to the range of integer type `to` and
    converted (the clamp first, so the conversion is defined)."""
    info = np.iinfo(numpy_dtype(to))
    f = b.on(value.type)
    low, high = f.const(float(info.min)), f.const(float(info.max))
    clamped = f.select(f.compare("lt", value, low), low,
                       f.select(f.compare("gt", value, high), high, value))
    return b.math(arith.FPToUIOp if _unsigned(to) else arith.FPToSIOp, clamped, to)


def param_map(op, param: SSAValue, shape, block: int = 0, name: str = "scale"):
    """How a scale or zero point indexes an operand of `shape`: per tensor (one element; the
    axis attribute is then ignored, as in the spec), per axis (a 1-D tensor along `axis`) or
    blocked (the operand's rank, `block` elements of `axis` sharing one)."""
    rank = len(shape)
    p_shape = param.type.get_shape()
    if prod(p_shape) == 1 and not block:
        return affine_map(rank, [cst(0)] * len(p_shape))
    axis = _axis(op, rank)
    if block:
        expected = [(s + block - 1) // block if i == axis else s for i, s in enumerate(shape)]
        if list(p_shape) != expected:
            raise UnsupportedError(f"{op.describe()}: {name} of shape {list(p_shape)} does not block "
                                   f"input shape {list(shape)} by {block} along axis {axis} "
                                   f"(expected {expected})")
        return affine_map(rank, [dim(i) // block if i == axis else dim(i) for i in range(rank)])
    if len(p_shape) != 1 or p_shape[0] != shape[axis]:
        raise UnsupportedError(f"{op.describe()}: {name} of shape {list(p_shape)} is neither one "
                               f"value nor one per element of axis {axis} (size {shape[axis]})",
                               "give a scalar or a 1-D tensor of that size")
    return affine_map(rank, [dim(axis)])


def _axis(op, rank: int) -> int:
    axis = op.attr("axis", 1)
    if not -rank <= axis < max(rank, 1):
        raise UnsupportedError(f"{op.describe()}: axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


def _require(op, value: SSAValue, what: str, floats: bool) -> None:
    element = value.type.element_type
    ok = is_float(element) if floats else (isinstance(element, IntegerType)
                                            and numpy_dtype(element) in _QUANT_TYPES + (np.int32,))
    if not ok:
        raise UnsupportedError(f"{op.describe()}: input '{what}' of type {element} is not supported "
                               f"on cpu (expected {'float' if floats else 'int8/uint8/int16/uint16'})")


def _elementwise(kb, op, x: SSAValue, params: list[SSAValue | None], out: SSAValue, formula):
    """out = formula(b, x, *params) with each parameter indexed per tensor, axis or block.

    Per tensor it is one `kb.elementwise`, so a fused kernel inlines it into its neighbours'
    loop (elementwise_fusion.py): DequantizeLinear -> float ops -> QuantizeLinear reads bytes
    and writes bytes, the floats never stored."""
    shape = x.type.get_shape()
    rank = len(shape)
    block = op.attr("block_size", 0)
    present = [p for p in params if p is not None]
    if not block and all(prod(p.type.get_shape()) == 1 and len(p.type.get_shape()) <= rank for p in present):

        def scalar_body(b, args):
            it = iter(args[1:])
            return [formula(b, args[0], *[next(it) if p is not None else None for p in params])]

        kb.elementwise([x, *present], out, scalar_body)
        return
    maps = [identity_map(rank), *(param_map(op, p, shape, block, name)
                                  for p, name in zip(present, ("scale", "zero point"))),
            identity_map(rank)]

    def body(b, args):
        it = iter(args[1:])
        values = [next(it) if p is not None else None for p in params]
        return [formula(b, args[0], *values)]

    kb.generic([x, *present], [out], maps, [PARALLEL] * rank, body)


@lowers("QuantizeLinear")
def lower_quantize(kb, op, ins, outs) -> None:
    x, scale, zero = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    _require(op, x, "x", floats=True)
    out_type = outs[0].type.element_type
    if numpy_dtype(out_type) not in _QUANT_TYPES:
        raise UnsupportedError(f"{op.describe()}: output type {out_type} is not supported on cpu "
                               "(expected int8, uint8, int16 or uint16)")

    def formula(b, v, s, z):
        f = b.on(v.type)
        s = f.cast(s, v.type)
        q = f.math(math.RoundEvenOp, f.div(v, s))
        if z is not None:
            q = f.add(q, widen(f, z, v.type))
        return saturate(b, q, out_type)

    _elementwise(kb, op, x, [scale, zero], outs[0], formula)


@lowers("DequantizeLinear")
def lower_dequantize(kb, op, ins, outs) -> None:
    x, scale, zero = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    _require(op, x, "x", floats=False)
    out_type = outs[0].type.element_type

    def formula(b, v, s, z):
        n = b.on(i32)
        v = widen(n, v, i32)
        if z is not None:  # exact in int32, as onnxruntime subtracts before converting
            v = n.sub(v, widen(n, z, i32))
        # The product rounds on its own, as onnxruntime's kernel stores it: flags without
        # `contract` (or reassoc; afn means nothing to a multiply) keep LLVM from fusing it into
        # an fma with the float op it is inlined into (a residual Add: another step of Q's input).
        return b.math(arith.MulfOp, b.math(arith.SIToFPOp, v, out_type), s, arith.FastMathFlagsAttr(("afn",)))

    _elementwise(kb, op, x, [scale, zero], outs[0], formula)


@lowers("DynamicQuantizeLinear")
def lower_dynamic_quantize(kb, op, ins, outs) -> None:
    """uint8 quantization of x with the range [min(0, min x), max(0, max x)], as onnxruntime:
    scale = (max - min) / 255 (1 when max == min), zero point = round(clamp(-min / scale))."""
    x = ins[0]
    _require(op, x, "x", floats=True)
    y, y_scale, y_zero = outs
    ft = x.type.element_type
    rank = len(x.type.get_shape())
    low, high = kb.scratch(MemRefType(ft, [])), kb.scratch(MemRefType(ft, []))
    _range_of(kb, x, low, high, target_info(op.get_toplevel_object()).threads)

    def parameters(b, a):
        lo, hi = a[0], a[1]
        scale = b.select(b.compare("eq", lo, hi), b.const(1.0),
                         b.div(b.sub(hi, lo), b.const(255.0)))
        initial = b.sub(b.const(0.0), b.div(lo, scale))
        clamped = b.max(b.const(0.0), b.min(b.const(255.0), initial))
        zero = b.math(math.RoundEvenOp, clamped)
        return [scale, b.math(arith.FPToUIOp, zero, y_zero.type.element_type)]

    empty = affine_map(0, [])
    kb.generic([low, high], [y_scale, y_zero], [empty] * 4, [], parameters)

    def quantize(b, a):
        f = b.on(ft)
        q = f.add(f.math(math.RoundEvenOp, f.div(a[0], a[1])), widen(f, a[2], ft))
        return [saturate(b, q, y.type.element_type)]

    scalar = affine_map(rank, [])
    kb.generic([x, y_scale, y_zero], [y], [identity_map(rank), scalar, scalar, identity_map(rank)],
               [PARALLEL] * rank, quantize)


# Lanes of the partial minima and maxima: four AVX-512 vectors of float32, four independent
# chains (`_range_of`).
_LANES = 64
# Blocks of _LANES floats a thread folds at least (~2 us) before the range splits over threads.
_MIN_BLOCKS_PER_THREAD = 128


def _range_of(kb, x: SSAValue, low: SSAValue, high: SSAValue, threads: int = 1) -> None:
    """low = min(0, min x), high = max(0, max x), both in one pass over x, folded in _LANES
    partial results first: a scalar chain of NaN-propagating min and max ran at 5 ns an
    element (a 128x1024 encoder activation took longer than its GEMM). One generic writes the
    partials, so fuse-parallel-siblings does not turn its lane loop outermost.

    The partials take x86's min and max (`a < b ? a : b`, one vminps), which drop a NaN, and
    a third partial keeps any NaN of its lanes; the fold of the partials propagates it, so low
    and high are NaN whenever x holds one, as with a NaN-propagating fold throughout. That
    propagating fold (llvm.minimum: compare, unordered test, mask or, blend) per element made
    one 5-cycle chain per vector: DynamicQuantizeLinear of 128x1024 0.035 -> 0.020 ms, of
    128x256 0.009 -> 0.005 (`--profile`)."""
    ft, size = x.type.element_type, prod(x.type.get_shape())
    blocks, tail = divmod(size, _LANES)

    def fold(b, value_low, value_high, acc_low, acc_high):
        return [b.math(arith.MinimumfOp, acc_low, value_low), b.math(arith.MaximumfOp, acc_high, value_high)]

    def fast_fold(b, a):
        value, acc_low, acc_high, acc_nan = a
        return [b.select(b.compare("lt", acc_low, value), acc_low, value),
                b.select(b.compare("gt", acc_high, value), acc_high, value),
                b.select(b.is_nan(value), value, acc_nan)]

    kb.fill(low, 0.0)  # the range always holds 0
    kb.fill(high, 0.0)
    # With threads, the blocks split into one run per thread, each folded into partials of
    # its own (a parallel loop), then all partials at once: on one thread the range was
    # serial while everything around it ran on all threads.
    chunks = max(min(threads, blocks // _MIN_BLOCKS_PER_THREAD), 1)
    if blocks:
        per = blocks // chunks
        partials = [kb.scratch(MemRefType(ft, [chunks, _LANES])) for _ in range(3)]
        for partial in partials:
            kb.fill(partial, 0.0)
        lane = affine_map(3, [dim(0), dim(2)])
        kb.generic([view_at(kb.builder, x, 0, [chunks, per, _LANES])], partials,
                   [identity_map(3), lane, lane, lane], [PARALLEL, REDUCTION, PARALLEL], fast_fold)
        if chunks * per < blocks:  # the blocks left over, into the first partials
            first = [view_at(kb.builder, p, 0, [_LANES]) for p in partials]
            row = affine_map(2, [dim(1)])
            kb.generic([view_at(kb.builder, x, chunks * per * _LANES, [blocks - chunks * per, _LANES])], first,
                       [identity_map(2), row, row, row], [REDUCTION, PARALLEL], fast_fold)
        kb.generic(partials, [low, high], [identity_map(2)] * 3 + [affine_map(2, [])] * 2, [REDUCTION] * 2,
                   lambda b, a: fold(b, b.math(arith.MinimumfOp, a[0], a[2]), b.math(arith.MaximumfOp, a[1], a[2]),
                                     a[3], a[4]))
    if tail:
        kb.generic([view_at(kb.builder, x, blocks * _LANES, [tail])], [low, high],
                   [identity_map(1)] + [affine_map(1, [])] * 2, [REDUCTION],
                   lambda b, a: fold(b, a[0], a[0], a[1], a[2]))


def _centered(kb, op, value: SSAValue, zero: SSAValue | None, axis_of_vector: int, what: str):
    """int32(value) - int32(zero point) in a scratch buffer; a 1-D zero point of more than one
    element runs along `axis_of_vector` of value (rows of A, columns of B, output channels of W)."""
    _require(op, value, what, floats=False)
    shape = value.type.get_shape()
    rank = len(shape)
    out = kb.scratch(MemRefType(i32, shape))
    if zero is None:
        kb.generic([value], [out], [identity_map(rank)] * 2, [PARALLEL] * rank,
                   lambda b, a: [widen(b, a[0], i32)])
        return out
    z_shape = zero.type.get_shape()
    if prod(z_shape) == 1:
        z_map = affine_map(rank, [cst(0)] * len(z_shape))
    elif len(z_shape) == 1 and z_shape[0] == shape[axis_of_vector]:
        z_map = affine_map(rank, [dim(axis_of_vector)])
    elif len(z_shape) <= rank:
        z_map = affine_map(rank, broadcast_exprs(z_shape, shape, [dim(i) for i in range(rank)]))
    else:
        raise UnsupportedError(f"{op.describe()}: zero point of '{what}' has shape {list(z_shape)}, "
                               f"which does not fit '{what}' of shape {list(shape)}")
    kb.generic([value, zero], [out], [identity_map(rank), z_map, identity_map(rank)],
               [PARALLEL] * rank,
               lambda b, a: [b.sub(widen(b, a[0], i32), widen(b, a[1], i32))])
    return out


def _exact_in_float(op, data: SSAValue, w_index: int, zero_index: int, bias_index: int | None,
                    reduced_axes: tuple[int, ...]) -> bool:
    """Can float32 compute this integer contraction exactly? When every partial sum is an
    integer below 2**24 in magnitude, each float32 addition is exact in any order, so the
    float32 GEMM micro-kernel (packed, vectorised) gives the int32 result bit for bit.
    The bound: |x - x_zero| <= 255 for 8-bit x, times the sum of |w - w_zero| over the
    reduced axes, the worst output channel, plus the largest bias; for a w computed at run time
    (a MatMul of two activations, attention's Q.K^T and P.V) 8-bit too, 255 * 255 per term."""
    bytes_ = (np.dtype(np.int8), np.dtype(np.uint8))
    if numpy_dtype(data.type.element_type) not in bytes_:
        return False
    if not isinstance(op.operands[w_index].owner, WeightOp):
        w_value = op.operands[w_index]
        terms = prod(w_value.type.get_shape()[axis] for axis in reduced_axes)
        return (numpy_dtype(w_value.type.element_type) in bytes_ and bias_index is None
                and 255 * 255 * terms < 2 ** 24)
    w = constant_operand(op, w_index)
    zero = constant_operand(op, zero_index) if zero_index < len(op.operands) else np.zeros((), np.int32)
    if w is None or zero is None or (bias_index is not None and bias_index < len(op.operands)
                                     and constant_operand(op, bias_index) is None):
        return False
    if zero.ndim == 1 and zero.size > 1:  # per output channel: along the kept axis
        kept = [i for i in range(w.ndim) if i not in reduced_axes][-1]
        zero = zero.reshape([-1 if i == kept else 1 for i in range(w.ndim)])
    centered = np.abs(w.astype(np.int64) - zero.astype(np.int64))
    worst = 255 * int(centered.sum(axis=reduced_axes).max(initial=0))
    if bias_index is not None and bias_index < len(op.operands):
        worst += int(np.abs(constant_operand(op, bias_index).astype(np.int64)).max(initial=0))
    return worst < 2 ** 24


def _centered_float(kb, op, value: SSAValue, zero: SSAValue | None, axis: int, what: str) -> SSAValue:
    """float32(value - zero point) in a scratch buffer (exact: 8-bit values)."""
    as_int = _centered(kb, op, value, zero, axis, what)
    shape = value.type.get_shape()
    out = kb.scratch(MemRefType(f32, shape))
    kb.generic([as_int], [out], [identity_map(len(shape))] * 2, [PARALLEL] * len(shape),
               lambda b, a: [b.math(arith.SIToFPOp, a[0], f32)])
    return out


def _to_int32(kb, acc: SSAValue, out: SSAValue) -> None:
    rank = len(out.type.get_shape())
    kb.generic([acc], [out], [identity_map(rank)] * 2, [PARALLEL] * rank,
               lambda b, a: [b.math(arith.FPToSIOp, a[0], i32)])


# The integer GEMM's k block: a B micro-panel of kc x nr int8 streams from L2 as the float
# one does (64 columns x 2048 = 128 KiB); longer k is split into equal blocks.
_INT8_KC = 2048
# The requantizing store needs all of k in one block (its int32 sums never reach memory), so
# a requantized GEMM takes k up to this in one block: ResNet-50's 3x3 convs over 256 and 512
# channels (k = 2304, 4608) keep a 48-column B micro-panel of 216 KiB in L2. Before, they ran
# as int32 loop nests at 1/60 of the GEMM's speed.
_INT8_ONE_BLOCK = 8192


def _weight(kb, op, hint: str, array: np.ndarray) -> SSAValue:
    """A new compile-time constant, read in the kernel through memref.get_global."""
    return kb.constant(op, hint, array)


def _dot_instruction(op) -> str:
    """vpdpbusd where the target has it at its vector width (`dlc.vnni_bits`), else "widen"."""
    attributes = op.get_toplevel_object().attributes
    bits = attributes.get("dlc.vector_bits")
    bits = bits.value.data if isinstance(bits, IntegerAttr) else 512
    vnni = attributes.get("dlc.vnni_bits")
    has_vnni = isinstance(vnni, IntegerAttr) and vnni.value.data >= bits
    return "vpdpbusd" if has_vnni and bits in (256, 512) else "widen"


def _as_unsigned(b: Body, value: SSAValue) -> SSAValue:
    """The byte of int8 `value` + 128 (as uint8 bits): its top bit flipped."""
    return b.math(arith.XOrIOp, value, b.const(-128, value.type))


def _record(op, path: str) -> None:
    """Say on the kernel (through its kernel.launch, whose dlc.* attributes the kernel keeps)
    which path the op's contraction took, and why not the integer GEMM: as fusion records
    its decisions, a reader of the `linalg` phase sees why a layer stayed in float."""
    launch = op.parent_op()
    if launch is None or not hasattr(launch, "attributes"):
        return
    note = f"{op.describe()}: {path}"
    old = launch.attributes.get("dlc.int8")
    launch.attributes["dlc.int8"] = StringAttr(f"{old.data}; {note}" if isinstance(old, StringAttr) else note)


def _integer_gemm(kb, op, a, a_zero, b, out, b_index: int, b_zero_index: int,
                  requant: tuple[np.ndarray, int] | None = None) -> str | None:
    """A @ B on the integer GEMM micro-kernel when A is uint8 (a per-tensor zero point), B a
    constant int8 matrix with zero point 0 and `out` int32, or, with `requant` (float32
    multipliers per column, y's zero point), `out` 8-bit, requantized in the GEMM's store (when
    k fits one kc block): None, or (nothing emitted) the reason it does not apply."""
    b_array = constant_operand(op, b_index)
    b_zero = constant_operand(op, b_zero_index) if b_zero_index < len(op.operands) else np.zeros((), np.int8)
    a_shape, out_shape = a.type.get_shape(), out.type.get_shape()
    out_type = numpy_dtype(out.type.element_type)
    k4 = -(-a_shape[-1] // 4) * 4
    reason = next((why for bad, why in (
        (numpy_dtype(a.type.element_type) not in (np.uint8, np.int8), "A is not 8-bit"),
        (not _unsigned(a.type.element_type) and a_zero is not None and constant_operand(op, 2) is None,
         "A is int8 with a zero point computed at run time"),
        (b_array is None or b_array.dtype != np.int8 or b_array.ndim != 2, "B is not a constant int8 matrix"),
        (b_zero is None or b_zero.any(), "B's zero point is not 0"),
        (a_zero is not None and prod(a_zero.type.get_shape()) != 1, "A's zero point is not one value"),
        (out_type not in ((np.int32,) if requant is None else (np.uint8, np.int8)), "the output type"),
        (0 in out_shape, "the output is empty"),
        (requant is not None and k4 > _INT8_ONE_BLOCK,
         f"k > {_INT8_ONE_BLOCK} (the requantizing store needs one k block)"))
        if bad), None)
    if reason is not None:
        return reason
    k, n = b_array.shape
    rows = prod(a_shape[:-1])
    column_sums = b_array.astype(np.int64).sum(axis=0)
    bias = None
    a_zero_value = constant_operand(op, 2) if a_zero is not None else None  # a_zero is operand 2 of both ops
    signed = not _unsigned(a.type.element_type)
    if signed:  # int8 A is read as uint8 A + 128 (its top bit flipped), its zero point too
        a_zero_value = (np.zeros(1) if a_zero_value is None else a_zero_value.astype(np.int64)) + 128
        flipped = kb.scratch(MemRefType(a.type.element_type, [prod(a_shape[:-1]), a_shape[-1]]))
        kb.generic([reshape_view(kb.builder, a, [prod(a_shape[:-1]), a_shape[-1]])], [flipped],
                   [identity_map(2)] * 2, [PARALLEL] * 2, lambda b, args: [_as_unsigned(b, args[0])])
        a = flipped
    if a_zero_value is not None:
        if a_zero_value.any():
            correction = -int(a_zero_value.reshape(-1)[0]) * column_sums
            bias = _weight(kb, op, "a_zero_correction", correction.astype(np.int32))
    elif a_zero is not None:  # computed at run time: -a_zero * column sums, n products here
        sums = _weight(kb, op, "column_sums", column_sums.astype(np.int32))
        bias = kb.scratch(MemRefType(i32, [n]))
        z_map = affine_map(1, [cst(0)] * len(a_zero.type.get_shape()))
        kb.generic([a_zero, sums], [bias], [z_map, identity_map(1), identity_map(1)], [PARALLEL],
                   lambda b, args: [b.sub(b.const(0, i32), b.mul(widen(b, args[0], i32), args[1]))])
    blocks = 1 if requant is not None else -(-k4 // _INT8_KC)
    spec = {}
    multipliers = None
    if requant is not None:
        multipliers = _weight(kb, op, "requantize_multipliers", np.broadcast_to(requant[0], [n]).copy())
        spec = dict(requantize="u8" if out_type == np.uint8 else "s8", y_zero=requant[1])
    emit_gemm_call(kb, op, reshape_view(kb.builder, a, [rows, k]), b,
                   reshape_view(kb.builder, out, [rows, n]), bias_buffer=bias, residual_buffer=multipliers,
                   bias="row" if bias is not None else None, m=rows, n=n, k=k, a_row_stride=k,
                   a_k_stride=1, ldb=n, ldc=n, dtype="u8s8", dot=_dot_instruction(op),
                   kc=-(-k4 // (4 * blocks)) * 4, **spec)
    _record(op, f"integer GEMM ({_dot_instruction(op)})" + (" (int8 A + 128)" if signed else "")
            + (", requantized in its store" if requant else ""))
    return None


def _multipliers(op) -> tuple[np.ndarray, int] | None:
    """QLinearMatMul's requantization constants, float32(a_scale * b_scale / y_scale) computed
    in the scales' type as `requantize` does, and y's zero point; None unless all are constant
    and a_scale is one value."""
    a_scale, b_scale, y_scale, y_zero = (constant_operand(op, i) for i in (1, 4, 6, 7))
    if any(v is None for v in (a_scale, b_scale, y_scale, y_zero)) or a_scale.size != 1:
        return None
    dtype = a_scale.dtype
    product = (a_scale.reshape(()).astype(dtype) * b_scale.reshape(-1).astype(dtype)).astype(dtype)
    return (product / y_scale.reshape(()).astype(dtype)).astype(dtype).astype(np.float32), int(y_zero.reshape(-1)[0])


def requantize_multipliers(op) -> tuple[np.ndarray, int] | None:
    """`_multipliers`, public: npu-sim requantizes QLinearConv/QLinearMatMul with these same
    constants (dlc/targets/npu), so both targets round the same products."""
    return _multipliers(op)


def _matmul_integer(kb, op, a, a_zero, b, b_zero, out, indices=(0, 1, 3)) -> SSAValue:
    """A @ B in int32 (on the integer micro-kernel: `_integer_gemm`, or exactly in float32:
    `_exact_in_float`); returns the accumulator, which is `out` or, on the float path when
    `out` is int32, a float32 scratch buffer."""
    a_rank, b_rank = len(a.type.get_shape()), len(b.type.get_shape())
    kb.epilogue = None  # an integer tail is kernels-to-linalg's to apply, not the float GEMM's
    reason = _integer_gemm(kb, op, a, a_zero, b, out, indices[1], indices[2])
    if reason is None:
        return out
    if b_rank >= 2 and _exact_in_float(op, a, indices[1], indices[2], None, (b_rank - 2,)):
        _record(op, f"float32 GEMM, exact here (not the integer GEMM: {reason})")
        af = _centered_float(kb, op, a, a_zero, max(a_rank - 2, 0), "A")
        bf = _centered_float(kb, op, b, b_zero, b_rank - 1, "B")
        acc = kb.scratch(MemRefType(f32, out.type.get_shape()))
        lower_matmul(kb, op, [af, bf], [acc])
        return acc
    _record(op, f"int32 loop nest (not the integer GEMM: {reason}; float32 would not be exact)")
    a32 = _centered(kb, op, a, a_zero, max(a_rank - 2, 0), "A")
    b32 = _centered(kb, op, b, b_zero, b_rank - 1, "B")
    lower_matmul(kb, op, [a32, b32], [out])
    return out


def _conv_integer(kb, op, x, x_zero, w, w_zero, bias, out, indices=(0, 1, 3, None),
                  reason: str | None = None) -> SSAValue:
    """ConvInteger's int32 accumulator (or its exact float32 one); see `_matmul_integer`."""
    kb.epilogue = None
    w_rank = len(w.type.get_shape())
    why = f"not the integer GEMM: {reason}" if reason else "ConvInteger has no integer GEMM path"
    if _exact_in_float(op, x, indices[1], indices[2], indices[3], tuple(range(1, w_rank))):
        _record(op, f"float32 convolution, exact here ({why})")
        xf = _centered_float(kb, op, x, x_zero, 1, "x")
        wf = _centered_float(kb, op, w, w_zero, 0, "w")
        bf = None
        if bias is not None:
            bf = kb.scratch(MemRefType(f32, bias.type.get_shape()))
            kb.generic([bias], [bf], [identity_map(1)] * 2, [PARALLEL],
                       lambda b, a: [b.math(arith.SIToFPOp, a[0], f32)])
        acc = kb.scratch(MemRefType(f32, out.type.get_shape()))
        lower_conv(kb, op, [xf, wf, bf], [acc])
        return acc
    _record(op, f"int32 loop nest ({why}; float32 would not be exact)")
    x32 = _centered(kb, op, x, x_zero, 1, "x")
    w32 = _centered(kb, op, w, w_zero, 0, "w")
    lower_conv(kb, op, [x32, w32, bias], [out])
    return out


@lowers("MatMulInteger")
def lower_matmul_integer(kb, op, ins, outs) -> None:
    a, b = ins[0], ins[1]
    acc = _matmul_integer(kb, op, a, ins[2] if len(ins) > 2 else None, b,
                          ins[3] if len(ins) > 3 else None, outs[0])
    if acc is not outs[0]:
        _to_int32(kb, acc, outs[0])


@lowers("ConvInteger")
def lower_conv_integer(kb, op, ins, outs) -> None:
    acc = _conv_integer(kb, op, ins[0], ins[2] if len(ins) > 2 else None, ins[1],
                        ins[3] if len(ins) > 3 else None, None, outs[0])
    if acc is not outs[0]:
        _to_int32(kb, acc, outs[0])


def requantize(kb, op, acc: SSAValue, scales: list[tuple[SSAValue, object]], y_scale: SSAValue,
               y_zero: SSAValue | None, out: SSAValue) -> None:
    """out = saturate(round_half_even(f32(acc) * f32(s0 * s1 / y_scale)) + y_zero), where each
    input scale comes with its map onto acc's index space (per tensor, row or channel)."""
    shape = acc.type.get_shape()
    rank = len(shape)
    out_type = out.type.element_type

    def scalar_map(value):
        return affine_map(rank, [cst(0)] * len(value.type.get_shape()))

    params = [s for s, _ in scales] + [y_scale] + ([y_zero] if y_zero is not None else [])
    maps = ([identity_map(rank)] + [m for _, m in scales] + [scalar_map(y_scale)]
            + ([scalar_map(y_zero)] if y_zero is not None else []) + [identity_map(rank)])

    def body(b, a):
        st = a[1].type  # the scales' own type (float32 or float16): the multiplier in it
        s = b.on(st)
        multiplier = s.div(s.mul(a[1], a[2]), a[3])
        f = b.on(f32)
        scaled = f.mul(widen(f, a[0], f32), f.cast(multiplier, f32))
        q = f.math(math.RoundEvenOp, scaled)
        if y_zero is not None:
            q = f.add(q, widen(f, a[4], f32))
        return [saturate(b, q, out_type)]

    kb.generic([acc, *params], [out], maps, [PARALLEL] * rank, body)


def _scale_map(op, scale: SSAValue, rank: int, axis: int, what: str):
    shape = scale.type.get_shape()
    if prod(shape) == 1:
        return affine_map(rank, [cst(0)] * len(shape))
    if len(shape) == 1:
        return affine_map(rank, [dim(axis)])
    raise UnsupportedError(f"{op.describe()}: '{what}' of shape {list(shape)} is neither a scalar "
                           "nor a 1-D tensor")


def _check_scale_size(op, scale: SSAValue, size: int, what: str) -> None:
    count = prod(scale.type.get_shape())
    if count not in (1, size):
        raise UnsupportedError(f"{op.describe()}: '{what}' has {count} elements (expected 1 or {size})")


@lowers("QLinearMatMul")
def lower_qlinear_matmul(kb, op, ins, outs) -> None:
    a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = ins
    out = outs[0]
    shape = out.type.get_shape()
    rank = len(shape)
    a_shape, b_shape = a.type.get_shape(), b.type.get_shape()
    _check_scale_size(op, a_scale, a_shape[-2] if len(a_shape) > 1 else 1, "a_scale")
    _check_scale_size(op, b_scale, b_shape[-1] if len(b_shape) > 1 else 1, "b_scale")
    requant = _multipliers(op)
    kb.epilogue = None
    if requant is not None and _integer_gemm(kb, op, a, a_zero, b, out, 3, 5, requant) is None:
        return
    acc = _matmul_integer(kb, op, a, a_zero, b, b_zero, kb.scratch(MemRefType(i32, shape)),
                          indices=(0, 3, 5))
    row_axis = rank - 2 if len(a_shape) > 1 else rank - 1
    scales = [(a_scale, _scale_map(op, a_scale, rank, row_axis, "a_scale")),
              (b_scale, _scale_map(op, b_scale, rank, rank - 1, "b_scale"))]
    requantize(kb, op, acc, scales, y_scale, y_zero, out)


def _padded_with(kb, x: SSAValue, window, zero: int) -> SSAValue:
    """x [1, C, H, W] (8-bit) padded with its zero point as `window` reads it. As conv.py's
    padded_input, but a uint8 fill is built through a float: arith has no unsigned constants."""
    shape = x.type.get_shape()
    extent = window.padded_extent(shape[2:])
    if tuple(extent) == tuple(shape[2:]):
        return x
    element = x.type.element_type
    padded = kb.scratch(MemRefType(element, [*shape[:2], *extent]))
    kb.generic([], [padded], [identity_map(4)], [PARALLEL] * 4,
               lambda b, a: [b.math(arith.FPToUIOp, b.const(float(zero), f32), element) if _unsigned(element)
                             else b.const(zero, element)])
    # Through a flat view, as pad_into: a plain `d2` (no pad on top) must span padded's dim.
    top, left = window.pads_begin
    rows, cols = extent
    flat = reshape_view(kb.builder, padded, [shape[1] * rows * cols])
    kb.copy(x, flat, affine_map(4, [dim(1) * rows * cols + (dim(2) + top) * cols + dim(3) + left]))
    return padded


NHWC = "NHWC"  # dlc.layout of a QLinearConv that qlinear-conv-nhwc rewrote (see that pass)


def integer_conv_refusal(x_dtype, x_shape, w_shape, y_shape, group: int, weights, w_zero, x_zero, bias,
                         one_image: bool) -> str | None:
    """Why a QLinearConv cannot run on the integer GEMM, or None (also qlinear-conv-nhwc's
    test, which must only rewrite convs that take this path). The arrays are the constants
    (None when computed at run time); `one_image`: the NCHW path, which handles one image."""
    k = int(np.prod(w_shape[1:]))
    return next((why for bad, why in (
        (len(x_shape) != 4, "not a 2-D convolution"),
        (one_image and x_shape[0] != 1, "not a 2-D convolution of one image"),
        (group != 1 and one_image, "grouped (the integer kernels take grouped convs in NHWC, on the cpu target)"),
        (np.dtype(x_dtype) not in (np.uint8, np.int8), "x is not 8-bit"),
        (weights is None or weights.dtype != np.int8, "w is not a constant int8 tensor"),
        (w_zero is None or w_zero.any(), "w's zero point is not 0"),
        (x_zero is None or x_zero.size != 1, "x's zero point is not one constant"),
        (bias is None, "the bias is not constant"),
        (0 in y_shape, "the output is empty"),
        (-(-k // 4) * 4 > _INT8_ONE_BLOCK, f"C*KH*KW > {_INT8_ONE_BLOCK} (the requantizing store needs one k block)"),
        (weights is not None and x_zero is not None and x_zero.size == 1 and bias is not None
         and _conv_correction(weights, x_zero, bias, x_dtype) is None, "the zero point term overflows int32"))
        if bad), None)


def _conv_correction(weights: np.ndarray, x_zero: np.ndarray, bias: np.ndarray, x_dtype) -> np.ndarray | None:
    """bias - x_zero * (row sums of W), per output channel, in int32 (x_zero of an int8 x
    moved by 128, as the GEMM reads x + 128); None when it overflows int32."""
    co = weights.shape[0]
    zero = int(x_zero.reshape(-1)[0]) + (128 if np.dtype(x_dtype) == np.int8 else 0)
    correction = bias.astype(np.int64).reshape(-1) - zero * weights.astype(np.int64).reshape(co, -1).sum(axis=1)
    if np.abs(correction).max(initial=0) >= 2 ** 31:
        return None
    return np.broadcast_to(correction, [co]).astype(np.int32)


def _integer_conv(kb, op, x, w, bias: SSAValue | None, out, requant: tuple[np.ndarray, int]) -> str | None:
    """A 2-D QLinearConv on the integer GEMM micro-kernel, as C[pixel, co] = patches @ W^T:
    A is x's patches, one row of KH*KW*C bytes per output pixel (k contiguous, as the kernel's
    4-byte broadcasts want), built at run time from x padded with its zero point (so padding
    reads as 0 once the zero point term is taken off); B is the constant int8 weight, packed at
    compile time (pack-weights, as a transposed B); -x_zero * (row sums of W) + bias is one
    int32 bias per output channel, folded at compile time, and the GEMM requantizes in its store.

    In NHWC (`dlc.layout`, set by qlinear-conv-nhwc: x [N, H, W, C], w [CO, KH, KW, C], y
    [N, OH, OW, CO]) C is y itself, any batch, and a patch row is KH runs of KW*C contiguous
    bytes (stride 1) or KH*KW runs of C; a 1x1 stride-1 conv of a uint8 x reads x as A, no
    patches. In NCHW (one image) the patches are gathered byte by byte and C is transposed into
    y. None, or (nothing emitted) the reason it does not apply."""
    nhwc = _layout(op) == NHWC
    x_shape, w_shape, y_shape = x.type.get_shape(), w.type.get_shape(), out.type.get_shape()
    weights, w_zero, x_zero = constant_operand(op, 3), constant_operand(op, 5), constant_operand(op, 2)
    conv_bias = np.zeros(1, np.int32) if bias is None else constant_operand(op, 8)
    reason = integer_conv_refusal(numpy_dtype(x.type.element_type), x_shape, w_shape, y_shape,
                                  op.attr("group", 1), weights, w_zero, x_zero, conv_bias, one_image=not nhwc)
    if reason is not None:
        if nhwc:  # qlinear-conv-nhwc rewrites only convs this path takes
            raise UnsupportedError(f"{op.describe()}: an NHWC QLinearConv off the integer GEMM ({reason})",
                                   "report this: qlinear-conv-nhwc and the lowering disagree")
        return reason
    k = int(np.prod(w_shape[1:]))
    co = w_shape[0]
    signed = not _unsigned(x.type.element_type)
    correction = _conv_correction(weights, x_zero, conv_bias, numpy_dtype(x.type.element_type))
    zero = int(x_zero.reshape(-1)[0])
    if op.attr("group", 1) != 1:
        _grouped_conv(kb, op, x, weights, out, correction, requant, zero, signed)
        return None
    to_nchw = nhwc and _y_layout(op) == "NCHW"
    implicit = {}
    if nhwc:
        if to_nchw:  # y in NCHW: C in NHWC, then transposed by tiles
            n, _, oh, ow = y_shape
            y_shape = [n, oh, ow, co]
        implicit = _implicit_a(kb, op, x, w_shape, y_shape, zero, signed)
        if implicit:
            patches, c = implicit.pop("a"), out
        else:
            patches, c = _nhwc_patches(kb, op, x, w_shape, y_shape, zero, signed), out
        pixels = prod(y_shape[:3])
        if to_nchw:
            c = kb.scratch(MemRefType(out.type.element_type, [pixels, co]))
    else:
        patches = _nchw_patches(kb, op, x, w_shape, y_shape, zero, signed)
        pixels = prod(y_shape[2:])
        c = kb.scratch(MemRefType(out.type.element_type, [pixels, co]))
    bias = _weight(kb, op, "x_zero_correction", correction)
    multipliers = _weight(kb, op, "requantize_multipliers", np.broadcast_to(requant[0], [co]).copy())
    out_type = numpy_dtype(out.type.element_type)
    a_row_stride = patches.type.get_shape()[-1]
    if implicit:
        a_row_stride = implicit.pop("a_row_stride")
    elif len(patches.type.get_shape()) != 2:  # x itself (a 1x1 conv): rows of C bytes
        patches = reshape_view(kb.builder, patches, [pixels, a_row_stride])
    emit_gemm_call(kb, op, patches, reshape_view(kb.builder, w, [co, k]), reshape_view(kb.builder, c, [pixels, co]),
                   bias_buffer=bias, residual_buffer=multipliers, bias="row", m=pixels, n=co, k=k,
                   a_row_stride=a_row_stride, a_k_stride=1, ldb=co, ldc=co, b_trans=1, dtype="u8s8",
                   dot=_dot_instruction(op), kc=-(-k // 4) * 4,
                   requantize="u8" if out_type == np.uint8 else "s8", y_zero=requant[1], **implicit)
    if to_nchw:
        _transpose_by_tiles(kb, c, out, y_shape[0], pixels // y_shape[0], co)
    elif not nhwc:
        kb.generic([c], [reshape_view(kb.builder, out, [co, pixels])],
                   [identity_map(2), affine_map(2, [dim(1), dim(0)])], [PARALLEL] * 2, lambda b, a: [a[0]])
    source = "x's kernel rows in place (implicit GEMM)" if implicit else "x's patches"
    _record(op, f"integer GEMM ({_dot_instruction(op)}) over {source}" + (" (int8 x + 128)" if signed else "")
            + (" in NHWC" if nhwc else "") + ", requantized in its store")
    return None


def _grouped_conv(kb, op, x, weights: np.ndarray, out, correction: np.ndarray, requant, zero: int,
                  signed: bool) -> None:
    """A grouped (not depthwise) NHWC QLinearConv (qlinear-conv-nhwc: x [N, H, W, C], w [CO, KH,
    KW, C/G], y [N, OH, OW, CO]) as G integer GEMMs over one patch matrix: a pixel's row holds
    the G groups' KH*KW*C/G bytes one after another, and group g's GEMM reads its part of every
    row (a_row_stride G*K), multiplies its CO/G filters (packed here, per group) and writes its
    CO/G columns of y (ldc CO)."""
    group = op.attr("group", 1)
    n, h, w_, channels = x.type.get_shape()
    co, kh, kw, per_group = weights.shape
    _, oh, ow, _ = out.type.get_shape()
    per_out, k = co // group, kh * kw * per_group
    pixels = n * oh * ow
    window = window_of(op, [h, w_], [kh, kw], [oh, ow])
    (sh, sw), (dh, dw) = window.strides, window.dilations
    padded, hp, wp = _padded_nhwc(kb, x, window, zero)
    patches = kb.scratch(MemRefType(x.type.element_type, [pixels, group * k]))
    source = affine_map(7, [dim(0) * (hp * wp * channels) + (dim(1) * sh + dim(4) * dh) * (wp * channels)
                            + (dim(2) * sw + dim(5) * dw) * channels + dim(3) * per_group + dim(6)])
    kb.generic([reshape_view(kb.builder, padded, [n * hp * wp * channels])],
               [reshape_view(kb.builder, patches, [n, oh, ow, group, kh, kw, per_group])],
               [source, identity_map(7)], [PARALLEL] * 7,
               lambda b, a: [_as_unsigned(b, a[0]) if signed else a[0]])
    info = target_info(op.get_toplevel_object())
    nr = choose_tiles(pixels, per_out, k, info.vector_width, info.l1_bytes, info.l2_bytes)[1]
    out_type = numpy_dtype(out.type.element_type)
    multipliers = np.broadcast_to(requant[0], [co]).astype(np.float32)
    for g in range(group):
        columns = slice(g * per_out, (g + 1) * per_out)
        packed = pack_b_u8s8(np.ascontiguousarray(weights[columns].reshape(per_out, k).T), nr)
        emit_gemm_call(kb, op, view_at(kb.builder, patches, g * k, [pixels, k]),
                       _weight(kb, op, f"w_group{g}.packed{nr}", packed),
                       view_at(kb.builder, out, g * per_out, [pixels, per_out]),
                       bias_buffer=_weight(kb, op, f"x_zero_correction{g}", correction[columns].copy()),
                       residual_buffer=_weight(kb, op, f"requantize_multipliers{g}", multipliers[columns].copy()),
                       bias="row", m=pixels, n=per_out, k=k, a_row_stride=group * k, a_k_stride=1,
                       b_layout="packed", nr=nr, ldb=per_out, ldc=co, dtype="u8s8", dot=_dot_instruction(op),
                       kc=-(-k // 4) * 4, requantize="u8" if out_type == np.uint8 else "s8", y_zero=requant[1])
    _record(op, f"integer GEMM ({_dot_instruction(op)}) per group ({group}) over x's patches"
            + (" (int8 x + 128)" if signed else "") + " in NHWC, requantized in its store")


def _implicit_a(kb, op, x, w_shape, y_shape, zero: int, signed: bool) -> dict:
    """An NHWC conv's A read in place, without patches (an implicit GEMM): the GEMM spec's
    a_group fields and A (x padded with its zero point), or {} where it does not apply.

    Output pixel (n, oh, ow)'s kernel row i is KW*C contiguous bytes of the padded x at
    [n, oh*sh + i*dh, ow*sw, 0] when dw = 1: rows of A are sw*C bytes apart within an output
    row (a group of OW), output rows sh*WP*C apart, images HP*WP*C; along k, KH runs of KW*C
    bytes (a multiple of 4, so no group of four k spans two runs) dh*WP*C apart. The patches,
    KH*KW*C bytes copied per pixel, were ~7% of a 64-channel 56x56 3x3 conv. Not for a 1x1
    stride-1 conv (x itself is A, or the patches' flipped copy of it).

    An int8 x is read from a copy of x + 128 (`_padded_nhwc`'s flip: x's size, where the
    patches were KH*KW times it): benchmarks/int8.py's cnn quantized with int8 activations
    0.88-0.90 of its thread CPU, its 3x3 convs ~0.7 -> ~0.58 ms. Padding C to make KW*C a
    multiple of 4 (the 3-channel stem, 3 -> 4 channels, zero weights) was tried: the stem took
    0.078-0.129 ms against 0.056 with patches (runs of 12 bytes, a third more k)."""
    n, h, w_, channels = x.type.get_shape()
    _, kh, kw, _ = w_shape
    _, oh, ow, _ = y_shape
    window = window_of(op, [h, w_], [kh, kw], [oh, ow])
    (sh, sw), (dh, dw) = window.strides, window.dilations
    if dw != 1 or (kw * channels) % 4 or ((kh, kw) == (1, 1) and (sh, sw) == (1, 1) and (oh, ow) == (h, w_)):
        return {}
    padded, hp, wp = _padded_nhwc(kb, x, window, zero, flip=signed)
    return dict(a=reshape_view(kb.builder, padded, [n * hp * wp, channels]), a_row_stride=sw * channels,
                a_group=ow, a_group_stride=sh * wp * channels, a_image_groups=oh if n > 1 else 0,
                a_image_stride=hp * wp * channels if n > 1 else 0, a_k_run=kw * channels,
                a_k_run_stride=dh * wp * channels)


def depthwise_refusal(x_dtype, x_shape, w_shape, y_shape, channels: int, group: int, weights, x_zero,
                      bias) -> str | None:
    """Why a grouped QLinearConv cannot run on the depthwise integer kernel (`_depthwise_nhwc`),
    or None; `channels`: x's channel count. Also qlinear-conv-nhwc's test."""
    return next((why for bad, why in (
        (len(x_shape) != 4, "not a 2-D convolution"),
        (group != channels or w_shape[0] != channels or w_shape[1] != 1,
         "grouped, not depthwise (one filter per channel)"),
        (np.dtype(x_dtype) not in (np.uint8, np.int8), "x is not 8-bit"),
        (weights is None or weights.dtype != np.int8, "w is not a constant int8 tensor"),
        (x_zero is None or x_zero.size != 1, "x's zero point is not one constant"),
        (bias is None, "the bias is not constant"),
        (0 in y_shape, "the output is empty"),
        (weights is not None and x_zero is not None and x_zero.size == 1 and bias is not None
         and _conv_correction(weights, x_zero, bias, np.uint8) is None, "the zero point term overflows int32"))
        if bad), None)


# Taps of a depthwise kernel summed in one pass (each an operand of one generic); larger
# kernels accumulate in an int32 buffer tap by tap.
_UNROLLED_TAPS = 25


def _depthwise_nhwc(kb, op, x, w, out, requant: tuple[np.ndarray, int] | None) -> None:
    """A depthwise QLinearConv in NHWC (qlinear-conv-nhwc: x [N, H, W, C], w [1, KH, KW, C],
    y [N, OH, OW, C]) in int32 loops over C innermost, so every load is a contiguous vector:
    acc = bias - x_zero * sum(w) (folded at compile time) + the sum of x * w over the KH x KW
    taps of x padded with its zero point, requantized as the GEMM's store does (float32(acc) *
    float32 multiplier per channel, round half to even, + y_zero, saturate). Up to
    _UNROLLED_TAPS taps in one pass (through an int32 buffer read and written at every tap, a
    144-channel 56x56 3x3 conv took 0.27 ms, 0.22 this way), more through that buffer."""
    weights, x_zero = constant_operand(op, 3), constant_operand(op, 2)
    bias = np.zeros(1, np.int32) if len(op.operands) < 9 else constant_operand(op, 8)
    x_shape, w_shape, y_shape = x.type.get_shape(), w.type.get_shape(), out.type.get_shape()
    n, h, w_, c = x_shape
    _, kh, kw, _ = w_shape
    _, oh, ow, _ = y_shape
    reason = "the scales or y's zero point are not constant" if requant is None else depthwise_refusal(
        numpy_dtype(x.type.element_type), x_shape, [c, 1, kh, kw], y_shape, c, op.attr("group", 1),
        None if weights is None else weights.transpose(3, 0, 1, 2), x_zero, bias)
    if reason is not None:  # qlinear-conv-nhwc rewrites only convs this kernel takes
        raise UnsupportedError(f"{op.describe()}: an NHWC depthwise QLinearConv off the integer kernel ({reason})",
                               "report this: qlinear-conv-nhwc and the lowering disagree")
    zero = int(x_zero.reshape(-1)[0])
    correction = _conv_correction(weights.reshape(kh * kw, c).T, x_zero, bias, np.uint8)
    window = window_of(op, [h, w_], [kh, kw], [oh, ow])
    (sh, sw), (dh, dw) = window.strides, window.dilations
    padded, hp, wp = _padded_nhwc(kb, x, window, zero)
    flat = reshape_view(kb.builder, padded, [n * hp * wp * c])
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    multipliers = _weight(kb, op, "requantize_multipliers", np.broadcast_to(requant[0], [c]).copy())
    corrections = _weight(kb, op, "x_zero_correction", correction)
    out_type = out.type.element_type
    per_channel = affine_map(4, [dim(3)])

    def requantized(b, acc, multiplier):
        f = b.on(f32)
        q = f.add(f.math(math.RoundEvenOp, f.mul(widen(f, acc, f32), multiplier)), f.const(float(requant[1])))
        return saturate(b, q, out_type)

    if len(taps) <= _UNROLLED_TAPS:
        # One pass, every tap an operand: the sum stays in registers, y is written once. The
        # products and their sum in float32, exact: integers below 25 * 255 * 128 < 2**24, in
        # any order (int32 multiplies, vpmulld, made this 2x slower); the weights as float32.
        w_taps = _weight(kb, op, "depthwise_taps", weights.reshape(kh * kw, c).astype(np.float32))
        # The sum starts at the correction, in float32 too, where every partial sum stays an
        # integer below 2**24 (so float32(acc) is the int32 sum's value): no round trip through
        # int32 to add it (mobile's 144-channel 56x56 3x3 conv 0.181 -> 0.135 ms, --profile).
        bound = np.abs(correction.astype(np.int64)) + 255 * np.abs(weights.reshape(kh * kw, c).astype(np.int64)).sum(0)
        if int(bound.max(initial=0)) < 2 ** 24:
            corrections = _weight(kb, op, "x_zero_correction_f32", correction.astype(np.float32))
        float_start = corrections.type.element_type == f32

        def combine(b, pairs, params):
            f = b.on(f32)
            total = params[0] if float_start else None
            for value, tap in pairs:
                product = f.mul(value, tap)
                total = product if total is None else f.add(total, product)
            if float_start:
                return requantized(b, total, params[1])
            return requantized(b, b.add(params[0], b.math(arith.FPToSIOp, total, i32)), params[1])

        blocks, rest = divmod(ow, DEPTHWISE_BLOCK)
        padded_window = Window((kh, kw), (sh, sw), (dh, dw), (0, 0), (0, 0), (oh, ow))
        load = lambda b, v: widen(b.on(f32), v, f32)  # noqa: E731
        for start, block, count in ((0, DEPTHWISE_BLOCK, blocks), (blocks * DEPTHWISE_BLOCK, 1, rest)):
            if count:
                depthwise_nhwc_columns(kb, out, flat, w_taps, [corrections, multipliers], (hp, wp, c),
                                       padded_window, (0, oh), start, block, count, ((0, kh), (0, kw)),
                                       load, combine)
    else:
        acc = kb.scratch(MemRefType(i32, [n, oh, ow, c]))
        kb.generic([corrections], [acc], [per_channel, identity_map(4)], [PARALLEL] * 4, lambda b, a: [a[0]])
        source = affine_map(6, [dim(0) * (hp * wp * c) + (dim(1) * sh + dim(3) * dh) * (wp * c)
                                + (dim(2) * sw + dim(4) * dw) * c + dim(5)])
        kb.generic([flat, reshape_view(kb.builder, w, [kh, kw, c])],
                   [acc], [source, affine_map(6, [dim(3), dim(4), dim(5)]),
                           affine_map(6, [dim(0), dim(1), dim(2), dim(5)])],
                   [PARALLEL, PARALLEL, PARALLEL, REDUCTION, REDUCTION, PARALLEL],
                   lambda b, a: [b.add(a[2], b.mul(widen(b, a[0], i32), widen(b, a[1], i32)))])
        kb.generic([acc, multipliers], [out], [identity_map(4), per_channel, identity_map(4)],
                   [PARALLEL] * 4, lambda b, a: [requantized(b, a[0], a[1])])
    float_start = corrections.type.element_type == f32
    _record(op, "depthwise int32 loops in NHWC, requantized in their store"
            + (" (summed in float32 from the zero point correction, exact here)" if float_start else ""))


def _padded_nhwc(kb, x, window, zero: int, flip: bool = False) -> tuple[SSAValue, int, int]:
    """x [N, H, W, C] (8-bit) padded with its zero point as `window` reads it, and the padded
    height and width (x itself when nothing is padded and `flip` is not asked). With `flip`
    (an int8 x), a copy of x's bytes + 128 (the top bit flipped: the uint8 bits the u8s8 GEMM
    reads as A) padded with the zero point + 128."""
    n, h, w_, channels = x.type.get_shape()
    hp, wp = window.padded_extent([h, w_])
    if (hp, wp) == (h, w_) and not flip:
        return x, hp, wp
    element = x.type.element_type
    padded = kb.scratch(MemRefType(element, [n, hp, wp, channels]))
    if (hp, wp) != (h, w_):
        fill = int(np.array(zero + 128, np.uint8).view(np.int8)) if flip else zero
        kb.generic([], [padded], [identity_map(4)], [PARALLEL] * 4,
                   lambda b, a: [b.math(arith.FPToUIOp, b.const(float(fill), f32), element) if _unsigned(element)
                                 else b.const(fill, element)])
    top, left = window.pads_begin
    flat = reshape_view(kb.builder, padded, [n * hp * wp * channels])
    into = affine_map(4, [dim(0) * (hp * wp * channels) + (dim(1) + top) * (wp * channels)
                          + (dim(2) + left) * channels + dim(3)])
    if flip:
        kb.generic([x], [flat], [identity_map(4), into], [PARALLEL] * 4, lambda b, a: [_as_unsigned(b, a[0])])
    else:
        kb.copy(x, flat, into)
    return padded, hp, wp


def _transpose_by_tiles(kb, c: SSAValue, out: SSAValue, images: int, pixels: int, channels: int) -> None:
    """out[n, ch, p] = c[n, p, ch] for tiles of up to 64 pixels: a tile's rows of c stay in L1
    while each channel's run of the tile is written out whole (a 3136 x 64 byte transpose,
    row by row: ~0.11 ms; by tiles ~0.13 ms less for the conv that does it)."""
    tile = next(t for t in range(min(64, pixels), 0, -1) if pixels % t == 0)
    blocks = pixels // tile
    kb.generic([reshape_view(kb.builder, c, [images, blocks, tile, channels])],
               [reshape_view(kb.builder, out, [images, channels, blocks, tile])],
               [affine_map(4, [dim(0), dim(1), dim(3), dim(2)]), affine_map(4, [dim(0), dim(2), dim(1), dim(3)])],
               [PARALLEL] * 4, lambda b, a: [a[0]])


def _y_layout(op) -> str:
    layout = op.attributes.get("dlc.y_layout")
    return layout.data if isinstance(layout, StringAttr) else _layout(op)


def _layout(op) -> str:
    layout = op.attributes.get("dlc.layout")
    return layout.data if isinstance(layout, StringAttr) else "NCHW"


def _nchw_patches(kb, op, x, w_shape, y_shape, zero: int, signed: bool) -> SSAValue:
    """patches[oh, ow, c, i, j] = padded[0, c, oh*sh + i*dh, ow*sw + j*dw] ([pixels, C*KH*KW])."""
    x_shape = x.type.get_shape()
    window = window_of(op, x_shape[2:], list(w_shape[2:]), y_shape[2:])
    padded = _padded_with(kb, x, window, zero)
    channels, (kh, kw), (oh, ow) = x_shape[1], w_shape[2:], y_shape[2:]
    patches = kb.scratch(MemRefType(x.type.element_type, [oh * ow, channels * kh * kw]))
    taps = window.taps([dim(0), dim(1)], [dim(3), dim(4)])
    kb.generic([padded], [reshape_view(kb.builder, patches, [oh, ow, channels, kh, kw])],
               [affine_map(5, [cst(0), dim(2), *taps]), identity_map(5)], [PARALLEL] * 5,
               lambda b, a: [_as_unsigned(b, a[0]) if signed else a[0]])
    return patches


def _nhwc_patches(kb, op, x, w_shape, y_shape, zero: int, signed: bool) -> SSAValue:
    """The GEMM's A for an NHWC conv: [pixels, KH*KW*C] patches, or x itself (any shape whose
    last dimension is C: the GEMM reads it as rows C bytes apart) for a 1x1 stride-1 conv."""
    n, h, w_, channels = x.type.get_shape()
    _, kh, kw, _ = w_shape
    _, oh, ow, _ = y_shape
    window = window_of(op, [h, w_], [kh, kw], [oh, ow])
    (sh, sw), (dh, dw) = window.strides, window.dilations
    if (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and (oh, ow) == (h, w_) and not signed:
        return x
    padded, hp, wp = _padded_nhwc(kb, x, window, zero)
    element = x.type.element_type
    patches = kb.scratch(MemRefType(element, [n * oh * ow, kh * kw * channels]))
    flat = reshape_view(kb.builder, padded, [n * hp * wp * channels])

    def body(b, a):
        return [_as_unsigned(b, a[0]) if signed else a[0]]

    if sw == 1 and dw == 1:  # the KW taps of a kernel row are KW*C contiguous bytes
        run = kw * channels
        source = affine_map(5, [dim(0) * (hp * wp * channels) + (dim(1) * sh + dim(3) * dh) * (wp * channels)
                                + dim(2) * channels + dim(4)])
        kb.generic([flat], [reshape_view(kb.builder, patches, [n, oh, ow, kh, run])],
                   [source, identity_map(5)], [PARALLEL] * 5, body)
    else:
        source = affine_map(6, [dim(0) * (hp * wp * channels) + (dim(1) * sh + dim(3) * dh) * (wp * channels)
                                + (dim(2) * sw + dim(4) * dw) * channels + dim(5)])
        kb.generic([flat], [reshape_view(kb.builder, patches, [n, oh, ow, kh, kw, channels])],
                   [source, identity_map(6)], [PARALLEL] * 6, body)
    return patches


@lowers("QLinearConv")
def lower_qlinear_conv(kb, op, ins, outs) -> None:
    x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = ins[:8]
    bias = ins[8] if len(ins) > 8 else None
    out = outs[0]
    shape = out.type.get_shape()
    _check_scale_size(op, w_scale, shape[3] if _y_layout(op) == NHWC else shape[1], "w_scale")
    requant = _multipliers(op)
    kb.epilogue = None
    if _layout(op) == NHWC and op.attr("group", 1) != 1 and w.type.get_shape()[0] == 1:  # [1, KH, KW, C]
        _depthwise_nhwc(kb, op, x, w, out, requant)
        return
    reason = "the scales or y's zero point are not constant" if requant is None else \
        _integer_conv(kb, op, x, w, bias, out, requant)
    if reason is None:
        return
    acc = _conv_integer(kb, op, x, x_zero, w, w_zero, bias, kb.scratch(MemRefType(i32, shape)),
                        indices=(0, 3, 5, 8), reason=reason)
    rank = len(shape)
    scales = [(x_scale, _scale_map(op, x_scale, rank, 1, "x_scale")),
              (w_scale, _scale_map(op, w_scale, rank, 1, "w_scale"))]
    requantize(kb, op, acc, scales, y_scale, y_zero, out)
