"""benchmarks/threads.py (issue 15's thread-scaling tables): the latency and throughput tables
from separate processes and from one process per measurement (`--in-process`), on a small model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent


def _small_model():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.uniform(-1, 1, [16, 8, 3, 3]).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize("mode", [[], ["--in-process"]])
def test_threads_benchmark_tabulates_both_runtimes(tmp_path, mode):
    path = tmp_path / "small.onnx"
    path.write_bytes(_small_model().SerializeToString())
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "threads.py"), str(path), "--models", "",
                          "--threads", "1", "--rounds", "1", "--repeat", "3", "--concurrency", "2x1",
                          "--seconds", "0.4", *mode],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    latency, throughput = (line for line in out.stdout.splitlines() if line.startswith("| small |"))
    dlc_ms, ort_ms, ratio = (float(cell) for cell in latency.split("|")[2:5])
    assert dlc_ms > 0 and ort_ms > 0
    # the ratio of the unrounded times: within the rounding of the printed ones (3 and 2 decimals)
    half = 0.0005
    assert (dlc_ms - half) / (ort_ms + half) - 0.005 <= ratio <= (dlc_ms + half) / (ort_ms - half) + 0.005
    # throughput: onnxruntime / dlc inferences per second (one decimal each, the ratio two)
    dlc_rate, ort_rate, ratio = (float(cell) for cell in throughput.split("|")[2:5])
    assert dlc_rate > 0 and ort_rate > 0
    half = 0.05
    assert (ort_rate - half) / (dlc_rate + half) - 0.005 <= ratio <= (ort_rate + half) / (dlc_rate - half) + 0.005


def test_also_direct_puts_both_dlc_builds_beside_onnxruntime(tmp_path):
    """`--also-direct --in-process`: the default build, the --no-winograd build and onnxruntime
    in one process, each with its ratio to onnxruntime and its own summary lines."""
    path = tmp_path / "small.onnx"
    path.write_bytes(_small_model().SerializeToString())
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "threads.py"), str(path), "--models", "",
                          "--threads", "1", "--rounds", "1", "--repeat", "3", "--concurrency", "2x1",
                          "--seconds", "0.4", "--in-process", "--also-direct"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "| 1 thr dlc ms | dlc-direct ms | ort ms | dlc/ort | dlc-direct/ort |" in out.stdout
    latency, throughput = (line for line in out.stdout.splitlines() if line.startswith("| small |"))
    default, direct, ort, default_ratio, direct_ratio = (float(cell) for cell in latency.split("|")[2:7])
    assert min(default, direct, ort) > 0
    for ms, ratio in ((default, default_ratio), (direct, direct_ratio)):
        assert abs(ratio - ms / ort) <= 0.01 + 0.001 / ort
    rates = [float(cell) for cell in throughput.split("|")[2:7]]
    assert min(rates) > 0
    assert "- dlc-direct, 1 threads: geomean dlc-direct/ort" in out.stdout
