"""LLVM IR text -> optimised object code -> functions callable in this process, with llvmlite.

Optimisation is LLVM's default O`n` pipeline (new pass manager); loading uses MCJIT's
`add_object_file`, so an artifact's `model.o` loads without xDSL or a system linker.
"""

from __future__ import annotations

import ctypes.util
import functools
from pathlib import Path

import llvmlite.binding as llvm

from dlc.errors import CompileError

__all__ = ["NativeModule", "compile_object", "host_caches", "host_cpu"]

# Per-core data caches assumed where Linux does not say (the project's reference machine,
# Emerald Rapids: 48 KiB L1d, 2 MiB L2).
DEFAULT_L1_BYTES = 48 << 10
DEFAULT_L2_BYTES = 2 << 20


@functools.cache
def _initialize() -> None:
    # llvmlite >= 0.45 initialises LLVM itself (llvm.initialize() raises); codegen still needs
    # the targets and asm printers registered.
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
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


class NativeModule:
    """An object file loaded into this process (MCJIT): look up its symbols' addresses.

    Keeps the execution engine (which owns the code pages) and its TargetMachine alive for as
    long as this object lives; call the addresses through ctypes.
    """

    def __init__(self, object_code: bytes):
        self._target_machine = _target_machine(None, None, opt_level=3)
        self._engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self._target_machine)
        self._object = llvm.ObjectFileRef.from_data(object_code)
        self._engine.add_object_file(self._object)
        self._engine.finalize_object()

    def address(self, symbol: str) -> int:
        """Address of the function `symbol`; KeyError when the object does not define it."""
        address = self._engine.get_function_address(symbol)
        if not address:
            raise KeyError(f"symbol {symbol!r} is not defined in the loaded object")
        return address
