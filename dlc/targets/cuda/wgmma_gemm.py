"""The TF32 GEMM on Hopper's warpgroup MMA, `wgmma.mma_async` (sm_90a; issue 21, deliverable 3).

PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate": a warpgroup (4 consecutive
warps, 128 threads) multiplies a 64 x 8 tile of A by an 8 x N tile of B into 64 x N float32
accumulators held in its registers (N / 2 a thread), both operands read from shared memory
through 64-bit matrix descriptors ("Matrix Descriptor Format": start address, leading and stride
byte offsets, swizzle mode, each address field in 16-byte units). For .tf32 both operands must
be K-major: A row-major [M, K] as the benchmark's graph input is, B [N, K] (a MatMul's constant
[K, N] weight is uploaded transposed, `NAME:transposed`, dlc/targets/cuda/target.py; a Gemm
transB weight already is).

- Block BM x BN of `warpgroups` warpgroups stacked in M (`auto_block`: 128 x 256 of 2 for large
  GEMMs, one m64n256 each; 128 x 128 or 64 x 64 for smaller ones); each issues
  `wgmma.mma_async.sync.aligned.m64nBNk8.f32.tf32.tf32` for each of its 64-row slices and each
  8-deep step of a K tile.
- Tiles are staged as in dlc/targets/cuda/tf32_gemm.py: a `stages`-deep pipeline of 16-byte
  `cp.async.cg` copies (zero-filled at the edges), one commit group per K tile; in the layout
  the descriptors name ("Shared Memory Matrix Layout"): with `gemm_tf32_wgmma_swizzle` 128 (the
  default, CUTLASS's for 32-bit K-major tiles) each row of a 32-deep K panel is 128 bytes, the
  8-row atoms 1024 bytes apart (the stride byte offset), and 16-byte chunk c of row r sits at
  chunk c ^ (r % 8) (the hardware XORs address bits 4-6 with bits 7-9; the tiles start on 1024
  bytes, aligned at run time); with 0 ("interleave", no swizzle) the 8 x 16-byte core matrices
  are contiguous, 128 bytes apart in K (leading byte offset) and K tile * 32 bytes apart in M/N
  (a warp's chunk stores then hit 4 banks 8 times: bank conflicts).
- Ordering (PTX ISA, "Asynchronous proxy"): cp.async writes shared memory through the generic
  proxy and wgmma reads it through the async proxy, so each thread issues
  `fence.proxy.async.shared::cta` after its copies land and before the barrier that publishes
  them; `wgmma.fence` before the first wgmma of a K tile, `wgmma.commit_group` after its last,
  then `wgmma.wait_group pending`: with `gemm_tf32_wgmma_pending` 1 (default) a K tile's wgmmas
  still run while the warps wait for the next tile and issue its copies, which therefore go
  stages - 2 tiles ahead (the stage being overwritten was read two tiles ago); with 0, stages - 1.
- The accumulators map to rows and columns for codegen's epilogue (the fused elementwise chain,
  guarded stores) as the PTX ISA's "Register Fragments" figure for .m64nNk8 .f32 accumulators
  says: thread t of a warpgroup, warp w = t / 32, lane l: d[4i + j] is row 16w + l / 4 + 8 (j / 2),
  column 8i + 2 (l % 4) + j % 2.
- Operands are exact TF32 values before the K loop reads them (`gemm_tf32_round` 0 with
  `gemm_tf32_preround` 1, as for the mma.sync kernel): a cvt per fragment is impossible on
  shared-memory operands. A GEMM whose operand is also read as float32 (its epilogue, Gemm's C)
  keeps the mma.sync kernel (which rounds per fragment there).
Target-file keys (with `gemm_tf32` 1): `gemm_tf32_wgmma` (1: this kernel where it applies on an
`sm` 90 GPU and the shared keys below suit it, the mma.sync pipeline for the rest; 2: where it
applies, keys it cannot take being errors; 0: mma.sync for all), `gemm_tf32_block_m`/`_n`
(0: `auto_block`), `gemm_tf32_tile_k` (32),
`gemm_tf32_wgmma_stages` (0: `auto_stages`), `gemm_tf32_wgmma_warpgroups` (0: BM / 64, at most 2),
`gemm_tf32_wgmma_swizzle` (128 or 0), `gemm_tf32_wgmma_pending` (1), `gemm_tf32_group_m` (8). A
combination it cannot run is a CompileError naming the keys. The PTX targets sm_90a
(codegen.compile_ptx asks llvmlite's NVPTX for that CPU when a module holds a wgmma).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dlc.errors import CompileError
from dlc.targets.cuda.tf32_gemm import SHARED_LIMIT, _cp_async, block_origin, close_k_loop

ALIGN = 1024  # a 128-byte swizzle's pattern repeats every 8 rows of 128 bytes


@dataclass(frozen=True)
class WgmmaPlan:
    """The tiling of one wgmma TF32 GEMM; sizes in floats unless named bytes."""

    bm: int
    bn: int
    bk: int
    warpgroups: int
    stages: int
    swizzle: int  # 128 or 0 (interleave)
    pending: int  # wgmma groups left in flight at the end of a K tile (0 or 1)
    group_m: int

    @property
    def threads(self) -> int:
        return 128 * self.warpgroups

    @property
    def slices(self) -> int:  # 64-row slices of a warpgroup
        return self.bm // self.warpgroups // 64

    @property
    def accumulators(self) -> int:  # a thread's
        return self.slices * self.bn // 2

    @property
    def stage_bytes(self) -> int:
        return 4 * (self.bm + self.bn) * self.bk

    @property
    def shared_bytes(self) -> int:  # ALIGN more: the base is rounded up to ALIGN at run time
        return self.stages * self.stage_bytes + ALIGN

    @property
    def ahead(self) -> int:  # K tiles in flight ahead of the one being multiplied
        return self.stages - 1 - self.pending

    def offset(self, rows: int, r: int, c: int) -> int:
        """Byte offset of 16-byte chunk c (floats 4c..4c+3 of K) of row r in a tile of `rows`."""
        if self.swizzle:  # panels of 32 floats of K, rows 128 bytes apart, chunks XOR-swizzled
            return (c // 8) * rows * 128 + r * 128 + ((c % 8) ^ (r % 8)) * 16
        return (r // 8) * self.bk * 32 + c * 128 + (r % 8) * 16

    def descriptor(self) -> int:
        """The descriptor's fields other than its start address (PTX ISA, "Matrix Descriptor
        Format"): leading byte offset bits 16-29, stride byte offset 32-45, swizzle 62-63
        (1: 128 bytes), each offset in 16-byte units."""
        if self.swizzle:  # K of one wgmma (32 bytes) inside a swizzle row: no leading offset
            return (1 << 16) | ((1024 >> 4) << 32) | (1 << 62)
        return ((128 >> 4) << 16) | ((self.bk * 32 >> 4) << 32)


def auto_block(g, sms: int) -> tuple[int, int]:
    """128 x 256 (two warpgroups of m64n256) when every SM still gets a block: 4096^3 ran in 0.403
    ms on the H200, against 0.506 for 128 x 128 (3 stages, two blocks an SM) and 0.535 for 256 x
    128; else 128 x 128 when every SM gets a block with it, else 64 x 64 (one warpgroup of
    m64n64), as the mma.sync kernel's `auto_block`, for more blocks (an encoder's 128 x 768
    projection: 24 blocks, not 6; not yet timed)."""
    for bm, bn in ((128, 256), (128, 128)):
        if g.m >= bm and g.n >= bn and math.ceil(g.m / bm) * math.ceil(g.n / bn) * g.batch >= sms:
            return bm, bn
    return 64, 64


def auto_stages(bm: int, bn: int, bk: int, warpgroups: int) -> int:
    """Up to 4 stages, as many as leave room for two blocks an SM when a thread holds at most 64
    accumulators (128 x 128: 3 stages, 0.506 ms at 4096^3 against 0.532 with 4 and one block),
    else for one (128 x 256: 4 stages, 193 KiB)."""
    blocks = 2 if bm // warpgroups // 64 * bn // 2 <= 64 else 1
    stage = 4 * (bm + bn) * bk
    return max(2, min(4, ((SHARED_LIMIT // blocks) - ALIGN) // stage))


# The wgmma kernel's own keys and their defaults: while a target file leaves them alone, keys it
# shares with the mma.sync kernel that it cannot take (set for that kernel) send a GEMM there.
OWN_KEYS = {"gemm_tf32_wgmma_stages": 0, "gemm_tf32_wgmma_warpgroups": 0, "gemm_tf32_wgmma_swizzle": 128,
            "gemm_tf32_wgmma_pending": 1}


def wgmma_plan(g, options: dict) -> WgmmaPlan | None:
    """The plan for GemmShape `g` (A row-major, B K-major, K % 4 == 0: the caller checked), or
    None where `gemm_tf32_wgmma` is 1 (the default), none of the kernel's own keys is set, and
    the keys it shares with the mma.sync kernel (round, block, K tile) do not suit it: that GEMM
    keeps mma.sync. With `gemm_tf32_wgmma` 2, or any of its own keys set, a combination it
    cannot run is a CompileError naming the keys."""
    auto = auto_block(g, options.get("sms", 132))  # for the sizes the keys leave 0
    bm, bn = options.get("gemm_tf32_block_m", 0) or auto[0], options.get("gemm_tf32_block_n", 0) or auto[1]
    warpgroups = options.get("gemm_tf32_wgmma_warpgroups", 0) or max(1, min(2, bm // 64))
    bk = options.get("gemm_tf32_tile_k", 32)
    stages = options.get("gemm_tf32_wgmma_stages", 0) or auto_stages(bm, bn, max(bk, 1), max(warpgroups, 1))
    plan = WgmmaPlan(bm, bn, bk, warpgroups, stages, options.get("gemm_tf32_wgmma_swizzle", 128),
                     options.get("gemm_tf32_wgmma_pending", 1), max(1, options.get("gemm_tf32_group_m", 8)))
    problems = []
    if options.get("gemm_tf32_round", 0) != 0:
        problems.append(f"gemm_tf32_round {options['gemm_tf32_round']} (wgmma reads its operands from shared "
                        "memory as they are: 0)")
    if bm % 64 or bm <= 0 or bm % (64 * warpgroups) or warpgroups > 4:
        problems.append(f"a {bm}-row block of {warpgroups} warpgroups (64-row slices each; at most 4)")
    if bn % 8 or not 8 <= bn <= 256:
        problems.append(f"a {bn}-column block (wgmma's N: a multiple of 8 up to 256)")
    if plan.swizzle not in (0, 128):
        problems.append(f"gemm_tf32_wgmma_swizzle {plan.swizzle} (128 or 0)")
    if plan.bk <= 0 or plan.bk % (32 if plan.swizzle else 8):
        problems.append(f"a K tile of {plan.bk} (a multiple of {32 if plan.swizzle else 8}"
                        f"{': 128-byte swizzled rows' if plan.swizzle else ''})")
    elif (bm * plan.bk // 4) % plan.threads or (bn * plan.bk // 4) % plan.threads:
        problems.append(f"a K tile of {plan.bk} whose 16-byte chunks do not divide among {plan.threads} threads")
    if plan.pending not in (0, 1):
        problems.append(f"gemm_tf32_wgmma_pending {plan.pending} (0 or 1)")
    elif plan.ahead < 1:
        problems.append(f"gemm_tf32_wgmma_stages {plan.stages} (at least {2 + plan.pending} with "
                        f"gemm_tf32_wgmma_pending {plan.pending})")
    if plan.shared_bytes > SHARED_LIMIT:
        problems.append(f"{plan.shared_bytes} bytes of shared memory (at most {SHARED_LIMIT})")
    if problems == [] and plan.accumulators > 128:
        problems.append(f"{plan.accumulators} accumulators per thread (at most 128)")
    if problems and options.get("gemm_tf32_wgmma", 1) == 1 and all(
            options.get(key, default) == default for key, default in OWN_KEYS.items()):
        return None
    if problems:
        raise CompileError(f"cuda: wgmma TF32 GEMM tile {bm}x{bn}x{plan.bk}, {warpgroups} warpgroups, "
                           f"{plan.stages} stages: " + "; ".join(problems),
                           "change the gemm_tf32_* keys of the cuda target file, or gemm_tf32_wgmma 0")
    return plan


def wgmma(fn, n: int, acc: list[str], desc_a: str, desc_b: str) -> list[str]:
    """D = A B + D of one m64nNk8 TF32 wgmma (A, B by descriptors; `acc`: this thread's N / 2)."""
    count = len(acc)
    struct = "{ " + ", ".join(["float"] * count) + " }"
    registers = ",".join(f"${i}" for i in range(count))
    text = (f"{{ .reg .pred p; setp.ne.b32 p, ${2 * count + 2}, 0; "
            f"wgmma.mma_async.sync.aligned.m64n{n}k8.f32.tf32.tf32 {{{registers}}}, ${2 * count}, "
            f"${2 * count + 1}, p, 1, 1; }}")
    constraints = ",".join(["=f"] * count + [str(i) for i in range(count)] + ["l", "l", "r", "~{memory}"])
    arguments = ", ".join([f"float {v}" for v in acc] + [f"i64 {desc_a}", f"i64 {desc_b}", "i32 1"])
    result = fn(f'call {struct} asm sideeffect "{text}", "{constraints}"({arguments})')
    return [fn(f"extractvalue {struct} {result}, {i}") for i in range(count)]


def wgmma_kernel(fn, name: str, node: str, g, plan: WgmmaPlan, a_ptr: str, b_ptr: str, emit_outputs):
    """Write the kernel's body into `fn` (codegen's _Function, after its signature); returns
    (grid, block, shared-memory globals), as tf32_gemm.pipelined_kernel."""
    ity = fn.ity
    p = plan
    shared = f"@{name}_smem"
    globals_ = [f"{shared} = external addrspace(3) global [0 x float], align {ALIGN}"]
    tiles_m, tiles_n = math.ceil(g.m / p.bm), math.ceil(g.n / p.bn)
    k_tiles = math.ceil(g.k / p.bk)
    if tiles_m * tiles_n > 2**31 - 1 or g.batch > 65535:
        raise CompileError(f"cuda: node '{node}': {tiles_m * tiles_n} tiles and {g.batch} batches exceed a "
                           "CUDA grid (2^31 - 1 blocks in x, 65535 in z)")

    fn.label("entry")
    tid = fn.sreg("tid.x")
    z = fn.sreg("ctaid.z")
    row0, col0 = block_origin(fn, fn.sreg("ctaid.x"), p.bm, p.bn, tiles_m, tiles_n, p.group_m)
    a_base, b_base = fn.int("mul", z, g.a_batch), fn.int("mul", z, g.b_batch)
    # The tiles start on ALIGN bytes of the shared window (the swizzle XORs absolute address bits).
    address = fn(f"ptrtoint ptr addrspace(3) {shared} to i32")
    pad = fn(f"and i32 {fn(f'sub i32 0, {address}')}, {ALIGN - 1}")
    base = fn(f"add i32 {address}, {pad}")
    pad_floats = fn(f"lshr i32 {pad}, 2")
    if ity != "i32":
        pad_floats = fn(f"zext i32 {pad_floats} to {ity}")

    # What this thread copies: chunk tid + i * threads of each tile is row c / (bk / 4), floats
    # 4 (c % (bk / 4)) ..+3 of K; its place in the stage (floats) from the layout.
    per_row = p.bk // 4
    copies = []  # (inside the matrix, first element, k offset, slot in floats, pointer)
    for rows, limit, origin, start_of, pointer, before in ((p.bm, g.m, row0, a_base, a_ptr, 0),
                                                           (p.bn, g.n, col0, b_base, b_ptr, p.bm)):
        for i in range(rows * per_row // p.threads):
            c = fn.int("add", tid, i * p.threads)
            r, q = fn.int("udiv", c, per_row), fn.int("urem", c, per_row)
            row = fn.int("add", origin, r)
            # slot: the layout's byte offset of (r, q) / 4; r % 8 and q stay symbolic
            if p.swizzle:
                swizzled = fn.int("xor", fn.int("urem", q, 8), fn.int("urem", r, 8))
                slot = fn.int("add", fn.int("add", fn.int("mul", fn.int("udiv", q, 8), rows * 32),
                                            fn.int("mul", r, 32)), fn.int("mul", swizzled, 4))
            else:
                slot = fn.int("add", fn.int("add", fn.int("mul", fn.int("udiv", r, 8), p.bk * 8),
                                            fn.int("mul", q, 32)), fn.int("mul", fn.int("urem", r, 8), 4))
            slot = fn.int("add", fn.int("add", slot, before * p.bk), pad_floats)
            start = fn.int("add", start_of, fn.int("add", fn.int("mul", row, g.k), fn.int("mul", q, 4)))
            copies.append((fn.below(row, limit), start, fn.int("mul", q, 4), slot, pointer))

    def issue(k0: str, stage: str) -> None:
        """The copies of K tile k0 into `stage`."""
        offset = fn.int("mul", stage, p.stage_bytes // 4)
        for inside, start, q, slot, pointer in copies:
            valid = fn.both(inside, fn.below(fn.int("add", k0, q), g.k))
            _cp_async(fn, shared, fn.int("add", slot, offset), pointer, fn.int("add", start, k0), valid)

    def commit() -> None:
        fn.emit('call void asm sideeffect "cp.async.commit_group;", "~{memory}"()')

    for s in range(p.ahead):  # prologue: tiles 0 .. ahead-1 in flight (past K: zeros, never read)
        issue(str(s * p.bk), str(s))
        commit()
    # Descriptors of stage 0, k-step 0: this warpgroup's first 64-row slice of A, and B.
    warpgroup = fn(f"udiv i32 {fn('call i32 @llvm.nvvm.read.ptx.sreg.tid.x()')}, 128")
    a_rows = fn(f"mul i32 {warpgroup}, {p.bm // p.warpgroups}")
    a_start = fn(f"add i32 {base}, {fn(f'mul i32 {a_rows}, {128 if p.swizzle else p.bk * 4}')}")
    b_start = fn(f"add i32 {base}, {p.bm * p.bk * 4}")
    fields = p.descriptor()

    def descriptor(start: str) -> str:
        units = fn(f"lshr i32 {start}, 4")
        field = fn(f"zext i32 {fn(f'and i32 {units}, 16383')} to i64")
        return fn(f"or i64 {field}, {fields}")

    desc_a0, desc_b0 = descriptor(a_start), descriptor(b_start)
    count = p.accumulators
    fn.emit("br label %loop")

    fn.label("loop")
    fn.lines.append(f"  %kt = phi {ity} [0, %entry], [%kt_next, %compute]")
    fn.lines.append(f"  %rs = phi {ity} [0, %entry], [%rs_next, %compute]")
    phis = len(fn.lines)
    fn.lines += [""] * count
    # Tile kt has landed (at most ahead-1 younger groups pending), in the async proxy too; every
    # warpgroup is past the wgmma.wait_group of the last tile, so the stage written next (read
    # `pending` + 1 tiles ago) is free.
    fn.emit(f'call void asm sideeffect "cp.async.wait_group {p.ahead - 1};", "~{{memory}}"()')
    fn.emit('call void asm sideeffect "fence.proxy.async.shared::cta;", "~{memory}"()')
    fn.emit("call void @llvm.nvvm.barrier0()")
    ahead = fn.int("add", "%kt", p.ahead)
    fn.emit(f"br i1 {fn.below(ahead, k_tiles)}, label %issue, label %compute")
    fn.label("issue")
    ws = fn.int("urem", fn.int("add", "%rs", p.ahead), p.stages)
    issue(fn.int("mul", ahead, p.bk), ws)
    fn.emit("br label %compute")

    fn.label("compute")
    commit()  # every iteration commits a group (empty past the last tile): wait_group counts them
    stage = "%rs" if ity == "i32" else fn("trunc i64 %rs to i32")
    step = fn(f"zext i32 {fn(f'mul i32 {stage}, {p.stage_bytes >> 4}')} to i64")
    desc_a, desc_b = fn(f"add i64 {desc_a0}, {step}"), fn(f"add i64 {desc_b0}, {step}")
    fn.emit('call void asm sideeffect "wgmma.fence.sync.aligned;", "~{memory}"()')
    acc = [f"%acc{i}" for i in range(count)]
    slice_acc = p.bn // 2
    for ks in range(0, p.bk, 8):
        chunk = ks // 4
        for s in range(p.slices):
            a_at = p.offset(p.bm, s * 64, chunk)  # row s * 64 (a multiple of 8: unswizzled) of the slice
            b_at = p.offset(p.bn, 0, chunk)
            da = fn(f"add i64 {desc_a}, {a_at >> 4}")
            db = fn(f"add i64 {desc_b}, {b_at >> 4}")
            acc[s * slice_acc:(s + 1) * slice_acc] = wgmma(fn, p.bn, acc[s * slice_acc:(s + 1) * slice_acc], da, db)
    fn.emit('call void asm sideeffect "wgmma.commit_group.sync.aligned;", "~{memory}"()')
    fn.emit(f'call void asm sideeffect "wgmma.wait_group.sync.aligned {p.pending};", "~{{memory}}"()')
    close_k_loop(fn, acc, phis, ity, p.stages, k_tiles)

    fn.label("store")
    fn.emit('call void asm sideeffect "wgmma.wait_group.sync.aligned 0;", "~{memory}"()')
    warp, lane = fn.int("udiv", fn.int("urem", tid, 128), 32), fn.int("urem", tid, 32)
    wrow = fn.int("add", fn.int("mul", fn.int("udiv", tid, 128), p.bm // p.warpgroups),
                  fn.int("add", fn.int("mul", warp, 16), fn.int("udiv", lane, 4)))
    wcol = fn.int("mul", fn.int("urem", lane, 4), 2)
    items = []
    for s in range(p.slices):
        for i in range(p.bn // 8):
            for j in range(4):
                row = fn.int("add", wrow, s * 64 + 8 * (j // 2))
                col = fn.int("add", wcol, 8 * i + j % 2)
                items.append((acc[s * slice_acc + 4 * i + j], row, col))
    emit_outputs(fn, z, row0, col0, items)
    fn.emit("ret void")
    return (tiles_m * tiles_n, 1, g.batch), (p.threads, 1, 1), globals_
