"""Element types: numpy dtypes <-> MLIR builtin element types <-> ONNX TensorProto types.

Mirrors the MLIR builtin types (https://mlir.llvm.org/docs/Dialects/Builtin/):
integers are signless (`i64`), except unsigned ONNX types (`ui8`), and bool is `i1`.
"""

from __future__ import annotations

import numpy as np
import onnx
from xdsl.dialects.builtin import (
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    MemRefType,
    Signedness,
    TensorType,
    f16,
    f32,
    f64,
    i1,
    i8,
    i16,
    i32,
    i64,
)
from xdsl.ir import Attribute

from dialects.diagnostics import UnsupportedError

_BY_DTYPE: dict[np.dtype, Attribute] = {
    np.dtype(np.float32): f32,
    np.dtype(np.float64): f64,
    np.dtype(np.float16): f16,
    np.dtype(np.int64): i64,
    np.dtype(np.int32): i32,
    np.dtype(np.int16): i16,
    np.dtype(np.int8): i8,
    np.dtype(np.bool_): i1,
    np.dtype(np.uint8): IntegerType(8, Signedness.UNSIGNED),
    np.dtype(np.uint16): IntegerType(16, Signedness.UNSIGNED),
    np.dtype(np.uint32): IntegerType(32, Signedness.UNSIGNED),
    np.dtype(np.uint64): IntegerType(64, Signedness.UNSIGNED),
}


def element_type_for(dtype: np.dtype | type) -> Attribute:
    dtype = np.dtype(dtype)
    if dtype not in _BY_DTYPE:
        raise UnsupportedError(f"element type {dtype} is not supported")
    return _BY_DTYPE[dtype]


def numpy_dtype(element_type: Attribute) -> np.dtype:
    """The numpy dtype of an MLIR element type (or of a tensor/memref's elements)."""
    if isinstance(element_type, TensorType | MemRefType):
        element_type = element_type.element_type
    for dtype, candidate in _BY_DTYPE.items():
        if candidate == element_type:
            return dtype
    raise UnsupportedError(f"element type {element_type} has no numpy equivalent")


def numpy_dtype_for_onnx(onnx_elem_type: int, where: str = "") -> np.dtype:
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_elem_type))
    except Exception:
        dtype = None
    if dtype is None or dtype not in _BY_DTYPE:
        name = onnx.TensorProto.DataType.Name(onnx_elem_type)
        raise UnsupportedError(f"{where}: element type {name} is not supported "
                               "(dlc supports float32/64, float16, int8-64, uint8-64 and bool)")
    return dtype


def is_float(element_type: Attribute) -> bool:
    return isinstance(element_type, Float16Type | Float32Type | Float64Type)


def byte_size(shaped_type: TensorType | MemRefType) -> int:
    count = 1
    for size in shaped_type.get_shape():
        count *= size
    return count * numpy_dtype(shaped_type.element_type).itemsize
