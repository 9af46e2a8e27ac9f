"""`dlc verify`: layer-by-layer numerical verification of dlc against onnxruntime.

Mirrors onnx-mlir's `--verify=onnxruntime --verify-every-value` (utils/RunONNXModel.py):
every intermediate tensor with a static type becomes a graph output, the model runs
through dlc and through onnxruntime (graph optimisations off, so every name survives;
one thread) on the same inputs, and the tensors are compared in topological order.

Each node is judged by its *local* error: dlc's output against onnxruntime running that
node alone on dlc's own inputs. The error against onnxruntime's whole-model run (also
reported) mixes the node's own rounding with everything inherited from upstream, so it
cannot say which node is wrong; the local error can, with a tolerance that only has to
cover one operator's rounding (`tolerance_for`: the ulps of dlc/tools/oracle.py, shared
with the fuzzer, of each element's operands). The first node whose
local error exceeds its tolerance is the first divergence; its inputs are listed with
their errors so the user sees that they agree.

Exposing intermediates changes what dlc fuses, so the original model is also compiled
normally and its final outputs are compared with onnxruntime's (`FinalCheck`).

`dlc verify` exits with 0 when every compared tensor and every final output matches, and 1 on
a divergence, on a tensor it cannot verify (onnxruntime cannot run the node alone and the
whole-model error is larger than tolerance plus inherited error), or on an error. Tensors it
cannot compare at all (no static type, a Dropout mask) are listed and counted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from dlc.errors import DlcError, InputError
from dlc.tools.oracle import (
    ARITHMETIC_OPS,
    CONTRACTION_OPS,
    SUM_OPS,
    TRANSCENDENTAL_OPS,
    attribute,
    expose_outputs,
    import_onnxruntime,
    model_opset,
    onnxruntime_session,
    operator_ulps,
    random_inputs,
)

# Per-operator ulps come from the one tolerance model (dlc/tools/oracle.py), shared with the
# fuzzer; verify measures them against each element's own operands (`_magnitude`).
# Final outputs of the normally compiled model differ from the instrumented build only by the
# rounding order of fused kernels: allowed up to 4x the instrumented build's error against
# onnxruntime, plus 16 ulp of the output's scale (for models whose instrumented build is exact).
FINAL_ERROR_FACTOR = 4.0
FINAL_FLOOR_ULPS = 16.0


@dataclass
class TensorCheck:
    """One node output, dlc against onnxruntime."""

    index: int                 # position of the node in topological order
    node: str
    op_type: str
    output: str
    shape: list[int]
    dtype: str
    abs_error: float = 0.0     # max |dlc - onnxruntime's whole-model run|
    rel_error: float = 0.0     # max of that / |onnxruntime|
    local_error: float = 0.0   # |dlc - onnxruntime on this node alone, fed dlc's inputs| where it
    tolerance: float = 0.0     # ... exceeds its tolerance the most (both at that element)
    rule: str = ""             # how the tolerance was computed
    local: bool = True         # False: onnxruntime could not run the node alone; judged on abs_error
    status: str = "ok"         # ok | diverges | unverified (no local reference, off) | skipped
    folded: bool = False       # the importer folded it into a constant (computed at compile time)
    note: str = ""
    inputs: list[str] = field(default_factory=list)

    @property
    def diverges(self) -> bool:
        return self.status == "diverges"


@dataclass
class FinalCheck:
    """A final output of the normally compiled (not instrumented) model against onnxruntime."""

    output: str
    abs_error: float
    rel_error: float
    instrumented_abs_error: float
    tolerance: float
    ok: bool


@dataclass
class VerifyReport:
    model: str
    target: str
    fusion: str
    tolerance_override: tuple[float, float] | None
    checks: list[TensorCheck]
    finals: list[FinalCheck]
    inputs: dict[str, list[int]] = field(default_factory=dict)
    kernels: dict[str, int] = field(default_factory=dict)  # build ("instrumented", "normal") -> kernels

    @property
    def first_divergence(self) -> TensorCheck | None:
        return next((c for c in self.checks if c.diverges), None)

    @property
    def compared(self) -> list[TensorCheck]:
        return [c for c in self.checks if c.status != "skipped"]

    @property
    def unverified(self) -> list[TensorCheck]:
        return [c for c in self.checks if c.status == "unverified"]

    @property
    def ok(self) -> bool:
        # An unverified tensor fails too: its error may hide a bug that nothing downstream sees.
        return self.first_divergence is None and not self.unverified and all(f.ok for f in self.finals)

    def to_json(self) -> dict:
        """Plain JSON types; infinities and NaN as strings (JSON has no literal for them)."""
        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return str(value)
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            return value

        data = clean(asdict(self))
        first = self.first_divergence
        data["first_divergence"] = {"node": first.node, "op_type": first.op_type,
                                    "output": first.output} if first else None
        data["ok"] = self.ok
        return data

    def format(self, only_divergent: bool = False) -> str:
        return format_report(self, only_divergent)


def _session(model):
    # No graph rewrites: every node, and so every intermediate name, survives as written.
    return onnxruntime_session(model, threads=1, graph_optimisation="none")


@dataclass
class _ImportView:
    """What dlc's importer makes of the model: the model at dlc's canonical opset, the static
    types its shape inference finds, and the node outputs it folds into constants (with values)."""

    converted: object  # onnx.ModelProto at the canonical opset, before folding
    types: dict[str, tuple[int, tuple[int, ...]]]  # name -> (ONNX element type, shape)
    folded: dict[str, np.ndarray]


def _import_view(proto) -> _ImportView:
    import onnx

    from dlc.frontend.importer import _convert_opset, _Folder, _static_shape

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    converted = _convert_opset(copy)
    folding = onnx.ModelProto()
    folding.CopyFrom(converted)
    folder = _Folder(folding)
    folder.run()
    types = {}
    for name, value_type in folder.types.items():
        shape = _static_shape(value_type)
        if shape is not None and value_type.tensor_type.elem_type:
            types[name] = (value_type.tensor_type.elem_type, shape)
    for name, array in folder.constants.items():
        if array.dtype.kind in "fiub":
            types[name] = (onnx.helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)
    produced = {name for node in proto.graph.node for name in node.output}
    return _ImportView(converted, types, {name: folder.constants[name] for name in produced & set(folder.constants)})


_COMPARABLE = {1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13}  # float, (u)int 8-64, bool, float16, double


def _instrument(proto, types: dict[str, tuple[int, tuple[int, ...]]], skip=frozenset()):
    """A copy of `proto` with every typed node output (but those in `skip`) appended to the
    graph outputs."""
    from onnx import helper

    present = {o.name for o in proto.graph.output}
    exposed = []
    for node in proto.graph.node:
        for position, name in enumerate(node.output):
            if node.op_type == "Dropout" and position > 0:
                continue  # the mask of an inference Dropout: dlc removes the node and has no mask
            if (name and name not in present and name not in skip and name in types
                    and types[name][0] in _COMPARABLE):
                exposed.append(helper.make_tensor_value_info(name, *types[name]))
                present.add(name)
    return expose_outputs(proto, exposed), [v.name for v in exposed]


def _errors(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got - want| in float64; equal values (infinities, NaN against NaN) count as 0, a NaN
    against a number as inf."""
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(g - w)
    same = (g == w) | (np.isnan(g) & np.isnan(w))
    diff = np.where(same, 0.0, diff)
    return np.where(np.isnan(diff), np.inf, diff)


def _max(array: np.ndarray) -> float:
    return float(np.max(array)) if array.size else 0.0


def _magnitude(node, inputs, reference: np.ndarray, run_on_abs) -> np.ndarray:
    """Elementwise scale of the terms an output element is computed from (|a||b| for a product),
    where a rounding error is measured against: cancellation makes the result smaller, not
    the error."""
    op = node.op_type
    floats = [np.abs(a.astype(np.float64)) if a is not None and a.dtype.kind == "f" else a for a in inputs]
    with np.errstate(all="ignore"):
        if op in ("Add", "Sub", "Sum") and all(a is not None for a in floats):
            return np.broadcast_to(sum(floats), reference.shape)
        if op == "Mean" and all(a is not None for a in floats):
            return np.broadcast_to(sum(floats) / len(floats), reference.shape)
        if op == "Mul" and len(floats) == 2:
            return np.broadcast_to(floats[0] * floats[1], reference.shape)
        if op == "Div" and len(floats) == 2:
            return np.broadcast_to(floats[0] / floats[1], reference.shape)
        # alpha*x + beta cancels near the lower knee: the rounding errors follow the operands.
        if op == "HardSigmoid" and floats and floats[0] is not None:
            return abs(attribute(node, "alpha", 0.2)) * floats[0] + abs(attribute(node, "beta", 0.5))
        if op == "HardSwish" and floats and floats[0] is not None:
            return floats[0] * (floats[0] / 6 + 0.5)
        if op == "BatchNormalization" and len(floats) >= 5 and all(a is not None for a in floats[:5]):
            # (x - mean) * gamma / sqrt(var + epsilon) + beta, or x*a + b with a, b folded: the
            # roundings follow (|x| + |mean|) * |a| + |beta| (x - mean cancels).
            x, gamma, beta, mean, var = floats[:5]
            channel = (1, -1) + (1,) * (x.ndim - 2) if x.ndim >= 2 else (-1,)
            a = gamma / np.sqrt(var + attribute(node, "epsilon", 1e-5))
            return (x + mean.reshape(channel)) * a.reshape(channel) + beta.reshape(channel)
        if op in CONTRACTION_OPS or op in SUM_OPS:
            on_abs = run_on_abs()
            if on_abs is not None and on_abs.shape == reference.shape:
                return np.abs(on_abs.astype(np.float64))
    return np.abs(reference.astype(np.float64))


# A float32 contraction on TF32 tensor cores (the cuda target's default) rounds each operand to
# 10 explicit mantissa bits, 2^-11 relative each, so a product is off by up to 2^-10 of |a*b|
# (then summed in float32): this much of |op|(|inputs|) joins the float32 ulps.
TF32_PRODUCT_EPS = 2.0 ** -10


def tolerance_for(node, inputs: list[np.ndarray | None], reference: np.ndarray,
                  run_on_abs=lambda: None, *, opset: int, tf32: bool = False) -> tuple[np.ndarray, str]:
    """Elementwise tolerance of a node's output against `reference` computed from the same
    inputs, and the rule as text: the oracle's ulps for the operator (at the model's `opset`)
    times eps times the scale each element's rounding follows. `run_on_abs()` runs the node
    on |inputs| (for contractions). `tf32`: float32 contractions multiply in TF32
    (TF32_PRODUCT_EPS)."""
    op = node.op_type
    shapes = [None if a is None else a.shape for a in inputs]
    ulps, rule = operator_ulps(node, shapes, reference.shape, opset)
    if reference.dtype.kind != "f" or ulps == 0:
        return np.zeros(reference.shape), "exact"
    eps = float(np.finfo(reference.dtype).eps)
    ref = np.abs(reference.astype(np.float64))
    if tf32 and op in CONTRACTION_OPS and reference.dtype == np.float32:
        return ((ulps * eps + TF32_PRODUCT_EPS) * _magnitude(node, inputs, reference, run_on_abs),
                f"({rule}*eps+2^-10 TF32)*|op|(|inputs|)")
    if op in CONTRACTION_OPS or op in SUM_OPS:
        return ulps * eps * _magnitude(node, inputs, reference, run_on_abs), f"{rule}*eps*|op|(|inputs|)"
    if op == "BatchNormalization" and len(inputs) >= 5:
        scale = np.maximum(_magnitude(node, inputs, reference, run_on_abs), ref)
        return ulps * eps * scale, f"{rule}*eps*((|x|+|mean|)*|a|+|beta|)"
    if op in ARITHMETIC_OPS:
        scale = np.maximum(_magnitude(node, inputs, reference, run_on_abs), ref)
        return ulps * eps * scale, f"{rule}*eps*|operands|"
    if op in TRANSCENDENTAL_OPS:
        x = inputs[0]
        if x is None or x.shape != reference.shape or x.dtype.kind != "f":
            return ulps * eps * ref, f"{rule}*eps*|y|"
        x = x.astype(np.float64)
        if op in ("Elu", "Celu", "Selu"):
            # alpha*(exp(x) - 1) for x < 0, in onnxruntime and dlc alike: the subtraction cancels
            # near 0, so the error follows the exp term, alpha*exp(x), not the small result.
            coefficient = attribute(node, "alpha", 1.0) * (attribute(node, "gamma", 1.0507) if op == "Selu" else 1.0)
            if op == "Selu" and not any(a.name == "alpha" for a in node.attribute):
                coefficient = 1.67326 * attribute(node, "gamma", 1.0507)
            scale = np.maximum(ref, abs(coefficient) * np.exp(np.minimum(x, 0.0)))
            return ulps * eps * scale, f"{rule}*eps*max(|y|,|alpha|*exp(x))"
        # Composites like Gelu, Elu and log near 1 cancel, so their absolute error follows the
        # input, not the small result.
        scale = np.maximum(ref, np.minimum(np.abs(x), 1.0))
        return ulps * eps * scale, f"{rule}*eps*max(|y|,min(|x|,1))"
    # Normalisations, interpolation and the unclassified: relative to the element and the
    # tensor's mean magnitude (LayerNorm of x close to the mean cancels).
    mean = float(np.mean(ref[np.isfinite(ref)])) if np.isfinite(ref).any() else 0.0
    return ulps * eps * (ref + mean), f"{rule}*eps*(|y|+mean|y|)"


def _override_tolerance(reference: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    return atol + rtol * np.abs(reference.astype(np.float64))


def _worst(diff: np.ndarray, tol: np.ndarray) -> tuple[float, float, float]:
    """(error, tolerance, error/tolerance) at the element where the ratio is largest."""
    if diff.size == 0:
        return 0.0, 0.0, 0.0
    tol = np.broadcast_to(tol, diff.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, np.where(tol > 0, diff / np.where(tol > 0, tol, 1), np.inf))
    at = int(np.argmax(ratio))
    return float(diff.flat[at]), float(tol.flat[at]), float(ratio.flat[at])


class _NodeRunner:
    """Runs one node alone in onnxruntime (the local reference), on given inputs."""

    def __init__(self, proto):
        self.opsets = list(proto.opset_import)
        self.opset = model_opset(proto)  # the tolerance of Softmax & co. depends on it
        self.ir_version = proto.ir_version

    def session(self, node, inputs: dict[str, np.ndarray]):
        import onnx
        from onnx import helper

        graph_inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                      value.shape) for name, value in inputs.items()]
        # Outputs untyped: onnxruntime infers them at the model's own opset (the importer's
        # types are those of the canonical opset, e.g. Dropout-9's mask is float, not bool).
        outputs = [onnx.ValueInfoProto(name=name) for name in node.output if name]
        graph = helper.make_graph([node], f"verify_{node.name}", graph_inputs, outputs)
        model = helper.make_model(graph, opset_imports=self.opsets)
        model.ir_version = self.ir_version
        return _session(model)


def verify(model, feeds: dict | None = None, target: str = "cpu", fusion: str = "all",
           rtol: float | None = None, atol: float | None = None, seed: int = 0,
           input_shapes: dict | None = None, threads: int | None = None,
           pipeline: str | None = None) -> VerifyReport:
    """Compare every intermediate tensor of `model` (path or ModelProto) between dlc and onnxruntime.

    feeds: inputs by name (the others are seeded random, as `dlc run` makes them).
    rtol/atol: replace the per-operator tolerances by |dlc - ort| <= atol + rtol * |ort| (a missing
    one is 0). pipeline: pass pipeline text replacing the default one (for both builds).
    """
    import onnx
    from onnx import numpy_helper

    from dlc.driver import compile_model
    from dlc.frontend.importer import _fix_input_shapes, load_model
    from dlc.runtime import check_inputs
    from dlc.targets import CompileOptions

    import_onnxruntime()  # before compiling: a missing reference fails fast
    source = model if not isinstance(model, onnx.ModelProto) else "<ModelProto>"
    proto = onnx.ModelProto()
    proto.CopyFrom(load_model(model))
    shapes = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    _fix_input_shapes(proto, shapes)  # symbolic dims: the same clear error as dlc compile
    override = None if rtol is None and atol is None else (float(rtol or 0.0), float(atol or 0.0))
    view = _import_view(proto)
    types = view.types
    # onnxruntime runs the model as written; dlc gets it at its canonical opset, converted here
    # (the ONNX version converter re-infers graph output shapes without data propagation and
    # would turn the static shapes declared below symbolic). Values the importer folds into
    # constants are its own results, compared without making dlc return them.
    instrumented, _ = _instrument(proto, types)
    for_dlc, _ = _instrument(view.converted, types, skip=frozenset(view.folded))

    from dlc.targets import get_target

    tf32 = getattr(get_target(target), "precision", None) == "tf32"  # cuda's TF32 contractions
    options = CompileOptions(threads=threads, fusion=fusion)
    executable = compile_model(for_dlc, target=target, options=options, input_shapes=shapes,
                               pipeline=pipeline).executable
    all_feeds = random_inputs(executable.inputs, seed)
    given = dict(feeds or {})
    unknown = [name for name in given if name not in all_feeds]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {list(all_feeds)}")
    all_feeds.update(given)
    check_inputs(executable.inputs, all_feeds)  # dtype and shape, with the runtime's messages
    dlc_values = {**view.folded, **executable.run(all_feeds)}

    try:
        session = _session(instrumented)
        ort_names = [o.name for o in session.get_outputs()]
        ort_values = dict(zip(ort_names, session.run(None, all_feeds)))
    except Exception as error:  # noqa: BLE001 (onnxruntime's errors are pybind classes of Exception)
        raise DlcError(f"onnxruntime cannot run the model: {str(error).strip().splitlines()[0]}",
                       "dlc verify needs onnxruntime as the reference; check the model runs there") from None

    constants = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    known = {**constants, **all_feeds}
    runner = _NodeRunner(proto)
    checks, by_output = [], {}
    for index, node in enumerate(proto.graph.node):
        if node.op_type == "Constant":
            continue  # no computation: its value is the attribute
        rows = _check_node(index, node, runner, types, dlc_values, ort_values, known, override, by_output, tf32)
        for row in rows:
            row.folded = row.output in view.folded
            by_output[row.output] = row
        checks.extend(rows)

    verified = not any(c.status in ("diverges", "unverified") for c in checks)
    normal = compile_model(proto, target=target, options=options, input_shapes=shapes,
                           pipeline=pipeline).executable
    finals = _check_finals(normal.run(all_feeds), dlc_values, ort_values, override, verified)
    kernels = {label: len(build.manifest["kernels"]) for label, build in
               (("instrumented", executable), ("normal", normal)) if "kernels" in getattr(build, "manifest", {})}
    return VerifyReport(str(source), target, fusion, override, checks, finals,
                        {k: list(v.shape) for k, v in all_feeds.items()}, kernels)


def _check_node(index, node, runner, types, dlc_values, ort_values, known, override,
                earlier: dict[str, TensorCheck], tf32: bool = False) -> list[TensorCheck]:
    name = node.name or f"{node.op_type}_{index}"
    input_names = [n for n in node.input if n]
    rows = []
    outputs = [o for o in node.output if o]
    for o in outputs:
        got = dlc_values.get(o)
        row = TensorCheck(index, name, node.op_type, o, [], "", inputs=input_names)
        if got is None:
            row.status = "skipped"
            row.note = ("no static type after shape inference" if o not in types
                        else "a Dropout mask" if node.op_type == "Dropout"
                        else "its element type is not compared")
        rows.append(row)
    compared = [r for r in rows if r.status != "skipped"]
    if not compared:
        return rows

    # Local reference: the node alone in onnxruntime, fed dlc's values of its inputs.
    local_inputs, local_reason = {}, ""
    for n in input_names:
        value = dlc_values.get(n, known.get(n, ort_values.get(n)))
        if value is None:
            local_reason = f"input '{n}' has no value to feed"
            break
        local_inputs[n] = value
    if any(a.type in (5, 10) for a in node.attribute):  # GRAPH / GRAPHS: subgraphs see outer names
        local_reason = "it has subgraphs"
    local_outputs, session = {}, None
    if not local_reason:
        try:
            session = runner.session(node, local_inputs)
            local_outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, local_inputs)))
        except Exception as error:  # noqa: BLE001 (as above)
            local_reason = f"onnxruntime cannot run it alone ({str(error).strip().splitlines()[0][:120]})"

    def run_on_abs(output_name):
        def run():
            if session is None:
                return None
            absolute = {k: np.abs(v) if v.dtype.kind == "f" else v for k, v in local_inputs.items()}
            try:
                values = dict(zip([o.name for o in session.get_outputs()], session.run(None, absolute)))
            except Exception:  # noqa: BLE001 (no scale then: the tolerance uses |reference|)
                return None
            return values.get(output_name)
        return run

    ordered_inputs = [local_inputs.get(n) if n else None for n in node.input]
    for row in compared:
        got, whole = dlc_values[row.output], ort_values.get(row.output)
        row.shape, row.dtype = list(got.shape), str(got.dtype)
        if whole is not None and whole.shape == got.shape:
            diff = _errors(got, whole)
            row.abs_error = _max(diff)
            with np.errstate(divide="ignore", invalid="ignore"):
                row.rel_error = _max(diff / np.maximum(np.abs(whole.astype(np.float64)), 1e-30))
        reference = local_outputs.get(row.output)
        row.local = reference is not None
        if reference is None:
            row.note = f"judged against the whole-model run: {local_reason or 'no local output'}"
            reference = whole
        if reference is None:
            row.status, row.note = "skipped", "onnxruntime produced no value for it"
            continue
        if reference.shape != got.shape or reference.dtype != got.dtype:
            row.status = "diverges"
            row.note = (f"dlc gives shape {list(got.shape)} {got.dtype}, onnxruntime "
                        f"{list(reference.shape)} {reference.dtype}")
            row.local_error = row.tolerance = math.inf if reference.shape != got.shape else 0.0
            continue
        if override is not None:
            tol, row.rule = _override_tolerance(reference, *override), f"{override[1]:g}+{override[0]:g}*|y|"
        else:
            tol, row.rule = tolerance_for(node, ordered_inputs, reference, run_on_abs(row.output),
                                          opset=runner.opset, tf32=tf32)
        if not row.local:
            # Against the whole-model run the error inherited from the inputs counts too; with no
            # bound on how the node amplifies it, exceeding (own tolerance + inherited error) is
            # suspicious but not proof: "unverified", not "diverges".
            inherited = max([earlier[n].abs_error for n in input_names if n in earlier] + [0.0])
            tol = tol + inherited
            row.rule += f" + inputs' abs err {_fmt(inherited)}"
        row.local_error, row.tolerance, ratio = _worst(_errors(got, reference), tol)
        row.status = "ok" if ratio <= 1.0 else "diverges" if row.local else "unverified"
    return rows


def _check_finals(outputs, dlc_values, ort_values, override, verified: bool) -> list[FinalCheck]:
    """The original model compiled normally (its own fusion): final outputs against onnxruntime.

    The instrumented build's error is a yardstick only when every node of it was `verified`;
    otherwise only the floor is allowed (and a diverging model fails here too)."""
    finals = []
    for name, got in outputs.items():
        want = ort_values.get(name)
        if want is None or want.shape != got.shape:
            finals.append(FinalCheck(name, math.inf, math.inf, math.inf, 0.0, False))
            continue
        diff = _errors(got, want)
        ref = np.abs(want.astype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = _max(diff / np.maximum(ref, 1e-30))
        instrumented = _max(_errors(dlc_values[name], want)) if name in dlc_values else math.inf
        if override is not None:
            _, tolerance, ratio = _worst(diff, _override_tolerance(want, *override))
            ok = ratio <= 1.0
        elif got.dtype.kind != "f":
            tolerance, ok = 0.0, _max(diff) == 0.0
        else:
            eps = float(np.finfo(got.dtype).eps)
            finite = ref[np.isfinite(ref)]
            allowed = FINAL_ERROR_FACTOR * instrumented if verified else 0.0
            tolerance = allowed + FINAL_FLOOR_ULPS * eps * _max(finite)
            ok = _max(diff) <= tolerance
        finals.append(FinalCheck(name, _max(diff), rel, instrumented, tolerance, ok))
    return finals


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else ("0" if value == 0 else f"{value:.2g}")


def format_report(report: VerifyReport, only_divergent: bool = False) -> str:
    """The table (one row per node output, topological order) and the verdict lines.

    Nodes the importer folded into constants that match are summarised in one line, not listed.
    """
    folded = [c for c in report.checks if c.folded and c.status == "ok"]
    rows = [c for c in report.checks
            if c not in folded and (not only_divergent or c.status in ("diverges", "unverified"))]
    width = min(max([len(c.node) for c in rows] + [4]), 40)
    header = (f"{'#':>4s}  {'node':{width}s} {'op':18s} {'shape':16s} {'abs err':>8s} {'rel err':>8s} "
              f"{'local err':>9s} {'tolerance':>9s}  status")
    rule = "(--rtol/--atol)" if report.tolerance_override else "(per operator class; see dlc/tools/oracle.py)"
    lines = [(f"dlc verify {report.model} (target {report.target}, --fusion={report.fusion}) "
              "against onnxruntime (no graph optimisations, 1 thread)"),
             ("  abs/rel err: against onnxruntime running the whole model; local err: against onnxruntime "
              "running the node alone on dlc's inputs,"),
             f"  at the element closest to its tolerance {rule}",
             "", header]
    for c in rows:
        label = c.node if len(c.node) <= width else c.node[: width - 1] + "~"
        status = c.status.upper() if c.status in ("diverges", "unverified") else c.status
        if c.note:
            status += f" ({c.note})"
        shape = "x".join(map(str, c.shape)) or ("scalar" if c.dtype else "-")
        lines.append(f"{c.index:>4d}  {label:{width}s} {c.op_type[:18]:18s} {shape[:16]:16s} "
                     f"{_fmt(c.abs_error):>8s} {_fmt(c.rel_error):>8s} {_fmt(c.local_error):>9s} "
                     f"{_fmt(c.tolerance):>9s}  {status}")
    if folded:
        ops = sorted({c.op_type for c in folded})
        lines.append(f"      ({len(folded)} outputs of nodes folded into constants at import ({', '.join(ops)}) "
                     "match and are not listed)")
    lines.append("")
    lines.extend(verdict_lines(report))
    return "\n".join(lines)


def verdict_lines(report: VerifyReport) -> list[str]:
    """The verdict: the first divergence and its inputs, or "all N tensors match"; the final outputs."""
    lines = []
    first = report.first_divergence
    by_output = {c.output: c for c in report.checks}
    if first is None:
        skipped = len(report.checks) - len(report.compared)
        lines.append(f"all {len(report.compared) - len(report.unverified)} tensors match"
                     + (f" ({skipped} not compared: see the table)" if skipped else ""))
    else:
        detail = first.note if first.note and first.local else (
            f"max abs error {_fmt(first.local_error)} (tolerance {_fmt(first.tolerance)}: {first.rule}) "
            "against onnxruntime running this node on dlc's inputs")
        parts = []
        for name in first.inputs:
            producer = by_output.get(name)
            if producer is None:
                parts.append(f"'{name}' (model input or weight: the same array)")
            else:
                parts.append(f"'{name}' from '{producer.node}' {producer.status} (abs err "
                             f"{_fmt(producer.abs_error)})")
        inputs_ok = all(by_output[n].status == "ok" for n in first.inputs if n in by_output)
        lines.append(f"first divergence: node '{first.node}' ({first.op_type}), output '{first.output}': "
                     f"{detail}; {'its inputs match' if inputs_ok else 'its inputs'}: {', '.join(parts) or 'none'}")
        later = sum(1 for c in report.checks if c.diverges) - 1
        if later:
            lines.append(f"  {later} later tensor(s) diverge too (see the table)")
    if report.unverified:
        names = ", ".join(f"'{c.node}' ({c.op_type})" for c in report.unverified[:5])
        lines.append(f"{len(report.unverified)} tensor(s) could not be verified (onnxruntime cannot run the node "
                     f"alone, and the whole-model error exceeds tolerance plus inherited error): {names}")
    listed = report.finals
    if len(report.finals) > 3:  # many outputs: the matching ones in one line
        matching = [f for f in report.finals if f.ok]
        listed = [f for f in report.finals if not f.ok]
        if matching:
            worst = max(matching, key=lambda f: f.abs_error)
            lines.append(f"{len(matching)} of {len(report.finals)} final outputs of the normally compiled model "
                         f"match onnxruntime (largest abs error {_fmt(worst.abs_error)}, '{worst.output}')")
    for final in listed:
        verdict = "matches" if final.ok else "DIVERGES from"
        lines.append(f"final output '{final.output}' of the normally compiled model (its own fusion): {verdict} "
                     f"onnxruntime, max abs error {_fmt(final.abs_error)} (tolerance {_fmt(final.tolerance)}; "
                     f"the instrumented build: {_fmt(final.instrumented_abs_error)})")
    if len(report.kernels) == 2:
        lines.append(f"  (the instrumented build runs {report.kernels['instrumented']} kernels, the normal build "
                     f"{report.kernels['normal']}: exposing intermediates blocks graph rewrites such as "
                     "BatchNorm folding and changes what fuses)")
    if first is None and not all(f.ok for f in report.finals):
        lines.append("  every node matches with intermediates exposed, so the error is in a fusion that "
                     "exposing them prevents; try --fusion=elementwise or --fusion=none to narrow it down")
    return lines
