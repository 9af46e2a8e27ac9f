"""Native code generation: the `loops` phase to LLVM IR (llvm_emitter) and LLVM IR to machine code (native)."""
