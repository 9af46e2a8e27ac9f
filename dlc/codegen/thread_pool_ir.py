"""The thread pool's LLVM IR (dlc/runtime/thread_pool.py runs it; its docstring gives the
protocol), compiled once per process and shipped in each artifact as `pool.o`."""

from __future__ import annotations

import functools

from dlc.runtime.thread_pool import MASKED_ITEMS, MAX_WORKERS, OWNED_ITEMS, SLOTS, SPIN_NS

_POOL_IR = r"""
; One job record per slot (SLOTS of them): callers on different threads each publish into a
; free slot, and every worker serves every slot. `word` and `done` sit on cache lines of their
; own: claimers hammer the first, finishers the second.
%job = type { i64, i64, ptr, ptr, i32, i32, [24 x i8], i64, [56 x i8] }
;             word items fn  data busy owned           done
@slots = internal global [SLOTS x %job] zeroinitializer, align 64
@epoch = internal global i64 0, align 64
@sleepers = internal global i32 0, align 64
@shutdown = internal global i32 0, align 64
@workers = internal global i64 0, align 64
@initialised = internal global i32 0, align 4
; Jobs of at most this many items are owned (`run_items`): OWNED_ITEMS until dlc_pool_own_items.
@owned_items = internal global i64 OWNED_ITEMS, align 8
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
declare i64 @llvm.cttz.i64(i64, i1)
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

; Claim and run items of the job in `slot` until none is left; `self` is this thread's index
; (a caller's 0, worker w's w). An owned job (`own_items`: at most MASKED_ITEMS items) keeps a
; mask of the items claimed in `word`'s low half: a thread claims its own item (item `self`)
; first, then any left (stealing from a late thread). A worker without an item of its own
; (self >= items) takes none: the job's caller, which always serves its job to the end, and the
; other owners run them. So item i of successive regions runs on the same thread, and a kernel
; reads from its own core's cache the part of the tensor that the kernel before it wrote there.
; Other jobs count their next item in the low half: items go to whichever thread comes first.
define internal void @run_items(i64 %slot, i64 %self) {
entry:
  %word_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 0
  %items_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 1
  %fn_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 2
  %data_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 3
  %owned_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 5
  %done_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 7
  br label %claim
claim:
  %w = load atomic i64, ptr %word_p seq_cst, align 8
  %fn = load atomic ptr, ptr %fn_p seq_cst, align 8
  %data = load atomic ptr, ptr %data_p seq_cst, align 8
  %items = load atomic i64, ptr %items_p seq_cst, align 8
  %owned = load atomic i32, ptr %owned_p seq_cst, align 4
  %low = and i64 %w, 4294967295
  %few = icmp ne i32 %owned, 0
  br i1 %few, label %masked, label %counted
counted:
  %left = icmp ult i64 %low, %items
  br i1 %left, label %try_counted, label %out
try_counted:
  %next = add i64 %w, 1
  %pair = cmpxchg ptr %word_p, i64 %w, i64 %next seq_cst seq_cst
  %won = extractvalue { i64, i1 } %pair, 1
  br i1 %won, label %run, label %claim
masked:
  ; CLOSED (a job being written) reads as every item claimed. `items` is capped (a description
  ; read while the slot is rewritten, which the compare-exchange then rejects, may hold any
  ; value), so that no shift below goes past 63 bits.
  %under = icmp ult i64 %items, MASKED_ITEMS
  %capped = select i1 %under, i64 %items, i64 MASKED_ITEMS
  %unused_bits = sub i64 MASKED_ITEMS, %capped
  %all = lshr i64 4294967295, %unused_bits
  %unclaimed = xor i64 %low, -1
  %free = and i64 %unclaimed, %all
  %none_free = icmp eq i64 %free, 0
  %surplus = icmp uge i64 %self, %capped
  %idle = or i1 %none_free, %surplus
  br i1 %idle, label %out, label %pick
pick:
  %own_bit = shl i64 1, %self
  %own_free = and i64 %free, %own_bit
  %has_own = icmp ne i64 %own_free, 0
  %first_free = call i64 @llvm.cttz.i64(i64 %free, i1 true)
  %j = select i1 %has_own, i64 %self, i64 %first_free
  %bit = shl i64 1, %j
  %claimed = or i64 %w, %bit
  %pair_m = cmpxchg ptr %word_p, i64 %w, i64 %claimed seq_cst seq_cst
  %won_m = extractvalue { i64, i1 } %pair_m, 1
  br i1 %won_m, label %run, label %claim
run:
  %idx = phi i64 [ %low, %try_counted ], [ %j, %pick ]
  call void %fn(ptr %data, i64 %idx)
  %old = atomicrmw add ptr %done_p, i64 1 seq_cst
  br label %claim
out:
  ret void
}

; Serve every slot once.
define internal void @run_all_slots(i64 %self) {
entry:
  br label %loop
loop:
  %s = phi i64 [ 0, %entry ], [ %s1, %loop ]
  call void @run_items(i64 %s, i64 %self)
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
define internal ptr @worker_main(ptr %index) {
entry:
  %self = ptrtoint ptr %index to i64
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
  call void @run_all_slots(i64 %self)
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
  %done_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 7
  store atomic i64 0, ptr %done_p seq_cst, align 8
  %fn_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 2
  store atomic ptr %fn, ptr %fn_p seq_cst, align 8
  %data_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 3
  store atomic ptr %data, ptr %data_p seq_cst, align 8
  %items_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 1
  store atomic i64 %items, ptr %items_p seq_cst, align 8
  %limit = load atomic i64, ptr @owned_items monotonic, align 8
  %small = icmp ule i64 %items, %limit
  ; Only slot 0's job owns its items: worker w owns item w of every owned job, so jobs of
  ; concurrent callers (slots 1...) owned too would all wait on workers 1..items-1 while the
  ; rest stood idle (4 callers x 4 threads: 0.59-0.65x the throughput, 16-core Xeon). A lone
  ; caller always takes slot 0; concurrent and nested jobs go to whoever is free.
  %first_slot = icmp eq i64 %slot, 0
  %owned = and i1 %small, %first_slot
  %owned32 = zext i1 %owned to i32
  %owned_p = getelementptr inbounds [SLOTS x %job], ptr @slots, i64 0, i64 %slot, i32 5
  store atomic i32 %owned32, ptr %owned_p seq_cst, align 4
  %g1 = add i64 %g, 1
  %open = shl i64 %g1, 32
  ; An owned job opens with item 0 claimed, the caller's: a worker done with its own item
  ; would otherwise take it while the caller still wakes sleepers.
  %caller_bit = zext i1 %owned to i64
  %opened = or i64 %open, %caller_bit
  store atomic i64 %opened, ptr %word_p seq_cst, align 8
  %e = atomicrmw add ptr @epoch, i64 1 seq_cst
  %asleep = load atomic i32, ptr @sleepers seq_cst, align 4
  %anyone = icmp sgt i32 %asleep, 0
  br i1 %anyone, label %wake, label %share
wake:
  %l = call i32 @pthread_mutex_lock(ptr @mutex)
  %helpers = sub i64 %items, 1
  %asleep64 = sext i32 %asleep to i64
  %fewer = icmp ult i64 %helpers, %asleep64
  %some = select i1 %fewer, i64 %helpers, i64 %asleep64
  ; A job of owned items (`run_items`) wakes every sleeper: which of them a signal wakes is the
  ; OS's choice, and only the items' owners take any.
  %count = select i1 %owned, i64 %asleep64, i64 %some
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
  br i1 %owned, label %first_item, label %the_rest
first_item:
  call void %fn(ptr %data, i64 0)
  %first_done = atomicrmw add ptr %done_p, i64 1 seq_cst
  br label %the_rest
the_rest:
  call void @run_items(i64 %slot, i64 0)
  br label %wait
wait:
  %spin = phi i64 [ 0, %the_rest ], [ %spin1, %relax ], [ 0, %yield ]
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
  ; worker n + 1 (the caller is thread 0)
  %n1 = add i64 %n, 1
  %index = inttoptr i64 %n1 to ptr
  %rc = call i32 @pthread_create(ptr %tid_p, ptr null, ptr @worker_main, ptr %index)
  %ok = icmp eq i32 %rc, 0
  br i1 %ok, label %count, label %out
count:
  store atomic i64 %n1, ptr @workers seq_cst, align 8
  br label %loop
out:
  %r = load atomic i64, ptr @workers seq_cst, align 8
  ret i64 %r
}

; From now on, jobs of at most `limit` items (0: none; at most MASKED_ITEMS) own their items
; (`run_items`); returns the old limit. A job keeps the mode it was published with.
define i64 @dlc_pool_own_items(i64 %limit) {
  %most = icmp ult i64 %limit, MASKED_ITEMS
  %l = select i1 %most, i64 %limit, i64 MASKED_ITEMS
  %old = atomicrmw xchg ptr @owned_items, i64 %l seq_cst
  ret i64 %old
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
            .replace("MAX_WORKERS", str(MAX_WORKERS)).replace("SLOTS", str(SLOTS)).replace("SPIN_NS", str(SPIN_NS))
            .replace("MASKED_ITEMS", str(MASKED_ITEMS)).replace("OWNED_ITEMS", str(OWNED_ITEMS)))


@functools.cache
def pool_object(cpu: str | None = None, features: str | None = None, triple: str | None = None) -> bytes:
    """The pool's object code for `cpu` with `features` of `triple` (default: this machine;
    compiled by LLVM once per process and CPU)."""
    import llvmlite.binding as llvm

    from dlc.codegen.native import compile_object

    arch = (triple or llvm.get_process_triple()).split("-")[0]
    return compile_object(_pool_ir(arch), cpu, features, opt_level=2, triple=triple)
