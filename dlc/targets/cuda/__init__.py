"""The `cuda` target (issue 21): target and placement (target.py), kernels as nvptx64 LLVM IR and
PTX (codegen.py), and the runtime that launches them through the CUDA driver API (runtime.py)."""
