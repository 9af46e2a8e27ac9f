"""Loop fusion inside a kernel: elementwise expressions become ONE linalg.generic.

Within a fused kernel, an elementwise op whose single result feeds another
elementwise op is not stored: its scalar formula is inlined into the consumer's
loop body (TVM's compute_inline, MLIR's linalg elementwise fusion), so a chain
like BatchNormalization -> Add -> Relu reads its inputs once and writes once.
A rule is inlinable when it is made of exactly one `kb.elementwise(...)`
call: `scalar_formula` runs it against a stand-in builder that records the
scalar body instead of emitting a loop, so rule authors write nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import MemRefType, TensorType
from xdsl.ir import Attribute, Block, SSAValue

from dialects.op_classes import ELEMENTWISE, op_class
from passes.lowering.utils.linalg_builder import PARALLEL, Body, KernelBuilder, broadcast_map, identity_map


class NotInlinable(Exception):
    """The rule does more than one elementwise loop (scratch, reductions, several generics)."""


@dataclass(frozen=True, eq=False)
class _Placeholder:
    """Stands for an operand memref while a rule's scalar formula is captured."""

    type: MemRefType


class _ScalarCapture:
    """Quacks like KernelBuilder for rules made of one `elementwise` call; records its body."""

    def __init__(self, block: Block, scalars: dict[int, SSAValue]):
        self.block = block
        self.scalars = scalars
        self.result: SSAValue | None = None
        self.read: list[int] = []  # ids of the placeholders the loop reads

    def elementwise(self, inputs, output, body) -> None:
        if self.result is not None:
            raise NotInlinable("two elementwise loops")
        if any(id(v) not in self.scalars for v in inputs):
            raise NotInlinable("the loop reads a buffer that is not an operand")
        self.read = [id(v) for v in inputs]
        args = [self.scalars[id(v)] for v in inputs]
        self.result = body(Body(self.block, output.type.element_type), args)[0]

    def __getattr__(self, name: str):
        raise NotInlinable(f"the rule uses KernelBuilder.{name}")


def _memref_type(value: SSAValue) -> MemRefType | None:
    if isinstance(value.type, TensorType):
        return MemRefType(value.type.element_type, value.type.get_shape())
    return None


def scalar_formula(rule, op, block: Block, operand_scalars: list[SSAValue | None]) -> SSAValue:
    """Emit `op`'s scalar formula into `block` given its operands' scalars; NotInlinable if none."""
    return _capture(rule, op, block, operand_scalars)[0]


def _capture(rule, op, block: Block, operand_scalars) -> tuple[SSAValue, list[int]]:
    """(scalar result, indices of the operands the elementwise loop reads)."""
    if len(op.results) != 1 or not isinstance(op.results[0].type, TensorType):
        raise NotInlinable("not a single tensor result")
    ins, scalars, index_of = [], {}, {}
    for index, (value, scalar) in enumerate(zip(op.operands, operand_scalars)):
        memref_type = _memref_type(value)
        if scalar is None or memref_type is None:
            ins.append(None)
            continue
        placeholder = _Placeholder(memref_type)
        scalars[id(placeholder)] = scalar
        index_of[id(placeholder)] = index
        ins.append(placeholder)
    capture = _ScalarCapture(block, scalars)
    rule(capture, op, ins, [_Placeholder(_memref_type(op.results[0]))])
    if capture.result is None:
        raise NotInlinable("no elementwise loop")
    return capture.result, [index_of[i] for i in capture.read]


def read_operands(rule, op) -> list[int]:
    """Indices of the operands `op`'s elementwise loop reads (others, e.g. shapes, are not)."""
    block = Block(arg_types=[v.type.element_type for v in op.operands if isinstance(v.type, TensorType)])
    args = iter(block.args)
    scalars = [next(args) if isinstance(v.type, TensorType) else None for v in op.operands]
    return _capture(rule, op, block, scalars)[1]


def is_inlinable(rule, op) -> bool:
    """Does `rule` lower `op` as exactly one elementwise loop? (a dry run in a scratch block)"""
    if op_class(op.onnx_type) != ELEMENTWISE:
        return False  # only elementwise rules may be run as a dry run: others have side effects
    types: list[Attribute] = [v.type.element_type for v in op.operands if isinstance(v.type, TensorType)]
    block = Block(arg_types=types)
    args = iter(block.args)
    scalars = [next(args) if isinstance(v.type, TensorType) else None for v in op.operands]
    try:
        _, read = _capture(rule, op, block, scalars)  # one dry run gives the formula and what it reads
    except NotInlinable:
        return False
    except Exception:
        return False  # the rule rejects this op; lowering it unfused reports the real error
    # Every operand read must broadcast to the result (a shape operand read as data would not).
    out_rank = len(op.results[0].type.get_shape())
    return all(len(op.operands[i].type.get_shape()) <= out_rank for i in read)


def emit_fused(kb: KernelBuilder, root, deferred: dict[SSAValue, object], rules, buffer_of, output: SSAValue
               ) -> None:
    """One generic computing `root`'s result into `output`, inlining every deferred producer.

    `deferred` maps an intermediate value to the op computing it (inlined, never stored);
    `buffer_of(value)` gives the memref of any other operand (a leaf of the expression).
    """
    leaves: list[SSAValue] = []

    def collect(op) -> None:
        for index in read_operands(rules[op.onnx_type], op):
            value = op.operands[index]
            if value in deferred:
                collect(deferred[value])
            elif value not in leaves:
                leaves.append(value)

    collect(root)
    leaf_buffers = [buffer_of(v) for v in leaves]
    out_shape = output.type.get_shape()

    def body(b: Body, args):
        scalar_of = dict(zip(leaves, args))

        def compute(op) -> SSAValue:
            scalars = []
            for value in op.operands:
                if value in deferred:
                    scalars.append(compute(deferred[value]))
                else:
                    scalars.append(scalar_of.get(value))
            return scalar_formula(rules[op.onnx_type], op, b.block, scalars)

        return [compute(root)]

    maps = [broadcast_map(buf.type.get_shape(), out_shape) for buf in leaf_buffers]
    maps.append(identity_map(len(out_shape)))
    kb.generic(leaf_buffers, [output], maps, [PARALLEL] * len(out_shape),
               lambda b, args: body(b, args[: len(leaf_buffers)]))


@dataclass
class GemmEpilogue:
    """An elementwise tail a GEMM micro-kernel can apply in its final store instead of a loop.

    `act(C + residual)`: residual is a memref of C's shape (or None), activation one the
    micro-kernel knows ("relu", "relu6", "silu", "hardswish"). A rule that applies it sets
    `consumed`.
    """

    activation: str | None
    residual: SSAValue | None
    consumed: bool = False


def gemm_epilogue(result: SSAValue, root, deferred: dict, buffer_of, ready) -> GemmEpilogue | None:
    """The tail from a contraction's `result` to `root`, if it is [Add(result, R)] [activation]:
    Relu, Clip(0, 6), HardSwish, or SiLU as torch.onnx writes it (Mul(v, Sigmoid(v))).

    That is what ONNX graphs write after a Conv/Gemm once BatchNormalization is folded
    (the bias is the contraction's own): a residual Add, then the activation. `ready(value)`
    says whether the residual is computed before the contraction runs.
    """
    residual, value = None, result
    users = [use.operation for use in result.uses]
    # A Sum of two is an Add (Caffe2 exports, ResNet-50 among them, write residuals as Sum).
    if len(users) == 1 and users[0].onnx_type in ("Add", "Sum") and len(users[0].operands) == 2:
        add = users[0]
        other = add.operands[1] if add.operands[0] is result else add.operands[0]
        if other is result or other in deferred or other.type != result.type or not ready(other):
            return None
        residual, value = buffer_of(other), add.results[0]
        if add is root:
            return GemmEpilogue(None, residual)
    activation = _activation_of(value, root)
    if activation is None:
        return None
    return GemmEpilogue(activation, residual)


def _activation_of(value: SSAValue, root) -> str | None:
    """The activation `root` computes of `value` through the ops between them, if one the
    micro-kernel knows."""
    users = [use.operation for use in value.uses]
    if users == [root]:
        if root.onnx_type == "Relu":
            return "relu"
        if root.onnx_type == "Clip" and _clip_bounds(root) == (0.0, 6.0):
            return "relu6"
        if root.onnx_type == "HardSwish":
            return "hardswish"
        return None
    if len(users) == 2 and root in users and root.onnx_type == "Mul":
        sigmoid = users[0] if users[1] is root else users[1]
        if (sigmoid.onnx_type == "Sigmoid" and [u.operation for u in sigmoid.results[0].uses] == [root]
                and {*root.operands} == {value, sigmoid.results[0]}):
            return "silu"
    return None


def _clip_bounds(op) -> tuple[float, float] | None:
    """Constant (min, max) of a Clip, when both are weights of one element."""
    import numpy as np

    from dialects.onnx import WeightOp
    from dialects.weights import weights_of

    bounds = []
    for value in op.operands[1:3]:
        if not isinstance(value.owner, WeightOp):
            return None
        array = weights_of(value.owner.get_toplevel_object()).get(value.owner.weight_name)
        if array is None or array.size != 1:
            return None
        bounds.append(float(np.asarray(array).reshape(-1)[0]))
    return tuple(bounds) if len(bounds) == 2 else None
