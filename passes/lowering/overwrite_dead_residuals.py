"""A kernel whose GEMM adds a residual that dies with it writes its output over that residual.

ResNet's blocks end in conv -> Add(identity) -> Relu, which the GEMM micro-kernel computes in
its store (`act(A@B + bias + R)`). When nothing reads R after that kernel, its buffer can take
the output: each tile reads R and then stores C at the same place, so the output needs no
memory of its own. That saves more than arena space: a fresh output buffer is a stream of
cache lines the core must first read for ownership and then write back, where writing over R
touches only lines R's own reads brought in. onnxruntime's Sum fusion into its NCHWc conv
does the same (the Sum input may be reused as the output). Like the in-place analysis of
MLIR's one-shot bufferization, but on memrefs after outlining, where both the kernel body and
@main's buffers are in view.

The rewrite, for a kernel call in @main whose kernel

- writes its output argument O only as the C operand of GEMM calls with a residual, and reads
  its argument I only as those calls' R, through the same views as O (so R and C are the same
  elements);
- gets fresh buffers (`memref.alloc`s) for both, of one type, and I's buffer (with every view
  of it) is not used after the call;

drops I from the kernel (its uses read O), passes I's buffer as O and marks each GEMM
`residual_in_c` (dialects/gemm_ukernel.py: k in one block, so no partial sums overwrite R
first; C and R not `noalias`). A GEMM whose kc already splits k (its rule's choice, or a user's
`--tile`) keeps R apart. Runs after apply-user-tiles, before tile-contractions.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func, memref
from xdsl.dialects.builtin import FunctionType, IntegerAttr, ModuleOp, StringAttr, UnitAttr, i64
from xdsl.ir import Block, BlockArgument, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects.gemm_ukernel import gemm_attributes, gemm_spec
from dialects.types import byte_size
from passes.lowering.plan_memory import liveness

# Views the kernels make of their arguments (no data moves; an alias of the same memory).
_VIEWS = (memref.ReinterpretCastOp, memref.CollapseShapeOp, memref.ExpandShapeOp, memref.CastOp,
          memref.SubviewOp)


@dataclass
class _GemmUse:
    call: func.CallOp
    decl: func.FuncOp
    r_index: int  # R's operand index (C's is 2)


def _view_chain(value: SSAValue) -> tuple[BlockArgument | None, list[Operation]]:
    """The kernel argument `value` views, and the views from it, outermost last."""
    chain = []
    while not isinstance(value, BlockArgument):
        if not isinstance(value.owner, _VIEWS):
            return None, []
        chain.append(value.owner)
        value = value.owner.operands[0]
    return value, chain[::-1]


def _same_view(a: list[Operation], b: list[Operation]) -> bool:
    """Whether two view chains pick the same elements from arguments of one type."""
    return len(a) == len(b) and all(
        type(x) is type(y) and x.results[0].type == y.results[0].type
        and x.properties == y.properties and len(x.operands) == len(y.operands) == 1
        for x, y in zip(a, b))


def _terminal_uses(arg: BlockArgument) -> list[tuple[Operation, int]]:
    """(user, operand index) of every use of `arg` other than by a view, through views."""
    found, pending = [], [arg]
    while pending:
        value = pending.pop()
        for use in value.uses:
            if isinstance(use.operation, _VIEWS) and use.index == 0:
                pending.append(use.operation.results[0])
            else:
                found.append((use.operation, use.index))
    return found


def _residual_gemms(kernel: func.FuncOp, decls: dict[str, func.FuncOp]) -> list[tuple[int, int, list[_GemmUse]]]:
    """(output argument, residual argument, their GEMM calls) the kernel could run in place."""
    uses_by_pair: dict[tuple[int, int], list[_GemmUse]] = {}
    for op in kernel.body.walk():
        if not isinstance(op, func.CallOp) or op.callee.root_reference.data not in decls:
            continue
        decl = decls[op.callee.root_reference.data]
        spec = gemm_spec(decl)
        if (not spec.get("residual") or spec.get("dtype", "f32") != "f32" or spec.get("accumulate")
                or spec.get("residual_in_c") or spec.get("kc", spec["k"]) < spec["k"]):
            continue  # (a kc that splits k, the rule's or a user's --tile, keeps R apart)
        r_index = 3 + ("bias" in spec)
        c_arg, c_chain = _view_chain(op.arguments[2])
        r_arg, r_chain = _view_chain(op.arguments[r_index])
        if (c_arg is None or r_arg is None or c_arg is r_arg or c_arg.type != r_arg.type
                or not _same_view(c_chain, r_chain)):
            continue
        uses_by_pair.setdefault((c_arg.index, r_arg.index), []).append(_GemmUse(op, decl, r_index))
    found = []
    args = kernel.body.block.args
    for (out, res), gemms in uses_by_pair.items():
        # O is touched only as these GEMMs' C, I only as their R (not also as an A, say): nothing
        # else reads R after a tile has overwritten it, and nothing else reads or writes O.
        as_c = {(g.call, 2) for g in gemms}
        as_r = {(g.call, g.r_index) for g in gemms}
        if (all(use in as_c for use in _terminal_uses(args[out]))
                and all(use in as_r for use in _terminal_uses(args[res]))):
            found.append((out, res, gemms))
    return found


@dataclass(frozen=True)
class OverwriteDeadResidualsPass(ModulePass):
    """Kernels whose GEMM adds a residual that dies with the kernel write their output over it."""

    name = "overwrite-dead-residuals"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        functions = {f.sym_name.data: f for f in op.ops if isinstance(f, func.FuncOp)}
        main = functions.get("main")
        if main is None or not main.body.blocks:
            return
        decls = {name: f for name, f in functions.items()
                 if not f.body.blocks and f.attributes.get("dlc.ukernel") == StringAttr("gemm")}
        block = main.body.block
        calls = [o for o in block.ops if isinstance(o, func.CallOp)]
        callers: dict[str, int] = {}
        for call in calls:
            callers[call.callee.root_reference.data] = callers.get(call.callee.root_reference.data, 0) + 1
        for call in calls:
            kernel = functions.get(call.callee.root_reference.data)
            if kernel is None or not kernel.body.blocks or callers[kernel.sym_name.data] != 1:
                continue
            for out, res, gemms in _residual_gemms(kernel, decls):
                if self._overwrite(block, call, kernel, out, res, gemms):
                    break  # the argument indices moved: one pair a kernel

    @staticmethod
    def _overwrite(block: Block, call: func.CallOp, kernel: func.FuncOp, out: int, res: int,
                   gemms: list[_GemmUse]) -> bool:
        output, residual = call.arguments[out], call.arguments[res]
        if not (isinstance(output.owner, memref.AllocOp) and isinstance(residual.owner, memref.AllocOp)
                and output.type == residual.type):
            return False
        if sum(1 for a in call.arguments if a is residual or a is output) != 2:
            return False
        ops = list(block.ops)
        position = ops.index(call)
        alloc = residual.owner
        # The residual's buffer, through every alias @main makes of it, dies at this call.
        if liveness(ops, [alloc])[alloc][1] != position:
            return False
        if any(a is not residual and _aliases(a, residual) for a in call.arguments):
            return False

        args = kernel.body.block.args
        args[res].replace_all_uses_with(args[out])
        kernel.body.block.erase_arg(args[res])
        kernel.function_type = FunctionType.from_lists([a.type for a in kernel.body.block.args], [])
        if "dlc.bytes" in kernel.attributes:
            kept = kernel.attributes["dlc.bytes"].value.data - byte_size(residual.type)
            kernel.attributes["dlc.bytes"] = IntegerAttr(max(kept, 0), i64)
        kernel.attributes["dlc.overwrites_residual"] = UnitAttr()

        output_alloc = output.owner
        output.replace_all_uses_with(residual)
        Rewriter.erase_op(output_alloc)
        new_args = [a for i, a in enumerate(call.arguments) if i != res]
        new_call = func.CallOp(call.callee, new_args, [])
        new_call.attributes.update(call.attributes)
        Rewriter.replace_op(call, new_call)

        for gemm in gemms:  # tile-contractions then keeps k in one block
            gemm.decl.attributes["dlc.gemm"] = gemm_attributes(gemm_spec(gemm.decl) | {"residual_in_c": 1})
        return True


def _aliases(value: SSAValue, buffer: SSAValue) -> bool:
    """Whether `value` is a view of `buffer` made in @main."""
    while isinstance(value.owner, (*_VIEWS, memref.ViewOp)):
        value = value.owner.operands[0]
        if value is buffer:
            return True
    return False
