"""Loop (https://onnx.ai/onnx/operators/onnx__Loop.html) whose body is compiled once: a `loop.run`.

The importer leaves a Loop as an `onnx.Loop` naming its body, a nested module that the driver
has already brought to this phase (dialects/loop.py): its `@main` takes the body's inputs and
outputs as memrefs, then its own arena (planned by its plan-memory, `dlc.arena_size`). This
rule gives the body what it needs as scratch of this kernel (so the outer plan-memory places
it in the model's arena): the iteration number, the condition in and out, a temporary per
loop-carried value (the body never writes the buffer it reads) and the body's arena. The LLVM
emitter (dlc/codegen/llvm_emitter.py, `loop.run`) writes the loop itself.
"""

from __future__ import annotations

from xdsl.dialects import func, memref
from xdsl.dialects.builtin import IntegerAttr, NoneType, UnitAttr

from dialects.diagnostics import CompileError
from dialects.loop import RunOp, body_named
from passes.lowering.rules import lowers
from passes.lowering.utils.runtime_checks import SETS_STATUS, error_code, error_sites, status_word


@lowers("Loop")
def loop(kb, op, ins, outs):
    name = op.attributes["body"].root_reference.data
    try:
        body = body_named(op, name)
    except ValueError as error:
        raise CompileError(f"{op.describe()}: {error}") from None
    main = next((f for f in body.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "main"), None)
    arena = main.attributes.get("dlc.arena_size") if main is not None else None
    if not isinstance(arena, IntegerAttr):
        raise CompileError(f"{op.describe()}: its body @{name} has not been lowered to the linalg phase "
                           "with its memory planned (the driver runs each stage on bodies first)")
    outer = op.attributes["dlc.num_outer"].value.data
    scan_inputs = op.attributes["dlc.num_scan_inputs"].value.data if "dlc.num_scan_inputs" in op.attributes else 0
    carried = len(op.operands) - 2 - scan_inputs - outer
    types = [arg.type for arg in main.body.block.args]  # inputs, outputs, arena
    inputs = 2 + carried + scan_inputs + outer
    if len(types) != inputs + len(outs) + 2:
        raise CompileError(f"{op.describe()}: its body @{name} takes {len(types)} buffers, expected "
                           f"{inputs + len(outs) + 2}")
    present = [value for value, operand in zip(ins[:2], op.operands[:2]) if not isinstance(operand.type, NoneType)]
    checked = "dlc.status_offset" in main.attributes
    layout = [int(not isinstance(op.operands[0].type, NoneType)), int(not isinstance(op.operands[1].type, NoneType)),
              carried, outer, len(outs) - carried, scan_inputs, int(checked)]
    reverse = op.attr("dlc.reverse") or [0] * (layout[4] + scan_inputs)
    scratch = [kb.scratch(types[0]), kb.scratch(types[1]), kb.scratch(types[inputs])]
    scratch += [kb.scratch(t) for t in types[inputs + 1:inputs + 1 + carried]]
    scratch.append(kb.scratch(types[-1]))  # memref<N x i8>, N = the body's dlc.arena_size (>= 64)
    if not checked:
        kb.insert(RunOp(name, layout, [*present, *ins[2:], *outs, *scratch], reverse))
        return
    # The body's run-time checks: its error codes join this module's table, its status word is
    # copied into this kernel's (plan-memory's shared slot) and ends the loop.
    codes = [error_code(op, message) for message in error_sites(body)]
    # plan-memory finds a kernel's status argument by an op marked SETS_STATUS that uses it; this
    # one (no code: the emitter passes the pointer through) uses only it, loop.run uses all.
    status = kb.insert(memref.AssumeAlignmentOp(status_word(kb), 4))
    status.attributes[SETS_STATUS] = UnitAttr()
    kb.insert(RunOp(name, layout, [*present, *ins[2:], *outs, *scratch, status.results[0]], reverse, codes,
                    main.attributes["dlc.status_offset"].value.data))
