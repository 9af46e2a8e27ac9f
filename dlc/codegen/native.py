"""LLVM IR text -> optimised object code -> functions callable in this process, with llvmlite.

Optimisation is LLVM's default O`n` pipeline (new pass manager). `NativeModule` loads
object files with MCJIT's `add_object_file` (no xDSL, no system linker); on x86-64 Linux a
run uses dlc's own loader instead (elf_loader.py, chosen by `dlc.runtime.load_code`).
A large module is split (`split_module`) and its parts compiled at once, one process per
core: llvmlite serialises all LLVM calls of a process behind one lock, so threads would not
help, and LLVM compiles a module on one thread (like `clang -flto-jobs`/`-fsplit-lto-unit`
parallel code generation, but without a linker: the loader links the objects).
"""

from __future__ import annotations

import ctypes.util
import functools
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import llvmlite.binding as llvm

from dlc.errors import CompileError

__all__ = ["NativeModule", "compile_object", "compile_objects", "compile_jobs", "host_caches", "host_cpu"]

# Below this much IR text a module compiles in about a second: a second process (~0.1 s to
# start) would not pay. ResNet-50 has 4.4 MB, an MLP 30 KB.
MIN_PART_BYTES = 512 << 10
JOBS_VARIABLE = "DLC_COMPILE_JOBS"

# Per-core data caches assumed where Linux does not say (the project's reference machine,
# Emerald Rapids: 48 KiB L1d, 2 MiB L2).
DEFAULT_L1_BYTES = 48 << 10
DEFAULT_L2_BYTES = 2 << 20


@functools.cache
def _initialize() -> None:
    # llvmlite >= 0.45 initialises LLVM itself (llvm.initialize() raises); codegen still needs
    # the target and asm printer registered. The host's only: dlc compiles for the machine it
    # runs on, and registering all of LLVM's targets costs a process 10 MB of RSS at load.
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    # MCJIT resolves external symbols in this process; make sure libm's are there even when
    # the Python executable was not linked against it.
    libm = ctypes.util.find_library("m")
    if libm:
        llvm.load_library_permanently(libm)


def host_cpu() -> tuple[str, str]:
    """(CPU name, LLVM feature string such as "+avx2,+fma,...") of this machine."""
    _initialize()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


@functools.cache
def host_caches() -> tuple[int, int]:
    """(L1 data, L2) bytes per core of the CPU this process runs on, from Linux's sysfs
    cache description; the reference machine's sizes where it is missing. Tile sizes follow
    them: a Zen 4 core has 32 KiB and 1 MiB where an Emerald Rapids core has 48 KiB and 2 MiB."""
    return cache_sizes(Path("/sys/devices/system/cpu/cpu0/cache"))


def cache_sizes(directory: Path) -> tuple[int, int]:
    """(L1 data, L2) bytes from a sysfs cache directory (index*/level, type, size)."""
    sizes = {1: DEFAULT_L1_BYTES, 2: DEFAULT_L2_BYTES}
    units = {"K": 1 << 10, "M": 1 << 20}
    for index in sorted(directory.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if level not in sizes or kind not in ("Data", "Unified"):
            continue
        if text[-1:] in units and text[:-1].isdigit():
            sizes[level] = int(text[:-1]) * units[text[-1]]
        elif text.isdigit():
            sizes[level] = int(text)
    return sizes[1], sizes[2]


def _target_machine(cpu: str | None, features: str | None, opt_level: int) -> llvm.TargetMachine:
    """A fresh TargetMachine: reusing one across execution engines aborts LLVM (out of memory)."""
    _initialize()
    if cpu is None:
        cpu, host_features = host_cpu()
        features = host_features if features is None else features
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(
        cpu=cpu, features=features or "", opt=opt_level, reloc="pic", codemodel="default"
    )


def parse_llvm(llvm_ir: str) -> llvm.ModuleRef:
    """Parse and verify LLVM IR text; errors quote the offending IR."""
    _initialize()
    try:
        module = llvm.parse_assembly(llvm_ir)
        module.verify()
    except RuntimeError as error:
        raise CompileError(f"invalid LLVM IR: {error}\n--- IR ---\n{llvm_ir}") from error
    return module


def compile_object(
    llvm_ir: str, cpu: str | None = None, features: str | None = None, opt_level: int = 3
) -> bytes:
    """Optimise LLVM IR at `opt_level` (0-3) and return an ELF/Mach-O object for `cpu`
    (default: this host, with its features)."""
    module = parse_llvm(llvm_ir)
    tm = _target_machine(cpu, features, opt_level)
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    if opt_level > 0:
        tuning = llvm.create_pipeline_tuning_options(speed_level=opt_level)
        tuning.loop_vectorization = True
        tuning.slp_vectorization = True
        pass_builder = llvm.create_pass_builder(tm, tuning)
        pass_builder.getModulePassManager().run(module, pass_builder)
    return tm.emit_object(module)


def compile_jobs() -> int:
    """How many processes compile at once: the cores this process may use, or $DLC_COMPILE_JOBS."""
    override = os.environ.get(JOBS_VARIABLE)
    if override:
        try:
            return max(1, int(override))
        except ValueError:
            raise CompileError(f"{JOBS_VARIABLE}={override!r} is not a number of processes") from None
    from dlc.runtime import default_threads  # the cores this process may use

    return default_threads()


def compile_objects(
    llvm_ir: str, cpu: str | None = None, features: str | None = None, opt_level: int = 3,
    jobs: int | None = None,
) -> list[bytes]:
    """`compile_object` for a module that may be large: split into up to `jobs` parts
    (default `compile_jobs()`), compiled in parallel; the objects load together."""
    from dlc.codegen.split_module import split_module

    jobs = compile_jobs() if jobs is None else jobs
    parts = split_module(llvm_ir, min(jobs, max(1, len(llvm_ir) // MIN_PART_BYTES)))
    if len(parts) == 1:
        return [compile_object(llvm_ir, cpu, features, opt_level)]
    if cpu is None:
        cpu, host_features = host_cpu()
        features = host_features if features is None else features
    with tempfile.TemporaryDirectory(prefix="dlc-compile-") as scratch:
        workers = []
        try:
            for index, part in enumerate(parts[1:], start=1):
                source, target = Path(scratch, f"part{index}.ll"), Path(scratch, f"part{index}.o")
                source.write_text(part)
                workers.append((_start_worker(source, target, cpu, features or "", opt_level), target))
            objects = [compile_object(parts[0], cpu, features, opt_level)]
            for (process, target), part in zip(workers, parts[1:]):
                process.wait()
                if process.returncode == 0 and target.exists():
                    objects.append(target.read_bytes())
                else:  # the worker could not run (no memory, killed): compile here, or say why
                    objects.append(compile_object(part, cpu, features, opt_level))
        finally:
            for process, _ in workers:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    return objects


def _start_worker(source: Path, target: Path, cpu: str, features: str, opt_level: int) -> subprocess.Popen:
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
    return subprocess.Popen(
        [sys.executable, "-c", "from dlc.codegen.native import _worker; _worker()",
         str(source), str(target), cpu, features, str(opt_level)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _worker() -> None:
    """A compile process: IR file -> object file (written only when the compile succeeds)."""
    source, target, cpu, features, opt_level = sys.argv[1:6]
    code = compile_object(Path(source).read_text(), cpu, features, int(opt_level))
    partial = Path(target + ".partial")
    partial.write_bytes(code)
    partial.rename(target)


class NativeModule:
    """An object file loaded into this process (MCJIT): look up its symbols' addresses.

    Keeps the execution engine (which owns the code pages) and its TargetMachine alive for as
    long as this object lives; call the addresses through ctypes.
    """

    def __init__(self, objects: bytes | Sequence[bytes]):
        """Load one object file, or the parts of a split module (MCJIT links their symbols)."""
        self._target_machine = _target_machine(None, None, opt_level=3)
        self._engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self._target_machine)
        self._objects = [llvm.ObjectFileRef.from_data(code)
                         for code in ([objects] if isinstance(objects, bytes) else objects)]
        for obj in self._objects:
            self._engine.add_object_file(obj)
        self._engine.finalize_object()

    def address(self, symbol: str) -> int:
        """Address of the function `symbol`; KeyError when the object does not define it."""
        address = self._engine.get_function_address(symbol)
        if not address:
            raise KeyError(f"symbol {symbol!r} is not defined in the loaded object")
        return address
