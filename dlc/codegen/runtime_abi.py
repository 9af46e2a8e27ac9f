"""What generated code asks of the runtime: the runtime context the entry receives and the
thread pool's `parallel` entry point (dlc/runtime/thread_pool.py runs it; its docstring gives
the protocol), as LLVM types and the helpers that call through them."""

from __future__ import annotations

from llvmlite import ir

from dlc.codegen.llvm_types import I64, PTR, VOID

# The runtime context the entry receives, as consecutive 8-byte fields.
RUNTIME_FIELDS = ("parallel", "num_threads", "profile")
# `parallel(worker, data, items)` (dlc/runtime/thread_pool.py) runs `worker(data, i)` for i < items.
PARALLEL_TYPE = ir.FunctionType(VOID, [PTR, PTR, I64])
WORKER_TYPE = ir.FunctionType(VOID, [PTR, I64])


def slot(b: ir.IRBuilder, data: ir.Value, i: int) -> ir.Value:
    """Address of the i-th 8-byte slot of a parallel region's argument block."""
    return b.gep(data, [ir.Constant(I64, i)], True, source_etype=I64)


def indirect_call(b: ir.IRBuilder, pointer: ir.Value, type: ir.FunctionType, args) -> ir.Value:
    """Call through a function pointer. llvmlite reads the callee's `function_type`, which an
    opaque pointer lacks, so the pointer is wrapped in a callee that has one."""
    return b.call(_TypedCallee(pointer, type), args)


class _TypedCallee:
    """A function pointer value with the function type llvmlite's CallInstr asks for."""

    def __init__(self, pointer: ir.Value, function_type: ir.FunctionType):
        self.pointer, self.function_type, self.type = pointer, function_type, pointer.type

    def get_reference(self) -> str:
        return self.pointer.get_reference()

