"""NegativeLogLikelihoodLoss: -input[n, target[n, d], d] * weight[target[n, d]] per element,
then none, sum or the weighted mean.

Mirrors https://onnx.ai/onnx/operators/onnx__NegativeLogLikelihoodLoss.html (opset 13):
optional weight [C], ignore_index (an ignored element adds 0 to the loss and to the mean's
divisor). A target outside [0, C) that is not ignore_index fails the run with a DlcError (as in
onnxruntime); the loop reads class 0 in its place, never out of bounds. SoftmaxCrossEntropyLoss
reaches this rule through its function body (LogSoftmax, then this).
"""

from __future__ import annotations

from xdsl.dialects.builtin import IndexType, MemRefType

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, require_kinds
from passes.lowering.rules.movement import is_empty
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, identity_map
from passes.lowering.utils.runtime_checks import error_code, flag_if, status_word


@lowers("NegativeLogLikelihoodLoss")
def lower_nll_loss(kb, op, ins, outs) -> None:
    x, target = ins[0], ins[1]
    weight = ins[2] if len(ins) > 2 else None
    out = outs[0]
    require_kinds(op, [x], (FLOAT,))
    reduction = op.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise UnsupportedError(f"{op.describe()}: reduction '{reduction}' is not none, sum or mean")
    classes = x.type.get_shape()[1]
    ignore = op.attr("ignore_index")
    shape = list(target.type.get_shape())
    rank = len(shape)
    element = x.type.element_type
    losses = out if reduction == "none" else kb.scratch(MemRefType(element, shape))
    weights = kb.scratch(MemRefType(element, shape)) if reduction == "mean" else None
    if not is_empty(losses):
        status = status_word(kb)
        code = error_code(op, f"{op.describe()}: a value of input 'target' is outside [0, {classes}) "
                              f"and is not ignore_index ({ignore})")

        def body(b, args):
            t = args[0]
            i = b.on(IndexType())
            index = b.index_from(t)
            ignored = b.compare("eq", t, b.on(t.type).const(ignore)) if ignore is not None else None
            outside = i.cmp("uge", index, i.const(classes))  # negative ones too
            if ignored is not None:
                outside = i.and_(outside, i.xor(ignored, i.const(1, ignored.type)))
            flag_if(b, status, outside, code)
            skip = outside if ignored is None else i.or_(outside, ignored)
            index = i.select(skip, i.const(0), index)
            at = [b.index(0), index, *(b.index(d) for d in range(1, rank))]
            w = b.load(weight, [index]) if weight is not None else b.const(1.0)
            w = b.select(skip, b.const(0.0), w)
            results = [b.neg(b.mul(b.load(x, at), w))]
            return results + ([w] if weights is not None else [])

        outputs = [losses] + ([weights] if weights is not None else [])
        kb.generic([target], outputs, [identity_map(rank)] * (1 + len(outputs)), [PARALLEL] * rank, body)
    if reduction == "none":
        return
    total = _sum(kb, losses, out)
    if reduction == "mean":
        divisor = _sum(kb, weights, kb.scratch(MemRefType(element, [])))
        kb.generic([divisor], [total], [affine_map(0, []), affine_map(0, [])], [],
                   lambda b, args: [b.div(args[1], args[0])])


def _sum(kb, values, into):
    """into (rank 0) = the sum of every element of values, in row-major order."""
    rank = len(values.type.get_shape())
    kb.fill(into, 0.0)
    kb.generic([values], [into], [identity_map(rank), affine_map(rank, [])], [REDUCTION] * rank,
               lambda b, args: [b.add(args[1], args[0])])
    return into
