"""Checking one model: compile it for each (target, fusion) pair, run it on the oracle's
seeded inputs next to onnxruntime and compare each output within a tolerance built from the
oracle's per-operator ulps (dlc/tools/oracle.py), carried through the graph."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dlc.tools.fuzz.generator import validate
from dlc.tools.oracle import (
    expose_outputs,
    input_specs,
    model_opset,
    operator_ulps,
    random_inputs,
    reduction_length,
    run_onnxruntime,
)

EPS32 = float(np.finfo(np.float32).eps)
# (target, fusion) pairs every model is compiled with; npu-sim takes the nodes it supports
# and partitions the rest onto cpu.
ALL_CONFIGS = (("cpu", "none"), ("cpu", "elementwise"), ("cpu", "all"),
               ("reference", "all"), ("npu-sim", "all"))

# Inputs: floats in [-2, 2) (the ranges the generator tracks assume it), small signed ints.
FEED_FLOATS = (-2.0, 2.0)
FEED_INTS = (-3, 4)


def make_feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    """The oracle's seeded inputs for the model's real inputs, in the generator's ranges."""
    return random_inputs(input_specs(model), seed, float_range=FEED_FLOATS, int_range=FEED_INTS)


# Tolerance per graph output. Every float value v gets an error budget B(v) in ulps (eps32) of
# a scale, the largest magnitude in the output's cone (its ancestors' actual values). Each
# operator adds the ulps the oracle's tolerance model allows it (dlc/tools/oracle.py: 0 for
# exact operators, a few for arithmetic, more for transcendentals, 2K+4 for a sum of K).
# The gains bound how much the operator amplifies each input's error (its partial
# derivatives), measured on the actual values: Exp by max e^x, Log by 1/min x, Div by
# max 1/|d| and max |n|/d^2 elementwise, Mul by the other operand, LayerNorm by
# max|scale|/min std, contractions by the other operand's largest row/column L1 norm.
# A weight contributes no error of its own, so B(out) = sum_i gain_i * B(input_i) + ulps.
# The final tolerance is SAFETY times the budget: the budget is an estimate of the worst
# case, not a proof, and a real bug (a wrong index, a wrong constant) is off by far more.
SAFETY = 4.0


def _length(node: onnx.NodeProto, x: np.ndarray, values: dict, opset: int) -> int:
    out = values.get(node.output[0])
    return reduction_length(node, [x.shape], out.shape if out is not None else (), opset)


def _gains(node: onnx.NodeProto, values: dict, opset: int) -> list[float]:
    """Per input: a bound on |d output / d input| over the actual values (how much an error
    in that input can grow); elementwise where the operator is elementwise."""
    op = node.op_type
    args = [values.get(n) if n else None for n in node.input]
    x = args[0] if args else None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    absmax = lambda a: float(np.max(np.abs(a))) if a is not None and a.size else 0.0
    ones = [1.0] * len(args)
    with np.errstate(all="ignore"):
        if op == "Mul" and len(args) == 2 and all(a is not None for a in args):
            return [absmax(args[1]), absmax(args[0])]
        if op == "Div" and len(args) == 2 and all(a is not None for a in args):
            n, d = np.abs(args[0]).astype(np.float64), np.abs(args[1]).astype(np.float64)
            return [float(np.max(1 / d)), float(np.max(n / d ** 2))]
        if op == "Pow" and x is not None:
            e = float(np.max(args[1]))
            return [float(np.max(np.abs(e * np.power(np.abs(x).astype(np.float64), e - 1)))), 0.0]
        if op == "Exp" and x is not None:
            return [float(np.exp(np.max(x)))]
        if op == "Log" and x is not None:
            return [1 / float(np.min(np.abs(x)))]
        if op == "Sqrt" and x is not None:
            return [0.5 / math.sqrt(float(np.min(np.abs(x))) + 1e-30)]
        if op == "Reciprocal" and x is not None:
            return [1 / float(np.min(np.abs(x))) ** 2]
        if op in ("MatMul", "Gemm") and len(args) >= 2 and all(a is not None for a in args[:2]):
            a, b = args[0], args[1]
            if op == "Gemm":
                a = a.T if attrs.get("transA", 0) else a
                b = b.T if attrs.get("transB", 0) else b
            alpha = abs(attrs.get("alpha", 1.0))
            b_norm = float(np.max(np.sum(np.abs(b), axis=-2 if b.ndim > 1 else 0)))
            a_norm = float(np.max(np.sum(np.abs(a), axis=-1)))
            return [alpha * b_norm, alpha * a_norm, abs(attrs.get("beta", 1.0))][:len(args)]
        if op == "Conv" and args[1] is not None:
            w = args[1]
            return [float(np.max(np.sum(np.abs(w).reshape(w.shape[0], -1), axis=1))),
                    absmax(x) * float(np.prod(w.shape[1:])), 1.0][:len(args)]
        if op == "LayerNormalization" and x is not None:
            axis = attrs.get("axis", -1) % x.ndim
            std = np.sqrt(np.var(x.astype(np.float64), axis=tuple(range(axis, x.ndim)))
                          + attrs.get("epsilon", 1e-5))
            return [2 * absmax(args[1]) / float(np.min(std))] + ones[1:]
        if op == "InstanceNormalization" and x is not None:
            std = np.sqrt(np.var(x.astype(np.float64), axis=tuple(range(2, x.ndim))) + attrs.get("epsilon", 1e-5))
            return [2 * absmax(args[1]) / float(np.min(std))] + ones[1:]
        if op == "BatchNormalization" and x is not None:
            return [float(np.max(np.abs(args[1]) / np.sqrt(args[4] + attrs.get("epsilon", 1e-5))))] + ones[1:]
        if op in ("ReduceSum", "ReduceSumSquare") and x is not None:
            factor = 2 * absmax(x) if op == "ReduceSumSquare" else 1.0
            return [factor * _length(node, x, values, opset)] + ones[1:]
        if op == "DeformConv" and args[1] is not None:  # as Conv: bilinear weights and mask are <= 1
            w = args[1]
            return [float(np.max(np.sum(np.abs(w).reshape(w.shape[0], -1), axis=1)))] + [1.0] * (len(args) - 1)
        if op == "DFT" and x is not None:  # a sum of N terms of |twiddle| <= 1 (inverse: / N)
            inverse = attrs.get("inverse", 0)
            return [1.0 if inverse else float(max(x.shape[:-1], default=1))] + [0.0] * (len(args) - 1)
        if op == "STFT" and x is not None:  # a frame's sum of N windowed terms
            return [float(x.shape[1])] + [0.0] * (len(args) - 1)
        if op == "ReduceL2" and x is not None:
            return [math.sqrt(_length(node, x, values, opset))] + ones[1:]
        if op in ("Softmax", "LogSoftmax", "Selu", "HardSwish", "Gelu", "Mish", "Elu", "Celu", "ReduceLogSumExp",
                  "GridSample"):  # GridSample: cubic's weights sum to at most 1.9 in |.| over 2-D
            return [2.0] + ones[1:]
    return ones


def tolerances(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> dict[str, float]:
    """Absolute tolerance per graph output, from the actual values of every intermediate."""
    values = dict(values)
    values.update({i.name: numpy_helper.to_array(i) for i in model.graph.initializer})
    shapes = {k: v.shape for k, v in values.items()}
    budget: dict[str, float] = {}
    scale: dict[str, float] = {}
    for name, array in values.items():
        budget[name] = 0.0
        scale[name] = float(np.max(np.abs(array))) if array.dtype.kind == "f" and array.size else 0.0
    initializers = {i.name for i in model.graph.initializer}
    for name in initializers:  # weights count through the gains, not as magnitudes of the cone
        scale[name] = 0.0
    opset = model_opset(model)
    for node in model.graph.node:
        present = [n for n in node.input if n]
        cone = max([scale.get(n, 0.0) for n in present], default=0.0)
        out = shapes.get(node.output[0], ())
        ulps, _ = operator_ulps(node, [shapes.get(n) for n in node.input], out, opset)
        gains = _gains(node, values, opset)
        b = sum(g * budget.get(n, 0.0) for g, n in zip(gains, node.input) if n) + ulps
        for out in node.output:
            own = values.get(out)
            magnitude = float(np.max(np.abs(own))) if own is not None and own.dtype.kind == "f" and own.size \
                else 0.0
            budget[out], scale[out] = b, max(cone, magnitude)
    return {o.name: SAFETY * EPS32 * budget.get(o.name, 0.0) * max(scale.get(o.name, 0.0), 1e-30)
            for o in model.graph.output}


# --- checking a model ----------------------------------------------------------------------------

# Findings that are the oracle's, not dlc's: a model onnxruntime refuses (the generator's
# problem, or onnxruntime's), and outputs that onnxruntime's graph optimisations change while
# dlc gives what onnxruntime gives without them (onnxruntime 1.32 fuses Transpose -> MatMul
# of a 1-D B into a wrong FusedMatMul). Counted apart and never saved to the corpus.
ORACLE_KINDS = frozenset({"invalid-model", "onnxruntime-optimiser"})


@dataclass
class Finding:
    """One way a model failed: kind, the (target, fusion) it failed with, and what happened."""

    kind: str  # mismatch | unsupported | compile-error | run-error | crash | timeout | ORACLE_KINDS
    config: str  # "cpu/all", "npu-sim/all", ...
    message: str
    error_type: str = ""

    def signature(self) -> tuple[str, str, str]:
        """What 'fails the same way' compares while minimising."""
        return self.kind, self.config, self.error_type


def config_name(config) -> str:
    return f"{config[0]}/{config[1]}"


def compare(name: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> str | None:
    """Why `got` is not onnxruntime's `want` (None: it matches)."""
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"output '{name}': shape {got.shape}, onnxruntime {want.shape}"
    if got.dtype != want.dtype:
        return f"output '{name}': dtype {got.dtype}, onnxruntime {want.dtype}"
    if want.dtype.kind != "f":
        if np.array_equal(got, want):
            return None
        index = tuple(int(i) for i in np.argwhere(got != want)[0])
        return f"output '{name}': {int(np.sum(got != want))} elements differ, first at {index}: " \
               f"dlc {got[index]}, onnxruntime {want[index]}"
    with np.errstate(invalid="ignore"):
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        same_special = (np.isnan(got) & np.isnan(want)) | (got == want)
        bad = ~same_special & ~(diff <= tolerance)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    worst = float(np.nanmax(np.where(bad, diff, 0))) if np.isfinite(diff[bad]).any() else float("nan")
    return (f"output '{name}': {int(bad.sum())}/{bad.size} elements beyond tolerance {tolerance:.3g} "
            f"(max |diff| {worst:.3g}); first at {index}: dlc {got[index]!r}, onnxruntime {want[index]!r}")


def check_model(model: onnx.ModelProto, feed_seed: int = 0, configs=ALL_CONFIGS,
                fault: Callable[[onnx.ModelProto, tuple], str | None] | None = None,
                progress: Callable[[tuple], None] | None = None, threads: int = 1) -> list[Finding]:
    """Compile `model` with each (target, fusion) in `configs`, run it and compare with onnxruntime.

    `fault` injects a failure (a message, or None) per config, to test the minimiser;
    `progress` is told which config is about to run (the worker reports it, so a crash is
    attributed to the right one).
    """
    from dlc.driver import compile_model
    from dlc.errors import UnsupportedError
    from dlc.targets import CompileOptions

    try:
        inferred = validate(model)
        feeds = make_feeds(model, feed_seed)
        expected = run_onnxruntime(model, feeds)
        intermediates = [v for v in inferred.graph.value_info if v.type.tensor_type.HasField("shape")]
        values = dict(expected)
        values.update(run_onnxruntime(expose_outputs(model, intermediates), feeds)
                      if intermediates else {})
        values.update(feeds)
        tolerance = tolerances(model, values)
    except Exception as error:  # noqa: BLE001 (the generator's or onnxruntime's problem, not dlc's)
        return [Finding("invalid-model", "onnxruntime", f"{type(error).__name__}: {str(error)[:400]}",
                        type(error).__name__)]
    findings = []
    unoptimised: dict | None = None  # onnxruntime without graph optimisations, asked on a mismatch
    for config in configs:
        name = config_name(config)
        if progress:
            progress(config)
        if fault is not None and (message := fault(model, config)):
            findings.append(Finding("mismatch", name, message, "injected"))
            continue
        try:
            result = compile_model(model, target=config[0],
                                   options=CompileOptions(fusion=config[1], threads=threads))
        except UnsupportedError as error:
            findings.append(Finding("unsupported", name, str(error)[:600], type(error).__name__))
            continue
        except Exception as error:  # noqa: BLE001 (any crash of the compiler is a finding)
            findings.append(Finding("compile-error", name, f"{type(error).__name__}: {str(error)[:600]}",
                                    type(error).__name__))
            continue
        try:
            outputs = result.executable.run(dict(feeds))
        except Exception as error:  # noqa: BLE001 (any crash of the executable is a finding)
            findings.append(Finding("run-error", name, f"{type(error).__name__}: {str(error)[:600]}",
                                    type(error).__name__))
            continue
        problems = [p for o in model.graph.output if (p := (
            f"output '{o.name}' missing" if o.name not in outputs else
            compare(o.name, outputs[o.name], expected[o.name], tolerance[o.name])))]
        if problems:
            if unoptimised is None:
                unoptimised = _unoptimised(model, feeds)
            if _optimiser_changed_it(model, outputs, expected, unoptimised, tolerance):
                findings.append(Finding("onnxruntime-optimiser", name, "dlc equals onnxruntime without graph "
                                        "optimisations; with them: " + "; ".join(problems)[:700],
                                        "onnxruntime-optimiser"))
            else:
                findings.append(Finding("mismatch", name, "; ".join(problems)[:800], "mismatch"))
    return findings


def _unoptimised(model: onnx.ModelProto, feeds: dict) -> dict:
    """onnxruntime's outputs with its graph optimisations off ({} where it fails)."""
    try:
        return run_onnxruntime(model, feeds, graph_optimisation="none")
    except Exception:  # noqa: BLE001 (then the optimised answer stands)
        return {}


def _optimiser_changed_it(model, outputs: dict, optimised: dict, unoptimised: dict, tolerance: dict) -> bool:
    """Whether dlc's outputs all match onnxruntime's without graph optimisations while the
    optimised session's differ from those: the optimiser's mistake, not dlc's."""
    names = [o.name for o in model.graph.output]
    if not unoptimised or any(name not in unoptimised or name not in outputs for name in names):
        return False
    return (all(compare(n, outputs[n], unoptimised[n], tolerance[n]) is None for n in names)
            and any(compare(n, optimised[n], unoptimised[n], tolerance[n]) is not None for n in names))
