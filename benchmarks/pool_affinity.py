"""Item affinity of dlc's thread pool, A/B: item i of a region on thread i, or on whichever
thread comes first (issue 15).

    python benchmarks/pool_affinity.py --models resnet50,mobilenet_v2 --threads 4,8,16
    python benchmarks/pool_affinity.py model.onnx --threads 4 --rounds 8 --runs 10
    python benchmarks/pool_affinity.py --models resnet18 --threads '' --concurrency 4x4,2x8 --seconds 2

One process per (model, thread count), pinned to the first N cores as threads.py does: the model
is compiled once, then runs alternate between the pool's two modes (`ThreadPool.own_items`: 32, and
0, the default) round by round, so that a shared machine's noise falls on both alike. Prints
each mode's median of its rounds' medians and the median over rounds of owned/free (below 1:
affinity pays). With `--concurrency CxT`, C Python threads share the model compiled for T
threads (pinned to the first C*T cores) for `--seconds` per mode and round, as threads.py's
throughput does: inferences per second, and free/owned of them (below 1: affinity pays).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _child(model_path: str, threads: int, rounds: int, runs: int) -> dict:
    """Both modes' round medians (ms) for one model at `threads`, in this pinned process."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    from threads import _cores, _runner, median_ms

    from dlc.codegen.thread_pool_ir import pool_object
    from dlc.runtime.thread_pool import MASKED_ITEMS, OWNED_ITEMS, pool

    os.sched_setaffinity(0, _cores()[:threads])
    run = _runner(model_path, "dlc", threads)
    thread_pool = pool(pool_object())  # the model's own pool, made when it loaded (one thread: none)
    medians: dict[int, list[float]] = {MASKED_ITEMS: [], 0: []}
    for _ in range(rounds):
        for limit in medians:
            thread_pool.own_items(limit)
            run()
            medians[limit].append(median_ms(run, runs))
    thread_pool.own_items(OWNED_ITEMS)
    return {"owned": medians[MASKED_ITEMS], "free": medians[0]}


def _child_throughput(model_path: str, callers: int, threads: int, rounds: int, seconds: float) -> dict:
    """Both modes' inferences per second, round by round, for `callers` x `threads`."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    from threads import _cores, _runner, _serve

    from dlc.codegen.thread_pool_ir import pool_object
    from dlc.runtime.thread_pool import MASKED_ITEMS, OWNED_ITEMS, pool

    os.sched_setaffinity(0, _cores()[:callers * threads])
    run = _runner(model_path, "dlc", threads)
    thread_pool = pool(pool_object())
    rates: dict[int, list[float]] = {MASKED_ITEMS: [], 0: []}
    for _ in range(rounds):
        for limit in rates:
            thread_pool.own_items(limit)
            rates[limit].append(_serve(run, callers, seconds))
    thread_pool.own_items(OWNED_ITEMS)
    return {"owned": rates[MASKED_ITEMS], "free": rates[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="*", help=".onnx paths (added to --models)")
    parser.add_argument("--models", default="resnet50,mobilenet_v2", help="benchmark-set names (run_all.py)")
    parser.add_argument("--threads", default="4", help="comma-separated thread counts")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per mode and round (median)")
    parser.add_argument("--concurrency", default="", help="CALLERSxTHREADS setups for throughput, e.g. 4x4,2x8")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a throughput measurement")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-throughput", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model_path, threads, rounds, runs = args.child
        print(json.dumps(_child(model_path, int(threads), int(rounds), int(runs))))
        return
    if args.child_throughput:
        model_path, callers, threads, rounds, seconds = args.child_throughput
        print(json.dumps(_child_throughput(model_path, int(callers), int(threads), int(rounds), float(seconds))))
        return
    sys.path.insert(0, str(HERE))
    from threads import _model_files

    names = [n for n in args.models.split(",") if n] + list(args.model)
    print(f"`python benchmarks/pool_affinity.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    counts = [int(t) for t in args.threads.split(",") if t]
    setups = [tuple(int(v) for v in setup.split("x")) for setup in args.concurrency.split(",") if setup]
    with tempfile.TemporaryDirectory() as workdir:
        files = _model_files(names, Path(workdir))
        if counts:
            print("| model | threads | owned ms | free ms | owned/free |\n|---|---:|---:|---:|---:|")
        for name, path in files.items():
            for threads in counts:
                result = _run_child("--child", path, threads, args.rounds, args.runs)
                owned, free = np.array(result["owned"]), np.array(result["free"])
                print(f"| {name} | {threads} | {np.median(owned):.3f} | {np.median(free):.3f} "
                      f"| {np.median(owned / free):.3f} |", flush=True)
        if setups:
            print("\n| model | callers x threads | owned inf/s | free inf/s | free/owned |\n|---|---|---:|---:|---:|")
        for name, path in files.items():
            for callers, threads in setups:
                result = _run_child("--child-throughput", path, callers, threads, args.rounds, args.seconds)
                owned, free = np.array(result["owned"]), np.array(result["free"])
                print(f"| {name} | {callers}x{threads} | {np.median(owned):.1f} | {np.median(free):.1f} "
                      f"| {np.median(free / owned):.3f} |", flush=True)


def _run_child(flag: str, *args) -> dict:
    """A measurement in a process of its own (a pool and pinning of its own); its JSON result."""
    out = subprocess.run([sys.executable, __file__, flag, *map(str, args)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
