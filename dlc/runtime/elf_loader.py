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

`check_objects` first checks every offset, index and size the objects hold against the
file, the relocation types and targets, and that every symbol used is defined: a damaged
object (another machine, REL sections, TLS or COMMON symbols, 32-bit absolute relocations,
which pic code never has) raises `MalformedObject` and reaches neither this loader nor
MCJIT. What is well formed but not handled here (constructors, a GOT slot for a local
symbol) raises `UnsupportedObject`; callers then fall back to MCJIT.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ElfImage", "MalformedObject", "UnresolvedSymbol", "UnsupportedObject", "check_objects",
           "supported_host"]

# ELF constants (System V gABI and the x86-64 psABI).
EM_X86_64 = 62
ET_REL = 1
SHT_NULL, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 0, 2, 3, 4, 8, 9
# Section types LLVM's x86-64 ELF writer emits: null, progbits, symtab, strtab, rela, note,
# nobits, init/fini arrays, group, symtab_shndx, x86-64 unwind, LLVM's addrsig and GNU stack.
KNOWN_SECTION_TYPES = {0, 1, 2, 3, 4, 7, 8, 14, 15, 16, 17, 18, 0x70000001, 0x6FFF4C03, 0x6FFF4C09, 0x6FFFFFF6}
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_TLS = 0x1, 0x2, 0x4, 0x400
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON = 0, 0xFF00, 0xFFF1, 0xFFF2
STB_LOCAL = 0
STT_FUNC, STT_SECTION, STT_TLS = 2, 3, 6
R_NONE, R_64, R_PC32, R_PLT32, R_GOTPCREL, R_PC64 = 0, 1, 2, 4, 9, 24
R_GOTPCRELX, R_REX_GOTPCRELX = 41, 42
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
# Bytes each relocation type writes: the types LLVM's x86-64 code generator emits (pic, small
# code model); any other is damage.
_RELOCATION_BYTES = {R_NONE: 0, R_64: 8, R_PC32: 4, R_PLT32: 4, R_GOTPCREL: 4, R_PC64: 8,
                     R_GOTPCRELX: 4, R_REX_GOTPCRELX: 4}
_PC32 = (R_PC32, R_PLT32, R_GOTPCREL, R_GOTPCRELX, R_REX_GOTPCRELX)
# A 32-bit displacement's addend stays within the sections it points into; MCJIT asserts
# (aborting the process) on a displacement that does not fit.
MAX_ADDEND = 1 << 28
_MACHINES = {"x86_64": EM_X86_64, "AMD64": EM_X86_64}
MAX_IMAGE_BYTES = 1 << 30

_HEADER = struct.Struct("<HHIQQQIHHHHHH")  # after the 16 identification bytes
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


class MalformedObject(Exception):
    """Not a well-formed object for this machine (damaged or edited): a loader would read or
    write outside the object or the image, so neither this loader nor MCJIT gets it."""


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
    entry_size: int


@dataclass
class _Symbol:
    name: str
    bind: int
    kind: int
    section: int
    value: int


class _Object:
    """One parsed relocatable object, every offset, index and size checked against the file
    (gABI chapter 4) before it is used: a damaged object raises MalformedObject."""

    def __init__(self, data: bytes, index: int):
        self.index = index
        self.data = data
        if len(data) < _HEADER.size or data[:4] != b"\x7fELF":
            self._malformed("not an ELF file")
        if data[4:7] != b"\x02\x01\x01":
            self._malformed("not a 64-bit little-endian ELF file of version 1")
        (
            e_type,
            machine,
            version,
            _,
            _,
            shoff,
            _,
            header_size,
            _,
            _,
            shentsize,
            shnum,
            shstrndx,
        ) = _HEADER.unpack_from(data, 16)
        if (
            e_type != ET_REL
            or machine != _host_machine(machine)
            or version != 1
            or header_size != 64
        ):
            self._malformed(
                f"not a relocatable object for this machine (type {e_type}, machine {machine})"
            )
        if shentsize != _SECTION.size or not 0 < shnum < SHN_LORESERVE or shstrndx >= shnum:
            self._malformed("malformed section header table")
        if shoff < header_size or shoff + shnum * shentsize > len(data):
            self._malformed("the section header table lies outside the file")
        raw = [_SECTION.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        self.sections = [
            _Section("", kind, flags, offset, size, link, info, align, entsize)
            for _, kind, flags, _, offset, size, link, info, align, entsize in raw
        ]
        for number, section in enumerate(self.sections):
            self._check_section(number, section)
        names = self.sections[shstrndx]
        if names.kind != SHT_STRTAB:
            self._malformed("the section name table is not a string table")
        for section, fields in zip(self.sections, raw):
            section.name = self._string(names, fields[0])
        for number, section in enumerate(self.sections):
            self._check_kind_matches_name(number, section)
        self.symbols: list[_Symbol] = []
        tables = [section for section in self.sections if section.kind == SHT_SYMTAB]
        if len(tables) > 1:
            self._malformed("more than one symbol table")
        for table in tables:
            self._read_symbols(table)
        self.relocation_sections = [s for s in self.sections if s.kind == SHT_RELA]
        for section in self.relocation_sections:
            self._check_relocations(section, tables)

    def _malformed(self, problem: str):
        raise MalformedObject(f"object {self.index}: {problem}")

    def _check_section(self, number: int, section: _Section) -> None:
        if section.kind == SHT_REL:
            self._malformed(f"REL relocations in section {number} (x86-64 uses RELA only)")
        if section.kind not in (SHT_NULL, SHT_NOBITS) and section.offset + section.size > len(
            self.data
        ):
            self._malformed(f"section {number} lies outside the file")
        if section.flags & SHF_ALLOC:
            if section.align & (section.align - 1) or section.align > mmap.PAGESIZE:
                self._malformed(f"section {number}: alignment {section.align}")
            if section.size > MAX_IMAGE_BYTES:
                self._malformed(f"section {number}: {section.size} bytes")
        if section.kind in (SHT_SYMTAB, SHT_RELA):
            expected = _SYMBOL.size if section.kind == SHT_SYMTAB else _RELA.size
            if (
                section.entry_size != expected
                or section.size % expected
                or section.link >= len(self.sections)
            ):
                self._malformed(f"section {number}: malformed table")

    def _check_kind_matches_name(self, number: int, section: _Section) -> None:
        """A section's type agrees with its name: `.rela.text` retyped as anything else would
        leave the code unrelocated (it then jumps through address 0), and an unknown type is
        nothing LLVM writes."""
        named = {".symtab": SHT_SYMTAB, ".strtab": SHT_STRTAB, ".shstrtab": SHT_STRTAB}.get(section.name)
        if named is None and section.name.startswith(".rela"):
            named = SHT_RELA
        if named is not None and section.kind != named:
            self._malformed(f"section {number} ({section.name}) has type {section.kind:#x}, not {named:#x}")
        if section.kind == SHT_RELA and not section.name.startswith(".rela"):
            self._malformed(f"section {number} ({section.name}) is a relocation table under another name")
        if section.kind not in KNOWN_SECTION_TYPES:
            self._malformed(f"section {number} ({section.name}) has unknown type {section.kind:#x}")

    def _string(self, table: _Section, offset: int) -> str:
        start = table.offset + offset
        end = self.data.find(b"\0", start, table.offset + table.size)
        if offset >= table.size or end < 0:
            self._malformed(f"a name lies outside its string table (offset {offset})")
        try:
            return self.data[start:end].decode()
        except UnicodeDecodeError:
            self._malformed(f"a name that is not UTF-8 (offset {offset})")

    def _read_symbols(self, table: _Section) -> None:
        strings = self.sections[table.link]
        if strings.kind != SHT_STRTAB:
            self._malformed("the symbol table's names are not in a string table")
        for at in range(table.offset, table.offset + table.size, _SYMBOL.size):
            name, info, _, shndx, value, _ = _SYMBOL.unpack_from(self.data, at)
            symbol = _Symbol(self._string(strings, name), info >> 4, info & 0xF, shndx, value)
            if not symbol.name and self.symbols and symbol.kind != STT_SECTION:
                self._malformed("a symbol without a name (MCJIT mistakes where it lies)")
            if symbol.section not in (SHN_UNDEF, SHN_ABS, SHN_COMMON) and (
                symbol.section >= len(self.sections) or value > self.sections[symbol.section].size
            ):
                self._malformed(f"symbol {symbol.name!r} lies outside its section")
            self.symbols.append(symbol)

    def _check_relocations(self, section: _Section, tables: list[_Section]) -> None:
        """Every entry writes inside its target section, names a symbol that exists, and is of
        a type the psABI defines for this code (every RELA section: MCJIT applies them all)."""
        if (
            not tables
            or self.sections[section.link] is not tables[0]
            or section.info >= len(self.sections)
        ):
            self._malformed(f"relocations {section.name!r}: malformed symbol table or target links")
        target = self.sections[section.info]
        if target.kind in (SHT_NULL, SHT_NOBITS):
            self._malformed(f"relocations {section.name!r} apply to a section without bytes")
        for offset, kind, index, addend in self._entries(section):
            if kind not in _RELOCATION_BYTES:
                self._malformed(f"relocation type {kind} in {section.name!r}")
            if index >= len(self.symbols) or (index == 0 and kind != R_NONE):
                self._malformed(
                    f"a relocation in {section.name!r} names symbol {index}, which does not exist"
                )
            if offset + _RELOCATION_BYTES[kind] > target.size:
                self._malformed(f"a relocation writes outside {target.name!r} (offset {offset})")
            place = target.offset + offset
            if any(self.data[place : place + _RELOCATION_BYTES[kind]]):
                # RELA keeps the addend in the entry and the place zero; MCJIT adds what the
                # place holds, so a nonzero place is damage that would make it abort.
                self._malformed(
                    f"a relocation place in {target.name!r} that is not zero (offset {offset})"
                )
            symbol = self.symbols[index]
            if kind in _PC32 and (abs(addend) > MAX_ADDEND or symbol.section == SHN_ABS):
                self._malformed(f"a 32-bit displacement in {section.name!r} that cannot fit")
            in_a_section = SHN_UNDEF < symbol.section < SHN_LORESERVE and kind != R_NONE
            if in_a_section and not self.sections[symbol.section].flags & SHF_ALLOC:
                self._malformed(f"a relocation in {section.name!r} points outside loaded sections")

    def _entries(self, section: _Section):
        for at in range(section.offset, section.offset + section.size, _RELA.size):
            offset, info, addend = _RELA.unpack_from(self.data, at)
            yield offset, info & 0xFFFFFFFF, info >> 32, addend

    def loaded(self, index: int) -> bool:
        section = self.sections[index]
        return bool(section.flags & SHF_ALLOC) and section.size > 0 and section.name not in _SKIPPED

    def relocations(self):
        """(target section index, offset, type, symbol, addend) of every RELA entry."""
        for section in self.relocation_sections:
            if self.loaded(section.info):
                for offset, kind, symbol, addend in self._entries(section):
                    yield section.info, offset, kind, self.symbols[symbol], addend


def _host_machine(found: int) -> int:
    """The ELF machine number of this host (the machine found, where dlc does not know it)."""
    import platform

    return _MACHINES.get(platform.machine(), found)


def check_objects(objects: Sequence[bytes], exports: Sequence[str] = ()) -> list[_Object]:
    """The objects parsed and checked, for this loader or MCJIT: well-formed (MalformedObject
    otherwise), every symbol they use defined by one of them or by this process
    (UnresolvedSymbol otherwise: MCJIT crashes on it), and each of `exports` a function in code."""
    parsed = [_Object(data, i) for i, data in enumerate(objects)]
    defined: dict[str, tuple[_Object, _Symbol]] = {}
    for obj in parsed:
        for section in obj.sections:
            if section.flags & SHF_TLS and section.flags & SHF_ALLOC:
                raise MalformedObject(
                    f"thread-local section {section.name!r} (dlc's code has none)"
                )
        for symbol in obj.symbols:
            if symbol.kind == STT_TLS or symbol.section == SHN_COMMON:
                raise MalformedObject(
                    f"symbol {symbol.name!r}: thread-local or COMMON (dlc's code has none)"
                )
            if symbol.bind != STB_LOCAL and symbol.section != SHN_UNDEF:
                if symbol.name in defined:
                    raise MalformedObject(f"symbol {symbol.name!r} is defined twice")
                defined[symbol.name] = obj, symbol
    for obj in parsed:
        for symbol in obj.symbols[1:]:  # the first is the null symbol
            if (
                symbol.section == SHN_UNDEF
                and symbol.name not in defined
                and _process_symbol(symbol.name) is None
            ):
                raise UnresolvedSymbol(symbol.name)
        for section in obj.relocation_sections:
            for _, kind, index, _ in obj._entries(section):
                if (
                    kind == R_PC32
                    and obj.symbols[index].section == SHN_UNDEF
                    and obj.symbols[index].name not in defined
                ):
                    raise MalformedObject(
                        f"a PC-relative data reference to {obj.symbols[index].name!r} in "
                        "this process (pic code reaches the process through the GOT)"
                    )
    for name in exports:
        obj, symbol = defined.get(name, (None, None))
        if (
            symbol is None
            or symbol.kind != STT_FUNC
            or symbol.section >= len(obj.sections)
            or not obj.sections[symbol.section].flags & SHF_EXECINSTR
        ):
            raise MalformedObject(f"the object code does not define the function '{name}'")
    return parsed


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

    def __init__(self, objects: Sequence[bytes], exports: Sequence[str] = ()):
        """Load `objects` (checked first: see `check_objects`, which `exports` goes to)."""
        parsed = check_objects(objects, exports)
        # Global definitions across the objects: a split module's parts call each other.
        defined: dict[str, tuple[int, _Symbol]] = {}
        for i, obj in enumerate(parsed):
            for symbol in obj.symbols:
                if symbol.bind != STB_LOCAL and symbol.section != SHN_UNDEF:
                    defined[symbol.name] = (i, symbol)

        # Slots for what GOT-relative loads read and what calls into the process jump through.
        external = sorted(
            {
                symbol.name
                for obj in parsed
                for *_, symbol, _ in obj.relocations()
                if symbol.section == SHN_UNDEF and symbol.name not in defined
            }
        )
        slotted = sorted(
            set(external)
            | {
                symbol.name
                for obj in parsed
                for _, _, kind, symbol, _ in obj.relocations()
                if kind in (R_GOTPCREL, R_GOTPCRELX, R_REX_GOTPCRELX)
            }
        )

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
        if size > MAX_IMAGE_BYTES:
            raise MalformedObject(f"the loaded image would take {size} bytes")

        self._memory = mmap.mmap(
            -1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=PROT_READ | PROT_WRITE
        )
        self._anchor = ctypes.c_char.from_buffer(self._memory)  # keeps the mapping's address valid
        base = ctypes.addressof(self._anchor)
        memory = self._memory
        section_address = {
            key: base + starts[seg] + offset for key, (seg, offset) in placement.items()
        }
        for (i, s), address in section_address.items():
            section = parsed[i].sections[s]
            if section.kind != SHT_NOBITS:
                start = address - base
                memory[start : start + section.size] = parsed[i].data[
                    section.offset : section.offset + section.size
                ]

        process = {name: _process_symbol(name) for name in external}  # check_objects: all defined

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
                raise UnsupportedObject(
                    f"symbol {symbol.name!r} lies in a section that is not loaded"
                )
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
        stub = {
            name: base + starts[0] + stubs_at + _STUB_BYTES * k for k, name in enumerate(external)
        }
        for name, address in stub.items():
            displacement = slot[name] - (address + 6)
            memory[address - base : address - base + _STUB_BYTES] = (
                b"\xff\x25" + struct.pack("<i", displacement) + b"\xcc\xcc"
            )

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
                    if outside:  # a PLT32 (check_objects refuses a PC32 to the process)
                        target = stub[symbol.name]
                    _put_int32(memory, at, target + addend - place, symbol.name)
                else:  # GOT-relative: check_objects admits no other type
                    _put_int32(memory, at, slot[symbol.name] + addend - place, symbol.name)

        self._symbols = {name: resolve(name) for name in defined}
        libc = _process_libraries()[0]
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for start, length, prot in (
            (starts[0], starts[1], PROT_READ | PROT_EXEC),
            (starts[1], starts[2] - starts[1], PROT_READ),
        ):
            if length and libc.mprotect(base + start, length, prot) != 0:
                raise OSError(ctypes.get_errno(), "mprotect failed for the loaded code")

    def address(self, symbol: str) -> int:
        """Address of the global `symbol`; KeyError when no object defines it."""
        if symbol not in self._symbols:
            raise KeyError(f"symbol {symbol!r} is not defined in the loaded objects")
        return self._symbols[symbol]


def _put_int32(memory: mmap.mmap, at: int, value: int, name: str) -> None:
    if not -(1 << 31) <= value < (1 << 31):  # the image is compact: only damage gets here
        raise MalformedObject(f"32-bit displacement to {name!r} out of range")
    struct.pack_into("<i", memory, at, value)
