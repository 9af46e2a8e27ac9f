"""benchmarks/pool_affinity.py: the pool's item affinity A/B runs both modes on a real model
and prints one row per thread count, from medians it measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pool_affinity_benchmark_runs_both_modes(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pool_affinity.py"),
                          str(ROOT / "examples" / "models" / "cnn.onnx"), "--models", "", "--threads", "1,2",
                          "--rounds", "1", "--runs", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| cnn")]
    assert [row[1].strip() for row in rows] == ["1", "2"], out.stdout
    for _, _, owned, free, ratio in rows:
        assert float(owned) > 0 and float(free) > 0
        assert abs(float(ratio) - float(owned) / float(free)) < 0.2  # one round: the ratio of its medians


def test_pool_affinity_benchmark_serves_concurrent_callers_in_both_modes(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pool_affinity.py"),
                          str(ROOT / "examples" / "models" / "cnn.onnx"), "--models", "", "--threads", "",
                          "--concurrency", "2x1", "--rounds", "1", "--seconds", "0.3"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| cnn")]
    assert len(rows) == 1 and rows[0][1].strip() == "2x1", out.stdout
    _, _, owned, free, ratio = rows[0]
    assert float(owned) > 0 and float(free) > 0
    assert abs(float(ratio) - float(free) / float(owned)) < 0.2
