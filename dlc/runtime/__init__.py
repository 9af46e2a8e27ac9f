"""The runtime: load an artifact and run it. Needs numpy (and llvmlite only where dlc's own
ELF loader does not apply); imports no compiler code (no xDSL, no onnx, nothing from
`dialects/`, `passes/`, `dlc.codegen` or the frontend): tests/test_layering.py keeps that wall.

    artifact.py     the artifact on disk: format, checks, read and write
    executable.py   a loaded model: inputs checked, one native call per run
    loader.py       object code into the process: elf_loader.py, else mcjit.py
    thread_pool.py  the native worker pool generated code calls (its IR: dlc/codegen)
    guard.py        checked runs: buffers between guard pages (--check-bounds)
    host.py         the machine: CPU flags, cores, caches
    memory_limit.py the memory limit every allocation is checked against
"""

from dlc.runtime.artifact import ALIGNMENT, MANIFEST_VERSION, aligned_empty, object_file_names
from dlc.runtime.executable import (
    ENTRY_SYMBOL,
    NativeExecutable,
    RuntimeContext,
    TensorSpec,
    check_inputs,
    load_artifact,
)
from dlc.runtime.host import cpuinfo_flags, default_threads

__all__ = [
    "ALIGNMENT", "ENTRY_SYMBOL", "MANIFEST_VERSION", "NativeExecutable", "RuntimeContext", "TensorSpec",
    "aligned_empty", "check_inputs", "cpuinfo_flags", "default_threads", "load_artifact",
    "object_file_names",
]
