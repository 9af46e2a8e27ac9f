"""Native loops (dialects/loop.py) against unrolling: compile CPU-seconds, and latency in one process.

    python benchmarks/native_loops.py compile lstm_h256_s64 gru2_h256_s64   # CPU-s of one compile each
    python benchmarks/native_loops.py rule LSTM 64 2,4,8,16                 # native vs unrolled steps

`compile`: one `dlc.compile` of a run_all model with the cache off, CPU seconds of this process
and its children (the parallel LLVM compile) from `os.times()`, and wall seconds.
`rule`: an LSTM or GRU (benchmarks/models.py `recurrent`, batch 1, hidden as given) of each
sequence length compiled twice in one process, with expand-recurrent's UNROLL_MAX_STEPS at 0
(native loop) and 1000 (unrolled), then timed alternately (15 rounds of 200 runs, median),
so that load from elsewhere hits both alike. The figures are in benchmarks/README.md.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ["DLC_CACHE"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _cpu_seconds(before: os.times_result, after: os.times_result) -> float:
    return sum(after[:4]) - sum(before[:4])  # user + system, self and children


def compile_times(names: list[str]) -> None:
    from run_all import BUILT

    import dlc

    for name in names:
        model = BUILT[name]()
        before, start = os.times(), time.perf_counter()
        dlc.compile(model)
        after, end = os.times(), time.perf_counter()
        print(f"{name}: compile {_cpu_seconds(before, after):.2f} CPU-s, {end - start:.2f} s wall", flush=True)


def rule(kind: str, hidden: int, lengths: list[int]) -> None:
    import models
    import numpy as np

    import dlc
    import passes.graph.expand_recurrent as expand_recurrent

    for steps in lengths:
        model = models.recurrent(kind, hidden=hidden, seq=steps)
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        feeds = {model.graph.input[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        compiled, cpu = {}, {}
        saved = expand_recurrent.UNROLL_MAX_STEPS
        try:
            for bound in (0, 1000):
                expand_recurrent.UNROLL_MAX_STEPS = bound
                before = os.times()
                compiled[bound] = dlc.compile(model, threads=1)
                cpu[bound] = _cpu_seconds(before, os.times())
        finally:
            expand_recurrent.UNROLL_MAX_STEPS = saved
        times = {bound: [] for bound in compiled}
        for _ in range(15):
            for bound, executable in compiled.items():
                executable.run(feeds)
                start = time.perf_counter()
                for _ in range(200):
                    executable.run(feeds)
                times[bound].append((time.perf_counter() - start) / 200 * 1e6)
        native, unrolled = sorted(times[0])[7], sorted(times[1000])[7]
        print(f"{kind} h{hidden} {steps:3d} steps: native {native:7.1f} us, unrolled {unrolled:7.1f} us, "
              f"native/unrolled {native / unrolled:.2f}; compile CPU-s native {cpu[0]:.2f}, "
              f"unrolled {cpu[1000]:.2f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "compile":
        compile_times(sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "rule":
        rule(sys.argv[2], int(sys.argv[3]), [int(n) for n in sys.argv[4].split(",")])
    else:
        sys.exit(__doc__)
