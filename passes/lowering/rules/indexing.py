"""Index-driven ONNX operators: Gather, GatherElements, GatherND, ScatterElements, ScatterND,
MaxUnpool, ReverseSequence, OneHot, Trilu, Range, and the fill ConstantOfShape.

Mirrors the ONNX operator spec at opset 21 (https://onnx.ai/onnx/operators/). Gathers load
the data at an index read at run time, inside the generic's body. Negative indices count
from the end, as the spec says. An index outside [-n, n) is an error (onnxruntime refuses
it): a constant one is refused at compile time; a run-time one is checked by the gather loop
where it loads the index (utils/runtime_checks.py) and the run raises a DlcError, while the
loop reads index 0 in its place, so generated code never reads out of bounds. OneHot is the
exception the spec makes: an index out of range selects no position.

Scatters (the deprecated Scatter is ScatterElements after opset conversion) copy 'data' to the
output, then one serial loop over 'updates' stores each update at its index: in index order,
so with reduction none a duplicate index keeps the last update (as onnxruntime's loop does;
the spec leaves it undefined), and add/mul/max/min combine in that order. An index out of
range is checked as the gathers' are and writes nothing (never index 0 in its place).
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import memref
from xdsl.dialects.builtin import IndexType, IntegerType
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Block, Region

from dialects.diagnostics import CompileError, UnsupportedError
from passes.lowering.kernels_to_linalg import reshape_view
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import BOOL, FLOAT, INT, UINT, require_kinds
from passes.lowering.rules.movement import (
    constant_input,
    is_empty,
    normalize_axis,
    require_shape_values,
)
from passes.lowering.utils.linalg_builder import (
    PARALLEL,
    REDUCTION,
    Body,
    affine_map,
    cst,
    dim,
    identity_map,
)
from passes.lowering.utils.runtime_checks import error_code, flag_if, index_check, status_word


def wrap_and_clamp(b, index_value, size: int, check: tuple | None = None):
    """An ONNX index (negative counts from the end) as an `index` in [0, size - 1].

    Without `check` (constant indices, range-checked at compile time) an index outside
    [-size, size) is clamped. With check = (status word, error code) it flags the code (the
    run then fails, so its output is never seen) and reads index 0: one select on the
    compare the check already made, cheaper than a 64-bit clamp without AVX-512."""
    i = b.on(IndexType())
    index = b.index_from(index_value)
    n = i.const(size)
    if check is not None:
        outside = index_check(b, check[0], index, size, check[1])
        index = i.select(i.cmp("slt", index, i.const(0)), i.add(index, n), index)
        return i.select(outside, i.const(0), index)
    index = i.select(i.cmp("slt", index, i.const(0)), i.add(index, n), index)
    return i.max(i.min(index, i.const(size - 1)), i.const(0))


def _check_index_range(kb, op, indices, output, sizes: list[int], axes_text: str
                       ) -> tuple | None:
    """Refuse a constant `indices` input with an index outside [-n, n), n = sizes[k] for the
    k-th of the last index dim's positions (one size: every index). For a run-time one, the
    (status word, error code) that the gather loop's wrap_and_clamp checks each index with
    (None when the loop never runs: an empty output reads no index)."""
    constant = constant_input(op, 1, required=False)
    if constant is None:
        if is_empty(output) or is_empty(indices):
            return None
        return status_word(kb), error_code(op, f"{op.describe()}: an index in input 'indices' "
                                               f"is out of range for {axes_text}")
    table = np.asarray(constant).astype(np.int64)
    limits = (np.broadcast_to(np.asarray(sizes, np.int64), table.shape) if len(sizes) > 1
              else sizes[0])
    outside = (table < -limits) | (table >= limits)
    if outside.any():
        where = tuple(int(k) for k in np.argwhere(outside)[0])
        n = limits if isinstance(limits, int) else int(limits[where])
        raise CompileError(f"{op.describe()}: index {int(table[where])} at {list(where)} of "
                           f"constant input 'indices' is out of range [{-n}, {n}) for {axes_text}",
                           "ONNX calls an index outside [-n, n) an error; fix the model's indices")


def _axis_text(axis: int, size: int) -> str:
    return f"axis {axis} of 'data' (size {size})"


def _gather_generic(kb, op, inputs, maps, output, data, data_indices) -> None:
    """output[d] = data[data_indices(b, d, input values)], looping over the output."""
    if is_empty(output):
        return
    if is_empty(data):
        raise UnsupportedError(f"{op.describe()}: cannot gather from empty data {data.type}")
    rank = len(output.type.get_shape())

    def body(b, args):
        return [b.load(data, data_indices(b, args[: len(inputs)]))]

    kb.generic(inputs, [output], [*maps, identity_map(rank)], [PARALLEL] * rank, body)


@lowers("Gather")
def lower_gather(kb, op, ins, outs) -> None:
    data, indices = ins
    shape = data.type.get_shape()
    axis = normalize_axis(op, op.attr("axis", 0), len(shape))
    q = len(indices.type.get_shape())
    out_rank = len(outs[0].type.get_shape())
    check = _check_index_range(kb, op, indices, outs[0], [shape[axis]],
                               _axis_text(axis, shape[axis]))
    # out[a..., j..., c...] = data[a..., indices[j...], c...]
    indices_map = affine_map(out_rank, [dim(axis + k) for k in range(q)])

    def data_indices(b, args):
        return [*(b.index(d) for d in range(axis)),
                wrap_and_clamp(b, args[0], shape[axis], check),
                *(b.index(d) for d in range(axis + q, out_rank))]

    _gather_generic(kb, op, [indices], [indices_map], outs[0], data, data_indices)


@lowers("GatherElements")
def lower_gather_elements(kb, op, ins, outs) -> None:
    data, indices = ins
    shape = data.type.get_shape()
    rank = len(shape)
    axis = normalize_axis(op, op.attr("axis", 0), rank)
    check = _check_index_range(kb, op, indices, outs[0], [shape[axis]],
                               _axis_text(axis, shape[axis]))

    def data_indices(b, args):
        return [wrap_and_clamp(b, args[0], shape[d], check) if d == axis else b.index(d)
                for d in range(rank)]

    _gather_generic(kb, op, [indices], [identity_map(rank)], outs[0], data, data_indices)


@lowers("GatherND")
def lower_gather_nd(kb, op, ins, outs) -> None:
    data, indices = ins
    shape, index_shape = data.type.get_shape(), indices.type.get_shape()
    batch = op.attr("batch_dims", 0)
    depth = index_shape[-1]  # how many leading (non-batch) data axes one index tuple picks
    if batch + depth > len(shape):
        raise UnsupportedError(f"{op.describe()}: batch_dims {batch} + index depth {depth} "
                               f"exceed the data rank {len(shape)}")
    picked_sizes = list(shape[batch:batch + depth])
    check = _check_index_range(kb, op, indices, outs[0], picked_sizes,
                               f"axes {batch}..{batch + depth - 1} of 'data' (sizes {picked_sizes})")
    outer = len(index_shape) - 1
    out_rank = len(outs[0].type.get_shape())

    # out[i..., c...] = data[i[:batch]..., indices[i..., 0..depth-1]..., c...]
    def data_indices(b, args):
        i = b.on(IndexType())
        position = [b.index(d) for d in range(outer)]
        picked = [wrap_and_clamp(b, b.load(indices, [*position, i.const(k)]), shape[batch + k],
                                 check) for k in range(depth)]
        return [*position[:batch], *picked, *(b.index(d) for d in range(outer, out_rank))]

    _gather_generic(kb, op, [], [], outs[0], data, data_indices)


_COMBINE = {"none": lambda b, old, new: new, "add": Body.add, "mul": Body.mul,
            "max": Body.max, "min": Body.min}


def _scatter_index(b, value, size: int, check: tuple | None):
    """An ONNX index as an `index` in [0, size) and the i1 `outside` (None when the indices are
    constants, checked at compile time); index 0 where outside, its store then a no-op."""
    i = b.on(IndexType())
    index = b.index_from(value)
    outside = None if check is None else index_check(b, check[0], index, size, check[1])
    index = i.select(i.cmp("slt", index, i.const(0)), i.add(index, i.const(size)), index)
    return (index, None) if outside is None else (i.select(outside, i.const(0), index), outside)


def _scatter(kb, op, data, indices, updates, output, updates_map, target) -> None:
    """output = data, then for each update in order: output[t] = combine(output[t], update),
    t = target(b, indices value) -> (indices of the output, [i1 outside flags]).

    The loop is a linalg.generic without outputs (it writes by memref.store) whose iterators
    are all reductions: no pass splits or reorders it across threads."""
    require_kinds(op, [data], (FLOAT, INT, UINT, BOOL))
    reduction = op.attr("reduction", "none")
    if reduction not in _COMBINE:
        raise UnsupportedError(f"{op.describe()}: reduction '{reduction}' is not one of "
                               f"{sorted(_COMBINE)}")
    if reduction != "none" and data.type.element_type == IntegerType(1):
        raise UnsupportedError(f"{op.describe()}: reduction '{reduction}' on bool 'data' is not "
                               "supported (expected reduction 'none')")
    if not is_empty(output):
        kb.copy(data, output)
    if is_empty(updates):
        return
    rank = len(updates.type.get_shape())
    block = Block(arg_types=[indices.type.element_type, updates.type.element_type])
    b = Body(block, data.type.element_type)
    position, outside = target(b, block.args[0])
    old = b.load(output, position)
    new = _COMBINE[reduction](b, old, block.args[1])
    for flag in outside:
        new = b.select(flag, old, new)  # an index out of range leaves the output as it was
    block.add_ops([memref.StoreOp.get(new, output, position), linalg.YieldOp()])
    kb.insert(linalg.GenericOp([indices, updates], [], Region(block), [updates_map, identity_map(rank)],
                               [REDUCTION] * rank))


@lowers("ScatterElements")
def lower_scatter_elements(kb, op, ins, outs) -> None:
    """out[i with i[axis] = indices[i]] = updates[i] (onnx__ScatterElements, opset 18)."""
    data, indices, updates = ins
    shape = data.type.get_shape()
    rank = len(shape)
    axis = normalize_axis(op, op.attr("axis", 0), rank)
    check = _check_index_range(kb, op, indices, updates, [shape[axis]], _axis_text(axis, shape[axis]))

    def target(b, value):
        index, outside = _scatter_index(b, value, shape[axis], check)
        return [index if d == axis else b.index(d) for d in range(rank)], [outside] if outside else []

    _scatter(kb, op, data, indices, updates, outs[0], identity_map(rank), target)


@lowers("ScatterND")
def lower_scatter_nd(kb, op, ins, outs) -> None:
    """out[indices[p]..., c...] = updates[p..., c...] (onnx__ScatterND, opset 18)."""
    data, indices, updates = ins
    shape, index_shape = data.type.get_shape(), indices.type.get_shape()
    depth = index_shape[-1]
    outer = len(index_shape) - 1
    expected = [*index_shape[:-1], *shape[depth:]]
    if depth > len(shape) or list(updates.type.get_shape()) != expected:
        raise UnsupportedError(f"{op.describe()}: 'updates' has shape {list(updates.type.get_shape())}; "
                               f"'data' {list(shape)} and 'indices' {list(index_shape)} need {expected}")
    sizes = list(shape[:depth])
    check = _check_index_range(kb, op, indices, updates, sizes,
                               f"axes 0..{depth - 1} of 'data' (sizes {sizes})")
    rank = len(expected)

    def target(b, _):
        i = b.on(IndexType())
        where = [b.index(d) for d in range(outer)]
        picked = [_scatter_index(b, b.load(indices, [*where, i.const(k)]), sizes[k], check)
                  for k in range(depth)]
        return ([index for index, _ in picked] + [b.index(d) for d in range(outer, rank)],
                [outside for _, outside in picked if outside is not None])

    # The generic reads one index per update to have an operand; the body loads the tuple.
    _scatter(kb, op, data, indices, updates, outs[0],
             affine_map(rank, [*(dim(d) for d in range(outer)), cst(0)]), target)


@lowers("MaxUnpool")
def lower_max_unpool(kb, op, ins, outs) -> None:
    """y = 0, then y.flat[I[i]] = X[i] in order (onnx__MaxUnpool, opset 11: I holds MaxPool's
    Indices into the unpooled shape, (in - 1) * stride - pads + kernel per axis). An
    'output_shape' other than that shape is refused: onnxruntime then takes the indices into
    output_shape's own flattening, onnx's reference evaluator (and the node test) into the
    unpooled shape placed at the output's start, so no answer matches both. An index outside the
    output fails the run and writes nothing."""
    x, indices = ins[0], ins[1]
    out = outs[0]
    require_kinds(op, [x], (FLOAT,))
    out_shape, in_shape = list(out.type.get_shape()), list(x.type.get_shape())
    kernel = list(op.attr("kernel_shape") or [])
    spatial = len(in_shape) - 2
    strides = list(op.attr("strides") or [1] * spatial)
    pads = list(op.attr("pads") or [0] * 2 * spatial)
    if len(kernel) != spatial or len(strides) != spatial or len(pads) != 2 * spatial:
        raise UnsupportedError(f"{op.describe()}: kernel_shape {kernel}, strides {strides} and pads {pads} "
                               f"do not match the {spatial} spatial axes of X")
    unpooled = in_shape[:2] + [(n - 1) * s - (pads[d] + pads[spatial + d]) + k
                               for d, (n, s, k) in enumerate(zip(in_shape[2:], strides, kernel))]
    if unpooled != out_shape:
        raise UnsupportedError(f"{op.describe()}: output shape {out_shape} differs from the unpooled "
                               f"shape {unpooled}; onnxruntime and the ONNX reference place the values "
                               "differently then", "omit output_shape, or make it the unpooled shape")
    if len(ins) > 2 and ins[2] is not None:
        require_shape_values(kb, op, 2, "output_shape", ins[2], out_shape)
    if is_empty(out):
        return
    kb.fill(out, 0.0)
    if is_empty(x):
        return
    size = int(np.prod(unpooled))
    flat = reshape_view(kb.builder, out, [size])
    constant = constant_input(op, 1, required=False)
    check = None
    if constant is None:
        check = (status_word(kb), error_code(op, f"{op.describe()}: an index in input 'I' is outside "
                                                 f"[0, {size}), the output's elements"))
    elif ((constant < 0) | (constant >= size)).any():
        raise CompileError(f"{op.describe()}: constant input 'I' holds an index outside [0, {size})")
    rank = len(x.type.get_shape())
    block = Block(arg_types=[x.type.element_type, indices.type.element_type])
    b = Body(block, x.type.element_type)
    i = b.on(IndexType())
    index = b.index_from(block.args[1])
    outside = i.cmp("uge", index, i.const(size))  # negative ones too
    if check is not None:
        flag_if(b, check[0], outside, check[1])
    index = i.select(outside, i.const(0), index)
    old = b.load(flat, [index])
    block.add_ops([memref.StoreOp.get(b.select(outside, old, block.args[0]), flat, [index]), linalg.YieldOp()])
    # Serial (reduction iterators), as the scatters: a repeated index keeps the last value.
    kb.insert(linalg.GenericOp([x, indices], [], Region(block), [identity_map(rank)] * 2, [REDUCTION] * rank))


@lowers("OneHot")
def lower_one_hot(kb, op, ins, outs) -> None:
    indices, _, values = ins
    out_shape = outs[0].type.get_shape()
    rank = len(out_shape)
    axis = normalize_axis(op, op.attr("axis", -1), rank)
    depth = out_shape[axis]  # static: the `depth` input was folded into the result type
    if is_empty(outs[0]):
        return
    value_rank = len(values.type.get_shape())
    maps = [affine_map(rank, [dim(d) for d in range(rank) if d != axis]),
            affine_map(rank, [cst(0)] * value_rank),  # off_value
            affine_map(rank, [cst(1)] * value_rank)]  # on_value

    def body(b, args):
        index, off, on = args[:3]
        i = b.on(IndexType())
        index = b.index_from(index)  # float indices truncate toward zero, as int64 casts do
        index = i.select(i.cmp("slt", index, i.const(0)), i.add(index, i.const(depth)), index)
        # Indices outside [-depth, depth - 1] match no position: all off_value, per the spec.
        return [b.select(i.cmp("eq", index, i.index(axis)), on, off)]

    kb.generic([indices, values, values], [outs[0]], [*maps, identity_map(rank)],
               [PARALLEL] * rank, body)


@lowers("Trilu")
def lower_trilu(kb, op, ins, outs) -> None:
    shape = ins[0].type.get_shape()
    rank = len(shape)
    if rank < 2:
        raise UnsupportedError(f"{op.describe()}: expected a rank >= 2 input, got shape {shape}")
    if is_empty(outs[0]):
        return
    upper = bool(op.attr("upper", 1))
    k = constant_input(op, 1, required=False)
    runtime_k = k is None and len(ins) > 1 and ins[1] is not None
    inputs, maps = [ins[0]], [identity_map(rank)]
    if runtime_k:
        inputs.append(ins[1])
        maps.append(affine_map(rank, [cst(0)] * len(ins[1].type.get_shape())))

    def body(b, args):
        i = b.on(IndexType())
        diagonal = b.index_from(args[1]) if runtime_k else i.const(0 if k is None else int(k.reshape(-1)[0]))
        # Element (r, c) is on or above diagonal k when c - r >= k.
        offset = i.sub(i.index(rank - 1), i.index(rank - 2))
        keep = i.cmp("sge" if upper else "sle", offset, diagonal)
        return [b.select(keep, args[0], b.const(0))]

    kb.generic(inputs, [outs[0]], [*maps, identity_map(rank)], [PARALLEL] * rank, body)


@lowers("Range")
def lower_range(kb, op, ins, outs) -> None:
    # Reached only when start/limit/delta are run-time values and the model declares the
    # output length (constant ones are folded at import). out[i] = start + i * delta, as
    # numpy's arange and the ONNX reference compute it.
    start, _, delta = ins
    if is_empty(outs[0]):
        return
    scalar = affine_map(1, [cst(0)] * len(start.type.get_shape()))

    def body(b, args):
        step = b.cast(b.index_to(b.index(0), b.type), b.type)
        return [b.add(args[0], b.mul(step, args[1]))]

    kb.generic([start, delta], [outs[0]], [scalar, scalar, identity_map(1)], [PARALLEL], body)


@lowers("ConstantOfShape")
def lower_constant_of_shape(kb, op, ins, outs) -> None:
    # The result shape is static, so the run-time `input` (the shape) needs no reading.
    value = op.attr("value")
    if not is_empty(outs[0]):
        kb.fill(outs[0], 0 if value is None else value.get_values()[0])


@lowers("ReverseSequence")
def lower_reverse_sequence(kb, op, ins, outs) -> None:
    """out[b, t] = x[b, len[b] - 1 - t] for t < len[b], else x[b, t] (onnx__ReverseSequence,
    opset 10). A length outside [0, max_time] fails the run; the loop then reads x[b, t]."""
    x, lengths = ins
    shape = x.type.get_shape()
    rank = len(shape)
    time_axis = normalize_axis(op, op.attr("time_axis", 0), rank)
    batch_axis = normalize_axis(op, op.attr("batch_axis", 1), rank)
    if {time_axis, batch_axis} != {0, 1}:
        raise UnsupportedError(f"{op.describe()}: time_axis {time_axis} and batch_axis "
                               f"{batch_axis} must be 0 and 1")
    if is_empty(outs[0]):
        return
    steps = shape[time_axis]
    code = error_code(op, f"{op.describe()}: a value of input 'sequence_lens' is outside "
                          f"[0, {steps}], the size of time axis {time_axis}")
    status = status_word(kb)

    def data_indices(b, args):
        i = b.on(IndexType())
        length = b.index_from(args[0])
        bad = i.or_(i.cmp("slt", length, i.const(0)), i.cmp("sgt", length, i.const(steps)))
        flag_if(b, status, bad, code)
        t = b.index(time_axis)
        reversed_t = i.sub(i.sub(length, i.const(1)), t)
        inside = i.and_(i.cmp("slt", t, length), i.xor(bad, i.const(1, IntegerType(1))))
        return [i.select(inside, reversed_t, t) if d == time_axis else b.index(d) for d in range(rank)]

    _gather_generic(kb, op, [lengths], [affine_map(rank, [dim(batch_axis)])], outs[0], x, data_indices)
