"""Where a memref's elements lie: its static strides and offset, in elements.

Mirrors MLIR's `getStridesAndOffset` and `isStaticShapeAndContiguousRowMajor` (BuiltinTypes):
an identity layout is row-major with offset 0; a strided layout says its own. Passes
(collapse-parallel-dims) and the code generator (bare-pointer addressing) read the same rule.
"""

from __future__ import annotations

from xdsl.dialects.builtin import MemRefType, NoneAttr, StridedLayoutAttr


def strides_and_offset(t: MemRefType) -> tuple[tuple[int, ...], int]:
    """Static element strides and offset of a memref (identity layout: row-major, offset 0)."""
    shape = t.get_shape()
    if any(d < 0 for d in shape):
        raise NotImplementedError(f"memref layout: dynamic shapes are not supported ({t})")
    if isinstance(t.layout, NoneAttr):
        strides = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        return tuple(strides), 0
    if isinstance(t.layout, StridedLayoutAttr):
        strides, offset = t.layout.get_strides(), t.layout.get_offset()
        if offset is None or any(s is None for s in strides):
            raise NotImplementedError(f"memref layout: dynamic strides/offset in {t}")
        return tuple(strides), offset  # type: ignore[arg-type]
    raise NotImplementedError(f"memref layout: unsupported {t.layout}")


def has_dynamic_offset(t: MemRefType) -> bool:
    """Whether `t` is a view at a run-time offset (`strided<[...], offset: ?>`)."""
    return isinstance(t.layout, StridedLayoutAttr) and t.layout.get_offset() is None


def pointer_strides_and_offset(t: MemRefType) -> tuple[tuple[int, ...], int]:
    """Strides and offset for bare-pointer addressing (dlc/codegen): as `strides_and_offset`,
    but a dynamic offset (`strided<[...], offset: ?>`, a view at a run-time offset) reads as 0,
    since the op making such a view (`memref.reinterpret_cast` with an offset operand) advances
    the pointer by it, as MLIR's descriptor lowering keeps it in the descriptor's offset field."""
    if has_dynamic_offset(t):
        return strides_and_offset(MemRefType(t.element_type, t.get_shape(),
                                             StridedLayoutAttr(t.layout.get_strides(), 0)))
    return strides_and_offset(t)


def is_contiguous(t: MemRefType) -> bool:
    """True when the memref's elements are dense and row-major (any static offset)."""
    row_major = strides_and_offset(MemRefType(t.element_type, t.get_shape()))[0]
    strides = strides_and_offset(t)[0]
    # Strides of size-1 dimensions never matter.
    return all(s == r or d == 1 for s, r, d in zip(strides, row_major, t.get_shape()))

