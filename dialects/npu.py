"""The `npu` dialect: the instruction stream of the simulated NPU (`npu-sim`, issue 6).

Mirrors the command streams of NPU compilers such as Arm Vela: DMA moves boxes
of DRAM tensors into a flat scratchpad, a MAC array and a vector unit compute on
scratchpad addresses (bytes), `npu.sync` waits for both engines. Inside a program
no SSA values: data flows through addresses and DRAM buffer names, as in the
hardware. Elements are float32 unless an op says otherwise: a buffer's `dtype`, a MAC's
`dtype` ("u8i8": uint8 a, int8 b, int32 acc; the zero points `a_zero`/`b_zero` are
subtracted in the array, as Ethos-U's ifm/weight zero points), a vector op's `types` (its
inputs', then its output's: requantize, quantize, dequantize and integer adds), so an int8
tile moves and occupies a quarter of the bytes of a float32 one. The program itself takes
the tensors it reads as operands (bound in order to its `input` and `weight` buffers) and
gives its `output` buffers as results, so it sits in a `kernel.launch` like any other kernel
body (IREE's dispatch of a device executable).

    %y = npu.program(%x, %w) : (tensor<1x3x8x8xf32>, tensor<8x3x3x3xf32>)
           attributes {sym_name = "k0", scratchpad_bytes = 524288 : i64} {
      npu.buffer {sym_name = "x", shape = array<i64: 1, 3, 8, 8>, kind = "input"}
      npu.dma_load {tensor = "x", offsets = array<i64: 0, 0, -1, -1>, sizes = array<i64: 1, 3, 10, 10>,
                    addr = 0 : i64, pad_value = 0.0 : f32}
      npu.mac {kind = "conv2d", a = 0 : i64, a_shape = array<i64: 3, 10, 10>, ...}
      npu.dma_store {tensor = "y", offsets = ..., sizes = ..., addr = 4096 : i64}
      npu.sync
    } -> tensor<1x8x8x8xf32>
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    f32,
    f64,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    attr_def,
    irdl_op_definition,
    opt_attr_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import NoTerminator


def _ints(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def ints_of(attr: DenseArrayBase) -> tuple[int, ...]:
    """The Python ints of an `array<i64: ...>` attribute."""
    return tuple(int(v) for v in attr.get_values())


# Element types of npu tensors and tiles, by their short names in the IR.
ELEMENT_TYPES = {"f32": "float32", "i32": "int32", "u8": "uint8", "i8": "int8"}


def element_name(numpy_dtype) -> str:
    """The short name ("f32", "u8", ...) of a numpy dtype the NPU holds; KeyError otherwise."""
    return {v: k for k, v in ELEMENT_TYPES.items()}[str(numpy_dtype)]


def _element(name: str) -> StringAttr:
    if name not in ELEMENT_TYPES:
        raise ValueError(f"npu: element type '{name}' is not one of {sorted(ELEMENT_TYPES)}")
    return StringAttr(name)


@irdl_op_definition
class ProgramOp(IRDLOperation):
    """One kernel's instruction stream, the DRAM buffers it names, the tensors it reads and writes."""

    name = "npu.program"
    inputs = var_operand_def()
    outputs = var_result_def()
    sym_name = attr_def(StringAttr)
    scratchpad_bytes = attr_def(IntegerAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())
    assembly_format = ("(`(` $inputs^ `)` `:` `(` type($inputs) `)`)? attr-dict-with-keyword $body "
                       "(`->` type($outputs)^)?")

    def __init__(self, sym_name: str, scratchpad_bytes: int, inputs: Sequence[SSAValue] = (),
                 output_types: Sequence[Attribute] = ()):
        super().__init__(operands=[inputs], result_types=[output_types],
                         attributes={"sym_name": StringAttr(sym_name),
                                     "scratchpad_bytes": IntegerAttr(scratchpad_bytes, i64)},
                         regions=[Region(Block())])


@irdl_op_definition
class BufferOp(IRDLOperation):
    """A DRAM tensor (row-major, float32 or `dtype`): an input, output, weight, temporary, or a
    view of another."""

    name = "npu.buffer"
    sym_name = attr_def(StringAttr)
    shape = attr_def(DenseArrayBase)
    kind = attr_def(StringAttr)  # input | output | weight | temp | view
    view_of = opt_attr_def(StringAttr)
    dtype = opt_attr_def(StringAttr)  # f32 when absent; i32, u8, i8
    assembly_format = "attr-dict"

    def __init__(self, sym_name: str, shape: Sequence[int], kind: str, view_of: str | None = None,
                 dtype: str = "f32"):
        attributes = {"sym_name": StringAttr(sym_name), "shape": _ints(shape), "kind": StringAttr(kind)}
        if view_of is not None:
            attributes["view_of"] = StringAttr(view_of)
        if dtype != "f32":
            attributes["dtype"] = _element(dtype)
        super().__init__(attributes=attributes)

    @property
    def element(self) -> str:
        return self.dtype.data if self.dtype is not None else "f32"


class _DmaOp(IRDLOperation):
    """A box of a DRAM tensor (offsets, sizes per dim) <-> a contiguous scratchpad range at `addr`."""

    tensor = attr_def(StringAttr)
    offsets = attr_def(DenseArrayBase)
    sizes = attr_def(DenseArrayBase)
    addr = attr_def(IntegerAttr)
    assembly_format = "attr-dict"

    def _attributes(self, tensor: str, offsets, sizes, addr: int) -> dict:
        return {"tensor": StringAttr(tensor), "offsets": _ints(offsets), "sizes": _ints(sizes),
                "addr": IntegerAttr(addr, i64)}


@irdl_op_definition
class DmaLoadOp(_DmaOp):
    """DRAM -> scratchpad. Elements of the box outside the tensor read as `pad_value` (free
    padding; an integer tensor's zero point, so padding contributes nothing to a MAC), or, with
    `pad_addr`, as the one-element scratchpad tile there (a zero point computed at run time,
    the register the MAC reads too: NPUs pad an input with its zero point register)."""

    name = "npu.dma_load"
    pad_value = attr_def(FloatAttr)
    pad_addr = opt_attr_def(IntegerAttr)

    def __init__(self, tensor: str, offsets, sizes, addr: int, pad_value: float = 0.0, pad_addr: int | None = None):
        attributes = self._attributes(tensor, offsets, sizes, addr)
        attributes["pad_value"] = FloatAttr(pad_value, f32)
        if pad_addr is not None:
            attributes["pad_addr"] = IntegerAttr(int(pad_addr), i64)
        super().__init__(attributes=attributes)


@irdl_op_definition
class DmaStoreOp(_DmaOp):
    """Scratchpad -> DRAM; the box must lie inside the tensor."""

    name = "npu.dma_store"

    def __init__(self, tensor: str, offsets, sizes, addr: int):
        super().__init__(attributes=self._attributes(tensor, offsets, sizes, addr))


@irdl_op_definition
class MacOp(IRDLOperation):
    """One tile on the MAC array: `acc (+)= a * b`.

    kind "conv2d": a [Cin, IH, IW] (padding already in the tile), b [Cout, Cin, KH, KW], acc [Cout, OH, OW].
    kind "depthwise2d": a [C, IH, IW], b [C, 1, KH, KW], acc [C, OH, OW]: each channel by its own filter.
    kind "matmul": a [M, K], b [K, N], acc [M, N]. `accumulate = 0` overwrites acc.
    dtype: absent, float32 throughout; else a's and b's 8-bit types ("u8i8", "i8i8", "u8u8",
    "i8u8") and an int32 acc += (a - a_zero) * (b - b_zero), wrapping as int32 does. A zero
    point computed at run time (DynamicQuantizeLinear's) is read from the scratchpad instead:
    `a_zero_addr`/`b_zero_addr` is the address of a one-element tile of a's/b's type (a zero
    point register loaded from the scratchpad, as the MAC's own operands are).
    """

    name = "npu.mac"
    kind = attr_def(StringAttr)
    a = attr_def(IntegerAttr)
    a_shape = attr_def(DenseArrayBase)
    b = attr_def(IntegerAttr)
    b_shape = attr_def(DenseArrayBase)
    acc = attr_def(IntegerAttr)
    acc_shape = attr_def(DenseArrayBase)
    strides = opt_attr_def(DenseArrayBase)
    dilations = opt_attr_def(DenseArrayBase)
    accumulate = attr_def(IntegerAttr)
    dtype = opt_attr_def(StringAttr)
    a_zero = opt_attr_def(IntegerAttr)
    b_zero = opt_attr_def(IntegerAttr)
    a_zero_addr = opt_attr_def(IntegerAttr)
    b_zero_addr = opt_attr_def(IntegerAttr)
    assembly_format = "attr-dict"

    def __init__(self, kind: str, a: int, a_shape, b: int, b_shape, acc: int, acc_shape,
                 accumulate: bool, strides=None, dilations=None, dtype: str | None = None,
                 zeros: tuple[int, int] = (0, 0), zero_addrs: tuple[int | None, int | None] = (None, None)):
        attributes = {"kind": StringAttr(kind), "a": IntegerAttr(a, i64), "a_shape": _ints(a_shape),
                      "b": IntegerAttr(b, i64), "b_shape": _ints(b_shape), "acc": IntegerAttr(acc, i64),
                      "acc_shape": _ints(acc_shape), "accumulate": IntegerAttr(int(accumulate), i64)}
        if strides is not None:
            attributes["strides"] = _ints(strides)
            attributes["dilations"] = _ints(dilations)
        if dtype is not None:
            if dtype not in ("u8i8", "i8i8", "u8u8", "i8u8"):
                raise ValueError(f"npu.mac: dtype '{dtype}' is not an 8-bit pair such as 'u8i8'")
            attributes["dtype"] = StringAttr(dtype)
            attributes["a_zero"] = IntegerAttr(int(zeros[0]), i64)
            attributes["b_zero"] = IntegerAttr(int(zeros[1]), i64)
            for key, addr in zip(("a_zero_addr", "b_zero_addr"), zero_addrs):
                if addr is not None:
                    attributes[key] = IntegerAttr(int(addr), i64)
        super().__init__(attributes=attributes)

    @property
    def integer(self) -> bool:
        return self.dtype is not None


@irdl_op_definition
class VectorOp(IRDLOperation):
    """The vector unit: `out = fn(ins...)` with numpy broadcasting of the input tiles to `out_shape`.

    fn: an elementwise function (add, relu, clip, ...) or a pooling window
    (max_pool, avg_pool: `kernel`, `strides`, `dilations` over the last two
    dims; global_avg_pool, global_max_pool: over the last two dims).
    `types`: the inputs' element types, then the output's (all f32 when absent). The integer
    functions, with the arithmetic of the ONNX specs as dlc's cpu target computes it
    (passes/lowering/rules/quantize.py): requantize (i32 acc, f32 multiplier -> 8 bits:
    saturate(round_half_even(f32(acc) * multiplier) + zero_point)), quantize (f32 ->
    8 bits: saturate(round_half_even(x / scale) + zero_point)), dequantize (8 or 32 bits ->
    f32: f32(x - zero_point) * scale): `scale` and `zero_point` carried, or (per axis, or
    computed at run time) read as input tiles [x, scale, zero point]; add on i32 (a bias);
    cast (i32/8 bits -> f32, or f32 -> 8 bits saturating); DynamicQuantizeLinear's range (a
    tile, and the range so far, -> [min(0, ...), max(0, ...)]) and qparams ([low, high] ->
    [scale, zero point]); multiplier ((s0 * s1) / s2 in f32, from scales computed at run time).
    """

    name = "npu.vector"
    fn = attr_def(StringAttr)
    ins = attr_def(DenseArrayBase)
    in_shapes = attr_def(ArrayAttr)
    out = attr_def(IntegerAttr)
    out_shape = attr_def(DenseArrayBase)
    kernel = opt_attr_def(DenseArrayBase)
    strides = opt_attr_def(DenseArrayBase)
    dilations = opt_attr_def(DenseArrayBase)
    alpha = opt_attr_def(FloatAttr)
    types = opt_attr_def(ArrayAttr)
    scale = opt_attr_def(FloatAttr)
    zero_point = opt_attr_def(IntegerAttr)
    assembly_format = "attr-dict"

    def __init__(self, fn: str, ins: Sequence[int], in_shapes, out: int, out_shape,
                 window: tuple | None = None, alpha: float | None = None, types: Sequence[str] | None = None,
                 scale: float | None = None, zero_point: int | None = None):
        attributes = {"fn": StringAttr(fn), "ins": _ints(ins),
                      "in_shapes": ArrayAttr([_ints(s) for s in in_shapes]),
                      "out": IntegerAttr(out, i64), "out_shape": _ints(out_shape)}
        if window is not None:
            for key, values in zip(("kernel", "strides", "dilations"), window):
                attributes[key] = _ints(values)
        if alpha is not None:
            attributes["alpha"] = FloatAttr(alpha, f32)
        if types is not None and any(t != "f32" for t in types):
            if len(types) != len(ins) + 1:
                raise ValueError(f"npu.vector {fn}: {len(types)} types for {len(ins)} inputs and one output")
            attributes["types"] = ArrayAttr([_element(t) for t in types])
        if scale is not None:  # a float32 scale, kept exactly (f64 holds every f32)
            attributes["scale"] = FloatAttr(float(scale), f64)
        if zero_point is not None:
            attributes["zero_point"] = IntegerAttr(int(zero_point), i64)
        super().__init__(attributes=attributes)

    def elements(self) -> list[str]:
        """The inputs' element types, then the output's."""
        if self.types is None:
            return ["f32"] * (len(self.ins.get_values()) + 1)
        return [t.data for t in self.types.data]


@irdl_op_definition
class SyncOp(IRDLOperation):
    """Wait until the DMA and compute engines are idle (a kernel boundary: DRAM tensors are complete)."""

    name = "npu.sync"
    assembly_format = "attr-dict"

    def __init__(self):
        super().__init__()


NPU = Dialect("npu", [ProgramOp, BufferOp, DmaLoadOp, DmaStoreOp, MacOp, VectorOp, SyncOp], [])

__all__ = [
    "NPU",
    "BufferOp",
    "DmaLoadOp",
    "DmaStoreOp",
    "ELEMENT_TYPES",
    "MacOp",
    "ProgramOp",
    "SyncOp",
    "VectorOp",
    "element_name",
    "ints_of",
]
