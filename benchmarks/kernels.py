"""Per kernel, dlc against onnxruntime inside one model: where the time goes, kernel by kernel.

    python benchmarks/kernels.py --models resnet50 --threads 4
    python benchmarks/kernels.py model.onnx --threads 1,16 --runs 20 --rounds 2 --top 15
    python benchmarks/kernels.py --models mobilenet_v3 --scaling 1,2
    python benchmarks/kernels.py --builds old.dlc,new.dlc --threads 4   # two --profile artifacts
    python benchmarks/kernels.py --models resnet50 --threads 1 --callers 16   # 16 callers at once

With `--scaling A,B`, dlc against itself: the kernels of --profile builds for A and B threads,
run in one process pinned to the first B cores, the builds alternating for 2 x --rounds blocks
of --runs runs (each kernel's best block); rows are sorted by what each kernel takes at B
threads beyond its A-thread time x A / B, the time that thread count leaves unscaled.
With `--builds OLD,NEW`, two `dlc compile --profile` artifacts of one model (a compiler change
A/B'd kernel by kernel) run the same way, pinned to the first --threads cores; a kernel of one is
paired with the kernel of the other that computes the same ONNX nodes (then, as for onnxruntime,
what is left op type by op type in the order it ran; the rest are listed alone), rows sorted by
how much longer NEW took.

Each (runtime, thread count, round) runs in its own process pinned to the first N cores, as
threads.py does. dlc runs a `--profile` build: each kernel's time from the timers inside the
native code (dlc/tools/profiling.py), median over the runs; onnxruntime runs its own profiler
(`SessionOptions.enable_profiling`), each node's median. Each kernel keeps its best round.

With `--callers C`, C Python threads run the model at once (one dlc model, one onnxruntime
session, as threads.py's `--concurrency CxT`), pinned to the first C x --threads cores, each
--runs runs: a kernel's time is then its mean over all callers' runs (dlc's counters add every
caller's time; onnxruntime's profiler records every run), what each kernel costs when the
callers share the caches and memory, and the total is a caller's mean run.

Matching: unnamed ONNX nodes get a name (op type and index) first, so both runtimes see the same
names. A dlc kernel is matched with the onnxruntime nodes named after the ONNX nodes it computes
(the manifest's `nodes`). onnxruntime renames the nodes its NCHWc layout rewrites, so what is left
on both sides is paired op type by op type (a kernel by its first node's), in the order it ran. Rows are sorted by how
much longer dlc took; a ratio above 1 is a kernel where dlc is slower.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONV_OPS = ("Conv", "FusedConv")


def _named(model_path: str, out_path: str) -> None:
    """The model with every unnamed node named `{op_type}_{index}`."""
    import onnx

    model = onnx.load(model_path)
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
    onnx.save(model, out_path)


def _child(runtime: str, model_path: str, threads: int, runs: int, artifact: str, out: str,
           callers: int = 1) -> None:
    """Profile one runtime in this (pinned) process; write [[name, nodes, seconds], ...] (kernels
    or nodes in the order they first ran) and the median run to `out`. With `callers` > 1, that
    many Python threads run at once and each figure is a mean over all their runs."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import onnx
    from threads import _cores

    from dlc.tools.oracle import input_specs, onnxruntime_session, random_inputs

    os.sched_setaffinity(0, _cores()[:threads * callers])
    feeds = random_inputs(input_specs(onnx.load(model_path)))
    rows = []
    if runtime == "dlc":
        import dlc
        from dlc.tools.profiling import profile_runs

        model = dlc.load(artifact)
        for _ in range(3):
            model.run(feeds)
        nodes = {kernel["name"]: kernel["nodes"] for kernel in model._executable.manifest.get("kernels", [])}
        if callers == 1:
            profiled = profile_runs(model._executable, lambda: model.run(feeds), runs)
            for name, seconds in profiled.kernels.items():
                rows.append([name, nodes.get(name, []), float(np.median(seconds))])
            total = float(np.median(profiled.latencies))
        else:
            model._executable.reset_profile()
            latencies = _concurrent_runs(lambda: model.run(feeds), callers, runs)
            spent = collections.defaultdict(float)
            for name, seconds in model._executable.profile():
                spent[name] += seconds / (callers * runs)
            rows = [[name, nodes.get(name, []), seconds] for name, seconds in spent.items()]
            total = float(np.mean(latencies))
    else:
        session = onnxruntime_session(model_path, threads=threads, profile_prefix=tempfile.mkdtemp() + "/ort")
        for _ in range(3):
            session.run(None, feeds)
        latencies = _concurrent_runs(lambda: session.run(None, feeds), callers, runs)
        events = json.load(open(session.end_profiling()))
        spent, ops, totals = collections.defaultdict(list), {}, []
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                name = event["name"][:-len("_kernel_time")]
                spent[name].append(event["dur"] * 1e-6)
                ops[name] = event["args"].get("op_name", "")
            elif event.get("cat") == "Session" and event["name"] == "model_run":
                totals.append(event["dur"] * 1e-6)
        last = runs * callers
        summary = np.median if callers == 1 else np.mean
        for name, seconds in spent.items():  # dicts keep the order the nodes first ran in
            rows.append([name, [ops[name]], float(summary(seconds[-last:]))])
        total = float(np.median(totals[-runs:])) if callers == 1 else float(np.mean(latencies))
    Path(out).write_text(json.dumps({"rows": rows, "total": total}))


def _concurrent_runs(run, callers: int, runs: int) -> list[float]:
    """Seconds of each of `runs` calls of `run` on each of `callers` Python threads started together."""
    import threading

    start_line = threading.Barrier(callers)
    latencies: list[float] = []

    def caller() -> None:
        start_line.wait()
        for _ in range(runs):
            start = time.perf_counter()
            run()
            latencies.append(time.perf_counter() - start)

    workers = [threading.Thread(target=caller) for _ in range(callers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies


def _profile(runtime: str, model_path: str, threads: int, runs: int, artifact: str, callers: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.json"
        done = subprocess.run([sys.executable, __file__, "--child", runtime, model_path, str(threads), str(runs),
                               artifact, str(out), str(callers)], capture_output=True, text=True,
                              env={**os.environ, "ORT_LOGGING_LEVEL": "3"})
        if done.returncode != 0:
            raise RuntimeError(f"{runtime} at {threads} threads failed:\n{done.stderr[-2000:]}")
        return json.loads(out.read_text())


def _best(rounds: list[dict]) -> dict:
    """Each kernel's best round (rows keep the first round's order), and the best total."""
    best = {}
    for result in rounds:
        for name, nodes, seconds in result["rows"]:
            best[name] = [name, nodes, min(seconds, best[name][2]) if name in best else seconds]
    return {"rows": list(best.values()), "total": min(result["total"] for result in rounds)}


def _interleaved(models: dict, feeds: dict, runs: int, rounds: int) -> tuple[dict, dict]:
    """Profile `models` (key -> loaded --profile artifact) in this process, in one arena
    buffer, alternating for 2 x `rounds` blocks of `runs` runs (the order reversed every other
    block): (key -> best median run seconds, key -> {kernel: best median seconds})."""
    from dlc.tools.profiling import profile_runs, share_arena

    keys = list(models)
    share_arena([model._executable for model in models.values()])
    best: dict = {key: {} for key in keys}
    runs_best = dict.fromkeys(keys, float("inf"))
    for block in range(2 * rounds):
        for key in keys if block % 2 == 0 else keys[::-1]:
            model = models[key]
            for _ in range(3):
                model.run(feeds)
            profiled = profile_runs(model._executable, lambda: model.run(feeds), runs)  # noqa: B023
            runs_best[key] = min(runs_best[key], float(np.median(profiled.latencies)))
            for name, seconds in profiled.kernels.items():
                best[key][name] = min(best[key].get(name, np.inf), float(np.median(seconds)))
    return runs_best, best


def scaling(model_path: str, counts: tuple[int, int], runs: int, rounds: int, top: int) -> list[str]:
    """`--scaling`: the kernels of `model_path` at counts[0] and counts[1] threads, interleaved in
    this process (pinned to the first counts[1] cores), most unscaled time first."""
    sys.path.insert(0, str(ROOT))
    import onnx
    from threads import _cores

    import dlc
    from dlc.tools.oracle import input_specs, random_inputs

    low, high = counts
    os.sched_setaffinity(0, _cores()[:high])
    feeds = random_inputs(input_specs(onnx.load(model_path)))
    models = {}
    with tempfile.TemporaryDirectory() as work:
        for threads in counts:
            artifact = str(Path(work) / f"t{threads}")
            subprocess.run([sys.executable, "-m", "dlc", "compile", model_path, "--profile", "--threads",
                            str(threads), "-o", artifact], check=True, capture_output=True, cwd=ROOT)
            models[threads] = dlc.load(artifact)
    runs_best, best = _interleaved(models, feeds, runs, rounds)
    nodes = {kernel["name"]: kernel["nodes"] for kernel in models[low]._executable.manifest.get("kernels", [])}
    rows = sorted(((best[high][name] - seconds * low / high, name, seconds, best[high][name])
                   for name, seconds in best[low].items()), reverse=True)
    lines = [f"{Path(model_path).stem}: run {runs_best[low] * 1e3:.3f} ms at {low} thread(s), "
             f"{runs_best[high] * 1e3:.3f} at {high}; kernels {sum(best[low].values()) * 1e3:.3f} against "
             f"{sum(best[high].values()) * 1e3:.3f} ms", "",
             f"| dlc kernel | ONNX nodes | {low} thr ms | {high} thr ms | speedup | unscaled ms |",
             "|---|---|---:|---:|---:|---:|"]
    for unscaled, name, slow, fast in rows[:top]:
        shown = ", ".join(nodes.get(name, [])[:3])
        lines.append(f"| {name} | {shown} | {slow * 1e3:.3f} | {fast * 1e3:.3f} | {slow / fast:.2f} | "
                     f"{unscaled * 1e3:.3f} |")
    return lines


def pair_by_nodes(old: dict, new: dict, old_nodes: dict, new_nodes: dict) -> list:
    """[old kernel or None, new kernel or None, ONNX nodes, old s, new s] per kernel: a kernel of
    one build with the kernel of the other that computes the same ONNX nodes (kernel -> seconds,
    in the order they ran; kernel -> node list), then the rest op type by op type; a kernel with
    no partner gets a row of its own, 0 s on the other side."""
    by_nodes = {tuple(new_nodes.get(name, [name])): name for name in new}
    rows, paired = [], set()
    for name, seconds in old.items():
        nodes = tuple(old_nodes.get(name, [name]))
        partner = by_nodes.get(nodes)
        if partner is not None and partner not in paired:
            paired.add(partner)
            rows.append([name, partner, list(nodes), seconds, new[partner]])
        else:
            rows.append([name, None, list(nodes), seconds, 0.0])
    rows += [[None, name, list(new_nodes.get(name, [name])), 0.0, seconds]
             for name, seconds in new.items() if name not in paired]
    # A graph rewrite may rename the nodes it rebuilds ("Relu_5.sunk"): what is left on both
    # sides is paired op type by op type, in the order it ran.
    alone_old = [row for row in rows if row[1] is None]
    alone_new = [row for row in rows if row[0] is None]
    for old_row, new_row in pair_op_by_op(alone_old, alone_new, lambda row: kernel_op(row[0]),
                                          lambda op, row: kernel_op(row[1]) == op):
        old_row[1], old_row[4] = new_row[1], new_row[4]
        rows.remove(new_row)
    return rows


def builds(directories: tuple[str, str], threads: int, runs: int, rounds: int, top: int) -> list[str]:
    """`--builds`: two --profile artifacts of one model, kernel by kernel, interleaved in this
    process pinned to the first `threads` cores; the kernels NEW loses most on first, then
    those it gains most on."""
    sys.path.insert(0, str(ROOT))
    from threads import _cores

    import dlc
    from dlc.tools.oracle import random_inputs

    os.sched_setaffinity(0, _cores()[:threads])
    models = {which: dlc.load(directory) for which, directory in zip(("old", "new"), directories)}
    for which, model in models.items():
        if not model._executable.profile_sites:
            raise SystemExit(f"{directories[which == 'new']}: not a --profile build "
                             "(dlc compile MODEL --profile -o DIR)")
    runs_best, best = _interleaved(models, random_inputs(models["old"].inputs), runs, rounds)
    nodes = {which: {kernel["name"]: kernel["nodes"] for kernel in model._executable.manifest.get("kernels", [])}
             for which, model in models.items()}
    rows = sorted(pair_by_nodes(best["old"], best["new"], nodes["old"], nodes["new"]),
                  key=lambda row: row[4] - row[3], reverse=True)
    shown_rows = rows if len(rows) <= 2 * top else rows[:top] + rows[-top:]
    lines = [f"{directories[0]} -> {directories[1]}, {threads} thread(s): run {runs_best['old'] * 1e3:.3f} -> "
             f"{runs_best['new'] * 1e3:.3f} ms; kernels {sum(best['old'].values()) * 1e3:.3f} -> "
             f"{sum(best['new'].values()) * 1e3:.3f} ms", "",
             "| old kernel | new kernel | ONNX nodes | old ms | new ms | new - old ms |",
             "|---|---|---|---:|---:|---:|"]
    for old_name, new_name, node_list, before, after in shown_rows:
        shown = ", ".join(node_list[:3]) + (f" +{len(node_list) - 3}" if len(node_list) > 3 else "")
        lines.append(f"| {old_name or '-'} | {new_name or '-'} | {shown} | {before * 1e3:.3f} | {after * 1e3:.3f} | "
                     f"{(after - before) * 1e3:+.3f} |")
    return lines


def kernel_op(name: str) -> str:
    """A kernel's op type: k<index>_<its first node's op type>[_fused]."""
    return name.split("_")[1] if "_" in name else name


def pair_op_by_op(waiting: list, others: list, op_of, same_op) -> list[tuple]:
    """(waiting item, other item) pairs, op type by op type in their order (`op_of(item)` of a
    waiting item; `same_op(op, other)` whether an other item is of that op type), for each op
    type where both lists hold as many."""
    pairs = []
    for op in dict.fromkeys(op_of(item) for item in waiting):
        mine = [item for item in waiting if op_of(item) == op]
        theirs = [item for item in others if same_op(op, item)]
        if len(mine) == len(theirs):
            pairs += zip(mine, theirs)
    return pairs


# What dlc's graph rewrites append to the name of a node they rebuild (sink-transposes' ".sunk",
# pointwise-convs-nhwc's ".nhwc").
REWRITE_SUFFIXES = (".sunk", ".nhwc", ".transpose", ".to_nhwc", ".to_nchw")


def onnx_name(name: str) -> str:
    """The ONNX node a dlc node name stands for: `name` without rewrite suffixes."""
    while name.endswith(REWRITE_SUFFIXES):
        name = name[:name.rindex(".")]
    return name


def match(dlc_rows: list, ort_rows: list) -> tuple[list, list]:
    """(rows, unmatched): [dlc kernel, its ONNX nodes, dlc s, onnxruntime s, onnxruntime's op types]
    per dlc kernel, and the onnxruntime nodes no kernel took. Names first, then what is left on
    both sides, op type by op type, in the order it ran."""
    by_name = {name: (ops[0] if ops else "", seconds) for name, ops, seconds in ort_rows}
    # onnxruntime keeps a node's name, names a node it rewrites after an output
    # ("Clip_2_out_nchwc"), or a fusion after the last node it took ("Mul_20/QuickGeluFusion/":
    # EfficientNet's Sigmoid + Mul, 3 ms of its nodes unmatched without this): its name's
    # prefixes of two or more words, before any "/", stand for it too
    original = {}
    for name in by_name:
        original.setdefault(name, name)
        base = name.split("/", 1)[0]
        original.setdefault(base, name)
        while base.count("_") > 1:
            base = base.rsplit("_", 1)[0]
            original.setdefault(base, name)
    taken, rows = set(), []
    for kernel, nodes, seconds in dlc_rows:
        mine = [original[n] for n in map(onnx_name, nodes) if n in original and original[n] not in taken]
        taken.update(mine)
        rows.append([kernel, nodes, seconds, sum(by_name[n][1] for n in mine), [by_name[n][0] for n in mine]])
    # the rest, op type by op type (a kernel's name is k<index>_<its first node's op type>[_fused]),
    # in the order they ran, where both sides left as many
    def same_op_type(op: str, ort_op: str) -> bool:
        return ort_op == op or (op == "Conv" and ort_op in CONV_OPS)

    def same_op(op: str, name: str) -> bool:
        return same_op_type(op, by_name[name][0])

    # a kernel waits for its own op type's node even where a node it absorbed matched by name
    # (SqueezeNet's conv kernels store into their Concat in place: the Concat kept its name,
    # the convs were renamed)
    def has_own_node(row: list) -> bool:
        return any(same_op_type(kernel_op(row[0]), op) for op in row[4])

    waiting = [row for row in rows if "_" in row[0] and not has_own_node(row)]
    left = [name for name in by_name if name not in taken]
    for row, name in pair_op_by_op(waiting, left, lambda row: kernel_op(row[0]), same_op):
        taken.add(name)
        row[3], row[4] = row[3] + by_name[name][1], [by_name[name][0], *row[4]]
    unmatched = [(name, op, seconds) for name, (op, seconds) in by_name.items() if name not in taken]
    return rows, unmatched


def table(model: str, threads: int | str, dlc_result: dict, ort_result: dict, top: int) -> list[str]:
    rows, unmatched = match(dlc_result["rows"], ort_result["rows"])
    dlc_sum, ort_sum = sum(r[2] for r in rows), sum(r[3] for r in rows)
    lines = [f"{model}, {threads} thread(s): run {dlc_result['total'] * 1e3:.3f} ms (dlc) against "
             f"{ort_result['total'] * 1e3:.3f} ms (onnxruntime); kernels {dlc_sum * 1e3:.3f} against "
             f"{ort_sum * 1e3:.3f} ms matched, {sum(u[2] for u in unmatched) * 1e3:.3f} ms of onnxruntime "
             f"nodes unmatched ({len(unmatched)})", "",
             "| dlc kernel | ONNX nodes | dlc ms | onnxruntime ms | onnxruntime ops | dlc/ort |",
             "|---|---|---:|---:|---|---:|"]
    for kernel, nodes, mine, theirs, ops in sorted(rows, key=lambda r: r[3] - r[2])[:top]:
        shown = ", ".join(nodes[:3]) + (f" +{len(nodes) - 3}" if len(nodes) > 3 else "")
        ratio = f"{mine / theirs:.2f}" if theirs else "-"
        lines.append(f"| {kernel} | {shown} | {mine * 1e3:.3f} | {theirs * 1e3:.3f} | {'+'.join(ops)} | {ratio} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="*", help=".onnx paths (added to --models)")
    parser.add_argument("--models", default="", help="benchmark-set names (run_all.py), comma-separated")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--runs", type=int, default=20, help="profiled runs per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (each kernel's best is kept)")
    parser.add_argument("--top", type=int, default=20, help="rows per table (the kernels dlc loses most on)")
    parser.add_argument("--scaling", default="", help="A,B: dlc at A threads against dlc at B, per kernel")
    parser.add_argument("--builds", default="", help="OLD,NEW: two --profile artifacts of one model, per kernel")
    parser.add_argument("--callers", type=int, default=1,
                        help="Python threads running the model at once (each kernel's mean over their runs)")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        runtime, model_path, threads, runs, artifact, out, callers = args.child
        _child(runtime, model_path, int(threads), int(runs), artifact, out, int(callers))
        return 0
    sys.path.insert(0, str(HERE))
    from threads import _cpu_description, _model_files

    counts = [int(t) for t in args.threads.split(",") if t]
    if args.builds:
        directories = tuple(d for d in args.builds.split(",") if d)
        if len(directories) != 2 or len(counts) != 1:
            parser.error("--builds takes two artifact directories, OLD,NEW, and one --threads count")
        print(f"{time.strftime('%Y-%m-%d')}, {_cpu_description()}; best of {2 * args.rounds} blocks of "
              f"{args.runs} runs\n")
        print("\n".join(builds(directories, counts[0], args.runs, args.rounds, args.top)) + "\n")
        return 0
    names = [n for n in args.models.split(",") if n] + list(args.model)
    if not names:
        parser.error("name a model: --models resnet50, or an .onnx path")
    with tempfile.TemporaryDirectory() as work:
        files = _model_files(names, Path(work))
        print(f"{time.strftime('%Y-%m-%d')}, {_cpu_description()}; best of {args.rounds} round(s) of "
              f"{args.runs} runs\n")
        if args.scaling:
            low, high = (int(t) for t in args.scaling.split(","))
            for path in files.values():
                print("\n".join(scaling(path, (low, high), args.runs, args.rounds, args.top)) + "\n")
            return 0
        for name, path in files.items():
            named = str(Path(work) / f"{name}.named.onnx")
            _named(path, named)
            for threads in counts:
                artifact = str(Path(work) / f"{name}_{threads}")
                subprocess.run([sys.executable, "-m", "dlc", "compile", named, "--profile", "--threads", str(threads),
                                "-o", artifact], check=True, capture_output=True, cwd=ROOT)
                results = {"dlc": [], "onnxruntime": []}
                for _ in range(args.rounds):  # the two runtimes alternate within each round
                    for runtime in results:
                        results[runtime].append(_profile(runtime, named, threads, args.runs, artifact,
                                                         args.callers))
                label = threads if args.callers == 1 else f"{args.callers} callers x {threads}"
                print("\n".join(table(name, label, _best(results["dlc"]), _best(results["onnxruntime"]),
                                      args.top)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
