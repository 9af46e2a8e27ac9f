"""dlc's thread pool: native worker threads that run the items of a parallel region.

Generated code calls `dlc_pool_parallel(worker, data, items)`, which runs `worker(data, i)`
for every i in [0, items) and returns when all are done. The calling thread takes items too,
and an item goes to whichever thread claims it first, so a worker that the OS has descheduled
delays nothing: the caller and the other workers take its share and the caller never waits for
a thread that has not started. Optionally (`own_items`, below) item i is thread i's first, so
that part i of successive regions runs on one core, which reads back what it wrote.
(libgomp's static schedule and join barrier did wait: with a second busy process on a 2-core
machine, a 3x3 conv took 29 ms on 2 threads against 1.7 ms on one.) This is the scheme of
onnxruntime's pool (Eigen's, with its preferred workers per loop).

The pool is written in LLVM IR (dlc/codegen/thread_pool_ir.py: no C compiler is needed at
run time), compiled with the model and shipped in its artifact (`pool.o`, so that a run needs no LLVM), loaded once per
process and shared by every loaded model; it grows to the largest thread count asked for.

Protocol. A caller takes a free slot of SLOTS job records (a compare-exchange of its `busy`
flag), so callers on different Python threads, or a region nested in an item, each publish a
job of their own and every worker serves them all: callers that ask for threads do not
serialise on one job (they did: a second caller found the single job taken and ran inline).
A slot's job is written while its `word` reads (generation, CLOSED), then `word` becomes
(generation + 1, 0) and the global `epoch` is bumped. A thread claims item i by a
compare-exchange of (g, i) -> (g, i + 1). With item affinity on (`own_items`), item i of a job
of at most that many items is thread i's (the caller is thread 0, worker w thread w): `word`'s
low half is then a mask of the items claimed, the job opens with item 0 claimed for its
caller, a thread claims its own item first by a compare-exchange of (g, mask) ->
(g, mask | 1 << i), then any item left (a late or descheduled thread's share goes to whoever is
done first), and a worker owning none of the job's items takes none.
Successive regions split a tensor alike (GEMM row parts, loop chunks), so each core reads back
what it wrote. Only the job in slot 0 owns its items (a lone caller always takes slot 0):
worker w owns item w of every owned job, so owned jobs of concurrent callers all waited on
workers 1..items-1 while the rest stood idle (4 callers x 4 threads served 0.59-0.65x as many
inferences); jobs in other slots go to whoever is free. On the 16-core Xeon, interleaved in one
process (benchmarks/pool_affinity.py; benchmarks/README.md), owned/free latency: MobileNetV2
0.93-0.99x, EfficientNet-B0 0.94-1.03x, ResNet-50 0.88-1.01x, ResNet-18 0.97-1.09x at 4-16
threads; concurrent callers 0.95-1.06x the throughput. On by default (OWNED_ITEMS).
Either way, success proves the description read belongs to generation g, since it cannot change without `word` changing
first. Finished items count in `done`; the caller returns when `done` reaches `items`, then
frees the slot. Idle workers spin on `epoch` for SPIN_NS, then sleep on a condition variable;
a caller wakes at most items - 1 sleepers (every sleeper for owned items: the OS picks whom a
signal wakes). With every slot taken, a caller runs its items inline.

A region asks for as many items as its work pays for, not one per thread: each thread beyond
the caller costs it ~THREAD_SECONDS (claims on one cache line, late starts, wake-ups), so
generated code sizes loops by `threads_for_work` (dlc/codegen/parallel_loops.py) and GEMMs by
`thread_grid` (dialects/gemm_ukernel.py), and a loop worth one thread never calls the pool.
"""

from __future__ import annotations

import atexit
import os
import threading

from dlc.errors import ArtifactError

__all__ = ["ThreadPool", "pool"]

MAX_WORKERS = 255
# How long an idle worker spins before it sleeps: long enough to catch the next kernel of
# the same inference (usually microseconds away), short enough not to burn a core between runs.
SPIN_NS = 200_000
CLOSED = 0xFFFFFFFF  # item index of a job being written: never below `items`
# With item affinity on, a job of at most this many items gives item i to thread i (the caller
# is thread 0) while that thread is there to take it: successive regions split a tensor alike,
# so each part stays in the cache of the core that wrote it. Larger jobs go to whoever is first.
MASKED_ITEMS = 32  # the low half of a job's `word` holds their mask
# Item affinity at start: on for jobs of at most this many items in slot 0 (0: off; `own_items`).
OWNED_ITEMS = MASKED_ITEMS
# Jobs that can run at once (concurrent callers, nested regions); one more caller runs inline.
SLOTS = 64

class ThreadPool:
    """The process's native pool: addresses for generated code, and worker management."""

    def __init__(self, code):
        """`code`: the pool's object code (`pool.o`), or a loaded `model.so` that holds it."""
        import ctypes

        from dlc.runtime.artifact import POOL_SYMBOLS
        from dlc.runtime.loader import load_code

        # Kept for the life of the process: worker threads run this code.
        self._module = code if hasattr(code, "address") else load_code([code], exports=POOL_SYMBOLS)
        self._module.pinned = True  # a model.so holding the pool is never closed
        self.parallel = self._module.address("dlc_pool_parallel")
        self._start = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(self._module.address("dlc_pool_start"))
        self._stop = ctypes.CFUNCTYPE(ctypes.c_int32)(self._module.address("dlc_pool_stop"))
        self._forget = ctypes.CFUNCTYPE(None)(self._module.address("dlc_pool_forget"))
        self._lock = threading.Lock()
        atexit.register(self.stop)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def ensure_threads(self, threads: int) -> int:
        """Have at least threads - 1 workers (the caller is the other thread); return how many
        threads a region can use, at most `threads` (fewer if the OS refused to start some)."""
        with self._lock:
            return min(threads, int(self._start(max(0, min(threads - 1, MAX_WORKERS)))) + 1)

    def stop(self) -> bool:
        """Join every worker; False (nothing stopped) while a parallel region runs."""
        with self._lock:
            return bool(self._stop())

    def own_items(self, limit: int) -> int:
        """From now on, regions of at most `limit` items (0: none; the default is
        OWNED_ITEMS, at most MASKED_ITEMS) give item i to thread i; returns the old limit. For A/B
        measurements of that affinity (benchmarks/pool_affinity.py)."""
        import ctypes

        own = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(self._module.address("dlc_pool_own_items"))
        return int(own(max(0, min(limit, MASKED_ITEMS))))

    def _after_fork(self) -> None:
        self._forget()
        self._lock = threading.Lock()


_pool: ThreadPool | None = None
_pool_lock = threading.Lock()


def pool(object_code=None) -> ThreadPool:
    """The process's thread pool, made on first use from `object_code` (an artifact's
    `pool.o`, dlc.codegen.thread_pool_ir.pool_object() for a model compiled here, or the
    first loaded `model.so`, which holds one)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            if object_code is None:
                raise ArtifactError("this model needs the thread pool's object code (pool.o) and has none",
                                    "compile the model again with `dlc compile`, or run it with --threads 1")
            _pool = ThreadPool(object_code)
        return _pool
