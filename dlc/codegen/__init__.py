"""Native code generation: `loops`-phase IR to LLVM IR (llvm_emitter), then to machine code
loaded into this process (native)."""
