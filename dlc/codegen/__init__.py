"""Native code generation: `loops`-phase IR to LLVM IR, then to machine code.

llvm_emitter (the driver) with its rules by concern: emit_ops (arith/math/affine/memref/scf),
parallel_loops (dlc.parallel loops on the thread pool), gemm_calls (micro-kernel calls), over
emitter_base, llvm_types and runtime_abi; ukernels and im2col generate the GEMM micro-kernel
and its im2col blocks (their contract: dialects/gemm_ukernel.py); native compiles to objects.
"""
