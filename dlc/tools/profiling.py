"""Per-kernel profiles from timers inside the native code, with a roofline verdict.

A `--profile` build (CompileOptions(profile=True), `dlc compile --profile`) adds the
nanoseconds spent in each kernel call to a counter; `profile_runs` reads the counters after
every run, so each kernel gets a median and a mean over the runs, as the whole call does.
With each kernel's FLOPs and bytes (from the manifest) this gives achieved GFLOP/s, GB/s,
and the roofline (Williams, Waterman and Patterson, CACM 2009): a kernel is compute-bound
when its arithmetic intensity is at least the ridge point, the measured peak GFLOP/s over
the measured GB/s, and its "% of roof" is against min(peak, intensity x GB/s) for the
threads the run actually uses. The peaks are measured on this machine (`host_peak`: an FMA
loop and a streaming pass, as roofline tools do) and cached.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The on-disk measurement's format: bump it when the measurement changes, so that files
# written by an older method are measured again.
PEAK_FORMAT = 1
# The FMA loop: seconds per timed run, and runs (the best one counts).
FMA_SECONDS = 0.01
FMA_REPEATS = 4
# The streaming pass: its buffer is 4x the L3 cache, within these bounds; passes (best counts).
STREAM_MIN_BYTES, STREAM_MAX_BYTES = 32 << 20, 128 << 20
STREAM_REPEATS = 4
DEFAULT_L3_BYTES = 32 << 20
_log = logging.getLogger("dlc.tools.profiling")


@dataclass(frozen=True)
class MachinePeak:
    gflops: float       # fp32 FMA, measured on one core (times the threads)
    bandwidth_gbps: float  # streaming from DRAM, measured on one core (times the threads)
    # Where the figures come from ("measured now", the cache file and its date, the
    # environment): a profile prints it, since a peak measured on a busy machine is low.
    source: str = field(default="measured now", compare=False)

    @property
    def ridge(self) -> float:
        """FLOPs per byte above which a kernel is compute-bound."""
        return self.gflops / self.bandwidth_gbps


def host_peak(threads: int = 1) -> MachinePeak:
    """This machine's fp32 and memory peaks for `threads` threads: one core's, times `threads`.

    One core's peaks are measured, not assumed (the FMA units per core and clock differ:
    an Emerald Rapids core retires two 512-bit FMAs a cycle, a Zen 4 core one):
    - GFLOP/s: a generated loop of independent `llvm.fma` chains on the widest vectors the
      host has (16 floats with AVX-512, 8 with AVX2, else 4), enough chains to hide the FMA
      latency, timed for ~40 ms (`measure_fma_gflops`);
    - GB/s: the better of a read pass and a copy (bytes read + written) over a buffer 4x
      the L3 cache, at most 128 MiB, with numpy (`measure_bandwidth_gbps`).
    Scaling by `threads` ignores the lower all-core clock and the shared memory bus, so
    several threads' "% of peak" is an upper-bound denominator. (The 2-core Zen 4 VM,
    2026-11-28: ~115 GFLOP/s and ~27 GB/s per core, where dlc's GEMM reaches ~115 and
    numpy's 512^3 matmul ~102; the old formula assumed 160 GFLOP/s and 20 GB/s.)

    The measurement (0.1-0.5 s, mostly faulting in the streaming buffer) happens once per process
    and is cached on disk next to the compile cache (`$DLC_CACHE_DIR/peak-<key>.json`, keyed by
    the CPU's name and features;
    delete it to measure again); an unreadable or malformed file is measured again.
    `DLC_PEAK_GFLOPS` and `DLC_PEAK_GBPS` override one core's figures (then multiplied by
    `threads` too); with both set nothing is measured.
    """
    gflops, gbps = _env_peak("DLC_PEAK_GFLOPS"), _env_peak("DLC_PEAK_GBPS")
    source = "DLC_PEAK_GFLOPS and DLC_PEAK_GBPS"
    if gflops is None or gbps is None:
        core = core_peak()
        source = core.source if gflops is None and gbps is None else f"{core.source}, partly from the environment"
        gflops = core.gflops if gflops is None else gflops
        gbps = core.bandwidth_gbps if gbps is None else gbps
    return MachinePeak(gflops=gflops * threads, bandwidth_gbps=gbps * threads, source=source)


def usable_threads(threads: int) -> int:
    """Threads that can run at once: `threads`, at most the cores this process may use
    (a pool of 8 on 2 cores computes no faster than 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(threads, cores))


def _env_peak(name: str) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        from dlc.errors import DlcError

        raise DlcError(f"{name}={text!r}: expected a positive number (one core's peak)")
    return value


@functools.cache
def core_peak() -> MachinePeak:
    """One core's measured peaks: from the disk cache when it has them, else measured now
    (and stored there). Cached for the life of the process."""
    path = _peak_file()
    if path is not None:
        cached = _read_peak(path)
        if cached is not None:
            return cached
    peak = measure_peak()
    if path is not None:
        _write_peak(path, peak)
    return peak


def measure_peak() -> MachinePeak:
    """Measure one core's peaks now (~0.1 s): see host_peak."""
    return MachinePeak(gflops=measure_fma_gflops(), bandwidth_gbps=measure_bandwidth_gbps())


# ---------------------------------------------------------------------------- the disk cache

def _peak_file() -> Path | None:
    from dlc.cache import cache_dir
    from dlc.runtime.mcjit import host_cpu

    directory = cache_dir()
    if directory is None:
        return None
    key = hashlib.sha256(json.dumps({"format": PEAK_FORMAT, "cpu": host_cpu()}).encode()).hexdigest()[:16]
    return directory / f"peak-{key}.json"


def _read_peak(path: Path) -> MachinePeak | None:
    """The peaks stored in `path`, or None (missing, unreadable, malformed, or in a directory
    others may write to: then measure again)."""
    from dlc.cache import _untrusted
    from dlc.runtime.mcjit import host_cpu

    try:
        if not path.is_file() or _untrusted(path.parent) is not None:
            return None
        data = json.loads(path.read_text())
        name, features = host_cpu()
        if data["format"] != PEAK_FORMAT or data["cpu"] != name or data["features"] != features:
            return None
        gflops, gbps = float(data["gflops"]), float(data["bandwidth_gbps"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        _log.warning("dlc: unreadable peak measurement %s; measuring again", path)
        return None
    if not all(math.isfinite(v) and v > 0 for v in (gflops, gbps)):
        _log.warning("dlc: implausible peak measurement in %s; measuring again", path)
        return None
    return MachinePeak(gflops=gflops, bandwidth_gbps=gbps,
                       source=f"measured {data.get('measured', '(date unknown)')}, cached in {path}")


def _write_peak(path: Path, peak: MachinePeak) -> None:
    """Store `peak` in `path` atomically (0600, in the 0700 cache directory); errors are ignored."""
    from dlc.cache import FILE_MODE, _make_private_directory
    from dlc.runtime.mcjit import host_cpu

    name, features = host_cpu()
    text = json.dumps({"format": PEAK_FORMAT, "cpu": name, "features": features, "gflops": peak.gflops,
                       "bandwidth_gbps": peak.bandwidth_gbps, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")},
                      indent=1)
    staging = None
    try:
        _make_private_directory(path.parent)
        descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=".tmp-peak-")  # mkstemp: 0600
        with os.fdopen(descriptor, "w") as file:
            file.write(text + "\n")
        os.chmod(staging, FILE_MODE)
        os.replace(staging, path)
    except OSError:
        if staging is not None:
            Path(staging).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- the FMA loop

def _fma_shape(features: str) -> tuple[int, int, bool]:
    """(vector width in floats, independent chains, whether the host has a fused multiply-add).

    The chains hide the FMA latency (4 cycles, 2 FMAs a cycle: 8 in flight) and fit the
    register file with the two constant vectors: 24 of AVX-512's 32 registers, 12 of AVX2's 16.
    """
    from dlc.targets.cpu import host_vector_bits

    flags = set(features.split(","))
    width = host_vector_bits(features) // 32
    x86 = any(flag in flags for flag in ("+sse2", "+avx", "+64bit"))
    fused = "+fma" in flags or not x86  # AArch64 NEON always fuses; x86 before Haswell does not
    return width, (24 if width == 16 else 12), fused


def fma_loop_ir(width: int, chains: int, fused: bool = True) -> str:
    """LLVM IR of `void dlc_peak_fma(i64 n, ptr io)`: `chains` independent vectors of `width`
    floats, each updated n times (n >= 1) by a = a * m + c, with m, c and the starting
    vectors read from io (vectors 0..chains-1, then m, then c) and the results written back
    (so nothing can be optimised away). 2 * width * chains * n FLOPs."""
    vec = f"<{width} x float>"
    lines = ["define void @dlc_peak_fma(i64 %n, ptr %io) #0 {", "entry:"]
    for k in range(chains + 2):
        lines.append(f"  %p{k} = getelementptr inbounds {vec}, ptr %io, i64 {k}")
        lines.append(f"  %v{k} = load {vec}, ptr %p{k}, align 4")
    m, c = f"%v{chains}", f"%v{chains + 1}"
    lines += ["  br label %loop", "loop:", "  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]"]
    lines += [f"  %a{k} = phi {vec} [ %v{k}, %entry ], [ %b{k}, %loop ]" for k in range(chains)]
    for k in range(chains):
        if fused:
            lines.append(f"  %b{k} = call {vec} @llvm.fma.v{width}f32({vec} %a{k}, {vec} {m}, {vec} {c})")
        else:
            lines.append(f"  %t{k} = fmul {vec} %a{k}, {m}")
            lines.append(f"  %b{k} = fadd {vec} %t{k}, {c}")
    lines += ["  %i.next = add i64 %i, 1", "  %more = icmp ult i64 %i.next, %n",
              "  br i1 %more, label %loop, label %exit", "exit:"]
    lines += [f"  store {vec} %b{k}, ptr %p{k}, align 4" for k in range(chains)]
    lines += ["  ret void", "}", f"declare {vec} @llvm.fma.v{width}f32({vec}, {vec}, {vec})",
              f'attributes #0 = {{ nounwind "prefer-vector-width"="{32 * width}" '
              f'"min-legal-vector-width"="{32 * width}" }}']
    return "\n".join(lines) + "\n"


def measure_fma_gflops(seconds: float = FMA_SECONDS, repeats: int = FMA_REPEATS) -> float:
    """One core's fp32 GFLOP/s: the best of `repeats` runs of the FMA loop, each ~`seconds`."""
    from dlc.codegen.native import compile_object
    from dlc.runtime.mcjit import NativeModule, host_cpu

    width, chains, fused = _fma_shape(host_cpu()[1])
    native = NativeModule(compile_object(fma_loop_ir(width, chains, fused)))
    loop = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(native.address("dlc_peak_fma"))
    # Accumulators near 1 stay near c / (1 - m) = 1: no overflow, no denormals.
    io = np.ones((chains + 2) * width, np.float32)
    io[chains * width:(chains + 1) * width] = 1 - 2.0 ** -20
    io[(chains + 1) * width:] = 2.0 ** -20

    def timed(n: int) -> float:
        start = time.perf_counter()
        loop(n, io.ctypes.data)
        return time.perf_counter() - start

    n = 1 << 10
    while (elapsed := timed(n)) < seconds / 8 and n < 1 << 40:
        n *= 4
    n = max(1, int(n * seconds / max(elapsed, 1e-9)))
    best = min(timed(n) for _ in range(repeats))
    if not np.isfinite(io).all():
        raise RuntimeError("dlc: the FMA peak loop produced non-finite values")
    return 2 * width * chains * n / best * 1e-9


# ---------------------------------------------------------------------------- the streaming pass

def l3_bytes() -> int:
    """Bytes of the L3 cache that CPU 0 sees (Linux sysfs); 32 MiB where it does not say."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if int((index / "level").read_text()) != 3:
                continue
            text = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if text[-1:] in units and text[:-1].isdigit():
            return int(text[:-1]) * units[text[-1]]
        if text.isdigit():
            return int(text)
    return DEFAULT_L3_BYTES


def measure_bandwidth_gbps(repeats: int = STREAM_REPEATS) -> float:
    """One core's streaming GB/s with numpy over a buffer 4x the L3 (32-128 MiB): the better
    of a read pass (an OR-reduction) and a copy of its first half onto its second half
    (counting the bytes read and written, as kernels' byte counts do), best of `repeats`."""
    size = min(max(4 * l3_bytes(), STREAM_MIN_BYTES), STREAM_MAX_BYTES) // 16 * 16
    buffer = np.ones(size // 8, np.uint64)
    first, second = buffer[:buffer.size // 2], buffer[buffer.size // 2:]

    def best(run) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    read = buffer.nbytes / best(lambda: np.bitwise_or.reduce(buffer))
    copy = 2 * first.nbytes / best(lambda: np.copyto(second, first))
    return max(read, copy) * 1e-9


@dataclass(frozen=True)
class ProfileRuns:
    """What `profile_runs` saw: per run, the whole call and each kernel, in seconds."""
    latencies: list[float]             # each run: the whole `run` (input checks + native call)
    kernels: dict[str, list[float]]    # kernel name -> its seconds in each run (call sites summed)

    @property
    def kernel_sums(self) -> list[float]:
        """Each run's time inside kernels (all kernels summed)."""
        return [sum(column) for column in zip(*self.kernels.values())] or [0.0] * len(self.latencies)


def share_arena(executables: list) -> None:
    """Give executables that run one at a time (an A/B of two builds, in turn) one arena buffer,
    each its own size of it: where the allocator happened to put each one's arena then does not
    count (on the Zen 1 VM one ResNet-18 artifact ran its stem conv in 7.5 or 15.7 ms, in
    processes that differed only in what had been allocated before it)."""
    from dlc.runtime import aligned_empty

    shared = aligned_empty((max(e._arena_size for e in executables),), np.uint8)
    for executable in executables:  # (arena, its address): NativeExecutable._new_arena
        executable._free_arenas[:] = [(shared[:executable._arena_size], shared.ctypes.data)]


def profile_runs(executable, run, runs: int) -> ProfileRuns:
    """Call `run()` (a run of the --profile build `executable`) `runs` times, reading the
    kernel counters after each: medians need one sample per run, and the counters only add."""
    latencies, kernels = [], {name: [] for name in dict.fromkeys(executable.profile_sites)}
    for _ in range(max(runs, 1)):
        executable.reset_profile()
        start = time.perf_counter()
        run()
        latencies.append(time.perf_counter() - start)
        spent = dict.fromkeys(kernels, 0.0)
        for name, seconds in executable.profile():
            spent[name] += seconds
        for name, seconds in spent.items():
            kernels[name].append(seconds)
    return ProfileRuns(latencies, kernels)


@dataclass(frozen=True)
class KernelRoofline:
    """One kernel's place under the roofline, from its median time."""
    name: str
    median_s: float
    mean_s: float
    flops: int  # executed: a Winograd conv's GEMMs and transforms, not the direct conv's count
    bytes: int
    peak: MachinePeak
    algorithm: str | None = None  # how the kernel computes its ops, where not as they count

    @property
    def gflops(self) -> float:
        return self.flops / self.median_s * 1e-9 if self.median_s > 0 else 0.0

    @property
    def gbps(self) -> float:
        return self.bytes / self.median_s * 1e-9 if self.median_s > 0 else 0.0

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (inf for a kernel that moves no bytes)."""
        return self.flops / self.bytes if self.bytes else math.inf

    @property
    def bound(self) -> str:
        return "compute" if self.intensity >= self.peak.ridge else "memory"

    @property
    def roof_gflops(self) -> float:
        """The attainable GFLOP/s: min(peak, intensity x bandwidth)."""
        return min(self.peak.gflops, self.intensity * self.peak.bandwidth_gbps)

    @property
    def percent_of_roof(self) -> float:
        if self.flops == 0:  # a copy: judge it by bandwidth alone
            return 100 * self.gbps / self.peak.bandwidth_gbps
        return 100 * self.gflops / self.roof_gflops

    @property
    def over_roof(self) -> str | None:
        """Why the figure is above 100% (so the peak it is measured against is wrong), or None."""
        if self.percent_of_roof <= 100:
            return None
        if self.bound == "compute":
            return "compute"
        return "cache"


_OVER_ROOF_NOTES = {
    "compute": "! faster than the measured compute peak: the peak estimate is too low (measured while the "
               "machine was busy?); delete the peak file named below to measure again, or set DLC_PEAK_GFLOPS",
    "cache": "! faster than DRAM bandwidth allows: its bytes came from the caches, so the DRAM roof is the "
             "wrong peak for it (its % only says it is not limited by DRAM)",
}


def kernel_rooflines(executable, runs: ProfileRuns) -> tuple[list[KernelRoofline], MachinePeak, int]:
    """Each kernel's roofline figures (slowest first), the peak they are measured against and
    the threads that peak is for (the run's threads, at most the usable cores)."""
    threads = usable_threads(executable.num_threads)
    peak = host_peak(threads)
    costs = {k["name"]: k for k in executable.manifest.get("kernels", [])}
    # A Winograd conv is judged by the FLOPs it executes (its GEMMs do 4/9 or 1/4 of the direct
    # conv's), not its ops' count, or it would read as faster than the machine's peak.
    rows = [KernelRoofline(name, float(np.median(times)), float(np.mean(times)),
                           costs.get(name, {}).get("executed_flops", costs.get(name, {}).get("flops", 0)),
                           costs.get(name, {}).get("bytes", 0), peak, costs.get(name, {}).get("algorithm"))
            for name, times in runs.kernels.items()]
    return sorted(rows, key=lambda r: -r.median_s), peak, threads


def format_profile(executable, runs: ProfileRuns) -> str:
    """The per-kernel table of a profiled run: every time column says median or mean, every
    rate is from the median, and a % above 100 carries a flag saying why its peak is wrong."""
    rows, peak, threads = kernel_rooflines(executable, runs)
    sums = runs.kernel_sums
    total = sum(r.median_s for r in rows) or 1e-12
    lines = [f"per kernel over {len(runs.latencies)} run(s), timers inside the native code; "
             "GFLOP/s, GB/s and %roof from the median time",
             f"{'kernel':34s} {'share':>6s} {'median ms':>10s} {'mean ms':>9s} {'GFLOP/s':>8s} {'GB/s':>7s} "
             f"{'FLOP/B':>7s} {'%roof':>7s}  bound"]
    notes = []
    algorithms: dict[str, str] = {}
    for row in rows:
        flag = row.over_roof
        if flag and _OVER_ROOF_NOTES[flag] not in notes:
            notes.append(_OVER_ROOF_NOTES[flag])
        percent = f"{row.percent_of_roof:6.1f}%" + ("!" if flag else " ")
        intensity = "inf" if math.isinf(row.intensity) else f"{row.intensity:.2f}"
        name = row.name[:34]
        if row.algorithm:
            mark = algorithms.setdefault(row.algorithm, "*" * (len(algorithms) + 1))
            name = f"{row.name[:33 - len(mark)]} {mark}"
        lines.append(f"{name:34s} {100 * row.median_s / total:5.1f}% {row.median_s * 1e3:10.3f} "
                     f"{row.mean_s * 1e3:9.3f} {row.gflops:8.2f} {row.gbps:7.2f} {intensity:>7s} {percent} "
                     f"{row.bound}")
    lines.append(f"{'all kernels (per-run sum)':34s} {100.0:5.1f}% {np.median(sums) * 1e3:10.3f} "
                 f"{np.mean(sums) * 1e3:9.3f}")
    lines.append(f"{'whole run (checks + native call)':34s} {'':6s} {np.median(runs.latencies) * 1e3:10.3f} "
                 f"{np.mean(runs.latencies) * 1e3:9.3f}")
    lines += notes
    lines += [f"{mark} runs as {algorithm}: its GFLOP/s, FLOP/B and %roof count the FLOPs it executes"
              for algorithm, mark in algorithms.items()]
    cores = "" if threads == executable.num_threads else f" (the run asked for {executable.num_threads})"
    split = f"; a kernel that does not split over threads reaches at most {100 / threads:.0f}%" if threads > 1 else ""
    lines.append(f"%roof: achieved GFLOP/s over min(peak GFLOP/s, FLOP/B x peak GB/s) for {threads} thread(s)"
                 f"{cores}{split}")
    lines.append(f"peak {peak.gflops:.0f} GFLOP/s, {peak.bandwidth_gbps:.0f} GB/s, {threads} thread(s): one core's "
                 f"figures x {threads} ({peak.source}); ridge {peak.ridge:.2f} FLOP/B = peak GFLOP/s / peak GB/s "
                 "(derived from the two measurements, not measured itself)")
    return "\n".join(lines)
