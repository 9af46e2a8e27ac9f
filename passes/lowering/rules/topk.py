"""TopK: the K largest (or smallest) elements along an axis, with their int64 indices.

Mirrors https://onnx.ai/onnx/operators/onnx__TopK.html (opset 11+): attributes axis, largest
and sorted, K as input 'K' (a 1-element int64 tensor, constant or computed at run time).
Equal values resolve to the lower index, as the spec says. A NaN ranks above every number
for largest=1 and below every number for largest=0 (numpy's sort order, as in ArgMax here).
The result is always sorted (sorted=0 leaves the order to the implementation).

dlc compiles static shapes, so K is the size of the output's axis. A constant K that differs
from it is refused at compile time; a run-time K is checked at run time (the run fails with
a DlcError), and the loops run over the static sizes only, so they never leave the buffers.

How: each element's rank is the number of elements that come before it in that order (a
reduction over the axis, n^2 compares per slice); ranks are a permutation of 0..n-1. Then
index[j] = the position whose rank is j, for j < K, and values[j] = x[index[j]].
"""

from __future__ import annotations

from xdsl.dialects.builtin import IndexType, IntegerType, MemRefType

from dialects.diagnostics import CompileError
from dialects.types import is_float
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, INT, UINT, require_kinds
from passes.lowering.rules.movement import constant_input, is_empty, normalize_axis
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, dim, identity_map
from passes.lowering.utils.runtime_checks import error_code, flag_if, status_word

I64 = IntegerType(64)


def _before(b, a, c, largest: bool):
    """Whether value a comes strictly before value c: greater (smaller) first, NaN first
    (last) when largest (smallest)."""
    before = b.compare("gt" if largest else "lt", a, c)
    if is_float(a.type):  # the body is typed by its int64 output; the values may be float
        a_nan, c_nan = b.is_nan(a), b.is_nan(c)
        true = b.const(1, IntegerType(1))
        nan_first = b.and_(a_nan, b.xor(c_nan, true)) if largest else b.and_(c_nan, b.xor(a_nan, true))
        before = b.or_(before, nan_first)
    return before


@lowers("TopK")
def lower_topk(kb, op, ins, outs) -> None:
    x, k_input = ins
    values, indices = outs
    require_kinds(op, [x], (FLOAT, INT, UINT))
    shape = x.type.get_shape()
    rank = len(shape)
    axis = normalize_axis(op, op.attr("axis", -1), rank)
    n, k = shape[axis], values.type.get_shape()[axis]
    if k > n:
        raise CompileError(f"{op.describe()}: output 'Values' has {k} elements on axis {axis}, "
                           f"more than the {n} of input 'X'",
                           "K must be at most the size of the axis; fix the model's K")
    constant_k = constant_input(op, 1, required=False)
    if constant_k is not None and (constant_k.size != 1 or int(constant_k.reshape(-1)[0]) != k):
        raise CompileError(f"{op.describe()}: input 'K' is {constant_k.reshape(-1).tolist()}, "
                           f"but the output's axis {axis} has size {k}",
                           "K must be one number between 0 and the size of the axis")
    if is_empty(values):
        return
    largest = bool(op.attr("largest", 1))

    # rank[..., i, ...] = #{m : x[m] before x[i], or x[m] ties x[i] and m < i}; loops (x's dims, m).
    place = kb.scratch(MemRefType(I64, shape))
    kb.fill(place, 0)
    loops = rank + 1
    at_m = affine_map(loops, [dim(rank) if d == axis else dim(d) for d in range(rank)])
    mine = affine_map(loops, [dim(d) for d in range(rank)])

    def count(b, args):
        own, other, acc = args
        i_before = _before(b, own, other, largest)
        m_before = _before(b, other, own, largest)
        tie = b.xor(b.or_(i_before, m_before), b.const(1, IntegerType(1)))
        i = b.on(IndexType())
        earlier = i.cmp("ult", b.index(rank), b.index(axis))
        beats = b.or_(m_before, b.and_(tie, earlier))
        return [b.on(I64).add(acc, b.cast(beats, I64))]

    kb.generic([x, x], [place], [mine, at_m, mine], [PARALLEL] * rank + [REDUCTION], count)

    # indices[..., j, ...] = the i whose rank is j; loops (indices' dims, i over the axis).
    check = None
    if constant_k is None:
        check = (status_word(kb), error_code(
            op, f"{op.describe()}: input 'K' is not {k}, the size of the output's axis {axis} "
                "this model was compiled for (dlc compiles static shapes)"))
    kb.fill(indices, 0)

    def pick(b, args):
        place_i, acc = args
        i64 = b.on(I64)
        if check is not None:  # a compare where the loop already is; the branch is never taken
            k_value = b.load(k_input, [b.const(0, IndexType())])
            flag_if(b, check[0], i64.compare("ne", k_value, i64.const(k)), check[1])
        hit = i64.compare("eq", place_i, b.index_to(b.index(axis), I64))
        return [b.select(hit, b.index_to(b.index(rank), I64), acc)]

    kb.generic([place], [indices], [at_m, mine], [PARALLEL] * rank + [REDUCTION], pick)

    # values = x gathered at indices (every index is in [0, n): a rank or the fill 0).
    def gather(b, args):
        at = [b.index_from(args[0]) if d == axis else b.index(d) for d in range(rank)]
        return [b.load(x, at)]

    kb.generic([indices], [values], [identity_map(rank), identity_map(rank)], [PARALLEL] * rank,
               gather)
