"""Thread scaling of dlc and onnxruntime: one fresh process per (runtime, thread count, round).

    python benchmarks/threads.py                                   # light ResNet-50, 1 and 2 threads
    python benchmarks/threads.py model.onnx --threads 1,2,4,8,16 --rounds 3

Each measurement runs in its own process pinned to the first N cores (one logical CPU per
physical core where Linux says which), so thread pools never share cores with another
runtime's spinning workers, and affinity set for one count never leaks into the next.
Prints each round's median latency and the speed-up over one thread (best round each).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _cores() -> list[int]:
    """One logical CPU per physical core, in order (all CPUs where the topology is unknown)."""
    allowed = sorted(os.sched_getaffinity(0))
    seen, cores = set(), []
    for cpu in allowed:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id")
        package = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id")
        key = (package.read_text().strip(), path.read_text().strip()) if path.exists() and package.exists() else cpu
        if key not in seen:
            seen.add(key)
            cores.append(cpu)
    return cores


def _measure(model: str, runtime: str, threads: int, repeat: int) -> float:
    """Median milliseconds of `repeat` runs in this process (the child's side)."""
    os.sched_setaffinity(0, _cores()[:threads])
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # run_all (xDSL ships a `benchmarks`)
    import onnx
    from run_all import without_initializer_inputs

    # As run_all does: IR-3 models list their weights as inputs, which keeps onnxruntime from
    # folding and fusing them; both runtimes get the same model.
    model = without_initializer_inputs(onnx.load(model))
    from dlc.tools.oracle import input_specs, onnxruntime_session, random_inputs

    feeds = random_inputs(input_specs(model))
    if runtime == "dlc":
        import dlc

        compiled = dlc.compile(model, threads=threads)
        run = lambda: compiled.run(feeds)  # noqa: E731
    else:
        session = onnxruntime_session(model, threads=threads)
        run = lambda: session.run(None, feeds)  # noqa: E731
    for _ in range(3):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main(argv=None) -> int:
    import onnx

    default = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=str(default))
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--child", nargs=2, metavar=("RUNTIME", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(_measure(args.model, args.child[0], int(args.child[1]), args.repeat))
        return 0
    counts = [int(t) for t in args.threads.split(",")]
    if max(counts) > len(_cores()):
        print(f"note: {max(counts)} threads on {len(_cores())} cores: some share a core", file=sys.stderr)
    results: dict[tuple[str, int], list[float]] = {}
    environment = {**os.environ, "ORT_LOGGING_LEVEL": "3"}
    for _ in range(args.rounds):
        for threads in counts:
            for runtime in ("dlc", "onnxruntime"):
                out = subprocess.run([sys.executable, __file__, args.model, "--repeat", str(args.repeat),
                                      "--child", runtime, str(threads)], capture_output=True, text=True,
                                     env=environment, check=True).stdout
                results.setdefault((runtime, threads), []).append(float(out.strip().splitlines()[-1]))
    print(f"{Path(args.model).name}: median ms per round (one process each), speed-up over 1 thread")
    for runtime in ("dlc", "onnxruntime"):
        base = min(results.get((runtime, 1), [float("nan")]))
        for threads in counts:
            rounds = results[runtime, threads]
            print(f"  {runtime:12s} {threads:3d} threads: {' '.join(f'{r:8.2f}' for r in rounds)}"
                  f"   best {min(rounds):8.2f}   {base / min(rounds):5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
