"""Loading object code with llvmlite's MCJIT, where dlc's own ELF loader does not apply
(not x86-64 Linux, an object it does not handle, or DLC_LOADER=mcjit); and the host CPU as
LLVM names it. Imports llvmlite: a run that uses dlc's own loader never imports this module.
"""

from __future__ import annotations

import ctypes.util
import functools
from collections.abc import Sequence

import llvmlite.binding as llvm


@functools.cache
def initialize_llvm() -> None:
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


@functools.cache
def _initialize_all_targets() -> None:
    # Only for a cross compile: every target costs a process 10 MB of RSS.
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def host_cpu() -> tuple[str, str]:
    """(CPU name, LLVM feature string such as "+avx2,+fma,...") of this machine."""
    initialize_llvm()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def target_machine(cpu: str | None, features: str | None, opt_level: int,
                   triple: str | None = None) -> llvm.TargetMachine:
    """A fresh TargetMachine: reusing one across execution engines aborts LLVM (out of memory).
    `triple`: another instruction set than this host's (`--cpu aarch64`)."""
    initialize_llvm()
    if cpu is None:
        cpu, host_features = host_cpu()
        features = host_features if features is None else features
    if triple is not None:
        _initialize_all_targets()
        return llvm.Target.from_triple(triple).create_target_machine(
            cpu=cpu, features=features or "", opt=opt_level, reloc="pic", codemodel="default")
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(
        cpu=cpu, features=features or "", opt=opt_level, reloc="pic", codemodel="default"
    )


class NativeModule:
    """An object file loaded into this process (MCJIT): look up its symbols' addresses.

    Keeps the execution engine (which owns the code pages) and its TargetMachine alive for as
    long as this object lives; call the addresses through ctypes.
    """

    def __init__(self, objects: bytes | Sequence[bytes]):
        """Load one object file, or the parts of a split module (MCJIT links their symbols)."""
        self._target_machine = target_machine(None, None, opt_level=3)
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
