"""Peak resident memory of a run, dlc vs onnxruntime: one fresh process per (runtime, model).

    python benchmarks/memory.py                                  # every model of run_all
    python benchmarks/memory.py --models resnet50,mobilenet_v2 --threads 1

What a deployment pays: dlc loads a compiled artifact (`dlc.load`: manifest, object files,
weights; no compiler in the process, and on x86-64 Linux no LLVM either) and onnxruntime opens the .onnx file
(ORT_ENABLE_ALL, as run_all); each then runs the model `--runs` times. The child reports
its peak RSS (VmHWM in /proc/self/status), which counts the interpreter and its libraries too:
the `baseline` column is a process that imports numpy and nothing else.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = r"""
import json, sys
runtime, path, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if runtime == "dlc":
    import dlc
    from dlc.tools.oracle import random_inputs
    model = dlc.load(path)
    loader = type(model._executable._module).__name__
    feeds = random_inputs(model.inputs)
    run = lambda: model.run(feeds)
elif runtime == "onnxruntime":
    # The oracle's session (and inputs from the session's own signature: no onnx in the process).
    from dlc.tools.oracle import input_specs, onnxruntime_session, random_inputs
    session = onnxruntime_session(path, threads=threads)
    feeds = random_inputs(input_specs(session))
    run = lambda: session.run(None, feeds)
else:
    run = lambda: None
if runtime != "dlc":
    loader = runtime
for _ in range(runs):
    run()
# VmHWM, not getrusage's ru_maxrss: that one keeps the parent's peak across fork and exec.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss_mib": int(hwm.split()[1]) / 1024, "loader": loader}))
"""


def peak_rss_mib(runtime: str, path: str, threads: int, runs: int) -> tuple[float, str]:
    """Peak RSS in MiB of a fresh process that loads `path` with `runtime` and runs it, and
    what loaded it (dlc: ElfImage, its own loader, or NativeModule, llvmlite's MCJIT)."""
    result = subprocess.run([sys.executable, "-c", CHILD, runtime, path, str(threads), str(runs)],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{runtime} on {path} failed:\n{result.stderr[-2000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["peak_rss_mib"], report["loader"]


def main(argv=None) -> int:
    sys.path.insert(0, str(HERE))  # run_all and models (xDSL ships a top-level `benchmarks`)
    import onnx
    from run_all import ALL, BUILT, ZOO, zoo_model

    import dlc

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(ALL), help=f"comma-separated, from: {','.join(ALL)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {ALL}")

    baseline, _ = peak_rss_mib("none", "-", 1, 0)
    print(f"baseline (python + numpy): {baseline:.0f} MiB\n")
    print(f"{'model':20s} {'dlc MiB':>9s} {'ort MiB':>9s} {'dlc/ort':>8s}  loader")
    ratios = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            model = zoo_model(name) if name in ZOO else BUILT[name]()
            path = Path(workdir, f"{name}.onnx")
            onnx.save(model, path)
            artifact = Path(workdir, name)
            dlc.compile(str(path), threads=args.threads).save(artifact)
            ours, loader = peak_rss_mib("dlc", str(artifact), args.threads, args.runs)
            theirs, _ = peak_rss_mib("onnxruntime", str(path), args.threads, args.runs)
            ratios.append(ours / theirs)
            print(f"{name:20s} {ours:9.0f} {theirs:9.0f} {ours / theirs:8.2f}  {loader}", flush=True)
    if ratios:
        print(f"\nworst dlc/ort peak RSS: {max(ratios):.2f} (target <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
