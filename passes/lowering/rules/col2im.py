"""Col2Im: the blocks of an im2col matrix summed back into an image (any number of spatial dims).

Mirrors https://onnx.ai/onnx/operators/onnx__Col2Im.html (opset 18): input [N, C * prod(block),
L], inputs image_shape and block_shape, attributes dilations, pads and strides. The image shape
is the output's static one. The block shape, a run-time input like the image's, need not be
known when compiling: only its product is (the input's channels over the output's), so each
output pixel sums over every tap k < prod(block), decoding k with the run-time block sizes (a
gather, never an indexed write: one pixel per loop iteration). A run whose image_shape is not
the compiled one, or whose block_shape does not fit the input (its product, or the number of
blocks L), fails with a DlcError; the loop reads only in-range elements meanwhile.
"""

from __future__ import annotations

from xdsl.dialects.builtin import IndexType, IntegerType, MemRefType

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, require_kinds
from passes.lowering.rules.movement import is_empty
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, dim
from passes.lowering.utils.runtime_checks import error_code, flag_if, status_word


def _ints(op, name: str, default: int, count: int) -> list[int]:
    value = list(op.attr(name) or [default] * count)
    if len(value) != count:
        raise UnsupportedError(f"{op.describe()}: attribute {name}={value} should have {count} values")
    return [int(v) for v in value]


@lowers("Col2Im")
def lower_col2im(kb, op, ins, outs) -> None:
    x, image_shape, block_shape = ins
    out = outs[0]
    require_kinds(op, [x], (FLOAT,))
    _, columns, blocks = x.type.get_shape()
    image = list(out.type.get_shape()[2:])
    channels, rank = out.type.get_shape()[1], len(image)
    if channels == 0 or columns % channels:
        raise UnsupportedError(f"{op.describe()}: input has {columns} rows, not a multiple of the "
                               f"output's {channels} channels")
    taps = columns // channels
    dilations, strides = _ints(op, "dilations", 1, rank), _ints(op, "strides", 1, rank)
    pads = _ints(op, "pads", 0, 2 * rank)
    if is_empty(out):
        return
    if taps == 0 or blocks == 0:
        kb.fill(out, 0)
        return
    status = status_word(kb)
    wrong_image = error_code(op, f"{op.describe()}: input 'image_shape' is not {image}, the image this "
                                 "model was compiled for (dlc compiles static shapes)")
    wrong_block = error_code(op, f"{op.describe()}: input 'block_shape' does not fit the input: its "
                                 f"product must be {taps} and it must give {blocks} blocks")
    loops = 2 + rank + 1  # n, c, the pixel, the tap k
    kb.fill(out, 0)

    def body(b, args):
        _, acc = args
        i = b.on(IndexType())
        true = i.const(1, IntegerType(1))
        image_ok, block_ok, sizes, counts = true, true, [], []
        for d in range(rank):
            given = b.index_from(b.load(image_shape, [i.const(d)]))
            image_ok = i.and_(image_ok, i.cmp("eq", given, i.const(image[d])))
            size = b.index_from(b.load(block_shape, [i.const(d)]))
            positive = i.cmp("sgt", size, i.const(0))
            size = i.select(positive, size, i.const(1))  # never a division by 0
            reach = i.sub(i.const(image[d] + pads[d] + pads[rank + d] - 1),
                          i.mul(i.const(dilations[d]), i.sub(size, i.const(1))))
            fits = i.cmp("sge", reach, i.const(0))
            count = i.add(i.divui(i.select(fits, reach, i.const(0)), i.const(strides[d])), i.const(1))
            block_ok = i.and_(block_ok, i.and_(positive, fits))
            sizes.append(size)
            counts.append(count)
        product, total = sizes[0], counts[0]
        for d in range(1, rank):
            product, total = i.mul(product, sizes[d]), i.mul(total, counts[d])
        block_ok = i.and_(block_ok, i.and_(i.cmp("eq", product, i.const(taps)), i.cmp("eq", total, i.const(blocks))))
        flag_if(b, status, i.xor(image_ok, true), wrong_image)
        flag_if(b, status, i.xor(block_ok, true), wrong_block)
        # Tap k as per-axis offsets (row-major over the block); the block each pixel lies in for
        # it, and that block's column (row-major over the block counts).
        k = b.index(loops - 1)
        rest, column, valid = k, i.const(0), i.and_(image_ok, block_ok)
        offsets = [None] * rank
        for d in reversed(range(rank)):
            offsets[d] = i.sub(rest, i.mul(i.divui(rest, sizes[d]), sizes[d]))
            rest = i.divui(rest, sizes[d])
        for d in range(rank):
            shifted = i.sub(i.add(b.index(2 + d), i.const(pads[d])), i.mul(offsets[d], i.const(dilations[d])))
            nonnegative = i.cmp("sge", shifted, i.const(0))
            shifted = i.select(nonnegative, shifted, i.const(0))
            block = i.divui(shifted, i.const(strides[d]))
            on_grid = i.cmp("eq", i.mul(block, i.const(strides[d])), shifted)
            valid = i.and_(valid, i.and_(nonnegative, i.and_(on_grid, i.cmp("slt", block, counts[d]))))
            column = i.add(i.mul(column, counts[d]), block)
        column = i.select(valid, column, i.const(0))
        row = i.select(valid, i.add(i.mul(b.index(1), i.const(taps)), k), i.const(0))
        value = b.load(x, [b.index(0), row, column])
        return [b.add(acc, b.select(valid, value, b.const(0.0)))]

    # The tap loop's bounds come from a [taps] scratch (linalg's pooling idiom: never read).
    bounds = kb.scratch(MemRefType(x.type.element_type, [taps]))
    kb.generic([bounds], [out], [affine_map(loops, [dim(loops - 1)]),
                                 affine_map(loops, [dim(d) for d in range(loops - 1)])],
               [PARALLEL] * (loops - 1) + [REDUCTION], body)
