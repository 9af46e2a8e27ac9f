"""Differential tests of fusion: random DAGs of fusion-prone ops, fused == unfused == onnxruntime.

The fuzzer's seeded generator (dlc/tools/fuzz/, limited to its fusion-prone operators) builds
graphs of elementwise chains with broadcasting (per-channel, scalar and rank-expanding
operands), contractions with epilogues, reductions (Softmax, ReduceMean, the decomposed
LayerNorm), views between kernels and values with several consumers; each is compiled with
--fusion none, elementwise and all and run on the same inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlc.tools.fusion_report import explain
from dlc.tools.fuzz.checks import check_model
from dlc.tools.fuzz.generator import FUSION_PRONE, generate

SHAPE = [2, 4, 6]  # batch, channels, width of the hand-written graph below


def random_graph(seed: int) -> onnx.ModelProto:
    """A fusion-prone random DAG from the fuzzer's generator (dlc/tools/fuzz/): elementwise chains
    with broadcasting, contractions with epilogues, reductions and decomposed patterns, views
    between kernels, values with several consumers."""
    return generate(seed, max_nodes=10, kinds=FUSION_PRONE)


@pytest.mark.parametrize("seed", range(12))
def test_fused_equals_unfused_equals_onnxruntime(seed):
    # Each fusion setting against onnxruntime, with dlc.tools.fuzz's per-operator tolerances
    # (contractions scale with their reduction length, transcendentals by a few ulp).
    findings = check_model(random_graph(seed), seed, [("cpu", f) for f in ("none", "elementwise", "all")])
    assert not findings, "\n".join(f"{f.kind} on {f.config}: {f.message}" for f in findings)


def test_fusion_reduces_kernels_on_random_graphs():
    fewer = 0
    for seed in range(12):
        model = random_graph(seed)
        count = {f: explain(model, fusion=f).splitlines()[0].split()[0] for f in ("none", "all")}
        assert int(count["all"]) <= int(count["none"])
        fewer += int(count["all"]) < int(count["none"])
    assert fewer >= 6  # fusion must actually happen on most of these graphs


def test_decomposed_layernorm_and_softmax_each_become_one_kernel():
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    eps = numpy_helper.from_array(np.array(1e-5, np.float32), "eps")
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="mean"),
             helper.make_node("Sub", ["x", "m"], ["d"], name="centre"),
             helper.make_node("Mul", ["d", "d"], ["q"], name="square"),
             helper.make_node("ReduceMean", ["q", "axes"], ["v"], name="var"),
             helper.make_node("Add", ["v", "eps"], ["e"], name="eps_add"),
             helper.make_node("Sqrt", ["e"], ["s"], name="std"),
             helper.make_node("Div", ["d", "s"], ["ln"], name="normalise"),
             helper.make_node("Softmax", ["ln"], ["y"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)], [axes, eps])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    text = explain(model)
    assert text.splitlines()[0].startswith("1 kernels from 8 nodes"), text
    assert "normalise: joined" in text and "softmax: joined" in text


def test_explain_names_every_node_and_the_rule_that_kept_nodes_apart():
    from conftest import ROOT

    text = explain(ROOT / "examples" / "models" / "cnn.onnx")
    model = onnx.load(ROOT / "examples" / "models" / "cnn.onnx")
    kept = {n.name for n in model.graph.node if n.op_type not in ("BatchNormalization", "Flatten")}
    for node in kept:  # BatchNormalization is folded into the convs before fusion
        assert node in text
    assert "- apart: block.a.conv <- pool: inputs of a contraction are not fused" in text
    assert "+ block.relu: joined residual's kernel (elementwise epilogue of a contraction)" in text
    none = explain(ROOT / "examples" / "models" / "cnn.onnx", fusion="none")
    assert "--fusion=none" in none and "joined" not in none
