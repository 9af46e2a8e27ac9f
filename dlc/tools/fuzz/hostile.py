"""The hostile side (`--hostile`, issue 14): small graphs fed what the default generator keeps
away - integer Div/Mod/Add/Sub/Mul on int8/int32/int64/uint8 with zeros and the types' extremes,
Gather/GatherElements/GatherND with indices sometimes out of range, float inputs with extreme
values (+-1e38, +-inf, nan, denormals) and MaxPool/AveragePool with ceil_mode=1 and asymmetric
pads.

The model carries its own inputs (metadata_props "dlc.fuzz.feeds": serialized tensors), so a
corpus entry or a minimised model replays on exactly the values that broke it.

The oracle (check_hostile): where the run is an error - onnxruntime raises, or an integer
division by zero / INT_MIN / -1 or an index outside [-n, n) is on the inputs (predicted here
with numpy, since onnxruntime itself may die of SIGFPE on an integer division by zero) - dlc
must raise a DlcError (at compile or at run time); anything else (an answer, another
exception) is a finding. Where onnxruntime answers, dlc must match it within checks.py's
tolerance model, with NaN and +-Inf in the same places.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dlc.tools.fuzz.checks import ALL_CONFIGS, Finding, config_name, make_feeds, tolerances
from dlc.tools.fuzz.generator import OPSET

FEEDS_KEY = "dlc.fuzz.feeds"
INT_TYPES = {np.int8: TensorProto.INT8, np.int32: TensorProto.INT32, np.int64: TensorProto.INT64,
             np.uint8: TensorProto.UINT8}
FLOAT_EXTREMES = np.array([1e38, -1e38, 3.4028235e38, -3.4028235e38, np.inf, -np.inf, np.nan, 1e-40,
                           -1e-40, 1e-45, 0.0, -0.0, 1.0, -1.0, 0.5, 88.0, -88.0, 100.0, -100.0], np.float32)


# --- the generator -------------------------------------------------------------------------------

class HostileBuilder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.outputs: list[str] = []
        self.feeds: dict[str, np.ndarray] = {}
        self.count = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def shape(self, rank: int | None = None) -> tuple[int, ...]:
        rank = int(self.rng.integers(1, 4)) if rank is None else rank
        return tuple(int(self.rng.integers(1, 6)) for _ in range(rank))

    def tensor(self, array: np.ndarray, as_input: bool | None = None) -> str:
        """A graph input fed `array` (mostly), or a weight holding it."""
        array = np.asarray(array)
        name = self.fresh("in")
        if as_input is None:
            as_input = self.chance(0.8)
        if as_input:
            self.inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype),
                                                             list(array.shape)))
            self.feeds[name] = array
        else:
            self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        out = self.fresh("v")
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op.lower()}_{out}", **attributes))
        return out

    # -- values --
    def int_values(self, dtype, shape, divisor: bool = False) -> np.ndarray:
        info = np.iinfo(dtype)
        special = [0, 1, -1, info.min, info.max, info.min + 1, info.max - 1, 7, -7, 2]
        special = np.array([s for s in special if info.min <= s <= info.max], dtype=np.int64)
        out = self.rng.integers(max(info.min, -100), min(info.max, 100) + 1, shape, dtype=np.int64)
        p_special = self.rng.choice([0.0, 0.1, 0.4])
        mask = self.rng.random(shape) < p_special
        out = np.where(mask, self.rng.choice(special, shape), out)
        if divisor and self.chance(0.5):  # half the divisors are non-zero: the answer path is exercised too
            out = np.where(out == 0, 3, out)
            if self.chance(0.5):
                out = np.where(out == -1, 5, out)
        return out.astype(dtype)

    def float_values(self, shape, extreme: float | None = None, nan: bool = True) -> np.ndarray:
        p = self.rng.choice([0.0, 0.2, 0.5]) if extreme is None else extreme
        out = self.rng.uniform(-3, 3, shape).astype(np.float32)
        mask = self.rng.random(shape) < p
        pool = FLOAT_EXTREMES if nan else FLOAT_EXTREMES[~np.isnan(FLOAT_EXTREMES)]
        return np.where(mask, self.rng.choice(pool, shape), out).astype(np.float32)

    # -- graphs --
    def gen_integer(self):
        dtype = [np.int8, np.int32, np.int64, np.uint8][int(self.rng.integers(0, 4))]
        shape = self.shape()
        values = [self.tensor(self.int_values(dtype, shape))]
        for _ in range(int(self.rng.integers(1, 4))):
            op = ["Div", "Mod", "Add", "Sub", "Mul", "Div", "Mod"][int(self.rng.integers(0, 7))]
            other_shape = shape[int(self.rng.integers(0, len(shape) + 1)):] if self.chance(0.4) else shape
            b = self.tensor(self.int_values(dtype, other_shape, divisor=op in ("Div", "Mod")))
            a = values[-1]
            if self.chance(0.25):
                a, b = b, a
            attrs = {"fmod": 1} if op == "Mod" and self.chance(0.4) else {}
            values.append(self.node(op, [a, b], **attrs))
        self.outputs.append(values[-1])

    def gen_gather(self):
        op = ["Gather", "GatherElements", "GatherND"][int(self.rng.integers(0, 3))]
        data_shape = self.shape(int(self.rng.integers(1, 4)))
        data = self.tensor(self.float_values(data_shape, 0.0), as_input=True)
        rank = len(data_shape)
        out_of_range = self.chance(0.5)

        def indices(bound, shape):
            bound = np.broadcast_to(np.asarray(bound, np.int64), shape)
            idx = (self.rng.integers(-(2 ** 62), 2 ** 62, shape) % (2 * bound)) - bound  # in [-n, n)
            if out_of_range:
                kind = self.rng.integers(0, 3, shape)
                wild = self.rng.choice(np.array([1000, -1000, 2 ** 31, -2 ** 31 - 1, np.iinfo(np.int64).max,
                                                 np.iinfo(np.int64).min], np.int64), shape)
                oob = np.where(kind == 0, bound, np.where(kind == 1, -bound - 1, wild))
                idx = np.where(self.rng.random(shape) < 0.3, oob, idx)
            return idx.astype(np.int32 if self.chance(0.2) else np.int64)

        if op == "Gather":
            axis = int(self.rng.integers(-rank, rank))
            ind = indices(data_shape[axis], self.shape(int(self.rng.integers(0, 3))))
            out = self.node("Gather", [data, self.tensor(ind)], axis=axis)
        elif op == "GatherElements":
            axis = int(self.rng.integers(-rank, rank))
            shape = tuple(int(self.rng.integers(1, d + 1)) for d in data_shape)
            shape = tuple(int(self.rng.integers(1, 5)) if i == axis % rank else d for i, d in enumerate(shape))
            out = self.node("GatherElements", [data, self.tensor(indices(data_shape[axis], shape))], axis=axis)
        else:
            # batch_dims b: the first b axes of data and indices pair up; a tuple then indexes
            # data's axes b .. b + last.
            batch = int(self.rng.integers(0, rank)) if self.chance(0.3) else 0
            last = int(self.rng.integers(1, rank - batch + 1))
            shape = (*data_shape[:batch], *self.shape(int(self.rng.integers(0 if batch else 1, 3))), last)
            ind = indices(np.array(data_shape[batch:batch + last]), shape).astype(np.int64)
            out = self.node("GatherND", [data, self.tensor(ind)], batch_dims=batch)
        self.outputs.append(out)

    def gen_extreme(self):
        shape = self.shape()
        value = self.tensor(self.float_values(shape))
        for _ in range(int(self.rng.integers(1, 4))):
            op = ["Add", "Sub", "Mul", "Div", "Max", "Min", "Relu", "Abs", "Neg", "Sigmoid", "Tanh", "Exp",
                  "Sqrt", "Log", "Floor", "Clip", "Softmax", "ReduceMax", "ReduceSum", "Erf",
                  "LeakyRelu"][int(self.rng.integers(0, 21))]
            if op in ("Add", "Sub", "Mul", "Div", "Max", "Min"):
                other = self.tensor(self.float_values(shape[int(self.rng.integers(0, len(shape) + 1)):]))
                value = self.node(op, [value, other] if self.chance(0.7) else [other, value])
            elif op == "Clip":
                value = self.node(op, [value, self.tensor(np.float32(-1e30), False),
                                       self.tensor(np.float32(1e30), False)])
            elif op == "Softmax":
                value = self.node(op, [value], axis=-1)
            elif op in ("ReduceMax", "ReduceSum"):
                value = self.node(op, [value, self.tensor(np.array([-1], np.int64), False)], keepdims=1)
            else:
                value = self.node(op, [value])
        self.outputs.append(value)

    def gen_pool(self):
        op = "MaxPool" if self.chance(0.5) else "AveragePool"
        spatial = int(self.rng.integers(1, 3))
        kernel = [int(self.rng.integers(1, 4)) for _ in range(spatial)]
        strides = [int(self.rng.integers(1, 4)) for _ in range(spatial)]
        dilations = [int(self.rng.integers(1, 3)) for _ in range(spatial)] if op == "MaxPool" and \
            self.chance(0.3) else [1] * spatial
        pads = [int(self.rng.integers(0, k)) for k in kernel] + [int(self.rng.integers(0, k)) for k in kernel]
        dims = [int(self.rng.integers(max(1, (k - 1) * d + 1 - p - q), 9))
                for k, d, p, q in zip(kernel, dilations, pads[:spatial], pads[spatial:])]
        shape = (int(self.rng.integers(1, 3)), int(self.rng.integers(1, 4)), *dims)
        attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads,
                 "ceil_mode": 1 if self.chance(0.75) else 0}
        if op == "MaxPool" and any(d > 1 for d in dilations):
            attrs["dilations"] = dilations
        if op == "AveragePool":
            attrs["count_include_pad"] = int(self.chance(0.5))
        # No NaN: which element a max-pool window answers with then is the implementation's
        # choice (onnxruntime skips a NaN unless it comes first; dlc propagates it).
        x = self.tensor(self.float_values(shape, 0.0 if self.chance(0.7) else 0.2, nan=False), as_input=True)
        self.outputs.append(self.node(op, [x], **attrs))

    KINDS = {"integer": 3, "gather": 3, "extreme": 3, "pool": 2}

    def model(self, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs,
                                  [helper.make_value_info(o, onnx.TypeProto()) for o in self.outputs],
                                  self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="dlc.tools.fuzz")
        # Outputs typed by shape inference (what a pool's ceil_mode gives is onnx's to say).
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        types = {v.name: v.type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
        del model.graph.output[:]
        # Element types only: the output shapes are onnxruntime's and dlc's to agree on (a pool
        # with ceil_mode is where onnx's shape inference and onnxruntime have differed).
        model.graph.output.extend(helper.make_tensor_value_info(
            o, types[o].tensor_type.elem_type, [f"{o}_{i}" for i in range(len(types[o].tensor_type.shape.dim))])
            for o in self.outputs)
        set_feeds(model, self.feeds)
        return model


def set_feeds(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    text = json.dumps({k: base64.b64encode(numpy_helper.from_array(np.asarray(v), k).SerializeToString()).decode()
                       for k, v in feeds.items()})
    for prop in list(model.metadata_props):
        if prop.key == FEEDS_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.append(onnx.StringStringEntryProto(key=FEEDS_KEY, value=text))


def stored_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    for prop in model.metadata_props:
        if prop.key == FEEDS_KEY:
            return {k: numpy_helper.to_array(TensorProto.FromString(base64.b64decode(v)))
                    for k, v in json.loads(prop.value).items()}
    return {}


def generate_hostile(seed: int, max_nodes: int = 10) -> onnx.ModelProto:
    """A hostile model (with its inputs), deterministic in `seed`: one to three small subgraphs."""
    rng = np.random.default_rng([seed, 14])
    builder = HostileBuilder(rng)
    names = list(HostileBuilder.KINDS)
    weights = np.array([HostileBuilder.KINDS[k] for k in names], float)
    for _ in range(int(rng.integers(1, 1 + max(1, min(3, max_nodes // 3))))):
        getattr(builder, "gen_" + names[int(rng.choice(len(names), p=weights / weights.sum()))])()
    model = builder.model(f"hostile{seed}")
    onnx.checker.check_model(model)
    return model


# --- the oracle ----------------------------------------------------------------------------------

def hostile_feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    feeds = stored_feeds(model)
    real = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    missing = [n for n in real if n not in feeds]
    if missing:  # inputs the minimiser made: the default generator's seeded values
        feeds.update({k: v for k, v in make_feeds(model, seed).items() if k in missing})
    return {k: feeds[k] for k in real}


def predicted_error(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> str | None:
    """What makes this run an error by ONNX's rules, where the values decide it: evaluated with
    numpy for the integer and gather nodes (whose operands are inputs, weights or integer
    elementwise results); None when nothing does or a value is out of reach."""
    env = dict(feeds)
    env.update({i.name: numpy_helper.to_array(i) for i in model.graph.initializer})
    live = {o.name for o in model.graph.output}
    for node in reversed(model.graph.node):  # only what the outputs need runs
        if any(o in live for o in node.output):
            live.update(node.input)
    for node in model.graph.node:
        if not any(o in live for o in node.output):
            continue
        args = [env.get(n) for n in node.input]
        op = node.op_type
        name = f"node '{node.name}' ({op})"
        if op in ("Div", "Mod", "Add", "Sub", "Mul") and all(a is not None and a.dtype.kind in "iu" for a in args):
            a, b = np.broadcast_arrays(*args)
            if op in ("Div", "Mod"):
                if (b == 0).any():
                    return f"{name}: integer division by zero"
                if a.dtype.kind == "i" and ((a == np.iinfo(a.dtype).min) & (b == -1)).any():
                    return f"{name}: integer overflow (INT_MIN / -1)"
            with np.errstate(all="ignore"):
                if op == "Add":
                    env[node.output[0]] = a + b
                elif op == "Sub":
                    env[node.output[0]] = a - b
                elif op == "Mul":
                    env[node.output[0]] = a * b
                elif op == "Div":  # truncating, as C and onnxruntime do
                    q = np.abs(a.astype(np.int64)) // np.abs(b.astype(np.int64))
                    sign = np.sign(a.astype(np.int64)) * np.sign(b.astype(np.int64))
                    env[node.output[0]] = (sign * q).astype(a.dtype)
                else:
                    fmod = any(x.name == "fmod" and x.i for x in node.attribute)
                    a64, b64 = a.astype(np.int64), b.astype(np.int64)
                    r = np.fmod(a64, b64) if fmod else np.mod(a64, b64)
                    env[node.output[0]] = r.astype(a.dtype)
        elif op in ("Gather", "GatherElements", "GatherND") and all(a is not None for a in args[:2]):
            data, idx = args[0], args[1].astype(np.int64)
            axis = next((x.i for x in node.attribute if x.name == "axis"), 0)
            if op == "GatherND":  # an index tuple addresses the axes after the batch_dims ones
                batch = next((x.i for x in node.attribute if x.name == "batch_dims"), 0)
                bound = np.broadcast_to(np.array(data.shape[batch:batch + idx.shape[-1]], np.int64), idx.shape)
            else:
                bound = data.shape[axis % data.ndim]
            if ((idx < -bound) | (idx >= bound)).any():
                return f"{name}: index out of range"
    return None


def _special_mismatch(name: str, got: np.ndarray, want: np.ndarray) -> str | None:
    if got.shape != want.shape or want.dtype.kind != "f":
        return None
    for what, a, b in (("NaN", np.isnan(got), np.isnan(want)), ("+Inf", np.isposinf(got), np.isposinf(want)),
                       ("-Inf", np.isneginf(got), np.isneginf(want))):
        if (a != b).any():
            index = tuple(int(i) for i in np.argwhere(a != b)[0])
            return (f"output '{name}': {what} in {int((a != b).sum())} other places; first at {index}: "
                    f"dlc {got[index]!r}, onnxruntime {want[index]!r}")
    return None


def check_hostile(model: onnx.ModelProto, feed_seed: int = 0, configs=ALL_CONFIGS,
                  progress: Callable[[tuple], None] | None = None, threads: int = 1) -> list[Finding]:
    """Compile and run `model` on its hostile inputs for each config; the oracle above."""
    from dlc.driver import compile_model
    from dlc.errors import DlcError, UnsupportedError
    from dlc.targets import CompileOptions
    from dlc.tools.fuzz.checks import compare
    from dlc.tools.oracle import expose_outputs, run_onnxruntime

    try:
        onnx.checker.check_model(model)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        feeds = hostile_feeds(model, feed_seed)
    except Exception as error:  # noqa: BLE001
        return [Finding("invalid-model", "onnxruntime", f"{type(error).__name__}: {str(error)[:400]}",
                        type(error).__name__)]
    expected_error = predicted_error(model, feeds)
    expected, tolerance = {}, {}
    if expected_error is None:  # onnxruntime is safe to ask (no integer division can trap)
        try:
            expected = run_onnxruntime(model, feeds)
        except Exception as error:  # noqa: BLE001 (onnxruntime refusing the values: dlc must refuse too)
            expected_error = f"onnxruntime: {type(error).__name__}: {str(error)[:200]}"
    if expected_error is None:
        try:
            intermediates = [v for v in inferred.graph.value_info if v.type.tensor_type.HasField("shape")]
            values = dict(expected)
            values.update(run_onnxruntime(expose_outputs(model, intermediates), feeds) if intermediates else {})
            values.update(feeds)
            finite = {k: np.where(np.isfinite(v), v, 0).astype(v.dtype) if v.dtype.kind == "f" else v
                      for k, v in values.items()}
            try:
                with np.errstate(all="ignore"):
                    tolerance = tolerances(model, finite)
            except ZeroDivisionError:  # a gain at an exact zero (Log, Reciprocal)
                tolerance = {}
            # Where the budget is not finite (an Inf or a zero in a gain): relative slack of the
            # largest finite magnitude the graph saw.
            scale = max([float(np.max(np.abs(v), initial=0)) for v in finite.values() if v.dtype.kind == "f"],
                        default=0.0)
            for o in expected:
                if not np.isfinite(tolerance.get(o, np.nan)):
                    tolerance[o] = 64 * float(np.finfo(np.float32).eps) * scale
        except Exception as error:  # noqa: BLE001
            return [Finding("invalid-model", "onnxruntime", f"{type(error).__name__}: {str(error)[:400]}",
                            type(error).__name__)]
    findings = []
    for config in configs:
        name = config_name(config)
        if progress:
            progress(config)
        try:
            result = compile_model(model, target=config[0], options=CompileOptions(fusion=config[1], threads=threads))
            outputs = result.executable.run({k: v.copy() for k, v in feeds.items()})
        except UnsupportedError as error:
            findings.append(Finding("unsupported", name, str(error)[:600], type(error).__name__))
            continue
        except DlcError as error:
            if expected_error is None:
                findings.append(Finding("false-error", name, f"{type(error).__name__}: {str(error)[:600]}",
                                        type(error).__name__))
            continue
        except Exception as error:  # noqa: BLE001 (anything but a DlcError is a finding)
            findings.append(Finding("wrong-error" if expected_error else "run-error", name,
                                    f"{type(error).__name__}: {str(error)[:600]}"
                                    + (f" (expected a DlcError: {expected_error})" if expected_error else ""),
                                    type(error).__name__))
            continue
        if expected_error is not None:
            findings.append(Finding("silent-answer", name, f"dlc answered where the run is an error: "
                                    f"{expected_error}", "silent-answer"))
            continue
        problems = []
        for o in model.graph.output:
            if o.name not in outputs:
                problems.append(f"output '{o.name}' missing")
                continue
            got, want = np.asarray(outputs[o.name]), expected[o.name]
            if max_like(model, o.name) and got.shape == want.shape and want.dtype.kind == "f":
                # NaN through a max-like op is the implementation's choice (onnxruntime skips a NaN
                # unless it comes first; dlc propagates it, as IEEE maximum does): dlc's NaN is
                # taken where onnxruntime has a number.
                want = np.where(np.isnan(got) & ~np.isnan(want), np.float32(np.nan), want).astype(want.dtype)
                # onnxruntime's MaxPool/ReduceMax start from the dtype's lowest finite value (and
                # Min-like ones from its largest), so a window of only -Inf reads -FLT_MAX there;
                # dlc answers -Inf, the max of the window's elements as the spec defines it.
                finfo = np.finfo(want.dtype)
                want = np.where(np.isneginf(got) & (want == finfo.min), got, want)
                want = np.where(np.isposinf(got) & (want == finfo.max), got, want).astype(want.dtype)
            special = _special_mismatch(o.name, got, want)
            second = onnx_reference(model, feeds).get(o.name) if special else None
            if second is not None and second.shape == want.shape and _special_mismatch(o.name, got, second) is None:
                # Where NaN/Inf land can be an implementation's choice the two oracles disagree
                # on (onnxruntime's Tanh flushes a denormal result to -0, so Sqrt of it gives -0,
                # not the NaN of IEEE arithmetic): dlc agreeing with onnx's reference evaluator
                # there is not a finding; the finite elements are still compared with onnxruntime.
                want = np.where(np.isfinite(second), want, second).astype(want.dtype)
                special = None
            if special and contractible(model, o.name):
                # A Mul feeding an Add/Sub may be contracted into one FMA (DESIGN.md allows
                # `contract`), which rounds once: where the float32 product overflows, the FMA
                # keeps the exact product, so onnxruntime's inf - inf = NaN can read +-Inf or a
                # number there. Those places only are excused; every other one is still compared.
                excused = np.isnan(want) & ~np.isnan(got)
                want = np.where(excused, got, want).astype(want.dtype)
                special = _special_mismatch(o.name, got, want)
            problem = special or (
                _finite_compare(o.name, got, want, tolerance.get(o.name, 0.0)) if got.shape == want.shape
                and got.dtype == want.dtype and want.dtype.kind == "f" else compare(o.name, got, want, 0.0))
            if problem and want.dtype.kind in "iub" and np.array_equal(got, onnx_reference(model, feeds).get(o.name)):
                # Integer results have one right answer; dlc equal to the spec's own evaluator
                # where onnxruntime differs is onnxruntime's bug (1.30 computes an int64 fmod
                # through double: Mod(INT64_MAX, 22) comes out wrong; 1.32 agrees with dlc).
                problem = None
            if problem:
                problems.append(problem)
        if problems:
            findings.append(Finding("mismatch", name, "; ".join(problems)[:800], "mismatch"))
    return findings


def onnx_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray], _cache: dict = {}) -> dict[str, np.ndarray]:  # noqa: B006
    """onnx.reference's outputs (empty when it cannot run the model), kept for the last model."""
    key = (id(model), tuple(sorted((k, v.tobytes()) for k, v in feeds.items())))
    if key not in _cache:
        _cache.clear()
        try:
            from onnx.reference import ReferenceEvaluator

            with np.errstate(all="ignore"):
                results = ReferenceEvaluator(model).run(None, {k: v.copy() for k, v in feeds.items()})
            _cache[key] = {o.name: np.asarray(r) for o, r in zip(model.graph.output, results)}
        except Exception:  # noqa: BLE001 - no second opinion then
            _cache[key] = {}
    return _cache[key]


MAX_LIKE = ("Max", "Min", "ReduceMax", "ReduceMin", "MaxPool", "ArgMax", "ArgMin")


def _cone(model: onnx.ModelProto, output: str):
    """(node, its producers by input name) for every node `output` depends on."""
    producer = {o: n for n in model.graph.node for o in n.output}
    todo, seen = [output], set()
    while todo:
        name = todo.pop()
        node = producer.get(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        yield node, producer
        todo.extend(node.input)


def max_like(model: onnx.ModelProto, output: str) -> bool:
    """Whether a max-like operator is in `output`'s cone."""
    return any(node.op_type in MAX_LIKE for node, _ in _cone(model, output))


def contractible(model: onnx.ModelProto, output: str) -> bool:
    """Whether `output`'s cone holds a Mul whose result feeds an Add or Sub (an FMA candidate)."""
    return any(node.op_type in ("Add", "Sub") and any(producer.get(i) is not None and producer[i].op_type == "Mul"
                                                      for i in node.input)
               for node, producer in _cone(model, output))


def _finite_compare(name: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> str | None:
    from dlc.tools.fuzz.checks import compare

    mask = np.isfinite(want)
    return compare(name, np.where(mask, got, 0).astype(got.dtype), np.where(mask, want, 0).astype(want.dtype),
                   tolerance)
