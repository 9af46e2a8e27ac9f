"""One 3x3 conv at a time: dlc's Winograd build, its direct conv (`--no-winograd`) and onnxruntime.

    python benchmarks/winograd.py                                  # the shapes conv.py's rules were fitted on
    python benchmarks/winograd.py --shapes 64x192x55,128x128x13 --threads 1,2,16
    python benchmarks/winograd.py --shapes 512x512x12 --force     # a shape the rules refuse, as Winograd anyway

A shape is CxCOxSIDE: a stride-1 3x3 conv, pad 1, C -> CO channels over a SIDE x SIDE map, with a
bias and a Relu (fused into its stores in both builds). Each thread count runs in its own
process pinned to the first N cores; the three alternate in blocks of --runs runs after a short
pause, each keeping its best block's median. The table gives milliseconds and Winograd / direct
(below 1: Winograd is faster), and says which convs conv.py's rules (`_winograd_refusal`)
give to Winograd: the figures to check a change of WINOGRAD_MIN_PIXELS,
WINOGRAD_SMALL_MIN_PIXELS, WINOGRAD_MIN_HARMONIC_CHANNELS or WINOGRAD_OVERHANG_MIN_DEPTH
against (benchmarks/README.md, "Winograd over odd maps").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Around the rules' edges: odd maps deep and shallow, even maps for reference, 12x12 below the line.
DEFAULT_SHAPES = ("48x192x13,64x256x13,128x128x13,256x384x13,64x64x27,48x192x27,128x192x27,64x192x55,"
                  "64x64x28,64x192x56,64x64x12,512x512x12")


def conv_model(channels: int, out_channels: int, side: int):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.uniform(-0.5, 0.5, (out_channels, channels, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.uniform(-1, 1, out_channels).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes, "conv3x3", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, side, side])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in filter(None, text.split(",")):
        try:
            channels, out_channels, side = (int(part) for part in item.split("x"))
        except ValueError:
            raise SystemExit(f"error: shape {item!r} is not CxCOxSIDE (for instance 64x192x55)") from None
        shapes.append((channels, out_channels, side))
    return shapes


def _child(threads: int, shapes: list[tuple[int, int, int]], runs: int, rounds: int, force: bool) -> None:
    """One line a shape: its three medians (ms) and whether the rules take it."""
    import numpy as np
    import onnxruntime as ort

    sys.path.insert(0, str(ROOT))
    import dlc
    import passes.lowering.rules.conv as conv_rules
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    def taken(model) -> bool:
        module = compile_model(model, compile_to="linalg", options=CompileOptions(threads=threads)).module
        return 'sym_name = "winograd_filter' in str(module)

    rules_take = [taken(conv_model(*shape)) for shape in shapes]
    if force:  # every shape's stride-1 3x3 conv as Winograd, whatever the rules say
        conv_rules.WINOGRAD_MIN_PIXELS = conv_rules.WINOGRAD_SMALL_MIN_PIXELS = 0
        conv_rules.WINOGRAD_MIN_HARMONIC_CHANNELS = 0
        conv_rules.WINOGRAD_OVERHANG_MIN_DEPTH = conv_rules.WINOGRAD_OVERHANG_MIN_PIXELS = 0
    for (channels, out_channels, side), rule in zip(shapes, rules_take):
        model = conv_model(channels, out_channels, side)
        x = {"x": np.random.default_rng(2).uniform(-1, 1, (1, channels, side, side)).astype(np.float32)}
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), session_options, providers=["CPUExecutionProvider"])
        runners = {"winograd": dlc.compile(model, threads=threads, winograd="f2").run,
                   "direct": dlc.compile(model, threads=threads, winograd="none").run,
                   "onnxruntime": lambda feeds, session=session: session.run(None, feeds)}
        best = dict.fromkeys(runners, float("inf"))
        for _ in range(rounds):
            for name, run in runners.items():
                time.sleep(0.05)  # the other runtime's spinning workers go to sleep
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    run(x)
                    times.append(time.perf_counter() - start)
                best[name] = min(best[name], float(np.median(times)))
        print(channels, out_channels, side, int(rule), *(f"{best[name] * 1e3:.4f}" for name in runners), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated CxCOxSIDE")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--runs", type=int, default=30, help="timed runs a block (median)")
    parser.add_argument("--rounds", type=int, default=4, help="blocks of each build (best kept)")
    parser.add_argument("--force", action="store_true", help="Winograd for every shape, whatever the rules say")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shapes = parse_shapes(args.shapes)
    if args.child:
        os.sched_setaffinity(0, range(min(args.child, os.cpu_count() or 1)))
        _child(args.child, shapes, args.runs, args.rounds, args.force)
        return 0
    print(f"`python benchmarks/winograd.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    print("| conv | threads | rules take it | Winograd ms | direct ms | onnxruntime ms | Winograd / direct |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for threads in (int(t) for t in args.threads.split(",")):
        command = [sys.executable, __file__, "--child", str(threads), "--shapes", args.shapes,
                   "--runs", str(args.runs), "--rounds", str(args.rounds), *(["--force"] if args.force else [])]
        child = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "DLC_CACHE": "0"})
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            return 1
        for line in child.stdout.splitlines():
            channels, out_channels, side, taken, winograd, direct, onnxruntime = line.split()
            print(f"| {channels} -> {out_channels} over {side}x{side} | {threads} | {'yes' if taken == '1' else 'no'} "
                  f"| {winograd} | {direct} | {onnxruntime} | {float(winograd) / float(direct):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
