"""Elementwise ONNX arithmetic, math and activation operators -> one linalg.generic each.

Mirrors the ONNX operator specs at opset 21 (https://onnx.ai/onnx/operators/) with numpy
broadcasting. Where the spec leaves NaN, signed zero or rounding open, the formulas follow
onnxruntime's CPU kernels (noted per op), since that is what users compare against. Integer
Div and Mod check their divisors at run time (utils/runtime_checks.py): a zero divisor, or
the minimum integer divided by -1, fails the run with the node's name instead of a SIGFPE.
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable
from functools import reduce

import numpy as np
from xdsl.dialects import math
from xdsl.dialects.builtin import Float32Type, Float64Type, IntegerType, Signedness, f32, f64
from xdsl.ir import Attribute, SSAValue

from dialects.arith_remf import RemFOp
from dialects.diagnostics import UnsupportedError
from dialects.types import is_float, numpy_dtype
from passes.lowering.rules import lowers
from passes.lowering.utils.linalg_builder import Body
from passes.lowering.utils.runtime_checks import divisor_check, status_word

Formula = Callable[[Body, SSAValue, object], SSAValue]  # (body, x, onnx op) -> y

# Element kinds the rules lower, named as error messages show them. Not float16: the emitter
# has no half-precision libm. Unsigned integers only where the rule picks unsigned ops.
FLOAT, INT, UINT, BOOL = "float32/64", "int8-64", "uint8-64", "bool"


def element_kind(type: Attribute) -> str | None:
    if isinstance(type, Float32Type | Float64Type):
        return FLOAT
    if isinstance(type, IntegerType):
        if type.signedness.data == Signedness.UNSIGNED:
            return UINT
        if type.signedness.data == Signedness.SIGNLESS:
            return BOOL if type.width.data == 1 else INT
    return None


def is_unsigned(value: SSAValue) -> bool:
    return element_kind(value.type) == UINT


def require_kinds(op, values: list[SSAValue | None], kinds: tuple[str, ...]) -> None:
    """Reject element types the rule does not lower, naming the node and the type found."""
    for value in values:
        if value is None:
            continue
        element = value.type.element_type
        if element_kind(element) not in kinds:
            raise UnsupportedError(f"{op.describe()}: {element} tensors are not supported on cpu "
                                   f"(expected {' or '.join(kinds)} elements)")


# --- Unary operators -------------------------------------------------------------------------

_MATH = {  # float-only ONNX ops that are one math-dialect op (intrinsic or libm in the emitter)
    "Exp": math.ExpOp, "Log": math.LogOp, "Sqrt": math.SqrtOp, "Tanh": math.TanhOp,
    "Floor": math.FloorOp, "Ceil": math.CeilOp, "Round": math.RoundEvenOp,  # ONNX: half to even
    "Sin": math.SinOp, "Cos": math.CosOp, "Tan": math.TanOp,
    "Asin": math.AsinOp, "Acos": math.AcosOp, "Atan": math.AtanOp,
    "Sinh": math.SinhOp, "Cosh": math.CoshOp,
    "Asinh": math.AsinhOp, "Acosh": math.AcoshOp, "Atanh": math.AtanhOp, "Erf": math.ErfOp,
}  # fmt: skip


def _relu(b: Body, x, op):
    # select(x < 0, 0, x) rather than maximum: keeps NaN and -0 as onnxruntime does.
    zero = b.const(0)
    return b.select(b.compare("lt", x, zero), zero, x)


def _sign(b: Body, x, op):
    zero = b.const(0)
    # Zero (either sign) maps to +0 and NaN to NaN, as in onnxruntime.
    rest = b.select(b.is_nan(x), x, zero) if b.float else zero
    return b.select(b.compare("gt", x, zero), b.const(1),
                    b.select(b.compare("lt", x, zero), b.const(-1), rest))


def _abs(b: Body, x, op):
    return b.math(math.AbsFOp if b.float else math.AbsIOp, x)


def _leaky(b: Body, x, slope):
    return b.select(b.compare("lt", x, b.const(0)), b.mul(slope, x), x)


def _hard_sigmoid(b: Body, x, alpha: float, beta: float):
    return b.max(b.const(0.0), b.min(b.const(1.0), b.add(b.mul(b.const(alpha), x), b.const(beta))))


def _expm1_like(b: Body, x):
    # exp(x) - 1 rather than expm1: onnxruntime's Elu/Selu/Celu use exp and subtract.
    return b.sub(b.exp(x), b.const(1.0))


def _elu(b: Body, x, op):
    alpha = b.const(op.attr("alpha", 1.0))
    return b.select(b.compare("ge", x, b.const(0.0)), x, b.mul(alpha, _expm1_like(b, x)))


def _selu(b: Body, x, op):
    alpha = b.const(op.attr("alpha", 1.67326319217681884765625))
    gamma = b.const(op.attr("gamma", 1.05070102214813232421875))
    negative = b.mul(alpha, _expm1_like(b, x))
    return b.mul(gamma, b.select(b.compare("gt", x, b.const(0.0)), x, negative))


def _celu(b: Body, x, op):
    alpha = b.const(op.attr("alpha", 1.0))
    negative = b.mul(alpha, _expm1_like(b, b.div(x, alpha)))
    return b.add(b.max(b.const(0.0), x), b.min(b.const(0.0), negative))


def _softplus(b: Body, x):
    # log(1 + exp(x)) overflows for x > 88; log1p(exp(-|x|)) + max(x, 0) does not.
    zero = b.const(0.0)
    positive = b.compare("gt", x, zero)
    tail = b.math(math.Log1pOp, b.exp(b.select(positive, b.neg(x), x)))
    return b.select(positive, b.add(x, tail), tail)


def _softsign(b: Body, x, op):
    return b.div(x, b.add(b.const(1.0), _abs(b, x, op)))


def _gelu(b: Body, x, op):
    approximate = op.attr("approximate", "none")
    if approximate == "tanh":
        cubic = b.mul(b.const(0.044715), b.mul(x, b.mul(x, x)))
        inner = b.mul(b.const(pymath.sqrt(2 / pymath.pi)), b.add(x, cubic))
        gate = b.tanh(inner)
    elif approximate == "none":
        gate = b.math(math.ErfOp, b.mul(x, b.const(pymath.sqrt(0.5))))
    else:
        raise UnsupportedError(f"{op.describe()}: approximate={approximate!r} is not an ONNX value "
                               "(expected 'none' or 'tanh')")
    half_x = b.mul(b.const(0.5), x)
    return b.mul(half_x, b.add(b.const(1.0), gate))


def _shrink(b: Body, x, op):
    lambd, bias = op.attr("lambd", 0.5), op.attr("bias", 0.0)
    # onnxruntime compares and subtracts in float even for integer tensors, then truncates.
    f = b if b.float else b.on(f32)
    xf = b.cast(x, f.type)
    y = f.select(f.compare("lt", xf, f.const(-lambd)), f.add(xf, f.const(bias)),
                 f.select(f.compare("gt", xf, f.const(lambd)), f.sub(xf, f.const(bias)),
                          f.const(0.0)))
    return b.cast(y, b.type)


def _math_op(cls) -> Formula:
    return lambda b, x, op: b.math(cls, x)


_NUMERIC_UNARY: dict[str, Formula] = {  # float and integer tensors
    "Abs": _abs,
    "Neg": lambda b, x, op: b.neg(x),
    "Sign": _sign,
    "Relu": _relu,
    "Shrink": _shrink,
}

_FLOAT_UNARY: dict[str, Formula] = {
    **{name: _math_op(cls) for name, cls in _MATH.items()},
    "Reciprocal": lambda b, x, op: b.div(b.const(1.0), x),
    "Sigmoid": lambda b, x, op: b.sigmoid(x),
    "LeakyRelu": lambda b, x, op: _leaky(b, x, b.const(op.attr("alpha", 0.01))),
    "Elu": _elu,
    "Selu": _selu,
    "Celu": _celu,
    "HardSigmoid": lambda b, x, op: _hard_sigmoid(b, x, op.attr("alpha", 0.2), op.attr("beta", 0.5)),
    "HardSwish": lambda b, x, op: b.mul(x, _hard_sigmoid(b, x, 1 / 6, 0.5)),
    "Softplus": lambda b, x, op: _softplus(b, x),
    "Softsign": _softsign,
    "Mish": lambda b, x, op: b.mul(x, b.tanh(_softplus(b, x))),
    "Gelu": _gelu,
    "ThresholdedRelu": lambda b, x, op: b.select(b.compare("gt", x, b.const(op.attr("alpha", 1.0))),
                                                 x, b.const(0.0)),
}


@lowers(*_NUMERIC_UNARY, *_FLOAT_UNARY)
def lower_unary(kb, op, ins, outs) -> None:
    numeric = op.onnx_type in _NUMERIC_UNARY
    require_kinds(op, ins[:1], (FLOAT, INT) if numeric else (FLOAT,))
    formula = (_NUMERIC_UNARY if numeric else _FLOAT_UNARY)[op.onnx_type]
    kb.elementwise(ins[:1], outs[0], lambda b, a: [formula(b, a[0], op)])


# --- Binary and variadic operators -----------------------------------------------------------


def _pow(b: Body, x, y):
    if x.type == y.type and b.float:
        return b.math(math.PowFOp, x, y)
    # Mixed or integer types: onnxruntime calls std::pow, which promotes to double.
    wide = b.on(f64)
    return b.cast(wide.math(math.PowFOp, b.cast(x, f64), b.cast(y, f64)), b.type)


def _python_mod(b: Body, x, y):
    """Integer remainder with the divisor's sign (ONNX Mod, fmod=0, like Python's %)."""
    r = b.remsi(x, y)
    zero = b.const(0)
    signs_differ = b.xor(b.compare("lt", r, zero), b.compare("lt", y, zero))
    needs_fix = b.and_(b.compare("ne", r, zero), signs_differ)
    return b.select(needs_fix, b.add(r, y), r)


def _float_fmod(b: Body, x, y):
    """C fmod: the remainder with the dividend's sign, exact (ONNX Mod, fmod=1)."""
    return b.math(RemFOp, x, y)


def _float_python_mod(b: Body, x, y):
    """The remainder with the divisor's sign, as numpy.mod and onnxruntime compute float Mod with
    fmod=0: fmod, plus y where the signs differ (-3 mod inf is inf); a zero takes y's sign."""
    r = _float_fmod(b, x, y)
    zero = b.const(0.0)
    y_negative = b.compare("lt", y, zero)
    signs_differ = b.xor(b.compare("lt", r, zero), y_negative)
    r = b.select(b.and_(b.compare("ne", r, zero), signs_differ), b.add(r, y), r)
    return b.select(b.compare("eq", r, zero), b.select(y_negative, b.const(-0.0), zero), r)


def _div(b: Body, x, y):
    # Integer division truncates toward zero, as C does.
    return b.divui(x, y) if is_unsigned(x) else b.div(x, y)


def _max(b: Body, x, y):
    # Floats: NaN-propagating maximum, as onnxruntime's Max.
    return b.select(b.compare("lt", x, y), y, x) if is_unsigned(x) else b.max(x, y)


def _min(b: Body, x, y):
    return b.select(b.compare("lt", y, x), y, x) if is_unsigned(x) else b.min(x, y)


def _unsigned_mod(b: Body, x, y):
    # x - (x / y) * y: xDSL's arith.remui rejects unsigned (non-signless) operand types.
    return b.sub(x, b.mul(b.divui(x, y), y))


_BINARY = {  # (kinds allowed, formula(b, x, y)); wrapping arithmetic is sign-agnostic
    "Add": ((FLOAT, INT, UINT), Body.add),
    "Sub": ((FLOAT, INT, UINT), Body.sub),
    "Mul": ((FLOAT, INT, UINT), Body.mul),
    "Div": ((FLOAT, INT, UINT), _div),
    "Pow": ((FLOAT, INT), _pow),
    "PRelu": ((FLOAT, INT), _leaky),
}


def _checked_division(kb, op, ins, outs, formula) -> None:
    """Integer formula(x, y) of a quotient or remainder, with y checked (divisor_check).

    Not inlinable into a fused loop (the check needs the kernel's status word): integer
    division is rare outside shape arithmetic, which the importer folds.
    """
    status = status_word(kb)
    signed = element_kind(ins[0].type.element_type) != UINT

    def body(b: Body, args):
        x, y = args
        return [formula(b, x, divisor_check(op, b, status, x, y, signed))]

    kb.elementwise(ins, outs[0], body)


@lowers(*_BINARY)
def lower_binary(kb, op, ins, outs) -> None:
    kinds, formula = _BINARY[op.onnx_type]
    require_kinds(op, ins, kinds)
    if op.onnx_type == "Div" and not is_float(outs[0].type.element_type):
        _checked_division(kb, op, ins, outs, formula)
        return
    kb.elementwise(ins, outs[0], lambda b, a: [formula(b, a[0], a[1])])


@lowers("Mod")
def lower_mod(kb, op, ins, outs) -> None:
    require_kinds(op, ins, (FLOAT, INT, UINT))
    if is_float(outs[0].type.element_type):  # no check: a zero divisor gives NaN, no trap
        formula = _float_fmod if op.attr("fmod", 0) else _float_python_mod
        kb.elementwise(ins, outs[0], lambda b, a: [formula(b, a[0], a[1])])
        return
    if element_kind(ins[0].type.element_type) == UINT:  # both sign rules agree without signs
        formula = _unsigned_mod
    else:
        formula = Body.remsi if op.attr("fmod", 0) else _python_mod
    _checked_division(kb, op, ins, outs, formula)


_VARIADIC = {  # (kinds allowed, pairwise formula)
    "Sum": ((FLOAT,), Body.add),
    "Mean": ((FLOAT,), Body.add),
    "Max": ((FLOAT, INT, UINT), _max),
    "Min": ((FLOAT, INT, UINT), _min),
}


@lowers(*_VARIADIC)
def lower_variadic(kb, op, ins, outs) -> None:
    kinds, pairwise = _VARIADIC[op.onnx_type]
    require_kinds(op, ins, kinds)

    def body(b: Body, args):
        total = reduce(lambda acc, v: pairwise(b, acc, v), args[1:], args[0])
        if op.onnx_type == "Mean":
            total = b.div(total, b.const(len(args)))
        return [total]

    kb.elementwise(ins, outs[0], body)


@lowers("Clip")
def lower_clip(kb, op, ins, outs) -> None:
    """y = min(max(x, lo), hi) with onnxruntime's comparisons: a NaN x stays NaN, a NaN bound
    is ignored, hi wins when lo > hi, and an absent bound is the type's finite extreme
    (so +-inf become +-FLT_MAX, as onnxruntime's numeric_limits bounds make them)."""
    require_kinds(op, ins, (FLOAT, INT, UINT))
    bounds = [v for v in ins[1:3] if v is not None]
    has_lo, has_hi = len(ins) > 1 and ins[1] is not None, len(ins) > 2 and ins[2] is not None
    element = outs[0].type.element_type
    info = np.finfo(numpy_dtype(element)) if is_float(element) else np.iinfo(numpy_dtype(element))

    def body(b: Body, args):
        x, *given = args
        lo = given.pop(0) if has_lo else b.const(info.min)
        hi = given.pop(0) if has_hi else b.const(info.max)
        x = b.select(b.compare("lt", x, lo), lo, x)
        return [b.select(b.compare("lt", hi, x), hi, x)]

    kb.elementwise([ins[0], *bounds], outs[0], body)
