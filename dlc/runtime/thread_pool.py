"""dlc's thread pool: native worker threads that run the items of a parallel region.

Generated code calls `dlc_pool_parallel(worker, data, items)`, which runs `worker(data, i)`
for every i in [0, items) and returns when all are done. The calling thread takes items too,
and an item goes to whichever thread claims it first (an atomic counter), so a worker that
the OS has descheduled delays nothing: the caller and the other workers take its share and
the caller never waits for a thread that has not started. (libgomp's static schedule and
join barrier did wait: with a second busy process on a 2-core machine, a 3x3 conv took 29 ms
on 2 threads against 1.7 ms on one.) This is the scheme of onnxruntime's and Eigen's pools.

The pool is written in LLVM IR (dlc/codegen/thread_pool_ir.py: no C compiler is needed at
run time), compiled with the model and shipped in its artifact (`pool.o`, so that a run needs no LLVM), loaded once per
process and shared by every loaded model; it grows to the largest thread count asked for.

Protocol. A caller takes a free slot of SLOTS job records (a compare-exchange of its `busy`
flag), so callers on different Python threads, or a region nested in an item, each publish a
job of their own and every worker serves them all: callers that ask for threads do not
serialise on one job (they did: a second caller found the single job taken and ran inline).
A slot's job is written while its `word` reads (generation, CLOSED), then `word` becomes
(generation + 1, 0) and the global `epoch` is bumped. A thread claims item i by a
compare-exchange of (g, i) -> (g, i + 1); success proves the description it read belongs to
generation g, since it cannot change without `word` changing first. Finished items count in
`done`; the caller returns when `done` reaches `items`, then frees the slot. Idle workers spin
on `epoch` for SPIN_NS, then sleep on a condition variable; a caller wakes at most items - 1
sleepers. With every slot taken, a caller runs its items inline.

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
