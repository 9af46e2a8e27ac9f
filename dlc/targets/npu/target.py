"""The `npu-sim` target: a simulated NPU that computes (issue 6).

It takes Conv, MatMul/Gemm, elementwise ops and pooling in float32 (`supports`
gives the reason for anything else, which then falls back to `cpu`), lowers a
partition to an `npu` instruction stream (dialects/npu.py) whose tiles fit the
scratchpad with double buffering, and runs it on dlc/targets/npu/simulator.py. The
hardware comes from a target file (JSON, keys of `NpuConfig`), path in
$DLC_NPU_TARGET or given to `NpuSimTarget(path)`; defaults in docs/adding-a-target.md.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from dlc.errors import CompileError, DlcError
from dlc.targets.npu.simulator import NpuConfig, NpuReport, Simulator
from dlc.targets import SUPPORTED, CompileOptions, MemoryLevel, Support, Target, TargetDescription

# ONNX op type -> vector unit function.
VECTOR_FNS = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max", "Min": "min",
              "Relu": "relu", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh",
              "Exp": "exp", "Neg": "neg", "Abs": "abs", "Sqrt": "sqrt", "Clip": "clip"}
POOLS = {"MaxPool": "max_pool", "AveragePool": "avg_pool", "GlobalAveragePool": "global_avg_pool",
         "GlobalMaxPool": "global_max_pool"}
VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
_ALIGN = 64  # scratchpad slots start on 64-byte boundaries (a DMA burst)


def load_config(path: str | Path | None = None) -> NpuConfig:
    """NpuConfig from a JSON target file (unknown keys are errors); defaults without one."""
    path = path or os.environ.get("DLC_NPU_TARGET")
    if not path:
        return NpuConfig()
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DlcError(f"npu-sim target file {path}: cannot read it as JSON ({error})") from None
    known = {f.name for f in fields(NpuConfig)}
    if "scratchpad_kib" in values:
        values["scratchpad_bytes"] = int(values.pop("scratchpad_kib")) * 1024
    unknown = sorted(set(values) - known)
    if unknown:
        raise DlcError(f"npu-sim target file {path}: unknown keys {unknown}; known: {sorted(known)}")
    return NpuConfig(**values)


class NpuSimTarget(Target):
    name = "npu-sim"
    start_phase = "graph"
    partial = True

    def __init__(self, config: NpuConfig | str | Path | None = None):
        self.config = config if isinstance(config, NpuConfig) else load_config(config)

    def description(self) -> TargetDescription:
        c = self.config
        return TargetDescription(
            memory=(MemoryLevel("scratchpad", c.scratchpad_bytes, c.dma_bandwidth_gbps),),
            vector_bits=32 * c.vector_lanes, mac_array=(c.mac_rows, c.mac_cols), dtypes=("float32",),
            clock_ghz=c.clock_ghz, extra={"dma_latency_cycles": c.dma_latency_cycles,
                                          "layout": "NCHW", "double_buffering": True})

    def supports(self, op) -> Support:
        return support_of(op)

    def build(self, module, options: CompileOptions):
        program, weights = lower_partition(module, self.config, options.fusion)
        return NpuExecutable(module, program, weights, self.config)


# --- capability ------------------------------------------------------------------------------

def _is_f32(value) -> bool:
    from xdsl.dialects.builtin import Float32Type, NoneType, TensorType

    return isinstance(value.type, NoneType) or (
        isinstance(value.type, TensorType) and isinstance(value.type.element_type, Float32Type))


def _is_weight(value) -> bool:
    from dialects.onnx import WeightOp

    return isinstance(value.owner, WeightOp)


def _present(value) -> bool:
    from xdsl.dialects.builtin import NoneType

    return not isinstance(value.type, NoneType)


def _rank(value) -> int:
    return len(value.type.get_shape())


def support_of(op) -> Support:
    """Whether npu-sim runs `op`, and if not, why (shown in the placement summary)."""
    kind = op.onnx_type
    if kind in VIEWS:
        used = [r for r in op.results[1:] if r.uses]
        return Support(False, "Dropout's mask output is not computed") if used else SUPPORTED
    values = [v for v in op.operands if _present(v)] + list(op.results)
    if kind == "Reshape":
        values = values[:1] + list(op.results)
    if not all(_is_f32(v) for v in values):
        return Support(False, "npu-sim computes float32 only")
    check = _CHECKS.get(kind)
    if check is None:
        return Support(False, f"npu-sim has no {kind} unit (it runs Conv, MatMul/Gemm, elementwise ops "
                              "and pooling)")
    reason = check(op)
    return Support(False, reason) if reason else SUPPORTED


def _check_conv(op) -> str | None:
    if _rank(op.operands[0]) != 4:
        return "only 2-D convolutions (NCHW inputs) run on the MAC array"
    if op.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        return f"auto_pad={op.attr('auto_pad')} is not handled"
    return None


def _check_matmul(op) -> str | None:
    if _rank(op.operands[0]) != 2 or _rank(op.operands[1]) != 2:
        return "only 2-D MatMul runs on the MAC array (batched MatMul falls back)"
    return None


def _check_gemm(op) -> str | None:
    if op.attr("transA", 0):
        return "Gemm with transA=1 is not handled"
    if (op.attr("transB", 0) or op.attr("alpha", 1.0) != 1.0) and not _is_weight(op.operands[1]):
        return "Gemm with transB=1 or alpha != 1 needs B to be a weight (it is re-laid out at compile time)"
    c = op.operands[2] if len(op.operands) > 2 else None
    if c is not None and _present(c) and op.attr("beta", 1.0) != 1.0 and not _is_weight(c):
        return "Gemm with beta != 1 needs C to be a weight"
    return None


def _check_elementwise(op) -> str | None:
    if not op.results[0].type.get_shape():
        return "scalar results are not tiled"
    if op.onnx_type in ("Max", "Min") and len(op.operands) != 2:
        return f"{op.onnx_type} with {len(op.operands)} inputs (the vector unit takes 2)"
    if op.onnx_type == "Clip" and (len(op.operands) < 3 or not all(_present(v) for v in op.operands)):
        return "Clip without both min and max inputs is not handled"
    return None


def _check_pool(op) -> str | None:
    if _rank(op.operands[0]) != 4:
        return "only 2-D pooling (NCHW inputs) runs on the vector unit"
    if op.attr("auto_pad", "NOTSET") != "NOTSET":
        return f"auto_pad={op.attr('auto_pad')} is not handled"
    if any(r.uses for r in op.results[1:]):
        return "MaxPool's Indices output is not computed"
    if op.onnx_type == "AveragePool" and (op.attr("ceil_mode", 0) or (
            any(op.attr("pads", [0])) and not op.attr("count_include_pad", 0))):
        return "AveragePool with ceil_mode or padding excluded from the count is not handled"
    return None


_CHECKS = {"Conv": _check_conv, "MatMul": _check_matmul, "Gemm": _check_gemm,
           **{k: _check_elementwise for k in VECTOR_FNS},
           **{k: (lambda op: None if _rank(op.operands[0]) == 4 else "only NCHW inputs")
              for k in ("GlobalAveragePool", "GlobalMaxPool")},
           "MaxPool": _check_pool, "AveragePool": _check_pool}


# --- lowering: kernels, tiles, scratchpad slots -----------------------------------------------

@dataclass
class _Kernel:
    """An anchor op and the elementwise ops fused after it (they run on its output tile in place)."""

    anchor: object
    epilogue: list = field(default_factory=list)

    @property
    def result(self):
        return (self.epilogue or [self.anchor])[-1].results[0]


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


def _pads(op, in_hw, kernel, strides, dilations) -> list[int]:
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


class _Lowering:
    """Builds one partition's npu.program: buffers, then kernel after kernel."""

    def __init__(self, module, config: NpuConfig, fusion: str):
        from xdsl.dialects import func

        from dialects.npu import ProgramOp
        from dialects.weights import weights_of

        self.config, self.fusion = config, fusion
        self.main = next(f for f in module.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "main")
        self.store = weights_of(module)
        self.program = ProgramOp("npu", config.scratchpad_bytes)
        self.weights: dict[str, np.ndarray] = {}
        self.names: dict = {}
        self._temps = 0

    def emit(self, op) -> None:
        self.program.body.block.add_op(op)

    def name(self, value) -> str:
        return self.names[value]

    def run(self):
        from dialects.npu import BufferOp
        from dialects.onnx import NoneOp, OnnxOp, WeightOp

        block = self.main.body.block
        inputs = [a.data for a in self.main.attributes["dlc.input_names"].data]
        outputs = [a.data for a in self.main.attributes["dlc.output_names"].data]
        for name, arg in zip(inputs, block.args):
            self.names[arg] = name
            self.emit(BufferOp(name, arg.type.get_shape(), "input"))
        returned = dict(zip(block.last_op.operands, outputs))
        self.outputs = set(outputs)
        compute = []
        for op in list(block.ops)[:-1]:
            if isinstance(op, WeightOp):
                self.names[op.result] = op.weight_name
                shape = op.result.type.get_shape()
                self.weights[op.weight_name] = np.asarray(self.store[op.weight_name], np.float32).reshape(shape)
                self.emit(BufferOp(op.weight_name, op.result.type.get_shape(), "weight"))
            elif isinstance(op, NoneOp):
                continue
            elif isinstance(op, OnnxOp):
                self._declare(op, returned)
                if op.onnx_type not in VIEWS:
                    compute.append(op)
        for kernel in self._kernels(compute):
            self._lower_kernel(kernel)
        self._drop_unused_buffers()
        return self.program, self.weights

    def _drop_unused_buffers(self) -> None:
        """Values that stayed in the scratchpad (inside fused kernels) need no DRAM buffer."""
        from dialects.npu import BufferOp, DmaLoadOp, DmaStoreOp

        ops = list(self.program.body.block.ops)
        used = {op.tensor.data for op in ops if isinstance(op, DmaLoadOp | DmaStoreOp)}
        for op in reversed(ops):
            if isinstance(op, BufferOp) and op.kind.data in ("temp", "view"):
                if op.sym_name.data not in used | self.outputs:
                    op.detach()
                    op.erase()
                elif op.view_of is not None:
                    used.add(op.view_of.data)

    def _declare(self, op, returned) -> None:
        from dialects.npu import BufferOp

        result = op.results[0]
        name = returned.get(result) or f"t{self._temps}"
        self._temps += name not in returned.values()
        self.names[result] = name
        view_of = self.name(op.operands[0]) if op.onnx_type in VIEWS else None
        self.emit(BufferOp(name, result.type.get_shape(), "view" if view_of else
                           "output" if result in returned else "temp", view_of))

    def _kernels(self, ops) -> list[_Kernel]:
        kernels: list[_Kernel] = []
        for op in ops:
            if kernels and self._joins(kernels[-1], op):
                kernels[-1].epilogue.append(op)
            else:
                kernels.append(_Kernel(op))
        return kernels

    def _joins(self, kernel: _Kernel, op) -> bool:
        """Fuse `op` as an epilogue: elementwise, reads the kernel's value, its only user, same shape."""
        if self.fusion == "none" or op.onnx_type not in VECTOR_FNS:
            return False
        if self.fusion == "elementwise" and kernel.anchor.onnx_type not in VECTOR_FNS:
            return False
        tail = kernel.result
        users = {use.operation for use in tail.uses}
        return (tail in op.operands and users == {op}
                and op.results[0].type.get_shape() == tail.type.get_shape())

    def _lower_kernel(self, kernel: _Kernel) -> None:
        from dialects.npu import DmaStoreOp, SyncOp

        anchor = _ANCHORS.get(kernel.anchor.onnx_type, _Elementwise)(self, kernel.anchor)
        tile, slots = self._choose_tile(kernel, anchor)
        out = self.name(kernel.result)
        for offsets, sizes, parity in anchor.emit(tile, slots):
            for index, op in enumerate(kernel.epilogue):
                self._epilogue(op, index, kernel, offsets, sizes, slots, parity)
            self.emit(DmaStoreOp(out, offsets, sizes, slots("acc", parity)))
        self.emit(SyncOp())

    def _choose_tile(self, kernel: _Kernel, anchor):
        """The cheapest tile whose slots fit the scratchpad; a compile error if none does."""
        best, smallest = None, None
        for tile in anchor.candidates():
            sizes = {**anchor.slots(tile), **self._epilogue_slots(kernel, anchor.out_tile(tile))}
            slots = _Slots(sizes)
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
                f"npu-sim: {kernel.anchor.describe()} cannot fit the {self.config.scratchpad_bytes} B "
                f"scratchpad: its smallest tile {anchor.describe_tile(tile)} needs {slots.total} B with "
                f"double buffering ({detail})",
                "place the node on cpu (--placement-from) or use a target file with a larger scratchpad")
        return best[1], best[2]

    def _operand_box(self, value, offsets, sizes):
        """The box of `value` that broadcasts onto the output box, and its shape aligned to the output rank."""
        shape = list(value.type.get_shape())
        lead = len(sizes) - len(shape)
        box_offsets = [0 if d == 1 else offsets[lead + i] for i, d in enumerate(shape)]
        box_sizes = [1 if d == 1 else sizes[lead + i] for i, d in enumerate(shape)]
        return box_offsets, box_sizes, [1] * lead + box_sizes

    def _epilogue_slots(self, kernel: _Kernel, out_tile) -> dict[str, int]:
        sizes = {}
        for index, op in enumerate(kernel.epilogue):
            for j, value in enumerate(op.operands):
                if value is not kernel.anchor.results[0] and value not in [e.results[0] for e in kernel.epilogue]:
                    _, box, _ = self._operand_box(value, [0] * len(out_tile), out_tile)
                    sizes[f"e{index}.{j}"] = 4 * math.prod(box)
        return sizes

    def _epilogue(self, op, index, kernel, offsets, sizes, slots, parity) -> None:
        from dialects.npu import DmaLoadOp

        chain = {kernel.anchor.results[0], *(e.results[0] for e in kernel.epilogue)}
        ins, shapes = [], []
        for j, value in enumerate(op.operands):
            if value in chain:
                ins.append(slots("acc", parity))
                shapes.append(sizes)
                continue
            box_offsets, box_sizes, aligned = self._operand_box(value, offsets, sizes)
            addr = slots(f"e{index}.{j}", parity)
            self.emit(DmaLoadOp(self.name(value), box_offsets, box_sizes, addr))
            ins.append(addr)
            shapes.append(aligned)
        self.vector(op, ins, shapes, slots("acc", parity), sizes)

    def vector(self, op, ins, shapes, out, out_shape) -> None:
        from dialects.npu import VectorOp

        alpha = op.attr("alpha", 0.01) if op.onnx_type == "LeakyRelu" else None
        self.emit(VectorOp(VECTOR_FNS[op.onnx_type], ins, shapes, out, out_shape, alpha=alpha))

    def weight(self, value, transform, suffix: str) -> str:
        """A weight re-laid out for the NPU at compile time (like cpu's pack-weights)."""
        from dialects.npu import BufferOp

        name = f"{self.name(value)}.{suffix}"
        if name not in self.weights:
            # np.array, not np.ascontiguousarray: that one turns a scalar (a Gemm C) into shape (1,).
            self.weights[name] = np.array(transform(self.weights[self.name(value)]), np.float32, order="C")
            self.emit(BufferOp(name, self.weights[name].shape, "weight"))
        return name


class _Anchor:
    """How one kind of anchor op is tiled: candidate tiles, their slots and cost, and the stream."""

    def __init__(self, lowering: _Lowering, op):
        self.low, self.op = lowering, op
        self.config = lowering.config
        self.out_shape = list(op.results[0].type.get_shape())

    def describe_tile(self, tile) -> str:
        return "x".join(str(t) for t in tile)

    def dma_cost(self, nbytes: float, transfers: float) -> float:
        return nbytes / self.config.dma_bytes_per_cycle + transfers * self.config.dma_latency_cycles


class _Conv(_Anchor):
    """Conv on NCHW: tiles of (output channels, input channels, output rows); full output width."""

    def __init__(self, lowering, op):
        super().__init__(lowering, op)
        x, w = op.operands[0], op.operands[1]
        self.x, self.w = lowering.name(x), lowering.name(w)
        self.bias = lowering.name(op.operands[2]) if len(op.operands) > 2 and _present(op.operands[2]) else None
        self.n, self.c, h, width = x.type.get_shape()
        self.cout, self.cg, self.kh, self.kw = w.type.get_shape()
        self.groups = op.attr("group", 1)
        self.strides = op.attr("strides", [1, 1])
        self.dilations = op.attr("dilations", [1, 1])
        self.pads = _pads(op, (h, width), (self.kh, self.kw), self.strides, self.dilations)
        self.cog = self.cout // self.groups
        _, _, self.ho, self.wo = self.out_shape

    def _in_extent(self, th: int) -> tuple[int, int]:
        (sh, sw), (dh, dw) = self.strides, self.dilations
        return (th - 1) * sh + (self.kh - 1) * dh + 1, (self.wo - 1) * sw + (self.kw - 1) * dw + 1

    def candidates(self):
        return [(co, ci, th) for co in _pow2_upto(self.cog) for ci in _pow2_upto(self.cg)
                for th in _pow2_upto(self.ho)]

    def describe_tile(self, tile) -> str:
        return f"(Cout {tile[0]}, Cin {tile[1]}, rows {tile[2]} x width {self.wo})"

    def out_tile(self, tile):
        return [1, tile[0], tile[2], self.wo]

    def slots(self, tile):
        co, ci, th = tile
        ih, iw = self._in_extent(th)
        sizes = {"x": 4 * ci * ih * iw, "w": 4 * co * ci * self.kh * self.kw, "acc": 4 * co * th * self.wo}
        if self.bias:
            sizes["bias"] = 4 * co
        return sizes

    def cost(self, tile):
        co, ci, th = tile
        tiles = self.n * self.groups * math.ceil(self.cog / co) * math.ceil(self.ho / th)
        steps = tiles * math.ceil(self.cg / ci)
        ih, iw = self._in_extent(th)
        nbytes = steps * 4 * (ci * ih * iw + co * ci * self.kh * self.kw) + tiles * 4 * co * th * self.wo
        rows, cols = self.config.mac_rows, self.config.mac_cols
        compute = steps * math.ceil(co / rows) * math.ceil(ci / cols) * self.kh * self.kw * th * self.wo
        return self.dma_cost(nbytes, 3 * steps) + compute

    def emit(self, tile, slots):
        from dialects.npu import DmaLoadOp, MacOp

        co_t, ci_t, th_t = tile
        (sh, _), (top, left) = self.strides, self.pads[:2]
        step = parity = 0
        for n in range(self.n):
            for g in range(self.groups):
                for co0, co in _chunks(self.cog, co_t):
                    for oh0, th in _chunks(self.ho, th_t):
                        ih, iw = self._in_extent(th)
                        acc = slots("acc", parity)
                        for ci0, ci in _chunks(self.cg, ci_t):
                            x, w = slots("x", step), slots("w", step)
                            self.low.emit(DmaLoadOp(self.x, [n, g * self.cg + ci0, oh0 * sh - top, -left],
                                                    [1, ci, ih, iw], x))
                            self.low.emit(DmaLoadOp(self.w, [g * self.cog + co0, ci0, 0, 0],
                                                    [co, ci, self.kh, self.kw], w))
                            self.low.emit(MacOp("conv2d", x, [ci, ih, iw], w, [co, ci, self.kh, self.kw], acc,
                                                [co, th, self.wo], ci0 > 0, self.strides, self.dilations))
                            step += 1
                        if self.bias:
                            self._add_bias(g * self.cog + co0, co, th, slots, parity)
                        yield [n, g * self.cog + co0, oh0, 0], [1, co, th, self.wo], parity
                        parity += 1

    def _add_bias(self, c0, co, th, slots, parity) -> None:
        from dialects.npu import DmaLoadOp, VectorOp

        bias, acc = slots("bias", parity), slots("acc", parity)
        self.low.emit(DmaLoadOp(self.bias, [c0], [co], bias))
        self.low.emit(VectorOp("add", [acc, bias], [[co, th, self.wo], [co, 1, 1]], acc, [co, th, self.wo]))


class _MatMul(_Anchor):
    """MatMul and Gemm: tiles of (M, K, N); B re-laid out at compile time for transB/alpha."""

    def __init__(self, lowering, op):
        super().__init__(lowering, op)
        a, b = op.operands[0], op.operands[1]
        self.a = lowering.name(a)
        self.m, self.k = a.type.get_shape()
        self.b = lowering.name(b)
        trans_b, alpha = op.attr("transB", 0), op.attr("alpha", 1.0)
        if op.onnx_type == "Gemm" and (trans_b or alpha != 1.0):
            self.b = lowering.weight(b, lambda w: alpha * (w.T if trans_b else w), "npu")
        self.nn = self.out_shape[1]
        self.c = None
        if op.onnx_type == "Gemm" and len(op.operands) > 2 and _present(op.operands[2]):
            c, beta = op.operands[2], op.attr("beta", 1.0)
            self.c = (c, lowering.weight(c, lambda w: beta * w, "npu") if beta != 1.0 else lowering.name(c))

    def candidates(self):
        return [(m, k, n) for m in _pow2_upto(self.m) for k in _pow2_upto(self.k) for n in _pow2_upto(self.nn)]

    def describe_tile(self, tile) -> str:
        return f"(M {tile[0]}, K {tile[1]}, N {tile[2]})"

    def out_tile(self, tile):
        return [tile[0], tile[2]]

    def slots(self, tile):
        m, k, n = tile
        sizes = {"a": 4 * m * k, "b": 4 * k * n, "acc": 4 * m * n}
        if self.c:
            sizes["c"] = 4 * math.prod(self.low._operand_box(self.c[0], [0, 0], [m, n])[1])
        return sizes

    def cost(self, tile):
        m, k, n = tile
        tiles = math.ceil(self.m / m) * math.ceil(self.nn / n)
        steps = tiles * math.ceil(self.k / k)
        nbytes = steps * 4 * (m * k + k * n) + tiles * 4 * m * n
        compute = steps * m * math.ceil(n / self.config.mac_rows) * math.ceil(k / self.config.mac_cols)
        return self.dma_cost(nbytes, 3 * steps) + compute

    def emit(self, tile, slots):
        from dialects.npu import DmaLoadOp, MacOp, VectorOp

        m_t, k_t, n_t = tile
        step = parity = 0
        for m0, m in _chunks(self.m, m_t):
            for n0, n in _chunks(self.nn, n_t):
                acc = slots("acc", parity)
                for k0, k in _chunks(self.k, k_t):
                    a, b = slots("a", step), slots("b", step)
                    self.low.emit(DmaLoadOp(self.a, [m0, k0], [m, k], a))
                    self.low.emit(DmaLoadOp(self.b, [k0, n0], [k, n], b))
                    self.low.emit(MacOp("matmul", a, [m, k], b, [k, n], acc, [m, n], k0 > 0))
                    step += 1
                if self.c:
                    offsets, box, aligned = self.low._operand_box(self.c[0], [m0, n0], [m, n])
                    c = slots("c", parity)
                    self.low.emit(DmaLoadOp(self.c[1], offsets, box, c))
                    self.low.emit(VectorOp("add", [acc, c], [[m, n], aligned], acc, [m, n]))
                yield [m0, n0], [m, n], parity
                parity += 1


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
        from dialects.npu import DmaLoadOp, VectorOp

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
    """An elementwise op: tiles are boxes of its output, whole trailing dims and a chunk of one dim."""

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
        sizes = {"acc": 4 * math.prod(out)}
        for j, value in enumerate(self.op.operands):
            sizes[f"in{j}"] = 4 * math.prod(self.low._operand_box(value, [0] * len(out), out)[1])
        return sizes

    def cost(self, tile):
        return -math.prod(self.out_tile(tile))  # the biggest tile that fits: fewest DMA transfers

    def emit(self, tile, slots):
        from dialects.npu import DmaLoadOp

        dim, size = tile
        outer = self.out_shape[:dim]
        parity = 0
        for index in np.ndindex(*outer):
            for start, count in _chunks(self.out_shape[dim], size) if self.out_shape else [(0, 1)]:
                offsets = list(index) + [start] + [0] * (len(self.out_shape) - dim - 1)
                sizes = [1] * dim + [count] + self.out_shape[dim + 1:]
                offsets, sizes = offsets[:len(self.out_shape)], sizes[:len(self.out_shape)]
                ins, shapes = [], []
                for j, value in enumerate(self.op.operands):
                    box_offsets, box, aligned = self.low._operand_box(value, offsets, sizes)
                    addr = slots(f"in{j}", parity)
                    self.low.emit(DmaLoadOp(self.low.name(value), box_offsets, box, addr))
                    ins.append(addr)
                    shapes.append(aligned)
                self.low.vector(self.op, ins, shapes, slots("acc", parity), sizes)
                yield offsets, sizes, parity
                parity += 1


_ANCHORS = {"Conv": _Conv, "MatMul": _MatMul, "Gemm": _MatMul, **{k: _Pool for k in POOLS}}


def lower_partition(module, config: NpuConfig, fusion: str = "all"):
    """(npu.program, weights it reads) for a graph-phase module whose ops npu-sim supports."""
    return _Lowering(module, config, fusion).run()


# --- the executable --------------------------------------------------------------------------

class NpuExecutable:
    """Runs a partition's stream on the simulator; `last_report` is the cost of the latest run."""

    def __init__(self, module, program, weights: dict[str, np.ndarray], config: NpuConfig):
        from xdsl.dialects.builtin import ModuleOp

        from dlc.targets import graph_io_specs

        self.inputs, self.outputs = graph_io_specs(module)
        self.program, self.weights, self.config = program, weights, config
        self.module = ModuleOp([program.clone()])
        self.last_report: NpuReport | None = None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from dlc.runtime import check_inputs

        arrays = check_inputs(self.inputs, feeds)
        dram = dict(self.weights)  # streams store only to temps and outputs
        dram.update((spec.name, np.array(a, dtype=np.float32)) for spec, a in zip(self.inputs, arrays))
        simulator = Simulator(self.config)
        self.last_report = simulator.run(self.program, dram)
        return {spec.name: simulator.read(spec.name).copy() for spec in self.outputs}

    def save(self, directory) -> None:
        raise CompileError("npu-sim has no artifact to save; run the .onnx model with --target npu-sim")
