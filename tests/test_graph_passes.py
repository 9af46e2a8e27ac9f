"""Graph-phase passes on small ONNX models: each pass's effect on the IR, and numerics kept.

Each case compiles a model to the `graph` phase with one pass, counts ops, then
checks the rewritten graph against onnxruntime twice: interpreted by the
`reference` target, and compiled natively by `cpu` from the rewritten MLIR.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import numpy as np
import onnx
import pytest
from conftest import ROOT, assert_matches_onnxruntime, random_feeds, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

import dlc
from dialects.onnx import OnnxOp, WeightOp
from dlc.driver import compile_model, write_mlir

RNG = np.random.default_rng(7)


def make_model(nodes, inputs, outputs, weights=None) -> onnx.ModelProto:
    """inputs/outputs: {name: shape} of float32; weights: {name: array}."""
    def info(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    graph = helper.make_graph(nodes, "g", [info(n, s) for n, s in inputs.items()],
                              [info(n, s) for n, s in outputs.items()],
                              [numpy_helper.from_array(a, n) for n, a in (weights or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def weight(*shape, low=-1.0, high=1.0) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def graph_ops(model, pipeline: str) -> Counter:
    """ONNX op types (and 'weight') in @main after `pipeline`."""
    module = compile_model(model, compile_to="graph", pipeline=pipeline).module
    return Counter("weight" if isinstance(op, WeightOp) else op.onnx_type
                   for op in module.walk() if isinstance(op, OnnxOp | WeightOp))


def assert_pass_keeps_numerics(model, pipeline: str, tmp_path, rtol=1e-4, atol=1e-5) -> None:
    """The graph after `pipeline` computes what onnxruntime does, on `reference` and on `cpu`."""
    feeds = random_feeds(model)
    expected = run_onnxruntime(model, feeds)
    reference = compile_model(model, target="reference", pipeline=pipeline).executable
    path = tmp_path / "graph.mlir"
    write_mlir(compile_model(model, compile_to="graph", pipeline=pipeline).module, path)
    native = compile_model(path, compile_from="graph", target="cpu").executable
    for executable in (reference, native):
        for got, want in zip(executable.run(feeds).values(), expected):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def check(model, pipeline, tmp_path, gone=(), kept=(), rtol=1e-4, atol=1e-5) -> Counter:
    ops = graph_ops(model, pipeline)
    for op_type in gone:
        assert ops[op_type] == 0, f"{pipeline} left {op_type}: {dict(ops)}"
    for op_type in kept:
        assert ops[op_type] > 0, f"{pipeline} removed {op_type}: {dict(ops)}"
    assert_pass_keeps_numerics(model, pipeline, tmp_path, rtol, atol)
    return ops


# --- remove-identity, remove-dropout ------------------------------------------------------

def test_remove_identity(tmp_path):
    model = make_model([helper.make_node("Identity", ["x"], ["i"]),
                        helper.make_node("Relu", ["i"], ["y"]),
                        helper.make_node("Identity", ["i"], ["z"])],
                       {"x": [2, 3]}, {"y": [2, 3], "z": [2, 3]})
    check(model, "remove-identity", tmp_path, gone=["Identity"], kept=["Relu"])


def test_remove_dropout(tmp_path):
    model = make_model([helper.make_node("Dropout", ["x", "ratio", "mode"], ["d"]),
                        helper.make_node("Relu", ["d"], ["y"])],
                       {"x": [2, 3]}, {"y": [2, 3]},
                       {"ratio": np.array(0.5, np.float32), "mode": np.array(False)})
    check(model, "remove-dropout", tmp_path, gone=["Dropout"])


def test_dropout_with_used_mask_becomes_an_all_true_mask():
    """In inference a Dropout's mask is all true: the importer writes it as a constant (and
    the data as an Identity), so no Dropout is left for remove-dropout to keep."""
    model = make_model([helper.make_node("Dropout", ["x"], ["d", "mask"]),
                        helper.make_node("Cast", ["mask"], ["y"], to=TensorProto.FLOAT)],
                       {"x": [2, 3]}, {"y": [2, 3]})
    assert graph_ops(model, "remove-dropout")["Dropout"] == 0
    y = dlc.compile(model).run({"x": np.random.default_rng(0).standard_normal((2, 3), np.float32)})["y"]
    np.testing.assert_array_equal(y, np.ones((2, 3), np.float32))


# --- remove-noop-reshape -------------------------------------------------------------------

def test_remove_noop_reshape(tmp_path):
    shape = np.array([2, 3], np.int64)
    model = make_model([helper.make_node("Reshape", ["x", "same"], ["r"]),
                        helper.make_node("Flatten", ["r"], ["f"], axis=1),
                        helper.make_node("Relu", ["f"], ["y"])],
                       {"x": [2, 3]}, {"y": [2, 3]}, {"same": shape})
    check(model, "remove-noop-reshape", tmp_path, gone=["Reshape", "Flatten"])


def test_reshape_chain_becomes_one_reshape(tmp_path):
    # The outer shape copies dimension 0 (a 0 entry): the merged Reshape must not.
    model = make_model([helper.make_node("Unsqueeze", ["x", "axes"], ["u"]),
                        helper.make_node("Reshape", ["u", "s1"], ["r"]),
                        helper.make_node("Reshape", ["r", "s2"], ["y"])],
                       {"x": [2, 3, 4]}, {"y": [6, 4]},
                       {"axes": np.array([0], np.int64), "s1": np.array([6, 2, 2], np.int64),
                        "s2": np.array([0, -1], np.int64)})
    ops = check(model, "remove-noop-reshape", tmp_path, gone=["Unsqueeze"])
    assert ops["Reshape"] == 1


# --- cancel-transposes ---------------------------------------------------------------------

def test_inverse_transposes_cancel(tmp_path):
    model = make_model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                        helper.make_node("Transpose", ["t"], ["u"], perm=[0, 3, 1, 2]),
                        helper.make_node("Relu", ["u"], ["y"])],
                       {"x": [1, 2, 3, 4]}, {"y": [1, 2, 3, 4]})
    check(model, "cancel-transposes", tmp_path, gone=["Transpose"])


def test_transposes_sink_through_elementwise_ops_and_cancel(tmp_path):
    """sink-transposes: Relu and Add of two tensors transposed the same way run untransposed;
    the Transpose then meets its inverse (onnxruntime computes the model as written)."""
    model = make_model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                        helper.make_node("Relu", ["t"], ["r"]),
                        helper.make_node("Transpose", ["z"], ["u"], perm=[0, 3, 1, 2]),
                        helper.make_node("Add", ["r", "u"], ["s"]),
                        helper.make_node("Mul", ["s", "half"], ["h"]),
                        helper.make_node("Transpose", ["h"], ["y"], perm=[0, 2, 3, 1])],
                       {"x": [1, 3, 4, 2], "z": [1, 3, 4, 2]}, {"y": [1, 3, 4, 2]},
                       {"half": np.array(0.5, np.float32)})
    check(model, "sink-transposes", tmp_path, gone=["Transpose"], kept=["Add", "Mul", "Relu"])


def test_transposes_compose(tmp_path):
    model = make_model([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 2, 0]),
                        helper.make_node("Transpose", ["t"], ["y"])],  # default perm: reversed
                       {"x": [2, 3, 4]}, {"y": [2, 4, 3]})
    assert check(model, "cancel-transposes", tmp_path)["Transpose"] == 1


# --- fuse-matmul-add -----------------------------------------------------------------------

@pytest.mark.parametrize("bias_shape", [[5], [1, 5], [4, 5], [1]])
def test_matmul_add_becomes_gemm(tmp_path, bias_shape):
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["m"]),
                        helper.make_node("Add", ["b", "m"], ["y"])],
                       {"x": [4, 3]}, {"y": [4, 5]}, {"w": weight(3, 5), "b": weight(*bias_shape)})
    check(model, "fuse-matmul-add", tmp_path, gone=["MatMul", "Add"], kept=["Gemm"])


def test_batched_matmul_add_stays(tmp_path):
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["m"]),
                        helper.make_node("Add", ["m", "b"], ["y"])],
                       {"x": [2, 4, 3]}, {"y": [2, 4, 5]}, {"w": weight(3, 5), "b": weight(5)})
    check(model, "fuse-matmul-add", tmp_path, gone=["Gemm"], kept=["MatMul", "Add"])


def test_add_that_broadcasts_the_product_stays():
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["m"]),
                        helper.make_node("Add", ["m", "b"], ["y"])],
                       {"x": [1, 3]}, {"y": [4, 5]}, {"w": weight(3, 5), "b": weight(4, 5)})
    assert graph_ops(model, "fuse-matmul-add")["Gemm"] == 0


# --- fold-batchnorm-into-conv --------------------------------------------------------------

def batchnorm(channels: int, prefix: str = "bn") -> tuple[list[str], dict[str, np.ndarray]]:
    names = [f"{prefix}.{p}" for p in ("scale", "bias", "mean", "var")]
    arrays = [weight(channels, low=0.5, high=2), weight(channels), weight(channels),
              weight(channels, low=0.1, high=2)]
    return names, dict(zip(names, arrays))


@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_batchnorm_into_conv(tmp_path, with_bias):
    names, params = batchnorm(4)
    conv_inputs = ["x", "w", "b"] if with_bias else ["x", "w"]
    model = make_model([helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1], group=2),
                        helper.make_node("BatchNormalization", ["c", *names], ["y"], epsilon=1e-3)],
                       {"x": [1, 2, 5, 5]}, {"y": [1, 4, 5, 5]},
                       {"w": weight(4, 1, 3, 3), "b": weight(4), **params})
    check(model, "fold-batchnorm-into-conv", tmp_path, gone=["BatchNormalization"], kept=["Conv"])


@pytest.mark.parametrize("trans_b", [0, 1])
def test_fold_batchnorm_into_gemm(tmp_path, trans_b):
    names, params = batchnorm(5)
    gemm = helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=trans_b, alpha=0.5, beta=2.0)
    model = make_model([gemm,
                        helper.make_node("BatchNormalization", ["g", *names], ["y"])],
                       {"x": [3, 4]}, {"y": [3, 5]},
                       {"w": weight(5, 4) if trans_b else weight(4, 5), "c": weight(3, 5), **params})
    check(model, "fold-batchnorm-into-conv", tmp_path, gone=["BatchNormalization"], kept=["Gemm"])


def test_fold_batchnorm_into_matmul(tmp_path):
    names, params = batchnorm(5)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["m"]),
                        helper.make_node("BatchNormalization", ["m", *names], ["y"])],
                       {"x": [3, 4]}, {"y": [3, 5]}, {"w": weight(4, 5), **params})
    check(model, "fold-batchnorm-into-conv", tmp_path, gone=["BatchNormalization", "MatMul"],
          kept=["Gemm"])


def test_batchnorm_after_shared_conv_stays(tmp_path):
    names, params = batchnorm(4)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"]),
                        helper.make_node("BatchNormalization", ["c", *names], ["y"]),
                        helper.make_node("Relu", ["c"], ["z"])],
                       {"x": [1, 2, 3, 3]}, {"y": [1, 4, 3, 3], "z": [1, 4, 3, 3]},
                       {"w": weight(4, 2, 1, 1), **params})
    check(model, "fold-batchnorm-into-conv", tmp_path, kept=["BatchNormalization"])


# --- fold-scale-into-conv ------------------------------------------------------------------

@pytest.mark.parametrize("op_type,shape", [("Mul", [4, 1, 1]), ("Add", [1, 4, 1, 1]), ("Mul", [1])])
def test_fold_scale_into_conv(tmp_path, op_type, shape):
    model = make_model([helper.make_node("Conv", ["x", "w", "b"], ["c"]),
                        helper.make_node(op_type, ["s", "c"], ["y"])],
                       {"x": [1, 2, 3, 3]}, {"y": [1, 4, 3, 3]},
                       {"w": weight(4, 2, 1, 1), "b": weight(4), "s": weight(*shape)})
    check(model, "fold-scale-into-conv", tmp_path, gone=[op_type], kept=["Conv"])


@pytest.mark.parametrize("op_type", ["Mul", "Add"])
def test_fold_scale_into_gemm(tmp_path, op_type):
    model = make_model([helper.make_node("Gemm", ["x", "w"], ["g"], transB=1),
                        helper.make_node(op_type, ["g", "s"], ["y"])],
                       {"x": [3, 4]}, {"y": [3, 5]}, {"w": weight(5, 4), "s": weight(1, 5)})
    check(model, "fold-scale-into-conv", tmp_path, gone=[op_type], kept=["Gemm"])


@pytest.mark.parametrize("shape", [[3], [1, 4, 3, 1], [2, 4, 1, 1]])
def test_scale_not_per_channel_stays(tmp_path, shape):
    # Along the width, or varying in two dims, or broadcasting the result: not foldable.
    out = [max(a, b) for a, b in zip([1, 4, 3, 3], [1] * (4 - len(shape)) + shape)]
    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"]),
                        helper.make_node("Mul", ["c", "s"], ["y"])],
                       {"x": [1, 2, 3, 3]}, {"y": out}, {"w": weight(4, 2, 1, 1), "s": weight(*shape)})
    check(model, "fold-scale-into-conv", tmp_path, kept=["Mul"])


# --- fold-constants ------------------------------------------------------------------------

FOLDABLE = """
builtin.module {
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32>
      attributes {dlc.input_names = ["x"], dlc.output_names = ["y"]} {
    %w = onnx.weight @w : tensor<3x2xf32>
    %t = "onnx.Transpose"(%w) {perm = array<i64: 1, 0>, onnx_node_name = "t"}
      : (tensor<3x2xf32>) -> tensor<2x3xf32>
    %e = "onnx.Exp"(%t) {onnx_node_name = "exp"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %y = "onnx.Add"(%x, %e) {onnx_node_name = "add"}
      : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %y : tensor<2x3xf32>
  }
}
"""


def test_fold_constants(tmp_path):
    # The importer folds constant subgraphs of a model, so this graph is MLIR
    # text, as a user or an earlier pass could leave it.
    path = tmp_path / "foldable.mlir"
    path.write_text(FOLDABLE)
    w = weight(3, 2)
    np.savez(tmp_path / "foldable.weights.npz", w=w)
    folded = compile_model(path, compile_from="onnx", compile_to="graph",
                           pipeline="fold-constants").module
    assert [op.onnx_type for op in folded.walk() if isinstance(op, OnnxOp)] == ["Add"]
    write_mlir(folded, tmp_path / "folded.mlir")
    reference = compile_model(path, compile_from="onnx", target="reference", pipeline="fold-constants")
    native = compile_model(tmp_path / "folded.mlir", compile_from="graph", target="cpu")
    x = weight(2, 3)
    for result in (reference, native):
        np.testing.assert_allclose(result.executable.run({"x": x})["y"], x + np.exp(w.T), rtol=1e-6)


def test_fold_constants_ignores_runtime_inputs():
    model = make_model([helper.make_node("Sqrt", ["x"], ["y"])], {"x": [2]}, {"y": [2]})
    assert graph_ops(model, "fold-constants")["Sqrt"] == 1


# --- dce, cse, merge-identical-nodes -------------------------------------------------------

def test_merge_identical_nodes(tmp_path):
    model = make_model([helper.make_node("Mul", ["x", "a"], ["m1"], name="m1"),
                        helper.make_node("Mul", ["x", "b"], ["m2"], name="m2"),
                        helper.make_node("Sub", ["m1", "m2"], ["y"])],
                       {"x": [2, 3]}, {"y": [2, 3]},
                       {"a": np.full(3, 2, np.float32), "b": np.full(3, 2, np.float32)})
    ops = check(model, "merge-identical-nodes", tmp_path)
    assert ops["Mul"] == 1 and ops["weight"] == 1
    assert graph_ops(model, "cse")["Mul"] == 2  # xDSL's cse sees distinct onnx_node_names


# --- the default pipeline, and the example plugin ------------------------------------------

# The order recommended for dlc/driver.py::default_pipeline (see docs/writing-passes.md).
GRAPH_PIPELINE = ("expand-recurrent,remove-identity,remove-dropout,cancel-transposes,remove-noop-reshape,"
                  "fold-constants,fuse-matmul-add,fold-batchnorm-into-conv,fold-scale-into-conv,"
                  "merge-identical-nodes,dce")


def test_graph_pipeline_on_a_small_cnn(tmp_path):
    names, params = batchnorm(4)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                        helper.make_node("BatchNormalization", ["c", *names], ["n"]),
                        helper.make_node("Dropout", ["n"], ["d"]),
                        helper.make_node("Relu", ["d"], ["r"]),
                        helper.make_node("Identity", ["r"], ["i"]),
                        helper.make_node("Flatten", ["i"], ["f"]),
                        helper.make_node("MatMul", ["f", "fc.w"], ["m"]),
                        helper.make_node("Add", ["m", "fc.b"], ["y"])],
                       {"x": [2, 2, 4, 4]}, {"y": [2, 3]},
                       {"w": weight(4, 2, 3, 3), **params, "fc.w": weight(64, 3), "fc.b": weight(3)})
    ops = check(model, GRAPH_PIPELINE, tmp_path, kept=["Conv", "Relu", "Flatten", "Gemm"])
    assert sum(ops.values()) - ops["weight"] == 4, dict(ops)
    assert_matches_onnxruntime(model)  # through the default pipeline


EXAMPLE = ROOT / "examples" / "passes" / "remove_double_relu.mlir"


def test_example_plugin_golden_test():
    lit = shutil.which("lit")
    if lit is None or shutil.which("filecheck") is None:
        pytest.fail("lit and filecheck are test dependencies: pip install -e '.[test]'")
    result = subprocess.run([lit, "-q", str(EXAMPLE)], capture_output=True, text=True, cwd=ROOT,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
