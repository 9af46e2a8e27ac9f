"""Run time of two compiled artifacts of one model, interleaved in one process (an A/B test).

    python benchmarks/artifact_ab.py BEFORE_DIR AFTER_DIR --repeat 40

Both artifacts (`dlc compile MODEL -o DIR`, e.g. from two git worktrees) are loaded into this
process and fed the same random inputs; their outputs must be bit-identical (or the largest
difference is printed). Then they run alternately, A B B A ..., so that the neighbours of a
shared machine disturb both alike, and the median and minimum of after/before are printed
with each one's median milliseconds: on the 2-core development VM a real change shows in
both, noise rarely in the two at once (identical artifacts read 0.99-1.01 there). With
`--clock thread` each run is timed in this thread's CPU time, which a busy machine's
descheduling does not stretch: for artifacts compiled `--threads 1`, whose runs stay on the
calling thread.

Both run in one arena buffer (`dlc.tools.profiling.share_arena`) and read the same input
arrays, so where the allocator happened to put each one's arena does not count: on the Zen 1
VM one ResNet-18 artifact ran its stem conv in 7.5 or 15.7 ms, and the whole model 5-13%
apart, in processes that differed only in what had been allocated before the arena
(benchmarks/README.md, sixteenth session).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _feeds(model) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in model.inputs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        else:
            feeds[spec.name] = rng.integers(0, 3, spec.shape).astype(dtype)
    return feeds


def main() -> None:
    import dlc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--repeat", type=int, default=40, help="runs of each, alternated")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="time.perf_counter, or this thread's CPU time (one-thread artifacts)")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    from dlc.tools.profiling import share_arena

    models = [dlc.load(args.before), dlc.load(args.after)]
    share_arena([model._executable for model in models])
    feeds = _feeds(models[0])
    results = [model.run(feeds) for model in models]
    worst = 0.0
    for name, value in results[0].items():
        other = results[1][name]
        if value.tobytes() != other.tobytes():
            worst = max(worst, float(np.max(np.abs(value.astype(np.float64) - other.astype(np.float64)))))
    print("outputs bit-identical" if worst == 0.0 else f"outputs differ: largest difference {worst:.3g}")
    for _ in range(args.warmup):
        for model in models:
            model.run(feeds)
    times: list[list[float]] = [[], []]
    for index in range(args.repeat):
        order = (0, 1) if index % 2 == 0 else (1, 0)
        for which in order:
            start = clock()
            models[which].run(feeds)
            times[which].append(clock() - start)
    before, after = (statistics.median(t) for t in times)
    print(f"before {before * 1e3:.3f} ms, after {after * 1e3:.3f} ms (medians of {args.repeat}); "
          f"after/before median {after / before:.3f}, min {min(times[1]) / min(times[0]):.3f} ({args.clock} clock)")


if __name__ == "__main__":
    main()
