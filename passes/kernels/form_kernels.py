"""Wrap every compute op of the graph in its own `kernel.launch` (the `kernels` phase).

One op per kernel: fusion passes later merge launches; this pass only fixes the
form (like IREE's dispatch-region formation with fusion off). View ops
(Reshape, Flatten, ...) stay outside kernels: they move no data. Each kernel is
placed on the module's target, or where `dlc.placement = {NODE = TARGET}` puts its
node (a partial target such as npu-sim takes some nodes; the rest go elsewhere).
"""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, ModuleOp, StringAttr
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from dialects.kernel import LaunchOp, YieldOp
from dialects.onnx import VIEW_OPS, OnnxOp


def module_target(module: ModuleOp) -> str:
    """The target the module compiles for (`dlc.target` on the module; default cpu)."""
    target = module.attributes.get("dlc.target")
    return target.data if isinstance(target, StringAttr) else "cpu"


@dataclass(frozen=True)
class FormKernelsPass(ModulePass):
    """Put each compute op in a kernel.launch of its own, placed on the module's target."""

    name = "form-kernels"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = module_target(op)
        placement = op.attributes.get("dlc.placement")
        placed = {n: t.data for n, t in placement.data.items()} if isinstance(placement, DictionaryAttr) else {}
        for function in op.ops:
            if not isinstance(function, func.FuncOp):
                continue
            count = 0
            for node in list(function.body.walk()):
                if not isinstance(node, OnnxOp) or node.onnx_type in VIEW_OPS:
                    continue
                if isinstance(node.parent_op(), LaunchOp):
                    continue
                launch = LaunchOp(f"k{count}_{node.onnx_type}", placed.get(node.node_name, target),
                                  [r.type for r in node.results], nodes=[node.node_name])
                count += 1
                Rewriter.insert_op(launch, _before(node))
                for old, new in zip(node.results, launch.results):
                    old.replace_all_uses_with(new)
                node.detach()
                launch.body.block.add_op(node)
                launch.body.block.add_op(YieldOp(list(node.results)))


def _before(op):
    from xdsl.rewriter import InsertPoint

    return InsertPoint.before(op)
