"""Thread scaling and concurrent callers, dlc against onnxruntime: one fresh process per measurement.

    python benchmarks/threads.py                                        # ResNet-18 and MobileNetV2, 1 and 2 threads
    python benchmarks/threads.py --models resnet18,mobilenet_v2,resnet50 --threads 1,2,4,8,16 --rounds 2
    python benchmarks/threads.py --models resnet18 --threads '' --concurrency 16x1,4x4,2x8
    python benchmarks/threads.py model.onnx --threads 1,4 --output table.md
    python benchmarks/threads.py --models set --threads 1,2,4,8,16 --rounds 2   # issue 15's set
    python benchmarks/threads.py --models set --threads 2 --rounds 1 --in-process   # both in one process
    python benchmarks/threads.py --models set --threads 1,16 --in-process --also-direct   # + --no-winograd
    python benchmarks/threads.py --models mobilenet_v2 --regions 16   # threads per region, no runs
    python benchmarks/threads.py --models mobilenet_v2 --threads 8,16 --thread-us 0.3   # calibrate

Models are names from benchmarks/run_all.py (the benchmark set) or .onnx paths. Latency: each
(model, runtime, thread count, round) runs in its own process pinned to the first N cores (one
logical CPU per physical core where Linux says which), so a pool never shares cores with the
other runtime's spinning workers; the median of `--repeat` runs, best round kept. Throughput
(`--concurrency CxT`): C Python threads call one compiled model (dlc) or one shared session
(onnxruntime, intra_op_num_threads=T) for `--seconds`, inferences per second, on all C*T cores.
dlc and onnxruntime alternate within each round. With `--in-process`, both run in one process
per (model, thread count, round), four blocks of `--repeat` runs each in turn (each after a
pause that lets the other's spinning workers sleep), each one's best block, and a throughput
setup likewise serves four blocks of `--seconds` / 4 for each in turn: where separate
processes land on a busy host's cores differently, this compares the two on the same cores at
the same moments. The table gives ratios dlc/onnxruntime (lower is
better for dlc; for throughput, onnxruntime/dlc, so lower is better for dlc there too) and flags
any model whose dlc latency at N threads is more than 5% above its latency at the previous count.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNTIMES = ("dlc", "onnxruntime")
# `--also-direct`, `--also-f4`: more dlc builds beside the default one, with winograd="none"
# (the direct conv for stride-1 3x3 convs, `dlc compile --no-winograd`) or "f4" (F(4x4, 3x3)).
VARIANTS = {"dlc-direct": "none", "dlc-f4": "f4"}
# `--models set`: the many-cores benchmark set (issue 15): CNNs from 0.3 to 4 GFLOP, mobile
# blocks, a transformer encoder layer, a speech front end's strided 1-D convolutions.
SET = ("mobilenet_v2", "resnet18", "squeezenet", "mobilenet_v3", "efficientnet_b0", "transformer_d256",
       "speech_front_end", "resnet50")
# Compile options for dlc's side (`--no-winograd`), set in each child from its arguments.
DLC_OPTIONS: dict = {}
# The newest ONNX IR version onnxruntime 1.30 (the 16-core machine's) loads.
MAX_IR_VERSION = 10


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


def _cpu_description() -> str:
    """The CPU's model name and how many logical CPUs share a core (the table's header: a VM's
    topology says whether "the first N cores" are N cores)."""
    name = platform.processor() or platform.machine()
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list")
    if siblings.exists():
        shared = sum(len(range(int(a), int(b or a) + 1)) for a, _, b in
                     (part.partition("-") for part in siblings.read_text().strip().split(",")))
        name += f", {shared} logical CPU(s) per core"
    return name


def _runner(model_path: str, runtime: str, threads: int):
    """A no-argument callable running one inference (the child's side), after warm-up."""
    sys.path.insert(0, str(ROOT))
    import onnx

    from dlc.tools.oracle import input_specs, onnxruntime_session, random_inputs

    model = onnx.load(model_path)
    feeds = random_inputs(input_specs(model))
    if runtime.startswith("dlc"):
        import dlc

        options = {**DLC_OPTIONS, **({"winograd": VARIANTS[runtime]} if runtime in VARIANTS else {})}
        compiled = dlc.compile(model, threads=threads, **options)
        run = lambda: compiled.run(feeds)  # noqa: E731
    else:
        session = onnxruntime_session(model, threads=threads)
        run = lambda: session.run(None, feeds)  # noqa: E731
    for _ in range(3):
        run()
    return run


def median_ms(run, repeat: int) -> float:
    """Median milliseconds of `repeat` calls of `run`."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def _latency(model_path: str, runtime: str, threads: int, repeat: int) -> float:
    """Median milliseconds of `repeat` runs, pinned to the first `threads` cores."""
    os.sched_setaffinity(0, _cores()[:threads])
    return median_ms(_runner(model_path, runtime, threads), repeat)


# A pause before each block of `--in-process`, so that the other runtime's idle workers have
# stopped spinning: onnxruntime's intra-op threads keep spinning for several milliseconds after
# its last run (its default, session.intra_op.allow_spinning), on the cores the next block needs.
# On the 2-core VM, MobileNetV2 at 2 threads, dlc's blocks right after onnxruntime's took 3.9-8.0
# ms against 3.7-3.9 alone; after a pause of 2 ms 3.2-6.1, of 10 or 50 ms 3.4-4.2 (one outlier
# 6.7); with onnxruntime's spinning off 3.3-4.0 (and onnxruntime's own 4.4-5.0 against 2.9-4.1).
SETTLE_SECONDS = 0.05


def _paired_latency(model_path: str, threads: int, repeat: int, runtimes=RUNTIMES, blocks: int = 4) -> list[float]:
    """Median milliseconds of each of `runtimes` in one process pinned to the first `threads`
    cores: `blocks` blocks of `repeat` runs of each runtime in turn (each block after a pause
    of SETTLE_SECONDS, so the other runtime's spinning workers have gone to sleep, and 3 warm-up
    runs), each runtime's best block."""
    os.sched_setaffinity(0, _cores()[:threads])
    runs = [_runner(model_path, runtime, threads) for runtime in runtimes]
    best = [float("inf")] * len(runs)
    for _ in range(blocks):
        for index, run in enumerate(runs):
            time.sleep(SETTLE_SECONDS)
            for _ in range(3):
                run()
            best[index] = min(best[index], median_ms(run, repeat))
    return best


def _throughput(model_path: str, runtime: str, callers: int, threads: int, seconds: float) -> float:
    """Inferences per second of `callers` Python threads sharing one model, `threads` each."""
    os.sched_setaffinity(0, _cores()[:callers * threads])
    return _serve(_runner(model_path, runtime, threads), callers, seconds)


def _paired_throughput(model_path: str, callers: int, threads: int, seconds: float, runtimes=RUNTIMES,
                       blocks: int = 4) -> list[float]:
    """Inferences per second of each of `runtimes` in one process on the first callers x threads
    cores: `blocks` blocks of `seconds` / `blocks` for each runtime in turn (each after a pause
    of SETTLE_SECONDS and 3 warm-up runs), each runtime's best block. Blocks a second or two
    long, alternating, meet a busy host's slow spells alike: on the 16-core machine whole
    3-second measurements in separate processes read 0.87-1.11 onnxruntime/dlc on ResNet-18's
    16 x 1 callers and 0.87-1.08 on ResNet-50's from round to round, within one call."""
    os.sched_setaffinity(0, _cores()[:callers * threads])
    runs = [_runner(model_path, runtime, threads) for runtime in runtimes]
    best = [0.0] * len(runs)
    for _ in range(blocks):
        for index, run in enumerate(runs):
            time.sleep(SETTLE_SECONDS)
            for _ in range(3):
                run()
            best[index] = max(best[index], _serve(run, callers, seconds / blocks))
    return best


def _serve(run, callers: int, seconds: float) -> float:
    """Inferences per second of `callers` Python threads calling `run` for `seconds`."""
    counts = [0] * callers
    start_line = threading.Barrier(callers + 1)
    stop = threading.Event()

    def caller(index: int) -> None:
        start_line.wait()
        while not stop.is_set():
            run()
            counts[index] += 1

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for worker in workers:
        worker.start()
    start_line.wait()
    begin = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - begin)


def region_threads(model_path: str, threads: int) -> list[tuple[str, str, int]]:
    """(kernel, region, threads it takes) for each parallel region of `model_path` compiled for
    `threads` threads: marked loops (their `threads_for_work`) and GEMM calls (`thread_grid`)."""
    sys.path.insert(0, str(ROOT))
    import onnx
    from xdsl.dialects import func

    from dialects.gemm_ukernel import gemm_spec, runs_serially, thread_grid, ukernels
    from dlc.codegen.parallel_loops import nest_iterations, threads_for_work
    from dlc.driver import CompileOptions, compile_model
    from passes.lowering.mark_parallel_loops import ITERATION_SECONDS

    module = compile_model(onnx.load(model_path), compile_to="loops", options=CompileOptions(threads=threads)).module
    grids = {}
    for declaration in ukernels(module):
        spec = gemm_spec(declaration)
        if "dlc.im2col" in declaration.attributes:
            im2col = declaration.attributes["dlc.im2col"].data
            grid = (im2col["tm"].value.data, im2col["tn"].value.data)
        else:
            tiles = -(-spec["m"] // spec["mr"]), -(-spec["n"] // spec["nr"])
            serial = runs_serially(*tiles, mr=spec["mr"], nr=spec["nr"], k=spec["k"])
            # A serial GEMM runs on the caller's thread (gemm_calls.py).
            grid = (1, 1) if serial else thread_grid(*tiles, threads, mr=spec["mr"], nr=spec["nr"], k=spec["k"])
        grids[declaration.sym_name.data] = (f"gemm {spec['m']}x{spec['n']}x{spec['k']} grid {grid[0]}x{grid[1]}",
                                            grid[0] * grid[1])
    rows = []
    for kernel in module.ops:
        if not isinstance(kernel, func.FuncOp) or kernel.sym_name.data in grids or kernel.sym_name.data == "main":
            continue
        for op in kernel.walk():
            if "dlc.parallel" in op.attributes:
                iterations = nest_iterations(op)
                worth = threads if iterations is None else threads_for_work(iterations * ITERATION_SECONDS)
                rows.append((kernel.sym_name.data, f"loop of {iterations} iterations", min(threads, worth)))
            elif isinstance(op, func.CallOp) and op.callee.root_reference.data in grids:
                rows.append((kernel.sym_name.data, *grids[op.callee.root_reference.data]))
    return rows


def modelled_ms(model_path: str, threads: int, true_costs=(0.1e-6, 0.3e-6, 1e-6, 3e-6),
                chosen_costs=(None, 0.3e-6, 1e-6, 3e-6)) -> dict:
    """{(chosen, true): ms}: the model's time of all parallel regions at `threads` threads when
    each region's thread count is chosen with per-thread cost `chosen` (None: every region
    takes all threads, as before issue 15's cost model) and a thread really costs `true`.
    Work: loops ITERATION_SECONDS per innermost iteration, GEMMs thread_grid's FLOPs + bytes."""
    sys.path.insert(0, str(ROOT))
    import onnx
    from xdsl.dialects import func

    import dialects.gemm_ukernel as gemm
    import dlc.codegen.parallel_loops as loops
    from dlc.driver import CompileOptions, compile_model
    from passes.lowering.mark_parallel_loops import ITERATION_SECONDS

    module = compile_model(onnx.load(model_path), compile_to="loops", options=CompileOptions(threads=threads)).module
    declarations = {d.sym_name.data: gemm.gemm_spec(d) for d in gemm.ukernels(module)}
    regions = []  # ("loop", seconds) or ("gemm", spec)
    for kernel in module.ops:
        if isinstance(kernel, func.FuncOp) and kernel.sym_name.data not in declarations:
            for op in kernel.walk():
                if "dlc.parallel" in op.attributes and loops.nest_iterations(op) is not None:
                    regions.append(("loop", loops.nest_iterations(op) * ITERATION_SECONDS))
                elif isinstance(op, func.CallOp) and op.callee.root_reference.data in declarations:
                    spec = declarations[op.callee.root_reference.data]
                    if not gemm.runs_serially(-(-spec["m"] // spec["mr"]), -(-spec["n"] // spec["nr"]),
                                              mr=spec["mr"], nr=spec["nr"], k=spec["k"]):
                        regions.append(("gemm", spec))
    saved = gemm.THREAD_SECONDS
    table = {}
    try:
        for chosen in chosen_costs:
            gemm.THREAD_SECONDS = loops.THREAD_SECONDS = chosen or 0.0
            for true in true_costs:
                total = 0.0
                for kind, work in regions:
                    if kind == "loop":
                        t = threads if chosen is None else min(threads, loops.threads_for_work(work))
                        total += work / t + true * (t - 1)
                        continue
                    mr, nr, k = work["mr"], work["nr"], work["k"]
                    blocks, panels = -(-work["m"] // mr), -(-work["n"] // nr)
                    tm, tn = gemm.thread_grid(blocks, panels, threads, mr=mr, nr=nr, k=k)
                    row_part, col_part = -(-blocks // tm), -(-panels // tn)
                    total += (row_part * col_part * mr * nr * k * 2 / gemm.CORE_FLOPS
                              + 4 * k * (row_part * mr + col_part * nr) / gemm.CORE_BYTES_PER_S + true * (tm * tn - 1))
                table[chosen, true] = total * 1e3
    finally:
        gemm.THREAD_SECONDS = loops.THREAD_SECONDS = saved
    return table


def _child(args: list[str]) -> list[float]:
    """Run a measurement in a fresh process: the numbers on its last line."""
    environment = {**os.environ, "ORT_LOGGING_LEVEL": "3"}
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env=environment)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-2000:]}")
    return [float(v) for v in out.stdout.strip().splitlines()[-1].split()]


def _model_files(names: list[str], workdir: Path) -> dict[str, str]:
    """name -> .onnx path: benchmark-set names are built and saved, paths are taken as they are."""
    sys.path.insert(0, str(HERE))  # run_all and models (xDSL ships a top-level `benchmarks`)
    sys.path.insert(0, str(ROOT))
    import onnx
    from run_all import BUILT, ZOO, without_initializer_inputs, zoo_model

    files = {}
    for name in names:
        if name in ZOO or name in BUILT:
            model = zoo_model(name) if name in ZOO else BUILT[name]()
        else:  # as run_all does: IR-3 weights listed as inputs keep onnxruntime from folding them
            model = without_initializer_inputs(onnx.load(name))
            name = Path(name).stem
        model.ir_version = min(model.ir_version, MAX_IR_VERSION)
        files[name] = str(workdir / f"{name}.onnx")
        onnx.save(model, files[name])
    return files


def _geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def _dlc_builds(runtimes) -> list[str]:
    return [r for r in runtimes if r != "onnxruntime"]


def latency_table(results: dict, names: list[str], counts: list[int], runtimes=RUNTIMES) -> list[str]:
    best = {key: min(rounds) for key, rounds in results.items()}
    builds = _dlc_builds(runtimes)
    header = " | ".join(f"{t} thr " + " | ".join(f"{b} ms" for b in builds) + " | ort ms | "
                        + " | ".join(f"{b}/ort" for b in builds) for t in counts)
    lines = [f"| model | {header} |", "|---|" + "---:|" * (2 * len(builds) + 1) * len(counts)]
    for name in names:
        cells = [" | ".join(f"{best[name, b, t]:.3f}" for b in builds) + f" | {best[name, 'onnxruntime', t]:.3f} | "
                 + " | ".join(f"{best[name, b, t] / best[name, 'onnxruntime', t]:.2f}" for b in builds)
                 for t in counts]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for build in builds:
        for t in counts:
            ratios = {name: best[name, build, t] / best[name, "onnxruntime", t] for name in names}
            worst = max(ratios, key=ratios.get)
            lines.append(f"- {build}, {t} threads: geomean {build}/ort {_geomean(list(ratios.values())):.2f}, "
                         f"worst {worst} {ratios[worst]:.2f}")
        backwards = [f"{name} {a}->{b} threads: {best[name, build, a]:.3f} -> {best[name, build, b]:.3f} ms"
                     for name in names for a, b in zip(counts, counts[1:])
                     if best[name, build, b] > 1.05 * best[name, build, a]]
        lines.append(f"- {build} slower with more threads (beyond 5%): " + ("; ".join(backwards) or "none"))
    return lines


def throughput_table(results: dict, names: list[str], setups: list[tuple[int, int]], runtimes=RUNTIMES) -> list[str]:
    best = {key: max(rounds) for key, rounds in results.items()}
    builds = _dlc_builds(runtimes)
    header = " | ".join(f"{c}x{t} " + " | ".join(f"{b} inf/s" for b in builds) + " | ort inf/s | "
                        + " | ".join(f"ort/{b}" for b in builds) for c, t in setups)
    lines = [f"| model | {header} |", "|---|" + "---:|" * (2 * len(builds) + 1) * len(setups)]
    for name in names:
        cells = [" | ".join(f"{best[name, b, s]:.1f}" for b in builds) + f" | {best[name, 'onnxruntime', s]:.1f} | "
                 + " | ".join(f"{best[name, 'onnxruntime', s] / best[name, b, s]:.2f}" for b in builds)
                 for s in setups]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="*", help=".onnx paths (added to --models)")
    parser.add_argument("--models", default="resnet18,mobilenet_v2", help="benchmark-set names (run_all.py)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts for latency ('' for none)")
    parser.add_argument("--concurrency", default="", help="CALLERSxTHREADS setups for throughput, e.g. 16x1,4x4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per latency measurement (median)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a throughput measurement")
    parser.add_argument("--in-process", action="store_true",
                        help="dlc and onnxruntime in one process per (model, thread count or setup, round), "
                             "blocks of runs (or of --seconds / 4 of throughput) in turn, rather than one process each")
    parser.add_argument("--output", type=Path, help="also write the tables (markdown) here")
    parser.add_argument("--regions", type=int, metavar="THREADS",
                        help="only list the threads each parallel region takes when compiled for THREADS")
    parser.add_argument("--thread-us", type=float, metavar="US",
                        help="compile dlc with this per-thread cost of a parallel region instead of "
                             "THREAD_SECONDS (dialects/gemm_ukernel.py), to calibrate it; the compile cache is off")
    parser.add_argument("--no-winograd", action="store_true",
                        help="compile dlc's side with winograd='none' (`dlc compile --no-winograd`)")
    parser.add_argument("--also-direct", action="store_true",
                        help="dlc's side twice, the default build and one with winograd='none' (the direct conv), "
                             "side by side (with --in-process, all in one process)")
    parser.add_argument("--also-f4", action="store_true",
                        help="also a dlc build with winograd='f4' (Winograd F(4x4, 3x3), `--winograd f4`)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.thread_us is not None:
        # Both modules read the constant when they run; the compile cache keys on dlc's source,
        # which this does not change, so it must not serve (or keep) these artifacts.
        os.environ["DLC_CACHE"] = "0"
        sys.path.insert(0, str(ROOT))
        import dialects.gemm_ukernel
        import dlc.codegen.parallel_loops

        dialects.gemm_ukernel.THREAD_SECONDS = dlc.codegen.parallel_loops.THREAD_SECONDS = args.thread_us * 1e-6
    if args.no_winograd:
        DLC_OPTIONS["winograd"] = "none"
    if args.child:
        kind, path, runtime, *rest = args.child
        if kind == "latency":
            print(_latency(path, runtime, int(rest[0]), args.repeat))
        elif kind == "paired":
            print(*_paired_latency(path, int(rest[0]), args.repeat, runtime.split(",")))
        elif kind == "paired-throughput":
            print(*_paired_throughput(path, int(rest[0]), int(rest[1]), args.seconds, runtime.split(",")))
        else:
            print(_throughput(path, runtime, int(rest[0]), int(rest[1]), args.seconds))
        return 0
    runtimes = ("dlc", *(["dlc-direct"] if args.also_direct else []), *(["dlc-f4"] if args.also_f4 else []),
                "onnxruntime")
    names = [m for n in args.models.split(",") if n for m in (SET if n == "set" else [n])] + list(args.model)
    counts = [int(t) for t in args.threads.split(",") if t]
    setups = [tuple(int(v) for v in s.split("x")) for s in args.concurrency.split(",") if s]
    cores = len(_cores())
    if max([*counts, *(c * t for c, t in setups), 1]) > cores:
        print(f"note: more threads than the {cores} cores: some share a core", file=sys.stderr)
    latency: dict = {}
    throughput: dict = {}
    if args.regions:
        with tempfile.TemporaryDirectory() as workdir:
            for name, path in _model_files(names, Path(workdir)).items():
                rows = region_threads(path, args.regions)
                fewer = sum(t < args.regions for _, _, t in rows)
                print(f"{name}: {len(rows)} regions at {args.regions} threads, {fewer} take fewer")
                for kernel, region, t in rows:
                    print(f"  {kernel:28s} {t:3d}  {region}")
                table = modelled_ms(path, args.regions)
                trues = sorted({true for _, true in table})
                print(f"  modelled ms of its regions at {args.regions} threads; rows: the per-thread cost the "
                      "thread counts are chosen with (none: all threads), columns: the real one")
                print("  chosen \\ real " + "".join(f"{true * 1e6:9.1f} us" for true in trues))
                for chosen in dict.fromkeys(chosen for chosen, _ in table):
                    label = "none" if chosen is None else f"{chosen * 1e6:.1f} us"
                    print(f"  {label:>13} " + "".join(f"{table[chosen, true]:12.3f}" for true in trues))
        return 0
    calibration = ([] if args.thread_us is None else ["--thread-us", str(args.thread_us)]) + \
        (["--no-winograd"] if args.no_winograd else [])
    with tempfile.TemporaryDirectory() as workdir:
        files = _model_files(names, Path(workdir))
        for round_ in range(args.rounds):
            for name, path in files.items():
                for t in counts:
                    if args.in_process:
                        values = _child(["paired", path, ",".join(runtimes), str(t), "--repeat", str(args.repeat),
                                         *calibration])
                    else:
                        values = [_child(["latency", path, runtime, str(t), "--repeat", str(args.repeat),
                                          *calibration])[0] for runtime in runtimes]
                    for runtime, value in zip(runtimes, values):
                        latency.setdefault((name, runtime, t), []).append(value)
                    print(f"round {round_ + 1} {name} {t} threads: "
                          + ", ".join(f"{r} {latency[name, r, t][-1]:.3f} ms" for r in runtimes), flush=True)
                for c, t in setups:
                    if args.in_process:
                        values = _child(["paired-throughput", path, ",".join(runtimes), str(c), str(t),
                                         "--seconds", str(args.seconds), *calibration])
                    else:
                        values = [_child(["throughput", path, runtime, str(c), str(t), "--seconds",
                                          str(args.seconds), *calibration])[0] for runtime in runtimes]
                    for runtime, value in zip(runtimes, values):
                        throughput.setdefault((name, runtime, (c, t)), []).append(value)
                    print(f"round {round_ + 1} {name} {c}x{t}: "
                          + ", ".join(f"{r} {throughput[name, r, (c, t)][-1]:.1f}/s" for r in runtimes), flush=True)
    import onnxruntime

    import dlc

    command = "python benchmarks/threads.py " + " ".join(argv if argv is not None else sys.argv[1:])
    calibrated = "" if args.thread_us is None else f"; dlc compiled with THREAD_SECONDS = {args.thread_us} us"
    lines = [f"{date.today()}, {_cpu_description()}, {cores} cores, dlc {dlc.__version__}, "
             f"onnxruntime {onnxruntime.__version__}; best of {args.rounds} rounds{calibrated}",
             "", f"`{command.strip()}`", ""]
    if counts:
        lines += ["Latency (median ms):", "", *latency_table(latency, list(files), counts, runtimes), ""]
    if setups:
        lines += ["Throughput (inferences/s, one shared model or session):", "",
                  *throughput_table(throughput, list(files), setups, runtimes), ""]
    text = "\n".join(lines)
    print("\n" + text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
