"""Split one LLVM IR module (as text) into parts that compile independently, in parallel.

LLVM's optimiser and code generator run one module on one thread, and llvmlite serialises
every LLVM call in a process behind one lock; a model's module (ResNet-50: 4.4 MB, 300
functions) therefore compiles on one core. This splits it the way LLVM's own
`SplitModule` (llvm/Transforms/Utils/SplitModule.h, used by parallel LTO code generation)
does, at the level of textual IR, so that each part goes to its own process:

* a *unit* is an internal function that the entry (the exported function) refers to, with
  the internal functions it alone reaches; a function that two units reach (a GEMM shared
  by ten convolutions) is a unit of its own, so every function is compiled once;
* units are dealt to the lightest part, largest first; a unit called from another part
  becomes an external symbol in its own and is declared where it is called;
* internal constants and declarations are copied into every part (LLVM drops unused ones);
  functions that nothing refers to are left out, as LLVM would delete them;
* with `apart` (a test on function names), a function it takes that a function it does not
  take calls is a unit of its own too, and those units go to parts of their own, after the
  part of the entry: the GEMMs apart from the kernels that call them, so that each can be
  optimised at its own level (dlc/codegen/native.py) and neither is inlined into the other;
* with `together` (another test on names), the units that call a shared function it takes
  go to one part, and the function stays internal there: a GEMM micro-kernel tile that
  several GEMMs share, called across parts (exported, so C's calling convention and no
  constants propagated in), ran ResNet-50 3% and MobileNetV2 5% slower.

The object files that the parts compile to load into one MCJIT engine, which links the
symbols across them (`NativeModule`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["split_module"]

_SYMBOL = re.compile(r'@"([^"]+)"|@([-\w$.]+)')
_HEADER = re.compile(r"^(; ModuleID|source_filename|target )")
_PRIVATE_GLOBAL = re.compile(r'^@("[^"]+"|[-\w$.]+) = (internal|private) ')
_LOCAL_DEFINE = re.compile(r"^define (internal|private) ")


@dataclass
class _Function:
    name: str
    header: str  # the `define ...` line
    body: str  # "{ ... }" lines
    internal: bool
    references: set[str] = field(default_factory=set)

    @property
    def size(self) -> int:
        return len(self.header) + len(self.body)

    def text(self, *, export: bool = False) -> str:
        header = _LOCAL_DEFINE.sub("define ", self.header, count=1) if export else self.header
        return f"{header}\n{self.body}"

    def declaration(self) -> str:
        # A declaration may keep parameter names and attributes: only the body goes.
        return _LOCAL_DEFINE.sub("define ", self.header, count=1).replace("define ", "declare ", 1)


def _symbol(match: re.Match) -> str:
    return match.group(1) or match.group(2)


def _parse(llvm_ir: str) -> tuple[list[str], list[str], dict[str, _Function]]:
    """Header lines, other top-level lines (globals, declarations), and the defined functions."""
    header: list[str] = []
    others: list[str] = []
    functions: dict[str, _Function] = {}
    lines = llvm_ir.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("define "):
            end = i + 1
            while lines[end] != "}":
                end += 1
            name = _symbol(_SYMBOL.search(line))
            body = "\n".join(lines[i + 1:end + 1])
            fn = _Function(name, line, body, bool(_LOCAL_DEFINE.match(line)))
            fn.references = {_symbol(m) for m in _SYMBOL.finditer(body)}
            functions[name] = fn
            i = end + 1
            continue
        if _HEADER.match(line):
            header.append(line)
        elif line.strip():
            others.append(line)
        i += 1
    return header, others, functions


def _units(functions: dict[str, _Function], roots: set[str]) -> dict[str, set[str]]:
    """Each unit root's members: what it reaches without entering another unit.

    A function that two units reach becomes a unit of its own (repeated to a fixed point),
    so every function lands in exactly one part: a GEMM that ten convolutions share is
    compiled once, not ten times.
    """
    roots = set(roots)
    while True:
        members = {root: _reach(functions, root, roots) for root in roots}
        owners: dict[str, int] = {}
        for root_members in members.values():
            for name in root_members:
                owners[name] = owners.get(name, 0) + 1
        shared = {name for name, count in owners.items() if count > 1} - roots
        if not shared:
            return members
        roots |= shared


def _reach(functions: dict[str, _Function], root: str, stop: set[str]) -> set[str]:
    """The internal functions reachable from `root` without entering another of `stop`."""
    seen = {root}
    stack = [root]
    while stack:
        for name in functions[stack.pop()].references:
            fn = functions.get(name)
            if fn is not None and fn.internal and name not in seen and name not in stop:
                seen.add(name)
                stack.append(name)
    return seen


def _groups(functions: dict[str, _Function], units: dict[str, set[str]],
            together: Callable[[str], bool] | None) -> dict[str, list[str]]:
    """Units that must share a part, by a leading root: a unit that `together` takes (a GEMM
    micro-kernel tile) goes with every unit that calls it, so it stays internal to one part."""
    lead = {root: root for root in units}

    def find(root: str) -> str:
        while lead[root] != root:
            lead[root] = lead[lead[root]]
            root = lead[root]
        return root

    if together is not None:
        for root, members in sorted(units.items()):
            for name in sorted({ref for member in members for ref in functions[member].references}):
                if name in units and name != root and together(name):
                    first, second = sorted((find(root), find(name)))
                    lead[second] = first
    groups: dict[str, list[str]] = {}
    for root in sorted(units):
        groups.setdefault(find(root), []).append(root)
    return groups


def split_module(llvm_ir: str, parts: int, apart: Callable[[str], bool] | None = None,
                 together: Callable[[str], bool] | None = None) -> list[str]:
    """`llvm_ir` as at most `parts` modules of about equal size (one when it cannot split).

    With `apart`: the entry and the units `apart` does not take form the first module, and the
    units it takes at most `parts` more (`[llvm_ir]` when there are none, or it cannot split).
    With `together`: a shared function it takes lands in the part of every unit that calls it
    (their units are placed as one), so that it stays internal there.
    """
    if parts <= 1 and apart is None:
        return [llvm_ir]
    header, others, functions = _parse(llvm_ir)
    if any(line.startswith("@") and not _PRIVATE_GLOBAL.match(line) for line in others):
        return [llvm_ir]  # a mutable or exported global would need one owner: keep one module
    exported = [fn for fn in functions.values() if not fn.internal]
    entry_calls = {name for fn in exported for name in fn.references
                   if name in functions and functions[name].internal}
    roots = set(entry_calls)
    if apart is not None:
        roots |= {name for fn in functions.values() if not apart(fn.name) for name in fn.references
                  if name in functions and functions[name].internal and apart(name)}
        if not any(apart(root) for root in roots):
            return [llvm_ir]
    units = _units(functions, roots)
    cost = {root: sum(functions[name].size for name in members) for root, members in units.items()}
    if apart is None:
        loads = [sum(fn.size for fn in exported)] + [0] * (parts - 1)
        choices = {False: range(parts)}
    else:  # part 0: the entry and the rest; parts 1..: what `apart` takes
        loads = [sum(fn.size for fn in exported)] + [0] * max(parts, 1)
        choices = {False: range(1), True: range(1, len(loads))}
    groups = _groups(functions, units, together)
    group_cost = {lead: sum(cost[root] for root in members) for lead, members in groups.items()}
    home: dict[str, int] = {}
    for lead in sorted(groups, key=lambda r: (-group_cost[r], r)):  # largest first, to the lightest
        lightest = min(choices[apart is not None and apart(lead)], key=lambda p: (loads[p], p))
        for root in groups[lead]:
            home[root] = lightest
        loads[lightest] += group_cost[lead]
    used = sorted({0, *home.values()})
    if len(used) <= 1:
        return [llvm_ir]

    # A unit root called from another part is an external symbol there, declared here.
    callers = {p: set() for p in used}
    for root, members in units.items():
        callers[home[root]] |= {name for member in members for name in functions[member].references}
    callers[0] |= entry_calls.union(*(fn.references for fn in exported))
    modules = []
    for p in used:
        own = sorted(root for root in units if home[root] == p)
        wanted_elsewhere = set().union(*(callers[q] for q in used if q != p))
        text = [*header, "", *others, ""]
        if p == 0:
            text += [fn.text() for fn in exported]
        text += [functions[root].declaration() for root in sorted(units)
                 if home[root] != p and root in callers[p]]
        for root in own:
            for name in sorted(units[root]):
                text.append(functions[name].text(export=name == root and root in wanted_elsewhere))
        modules.append("\n".join(text) + "\n")
    return modules
