"""What a parallel region costs per thread: the figure behind THREAD_SECONDS (issue 15).

    python benchmarks/pool_cost.py                      # 1..all cores, regions of 0 and ~20 us per item
    python benchmarks/pool_cost.py --threads 1,2,4,8,16 --work-us 0,5,20 --gap-us 1000

Runs regions of t items on dlc's thread pool (dlc/runtime/thread_pool.py) from native code, so
Python's overhead and the GIL stay out: each item is a fixed chain of dependent multiply-adds
(`--work-us` of them, measured on one thread first), and a region's time is taken around the
pool's `dlc_pool_parallel` call alone. With idle workers spinning (`--gap-us 0`: regions back
to back, as the kernels of one inference) and asleep (a gap longer than the pool's SPIN_NS).
The overhead of t threads is the region's time less one item's; its slope over t is the
per-thread cost that parallel_loops.threads_for_work and thread_grid charge (THREAD_SECONDS,
dialects/gemm_ukernel.py: 1 us).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# `work(data, item)`: data[0] (i64) dependent multiply-adds, the result stored to data[1 + item];
# `bench(parallel, data, items, reps, gap_ns)`: ns spent in `reps` calls of parallel(work,
# data, items), with a sleep of gap_ns between calls (outside the timed part).
_BENCH_IR = r"""
declare i32 @clock_gettime(i32, ptr)
declare i32 @nanosleep(ptr, ptr)
declare double @llvm.fmuladd.f64(double, double, double)

define internal i64 @now() {
  %ts = alloca [2 x i64], align 8
  %r = call i32 @clock_gettime(i32 1, ptr %ts)
  %s = load i64, ptr %ts, align 8
  %p = getelementptr inbounds [2 x i64], ptr %ts, i64 0, i64 1
  %n = load i64, ptr %p, align 8
  %sn = mul i64 %s, 1000000000
  %t = add i64 %sn, %n
  ret i64 %t
}

define void @work(ptr %data, i64 %item) {
entry:
  %spin = load volatile i64, ptr %data, align 8
  %slot = add i64 %item, 1
  %sink = getelementptr inbounds double, ptr %data, i64 %slot
  ; the chain starts from memory, so the compiler cannot fold it (from 1.0 it did, to nothing)
  %x0 = load volatile double, ptr %sink, align 8
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %x = phi double [ %x0, %entry ], [ %x1, %loop ]
  %x1 = call double @llvm.fmuladd.f64(double %x, double 0.999999, double 1.0e-6)
  %i1 = add i64 %i, 1
  %more = icmp ult i64 %i1, %spin
  br i1 %more, label %loop, label %out
out:
  store volatile double %x1, ptr %sink, align 8
  ret void
}

define i64 @bench(ptr %parallel, ptr %data, i64 %items, i64 %reps, i64 %gap_ns) {
entry:
  %ts = alloca [2 x i64], align 8
  %secp = getelementptr inbounds [2 x i64], ptr %ts, i64 0, i64 0
  %nsp = getelementptr inbounds [2 x i64], ptr %ts, i64 0, i64 1
  %sec = udiv i64 %gap_ns, 1000000000
  %ns = urem i64 %gap_ns, 1000000000
  %nap = icmp ugt i64 %gap_ns, 0
  br label %loop
loop:
  %k = phi i64 [ 0, %entry ], [ %k1, %timed ]
  %total = phi i64 [ 0, %entry ], [ %total1, %timed ]
  br i1 %nap, label %sleep, label %run
sleep:
  store i64 %sec, ptr %secp, align 8
  store i64 %ns, ptr %nsp, align 8
  %z = call i32 @nanosleep(ptr %ts, ptr null)
  br label %run
run:
  %t0 = call i64 @now()
  call void %parallel(ptr @work, ptr %data, i64 %items)
  %t1 = call i64 @now()
  br label %timed
timed:
  %d = sub i64 %t1, %t0
  %total1 = add i64 %total, %d
  %k1 = add i64 %k, 1
  %more = icmp ult i64 %k1, %reps
  br i1 %more, label %loop, label %out
out:
  ret i64 %total1
}
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser.add_argument("--threads", default=",".join(str(t) for t in range(1, cores + 1)),
                        help="items (= threads) per region, comma-separated")
    parser.add_argument("--work-us", default="0,20", help="work per item in microseconds, comma-separated")
    parser.add_argument("--gap-us", default="0,1000",
                        help="pause between regions (0: workers spinning; > 200: asleep), comma-separated")
    parser.add_argument("--reps", type=int, default=2000, help="regions per measurement (a tenth with a gap)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from dlc.codegen.native import compile_object
    from dlc.codegen.thread_pool_ir import pool_object
    from dlc.runtime.mcjit import NativeModule
    from dlc.runtime.thread_pool import pool

    counts = [int(t) for t in args.threads.split(",") if t]
    works = [float(w) for w in args.work_us.split(",") if w]
    gaps = [float(g) for g in args.gap_us.split(",") if g]
    threads_pool = pool(pool_object())
    started = threads_pool.ensure_threads(max(counts))
    native = NativeModule(compile_object(_BENCH_IR))
    bench = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                             ctypes.c_int64)(native.address("bench"))
    data = np.zeros(1 + max(counts) + 8, np.float64)
    spins = data.view(np.int64)

    def region_us(items: int, spin: int, gap_ns: int) -> float:
        spins[0] = spin
        reps = max(args.reps // (10 if gap_ns else 1), 20)
        rounds = [bench(threads_pool.parallel, data.ctypes.data, items, reps, gap_ns) / reps / 1e3
                  for _ in range(5)]
        return float(np.median(rounds))

    # Calibrate the multiply-add chain on this thread: ~1 ns each, measured, not assumed.
    probe = 1_000_000
    per_spin_us = region_us(1, probe, 0) / probe
    print(f"{cores} cores, pool of {started} threads; one dependent multiply-add {per_spin_us * 1e3:.2f} ns")
    print("| work/item us | gap us | " + " | ".join(f"{t} thr" for t in counts) + " | per extra thread |")
    print("|---:|---:|" + "---:|" * (len(counts) + 1))
    for work in works:
        spin = max(1, round(work / per_spin_us))
        for gap in gaps:
            times = [region_us(t, spin, int(gap * 1e3)) for t in counts]
            overhead = [time - times[0] for time in times]
            slope = (np.polyfit(counts, overhead, 1)[0] if len(counts) > 1 else float("nan"))
            print(f"| {work:g} | {gap:g} | " + " | ".join(f"{time:.2f}" for time in times)
                  + f" | {slope:.2f} us |", flush=True)
    print("\nregion time in us (median of 5 rounds); 'per extra thread': slope of (time - 1-thread time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
