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
    monkeypatch.setattr(profiling, "usable_threads", lambda threads: threads)  # whatever this machine has
    assert main(["run", str(ROOT / "examples" / "models" / "mlp.onnx"), "--profile", "--threads", "2",
                 "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "peak 100 GFLOP/s, 20 GB/s, 2 thread(s): one core's figures x 2 (DLC_PEAK_GFLOPS" in out
    assert "ridge 5.00 FLOP/B" in out and "k0_Gemm" in out


# ---------------------------------------------------------------------------- the profile table

class FakeProfiled:
    """A --profile build's interface as profile_runs and format_profile use it: counters that
    each run adds `per_run[i]` seconds to, kernel costs in the manifest, a thread count."""

    def __init__(self, costs: dict[str, tuple[int, int]], per_run: list[dict[str, float]], threads: int = 1):
        self.profile_sites = list(costs)
        self.manifest = {"kernels": [{"name": n, "nodes": [], "flops": f, "bytes": b} for n, (f, b) in costs.items()]}
        self.num_threads = threads
        self._runs = iter(per_run)
        self._counters = dict.fromkeys(costs, 0.0)

    def run(self):
        for name, seconds in next(self._runs).items():
            self._counters[name] += seconds

    def reset_profile(self):
        self._counters = dict.fromkeys(self._counters, 0.0)

    def profile(self):
        return list(self._counters.items())


def _rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("k_")}


@pytest.fixture
def peak_10_5(monkeypatch):
    """One core: 10 GFLOP/s and 5 GB/s (ridge 2 FLOP/B); threads as asked."""
    monkeypatch.setenv("DLC_PEAK_GFLOPS", "10")
    monkeypatch.setenv("DLC_PEAK_GBPS", "5")
    monkeypatch.setattr(profiling, "usable_threads", lambda threads: threads)


def test_kernel_columns_are_medians_over_runs_and_labelled(peak_10_5):
    """One disturbed run moves the mean, not the median, and the sums are labelled the same way."""
    ms = 1e-3
    runs = [{"k_a": 1 * ms, "k_b": 2 * ms}, {"k_a": 1 * ms, "k_b": 2 * ms}, {"k_a": 31 * ms, "k_b": 2 * ms}]
    fake = FakeProfiled({"k_a": (1_000_000, 10_000_000), "k_b": (0, 0)}, runs)
    profiled = profiling.profile_runs(fake, fake.run, 3)
    assert profiled.kernels == {"k_a": [1 * ms, 1 * ms, 31 * ms], "k_b": [2 * ms] * 3}
    assert profiled.kernel_sums == pytest.approx([3 * ms, 3 * ms, 33 * ms])
    text = profiling.format_profile(fake, profiled)
    header = next(line for line in text.splitlines() if line.startswith("kernel"))
    assert "median ms" in header and "mean ms" in header
    k_a = _rows(text)["k_a"]
    assert k_a[2:4] == ["1.000", "11.000"]  # median, mean
    assert k_a[4] == "1.00"  # GFLOP/s from the median: 1 MFLOP in 1 ms
    sums = next(line for line in text.splitlines() if line.startswith("all kernels (per-run sum)"))
    assert sums.split()[-2:] == ["3.000", "13.000"]
    assert any(line.startswith("whole run") for line in text.splitlines())


def test_bound_is_intensity_against_the_ridge(peak_10_5):
    """Ridge 2 FLOP/B: a GEMM-like kernel at 8 FLOP/B is compute-bound, a 0.25 FLOP/B one memory-bound,
    one exactly at the ridge compute-bound; the % is against the roof min(peak, intensity x GB/s)."""
    ms = 1e-3
    costs = {"k_gemm": (8_000_000, 1_000_000), "k_add": (250_000, 1_000_000), "k_ridge": (2_000_000, 1_000_000)}
    fake = FakeProfiled(costs, [dict.fromkeys(costs, 1 * ms)])
    rows = _rows(profiling.format_profile(fake, profiling.profile_runs(fake, fake.run, 1)))
    assert rows["k_gemm"][-1] == "compute" and rows["k_gemm"][-2] == "80.0%"       # 8 of 10 GFLOP/s
    assert rows["k_add"][-1] == "memory" and rows["k_add"][-2] == "20.0%"          # 1 GB/s of 5
    assert rows["k_ridge"][-1] == "compute" and rows["k_ridge"][-2] == "20.0%"


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_no_percent_above_100_without_a_flag_saying_why(peak_10_5, threads):
    """Figures beyond the roof are flagged with the reason the peak is wrong: a compute peak
    measured too low, or a memory-bound kernel fed by the caches faster than DRAM."""
    ms = 1e-3
    costs = {"k_fast_gemm": (15_000_000 * threads, 1_000_000), "k_cached": (1_000_000, 20_000_000 * threads),
             "k_copy": (0, 30_000_000 * threads), "k_fine": (1_000_000, 1_000_000)}
    fake = FakeProfiled(costs, [dict.fromkeys(costs, 1 * ms)], threads=threads)
    text = profiling.format_profile(fake, profiling.profile_runs(fake, fake.run, 1))
    rows = _rows(text)
    for name, row in rows.items():
        percent = float(row[-2].rstrip("%!"))
        assert (percent > 100) == row[-2].endswith("!"), (name, row)
    assert rows["k_fast_gemm"][-2] == "150.0%!" and rows["k_fine"][-2] == f"{20 / threads:.1f}%"
    assert "faster than the measured compute peak: the peak estimate is too low" in text
    assert "faster than DRAM bandwidth allows: its bytes came from the caches" in text


def test_peak_is_for_the_threads_that_can_run(monkeypatch):
    """A pool of 64 threads on fewer cores is measured against the cores' peak, and says so."""
    monkeypatch.setenv("DLC_PEAK_GFLOPS", "10")
    monkeypatch.setenv("DLC_PEAK_GBPS", "5")
    monkeypatch.setattr(profiling.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert profiling.usable_threads(64) == 2 and profiling.usable_threads(1) == 1
    fake = FakeProfiled({"k_a": (20_000_000, 1_000_000)}, [{"k_a": 1e-3}], threads=64)
    text = profiling.format_profile(fake, profiling.profile_runs(fake, fake.run, 1))
    assert "peak 20 GFLOP/s, 10 GB/s, 2 thread(s)" in text and "(the run asked for 64)" in text
    assert _rows(text)["k_a"][-2] == "100.0%"


def test_compiled_artifact_keeps_profiling(measurements, monkeypatch, capsys, tmp_path):
    """`dlc compile --profile` writes an artifact that `dlc run DIR --profile` profiles; one
    compiled without it is refused with the command that fixes it."""
    from conftest import ROOT

    from dlc.cli import main

    monkeypatch.setenv("DLC_PEAK_GFLOPS", "50")
    monkeypatch.setenv("DLC_PEAK_GBPS", "10")
    mlp = str(ROOT / "examples" / "models" / "mlp.onnx")
    assert main(["compile", mlp, "--profile", "-o", str(tmp_path / "profiled")]) == 0
    assert main(["run", str(tmp_path / "profiled"), "--profile", "--repeat", "3"]) == 0
    out = capsys.readouterr().out
    assert "k0_Gemm" in out and "median ms" in out
    assert main(["compile", mlp, "-o", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "plain"), "--profile"]) == 1
    err = capsys.readouterr().err
    assert "dlc compile MODEL.onnx --profile" in err and "Traceback" not in err


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
