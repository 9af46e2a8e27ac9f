"""Random valid ONNX graphs for the fuzzer, grown operator by operator as NNSmith does (Liu et
al., ASPLOS 2023): every value's shape is tracked (so each node is valid by construction) and
so is a conservative value range (so Log/Sqrt/Div/Exp see well-conditioned inputs, and
discontinuous operators only see values computed without rounding); `validate` checks each
model with onnx.checker and strict shape inference against the tracked shapes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21  # dlc's canonical opset: no version conversion in the way of what is tested
FLOAT = TensorProto.FLOAT
MAX_ELEMENTS = 4096  # every tensor stays small, so a compile takes well under a second
class GeneratorError(Exception):
    """The generator built a model that onnx rejects or whose shapes it mis-tracked (a fuzzer bug)."""


@dataclass
class Value:
    name: str
    shape: tuple[int, ...]
    dtype: int = FLOAT
    lo: float = -2.0
    hi: float = 2.0
    # Computed without rounding from the graph inputs (views, Relu, Max, ...): dlc and onnxruntime
    # agree on it bit for bit, so discontinuous operators may consume it.
    exact: bool = True

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def magnitude(self) -> float:
        return max(abs(self.lo), abs(self.hi))


def broadcast_shapes(*shapes) -> tuple[int, ...] | None:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        return None


def _range_of(fn, lo: float, hi: float) -> tuple[float, float]:
    """Range of a continuous function over [lo, hi], on a grid with a 5% margin (for gating only)."""
    grid = np.concatenate([np.linspace(lo, hi, 257), [0.0] if lo < 0 < hi else []])
    with np.errstate(all="ignore"):
        out = np.asarray(fn(grid), dtype=np.float64)
    low, high = float(np.nanmin(out)), float(np.nanmax(out))
    margin = 0.05 * max(high - low, 1e-3)
    return low - margin, high + margin


def _gelu(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))


# Unary operators: numpy function (for value ranges), domain predicate on (lo, hi), whether it
# keeps a value exact, whether it is discontinuous (needs an exact input), attributes.
UNARY = {
    "Relu": (lambda x: np.maximum(x, 0), None, True, False),
    "Neg": (np.negative, None, True, False),
    "Abs": (np.abs, None, True, False),
    "Sigmoid": (lambda x: 1 / (1 + np.exp(-x)), None, False, False),
    "Tanh": (np.tanh, None, False, False),
    "Erf": (lambda x: np.vectorize(math.erf)(x), None, False, False),
    "Softsign": (lambda x: x / (1 + np.abs(x)), None, False, False),
    "Exp": (np.exp, lambda lo, hi: hi <= 3, False, False),
    "Log": (np.log, lambda lo, hi: lo >= 0.25, False, False),
    "Sqrt": (np.sqrt, lambda lo, hi: lo >= 0.25, False, False),
    "Reciprocal": (np.reciprocal, lambda lo, hi: lo >= 0.5, False, False),
    "Softplus": (lambda x: np.log1p(np.exp(x)), lambda lo, hi: hi <= 15, False, False),
    "LeakyRelu": (lambda x: np.where(x > 0, x, 0.1 * x), None, False, False),
    "Elu": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), None, False, False),
    "Selu": (lambda x: 1.0507 * np.where(x > 0, x, 1.67326 * np.expm1(np.minimum(x, 0))), None, False,
             False),
    "Celu": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), None, False, False),
    "HardSigmoid": (lambda x: np.clip(0.2 * x + 0.5, 0, 1), None, False, False),
    "HardSwish": (lambda x: x * np.clip(x / 6 + 0.5, 0, 1), None, False, False),
    "Gelu": (_gelu, None, False, False),
    "Mish": (lambda x: x * np.tanh(np.log1p(np.exp(x))), lambda lo, hi: hi <= 15, False, False),
    "Sin": (np.sin, lambda lo, hi: max(-lo, hi) <= 4, False, False),
    "Cos": (np.cos, lambda lo, hi: max(-lo, hi) <= 4, False, False),
    "Floor": (np.floor, None, True, True),
    "Ceil": (np.ceil, None, True, True),
    "Round": (np.round, None, True, True),
    "Sign": (np.sign, None, True, True),
}
BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min"]
CONTRACTIONS = ("MatMul", "Gemm", "Conv")


class GraphBuilder:
    """Grows a random graph: values with tracked shapes and ranges, nodes, weights."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.values: list[Value] = []  # float values a node may consume
        self.other: list[Value] = []   # int and bool values (outputs may name them)
        self.consumed: set[str] = set()
        # Values of value-dependent sizes (NonZero, Compress): graph outputs, never consumed, so
        # the model declares their shapes (dlc compiles static shapes; it reads declared outputs).
        self.declared: list[Value] = []
        self.uses_ml = False  # an ai.onnx.ml node (TreeEnsemble) needs that domain's opset
        self._count = 0

    # -- helpers --
    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def choice(self, options):
        return options[int(self.rng.integers(0, len(options)))]

    def weight(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def uniform(self, shape, low=-1.0, high=1.0) -> np.ndarray:
        return self.rng.uniform(low, high, shape).astype(np.float32)

    def ints(self, values) -> str:
        return self.weight(np.array(values, np.int64), "i")

    def graph_input(self, shape, dtype=FLOAT) -> Value:
        name = self.fresh("in")
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        value = Value(name, tuple(shape), dtype)
        (self.values if dtype == FLOAT else self.other).append(value)
        return value

    def emit(self, op: str, inputs: list[str], shapes, *, lo=-2.0, hi=2.0, exact=False, dtype=FLOAT,
             **attributes) -> list[Value]:
        """Append a node; its outputs (one per shape) join the pool."""
        single = isinstance(shapes, tuple)
        outputs = [Value(self.fresh("v"), tuple(s), dtype, float(lo), float(hi), exact)
                   for s in ([shapes] if single else shapes)]
        self.nodes.append(helper.make_node(op, inputs, [o.name for o in outputs],
                                           name=f"{op.lower()}_{outputs[0].name}", **attributes))
        self.consumed.update(inputs)
        (self.values if dtype == FLOAT else self.other).extend(outputs)
        return outputs

    def one(self, *args, **kwargs) -> Value:
        return self.emit(*args, **kwargs)[0]

    def width(self) -> int:
        """An output width for a contraction: mostly small, sometimes past the micro-kernel's
        register block (16 floats per AVX-512 vector, several vectors wide), with a remainder."""
        return int(self.rng.integers(1, 9)) if self.chance(0.7) else int(self.rng.integers(9, 80))

    def pick(self, accept: Callable[[Value], bool] = lambda v: True) -> Value | None:
        """A float value to consume: recent ones more often; earlier ones give several consumers."""
        candidates = [v for v in self.values if accept(v)]
        if not candidates:
            return None
        weights = np.arange(1, len(candidates) + 1, dtype=np.float64) ** 1.5
        return candidates[int(self.rng.choice(len(candidates), p=weights / weights.sum()))]

    def positive(self, value: Value, low: float) -> Value:
        """Abs(value) + c with c >= low: an input Log/Sqrt/Reciprocal/Div are well conditioned on."""
        magnitude = self.one("Abs", [value.name], value.shape, lo=0, hi=value.magnitude, exact=value.exact)
        c = float(self.rng.uniform(low, 2 * low))
        return self.one("Add", [magnitude.name, self.weight(np.float32(c), "c")], value.shape,
                        lo=c, hi=magnitude.hi + c)

    def squash(self, value: Value) -> Value:
        return self.one("Tanh", [value.name], value.shape, lo=-1, hi=1)

    def partner_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """A shape that broadcasts with `shape`: a suffix with some dims 1, sometimes stretching
        its 1s or adding leading dims (rank-expanding)."""
        rank = len(shape)
        keep = int(self.rng.integers(0, rank + 1))
        result = [1 if self.chance(0.35) else d for d in shape[rank - keep:]]
        result = [int(self.rng.integers(2, 4)) if d == 1 and shape[rank - keep + i] == 1 and self.chance(0.3)
                  else d for i, d in enumerate(result)]
        if keep == rank and rank < 4 and self.chance(0.2):
            result = [int(self.rng.integers(2, 4))] + result
        out = broadcast_shapes(shape, result)
        return tuple(result) if out and np.prod(out) <= MAX_ELEMENTS else tuple(shape[rank - keep:])

    def partner(self, value: Value) -> Value | tuple[str, tuple[int, ...], float, float]:
        """A second operand: another value that broadcasts with `value` (often itself, or one
        with several consumers) or a constant of a broadcastable shape."""
        if self.chance(0.45):
            other = self.pick(lambda v: (s := broadcast_shapes(v.shape, value.shape)) is not None
                              and np.prod(s) <= MAX_ELEMENTS)
            if other is not None:
                return other
        shape = self.partner_shape(value.shape)
        array = self.uniform(shape, -1.5, 1.5)
        return Value(self.weight(array, "c"), shape, lo=float(array.min(initial=0)),
                     hi=float(array.max(initial=0)))

    # -- operators --
    def gen_unary(self) -> Value | None:
        op = self.choice(list(UNARY))
        fn, domain, keeps_exact, discontinuous = UNARY[op]
        source = self.pick((lambda v: v.exact) if discontinuous else (lambda v: True))
        if source is None:
            return None
        if domain and not domain(source.lo, source.hi):
            if op in ("Log", "Sqrt", "Reciprocal"):
                source = self.positive(source, 0.5)
            else:
                source = self.squash(source)
        attributes = {}
        if op == "LeakyRelu":
            attributes["alpha"] = self.choice([0.01, 0.1, 0.3])
        elif op in ("Elu", "Celu"):
            attributes["alpha"] = self.choice([0.5, 1.0, 1.5])
        elif op == "HardSigmoid":
            attributes.update(alpha=self.choice([0.2, 1 / 6]), beta=0.5)
        elif op == "Gelu" and self.chance(0.5):
            attributes["approximate"] = "tanh"
        lo, hi = _range_of(fn, source.lo, source.hi)
        if op in ("LeakyRelu", "Elu", "Celu", "HardSigmoid"):
            lo, hi = -max(1.0, source.magnitude) * 2, max(1.0, source.magnitude) * 2
        return self.one(op, [source.name], source.shape, lo=lo, hi=hi,
                        exact=keeps_exact and source.exact, **attributes)

    def gen_clip(self) -> Value | None:
        source = self.pick()
        low, high = self.choice([(0.0, 6.0), (-0.5, 0.5), (0.0, None), (None, 0.25), (-1.0, 1.0)])
        inputs = [source.name, self.weight(np.float32(low), "c") if low is not None else "",
                  self.weight(np.float32(high), "c") if high is not None else ""]
        while inputs[-1] == "":
            inputs.pop()
        lo = max(source.lo, low) if low is not None else source.lo
        hi = min(source.hi, high) if high is not None else source.hi
        return self.one("Clip", inputs, source.shape, lo=min(lo, hi), hi=max(lo, hi), exact=source.exact)

    def gen_binary(self) -> Value | None:
        op = self.choice(BINARY + ["Add", "Mul"])
        left = self.pick()
        right = self.partner(left)
        if op == "Div" and not (right.lo >= 0.5 or right.hi <= -0.5):
            right = self.positive(right, 0.5) if right.name not in {i.name for i in self.initializers} \
                else self._constant_denominator(right.shape)
        if self.chance(0.3) and op != "Div":
            left, right = right, left
        shape = broadcast_shapes(left.shape, right.shape)
        corners = [a * b for a in (left.lo, left.hi) for b in (right.lo, right.hi)]
        if op == "Add":
            lo, hi = left.lo + right.lo, left.hi + right.hi
        elif op == "Sub":
            lo, hi = left.lo - right.hi, left.hi - right.lo
        elif op == "Mul":
            lo, hi = min(corners), max(corners)
        elif op == "Div":  # |denominator| >= 0.5, whatever its sign
            lo, hi = -2 * left.magnitude, 2 * left.magnitude
        elif op == "Max":
            lo, hi = max(left.lo, right.lo), max(left.hi, right.hi)
        else:
            lo, hi = min(left.lo, right.lo), min(left.hi, right.hi)
        exact = op in ("Max", "Min") and left.exact and right.exact
        return self.one(op, [left.name, right.name], shape, lo=lo, hi=hi, exact=exact)

    def _constant_denominator(self, shape) -> Value:
        array = (self.uniform(shape, 0.5, 2.0) * self.rng.choice([-1, 1], shape)).astype(np.float32)
        return Value(self.weight(array, "c"), tuple(shape), lo=-2.0, hi=2.0)

    def gen_variadic(self) -> Value | None:
        op = self.choice(["Sum", "Mean", "Max", "Min"])
        first = self.pick()
        operands = [first] + [self.partner(first) for _ in range(int(self.rng.integers(1, 3)))]
        shape = broadcast_shapes(*[o.shape for o in operands])
        if shape is None or np.prod(shape) > MAX_ELEMENTS:
            return None
        lo = sum(o.lo for o in operands) if op == "Sum" else min(o.lo for o in operands)
        hi = sum(o.hi for o in operands) if op == "Sum" else max(o.hi for o in operands)
        exact = op in ("Max", "Min") and all(o.exact for o in operands)
        return self.one(op, [o.name for o in operands], shape, lo=lo, hi=hi, exact=exact)

    def gen_pow(self) -> Value | None:
        source = self.pick(lambda v: v.magnitude <= 4)
        if source is None:
            return None
        exponent = self.choice([2.0, 3.0, 0.5])
        if exponent == 0.5 and source.lo < 0.25:
            source = self.positive(source, 0.5)
        lo, hi = _range_of(lambda x: np.power(x, exponent), source.lo, source.hi)
        return self.one("Pow", [source.name, self.weight(np.float32(exponent), "c")], source.shape,
                        lo=lo, hi=hi)

    def gen_where(self) -> Value | None:
        a = self.pick()
        b = self.partner(a)
        shape = broadcast_shapes(a.shape, b.shape)
        cond_shape = self.partner_shape(shape)
        exact_source = self.pick(lambda v: v.exact and broadcast_shapes(v.shape, shape) == shape)
        if exact_source is not None and self.chance(0.6):
            op = self.choice(["Greater", "Less", "GreaterOrEqual"])
            threshold = self.weight(np.float32(self.rng.uniform(-0.5, 0.5)), "c")
            cond = self.one(op, [exact_source.name, threshold], exact_source.shape, dtype=TensorProto.BOOL,
                            exact=True)
        else:
            cond = self.graph_input(cond_shape, TensorProto.BOOL)
        out_shape = broadcast_shapes(shape, cond.shape)
        if out_shape is None or np.prod(out_shape) > MAX_ELEMENTS:
            return None
        return self.one("Where", [cond.name, a.name, b.name], out_shape, lo=min(a.lo, b.lo),
                        hi=max(a.hi, b.hi), exact=a.exact and b.exact)

    def gen_cast(self) -> Value | None:
        source = self.pick(lambda v: v.exact)
        if source is None:
            return None
        to = self.choice([TensorProto.INT32, TensorProto.INT64, TensorProto.DOUBLE])
        middle = self.one("Cast", [source.name], source.shape, dtype=to, exact=True, to=to)
        lo, hi = (np.trunc(source.lo), np.trunc(source.hi)) if to != TensorProto.DOUBLE else (source.lo,
                                                                                             source.hi)
        return self.one("Cast", [middle.name], source.shape, lo=lo, hi=hi, exact=True, to=FLOAT)

    def gen_matmul(self) -> Value | None:
        a = self.pick(lambda v: 1 <= v.rank <= 4)
        if a is None:
            return None
        k = a.shape[-1]
        n = self.width()
        b_is_vector = self.chance(0.1)
        if b_is_vector:
            b_shape: tuple[int, ...] = (k,)
        elif a.rank >= 2 and self.chance(0.2):  # batched weights, maybe adding a leading dim
            batch = list(self.partner_shape(a.shape[:-2])) if a.rank > 2 else [int(self.rng.integers(1, 3))]
            b_shape = (*batch, k, n)
        else:
            b_shape = (k, n)
        b = self.uniform(b_shape) / math.sqrt(k)
        if a.rank == 1 and len(b_shape) == 1:
            b_shape = (k, n)
            b = self.uniform(b_shape) / math.sqrt(k)
        out = _matmul_shape(a.shape, b_shape)
        if out is None or np.prod(out) > MAX_ELEMENTS:
            return None
        bound = a.magnitude * math.sqrt(k)
        other = self.weight(b, "w")
        if self.chance(0.15):  # both operands computed: B from another value of the right shape
            computed = self.pick(lambda v: v.rank >= 2 and v.shape[-2] == k and v.name != a.name
                                 and _matmul_shape(a.shape, v.shape) is not None
                                 and np.prod(_matmul_shape(a.shape, v.shape)) <= MAX_ELEMENTS)
            if computed is not None:
                other, out = computed.name, _matmul_shape(a.shape, computed.shape)
                bound = a.magnitude * computed.magnitude * k
        value = self.one("MatMul", [a.name, other], out, lo=-bound, hi=bound)
        return self.epilogue(value, channel_axis=-1)

    def gen_gemm(self) -> Value | None:
        a = self.pick(lambda v: v.rank >= 2)
        if a is None:
            return None
        if a.rank != 2:
            a = self.one("Flatten", [a.name], (a.shape[0], int(np.prod(a.shape[1:]))), lo=a.lo, hi=a.hi,
                         exact=a.exact, axis=1)
        trans_a, trans_b = int(self.chance(0.3)), int(self.chance(0.5))
        m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
        n = self.width()
        b = self.uniform((n, k) if trans_b else (k, n)) / math.sqrt(k)
        alpha, beta = self.choice([1.0, 1.0, 0.5, 1.5]), self.choice([1.0, 1.0, 0.5, 2.0])
        inputs = [a.name, self.weight(b, "w")]
        if self.chance(0.7):
            inputs.append(self.weight(self.uniform(self.choice([(n,), (1, n), (m, 1), (m, n), ()])), "b"))
        bound = alpha * a.magnitude * math.sqrt(k) + beta
        value = self.one("Gemm", inputs, (m, n), lo=-bound, hi=bound, transA=trans_a, transB=trans_b,
                         alpha=alpha, beta=beta)
        return self.epilogue(value, channel_axis=-1)

    def spatial_source(self, min_rank=3) -> Value | None:
        """An N,C,spatial... value: an existing one, or a reshape of one into N,C,H,W."""
        source = self.pick(lambda v: min_rank <= v.rank <= 4 and all(d >= 2 for d in v.shape[2:]))
        if source is not None:
            return source
        flat = self.pick(lambda v: v.size >= 8 and v.size % 4 == 0)
        if flat is None:
            return None
        c = self.choice([d for d in (1, 2, 4) if flat.size % (d * 4) == 0])
        h = 2
        w = flat.size // (c * h)
        return self.one("Reshape", [flat.name, self.ints([1, c, h, w])], (1, c, h, w), lo=flat.lo, hi=flat.hi,
                        exact=flat.exact)

    def gen_conv(self) -> Value | None:
        x = self.spatial_source()
        if x is None:
            return None
        c, spatial = x.shape[1], x.shape[2:]
        groups = self.choice([1, 1, c] + [g for g in range(2, c) if c % g == 0])
        m = groups * int(self.rng.integers(1, max(2, 8 // groups + 1))) if groups > 1 or self.chance(0.7) \
            else self.width()
        kernel = [int(self.rng.integers(1, min(3, d) + 1)) for d in spatial]
        dilations = [self.choice([1, 1, 2]) if (k - 1) * 2 + 1 <= d else 1 for k, d in zip(kernel, spatial)]
        strides = [self.choice([1, 1, 2]) for _ in spatial]
        pads = [int(self.rng.integers(0, k)) for k in kernel] + [int(self.rng.integers(0, k)) for k in kernel]
        attributes = {"kernel_shape": kernel, "strides": strides, "dilations": dilations, "group": groups}
        if self.chance(0.15):
            attributes["auto_pad"] = self.choice(["SAME_UPPER", "SAME_LOWER", "VALID"])
            if attributes["auto_pad"] != "VALID":  # onnxruntime refuses dilations with SAME padding
                attributes["dilations"] = dilations = [1] * len(spatial)
            out = _conv_out_auto(spatial, kernel, strides, dilations, attributes["auto_pad"])
        else:
            attributes["pads"] = pads
            out = [(d + pads[i] + pads[i + len(spatial)] - dil * (k - 1) - 1) // s + 1
                   for i, (d, k, s, dil) in enumerate(zip(spatial, kernel, strides, dilations))]
        if min(out) < 1 or x.shape[0] * m * int(np.prod(out)) > MAX_ELEMENTS:
            return None
        fan_in = c // groups * int(np.prod(kernel))
        inputs = [x.name, self.weight(self.uniform((m, c // groups, *kernel)) / math.sqrt(fan_in), "w")]
        if self.chance(0.6):
            inputs.append(self.weight(self.uniform((m,), -0.5, 0.5), "b"))
        bound = x.magnitude * math.sqrt(fan_in) + 0.5
        value = self.one("Conv", inputs, (x.shape[0], m, *out), lo=-bound, hi=bound, **attributes)
        return self.epilogue(value, channel_axis=1)

    def epilogue(self, value: Value, channel_axis: int) -> Value:
        """What exporters put after a contraction: bias, activation, residual - fusion material."""
        for _ in range(int(self.rng.integers(0, 4))):
            kind = self.choice(["bias", "relu", "relu6", "silu", "residual", "gelu", "scale", "sigmoid"])
            shape = value.shape
            if kind == "bias":
                bias_shape = [1] * value.rank
                bias_shape[channel_axis] = shape[channel_axis]
                bias_shape = bias_shape[1:] if channel_axis == -1 and self.chance(0.5) else bias_shape
                value = self.one("Add", [value.name, self.weight(self.uniform(bias_shape), "b")], shape,
                                 lo=value.lo - 1, hi=value.hi + 1)
            elif kind == "relu":
                value = self.one("Relu", [value.name], shape, lo=0, hi=max(value.hi, 0))
            elif kind == "relu6":
                value = self.one("Clip", [value.name, self.weight(np.float32(0), "c"),
                                          self.weight(np.float32(6), "c")], shape, lo=0, hi=6)
            elif kind in ("silu", "sigmoid"):
                gate = self.one("Sigmoid", [value.name], shape, lo=0, hi=1)
                value = gate if kind == "sigmoid" else self.one(
                    "Mul", [value.name, gate.name], shape, lo=-0.3, hi=max(value.hi, 0) + 0.1)
            elif kind == "gelu":
                lo, hi = _range_of(_gelu, value.lo, value.hi)
                value = self.one("Gelu", [value.name], shape, lo=lo, hi=hi)
            elif kind == "scale":
                c = float(self.rng.uniform(0.5, 2))
                value = self.one("Mul", [value.name, self.weight(np.float32(c), "c")], shape,
                                 lo=value.lo * c, hi=value.hi * c)
            else:
                other = self.pick(lambda v, shape=shape, name=value.name: v.shape == shape and v.name != name)
                if other is not None:
                    value = self.one("Add", [value.name, other.name] if self.chance(0.5) else
                                     [other.name, value.name], shape, lo=value.lo + other.lo,
                                     hi=value.hi + other.hi)
        return value

    def gen_pool(self, indices: bool = False) -> Value | None:
        x = self.spatial_source()
        if x is None or indices and not x.exact:
            return None
        op = "MaxPool" if indices else self.choice(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"])
        if op.startswith("Global"):
            return self.one(op, [x.name], (*x.shape[:2], *[1] * (x.rank - 2)), lo=x.lo, hi=x.hi,
                            exact=x.exact and op == "GlobalMaxPool")
        spatial = x.shape[2:]
        kernel = [int(self.rng.integers(1, min(3, d) + 1)) for d in spatial]
        strides = [self.choice([1, 2, 2]) for _ in spatial]
        dilations = [self.choice([1, 1, 2]) if op == "MaxPool" and (k - 1) * 2 + 1 <= d else 1
                     for k, d in zip(kernel, spatial)]
        pads = [int(self.rng.integers(0, k)) for k in kernel] + [int(self.rng.integers(0, k)) for k in kernel]
        ceil_mode = int(self.chance(0.25))
        attributes = {"kernel_shape": kernel, "strides": strides, "pads": pads, "ceil_mode": ceil_mode}
        if op == "MaxPool" and any(d > 1 for d in dilations):
            attributes["dilations"] = dilations
        if op == "AveragePool":
            attributes["count_include_pad"] = int(self.chance(0.5))
        out = []
        for i, (d, k, s, dil) in enumerate(zip(spatial, kernel, strides, dilations)):
            span = d + pads[i] + pads[i + len(spatial)] - dil * (k - 1) - 1
            n = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (n - 1) * s >= d + pads[i]:
                return None  # onnx's shape inference and onnxruntime disagree on this window's existence
            out.append(n)
        if min(out) < 1:
            return None
        if indices:  # exact inputs only: a rounding difference would move ties
            values, picked = self.emit(op, [x.name], [(*x.shape[:2], *out)] * 2, lo=x.lo, hi=x.hi,
                                       exact=True, storage_order=int(self.chance(0.3)), **attributes)
            self.values.remove(picked)  # emit typed both outputs float; Indices is int64
            picked.dtype = TensorProto.INT64
            self.other.append(picked)
            return values
        return self.one(op, [x.name], (*x.shape[:2], *out), lo=x.lo, hi=x.hi,
                        exact=x.exact and op == "MaxPool", **attributes)

    def gen_batchnorm(self) -> Value | None:
        x = self.pick(lambda v: 2 <= v.rank <= 4)
        if x is None:
            return None
        c = x.shape[1]
        scale, bias = self.uniform((c,), 0.5, 1.5), self.uniform((c,), -0.5, 0.5)
        mean, var = self.uniform((c,), -0.5, 0.5), self.uniform((c,), 0.5, 2.0)
        names = [self.weight(a, "bn") for a in (scale, bias, mean, var)]
        bound = (x.magnitude + 0.5) * 1.5 / math.sqrt(0.5) + 0.5
        return self.one("BatchNormalization", [x.name, *names], x.shape, lo=-bound, hi=bound, epsilon=1e-5)

    def gen_softmax(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1)
        op = self.choice(["Softmax", "LogSoftmax"])
        axis = int(self.rng.integers(-x.rank, x.rank))
        if op == "Softmax":
            lo, hi = 0.0, 1.0
        else:
            lo, hi = -(x.hi - x.lo) - math.log(x.shape[axis]) - 1, 0.0
        return self.one(op, [x.name], x.shape, lo=lo, hi=hi, axis=axis)

    def gen_reduce(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1)
        op = self.choice(["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare",
                          "ReduceL2", "ReduceLogSumExp"])
        if op == "ReduceLogSumExp" and x.hi > 5:
            x = self.squash(x)
        keepdims = int(self.chance(0.5))
        inputs = [x.name]
        if self.chance(0.15):
            axes = list(range(x.rank))
        else:
            count = int(self.rng.integers(1, x.rank + 1))
            axes = sorted(int(a) for a in self.rng.choice(x.rank, count, replace=False))
            inputs.append(self.ints([a - x.rank if self.chance(0.3) else a for a in axes]))
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keepdims or i not in axes)
        n = int(np.prod([x.shape[a] for a in axes]))
        lo, hi = {"ReduceSum": (x.lo * n, x.hi * n), "ReduceMean": (x.lo, x.hi), "ReduceMax": (x.lo, x.hi),
                  "ReduceMin": (x.lo, x.hi), "ReduceSumSquare": (0, x.magnitude ** 2 * n),
                  "ReduceL2": (0, x.magnitude * math.sqrt(n)),
                  "ReduceLogSumExp": (x.lo, x.hi + math.log(n))}[op]
        return self.one(op, inputs, shape, lo=lo, hi=hi, keepdims=keepdims,
                        exact=x.exact and op in ("ReduceMax", "ReduceMin"))

    def gen_transpose(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 2)
        if x is None:
            return None
        if self.chance(0.15):
            perm, attributes = list(range(x.rank))[::-1], {}
        else:
            perm = [int(p) for p in self.rng.permutation(x.rank)]
            attributes = {"perm": perm}
        return self.one("Transpose", [x.name], tuple(x.shape[p] for p in perm), lo=x.lo, hi=x.hi,
                        exact=x.exact, **attributes)

    def gen_reshape(self) -> Value | None:
        x = self.pick()
        rank = int(self.rng.integers(1, 5))
        shape = [1] * rank
        for p in _prime_factors(x.size):
            shape[int(self.rng.integers(0, rank))] *= p
        target = list(shape)
        if self.chance(0.3):
            target[int(self.rng.integers(0, rank))] = -1
        for i in range(min(rank, x.rank)):
            if target[i] == x.shape[i] and self.chance(0.3):
                target[i] = 0  # copy the input's dim (allowzero=0)
        return self.one("Reshape", [x.name, self.ints(target)], tuple(shape), lo=x.lo, hi=x.hi,
                        exact=x.exact)

    def gen_flatten(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1)
        axis = int(self.rng.integers(-x.rank, x.rank + 1))
        a = axis + x.rank if axis < 0 else axis
        shape = (int(np.prod(x.shape[:a])), int(np.prod(x.shape[a:])))
        return self.one("Flatten", [x.name], shape, lo=x.lo, hi=x.hi, exact=x.exact, axis=axis)

    def gen_squeeze(self) -> Value | None:
        x = self.pick()
        if self.chance(0.5) and x.rank < 4:
            at = int(self.rng.integers(0, x.rank + 1))
            shape = x.shape[:at] + (1,) + x.shape[at:]
            axis = at - len(shape) if self.chance(0.3) else at
            return self.one("Unsqueeze", [x.name, self.ints([axis])], shape, lo=x.lo, hi=x.hi, exact=x.exact)
        ones = [i for i, d in enumerate(x.shape) if d == 1]
        if not ones:
            return None
        if self.chance(0.3):
            inputs, axes = [x.name], ones
        else:
            axes = [self.choice(ones)]
            inputs = [x.name, self.ints(axes)]
        return self.one("Squeeze", inputs, tuple(d for i, d in enumerate(x.shape) if i not in axes),
                        lo=x.lo, hi=x.hi, exact=x.exact)

    def gen_concat(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1)
        axis = int(self.rng.integers(0, x.rank))
        parts = [x]
        for _ in range(int(self.rng.integers(1, 3))):
            same = self.pick(lambda v: v.rank == x.rank and all(
                a == b for i, (a, b) in enumerate(zip(v.shape, x.shape)) if i != axis))
            if same is not None and self.chance(0.6):
                parts.append(same)
            else:
                shape = list(x.shape)
                shape[axis] = int(self.rng.integers(1, 4))
                array = self.uniform(shape)
                parts.append(Value(self.weight(array, "c"), tuple(shape), lo=-1, hi=1))
        shape = list(x.shape)
        shape[axis] = sum(p.shape[axis] for p in parts)
        if np.prod(shape) > MAX_ELEMENTS:
            return None
        self.rng.shuffle(parts)
        return self.one("Concat", [p.name for p in parts], tuple(shape), lo=min(p.lo for p in parts),
                        hi=max(p.hi for p in parts), exact=all(p.exact for p in parts),
                        axis=axis - x.rank if self.chance(0.3) else axis)

    def gen_slice(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1 and max(v.shape) >= 2)
        if x is None:
            return None
        axes = [int(a) for a in self.rng.permutation(x.rank)[:int(self.rng.integers(1, x.rank + 1))]]
        starts, ends, steps, shape = [], [], [], list(x.shape)
        for a in axes:
            d = x.shape[a]
            step = self.choice([1, 1, 1, 2, -1])
            if step > 0:
                start = int(self.rng.integers(0, d))
                end = self.choice([int(self.rng.integers(start + 1, d + 1)), 2**31, d + 5])
            else:
                start = self.choice([int(self.rng.integers(0, d)), 2**31])
                end = self.choice([-(2**31), -d - 1, int(self.rng.integers(-d - 1, 0))])
            if self.chance(0.3) and 0 <= start < d:
                start -= d  # negative indices count from the end
            length = len(range(d)[slice(start, end, step)])
            if length < 1:
                return None
            starts.append(start), ends.append(end), steps.append(step)
            shape[a] = length
        inputs = [x.name, self.ints(starts), self.ints(ends), self.ints(axes)]
        if any(s != 1 for s in steps) or self.chance(0.5):
            inputs.append(self.ints(steps))
        return self.one("Slice", inputs, tuple(shape), lo=x.lo, hi=x.hi, exact=x.exact)

    def gen_split(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1 and max(v.shape) >= 2)
        if x is None:
            return None
        axis = self.choice([i for i, d in enumerate(x.shape) if d >= 2])
        d = x.shape[axis]
        if self.chance(0.5):
            parts = int(self.rng.integers(2, min(d, 3) + 1))
            chunk = -(-d // parts)
            sizes = [chunk] * (d // chunk) + ([d % chunk] if d % chunk else [])
            if len(sizes) != parts:
                return None
            inputs, attributes = [x.name], {"num_outputs": parts}
        else:
            cut = sorted({int(c) for c in self.rng.integers(1, d, int(self.rng.integers(1, 3)))})
            sizes = [b - a for a, b in zip([0] + cut, cut + [d])]
            inputs, attributes = [x.name, self.ints(sizes)], {}
        shapes = [tuple(s if i == axis else e for i, e in enumerate(x.shape)) for s in sizes]
        outs = self.emit("Split", inputs, shapes, lo=x.lo, hi=x.hi, exact=x.exact,
                         axis=axis - x.rank if self.chance(0.3) else axis, **attributes)
        return outs[int(self.rng.integers(0, len(outs)))]

    def gen_layernorm(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1 and v.shape[-1] >= 2)
        if x is None:
            return None
        axis = int(self.rng.integers(-x.rank, x.rank))
        normalized = x.shape[axis:]
        inputs = [x.name, self.weight(self.uniform(normalized, 0.5, 1.5), "ln")]
        if self.chance(0.7):
            inputs.append(self.weight(self.uniform(normalized, -0.5, 0.5), "ln"))
        bound = 1.5 * math.sqrt(int(np.prod(normalized))) + 0.5
        return self.one("LayerNormalization", inputs, x.shape, lo=-bound, hi=bound, axis=axis,
                        epsilon=self.choice([1e-5, 1e-3]))

    def gen_pad(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1)
        mode = self.choice(["constant", "constant", "reflect", "edge"])
        pads = [int(self.rng.integers(0, 3)) for _ in range(2 * x.rank)]
        if mode == "reflect":  # reflect needs pads smaller than the dim
            pads = [min(p, x.shape[i % x.rank] - 1) for i, p in enumerate(pads)]
        elif mode == "constant" and self.chance(0.3):  # negative pads crop
            pads = [-min(1, x.shape[i % x.rank] - 1) if self.chance(0.3) else p for i, p in enumerate(pads)]
        shape = tuple(d + pads[i] + pads[i + x.rank] for i, d in enumerate(x.shape))
        if min(shape) < 1 or np.prod(shape) > MAX_ELEMENTS:
            return None
        inputs = [x.name, self.ints(pads)]
        value = 0.0
        if mode == "constant" and self.chance(0.5):
            value = float(self.rng.uniform(-1, 1))
            inputs.append(self.weight(np.float32(value), "c"))
        return self.one("Pad", inputs, shape, lo=min(x.lo, value), hi=max(x.hi, value), exact=x.exact, mode=mode)

    def gen_expand(self) -> Value | None:
        x = self.pick(lambda v: v.rank <= 3)
        if x is None:
            return None
        target = tuple(int(self.rng.integers(2, 4)) if d == 1 and self.chance(0.6) else d for d in x.shape)
        if self.chance(0.3):
            target = (int(self.rng.integers(1, 3)), *target)
        if np.prod(target) > MAX_ELEMENTS:
            return None
        if self.chance(0.5):  # Tile repeats instead of broadcasting
            repeats = [int(self.rng.integers(1, 3)) for _ in x.shape]
            shape = tuple(d * r for d, r in zip(x.shape, repeats))
            if np.prod(shape) > MAX_ELEMENTS:
                return None
            return self.one("Tile", [x.name, self.ints(repeats)], shape, lo=x.lo, hi=x.hi, exact=x.exact)
        # Expand's shape may have 1s where the input's dims are larger (they stay).
        given = [1 if self.chance(0.3) else d for d in target]
        return self.one("Expand", [x.name, self.ints(given)], broadcast_shapes(x.shape, given), lo=x.lo,
                        hi=x.hi, exact=x.exact)

    def gen_gather(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1)
        axis = int(self.rng.integers(0, x.rank))
        d = x.shape[axis]
        index_shape = self.choice([(), (int(self.rng.integers(1, 4)),), (2, int(self.rng.integers(1, 3)))])
        indices = self.rng.integers(-d, d, index_shape).astype(np.int64)  # negative ones count from the end
        shape = x.shape[:axis] + tuple(index_shape) + x.shape[axis + 1:]
        if np.prod(shape) > MAX_ELEMENTS:
            return None
        return self.one("Gather", [x.name, self.weight(indices, "i")], shape, lo=x.lo, hi=x.hi, exact=x.exact,
                        axis=axis - x.rank if self.chance(0.3) else axis)

    def gen_instancenorm(self) -> Value | None:
        x = self.pick(lambda v: 3 <= v.rank <= 4 and int(np.prod(v.shape[2:])) >= 2)
        if x is None:
            return None
        c = x.shape[1]
        inputs = [x.name, self.weight(self.uniform((c,), 0.5, 1.5), "in"), self.weight(self.uniform((c,)), "in")]
        bound = 1.5 * math.sqrt(int(np.prod(x.shape[2:]))) + 1
        return self.one("InstanceNormalization", inputs, x.shape, lo=-bound, hi=bound, epsilon=1e-3)

    def gen_argmax(self) -> Value | None:
        x = self.pick(lambda v: v.exact and v.rank >= 1)
        if x is None:
            return None
        axis = int(self.rng.integers(0, x.rank))
        keepdims = int(self.chance(0.5))
        shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape) if keepdims or i != axis)
        op = self.choice(["ArgMax", "ArgMin"])
        index = self.one(op, [x.name], shape, dtype=TensorProto.INT64, exact=True, axis=axis, keepdims=keepdims,
                         select_last_index=int(self.chance(0.3)))
        return self.one("Cast", [index.name], shape, lo=0, hi=x.shape[axis], exact=True, to=FLOAT)

    def gen_topk(self) -> Value | None:
        """TopK picks input values (exact inputs only: a rounding difference would reorder them);
        its int64 indices sometimes flow on through a Cast."""
        x = self.pick(lambda v: v.exact and v.rank >= 1)
        if x is None:
            return None
        axis = int(self.rng.integers(0, x.rank))
        k = int(self.rng.integers(1, x.shape[axis] + 1))
        shape = tuple(k if i == axis else d for i, d in enumerate(x.shape))
        values, indices = self.emit("TopK", [x.name, self.ints([k])], [shape, shape], lo=x.lo, hi=x.hi,
                                    exact=True, axis=axis - x.rank if self.chance(0.3) else axis,
                                    largest=int(self.chance(0.6)), sorted=1)
        self.values.remove(indices)  # emit typed both outputs float; Indices is int64
        indices.dtype = TensorProto.INT64
        self.other.append(indices)
        if self.chance(0.5):
            return self.one("Cast", [indices.name], shape, lo=0, hi=x.shape[axis], exact=True, to=FLOAT)
        return values

    def gen_cumsum(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1)
        if x is None:
            return None
        axis = int(self.rng.integers(-x.rank, x.rank))
        n = x.shape[axis]
        return self.one("CumSum", [x.name, self.weight(np.array(axis, np.int64), "i")], x.shape,
                        lo=min(x.lo * n, 0), hi=max(x.hi * n, 0), exclusive=int(self.chance(0.3)),
                        reverse=int(self.chance(0.3)))

    def gen_scatter(self) -> Value | None:
        """ScatterElements or ScatterND with constant indices (negative ones count from the end;
        repeats combine in index order, as onnxruntime's loop does) and a reduction."""
        x = self.pick(lambda v: v.rank >= 1)
        if x is None:
            return None
        if self.chance(0.5):
            axis = int(self.rng.integers(0, x.rank))
            shape = tuple(int(self.rng.integers(1, d + 1)) for d in x.shape)
            indices = self.rng.integers(-x.shape[axis], x.shape[axis], shape)
            op, attributes = "ScatterElements", {"axis": axis - x.rank if self.chance(0.3) else axis}
        else:
            depth = int(self.rng.integers(1, x.rank + 1))
            n = int(self.rng.integers(1, 4))
            indices = np.stack([self.rng.integers(-d, d, n) for d in x.shape[:depth]], -1)
            shape = (n, *x.shape[depth:])
            op, attributes = "ScatterND", {}
        reduction = self.choice(["none", "add", "mul", "max", "min"])
        updates = self.uniform(shape)
        m, n = max(x.magnitude, 1.0), int(np.prod(shape))
        lo, hi = {"none": (min(x.lo, -1), max(x.hi, 1)), "add": (x.lo - n, x.hi + n), "mul": (-m, m),
                  "max": (x.lo, max(x.hi, 1)), "min": (min(x.lo, -1), x.hi)}[reduction]
        return self.one(op, [x.name, self.weight(indices.astype(np.int64), "i"), self.weight(updates, "u")],
                        x.shape, lo=lo, hi=hi, reduction=reduction, **attributes)

    def gen_control_flow(self) -> Value | None:
        """If on a run-time condition (mean of x > 0), a Loop of a constant trip count carrying
        a state, or a Scan over axis 0 (forward or reverse) stacking each step's state; the
        bodies read x from the outer scope and squash with Tanh, so every output is in (-1, 1)
        or the range of x."""
        x = self.pick(lambda v: v.rank >= 1 and v.shape[0] <= 8)
        if x is None:
            return None
        kind = self.choice(["If", "Loop", "Scan"])
        value = helper.make_tensor_value_info
        tag = self.fresh("body")

        def n(name: str) -> str:  # bodies' own names, unique in the model (copies share none)
            return f"{tag}_{name}"

        if kind == "If":
            mean = self.one("ReduceMean", [x.name], (1,) * x.rank, lo=x.lo, hi=x.hi, keepdims=1)
            cond = self.one("Greater", [mean.name, self.weight(np.float32(0), "c")], (1,) * x.rank,
                            dtype=onnx.TensorProto.BOOL)
            flat = self.one("Reshape", [cond.name, self.ints([])], (), dtype=onnx.TensorProto.BOOL)
            then = helper.make_graph([helper.make_node("Tanh", [x.name], [n("then_out")])], "then", [],
                                     [value(n("then_out"), FLOAT, list(x.shape))])
            scale = self.weight(np.float32(self.rng.uniform(-1, 1)), "c")
            other = helper.make_graph([helper.make_node("Mul", [x.name, scale], [n("else_out")])], "else", [],
                                      [value(n("else_out"), FLOAT, list(x.shape))])
            m = max(x.magnitude, 1.0)
            return self.one("If", [flat.name], x.shape, lo=-m, hi=m, then_branch=then, else_branch=other)
        if kind == "Loop":
            half = self.weight(np.float32(0.5), "c")
            body = helper.make_graph(
                [helper.make_node("Mul", [n("s_in"), half], [n("scaled")]),
                 helper.make_node("Add", [n("scaled"), x.name], [n("summed")]),
                 helper.make_node("Tanh", [n("summed")], [n("s_out")]),
                 helper.make_node("Identity", [n("cond_in")], [n("cond_out")])],
                "body", [value(n("i"), onnx.TensorProto.INT64, []), value(n("cond_in"), onnx.TensorProto.BOOL, []),
                         value(n("s_in"), FLOAT, list(x.shape))],
                [value(n("cond_out"), onnx.TensorProto.BOOL, []), value(n("s_out"), FLOAT, list(x.shape))])
            trips = self.weight(np.int64(self.rng.integers(1, 5)), "i")
            start = self.weight(self.uniform(x.shape), "s")
            state = self.one("Loop", [trips, "", start], x.shape, lo=-1, hi=1, body=body)
            # ONNX infers no shape for a Loop's state (onnx 1.23), so nothing consumes it: an output.
            self.values.remove(state)
            self.other.append(state)
            return state
        step = x.shape[1:]
        body = helper.make_graph(
            [helper.make_node("Add", [n("acc_in"), n("x_t")], [n("summed")]),
             helper.make_node("Tanh", [n("summed")], [n("acc_out")]),
             helper.make_node("Identity", [n("acc_out")], [n("y_t")])],
            "body", [value(n("acc_in"), FLOAT, list(step)), value(n("x_t"), FLOAT, list(step))],
            [value(n("acc_out"), FLOAT, list(step)), value(n("y_t"), FLOAT, list(step))])
        final, stacked = self.emit("Scan", [self.weight(self.uniform(step), "s"), x.name], [step, x.shape],
                                   lo=-1, hi=1, body=body, num_scan_inputs=1,
                                   scan_input_directions=[int(self.chance(0.5))])
        return self.choice([final, stacked])

    def gen_max_pool_indices(self) -> Value | None:
        """MaxPool with its Indices output (int64, for a later Cast or as a graph output)."""
        return self.gen_pool(indices=True)

    def gen_mod(self) -> Value | None:
        """Float Mod (fmod=1: the fuzzer's opset 21 allows no other on floats) of an exact value
        by an exact constant: discontinuous where x crosses a multiple of the divisor, so both
        operands are exact."""
        x = self.pick(lambda v: v.exact)
        if x is None:
            return None
        divisor = float(self.choice([0.5, 1.5, 2.0, -3.0, 0.75]))
        lo, hi = (-abs(divisor) if x.lo < 0 else 0.0), (abs(divisor) if x.hi > 0 else 0.0)
        return self.one("Mod", [x.name, self.weight(np.float32(divisor), "c")], x.shape, lo=lo, hi=hi,
                        exact=True, fmod=1)

    def gen_det(self) -> Value | None:
        """Det of I + a small matrix built from a value (an outer product with a constant, entries
        below 0.2/d): well conditioned, so its rounding stays within the tolerance model."""
        x = self.pick(lambda v: 1 <= v.rank <= 3 and 1 <= v.shape[-1] <= 5)
        if x is None:
            return None
        d = x.shape[-1]
        squashed = self.squash(x)
        column = self.one("Unsqueeze", [squashed.name, self.ints([-1])], (*x.shape, 1), lo=-1, hi=1)
        scale = self.uniform((d, d), -0.2 / d, 0.2 / d)
        small = self.one("Mul", [column.name, self.weight(scale, "c")], (*x.shape, d), lo=-0.2 / d, hi=0.2 / d)
        matrix = self.one("Add", [small.name, self.weight(np.eye(d, dtype=np.float32), "c")], small.shape,
                          lo=-1.2, hi=1.2)
        return self.one("Det", [matrix.name], x.shape[:-1], lo=0.5 ** d, hi=1.5 ** d)

    def gen_center_crop_pad(self) -> Value | None:
        x = self.pick(lambda v: v.rank >= 1)
        if x is None:
            return None
        axes = sorted({int(self.rng.integers(0, x.rank)) for _ in range(int(self.rng.integers(1, x.rank + 1)))})
        sizes = [max(1, x.shape[a] + int(self.rng.integers(-3, 4))) for a in axes]
        shape = tuple(sizes[axes.index(a)] if a in axes else d for a, d in enumerate(x.shape))
        if np.prod(shape) > MAX_ELEMENTS:
            return None
        padded = any(shape[a] > x.shape[a] for a in axes)
        return self.one("CenterCropPad", [x.name, self.ints(sizes)], shape, lo=min(x.lo, 0) if padded else x.lo,
                        hi=max(x.hi, 0) if padded else x.hi, exact=x.exact,
                        axes=[a - x.rank if self.chance(0.3) else a for a in axes])

    def gen_grid_sample(self) -> Value | None:
        """GridSample of a [N, C, H, W] value at a constant grid reaching 30% past the image, any
        padding. Nearest reads one pixel (its grid points are never near a rounding tie);
        linear and cubic are continuous in X. Cubic's weights overshoot: |sum| <= 1.4^2. No cubic
        with 'border': onnx.reference (the `reference` target) clamps the coordinate before the
        taps, onnxruntime and torch clamp each tap (dlc does as they do)."""
        # no length-1 image axis: onnx.reference (the `reference` target) divides by 0 reflecting there
        x = self.pick(lambda v: v.rank == 4 and v.shape[2] > 1 and v.shape[3] > 1)
        if x is None:
            return None
        mode = self.choice(["linear", "nearest", "cubic"])
        out = (x.shape[0], int(self.rng.integers(1, 6)), int(self.rng.integers(1, 6)))
        grid = self.weight(self.uniform((*out, 2), -1.3, 1.3), "g")
        bound = x.magnitude * (2.0 if mode == "cubic" else 1.0)
        lo, hi = (-bound, bound) if mode == "cubic" else (min(x.lo, 0.0), max(x.hi, 0.0))
        return self.one("GridSample", [x.name, grid], (x.shape[0], x.shape[1], *out[1:]), lo=lo, hi=hi,
                        exact=x.exact and mode == "nearest", mode=mode,
                        padding_mode=self.choice(["zeros", "reflection"] if mode == "cubic" else
                                                 ["zeros", "border", "reflection"]),
                        align_corners=int(self.chance(0.5)))

    def gen_roi_align(self) -> Value | None:
        """RoiAlign of a [N, C, H, W] value over constant rois (some past the map's sides) of
        random images, either coordinate mode, sampling_ratio 0 (run-time sample counts) or
        fixed. 'max' compares, so it takes exact values only."""
        mode = self.choice(["avg", "max"])
        x = self.pick(lambda v: v.rank == 4 and (v.exact or mode == "avg"))
        if x is None:
            return None
        n, _, height, width = x.shape
        count = int(self.rng.integers(1, 5))
        scale = float(self.choice([1.0, 0.5]))
        corner = self.rng.uniform(-1.0, 1.0, (count, 2)) * [width / scale, height / scale]
        extent = self.rng.uniform(0.3, 1.2, (count, 2)) * [width / scale, height / scale]
        rois = np.concatenate([corner, corner + extent], axis=1).astype(np.float32)
        batch = self.rng.integers(0, n, count).astype(np.int64)
        size = (int(self.rng.integers(1, 4)), int(self.rng.integers(1, 4)))
        return self.one("RoiAlign", [x.name, self.weight(rois, "r"), self.weight(batch, "i")],
                        (count, x.shape[1], *size), lo=min(x.lo, 0.0), hi=max(x.hi, 0.0),
                        exact=False, mode=mode, output_height=size[0], output_width=size[1],
                        sampling_ratio=int(self.choice([0, 0, 1, 2])), spatial_scale=scale,
                        coordinate_transformation_mode=self.choice(["half_pixel", "output_half_pixel"]))

    def _fixed_mask(self, x: Value, keep: np.ndarray) -> Value:
        """A bool value, computed from x at run time, true exactly where `keep` is (whatever
        the feed): |x| + c > 0.5 with c = 1 where kept and -(|x|'s bound + 1) elsewhere. The
        selection count of NonZero/Compress then matches the declared shape on every run."""
        magnitude = self.one("Abs", [x.name], x.shape, lo=0, hi=x.magnitude, exact=x.exact)
        shift = np.where(keep, 1.0, -(x.magnitude + 1.0)).astype(np.float32)
        shifted = self.one("Add", [magnitude.name, self.weight(shift, "c")], x.shape, lo=float(shift.min()),
                           hi=x.magnitude + 1)
        return self.one("Greater", [shifted.name, self.weight(np.float32(0.5), "c")], x.shape,
                        dtype=TensorProto.BOOL, exact=True)

    def gen_nonzero(self) -> Value | None:
        """NonZero of a run-time mask with a fixed number of true entries (a graph output)."""
        x = self.pick(lambda v: 1 <= v.rank <= 3 and v.size <= 256)
        if x is None:
            return None
        keep = self.rng.random(x.shape) < 0.4
        mask = self._fixed_mask(x, keep)
        count = int(keep.sum())
        indices = self.one("NonZero", [mask.name], (x.rank, count), dtype=TensorProto.INT64, exact=True)
        self.other.remove(indices)
        self.declared.append(indices)
        return indices

    def gen_compress(self) -> Value | None:
        """Compress of a value along an axis (or flattened) by a run-time condition with a fixed
        number of true entries, computed from another (or the same) value (a graph output)."""
        x = self.pick(lambda v: v.rank >= 1)
        if x is None:
            return None
        axis = None if self.chance(0.3) else int(self.rng.integers(0, x.rank))
        length = x.size if axis is None else x.shape[axis]
        driver = self.pick(lambda v: v.rank == 1 and v.shape[0] <= length)
        if driver is None:
            ends = self.ints([1] * (x.rank - 1) + [length])
            driver = self.one("Slice", [x.name, self.ints([0] * x.rank), ends, self.ints(list(range(x.rank)))],
                              (1,) * (x.rank - 1) + (min(length, x.shape[-1]),), lo=x.lo, hi=x.hi, exact=x.exact)
            driver = self.one("Reshape", [driver.name, self.ints([-1])], (driver.shape[-1],), lo=x.lo, hi=x.hi,
                              exact=x.exact)
        keep = self.rng.random(driver.shape) < 0.6
        condition = self._fixed_mask(driver, keep)
        count = int(keep.sum())
        shape = (count,) if axis is None else tuple(count if d == axis else s for d, s in enumerate(x.shape))
        attributes = {} if axis is None else {"axis": axis - x.rank if self.chance(0.3) else axis}
        compressed = self.one("Compress", [x.name, condition.name], shape, lo=x.lo, hi=x.hi, exact=x.exact,
                              **attributes)
        self.values.remove(compressed)
        self.declared.append(compressed)
        return compressed

    def gen_nms(self) -> Value | None:
        """NonMaxSuppression with run-time scores (an exact [B, C, N] value: the order compares
        them) over constant boxes in isolated groups of one box or two near-duplicates (IoU >
        0.6 > iou_threshold 0.5): one box per group survives whatever the scores, so the
        selected count the model declares holds on every run."""
        scores = self.pick(lambda v: v.exact and v.rank == 3 and 1 <= v.shape[2] <= 12)
        if scores is None:
            return None
        batches, classes, n = scores.shape
        groups, boxes = [], np.zeros((batches, n, 4), np.float32)
        for k in range(n):
            if groups and len(groups[-1]) == 1 and self.chance(0.5):
                groups[-1].append(k)
            else:
                groups.append([k])
        for g, members in enumerate(groups):
            for k in members:
                jitter = self.rng.uniform(-0.1, 0.1, (batches, 4)) if k != members[0] else 0.0
                boxes[:, k] = np.array([0.0, 4.0 * g, 2.0, 4.0 * g + 2.0]) + jitter  # [y1, x1, y2, x2]
        limit = int(self.rng.integers(1, len(groups) + 2))
        count = batches * classes * min(limit, len(groups))
        selected = self.one("NonMaxSuppression", [self.weight(boxes, "b"), scores.name, self.ints([limit]),
                                                  self.weight(np.array([0.5], np.float32), "c")],
                            (count, 3), dtype=TensorProto.INT64, exact=True)
        self.other.remove(selected)
        self.declared.append(selected)
        return selected

    def gen_dft(self) -> Value | None:
        """DFT of a value made real ([..., 1]) along one axis: forward (maybe one-sided, maybe
        zero-padded or truncated by a constant dft_length) or inverse. Continuous; a sum of N
        terms, so |out| <= N * |x|."""
        x = self.pick(lambda v: 1 <= v.rank <= 3 and v.size * 2 <= MAX_ELEMENTS)
        if x is None:
            return None
        signal = self.one("Unsqueeze", [x.name, self.ints([x.rank])], (*x.shape, 1), lo=x.lo, hi=x.hi, exact=x.exact)
        axis = int(self.rng.integers(0, x.rank))
        inverse = int(self.chance(0.3))
        onesided = int(not inverse and self.chance(0.4))
        length = x.shape[axis] + int(self.rng.integers(-1, 3)) if self.chance(0.4) else None
        length = None if length is not None and length < 1 else length
        n = length or x.shape[axis]
        bins = n // 2 + 1 if onesided else n
        out = tuple(bins if d == axis else s for d, s in enumerate(x.shape)) + (2,)
        if np.prod(out) > MAX_ELEMENTS:
            return None
        inputs = [signal.name, self.ints(length) if length is not None else "",
                  self.ints(axis - x.rank - 1 if self.chance(0.3) else axis)]
        bound = x.magnitude * (1 if inverse else n)
        return self.one("DFT", inputs, out, lo=-bound, hi=bound, inverse=inverse, onesided=onesided)

    def gen_stft(self) -> Value | None:
        """STFT of a [B, L] value made real ([B, L, 1]): a constant window (or frame_length only),
        a constant hop, one-sided or not."""
        x = self.pick(lambda v: v.rank == 2 and v.shape[1] >= 2)
        if x is None:
            return None
        batches, length = x.shape
        n = int(self.rng.integers(2, min(length, 12) + 1))
        step = int(self.rng.integers(1, n + 1))
        frames = (length - n) // step + 1
        onesided = int(self.chance(0.5))
        bins = n // 2 + 1 if onesided else n
        if batches * frames * bins * 2 > MAX_ELEMENTS:
            return None
        signal = self.one("Unsqueeze", [x.name, self.ints([2])], (batches, length, 1), lo=x.lo, hi=x.hi,
                          exact=x.exact)
        window = self.weight(self.uniform((n,), 0.0, 1.0), "w") if self.chance(0.6) else ""
        inputs = [signal.name, self.ints(step), window] + ([] if window else [self.ints(n)])
        bound = x.magnitude * n
        return self.one("STFT", inputs, (batches, frames, bins, 2), lo=-bound, hi=bound, onesided=onesided)

    def gen_deform_conv(self) -> Value | None:
        """DeformConv of a [N, C, H, W] value with constant weights, offsets up to 2 pixels (some
        taps leave the image: bilinear with zeros is continuous there), optional bias and mask,
        any group / offset_group that divides the channels, stride, dilation and pads."""
        x = self.pick(lambda v: v.rank == 4 and v.shape[2] >= 2 and v.shape[3] >= 2)
        if x is None:
            return None
        n, channels, height, width = x.shape
        group = self.choice([g for g in (1, 2) if channels % g == 0])
        offset_group = self.choice([g for g in (1, 2) if channels % g == 0])
        out_channels = group * int(self.rng.integers(1, 4))
        k = int(self.rng.integers(1, 4))
        stride, dilation, pad = int(self.rng.integers(1, 3)), int(self.rng.integers(1, 3)), int(self.rng.integers(0, 2))
        oh = (height + 2 * pad - dilation * (k - 1) - 1) // stride + 1
        ow = (width + 2 * pad - dilation * (k - 1) - 1) // stride + 1
        if oh < 1 or ow < 1 or n * channels * k * k * oh * ow > MAX_ELEMENTS:
            return None
        w = self.uniform((out_channels, channels // group, k, k), -0.5, 0.5)
        inputs = [x.name, self.weight(w), self.weight(self.uniform((n, offset_group * k * k * 2, oh, ow), -2, 2), "o")]
        inputs.append(self.weight(self.uniform((out_channels,), -0.5, 0.5), "b") if self.chance(0.5) else "")
        if self.chance(0.5):
            inputs.append(self.weight(self.uniform((n, offset_group * k * k, oh, ow), 0, 1), "m"))
        while inputs[-1] == "":
            inputs.pop()
        bound = x.magnitude * float(np.max(np.sum(np.abs(w).reshape(out_channels, -1), axis=1))) + 0.5
        return self.one("DeformConv", inputs, (n, out_channels, oh, ow), lo=-bound, hi=bound, group=group,
                        offset_group=offset_group, kernel_shape=[k, k], strides=[stride] * 2,
                        dilations=[dilation] * 2, pads=[pad] * 4)

    def gen_tfidf(self) -> Value | None:
        """TfIdfVectorizer over a new int64 graph input (tokens in the feeds' [-3, 4)): a pool of
        1- to 3-grams of those tokens, any skips; TF in shuffled columns, IDF/TFIDF weighted."""
        rows, length = int(self.rng.integers(1, 4)), int(self.rng.integers(1, 10))
        x = self.graph_input((rows, length) if self.chance(0.7) else (length,), dtype=TensorProto.INT64)
        wanted = [int(self.rng.integers(1, 4)), int(self.rng.integers(0, 4)), int(self.rng.integers(0, 3))]
        by_size = [sorted({tuple(int(t) for t in self.rng.integers(-3, 4, size)) for _ in range(k)})
                   for size, k in enumerate(wanted, 1)]  # no duplicate n-gram: onnxruntime refuses one
        counts = [len(g) for g in by_size]
        pool = [t for grams_of_size in by_size for gram in grams_of_size for t in gram]
        grams = sum(counts)
        low = int(self.rng.integers(1, 4))
        high = int(self.rng.integers(low, 4))
        columns = self.rng.permutation(grams + int(self.rng.integers(0, 3)))[:grams].tolist()
        mode = self.choice(["TF", "IDF", "TFIDF"])
        attributes = {"mode": mode, "min_gram_length": low, "max_gram_length": high,
                      "max_skip_count": int(self.rng.integers(0, 3)), "pool_int64s": pool,
                      "ngram_counts": [0, counts[0], counts[0] + 2 * counts[1]], "ngram_indexes": columns}
        if mode != "TF":  # onnx.reference (the `reference` target) fails without weights, and takes
            # weights[column] where the spec and onnxruntime take weights[n-gram]: identity columns
            attributes["weights"] = self.uniform((grams,), 0.5, 2.0).tolist()
            attributes["ngram_indexes"] = columns = list(range(grams))
        width = max(columns) + 1
        shape = (rows, width) if x.rank == 2 else (width,)
        bound = 2.0 * length * (attributes["max_skip_count"] + 1)
        return self.one("TfIdfVectorizer", [x.name], shape, lo=0, hi=bound, exact=mode == "TF", **attributes)

    def gen_mel_weight_matrix(self) -> Value | None:
        """MelWeightMatrix whose parameters reach it at run time (0 * sum(x) + a constant: import
        cannot fold them), so its lowering computes the filter bank; the sizes are the constants'."""
        x = self.pick(lambda v: v.rank >= 1)
        if x is None:
            return None
        total = self.one("ReduceSum", [x.name], (), keepdims=0, lo=-x.magnitude * x.size, hi=x.magnitude * x.size,
                         exact=False)
        zero = self.one("Mul", [total.name, self.weight(np.float32(0.0), "c")], (), lo=0, hi=0)
        mels, length = int(self.rng.integers(1, 12)), int(self.choice([8, 16, 30, 64]))
        rate = int(self.choice([8000, 16000, 22050]))
        low = float(self.rng.uniform(0, 300))
        high = float(self.rng.uniform(low + 100, rate / 2))

        def runtime(value: float, dtype) -> str:
            shifted = self.one("Add", [zero.name, self.weight(np.float32(value), "c")], (), lo=value, hi=value)
            if dtype == FLOAT:
                return shifted.name
            return self.one("Cast", [shifted.name], (), to=dtype, dtype=dtype, exact=True).name

        inputs = [runtime(mels, TensorProto.INT64), runtime(length, TensorProto.INT64),
                  runtime(rate, TensorProto.INT64), runtime(low, FLOAT), runtime(high, FLOAT)]
        return self.one("MelWeightMatrix", inputs, (length // 2 + 1, mels), lo=0, hi=1)

    def gen_optional_get_element(self) -> Value | None:
        """OptionalGetElement of a plain tensor: the tensor (written as an Identity at import)."""
        x = self.pick()
        if x is None:
            return None
        return self.one("OptionalGetElement", [x.name], x.shape, lo=x.lo, hi=x.hi, exact=x.exact)

    def gen_tree_ensemble(self) -> Value | None:
        """TreeEnsemble (ai.onnx.ml 5) of an exact [B, F] value (its comparisons are
        discontinuous): one to three random trees of depth 1-3, modes LEQ..NEQ (no MEMBER:
        onnxruntime truncates the feature to an integer there), SUM or AVERAGE (for MIN/MAX the
        `reference` target, onnx.reference, leaves the type's max/min where no tree reaches a
        target, onnxruntime and dlc 0)."""
        x = self.pick(lambda v: v.exact and v.rank == 2 and v.shape[1] >= 1)
        if x is None:
            return None
        features, targets = x.shape[1], int(self.rng.integers(1, 4))
        table = {"modes": [], "features": [], "splits": [], "true": [], "true_leaf": [], "false": [],
                 "false_leaf": []}
        leaves: list[tuple[int, float]] = []

        def grow(depth: int) -> tuple[int, int]:  # (id, is a leaf)
            if depth == 0 or (depth < 3 and self.chance(0.25)):
                leaves.append((int(self.rng.integers(0, targets)), float(self.rng.uniform(-1, 1))))
                return len(leaves) - 1, 1
            k = len(table["modes"])
            for key in table:
                table[key].append(0)
            table["modes"][k] = int(self.rng.integers(0, 6))
            table["features"][k] = int(self.rng.integers(0, features))
            table["splits"][k] = float(np.float32(self.rng.uniform(x.lo, x.hi)))
            table["true"][k], table["true_leaf"][k] = grow(depth - 1)
            table["false"][k], table["false_leaf"][k] = grow(depth - 1)
            return k, 0

        roots = []
        for _ in range(int(self.rng.integers(1, 4))):
            root, leaf = grow(int(self.rng.integers(1, 4)))
            if leaf:
                return None  # a root must be a node
            roots.append(root)
        tensor = helper.make_tensor
        aggregate = int(self.rng.integers(0, 2))  # onnx.reference (`reference`) differs on MIN/MAX
        node_count = len(table["modes"])
        y = self.emit("TreeEnsemble", [x.name], [(x.shape[0], targets)], lo=-3, hi=3, exact=False,
                      domain="ai.onnx.ml", n_targets=targets, aggregate_function=aggregate, tree_roots=roots,
                      nodes_modes=tensor("m", TensorProto.UINT8, [node_count], table["modes"]),
                      nodes_featureids=table["features"],
                      nodes_splits=tensor("s", TensorProto.FLOAT, [node_count], table["splits"]),
                      nodes_truenodeids=table["true"], nodes_trueleafs=table["true_leaf"],
                      nodes_falsenodeids=table["false"], nodes_falseleafs=table["false_leaf"],
                      leaf_targetids=[t for t, _ in leaves],
                      leaf_weights=tensor("w", TensorProto.FLOAT, [len(leaves)], [w for _, w in leaves]))[0]
        self.uses_ml = True
        return y

    def gen_recurrent(self) -> Value | None:
        """LSTM, GRU or RNN over a rank-3 value read as [seq, batch, features]: any direction,
        optional bias, initial state, peepholes, clip, GRU's linear_before_reset. Default
        activations keep Y and Y_h in (-1, 1). Layout 0 only: onnxruntime refuses layout 1."""
        x = self.pick(lambda v: v.rank == 3 and v.shape[2] <= 32)
        if x is None:
            return None
        kind = self.choice(["LSTM", "GRU", "RNN"])
        steps, batch, features = x.shape
        hidden = int(self.rng.integers(1, 9))
        direction = self.choice(["forward", "reverse", "bidirectional"])
        dirs, width = (2 if direction == "bidirectional" else 1), {"LSTM": 4, "GRU": 3, "RNN": 1}[kind] * hidden
        inputs = [x.name, self.weight(self.uniform((dirs, width, features), -0.5, 0.5)),
                  self.weight(self.uniform((dirs, width, hidden), -0.5, 0.5))]
        inputs += ["", "", "", "", ""]  # B, sequence_lens, initial_h, initial_c, P
        if self.chance(0.7):
            inputs[3] = self.weight(self.uniform((dirs, 2 * width), -0.5, 0.5))
        if self.chance(0.4):
            inputs[5] = self.weight(self.uniform((dirs, batch, hidden)))
        if kind == "LSTM" and self.chance(0.3):
            inputs[7] = self.weight(self.uniform((dirs, 3 * hidden), -0.5, 0.5))
        while inputs[-1] == "":
            inputs.pop()
        attributes = {"hidden_size": hidden, "direction": direction}
        if self.chance(0.2):
            attributes["clip"] = self.choice([0.5, 2.0])
        if kind == "GRU":
            attributes["linear_before_reset"] = int(self.chance(0.5))
        y, y_h = self.emit(kind, inputs, [(steps, dirs, batch, hidden), (dirs, batch, hidden)], lo=-1, hi=1,
                           **attributes)
        return self.choice([y, y_h])

    def gen_quantize(self) -> Value | None:
        """QuantizeLinear -> DequantizeLinear (per tensor or per axis, int8 or uint8): the
        round trip of a quantize_static model. Rounding is discontinuous, so the input is exact;
        its output would be too (one division and rounding, one multiply), but is not marked so:
        onnxruntime's optimised session drops a DequantizeLinear -> QuantizeLinear pair of other
        scales (and moves pairs across views), which changes the values a second rounding sees."""
        x = self.pick(lambda v: v.exact and v.rank >= 1)
        if x is None:
            return None
        signed = self.chance(0.5)
        axis = int(self.rng.integers(0, x.rank))
        per_axis = self.chance(0.4)
        count = (x.shape[axis],) if per_axis else ()
        scale = (self.rng.uniform(0.5, 2.0, count) * max(x.magnitude, 0.1) / 100).astype(np.float32)
        zero = self.rng.integers(-20, 20, count) + (0 if signed else 128)
        zero = zero.astype(np.int8 if signed else np.uint8)
        attributes = {"axis": axis} if per_axis else {}
        inputs = [self.weight(scale, "s"), self.weight(zero, "z")]
        q = self.one("QuantizeLinear", [x.name, *inputs], x.shape, exact=True,
                     dtype=TensorProto.INT8 if signed else TensorProto.UINT8, **attributes)
        bound = float(np.max(scale)) * 300
        return self.one("DequantizeLinear", [q.name, *inputs], x.shape, lo=max(x.lo, -bound) - 1,
                        hi=min(x.hi, bound) + 1, **attributes)

    def gen_dynamic_matmul(self) -> Value | None:
        """What quantize_dynamic writes for a MatMul: DynamicQuantizeLinear, MatMulInteger with
        int8 weights, Cast, Mul by the scales. Weights in [-64, 63] (reduce_range): onnxruntime's
        AVX2 u8 x s8 kernel saturates pairs of products to int16 past that."""
        a = self.pick(lambda v: v.exact and 2 <= v.rank <= 3)
        if a is None:
            return None
        k, n = a.shape[-1], self.width()
        out = (*a.shape[:-1], n)
        if np.prod(out) > MAX_ELEMENTS:
            return None
        w_scale = np.float32(1 / (64 * math.sqrt(k)))
        aq, a_scale, a_zero = self.emit("DynamicQuantizeLinear", [a.name], [a.shape, (), ()],
                                        dtype=TensorProto.UINT8, exact=True)
        a_scale.dtype = FLOAT
        w = self.weight(self.rng.integers(-64, 64, (k, n)).astype(np.int8), "w")
        # |sum over k of (aq - zero) * w| <= k * 255 * 64: the bound that consumers of the Cast
        # (a Compress mask computed from it, say) rely on; the default +-2 made a mask wrong
        reach = float(k * 255 * 64)
        acc = self.one("MatMulInteger", [aq.name, w, a_zero.name], out, lo=-reach, hi=reach,
                       dtype=TensorProto.INT32, exact=True)
        as_float = self.one("Cast", [acc.name], out, lo=-reach, hi=reach, to=FLOAT, exact=True)
        scale = self.one("Mul", [a_scale.name, self.weight(w_scale, "s")], (), exact=True)
        bound = 2 * max(a.magnitude, 0.1) * math.sqrt(k)
        return self.one("Mul", [as_float.name, scale.name], out, lo=-bound, hi=bound)

    def gen_lpnorm(self) -> Value | None:
        """p=2 only: onnx.reference (the `reference` target) sums x, not |x|, for p=1."""
        x = self.pick(lambda v: v.rank >= 1)
        if x is None:
            return None
        return self.one("LpNormalization", [x.name], x.shape, lo=-1, hi=1,
                        axis=int(self.rng.integers(-x.rank, x.rank)), p=2)

    def gen_pattern(self) -> Value | None:
        """Exporter-style decomposed chains that fusion should turn into one kernel."""
        x = self.pick(lambda v: v.rank >= 1)
        shape = x.shape
        kind = self.choice(["gelu_erf", "gelu_tanh", "layernorm", "softmax", "silu"])
        c = lambda v: self.weight(np.float32(v), "c")
        if kind == "silu":
            gate = self.one("Sigmoid", [x.name], shape, lo=0, hi=1)
            return self.one("Mul", [x.name, gate.name], shape, lo=-0.3, hi=max(x.hi, 0) + 0.1)
        if kind == "gelu_erf":
            scaled = self.one("Div", [x.name, c(math.sqrt(2))], shape, lo=x.lo, hi=x.hi)
            erf = self.one("Erf", [scaled.name], shape, lo=-1, hi=1)
            one_plus = self.one("Add", [erf.name, c(1.0)], shape, lo=0, hi=2)
            product = self.one("Mul", [x.name, one_plus.name], shape, lo=-x.magnitude * 2, hi=x.magnitude * 2)
            lo, hi = _range_of(_gelu, x.lo, x.hi)
            return self.one("Mul", [product.name, c(0.5)], shape, lo=lo, hi=hi)
        if kind == "gelu_tanh":
            if x.magnitude > 4:
                x = self.squash(x)
            m = x.magnitude
            cube = self.one("Pow", [x.name, c(3.0)], shape, lo=-m**3, hi=m**3)
            inner = self.one("Mul", [cube.name, c(0.044715)], shape, lo=-m**3, hi=m**3)
            summed = self.one("Add", [x.name, inner.name], shape, lo=-2 * m**3 - m, hi=2 * m**3 + m)
            scaled = self.one("Mul", [summed.name, c(math.sqrt(2 / math.pi))], shape, lo=summed.lo,
                              hi=summed.hi)
            tanh = self.one("Tanh", [scaled.name], shape, lo=-1, hi=1)
            one_plus = self.one("Add", [tanh.name, c(1.0)], shape, lo=0, hi=2)
            half = self.one("Mul", [x.name, c(0.5)], shape, lo=-m, hi=m)
            return self.one("Mul", [half.name, one_plus.name], shape, lo=-2 * m, hi=2 * m)
        axes = self.ints([-1])
        if kind == "softmax":
            peak = self.one("ReduceMax", [x.name, axes], shape[:-1] + (1,), lo=x.lo, hi=x.hi)
            shifted = self.one("Sub", [x.name, peak.name], shape, lo=x.lo - x.hi, hi=0)
            e = self.one("Exp", [shifted.name], shape, lo=0, hi=1)
            total = self.one("ReduceSum", [e.name, axes], shape[:-1] + (1,), lo=1, hi=shape[-1])
            return self.one("Div", [e.name, total.name], shape, lo=0, hi=1)
        if shape[-1] < 2:
            return None
        mean = self.one("ReduceMean", [x.name, axes], shape[:-1] + (1,), lo=x.lo, hi=x.hi)
        centred = self.one("Sub", [x.name, mean.name], shape, lo=x.lo - x.hi, hi=x.hi - x.lo)
        square = self.one("Mul", [centred.name, centred.name], shape, lo=0, hi=centred.hi ** 2)
        var = self.one("ReduceMean", [square.name, axes], shape[:-1] + (1,), lo=0, hi=square.hi)
        shifted = self.one("Add", [var.name, c(1e-3)], var.shape, lo=1e-3, hi=var.hi + 1e-3)
        std = self.one("Sqrt", [shifted.name], var.shape, lo=math.sqrt(1e-3), hi=math.sqrt(shifted.hi))
        bound = math.sqrt(shape[-1])
        return self.one("Div", [centred.name, std.name], shape, lo=-bound, hi=bound)

    GENERATORS: ClassVar[dict[str, int]] = {  # name -> relative frequency
        "unary": 14, "binary": 14, "clip": 3, "variadic": 2, "pow": 2, "where": 3, "cast": 2,
        "matmul": 8, "gemm": 5, "conv": 8, "pool": 5, "batchnorm": 3, "softmax": 4, "reduce": 5,
        "transpose": 4, "reshape": 4, "flatten": 2, "squeeze": 2, "concat": 4, "slice": 4, "split": 3,
        "layernorm": 3, "pattern": 5, "pad": 2, "expand": 2, "gather": 2, "instancenorm": 1, "argmax": 1,
        "topk": 1, "cumsum": 1, "scatter": 1, "lpnorm": 1, "recurrent": 1, "quantize": 2, "dynamic_matmul": 1,
    }
    # Drawn apart from GENERATORS (see generate): one model in CONTROL_FLOW_SHARE gets one.
    CONTROL_FLOW_SHARE: ClassVar[float] = 0.1
    # Operators that joined after the tests pinned their seeds' models, drawn apart too: one model
    # in LATER_SHARE gets one of these.
    LATER: ClassVar[dict[str, int]] = {"mod": 1, "det": 1, "center_crop_pad": 1, "max_pool_indices": 1}
    LATER_SHARE: ClassVar[float] = 0.15
    # Issue 18's sampling and selection operators, a stream of their own again (the models of
    # every seed before them stay as they were).
    SAMPLING: ClassVar[dict[str, int]] = {"grid_sample": 1, "roi_align": 1, "nonzero": 1, "compress": 1, "nms": 1,
                                          "dft": 1, "stft": 1, "deform_conv": 1,
                                          "tfidf": 1, "mel_weight_matrix": 1,
                                          "optional_get_element": 1, "tree_ensemble": 1}
    SAMPLING_SHARE: ClassVar[float] = 0.1

    def model(self, name: str) -> onnx.ModelProto:
        produced = [v for v in self.values + self.other if v.name not in {i.name for i in self.inputs}]
        sinks = [v for v in produced if v.name not in self.consumed]
        outputs = sinks[-4:] or produced[-1:]
        outputs += [v for v in self.declared if v not in outputs]
        shared = [v for v in produced if v.name in self.consumed and v not in outputs]
        if shared and self.chance(0.3):  # an output that other nodes also read
            outputs.append(self.choice(shared))
        graph = helper.make_graph(self.nodes, name, self.inputs,
                                  [helper.make_tensor_value_info(v.name, v.dtype, list(v.shape))
                                   for v in outputs], self.initializers)
        opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("ai.onnx.ml", 5)] if self.uses_ml else [])
        return helper.make_model(graph, opset_imports=opsets, producer_name="dlc.tools.fuzz")


def _matmul_shape(a: tuple, b: tuple) -> tuple[int, ...] | None:
    a2, b2 = (1, *a) if len(a) == 1 else a, (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        return None
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    if batch is None:
        return None
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return tuple(out)


def _conv_out_auto(spatial, kernel, strides, dilations, auto_pad) -> list[int]:
    if auto_pad == "VALID":
        return [(d - dil * (k - 1) - 1) // s + 1 for d, k, s, dil in zip(spatial, kernel, strides, dilations)]
    return [-(-d // s) for d, s in zip(spatial, strides)]


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while n > 1 and p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors + ([n] if n > 1 else [])


# Generators whose graphs are fusion material: contractions with epilogues, elementwise
# chains, reductions and the decomposed patterns exporters write (tests/test_fusion_differential.py).
FUSION_PRONE = ("unary", "binary", "clip", "matmul", "gemm", "conv", "softmax", "reduce", "reshape",
                "transpose", "layernorm", "pattern")


def generate(seed: int, max_nodes: int = 10, kinds: tuple[str, ...] | None = None) -> onnx.ModelProto:
    """A random valid model (checked), deterministic in `seed`; `kinds` limits the generators
    (keys of GraphBuilder.GENERATORS)."""
    rng = np.random.default_rng(seed)
    builder = GraphBuilder(rng)
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.5:
            shape = (int(rng.integers(1, 3)), int(rng.integers(1, 9)), *[int(rng.integers(3, 9))
                                                                           for _ in range(rng.integers(1, 3))])
        else:
            shape = tuple(int(rng.integers(1, 9)) for _ in range(int(rng.integers(1, 5))))
            if rng.random() < 0.25:  # rows x features past the GEMM micro-kernel's register block
                shape = (int(rng.integers(1, 40)), int(rng.integers(9, 100)))
        builder.graph_input(shape)
    names = [k for k in GraphBuilder.GENERATORS if kinds is None or k in kinds]
    if kinds is not None:
        names += [k for k in ("control_flow", *GraphBuilder.LATER, *GraphBuilder.SAMPLING) if k in kinds]
    weights = np.array([GraphBuilder.GENERATORS.get(k, 1) for k in names], float)
    target = int(rng.integers(2, max_nodes + 1))
    attempts = 0
    while len(builder.nodes) < target and attempts < 10 * max_nodes:
        attempts += 1
        before = (len(builder.nodes), len(builder.values), len(builder.other), len(builder.initializers),
                  len(builder.inputs))
        generator = getattr(builder, "gen_" + names[int(rng.choice(len(names), p=weights / weights.sum()))])
        if generator() is None:  # no suitable operand: undo whatever it had started
            builder.nodes[before[0]:] = []
            builder.values[before[1]:] = []
            builder.other[before[2]:] = []
            builder.initializers[before[3]:] = []
            builder.inputs[before[4]:] = []
    # If, Loop and Scan come from a stream of their own, so every other seed keeps the model
    # the tests and the corpus pinned before control flow joined.
    side = np.random.default_rng([seed, 18])
    if kinds is None and side.random() < GraphBuilder.CONTROL_FLOW_SHARE:
        builder.rng, main = side, builder.rng
        builder.gen_control_flow()
        builder.rng = main
    later = np.random.default_rng([seed, 19])
    if kinds is None and later.random() < GraphBuilder.LATER_SHARE:
        builder.rng, main = later, builder.rng
        getattr(builder, "gen_" + builder.choice(list(GraphBuilder.LATER)))()
        builder.rng = main
    sampling = np.random.default_rng([seed, 20])
    if kinds is None and sampling.random() < GraphBuilder.SAMPLING_SHARE:
        builder.rng, main = sampling, builder.rng
        getattr(builder, "gen_" + builder.choice(list(GraphBuilder.SAMPLING)))()
        builder.rng = main
    model = builder.model(f"fuzz{seed}")
    validate(model, {v.name: v for v in builder.values + builder.other})
    return model


def validate(model: onnx.ModelProto, tracked: dict[str, Value] | None = None) -> onnx.ModelProto:
    """onnx.checker + strict shape inference; the inferred shapes must be the tracked ones."""
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as error:  # noqa: BLE001 (checker and inference raise several kinds)
        raise GeneratorError(f"{model.graph.name}: invalid model: {str(error).strip()[:400]}") from None
    if tracked:
        for info in list(inferred.graph.value_info) + list(inferred.graph.output):
            value = tracked.get(info.name)
            # an unknown dim (what NonZero/Compress leave to their declared value_info) matches any
            shape = tuple(d.dim_value if d.HasField("dim_value") else v
                          for d, v in zip(info.type.tensor_type.shape.dim, value.shape if value else ()))
            if value is not None and info.type.tensor_type.HasField("shape") and shape != value.shape:
                raise GeneratorError(f"{model.graph.name}: '{info.name}' tracked as {value.shape}, "
                                     f"onnx infers {shape}")
    return inferred
