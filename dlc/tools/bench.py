"""`dlc bench`: latency, GFLOP/s and % of peak of a model, side by side with onnxruntime.

Both run in one process on the same inputs with the same thread count; runs alternate
between them so machine noise hits both (the machine is shared: quote ratios, not
absolute times). benchmarks/run.py and benchmarks/run_all.py build on these helpers; the
onnxruntime session and the inputs come from the tools' oracle (dlc/tools/oracle.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

# With several threads, the pause between one runtime's runs and the next one's: long enough
# for the idle workers of the first (dlc's spin SPIN_NS = 0.2 ms, onnxruntime's spin too) to
# sleep, so the second does not share its cores with them.
POOL_QUIET_SECONDS = 0.05


def median_latencies(runners: dict, repeat: int, budget_seconds: float = 120.0,
                     threads: int = 1) -> dict[str, float]:
    """Median seconds per call of each runner, after one warm-up each: calls interleaved on one
    thread (both runtimes see the same machine noise); with several threads, each runner's calls
    in a block of their own. Interleaved, one runtime ran while the other's workers spun on the
    same cores: on the 16-core machine dlc's int8 MobileNet block took 6.1 ms at 16 threads
    that way, 0.92 ms alone (`dlc run`)."""
    from dlc import progress

    times = {name: [] for name in runners}
    with progress.current().paused(f"timing {' and '.join(runners)}, {repeat} rounds"):
        if threads <= 1:
            for run in runners.values():
                run()
            _interleave(runners, times, repeat, budget_seconds)
        else:
            for name, run in runners.items():
                time.sleep(POOL_QUIET_SECONDS)
                run()
                _interleave({name: run}, {name: times[name]}, repeat, budget_seconds / len(runners))
    return {name: float(np.median(t)) for name, t in times.items()}


def _interleave(runners: dict, times: dict, repeat: int, budget_seconds: float) -> None:
    start = time.perf_counter()
    while min(len(t) for t in times.values()) < repeat:
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_seconds:
            break


@dataclass
class BenchResult:
    model: str
    threads: int
    dlc_ms: float
    flops: int
    ort_ms: float | None = None
    winograd: bool | str = "f2"  # FLOPs are the direct convs' (Winograd's GEMMs do 16/36 or 1/4 of them)

    @property
    def gflops(self) -> float:
        return self.flops / (self.dlc_ms * 1e6) if self.dlc_ms else 0.0


def bench(model_path, threads: int | None = None, repeat: int = 20, versus_onnxruntime: bool = True,
          input_shapes: dict | None = None, fusion: str = "all", tiles: str | dict | None = None,
          winograd: bool | str = "f2") -> BenchResult:
    import onnx

    import dlc
    from dlc.runtime import default_threads
    from dlc.tools.oracle import onnxruntime_session, random_inputs

    threads = threads or default_threads()
    compiled = dlc.compile(model_path, threads=threads, input_shapes=input_shapes, fusion=fusion, tiles=tiles,
                           winograd=winograd)
    feeds = random_inputs(compiled.inputs)
    runners = {"dlc": lambda: compiled.run(feeds)}
    if versus_onnxruntime:
        proto = onnx.load(str(model_path))
        real = {i.name for i in proto.graph.input} - {i.name for i in proto.graph.initializer}
        session = onnxruntime_session(proto, threads=threads)  # all graph optimisations
        ort_feeds = {k: v for k, v in feeds.items() if k in real}
        runners["onnxruntime"] = lambda: session.run(None, ort_feeds)
    from dlc import progress

    with progress.step(f"timing {' and '.join(runners)}, {repeat} rounds"):
        latency = median_latencies(runners, repeat, threads=threads)
    flops = sum(k["flops"] for k in getattr(compiled._executable, "manifest", {}).get("kernels", []))
    return BenchResult(str(model_path), threads, latency["dlc"] * 1e3, flops,
                       latency.get("onnxruntime", 0.0) * 1e3 if versus_onnxruntime else None, winograd)


def format_bench(result: BenchResult) -> str:
    from dlc.tools.profiling import host_peak

    peak = host_peak(result.threads)
    lines = [f"dlc          {result.dlc_ms:9.3f} ms   {result.gflops:7.1f} GFLOP/s   "
             f"{100 * result.gflops / peak.gflops:5.1f}% of peak ({peak.gflops:.0f} GFLOP/s, "
             f"{result.threads} thread(s))"]
    if result.winograd not in (False, "none"):
        lines.append("             (GFLOP/s of the direct convs' work: Winograd's 3x3 convs do 16/36 of it, "
                     "1/4 with --winograd f4; --no-winograd for the direct conv)")
    if result.ort_ms:
        lines.append(f"onnxruntime  {result.ort_ms:9.3f} ms   {result.flops / (result.ort_ms * 1e6):7.1f} GFLOP/s")
        lines.append(f"dlc / onnxruntime = {result.dlc_ms / result.ort_ms:.2f} (lower is better for dlc)")
    return "\n".join(lines)
