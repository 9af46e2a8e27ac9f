"""Lower the `kernels` phase to the `linalg` phase: memrefs, one function per kernel.

Mirrors IREE's dispatch outlining plus MLIR's one-shot bufferization, for static
shapes: every `kernel.launch` becomes a private `func.func` whose memref
arguments are its inputs, then its outputs, then its scratch buffers, with its
onnx ops lowered to linalg by the rules in `passes/lowering/rules`. `@main` takes
the model's inputs then outputs as memrefs, reads weights with
`memref.get_global` (weights stay outside the IR), allocates intermediates with
`memref.alloc` (plan-memory turns them into views of one arena) and calls the
kernels in order. View ops (Reshape, Flatten, ...) become `memref.reinterpret_cast`.
A Concat kernel whose inputs' slices of its output are contiguous has its producers write
straight into those slices (`memref.view`s of one buffer) and is not called at all, as
one-shot bufferization does with an in-place `tensor.insert_slice` (`_concats_in_place`).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.builder import Builder
from xdsl.context import Context
from xdsl.dialects import arith, func, memref
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    NoneType,
    StridedLayoutAttr,
    StringAttr,
    TensorType,
    UnitAttr,
    i8,
    i64,
)
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint

from dialects.diagnostics import CompileError, UnsupportedError
from dialects.kernel import LaunchOp, YieldOp
from dialects.onnx import VIEW_OPS, NoneOp, OnnxOp, WeightOp
from dialects.op_costs import flops
from dialects.types import byte_size, numpy_dtype
from dialects.weights import weights_of
from passes.lowering.rules import load_rules
from passes.lowering.utils.elementwise_fusion import emit_fused, gemm_epilogue, is_inlinable
from passes.lowering.utils.linalg_builder import KernelBuilder
from passes.lowering.utils.ukernel_calls import gemm_names


def memref_of(type: TensorType) -> MemRefType:
    return MemRefType(type.element_type, type.get_shape())


def reshape_view(builder: Builder, source: SSAValue, shape) -> SSAValue:
    """A contiguous buffer seen with another static shape (no data moves)."""
    strides, stride = [], 1
    for size in reversed(shape):
        strides.insert(0, stride)
        stride *= size
    result_type = MemRefType(source.type.element_type, list(shape))
    op = memref.ReinterpretCastOp(source, [], [], [], [0], list(shape), strides, result_type)
    builder.insert(op)
    return op.result


def view_at(builder: Builder, source: SSAValue, offset: int | SSAValue, shape, strides=None) -> SSAValue:
    """The block of `shape` starting `offset` elements into `source` (no copy): contiguous,
    or with the given `strides` (in elements, e.g. a column block of a row-major matrix). An
    `offset` known only at run time (an index value: a loop's block of rows) gives a view whose
    layout offset is dynamic, `strided<[...], offset: ?>`."""
    # reinterpret_cast counts its offset from the source's base, so a source that is itself a
    # view at an offset adds its own (a run-time one cannot be composed here).
    layout = source.type.layout
    source_offset = layout.get_offset() if isinstance(layout, StridedLayoutAttr) else 0
    if source_offset is None:
        raise NotImplementedError(f"view_at: a view of a view at a run-time offset ({source.type})")
    if source_offset:
        offset = offset + source_offset if isinstance(offset, int) else _add_index(builder, offset, source_offset)
    if isinstance(offset, int) and offset == 0 and strides is None:
        return reshape_view(builder, source, shape)
    if strides is None:
        strides, stride = [], 1
        for size in reversed(shape):
            strides.insert(0, stride)
            stride *= size
    strides = list(strides)
    if isinstance(offset, int):
        dynamic, static, layout_offset = [], [offset], offset
    else:
        dynamic, static, layout_offset = [offset], [DYNAMIC_INDEX], None
    result_type = MemRefType(source.type.element_type, list(shape), StridedLayoutAttr(strides, layout_offset))
    op = memref.ReinterpretCastOp(source, dynamic, [], [], static, list(shape), strides, result_type)
    builder.insert(op)
    return op.result


def _add_index(builder: Builder, value: SSAValue, constant: int) -> SSAValue:
    shift = arith.ConstantOp.from_int_and_width(constant, IndexType())
    total = arith.AddiOp(value, shift.result)
    builder.insert(shift)
    builder.insert(total)
    return total.result


# A Concat along an axis that only axes of one element precede (channels at batch 1, rows of a
# matrix) stores each input as one contiguous run of its output: its producers write there
# directly and the copy goes. SqueezeNet's eight Concats were 0.33 of its 7.9 ms on one thread.
CONCAT_IN_PLACE = True


@dataclass
class _ConcatInPlace:
    """A Concat kernel run in place: each input's byte offset in the output, and the output's
    bytes (`memref.alloc` of i8, or its slice of an outer Concat's, `outer`) once the first
    producer has been called."""

    launch: LaunchOp
    offsets: dict[SSAValue, int]
    buffer: SSAValue | None = None
    outer: tuple[_ConcatInPlace, int] | None = None


def _concats_in_place(ops: list[Operation], kept: set[SSAValue]) -> dict[SSAValue | LaunchOp, _ConcatInPlace]:
    """The plan, keyed by each input value it places and by the Concat launch it drops.

    A Concat kernel qualifies when it holds the Concat alone, on the CPU, its output is not
    returned (`kept`: values bound to @main's outputs), every axis before its axis has one
    element, and each input is a distinct result of a CPU kernel that no other Concat places
    and that is not returned either: the input then lives only in its slice, which its readers
    read as before. An input made by a Concat run in place puts that Concat's whole buffer in
    its slice (DenseNet's chains: each block's Concats share one buffer, nothing is copied)."""
    plans: dict[SSAValue | LaunchOp, _ConcatInPlace] = {}
    for op in ops:
        if not (isinstance(op, LaunchOp) and op.target.data == "cpu" and len(op.results) == 1):
            continue
        body = [o for o in op.body.block.ops if not isinstance(o, YieldOp)]
        if len(body) != 1 or not isinstance(body[0], OnnxOp) or body[0].onnx_type != "Concat":
            continue
        concat, result = body[0], op.results[0]
        shape = result.type.get_shape()
        axis = concat.attr("axis", 0)
        axis = axis + len(shape) if axis < 0 else axis
        inputs = list(concat.operands)
        if (result in kept or any(size != 1 for size in shape[:axis]) or any(size < 0 for size in shape)
                or len(set(inputs)) != len(inputs)
                or any(value in plans or value in kept or not isinstance(value.owner, LaunchOp)
                       or value.owner.target.data != "cpu" for value in inputs)):
            continue
        offsets, offset = {}, 0
        for value in inputs:
            offsets[value] = offset
            offset += byte_size(value.type)
        plan = _ConcatInPlace(op, offsets)
        plans[op] = plan
        plans.update(dict.fromkeys(inputs, plan))
        for value in inputs:
            if value.owner in plans:  # an inner Concat run in place
                plans[value.owner].outer = (plan, offsets[value])
    return plans


def _concat_buffer(builder: Builder, plan: _ConcatInPlace) -> SSAValue:
    """The bytes of a Concat run in place: allocated here when it is not in an outer one's."""
    if plan.buffer is None:
        size = MemRefType(i8, [byte_size(plan.launch.results[0].type)])
        if plan.outer is not None:
            outer, offset = plan.outer
            plan.buffer = _byte_view(builder, _concat_buffer(builder, outer), offset, size)
        else:
            alloc = memref.AllocOp([], [], size)
            builder.insert(alloc)
            plan.buffer = alloc.memref
    return plan.buffer


def _byte_view(builder: Builder, buffer: SSAValue, offset: int, type: MemRefType) -> SSAValue:
    """`type` at byte `offset` of the i8 `buffer` (a `memref.view`: identity layout)."""
    shift = arith.ConstantOp.from_int_and_width(offset, IndexType())
    view = memref.ViewOp(buffer, shift.result, [], type)
    builder.insert(shift)
    builder.insert(view)
    return view.result


@dataclass(frozen=True)
class KernelsToLinalgPass(ModulePass):
    """Outline each kernel.launch into a func of linalg ops on memrefs; @main calls them."""

    name = "kernels-to-linalg"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        old_main = next((f for f in op.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "main"), None)
        if old_main is None:
            raise CompileError("kernels-to-linalg: the module has no func.func @main")
        with gemm_names(op):  # GEMM names from one read of the module, not one per GEMM
            _Outliner(op, old_main).run()


class _Outliner:
    def __init__(self, module: ModuleOp, old_main: func.FuncOp):
        self.module = module
        self.old_main = old_main
        self.rules = load_rules()
        self.weights = weights_of(module)  # Dropout's training_mode is read from it
        self.globals: dict[str, memref.GlobalOp] = {}
        self.kernels: list[func.FuncOp] = []

    def run(self) -> None:
        old_block = self.old_main.body.block
        returned = list(old_block.last_op.operands)
        in_types = [memref_of(a.type) for a in old_block.args]
        out_types = [memref_of(v.type) for v in returned]
        block = Block(arg_types=[*in_types, *out_types])
        builder = Builder(InsertPoint.at_end(block))
        values: dict[SSAValue, SSAValue | None] = dict(zip(old_block.args, block.args[: len(in_types)]))
        out_args = block.args[len(in_types):]
        # The first return position of each value gets the kernel's store directly,
        # also through views: a kernel whose result is only reshaped into an output
        # writes into that output (seen with the kernel's shape), so no copy is needed.
        direct_output: dict[SSAValue, SSAValue] = {}
        in_place: set[SSAValue] = set()
        for value, arg in zip(returned, out_args):
            if value in direct_output or value in in_place:
                continue
            source = value
            while _is_view(source.owner) and sum(1 for _ in source.owner.operands[0].uses) == 1:
                source = source.owner.operands[0]
            if isinstance(source.owner, LaunchOp) and source not in direct_output:
                direct_output[source] = arg
                in_place.add(value)

        ops = list(old_block.ops)[:-1]
        self.order = {op: index for index, op in enumerate(ops)}
        self.in_place = _concats_in_place(ops, set(returned) | set(direct_output)) if CONCAT_IN_PLACE else {}
        for old in ops:
            if isinstance(old, WeightOp):
                values[old.result] = self._get_global(builder, old)
            elif isinstance(old, NoneOp):
                values[old.result] = None
            elif isinstance(old, OnnxOp) and old.onnx_type in VIEW_OPS:
                self._view(builder, old, values)
            elif isinstance(old, LaunchOp) and old in self.in_place:  # its inputs are in place
                values[old.results[0]] = _byte_view(builder, _concat_buffer(builder, self.in_place[old]), 0,
                                                    memref_of(old.results[0].type))
                self._credit_nodes(old)
            elif isinstance(old, LaunchOp):
                self._launch(builder, old, values, direct_output)
            else:
                raise CompileError(f"kernels-to-linalg: unexpected op {old.name} in @main; "
                                   "run form-kernels first")

        from passes.lowering.rules.movement import copy_into  # the generic copy

        for value, arg in zip(returned, out_args):
            if value in in_place:
                in_place.discard(value)  # a second return of the same value still copies
                continue
            source = values[value]
            copy_into(KernelBuilder(builder, _no_scratch), source, arg)
        builder.insert(func.ReturnOp())

        new_main = func.FuncOp("main", ([*in_types, *out_types], []), Region(block))
        for key in ("dlc.input_names", "dlc.output_names"):
            if key in self.old_main.attributes:
                new_main.attributes[key] = self.old_main.attributes[key]
        new_main.attributes["dlc.num_inputs"] = StringAttr(str(len(in_types)))
        self.old_main.detach()
        self.old_main.erase()
        self.module.body.block.add_ops([*self.globals.values(), *self.kernels, new_main])

    def _credit_nodes(self, concat: LaunchOp) -> None:
        """A Concat run in place is done when its last input's kernel is: that kernel's
        `dlc.nodes` lists its nodes too (profiles and reports account for every node)."""
        made = [value for value in self.in_place[concat].offsets if value.owner not in self.in_place]
        if not made:  # all of it from inner Concats run in place
            return
        last = max(made, key=lambda value: self.order[value.owner]).owner
        kernel = next(k for k in self.kernels if k.sym_name.data == last.kernel_name)
        nodes = [*(kernel.attributes["dlc.nodes"].data if "dlc.nodes" in kernel.attributes else ()),
                 *(concat.nodes.data if concat.nodes is not None else ())]
        kernel.attributes["dlc.nodes"] = ArrayAttr(nodes)

    def _get_global(self, builder: Builder, weight: WeightOp) -> SSAValue:
        name = weight.weight_name
        type = memref_of(weight.result.type)
        if name not in self.globals:
            self.globals[name] = memref.GlobalOp.get(StringAttr(name), type, UnitAttr(),
                                                     constant=UnitAttr())
        get = memref.GetGlobalOp(name, type)
        builder.insert(get)
        return get.memref

    def _view(self, builder: Builder, op: OnnxOp, values) -> None:
        if op.onnx_type == "Dropout":
            training = op.operands[2] if len(op.operands) > 2 else None
            if training is not None and not isinstance(training.type, NoneType):
                owner = training.owner
                array = self.weights.get(owner.weight_name) if isinstance(owner, WeightOp) else None
                if array is None or bool(array.reshape(-1)[0]):
                    raise UnsupportedError(f"{op.describe()}: training_mode Dropout is not supported "
                                           "(dlc compiles for inference)")
            if len(op.results) > 1 and op.results[1].uses:
                raise UnsupportedError(f"{op.describe()}: the Dropout mask output is not supported")
        source = values[op.operands[0]]
        values[op.results[0]] = reshape_view(builder, source, op.results[0].type.get_shape())

    def _launch(self, builder: Builder, launch: LaunchOp, values, direct_output) -> None:
        body_ops = [o for o in launch.body.block.ops if not isinstance(o, YieldOp)]
        yielded = list(launch.body.block.last_op.operands)
        inside = {r for o in body_ops for r in o.results}
        captured: list[SSAValue] = []
        for o in body_ops:
            for operand in o.operands:
                if operand not in inside and operand not in captured and values.get(operand) is not None:
                    captured.append(operand)

        result_buffers = []
        for result in launch.results:
            plan = self.in_place.get(result)
            if plan is not None:  # written into its slice of a Concat's output
                direct_output[result] = _byte_view(builder, _concat_buffer(builder, plan), plan.offsets[result],
                                                   memref_of(result.type))
            buffer = direct_output.get(result)
            if buffer is not None and buffer.type.get_shape() != result.type.get_shape():
                buffer = reshape_view(builder, buffer, result.type.get_shape())
            if buffer is None:
                alloc = memref.AllocOp([], [], memref_of(result.type))
                builder.insert(alloc)
                buffer = alloc.memref
            result_buffers.append(buffer)
            values[result] = buffer

        arg_types = [values[v].type for v in captured] + [b.type for b in result_buffers]
        kblock = Block(arg_types=arg_types)
        kbuilder = Builder(InsertPoint.at_end(kblock))
        call_args: list[SSAValue] = [values[v] for v in captured] + result_buffers
        scratch_allocs: list[Operation] = []

        def scratch(type: MemRefType) -> SSAValue:
            alloc = memref.AllocOp([], [], type)
            scratch_allocs.append(alloc)
            call_args.append(alloc.memref)
            return kblock.insert_arg(type, len(kblock.args))

        kb = KernelBuilder(kbuilder, scratch)
        inner: dict[SSAValue, SSAValue | None] = dict(zip(captured, kblock.args))
        for result, yielded_value in zip(launch.results, yielded):
            inner[yielded_value] = kblock.args[len(captured) + launch.results.index(result)]
        self._lower_body(kb, launch, body_ops, set(yielded), inner, values, scratch)
        kbuilder.insert(func.ReturnOp())
        # A weight the lowered body never reads (a filter Winograd replaced by its transform)
        # leaves the kernel's arguments, so dce drops its get_global and the artifact its bytes.
        for index in reversed(range(len(captured))):
            argument = kblock.args[index]
            if not argument.uses and isinstance(call_args[index].owner, memref.GetGlobalOp):
                kblock.erase_arg(argument)
                del call_args[index]

        name = launch.kernel_name
        kernel = func.FuncOp(name, ([a.type for a in kblock.args], []), Region(kblock), visibility="private")
        kernel.attributes["dlc.target"] = launch.target
        model_flops = sum(flops(o) for o in body_ops if isinstance(o, OnnxOp))
        kernel.attributes["dlc.flops"] = IntegerAttr(model_flops, i64)
        if kb.algorithms:
            kernel.attributes["dlc.algorithm"] = StringAttr(", ".join(dict.fromkeys(kb.algorithms)))
            kernel.attributes["dlc.executed_flops"] = IntegerAttr(max(model_flops - kb.flops_not_executed, 0), i64)
        if kb.decisions:
            kernel.attributes["dlc.lowering"] = StringAttr("; ".join(dict.fromkeys(kb.decisions)))
        kernel.attributes["dlc.bytes"] = IntegerAttr(sum(byte_size(v.type) for v in call_args), i64)
        if launch.nodes is not None:
            kernel.attributes["dlc.nodes"] = launch.nodes
        for key, attr in launch.attributes.items():
            if key.startswith("dlc."):
                kernel.attributes[key] = attr
        self.kernels.append(kernel)
        for alloc in scratch_allocs:
            builder.insert(alloc)
        call = func.CallOp(name, call_args, [])
        builder.insert(call)

    def _lower_body(self, kb, launch, body_ops, yielded, inner, values, scratch) -> None:
        """Lower the kernel's ops; elementwise expressions are fused into single loops."""
        onnx_ops = [o for o in body_ops if isinstance(o, OnnxOp)]
        inlinable = {o: o.onnx_type in self.rules and is_inlinable(self.rules[o.onnx_type], o) for o in onnx_ops}
        # An inlinable op whose only use is another inlinable op is computed inside that
        # op's loop, never stored.
        deferred: dict[SSAValue, OnnxOp] = {}
        for o in onnx_ops:
            if inlinable[o] and len(o.results) == 1 and o.results[0] not in yielded:
                uses = list(o.results[0].uses)
                if len(uses) == 1 and inlinable.get(uses[0].operation, False):
                    deferred[o.results[0]] = o

        def buffer_for(result: SSAValue) -> SSAValue | None:
            if result not in inner:
                inner[result] = scratch(memref_of(result.type)) if result.uses else None
            return inner[result]

        def chain_root(value: SSAValue) -> OnnxOp | None:
            """The op whose loop computes every use of `value` (SiLU's Mul(x, Sigmoid(x)) reads
            x twice), or None if its uses end in different loops."""
            roots = set()
            for use in value.uses:
                user = use.operation
                while user.results[0] in deferred:
                    user = next(iter(user.results[0].uses)).operation
                roots.add(user)
            return roots.pop() if len(roots) == 1 else None

        roots_taken: set[OnnxOp] = set()
        absorbed: set[OnnxOp] = set()  # epilogue roots a micro-kernel computed in its store
        inside = {r for op in body_ops for r in op.results}
        lowered: set[SSAValue] = set()

        def ready(value: SSAValue) -> bool:
            return value not in inside or value in lowered
        for o in body_ops:
            if isinstance(o, NoneOp):
                inner[o.result] = None
                continue
            if not isinstance(o, OnnxOp):
                raise CompileError(f"kernels-to-linalg: unexpected op {o.name} inside kernel "
                                   f"{launch.kernel_name}")
            if any(r in deferred for r in o.results) or o in absorbed:
                continue
            if inlinable[o]:
                emit_fused(kb, o, deferred, self.rules, lambda v: inner.get(v, values.get(v)),
                           buffer_for(o.results[0]))
                lowered.update(o.results)
                continue
            outs, epilogue_root = [], None
            for r in o.results:
                uses = list(r.uses)
                if r not in inner and uses and all(inlinable.get(u.operation, False) for u in uses):
                    # An epilogue: compute straight into the buffer the fused loop writes,
                    # which then updates it in place (no intermediate buffer).
                    root = chain_root(r)
                    if (root is not None and root not in roots_taken and root.results[0].type == r.type
                            and (len(uses) == 1 or self._takes_two_use_epilogue(o, root, deferred, ready))):
                        roots_taken.add(root)
                        inner[r] = buffer_for(root.results[0])
                        epilogue_root = root
                outs.append(buffer_for(r))
            ins = [inner.get(v, values.get(v)) for v in o.operands]
            kb.epilogue = None
            if epilogue_root is not None and len(o.results) == 1:
                kb.epilogue = gemm_epilogue(o.results[0], epilogue_root, deferred,
                                            lambda v: inner.get(v, values.get(v)), ready)
            self._lower(kb, o, ins, outs)
            lowered.update(o.results)
            if kb.epilogue is not None and kb.epilogue.consumed:
                absorbed.add(epilogue_root)
            kb.epilogue = None

    @staticmethod
    def _takes_two_use_epilogue(op: OnnxOp, root: OnnxOp, deferred, ready) -> bool:
        """Whether `op`'s result, read twice by its epilogue (SiLU: Mul(x, Sigmoid(x))), is
        computed into the epilogue's buffer: only for the contractions whose rules apply
        SiLU as they store (a loop updating that buffer in place, left for another op, ran
        1.7x slower than into a buffer of its own: it is fused with its neighbours and not
        flattened)."""
        return (op.onnx_type in ("Conv", "Gemm", "MatMul")
                and gemm_epilogue(op.results[0], root, deferred, lambda v: v, ready) is not None)

    def _lower(self, kb: KernelBuilder, op: OnnxOp, ins, outs) -> None:
        rule = self.rules.get(op.onnx_type)
        if rule is None:
            raise UnsupportedError(
                f"{op.describe()}: operator {op.onnx_type} has no CPU lowering yet",
                "`dlc ops` lists the supported operators; `--target reference` runs any ONNX operator")
        for value in (*op.operands, *op.results):
            if isinstance(value.type, TensorType):
                numpy_dtype(value.type.element_type)  # raises a clear error for unknown dtypes
        rule(kb, op, ins, outs)


def _is_view(op) -> bool:
    return isinstance(op, OnnxOp) and op.onnx_type in VIEW_OPS and op.onnx_type != "Dropout"


def _no_scratch(type: MemRefType) -> SSAValue:
    raise CompileError("a copy in @main asked for scratch memory")

