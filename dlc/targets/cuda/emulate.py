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
a wrong answer here too. Mirrors the CUDA programming model's thread hierarchy (CUDA C++
Programming Guide, "Thread Hierarchy", "Warp Shuffle Functions", "Asynchronous Data Copies").
"""

from __future__ import annotations

import ctypes
import re
import threading

import numpy as np

from dlc.errors import DlcError

_REGISTERS = ("tid.x", "ctaid.x", "ctaid.y", "ctaid.z")


SHARED_FLOATS = (227 << 10) // 4  # a dynamic shared array: the most one sm_90 block may have

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
    # Dynamic shared memory (`extern .shared`): an array as large as a block may use.
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
                lambda nbytes, dst, src, size: local.open.append((nbytes, dst, src, size))),
            "emu_commit": ctypes.CFUNCTYPE(None)(self._commit),
            "emu_wait": ctypes.CFUNCTYPE(None, ctypes.c_int32)(self._wait),
            "emu_tf32": ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_float)(_tf32_round),
            "emu_mma": ctypes.CFUNCTYPE(None, ctypes.c_void_p, *[ctypes.c_int32] * 6, *[ctypes.c_float] * 4)(
                self._mma),
            "emu_ldmatrix": ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(self._ldmatrix),
        }
        for name, callback in self._callbacks.items():
            llvm.add_symbol(name, ctypes.cast(callback, ctypes.c_void_p).value)
        text = host_ir(llvm_ir)
        signatures = {"emu_barrier": "void ()", "emu_shfl": "float (i32, float, i32, i32)",
                      "emu_cp_async": "void (i32, ptr, ptr, i32)", "emu_commit": "void ()", "emu_wait": "void (i32)",
                      "emu_tf32": "i32 (float)",
                      "emu_mma": "void (ptr, i32, i32, i32, i32, i32, i32, float, float, float, float)",
                      "emu_ldmatrix": "void (ptr, ptr)"}
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

    def _commit(self) -> None:
        self.local.groups.append(self.local.open)
        self.local.open = []

    def _wait(self, pending: int) -> None:
        """cp.async.wait_group: the copies of all but the `pending` youngest groups land now."""
        while len(self.local.groups) > pending:
            for nbytes, dst, src, size in self.local.groups.pop(0):
                ctypes.memmove(dst, src, size)
                ctypes.memset(dst + size, 0, nbytes - size)  # the rest of the copy: zero filled

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

    def launch(self, kernel: str, grid, block, pointers: list[int]) -> None:
        address = self.engine.get_function_address(kernel)
        function = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(pointers))(address)
        body = self.text[self.text.index(f"@{kernel}("):]
        body = body[:body.index("\n}\n")]
        threaded = any(f"@{name}(" in body for name in ("emu_barrier", "emu_shfl", "emu_mma_struct",
                                                         "emu_ldmatrix_struct"))
        threads = block[0]
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
                    errors = []

                    def thread(t, where=(x, y, z), errors=errors):
                        self.local.start(t, where)
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
