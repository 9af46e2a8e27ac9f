"""benchmarks/kernels.py: dlc's kernels matched with onnxruntime's profiled nodes (issue 15's
per-kernel comparisons). The matching on made-up profiles, and one real run on a small model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_kernels_match_onnxruntime_nodes_by_name_then_convolutions_in_order():
    import kernels

    dlc_rows = [["k0_Conv_fused", ["Conv_0", "Relu_1"], 3.0],
                ["k2_MaxPool", ["MaxPool_2"], 0.5],
                ["k3_Conv_fused", ["Conv_3", "Add_4", "Relu_5"], 2.0],
                ["k6_Conv", ["Conv_6"], 1.0],
                ["k7_Gemm", ["Gemm_7"], 0.25],
                ["k8_GlobalAveragePool", ["GlobalAveragePool_8"], 0.0625],
                ["k9_Conv_fused", ["Conv_9", "Relu_10", "Concat_11"], 0.5],
                ["k12_Conv_fused", ["Conv_12", "Sigmoid_13.sunk", "Mul_14.sunk"], 0.75]]
    # onnxruntime: Conv_0 + Relu_1 fused and renamed (NCHWc), MaxPool renamed after its output,
    # Conv_3 and the pooling renamed without a trace of their names (paired by op type, in
    # order), Conv_6 and Gemm_7 as written, a reorder of its own, and Sigmoid_13 + Mul_14 fused
    # into one node named after the Mul (its conv renamed after the BatchNormalization it took;
    # dlc's graph rewrites renamed the two: "Mul_14.sunk").
    ort_rows = [["r2_nchwc", ["Conv"], 2.0], ["MaxPool_2_out_nchwc", ["MaxPool"], 0.25],
                ["r9_nchwc", ["Conv"], 1.5], ["Conv_6", ["Conv"], 1.25], ["ReorderOutput", ["ReorderOutput"], 0.125],
                ["Gemm_7", ["Gemm"], 0.5], ["r20_nchwc", ["GlobalAveragePool"], 0.03125],
                ["r25_nchwc", ["FusedConv"], 0.375], ["Concat_11", ["Concat"], 0.0078125],
                ["BatchNormalization_12_out_nchwc", ["Conv"], 0.5], ["Mul_14/QuickGeluFusion/", ["QuickGelu"], 0.25]]
    rows, unmatched = kernels.match(dlc_rows, ort_rows)
    got = {row[0]: (row[3], row[4]) for row in rows}
    assert got == {"k0_Conv_fused": (2.0, ["Conv"]), "k2_MaxPool": (0.25, ["MaxPool"]),
                   "k3_Conv_fused": (1.5, ["Conv"]), "k6_Conv": (1.25, ["Conv"]), "k7_Gemm": (0.5, ["Gemm"]),
                   "k8_GlobalAveragePool": (0.03125, ["GlobalAveragePool"]),
                   # its Concat matched by name, its renamed conv then by op type
                   "k9_Conv_fused": (0.3828125, ["FusedConv", "Concat"]),
                   "k12_Conv_fused": (0.75, ["Conv", "QuickGelu"])}
    assert unmatched == [("ReorderOutput", "ReorderOutput", 0.125)]


@pytest.mark.parametrize("callers", [1, 2])
def test_kernels_benchmark_runs_on_a_small_model(tmp_path, callers):
    """One caller, and `--callers 2` (two Python threads running the model at once, each
    kernel's mean over both callers' runs)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.uniform(-1, 1, [16, 8, 3, 3]).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], [w])
    path = tmp_path / "small.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), str(path), "--runs", "3",
                          "--rounds", "1", "--callers", str(callers)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    header = "2 callers x 1 thread(s)" if callers == 2 else "small, 1 thread(s)"
    assert header in out.stdout, out.stdout
    table = [line for line in out.stdout.splitlines() if line.startswith("| k")]
    # the Conv + Relu kernel, matched with onnxruntime's fused convolution, and the MaxPool
    assert len(table) == 2, out.stdout
    conv = next(line for line in table if "Conv_0" in line)
    assert "Relu_1" in conv and conv.split("|")[5].strip() in ("Conv", "FusedConv"), conv


def test_scaling_lists_every_kernel_at_both_thread_counts(tmp_path):
    """`--scaling 1,2`: dlc against itself, a row per kernel with both times and the speedup."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.uniform(-1, 1, [16, 8, 3, 3]).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4, name="conv"),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], [w])
    path = tmp_path / "small.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), str(path), "--scaling", "1,2",
                          "--runs", "3", "--rounds", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| k")]
    assert sorted(row[1].strip() for row in rows) == ["conv", "pool"], out.stdout
    for _, _, one, two, speedup, unscaled in rows:
        one, two, speedup, unscaled = float(one), float(two), float(speedup), float(unscaled)
        assert one > 0 and two > 0
        # the times are printed to 1 us: the speedup and the unscaled time agree within that
        half = 0.0005
        assert (one - half) / (two + half) - 0.005 <= speedup <= (one + half) / max(two - half, 1e-9) + 0.005
        assert abs(unscaled - (two - one / 2)) <= 3 * half  # its own rounding, two's and one's half


def test_builds_pair_kernels_by_their_onnx_nodes_then_op_by_op():
    """`--builds`: a kernel of one build with the one computing the same ONNX nodes in the other;
    kernels a rewrite renamed pair op type by op type in the order they ran; the rest alone."""
    import kernels

    old = {"k0_Conv_fused": 3.0, "k2_MaxPool": 1.0, "k3_Conv_fused": 2.0, "k5_Softmax": 0.5}
    new = {"k0_Conv_fused": 2.5, "k1_Transpose": 0.25, "k3_MaxPool": 1.0, "k4_Conv_fused": 1.5}
    old_nodes = {"k0_Conv_fused": ["conv0", "relu0"], "k2_MaxPool": ["pool"],
                 "k3_Conv_fused": ["conv1", "relu1"], "k5_Softmax": ["softmax"]}
    new_nodes = {"k0_Conv_fused": ["conv0", "relu0"], "k1_Transpose": ["conv0.to_nchw"], "k3_MaxPool": ["pool"],
                 "k4_Conv_fused": ["conv1", "relu1.sunk"]}
    rows = kernels.pair_by_nodes(old, new, old_nodes, new_nodes)
    pairs = {(row[0], row[1]): (row[3], row[4]) for row in rows}
    assert pairs == {("k0_Conv_fused", "k0_Conv_fused"): (3.0, 2.5), ("k2_MaxPool", "k3_MaxPool"): (1.0, 1.0),
                     ("k3_Conv_fused", "k4_Conv_fused"): (2.0, 1.5), ("k5_Softmax", None): (0.5, 0.0),
                     (None, "k1_Transpose"): (0.0, 0.25)}


def test_builds_compares_two_profile_artifacts_kernel_by_kernel(tmp_path):
    """Two --profile builds of one model (fused and --fusion=none), a row per kernel with both
    times; an artifact built without --profile is refused with a message. (A map large enough
    that the Relu alone takes more than the table's 1 us.)"""
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.uniform(-1, 1, [32, 16, 3, 3]).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4, name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 96, 96])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 96, 96])], [w])
    path = tmp_path / "small.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    for name, extra in (("fused", []), ("unfused", ["--fusion=none"]), ("plain", [])):
        profile = [] if name == "plain" else ["--profile"]
        subprocess.run([sys.executable, "-m", "dlc", "compile", str(path), "-o", str(tmp_path / name), "--threads", "1",
                        *profile, *extra], check=True, capture_output=True, cwd=ROOT)
    script = str(ROOT / "benchmarks" / "kernels.py")
    out = subprocess.run([sys.executable, script, "--builds", f"{tmp_path / 'fused'},{tmp_path / 'unfused'}",
                          "--runs", "3", "--rounds", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.stdout.splitlines()
            if line.startswith("| k") or line.startswith("| -")]
    # the fused Conv + Relu pairs with the unfused Conv (op by op); the unfused Relu stands alone
    by_new = {row[1]: row for row in rows}
    conv = next(row for name, row in by_new.items() if name.endswith("_Conv"))
    assert conv[0].endswith("_Conv_fused") and float(conv[3]) > 0 and float(conv[4]) > 0, out.stdout
    relu = next(row for name, row in by_new.items() if name.endswith("_Relu"))
    assert relu[0] == "-" and float(relu[3]) == 0 and float(relu[4]) > 0, out.stdout
    refused = subprocess.run([sys.executable, script, "--builds", f"{tmp_path / 'fused'},{tmp_path / 'plain'}"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode != 0 and "not a --profile build" in refused.stderr, refused.stderr
