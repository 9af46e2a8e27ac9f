"""The `kernel` dialect: groups of ops that run as one kernel on one target.

Mirrors IREE's `flow.dispatch.region`: a `kernel.launch` holds the ops of one
kernel in its region (not isolated from above; operands are captured
implicitly) and yields the values used outside it. Fusion decides the grouping;
the attributes record the decision so users can see it. As in IREE, the op reads
as a header (name, target, ONNX nodes, result types) over its body:

    %y = kernel.launch @k3_Conv on "cpu" nodes ["conv1", "relu1"]
           -> (tensor<1x64x56x56xf32>) attributes {dlc.fusion = [...]} {
      %a = "onnx.Conv"(%x, %w, %b) : (...) -> tensor<1x64x56x56xf32>
      %r = "onnx.Relu"(%a) : (...) -> tensor<1x64x56x56xf32>
      kernel.yield %r : tensor<1x64x56x56xf32>
    }

(printed on one line up to the `{`; the generic form `"kernel.launch"() <{...}> ({...})`
parses too.)
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import ArrayAttr, StringAttr, SymbolNameConstraint
from xdsl.ir import Attribute, Block, Dialect, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    lazy_traits_def,
    opt_attr_def,
    prop_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import HasParent, IsTerminator, SingleBlockImplicitTerminator
from xdsl.utils.exceptions import VerifyException


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Returns the values a kernel makes visible outside it."""

    name = "kernel.yield"
    values = var_operand_def()
    # lazy: LaunchOp, defined below, names this op as its terminator.
    traits = lazy_traits_def(lambda: (IsTerminator(), HasParent(LaunchOp)))
    assembly_format = "attr-dict ($values^ `:` type($values))?"

    def __init__(self, values: Sequence[SSAValue]):
        super().__init__(operands=[values])


@irdl_op_definition
class LaunchOp(IRDLOperation):
    """One kernel: its ops, the target it runs on, and the ONNX nodes it holds."""

    name = "kernel.launch"
    sym_name = prop_def(SymbolNameConstraint())
    target = prop_def(StringAttr)
    nodes = opt_attr_def(ArrayAttr[StringAttr])
    body = region_def("single_block")
    outputs = var_result_def()
    traits = traits_def(SingleBlockImplicitTerminator(YieldOp))
    assembly_format = ("$sym_name `on` $target (`nodes` $nodes^)? `->` `(` type($outputs) `)` "
                       "attr-dict-with-keyword $body")

    def __init__(
        self,
        sym_name: str,
        target: str,
        result_types: Sequence[Attribute],
        body: Region | None = None,
        nodes: Sequence[str] = (),
    ):
        super().__init__(
            properties={"sym_name": StringAttr(sym_name), "target": StringAttr(target)},
            attributes={"nodes": ArrayAttr([StringAttr(n) for n in nodes])},
            result_types=[result_types],
            regions=[body or Region(Block())],
        )

    def verify_(self) -> None:
        terminator = self.body.block.last_op
        if not isinstance(terminator, YieldOp):
            return  # SingleBlockImplicitTerminator reports the missing kernel.yield
        yielded = [value.type for value in terminator.operands]
        declared = [result.type for result in self.results]
        if yielded != declared:
            raise VerifyException(
                f"kernel.launch @{self.kernel_name} yields ({', '.join(map(str, yielded))}) but "
                f"declares results ({', '.join(map(str, declared))}): they must match one to one")

    @property
    def kernel_name(self) -> str:
        return self.sym_name.data


KERNEL = Dialect("kernel", [LaunchOp, YieldOp], [])
