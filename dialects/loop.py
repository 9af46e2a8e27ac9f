"""The `loop` dialect: ONNX Loop bodies compiled once, as outlined functions run by a native loop.

Mirrors the outlining MLIR does for `scf.for` bodies that become calls (and IREE's executable
regions): a Loop body is a nested `builtin.module @NAME` holding a `func.func @main` whose
inputs are the body's ONNX inputs (iteration number, condition, loop-carried values, then the
outer values it reads) and whose results are the body's outputs (condition, carried values,
scan outputs). The nested module goes through every phase with the same passes as the
module that holds it (the driver runs them on each body first, with the body *detached*, so
passes of the outer module never see it and no pass needs to know about regions), so at
each phase the text holds the body at that phase and `dlc opt` reads it back.

At the `onnx`/`graph`/`kernels` phases the loop itself is an `onnx.Loop` whose `body`
attribute names the nested module and whose operands are ONNX's (M, cond, carried...)
followed by `dlc.num_outer` outer values. The `Loop` lowering rule
(passes/lowering/rules/loop.py) makes it a `loop.run` in its kernel, and the LLVM emitter
turns that into the loop: per iteration store the iteration number and call the body's
function, reading the carried state from one buffer and writing it to another (the initial
values, then the outputs and the temporaries in turn: a ping-pong, so the body never reads and
writes one buffer and its pointers stay `noalias`, and no state is copied per iteration), and
stop when the trip count is reached or the body's condition is false; one copy at the end puts
the last state in the outputs where it is not there already.

    "loop.run"(%M, %cond, %x0, %W, %y, %iter, %cin, %cout, %tmp, %arena)
        {body = @loop_0, layout = array<i64: 1, 1, 1, 1, 0, 0>, reverse = array<i64>} : (...) -> ()

`layout` = [has trip count, has condition, carried, outer, scan outputs, scan inputs, has
status]; the
operands are, in order: trip count?, condition?, initial values (carried), scan inputs, outer
values, final values (carried), scan outputs, then the body's scratch: iteration number,
condition in, condition out, one temporary per carried value, and the body's arena, then (has status) the kernel's
status word. A body with run-time checks has a status word of its own at `status_offset` in
its arena; after each call a nonzero one is translated by `codes` (body code k -> the outer
module's code codes[k-1]) into the kernel's status word and the loop stops. Scan
inputs (Scan's, and a recurrent layer's input projection) and scan outputs are sliced on their
first axis, slice i (or M-1-i where `reverse` says so: one flag per scan input, then per scan
output) at iteration i; the body's `@main` takes the scan inputs' slices after the carried
values, before the outer values.
"""

from __future__ import annotations

import weakref

from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, MemRefType, ModuleOp, StringAttr, SymbolRefAttr, i64
from xdsl.ir import Dialect, Operation, SSAValue
from xdsl.irdl import IRDLOperation, irdl_op_definition, opt_prop_def, prop_def, var_operand_def

__all__ = ["LOOP", "RunOp", "attach_bodies", "body_named", "bodies_of", "detach_bodies"]


@irdl_op_definition
class RunOp(IRDLOperation):
    """Run the outlined body `@body` as a native loop (see the module docstring)."""

    name = "loop.run"
    body = prop_def(SymbolRefAttr)
    layout = prop_def(DenseArrayBase)
    reverse = prop_def(DenseArrayBase)
    codes = opt_prop_def(DenseArrayBase)
    status_offset = opt_prop_def(IntegerAttr)
    args = var_operand_def(MemRefType)

    def __init__(self, body: str, layout: list[int], operands: list[SSAValue], reverse: list[int] = (),
                 codes: list[int] | None = None, status_offset: int | None = None):
        properties = {"body": SymbolRefAttr(body), "layout": DenseArrayBase.from_list(i64, layout),
                      "reverse": DenseArrayBase.from_list(i64, list(reverse) or [0] * (layout[4] + layout[5]))}
        if codes is not None:
            properties["codes"] = DenseArrayBase.from_list(i64, codes)
            properties["status_offset"] = IntegerAttr(status_offset, i64)
        super().__init__(operands=[operands], properties=properties)

    @property
    def body_name(self) -> str:
        return self.body.root_reference.data

    def parts(self) -> dict[str, list[SSAValue]]:
        """The operands by role (the module docstring's order)."""
        has_trips, has_cond, carried, outer, scans, scan_inputs, has_status = self.layout.get_values()
        if len(self.reverse.get_values()) != scans + scan_inputs:
            raise ValueError(f"loop.run @{self.body_name}: {len(self.reverse.get_values())} reverse flags "
                             f"for {scan_inputs} scan inputs and {scans} scan outputs")
        values = list(self.args)
        taken: dict[str, list[SSAValue]] = {}
        for role, count in (("trips", has_trips), ("cond", has_cond), ("inits", carried),
                            ("scan_inputs", scan_inputs), ("outer", outer), ("finals", carried),
                            ("scans", scans), ("iter", 1),
                            ("cond_in", 1), ("cond_out", 1), ("temps", carried), ("arena", 1),
                            ("status", has_status)):
            taken[role], values = values[:count], values[count:]
        if values:
            raise ValueError(f"loop.run @{self.body_name}: {len(values)} operands more than its layout")
        return taken

    def verify_(self) -> None:
        try:
            self.parts()
        except ValueError as error:
            from xdsl.utils.exceptions import VerifyException

            raise VerifyException(str(error)) from None


LOOP = Dialect("loop", [RunOp], [])

# Bodies taken out of their module while passes run (detach_bodies), by the module that holds them.
_DETACHED: weakref.WeakKeyDictionary[ModuleOp, list[ModuleOp]] = weakref.WeakKeyDictionary()


def _nested(module: ModuleOp) -> list[ModuleOp]:
    return [op for op in module.ops if isinstance(op, ModuleOp)]


def detach_bodies(module: ModuleOp) -> list[ModuleOp]:
    """Take the nested body modules out of `module` (and theirs out of them), keeping them for
    `bodies_of`/`attach_bodies`; each gets the holder's `dlc.*` attributes (the target
    description passes read) and shares its weights. Returns the bodies."""
    from dialects.weights import attach_weights, weights_of

    bodies = _DETACHED.setdefault(module, [])
    for body in _nested(module):
        body.detach()
        bodies.append(body)
    for body in bodies:
        for key, value in module.attributes.items():
            if key.startswith("dlc.") and key not in body.attributes:
                body.attributes[key] = value
        attach_weights(body, weights_of(module))
        detach_bodies(body)
    return list(bodies)


def bodies_of(module: ModuleOp) -> list[ModuleOp]:
    """The bodies `detach_bodies` took out of `module` (empty when none)."""
    return list(_DETACHED.get(module, []))


def attach_bodies(module: ModuleOp) -> None:
    """Put the detached bodies back into `module` (first), recursively: for printing and codegen."""
    bodies = _DETACHED.pop(module, [])
    for body in bodies:
        attach_bodies(body)
    if bodies:
        first = next(iter(module.ops), None)
        for body in bodies:
            if first is None:
                module.body.block.add_op(body)
            else:
                module.body.block.insert_op_before(body, first)


def body_named(op: Operation, name: str) -> ModuleOp:
    """The body module `name` of the module holding `op`, attached or detached."""
    holder = op
    while holder is not None and not isinstance(holder, ModuleOp):
        holder = holder.parent_op()
    if holder is None:
        raise ValueError(f"@{name}: the op is not inside a module")
    for body in (*_nested(holder), *bodies_of(holder)):
        if isinstance(body.sym_name, StringAttr) and body.sym_name.data == name:
            return body
    raise ValueError(f"no loop body module @{name}")
