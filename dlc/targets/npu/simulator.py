"""Runs an `npu` instruction stream (dialects/npu.py) with numpy and counts its cycles (issue 6).

Numerics: DRAM is a dict of float32 arrays, the scratchpad one float32 array;
every access is bounds-checked, so a tiling bug is a `NpuFault`, never a silent
overwrite.

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
  `M * ceil(N/rows) * ceil(K/cols)`; one pass of the array per cycle;
- vector: `ceil(out elements * window / lanes)` (window 1 for elementwise ops);
- `npu.sync` waits for both engines.
Overlap is what double buffering buys: DMA of tile i+1 runs while tile i computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dlc.errors import DlcError
from passes.lowering.utils.npu_kernels import NpuHardware


class NpuFault(DlcError):
    """The stream did something the hardware cannot: an access outside the scratchpad or a tensor."""


class NpuConfig(NpuHardware):
    """The simulated NPU's parameters (defaults documented in docs/adding-a-target.md): the
    hardware the lowering tiles for (`NpuHardware`, read from the IR) and its cycle costs."""

    def dma_cycles(self, nbytes: int) -> int:
        return self.dma_latency_cycles + math.ceil(nbytes / self.dma_bytes_per_cycle)

    def mac_cycles(self, kind: str, a_shape, b_shape, acc_shape) -> int:
        rows, cols = self.mac_rows, self.mac_cols
        if kind == "conv2d":
            cout, cin, kh, kw = b_shape
            return math.ceil(cout / rows) * math.ceil(cin / cols) * kh * kw * acc_shape[1] * acc_shape[2]
        m, k = a_shape
        return m * math.ceil(b_shape[1] / rows) * math.ceil(k / cols)


@dataclass
class NpuReport:
    """What one run of a stream (or a sum of them) cost."""

    config: NpuConfig
    cycles: int = 0
    compute_cycles: int = 0
    dma_busy_cycles: int = 0
    macs: int = 0
    dma_load_bytes: int = 0
    dma_store_bytes: int = 0
    scratchpad_peak: int = 0
    instructions: int = 0

    @property
    def dma_bytes(self) -> int:
        return self.dma_load_bytes + self.dma_store_bytes

    @property
    def mac_utilisation(self) -> float:
        capacity = self.cycles * self.config.mac_rows * self.config.mac_cols
        return self.macs / capacity if capacity else 0.0

    @property
    def latency_us(self) -> float:
        return self.cycles / (self.config.clock_ghz * 1e3)

    def __add__(self, other: NpuReport) -> NpuReport:
        """Partitions run one after another: cycles add, the scratchpad peak is the max."""
        return NpuReport(self.config, self.cycles + other.cycles, self.compute_cycles + other.compute_cycles,
                         self.dma_busy_cycles + other.dma_busy_cycles, self.macs + other.macs,
                         self.dma_load_bytes + other.dma_load_bytes,
                         self.dma_store_bytes + other.dma_store_bytes,
                         max(self.scratchpad_peak, other.scratchpad_peak),
                         self.instructions + other.instructions)

    def format(self, label: str) -> str:
        return (f"{label}: {self.cycles} cycles ({self.latency_us:.2f} us at {self.config.clock_ghz:g} GHz), "
                f"MAC utilisation {100 * self.mac_utilisation:.1f}%, DMA {self.dma_bytes} B "
                f"(load {self.dma_load_bytes}, store {self.dma_store_bytes}), "
                f"scratchpad peak {self.scratchpad_peak} B, compute {self.compute_cycles} cycles, "
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
        self.scratchpad = np.zeros(config.scratchpad_bytes // 4, dtype=np.float32)

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
            report.scratchpad_peak = max([report.scratchpad_peak] + [hi for _, hi in reads + writes])
        report.cycles = max(engine_free.values())
        return report

    def read(self, name: str) -> np.ndarray:
        """A DRAM tensor (or a view of one) after `run`."""
        return self._tensor(name)

    def _declare(self, op, dram) -> None:
        from dialects.npu import ints_of

        name, shape = op.sym_name.data, ints_of(op.shape)
        if op.view_of is not None:
            self._views[name] = (op.view_of.data, shape)
        elif name not in dram:
            dram[name] = np.zeros(shape, dtype=np.float32)

    def _tensor(self, name: str) -> np.ndarray:
        if name in self._views:
            base, shape = self._views[name]
            return self._tensor(base).reshape(shape)
        if name not in self._dram:
            raise NpuFault(f"npu: DRAM tensor '{name}' was never declared or given")
        return self._dram[name]

    def _range(self, op, addr: int, shape) -> tuple[int, int]:
        nbytes = 4 * math.prod(shape)
        if addr < 0 or addr % 4 or addr + nbytes > self.config.scratchpad_bytes:
            raise NpuFault(f"npu: {op.name} touches scratchpad bytes [{addr}, {addr + nbytes}) outside "
                           f"[0, {self.config.scratchpad_bytes}) (or unaligned)")
        return addr, addr + nbytes

    def _spad(self, rng: tuple[int, int], shape) -> np.ndarray:
        return self.scratchpad[rng[0] // 4:rng[1] // 4].reshape(shape)

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
        rng = self._range(op, op.addr.value.data, sizes)
        tile = self._spad(rng, sizes)
        inside = tuple(slice(max(o, 0), min(o + s, d)) for o, s, d in zip(offsets, sizes, tensor.shape))
        local = tuple(slice(i.start - o, i.stop - o) for i, o in zip(inside, offsets))
        moved = 4 * math.prod(max(i.stop - i.start, 0) for i in inside)
        if isinstance(op, DmaLoadOp):
            tile[...] = op.pad_value.value.data
            if moved:
                tile[local] = tensor[inside]
            report.dma_load_bytes += moved
            return "dma", self.config.dma_cycles(moved), [], [rng]
        if moved != 4 * math.prod(sizes):
            raise NpuFault(f"npu: dma_store box {offsets}+{sizes} leaves tensor '{op.tensor.data}' "
                           f"of shape {list(tensor.shape)}")
        tensor[inside] = tile
        report.dma_store_bytes += moved
        return "dma", self.config.dma_cycles(moved), [rng], []

    def _mac(self, op, report: NpuReport):
        from dialects.npu import ints_of

        kind = op.kind.data
        a_shape, b_shape, acc_shape = ints_of(op.a_shape), ints_of(op.b_shape), ints_of(op.acc_shape)
        ra = self._range(op, op.a.value.data, a_shape)
        rb = self._range(op, op.b.value.data, b_shape)
        racc = self._range(op, op.acc.value.data, acc_shape)
        a, b, acc = self._spad(ra, a_shape), self._spad(rb, b_shape), self._spad(racc, acc_shape)
        if kind == "conv2d":
            result = _conv2d(a, b, acc_shape, ints_of(op.strides), ints_of(op.dilations))
            report.macs += math.prod(b_shape) * acc_shape[1] * acc_shape[2]
        elif kind == "matmul":
            result = a @ b
            report.macs += a_shape[0] * a_shape[1] * b_shape[1]
        else:
            raise NpuFault(f"npu: unknown MAC kind '{kind}'")
        if op.accumulate.value.data:
            acc += result
        else:
            acc[...] = result
        reads = [ra, rb, racc] if op.accumulate.value.data else [ra, rb]
        return "compute", self.config.mac_cycles(kind, a_shape, b_shape, acc_shape), reads, [racc]

    def _vector(self, op):
        from dialects.npu import ints_of

        in_shapes = [ints_of(s) for s in op.in_shapes.data]
        reads = [self._range(op, addr, s) for addr, s in zip(ints_of(op.ins), in_shapes)]
        # Read all inputs before writing: the output may alias an input (in-place epilogues).
        values = [self._spad(r, s).copy() for r, s in zip(reads, in_shapes)]
        out_shape = ints_of(op.out_shape)
        write = self._range(op, op.out.value.data, out_shape)
        fn = op.fn.data
        window = math.prod(ints_of(op.kernel)) if op.kernel is not None else 1
        if fn in _POOLS:
            result = _POOLS[fn](values[0], op)
            if fn.startswith("global"):
                window = in_shapes[0][-1] * in_shapes[0][-2]
        elif fn in _ELEMENTWISE:
            alpha = op.alpha.value.data if op.alpha is not None else None
            result = _ELEMENTWISE[fn](*values) if alpha is None else _ELEMENTWISE[fn](*values, alpha)
        else:
            raise NpuFault(f"npu: unknown vector function '{fn}'")
        self._spad(write, out_shape)[...] = np.broadcast_to(result, out_shape)
        cycles = math.ceil(math.prod(out_shape) * window / self.config.vector_lanes)
        return "compute", cycles, reads, [write]


def _conv2d(x: np.ndarray, w: np.ndarray, out_shape, strides, dilations) -> np.ndarray:
    """Direct convolution of a padded tile, one tensordot per kernel tap."""
    _, oh, ow = out_shape
    (sh, sw), (dh, dw) = strides, dilations
    out = np.zeros(out_shape, dtype=np.float32)
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            patch = x[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
            out += np.tensordot(w[:, :, i, j], patch, axes=([1], [0]))
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
}
