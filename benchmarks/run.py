"""Benchmark dlc against onnxruntime: same models, same inputs, same thread count, one process.

    python benchmarks/run.py                       # the example MLP and CNN
    python benchmarks/run.py --threads 1 --repeat 50 model.onnx ...

Prints the median latency of each and the ratio dlc / onnxruntime (lower is
better for dlc). Runs alternate between the two so machine noise hits both.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dlc  # noqa: E402
from dlc.tools.bench import median_latencies  # noqa: E402
from dlc.tools.oracle import onnxruntime_session, random_inputs  # noqa: E402


def benchmark(path: Path, threads: int, repeat: int) -> dict:
    model = onnx.load(path)
    t0 = time.perf_counter()
    compiled = dlc.compile(model, threads=threads)
    compile_seconds = time.perf_counter() - t0
    feeds = random_inputs(compiled.inputs)
    session = onnxruntime_session(model, threads=threads)
    expected = session.run(None, feeds)
    got = compiled.run(feeds)
    error = max(float(np.max(np.abs(g - e))) if g.size else 0.0 for g, e in zip(got.values(), expected))
    latency = median_latencies({"dlc": lambda: compiled.run(feeds),
                                "onnxruntime": lambda: session.run(None, feeds)}, repeat, threads=threads)
    return {"model": path.stem, "dlc_ms": latency["dlc"] * 1e3, "ort_ms": latency["onnxruntime"] * 1e3,
            "ratio": latency["dlc"] / latency["onnxruntime"], "compile_s": compile_seconds, "max_abs_err": error}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path,
                        default=[ROOT / "examples" / "models" / "mlp.onnx", ROOT / "examples" / "models" / "cnn.onnx"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    print(f"# {date.today()}  {platform.processor() or platform.machine()}  {os.cpu_count()} cores  "
          f"threads={args.threads}  dlc {dlc.__version__}")
    print(f"{'model':24s} {'dlc ms':>10s} {'ort ms':>10s} {'dlc/ort':>8s} {'compile s':>10s} {'max |err|':>10s}")
    rows = []
    for path in args.models:
        row = benchmark(path, args.threads, args.repeat)
        rows.append(row)
        print(f"{row['model']:24s} {row['dlc_ms']:10.3f} {row['ort_ms']:10.3f} {row['ratio']:8.2f} "
              f"{row['compile_s']:10.2f} {row['max_abs_err']:10.2e}", flush=True)
    if len(rows) > 1:
        geomean = float(np.exp(np.mean([np.log(r["ratio"]) for r in rows])))
        print(f"{'geomean ratio':24s} {'':10s} {'':10s} {geomean:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
