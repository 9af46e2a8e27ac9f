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

The formulas are those of the separate loop: Sigmoid as 1 / (1 + exp(-x)) with
passes/lowering/approximate_math.py's exp (same range reduction and polynomial), HardSwish
as elementwise.py's x * max(0, min(1, x/6 + 1/2)); a NaN input gives NaN.
"""

from __future__ import annotations

from llvmlite import ir

from passes.lowering.approximate_math import EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2E, _f32

# The activations `apply_in_place` computes (GemmSpec.activation names).
IN_PLACE = ("silu", "hardswish")

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

    def exp(self, x: ir.Value) -> ir.Value:
        """approximate_math.exp: clamp (a NaN becomes EXP_MIN), n = roundeven(x log2 e),
        r = x - n ln2 in two fmas, e^r = 1 + r + r^2 P(r), times 2^n as 2^k1 * 2^k2."""
        b = self.b
        low, high = self.const(EXP_MIN), self.const(EXP_MAX)
        x = b.select(b.fcmp_ordered(">", x, low), x, low)
        x = b.select(b.fcmp_ordered("<", x, high), x, high)
        n = self._call("roundeven", b.fmul(x, self.const(LOG2E)))
        r = self.fma(n, self.const(-LN2_HI), x)
        r = self.fma(n, self.const(-LN2_LO), r)
        poly = self.const(EXP_POLY[0])
        for coefficient in EXP_POLY[1:]:
            poly = self.fma(poly, r, self.const(coefficient))
        p = b.fadd(self.fma(poly, b.fmul(r, r), r), self.const(1.0))
        k = b.fptosi(n, self.ivec)
        k1 = b.ashr(k, self.iconst(1))
        k2 = b.sub(k, k1)
        scaled = b.bitcast(b.add(b.bitcast(p, self.ivec), b.shl(k1, self.iconst(23))), self.vec)
        return b.fmul(scaled, b.bitcast(b.shl(b.add(k2, self.iconst(127)), self.iconst(23)), self.vec))

    def silu(self, x: ir.Value) -> ir.Value:
        b, one = self.b, self.const(1.0)
        sigmoid = b.fdiv(one, b.fadd(one, self.exp(b.fneg(x))))
        return b.fmul(x, sigmoid)

    def hardswish(self, x: ir.Value) -> ir.Value:
        """x * max(0, min(1, x/6 + 1/2)), the clamps NaN-propagating (x NaN: the result is)."""
        b = self.b
        t = b.fadd(b.fmul(self.const(1 / 6), x), self.const(0.5))
        zero, one = self.const(0.0), self.const(1.0)
        t = self._call("minimum", one, t)
        t = self._call("maximum", zero, t)
        return b.fmul(x, t)
