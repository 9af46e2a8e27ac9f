"""Regenerate tests/onnx_backend_unsupported.txt: run the ONNX backend suite, list what fails and why.

    python tests/update_backend_list.py [--workers 2] [--timeout 60] [-k REGEX]

Each CPU test of `test_onnx_backend.py` runs in a worker process (a hang or a
crash in native code costs that test only); each failure is classified by the
error dlc raised. Also writes per-operator node-test counts to OPERATORS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import re
import sys
import time
import unittest
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from test_onnx_backend import (
    SLOW_TESTS,
    UNSUPPORTED_LIST,
    cpu_test_cases,
    read_unsupported_list,
)

OPERATORS_MD = TESTS.parent / "OPERATORS.md"
SLOW_FACTOR = 5  # the big real models (SLOW_TESTS) get this many timeouts

# (regex on "ExceptionType: message", reason template); the first match wins.
# Reasons a user accepts name a gap; anything else dlc raised is a bug.
REASONS: list[tuple[str, str | Callable[..., str]]] = [
    (r"^(?:AssertionError|Timeout|Crash|CompileError|(?!\w*(?:Unsupported|Input|ModelLoad)Error)\w+Error): (.*)",
     "BUG: {0}"),
    (r"operator (\w+) has no CPU lowering yet", "operator {0} not lowered for cpu yet"),
    (r"operator 'ai\.onnx\.preview\.training\.(\w+)'", "training operator {0} not supported"),
    (r"operator 'ai\.onnx\.ml\.(\w+)'", "ai.onnx.ml operator {0} not supported"),
    (r"operator '([\w.]+)' \(opset \d+\) is not an ONNX operator dlc knows",
     "operator {0} not known to dlc"),
    (r"No Previous Version of (\w+) exists", "operator {0} is newer than dlc's canonical opset 21"),
    (r"(\w+) \d+->\d+ downgrade: (.*?)\.", "{0} with {1}: needs an opset newer than dlc's canonical 21"),
    (r"DataType \((\d+)\) of [Ii]nput.*operator '(\w+)' is (?:unallowed|not supported)",
     lambda dtype, op: f"{op} on {_dtype_name(dtype)} needs an opset newer than dlc's canonical 21"),
    (r"(\w+) with (.*) cannot be downgraded", "{0} with {1} needs an opset newer than dlc's canonical 21"),
    (r"(\w+) being converted from \d+ to \d+ has (\w+) input, which is not supported",
     "{0} with input {1} needs an opset newer than dlc's canonical 21"),
    (r"could not convert the model from opset (\d+).*failed: (.*)", "BUG: import from opset {0}: {1}"),
    (r"uses ONNX opset (\d+); dlc accepts", "opset {0} models not supported (dlc converts opset 7 and newer)"),
    (r"have symbolic dimensions.*\[[^\]]*\?", "BUG: importer rejects a zero-size input dimension as symbolic"),
    (r"is not a tensor \(sequences and maps", "sequence/optional/map types not supported"),
    (r"(?i)sequence|optional", "sequence/optional types not supported"),
    (r"element type (\w+) is not supported", "dtype {0} not supported"),
    (r"element type (\S+) has no numpy equivalent", "dtype {0} not supported"),
    (r"training_mode|training mode", "training mode not supported"),
    (r"could not infer a static shape", "output shape depends on input values (dlc compiles static shapes)"),
    (r"symbolic dimension|has no declared shape", "dynamic input shapes not supported"),
    (r"UnsupportedError: node '[^']*' \((\w+)\): (.*)", "{0}: {1}"),
    (r"UnsupportedError: node '[^']*' (.*)", "{0}"),
    (r"UnsupportedError: (.*)", "{0}"),
    # The importer refuses what the ONNX checker or strict shape inference rejects in the test's
    # own model (the suite has tests whose declared shapes onnx itself no longer infers).
    (r"ModelLoadError: (.*)", "{0}"),
]


# Tests whose expected output is wrong by more than the suite's tolerance, checked by hand: a
# wrong result there is not a dlc bug (the reason says what was checked). Only a wrong-result
# failure takes this reason; any other error is classified as usual.
INACCURATE_EXPECTATIONS = dict.fromkeys(
    ["test_dft_inverse_cpu", "test_dft_inverse_opset19_cpu"],
    "expected output has numpy's float32 FFT rounding: 1.9e-7 where the exact imaginary part is "
    "~1e-15, past the test's atol 1e-7 (dlc sums in float64; onnxruntime 1.32 is off by 7e-6)")


def reason_for(name: str, error: str) -> str:
    if name in INACCURATE_EXPECTATIONS and error.startswith("AssertionError: wrong result"):
        return INACCURATE_EXPECTATIONS[name]
    return classify(error)


def classify(error: str) -> str:
    """A one-line reason for a failed test, from its error ("Type: first message line")."""
    for pattern, template in REASONS:
        match = re.search(pattern, error)
        if match:
            groups = match.groups()
            reason = template(*groups) if callable(template) else template.format(*groups)
            return reason[:200]
    return "BUG: " + error


def _dtype_name(number: str) -> str:
    from onnx import TensorProto

    return TensorProto.DataType.Name(int(number))


def _worker(wid: int, tasks: mp.Queue, results: mp.Queue) -> None:
    warnings.simplefilter("ignore")
    methods = {name: case for case in cpu_test_cases({}).values() for name in vars(case)
               if name.startswith("test_")}
    results.put(("ready", wid, None, None))
    while (name := tasks.get()) is not None:
        results.put(("start", wid, name, None))
        start = time.monotonic()
        try:
            getattr(methods[name](name), name)()
            error = None
        except unittest.SkipTest as skip:
            error = f"Skipped: {skip}"
        except Exception as failure:  # noqa: BLE001 -- any error is an outcome to classify
            error = describe(failure)
        results.put(("done", wid, name, (error, time.monotonic() - start)))


def describe(error: BaseException) -> str:
    """`Type: first line of the message`; for wrong numbers, numpy's mismatch summary."""
    lines = [line.strip() for line in str(error).strip().splitlines()] or ["(no message)"]
    if isinstance(error, AssertionError):
        detail = [line for line in lines if line.startswith(("Mismatched", "Max abs", "Output", "(shapes"))]
        return "AssertionError: wrong result: " + "; ".join(detail[:2] or lines[:1])
    return f"{type(error).__name__}: {lines[0]}"


def list_tests(pattern: str | None) -> list[str]:
    names = sorted(name for case in cpu_test_cases({}).values() for name in vars(case)
                   if name.startswith("test_"))
    return [n for n in names if pattern is None or re.search(pattern, n)]


class _Worker:
    """One worker process with its own task queue, so a hung test is known and killed alone."""

    def __init__(self, ctx, wid: int, results: mp.Queue):
        self.tasks = ctx.Queue()
        self.proc = ctx.Process(target=_worker, args=(wid, self.tasks, results), daemon=True)
        self.proc.start()
        self.ready = False  # tests go to a worker once it has loaded the suite
        self.test: str | None = None
        self.started: float | None = None  # when the test began (after the worker's start-up)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join()


def run_all(names: list[str], workers: int, timeout: float,
            durations: dict[str, float]) -> dict[str, str | None]:
    """Test name -> error line (None: passed), seconds into `durations`; hung or crashed
    workers are replaced."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    pending = list(reversed(names))
    pool = [_Worker(ctx, wid, results) for wid in range(workers)]
    outcomes: dict[str, str | None] = {}
    while len(outcomes) < len(names):
        for worker in pool:
            if worker.ready and worker.test is None and pending:
                worker.test = pending.pop()
                worker.tasks.put(worker.test)
        try:
            kind, wid, name, payload = results.get(timeout=0.5)
            if kind == "ready":
                pool[wid].ready = True
            elif kind == "start":
                pool[wid].started = time.monotonic()
            elif pool[wid].test == name:
                pool[wid].test = pool[wid].started = None
                error, seconds = payload
                durations[name] = seconds
                _record(outcomes, name, error, len(names))
        except queue.Empty:
            pass
        for wid, worker in enumerate(pool):
            error = _check(worker, timeout)
            if error is not None:
                durations[worker.test] = time.monotonic() - (worker.started or time.monotonic())
                _record(outcomes, worker.test, error, len(names))
                worker.stop()
                pool[wid] = _Worker(ctx, wid, results)
    for worker in pool:
        worker.tasks.put(None)
    return outcomes


def _check(worker: _Worker, timeout: float) -> str | None:
    """Why the worker's current test has no result coming, or None if it may still have one."""
    if not worker.ready and not worker.proc.is_alive():
        raise RuntimeError(f"a worker failed to load the test suite (exit code {worker.proc.exitcode})")
    if worker.test is None:
        return None
    if not worker.proc.is_alive():
        return f"Crash: the worker process died (exit code {worker.proc.exitcode})"
    limit = timeout * SLOW_FACTOR if worker.test in SLOW_TESTS else timeout
    if worker.started is not None and time.monotonic() - worker.started > limit:
        return f"Timeout: no result after {limit:.0f} s"
    return None


def _record(outcomes: dict, name: str, error: str | None, total: int) -> None:
    outcomes[name] = error
    if len(outcomes) % 100 == 0 or len(outcomes) == total:
        print(f"  {len(outcomes)}/{total} tests run", file=sys.stderr, flush=True)


# Issue 3 counts an operator as supported when one of its node tests passes and every one
# whose tensors are all of these element types passes (other dtypes may be refused).
COUNTED_DTYPES = frozenset({1, 6, 7, 9})  # FLOAT, INT32, INT64, BOOL


def node_tests() -> dict[str, str | None]:
    """Node test name (`_cpu`) -> the operator it tests, or None for `_expanded` (function body) tests."""
    return {name: op for name, (op, _) in _node_test_info().items()}


def counted_tests() -> set[str]:
    """Node tests whose every graph input and output is float32, int64, int32 or bool."""
    return {name for name, (_, counted) in _node_test_info().items() if counted}


def _node_test_info() -> dict[str, tuple[str | None, bool]]:
    from node_cases import use_cached_node_cases
    from onnx.backend.test.loader import load_model_tests

    use_cached_node_cases()

    def counted(model) -> bool:
        values = [*model.graph.input, *model.graph.output]
        return all(v.type.HasField("tensor_type") and v.type.tensor_type.elem_type in COUNTED_DTYPES
                   for v in values)

    return {f"{t.name}_cpu": (None if "_expanded" in t.name else t.model.graph.node[0].op_type,
                              counted(t.model))
            for t in load_model_tests(kind="node")}


def write_list(path: Path, reasons: dict[str, str]) -> None:
    """Entries grouped by reason (bugs first), names sorted within a group."""
    groups = defaultdict(list)
    for name, reason in reasons.items():
        groups[reason].append(name)
    order = sorted(groups, key=lambda r: (not r.startswith("BUG"), r))
    width = max((len(n) for n in reasons), default=0)
    lines = ["# ONNX backend tests dlc does not pass yet, with the reason; applied with BackendTest.xfail",
             "# by tests/test_onnx_backend.py. Generated by `python tests/update_backend_list.py`."]
    for reason in order:
        lines += [f"{name:<{width}}  # {reason}" for name in sorted(groups[reason])]
    path.write_text("\n".join(lines) + "\n")


def operator_table(outcomes: dict[str, str | None],
                   node: dict[str, str | None]) -> list[tuple[str, int, int, bool]]:
    """(operator, node tests passed, node tests, supported) for every operator tested.

    supported: at least one test passes and every float32/int64/int32/bool test passes.
    """
    counted = counted_tests()
    passed, total, counted_failures = Counter(), Counter(), Counter()
    for name, op in node.items():
        if op is not None and name in outcomes:
            total[op] += 1
            passed[op] += outcomes[name] is None
            counted_failures[op] += name in counted and outcomes[name] is not None
    return [(op, passed[op], total[op], passed[op] > 0 and counted_failures[op] == 0)
            for op in sorted(total)]


def write_operators_md(table, path: Path = OPERATORS_MD) -> None:
    full = sum(p == t for _, p, t, _ in table)
    supported = sum(s for *_, s in table)
    lines = ["# ONNX operators on the cpu target",
             "",
             ("Node tests of the official ONNX backend suite (`onnx.backend.test`, CPU variants, "
              "`_expanded` function-body tests excluded) that dlc passes, per operator. "
              f"**{supported} of {len(table)} operators are supported**: at least one of their "
              "tests passes and every one whose tensors are all float32, int64, int32 or bool "
              f"passes (other dtypes are refused with a clear error). {full} pass all their tests. "
              "Generated by `python tests/update_backend_list.py` (`--operators-only` rebuilds this "
              "page from the list without running the suite); why each failing test fails is in "
              "[tests/onnx_backend_unsupported.txt](tests/onnx_backend_unsupported.txt)."),
             "",
             "| operator | supported | passed | tests |",
             "|---|:---:|---:|---:|"]
    lines += [f"| {op} | {'yes' if s else ''} | {p} | {t} |" for op, p, t, s in table]
    path.write_text("\n".join(lines) + "\n")


def summarize(outcomes: dict[str, str | None], reasons: dict[str, str],
              node: dict[str, str | None]) -> None:
    ran = [n for n in outcomes if n in node]
    table = operator_table(outcomes, node)
    print(f"node tests passed: {sum(outcomes[n] is None for n in ran)}/{len(ran)}")
    print(f"all tests passed: {sum(e is None for e in outcomes.values())}/{len(outcomes)}")
    print(f"operators passing all their node tests: {sum(p == t for _, p, t, _ in table)}/{len(table)}")
    print(f"operators supported (all float32/int64/int32/bool tests pass): "
          f"{sum(s for *_, s in table)}/{len(table)}")
    print("top failure reasons:")
    for reason, count in Counter(_family(r) for r in reasons.values()).most_common(15):
        print(f"  {count:5d}  {reason}")


def _family(reason: str) -> str:
    """A reason with the operator named in it taken out, to rank causes."""
    if reason.startswith("BUG"):
        return "BUG"
    return re.sub(r"^operator \w+ ", "operator X ", reason)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test")
    parser.add_argument("-k", dest="pattern", help="run only tests matching this regex "
                        "(the list keeps its other entries)")
    parser.add_argument("--operators-only", action="store_true",
                        help="rebuild OPERATORS.md from the checked-in list without running the suite")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # the suite's generators warn about overflows they mean
    if args.operators_only:
        listed = read_unsupported_list()
        node = node_tests()
        outcomes = {name: listed.get(name) for name in node}
        write_operators_md(operator_table(outcomes, node))
        summarize(outcomes, listed, node)
        return 0

    names = list_tests(args.pattern)
    start = time.monotonic()
    durations: dict[str, float] = {}
    outcomes = run_all(names, args.workers, args.timeout, durations)
    print(f"ran {len(names)} tests in {time.monotonic() - start:.0f} s", file=sys.stderr)
    reasons = {n: r for n, r in read_unsupported_list().items() if n not in outcomes}
    reasons.update({name: reason_for(name, error) for name, error in outcomes.items() if error is not None})
    write_list(UNSUPPORTED_LIST, reasons)
    node = node_tests()
    if args.pattern is None:
        write_operators_md(operator_table(outcomes, node))
    summarize(outcomes, reasons, node)
    slowest = sorted(durations, key=durations.get, reverse=True)[:12]
    print("slowest tests (mark those over ~10 s in SLOW_TESTS of test_onnx_backend.py):")
    for name in slowest:
        print(f"  {durations[name]:6.1f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
