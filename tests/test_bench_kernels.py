"""benchmarks/kernels.py: dlc's kernels matched with onnxruntime's profiled nodes (issue 15's
per-kernel comparisons). The matching on made-up profiles, and one real run on a small model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
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
                ["k8_GlobalAveragePool", ["GlobalAveragePool_8"], 0.0625]]
    # onnxruntime: Conv_0 + Relu_1 fused and renamed (NCHWc), MaxPool renamed after its output,
    # Conv_3 and the pooling renamed without a trace of their names (paired by op type, in
    # order), Conv_6 and Gemm_7 as written, and a reorder of its own.
    ort_rows = [["r2_nchwc", ["Conv"], 2.0], ["MaxPool_2_out_nchwc", ["MaxPool"], 0.25],
                ["r9_nchwc", ["Conv"], 1.5], ["Conv_6", ["Conv"], 1.25], ["ReorderOutput", ["ReorderOutput"], 0.125],
                ["Gemm_7", ["Gemm"], 0.5], ["r20_nchwc", ["GlobalAveragePool"], 0.03125]]
    rows, unmatched = kernels.match(dlc_rows, ort_rows)
    got = {row[0]: (row[3], row[4]) for row in rows}
    assert got == {"k0_Conv_fused": (2.0, ["Conv"]), "k2_MaxPool": (0.25, ["MaxPool"]),
                   "k3_Conv_fused": (1.5, ["Conv"]), "k6_Conv": (1.25, ["Conv"]), "k7_Gemm": (0.5, ["Gemm"]),
                   "k8_GlobalAveragePool": (0.03125, ["GlobalAveragePool"])}
    assert unmatched == [("ReorderOutput", "ReorderOutput", 0.125)]


def test_kernels_benchmark_runs_on_a_small_model(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.uniform(-1, 1, [16, 8, 3, 3]).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], [w])
    path = tmp_path / "small.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), str(path), "--runs", "3",
                          "--rounds", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
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
