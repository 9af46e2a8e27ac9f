"""Runs a cuda partition's kernels on the host, thread by thread, for tests without a GPU.

The nvptx64 LLVM IR of dlc/targets/cuda/codegen.py is rewritten for the host (address spaces
dropped, `ptx_kernel` a plain function) and JIT-compiled by llvmlite; the special registers
(tid, ctaid), `bar.sync` and `shfl.sync.bfly` become calls back into Python. Kernels without
barriers or shuffles run their threads one after another; the others run a block's threads as
OS threads (ctypes releases the GIL), meeting at `threading.Barrier`s as a block's warps meet at
bar.sync, a warp's lanes exchanging values through a table for each shuffle. It checks the
kernels' index arithmetic, guards and reductions against onnxruntime; it says nothing about
speed, and cannot run the TF32 path (inline PTX). Mirrors the CUDA programming model's thread
hierarchy (CUDA C++ Programming Guide, "Thread Hierarchy", "Warp Shuffle Functions").
"""

from __future__ import annotations

import ctypes
import re
import threading

import numpy as np

from dlc.errors import DlcError

_REGISTERS = ("tid.x", "ctaid.x", "ctaid.y", "ctaid.z")


def host_ir(llvm_ir: str) -> str:
    """The nvptx64 module rewritten to compile for the host."""
    if "asm \"" in llvm_ir:
        raise DlcError("the host emulation cannot run inline PTX (the TF32 tensor-core GEMM)")
    text = llvm_ir.replace('target triple = "nvptx64-nvidia-cuda"', "")
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
        }
        for name, callback in self._callbacks.items():
            llvm.add_symbol(name, ctypes.cast(callback, ctypes.c_void_p).value)
        text = host_ir(llvm_ir)
        for name in self._callbacks:
            signature = {"emu_barrier": "void ()", "emu_shfl": "float (i32, float, i32, i32)"}.get(name, "i32 ()")
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

    def launch(self, kernel: str, grid, block, pointers: list[int]) -> None:
        address = self.engine.get_function_address(kernel)
        function = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(pointers))(address)
        body = self.text[self.text.index(f"@{kernel}("):]
        body = body[:body.index("\n}\n")]
        threaded = "@emu_barrier(" in body or "@emu_shfl(" in body
        threads = block[0]
        for z in range(grid[2]):
            for y in range(grid[1]):
                for x in range(grid[0]):
                    if not threaded:
                        self.local.ctaid = (x, y, z)
                        for t in range(threads):
                            self.local.tid = t
                            function(*pointers)
                        continue
                    self.block_barrier = threading.Barrier(threads)
                    self.warps = {w: ([0.0] * 32, threading.Barrier(32)) for w in range(-(-threads // 32))}
                    errors = []

                    def thread(t, where=(x, y, z), errors=errors):
                        self.local.tid, self.local.ctaid = t, where
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
