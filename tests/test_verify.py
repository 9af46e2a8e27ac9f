"""`dlc verify` (dlc/tools/verify.py): layer-by-layer comparison with onnxruntime.

Divergence is injected honestly: a test-only pass, loaded through the pass-plugin mechanism
(`--load-pass-plugin`, `-p`), miscompiles exactly one node; verify must name that node, see
that its inputs match, and not blame the nodes after it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")

from dlc.cli import main
from dlc.errors import DlcError
from dlc.tools.verify import tolerance_for, verify


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "verify_test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _weight(name, shape, seed):
    return numpy_helper.from_array(np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32), name)


def small_cnn() -> onnx.ModelProto:
    """Conv -> Relu -> Reshape -> MatMul -> Sub -> Tanh -> Neg -> Softmax: contraction, exact,
    arithmetic, transcendental and normalisation operators in one chain."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc"], ["m"], name="fc"),
        helper.make_node("Sub", ["m", "offset"], ["s"], name="target_sub"),
        helper.make_node("Tanh", ["s"], ["t"], name="tanh"),
        helper.make_node("Neg", ["t"], ["n"], name="neg"),
        helper.make_node("Softmax", ["n"], ["y"], name="softmax", axis=-1),
    ]
    initializers = [_weight("w", [4, 2, 3, 3], 1), _weight("b", [4], 2), _weight("fc", [144, 10], 3),
                    _weight("offset", [10], 4),
                    numpy_helper.from_array(np.array([1, 144], np.int64), "shape")]
    return _model(nodes, [x], [y], initializers)


# A miscompiling graph pass: a - b becomes b - a for the node named 'target_sub' only.
BROKEN_SUB_PLUGIN = '''
from dataclasses import dataclass
from xdsl.passes import ModulePass
from dialects.onnx import OnnxOp


@dataclass(frozen=True)
class SwapSubOperands(ModulePass):
    """Test-only: swaps the operands of the Sub named target_sub (a miscompile)."""

    name = "swap-sub-operands"

    def apply(self, ctx, module) -> None:
        for op in module.walk():
            if isinstance(op, OnnxOp) and op.onnx_type == "Sub" and op.node_name == "target_sub":
                a, b = op.operands
                op.operands = [b, a]
'''

# A wrong "fusion": drops Neg(y) when y has no other use. With every intermediate exposed as
# an output, y always has another use, so only the normally compiled model is wrong.
BROKEN_FUSION_PLUGIN = '''
from dataclasses import dataclass
from xdsl.passes import ModulePass
from dialects.onnx import OnnxOp


@dataclass(frozen=True)
class DropSingleUseNeg(ModulePass):
    """Test-only: replaces Neg(y) by y where y has one use (a miscompile hidden by exposing y)."""

    name = "drop-single-use-neg"

    def apply(self, ctx, module) -> None:
        for op in list(module.walk()):
            if isinstance(op, OnnxOp) and op.onnx_type == "Neg":
                source = op.operands[0]
                if len(list(source.uses)) == 1:
                    op.results[0].replace_all_uses_with(source)
                    op.detach()
                    op.erase()
'''


def _pipeline_with(extra_pass: str) -> str:
    """The default cpu pipeline as text, with `extra_pass` at the end of the graph phase."""
    from dlc.driver import default_pipeline
    from dlc.targets import CompileOptions, get_target

    names = []
    for phase, passes in default_pipeline(get_target("cpu"), CompileOptions()):
        names.extend(str(p.pipeline_pass_spec()) for p in passes)
        if phase == "graph":
            names.append(extra_pass)
    return ",".join(names)


@pytest.fixture
def cnn_path(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), path)
    return str(path)


def _plugin(tmp_path, text: str, name: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return str(path)


def test_matching_model_every_tensor_checked_locally():
    report = verify(small_cnn())
    assert report.ok and report.first_divergence is None
    assert [c.node for c in report.checks] == ["conv", "relu", "flatten", "fc", "target_sub", "tanh", "neg",
                                               "softmax"]
    assert all(c.status == "ok" and c.local for c in report.checks)
    rules = {c.op_type: c.rule for c in report.checks}
    assert rules["Relu"] == rules["Reshape"] == rules["Neg"] == "exact"
    assert "(2K+4, K=18)" in rules["Conv"] and "(2K+4, K=144)" in rules["MatMul"]
    assert [f.output for f in report.finals] == ["y"] and report.finals[0].ok
    assert set(report.kernels) == {"instrumented", "normal"}
    assert "all 8 tensors match" in report.format()


def test_injected_miscompile_names_exactly_that_node(tmp_path):
    from passes import load_pass_plugin

    load_pass_plugin(_plugin(tmp_path, BROKEN_SUB_PLUGIN, "swap_sub"))
    report = verify(small_cnn(), pipeline=_pipeline_with("swap-sub-operands"))
    first = report.first_divergence
    assert first is not None and first.node == "target_sub" and first.op_type == "Sub"
    assert first.local_error > 100 * first.tolerance  # a - b against b - a: not a rounding matter
    # Its inputs match, and the nodes after it are right given what they were fed.
    by_node = {c.node: c for c in report.checks}
    assert by_node["fc"].status == "ok"
    assert [c.node for c in report.checks if c.status != "ok"] == ["target_sub"]
    assert by_node["tanh"].abs_error > 1e-3  # ...though they differ from onnxruntime's whole run
    assert not report.ok and not report.finals[0].ok  # the normal build carries the same bug
    verdict = report.format()
    assert "first divergence: node 'target_sub' (Sub)" in verdict and "its inputs match" in verdict


def test_wrong_lowering_inside_a_fused_kernel_is_named(monkeypatch):
    """A codegen bug: Tanh lowered as tanh(1.01 x), inside the kernel it shares with its neighbours."""
    from xdsl.dialects import math

    from passes.lowering.rules import elementwise

    monkeypatch.setenv("DLC_CACHE", "0")  # the cache key hashes the source, not this patch
    monkeypatch.setitem(elementwise._FLOAT_UNARY, "Tanh",
                        lambda b, x, op: b.math(math.TanhOp, b.mul(x, b.const(1.01))))
    report = verify(small_cnn())
    assert [c.node for c in report.checks if c.status != "ok"] == ["tanh"]
    assert report.first_divergence.local_error > 1e-4
    assert "first divergence: node 'tanh' (Tanh)" in report.format() and "its inputs match" in report.format()


def test_fusion_only_miscompile_is_caught_by_the_final_outputs(tmp_path):
    from passes import load_pass_plugin

    load_pass_plugin(_plugin(tmp_path, BROKEN_FUSION_PLUGIN, "drop_neg"))
    report = verify(small_cnn(), pipeline=_pipeline_with("drop-single-use-neg"))
    assert report.first_divergence is None  # with intermediates exposed the pass cannot fire
    assert not report.finals[0].ok and not report.ok
    assert "exposing them prevents" in report.format()


def test_cli_exit_codes_output_and_json(cnn_path, tmp_path, capsys):
    assert main(["verify", cnn_path]) == 0
    out = capsys.readouterr().out
    assert "all 8 tensors match" in out and "target_sub" in out

    plugin = _plugin(tmp_path, BROKEN_SUB_PLUGIN, "swap_sub_cli")
    report_path = tmp_path / "report.json"
    code = main(["verify", cnn_path, "--load-pass-plugin", plugin, "-p", _pipeline_with("swap-sub-operands"),
                 "--json", str(report_path), "--only-divergent"])
    out = capsys.readouterr().out
    assert code == 1
    assert "first divergence: node 'target_sub' (Sub)" in out and "DIVERGES" in out
    table = out.split("status", 1)[1].split("first divergence", 1)[0]
    assert "target_sub" in table and "conv" not in table  # --only-divergent
    data = json.loads(report_path.read_text())
    assert data["ok"] is False and data["first_divergence"]["node"] == "target_sub"
    assert {c["node"]: c["status"] for c in data["checks"]}["fc"] == "ok"


def test_cli_tolerance_override(cnn_path, tmp_path, capsys):
    plugin = _plugin(tmp_path, BROKEN_SUB_PLUGIN, "swap_sub_tol")
    code = main(["verify", cnn_path, "--load-pass-plugin", plugin, "-p", _pipeline_with("swap-sub-operands"),
                 "--rtol", "0", "--atol", "100"])
    out = capsys.readouterr().out
    assert code == 0 and "(--rtol/--atol)" in out and "all 8 tensors match" in out


def test_cli_user_input_file(cnn_path, tmp_path, capsys):
    x = np.full((1, 2, 6, 6), 0.25, np.float32)
    np.save(tmp_path / "x.npy", x)
    report_path = tmp_path / "r.json"
    assert main(["verify", cnn_path, "--input", f"x={tmp_path / 'x.npy'}", "--json", str(report_path)]) == 0
    assert json.loads(report_path.read_text())["inputs"] == {"x": [1, 2, 6, 6]}


@pytest.mark.parametrize("args,message", [
    (["--input", "x=/nonexistent/x.npy"], "no such file"),
    (["--input", "z=X.npy"], "unknown input name(s) ['z']"),
    (["--input", "x=BAD_SHAPE.npy"], "input 'x': expected shape [1, 2, 6, 6], got [2, 2]"),
])
def test_cli_bad_inputs_are_clear_errors(cnn_path, tmp_path, capsys, args, message):
    np.save(tmp_path / "X.npy", np.zeros((1, 2, 6, 6), np.float32))
    np.save(tmp_path / "BAD_SHAPE.npy", np.zeros((2, 2), np.float32))
    args = [a.replace("X.npy", str(tmp_path / "X.npy")).replace("BAD_SHAPE.npy", str(tmp_path / "BAD_SHAPE.npy"))
            for a in args]
    assert main(["verify", cnn_path, *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_model_and_symbolic_shape(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "missing.onnx")]) == 1
    assert "no such file" in capsys.readouterr().err
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [x], [y])
    with pytest.raises(DlcError, match=r"symbolic dimensions .*'x' \[N, 3\]"):
        verify(model)
    report = verify(model, input_shapes={"x": (2, 3)})
    assert report.ok and report.inputs == {"x": [2, 3]}


class _Node:
    def __init__(self, op_type, **attributes):
        self.op_type = op_type
        self.attribute = [helper.make_attribute(k, v) for k, v in attributes.items()]


def test_contraction_tolerance_passes_rounding_and_flags_real_errors():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (8, 256)).astype(np.float32)
    b = rng.uniform(-1, 1, (256, 16)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    float32 = (a @ b).astype(np.float32)  # numpy's BLAS: another summation order
    tol, rule = tolerance_for(_Node("MatMul"), [a, b], float32,
                              lambda: np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64), opset=21)
    assert "(2K+4, K=256)" in rule
    assert np.all(np.abs(exact - float32) <= tol)
    wrong = float32.copy()
    wrong[3, 5] += 0.01 * np.abs(a[3]) @ np.abs(b[:, 5])  # 1% of sum |a_i b_i|: beyond any rounding
    assert np.abs(wrong - exact)[3, 5] > tol[3, 5]


def test_exact_and_transcendental_tolerances():
    x = np.linspace(-3, 3, 101, dtype=np.float32)
    tol, rule = tolerance_for(_Node("Relu"), [x], np.maximum(x, 0), opset=21)
    assert rule == "exact" and not tol.any()
    tol, rule = tolerance_for(_Node("Tanh"), [x], np.tanh(x), opset=21)
    exact = np.tanh(x.astype(np.float64))
    assert np.all(np.abs(np.tanh(x) - exact) <= tol)  # libm's float32 tanh is within an ulp
    off = np.abs(np.tanh(x) * (1 + 1e-5) - exact) > tol  # 1e-5 relative: ~80 ulp
    assert np.all(off[np.abs(x) > 0.1])
    tol, _ = tolerance_for(_Node("Shape"), [x], np.array([101], np.int64), opset=21)
    assert not tol.any()


def test_dropout_mask_is_listed_as_not_compared():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Dropout", ["r"], ["y", "mask"], name="dropout")]
    report = verify(_model(nodes, [x], [y]))
    assert report.ok
    assert [(c.output, c.status) for c in report.checks] == [("r", "ok"), ("y", "ok"), ("mask", "skipped")]
    assert "all 2 tensors match (1 not compared: see the table)" in report.format()


def test_node_onnxruntime_cannot_run_alone_is_judged_on_the_whole_run(monkeypatch, tmp_path):
    """Without a local reference, a node's whole-model error may include what its inputs inherited:
    within (own tolerance + inputs' error) it passes; beyond it is 'unverified', not blamed."""
    from dlc.tools import verify as verify_module
    from passes import load_pass_plugin

    real_session = verify_module._NodeRunner.session

    def session(self, node, inputs):
        if node.name in ("tanh", "target_sub"):
            raise RuntimeError("simulated: no kernel for this node alone")
        return real_session(self, node, inputs)

    monkeypatch.setattr(verify_module._NodeRunner, "session", session)
    report = verify(small_cnn())
    rows = {c.node: c for c in report.checks}
    assert not rows["tanh"].local and rows["tanh"].status == "ok" and "simulated" in rows["tanh"].note
    assert report.ok

    load_pass_plugin(_plugin(tmp_path, BROKEN_SUB_PLUGIN, "swap_sub_unverified"))
    report = verify(small_cnn(), pipeline=_pipeline_with("swap-sub-operands"))
    rows = {c.node: c for c in report.checks}
    assert rows["target_sub"].status == "unverified" and report.first_divergence is None
    assert not report.ok  # what cannot be verified does not pass
    assert "1 tensor(s) could not be verified" in report.format()


def _elementwise_zoo() -> onnx.ModelProto:
    """One node per operator class on the same input: transcendental, arithmetic, reductions."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 256])
    unary = ["Exp", "Tanh", "Sigmoid", "Erf", "Softplus", "Elu", "Selu", "Celu", "Mish", "HardSigmoid",
             "HardSwish", "LeakyRelu", "Sin", "Atan", "Gelu"]
    nodes = [helper.make_node("Abs", ["x"], ["ax"], name="abs")]
    nodes += [helper.make_node(op, ["x"], [f"{op}_y"], name=op.lower()) for op in unary]
    nodes += [helper.make_node("Log", ["ax"], ["Log_y"], name="log"),
              helper.make_node("Pow", ["ax", "p"], ["Pow_y"], name="pow"),
              helper.make_node("Div", ["x", "ax"], ["Div_y"], name="div"),
              helper.make_node("Softmax", ["x"], ["Softmax_y"], name="softmax", axis=-1),
              helper.make_node("LogSoftmax", ["x"], ["LogSoftmax_y"], name="logsoftmax", axis=-1),
              helper.make_node("ReduceSum", ["x", "axes"], ["ReduceSum_y"], name="reducesum"),
              helper.make_node("ReduceLogSumExp", ["x", "axes"], ["ReduceLogSumExp_y"], name="reducelse")]
    outputs = [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT,
                                             [8, 1] if n.op_type.startswith("Reduce") else [8, 256])
               for n in nodes[1:]]
    initializers = [numpy_helper.from_array(np.array(2.5, np.float32), "p"),
                    numpy_helper.from_array(np.array([1], np.int64), "axes")]
    return _model(nodes, [x], outputs, initializers, opset=20)


def test_no_false_alarm_across_operator_classes():
    """Wide-range inputs (|x| up to ~20) through every tolerance class: all within tolerance, and
    with margin (local error at most half the tolerance), so the rules are not tuned to the edge."""
    x = (np.random.default_rng(0).standard_normal((8, 256)) * 6).astype(np.float32)
    report = verify(_elementwise_zoo(), feeds={"x": x})
    assert report.ok, report.format(only_divergent=True)
    assert all(c.local_error <= 0.5 * c.tolerance for c in report.checks if c.tolerance)
    assert "22 of 22 final outputs of the normally compiled model match onnxruntime" in report.format()
