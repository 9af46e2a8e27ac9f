"""Pipeline text -> passes, and the runner that verifies the IR after every pass.

Pipeline text is xDSL's (as in mlir-opt): `pass-a,pass-b{option=1 other=2,3}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import parse_pipeline

from dialects.diagnostics import CompileError, DlcError
from passes import all_passes


def parse_pass_pipeline(text: str) -> list[ModulePass]:
    """`"fold-constants,tile{sizes=4,4}"` -> pass instances; unknown names are errors."""
    registry = all_passes()
    passes = []
    try:
        specs = list(parse_pipeline(text))
    except Exception as error:
        raise CompileError(f"cannot parse pass pipeline '{text}': {error}") from None
    for spec in specs:
        if spec.name not in registry:
            raise CompileError(f"unknown pass '{spec.name}'", "`dlc passes` lists the registered passes")
        try:
            passes.append(registry[spec.name].from_pass_spec(spec))
        except Exception as error:
            raise CompileError(f"bad options for pass '{spec.name}': {error}") from None
    return passes


@dataclass
class PassInstrumentation:
    """What to print and time around passes (--print-ir-after*, --time-passes)."""

    print_after_all: bool = False
    print_after: frozenset[str] = frozenset()
    disabled: frozenset[str] = frozenset()
    printer: Callable[[str, ModuleOp], None] | None = None
    timings: list[tuple[str, float]] = field(default_factory=list)


def run_passes(ctx: Context, module: ModuleOp, passes: Sequence[ModulePass],
               instrument: PassInstrumentation | None = None) -> None:
    """Apply `passes` in order, verifying after each; a pass that breaks the IR is named."""
    instrument = instrument or PassInstrumentation()
    for pass_ in passes:
        if pass_.name in instrument.disabled:
            continue
        start = time.perf_counter()
        try:
            pass_.apply(ctx, module)
        except DlcError:
            raise
        except Exception as error:
            raise CompileError(f"pass '{pass_.name}' failed: {type(error).__name__}: {error}") from error
        try:
            module.verify()
        except Exception as error:
            raise CompileError(f"the IR does not verify after pass '{pass_.name}': {error}",
                               "this is a bug in that pass; rerun with --print-ir-after="
                               f"{pass_.name} to see the IR it produced") from error
        instrument.timings.append((pass_.name, time.perf_counter() - start))
        if instrument.printer and (instrument.print_after_all or pass_.name in instrument.print_after):
            instrument.printer(pass_.name, module)
