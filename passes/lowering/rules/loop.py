"""Loop (https://onnx.ai/onnx/operators/onnx__Loop.html) whose body is compiled once: a `loop.run`.

The importer leaves a Loop as an `onnx.Loop` naming its body, a nested module that the driver
has already brought to this phase (dialects/loop.py): its `@main` takes the body's inputs and
outputs as memrefs, then its own arena (planned by its plan-memory, `dlc.arena_size`). This
rule gives the body what it needs as scratch of this kernel (so the outer plan-memory places
it in the model's arena): the iteration number, the condition in and out, a temporary per
loop-carried value (the body never writes the buffer it reads) and the body's arena. The LLVM
emitter (dlc/codegen/llvm_emitter.py, `loop.run`) writes the loop itself.

The kernel's `dlc.flops` and `dlc.bytes` (what `--profile`'s GFLOP/s, GB/s and %roof divide
by) are the body's kernels' times the trip count: the constant M, bounded by the scan inputs' and outputs'
length (a loop that can end early counts its bound; a `while` loop with neither, or with
TorchScript's M = INT64_MAX, counts one iteration, a lower bound).
"""

from __future__ import annotations

from xdsl.dialects import func, memref
from xdsl.dialects.builtin import IntegerAttr, NoneType, UnitAttr, i64

from dialects.diagnostics import CompileError
from dialects.loop import RunOp, body_named
from dialects.onnx import OnnxOp
from dialects.op_costs import flops
from dialects.types import byte_size
from passes.graph.utils.constants import constant_of
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
    _count_flops(op, body, ins[2 + carried:2 + carried + scan_inputs], outs[carried:], [*present, *ins[2:], *outs])
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


def _count_flops(op, body, scan_inputs, scans, buffers) -> None:
    """Record on the kernel being built (through its launch's `dlc.*` attributes, which
    kernels-to-linalg copies onto the kernel) the flops and bytes of every iteration, not of the
    Loop's outputs and operands only: a recurrent step re-reads its weights every iteration, so
    --profile's FLOP/B, bound and %roof are the step's (lstm_h256_s64: memory-bound)."""
    bounds = [value.type.get_shape()[0] for value in (*scan_inputs, *scans)]
    if not isinstance(op.operands[0].type, NoneType):
        trips = constant_of(op.operands[0])
        # TorchScript's `while` has M = INT64_MAX: no count, like a loop without M.
        if trips is not None and trips.size == 1 and int(trips.reshape(-1)[0]) < 1 << 31:
            bounds.append(max(int(trips.reshape(-1)[0]), 0))
    trips = min(bounds) if bounds else 1
    kernels = [f.attributes for f in body.ops if isinstance(f, func.FuncOp)]
    per_iteration = sum(a["dlc.flops"].value.data for a in kernels if isinstance(a.get("dlc.flops"), IntegerAttr))
    moved = sum(a["dlc.bytes"].value.data for a in kernels if isinstance(a.get("dlc.bytes"), IntegerAttr))
    launch = op.parent_op()
    while launch is not None and launch.name != "kernel.launch":
        launch = launch.parent_op()
    if launch is None:
        return
    others = sum(flops(o) for o in launch.walk() if isinstance(o, OnnxOp) and o is not op)
    launch.attributes["dlc.flops"] = IntegerAttr(min(others + per_iteration * trips, (1 << 63) - 1), i64)
    own = sum(byte_size(value.type) for value in buffers)  # its operands and results, once
    launch.attributes["dlc.bytes"] = IntegerAttr(min(own + moved * trips, (1 << 63) - 1), i64)
