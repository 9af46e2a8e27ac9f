"""Load x86-64 ELF relocatable objects (an artifact's `model.o`, ...) into this process.

A run then needs neither LLVM nor a system linker: llvmlite's library alone costs a process
40 MB of resident memory and MCJIT 10 MB more, more than a small model's weights and
activations (an MLP: 3 MB). This does what LLVM's RuntimeDyldELF does for MCJIT, for the
subset of ELF that LLVM's x86-64 code generator emits for dlc's modules (relocation model
pic, code model small), after the System V x86-64 psABI (section 4.4, relocations):

* every SHF_ALLOC section is copied into one anonymous mapping: code, then read-only data,
  then writable data, each on its own pages, mapped R+X, R and R+W once relocated;
* symbols resolve to the objects' own global definitions first (the parts of a split
  module call each other), then to the process (libc, libm: memcpy, expf, pthread_*);
* a call to the process (PLT32) goes through a stub, `jmp *slot(%rip)`, and a GOT-relative
  load (GOTPCREL) reads a slot, both placed next to the code so that 32-bit displacements
  reach them wherever libc lies.

Anything else (another machine, REL sections, COMMON or TLS symbols, 32-bit absolute
relocations) raises `UnsupportedObject`; callers then fall back to MCJIT.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ElfImage", "UnresolvedSymbol", "UnsupportedObject", "supported_host"]

# ELF constants (System V gABI and the x86-64 psABI).
EM_X86_64 = 62
ET_REL = 1
SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 4, 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_TLS = 0x1, 0x2, 0x4, 0x400
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
STB_LOCAL = 0
STT_SECTION, STT_TLS = 3, 6
R_NONE, R_64, R_PC32, R_PLT32, R_GOTPCREL, R_32, R_32S, R_PC64 = 0, 1, 2, 4, 9, 10, 11, 24
R_GOTPCRELX, R_REX_GOTPCRELX = 41, 42
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4

_SECTION = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
_STUB_BYTES = 8  # jmp *disp32(%rip) is 6 bytes; 8 keeps stubs aligned
_SKIPPED = (".eh_frame",)  # unwind tables: nothing in a run unwinds through generated code


class UnsupportedObject(Exception):
    """The object uses something this loader does not implement (the caller uses MCJIT)."""


class UnresolvedSymbol(Exception):
    """The objects call a function that neither they nor this process define (MCJIT would
    abort the process on it)."""


def supported_host() -> bool:
    import platform
    import sys

    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


@dataclass
class _Section:
    name: str
    kind: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int


@dataclass
class _Symbol:
    name: str
    bind: int
    kind: int
    section: int
    value: int


class _Object:
    """One parsed relocatable object."""

    def __init__(self, data: bytes, index: int):
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise UnsupportedObject(f"object {index}: not a 64-bit little-endian ELF file")
        e_type, e_machine = struct.unpack_from("<HH", data, 16)
        if e_type != ET_REL or e_machine != EM_X86_64:
            raise UnsupportedObject(f"object {index}: not an x86-64 relocatable object")
        shoff, = struct.unpack_from("<Q", data, 40)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
        if shentsize != _SECTION.size:
            raise UnsupportedObject(f"object {index}: unexpected section header size {shentsize}")
        raw = [_SECTION.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        names = raw[shstrndx]
        self.data = data
        self.sections = [_Section(self._string(names[4], name), kind, flags, offset, size, link, info, align)
                         for name, kind, flags, _, offset, size, link, info, align, _ in raw]
        self.symbols: list[_Symbol] = []
        for section in self.sections:
            if section.kind == SHT_REL:
                raise UnsupportedObject(f"object {index}: REL relocations ({section.name})")
            if section.kind == SHT_SYMTAB:
                strings = self.sections[section.link].offset
                for at in range(section.offset, section.offset + section.size, _SYMBOL.size):
                    name, info, _, shndx, value, _ = _SYMBOL.unpack_from(data, at)
                    self.symbols.append(_Symbol(self._string(strings, name), info >> 4, info & 0xF, shndx, value))

    def _string(self, table_offset: int, offset: int) -> str:
        start = table_offset + offset
        return self.data[start:self.data.index(b"\0", start)].decode()

    def loaded(self, index: int) -> bool:
        section = self.sections[index]
        return bool(section.flags & SHF_ALLOC) and section.size > 0 and section.name not in _SKIPPED

    def relocations(self):
        """(target section index, offset, type, symbol, addend) of every RELA entry."""
        for section in self.sections:
            if section.kind != SHT_RELA or not self.loaded(section.info):
                continue
            for at in range(section.offset, section.offset + section.size, _RELA.size):
                offset, info, addend = _RELA.unpack_from(self.data, at)
                yield section.info, offset, info & 0xFFFFFFFF, self.symbols[info >> 32], addend


@functools.cache
def _process_libraries() -> tuple[ctypes.CDLL, ...]:
    libraries = [ctypes.CDLL(None)]
    for name in ("m", "pthread"):
        path = ctypes.util.find_library(name)
        if path:
            libraries.append(ctypes.CDLL(path))
    return tuple(libraries)


def _process_symbol(name: str) -> int | None:
    for library in _process_libraries():
        try:
            return ctypes.cast(getattr(library, name), ctypes.c_void_p).value
        except AttributeError:
            continue
    return None


def _page_align(n: int) -> int:
    return (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE


def _align(n: int, alignment: int) -> int:
    alignment = max(alignment, 1)
    return (n + alignment - 1) // alignment * alignment


class ElfImage:
    """Objects loaded, relocated and protected in one mapping; `address(symbol)` of a global."""

    def __init__(self, objects: Sequence[bytes]):
        parsed = [_Object(data, i) for i, data in enumerate(objects)]
        # Global definitions across the objects: a split module's parts call each other.
        defined: dict[str, tuple[int, _Symbol]] = {}
        for i, obj in enumerate(parsed):
            for symbol in obj.symbols:
                if symbol.kind == STT_TLS or symbol.section == SHN_COMMON:
                    raise UnsupportedObject(f"symbol {symbol.name!r}: TLS or COMMON")
                if symbol.bind != STB_LOCAL and symbol.section != SHN_UNDEF:
                    if symbol.name in defined:
                        raise UnsupportedObject(f"symbol {symbol.name!r} is defined twice")
                    defined[symbol.name] = (i, symbol)

        # Slots for what GOT-relative loads read and what calls into the process jump through.
        external = sorted({symbol.name for obj in parsed for *_, symbol, _ in obj.relocations()
                           if symbol.section == SHN_UNDEF and symbol.name not in defined})
        slotted = sorted(set(external) | {symbol.name for obj in parsed for _, _, kind, symbol, _ in obj.relocations()
                                          if kind in (R_GOTPCREL, R_GOTPCRELX, R_REX_GOTPCRELX)})

        # Layout: code and stubs | read-only data and slots | writable data.
        placement: dict[tuple[int, int], int] = {}
        segments = [0, 0, 0]

        def segment_of(section: _Section) -> int:
            if section.flags & SHF_EXECINSTR:
                return 0
            return 2 if section.flags & SHF_WRITE else 1

        for i, obj in enumerate(parsed):
            for s, section in enumerate(obj.sections):
                if obj.loaded(s):
                    if section.flags & SHF_TLS:
                        raise UnsupportedObject(f"TLS section {section.name}")
                    if section.name.startswith((".init_array", ".fini_array", ".ctors", ".dtors")):
                        raise UnsupportedObject(f"constructors or destructors ({section.name})")
                    seg = segment_of(section)
                    segments[seg] = _align(segments[seg], section.align)
                    placement[(i, s)] = seg, segments[seg]
                    segments[seg] += section.size
        segments[0] = _align(segments[0], 16)
        stubs_at = segments[0]
        segments[0] += _STUB_BYTES * len(external)
        segments[1] = _align(segments[1], 8)
        slots_at = segments[1]
        segments[1] += 8 * len(slotted)
        starts = [0, _page_align(segments[0]), _page_align(segments[0]) + _page_align(segments[1])]
        size = max(starts[2] + _page_align(segments[2]), mmap.PAGESIZE)

        self._memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                 prot=PROT_READ | PROT_WRITE)
        self._anchor = ctypes.c_char.from_buffer(self._memory)  # keeps the mapping's address valid
        base = ctypes.addressof(self._anchor)
        memory = self._memory
        section_address = {key: base + starts[seg] + offset for key, (seg, offset) in placement.items()}
        for (i, s), address in section_address.items():
            section = parsed[i].sections[s]
            if section.kind != SHT_NOBITS:
                start = address - base
                memory[start:start + section.size] = parsed[i].data[section.offset:section.offset + section.size]

        process = {}
        for name in external:
            process[name] = _process_symbol(name)
            if process[name] is None:
                raise UnresolvedSymbol(name)

        def value_of(i: int, symbol: _Symbol) -> tuple[int, bool]:
            """(address, whether it is in the process rather than the image)."""
            if symbol.section == SHN_UNDEF:
                if symbol.name in defined:
                    return value_of(*defined[symbol.name])
                return process[symbol.name], True
            if symbol.section == SHN_ABS:
                return symbol.value, False
            key = (i, symbol.section)
            if key not in section_address:
                raise UnsupportedObject(f"symbol {symbol.name!r} lies in a section that is not loaded")
            return section_address[key] + symbol.value, False

        def resolve(name: str) -> int:
            if name in defined:
                return value_of(*defined[name])[0]
            if name in process:
                return process[name]
            raise UnsupportedObject(f"GOT slot for the local symbol {name!r}")

        slot = {name: base + starts[1] + slots_at + 8 * k for k, name in enumerate(slotted)}
        for name, address in slot.items():
            struct.pack_into("<Q", memory, address - base, resolve(name))
        stub = {name: base + starts[0] + stubs_at + _STUB_BYTES * k for k, name in enumerate(external)}
        for name, address in stub.items():
            displacement = slot[name] - (address + 6)
            memory[address - base:address - base + _STUB_BYTES] = (
                b"\xff\x25" + struct.pack("<i", displacement) + b"\xcc\xcc")

        for i, obj in enumerate(parsed):
            for s, offset, kind, symbol, addend in obj.relocations():
                place = section_address[(i, s)] + offset
                at = place - base
                if kind == R_NONE:
                    continue
                target, outside = value_of(i, symbol)
                if kind == R_64:
                    struct.pack_into("<Q", memory, at, (target + addend) & 0xFFFFFFFFFFFFFFFF)
                elif kind == R_PC64:
                    struct.pack_into("<q", memory, at, target + addend - place)
                elif kind in (R_PC32, R_PLT32):
                    if outside:
                        if kind != R_PLT32:
                            raise UnsupportedObject(f"PC-relative data reference to {symbol.name!r}")
                        target = stub[symbol.name]
                    _put_int32(memory, at, target + addend - place, symbol.name)
                elif kind in (R_GOTPCREL, R_GOTPCRELX, R_REX_GOTPCRELX):
                    _put_int32(memory, at, slot[symbol.name] + addend - place, symbol.name)
                else:
                    raise UnsupportedObject(f"relocation type {kind} (against {symbol.name!r})")

        self._symbols = {name: resolve(name) for name in defined}
        libc = _process_libraries()[0]
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for start, length, prot in ((starts[0], starts[1], PROT_READ | PROT_EXEC),
                                    (starts[1], starts[2] - starts[1], PROT_READ)):
            if length and libc.mprotect(base + start, length, prot) != 0:
                raise OSError(ctypes.get_errno(), "mprotect failed for the loaded code")

    def address(self, symbol: str) -> int:
        """Address of the global `symbol`; KeyError when no object defines it."""
        if symbol not in self._symbols:
            raise KeyError(f"symbol {symbol!r} is not defined in the loaded objects")
        return self._symbols[symbol]


def _put_int32(memory: mmap.mmap, at: int, value: int, name: str) -> None:
    if not -(1 << 31) <= value < (1 << 31):
        raise UnsupportedObject(f"32-bit displacement to {name!r} out of range")
    struct.pack_into("<i", memory, at, value)
