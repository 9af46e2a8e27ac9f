"""Runs an `npu` instruction stream (dialects/npu.py) with numpy and counts its cycles (issue 6).

Numerics: DRAM is a dict of numpy arrays (float32, or int32/uint8/int8 as their
npu.buffer says), the scratchpad one byte array viewed as each instruction's element
type; every access is bounds-checked, so a tiling bug is a `NpuFault`, never a silent
overwrite. Integer MACs accumulate (a - a_zero) * (b - b_zero) in int32 (wrapping, as the
cpu target's int32 accumulators); requantize/quantize/dequantize compute what dlc's cpu
target computes, in the same float32 operations, so int8 results are bit-exact with it.

Cycle model (analytic, in the spirit of Arm Vela's performance estimates):
- two in-order engines, DMA and compute (MAC array + vector unit), decoupled
  as in access/execute machines; an instruction starts when its engine is free
  and the scratchpad ranges it touches are ready (a scoreboard: reads wait for
  the last write of an overlapping range, writes also for its last read);
- DMA: `dma_latency_cycles + ceil(bytes / bytes_per_cycle)`, bytes_per_cycle =
  bandwidth (GB/s) / clock (GHz); padding a box costs nothing, only bytes in
  the tensor move;
- MAC (weight-stationary, rows = output channels, columns = reduction):
  conv2d `ceil(Cout/rows) * ceil(Cin/cols) * KH * KW * OH * OW`, matmul
  `M * ceil(N/rows) * ceil(K/cols)`, depthwise2d (a channel per row, its own
  filter) `ceil(C/rows) * KH * KW * OH * OW`; one pass of the array per cycle; with 8-bit
  operands each cell does `int8_macs_per_pe` MACs a cycle along the reduction (a dot of
  4, as VNNI or Ethos-U's 8-bit mode), so cols becomes cols * int8_macs_per_pe;
- vector: `ceil(out elements * window / lanes)` (window 1 for elementwise ops);
- `npu.sync` waits for both engines.
Overlap is what double buffering buys: DMA of tile i+1 runs while tile i computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dialects.npu import ELEMENT_TYPES
from dlc.errors import DlcError
from passes.lowering.utils.npu_kernels import NpuHardware


class NpuFault(DlcError):
    """The stream did something the hardware cannot: an access outside the scratchpad or a tensor."""


class NpuConfig(NpuHardware):
    """The simulated NPU's parameters (defaults documented in docs/adding-a-target.md): the
    hardware the lowering tiles for (`NpuHardware`, read from the IR) and its cycle costs."""

    def dma_cycles(self, nbytes: int) -> int:
        return self.dma_latency_cycles + math.ceil(nbytes / self.dma_bytes_per_cycle)

    def mac_cycles(self, kind: str, a_shape, b_shape, acc_shape, integer: bool = False) -> int:
        rows, cols = self.mac_rows, self.mac_cols * (self.int8_macs_per_pe if integer else 1)
        if kind == "conv2d":
            cout, cin, kh, kw = b_shape
            return math.ceil(cout / rows) * math.ceil(cin / cols) * kh * kw * acc_shape[1] * acc_shape[2]
        if kind == "depthwise2d":
            channels, _, kh, kw = b_shape
            return math.ceil(channels / rows) * kh * kw * acc_shape[1] * acc_shape[2]
        m, k = a_shape
        return m * math.ceil(b_shape[1] / rows) * math.ceil(k / cols)


@dataclass
class NpuReport:
    """What one run of a stream (or a sum of them) cost."""

    config: NpuConfig
    cycles: int = 0
    compute_cycles: int = 0  # the MAC array's and the vector unit's
    dma_busy_cycles: int = 0
    macs: int = 0  # all of them, float32 and 8-bit
    int8_macs: int = 0  # the 8-bit ones (the array does int8_macs_per_pe of them per cell and cycle)
    dma_load_bytes: int = 0
    dma_store_bytes: int = 0
    scratchpad_peak: int = 0
    instructions: int = 0
    mac_cycles: int = 0  # the MAC array's busy cycles (the rest of compute_cycles is the vector unit's)

    @property
    def dma_bytes(self) -> int:
        return self.dma_load_bytes + self.dma_store_bytes

    @property
    def mac_utilisation(self) -> float:
        """Share of the array's cell-cycles doing MACs (an 8-bit MAC takes 1/int8_macs_per_pe)."""
        capacity = self.cycles * self.config.mac_rows * self.config.mac_cols
        used = self.macs - self.int8_macs + self.int8_macs / self.config.int8_macs_per_pe
        return used / capacity if capacity else 0.0

    @property
    def latency_us(self) -> float:
        return self.cycles / (self.config.clock_ghz * 1e3)

    def __add__(self, other: NpuReport) -> NpuReport:
        """Partitions run one after another: cycles add, the scratchpad peak is the max."""
        return NpuReport(self.config, self.cycles + other.cycles, self.compute_cycles + other.compute_cycles,
                         self.dma_busy_cycles + other.dma_busy_cycles, self.macs + other.macs,
                         self.int8_macs + other.int8_macs, self.dma_load_bytes + other.dma_load_bytes,
                         self.dma_store_bytes + other.dma_store_bytes,
                         max(self.scratchpad_peak, other.scratchpad_peak),
                         self.instructions + other.instructions, self.mac_cycles + other.mac_cycles)

    def format(self, label: str) -> str:
        return (f"{label}: {self.cycles} cycles ({self.latency_us:.2f} us at {self.config.clock_ghz:g} GHz), "
                f"MAC utilisation {100 * self.mac_utilisation:.1f}%, DMA {self.dma_bytes} B "
                f"(load {self.dma_load_bytes}, store {self.dma_store_bytes}), "
                f"scratchpad peak {self.scratchpad_peak} B, compute {self.compute_cycles} cycles "
                f"(MAC array {self.mac_cycles}{f', {self.int8_macs} int8 MACs' if self.int8_macs else ''}), "
                f"DMA busy {self.dma_busy_cycles} cycles")


@dataclass
class _Scoreboard:
    """Per scratchpad range: when its last write and last read end."""

    ranges: dict[tuple[int, int], list[int]] = field(default_factory=dict)

    def ready(self, reads, writes) -> int:
        start = 0
        for (lo, hi), (write_end, read_end) in self.ranges.items():
            if any(lo < end and begin < hi for begin, end in reads):
                start = max(start, write_end)
            if any(lo < end and begin < hi for begin, end in writes):
                start = max(start, write_end, read_end)
        return start

    def record(self, reads, writes, end: int) -> None:
        for r in reads:
            self.ranges.setdefault(r, [0, 0])[1] = max(self.ranges.get(r, [0, 0])[1], end)
        for w in writes:
            self.ranges.setdefault(w, [0, 0])[0] = end


class Simulator:
    """Executes ProgramOps on DRAM arrays; `run` returns the report of that stream."""

    def __init__(self, config: NpuConfig):
        self.config = config
        self.scratchpad = np.zeros(config.scratchpad_bytes, dtype=np.uint8)

    def run(self, program, dram: dict[str, np.ndarray]) -> NpuReport:
        from dialects import npu

        self._dram = dram
        self._views: dict[str, tuple[str, tuple[int, ...]]] = {}
        report = NpuReport(self.config)
        board, engine_free = _Scoreboard(), {"dma": 0, "compute": 0}
        for op in program.body.block.ops:
            if isinstance(op, npu.BufferOp):
                self._declare(op, dram)
                continue
            if isinstance(op, npu.SyncOp):
                now = max(engine_free.values())
                engine_free = {"dma": now, "compute": now}
                board = _Scoreboard()
                continue
            engine, cycles, reads, writes = self._execute(op, report)
            start = max(engine_free[engine], board.ready(reads, writes))
            end = start + cycles
            engine_free[engine] = end
            board.record(reads, writes, end)
            report.instructions += 1
            if engine == "dma":
                report.dma_busy_cycles += cycles
            else:
                report.compute_cycles += cycles
                report.mac_cycles += cycles if isinstance(op, npu.MacOp) else 0
            report.scratchpad_peak = max([report.scratchpad_peak] + [hi for _, hi in reads + writes])
        report.cycles = max(engine_free.values())
        return report

    def read(self, name: str) -> np.ndarray:
        """A DRAM tensor (or a view of one) after `run`."""
        return self._tensor(name)

    def _declare(self, op, dram) -> None:
        from dialects.npu import ints_of

        name, shape = op.sym_name.data, ints_of(op.shape)
        dtype = np.dtype(ELEMENT_TYPES[op.element])
        if op.view_of is not None:
            self._views[name] = (op.view_of.data, shape)
        elif name not in dram:
            dram[name] = np.zeros(shape, dtype=dtype)
        elif dram[name].dtype != dtype or tuple(dram[name].shape) != tuple(shape):
            raise NpuFault(f"npu: DRAM tensor '{name}' is {dram[name].dtype}{list(dram[name].shape)}; "
                           f"its npu.buffer says {dtype}{list(shape)}")

    def _tensor(self, name: str) -> np.ndarray:
        if name in self._views:
            base, shape = self._views[name]
            return self._tensor(base).reshape(shape)
        if name not in self._dram:
            raise NpuFault(f"npu: DRAM tensor '{name}' was never declared or given")
        return self._dram[name]

    def _range(self, op, addr: int, shape, dtype=np.float32) -> tuple[int, int]:
        size = np.dtype(dtype).itemsize
        nbytes = size * math.prod(shape)
        if addr < 0 or addr % size or addr + nbytes > self.config.scratchpad_bytes:
            raise NpuFault(f"npu: {op.name} touches scratchpad bytes [{addr}, {addr + nbytes}) outside "
                           f"[0, {self.config.scratchpad_bytes}) (or unaligned)")
        return addr, addr + nbytes

    def _spad(self, rng: tuple[int, int], shape, dtype=np.float32) -> np.ndarray:
        return self.scratchpad[rng[0]:rng[1]].view(dtype).reshape(shape)

    def _execute(self, op, report: NpuReport):
        from dialects import npu

        if isinstance(op, npu.DmaLoadOp | npu.DmaStoreOp):
            return self._dma(op, report)
        if isinstance(op, npu.MacOp):
            return self._mac(op, report)
        if isinstance(op, npu.VectorOp):
            return self._vector(op)
        raise NpuFault(f"npu: unknown instruction {op.name}")

    def _dma(self, op, report: NpuReport):
        from dialects.npu import DmaLoadOp, ints_of

        tensor = self._tensor(op.tensor.data)
        offsets, sizes = ints_of(op.offsets), ints_of(op.sizes)
        if len(offsets) != tensor.ndim or len(sizes) != tensor.ndim:
            raise NpuFault(f"npu: {op.name} of '{op.tensor.data}' gives a rank-{len(sizes)} box for a "
                           f"rank-{tensor.ndim} tensor")
        rng = self._range(op, op.addr.value.data, sizes, tensor.dtype)
        tile = self._spad(rng, sizes, tensor.dtype)
        inside = tuple(slice(max(o, 0), min(o + s, d)) for o, s, d in zip(offsets, sizes, tensor.shape))
        local = tuple(slice(i.start - o, i.stop - o) for i, o in zip(inside, offsets))
        moved = tensor.dtype.itemsize * math.prod(max(i.stop - i.start, 0) for i in inside)
        if isinstance(op, DmaLoadOp):
            reads = []
            if op.pad_addr is not None:  # the pad value of a register loaded at run time
                reads = [self._range(op, op.pad_addr.value.data, [1], tensor.dtype)]
                tile[...] = self._spad(reads[0], [1], tensor.dtype)[0]
            else:
                tile[...] = op.pad_value.value.data
            if moved:
                tile[local] = tensor[inside]
            report.dma_load_bytes += moved
            return "dma", self.config.dma_cycles(moved), reads, [rng]
        if moved != tensor.dtype.itemsize * math.prod(sizes):
            raise NpuFault(f"npu: dma_store box {offsets}+{sizes} leaves tensor '{op.tensor.data}' "
                           f"of shape {list(tensor.shape)}")
        tensor[inside] = tile
        report.dma_store_bytes += moved
        return "dma", self.config.dma_cycles(moved), [rng], []

    def _mac(self, op, report: NpuReport):
        from dialects.npu import ints_of

        kind = op.kind.data
        a_shape, b_shape, acc_shape = ints_of(op.a_shape), ints_of(op.b_shape), ints_of(op.acc_shape)
        integer = op.integer
        a_type, b_type, acc_type = ((ELEMENT_TYPES[op.dtype.data[:2]], ELEMENT_TYPES[op.dtype.data[2:]], np.int32)
                                    if integer else (np.float32,) * 3)
        ra = self._range(op, op.a.value.data, a_shape, a_type)
        rb = self._range(op, op.b.value.data, b_shape, b_type)
        racc = self._range(op, op.acc.value.data, acc_shape, acc_type)
        a, b = self._spad(ra, a_shape, a_type), self._spad(rb, b_shape, b_type)
        acc = self._spad(racc, acc_shape, acc_type)
        zero_reads = []
        if integer:  # exact in int64 (8-bit by 8-bit products), then wrapped to int32 as the hardware's adders
            zeros = []
            for addr, zero, dtype in ((op.a_zero_addr, op.a_zero, a_type), (op.b_zero_addr, op.b_zero, b_type)):
                if addr is None:
                    zeros.append(zero.value.data)
                    continue
                # A zero point computed at run time: its register loads a one-element tile.
                rng = self._range(op, addr.value.data, [1], dtype)
                zero_reads.append(rng)
                zeros.append(int(self._spad(rng, [1], dtype)[0]))
            a = a.astype(np.int64) - zeros[0]
            b = b.astype(np.int64) - zeros[1]
        if kind in ("conv2d", "depthwise2d"):
            conv = _conv2d if kind == "conv2d" else _depthwise2d
            result = conv(a, b, acc_shape, ints_of(op.strides), ints_of(op.dilations))
            macs = math.prod(b_shape) * acc_shape[1] * acc_shape[2]
        elif kind == "matmul":
            result = a @ b
            macs = a_shape[0] * a_shape[1] * b_shape[1]
        else:
            raise NpuFault(f"npu: unknown MAC kind '{kind}'")
        report.macs += macs
        report.int8_macs += macs if integer else 0
        if op.accumulate.value.data:
            result = result + acc
        acc[...] = result.astype(np.int64).astype(np.int32) if integer else result
        reads = ([ra, rb, racc] if op.accumulate.value.data else [ra, rb]) + zero_reads
        return "compute", self.config.mac_cycles(kind, a_shape, b_shape, acc_shape, integer), reads, [racc]

    def _vector(self, op):
        from dialects.npu import ints_of

        in_shapes = [ints_of(s) for s in op.in_shapes.data]
        types = [np.dtype(ELEMENT_TYPES[t]) for t in op.elements()]
        reads = [self._range(op, addr, s, t) for addr, s, t in zip(ints_of(op.ins), in_shapes, types)]
        # Read all inputs before writing: the output may alias an input (in-place epilogues).
        values = [self._spad(r, s, t).copy() for r, s, t in zip(reads, in_shapes, types)]
        out_shape = ints_of(op.out_shape)
        write = self._range(op, op.out.value.data, out_shape, types[-1])
        fn = op.fn.data
        window = math.prod(ints_of(op.kernel)) if op.kernel is not None else 1
        if fn in _INTEGER:
            result = _INTEGER[fn](op, values, types)
            if fn == "range":  # a reduction of its whole input tile to [low, high]
                window = math.prod(in_shapes[0]) / math.prod(out_shape)
        elif fn == "add" and types[-1] != np.float32:
            result = _integer_add(op, values, types)
        elif any(t != np.float32 for t in types):
            raise NpuFault(f"npu: vector function '{fn}' computes float32 only, not {[str(t) for t in types]}")
        elif fn in _POOLS:
            result = _POOLS[fn](values[0], op)
            if fn.startswith("global"):
                window = in_shapes[0][-1] * in_shapes[0][-2]
        elif fn in _ELEMENTWISE:
            alpha = op.alpha.value.data if op.alpha is not None else None
            result = _ELEMENTWISE[fn](*values) if alpha is None else _ELEMENTWISE[fn](*values, alpha)
        else:
            raise NpuFault(f"npu: unknown vector function '{fn}'")
        self._spad(write, out_shape, types[-1])[...] = np.broadcast_to(result, out_shape)
        cycles = math.ceil(math.prod(out_shape) * window / self.config.vector_lanes)
        return "compute", cycles, reads, [write]


def _taps(x: np.ndarray, kernel: tuple[int, int], out_shape, strides, dilations):
    """(i, j, the padded tile's pixels under tap (i, j) at every output position) per tap."""
    _, oh, ow = out_shape
    (sh, sw), (dh, dw) = strides, dilations
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield i, j, x[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]


def _conv2d(x: np.ndarray, w: np.ndarray, out_shape, strides, dilations) -> np.ndarray:
    """Direct convolution of a padded tile, one tensordot per kernel tap."""
    out = np.zeros(out_shape, dtype=np.int64 if x.dtype == np.int64 else np.float32)
    for i, j, patch in _taps(x, w.shape[2:], out_shape, strides, dilations):
        out += np.tensordot(w[:, :, i, j], patch, axes=([1], [0]))
    return out


def _depthwise2d(x: np.ndarray, w: np.ndarray, out_shape, strides, dilations) -> np.ndarray:
    """Each channel of a padded tile [C, IH, IW] by its own filter w [C, 1, KH, KW]."""
    out = np.zeros(out_shape, dtype=np.int64 if x.dtype == np.int64 else np.float32)
    for i, j, patch in _taps(x, w.shape[2:], out_shape, strides, dilations):
        out += w[:, 0, i, j][:, None, None] * patch
    return out


def _windows(x: np.ndarray, op) -> np.ndarray:
    """[..., OH, OW, KH, KW] windows over the last two dims of an already padded tile."""
    from dialects.npu import ints_of

    (kh, kw), (sh, sw), (dh, dw) = ints_of(op.kernel), ints_of(op.strides), ints_of(op.dilations)
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    view = np.lib.stride_tricks.sliding_window_view(x, span, axis=(-2, -1))
    return view[..., ::sh, ::sw, ::dh, ::dw]


_POOLS = {
    "max_pool": lambda x, op: _windows(x, op).max(axis=(-2, -1)),
    "avg_pool": lambda x, op: _windows(x, op).mean(axis=(-2, -1), dtype=np.float32),
    "global_avg_pool": lambda x, op: x.mean(axis=(-2, -1), keepdims=True, dtype=np.float32),
    "global_max_pool": lambda x, op: x.max(axis=(-2, -1), keepdims=True),
}

_ELEMENTWISE = {
    "copy": lambda x: x,
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "max": np.maximum, "min": np.minimum,
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x, alpha: np.where(x >= 0, x, x * np.float32(alpha)),
    "sigmoid": lambda x: (1 / (1 + np.exp(-x))).astype(np.float32),
    "tanh": np.tanh, "exp": np.exp, "neg": np.negative, "abs": np.abs, "sqrt": np.sqrt,
    "clip": lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi),
    # Requantization multipliers from scales computed at run time, as the cpu: (s0 * s1) / s2.
    "multiplier": lambda s0, s1, s2: (s0 * s1) / s2,
}


def _saturate(q: np.ndarray, dtype) -> np.ndarray:
    """A float32 already rounded to an integer, clamped to `dtype`'s range and converted
    (quantize.py's `saturate`: the clamp first, so the conversion is defined)."""
    info = np.iinfo(dtype)
    with np.errstate(invalid="ignore"):  # NaN has no integer (the spec leaves it open; so does the cpu)
        return np.clip(q, np.float32(info.min), np.float32(info.max)).astype(dtype)


def _requantize(op, values, types):
    """saturate(round_half_even(f32(acc) * multiplier) + y_zero): the cpu's requantizing store
    (dlc/codegen/ukernels.py) and quantize.py's `requantize`, op for op in float32."""
    acc, multiplier = values
    q = np.rint(acc.astype(np.float32) * multiplier.astype(np.float32)) + np.float32(op.zero_point.value.data)
    return _saturate(q, types[-1])


def _parameters(op, values, zero_type):
    """A quantizer's scale and zero point: constants the instruction carries (per tensor), or
    tiles it reads (per axis, broadcast along the output tile; or computed at run time, as
    DynamicQuantizeLinear's): ins [x, scale, zero point]; no zero point tile means 0."""
    if op.scale is not None:
        return np.float32(op.scale.value.data), zero_type(op.zero_point.value.data)
    zero = values[2].astype(zero_type) if len(values) > 2 else zero_type(0)
    return values[1].astype(np.float32), zero


def _quantize(op, values, types):
    """saturate(round_half_even(x / scale) + zero point) in float32 (a division, as onnxruntime)."""
    scale, zero = _parameters(op, values, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero scale saturates, as on the cpu
        q = np.rint(values[0] / scale) + zero
    return _saturate(q, types[-1])


def _dequantize(op, values, types):
    """f32(int32(x) - zero point) * scale: the subtraction exact in int32, as onnxruntime."""
    scale, zero = _parameters(op, values, np.int32)
    with np.errstate(over="ignore"):  # int32 x minus its zero point wraps, as on the cpu
        centered = values[0].astype(np.int32) - zero
    return centered.astype(np.float32) * scale


def _range(op, values, types):
    """[min(0, min x, low), max(0, max x, high)] of a float32 tile and, when given, the range so
    far: DynamicQuantizeLinear's first pass, tile by tile (NaN propagates, as the cpu's
    minimumf/maximumf)."""
    x = values[0]
    low, high = np.float32(0), np.float32(0)
    if x.size:
        low, high = np.minimum(low, x.min()), np.maximum(high, x.max())
    if len(values) > 1:
        low, high = np.minimum(values[1][0], low), np.maximum(values[1][1], high)
    return np.array([low, high], np.float32)


def _qparams(op, values, types):
    """DynamicQuantizeLinear's uint8 parameters from [low, high], as the cpu computes them:
    scale = (high - low) / 255 (1 when high == low), zero point = round_half_even(clamp(0 - low
    / scale, 0, 255)); out [scale, zero point as float32]."""
    low, high = np.float32(values[0][0]), np.float32(values[0][1])
    # Infinite or huge ranges overflow to inf and NaN in float32, as on the cpu: no warnings.
    with np.errstate(all="ignore"):
        scale = np.float32(1) if low == high else np.float32((high - low) / np.float32(255))
        initial = np.float32(0) - np.float32(low / scale)
        zero = np.rint(np.maximum(np.float32(0), np.minimum(np.float32(255), initial)))
    return np.array([scale, zero], np.float32)


def _cast(op, values, types):
    """Element type conversion (ONNX Cast) between the NPU's types: integers to float32 round to
    nearest (exact for 8-bit, as the cpu's sitofp for int32), float32 to 8 bits saturates an
    already integral value (a zero point)."""
    to = np.dtype(types[-1])
    if to == np.float32:
        return values[0].astype(np.float32)
    if types[0] != np.float32:
        raise NpuFault(f"npu: cast from {types[0]} to {to} (the vector unit converts to float32, or float32 to 8 bits)")
    return _saturate(values[0], to)


def _integer_add(op, values, types):
    if not all(t == np.int32 for t in types):
        raise NpuFault(f"npu: integer add of {[str(t) for t in types]} (the vector unit adds int32 to int32)")
    with np.errstate(over="ignore"):
        return np.add(values[0], values[1], dtype=np.int32)  # wraps, as the cpu's int32 add


# Functions that take or give other types than float32 (their `types` say which).
_INTEGER = {"requantize": _requantize, "quantize": _quantize, "dequantize": _dequantize, "range": _range,
            "qparams": _qparams, "cast": _cast}
