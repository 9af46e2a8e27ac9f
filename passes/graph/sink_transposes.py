"""`sink-transposes`: move Transposes below elementwise ops, so a layout flows through them and
the Transposes at its two ends cancel.

onnx__Transpose.html: output dim i is input dim perm[i]. An elementwise op (onnx__Add.html,
onnx__DequantizeLinear.html, ...) computes each element from the elements at the same index
of its operands, so op(Transpose(a, p), Transpose(b, p)) = Transpose(op(a, b), p) exactly, and
a per-axis QuantizeLinear/DequantizeLinear on axis i of the transposed tensor works on axis
p[i] of a. ONNX Runtime's transpose optimizer (onnxruntime/core/optimizer/transpose_optimization)
pushes Transposes through the same ops for its NHWC convolutions.

Why: qlinear-conv-nhwc runs integer convolutions in NHWC, while the float ops between a
QDQ model's convolutions (a MobileNetV2 block's residual DequantizeLinear -> Add ->
QuantizeLinear) stay in the model's NCHW; each such Add sat between a Transpose to NCHW and
one back. Sunk through them, the two meet and cancel, and the Add runs in NHWC.

A Transpose moves below an op when every tensor operand of the op (the others must be single
values, or a per-axis QuantizeLinear/DequantizeLinear's parameters) is available in the
Transpose's input layout at no new cost: it is such a Transpose used by this op alone (or also
by ops only this op reads, a SiLU's Sigmoid beside its Mul), or a
value another Transpose already brings to that layout (or an elementwise op of one, rebuilt
on that Transpose: DequantizeLinear(x) as DequantizeLinear(Transpose(x))). It moves only when
the op's result feeds the inverse Transpose or another op of these kinds, or the op is a unary
one whose result is as large as its operand (a Relu, which then joins its producer's kernel), so it
stops where it would only carry the transpose onto wider data (before a GlobalAveragePool, the
Transpose stays on the uint8 tensor, not the float32 one after the DequantizeLinear).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, ModuleOp, StringAttr, TensorType, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from dialects.onnx import OPS, OnnxOp
from passes.graph.utils.constants import is_absent

# Ops whose operand 0 is the tensor and whose other operands (if any) are single values.
UNARY = frozenset({"Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Log", "Sqrt", "Erf", "LeakyRelu",
                   "HardSigmoid", "HardSwish", "Softplus", "Elu", "Selu", "Cast", "Identity", "Floor",
                   "Ceil", "Round", "Reciprocal", "Clip", "Not", "Sign"})
QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Ops whose tensor operands all have the result's shape (any other operand a single value, or a
# small one broadcast along some dims: `_broadcast`).
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Equal", "Less", "Greater",
                    "And", "Or", "Where"})
# A broadcast operand moves with its op (transposed itself) when the result is at least this
# many times its size.
BROADCAST_SHARE = 4


def _perm(op: Operation) -> list[int]:
    rank = len(op.operands[0].type.get_shape())
    return list(op.attr("perm", list(reversed(range(rank)))))


def _inverse(perm: list[int]) -> list[int]:
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return inverse


def _transpose_of(value: SSAValue) -> OnnxOp | None:
    op = value.owner
    return op if isinstance(op, OnnxOp) and op.onnx_type == "Transpose" else None


def _size(value: SSAValue) -> int:
    shape = value.type.get_shape() if isinstance(value.type, TensorType) else ()
    size = 1
    for d in shape:
        size *= d
    return size


def _tensor_operands(op: Operation) -> list[int] | None:
    """The indices of `op`'s operands that are its tensor (the result's shape), if `op` is an
    elementwise op this pass moves Transposes through; None otherwise."""
    if not isinstance(op, OnnxOp) or len(op.results) != 1 or not isinstance(op.results[0].type, TensorType):
        return None
    kind, shape = op.onnx_type, op.results[0].type.get_shape()
    if kind not in UNARY | QDQ | BINARY or not shape:
        return None
    present = [i for i in range(len(op.operands)) if not is_absent(op, i)]
    if kind in UNARY | QDQ:
        tensors = [0]
    else:
        tensors = [i for i in present if op.operands[i].type.get_shape() == shape]
    if not tensors or any(op.operands[i].type.get_shape() != shape for i in tensors):
        return None
    params = [i for i in present if i not in tensors]
    if kind in QDQ:  # per-axis parameters (one axis) are remapped; block quantization is not
        if op.attr("block_size", 0) or any(len(op.operands[i].type.get_shape()) > 1 for i in params):
            return None
        return tensors
    if any(_size(op.operands[i]) != 1 and not _broadcast(op.operands[i], shape) for i in params):
        return None
    return tensors


def _broadcast(value: SSAValue, shape) -> bool:
    """Whether `value` is a small operand broadcast along some of `shape`'s dims (a squeeze-and-
    excitation gate [N, C, 1, 1] on its [N, C, H, W] map): its rank, each dim 1 or `shape`'s, at
    most 1/BROADCAST_SHARE of the result. It takes the Transpose itself, at that small cost."""
    own = value.type.get_shape() if isinstance(value.type, TensorType) else ()
    return (len(own) == len(shape) and all(d in (1, full) for d, full in zip(own, shape))
            and _size(value) * BROADCAST_SHARE <= math.prod(shape))


def _broadcast_params(op: OnnxOp) -> list[int]:
    """The operands of an elementwise `op` broadcast along some dims (`_broadcast`)."""
    if op.onnx_type not in BINARY:
        return []
    shape = op.results[0].type.get_shape()
    return [i for i in range(len(op.operands)) if not is_absent(op, i) and _size(op.operands[i]) != 1
            and op.operands[i].type.get_shape() != shape and _broadcast(op.operands[i], shape)]


def _users(value: SSAValue) -> list[Operation]:
    return [use.operation for use in value.uses]


def _is_transpose(op: Operation, perm: list[int]) -> bool:
    return isinstance(op, OnnxOp) and op.onnx_type == "Transpose" and _perm(op) == perm


def _available(value: SSAValue, perm: list[int], inverse: list[int], depth: int = 2) -> bool:
    """Whether `value` (in the transposed layout) can be had in the source layout for free."""
    inner = _transpose_of(value)
    if inner is not None and _perm(inner) == perm:
        return True
    if any(_is_transpose(u, inverse) for u in _users(value)):
        return True
    op = value.owner
    tensors = _tensor_operands(op) if isinstance(op, Operation) else None
    return depth > 0 and tensors is not None and len(tensors) == 1 and \
        _available(op.operands[tensors[0]], perm, inverse, depth - 1)


def _in_source_layout(value: SSAValue, perm: list[int], inverse: list[int], before: Operation) -> SSAValue:
    """`value` in the source layout, as `_available` found it, built before `before`."""
    inner = _transpose_of(value)
    if inner is not None and _perm(inner) == perm:
        return inner.operands[0]
    existing = next((u for u in _users(value) if _is_transpose(u, inverse) and u.parent is before.parent
                     and u.is_before_in_block(before)), None)
    if existing is not None:
        return existing.results[0]
    if any(_is_transpose(u, inverse) for u in _users(value)):  # after `before`: a copy here (CSE merges)
        return _transposed(value, inverse, before)
    op = value.owner
    index = _tensor_operands(op)[0]
    source = _in_source_layout(op.operands[index], perm, inverse, before)
    return _rebuilt(op, {index: source}, perm, before).results[0]


def _transposed(value: SSAValue, perm: list[int], before: Operation) -> SSAValue:
    """Transpose(value, perm), a new op inserted before `before`."""
    shape = value.type.get_shape()
    new = OPS["Transpose"].create(operands=[value], attributes={"perm": DenseArrayBase.from_list(i64, perm)},
                                  result_types=[TensorType(value.type.element_type, [shape[p] for p in perm])])
    Rewriter.insert_op(new, InsertPoint.before(before))
    return new.results[0]


def _rebuilt(op: OnnxOp, sources: dict[int, SSAValue], perm: list[int], before: Operation) -> OnnxOp:
    """`op` on its tensor operands in the source layout (`sources`), inserted before `before`."""
    shape = op.results[0].type.get_shape()
    inverse = _inverse(perm)
    operands = [sources.get(i, v) for i, v in enumerate(op.operands)]
    for i in _broadcast_params(op):  # a small broadcast operand: its own (cancelling) Transpose
        inner = _transpose_of(operands[i])
        if inner is not None and _perm(inner) == perm:
            operands[i] = inner.operands[0]
            continue
        operands[i] = _transposed(operands[i], inverse, before)
    attributes = dict(op.attributes)
    if op.onnx_type in QDQ and any(_size(op.operands[i]) > 1 for i in range(1, len(op.operands))
                                   if not is_absent(op, i)):
        axis = op.attr("axis", 1) % len(shape)
        attributes["axis"] = IntegerAttr(perm[axis], i64)  # the transposed tensor's axis i is dim perm[i]
    if "onnx_node_name" in attributes:
        attributes["onnx_node_name"] = StringAttr(f"{op.node_name}.sunk")
    new = OPS[op.onnx_type].create(operands=operands, attributes=attributes, result_types=[
        TensorType(op.results[0].type.element_type, [shape[p] for p in inverse])])
    Rewriter.insert_op(new, InsertPoint.before(before))
    return new


def _sink(op: OnnxOp) -> bool:
    """Move the Transpose(s) feeding `op` below it, when that is free (module docstring)."""
    tensors = _tensor_operands(op)
    if tensors is None:
        return False
    feeding = [t for t in (_transpose_of(op.operands[i]) for i in tensors) if t is not None]
    if not feeding:
        return False
    perm = _perm(feeding[0])
    inverse = _inverse(perm)
    direct = [i for i in tensors if (t := _transpose_of(op.operands[i])) is not None and _perm(t) == perm
              and _only_feeds(op.operands[i], op)]
    if not direct or any(i not in direct and not _available(op.operands[i], perm, inverse) for i in tensors):
        return False
    result = op.results[0]
    if not any(_is_transpose(u, inverse) or _tensor_operands(u) is not None for u in _users(result)) \
            and not _same_size(op, tensors):
        return False
    sources = {i: _in_source_layout(op.operands[i], perm, inverse, op) for i in tensors}
    new = _rebuilt(op, sources, perm, op)
    back = OPS["Transpose"].create(operands=[new.results[0]], result_types=[result.type], attributes={
        "perm": DenseArrayBase.from_list(i64, perm), "onnx_node_name": StringAttr(f"{op.node_name}.transpose")})
    Rewriter.insert_op(back, InsertPoint.before(op))
    result.replace_all_uses_with(back.results[0])
    old_operands = [op.operands[i] for i in [*tensors, *_broadcast_params(op)]]
    Rewriter.erase_op(op)
    for value in old_operands:
        _erase_if_dead(value.owner)
    _cancel(back)
    return True


def _only_feeds(value: SSAValue, op: Operation) -> bool:
    """Whether `op` is all that reads `value`, itself or through ops that only `op` reads: a
    SiLU's Transpose feeds both its Sigmoid and its Mul (x * Sigmoid(x)), and once the Mul moves
    the Sigmoid and the Transpose die with it."""
    return all(user is op or (isinstance(user, OnnxOp) and len(user.results) > 0
                              and all(reader is op for result in user.results for reader in _users(result)))
               for user in _users(value))


def _same_size(op: OnnxOp, tensors: list[int]) -> bool:
    """Whether `op` is a unary op whose result has its operand's element type: the Transpose moves
    onto data of the same size, and the op may then join its producer's kernel (a Relu a conv's
    GEMM applies in its store)."""
    return (op.onnx_type in UNARY and tensors == [0]
            and op.results[0].type.element_type == op.operands[0].type.element_type)


def _erase_if_dead(op) -> None:
    """Erase `op` and the producers it alone kept alive, if nothing uses its results (only the
    ops this pass moves: Transposes and elementwise ops)."""
    while isinstance(op, OnnxOp) and op.parent is not None and not any(r.uses for r in op.results) and (
            op.onnx_type == "Transpose" or _tensor_operands(op) is not None):
        operand = op.operands[0].owner
        Rewriter.erase_op(op)
        op = operand


def _cancel(transpose: OnnxOp) -> None:
    """Transpose(Transpose(x, p), inverse(p)) users of `transpose` become x."""
    inverse = _inverse(_perm(transpose))
    source = transpose.operands[0]
    for user in _users(transpose.results[0]):
        if _is_transpose(user, inverse):
            user.results[0].replace_all_uses_with(source)
            Rewriter.erase_op(user)
    _erase_if_dead(transpose)


def sink_transposes(module: ModuleOp) -> bool:
    """Sink Transposes through elementwise ops until none moves, then cancel each Transpose
    read by its inverse (a pair another pass left side by side); whether anything changed."""
    moved = False
    changed = True
    while changed:
        changed = False
        for op in list(module.walk()):
            if op.parent is not None and isinstance(op, OnnxOp) and _sink(op):
                changed = moved = True
    for op in list(module.walk()):
        if (op.parent is not None and isinstance(op, OnnxOp) and op.onnx_type == "Transpose"
                and any(_is_transpose(user, _inverse(_perm(op))) for user in _users(op.results[0]))):
            _cancel(op)
            moved = True
    return moved


@dataclass(frozen=True)
class SinkTransposesPass(ModulePass):
    """Move Transposes below elementwise ops so that opposite ones meet and cancel."""

    name = "sink-transposes"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        sink_transposes(op)
