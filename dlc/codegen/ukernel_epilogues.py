"""Activations the fp32 GEMM micro-kernel applies to its tile in place, after the tile's store.

SiLU (x * Sigmoid(x), as torch.onnx writes it) and HardSwish (x * clip(x/6 + 1/2, 0, 1), ONNX
HardSwish) after a Conv or Gemm ran as a separate loop over the whole output (EfficientNet-B0's
16->96 1x1 conv at 112x112 wrote 4.8 MB, then read and wrote it again for its SiLU). The tile's
last store writes the values without the activation, and a loop over the tile's rows (a
run-time trip count: the rows a ragged edge tile really holds, each once) reads each row back
from L1, applies the activation and stores it. An earlier prototype that applied SiLU to the
accumulators themselves spilled registers (3x slower); with this exp, both forms ran at the
same speed here (96x12544x16: 0.76-0.79 ms against 0.39 ms without SiLU, thread CPU time),
and the loop keeps the register tile out of the activation's way whatever its size.

The formulas are those of the separate loop: Sigmoid as passes/lowering/approximate_math.py's
`sigmoid` (what its pass makes of 1 / (1 + exp(-x)): the same operations, so a fused and an
unfused SiLU agree bit for bit), HardSwish as elementwise.py's x * max(0, min(1, x/6 + 1/2));
a NaN input gives NaN.
"""

from __future__ import annotations

from llvmlite import ir

from passes.lowering.approximate_math import (
    LN2_HI,
    LN2_LO,
    LOG2E,
    ROUND_MAGIC,
    SIGMOID_HIGH,
    SIGMOID_LOW,
    SIGMOID_POLY,
    _f32,
)

# The activations `apply_in_place` computes (GemmSpec.activation names).
IN_PLACE = ("silu", "hardswish")
# ...of which a transposed C (`c_transposed`: no rows to read back) takes in registers, before
# its store (`in_registers`): HardSwish's five operations a vector need no more registers than
# the tile frees as it is stored. SiLU's exp would spill the tile.
IN_REGISTERS_TRANSPOSED = ("hardswish",)

F32 = ir.FloatType()
I32 = ir.IntType(32)
I64 = ir.IntType(64)


def apply_in_place(emitter, c: ir.Value, ldc: ir.Value, rows: ir.Value, vecs: list) -> None:
    """C[i, vecs] = act(C[i, vecs]) for the tile's rows i in [0, rows), C's row i at c + i*ldc.

    `emitter` is the `_GemmEmitter` building the tile (its builder, loads and stores, with the
    masked last vector of a partial tile); `vecs` are the tile's vectors of one row.
    """
    b, act = emitter.b, emitter.spec.activation
    math = _VectorMath(emitter)

    def row(i: ir.Value) -> None:
        base = emitter._gep(c, b.mul(i, ldc))
        for vec in vecs:
            x = emitter._load(base, vec)
            emitter._store(math.silu(x) if act == "silu" else math.hardswish(x), base, vec)

    emitter._loop(ir.Constant(I64, 0), rows, 1, row)


def in_registers(emitter, x: ir.Value) -> ir.Value:
    """`emitter.spec.activation` (one of IN_REGISTERS_TRANSPOSED) of one tile vector, op for op
    as `apply_in_place` computes it."""
    assert emitter.spec.activation in IN_REGISTERS_TRANSPOSED
    return _VectorMath(emitter).hardswish(x)


class _VectorMath:
    """Vector f32 formulas on the emitter's builder, op for op as the scalar loop computes them."""

    def __init__(self, emitter) -> None:
        self.e, self.b = emitter, emitter.b
        self.vw = emitter.vw
        self.vec = emitter.vec
        self.ivec = ir.VectorType(I32, self.vw)

    def const(self, value: float) -> ir.Constant:
        return self.e._splat_const(_f32(value))

    def iconst(self, value: int) -> ir.Constant:
        return ir.Constant(self.ivec, [value] * self.vw)

    def _call(self, name: str, *args: ir.Value) -> ir.Value:
        fn = self.e._intrinsic(f"llvm.{name}.v{self.vw}f32", self.vec, [self.vec] * len(args))
        return self.b.call(fn, list(args))

    def fma(self, a, b, c):
        return self._call("fma", a, b, c)

    def sigmoid(self, x: ir.Value) -> ir.Value:
        """approximate_math.sigmoid, op for op: x clamped above at SIGMOID_HIGH (a NaN kept),
        n = roundeven(-x log2 e) in ROUND_MAGIC's low bits, r in two fmas, e^-r = SIGMOID_POLY(r),
        2^n added to its exponent field, 1 / (1 + e^-x), and 0 below SIGMOID_LOW."""
        b = self.b
        high = self.const(SIGMOID_HIGH)
        t = b.select(b.fcmp_ordered(">", x, high), high, x)
        magic = self.const(ROUND_MAGIC)
        shifted = self.fma(t, self.const(-LOG2E), magic)
        n = b.fsub(shifted, magic)
        r = self.fma(n, self.const(LN2_HI), t)
        r = self.fma(n, self.const(LN2_LO), r)
        poly = self.const(SIGMOID_POLY[0])
        for coefficient in SIGMOID_POLY[1:]:
            poly = self.fma(poly, r, self.const(coefficient))
        exponent = b.shl(b.bitcast(shifted, self.ivec), self.iconst(23))
        scaled = b.bitcast(b.add(b.bitcast(poly, self.ivec), exponent), self.vec)
        one = self.const(1.0)
        value = b.fdiv(one, b.fadd(one, scaled))
        return b.select(b.fcmp_ordered("<", x, self.const(SIGMOID_LOW)), self.const(0.0), value)

    def silu(self, x: ir.Value) -> ir.Value:
        return self.b.fmul(x, self.sigmoid(x))

    def hardswish(self, x: ir.Value) -> ir.Value:
        """x * max(0, min(1, x/6 + 1/2)), the clamps NaN-propagating (x NaN: the result is)."""
        b = self.b
        t = b.fadd(b.fmul(self.const(1 / 6), x), self.const(0.5))
        zero, one = self.const(0.0), self.const(1.0)
        t = self._call("minimum", one, t)
        t = self._call("maximum", zero, t)
        return b.fmul(x, t)
