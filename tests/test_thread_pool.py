"""dlc's native thread pool (dlc/runtime/thread_pool.py): every item of a region runs exactly once,
whoever claims it; concurrent and nested callers each get a job slot the workers serve; it
survives fork and process exit."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest

from dlc.codegen.thread_pool_ir import pool_object
from dlc.runtime.thread_pool import MASKED_ITEMS, SPIN_NS, pool

WORKER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)
PARALLEL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _parallel():
    return PARALLEL(pool(pool_object()).parallel)


def _recording_worker(log: list):
    lock = threading.Lock()

    @WORKER
    def worker(data, item):
        with lock:
            log.append((item, threading.get_native_id()))

    return worker


@pytest.mark.parametrize("items", [0, 1, 2, 3, 4, 7, 16, 100])
def test_every_item_runs_exactly_once(items):
    assert pool(pool_object()).ensure_threads(4) == 4
    log: list = []
    worker = _recording_worker(log)
    for _ in range(5):
        log.clear()
        _parallel()(ctypes.cast(worker, ctypes.c_void_p), None, items)
        assert Counter(item for item, _ in log) == Counter(range(items))


@pytest.mark.parametrize("items", [2, 7, 100])
def test_every_item_runs_exactly_once_when_threads_own_items(items):
    thread_pool = pool(pool_object())
    thread_pool.ensure_threads(4)
    log: list = []
    worker = _recording_worker(log)
    old = thread_pool.own_items(MASKED_ITEMS)
    try:
        for _ in range(5):
            log.clear()
            _parallel()(ctypes.cast(worker, ctypes.c_void_p), None, items)
            assert Counter(item for item, _ in log) == Counter(range(items))
    finally:
        thread_pool.own_items(old)


def test_item_i_runs_on_thread_i_region_after_region():
    """Item 1 of a 2-item region is worker 1's: while the caller is held in item 0, no other
    worker (2, 3: none of the region's items is theirs) takes it, so every region runs it on the
    same thread. (Items went to whichever thread came first: successive kernels then read their
    parts of a tensor from other cores' caches.)"""
    thread_pool = pool(pool_object())
    thread_pool.ensure_threads(4)
    old = thread_pool.own_items(MASKED_ITEMS)
    ran: dict = {}

    @WORKER
    def worker(data, item):
        if item == 0:  # hold the caller here until item 1 has run elsewhere (it cannot steal it)
            deadline = time.monotonic() + 10
            while 1 not in ran and time.monotonic() < deadline:
                time.sleep(0.0005)
        ran[item] = threading.get_native_id()

    runners = []
    try:
        for _ in range(12):
            ran.clear()
            _parallel()(ctypes.cast(worker, ctypes.c_void_p), None, 2)
            assert set(ran) == {0, 1}
            runners.append(ran[1])
    finally:
        thread_pool.own_items(old)
    assert ran[0] == threading.get_native_id()
    assert len(set(runners)) == 1 and runners[0] != ran[0]


def test_a_second_job_is_served_by_the_workers_that_own_nothing():
    """Item affinity holds for the first job slot only: a job published while it is taken (a
    concurrent caller's, or here a region nested in an item) goes to whoever is free. Owned
    too, its item 1 would be worker 1's alone (busy in the first job), workers 2 and 3 would
    take nothing, and its caller would run both items in turn (4 callers x 4 threads served
    0.59-0.65x as many inferences with all jobs owned). Each nested item waits until both
    have started, so only two threads at once get through without the wait running out."""
    thread_pool = pool(pool_object())
    thread_pool.ensure_threads(4)
    old = thread_pool.own_items(MASKED_ITEMS)
    nested_done = threading.Event()
    lock = threading.Lock()
    started: set = set()
    ran: dict = {}

    @WORKER
    def nested(data, item):
        with lock:
            started.add(item)
        deadline = time.monotonic() + 10
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.0005)
        ran[item] = (threading.get_native_id(), len(started) == 2)

    @WORKER
    def outer(data, item):
        if item == 0:
            _parallel()(ctypes.cast(nested, ctypes.c_void_p), None, 2)
            nested_done.set()
        else:  # worker 1 (or a late worker's thief) stays here until the nested job is over
            nested_done.wait(30)

    try:
        _parallel()(ctypes.cast(outer, ctypes.c_void_p), None, 2)
    finally:
        thread_pool.own_items(old)
    (first, first_overlapped), (second, second_overlapped) = ran[0], ran[1]
    assert first_overlapped and second_overlapped, "the nested items ran one after the other"
    assert first != second


def test_sleeping_workers_are_woken_and_share_the_items():
    pool(pool_object()).ensure_threads(3)
    log: list = []
    slow_lock = threading.Lock()

    @WORKER
    def slow(data, item):  # long enough that one thread cannot take every item first
        time.sleep(0.02)
        with slow_lock:
            log.append(threading.get_native_id())

    time.sleep(5 * SPIN_NS * 1e-9)  # past the spin: the workers are asleep
    _parallel()(ctypes.cast(slow, ctypes.c_void_p), None, 3)
    assert len(log) == 3 and len(set(log)) >= 2


def test_a_region_inside_an_item_runs_every_item_once():
    pool(pool_object()).ensure_threads(2)
    inner_log: list = []
    inner = _recording_worker(inner_log)
    outer_items = []

    @WORKER
    def outer(data, item):
        outer_items.append(item)
        _parallel()(ctypes.cast(inner, ctypes.c_void_p), None, 3)

    _parallel()(ctypes.cast(outer, ctypes.c_void_p), None, 2)
    assert sorted(outer_items) == [0, 1]
    assert Counter(item for item, _ in inner_log) == Counter({0: 2, 1: 2, 2: 2})


def test_concurrent_callers_share_the_workers_instead_of_running_inline():
    """Callers that each ask for threads publish jobs side by side: every caller's items run on
    more than its own thread (with one job at a time, all but one caller ran every item inline)."""
    pool(pool_object()).ensure_threads(8)
    callers = 3
    logs: list[list] = [[] for _ in range(callers)]
    lock = threading.Lock()
    start = threading.Barrier(callers)

    def make_worker(log):
        @WORKER
        def slow(data, item):  # long enough that no thread can take every item of a job first
            time.sleep(0.05)
            with lock:
                log.append(threading.get_native_id())
        return slow

    workers = [make_worker(log) for log in logs]
    callers_ids = [0] * callers

    def call(index):
        callers_ids[index] = threading.get_native_id()
        start.wait()
        _parallel()(ctypes.cast(workers[index], ctypes.c_void_p), None, 3)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index, log in enumerate(logs):
        assert len(log) == 3
        assert set(log) - {callers_ids[index]}, f"caller {index} ran all its items itself"


def _conv_model():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).uniform(-1, 1, (64, 32, 3, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 40, 40])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))


def test_python_threads_running_one_model_at_once_get_right_answers():
    """Concurrent runs of one model: each gets its own arena and its own job slot in the pool."""
    import dlc

    model = _conv_model()
    compiled = dlc.compile(model, threads=2)
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 32, 40, 40), dtype=np.float32)} for i in range(4)]
    expected = [compiled.run(f)["y"] for f in feeds]
    failures = []

    def run(i):
        for _ in range(20):
            if not np.array_equal(compiled.run(feeds[i])["y"], expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


_CHILD = """
import os, sys, numpy as np
sys.path.insert(0, {tests!r})
import dlc
from test_thread_pool import _conv_model
model = dlc.compile(_conv_model(), threads=2)
x = {{"x": np.ones((1, 32, 40, 40), np.float32)}}
before = model.run(x)["y"]
pid = os.fork()
if pid == 0:  # the child: the pool's workers did not survive the fork
    os._exit(0 if np.array_equal(model.run(x)["y"], before) else 3)
_, status = os.waitpid(pid, 0)
assert os.WEXITSTATUS(status) == 0, status
assert np.array_equal(model.run(x)["y"], before)
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_fork_and_exit_with_a_running_pool():
    """A forked child runs threaded models (its workers were not forked); exit joins the workers
    instead of unmapping code they run (a crash at exit would show as a signal)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run([sys.executable, "-c", _CHILD.format(tests=tests)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_concurrent_runs_widen_the_pool_up_to_the_cores_and_no_further(monkeypatch):
    """Each concurrent run of a many-thread model needs num_threads - 1 workers, but the pool
    (which only grows, and whose idle workers spin) never gets more threads than cores once
    the callers are counted: 2 callers of 8 threads on 16 cores get 14 workers, 4 get 12."""
    from test_bounds import mlp

    import dlc.runtime.executable as executable_module
    import dlc.runtime.thread_pool as thread_pool
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    executable = compile_model(mlp(batch=2, sizes=(8, 16, 4)), options=CompileOptions(threads=8)).executable
    asked = []

    class RecordingPool:
        def ensure_threads(self, threads):
            asked.append(threads)
            return threads

    monkeypatch.setattr(thread_pool, "pool", lambda *code: RecordingPool())
    monkeypatch.setattr(executable_module, "default_threads", lambda: 16)
    for callers in (2, 4):
        executable._widen_pool(callers)
    monkeypatch.setattr(executable_module, "default_threads", lambda: 4)
    executable._widen_pool(5)  # more callers than cores: still the model's own threads
    assert asked == [15, 13, 8]
