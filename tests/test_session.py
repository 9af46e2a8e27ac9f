"""dlc.InferenceSession against onnxruntime.InferenceSession: one script, two imports.

The script below is written for onnxruntime; the dlc run changes only its import line. Names,
shapes (symbolic names kept), types, metadata and providers must be identical; outputs equal
within the tolerance each model's operators justify (see `TOLERANCES`).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ROOT
from onnx import TensorProto, helper

import dlc
from dlc.errors import DlcError, InputError, ModelLoadError

ort = pytest.importorskip("onnxruntime")

CNN = ROOT / "examples" / "models" / "cnn.onnx"
MLP = ROOT / "examples" / "models" / "mlp.onnx"
IMPORT_ORT = "import onnxruntime as rt\n"

SCRIPT = IMPORT_ORT + '''import numpy as np


def main(model, batch, level, overrides=()):
    options = rt.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = getattr(rt.GraphOptimizationLevel, level)
    for name, value in overrides:
        options.add_free_dimension_override_by_name(name, value)
    session = rt.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
    feed = {i.name: rng.uniform(-1, 1, [d if isinstance(d, int) else batch for d in i.shape]).astype(dtypes[i.type])
            for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    meta = session.get_modelmeta()
    return {"inputs": [(i.name, i.shape, i.type) for i in session.get_inputs()],
            "outputs": [(o.name, o.shape, o.type) for o in session.get_outputs()],
            "all": session.run(None, feed), "reversed": session.run(names[::-1], feed),
            "first": session.run(names[:1], feed)[0],
            "meta": (meta.producer_name, meta.graph_name, meta.domain, meta.description, meta.graph_description,
                     meta.version, meta.custom_metadata_map),
            "providers": session.get_providers()}
'''


def run_script(runtime: str, *args, **kwargs) -> dict:
    """SCRIPT's main() with `runtime` imported as rt: the only line that differs."""
    text = SCRIPT if runtime == "onnxruntime" else SCRIPT.replace(IMPORT_ORT, f"import {runtime} as rt\n")
    assert text.count("import ") == SCRIPT.count("import ")
    namespace = {}
    exec(compile(text, f"<script for {runtime}>", "exec"), namespace)
    return namespace["main"](*args, **kwargs)


def symbolic_model() -> bytes:
    """Symbolic batch ('batch'), unnamed dims that shape inference fills in, metadata.
    Exact operators only (MatMul with K=1 rounds once, as any implementation must; Relu, Neg,
    Transpose, Concat copy or select): identical bits expected."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    scaled = helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [None, None])
    relu = helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["batch", None])
    rng = np.random.default_rng(1)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], rng.uniform(-2, 2, 4).astype(np.float32))
    nodes = [helper.make_node("Relu", ["x"], ["relu"], name="relu"),
             helper.make_node("Neg", ["y"], ["negy"], name="neg"),
             helper.make_node("Concat", ["relu", "negy"], ["cat"], axis=1, name="cat"),
             helper.make_node("Transpose", ["cat"], ["t"], perm=[1, 0], name="transpose"),
             helper.make_node("Slice", ["x", "zero", "one", "one"], ["col"], name="slice"),
             helper.make_node("MatMul", ["col", "w"], ["scaled"], name="matmul")]
    constants = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
                 helper.make_tensor("one", TensorProto.INT64, [1], [1])]
    t_info = helper.make_tensor_value_info("t", TensorProto.FLOAT, [None, "batch"])
    graph = helper.make_graph(nodes, "symbolic", [x, y], [t_info, scaled, relu], [weight, *constants],
                              doc_string="a graph for the session test")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test_session",
                              doc_string="exact operators, symbolic batch", model_version=7, domain="dlc.test")
    model.ir_version = 8
    helper.set_model_props(model, {"author": "dlc", "purpose": "session"})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _cnn_tolerance() -> float:
    """cnn.onnx: its longest contraction sums K = Cin x kh x kw products; two correct float32
    summation orders (dlc's blocked GEMM with FMA, onnxruntime's MLAS) differ by at most
    ~(2K + 4) ulps of the partial sums' magnitude (the bound the tools' oracle uses), here
    O(1); Relu, MaxPool and the mean of GlobalAveragePool add a few ulps, Softmax (outputs in
    [0, 1]) shrinks an absolute error in the logits."""
    model = onnx.load(str(CNN))
    weights = {init.name: init.dims for init in model.graph.initializer}
    longest = max(int(np.prod(weights[n.input[1]][1:])) for n in model.graph.node if n.op_type == "Conv")
    return (2 * longest + 4) * np.finfo(np.float32).eps


# (model, as path or bytes, batch for symbolic dims, absolute tolerance)
CASES = {
    "cnn-path": (lambda: str(CNN), 1, _cnn_tolerance),
    # mlp.onnx: Gemm/MatMul of K <= 784 inputs, then elementwise: the same (2K + 4)-ulp bound.
    "mlp-bytes": (lambda: MLP.read_bytes(), 1, lambda: (2 * 784 + 4) * np.finfo(np.float32).eps),
    "symbolic-batch-3": (symbolic_model, 3, lambda: 0.0),
    "symbolic-batch-5": (symbolic_model, 5, lambda: 0.0),
}


@pytest.mark.parametrize("level", ["ORT_ENABLE_ALL", "ORT_DISABLE_ALL"])
@pytest.mark.parametrize("case", CASES)
def test_one_script_two_runtimes(case, level):
    make, batch, tolerance = CASES[case]
    model = make()
    expected = run_script("onnxruntime", model, batch, level)
    got = run_script("dlc", model, batch, level)
    for key in ("inputs", "outputs", "meta", "providers"):
        assert got[key] == expected[key], key
    for key in ("all", "reversed"):
        assert len(got[key]) == len(expected[key])
        for ours, theirs in zip(got[key], expected[key]):
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=tolerance())
    np.testing.assert_array_equal(got["first"], got["all"][0])


def test_free_dimension_override_fixes_the_shape_before_compiling():
    """add_free_dimension_override_by_name: shown in get_inputs as onnxruntime shows it, and
    the model is compiled at construction (every dim now static)."""
    overrides = [("batch", 2)]
    expected = run_script("onnxruntime", symbolic_model(), 2, "ORT_ENABLE_ALL", overrides)
    got = run_script("dlc", symbolic_model(), 2, "ORT_ENABLE_ALL", overrides)
    assert got["inputs"] == expected["inputs"] and got["inputs"][0][1] == [2, 4]
    for ours, theirs in zip(got["all"], expected["all"]):
        np.testing.assert_array_equal(ours, theirs)
    options = dlc.SessionOptions()
    options.add_free_dimension_override_by_name("batch", 2)
    assert len(dlc.InferenceSession(symbolic_model(), options)._models) == 1


def test_options_map_onto_threads_and_fusion():
    def kernels_and_threads(level, threads):
        options = dlc.SessionOptions()
        options.graph_optimization_level = level
        options.intra_op_num_threads = threads
        session = dlc.InferenceSession(CNN, options)
        (model,) = session._models.values()
        return len(model.manifest["kernels"]), model.num_threads

    fused, one = kernels_and_threads(dlc.GraphOptimizationLevel.ORT_ENABLE_ALL, 1)
    unfused, two = kernels_and_threads(dlc.GraphOptimizationLevel.ORT_DISABLE_ALL, 2)
    assert unfused > fused and (one, two) == (1, 2)
    # onnxruntime's own SessionOptions object is read the same way.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    (model,) = dlc.InferenceSession(str(CNN), options)._models.values()
    assert len(model.manifest["kernels"]) == unfused


def test_run_errors_name_the_input_and_what_was_expected():
    session = dlc.InferenceSession(symbolic_model())
    x, y = np.ones((2, 4), np.float32), np.ones((2, 3), np.float32)
    cases = [
        ({"x": x}, r"required input\(s\) \['y'\] missing"),
        ({"x": x, "y": y, "z": y}, r"unknown input name\(s\) \['z'\]"),
        ({"x": x.astype(np.float64), "y": y}, r"input 'x' has element type tensor\(double\), the model expects "
                                              r"tensor\(float\)"),
        ({"x": x[0], "y": y}, r"input 'x' has rank 1 .* expects rank 2 \['batch', 4\]"),
        ({"x": np.ones((2, 5), np.float32), "y": y}, r"input 'x' has size 5 on axis 1, the model expects 4"),
    ]
    for feed, message in cases:
        with pytest.raises(InputError, match=message):
            session.run(None, feed)
    with pytest.raises(InputError, match=r"unknown output name 'nope'; the model's outputs are \['t'"):
        session.run(["nope"], {"x": x, "y": y})
    with pytest.raises(InputError, match="input_feed must be a dict"):
        session.run(None, [x, y])


def test_construction_errors_are_dlc_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        dlc.InferenceSession(tmp_path / "missing.onnx")
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        dlc.InferenceSession(b"\x08\xff\xff garbage")
    with pytest.raises(DlcError, match="expected a path, bytes or an onnx.ModelProto"):
        dlc.InferenceSession(42)
    options = dlc.SessionOptions()
    with pytest.raises(AttributeError):  # a misspelt option fails, as in onnxruntime
        options.intra_op_num_thread = 2
    options.intra_op_num_threads = -1
    with pytest.raises(DlcError, match="intra_op_num_threads -1"):
        dlc.InferenceSession(CNN, options)
    options = dlc.SessionOptions()
    options.graph_optimization_level = 5
    with pytest.raises(DlcError, match="graph_optimization_level 5"):
        dlc.InferenceSession(CNN, options)


def test_other_providers_warn_and_run_on_cpu():
    with pytest.warns(UserWarning, match="provider 'CUDAExecutionProvider' is not available"):
        session = dlc.InferenceSession(CNN, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"] == dlc.get_available_providers()
    assert session.get_provider_options() == {"CPUExecutionProvider": {}}


def test_import_dlc_stays_light():
    """The session API loads on first use: `import dlc` imports neither onnx nor xDSL."""
    import subprocess
    import sys

    code = "import sys, dlc; dlc.SessionOptions; print('onnx' in sys.modules, 'xdsl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
