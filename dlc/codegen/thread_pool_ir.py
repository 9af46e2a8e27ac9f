"""The thread pool's LLVM IR (dlc/runtime/thread_pool.py runs it; its docstring gives the
protocol), compiled once per process and shipped in each artifact as `pool.o`."""

from __future__ import annotations

import functools

from dlc.runtime.thread_pool import MAX_WORKERS, SPIN_NS

_POOL_IR = r"""
@job_word = internal global i64 0, align 64
@done = internal global i64 0, align 64
@job_fn = internal global ptr null, align 64
@job_data = internal global ptr null, align 8
@job_items = internal global i64 0, align 8
@busy = internal global i32 0, align 64
@sleepers = internal global i32 0, align 64
@shutdown = internal global i32 0, align 64
@workers = internal global i64 0, align 64
@initialised = internal global i32 0, align 4
@mutex = internal global [128 x i8] zeroinitializer, align 64
@cond = internal global [128 x i8] zeroinitializer, align 64
@tids = internal global [MAX_WORKERS x i64] zeroinitializer, align 8

declare i32 @pthread_create(ptr, ptr, ptr, ptr)
declare i32 @pthread_join(i64, ptr)
declare i32 @pthread_mutex_init(ptr, ptr)
declare i32 @pthread_cond_init(ptr, ptr)
declare i32 @pthread_mutex_lock(ptr)
declare i32 @pthread_mutex_unlock(ptr)
declare i32 @pthread_cond_wait(ptr, ptr)
declare i32 @pthread_cond_signal(ptr)
declare i32 @pthread_cond_broadcast(ptr)
declare i32 @sched_yield()
declare i32 @clock_gettime(i32, ptr)
PAUSE_DECLARATION

define internal void @relax() alwaysinline nounwind {
  PAUSE_CALL
  ret void
}

define internal i64 @now_ns() nounwind {
  %ts = alloca [2 x i64], align 8
  %rc = call i32 @clock_gettime(i32 1, ptr %ts)
  %s = load i64, ptr %ts, align 8
  %nsp = getelementptr inbounds i64, ptr %ts, i64 1
  %ns = load i64, ptr %nsp, align 8
  %s_ns = mul i64 %s, 1000000000
  %t = add i64 %s_ns, %ns
  ret i64 %t
}

; Claim and run items of the published job until none is left.
define internal void @run_items() {
entry:
  br label %claim
claim:
  %w = load atomic i64, ptr @job_word seq_cst, align 8
  %fn = load atomic ptr, ptr @job_fn seq_cst, align 8
  %data = load atomic ptr, ptr @job_data seq_cst, align 8
  %items = load atomic i64, ptr @job_items seq_cst, align 8
  %idx = and i64 %w, 4294967295
  %left = icmp ult i64 %idx, %items
  br i1 %left, label %try, label %out
try:
  %next = add i64 %w, 1
  %pair = cmpxchg ptr @job_word, i64 %w, i64 %next seq_cst seq_cst
  %won = extractvalue { i64, i1 } %pair, 1
  br i1 %won, label %run, label %claim
run:
  call void %fn(ptr %data, i64 %idx)
  %old = atomicrmw add ptr @done, i64 1 seq_cst
  br label %claim
out:
  ret void
}

define internal i64 @generation() alwaysinline nounwind {
  %w = load atomic i64, ptr @job_word seq_cst, align 8
  %g = lshr i64 %w, 32
  ret i64 %g
}

define internal i1 @stopping() alwaysinline nounwind {
  %s = load atomic i32, ptr @shutdown seq_cst, align 4
  %stop = icmp ne i32 %s, 0
  ret i1 %stop
}

; A worker: wait for a job of a newer generation than the last it saw, run its items, repeat.
define internal ptr @worker_main(ptr %unused) {
entry:
  %seen = alloca i64, align 8
  %since = alloca i64, align 8
  %spins = alloca i64, align 8
  %g0 = call i64 @generation()
  store i64 %g0, ptr %seen, align 8
  br label %idle
idle:
  %t0 = call i64 @now_ns()
  store i64 %t0, ptr %since, align 8
  store i64 0, ptr %spins, align 8
  br label %poll
poll:
  %stop = call i1 @stopping()
  br i1 %stop, label %exit, label %check
check:
  %g = call i64 @generation()
  %last = load i64, ptr %seen, align 8
  %new = icmp ne i64 %g, %last
  br i1 %new, label %work, label %spin
work:
  store i64 %g, ptr %seen, align 8
  call void @run_items()
  br label %idle
spin:
  call void @relax()
  %n = load i64, ptr %spins, align 8
  %n1 = add i64 %n, 1
  store i64 %n1, ptr %spins, align 8
  %low = and i64 %n1, 255
  %clock = icmp eq i64 %low, 0
  br i1 %clock, label %timed, label %poll
timed:
  %t = call i64 @now_ns()
  %start = load i64, ptr %since, align 8
  %spent = sub i64 %t, %start
  %long = icmp sgt i64 %spent, SPIN_NS
  br i1 %long, label %sleep, label %poll
sleep:
  %l = call i32 @pthread_mutex_lock(ptr @mutex)
  %s0 = atomicrmw add ptr @sleepers, i32 1 seq_cst
  br label %recheck
recheck:
  %gs = call i64 @generation()
  %seen_s = load i64, ptr %seen, align 8
  %same = icmp eq i64 %gs, %seen_s
  %stop_s = call i1 @stopping()
  %go_on = xor i1 %stop_s, true
  %wait = and i1 %same, %go_on
  br i1 %wait, label %block, label %woken
block:
  %cw = call i32 @pthread_cond_wait(ptr @cond, ptr @mutex)
  br label %recheck
woken:
  %s1 = atomicrmw sub ptr @sleepers, i32 1 seq_cst
  %u = call i32 @pthread_mutex_unlock(ptr @mutex)
  br label %poll
exit:
  ret ptr null
}

define internal void @run_serially(ptr %fn, ptr %data, i64 %items) {
entry:
  %any = icmp ugt i64 %items, 0
  br i1 %any, label %loop, label %out
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  call void %fn(ptr %data, i64 %i)
  %i1 = add i64 %i, 1
  %more = icmp ult i64 %i1, %items
  br i1 %more, label %loop, label %out
out:
  ret void
}

; Run fn(data, i) for i in [0, items) on the pool and this thread; return when all are done.
define void @dlc_pool_parallel(ptr %fn, ptr %data, i64 %items) {
entry:
  %few = icmp ule i64 %items, 1
  %big = icmp uge i64 %items, 4294967295
  %nw = load atomic i64, ptr @workers seq_cst, align 8
  %none = icmp eq i64 %nw, 0
  %a = or i1 %few, %big
  %inline = or i1 %a, %none
  br i1 %inline, label %serial, label %claim_pool
claim_pool:
  %pair = cmpxchg ptr @busy, i32 0, i32 1 seq_cst seq_cst
  %mine = extractvalue { i32, i1 } %pair, 1
  br i1 %mine, label %publish, label %serial
serial:
  call void @run_serially(ptr %fn, ptr %data, i64 %items)
  ret void
publish:
  %g = call i64 @generation()
  %high = shl i64 %g, 32
  %closed = or i64 %high, 4294967295
  store atomic i64 %closed, ptr @job_word seq_cst, align 8
  store atomic i64 0, ptr @done seq_cst, align 8
  store atomic ptr %fn, ptr @job_fn seq_cst, align 8
  store atomic ptr %data, ptr @job_data seq_cst, align 8
  store atomic i64 %items, ptr @job_items seq_cst, align 8
  %g1 = add i64 %g, 1
  %open = shl i64 %g1, 32
  store atomic i64 %open, ptr @job_word seq_cst, align 8
  %asleep = load atomic i32, ptr @sleepers seq_cst, align 4
  %anyone = icmp sgt i32 %asleep, 0
  br i1 %anyone, label %wake, label %share
wake:
  %l = call i32 @pthread_mutex_lock(ptr @mutex)
  %helpers = sub i64 %items, 1
  %asleep64 = sext i32 %asleep to i64
  %fewer = icmp ult i64 %helpers, %asleep64
  %count = select i1 %fewer, i64 %helpers, i64 %asleep64
  br label %signal
signal:
  %k = phi i64 [ 0, %wake ], [ %k1, %signal ]
  %sg = call i32 @pthread_cond_signal(ptr @cond)
  %k1 = add i64 %k, 1
  %again = icmp ult i64 %k1, %count
  br i1 %again, label %signal, label %woke
woke:
  %u = call i32 @pthread_mutex_unlock(ptr @mutex)
  br label %share
share:
  call void @run_items()
  br label %wait
wait:
  %spin = phi i64 [ 0, %share ], [ %spin1, %relax ], [ 0, %yield ]
  %d = load atomic i64, ptr @done seq_cst, align 8
  %finished = icmp uge i64 %d, %items
  br i1 %finished, label %out, label %relax
relax:
  call void @relax()
  %spin1 = add i64 %spin, 1
  %patient = icmp ult i64 %spin1, 4096
  br i1 %patient, label %wait, label %yield
yield:
  ; an item's thread was descheduled mid-item: give it the core instead of spinning
  %y = call i32 @sched_yield()
  br label %wait
out:
  store atomic i32 0, ptr @busy seq_cst, align 4
  ret void
}

; Start workers until there are `wanted` (at most MAX_WORKERS); return how many run.
define i64 @dlc_pool_start(i64 %wanted) {
entry:
  %init = load atomic i32, ptr @initialised seq_cst, align 4
  %fresh = icmp eq i32 %init, 0
  br i1 %fresh, label %setup, label %grow
setup:
  %m = call i32 @pthread_mutex_init(ptr @mutex, ptr null)
  %c = call i32 @pthread_cond_init(ptr @cond, ptr null)
  store atomic i32 1, ptr @initialised seq_cst, align 4
  br label %grow
grow:
  %most = icmp ult i64 %wanted, MAX_WORKERS
  %target = select i1 %most, i64 %wanted, i64 MAX_WORKERS
  br label %loop
loop:
  %n = load atomic i64, ptr @workers seq_cst, align 8
  %short = icmp ult i64 %n, %target
  br i1 %short, label %create, label %out
create:
  %slot = getelementptr inbounds [MAX_WORKERS x i64], ptr @tids, i64 0, i64 %n
  %rc = call i32 @pthread_create(ptr %slot, ptr null, ptr @worker_main, ptr null)
  %ok = icmp eq i32 %rc, 0
  br i1 %ok, label %count, label %out
count:
  %n1 = add i64 %n, 1
  store atomic i64 %n1, ptr @workers seq_cst, align 8
  br label %loop
out:
  %r = load atomic i64, ptr @workers seq_cst, align 8
  ret i64 %r
}

; Stop and join every worker (at exit: their code must not be unmapped under them).
; Returns 0 without stopping when a job is running.
define i32 @dlc_pool_stop() {
entry:
  %pair = cmpxchg ptr @busy, i32 0, i32 1 seq_cst seq_cst
  %mine = extractvalue { i32, i1 } %pair, 1
  br i1 %mine, label %stop, label %refuse
refuse:
  ret i32 0
stop:
  store atomic i32 1, ptr @shutdown seq_cst, align 4
  %init = load atomic i32, ptr @initialised seq_cst, align 4
  %ready = icmp ne i32 %init, 0
  br i1 %ready, label %broadcast, label %join_start
broadcast:
  %l = call i32 @pthread_mutex_lock(ptr @mutex)
  %b = call i32 @pthread_cond_broadcast(ptr @cond)
  %u = call i32 @pthread_mutex_unlock(ptr @mutex)
  br label %join_start
join_start:
  %n = load atomic i64, ptr @workers seq_cst, align 8
  br label %join
join:
  %i = phi i64 [ 0, %join_start ], [ %i1, %joined ]
  %more = icmp ult i64 %i, %n
  br i1 %more, label %join_one, label %done_joining
join_one:
  %slot = getelementptr inbounds [MAX_WORKERS x i64], ptr @tids, i64 0, i64 %i
  %tid = load i64, ptr %slot, align 8
  %rc = call i32 @pthread_join(i64 %tid, ptr null)
  br label %joined
joined:
  %i1 = add i64 %i, 1
  br label %join
done_joining:
  store atomic i64 0, ptr @workers seq_cst, align 8
  store atomic i32 0, ptr @shutdown seq_cst, align 4
  store atomic i32 0, ptr @busy seq_cst, align 4
  ret i32 1
}

; In a forked child: the workers did not survive the fork; forget them (and any lock state).
define void @dlc_pool_forget() {
  store atomic i64 0, ptr @workers seq_cst, align 8
  store atomic i32 0, ptr @busy seq_cst, align 4
  store atomic i32 0, ptr @sleepers seq_cst, align 4
  store atomic i32 0, ptr @shutdown seq_cst, align 4
  store atomic i32 0, ptr @initialised seq_cst, align 4
  ret void
}
"""


def _pool_ir(arch: str) -> str:
    """The pool's LLVM IR for `arch`, with the spin-wait hint of its ISA."""
    if arch.startswith(("x86_64", "i386", "i686")):
        declaration, call = "declare void @llvm.x86.sse2.pause()", "call void @llvm.x86.sse2.pause()"
    elif arch.startswith(("aarch64", "arm64")):
        declaration, call = "declare void @llvm.aarch64.hint(i32)", "call void @llvm.aarch64.hint(i32 1)"
    else:
        declaration, call = "", ""
    return (_POOL_IR.replace("PAUSE_DECLARATION", declaration).replace("PAUSE_CALL", call)
            .replace("MAX_WORKERS", str(MAX_WORKERS)).replace("SPIN_NS", str(SPIN_NS)))


@functools.cache
def pool_object() -> bytes:
    """The pool's object code for this machine (compiled by LLVM: once per process)."""
    import llvmlite.binding as llvm

    from dlc.codegen.native import compile_object

    return compile_object(_pool_ir(llvm.get_process_triple().split("-")[0]), opt_level=2)
