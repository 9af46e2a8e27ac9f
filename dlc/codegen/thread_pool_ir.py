"""The thread pool's LLVM IR (dlc/runtime/thread_pool.py runs it; its docstring gives the
protocol), compiled once per process and shipped in each artifact as `pool.o`."""

from __future__ import annotations

import functools

from dlc.runtime.thread_pool import MAX_WORKERS, SLOTS, SPIN_NS

_POOL_IR = r"""
; One job record per slot (SLOTS of them): callers on different threads each publish into a
; free slot, and every worker serves every slot. `word` and `done` sit on cache lines of their
; own: claimers hammer the first, finishers the second.
%job = type { i64, i64, ptr, ptr, i32, [28 x i8], i64, [56 x i8] }
;             word items fn  data busy              done
@slots = internal global [SLOTS x %job] zeroinitializer, align 64
@epoch = internal global i64 0, align 64
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

; Claim and run items of the job in `slot` until none is left.
define internal void @run_items(i64 %slot) {
entry:
  %word_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 0
  %items_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 1
  %fn_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 2
  %data_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 3
  %done_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 6
  br label %claim
claim:
  %w = load atomic i64, ptr %word_p seq_cst, align 8
  %fn = load atomic ptr, ptr %fn_p seq_cst, align 8
  %data = load atomic ptr, ptr %data_p seq_cst, align 8
  %items = load atomic i64, ptr %items_p seq_cst, align 8
  %idx = and i64 %w, 4294967295
  %left = icmp ult i64 %idx, %items
  br i1 %left, label %try, label %out
try:
  %next = add i64 %w, 1
  %pair = cmpxchg ptr %word_p, i64 %w, i64 %next seq_cst seq_cst
  %won = extractvalue { i64, i1 } %pair, 1
  br i1 %won, label %run, label %claim
run:
  call void %fn(ptr %data, i64 %idx)
  %old = atomicrmw add ptr %done_p, i64 1 seq_cst
  br label %claim
out:
  ret void
}

; Serve every slot once.
define internal void @run_all_slots() {
entry:
  br label %loop
loop:
  %s = phi i64 [ 0, %entry ], [ %s1, %loop ]
  call void @run_items(i64 %s)
  %s1 = add i64 %s, 1
  %more = icmp ult i64 %s1, SLOTS
  br i1 %more, label %loop, label %out
out:
  ret void
}

define internal i64 @current_epoch() alwaysinline nounwind {
  %e = load atomic i64, ptr @epoch seq_cst, align 8
  ret i64 %e
}

define internal i1 @stopping() alwaysinline nounwind {
  %s = load atomic i32, ptr @shutdown seq_cst, align 4
  %stop = icmp ne i32 %s, 0
  ret i1 %stop
}

; A worker: wait for a job published after the last epoch it saw, serve every slot, repeat.
; The epoch is read before the slots are served, so a job published meanwhile is not missed.
define internal ptr @worker_main(ptr %unused) {
entry:
  %seen = alloca i64, align 8
  %since = alloca i64, align 8
  %spins = alloca i64, align 8
  %e0 = call i64 @current_epoch()
  store i64 %e0, ptr %seen, align 8
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
  %e = call i64 @current_epoch()
  %last = load i64, ptr %seen, align 8
  %new = icmp ne i64 %e, %last
  br i1 %new, label %work, label %spin
work:
  store i64 %e, ptr %seen, align 8
  call void @run_all_slots()
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
  %es = call i64 @current_epoch()
  %seen_s = load i64, ptr %seen, align 8
  %same = icmp eq i64 %es, %seen_s
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

; A free slot, now this caller's (SLOTS when every slot is taken).
define internal i64 @take_slot() {
entry:
  br label %loop
loop:
  %s = phi i64 [ 0, %entry ], [ %s1, %next ]
  %busy_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %s, i32 4
  %pair = cmpxchg ptr %busy_p, i32 0, i32 1 seq_cst seq_cst
  %mine = extractvalue { i32, i1 } %pair, 1
  br i1 %mine, label %out, label %next
next:
  %s1 = add i64 %s, 1
  %more = icmp ult i64 %s1, SLOTS
  br i1 %more, label %loop, label %out
out:
  %r = phi i64 [ %s, %loop ], [ SLOTS, %next ]
  ret i64 %r
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
  br i1 %inline, label %serial, label %claim_slot
claim_slot:
  %slot = call i64 @take_slot()
  %full = icmp eq i64 %slot, SLOTS
  br i1 %full, label %serial, label %publish
serial:
  call void @run_serially(ptr %fn, ptr %data, i64 %items)
  ret void
publish:
  %word_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 0
  %w = load atomic i64, ptr %word_p seq_cst, align 8
  %g = lshr i64 %w, 32
  %high = shl i64 %g, 32
  %closed = or i64 %high, 4294967295
  store atomic i64 %closed, ptr %word_p seq_cst, align 8
  %done_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 6
  store atomic i64 0, ptr %done_p seq_cst, align 8
  %fn_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 2
  store atomic ptr %fn, ptr %fn_p seq_cst, align 8
  %data_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 3
  store atomic ptr %data, ptr %data_p seq_cst, align 8
  %items_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 1
  store atomic i64 %items, ptr %items_p seq_cst, align 8
  %g1 = add i64 %g, 1
  %open = shl i64 %g1, 32
  store atomic i64 %open, ptr %word_p seq_cst, align 8
  %e = atomicrmw add ptr @epoch, i64 1 seq_cst
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
  call void @run_items(i64 %slot)
  br label %wait
wait:
  %spin = phi i64 [ 0, %share ], [ %spin1, %relax ], [ 0, %yield ]
  %d = load atomic i64, ptr %done_p seq_cst, align 8
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
  %busy_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 4
  store atomic i32 0, ptr %busy_p seq_cst, align 4
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
  %tid_p = getelementptr inbounds [MAX_WORKERS x i64], ptr @tids, i64 0, i64 %n
  %rc = call i32 @pthread_create(ptr %tid_p, ptr null, ptr @worker_main, ptr null)
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

; Give back slots [0, n).
define internal void @release_slots(i64 %n) {
entry:
  %any = icmp ugt i64 %n, 0
  br i1 %any, label %loop, label %out
loop:
  %s = phi i64 [ 0, %entry ], [ %s1, %loop ]
  %busy_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %s, i32 4
  store atomic i32 0, ptr %busy_p seq_cst, align 4
  %s1 = add i64 %s, 1
  %more = icmp ult i64 %s1, %n
  br i1 %more, label %loop, label %out
out:
  ret void
}

; Stop and join every worker (at exit: their code must not be unmapped under them).
; Returns 0 without stopping when a job is running (some slot is taken).
define i32 @dlc_pool_stop() {
entry:
  br label %take
take:
  %s = phi i64 [ 0, %entry ], [ %s1, %took ]
  %busy_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %s, i32 4
  %pair = cmpxchg ptr %busy_p, i32 0, i32 1 seq_cst seq_cst
  %mine = extractvalue { i32, i1 } %pair, 1
  br i1 %mine, label %took, label %refuse
took:
  %s1 = add i64 %s, 1
  %more = icmp ult i64 %s1, SLOTS
  br i1 %more, label %take, label %stop
refuse:
  call void @release_slots(i64 %s)
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
  %more_j = icmp ult i64 %i, %n
  br i1 %more_j, label %join_one, label %done_joining
join_one:
  %tid_p = getelementptr inbounds [MAX_WORKERS x i64], ptr @tids, i64 0, i64 %i
  %tid = load i64, ptr %tid_p, align 8
  %rc = call i32 @pthread_join(i64 %tid, ptr null)
  br label %joined
joined:
  %i1 = add i64 %i, 1
  br label %join
done_joining:
  store atomic i64 0, ptr @workers seq_cst, align 8
  store atomic i32 0, ptr @shutdown seq_cst, align 4
  call void @release_slots(i64 SLOTS)
  ret i32 1
}

; In a forked child: the workers did not survive the fork; forget them (and any lock state).
define void @dlc_pool_forget() {
  store atomic i64 0, ptr @workers seq_cst, align 8
  call void @release_slots(i64 SLOTS)
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
            .replace("MAX_WORKERS", str(MAX_WORKERS)).replace("SLOTS", str(SLOTS)).replace("SPIN_NS", str(SPIN_NS)))


@functools.cache
def pool_object(cpu: str | None = None, features: str | None = None, triple: str | None = None) -> bytes:
    """The pool's object code for `cpu` with `features` of `triple` (default: this machine;
    compiled by LLVM once per process and CPU)."""
    import llvmlite.binding as llvm

    from dlc.codegen.native import compile_object

    arch = (triple or llvm.get_process_triple()).split("-")[0]
    return compile_object(_pool_ir(arch), cpu, features, opt_level=2, triple=triple)
