"""Instruction selection and tiling for npu-sim kernels (used by convert-kernels-to-npu).

One fused kernel (an anchor op and the elementwise chain fuse-kernels put after
it) becomes one `npu` instruction stream (dialects/npu.py): the cheapest tile
whose slots fit the scratchpad twice (double buffering, as Arm Vela schedules),
DMA boxes with free padding, MAC-array tiles, and the chain applied in place on
each output tile by the vector unit. The hardware is read from the module's
target description (`NpuHardware.of`), never from a target.

8-bit kernels (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger) keep their bytes:
uint8/int8 tiles, zero points subtracted in the MAC array (padding loads as the input's
zero point, so it adds nothing, as the cpu's patches padded with it), an int32 accumulator
and bias, and requantization on the vector unit with the multipliers the cpu target folds
(passes/lowering/rules/quantize.py's `requantize_multipliers`, one float32 per output
channel), so both targets round the same float32 products. QuantizeLinear and
DequantizeLinear are vector functions: per tensor the instruction carries the scale and zero
point, per axis it reads them as tiles of constants re-laid out to broadcast along the axis.
Zero points computed at run time (DynamicQuantizeLinear's) are loaded once into one-element
slots that the MAC reads (`a_zero_addr`), and scales computed at run time give the
multipliers on the vector unit per output tile, in the cpu's float32 operations.
DynamicQuantizeLinear itself is a two-pass kernel with three outputs (`_DynamicQuantize`).
Batched products (B [..., K, N]) carry the output's leading index into both operands' boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    NoneType,
    TensorType,
    f32,
    i64,
)
from xdsl.rewriter import InsertPoint, Rewriter

from dialects.diagnostics import CompileError
from dialects.kernel import YieldOp
from dialects.npu import (
    BufferOp,
    DmaLoadOp,
    DmaStoreOp,
    MacOp,
    ProgramOp,
    SyncOp,
    VectorOp,
    element_name,
    ints_of,
)
from dialects.onnx import OnnxOp, WeightOp
from dialects.op_costs import flops
from dialects.types import numpy_dtype

# ONNX op type -> vector unit function.
VECTOR_FNS = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max", "Min": "min",
              "Relu": "relu", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh",
              "Exp": "exp", "Neg": "neg", "Abs": "abs", "Sqrt": "sqrt", "Clip": "clip", "Cast": "cast"}
POOLS = {"MaxPool": "max_pool", "AveragePool": "avg_pool", "GlobalAveragePool": "global_avg_pool",
         "GlobalMaxPool": "global_max_pool"}
_ALIGN = 64  # scratchpad slots start on 64-byte boundaries (a DMA burst)
# The 8-bit contractions: operand indices of (a, b, a's zero point, b's zero point, bias).
INTEGER_CONTRACTIONS = {"QLinearConv": (0, 3, 2, 5, 8), "ConvInteger": (0, 1, 2, 3, None),
                        "QLinearMatMul": (0, 3, 2, 5, None), "MatMulInteger": (0, 1, 2, 3, None)}
QUANTIZERS = {"QuantizeLinear": "quantize", "DequantizeLinear": "dequantize"}


@dataclass(frozen=True)
class NpuHardware:
    """What tiling needs of the NPU, from the module's target description (defaults: npu-sim's)."""

    mac_rows: int = 32
    mac_cols: int = 32
    vector_lanes: int = 32
    scratchpad_bytes: int = 512 * 1024
    dma_bandwidth_gbps: float = 16.0
    dma_latency_cycles: int = 64
    clock_ghz: float = 1.0
    # 8-bit MACs per array cell and cycle, along the reduction: the int8 array's throughput is
    # this many times the float32 one's (rows x cols x int8_macs_per_pe MACs a cycle).
    int8_macs_per_pe: int = 4

    @property
    def dma_bytes_per_cycle(self) -> float:
        return self.dma_bandwidth_gbps / self.clock_ghz

    @classmethod
    def of(cls, module: ModuleOp) -> NpuHardware:
        attributes, found = module.attributes, {}
        mac = attributes.get("dlc.mac_array")
        if isinstance(mac, DenseArrayBase):
            found["mac_rows"], found["mac_cols"] = ints_of(mac)
        for field_name, key in (("vector_lanes", "dlc.vector_bits"),
                                ("scratchpad_bytes", "dlc.scratchpad_bytes"),
                                ("dma_bandwidth_gbps", "dlc.scratchpad_gbps"),
                                ("dma_latency_cycles", "dlc.dma_latency_cycles"),
                                ("clock_ghz", "dlc.clock_ghz"),
                                ("int8_macs_per_pe", "dlc.int8_macs_per_pe")):
            value = attributes.get(key)
            if isinstance(value, IntegerAttr | FloatAttr):
                found[field_name] = value.value.data
        if "vector_lanes" in found:
            found["vector_lanes"] //= 32
        return cls(**found)


def _present(value) -> bool:
    return not isinstance(value.type, NoneType)


def element_of(value) -> str:
    """The npu element type ("f32", "u8", ...) of a tensor value."""
    return element_name(numpy_dtype(value.type.element_type))


def itemsize(value) -> int:
    return numpy_dtype(value.type.element_type).itemsize


def constant_of(value, store) -> np.ndarray | None:
    """The array of a weight operand, None for anything computed at run time."""
    return store.get(value.owner.weight_name) if isinstance(value.owner, WeightOp) else None


def zero_point_of(op, index: int, store) -> int:
    """A constant zero point's one value (0 when the operand is absent or computed at run time,
    which the MAC reads from the scratchpad instead: `IntegerMac.runtime`): what the MAC array
    subtracts. A per-channel zero point must hold one value throughout (npu-sim's `supports`)."""
    if index >= len(op.operands) or not _present(op.operands[index]):
        return 0
    array = constant_of(op.operands[index], store)
    if array is None:
        return 0
    if array.size == 0 or not (array == array.reshape(-1)[0]).all():
        raise CompileError(f"convert-kernels-to-npu: {op.describe()}: operand {index} is not one constant "
                           "zero point; the MAC array subtracts one value")
    return int(array.reshape(-1)[0])


def runtime_operand(op, index: int, store):
    """Operand `index` when present and computed at run time (DynamicQuantizeLinear's zero point
    or scale), else None."""
    if index >= len(op.operands) or not _present(op.operands[index]):
        return None
    return op.operands[index] if constant_of(op.operands[index], store) is None else None


@dataclass(frozen=True)
class IntegerMac:
    """How an 8-bit contraction runs on the array: its operand types ("u8i8"), the zero points
    it subtracts (constants), the DRAM tensors of zero points computed at run time (None where
    constant), which the MAC reads from one-element scratchpad tiles, and its requantization
    (multipliers' DRAM tensor, y's zero point and type), None for an int32 result (ConvInteger,
    MatMulInteger). With scales computed at run time the multipliers' tensor is None and
    `scales` names a_scale's, b_scale's and y_scale's tensors, with whether b_scale is one per
    output channel: the vector unit then computes float32(a_scale * b_scale) / y_scale per
    tile, the cpu's formula op for op."""

    dtype: str
    zeros: tuple[int, int]
    requant: tuple[str | None, int, str] | None
    runtime: tuple[str | None, str | None] = (None, None)
    scales: tuple[str, str, str, bool] | None = None

    @property
    def out_bytes(self) -> int:
        return 1 if self.requant else 4


def integer_mac(lowering, op) -> IntegerMac | None:
    """The IntegerMac of an 8-bit contraction (None for a float32 op)."""
    from passes.lowering.rules.quantize import requantize_multipliers

    indices = INTEGER_CONTRACTIONS.get(op.onnx_type)
    if indices is None:
        return None
    a, b, a_zero, b_zero, _ = indices
    dtype = element_of(op.operands[a]) + element_of(op.operands[b])
    zeros = (zero_point_of(op, a_zero, lowering.store), zero_point_of(op, b_zero, lowering.store))
    runtime = tuple(None if v is None else lowering.name(v)
                    for v in (runtime_operand(op, i, lowering.store) for i in (a_zero, b_zero)))
    requant, scales = None, None
    if op.onnx_type.startswith("QLinear"):
        out_shape = op.results[0].type.get_shape()
        channels = out_shape[1] if op.onnx_type == "QLinearConv" else out_shape[-1]
        y_zero = zero_point_of(op, 7, lowering.store)
        if runtime_operand(op, 7, lowering.store) is not None:
            raise CompileError(f"convert-kernels-to-npu: {op.describe()}: y's zero point is computed at run "
                               "time (npu-sim's `supports` should have refused it)")
        found = requantize_multipliers(op)
        if found is not None:
            multipliers = np.broadcast_to(found[0], [channels]).astype(np.float32)
            requant = (lowering.constant(f"{lowering.launch.kernel_name}.requantize", multipliers), found[1],
                       element_of(op.results[0]))
        else:  # a scale computed at run time: the multipliers are too, on the vector unit
            a_scale, b_scale, y_scale = (op.operands[i] for i in (1, 4, 6))
            per_channel = math.prod(b_scale.type.get_shape()) > 1
            scales = (lowering.name(a_scale), lowering.name(b_scale), lowering.name(y_scale), per_channel)
            requant = (None, y_zero, element_of(op.results[0]))
    return IntegerMac(dtype, zeros, requant, runtime, scales)


def load_runtime_zeros(lowering, q: IntegerMac | None, slots) -> tuple[int | None, int | None]:
    """Load the zero points computed at run time once, into their one-element slots: the MAC's
    `a_zero_addr`/`b_zero_addr`."""
    addrs = [None, None]
    for i, name in enumerate(q.runtime if q else (None, None)):
        if name is not None:
            addrs[i] = slots(f"zero{i}", 0)
            shape = lowering.reads[name].type.get_shape()
            lowering.emit(DmaLoadOp(name, [0] * len(shape), list(shape), addrs[i]))
    return addrs[0], addrs[1]


def integer_slots(q: IntegerMac | None, channels: int) -> dict[str, int]:
    """The slots an 8-bit contraction adds: its multipliers, the run-time scales they come from,
    the zero points read at run time."""
    sizes = {}
    if q and q.requant:
        sizes["multipliers"] = 4 * channels
        if q.scales:
            sizes.update({"a_scale": 4, "b_scale": 4 * (channels if q.scales[3] else 1), "y_scale": 4})
    for i, name in enumerate(q.runtime if q else ()):
        if name is not None:
            sizes[f"zero{i}"] = 1
    return sizes


class _Slots:
    """Scratchpad slots, each twice (ping/pong) so DMA of the next tile overlaps this one's compute."""

    def __init__(self, sizes: dict[str, int]):
        self.addr, offset = {}, 0
        for name, size in sizes.items():
            padded = -(-size // _ALIGN) * _ALIGN
            self.addr[name] = (offset, offset + padded)
            offset += 2 * padded
        self.total = offset

    def __call__(self, name: str, parity: int) -> int:
        return self.addr[name][parity % 2]


def _pow2_upto(n: int) -> list[int]:
    sizes = {n}
    size = 1
    while size < n:
        sizes.add(size)
        size *= 2
    return sorted(sizes, reverse=True)


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(size, total - start)


def conv_pads(op, in_hw, kernel, strides, dilations) -> list[int]:
    """[top, left, bottom, right], auto_pad resolved as the ONNX Conv spec says."""
    mode = op.attr("auto_pad", "NOTSET")
    if mode in ("NOTSET", "VALID"):
        return list(op.attr("pads", [0, 0, 0, 0])) if mode == "NOTSET" else [0, 0, 0, 0]
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end




class _Anchor:
    """How one kind of anchor op is tiled: candidate tiles, their slots and cost, and the stream."""

    def __init__(self, lowering: _KernelLowering, op):
        self.low, self.op = lowering, op
        self.config = lowering.config
        self.out_shape = list(op.results[0].type.get_shape())

    def describe_tile(self, tile) -> str:
        return "x".join(str(t) for t in tile)

    def dma_cost(self, nbytes: float, transfers: float) -> float:
        return nbytes / self.config.dma_bytes_per_cycle + transfers * self.config.dma_latency_cycles


class _Conv(_Anchor):
    """Conv on NCHW: tiles of (output channels, input channels, output rows); full output width.
    A depthwise conv (one input and one output channel per group) is one `depthwise2d` MAC op
    per tile of (channels, 1, rows): each array row filters its own channel, as NPUs run
    depthwise layers, instead of one group (one channel) per pass of the whole array."""

    def __init__(self, lowering, op):
        super().__init__(lowering, op)
        xi, wi, _, _, bi = INTEGER_CONTRACTIONS.get(op.onnx_type, (0, 1, None, None, 2))
        x, w = op.operands[xi], op.operands[wi]
        self.x, self.w = lowering.name(x), lowering.name(w)
        self.bias = lowering.name(op.operands[bi]) if bi is not None and len(op.operands) > bi \
            and _present(op.operands[bi]) else None
        self.q = integer_mac(lowering, op)  # after x and w: their DRAM tensors are in0, ... in program order
        self.xb, self.wb = itemsize(x), itemsize(w)
        # Padding reads as x's zero point, so (x - x_zero) is 0 there: a constant the DMA carries,
        # or (computed at run time) the register the MAC reads, `pad_addr`.
        self.x_pad = self.q.zeros[0] if self.q else 0.0
        self.n, self.c, h, width = x.type.get_shape()
        self.cout, self.cg, self.kh, self.kw = w.type.get_shape()
        self.groups = op.attr("group", 1)
        self.strides = op.attr("strides", [1, 1])
        self.dilations = op.attr("dilations", [1, 1])
        self.pads = conv_pads(op, (h, width), (self.kh, self.kw), self.strides, self.dilations)
        self.cog = self.cout // self.groups
        self.depthwise = self.groups > 1 and self.cg == 1 and self.cog == 1
        _, _, self.ho, self.wo = self.out_shape

    def _in_extent(self, th: int) -> tuple[int, int]:
        (sh, sw), (dh, dw) = self.strides, self.dilations
        return (th - 1) * sh + (self.kh - 1) * dh + 1, (self.wo - 1) * sw + (self.kw - 1) * dw + 1

    def candidates(self):
        if self.depthwise:
            return [(c, 1, th) for c in _pow2_upto(self.groups) for th in _pow2_upto(self.ho)]
        return [(co, ci, th) for co in _pow2_upto(self.cog) for ci in _pow2_upto(self.cg)
                for th in _pow2_upto(self.ho)]

    def describe_tile(self, tile) -> str:
        if self.depthwise:
            return f"(channels {tile[0]}, rows {tile[2]} x width {self.wo})"
        return f"(Cout {tile[0]}, Cin {tile[1]}, rows {tile[2]} x width {self.wo})"

    def out_tile(self, tile):
        return [1, tile[0], tile[2], self.wo]

    def slots(self, tile):
        co, ci, th = tile
        ih, iw = self._in_extent(th)
        channels_in = co if self.depthwise else ci  # a depthwise tile reads the co channels it writes
        sizes = {"x": self.xb * channels_in * ih * iw, "w": self.wb * co * ci * self.kh * self.kw,
                 "acc": 4 * co * th * self.wo}
        if self.bias:
            sizes["bias"] = 4 * co
        return {**sizes, **integer_slots(self.q, co)}

    def cost(self, tile):
        co, ci, th = tile
        ih, iw = self._in_extent(th)
        out_bytes = self.q.out_bytes if self.q else 4
        if self.depthwise:
            tiles = self.n * math.ceil(self.groups / co) * math.ceil(self.ho / th)
            nbytes = tiles * (self.xb * co * ih * iw + self.wb * co * self.kh * self.kw + out_bytes * co * th * self.wo)
            compute = tiles * math.ceil(co / self.config.mac_rows) * self.kh * self.kw * th * self.wo
            return self.dma_cost(nbytes, 3 * tiles) + compute
        tiles = self.n * self.groups * math.ceil(self.cog / co) * math.ceil(self.ho / th)
        steps = tiles * math.ceil(self.cg / ci)
        nbytes = (steps * (self.xb * ci * ih * iw + self.wb * co * ci * self.kh * self.kw)
                  + tiles * out_bytes * co * th * self.wo)
        rows, cols = self.config.mac_rows, self.config.mac_cols * (self.config.int8_macs_per_pe if self.q else 1)
        compute = steps * math.ceil(co / rows) * math.ceil(ci / cols) * self.kh * self.kw * th * self.wo
        return self.dma_cost(nbytes, 3 * steps) + compute

    def emit(self, tile, slots):
        if self.depthwise:
            yield from self._emit_depthwise(tile, slots)
            return
        co_t, ci_t, th_t = tile
        (sh, _), (top, left) = self.strides, self.pads[:2]
        step = parity = 0
        self.low.load_runtime_zeros(self.q, slots)
        for n in range(self.n):
            for g in range(self.groups):
                for co0, co in _chunks(self.cog, co_t):
                    for oh0, th in _chunks(self.ho, th_t):
                        ih, iw = self._in_extent(th)
                        acc = slots("acc", parity)
                        for ci0, ci in _chunks(self.cg, ci_t):
                            x, w = slots("x", step), slots("w", step)
                            self.low.emit(DmaLoadOp(self.x, [n, g * self.cg + ci0, oh0 * sh - top, -left],
                                                    [1, ci, ih, iw], x, self.x_pad, self.low.zero_addrs[0]))
                            self.low.emit(DmaLoadOp(self.w, [g * self.cog + co0, ci0, 0, 0],
                                                    [co, ci, self.kh, self.kw], w))
                            self.low.emit(MacOp("conv2d", x, [ci, ih, iw], w, [co, ci, self.kh, self.kw], acc,
                                                [co, th, self.wo], ci0 > 0, self.strides, self.dilations,
                                                **self.low.mac_args(self.q)))
                            step += 1
                        if self.bias:
                            self._add_bias(g * self.cog + co0, co, th, slots, parity)
                        if self.q and self.q.requant:
                            self.low.requantize(self.q, g * self.cog + co0, co, [co, th, self.wo], [co, 1, 1],
                                                slots, parity)
                        yield [n, g * self.cog + co0, oh0, 0], [1, co, th, self.wo], parity
                        parity += 1

    def _emit_depthwise(self, tile, slots):
        c_t, _, th_t = tile
        (sh, _), (top, left) = self.strides, self.pads[:2]
        parity = 0
        self.low.load_runtime_zeros(self.q, slots)
        for n in range(self.n):
            for c0, c in _chunks(self.groups, c_t):
                for oh0, th in _chunks(self.ho, th_t):
                    ih, iw = self._in_extent(th)
                    x, w, acc = slots("x", parity), slots("w", parity), slots("acc", parity)
                    self.low.emit(DmaLoadOp(self.x, [n, c0, oh0 * sh - top, -left], [1, c, ih, iw], x, self.x_pad,
                                            self.low.zero_addrs[0]))
                    self.low.emit(DmaLoadOp(self.w, [c0, 0, 0, 0], [c, 1, self.kh, self.kw], w))
                    self.low.emit(MacOp("depthwise2d", x, [c, ih, iw], w, [c, 1, self.kh, self.kw], acc,
                                        [c, th, self.wo], False, self.strides, self.dilations,
                                        **self.low.mac_args(self.q)))
                    if self.bias:
                        self._add_bias(c0, c, th, slots, parity)
                    if self.q and self.q.requant:
                        self.low.requantize(self.q, c0, c, [c, th, self.wo], [c, 1, 1], slots, parity)
                    yield [n, c0, oh0, 0], [1, c, th, self.wo], parity
                    parity += 1

    def _add_bias(self, c0, co, th, slots, parity) -> None:

        bias, acc = slots("bias", parity), slots("acc", parity)
        self.low.emit(DmaLoadOp(self.bias, [c0], [co], bias))
        self.low.emit(VectorOp("add", [acc, bias], [[co, th, self.wo], [co, 1, 1]], acc, [co, th, self.wo],
                               types=["i32"] * 3 if self.q else None))


class _MatMul(_Anchor):
    """MatMul and Gemm: tiles of (M, K, N); B re-laid out at compile time for transB/alpha. A
    and B may have leading dims ([batch, M, K] by a matrix, a transformer's projections;
    [batch, heads, M, K] by [batch, heads, K, N], attention's Q x K^T and P x V), broadcast as
    numpy's matmul: each leading index of the output is one [M, K] by [K, N] product, and the
    boxes of A, B and the output carry it (0 where an operand's dim is 1)."""

    def __init__(self, lowering, op):
        super().__init__(lowering, op)
        ai, bi, *_ = INTEGER_CONTRACTIONS.get(op.onnx_type, (0, 1))
        a, b = op.operands[ai], op.operands[bi]
        self.ab, self.bb = itemsize(a), itemsize(b)
        self.a = lowering.name(a)
        self.lead_shape = list(self.out_shape[:-2])
        self.lead = len(self.lead_shape)
        self.a_lead, self.b_lead = list(a.type.get_shape()[:-2]), list(b.type.get_shape()[:-2])
        self.m, self.k = a.type.get_shape()[-2:]
        self.b = lowering.name(b)
        trans_b, alpha = op.attr("transB", 0), op.attr("alpha", 1.0)
        if op.onnx_type == "Gemm" and (trans_b or alpha != 1.0):
            self.b = lowering.weight(b, lambda w: alpha * (w.T if trans_b else w), "npu")
        self.nn = self.out_shape[-1]
        self.c = None
        if op.onnx_type == "Gemm" and len(op.operands) > 2 and _present(op.operands[2]):
            c, beta = op.operands[2], op.attr("beta", 1.0)
            self.c = (c, lowering.weight(c, lambda w: beta * w, "npu") if beta != 1.0 else lowering.name(c))
        self.q = integer_mac(lowering, op)

    def candidates(self):
        return [(m, k, n) for m in _pow2_upto(self.m) for k in _pow2_upto(self.k) for n in _pow2_upto(self.nn)]

    def describe_tile(self, tile) -> str:
        return f"(M {tile[0]}, K {tile[1]}, N {tile[2]})"

    def out_tile(self, tile):
        return [1] * self.lead + [tile[0], tile[2]]

    def slots(self, tile):
        m, k, n = tile
        sizes = {"a": self.ab * m * k, "b": self.bb * k * n, "acc": 4 * m * n}
        if self.c:
            sizes["c"] = 4 * math.prod(self.low.operand_box(self.c[0], [0, 0], [m, n])[1])
        return {**sizes, **integer_slots(self.q, n)}

    def cost(self, tile):
        m, k, n = tile
        tiles = math.prod(self.lead_shape) * math.ceil(self.m / m) * math.ceil(self.nn / n)
        steps = tiles * math.ceil(self.k / k)
        nbytes = steps * (self.ab * m * k + self.bb * k * n) + tiles * (self.q.out_bytes if self.q else 4) * m * n
        cols = self.config.mac_cols * (self.config.int8_macs_per_pe if self.q else 1)
        compute = steps * m * math.ceil(n / self.config.mac_rows) * math.ceil(k / cols)
        return self.dma_cost(nbytes, 3 * steps) + compute

    def emit(self, tile, slots):

        m_t, k_t, n_t = tile
        step = parity = 0
        self.low.load_runtime_zeros(self.q, slots)
        for index, (m0, m), (n0, n) in ((i, mm, nn) for i in np.ndindex(*self.lead_shape)
                                        for mm in _chunks(self.m, m_t) for nn in _chunks(self.nn, n_t)):
            lead, ones = list(index), [1] * self.lead
            a_lead, b_lead = _broadcast_index(index, self.a_lead), _broadcast_index(index, self.b_lead)
            acc = slots("acc", parity)
            for k0, k in _chunks(self.k, k_t):
                a, b = slots("a", step), slots("b", step)
                self.low.emit(DmaLoadOp(self.a, a_lead + [m0, k0], [1] * len(a_lead) + [m, k], a))
                self.low.emit(DmaLoadOp(self.b, b_lead + [k0, n0], [1] * len(b_lead) + [k, n], b))
                self.low.emit(MacOp("matmul", a, [m, k], b, [k, n], acc, [m, n], k0 > 0, **self.low.mac_args(self.q)))
                step += 1
            if self.q and self.q.requant:
                self.low.requantize(self.q, n0, n, [m, n], [1, n], slots, parity)
            if self.c:
                offsets, box, aligned = self.low.operand_box(self.c[0], [m0, n0], [m, n])
                c = slots("c", parity)
                self.low.emit(DmaLoadOp(self.c[1], offsets, box, c))
                self.low.emit(VectorOp("add", [acc, c], [[m, n], aligned], acc, [m, n]))
            yield lead + [m0, n0], ones + [m, n], parity
            parity += 1


def _broadcast_index(index, shape) -> list[int]:
    """An operand's leading index for the output's leading `index` (numpy broadcasting: the
    operand's dims align right; where one is 1 it is read at 0)."""
    index = list(index)[len(index) - len(shape):] if shape else []
    return [0 if d == 1 else i for i, d in zip(index, shape)]


class _Pool(_Anchor):
    """Pooling on NCHW: tiles of (channels, output rows); global pooling reads whole planes."""

    def __init__(self, lowering, op):
        super().__init__(lowering, op)
        x = op.operands[0]
        self.x = lowering.name(x)
        self.n, self.c, h, w = x.type.get_shape()
        self.fn = POOLS[op.onnx_type]
        self.glob = self.fn.startswith("global")
        self.kernel = [h, w] if self.glob else op.attr("kernel_shape")
        self.strides = [1, 1] if self.glob else op.attr("strides", [1, 1])
        self.dilations = [1, 1] if self.glob else op.attr("dilations", [1, 1])
        self.pads = [0, 0, 0, 0] if self.glob else op.attr("pads", [0, 0, 0, 0])
        _, _, self.ho, self.wo = self.out_shape

    def _in_extent(self, th):
        (sh, sw), (dh, dw), (kh, kw) = self.strides, self.dilations, self.kernel
        return (th - 1) * sh + (kh - 1) * dh + 1, (self.wo - 1) * sw + (kw - 1) * dw + 1

    def candidates(self):
        return [(c, th) for c in _pow2_upto(self.c) for th in _pow2_upto(self.ho)]

    def describe_tile(self, tile) -> str:
        return f"(channels {tile[0]}, rows {tile[1]} x width {self.wo})"

    def out_tile(self, tile):
        return [1, tile[0], tile[1], self.wo]

    def slots(self, tile):
        ih, iw = self._in_extent(tile[1])
        return {"x": 4 * tile[0] * ih * iw, "acc": 4 * tile[0] * tile[1] * self.wo}

    def cost(self, tile):
        return math.ceil(self.c / tile[0]) * math.ceil(self.ho / tile[1])

    def emit(self, tile, slots):

        pad_value = -np.inf if self.fn == "max_pool" else 0.0
        parity = 0
        for n in range(self.n):
            for c0, c in _chunks(self.c, tile[0]):
                for oh0, th in _chunks(self.ho, tile[1]):
                    ih, iw = self._in_extent(th)
                    x, acc = slots("x", parity), slots("acc", parity)
                    self.low.emit(DmaLoadOp(self.x, [n, c0, oh0 * self.strides[0] - self.pads[0], -self.pads[1]],
                                            [1, c, ih, iw], x, pad_value))
                    window = None if self.glob else (self.kernel, self.strides, self.dilations)
                    self.low.emit(VectorOp(self.fn, [x], [[1, c, ih, iw]], acc, [1, c, th, self.wo], window))
                    yield [n, c0, oh0, 0], [1, c, th, self.wo], parity
                    parity += 1


class _Elementwise(_Anchor):
    """An elementwise op: tiles are boxes of its output, whole trailing dims and a chunk of one dim.
    QuantizeLinear/DequantizeLinear read one tensor: their scale and zero point are constants
    the vector op carries."""

    def __init__(self, lowering, op):
        super().__init__(lowering, op)
        self.inputs = lowering.tensor_operands(op)

    def candidates(self):
        tiles = []
        for dim, size in enumerate(self.out_shape):
            tiles += [(dim, t) for t in _pow2_upto(size)]
        return tiles or [(0, 1)]

    def describe_tile(self, tile) -> str:
        return "x".join(str(s) for s in self.out_tile(tile))

    def out_tile(self, tile):
        dim, size = tile
        return [1] * dim + [size] + self.out_shape[dim + 1:] if self.out_shape else []

    def slots(self, tile):
        out = self.out_tile(tile)
        sizes = {"acc": self.low.acc_bytes * math.prod(out)}
        for j, value in enumerate(self.inputs):
            sizes[f"in{j}"] = itemsize(value) * math.prod(self.low.operand_box(value, [0] * len(out), out)[1])
        return sizes

    def cost(self, tile):
        return -math.prod(self.out_tile(tile))  # the biggest tile that fits: fewest DMA transfers

    def boxes(self, tile):
        """(offsets, sizes) of each output tile, in order."""
        dim, size = tile
        for index in np.ndindex(*self.out_shape[:dim]):
            for start, count in _chunks(self.out_shape[dim], size) if self.out_shape else [(0, 1)]:
                offsets = list(index) + [start] + [0] * (len(self.out_shape) - dim - 1)
                sizes = [1] * dim + [count] + self.out_shape[dim + 1:]
                yield offsets[:len(self.out_shape)], sizes[:len(self.out_shape)]

    def emit(self, tile, slots):
        for parity, (offsets, sizes) in enumerate(self.boxes(tile)):
            ins, shapes = [], []
            for j, value in enumerate(self.inputs):
                box_offsets, box, aligned = self.low.operand_box(value, offsets, sizes)
                addr = slots(f"in{j}", parity)
                self.low.emit(DmaLoadOp(self.low.name(value), box_offsets, box, addr))
                ins.append(addr)
                shapes.append(aligned)
            self.low.vector(self.op, ins, shapes, slots("acc", parity), sizes)
            yield offsets, sizes, parity


class _DynamicQuantize(_Elementwise):
    """DynamicQuantizeLinear in two passes over x's tiles, all on the vector unit: the first
    folds each tile into the range [low, high] (one 8-byte slot), which gives the scale and the
    uint8 zero point (stored as the op's second and third outputs, and kept in the scratchpad);
    the second quantizes each tile with them, last tile first, so the two tiles still in the
    scratchpad are not loaded again: x moves once when it fits in two tiles, else nearly twice."""

    def __init__(self, lowering, op):
        super().__init__(lowering, op)
        self.x = lowering.name(op.operands[0])
        lowering.extra_outputs = {op.results[1]: "out1", op.results[2]: "out2"}

    def slots(self, tile):
        elements = math.prod(self.out_tile(tile))
        return {"x": 4 * elements, "acc": self.low.acc_bytes * elements, "range": 8, "params": 8, "zero": 1}

    def emit(self, tile, slots):
        boxes = list(self.boxes(tile))
        span, params, zero = slots("range", 0), slots("params", 0), slots("zero", 0)
        for parity, (offsets, sizes) in enumerate(boxes):
            x = slots("x", parity)
            self.low.emit(DmaLoadOp(self.x, offsets, sizes, x))
            ins, shapes = ([x], [sizes]) if parity == 0 else ([x, span], [sizes, [2]])
            self.low.emit(VectorOp("range", ins, shapes, span, [2]))
        self.low.emit(VectorOp("qparams", [span], [[2]], params, [2]))
        self.low.emit(VectorOp("cast", [params + 4], [[1]], zero, [1], types=["f32", "u8"]))
        for name, addr, value in (("out1", params, self.op.results[1]), ("out2", zero, self.op.results[2])):
            shape = value.type.get_shape()
            self.low.emit(DmaStoreOp(name, [0] * len(shape), list(shape), addr))
        # Backwards: the last two tiles of the first pass are still in their slots (ping and
        # pong), so x of one or two tiles moves once.
        resident = set(range(max(len(boxes) - 2, 0), len(boxes)))
        for parity in reversed(range(len(boxes))):
            (offsets, sizes), x, ones = boxes[parity], slots("x", parity), [1] * len(boxes[parity][1])
            if parity not in resident:
                self.low.emit(DmaLoadOp(self.x, offsets, sizes, x))
            self.low.emit(VectorOp("quantize", [x, params, zero], [sizes, ones, ones], slots("acc", parity), sizes,
                                   types=["f32", "f32", "u8", "u8"]))
            yield offsets, sizes, parity


_ANCHORS = {"Conv": _Conv, "MatMul": _MatMul, "Gemm": _MatMul, "QLinearConv": _Conv, "ConvInteger": _Conv,
            "QLinearMatMul": _MatMul, "MatMulInteger": _MatMul, "DynamicQuantizeLinear": _DynamicQuantize,
            **{k: _Pool for k in POOLS}}



class _KernelLowering:
    """One kernel.launch's ops (an anchor and its chain) as one npu.program."""

    def __init__(self, launch, hardware: NpuHardware, store):
        self.launch, self.config, self.store = launch, hardware, store
        self.ops = [op for op in launch.body.block.ops if isinstance(op, OnnxOp)]
        self.anchor_op, self.epilogue = self.ops[0], self.ops[1:]
        self.stream: list = []
        self.names: dict = {}  # SSA value read from DRAM -> buffer name
        self.reads: dict = {}  # buffer name -> the value the program takes for it
        self.new_weights: list[WeightOp] = []
        self.extra_outputs: dict = {}  # results besides the chain's end -> their DRAM buffer (out1, ...)
        self.zero_addrs: tuple[int | None, int | None] = (None, None)
        self._params: dict = {}
        self._check_chain()

    def _check_chain(self) -> None:
        chain = self.anchor_op.results[0]
        for op in self.epilogue:
            if (op.onnx_type not in VECTOR_FNS and op.onnx_type not in QUANTIZERS) or chain not in op.operands:
                raise CompileError(f"convert-kernels-to-npu: kernel {self.launch.kernel_name}: "
                                   f"{op.describe()} does not continue the chain of "
                                   f"{self.anchor_op.describe()}; the NPU runs one op and an "
                                   "elementwise chain per kernel (its fusion rules)")
            chain = op.results[0]
        self.result = chain
        # The accumulator slot holds each value of the chain in turn, in place: its widest element.
        self.acc_bytes = max(itemsize(v) for v in self._chain_values())

    def emit(self, op) -> None:
        self.stream.append(op)

    def name(self, value) -> str:
        """The DRAM buffer of a value the kernel reads: a weight by its name after '@' (a weight
        may be called "in1" or "out" too), else in0, in1, ..."""
        if value not in self.names:
            owner = value.owner
            name = f"@{owner.weight_name}" if isinstance(owner, WeightOp) else f"in{len(self.names)}"
            self.names[value] = name
            self.reads[name] = value
        return self.names[value]

    def run(self) -> ProgramOp:
        anchor = _ANCHORS.get(self.anchor_op.onnx_type, _Elementwise)(self, self.anchor_op)
        tile, slots = self._choose_tile(anchor)
        # The decision stays in the IR, where a user or a search may change it (DESIGN.md).
        self.launch.attributes["dlc.npu_tile"] = DenseArrayBase.from_list(i64, list(tile))
        for offsets, sizes, parity in anchor.emit(tile, slots):
            for index, op in enumerate(self.epilogue):
                self._epilogue(op, index, offsets, sizes, slots, parity)
            self.emit(DmaStoreOp("out", offsets, sizes, slots("acc", parity)))
        self.emit(SyncOp())
        return self._program()

    def _outputs(self) -> list[tuple[str, object]]:
        """(DRAM buffer, value) of each result the launch yields, in its order: the chain's end
        is "out", other results of the anchor (DynamicQuantizeLinear's scale and zero point)
        their `extra_outputs` names."""
        names = {self.result: "out", **self.extra_outputs}
        yielded = list(self.launch.body.block.last_op.operands)
        missing = [v for v in yielded if v not in names]
        if missing:
            raise CompileError(f"convert-kernels-to-npu: kernel {self.launch.kernel_name}: it yields a value "
                               f"that {self.anchor_op.describe()}'s stream does not store")
        return [(names[v], v) for v in yielded]

    def _program(self) -> ProgramOp:
        """The stream with a buffer for each DRAM tensor it moves; reads become operands."""
        loaded = {op.tensor.data for op in self.stream if isinstance(op, DmaLoadOp)}
        inputs = [name for name in self.reads if name in loaded]
        values = [self.reads[name] for name in inputs]
        outputs = self._outputs()
        program = ProgramOp(self.launch.kernel_name, self.config.scratchpad_bytes, values,
                            [value.type for _, value in outputs])
        for name, value in zip(inputs, values):
            kind = "weight" if isinstance(value.owner, WeightOp) else "input"
            program.body.block.add_op(BufferOp(name, value.type.get_shape(), kind, dtype=element_of(value)))
        for name, value in outputs:
            program.body.block.add_op(BufferOp(name, value.type.get_shape(), "output", dtype=element_of(value)))
        program.body.block.add_ops(self.stream)
        return program

    def tensor_operands(self, op) -> list:
        """The operands a vector op reads as tiles. QuantizeLinear/DequantizeLinear's scale and
        zero point are constants the instruction carries when each is one value; else (per axis,
        or computed at run time) the op reads them as tiles too: a per-axis constant re-laid out
        at compile time as [C, 1, ...] so that it broadcasts along `axis` of the output tile."""
        if op.onnx_type not in QUANTIZERS:
            return list(op.operands)
        if op not in self._params:
            x, params = op.operands[0], [v for v in op.operands[1:3] if _present(v)]
            arrays = [constant_of(v, self.store) for v in params]
            if all(a is not None and a.size == 1 for a in arrays):
                self._params[op] = [x]
            else:
                rank = len(x.type.get_shape())
                axis = op.attr("axis", 1) % max(rank, 1)
                self._params[op] = [x] + [
                    v if a is None or a.size == 1 else
                    self.constant_value(f"{self.launch.kernel_name}.{op.node_name}.{what}",
                                        a.reshape([-1] + [1] * (rank - 1 - axis)))
                    for v, a, what in zip(params, arrays, ("scale", "zero_point"))]
        return self._params[op]

    def mac_args(self, q: IntegerMac | None) -> dict:
        """An npu.mac's integer attributes: types, constant zero points, run-time zero points' slots."""
        return dict(dtype=q.dtype, zeros=q.zeros, zero_addrs=self.zero_addrs) if q else {}

    def load_runtime_zeros(self, q: IntegerMac | None, slots) -> None:
        self.zero_addrs = load_runtime_zeros(self, q, slots)

    def _choose_tile(self, anchor):
        """A tile given as `dlc.npu_tile` on the launch (a user's or a search's), else the cheapest
        tile whose slots fit the scratchpad; a compile error if none does."""
        given = self.launch.attributes.get("dlc.npu_tile")
        candidates = [ints_of(given)] if isinstance(given, DenseArrayBase) else anchor.candidates()
        best, smallest = None, None
        for tile in candidates:
            slots = _Slots({**anchor.slots(tile), **self._epilogue_slots(anchor.out_tile(tile))})
            if smallest is None or slots.total < smallest[1].total:
                smallest = (tile, slots)
            if slots.total <= self.config.scratchpad_bytes:
                cost = anchor.cost(tile)
                if best is None or cost < best[0]:
                    best = (cost, tile, slots)
        if best is None:
            tile, slots = smallest
            detail = ", ".join(f"{n} {2 * (hi - lo)} B" for n, (lo, hi) in slots.addr.items())
            raise CompileError(
                f"npu-sim: {self.anchor_op.describe()} cannot fit the {self.config.scratchpad_bytes} B "
                f"scratchpad: its {'given' if given else 'smallest'} tile {anchor.describe_tile(tile)} "
                f"needs {slots.total} B with double buffering ({detail})",
                "place the node on cpu (--placement-from) or use a target file with a larger scratchpad")
        return best[1], best[2]

    def operand_box(self, value, offsets, sizes):
        """The box of `value` that broadcasts onto the output box, and its shape aligned to the output rank."""
        shape = list(value.type.get_shape())
        lead = len(sizes) - len(shape)
        box_offsets = [0 if d == 1 else offsets[lead + i] for i, d in enumerate(shape)]
        box_sizes = [1 if d == 1 else sizes[lead + i] for i, d in enumerate(shape)]
        return box_offsets, box_sizes, [1] * lead + box_sizes

    def _chain_values(self) -> set:
        return {self.anchor_op.results[0], *(op.results[0] for op in self.epilogue)}

    def _epilogue_slots(self, out_tile) -> dict[str, int]:
        sizes, chain = {}, self._chain_values()
        for index, op in enumerate(self.epilogue):
            for j, value in enumerate(self.tensor_operands(op)):
                if value not in chain:
                    _, box, _ = self.operand_box(value, [0] * len(out_tile), out_tile)
                    sizes[f"e{index}.{j}"] = 4 * math.prod(box)
        return sizes

    def _epilogue(self, op, index, offsets, sizes, slots, parity) -> None:
        """One chained op on the output tile, in place in the accumulator slot."""
        chain = self._chain_values()
        ins, shapes = [], []
        for j, value in enumerate(self.tensor_operands(op)):
            if value in chain:
                ins.append(slots("acc", parity))
                shapes.append(sizes)
                continue
            box_offsets, box_sizes, aligned = self.operand_box(value, offsets, sizes)
            addr = slots(f"e{index}.{j}", parity)
            self.emit(DmaLoadOp(self.name(value), box_offsets, box_sizes, addr))
            ins.append(addr)
            shapes.append(aligned)
        self.vector(op, ins, shapes, slots("acc", parity), sizes)

    def vector(self, op, ins, shapes, out, out_shape) -> None:
        if op.onnx_type in QUANTIZERS and len(ins) > 1:  # scale (and zero point) read as tiles
            types = [element_of(v) for v in self.tensor_operands(op)] + [element_of(op.results[0])]
            self.emit(VectorOp(QUANTIZERS[op.onnx_type], ins, shapes, out, out_shape, types=types))
            return
        if op.onnx_type == "Cast":
            self.emit(VectorOp("cast", ins, shapes, out, out_shape,
                               types=[element_of(op.operands[0]), element_of(op.results[0])]))
            return
        if op.onnx_type in QUANTIZERS:
            scale = constant_of(op.operands[1], self.store)
            self.emit(VectorOp(QUANTIZERS[op.onnx_type], ins[:1], shapes[:1], out, out_shape,
                               types=[element_of(op.operands[0]), element_of(op.results[0])],
                               scale=float(scale.reshape(-1)[0]), zero_point=zero_point_of(op, 2, self.store)))
            return
        alpha = op.attr("alpha", 0.01) if op.onnx_type == "LeakyRelu" else None
        self.emit(VectorOp(VECTOR_FNS[op.onnx_type], ins, shapes, out, out_shape, alpha=alpha))

    def requantize(self, q: IntegerMac, c0: int, count: int, acc_shape, multiplier_shape, slots, parity) -> None:
        """The int32 accumulator tile -> 8 bits in place, with output channels c0..c0+count's
        multipliers (a box of the per-channel float32 constant, broadcast as `multiplier_shape`)."""
        multipliers, acc = slots("multipliers", parity), slots("acc", parity)
        if q.scales:  # scales computed at run time: float32(a_scale * b_scale) / y_scale, per tile
            addrs, ones = [], [1] * len(multiplier_shape)
            per_channels = (False, q.scales[3], False)
            for what, name, per_channel in zip(("a_scale", "b_scale", "y_scale"), q.scales, per_channels):
                addrs.append(slots(what, parity))
                shape = self.reads[name].type.get_shape()
                self.emit(DmaLoadOp(name, [c0] if per_channel else [0] * len(shape),
                                    [count] if per_channel else list(shape), addrs[-1]))
            self.emit(VectorOp("multiplier", addrs, [ones, multiplier_shape if q.scales[3] else ones, ones],
                               multipliers, multiplier_shape))
        else:
            self.emit(DmaLoadOp(q.requant[0], [c0], [count], multipliers))
        self.emit(VectorOp("requantize", [acc, multipliers], [acc_shape, multiplier_shape], acc, acc_shape,
                           types=["i32", "f32", q.requant[2]], zero_point=q.requant[1]))

    def constant(self, hint: str, array: np.ndarray) -> str:
        """A new compile-time constant (requantization multipliers): a weight in the store, read
        through a new onnx.weight before the launch; its DRAM tensor's name."""
        return self.name(self.constant_value(hint, array))

    def constant_value(self, hint: str, array: np.ndarray):
        """`constant`'s onnx.weight value (of the array's element type)."""
        from dialects.types import element_type_for

        stored = self.store.add(hint, np.ascontiguousarray(array))
        weight = WeightOp(stored, TensorType(element_type_for(array.dtype), list(array.shape)))
        self.new_weights.append(weight)
        return weight.result

    def weight(self, value, transform, suffix: str) -> str:
        """A weight re-laid out for the NPU at compile time (like cpu's pack-weights): a new
        weight in the store, read through a new onnx.weight before the launch."""
        source = value.owner.weight_name
        stored = f"{source}.{suffix}"
        name = f"@{stored}"  # its DRAM tensor, named as name() names weights
        if name not in self.reads:
            # np.array, not np.ascontiguousarray: that one turns a scalar (a Gemm C) into shape (1,).
            packed = np.array(transform(self.store[source]), np.float32, order="C")
            self.store[stored] = packed
            weight = WeightOp(stored, TensorType(f32, list(packed.shape)))
            self.new_weights.append(weight)
            self.names[weight.result] = name
            self.reads[name] = weight.result
        return name


def flops_of(op) -> int:
    """op_costs' FLOPs, and 2 per MAC of an 8-bit contraction (which op_costs counts as opaque)."""
    indices = INTEGER_CONTRACTIONS.get(op.onnx_type)
    if indices is None:
        return flops(op)
    out, b = op.results[0].type.get_shape(), op.operands[indices[1]].type.get_shape()
    reduced = math.prod(b[1:]) if "Conv" in op.onnx_type else b[0]
    return 2 * math.prod(out) * reduced


def lower_kernel(launch, hardware: NpuHardware, store) -> None:
    """Replace the ONNX ops of an npu-sim kernel.launch by the npu.program that computes them."""
    lowering = _KernelLowering(launch, hardware, store)
    program = lowering.run()
    # What the lowered ops cost, kept for reports once they are gone (cpu kernels have dlc.flops too).
    launch.attributes["dlc.flops"] = IntegerAttr(sum(flops_of(op) for op in lowering.ops), i64)
    Rewriter.insert_op(lowering.new_weights, InsertPoint.before(launch))
    block = launch.body.block
    for op in reversed(list(block.ops)):
        op.detach()
        op.erase(safe_erase=False)
    block.add_ops([program, YieldOp(list(program.results))])
