"""The machine's peaks behind `--profile` and `dlc bench`: measured (an FMA loop, a streaming
pass), cached per process and on disk, overridable from the environment."""

from __future__ import annotations

import ctypes
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from dlc.errors import DlcError
from dlc.tools import profiling
from dlc.tools.profiling import MachinePeak, host_peak

FAKE = MachinePeak(gflops=123.0, bandwidth_gbps=45.0)


@pytest.fixture
def measurements(tmp_path, monkeypatch):
    """A private cache directory, no overrides, and a fake measurement that counts its calls."""
    calls = []

    def fake_measure():
        calls.append(1)
        return FAKE

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DLC_CACHE", raising=False)
    monkeypatch.delenv("DLC_PEAK_GFLOPS", raising=False)
    monkeypatch.delenv("DLC_PEAK_GBPS", raising=False)
    monkeypatch.setattr(profiling, "measure_peak", fake_measure)
    profiling.core_peak.cache_clear()
    yield calls
    profiling.core_peak.cache_clear()


def _peak_files(directory):
    return sorted(p for p in directory.iterdir() if p.name.startswith("peak-"))


def test_peak_scales_with_threads_and_is_measured_once_per_process(measurements, tmp_path):
    assert host_peak() == FAKE
    assert host_peak(4) == MachinePeak(gflops=4 * FAKE.gflops, bandwidth_gbps=4 * FAKE.bandwidth_gbps)
    for path in _peak_files(tmp_path):
        path.unlink()
    assert host_peak(2).gflops == 2 * FAKE.gflops
    assert len(measurements) == 1


def test_second_process_reads_the_disk_cache(measurements, tmp_path):
    assert host_peak() == FAKE
    (path,) = _peak_files(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["gflops"] == FAKE.gflops and stored["bandwidth_gbps"] == FAKE.bandwidth_gbps
    profiling.core_peak.cache_clear()  # a new process
    assert host_peak() == FAKE
    assert len(measurements) == 1


@pytest.mark.parametrize("content", [b"\x00\xff garbage", b"", b"{}", b'{"format": 1, "gflops": "x"}', b"[1, 2]",
                                     "bad values", "another format"])
def test_corrupt_cache_file_is_measured_again(measurements, tmp_path, content):
    assert host_peak() == FAKE
    (path,) = _peak_files(tmp_path)
    if content == "bad values":
        content = path.read_text().replace(f'"gflops": {FAKE.gflops}', '"gflops": -1.0').encode()
    elif content == "another format":
        content = json.dumps({**json.loads(path.read_text()), "format": -1}).encode()
    path.write_bytes(content)
    profiling.core_peak.cache_clear()
    assert host_peak() == FAKE
    assert len(measurements) == 2
    assert json.loads(path.read_text())["gflops"] == FAKE.gflops  # rewritten


def test_no_disk_cache_when_the_cache_is_off(measurements, tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE", "0")
    assert host_peak() == FAKE
    assert not any(tmp_path.iterdir())


def test_environment_overrides_the_measurement(measurements, tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_PEAK_GFLOPS", "100")
    monkeypatch.setenv("DLC_PEAK_GBPS", "12.5")
    assert host_peak(2) == MachinePeak(gflops=200.0, bandwidth_gbps=25.0)
    assert not measurements and not any(tmp_path.iterdir())  # nothing measured
    monkeypatch.delenv("DLC_PEAK_GBPS")
    assert host_peak() == MachinePeak(gflops=100.0, bandwidth_gbps=FAKE.bandwidth_gbps)
    monkeypatch.setenv("DLC_PEAK_GBPS", "fast")
    with pytest.raises(DlcError, match="DLC_PEAK_GBPS"):
        host_peak()


def test_bench_report_uses_the_peak(measurements, monkeypatch):
    from dlc.tools.bench import BenchResult, format_bench

    monkeypatch.setenv("DLC_PEAK_GFLOPS", "50")
    monkeypatch.setenv("DLC_PEAK_GBPS", "10")
    text = format_bench(BenchResult("m.onnx", threads=2, dlc_ms=1.0, flops=25_000_000))
    assert " 25.0% of peak (100 GFLOP/s, 2 thread(s))" in text


def test_run_profile_prints_the_peak(measurements, monkeypatch, capsys):
    from conftest import ROOT

    from dlc.cli import main

    monkeypatch.setenv("DLC_PEAK_GFLOPS", "50")
    monkeypatch.setenv("DLC_PEAK_GBPS", "10")
    assert main(["run", str(ROOT / "examples" / "models" / "mlp.onnx"), "--profile", "--threads", "2",
                 "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "(peak 100 GFLOP/s, 20 GB/s, 2 thread(s))" in out and "k0_Gemm" in out


def test_fma_loop_computes_its_recurrence():
    """The generated loop does the work it is credited with: n steps of a = a * m + c."""
    from dlc.codegen.native import compile_object
    from dlc.runtime.mcjit import NativeModule

    width, chains, n = 4, 3, 5
    native = NativeModule(compile_object(profiling.fma_loop_ir(width, chains)))
    loop = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(native.address("dlc_peak_fma"))
    io = np.random.default_rng(0).uniform(0.5, 1.5, (chains + 2) * width).astype(np.float32)
    expected = io[:chains * width].astype(np.float64)
    m, c = io[chains * width:(chains + 1) * width], io[(chains + 1) * width:]
    for _ in range(n):
        expected = expected * np.tile(m, chains) + np.tile(c, chains)
    loop(n, io.ctypes.data)
    np.testing.assert_allclose(io[:chains * width], expected, rtol=1e-5)


def _numpy_one_thread_gflops() -> float:
    """numpy's (OpenBLAS's) best 512^3 float32 matmul rate on one thread, in a fresh process
    (BLAS reads its thread count when it loads)."""
    script = ("import time, numpy as np\n"
              "a = np.random.rand(512, 512).astype(np.float32); b = a.T.copy(); a @ b\n"
              "best = 1e9\n"
              "for _ in range(20):\n"
              "    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)\n"
              "print(2 * 512 ** 3 / best * 1e-9)\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return float(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                check=True).stdout)


def test_measured_peak_is_plausible():
    """Honest bounds only. Lower: a tuned BLAS GEMM on one thread cannot beat the core's FMA
    peak; the 0.5 margin absorbs noise (the machine is shared), and a second measurement
    runs before failing. Upper: no core retires more than two FMAs of its vector width a
    cycle at 6 GHz (a loop optimised away would give an absurd rate). Bandwidth: positive
    and below anything one core can stream."""
    from dlc.runtime.mcjit import host_cpu

    width, _, _ = profiling._fma_shape(host_cpu()[1])
    peak = profiling.measure_peak()
    assert 0 < peak.gflops <= 2 * width * 2 * 6.0
    assert 0 < peak.bandwidth_gbps < 1000
    blas = _numpy_one_thread_gflops()
    gflops = peak.gflops if peak.gflops >= 0.5 * blas else max(peak.gflops, profiling.measure_fma_gflops())
    assert gflops >= 0.5 * blas, f"FMA peak {gflops:.1f} GFLOP/s < half of numpy's matmul {blas:.1f} GFLOP/s"
