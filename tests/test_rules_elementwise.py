"""Elementwise, comparison/logic and cast rules: dlc vs onnxruntime on seeded inputs.

Each test compiles ONE model holding many nodes (one graph output per node, named after
it) to keep compile time low; inputs mix random values with NaN, +-inf, +-0 and halves.
Where onnxruntime has no kernel for a dtype the spec allows, onnx.reference is the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_onnxruntime
from onnx import helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from dialects.diagnostics import UnsupportedError

OPSET = 21
F32, F64, I32, I64, BOOL = (np.dtype(t) for t in ("float32", "float64", "int32", "int64", "bool"))
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -2.5, 100.0, -100.0]

# Tolerances, (rtol, atol):
EXACT = (0, 0)  # IEEE-exact ops, or the same formula onnxruntime evaluates: bit-equal
LIBM = (1e-6, 0)  # libm here vs Eigen/libm in onnxruntime: each within ~2 ulp (1.2e-7 each)
# MLAS's polynomial sigmoid/tanh/erf lose relative accuracy in their tails (sigmoid(-100)
# is 1e-8 there, 4e-44 here), and exp(x) - 1 cancels near 0 in both (Elu: 3e-4 relative, 6e-8
# absolute measured): so an absolute bound of ~10 ulp of 1 on top of the relative one.
APPROX = (1e-6, 1e-6)


def _node(out: str, op_type: str, inputs: list[str], **attrs):
    return helper.make_node(op_type, inputs, [out], name=out, **attrs)


def _model(nodes, inputs: dict[str, np.ndarray], constants: dict[str, np.ndarray] | None = None):
    """A model over `inputs` (their dtypes and shapes) whose outputs are every node's output,
    typed by onnx shape inference."""
    graph = helper.make_graph(
        nodes, "elementwise",
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for name, v in inputs.items()],
        [], [numpy_helper.from_array(v, name) for name, v in (constants or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    inferred = {v.name: v for v in shape_inference.infer_shapes(model, strict_mode=True).graph.value_info}
    model.graph.output.extend(inferred[node.output[0]] for node in nodes)
    return model


def _check(model, feeds, tolerance=EXACT, oracle: str = "onnxruntime", per_output=None) -> None:
    """Every output of `model` equals the oracle's (NaN where it has NaN), dtype and shape too."""
    import dlc

    if oracle == "onnxruntime":
        expected = run_onnxruntime(model, feeds)
    else:
        expected = ReferenceEvaluator(model).run(None, feeds)
    actual = dlc.compile(model).run(feeds)
    for name, want in zip(actual, expected):
        got = actual[name]
        assert got.shape == want.shape and got.dtype == want.dtype, f"{name}: {got.dtype}{got.shape}"
        rtol, atol = (per_output or {}).get(name, tolerance)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"output {name}")


def _floats(shape, dtype=F32, seed=0, low=-4.0, high=4.0) -> np.ndarray:
    """Uniform values with the special values first (as many as fit)."""
    x = np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)
    n = min(x.size, len(SPECIAL))
    x.reshape(-1)[:n] = SPECIAL[:n]
    return x


def _ints(shape, dtype=I32, seed=0, low=-9, high=9, nonzero=False) -> np.ndarray:
    x = np.random.default_rng(seed).integers(low, high + 1, shape).astype(dtype)
    if nonzero:
        x[x == 0] = 1
    return x


# --- Unary ------------------------------------------------------------------------------------

# (output name, op type, attributes), grouped by the tolerance they are held to.
UNARY_F32 = {
    "exact": (EXACT, [
        ("Abs", "Abs", {}), ("Neg", "Neg", {}), ("Sqrt", "Sqrt", {}), ("Reciprocal", "Reciprocal", {}),
        ("Floor", "Floor", {}), ("Ceil", "Ceil", {}), ("Round", "Round", {}), ("Sign", "Sign", {}),
        ("Relu", "Relu", {}), ("LeakyRelu", "LeakyRelu", {}),
        ("LeakyRelu_a", "LeakyRelu", {"alpha": 0.3}),
        ("ThresholdedRelu", "ThresholdedRelu", {}),
        ("ThresholdedRelu_a", "ThresholdedRelu", {"alpha": -0.5}),
        ("Shrink", "Shrink", {}), ("Shrink_lb", "Shrink", {"lambd": 1.5, "bias": 0.25}),
    ]),
    # Softsign is here too: onnxruntime's x / (1 + |x|) is 1 ulp off the IEEE quotient.
    "libm": (LIBM, [(op, op, {}) for op in (
        "Exp", "Log", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan",
        "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Softsign")]),
    "approximated": (APPROX, [
        ("Sigmoid", "Sigmoid", {}), ("Tanh", "Tanh", {}), ("Erf", "Erf", {}),
        ("Elu", "Elu", {}), ("Elu_a", "Elu", {"alpha": 0.5}), ("Selu", "Selu", {}),
        ("Selu_ag", "Selu", {"alpha": 2.0, "gamma": 0.5}), ("Celu", "Celu", {}),
        ("Celu_a", "Celu", {"alpha": 2.0}), ("HardSigmoid", "HardSigmoid", {}),
        ("HardSigmoid_ab", "HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
        ("HardSwish", "HardSwish", {}), ("Softplus", "Softplus", {}), ("Mish", "Mish", {}),
        ("Gelu", "Gelu", {}), ("Gelu_tanh", "Gelu", {"approximate": "tanh"}),
    ]),
}


@pytest.mark.parametrize("group", UNARY_F32)
def test_unary_float32(group):
    tolerance, specs = UNARY_F32[group]
    x = _floats([4, 50], low=-6, high=6)
    model = _model([_node(out, op, ["x"], **attrs) for out, op, attrs in specs],
                   {"x": x})
    _check(model, {"x": x}, tolerance)


# onnxruntime's double kernels (its double Shrink computes in float, so it is left out);
# LIBM's 1e-6 would hide a float32 computation, so 1e-13.
UNARY_F64 = ["Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
             "Sin", "Cos", "Relu", "Tanh", "Sigmoid"]


def test_unary_float64():
    x = _floats([4, 25], F64, low=-6, high=6)
    model = _model([_node(op, op, ["x"]) for op in UNARY_F64], {"x": x})
    # Sigmoid's tail: onnxruntime's double sigmoid differs as float32's does (see APPROX).
    _check(model, {"x": x}, (1e-13, 0), per_output={"Sigmoid": (1e-13, 1e-15)})


@pytest.mark.parametrize("dtype", [I32, I64], ids=str)
def test_unary_int(dtype):
    ops = ["Abs", "Neg", "Sign", "Shrink", "Relu"]
    x = _ints([3, 7], dtype)
    model = _model([_node(op, op, ["x"], **({"lambd": 2.0, "bias": 1.0} if op == "Shrink" else {}))
                    for op in ops], {"x": x})
    # onnxruntime has no int64 Relu kernel.
    _check(model, {"x": x}, oracle="onnxruntime" if dtype == I32 else "reference")


# --- Binary and variadic ----------------------------------------------------------------------

BROADCASTS = {  # x shape, y shape
    "same": ([2, 3, 4], [2, 3, 4]),
    "scalar": ([2, 3], []),
    "outer": ([3, 1], [1, 4]),
    "per_channel": ([2, 3, 4, 5], [1, 3, 1, 1]),
    "rank_change": ([4], [2, 3, 4]),
}
BINARY_F32 = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"]


@pytest.mark.parametrize("shapes", BROADCASTS)
def test_binary_float32(shapes):
    x_shape, y_shape = BROADCASTS[shapes]
    feeds = {"x": _floats(x_shape, seed=1), "y": np.array(np.flip(_floats(y_shape, seed=2)))}
    model = _model([_node(op, op, ["x", "y"]) for op in BINARY_F32], feeds)
    # Pow is libm's powf on both sides; Mean may multiply by 1/n instead of dividing.
    _check(model, feeds, per_output={"Pow": LIBM, "Mean": LIBM})


def test_binary_float64():
    ops = ["Add", "Div", "Pow", "Max", "Min", "Sum"]
    feeds = {"x": _floats([3, 1], F64, seed=1), "y": _floats([1, 5], F64, seed=2)}
    model = _model([_node(op, op, ["x", "y"]) for op in ops], feeds)
    _check(model, feeds, per_output={"Pow": (1e-14, 0)})


@pytest.mark.parametrize("dtype", [I32, I64], ids=str)
def test_binary_int(dtype):
    ops = [("Add", {}), ("Sub", {}), ("Mul", {}), ("Div", {}), ("Max", {}), ("Min", {}),
           ("Mod", {}), ("Mod_fmod", {"fmod": 1}), ("Pow", {})]
    # Negative dividends and divisors check C truncation (Div) and both Mod sign rules.
    feeds = {"x": _ints([3, 1, 4], dtype, seed=1), "y": _ints([5, 1], dtype, seed=2, low=-3, high=4,
                                                              nonzero=True)}
    nodes = [_node(out, out.split("_")[0], ["x", "y"], **attrs) for out, attrs in ops]
    model = _model(nodes, feeds)
    _check(model, feeds)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_float_mod(dtype):
    """Both sign rules on floats: fmod=1 is C fmod (arith.remf, LLVM frem), fmod=0 takes the
    divisor's sign (-3 mod inf = inf, 0 mod -2 = -0). Both are exact: the remainder of two
    floats is a float, so the outputs are equal, special values (inf, NaN, +-0, y = 0) included.
    Float fmod=0 is valid from opset 28 on (onnxruntime refuses it before); dlc computes it at
    any opset, the one meaning it has."""
    x = _floats([6, 7], dtype, seed=5, low=-20, high=20)
    y = np.array(np.flip(_floats([6, 7], dtype, seed=6, low=-5, high=5)))
    y[0, :2] = 0
    feeds = {"x": x, "y": y}
    model = _model([_node("python", "Mod", ["x", "y"]), _node("c", "Mod", ["x", "y"], fmod=1)], feeds)
    model.opset_import[0].version = 28
    import dlc

    got = dlc.compile(model).run(feeds)
    for name, want in zip(["python", "c"], run_onnxruntime(model, feeds)):
        assert got[name].dtype == want.dtype
        np.testing.assert_array_equal(got[name], want, err_msg=name)  # NaN where it has NaN
        np.testing.assert_array_equal(np.signbit(got[name]), np.signbit(want), err_msg=name)


@pytest.mark.parametrize("dtype", ["uint8", "uint32"])
def test_binary_unsigned(dtype):
    """Values above the signed range: a signed division, comparison or max would differ."""
    dtype = np.dtype(dtype)
    top = np.iinfo(dtype).max
    feeds = {"x": np.array([[top, top - 6, 200, 7, 0, 129]], dtype),
             "y": np.array([[3], [130], [top]], dtype)}
    ops = ["Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", *COMPARISONS]
    _check(_model([_node(op, op, ["x", "y"]) for op in ops], feeds), feeds)


def test_pow_mixed_types():
    """Float base, integer exponent and the reverse: onnxruntime computes in double."""
    feeds = {"x": _floats([2, 6], seed=3), "n": _ints([6], I64, low=-3, high=3),
             "i": _ints([2, 6], I32, seed=4, low=-5, high=5), "f": np.full([1], 2.5, F32)}
    nodes = [_node("float_int", "Pow", ["x", "n"]), _node("int_float", "Pow", ["i", "f"])]
    _check(_model(nodes, feeds), feeds)


def test_variadic():
    feeds = {"a": _floats([3, 1], seed=1), "b": _floats([1, 4], seed=2), "c": _floats([], seed=3),
             "d": _floats([2, 3, 4], seed=4)}
    ops = ["Max", "Min", "Sum", "Mean"]
    nodes = [_node(f"{op}_{n}", op, list(feeds)[:n]) for op in ops for n in (1, 2, 4)]
    model = _model(nodes, feeds)
    _check(model, feeds, per_output={f"Mean_{n}": LIBM for n in (2, 4)})


def test_prelu():
    x = _floats([2, 3, 4, 5], seed=5)
    slopes = {"per_channel": _floats([3, 1, 1], seed=6), "scalar": np.array([0.25], F32),
              "full": _floats([2, 3, 4, 5], seed=7)}
    nodes = [_node(name, "PRelu", ["x", name + "_slope"]) for name in slopes]
    model = _model(nodes, {"x": x}, {name + "_slope": v for name, v in slopes.items()})
    _check(model, {"x": x})


def test_prelu_int32():
    x = _ints([2, 3, 4], I32)
    model = _model([_node("y", "PRelu", ["x", "slope"])], {"x": x},
                   {"slope": np.array([[2], [-1], [3]], I32)})
    _check(model, {"x": x}, oracle="reference")  # no int PRelu kernel in onnxruntime


CLIP_BOUNDS = {  # name -> (min, max); None means the input is absent
    "both": (-1.0, 1.5), "min_only": (-0.5, None), "max_only": (None, 0.5), "none": (None, None),
    "nan_min": (np.nan, 1.0), "min_above_max": (1.0, -1.0),
}


@pytest.mark.parametrize("dtype", [F32, F64, I32, I64], ids=str)
def test_clip(dtype):
    integer = dtype.kind == "i"
    x = _ints([3, 8], dtype) if integer else _floats([3, 8], dtype)
    nodes, constants = [], {}
    for name, bounds in CLIP_BOUNDS.items():
        if integer and name == "nan_min":
            continue
        inputs = ["x"]
        for which, bound in zip(("min", "max"), bounds):
            key = f"{name}_{which}"
            inputs.append("" if bound is None else key)
            if bound is not None:
                constants[key] = np.array(int(bound * 4) if integer else bound, dtype)
        nodes.append(_node(name, "Clip", inputs))
    model = _model(nodes, {"x": x}, constants)
    _check(model, {"x": x})


# --- Comparison and logic ---------------------------------------------------------------------

COMPARISONS = ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"]


@pytest.mark.parametrize("dtype", [F32, F64, I32, I64], ids=str)
def test_comparisons(dtype):
    rng = np.random.default_rng(8)
    if dtype.kind == "f":  # few distinct values, so that Equal and the ties are exercised
        values = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5, -2.0], dtype)
        feeds = {"x": rng.choice(values, [7, 1]), "y": values[::-1].reshape(1, 7).copy()}
    else:
        feeds = {"x": _ints([5, 1], dtype, low=-2, high=2), "y": _ints([1, 5], dtype, 1, -2, 2)}
    model = _model([_node(op, op, ["x", "y"]) for op in COMPARISONS], feeds)
    _check(model, feeds)


def test_logic():
    feeds = {"p": _ints([2, 3, 4], BOOL, low=0, high=1), "q": _ints([3, 1], BOOL, 1, 0, 1)}
    nodes = [_node(op, op, ["p", "q"]) for op in ("And", "Or", "Xor", "Equal")]
    nodes.append(_node("Not", "Not", ["p"]))
    _check(_model(nodes, feeds), feeds)


@pytest.mark.parametrize("dtype", [F32, I64, BOOL], ids=str)
def test_where(dtype):
    values = _floats([1, 4], dtype, seed=9) if dtype.kind == "f" else _ints([1, 4], dtype, 9, 0, 1)
    feeds = {"c": _ints([3, 1], BOOL, low=0, high=1), "x": values,
             "y": np.array(7 if dtype.kind != "b" else False, dtype)}
    # onnxruntime has no bool Where kernel.
    _check(_model([_node("w", "Where", ["c", "x", "y"])], feeds), feeds,
           oracle="reference" if dtype == BOOL else "onnxruntime")


def test_isnan_isinf():
    x = _floats([3, 5])
    variants = {"IsInf": {}, "IsInf_pos": {"detect_negative": 0},
                "IsInf_neg": {"detect_positive": 0},
                "IsInf_none": {"detect_positive": 0, "detect_negative": 0}}
    nodes = [_node("IsNaN", "IsNaN", ["x"])]
    nodes += [_node(name, "IsInf", ["x"], **attrs) for name, attrs in variants.items()]
    _check(_model(nodes, {"x": x}), {"x": x})


# --- Cast -------------------------------------------------------------------------------------

CAST_TYPES = [F32, F64, I32, I64, BOOL]


def _cast_source(dtype) -> np.ndarray:
    """Values every target holds: float -> int of NaN, inf or out-of-range values is
    undefined behaviour in C++ (onnxruntime's result is the CPU's), so floats stay finite."""
    if dtype.kind == "f":
        x = np.random.default_rng(10).uniform(-1e4, 1e4, [3, 8]).astype(dtype)
        x.reshape(-1)[:8] = [0.0, -0.0, 0.5, -0.5, 2.5, -2.7, 1e-30, 16777217.0]
        return x
    if dtype == I64:  # beyond int32 (wraps) and beyond 2^24 (float32 rounds)
        return np.random.default_rng(10).integers(-2**40, 2**40, [3, 8]).astype(I64)
    return _ints([3, 8], dtype, low=-1000, high=1000) if dtype.kind == "i" else _ints([3, 8], BOOL,
                                                                                       low=0, high=1)


@pytest.mark.parametrize("source", CAST_TYPES, ids=str)
def test_cast(source):
    x = _cast_source(source)
    nodes = [_node(f"to_{t}", "Cast", ["x"], to=helper.np_dtype_to_tensor_dtype(t)) for t in CAST_TYPES]
    nodes.append(_node("like_i32", "CastLike", ["x", "like"]))
    model = _model(nodes, {"x": x}, {"like": np.zeros([1], I32)})
    _check(model, {"x": x})


def test_cast_special_floats():
    x = _floats([2, 7])
    targets = [F64, F32, BOOL]  # NaN is true, like any non-zero value
    nodes = [_node(f"to_{t}", "Cast", ["x"], to=helper.np_dtype_to_tensor_dtype(t)) for t in targets]
    _check(_model(nodes, {"x": x}), {"x": x})


# --- Unsupported ------------------------------------------------------------------------------

UNSUPPORTED = {  # name -> (node, input dtype, message fragment)
    "cast_to_float16": ({"op_type": "Cast", "to": 10}, F32, "f16 tensors"),
    "cast_to_uint64": ({"op_type": "Cast", "to": 13}, F32, "uint64 is not supported"),
    "cast_from_uint64": ({"op_type": "Cast", "to": 1}, np.dtype("uint64"), "uint64 is not supported"),
}


@pytest.mark.parametrize("case", UNSUPPORTED)
def test_unsupported(case):
    import dlc

    attrs, in_dtype, message = UNSUPPORTED[case]
    attrs = dict(attrs)
    op_type = attrs.pop("op_type")
    inputs = ["x", "x"] if op_type == "Mod" else ["x"]
    model = _model([_node("y", op_type, inputs, **attrs)], {"x": np.zeros([2], in_dtype)})
    with pytest.raises(UnsupportedError, match=message):
        dlc.compile(model)
