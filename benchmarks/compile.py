"""Compile time, phase by phase: the benchmark set and synthetic graphs of growing size (issue 16).

    python benchmarks/compile.py                          # the set + synthetic 100/1000 nodes -> README.md
    python benchmarks/compile.py --models resnet50 --sizes 100,1000,10000 --repeat 3 --output -
    python benchmarks/compile.py --small                  # ms per in-process compile of small models

Every measurement is a cold compile (DLC_CACHE=0) in a fresh process, so module imports count
as they do for `dlc compile`; the best of --repeat runs is kept (the development VM is shared).
Steps are timed in CPU seconds (compile processes included), which the neighbours on a shared
machine disturb far less than wall time; the command's wall time is given too.
Columns: import, the passes of each phase, IR verification, LLVM IR emission, LLVM (object
code), the rest of the build (weights, pool object, loading), the process's wall time and its
peak resident memory (the compiling process; each LLVM worker holds one part); then the whole
`dlc compile MODEL -o DIR` command as a user runs it (`python -m dlc`, cold), its wall time and
CPU seconds (its LLVM workers and the linker included): module imports, saving the artifact
and the process's exit count there, and the issue's target is that command's wall time; last, the same
command answered by the compile cache (a private one), as a process, and `dlc.compile`
answered by it in a process (the issue's in-process hit, best of 3 or more). The synthetic
table gives microseconds per ONNX node for every pass at each size, and the ratio of the
largest size to the smallest: compile time that grows linearly with the graph keeps it near 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # models.py, run_all.py (xDSL ships a top-level `benchmarks` package)

BEGIN, END = "<!-- compile-time table: benchmarks/compile.py -->", "<!-- end of compile-time table -->"
# The latest run's tables, inside the section: the measured history written by hand after them
# (before/after tables, what each change did) stays when the script runs again.
LATEST, LATEST_END = "<!-- latest run: benchmarks/compile.py -->", "<!-- end of latest run -->"
PHASE_OF = {}  # pass name -> phase, filled from the default pipeline


def synthetic(nodes: int, seed: int = 0):
    """About `nodes` ONNX nodes: residual blocks of 3x3 convolutions (Conv, Relu, Conv, Add, Relu)
    and MatMul/Add/Relu chains, alternating, on small tensors (compile time, not run time)."""
    from models import GraphBuilder, _float_input
    from onnx import TensorProto, helper

    g = GraphBuilder(seed)
    x = "x"
    blocks = max(1, nodes // 16)  # a block: 5 conv nodes + reshape + 9 matmul nodes + reshape back
    for index in range(blocks):
        h = g.node("Relu", [g.node("Conv", [x, g.weight(f"c{index}a", 8, 8, 3, 3)], pads=[1, 1, 1, 1])])
        h = g.node("Conv", [h, g.weight(f"c{index}b", 8, 8, 3, 3)], pads=[1, 1, 1, 1])
        x = g.node("Relu", [g.node("Add", [h, x])])
        flat = g.node("Reshape", [x, g.ints("flat", [8, 64])])
        for step in range(3):
            flat = g.node("Relu", [g.node("Add", [g.node("MatMul", [flat, g.weight(f"m{index}_{step}", 64, 64)]),
                                                  g.bias(f"b{index}_{step}", 64)])])
        x = g.node("Reshape", [flat, g.ints("back", [1, 8, 8, 8])])
    graph = helper.make_graph(g.nodes, f"synthetic{nodes}", [_float_input("x", [1, 8, 8, 8])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 8, 8, 8])], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def build_model(name: str, folder: Path) -> tuple[Path, int]:
    """(path of the .onnx file, its node count) for a benchmark-set name or `synthetic<N>`."""
    import onnx
    import run_all

    if name.startswith("synthetic"):
        model = synthetic(int(name[len("synthetic"):]))
    elif name in run_all.ZOO:
        model = run_all.zoo_model(name)
    else:
        model = run_all.BUILT[name]()
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    return path, len(model.graph.node)


def measure_once(path: str) -> dict:
    """One cold compile in this process: {phase or pass: seconds}, in order (run in a child)."""
    import resource

    def cpu_seconds() -> float:
        """This process's CPU time plus its finished children's (the LLVM part processes)."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    # Every step is timed in CPU seconds: the development VM is shared, and its neighbours
    # stretch wall time by 1-2x from one run to the next (the driver and the pass runner
    # read time.perf_counter, this child's clock from here on).
    time.perf_counter = cpu_seconds
    start = time.perf_counter()
    os.environ["DLC_CACHE"] = "0"
    import dlc.codegen.link as link
    import dlc.codegen.llvm_emitter as emitter
    import dlc.codegen.native as native
    from dlc.driver import compile_model
    from passes.pipeline import PassInstrumentation

    spans: dict[str, float] = {}

    def timed(module, name: str, label: str) -> None:
        function = getattr(module, name)

        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spans[label] = spans.get(label, 0.0) + time.perf_counter() - begin
        setattr(module, name, wrapper)

    # The C API's and the pool's objects are compiled in the build, not beside the passes
    # (link.start_shared_objects): this process's CPU clock would count the pool's thread in
    # whichever pass it ran beside. The whole command below keeps the overlap.
    link.start_shared_objects = lambda *args, **kwargs: None
    timed(emitter, "emit_llvm", "emit LLVM IR")
    timed(native, "compile_objects", "LLVM")
    instrument = PassInstrumentation(verify_each=False)
    compile_model(path, instrument=instrument)
    rows: list[tuple[str, float]] = []
    for name, seconds in instrument.timings:
        if name == "codegen":
            rows += list(spans.items())
            seconds -= sum(spans.values())
            name = "build rest"
        rows.append((name, seconds))
    return {"rows": rows, "cpu": time.perf_counter() - start, "peak_mb": _peak_kib() / 1024}


def _peak_kib() -> float:
    """This process's peak resident memory. Linux's VmHWM, not ru_maxrss: that one keeps the
    peak of the process this one was forked from (the benchmark's parent, which built VGG)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_command(path: Path, repeat: int) -> dict:
    """The whole `dlc compile` command, cold: the best of `repeat` runs by CPU, with its wall;
    then the same command answered by the compile cache (a private one, filled by a first
    compile): the best of `repeat` hits by CPU, with its wall."""
    import resource

    def best_of(env: dict, prefix: str) -> dict | None:
        best = None
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            begin = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "dlc", "compile", str(path), "-o", out], capture_output=True,
                                  text=True, env={**os.environ, "DLC_QUIET": "1", **env})
            wall = time.perf_counter() - begin
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                return None
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            if best is None or cpu < best[f"{prefix}_cpu"]:
                best = {f"{prefix}_cpu": cpu, f"{prefix}_wall": wall}
        return best

    with tempfile.TemporaryDirectory(prefix="dlc-compile-out-") as out, \
            tempfile.TemporaryDirectory(prefix="dlc-compile-cache-") as cache:
        cold = best_of({"DLC_CACHE": "0"}, "command")
        if cold is None:
            return {}
        hits = {"DLC_CACHE": "1", "DLC_CACHE_DIR": cache}
        filled = subprocess.run([sys.executable, "-m", "dlc", "compile", str(path), "-o", out], capture_output=True,
                                env={**os.environ, "DLC_QUIET": "1", **hits})
        if filled.returncode != 0:
            return cold
        in_process = subprocess.run([sys.executable, __file__, "--hit", str(path), "--repeat", str(max(repeat, 3))],
                                    capture_output=True, text=True, env={**os.environ, "DLC_QUIET": "1", **hits})
        hit_in_process = (json.loads(in_process.stdout.strip().splitlines()[-1]) if in_process.returncode == 0
                          else {})
        return {**cold, **(best_of(hits, "hit") or {}), **hit_in_process}


def measure_hit_in_process(path: str, repeat: int) -> dict:
    """The issue's cache-hit figure: `dlc.compile(path)` answered by the cache (filled by the
    first call if the command's entry does not serve it), wall seconds, best of `repeat`."""
    import dlc

    dlc.compile(path)
    best = None
    for _ in range(repeat):
        begin = time.perf_counter()
        compiled = dlc.compile(path)
        wall = time.perf_counter() - begin
        del compiled
        best = wall if best is None else min(best, wall)
    return {"hit_in_process": best}


def measure(path: Path, repeat: int, command: bool = True) -> dict:
    """Best of `repeat` fresh processes (process wall time includes Python and module imports),
    and (with `command`) the best of `repeat` whole `dlc compile` commands."""
    best = None
    for _ in range(repeat):
        begin = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--one", str(path)], capture_output=True, text=True,
                              env={**os.environ, "DLC_CACHE": "0", "DLC_VERIFY_EACH": "0"})
        wall = time.perf_counter() - begin
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["wall"] = wall
        if best is None or result["cpu"] < best["cpu"]:
            best = result
    return {**best, **(measure_command(path, repeat) if command else {})}


def model_table(results: dict[str, dict]) -> list[str]:
    columns = ["import", "graph", "kernels", "linalg", "loops", "verify", "emit LLVM IR", "LLVM", "build rest"]
    lines = ["| model | nodes | " + " | ".join(columns) + " | compile (CPU) | command (wall) | peak MB "
             "| dlc compile (wall) | dlc compile (CPU) | cache hit (wall) | cache hit (CPU) | hit in-process (wall) |",
             "|---|---:|" + "---:|" * (len(columns) + 8)]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | | {result['error']} |")
            continue
        sums = dict.fromkeys(columns, 0.0)
        phase = "graph"
        for row, seconds in result["rows"]:
            if row in sums:
                sums[row] += seconds
            else:  # a pass: its phase (a name in two phases, like dce, goes with the pass before it)
                phase = PHASE_OF.get(row, phase)
                sums[phase] += seconds
        cells = " | ".join(f"{sums[c]:.2f}" for c in columns)
        total = sum(seconds for _, seconds in result["rows"])
        command = (f"{result['command_wall']:.2f} | {result['command_cpu']:.2f}" if "command_wall" in result
                   else "failed | ")
        command += (f" | {result['hit_wall']:.2f} | {result['hit_cpu']:.2f}" if "hit_wall" in result
                    else " | failed | ")
        command += f" | {result['hit_in_process']:.3f}" if "hit_in_process" in result else " | failed"
        lines.append(f"| {name} | {result['nodes']} | {cells} | {total:.2f} | {result['wall']:.2f} | "
                     f"{result['peak_mb']:.0f} | {command} |")
    return lines


def per_node_table(results: dict[str, dict]) -> list[str]:
    """Microseconds per node of every pass (and phase) at each synthetic size."""
    sizes = [name for name in results if "error" not in results[name]]
    if not sizes:
        return []
    names: list[str] = []
    per_node: dict[str, dict[str, float]] = {}
    for size in sizes:
        result = results[size]
        seen: dict[str, int] = {}
        for row, seconds in result["rows"]:
            seen[row] = seen.get(row, 0) + 1
            label = row if seen[row] == 1 else f"{row} ({seen[row]})"
            if label not in names:
                names.append(label)
            per_node.setdefault(label, {})[size] = seconds / result["nodes"] * 1e6
        per_node.setdefault("total", {})[size] = sum(s for _, s in result["rows"]) / result["nodes"] * 1e6
    names.append("total")
    header = " | ".join(f"{results[s]['nodes']} nodes" for s in sizes)
    lines = [f"| step, us per node | {header} | largest / smallest |", "|---|" + "---:|" * (len(sizes) + 1)]
    for label in names:
        values = [per_node.get(label, {}).get(s) for s in sizes]
        cells = " | ".join(f"{v:.0f}" if v is not None else "" for v in values)
        ratio = values[-1] / values[0] if values[0] and values[-1] is not None and values[0] > 0.5 else None
        lines.append(f"| {label} | {cells} | {f'{ratio:.2f}' if ratio else ''} |")
    return lines


def cpu_model() -> str:
    """The CPU's model name as lscpu gives it (figures from another VM are not comparable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_readme(text: str, readme: Path) -> None:
    """Replace the latest run's tables in benchmarks/README.md's compile-time section (put at the
    start of the section the first time; the section is appended if missing). Nothing else of
    the section is touched: it holds the measured history too."""
    content = readme.read_text()
    block = f"{LATEST}\n{text}\n{LATEST_END}"
    if LATEST in content and LATEST_END in content:
        content = re.sub(re.escape(LATEST) + ".*?" + re.escape(LATEST_END), lambda _: block, content, flags=re.S)
    elif BEGIN in content:
        content = content.replace(BEGIN, f"{BEGIN}\n{block}\n", 1)
    else:
        content = content.rstrip("\n") + f"\n\n## Compile time\n\n{BEGIN}\n{block}\n{END}\n"
    readme.write_text(content)


def small_models() -> dict:
    """The models a test suite compiles by the thousand: one Add node, and a 3x3 conv into a
    ReduceSum (the conv's direct loops and a GEMM-free reduction)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def add(index: int) -> onnx.ModelProto:
        x, y, z = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 4, 5]) for n in "xyz")
        graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"], name=f"add{index}")], "g", [x, y], [z])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    def conv(index: int) -> onnx.ModelProto:
        weight = numpy_helper.from_array(np.ones([4, 3, 3, 3], np.float32), "w")
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name=f"conv{index}", pads=[1, 1, 1, 1]),
                 helper.make_node("ReduceSum", ["c"], ["y"], keepdims=1)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])], [weight])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])

    return {"one Add": add, "3x3 conv + ReduceSum": conv}


def measure_small(repeat: int) -> None:
    """Milliseconds per in-process `dlc.compile` of each small model (DLC_CACHE=0, every compile
    a model of its own name), after one warm-up compile: what each compile of a test run pays
    besides the imports. Best of `repeat` rounds of 10."""
    os.environ["DLC_CACHE"], os.environ["DLC_QUIET"] = "0", "1"
    import dlc

    for name, build in small_models().items():
        dlc.compile(build(0))
        rounds = []
        for round_ in range(repeat):
            start = time.perf_counter()
            for index in range(10):
                dlc.compile(build(1 + 10 * round_ + index))
            rounds.append((time.perf_counter() - start) / 10)
        print(f"{name}: {min(rounds) * 1000:.1f} ms per compile (best of {repeat} x 10)")


def main() -> None:
    import run_all

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(run_all.ALL), help="benchmark-set names, comma-separated "
                        "('' for none)")
    parser.add_argument("--sizes", default="100,1000", help="synthetic graph sizes in nodes (10000 takes minutes)")
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per model; the best is kept")
    parser.add_argument("--output", default=str(HERE / "README.md"), help="README to update, or - for stdout")
    parser.add_argument("--small", action="store_true", help="only the in-process compiles of small models "
                        "(what a test suite's compiles pay), printed")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--hit", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.small:
        measure_small(max(args.repeat, 3))
        return
    if args.one:
        print(json.dumps(measure_once(args.one)))
        return
    if args.hit:
        print(json.dumps(measure_hit_in_process(args.hit, args.repeat)))
        return

    from dlc.driver import default_pipeline
    from dlc.targets import CompileOptions, get_target

    for phase, passes in default_pipeline(get_target("cpu"), CompileOptions()):
        for pass_ in passes:
            PHASE_OF.setdefault(pass_.name, phase)
    PHASE_OF.pop("dce", None)  # in two phases
    results, synthetic_results = {}, {}
    with tempfile.TemporaryDirectory(prefix="dlc-compile-bench-") as scratch:
        for name in [n for n in args.models.split(",") if n]:
            path, nodes = build_model(name, Path(scratch))
            results[name] = {**measure(path, args.repeat), "nodes": nodes}
            print(name, json.dumps(results[name])[:200], file=sys.stderr)
        for size in [int(s) for s in args.sizes.split(",") if s]:
            path, nodes = build_model(f"synthetic{size}", Path(scratch))
            synthetic_results[f"synthetic{size}"] = {**measure(path, args.repeat, command=False), "nodes": nodes}
            print(size, json.dumps(synthetic_results[f"synthetic{size}"])[:200], file=sys.stderr)
    command = "python benchmarks/compile.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        f"{date.today()}, {cpu_model()}, {os.cpu_count()} cores (shared; load average "
        f"{os.getloadavg()[0]:.1f} at the end), DLC_CACHE=0, best of "
        f"{args.repeat} fresh process(es), seconds. `{command.strip()}`", "",
        *model_table(results), "", *per_node_table(synthetic_results)])
    if args.output == "-":
        print(text)
    else:
        write_readme(text, Path(args.output))
        print(text)


if __name__ == "__main__":
    main()
