"""Per-kernel profiles from timers inside the native code, with a roofline verdict.

A `--profile` build (CompileOptions(profile=True)) adds the nanoseconds spent in
each kernel call to a counter; with each kernel's FLOPs and bytes (from the
manifest) this gives achieved GFLOP/s, GB/s, and whether the kernel is compute- or
bandwidth-bound against the machine's estimated peaks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MachinePeak:
    gflops: float       # one core, fp32 FMA
    bandwidth_gbps: float  # one core, from DRAM

    @property
    def ridge(self) -> float:
        """FLOPs per byte above which a kernel is compute-bound."""
        return self.gflops / self.bandwidth_gbps


def host_peak(threads: int = 1) -> MachinePeak:
    """Estimated peaks: 2 FMA units x vector lanes x 2 FLOPs x ~2.5 GHz, ~20 GB/s per core.

    On this project's reference machine (Emerald Rapids, AVX-512) that is 160 GFLOP/s per
    core, which matches what numpy's BLAS reaches there (DESIGN.md).
    """
    from dlc.codegen.native import host_cpu

    features = host_cpu()[1]
    lanes = 16 if "+avx512f" in features else 8 if "+avx2" in features else 4
    return MachinePeak(gflops=2 * lanes * 2 * 2.5 * threads, bandwidth_gbps=20.0 * threads)


def format_profile(executable, runs: int) -> str:
    costs = {k["name"]: k for k in executable.manifest.get("kernels", [])}
    rows = executable.profile()
    total = sum(seconds for _, seconds in rows) or 1e-12
    peak = host_peak(executable.num_threads)
    lines = [f"{'kernel':34s} {'share':>6s} {'ms/run':>8s} {'GFLOP/s':>8s} {'GB/s':>7s} {'%peak':>6s}  bound",
             ]
    for name, seconds in sorted(rows, key=lambda r: -r[1]):
        per_run = seconds / max(runs, 1)
        cost = costs.get(name, {"flops": 0, "bytes": 0})
        gflops = cost["flops"] / per_run * 1e-9 if per_run else 0.0
        gbps = cost["bytes"] / per_run * 1e-9 if per_run else 0.0
        intensity = cost["flops"] / cost["bytes"] if cost["bytes"] else float("inf")
        bound = "compute" if intensity >= peak.ridge else "memory"
        roof = peak.gflops if bound == "compute" else min(peak.gflops, intensity * peak.bandwidth_gbps)
        lines.append(f"{name[:34]:34s} {100 * seconds / total:5.1f}% {per_run * 1e3:8.3f} {gflops:8.2f} "
                     f"{gbps:7.2f} {100 * gflops / roof if roof else 0:5.1f}%  {bound}")
    lines.append(f"{'total':34s} {100.0:5.1f}% {total / max(runs, 1) * 1e3:8.3f}   (peak estimate "
                 f"{peak.gflops:.0f} GFLOP/s, {peak.bandwidth_gbps:.0f} GB/s, {executable.num_threads} thread(s))")
    return "\n".join(lines)
