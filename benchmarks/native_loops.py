"""Native loops (dialects/loop.py) against unrolling: compile CPU-seconds, and latency in one process.

    python benchmarks/native_loops.py compile lstm_h256_s64 gru2_h256_s64   # CPU-s of one compile each
    python benchmarks/native_loops.py rule LSTM 64 2,4,8,16                 # native vs unrolled steps
    python benchmarks/native_loops.py copies lstm_h256_s64 gru2_h256_s64 loop_state  # ping-pong vs copies
    python benchmarks/native_loops.py ort lstm_h256_s64 gru2_h256_s64        # dlc vs onnxruntime, alternated
    python benchmarks/native_loops.py panels lstm_h256_s64 gru2_h256_s64     # alternate panel order or not
    python benchmarks/native_loops.py pages lstm_h256_s64 gru2_h256_s64      # weights on huge pages or not

`compile`: one `dlc.compile` of a run_all model with the cache off, CPU seconds of this process
and its children (the parallel LLVM compile) from `os.times()`, and wall seconds.
`rule`: an LSTM or GRU (benchmarks/models.py `recurrent`, batch 1, hidden as given) of each
sequence length compiled twice in one process, with expand-recurrent's UNROLL_MAX_STEPS at 0
(native loop) and 1000 (unrolled), then timed alternately (15 rounds of 200 runs, median),
so that load from elsewhere hits both alike. The figures are in benchmarks/README.md.
`copies`: each model compiled with the emitter's PING_PONG off (the carried state copied back
after every iteration) and on (two buffers swapped), 1 thread, timed alternately as `rule`;
`loop_state` is a Loop of 1,000 iterations whose carried state is 64x1024 floats and whose body
is one Add and one Mul (the copies' worst case).
`ort`: dlc (1 thread) and onnxruntime (1 intra-op thread) in one process, 21 alternated rounds
of 50 runs each (dlc first in even rounds, onnxruntime first in odd ones), median wall time
per run: both see the same load, which run_all's separate timings do not.
`panels`: each model compiled with gemm_calls.ALTERNATE_PANELS off and on (a loop body's GEMM
walks its panels forward, then backward), and onnxruntime, 1 thread each, 21 rounds of 200 runs
whose order flips every round, median process CPU time per run.
`pages`: as `panels`, with the weights blob on 4 KiB pages (runtime/artifact.py
HUGE_PAGE_MIN_BYTES out of reach) and on transparent huge pages.
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


def _loop_state_model():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Add", ["h_in", "x"], ["a"]), helper.make_node("Mul", ["a", "half"], ["h_out"]),
         helper.make_node("Identity", ["c"], ["c_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [64, 1024])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [64, 1024])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "h0"], ["h"], body=body)], "loop_state",
        [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [64, 1024]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 1024])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, [64, 1024])],
        [numpy_helper.from_array(np.array(1000, np.int64), "M")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def copies(names: list[str]) -> None:
    import numpy as np
    from run_all import BUILT

    import dlc
    import dlc.codegen.llvm_emitter as emitter

    for name in names:
        model = _loop_state_model() if name == "loop_state" else BUILT[name]()
        rng = np.random.default_rng(0)
        feeds = {value.name: rng.standard_normal([d.dim_value for d in value.type.tensor_type.shape.dim])
                 .astype(np.float32) for value in model.graph.input
                 if value.name not in {init.name for init in model.graph.initializer}}
        compiled = {}
        try:
            for ping_pong in (False, True):
                emitter.PING_PONG = ping_pong
                compiled[ping_pong] = dlc.compile(model, threads=1)
        finally:
            emitter.PING_PONG = True
        for name_out in compiled[True].run(feeds):
            np.testing.assert_allclose(compiled[True].run(feeds)[name_out], compiled[False].run(feeds)[name_out])
        runs = 20 if name == "loop_state" else 200
        times = {key: [] for key in compiled}
        for _ in range(15):
            for key, executable in compiled.items():
                executable.run(feeds)
                start = time.process_time()
                for _ in range(runs):
                    executable.run(feeds)
                times[key].append((time.process_time() - start) / runs * 1e6)
        before, after = sorted(times[False])[7], sorted(times[True])[7]
        print(f"{name}: copies {before:8.1f} us, ping-pong {after:8.1f} us (CPU, median of 15), "
              f"ping-pong/copies {after / before:.3f}", flush=True)


def _feeds_and_session(model):
    """Seeded random float32 inputs of `model`, and a one-thread onnxruntime session of it."""
    import numpy as np
    import onnxruntime

    rng = np.random.default_rng(0)
    feeds = {value.name: rng.standard_normal([d.dim_value for d in value.type.tensor_type.shape.dim])
             .astype(np.float32) for value in model.graph.input}
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return feeds, session


def against_onnxruntime(names: list[str]) -> None:
    from run_all import BUILT

    import dlc

    for name in names:
        model = BUILT[name]()
        feeds, session = _feeds_and_session(model)
        compiled = dlc.compile(model, threads=1)
        runs = {"dlc": lambda compiled=compiled, feeds=feeds: compiled.run(feeds),
                "ort": lambda session=session, feeds=feeds: session.run(None, feeds)}
        times = {key: [] for key in runs}
        for round_ in range(21):
            for key in list(runs) if round_ % 2 == 0 else list(runs)[::-1]:  # both orders
                run = runs[key]
                run()
                start = time.perf_counter()
                for _ in range(50):
                    run()
                times[key].append((time.perf_counter() - start) / 50 * 1e6)
        ours, theirs = sorted(times["dlc"])[10], sorted(times["ort"])[10]
        print(f"{name}: dlc {ours:8.1f} us, onnxruntime {theirs:8.1f} us, dlc/ort {ours / theirs:.3f} "
              "(median of 21 alternated rounds)", flush=True)


def panels(names: list[str]) -> None:
    import dlc.codegen.gemm_calls as gemm_calls

    def build(alternate: bool) -> None:
        gemm_calls.ALTERNATE_PANELS = alternate

    try:
        _with_and_without(names, ("forward", "alternate"), build)
    finally:
        gemm_calls.ALTERNATE_PANELS = True


def pages(names: list[str]) -> None:
    import dlc.runtime.artifact as artifact

    saved = artifact.HUGE_PAGE_MIN_BYTES

    def build(huge: bool) -> None:
        artifact.HUGE_PAGE_MIN_BYTES = saved if huge else 1 << 62

    def note() -> str:  # whether the kernel gave huge pages (THP "never": it did not)
        rollup = Path("/proc/self/smaps_rollup")
        lines = rollup.read_text().splitlines() if rollup.exists() else []
        return " ".join(next((line for line in lines if line.startswith("AnonHugePages")), "").split())

    try:
        _with_and_without(names, ("small pages", "huge pages"), build, note)
    finally:
        artifact.HUGE_PAGE_MIN_BYTES = saved


def _with_and_without(names: list[str], labels: tuple[str, str], build, note=lambda: "") -> None:
    """Each model compiled after build(False) and after build(True), and onnxruntime, 1 thread
    each, 21 rounds of 200 runs whose order flips every round, median process CPU time per run."""
    import numpy as np
    from run_all import BUILT

    import dlc

    for name in names:
        model = BUILT[name]()
        feeds, session = _feeds_and_session(model)
        compiled = {}
        for on in (False, True):
            build(on)
            compiled[on] = dlc.compile(model, threads=1)
        want = session.run(None, feeds)
        for executable in compiled.values():
            for got, expected in zip(executable.run(feeds).values(), want):
                np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        runs = {labels[0]: lambda run=compiled[False].run, feeds=feeds: run(feeds),
                labels[1]: lambda run=compiled[True].run, feeds=feeds: run(feeds),
                "ort": lambda session=session, feeds=feeds: session.run(None, feeds)}
        times = {key: [] for key in runs}
        for round_ in range(21):
            for key in list(runs) if round_ % 2 == 0 else list(runs)[::-1]:
                runs[key]()
                start = time.process_time()
                for _ in range(200):
                    runs[key]()
                times[key].append((time.process_time() - start) / 200 * 1e6)
        before, after, theirs = (sorted(times[key])[10] for key in runs)
        print(f"{name}: {labels[0]} {before:8.1f} us, {labels[1]} {after:8.1f} us, onnxruntime {theirs:8.1f} us "
              f"(CPU, median of 21); {labels[1]}/{labels[0]} {after / before:.3f}, {labels[0]}/ort "
              f"{before / theirs:.3f}, {labels[1]}/ort {after / theirs:.3f}" + (f"; {note()}" if note() else ""),
              flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "compile":
        compile_times(sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "ort":
        against_onnxruntime(sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "panels":
        panels(sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "pages":
        pages(sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "copies":
        copies(sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "rule":
        rule(sys.argv[2], int(sys.argv[3]), [int(n) for n in sys.argv[4].split(",")])
    else:
        sys.exit(__doc__)
