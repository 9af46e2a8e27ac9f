"""Pack constant GEMM operands at compile time into the panel layout the micro-kernel reads.

As fast libraries and IREE's data tiling do: a constant B (a MatMul/Gemm weight)
becomes a new weight, Bp[j // nr][k][j % nr] zero-padded to whole panels, so each
micro-kernel step reads one contiguous, cache-line aligned vector row; a Gemm
transB weight is transposed in the same step. The register tile width nr is chosen
here (from the target's vector width) unless the IR already sets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func, memref
from xdsl.dialects.builtin import DictionaryAttr, MemRefType, ModuleOp, StringAttr, UnitAttr
from xdsl.ir import BlockArgument, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from dialects.weights import weights_of
from passes.layout.gemm_packing import pack_b
from passes.lowering.ukernel_calls import gemm_spec, ukernels
from passes.tiling.gemm_tiles import choose_tiles
from passes.tiling.target_info import target_info


def _through_views(value: SSAValue) -> SSAValue:
    """The buffer a whole-buffer reshape view (memref.reinterpret_cast, offset 0) reads."""
    while isinstance(value.owner, memref.ReinterpretCastOp) and list(value.owner.static_offsets.get_values()) == [0]:
        value = value.owner.source
    return value


def _single_use(value: SSAValue):
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


@dataclass(frozen=True)
class PackWeightsPass(ModulePass):
    """Pack each constant GEMM B operand into nr-column panels (a new weight)."""

    name = "pack-weights"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        functions = {f.sym_name.data: f for f in op.ops if isinstance(f, func.FuncOp)}
        main = functions.get("main")
        if main is None:
            return
        calls_in_main = {c.callee.root_reference.data: c for c in main.body.walk() if isinstance(c, func.CallOp)}
        store = weights_of(op)
        info = target_info(op)
        for decl in ukernels(op):
            spec = gemm_spec(decl)
            if spec.get("b_layout") != "row":
                continue
            site = self._pack_site(decl, functions, calls_in_main)
            if site is None:
                continue
            kernel, gemm_call, arg_index, main_call, weight_name = site
            array = store[weight_name].reshape((spec["n"], spec["k"]) if spec.get("b_trans") else (spec["k"], spec["n"]))
            if spec.get("b_trans"):
                array = array.T
            nr = spec.get("nr") or choose_tiles(spec["m"], spec["n"], spec["k"], info.vector_width,
                                                info.l1_bytes, info.l2_bytes)[1]
            packed = pack_b(array, nr)
            packed_name = store.add(f"{weight_name}.packed{nr}", packed)
            packed_type = MemRefType(decl.function_type.inputs.data[1].element_type, list(packed.shape))
            op.body.block.insert_op_before(
                memref.GlobalOp.get(StringAttr(packed_name), packed_type, UnitAttr(), constant=UnitAttr()), main)
            get = memref.GetGlobalOp(packed_name, packed_type)
            Rewriter.insert_op(get, InsertPoint.before(main_call))
            main_call.operands[arg_index] = get.memref
            self._retype_kernel_arg(kernel, arg_index, packed_type, gemm_call)
            decl.function_type = _with_input(decl.function_type, 1, packed_type)
            spec.update(b_layout="packed", b_trans=0, nr=nr, ldb=spec["n"])
            decl.attributes["dlc.gemm"] = _attrs(spec)

    def _pack_site(self, decl, functions, calls_in_main):
        """(kernel, call, kernel arg index, main's call, weight) when B is a packable weight."""
        name = decl.sym_name.data
        for kernel in functions.values():
            if not kernel.body.blocks or kernel.sym_name.data == "main":
                continue
            for call in kernel.body.walk():
                if not (isinstance(call, func.CallOp) and call.callee.root_reference.data == name):
                    continue
                source = _through_views(call.operands[1])
                if not isinstance(source, BlockArgument) or source.block is not kernel.body.block:
                    return None
                # Only this GEMM may read the argument (through views): its layout changes.
                user = _single_use(source)
                while isinstance(user, memref.ReinterpretCastOp):
                    user = _single_use(user.result)
                if user is not call:
                    return None
                main_call = calls_in_main.get(kernel.sym_name.data)
                if main_call is None:
                    return None
                getter = main_call.operands[source.index].owner
                if not isinstance(getter, memref.GetGlobalOp):
                    return None
                return kernel, call, source.index, main_call, getter.name_.root_reference.data
        return None

    @staticmethod
    def _retype_kernel_arg(kernel: func.FuncOp, index: int, new_type: MemRefType, gemm_call: func.CallOp) -> None:
        block = kernel.body.block
        old = block.args[index]
        new = block.insert_arg(new_type, index)
        # The GEMM reads the packed buffer directly; the reshape views of the old one go away.
        view_chain = []
        value = gemm_call.operands[1]
        while value is not old:
            view_chain.append(value.owner)
            value = value.owner.source
        gemm_call.operands[1] = new
        for view in view_chain:
            Rewriter.erase_op(view)
        block.erase_arg(old)
        kernel.function_type = _with_input(kernel.function_type, index, new_type)


def _with_input(function_type, index: int, new_type):
    from xdsl.dialects.builtin import FunctionType

    inputs = list(function_type.inputs.data)
    inputs[index] = new_type
    return FunctionType.from_lists(inputs, list(function_type.outputs.data))


def _attrs(spec: dict) -> DictionaryAttr:
    from passes.lowering.ukernel_calls import gemm_attributes

    return gemm_attributes(spec)

