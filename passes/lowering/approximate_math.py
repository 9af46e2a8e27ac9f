"""`approximate-math`: f32 `math.exp`, `math.tanh` and `math.erf` as branch-free arith sequences,
and the sigmoid 1 / (1 + exp(-x)) as one shorter sequence.

LLVM turns these into scalar libm calls even in a vectorised loop; range reduction plus
Cephes-style minimax polynomials (fused multiply-adds) vectorise and stay within 1.4 ulp of
the exact result, with C99 Annex F special values: inf, NaN, -0, denormal exp. A sigmoid
(elementwise.py's Sigmoid, a SiLU's gate) needs less of exp: its own range (`sigmoid`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, math
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, f32, i32
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    RewritePattern,
    op_type_rewrite_pattern,
)

# exp: e^x = 2^n * e^r, n = roundeven(x / ln2), |r| <= ln2/2, r = x - n*(LN2_HI + LN2_LO) by two
# fmas (the first is exact: cancellation); e^r - 1 - r = r^2 * P(r) (Cephes expf).
LOG2E = 1.44269504
LN2_HI = 0.693145751953125
LN2_LO = 1.4286068e-06
EXP_POLY = (1.98756915e-4, 1.39819995e-3, 8.33345191e-3, 4.16657959e-2, 1.66666655e-1,
            5.00000012e-1)  # fmt: skip
# Below -104, e^x < 2^-150 rounds to 0; above 88.8, past ln(FLT_MAX) = 88.72, it overflows to
# inf. Clamping there keeps n in [-150, 128] so the integer exponent arithmetic never wraps.
EXP_MIN, EXP_MAX = -104.0, 88.8

# sigmoid: 1 / (1 + e^-x) with e^-x = 2^n e^-r, n = roundeven(-x log2 e) read off the low bits
# of -x log2 e + ROUND_MAGIC (one fma instead of a multiply, a round and a conversion), r in two
# fmas as exp's, e^-r by SIGMOID_POLY (a minimax fit of e^s's relative error on |s| <= ln2/2,
# 1.9e-9 before rounding the coefficients to f32, 1.7e-8 after; Cephes' form above gets 1.2e-8 with
# one fma more), and 2^n added to its exponent field. Above SIGMOID_HIGH e^-x < 2^-125 and the
# sum rounds to 1 anyway, so x is clamped there; below SIGMOID_LOW the result (< 6.1e-39) is 0:
# n <= 127 between the two, so 2^n never leaves the exponent field (exp's two-step scaling
# costs five operations more).
ROUND_MAGIC = 12582912.0  # 1.5 * 2^23: adding it rounds |v| < 2^22 to an integer, in its low bits
SIGMOID_POLY = (0.00138368353, -0.00837481581, 0.0416682251, -0.166664198, 0.499999911, -1.0,
                1.0)  # fmt: skip  # e^-r, highest degree first
SIGMOID_HIGH, SIGMOID_LOW = 87.0, -88.0

# tanh: x + x^3 * P(x^2) below 0.625 (Cephes tanhf), else 1 - 2 / (e^{2|x|} + 1).
TANH_SMALL = 0.625
TANH_POLY = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
             -3.33332819422e-1)  # fmt: skip

# erf: x + x * Q(x^2) below 0.9; above, 1 - e^{-x^2} * R(|x| - 2.45) with R ~ erfcx = erfc * e^{x^2}.
# Minimax (Lawson) fits: Q in relative error on [0, 0.9], R in absolute error of erfc on [0.9, 4].
ERF_SMALL = 0.9
ERF_Q = (8.538832e-05, -0.00081819255, 0.005204436, -0.026860753, 0.112837195, -0.37612635,
         0.12837917)  # fmt: skip
ERF_R_CENTER = 2.45
ERF_R = (0.000134687, 0.00032151458, 0.0007205301, -0.0006568365, 0.0024388419, -0.008712684,
         0.026134197, -0.07689577, 0.21458906)  # fmt: skip
# erfc(x) < 2^-25 from x = 3.92 on, so erf rounds to exactly 1.0 in f32 there.
ERF_SATURATE = 4.0


def _f32(value: float) -> float:
    """`value` rounded to f32, so the printed IR shows the constant the machine uses."""
    return struct.unpack("f", struct.pack("f", value))[0]


class _Builder:
    """Appends scalar f32/i32 arith and math ops to `ops`; each method returns the new value."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []

    def _add(self, op: Operation) -> SSAValue:
        self.ops.append(op)
        return op.results[0]

    def const(self, value: float) -> SSAValue:
        return self._add(arith.ConstantOp(FloatAttr(_f32(value), f32)))

    def int(self, value: int) -> SSAValue:
        return self._add(arith.ConstantOp(IntegerAttr(value, i32)))

    def add(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self._add(arith.AddfOp(a, b))

    def sub(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self._add(arith.SubfOp(a, b))

    def mul(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self._add(arith.MulfOp(a, b))

    def div(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self._add(arith.DivfOp(a, b))

    def neg(self, a: SSAValue) -> SSAValue:
        return self._add(arith.NegfOp(a))

    def fma(self, a: SSAValue, b: SSAValue, c: SSAValue) -> SSAValue:
        # An intrinsic call: never reassociated, unlike fadd/fmul with `reassoc` flags.
        return self._add(math.FmaOp(a, b, c))

    def abs(self, a: SSAValue) -> SSAValue:
        return self._add(math.AbsFOp(a))

    def copysign(self, magnitude: SSAValue, sign: SSAValue) -> SSAValue:
        return self._add(math.CopySignOp(magnitude, sign))

    def roundeven(self, a: SSAValue) -> SSAValue:
        return self._add(math.RoundEvenOp(a))

    def cmp(self, predicate: str, a: SSAValue, b: SSAValue) -> SSAValue:
        return self._add(arith.CmpfOp(a, b, predicate))

    def select(self, condition: SSAValue, a: SSAValue, b: SSAValue) -> SSAValue:
        return self._add(arith.SelectOp(condition, a, b))

    # Compare + select is one x86 maxps/minps, which returns the bound for a NaN.
    def max(self, x: SSAValue, bound: float) -> SSAValue:
        c = self.const(bound)
        return self.select(self.cmp("ogt", x, c), x, c)

    def min(self, x: SSAValue, bound: float) -> SSAValue:
        c = self.const(bound)
        return self.select(self.cmp("olt", x, c), x, c)

    def poly(self, x: SSAValue, coefficients: Sequence[float]) -> SSAValue:
        """Horner's rule, highest-degree coefficient first."""
        acc = self.const(coefficients[0])
        for c in coefficients[1:]:
            acc = self.fma(acc, x, self.const(c))
        return acc

    def int_op(self, op: type[Operation], a: SSAValue, b: SSAValue | int) -> SSAValue:
        return self._add(op(a, self.int(b) if isinstance(b, int) else b))

    def bits(self, a: SSAValue) -> SSAValue:
        return self._add(arith.BitcastOp(a, i32))

    def float(self, a: SSAValue) -> SSAValue:
        return self._add(arith.BitcastOp(a, f32))

    def to_int(self, a: SSAValue) -> SSAValue:
        return self._add(arith.FPToSIOp(a, i32))


def exp(b: _Builder, x: SSAValue) -> SSAValue:
    """e^x, any finite or infinite x (a NaN gives 0: callers that may see one select it)."""
    x = b.min(b.max(x, EXP_MIN), EXP_MAX)
    n = b.roundeven(b.mul(x, b.const(LOG2E)))
    r = b.fma(n, b.const(-LN2_HI), x)
    r = b.fma(n, b.const(-LN2_LO), r)
    p = b.add(b.fma(b.poly(r, EXP_POLY), b.mul(r, r), r), b.const(1.0))
    # 2^n as 2^k1 * 2^k2 with k1, k2 in [-75, 64]: both are normal floats even when 2^n is not.
    # Adding k1 to p's exponent field is exact; the one multiply rounds a denormal result once.
    k = b.to_int(n)
    k1 = b.int_op(arith.ShRSIOp, k, 1)
    k2 = b.int_op(arith.SubiOp, k, k1)
    scaled = b.float(b.int_op(arith.AddiOp, b.bits(p), b.int_op(arith.ShLIOp, k1, 23)))
    return b.mul(scaled, b.float(b.int_op(arith.ShLIOp, b.int_op(arith.AddiOp, k2, 127), 23)))


def sigmoid(b: _Builder, x: SSAValue) -> SSAValue:
    """1 / (1 + e^-x): NaN stays NaN, sigmoid(+inf) = 1, sigmoid(-inf) = 0; within 2.5 ulp of
    the exact value where that is normal, and 0.8 ulp of 1 everywhere (the constants above).

    17 vector operations against 27 for 1 / (1 + exp(-x)) with `exp_keeping_nan`: EfficientNet
    spends a fifth of its time in SiLU's sigmoids (Mul(x, Sigmoid(x)), 6.2M of them a run).
    """
    # Clamps with x's NaN kept: the compare is false for a NaN, which then flows through.
    high = b.const(SIGMOID_HIGH)
    t = b.select(b.cmp("ogt", x, high), high, x)
    magic = b.const(ROUND_MAGIC)
    shifted = b.fma(t, b.const(-LOG2E), magic)
    n = b.sub(shifted, magic)
    r = b.fma(n, b.const(LN2_HI), t)  # -x - n ln2 = -r, exact as exp's
    r = b.fma(n, b.const(LN2_LO), r)
    p = b.poly(r, SIGMOID_POLY)
    # n's two's complement sits in `shifted`'s low 22 bits: shifted left 23 it is n << 23.
    scaled = b.float(b.int_op(arith.AddiOp, b.bits(p), b.int_op(arith.ShLIOp, b.bits(shifted), 23)))
    one = b.const(1.0)
    value = b.div(one, b.add(one, scaled))
    return b.select(b.cmp("olt", x, b.const(SIGMOID_LOW)), b.const(0.0), value)


def tanh(b: _Builder, x: SSAValue) -> SSAValue:
    ax = b.abs(x)
    z = b.mul(x, x)
    small = b.fma(b.mul(z, x), b.poly(z, TANH_POLY), x)
    # e^{2|x|} overflows to inf past 44.4, which makes this exactly 1.
    e = exp(b, b.add(ax, ax))
    large = b.sub(b.const(1.0), b.div(b.const(2.0), b.add(e, b.const(1.0))))
    return _odd(b, x, ax, TANH_SMALL, small, large)


def erf(b: _Builder, x: SSAValue) -> SSAValue:
    ax = b.abs(x)
    small = b.fma(x, b.poly(b.mul(x, x), ERF_Q), x)  # x + x*Q, not x*(1+Q): one rounding less
    # The f32 rounding of t*t costs little: erfc shrinks far faster than t^2's error grows.
    t = b.min(ax, ERF_SATURATE)  # also inf and NaN
    minus_e = b.neg(exp(b, b.neg(b.mul(t, t))))
    large = b.fma(minus_e, b.poly(b.sub(t, b.const(ERF_R_CENTER)), ERF_R), b.const(1.0))
    return _odd(b, x, ax, ERF_SMALL, small, large)


def _odd(
    b: _Builder, x: SSAValue, ax: SSAValue, threshold: float, small: SSAValue, large: SSAValue
) -> SSAValue:
    """f(x) of an odd f: `small` below `threshold`, else `large` (= f(|x|)), signed as x.
    A NaN fails `oge` and takes `small`, which keeps it NaN; the sign also makes f(-0) = -0,
    which x + x^3*P(x^2) misses when P(0) < 0 (-0 + +0 = +0)."""
    chosen = b.select(b.cmp("oge", ax, b.const(threshold)), large, small)
    return b.copysign(chosen, x)


def exp_keeping_nan(b: _Builder, x: SSAValue) -> SSAValue:
    return b.select(b.cmp("uno", x, x), x, exp(b, x))


def _constant_one(value: SSAValue) -> bool:
    owner = value.owner
    return (isinstance(owner, arith.ConstantOp) and isinstance(owner.value, FloatAttr)
            and owner.value.value.data == 1.0)


def _sigmoid_of(op: arith.DivfOp) -> tuple[SSAValue, list[Operation]] | None:
    """(x, the ops to erase after op) when op is 1 / (1 + exp(-x)) over f32, the exp and the sum
    used only there (linalg_builder's Body.sigmoid writes it so); else None."""
    if op.result.type != f32 or not _constant_one(op.lhs) or not isinstance(op.rhs.owner, arith.AddfOp):
        return None
    add = op.rhs.owner
    if not add.result.has_one_use():
        return None
    for one, other in ((add.lhs, add.rhs), (add.rhs, add.lhs)):
        exp_op = other.owner
        if (_constant_one(one) and isinstance(exp_op, math.ExpOp) and exp_op.result.has_one_use()
                and isinstance(exp_op.operand.owner, arith.NegfOp)):
            neg = exp_op.operand.owner
            return neg.operand, [add, exp_op, *([neg] if neg.result.has_one_use() else [])]
    return None


def _replace_f32(op: Operation, rewriter: PatternRewriter, expand) -> None:
    """Replace `op` by the sequence `expand` builds when it is f32; f64 stays a libm call."""
    if op.results[0].type == f32:
        b = _Builder()
        result = expand(b, op.operands[0])
        rewriter.replace(op, b.ops, [result])


class ApproximateExp(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: math.ExpOp, rewriter: PatternRewriter) -> None:
        _replace_f32(op, rewriter, exp_keeping_nan)


class ApproximateSigmoid(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.DivfOp, rewriter: PatternRewriter) -> None:
        matched = _sigmoid_of(op)
        if matched is None:
            return
        x, dead = matched
        b = _Builder()
        result = sigmoid(b, x)
        rewriter.replace(op, b.ops, [result])
        for used_only_there in dead:  # the sum, then the exp, then the negation
            rewriter.erase(used_only_there)


class ApproximateTanh(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: math.TanhOp, rewriter: PatternRewriter) -> None:
        _replace_f32(op, rewriter, tanh)


class ApproximateErf(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: math.ErfOp, rewriter: PatternRewriter) -> None:
        _replace_f32(op, rewriter, erf)


@dataclass(frozen=True)
class ApproximateMathPass(ModulePass):
    """Replace f32 math.exp/tanh/erf by vectorisable polynomials (<= 1.4 ulp, IEEE specials), and
    f32 sigmoids 1 / (1 + exp(-x)) by `sigmoid` (<= 2.5 ulp)."""

    name = "approximate-math"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        patterns = GreedyRewritePatternApplier(
            [ApproximateExp(), ApproximateTanh(), ApproximateErf()]
        )
        # Each op matched once, as PatternRewriteWalker(apply_recursively=False) would, but
        # only the few math ops visited: the walker's worklist over every op of the loops
        # phase (EfficientNet-B0: 16,000) cost ~0.3 CPU-s to rewrite a few hundred.
        # Sigmoids first: their exps go with them.
        sigmoid_pattern = ApproximateSigmoid()
        for target in [o for o in op.walk() if isinstance(o, arith.DivfOp)]:
            sigmoid_pattern.match_and_rewrite(target, PatternRewriter(target))
        for target in [o for o in op.walk() if isinstance(o, (math.ExpOp, math.TanhOp, math.ErfOp))]:
            patterns.match_and_rewrite(target, PatternRewriter(target))
