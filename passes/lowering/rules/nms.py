"""NonMaxSuppression: per batch and class, boxes taken greedily in descending score order,
each dropped when it overlaps an already selected box by more than iou_threshold.

Mirrors https://onnx.ai/onnx/operators/onnx__NonMaxSuppression.html (opset 11) and its
reference implementation (onnx/reference/ops/op_non_max_suppression.py, as onnxruntime):
boxes [B, N, 4] as corners [y1, x1, y2, x2] (either order) or, center_point_box=1,
[x_c, y_c, w, h]; scores [B, C, N]; optional max_output_boxes_per_class (absent: 0, nothing
selected), iou_threshold (absent: 0) and score_threshold (absent: every box is a candidate;
given: only scores strictly above it). Equal scores go in box order. IoU = intersection / union,
0 when an area is not positive. Output [S, 3] int64 (batch, class, box), ordered by batch,
class, then selection.

How: each box's place in its class's score order is a counting reduction (TopK's), then the
greedy pass runs over that order in a serial loop per (batch, class) (the two are parallel):
box k is kept when it is a candidate, fewer than max_output were kept before it, and no kept
box before it overlaps it too much (an inner scf.for over the earlier ones reading the keep
flags written so far: O(N^2) IoU tests per class, as the reference). S depends on the
values: it is the output's declared size, and a run that selects another count fails with a
DlcError naming it (as NonZero, rules/compaction.py).
"""

from __future__ import annotations

from xdsl.dialects import scf
from xdsl.dialects.builtin import IndexType, IntegerType, MemRefType, NoneType
from xdsl.ir import Block, Region

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.compaction import I64, _ranks, _require_count
from passes.lowering.rules.elementwise import FLOAT, require_kinds
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, Body, affine_map, dim, identity_map

BOOL = IntegerType(1)


def _present(op, ins, index: int):
    return index < len(ins) and ins[index] is not None and not isinstance(op.operands[index].type, NoneType) \
        and 0 not in ins[index].type.get_shape()


def _scalar(b: Body, buffer):
    """Element 0 of a scalar or 1-element input."""
    i = b.on(IndexType())
    return b.on(buffer.type.element_type).load(buffer, [i.const(0)] * len(buffer.type.get_shape()))


def _extent(s: Body, box: list, axis: int, center: bool):
    """(min, max) of a box on axis 0 (y) or 1 (x), as the reference orders them."""
    if center:  # [x_c, y_c, w, h]
        c, half = (box[0], s.div(box[2], s.const(2.0))) if axis == 1 else (box[1], s.div(box[3], s.const(2.0)))
        return s.sub(c, half), s.add(c, half)
    a, b = (box[1], box[3]) if axis == 1 else (box[0], box[2])
    ordered = s.compare("ge", a, b)  # max_min: (rhs, lhs) when lhs >= rhs
    return s.select(ordered, b, a), s.select(ordered, a, b)


def _overlaps(s: Body, first: list, second: list, center: bool, threshold):
    """Whether IoU(first, second) > threshold (false when an area or the union is not positive)."""
    (y1lo, y1hi), (x1lo, x1hi) = _extent(s, first, 0, center), _extent(s, first, 1, center)
    (y2lo, y2hi), (x2lo, x2hi) = _extent(s, second, 0, center), _extent(s, second, 1, center)
    ix_lo, ix_hi = s.max(x1lo, x2lo), s.min(x1hi, x2hi)
    iy_lo, iy_hi = s.max(y1lo, y2lo), s.min(y1hi, y2hi)
    zero = s.const(0.0)
    apart = s.or_(s.compare("le", ix_hi, ix_lo), s.compare("le", iy_hi, iy_lo))
    inter = s.mul(s.sub(ix_hi, ix_lo), s.sub(iy_hi, iy_lo))
    area1 = s.mul(s.sub(x1hi, x1lo), s.sub(y1hi, y1lo))
    area2 = s.mul(s.sub(x2hi, x2lo), s.sub(y2hi, y2lo))
    union = s.sub(s.add(area1, area2), inter)
    degenerate = s.or_(s.or_(s.compare("le", inter, zero), s.compare("le", area1, zero)),
                       s.or_(s.compare("le", area2, zero), s.compare("le", union, zero)))
    over = s.compare("gt", s.div(inter, union), threshold)
    return s.and_(over, s.xor(s.or_(apart, degenerate), s.const(1, BOOL)))


@lowers("NonMaxSuppression")
def lower_nms(kb, op, ins, outs) -> None:
    boxes, scores = ins[0], ins[1]
    out = outs[0]
    require_kinds(op, [boxes, scores], (FLOAT,))
    batches, n_boxes, four = boxes.type.get_shape()
    s_batches, classes, s_boxes = scores.type.get_shape()
    if four != 4 or (s_batches, s_boxes) != (batches, n_boxes):
        raise UnsupportedError(f"{op.describe()}: 'boxes' {list(boxes.type.get_shape())} and 'scores' "
                               f"{list(scores.type.get_shape())} must be [B, N, 4] and [B, C, N]")
    center = bool(op.attr("center_point_box", 0))
    selected = out.type.get_shape()[0]
    limit = ins[2] if _present(op, ins, 2) else None
    iou = ins[3] if _present(op, ins, 3) else None
    floor = ins[4] if _present(op, ins, 4) else None
    element = scores.type.element_type

    # order[b, c, k] = the box whose place in class c's score order is k (equal scores: box order).
    place = _ranks_by_score(kb, scores)
    order = kb.scratch(MemRefType(I64, [batches, classes, n_boxes]))
    kb.fill(order, 0)
    mine = affine_map(4, [dim(0), dim(1), dim(3)])

    def invert(b, args):
        hit = b.compare("eq", args[0], b.index_to(b.index(2), I64))
        return [b.select(hit, b.index_to(b.index(3), I64), args[1])]

    kb.generic([place], [order], [mine, affine_map(4, [dim(0), dim(1), dim(2)])],
               [PARALLEL] * 3 + [REDUCTION], invert)

    # kept[b, c, k]: the greedy pass, k in order (a serial loop: each reads the flags before it).
    kept = kb.scratch(MemRefType(BOOL, [batches, classes, n_boxes]))
    kb.fill(kept, 0)

    def greedy(b, args):
        i = b.on(IndexType())
        f = b.on(element)
        batch, cls, k = b.index(0), b.index(1), b.index(2)
        box = b.index_from(b.load(order, [batch, cls, k]))
        score = f.load(scores, [batch, cls, box])
        candidate = b.const(1, BOOL)
        if floor is not None:
            candidate = f.compare("gt", score, f.cast(_scalar(b, floor), element))
        most = _scalar(b, limit) if limit is not None else b.on(I64).const(0)
        threshold = f.cast(_scalar(b, iou), element) if iou is not None else f.const(0.0)
        mine_box = [f.load(boxes, [batch, box, i.const(e)]) for e in range(4)]

        block = Block(arg_types=[IndexType(), I64, BOOL])
        s = Body(block, element)
        j, count, hidden = block.args
        other_kept = s.load(kept, [batch, cls, j])
        other = s.index_from(s.load(order, [batch, cls, j]))
        other_box = [s.load(boxes, [batch, other, s.on(IndexType()).const(e)]) for e in range(4)]
        suppressed = s.and_(other_kept, _overlaps(s, mine_box, other_box, center, threshold))
        block.add_op(scf.YieldOp(s.on(I64).add(count, s.cast(other_kept, I64)), s.or_(hidden, suppressed)))
        loop = scf.ForOp(i.const(0), k, i.const(1), [b.on(I64).const(0), b.const(0, BOOL)], Region(block))
        b.block.add_op(loop)
        before, hidden = loop.results
        room = b.on(I64).compare("lt", before, b.cast(most, I64))
        return [b.and_(b.and_(candidate, room), b.xor(hidden, b.const(1, BOOL)))]

    kb.generic([], [kept], [identity_map(3)], [PARALLEL, PARALLEL, REDUCTION], greedy)

    # out[s] = (batch, class, box) of the kept flag of rank s in (batch, class, order) order.
    shape = [batches, classes, n_boxes]
    _require_count(kb, op, kept, shape, lambda b, v: v, selected, "the number of boxes it selects")
    if selected == 0:
        return
    ranks = _ranks(kb, kept, shape, lambda b, v: v)
    kb.fill(out, 0)
    at_candidate = affine_map(5, [dim(2), dim(3), dim(4)])

    def pick(b, args):
        flag, rank, box, acc = args
        hit = b.and_(flag, b.compare("eq", rank, b.index_to(b.index(0), I64)))
        field = b.index_to(b.index(1), I64)
        value = b.select(b.compare("eq", field, b.const(0)), b.index_to(b.index(2), I64),
                         b.select(b.compare("eq", field, b.const(1)), b.index_to(b.index(3), I64), box))
        return [b.select(hit, value, acc)]

    kb.generic([kept, ranks, order], [out], [at_candidate] * 3 + [affine_map(5, [dim(0), dim(1)])],
               [PARALLEL, PARALLEL] + [REDUCTION] * 3, pick)


def _ranks_by_score(kb, scores):
    """place[b, c, n] = #{m : score m > score n, or equal and m < n} (TopK's counting)."""
    batches, classes, n_boxes = scores.type.get_shape()
    place = kb.scratch(MemRefType(I64, [batches, classes, n_boxes]))
    kb.fill(place, 0)
    other = affine_map(4, [dim(0), dim(1), dim(3)])
    own = affine_map(4, [dim(0), dim(1), dim(2)])

    def count(b, args):
        mine, theirs, acc = args
        i = b.on(IndexType())
        f = b.on(mine.type)
        earlier = i.cmp("ult", b.index(3), b.index(2))
        ahead = b.or_(f.compare("gt", theirs, mine), b.and_(f.compare("eq", theirs, mine), earlier))
        return [b.add(acc, b.cast(ahead, I64))]

    kb.generic([scores, scores], [place], [own, other, own], [PARALLEL] * 3 + [REDUCTION], count)
    return place
