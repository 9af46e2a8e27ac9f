"""Pipeline text -> passes, and the runner that verifies the IR once per phase (or after every pass).

Pipeline text is xDSL's (as in mlir-opt): `pass-a,pass-b{option=1 other=2,3}`. Verification
mirrors mlir-opt's `-verify-each`, but its default differs: verifying after every pass cost
ResNet-50 21 verifications and a ViT 41% of its compile, so by default the runner verifies
once after the passes it is given (the driver gives it one phase at a time);
`--verify-each` (or DLC_VERIFY_EACH=1) verifies after every pass
and names the pass that broke the IR.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr, SymbolRefAttr
from xdsl.ir import Operation
from xdsl.irdl import OpDef
from xdsl.passes import ModulePass
from xdsl.traits import SameOperandsAndResultType, SymbolOpInterface, SymbolTable
from xdsl.utils.arg_spec import parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError

from dialects.diagnostics import CompileError, DlcError
from passes import find_pass


def parse_pass_pipeline(text: str) -> list[ModulePass]:
    """`"fold-constants,tile{sizes=4,4}"` -> pass instances; unknown names are errors."""
    passes = []
    try:
        specs = list(parse_pipeline(text))
    except ArgSpecParseError as error:  # a BaseException: `except Exception` misses it
        raise CompileError(pipeline_syntax_message(error), PIPELINE_SYNTAX_HINT) from None
    except Exception as error:
        raise CompileError(f"cannot parse pass pipeline '{text}': {error}", PIPELINE_SYNTAX_HINT) from None
    for spec in specs:
        pass_class = find_pass(spec.name)
        if pass_class is None:
            raise CompileError(f"unknown pass '{spec.name}'", "`dlc passes` lists the registered passes")
        try:
            passes.append(pass_class.from_pass_spec(spec))
        except ArgSpecParseError as error:
            raise CompileError(f"bad options for pass '{spec.name}': {pipeline_syntax_message(error)}") from None
        except Exception as error:
            raise CompileError(f"bad options for pass '{spec.name}': {error}") from None
    return passes


PIPELINE_SYNTAX_HINT = "write passes as `pass-a,pass-b{option=1 other=2}`; `dlc passes` lists them"


def pipeline_syntax_message(error: BaseException) -> str:
    """xDSL's ArgSpecParseError (several lines: a header, the position, the text, a caret, the
    reason) as one line: the pipeline text, the column and xDSL's reason."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) < 5:
        return f"cannot parse pass pipeline: {lines[-1] if lines else error}"
    column = lines[1].rpartition(":")[2]
    return f"cannot parse pass pipeline '{lines[2]}' at column {column}: {lines[-1]}"


def verify_each_default() -> bool:
    """DLC_VERIFY_EACH=1 turns on verification after every pass."""
    return os.environ.get("DLC_VERIFY_EACH", "").strip() not in ("", "0")


@dataclass
class PassInstrumentation:
    """What to print, time and check around passes (--print-ir-after*, --time-passes, --verify-each)."""

    print_after_all: bool = False
    print_after: frozenset[str] = frozenset()
    disabled: frozenset[str] = frozenset()
    printer: Callable[[str, ModuleOp], None] | None = None
    timings: list[tuple[str, float]] = field(default_factory=list)
    # Progress (dlc/progress.py): called with (pass, None) as a pass starts, (pass, seconds) as it ends.
    notify: Callable[[str, float | None], None] | None = None
    verify_each: bool = field(default_factory=verify_each_default)


def run_passes(ctx: Context, module: ModuleOp, passes: Sequence[ModulePass],
               instrument: PassInstrumentation | None = None) -> None:
    """Apply `passes` in order and verify the IR: after each pass with `verify_each`, else once
    after the last. A pass that raises, or (with `verify_each`) breaks the IR, is named."""
    instrument = instrument or PassInstrumentation()
    with fewer_collections():
        _run(ctx, module, passes, instrument)


def _run(ctx: Context, module: ModuleOp, passes: Sequence[ModulePass], instrument: PassInstrumentation) -> None:
    ran = []
    for pass_ in passes:
        if pass_.name in instrument.disabled:
            continue
        if instrument.notify:
            instrument.notify(pass_.name, None)
        start = time.perf_counter()
        try:
            pass_.apply(ctx, module)
        except DlcError:
            raise
        except Exception as error:
            raise CompileError(f"pass '{pass_.name}' failed: {type(error).__name__}: {error}") from error
        ran.append(pass_.name)
        if instrument.verify_each:
            verify_module(module, f"after pass '{pass_.name}'",
                          "this is a bug in that pass; rerun with --print-ir-after="
                          f"{pass_.name} to see the IR it produced")
        instrument.timings.append((pass_.name, time.perf_counter() - start))
        if instrument.notify:
            instrument.notify(pass_.name, instrument.timings[-1][1])
        if instrument.printer and (instrument.print_after_all or pass_.name in instrument.print_after):
            instrument.printer(pass_.name, module)
    if ran and not instrument.verify_each:
        start = time.perf_counter()
        verify_module(module, f"after passes {', '.join(repr(name) for name in ran)}",
                      "this is a bug in one of them; rerun with --verify-each to name the pass "
                      "that broke the IR")
        instrument.timings.append(("verify", time.perf_counter() - start))


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Python's cyclic garbage collector runs less often while passes run (and while the
    LLVM emitter builds llvmlite's objects: dlc/targets/cpu.py).

    Passes allocate millions of small IR objects and free few: at the default thresholds
    (a young collection every 700 allocations) collecting took ~20% of a 1,000-node graph's
    pass time, and a larger share as graphs grow (measured CPU 12.5/15.6 s -> 9.9/11.9 s).
    LLVM IR emission is the same kind of work: EfficientNet-B0's took 1.4-1.8 CPU-s at the
    default thresholds, 0.75-0.8 with these.
    """
    saved = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def verify_module(module: ModuleOp, when: str, hint: str) -> None:
    """`module.verify()`, with symbols looked up in a table; a failure is a CompileError."""
    try:
        with symbol_tables(), constraints_checked_once():
            module.verify()
    except Exception as error:
        raise CompileError(f"the IR does not verify {when}: {error}", hint) from error


@contextmanager
def symbol_tables() -> Iterator[None]:
    """Within this block, xDSL's `SymbolTable.lookup_symbol` reads a table per symbol-table op.

    xDSL scans the symbol table's block for every lookup, and `func.call` verification
    looks its callee up: quadratic in the functions of a module (a ViT's 5,400 calls cost
    most of its 24.6 s of verification). Verifying changes no IR, so a table built on first
    use stays right for the whole block. Not for blocks that rewrite the IR.
    """
    original = SymbolTable.__dict__["lookup_symbol"]  # the staticmethod itself, to put back as it was
    scan = SymbolTable.lookup_symbol
    tables: dict[int, tuple[Operation, dict[str, Operation]]] = {}

    def lookup(op: Operation, name: str | StringAttr | SymbolRefAttr) -> Operation | None:
        anchor: Operation | None = op
        while anchor is not None and not anchor.has_trait(SymbolTable):
            anchor = anchor.parent_op()
        if anchor is None or (isinstance(name, SymbolRefAttr) and name.nested_references.data):
            return scan(op, name)  # xDSL's own error, or a nested reference: rare, left to xDSL
        if isinstance(name, SymbolRefAttr):
            name = name.root_reference
        entry = tables.get(id(anchor))
        if entry is None:
            entry = tables[id(anchor)] = (anchor, _symbols_of(anchor))  # holds anchor: its id stays its own
        return entry[1].get(name.data if isinstance(name, StringAttr) else name)

    SymbolTable.lookup_symbol = staticmethod(lookup)
    try:
        yield
    finally:
        SymbolTable.lookup_symbol = original


# Op signatures whose IRDL constraints passed, for `constraints_checked_once`: the key holds
# the op's class and every type, property and attribute the check reads, so an entry never
# goes stale; the set is only bounded.
_SIGNATURES_PASSED: set[tuple] = set()
SIGNATURES_KEPT = 200_000


@contextmanager
def constraints_checked_once() -> Iterator[None]:
    """Within this block, an op's IRDL constraints are checked once per distinct signature.

    xDSL's `OpDef.verify` checks every operand, result, region entry, property and attribute
    of an op against its definition: ~100 us an op, and the IR repeats the same few hundred
    signatures (an unrolled LSTM's loops phase: 26,000 ops, 2.8 s). Those checks read nothing
    but the op's class and the signature used as the key here (a fresh constraint context per
    op), so an equal signature passes again; only passes are remembered. The op's traits (which
    may look at its parent, its regions or symbols; all but SameOperandsAndResultType) and its
    own `verify_` still run for every op. The signatures that passed are kept for the process
    (up to SIGNATURES_KEPT): the phases of one compile and the compiles after it repeat them
    (a one-conv model's verification was a quarter of its compile).
    """
    original = OpDef.__dict__["verify"]
    passed = _SIGNATURES_PASSED
    if len(passed) > SIGNATURES_KEPT:
        passed.clear()

    def verify(op_def: OpDef, op: Operation) -> None:
        try:
            key = (type(op), tuple(value.type for value in op.operands),
                   tuple(value.type for value in op.results), len(op.successors),
                   tuple((len(region.blocks), region.first_block and tuple(region.first_block.arg_types))
                         for region in op.regions),
                   tuple(op.properties.items()), tuple(op.attributes.items()))
            seen = key in passed
        except TypeError:  # an attribute that cannot be hashed: check it the long way
            key, seen = None, False
        if not seen:
            original(op_def, op)
            if key is not None:
                passed.add(key)
            return
        for trait in op_def.traits:
            if not isinstance(trait, SameOperandsAndResultType):  # reads the signature alone
                trait.verify(op)

    OpDef.verify = verify
    try:
        yield
    finally:
        OpDef.verify = original


def _symbols_of(table_op: Operation) -> dict[str, Operation]:
    """Symbol name -> the first op of that name (xDSL's scan returns the first too)."""
    symbols: dict[str, Operation] = {}
    for op in table_op.regions[0].block.ops:
        interface = op.get_trait(SymbolOpInterface)
        if interface is None:
            continue
        try:
            sym_name = interface.get_sym_attr_name(op)
        except Exception:  # noqa: BLE001 - a malformed symbol op fails its own verification
            continue
        if sym_name is not None:
            symbols.setdefault(sym_name.data, op)
    return symbols
