"""Runs a cuda partition's kernels on the host, thread by thread, for tests without a GPU.

The nvptx64 LLVM IR of dlc/targets/cuda/codegen.py is rewritten for the host (address spaces
dropped, `ptx_kernel` a plain function) and JIT-compiled by llvmlite; the special registers
(tid, ctaid), `bar.sync` and `shfl.sync.bfly` become calls back into Python. Kernels without
barriers or shuffles run their threads one after another; the others run a block's threads as
OS threads (ctypes releases the GIL), meeting at `threading.Barrier`s as a block's warps meet at
bar.sync, a warp's lanes exchanging values through a table for each shuffle. It checks the
kernels' index arithmetic, guards and reductions against onnxruntime; it says nothing about
speed. The TF32 GEMMs' inline PTX is emulated too: `mma.sync.m16n8k8` (.tf32) as a warp
collective on the fragment layouts of the PTX ISA ("Matrix fragments for mma.m16n8k8"; the
operands' low 13 bits ignored), `cvt.rna.tf32.f32`, and `cp.async` with its commit groups: a
copy lands as late as `cp.async.wait_group` allows (when the group must be complete), so a
kernel that reads a stage before waiting for it, or overwrites one still being read, computes
a wrong answer here too. Hopper's `wgmma.mma_async` (m64nNk8 .f32.tf32.tf32, both operands by
shared-memory descriptors; dlc/targets/cuda/wgmma_gemm.py) runs as a warpgroup collective (128
threads meet): the descriptors are decoded and the layout (interleaved core matrices, or the
32/64/128-byte swizzles XORing address bits 4-6 with 7-9 of the shared-window address) applied as
the PTX ISA says ("Matrix Descriptor Format", "Shared Memory Matrix Layout"), and its rules are
checked rather than assumed: a cp.async issued into shared memory that a wgmma not yet waited for
(`wgmma.wait_group`) reads, a wgmma reading copies whose thread has not run
`fence.proxy.async.shared::cta` since they landed, and a wgmma without a `wgmma.fence` since the
thread's last commit are errors. Mirrors the CUDA programming model's thread hierarchy (CUDA C++
Programming Guide, "Thread Hierarchy", "Warp Shuffle Functions", "Asynchronous Data Copies"; PTX
ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate").
"""

from __future__ import annotations

import ctypes
import re
import threading

import numpy as np

from dlc.errors import DlcError

_REGISTERS = ("tid.x", "ctaid.x", "ctaid.y", "ctaid.z")


SHARED_FLOATS = (227 << 10) // 4  # a dynamic shared array: the most one sm_90 block may have
MISALIGN = 48  # bytes: where a shared array that asks for 1024-byte alignment starts past it

# The inline PTX the TF32 GEMMs use (dlc/targets/cuda/codegen.py, tf32_gemm.py) -> host calls.
_ASM = [
    (r'call void asm sideeffect "cp\.async\.c[ag]\.shared\.global \[\$0\], \[\$1\], (\d+), \$2;", "[^"]*"\(',
     r"call void @emu_cp_async(i32 \1, "),
    (r'call void asm sideeffect "cp\.async\.commit_group;", "[^"]*"\(\)', "call void @emu_commit()"),
    (r'call void asm sideeffect "cp\.async\.wait_group (\d+);", "[^"]*"\(\)', r"call void @emu_wait(i32 \1)"),
    (r'call i32 asm "cvt\.rna\.tf32\.f32 \$0, \$1;", "[^"]*"\(', "call i32 @emu_tf32("),
    (r'call \{ float, float, float, float \} asm "mma\.sync\.aligned\.m16n8k8\.row\.col\.f32\.tf32\.tf32\.f32 '
     r'[^"]*", "[^"]*"\(', "call { float, float, float, float } @emu_mma_struct("),
    (r'call \{ i32, i32, i32, i32 \} asm "ldmatrix\.sync\.aligned\.m8n8\.x4\.shared\.b16 [^"]*", "[^"]*"\(',
     "call { i32, i32, i32, i32 } @emu_ldmatrix_struct("),
    (r'call void asm sideeffect "fence\.proxy\.async\.shared::cta;", "[^"]*"\(\)', "call void @emu_fence_proxy()"),
    (r'call void asm sideeffect "wgmma\.fence\.sync\.aligned;", "[^"]*"\(\)', "call void @emu_wgmma_fence()"),
    (r'call void asm sideeffect "wgmma\.commit_group\.sync\.aligned;", "[^"]*"\(\)',
     "call void @emu_wgmma_commit()"),
    (r'call void asm sideeffect "wgmma\.wait_group\.sync\.aligned (\d+);", "[^"]*"\(\)',
     r"call void @emu_wgmma_wait(i32 \1)"),
    (r'call (\{ (?:float, )*float \}) asm sideeffect "\{ \.reg \.pred p; setp\.ne\.b32 p, \$\d+, 0; '
     r'wgmma\.mma_async\.sync\.aligned\.m64n(\d+)k8\.f32\.tf32\.tf32 [^"]*", "[^"]*"\(',
     r"call \1 @emu_wgmma_struct_\2("),
]
# mma's four results as the struct the kernels extract them from, through a host callback.
_MMA_STRUCT = """
define internal { float, float, float, float } @emu_mma_struct(i32 %a0, i32 %a1, i32 %a2, i32 %a3, i32 %b0,
    i32 %b1, float %c0, float %c1, float %c2, float %c3) {
  %d = alloca [4 x float], align 4
  call void @emu_mma(ptr %d, i32 %a0, i32 %a1, i32 %a2, i32 %a3, i32 %b0, i32 %b1, float %c0, float %c1,
                     float %c2, float %c3)
  %p1 = getelementptr float, ptr %d, i32 1
  %p2 = getelementptr float, ptr %d, i32 2
  %p3 = getelementptr float, ptr %d, i32 3
  %d0 = load float, ptr %d
  %d1 = load float, ptr %p1
  %d2 = load float, ptr %p2
  %d3 = load float, ptr %p3
  %s0 = insertvalue { float, float, float, float } undef, float %d0, 0
  %s1 = insertvalue { float, float, float, float } %s0, float %d1, 1
  %s2 = insertvalue { float, float, float, float } %s1, float %d2, 2
  %s3 = insertvalue { float, float, float, float } %s2, float %d3, 3
  ret { float, float, float, float } %s3
}
"""
_LDMATRIX_STRUCT = """
define internal { i32, i32, i32, i32 } @emu_ldmatrix_struct(ptr %row) {
  %d = alloca [4 x i32], align 4
  call void @emu_ldmatrix(ptr %d, ptr %row)
  %p1 = getelementptr i32, ptr %d, i32 1
  %p2 = getelementptr i32, ptr %d, i32 2
  %p3 = getelementptr i32, ptr %d, i32 3
  %d0 = load i32, ptr %d
  %d1 = load i32, ptr %p1
  %d2 = load i32, ptr %p2
  %d3 = load i32, ptr %p3
  %s0 = insertvalue { i32, i32, i32, i32 } undef, i32 %d0, 0
  %s1 = insertvalue { i32, i32, i32, i32 } %s0, i32 %d1, 1
  %s2 = insertvalue { i32, i32, i32, i32 } %s1, i32 %d2, 2
  %s3 = insertvalue { i32, i32, i32, i32 } %s2, i32 %d3, 3
  ret { i32, i32, i32, i32 } %s3
}
"""


def _wgmma_struct(n: int) -> str:
    """m64nNk8's N / 2 accumulators through an array that the host callback updates in place."""
    count = n // 2
    struct = "{ " + ", ".join(["float"] * count) + " }"
    lines = [f"define internal {struct} @emu_wgmma_struct_{n}("
             + ", ".join([f"float %c{i}" for i in range(count)] + ["i64 %da", "i64 %db", "i32 %scale"]) + ") {",
             f"  %d = alloca [{count} x float], align 4"]
    for i in range(count):
        lines += [f"  %p{i} = getelementptr float, ptr %d, i32 {i}", f"  store float %c{i}, ptr %p{i}"]
    lines.append(f"  call void @emu_wgmma(ptr %d, i32 {n}, i64 %da, i64 %db, i32 %scale)")
    value = "undef"
    for i in range(count):
        lines += [f"  %l{i} = load float, ptr %p{i}", f"  %s{i} = insertvalue {struct} {value}, float %l{i}, {i}"]
        value = f"%s{i}"
    return "\n".join(lines + [f"  ret {struct} {value}", "}", ""])


def host_ir(llvm_ir: str) -> str:
    """The nvptx64 module rewritten to compile for the host."""
    text = llvm_ir
    for pattern, replacement in _ASM:
        text = re.sub(pattern, replacement, text)
    if "asm \"" in text:
        unknown = re.search(r'asm[^"]*"([^"]*)"', text).group(1)
        raise DlcError(f"the host emulation cannot run the inline PTX `{unknown}`")
    if "@emu_mma_struct(" in text:
        text += _MMA_STRUCT
    if "@emu_ldmatrix_struct(" in text:
        text += _LDMATRIX_STRUCT
    for n in sorted({int(n) for n in re.findall(r"@emu_wgmma_struct_(\d+)\(", text)}):
        text += _wgmma_struct(n)
    # Dynamic shared memory (`extern .shared`): an array as large as a block may use. One that asks
    # for 1024-byte alignment (the wgmma kernels: swizzles XOR absolute address bits) starts
    # MISALIGN bytes past it here, so that their run-time alignment is exercised.
    text = re.sub(r"(@\w+) = external addrspace\(3\) global \[0 x float\], align 1024",
                  rf"\1_storage = addrspace(3) global [{SHARED_FLOATS + MISALIGN // 4} x float] zeroinitializer, "
                  rf"align 1024\n\1 = alias [{SHARED_FLOATS} x float], getelementptr (i8, ptr addrspace(3) "
                  rf"\1_storage, i64 {MISALIGN})", text)
    text = re.sub(r"= external addrspace\(3\) global \[0 x float\]",
                  f"= addrspace(3) global [{SHARED_FLOATS} x float] zeroinitializer", text)
    text = text.replace('target triple = "nvptx64-nvidia-cuda"', "")
    text = text.replace("addrspace(1) ", "").replace("addrspace(3) ", "").replace("ptx_kernel ", "")
    text = text.replace("@llvm.nvvm.ex2.approx.f(", "@llvm.exp2.f32(")
    for register in _REGISTERS:
        text = text.replace(f"@llvm.nvvm.read.ptx.sreg.{register}(", f"@emu_{register.replace('.', '_')}(")
    text = text.replace("@llvm.nvvm.barrier0(", "@emu_barrier(")
    text = text.replace("@llvm.nvvm.shfl.sync.bfly.f32(", "@emu_shfl(")
    text = re.sub(r"declare float @llvm\.exp2\.f32\(float\)\n", "", text)
    return "declare float @llvm.exp2.f32(float)\n" + text


class _Threads(threading.local):
    tid = 0
    ctaid = (0, 0, 0)

    def start(self, tid: int, ctaid) -> None:
        self.tid, self.ctaid = tid, ctaid
        self.groups: list[list] = []  # committed cp.async groups not yet waited for, oldest first
        self.open: list = []  # cp.async copies since the last commit
        self.unfenced: set = set()  # 16-byte chunks its copies wrote since its last fence.proxy.async
        self.wgmma_fenced = False  # a wgmma.fence since its last wgmma.commit_group


def _tf32_round(value: float) -> int:
    """cvt.rna.tf32.f32: the float's bits rounded to 10 mantissa bits, to nearest, ties away."""
    bits = int(np.float32(value).view(np.uint32))
    if bits & 0x7F800000 == 0x7F800000:  # inf and NaN stay
        return int(np.uint32(bits).view(np.int32))
    return int(np.uint32((bits + 0x1000) & 0xFFFFE000).view(np.int32))


def _mma_m16n8k8(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """D = A B + C of one warp: a [32, 4] and b [32, 2] TF32 bits, c [32, 4] floats, per lane
    (PTX ISA, "Matrix fragments for mma.m16n8k8", .tf32); the operands' low 13 bits ignored."""
    def tf32(bits):
        return (np.asarray(bits, np.int64).astype(np.uint32) & 0xFFFFE000).view(np.float32).astype(np.float64)

    lane = np.arange(32)
    g, t = lane // 4, lane % 4
    A, B, C = np.zeros((16, 8)), np.zeros((8, 8)), np.zeros((16, 8))
    A[g, t], A[g + 8, t], A[g, t + 4], A[g + 8, t + 4] = (tf32(a[:, i]) for i in range(4))
    B[t, g], B[t + 4, g] = tf32(b[:, 0]), tf32(b[:, 1])
    C[g, 2 * t], C[g, 2 * t + 1], C[g + 8, 2 * t], C[g + 8, 2 * t + 1] = (c[:, i] for i in range(4))
    D = (A @ B + C).astype(np.float32)
    return np.stack([D[g, 2 * t], D[g, 2 * t + 1], D[g + 8, 2 * t], D[g + 8, 2 * t + 1]], axis=1)


class Emulator:
    """The host build of a module of kernels; `run(plan, weights, feeds)` as CudaExecutable.run."""

    def __init__(self, llvm_ir: str):
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        self.local = _Threads()
        self.warps: dict = {}
        self.block_barrier = None
        self.lock = threading.Lock()
        self.failures: list = []  # rule violations the callbacks saw (ctypes drops their exceptions)
        self.wgmma_kernel = False
        local = self.local
        self._callbacks = {
            "emu_tid_x": ctypes.CFUNCTYPE(ctypes.c_int32)(lambda: local.tid),
            "emu_ctaid_x": ctypes.CFUNCTYPE(ctypes.c_int32)(lambda: local.ctaid[0]),
            "emu_ctaid_y": ctypes.CFUNCTYPE(ctypes.c_int32)(lambda: local.ctaid[1]),
            "emu_ctaid_z": ctypes.CFUNCTYPE(ctypes.c_int32)(lambda: local.ctaid[2]),
            "emu_barrier": ctypes.CFUNCTYPE(None)(lambda: self.block_barrier.wait(timeout=60)),
            "emu_shfl": ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int32, ctypes.c_float, ctypes.c_int32,
                                         ctypes.c_int32)(self._shuffle),
            "emu_cp_async": ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)(
                self._cp_async),
            "emu_commit": ctypes.CFUNCTYPE(None)(self._commit),
            "emu_wait": ctypes.CFUNCTYPE(None, ctypes.c_int32)(self._wait),
            "emu_tf32": ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_float)(_tf32_round),
            "emu_mma": ctypes.CFUNCTYPE(None, ctypes.c_void_p, *[ctypes.c_int32] * 6, *[ctypes.c_float] * 4)(
                self._mma),
            "emu_ldmatrix": ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(self._ldmatrix),
            "emu_fence_proxy": ctypes.CFUNCTYPE(None)(self._fence_proxy),
            "emu_wgmma_fence": ctypes.CFUNCTYPE(None)(lambda: setattr(local, "wgmma_fenced", True)),
            "emu_wgmma_commit": ctypes.CFUNCTYPE(None)(self._wgmma_commit),
            "emu_wgmma_wait": ctypes.CFUNCTYPE(None, ctypes.c_int32)(self._wgmma_wait),
            "emu_wgmma": ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint64,
                                          ctypes.c_int32)(self._wgmma),
        }
        for name, callback in self._callbacks.items():
            llvm.add_symbol(name, ctypes.cast(callback, ctypes.c_void_p).value)
        text = host_ir(llvm_ir)
        signatures = {"emu_barrier": "void ()", "emu_shfl": "float (i32, float, i32, i32)",
                      "emu_cp_async": "void (i32, ptr, ptr, i32)", "emu_commit": "void ()", "emu_wait": "void (i32)",
                      "emu_tf32": "i32 (float)",
                      "emu_mma": "void (ptr, i32, i32, i32, i32, i32, i32, float, float, float, float)",
                      "emu_ldmatrix": "void (ptr, ptr)", "emu_fence_proxy": "void ()", "emu_wgmma_fence": "void ()",
                      "emu_wgmma_commit": "void ()", "emu_wgmma_wait": "void (i32)",
                      "emu_wgmma": "void (ptr, i32, i64, i64, i32)"}
        for name in self._callbacks:
            signature = signatures.get(name, "i32 ()")
            returns, arguments = signature.split(" ", 1)
            text = re.sub(rf"declare [^\n]*@{name}\([^\n]*\)\n", "", text)
            text = f"declare {returns} @{name}{arguments}\n" + text
        module = llvm.parse_assembly(text)
        module.verify()
        target = llvm.Target.from_default_triple().create_target_machine(opt=2)
        self.engine = llvm.create_mcjit_compiler(module, target)
        self.engine.finalize_object()
        self.text = text

    def _shuffle(self, mask, value, offset, clamp):
        lane, warp = self.local.tid % 32, self.local.tid // 32
        table, barrier = self.warps[warp]
        table[lane] = value
        barrier.wait(timeout=60)
        other = table[lane ^ offset]
        barrier.wait(timeout=60)
        return other

    def _cp_async(self, nbytes, dst, src, size) -> None:
        if self.wgmma_kernel:
            chunk = dst & ~15
            with self.lock:
                reading = [c for state in self.inflight.values() for c in state["open"] + state["groups"]]
                if any(chunk in c for c in reading):
                    self._fail("a cp.async into shared memory that a wgmma not yet waited for "
                               "(wgmma.wait_group) reads")
                self.local.open.append((nbytes, dst, src, size))
            return
        self.local.open.append((nbytes, dst, src, size))

    def _fail(self, message: str) -> None:
        self.failures.append(DlcError(f"host emulation: {message} (thread {self.local.tid}, block "
                                      f"{self.local.ctaid})"))

    def _commit(self) -> None:
        with self.lock:
            self.local.groups.append(self.local.open)
            self.local.open = []

    def _wait(self, pending: int) -> None:
        """cp.async.wait_group: the copies of all but the `pending` youngest groups land now."""
        while len(self.local.groups) > pending:
            with self.lock:
                landing = self.local.groups.pop(0)
            for nbytes, dst, src, size in landing:
                ctypes.memmove(dst, src, size)
                ctypes.memset(dst + size, 0, nbytes - size)  # the rest of the copy: zero filled
                if self.wgmma_kernel:  # written through the generic proxy: wgmma may not see it yet
                    with self.lock:
                        self.local.unfenced.add(dst & ~15)

    def _mma(self, out, *operands):
        lane, warp = self.local.tid % 32, self.local.tid // 32
        (a, b, c, d), barrier = self.mma_tables[warp], self.warps[warp][1]
        a[lane], b[lane], c[lane] = operands[:4], operands[4:6], operands[6:]
        if barrier.wait(timeout=60) == 0:  # one lane multiplies for the warp
            d[:] = _mma_m16n8k8(a, b, c)
        barrier.wait(timeout=60)
        ctypes.memmove(out, d[lane].ctypes.data, 16)

    def _ldmatrix(self, out, row):
        """ldmatrix.x4 (b16): lane l gets word l % 4 of row l / 4 of the matrices whose rows
        lanes 8j .. 8j + 7 address."""
        lane, warp = self.local.tid % 32, self.local.tid // 32
        (rows, *_), barrier = self.mma_tables[warp], self.warps[warp][1]
        rows[lane, 0] = row
        barrier.wait(timeout=60)
        words = [int(rows[8 * j + lane // 4, 0]) + 4 * (lane % 4) for j in range(4)]
        barrier.wait(timeout=60)
        for j, address in enumerate(words):
            ctypes.memmove(out + 4 * j, address, 4)

    def _fence_proxy(self) -> None:
        with self.lock:
            self.local.unfenced.clear()

    def _wgmma_commit(self) -> None:
        self.local.wgmma_fenced = False
        if self.local.tid % 128 == 0:  # the warpgroup's bookkeeping, by its first thread
            with self.lock:
                state = self.inflight[self.local.tid // 128]
                state["groups"].append(set().union(*state["open"]))
                state["open"] = []

    def _wgmma_wait(self, pending: int) -> None:
        if self.local.tid % 128 == 0:
            with self.lock:
                groups = self.inflight[self.local.tid // 128]["groups"]
                del groups[:max(0, len(groups) - pending)]

    def _operand(self, descriptor: int, rows: int):
        """A K-major rows x 8 TF32 operand as a wgmma descriptor names it (PTX ISA, "Matrix
        Descriptor Format"; "Shared Memory Matrix Layout"): (values, low 13 bits dropped, as
        float64; the host addresses of the 16-byte chunks read)."""
        start, lbo, sbo = ((descriptor >> shift & 0x3FFF) << 4 for shift in (0, 16, 32))
        base_offset, mode = descriptor >> 49 & 7, descriptor >> 62 & 3
        if base_offset:
            self._fail(f"a wgmma descriptor with base offset {base_offset} (not emulated)")
        r, k_bytes = np.arange(rows)[:, None], 4 * np.arange(8)[None, :]
        if mode == 0:  # interleave: 8 x 16-byte core matrices, LBO apart in K and SBO in M/N
            address = start + (r // 8) * sbo + (k_bytes // 16) * lbo + (r % 8) * 16 + k_bytes % 16
        else:  # 128/64/32-byte swizzle: 8 rows `width` apart, then 16-byte chunk bits XOR row bits
            width = {1: 128, 2: 64, 3: 32}[mode]
            linear = start + (r // 8) * sbo + (r % 8) * width + k_bytes
            address = linear ^ (((linear >> 7) & (width // 16 - 1)) << 4)
        offset = (address - (self.shared_base & 0x3FFFF)) % (1 << 18)  # from the shared window's start
        if offset.max() + 4 > SHARED_FLOATS * 4:
            self._fail("a wgmma descriptor addressing past the block's shared memory")
            offset = np.minimum(offset, SHARED_FLOATS * 4 - 4)
        bits = self.shared_words[offset // 4] & np.uint32(0xFFFFE000)
        return bits.view(np.float32).astype(np.float64), set((self.shared_base + (offset & ~15)).ravel().tolist())

    def _wgmma(self, out, n, desc_a, desc_b, scale):
        """wgmma.mma_async m64nNk8 .f32.tf32.tf32 of one warpgroup: D = A B (+ D where scale-d)."""
        lane, group = self.local.tid % 128, self.local.tid // 128
        if not self.local.wgmma_fenced:
            self._fail("a wgmma without a wgmma.fence since the thread's last wgmma.commit_group")
        state, count = self.warpgroups[group], n // 2
        state["acc"][lane, :count] = np.ctypeslib.as_array((ctypes.c_float * count).from_address(out))
        state["ops"][lane] = (n, desc_a, desc_b, scale)
        if state["barrier"].wait(timeout=60) == 0:  # one thread multiplies for the warpgroup
            if len(set(state["ops"])) != 1:
                self._fail("the threads of a warpgroup issued different wgmma operands")
            a, a_chunks = self._operand(desc_a, 64)
            b, b_chunks = self._operand(desc_b, n)
            chunks = a_chunks | b_chunks
            with self.lock:
                flying = {dst & ~15 for copies in self.copies.values()
                          for group in [copies["open"], *copies["groups"]] for _, dst, _, _ in group}
                if chunks & flying:
                    self._fail("a wgmma reading shared memory whose cp.async copies have not landed "
                               "(cp.async.wait_group)")
                elif any(chunks & written for written in self.unfenced.values()):
                    self._fail("a wgmma reading cp.async copies without a fence.proxy.async.shared::cta "
                               "by their thread since they landed")
                self.inflight[group]["open"].append(chunks)
            # Accumulator d[4i + j] of thread t: row 16 (t / 32) + (t % 32) / 4 + 8 (j / 2),
            # column 8i + 2 (t % 4) + j % 2 (PTX ISA, wgmma .m64nNk8 .f32 accumulator fragments).
            t, reg = np.arange(128)[:, None], np.arange(count)[None, :]
            j = reg % 4
            rows = 16 * (t // 32) + (t % 32) // 4 + 8 * (j // 2)
            cols = 8 * (reg // 4) + 2 * (t % 4) + j % 2
            d = a @ b.T
            if scale:
                d[rows, cols] += state["acc"][:, :count]
            state["out"][:, :count] = d[rows, cols].astype(np.float32)
        state["barrier"].wait(timeout=60)
        ctypes.memmove(out, state["out"][lane].ctypes.data, 4 * count)

    def launch(self, kernel: str, grid, block, pointers: list[int]) -> None:
        address = self.engine.get_function_address(kernel)
        function = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(pointers))(address)
        body = self.text[self.text.index(f"@{kernel}("):]
        body = body[:body.index("\n}\n")]
        threaded = any(f"@{name}(" in body for name in ("emu_barrier", "emu_shfl", "emu_mma_struct",
                                                         "emu_ldmatrix_struct"))
        self.wgmma_kernel = "@emu_wgmma_struct_" in body
        threaded = threaded or self.wgmma_kernel
        threads = block[0]
        if self.wgmma_kernel:
            if threads % 128:
                raise DlcError(f"host emulation: kernel {kernel} issues wgmma with {threads} threads a block "
                               "(whole warpgroups of 128)")
            self.shared_base = self.engine.get_global_value_address(f"{kernel}_smem_storage") + MISALIGN
            self.shared_words = np.ctypeslib.as_array((ctypes.c_uint32 * SHARED_FLOATS).from_address(self.shared_base))
        for z in range(grid[2]):
            for y in range(grid[1]):
                for x in range(grid[0]):
                    if not threaded:
                        for t in range(threads):
                            self.local.start(t, (x, y, z))
                            function(*pointers)
                        continue
                    self.block_barrier = threading.Barrier(threads)
                    self.warps = {w: ([0.0] * 32, threading.Barrier(32)) for w in range(-(-threads // 32))}
                    self.mma_tables = {w: (np.zeros((32, 4), np.int64), np.zeros((32, 2), np.int64),
                                           np.zeros((32, 4), np.float32), np.zeros((32, 4), np.float32))
                                       for w in self.warps}
                    groups = range(threads // 128 if self.wgmma_kernel else 0)
                    self.warpgroups = {w: {"barrier": threading.Barrier(128), "ops": [None] * 128,
                                           "acc": np.zeros((128, 128), np.float32),
                                           "out": np.zeros((128, 128), np.float32)} for w in groups}
                    self.inflight = {w: {"open": [], "groups": []} for w in groups}
                    self.unfenced, self.copies = {}, {}
                    errors = []

                    def thread(t, where=(x, y, z), errors=errors):
                        self.local.start(t, where)
                        with self.lock:  # what other threads check of this one's copies
                            self.unfenced[t], self.copies[t] = self.local.unfenced, self.local.__dict__
                        try:
                            function(*pointers)
                        except Exception as error:  # noqa: BLE001 - reported below
                            errors.append(error)

                    workers = [threading.Thread(target=thread, args=(t,)) for t in range(threads)]
                    for w in workers:
                        w.start()
                    for w in workers:
                        w.join()
                    if errors:
                        raise errors[0]
                    if self.failures:
                        raise self.failures[0]

    def run(self, plan: dict, weights: dict, feeds: dict) -> dict[str, np.ndarray]:
        buffers = [np.zeros(max(1, int(np.prod(b["shape"], dtype=np.int64))), b.get("dtype", "float32"))
                   for b in plan["buffers"]]
        for buffer, entry in zip(buffers, plan["buffers"]):
            if entry["kind"] == "weight" and entry["name"] in weights:
                buffer[:] = np.asarray(weights[entry["name"]]).reshape(-1)
        for spec in plan["inputs"]:
            buffers[spec["buffer"]][:] = np.asarray(feeds[spec["name"]]).reshape(-1)
        for launch in plan["launches"]:
            self.launch(launch["kernel"], launch["grid"], launch["block"],
                        [buffers[i].ctypes.data for i in launch["args"]])
        failed = [b["message"] for b, buffer in zip(plan["buffers"], buffers) if b["kind"] == "check" and buffer[0]]
        if failed:
            raise DlcError(f"cuda run failed: {failed[0]}", "check the values fed to the model")
        return {spec["name"]: buffers[spec["buffer"]].reshape(spec["shape"]).copy() for spec in plan["outputs"]}
