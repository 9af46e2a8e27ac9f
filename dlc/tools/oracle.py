"""The oracle the tools share: onnxruntime as the reference, the inputs to run a model on, and
how far two correct float implementations of one operator may disagree.

`dlc verify`, the fuzzer, `dlc compare` and `dlc bench` (and benchmarks/) all build their
onnxruntime sessions, draw their inputs and take their per-operator tolerances from here, so
they cannot drift apart. The tolerance model counts roundings, as onnx-mlir's
`--verify-every-value` and NNSmith's oracle do: 0 for operators that copy or select values,
a few ulps for correctly rounded arithmetic, more for transcendentals and ~2K+4 ulps for a
sum of K terms. Each tool then says what the ulps are ulps *of* (verify: each element's own
operands; the fuzzer: the largest value upstream, carried through the graph).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dlc.errors import DlcError

# --- onnxruntime ---------------------------------------------------------------------------------

GRAPH_OPTIMISATION_LEVELS = ("none", "basic", "extended", "all")


def import_onnxruntime():
    """The onnxruntime module, or a DlcError that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise DlcError("this tool needs onnxruntime as the reference, and it is not installed",
                       "install dlc's test extra: pip install 'dlc[test]' (or: pip install onnxruntime)"
                       ) from None
    return onnxruntime


def expose_outputs(model, values: Sequence) -> object:
    """A copy of the onnx `model` with the ValueInfoProtos `values` appended to its graph
    outputs (those not already outputs): how intermediate tensors become observable."""
    import onnx

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(v for v in values if v.name not in present)
    return exposed


def onnxruntime_session(model, *, threads: int = 1, graph_optimisation: str = "all",
                        profile_prefix: str | None = None):
    """An onnxruntime CPU session of `model` (a ModelProto, serialised bytes or a path).

    `threads` intra-op threads and one inter-op thread, as dlc runs. `graph_optimisation`
    is "all" for timing (what a deployment gets) and "none" where every node, and so every
    intermediate name, must survive as written (verify's per-node reference). With
    `profile_prefix` the session records each node's time (`end_profiling()` writes the file).
    """
    ort = import_onnxruntime()
    levels = dict(zip(GRAPH_OPTIMISATION_LEVELS, (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = levels[graph_optimisation]
    options.log_severity_level = 3  # its errors come back as exceptions; warnings are noise here
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = str(model)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_onnxruntime(model, feeds: dict[str, np.ndarray], *, threads: int = 1,
                    graph_optimisation: str = "all") -> dict[str, np.ndarray]:
    """onnxruntime's outputs of `model` on `feeds`, by name (graph output order)."""
    session = onnxruntime_session(model, threads=threads, graph_optimisation=graph_optimisation)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


# --- inputs --------------------------------------------------------------------------------------

def input_specs(model) -> list:
    """The real inputs (not initialisers) of an onnx ModelProto or an onnxruntime session, as
    the runtime's TensorSpecs; a symbolic dimension gets 1."""
    from dlc.runtime.executable import TensorSpec

    if hasattr(model, "get_inputs"):  # an onnxruntime session: types are "tensor(float)" etc.
        return [TensorSpec(i.name, tuple(d if isinstance(d, int) else 1 for d in i.shape),
                           _ORT_TYPES[i.type]) for i in model.get_inputs()]
    from onnx import helper

    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim)
        specs.append(TensorSpec(value.name, shape,
                                str(np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)))))
    return specs


_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def random_inputs(specs, seed: int = 0, float_range: tuple[float, float] = (-1.0, 1.0),
                  int_range: tuple[int, int] = (0, 4)) -> dict[str, np.ndarray]:
    """Seeded random inputs of the declared shapes (anything with name, shape, dtype): floats
    uniform in `float_range`, integers in [int_range[0], int_range[1]), bools. Small
    non-negative ints by default: they are valid indices, axes and counts for most models."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.uniform(*float_range, spec.shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, spec.shape).astype(bool)
        else:
            feeds[spec.name] = rng.integers(*int_range, spec.shape).astype(dtype)
    return feeds


# --- the tolerance model -------------------------------------------------------------------------

# Operator classes, for float outputs (integer and bool outputs are always exact).
# Data movement, selection, comparison and sign/rounding ops copy or pick input values: exact.
EXACT_OPS = frozenset({
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice",
    "Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND", "Scatter", "Expand",
    "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "Relu", "Max", "Min", "MaxPool", "GlobalMaxPool",
    "ReduceMax", "ReduceMin", "Abs", "Neg", "Where", "Clip", "Floor", "Ceil", "Round", "Sign",
    "Dropout", "Constant", "ConstantOfShape", "Cast", "CastLike", "TopK", "Compress", "Trilu",
    "ReverseSequence", "Hardmax", "MaxUnpool", "EyeLike", "Shape", "Size", "ThresholdedRelu",
    "Shrink", "OneHot", "Mod", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal",
    "ArgMax", "ArgMin",
})
# Matrix products and convolutions: sums of K products.
CONTRACTION_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum"})
# Plain sums, means and products of K terms.
SUM_OPS = frozenset({"ReduceSum", "ReduceMean", "ReduceL1", "ReduceL2", "ReduceSumSquare",
                     "ReduceProd", "GlobalAveragePool", "AveragePool", "LpPool", "GlobalLpPool",
                     "CumSum"})
# One or two correctly rounded float operations per element.
ARITHMETIC_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Sum", "Mean", "LeakyRelu", "PRelu",
                            "HardSigmoid", "HardSwish", "Reciprocal", "Sqrt", "Range"})
# Elementwise transcendental functions (libm, polynomial approximations on both sides).
TRANSCENDENTAL_OPS = frozenset({
    "Exp", "Log", "Tanh", "Sigmoid", "Erf", "Gelu", "Softplus", "Softsign", "Elu", "Selu", "Celu",
    "Mish", "Pow", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh",
    "Atanh",
})
# A reduction of K terms followed by transcendental or division work on every element.
NORMALISATION_OPS = frozenset({
    "Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "LRN", "LpNormalization", "MeanVarianceNormalization", "ReduceLogSumExp", "ReduceLogSum",
})
# Normalisations that reduce twice over the same K terms (the mean, then the variance).
TWO_PASS_NORMALISATIONS = frozenset({"LayerNormalization", "InstanceNormalization",
                                     "GroupNormalization", "MeanVarianceNormalization"})
# Interpolation: the sample coordinates are computed in float.
INTERPOLATION_OPS = frozenset({"Resize", "Upsample", "GridSample", "RoiAlign", "AffineGrid"})

# Ulps (the dtype's eps, the ulp of 1.0; one rounding errs by eps/2) two correct implementations
# may differ by, per operator class.
# Arithmetic: each side rounds at most twice per element (a*(1/b) for a/b, fma vs mul+add in a
# fused chain), so the two differ by at most 2 eps of the operands' magnitude; 4 leaves margin.
ARITHMETIC_ULPS = 4.0
# Transcendentals: dlc's approximate-math polynomials stay within 1.4 ulp
# (tests/test_approximate_math.py), MLAS's within a few, and the composites (Gelu, Mish,
# Softplus, Selu) chain two or three of them.
TRANSCENDENTAL_ULPS = 8.0
# Sums of K terms: each side rounds K products and K additions (an FMA rounds once where a
# mul+add rounds twice) in its own order (dlc's register-blocked micro-kernels, MLAS's blocks),
# each within K*eps/2 of sum |a_i b_i| whatever the order (Higham, "Accuracy and Stability",
# 3.1): 2K ulps between them, +4 for the bias, the epilogue and a mean's division. Random signs
# make the typical difference ~0.4 sqrt(K) (Higham & Mary, SISC 2019), but constant weights
# (the onnx zoo's "light" models) correlate the errors and they grow like K: the bound is
# needed. A real bug errs by a sizeable part of sum |a_i b_i|: 10^2..10^5 times more.
SUM_ULPS_PER_TERM = 2.0
SUM_ULPS_EXTRA = 4.0
# BatchNormalization: up to five roundings a side (sqrt, divide, subtract or fold, scale,
# shift); observed on random parameters: 2.2 eps.
BATCHNORM_ULPS = 4 * ARITHMETIC_ULPS
# Normalisations add an exp, log, sqrt or division per element to their sums.
NORMALISATION_EXTRA_ULPS = TRANSCENDENTAL_ULPS
# Interpolation weights err by about eps times the sample coordinate (up to the largest spatial
# size), and anything unclassified gets a few transcendental-sized roundings.
OTHER_ULPS = 16.0


def model_opset(model) -> int:
    """The default-domain opset the onnx `model` imports."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def attribute(node, name: str, default):
    """The value of `node`'s attribute `name`, or `default`."""
    from onnx import helper

    for proto in node.attribute:
        if proto.name == name:
            return helper.get_attribute_value(proto)
    return default


def _einsum_length(node, input_shapes) -> int:
    equation = attribute(node, "equation", b"").decode().replace(" ", "").replace("...", "")
    left, arrow, right = equation.partition("->")
    if not arrow:  # implicit output: the labels that appear once
        letters = left.replace(",", "")
        right = "".join(label for label in letters if letters.count(label) == 1)
    sizes = {}
    for term, shape in zip(left.split(","), input_shapes):
        if shape is not None:
            sizes.update(zip(term[::-1], shape[::-1]))
    return math.prod(size for label, size in sizes.items() if label not in right)


def reduction_length(node, input_shapes: Sequence[Sequence[int] | None],
                     output_shape: Sequence[int], opset: int) -> int:
    """K, the number of terms summed into one output element of `node` (an upper bound where
    inexact), from its input shapes (None: unknown), output shape and the model's opset."""
    op = node.op_type
    x = tuple(input_shapes[0]) if input_shapes and input_shapes[0] is not None else None
    w = tuple(input_shapes[1]) if len(input_shapes) > 1 and input_shapes[1] is not None else None
    if op == "Conv" and w is not None:
        return math.prod(w[1:])
    if op == "ConvTranspose" and w is not None:
        return w[0] // max(attribute(node, "group", 1), 1) * math.prod(w[2:])
    if op == "Einsum":
        return _einsum_length(node, input_shapes)
    if op in ("AveragePool", "LpPool"):
        return math.prod(attribute(node, "kernel_shape", [1]))
    if op == "LRN":
        return int(attribute(node, "size", 1))
    if op == "BatchNormalization" or not x:
        return 1
    if op == "MatMul":
        return x[-1]
    if op == "Gemm":
        return x[0] if attribute(node, "transA", 0) else x[1]
    if op in ("Softmax", "LogSoftmax", "Hardmax"):
        if opset < 13:  # the input is coerced to 2-D at `axis` (default 1): all axes from it on
            return math.prod(x[attribute(node, "axis", 1):])
        return x[attribute(node, "axis", -1)]
    if op == "LayerNormalization":
        return math.prod(x[attribute(node, "axis", -1):])
    if op == "LpNormalization":
        return x[attribute(node, "axis", -1)]
    if op in ("InstanceNormalization", "GroupNormalization", "MeanVarianceNormalization"):
        return math.prod(x[2:]) * (x[1] if op != "InstanceNormalization" else 1)
    if op == "CumSum":
        return max(x)
    # Reductions and global pools: as many inputs per output element as the sizes say.
    return max(1, math.prod(x) // max(math.prod(output_shape), 1))


def operator_ulps(node, input_shapes: Sequence[Sequence[int] | None], output_shape: Sequence[int],
                  opset: int) -> tuple[float, str]:
    """How many ulps two correct implementations of `node` may differ by on a float output,
    and the rule as text. What an ulp is measured against is the caller's (see the module)."""
    op = node.op_type
    if op in EXACT_OPS:
        return 0.0, "exact"
    if op in ARITHMETIC_OPS:
        # HardSigmoid/HardSwish round four times (the constant alpha, x*alpha, +beta, *x) a side,
        # and implementations differ (x*(1/6) or x/6): twice the ulps (observed: 1.9 eps).
        ulps = ARITHMETIC_ULPS * (2 if op in ("HardSigmoid", "HardSwish") else 1)
        return ulps, f"{ulps:g}"
    if op == "BatchNormalization":
        return BATCHNORM_ULPS, f"{BATCHNORM_ULPS:g}"
    if op in TRANSCENDENTAL_OPS:
        return TRANSCENDENTAL_ULPS, f"{TRANSCENDENTAL_ULPS:g}"
    k = reduction_length(node, input_shapes, output_shape, opset)
    if op in CONTRACTION_OPS or op in SUM_OPS:
        return SUM_ULPS_PER_TERM * k + SUM_ULPS_EXTRA, f"(2K+4, K={k})"
    if op in NORMALISATION_OPS:
        passes = 2 if op in TWO_PASS_NORMALISATIONS else 1
        ulps = SUM_ULPS_PER_TERM * passes * k + SUM_ULPS_EXTRA + NORMALISATION_EXTRA_ULPS
        return ulps, f"({2 * passes}K+12, K={k})"
    if op in INTERPOLATION_OPS:
        size = max([*output_shape[2:], *(input_shapes[0][2:] if input_shapes and input_shapes[0]
                                          else ()), 1])
        return OTHER_ULPS * size, f"({OTHER_ULPS:g}*size, size={size})"
    return OTHER_ULPS, f"{OTHER_ULPS:g}"
