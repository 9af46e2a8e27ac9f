"""The TF32 tensor-core GEMM as CUTLASS's SM80 multistage kernels build it (issue 21, deliverable 3).

For a GEMM whose A is row-major (K contiguous) and whose B is row-major or K-major, with K (and a
row-major B's N) a multiple of 4 so that every 16-byte chunk of a row is wholly inside or wholly
outside the matrix; and a 1x1 Conv of stride 1 without padding whose H*W is a multiple of 4
(ResNet's bottleneck convs: W [Cout, Cin] times each image's [Cin, H*W]). Any other Conv whose
input channels are a multiple of the K tile is gathered a word at a time (`_gather`: cp.async.ca
of 4 bytes, K in (tap, channel) order so that a K tile is one tap: a thread's B column reads one
input pixel, or the padding's zero, for all its rows). Others (transposed A, a Conv of 3 input
channels) keep codegen's `_MmaSchedule`.

- Block tile BM x BN (`auto_block`: 128 x 128 when every SM still gets a block, else 64 x 64;
  128 x 256 of 8 warps by keys) of warps with 64 x 64 tiles (32 x 32 in a 64 x 64 block), each a grid of
  `mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32` (PTX ISA, "Matrix fragments for
  mma.m16n8k8", .tf32): 128 accumulators a thread.
- A `stages`-deep pipeline of `cp.async.cg.shared.global` 16-byte copies (PTX ISA, "cp.async"),
  one `cp.async.commit_group` per K tile and `cp.async.wait_group stages-2` before computing on
  one: the copies of the next stages-1 tiles fly while the warps multiply (CUTLASS's
  `MmaMultistage`). Edge chunks copy 0 bytes of source (`src-size` 0: the 16 bytes are zero
  filled) from a clamped, valid address: no access leaves the matrices.
- Fragments come from shared memory by `ldmatrix.x4` (PTX ISA, "ldmatrix"): four 8 x 8 matrices
  of 16-bit pairs are four 8 x 4 matrices of 32-bit words, and the four of a 16 x 8 block of A
  (rows 0-7 / 8-15 x k 0-3 / 4-7) are exactly the a0..a3 of the m16n8k8 TF32 fragment; a K-major
  B's fragments the same way, two per ldmatrix. A row-major B is read word by word (ldmatrix's
  transpose moves 16-bit halves). Rows padded so that no load has a bank conflict, without a
  swizzle: A and a K-major B by 4 floats (the 8 rows of an ldmatrix matrix then start in 8
  different 16-byte bank groups), a row-major B by 8 (rows t = 0..3 of a fragment 8 banks apart).
- Rounding (`gemm_tf32_round`). 0 (default): the K loop hands the fp32 words to the tensor cores
  as they are (they read the top 19 bits), and the partition makes every operand an exact TF32
  value before the loop reads it (`gemm_tf32_preround` 1, dlc/targets/cuda/target.py): weights
  rounded on the host when they are uploaded, activations by the store of the kernel that
  produces them when every reader is a TF32 GEMM operand, else by a small rounding kernel
  (`codegen.round_kernel`, in place when nothing else reads the value). The result is
  bit-identical to round 1, `cvt.rna` per fragment in registers, whose K loop is 703 SASS
  instructions per 128 mma at 128 x 128 against 350 (nvdisasm; cvt.rna is a compare and an add):
  on the H200, 4096^3 ran at 138 TFLOP/s rounded per fragment and 182 without the cvt.
  `gemm_tf32_preround` 0 with round 0 is truncation (biased: every input shrinks towards zero;
  through ResNet-50's 53 convolutions its error grew to 1.4e-1, max abs against onnxruntime,
  where rounding's stays at torch's TF32 level, 1.0e-2). `gemm_tf32_round` 2 rounds each element
  once, in shared memory, by the thread that copied it, between its wait and the barrier (a
  fragment's element is read by 2-4 warps), at the price of a second pass over each tile in
  shared memory.
- Blocks are numbered in groups of `gemm_tf32_group_m` row tiles (Triton's "grouped ordering")
  so that the blocks resident at once share A row panels and B column panels in L2.
- The accumulators go through codegen's epilogue (the fused elementwise chain, guarded stores).
Target-file keys (`$DLC_CUDA_TARGET`, with `gemm_tf32` 1): `gemm_tf32_pipeline` (1; 0: the
register-staged schedule for all), `gemm_tf32_block_m`/`_n` (0: `auto_block`), `gemm_tf32_warps_m`/
`_n` (0: 64 x 64 warp tiles), `gemm_tf32_tile_k` (32), `gemm_tf32_stages` (3), `gemm_tf32_group_m`
(8), `gemm_tf32_round` (0), `gemm_tf32_preround` (1), `gemm_tf32_weight_row_major` (1: a constant
K-major B, Gemm transB, is uploaded transposed, `NAME:transposed`, and read row-major, 14% faster
on the H200); a combination that cannot work is a CompileError naming the keys. `gemm_tf32_wgmma`
1 hands the GEMMs it applies to (row-major A, K-major or constant B) to Hopper's wgmma instead
(dlc/targets/cuda/wgmma_gemm.py: 4096^3 in 0.403 ms on the H200 against this kernel's 0.689).
Shared memory is dynamic (`Launch.shared_bytes`): 3 stages of a 128 x 128 block's 32-deep tiles
need 105 KiB (two blocks fit an SM's 228 KiB), of a 128 x 256 block's 153 KiB, more than the
48 KiB a static allocation may take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dlc.errors import CompileError

SHARED_LIMIT = 227 << 10  # what one block of an sm_90 GPU may use (cuFuncSetAttribute raises it)


@dataclass(frozen=True)
class PipelinePlan:
    """The tiling of one pipelined TF32 GEMM; sizes in floats unless named bytes."""

    bm: int
    bn: int
    bk: int
    warps_m: int
    warps_n: int
    stages: int
    b_kmajor: bool  # B[k][n] at n * K + k (Gemm transB = 1)
    group_m: int
    round: int  # 0: none (the tensor cores truncate), 1: cvt.rna per fragment, 2: once in shared memory
    gather: bool = False  # a KxK Conv: B gathered a word at a time, K in (tap, channel) order
    a_tap_major: bool = False  # gather: A is the weight copied [Cout, KH, KW, Cin] (16-byte chunks)

    @property
    def threads(self) -> int:
        return 32 * self.warps_m * self.warps_n

    @property
    def wm(self) -> int:
        return self.bm // self.warps_m

    @property
    def wn(self) -> int:
        return self.bn // self.warps_n

    @property
    def lda(self) -> int:  # 4 mod 8 floats: ldmatrix's 8 rows of 16 bytes hit 8 distinct bank quads
        return self.bk + 4

    @property
    def ldb(self) -> int:  # row-major: 8 mod 32, so rows t (0..3) of a fragment load are 8 banks apart
        return self.bk + 4 if self.b_kmajor else self.bn + 8

    @property
    def a_floats(self) -> int:
        return self.bm * self.lda

    @property
    def stage_floats(self) -> int:
        return self.a_floats + (self.bn if self.b_kmajor else self.bk) * self.ldb

    @property
    def shared_bytes(self) -> int:
        return 4 * self.stages * self.stage_floats


def auto_block(g, sms: int) -> tuple[int, int]:
    """128 x 128 (4 warps, two blocks an SM) when every SM still gets a block, else 64 x 64. With
    the K loop free of cvt (round 0) it ran 4096^3 at 182 TFLOP/s on the H200, where 128 x 256
    (8 warps, one block an SM; more FLOP per byte from L2: 42.7 against 32) ran 153: 128 x 256
    stays reachable through `gemm_tf32_block_m`/`_n`."""
    for bm, bn in ((128, 128),):
        if g.m >= bm and g.n >= bn and math.ceil(g.m / bm) * math.ceil(g.n / bn) * g.batch >= sms:
            return bm, bn
    return 64, 64


def pipeline_plan(g, options: dict, a_is_weight: bool = False) -> PipelinePlan | None:
    """The plan for GemmShape `g`, or None when the pipelined kernel does not apply to it.
    `a_is_weight`: A is a constant, so a gathered Conv may have it copied tap-major."""
    if not options.get("gemm_tf32_pipeline", 1) or g.a_strides != (g.k, 1):
        return None
    gather = False
    if g.conv is not None:  # a 1x1 Conv of stride 1 without padding: B is each image's [C, H*W]
        c = g.conv
        gather = bool(c.kernel != (1, 1) or c.strides != (1, 1) or c.pads != (0, 0) or
                      c.out != (c.height, c.width) or (c.height * c.width) % 4)
        # Else gathered: K tiles of one tap (kh, kw) and bk channels, so the channels are a
        # multiple of the K tile.
        if gather and c.channels % max(1, options.get("gemm_tf32_tile_k", 32)):
            return None
        b_kmajor = False
    elif g.b_strides == (g.n, 1) and g.n % 4 == 0:
        b_kmajor = False
    elif g.b_strides == (1, g.k):
        b_kmajor = True
    else:
        return None
    if g.k % 4 and not gather:  # a 16-byte chunk of A would straddle two rows
        return None
    bm, bn = options.get("gemm_tf32_block_m", 0), options.get("gemm_tf32_block_n", 0)
    if not bm or not bn:
        bm, bn = auto_block(g, options.get("sms", 132))
    # Warps (0: from the block): 64 x 64 warp tiles, 32 x 32 in blocks of 64.
    warps_m = options.get("gemm_tf32_warps_m", 0) or (bm // 64 if bm >= 128 else max(1, bm // 32))
    warps_n = options.get("gemm_tf32_warps_n", 0) or (bn // 64 if bn >= 128 else max(1, bn // 32))
    plan = PipelinePlan(bm, bn, options.get("gemm_tf32_tile_k", 32), warps_m, warps_n,
                        options.get("gemm_tf32_stages", 3), b_kmajor,
                        max(1, options.get("gemm_tf32_group_m", 8)), options.get("gemm_tf32_round", 0), gather,
                        gather and a_is_weight)
    if gather and plan.threads % plan.bn:  # a thread gathers one column of B
        return None
    problems = []
    if plan.wm % 16 or plan.wn % 8 or plan.wm <= 0 or plan.wn <= 0:
        problems.append(f"warp tiles of {plan.wm} x {plan.wn} (multiples of 16 x 8)")
    chunks = (plan.bm * plan.bk // 4, plan.bk * plan.bn // 4)  # 16-byte copies of an A and a B tile
    if plan.bk % 8 or plan.bk <= 0 or chunks[0] % plan.threads or chunks[1] % plan.threads:
        problems.append(f"a K tile of {plan.bk} (a multiple of 8 whose 16-byte chunks divide among "
                        f"{plan.threads} threads)")
    if plan.stages < 2:
        problems.append(f"{plan.stages} stages (at least 2)")
    if plan.round not in (0, 1, 2):
        problems.append(f"gemm_tf32_round {plan.round} (0, 1 or 2)")
    if plan.shared_bytes > SHARED_LIMIT:
        problems.append(f"{plan.shared_bytes} bytes of shared memory (at most {SHARED_LIMIT})")
    if (plan.wm // 16) * (plan.wn // 8) * 4 > 128:
        problems.append(f"{(plan.wm // 16) * (plan.wn // 8) * 4} accumulators per thread (at most 128)")
    if problems:
        raise CompileError(f"cuda: TF32 GEMM tile {bm}x{bn}x{plan.bk}, {plan.warps_m}x{plan.warps_n} warps, "
                           f"{plan.stages} stages: " + "; ".join(problems),
                           "change the gemm_tf32_* keys of the cuda target file")
    return plan


def _cp_async(fn, shared: str, slot: str, pointer: str, index: str, valid: str, nbytes: int = 16) -> None:
    """One cp.async of pointer[index..] to shared[slot..], 16 bytes (.cg: L2 only) or 4 (.ca);
    zeros where not `valid` (0 source bytes read, from element 0: a valid address)."""
    ity = fn.ity
    safe = fn(f"select i1 {valid}, {ity} {index}, {ity} 0")
    source = fn(f"getelementptr inbounds float, ptr addrspace(1) {pointer}, {ity} {safe}")
    target = fn(f"getelementptr inbounds float, ptr addrspace(3) {shared}, {ity} {slot}")
    size = fn(f"select i1 {valid}, i32 {nbytes}, i32 0")
    level = "cg" if nbytes == 16 else "ca"
    fn.emit(f'call void asm sideeffect "cp.async.{level}.shared.global [$0], [$1], {nbytes}, $2;", '
            f'"l,l,r,~{{memory}}"(ptr addrspace(3) {target}, ptr addrspace(1) {source}, i32 {size})')


def _tf32_bits(fn, bits: str, rounded: bool) -> str:
    """An fp32 word as the mma's TF32 operand: rounded (cvt.rna), or as is (the tensor cores
    then read its top 19 bits)."""
    if not rounded:
        return bits
    value = fn(f"bitcast i32 {bits} to float")
    return fn(f'call i32 asm "cvt.rna.tf32.f32 $0, $1;", "=r,f"(float {value})')


def _round_in_shared(fn, shared: str, stage: str, slots: list[tuple[str, int]]) -> None:
    """cvt.rna each float of `slots` ((slot, width): floats slot .. slot + width - 1) of the
    stage in place (one ld/st.shared.v4 a 16-byte chunk)."""
    for slot, width in slots:
        vector = f"<{width} x float>" if width > 1 else "float"
        where = fn(f"getelementptr inbounds float, ptr addrspace(3) {shared}, {fn.ity} {fn.int('add', slot, stage)}")
        value = fn(f"load {vector}, ptr addrspace(3) {where}, align {4 * width}")
        if width == 1:
            value = fn(f"bitcast i32 {_tf32_bits(fn, fn(f'bitcast float {value} to i32'), True)} to float")
        else:
            for lane in range(width):
                word = fn(f"bitcast float {fn(f'extractelement {vector} {value}, i32 {lane}')} to i32")
                rounded = fn(f"bitcast i32 {_tf32_bits(fn, word, True)} to float")
                value = fn(f"insertelement {vector} {value}, float {rounded}, i32 {lane}")
        fn.emit(f"store {vector} {value}, ptr addrspace(3) {where}, align {4 * width}")


def _ldmatrix(fn, shared: str, index: str) -> list[str]:
    """ldmatrix.x4: four 8 x 8 matrices of b16 pairs, i.e. of 8 rows x 4 TF32 words, whose rows
    lanes 8j..8j+7 address (`index`: this lane's row); lane l gets word l % 4 of row l / 4 of
    each (PTX ISA, "ldmatrix"). The memory clobber keeps it after the barrier."""
    where = fn(f"getelementptr inbounds float, ptr addrspace(3) {shared}, {fn.ity} {index}")
    result = fn('call { i32, i32, i32, i32 } asm "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {$0,$1,$2,$3}, [$4];", '
                f'"=r,=r,=r,=r,l,~{{memory}}"(ptr addrspace(3) {where})')
    return [fn(f"extractvalue {{ i32, i32, i32, i32 }} {result}, {r}") for r in range(4)]


def _shared_word(fn, shared: str, index: str) -> str:
    where = fn(f"getelementptr inbounds float, ptr addrspace(3) {shared}, {fn.ity} {index}")
    return fn(f"load i32, ptr addrspace(3) {where}, align 4")


class _Chunks:
    """The 16-byte chunks one thread copies of an (rows x cols) tile whose cols are contiguous in
    memory: chunk tid + i * threads is row c // (cols/4), columns 4 (c % (cols/4)) + 0..3."""

    def __init__(self, fn, tid: str, threads: int, rows: int, cols: int, ld: int):
        per_row = cols // 4
        self.items = []
        for i in range(rows * per_row // threads):
            c = fn.int("add", tid, i * threads)
            r, q = fn.int("udiv", c, per_row), fn.int("mul", fn.int("urem", c, per_row), 4)
            self.items.append((r, q, fn.int("add", fn.int("mul", r, ld), q)))


def _gather(fn, tid: str, p: PipelinePlan, g, row0: str, col0: str, a_ptr: str, b_ptr: str, shared: str):
    """The copies of a KxK (or strided, padded) Conv's tiles, 4 bytes each. K runs in (tap,
    channel) order in both tiles: K tile k0 is tap k0 / C, channels k0 % C .. + bk (C % bk == 0),
    so A's element (row, c) is W[row][c * taps + tap] (strided: `a_tap_major` has the weight
    copied [Cout, KH, KW, Cin] instead, and A comes in chunks) and a thread's B column (image,
    oh, ow) reads one input pixel, zero in the padding, for all its rows: consecutive threads
    read consecutive pixels. Returns (issue(k0, stage), the words this thread copies)."""
    c = g.conv
    taps, plane = c.kernel[0] * c.kernel[1], c.height * c.width
    ity = fn.ity
    a_elements = []
    for i in range(0 if p.a_tap_major else p.bm * p.bk // p.threads):
        e = fn.int("add", tid, i * p.threads)
        r, channel = fn.int("udiv", e, p.bk), fn.int("urem", e, p.bk)
        row = fn.int("add", row0, r)
        start = fn.int("add", fn.int("mul", row, g.k), fn.int("mul", channel, taps))
        a_elements.append((fn.below(row, g.m), start, fn.int("add", fn.int("mul", r, p.lda), channel)))
    lane_col = fn.int("urem", tid, p.bn)
    col = fn.int("add", col0, lane_col)
    image, pixel = fn.int("udiv", col, c.out[0] * c.out[1]), fn.int("urem", col, c.out[0] * c.out[1])
    oh, ow = fn.int("udiv", pixel, c.out[1]), fn.int("urem", pixel, c.out[1])
    ih0 = fn.int("sub", fn.int("mul", oh, c.strides[0]), c.pads[0])
    iw0 = fn.int("sub", fn.int("mul", ow, c.strides[1]), c.pads[1])
    source = fn.int("mul", image, c.channels * plane)
    column_ok = fn.below(col, g.n)
    step = p.threads // p.bn
    b_rows = [fn.int("add", fn.int("udiv", tid, p.bn), i * step) for i in range(p.bk // step)]
    b_slots = [fn.int("add", fn.int("add", fn.int("mul", r, p.ldb), lane_col), p.a_floats) for r in b_rows]

    def issue(k0: str, offset: str) -> None:
        tap, channel0 = fn.int("udiv", k0, c.channels), fn.int("urem", k0, c.channels)
        k_ok = fn.below(k0, g.k)
        for inside, start, slot in a_elements:
            index = fn.int("add", start, fn.int("add", fn.int("mul", channel0, taps), tap))
            _cp_async(fn, shared, fn.int("add", slot, offset), a_ptr, index, fn.both(inside, k_ok), 4)
        kh, kw = fn.int("udiv", tap, c.kernel[1]), fn.int("urem", tap, c.kernel[1])
        ih = fn.int("add", ih0, fn.int("mul", kh, c.dilations[0]))
        iw = fn.int("add", iw0, fn.int("mul", kw, c.dilations[1]))
        # Signed: a tap in the top or left padding has a negative row or column.
        inside = fn.both(fn.both(fn(f"icmp sge {ity} {ih}, 0"), fn(f"icmp slt {ity} {ih}, {c.height}")),
                         fn.both(fn(f"icmp sge {ity} {iw}, 0"), fn(f"icmp slt {ity} {iw}, {c.width}")))
        valid = fn.both(fn.both(column_ok, k_ok), inside)
        pixel_at = fn.int("add", fn.int("add", source, fn.int("mul", channel0, plane)),
                          fn.int("add", fn.int("mul", ih, c.width), iw))
        for r, slot in zip(b_rows, b_slots):
            _cp_async(fn, shared, fn.int("add", slot, offset), b_ptr,
                      fn.int("add", pixel_at, fn.int("mul", r, plane)), valid, 4)
    return issue, [slot for _, _, slot in a_elements] + b_slots


def mma_sync(fn, a: list[str], b: list[str], c: list[str]) -> list[str]:
    """D = A B + C of one m16n8k8 TF32 fragment (a: 4, b: 2 registers of TF32 bits; c: 4 floats)."""
    result = fn('call { float, float, float, float } asm "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 '
                '{$0,$1,$2,$3}, {$4,$5,$6,$7}, {$8,$9}, {$10,$11,$12,$13};", '
                '"=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f"('
                + ", ".join([f"i32 {v}" for v in a + b] + [f"float {v}" for v in c]) + ")")
    return [fn(f"extractvalue {{ float, float, float, float }} {result}, {r}") for r in range(4)]


def close_k_loop(fn, acc: list[str], phis: int, ity: str, stages: int, k_tiles) -> None:
    """End a pipelined K loop's body: the accumulators' phis (placeholders at line `phis` on)
    take this iteration's values, the K tile and the ring's read stage advance, and the loop
    branches back or on to `store` (the mma.sync and the wgmma kernels)."""
    for i, value in enumerate(acc):
        fn.lines[phis + i] = f"  %acc{i} = phi float [0.0, %entry], [{value}, %compute]"
    fn.lines.append(f"  %kt_next = add {ity} %kt, 1")
    fn.lines.append(f"  %rs_next = select i1 {fn(f'icmp eq {ity} %rs, {stages - 1}')}, {ity} 0, {ity} "
                    f"{fn.int('add', '%rs', 1)}")
    fn.emit(f"br i1 {fn.below('%kt_next', k_tiles)}, label %loop, label %store")


def block_origin(fn, block: str, bm: int, bn: int, tiles_m: int, tiles_n: int, group_m: int) -> tuple[str, str]:
    """(row0, col0) of block `block` in grouped ordering: blocks b, b+1, ... walk group_m row
    tiles down, then the next column."""
    ity = fn.ity
    per_group = group_m * tiles_n
    first = fn.int("mul", fn.int("udiv", block, per_group), group_m)
    left = fn(f"sub {ity} {tiles_m}, {first}")
    size = fn(f"select i1 {fn.below(left, group_m)}, {ity} {left}, {ity} {group_m}")
    inner = fn.int("urem", block, per_group)
    row0 = fn.int("mul", fn.int("add", first, fn.int("urem", inner, size)), bm)
    col0 = fn.int("mul", fn.int("udiv", inner, size), bn)
    return row0, col0


def pipelined_kernel(fn, name: str, node: str, g, plan: PipelinePlan, a_ptr: str, b_ptr: str, emit_outputs):
    """Write the kernel's body into `fn` (codegen's _Function, after its signature: A and B are
    the parameters `a_ptr`, `b_ptr`); returns (grid, block, shared-memory globals).
    `emit_outputs(fn, z, row0, col0, items)` writes the epilogue for items (accumulator value,
    row and column in the block's tile)."""
    ity = fn.ity
    shared = f"@{name}_smem"
    globals_ = [f"{shared} = external addrspace(3) global [0 x float], align 16"]
    p = plan
    tiles_m, tiles_n = math.ceil(g.m / p.bm), math.ceil(g.n / p.bn)
    k_tiles = math.ceil(g.k / p.bk)
    fm, fnn = p.wm // 16, p.wn // 8
    if tiles_m * tiles_n > 2**31 - 1 or g.batch > 65535:
        raise CompileError(f"cuda: node '{node}': {tiles_m * tiles_n} tiles and {g.batch} batches exceed a "
                           "CUDA grid (2^31 - 1 blocks in x, 65535 in z)")

    fn.label("entry")
    tid = fn.sreg("tid.x")
    block, z = fn.sreg("ctaid.x"), fn.sreg("ctaid.z")
    row0, col0 = block_origin(fn, block, p.bm, p.bn, tiles_m, tiles_n, p.group_m)
    warp, lane = fn.int("udiv", tid, 32), fn.int("urem", tid, 32)
    group, thread = fn.int("udiv", lane, 4), fn.int("urem", lane, 4)
    wrow = fn.int("mul", fn.int("udiv", warp, p.warps_n), p.wm)
    wcol = fn.int("mul", fn.int("urem", warp, p.warps_n), p.wn)
    a_base, b_base = fn.int("mul", z, g.a_batch), fn.int("mul", z, g.b_batch)

    # What this thread copies: A's rows (row0 + r) from column k0 + q; B's rows k0 + r (row-major,
    # columns col0 + q) or B's columns col0 + r (K-major, from k0 + q).
    a_chunks = _Chunks(fn, tid, p.threads, p.bm, p.bk, p.lda)
    a_copies = []
    for r, q, slot in a_chunks.items:
        row = fn.int("add", row0, r)
        start = fn.int("add", a_base, fn.int("add", fn.int("mul", row, g.k), q))
        a_copies.append((fn.below(row, g.m), start, q, slot))
    b_copies = []
    # Row k of a row-major B: N columns apart; a 1x1 Conv's column n * H*W + pixel is image n's
    # channel k at that pixel (H*W % 4 == 0: no chunk straddles two images).
    pixels = g.conv.height * g.conv.width if g.conv else 0
    b_row = pixels or g.n
    if p.b_kmajor:
        for r, q, slot in _Chunks(fn, tid, p.threads, p.bn, p.bk, p.ldb).items:
            col = fn.int("add", col0, r)
            start = fn.int("add", b_base, fn.int("add", fn.int("mul", col, g.k), q))
            b_copies.append((fn.below(col, g.n), start, q, fn.int("add", slot, p.a_floats)))
    else:
        for r, q, slot in _Chunks(fn, tid, p.threads, p.bk, p.bn, p.ldb).items:
            col = fn.int("add", col0, q)
            at = col
            if g.conv:
                image = fn.int("mul", fn.int("udiv", col, pixels), g.conv.channels * pixels)
                at = fn.int("add", image, fn.int("urem", col, pixels))
            start = fn.int("add", b_base, fn.int("add", fn.int("mul", r, b_row), at))
            b_copies.append((fn.below(col, g.n), start, r, fn.int("add", slot, p.a_floats)))

    # The slots this thread copies to: (slot, floats) of 16-byte chunks and gathered words.
    chunked_a = not p.gather or p.a_tap_major
    own = [(c[3], 4) for c in a_copies] if chunked_a else []
    if p.gather:
        gather, words = _gather(fn, tid, p, g, row0, col0, a_ptr, b_ptr, shared)
        own += [(slot, 1) for slot in words]
    else:
        own += [(c[3], 4) for c in b_copies]

    def issue(k0: str, stage: str) -> None:
        """The copies of K tile k0 into `stage` (its first float), one commit group."""
        offset = fn.int("mul", stage, p.stage_floats)
        if chunked_a:
            for inside, start, q, slot in a_copies:
                valid = fn.both(inside, fn.below(fn.int("add", k0, q), g.k))
                _cp_async(fn, shared, fn.int("add", slot, offset), a_ptr, fn.int("add", start, k0), valid)
        if p.gather:
            gather(k0, offset)
            return
        for inside, start, r, slot in b_copies:
            valid = fn.both(inside, fn.below(fn.int("add", k0, r), g.k))
            step = k0 if p.b_kmajor else fn.int("mul", k0, b_row)
            _cp_async(fn, shared, fn.int("add", slot, offset), b_ptr, fn.int("add", start, step), valid)

    def commit() -> None:
        fn.emit('call void asm sideeffect "cp.async.commit_group;", "~{memory}"()')

    # Prologue: tiles 0 .. stages-2 in flight (a tile past K copies zeros; never read).
    for s in range(p.stages - 1):
        issue(str(s * p.bk), str(s))
        commit()
    # This lane's fragment addresses inside a stage (floats). ldmatrix rows: lane l gives row
    # l % 8 of matrix l / 8; A's matrices are (rows 0-7, k 0-3), (8-15, 0-3), (0-7, 4-7), (8-15,
    # 4-7): a0..a3 of the m16n8k8 fragment. A K-major B's are (n 0-7, k 0-3), (0-7, 4-7) of two
    # 8-column fragments: b0, b1 of each.
    row8 = fn.int("add", fn.int("urem", lane, 8), fn.int("mul", fn.int("urem", fn.int("udiv", lane, 8), 2), 8))
    a_lane = fn.int("add", fn.int("mul", fn.int("add", wrow, row8), p.lda), fn.int("mul", fn.int("udiv", lane, 16), 4))
    paired = p.b_kmajor and fnn % 2 == 0
    if paired:
        n16 = fn.int("add", fn.int("urem", lane, 8), fn.int("mul", fn.int("udiv", lane, 16), 8))
        b_lane = fn.int("add", fn.int("mul", fn.int("add", wcol, n16), p.ldb),
                        fn.int("mul", fn.int("urem", fn.int("udiv", lane, 8), 2), 4))
    elif p.b_kmajor:  # b0 (k t, n g), b1 (k t + 4, n g) one word each
        b_lane = fn.int("add", fn.int("mul", fn.int("add", wcol, group), p.ldb), thread)
    else:
        b_lane = fn.int("add", fn.int("mul", thread, p.ldb), fn.int("add", wcol, group))
    b_lane = fn.int("add", b_lane, p.a_floats)
    count = fm * fnn * 4
    fn.emit("br label %loop")

    fn.label("loop")
    fn.lines.append(f"  %kt = phi {ity} [0, %entry], [%kt_next, %compute]")
    fn.lines.append(f"  %rs = phi {ity} [0, %entry], [%rs_next, %compute]")
    phis = len(fn.lines)  # the accumulators' phis, completed once the loop body names its values
    fn.lines += [""] * count
    # Tile kt has landed (at most stages-2 younger groups pending) and every warp is done with
    # the stage the next copy overwrites (the one computed in the previous iteration).
    fn.emit(f'call void asm sideeffect "cp.async.wait_group {p.stages - 2};", "~{{memory}}"()')
    if p.round == 2:  # each thread rounds what it copied (visible to it after the wait), once
        _round_in_shared(fn, shared, fn.int("mul", "%rs", p.stage_floats), own)
    fn.emit("call void @llvm.nvvm.barrier0()")
    ahead = fn.int("add", "%kt", p.stages - 1)
    fn.emit(f"br i1 {fn.below(ahead, k_tiles)}, label %issue, label %compute")
    fn.label("issue")
    ws = fn(f"select i1 {fn(f'icmp eq {ity} %rs, 0')}, {ity} {p.stages - 1}, {ity} {fn.int('sub', '%rs', 1)}")
    issue(fn.int("mul", ahead, p.bk), ws)
    fn.emit("br label %compute")

    fn.label("compute")
    commit()  # every iteration commits a group (empty past the last tile): wait_group counts them
    stage = fn.int("mul", "%rs", p.stage_floats)
    a_at, b_at = fn.int("add", stage, a_lane), fn.int("add", stage, b_lane)
    acc = [f"%acc{i}" for i in range(count)]
    for ks in range(0, p.bk, 8):
        a_words = [_ldmatrix(fn, shared, fn.int("add", a_at, i * 16 * p.lda + ks)) for i in range(fm)]
        a_frags = [[_tf32_bits(fn, v, p.round == 1) for v in words] for words in a_words]
        b_frags = []
        for j in range(fnn):
            if paired and j % 2 == 0:
                words = _ldmatrix(fn, shared, fn.int("add", b_at, j * 8 * p.ldb + ks))
                b_frags += [words[:2], words[2:]]
            elif paired:
                continue
            else:
                at = fn.int("add", b_at, j * 8 * p.ldb + ks if p.b_kmajor else ks * p.ldb + j * 8)
                step = 4 if p.b_kmajor else 4 * p.ldb
                b_frags.append([_shared_word(fn, shared, at), _shared_word(fn, shared, fn.int("add", at, step))])
        b_frags = [[_tf32_bits(fn, v, p.round == 1) for v in pair] for pair in b_frags]
        for i in range(fm):
            for j in range(fnn):
                first_acc = (i * fnn + j) * 4
                acc[first_acc:first_acc + 4] = mma_sync(fn, a_frags[i], b_frags[j], acc[first_acc:first_acc + 4])
    close_k_loop(fn, acc, phis, ity, p.stages, k_tiles)

    # Nothing is in flight (the last groups are empty): store through the epilogue.
    fn.label("store")
    items = []
    for i in range(fm):
        for j in range(fnn):
            for r in range(4):  # c0, c1: row g, columns 2t, 2t+1; c2, c3: row g + 8
                row = fn.int("add", wrow, fn.int("add", group, i * 16 + 8 * (r // 2)))
                col = fn.int("add", wcol, fn.int("add", fn.int("mul", thread, 2), j * 8 + r % 2))
                items.append((acc[(i * fnn + j) * 4 + r], row, col))
    emit_outputs(fn, z, row0, col0, items)
    fn.emit("ret void")
    return (tiles_m * tiles_n, 1, g.batch), (p.threads, 1, 1), globals_
