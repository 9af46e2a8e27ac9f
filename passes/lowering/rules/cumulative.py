"""CumSum: running sums along an axis, inclusive or exclusive, forward or reverse.

Mirrors https://onnx.ai/onnx/operators/onnx__CumSum.html (opset 14): attributes exclusive and
reverse, input 'axis' (a scalar or 1-element int32/int64 tensor, negative counts from the end).

out[..., i, ...] = sum of x[..., m, ...] over the m that precede i (m <= i; m < i when
exclusive; m >= i, or m > i, when reverse): a reduction over m in which the other terms add
0, so the sum runs in the order of m as a sequential scan's does (n^2 adds per slice; a
position-id CumSum is over a sequence of a few hundred).

The axis is usually a constant. When it is computed at run time, one such reduction per
candidate axis adds into the output, each only where the run-time axis names its axis; an
axis outside [-rank, rank) fails the run with a DlcError (the loops never leave the buffers).
"""

from __future__ import annotations

from xdsl.dialects.builtin import IndexType

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, INT, require_kinds
from passes.lowering.rules.movement import constant_input, is_empty, normalize_axis
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, dim
from passes.lowering.utils.runtime_checks import error_code, flag_if, status_word


def _precedes(exclusive: bool, reverse: bool) -> str:
    """The index relation m <rel> i under which x[m] is a term of out[i]."""
    return {(False, False): "ule", (True, False): "ult",
            (False, True): "uge", (True, True): "ugt"}[exclusive, reverse]


@lowers("CumSum")
def lower_cumsum(kb, op, ins, outs) -> None:
    x, axis_input = ins
    out = outs[0]
    require_kinds(op, [x], (FLOAT, INT))
    shape = x.type.get_shape()
    rank = len(shape)
    if rank == 0:
        raise UnsupportedError(f"{op.describe()}: input 'x' is a scalar; CumSum needs rank >= 1")
    relation = _precedes(bool(op.attr("exclusive", 0)), bool(op.attr("reverse", 0)))
    kb.fill(out, 0)
    if is_empty(out):
        return
    constant = constant_input(op, 1, required=False)
    if constant is not None:
        if constant.size != 1:
            raise UnsupportedError(f"{op.describe()}: input 'axis' has {constant.size} values; "
                                   "CumSum takes one axis")
        _scan(kb, x, out, normalize_axis(op, int(constant.reshape(-1)[0]), rank), relation)
        return
    code = error_code(op, f"{op.describe()}: input 'axis' is out of range [{-rank}, {rank})")
    for candidate in range(rank):
        _scan(kb, x, out, candidate, relation,
              (axis_input, status_word(kb) if candidate == 0 else None, code))


def _scan(kb, x, out, axis: int, relation: str, runtime=None) -> None:
    """out[d] += x[d with m on `axis`] for the m in `relation` to d[axis]; loops (out's dims, m).

    runtime = (axis memref, status word or None, error code): add only where the run-time
    axis names `axis`; with a status word, also flag an axis out of range.
    """
    rank = len(x.type.get_shape())
    loops = rank + 1
    source_map = affine_map(loops, [dim(rank) if d == axis else dim(d) for d in range(rank)])
    out_map = affine_map(loops, [dim(d) for d in range(rank)])

    def body(b, args):
        value, acc = args
        i = b.on(IndexType())
        term = i.cmp(relation, b.index(rank), b.index(axis))
        if runtime is not None:
            axis_memref, status, code = runtime
            named = b.load(axis_memref, [i.const(0)] * len(axis_memref.type.get_shape()))
            a = b.on(named.type)
            if status is not None:
                outside = a.or_(a.compare("lt", named, a.const(-rank)), a.compare("ge", named, a.const(rank)))
                flag_if(b, status, outside, code)
            names_it = a.or_(a.compare("eq", named, a.const(axis)),
                             a.compare("eq", named, a.const(axis - rank)))
            term = b.and_(term, names_it)
        return [b.add(acc, b.select(term, value, b.const(0)))]

    kb.generic([x], [out], [source_map, out_map], [PARALLEL] * rank + [REDUCTION], body)
