"""Kernels-phase launches placed on `cuda` -> LLVM IR for nvptx64-nvidia-cuda -> PTX (llvmlite).

First step of issue 21: each kernel is written from its ONNX ops directly (the `kernels` phase),
not yet through the shared linalg/loops phases, because the loops emitter (dlc/codegen) outlines
parallel loops for the host's thread pool and has no notion of a grid. Two kernel shapes:
- elementwise: one thread per output element, a fused chain of elementwise ops, inputs read with
  numpy broadcasting;
- GEMM (MatMul, Gemm, batched MatMul; Conv as an implicit GEMM): the classic shared-memory
  tiled kernel, a BM x BN tile per thread block staged through shared memory BK columns at a
  time, each thread holding a TM x TN register tile; the kernel's elementwise epilogue applied
  before the one store. A 2-D Conv is W [Cout, Cin*KH*KW] times the im2col matrix of its input,
  which is never built: the B tile's loads compute each element's input pixel (zero in the
  padding), and output column n*OH*OW + p lands in NCHW, consecutive threads on consecutive pixels.
  The multiply is a schedule: the tensor cores' `mma.sync.m16n8k8` in TF32 with `gemm_tf32` (the
  default; `_MmaSchedule`), inline PTX as CUTLASS's SM80 path, or exact FP32 FMA on a register tile
  (`_FmaSchedule`) with `gemm_tf32` 0 (`--target cuda:fp32`).
  A TF32 GEMM or Conv takes the cp.async pipeline of dlc/targets/cuda/tf32_gemm.py instead
  where it applies (transposed A and Convs of few input channels keep `_MmaSchedule`); on an
  sm 90 GPU (`gemm_tf32_wgmma` 1, the default) a MatMul/Gemm of row-major A and K-major (or
  constant) B takes Hopper's wgmma kernel of dlc/targets/cuda/wgmma_gemm.py (PTX for sm_90a).
Tile sizes come from the target description on the module (`dlc.gemm_tile_m` ...), as the CPU's
GEMM tiles do, so a user or a search can override them. Every global access is guarded by the
shapes, which are compile-time constants: no thread reads or writes out of bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dlc.errors import CompileError
from dlc.targets.cuda.tf32_gemm import mma_sync, pipeline_plan, pipelined_kernel

TRIPLE = "nvptx64-nvidia-cuda"
# Tile sizes when the module carries none (dlc/targets/cuda/target.py writes the same ones).
# `gemm_tf32`: float32 GEMMs and Convs on the tensor cores in TF32 (1, as TensorFlow's matmuls and
# convolutions and torch's cuDNN convolutions default to on sm_80+), or exact FP32 FMA (0: the
# gemm_tile_* keys; `--target cuda:fp32`, dlc/targets/cuda/target.py).
DEFAULT_TILES = {"gemm_tile_m": 64, "gemm_tile_n": 64, "gemm_tile_k": 16, "gemm_thread_tile_m": 4,
                 "gemm_thread_tile_n": 4, "gemm_tile_auto": 1, "gemm_tf32": 1, "elementwise_block": 256,
                 # The pipelined TF32 GEMM (dlc/targets/cuda/tf32_gemm.py); 0: chosen per GEMM.
                 "gemm_tf32_pipeline": 1, "gemm_tf32_block_m": 0, "gemm_tf32_block_n": 0, "gemm_tf32_tile_k": 32,
                 "gemm_tf32_warps_m": 0, "gemm_tf32_warps_n": 0, "gemm_tf32_stages": 3, "gemm_tf32_group_m": 8,
                 "gemm_tf32_round": 0, "gemm_tf32_preround": 1, "gemm_tf32_weight_row_major": 1,
                 # Hopper's wgmma (dlc/targets/cuda/wgmma_gemm.py) for the GEMMs it applies to on an
                 # sm 90 GPU: 4096^3 in 0.403 ms against the mma.sync pipeline's 0.689 (H200).
                 "gemm_tf32_wgmma": 1, "gemm_tf32_wgmma_stages": 0, "gemm_tf32_wgmma_warpgroups": 0,
                 "gemm_tf32_wgmma_swizzle": 128, "gemm_tf32_wgmma_pending": 1}
# With 8 x 8 outputs a thread does twice the FMAs per shared-memory load of the 4 x 4 tile: 31.7
# against 24.6 TFLOP/s at 4096^3 on the H200 (benchmarks/README.md), but a quarter as many blocks.
# `gemm_tile_auto` takes it for a GEMM that still has a block for every SM with it.
LARGE_TILE = {"gemm_tile_m": 128, "gemm_tile_n": 128, "gemm_tile_k": 8, "gemm_thread_tile_m": 8,
              "gemm_thread_tile_n": 8}
DEVICE_KEYS = {"sm": 90, "sms": 132}
GEMM_OPS = {"MatMul", "Gemm", "Conv"}
LOG2E = 1.4426950408889634


@dataclass
class Launch:
    """One kernel launch: the PTX entry, its grid, and the values its parameters are bound to."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    inputs: list = field(default_factory=list)  # values read from outside (parameters before the outputs)
    nodes: list = field(default_factory=list)
    check: str | None = None  # the error a nonzero error word means (the kernel's last parameter)
    shared_bytes: int = 0  # dynamic shared memory the launch asks for
    tap_major: list = field(default_factory=list)  # inputs (positions) read as a weight copied [O, KH, KW, I]
    transposed: list = field(default_factory=list)  # inputs (positions) read as a weight copied transposed
    # Inputs (positions) the K loop reads as exact TF32 values without a cvt: the partition rounds
    # them where they are produced (dlc/targets/cuda/target.py, round_tf32_operands).
    tf32: list = field(default_factory=list)
    rounds_outputs: bool = False  # the kernel can round its results to TF32 in its store


def kernel_options(module) -> dict:
    """Tile sizes and block size from the target description on the module, else the defaults."""
    from xdsl.dialects.builtin import IntegerAttr

    found = dict(DEFAULT_TILES, **DEVICE_KEYS)
    for key in found:
        value = module.attributes.get(f"dlc.{key}")
        if isinstance(value, IntegerAttr):
            found[key] = value.value.data
    bm, bn, tm, tn = (found[k] for k in ("gemm_tile_m", "gemm_tile_n", "gemm_thread_tile_m", "gemm_thread_tile_n"))
    if bm % tm or bn % tn or (bm // tm) * (bn // tn) > 1024:
        raise CompileError(f"cuda: GEMM tile {bm}x{bn} with thread tile {tm}x{tn} needs whole thread tiles "
                           "and at most 1024 threads per block",
                           "choose tile sizes with gemm_tile_m % gemm_thread_tile_m == 0 (and n)")
    return found


def compile_ptx(llvm_ir: str, sm: int = 90, opt_level: int = 3) -> str:
    """Optimise the module at `opt_level` and emit PTX for sm_`sm` with llvmlite's NVPTX backend;
    for sm_`sm`a (`.target sm_90a`: the architecture-specific features) when a kernel uses wgmma."""
    import llvmlite.binding as llvm

    from dlc.codegen.native import parse_llvm
    from dlc.runtime.mcjit import target_machine

    module = parse_llvm(llvm_ir)
    cpu = f"sm_{sm}a" if "wgmma." in llvm_ir else f"sm_{sm}"
    tm = target_machine(cpu, "", opt_level, TRIPLE)  # registers every target once
    module.triple = TRIPLE
    module.data_layout = str(tm.target_data)
    if opt_level > 0:
        tuning = llvm.create_pipeline_tuning_options(speed_level=opt_level)
        builder = llvm.create_pass_builder(tm, tuning)
        builder.getModulePassManager().run(module, builder)
    return tm.emit_assembly(module)


# --- IR building ----------------------------------------------------------------------------

_DECLARATIONS = [
    "declare i32 @llvm.nvvm.read.ptx.sreg.tid.x()",
    "declare i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()",
    "declare i32 @llvm.nvvm.read.ptx.sreg.ctaid.y()",
    "declare i32 @llvm.nvvm.read.ptx.sreg.ctaid.z()",
    "declare void @llvm.nvvm.barrier0()",
    "declare float @llvm.nvvm.ex2.approx.f(float)",
    "declare float @llvm.fma.f32(float, float, float)",
    "declare float @llvm.fabs.f32(float)",
    "declare float @llvm.sqrt.f32(float)",
    "declare float @llvm.copysign.f32(float, float)",
    "declare float @llvm.maximum.f32(float, float)",
    "declare float @llvm.minimum.f32(float, float)",
    "declare float @llvm.nvvm.shfl.sync.bfly.f32(i32, float, i32, i32)",
]


def _symbol(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _float(value: float) -> str:
    """An LLVM float constant: the double that the float rounds to, in hex (exact)."""
    import struct

    as_float = struct.unpack("<f", struct.pack("<f", float(value)))[0]
    return "0x" + struct.pack(">d", as_float).hex().upper()


class _Function:
    """Lines of one LLVM function with fresh SSA names."""

    def __init__(self, index_type: str = "i64"):
        self.lines: list[str] = []
        self.count = 0
        self.ity = index_type

    def __call__(self, text: str) -> str:
        self.count += 1
        name = f"%v{self.count}"
        self.lines.append(f"  {name} = {text}")
        return name

    def emit(self, text: str) -> None:
        self.lines.append(f"  {text}")

    def label(self, name: str) -> None:
        self.lines.append(f"{name}:")

    def sreg(self, register: str) -> str:
        value = self(f"call i32 @llvm.nvvm.read.ptx.sreg.{register}()")
        return value if self.ity == "i32" else self(f"zext i32 {value} to i64")

    def int(self, opcode: str, a, b) -> str:
        """Index arithmetic (`add`, `mul`, `udiv`, `urem`) in the kernel's index type."""
        return self(f"{opcode} {self.ity} {a}, {b}")

    def below(self, a, b) -> str:
        return self(f"icmp ult {self.ity} {a}, {b}")

    def both(self, a: str, b: str) -> str:
        return self(f"and i1 {a}, {b}")

    def load(self, pointer: str, index: str) -> str:
        address = self(f"getelementptr inbounds float, ptr addrspace(1) {pointer}, {self.ity} {index}")
        return self(f"load float, ptr addrspace(1) {address}, align 4")

    def store(self, value: str, pointer: str, index: str) -> None:
        address = self(f"getelementptr inbounds float, ptr addrspace(1) {pointer}, {self.ity} {index}")
        self.emit(f"store float {value}, ptr addrspace(1) {address}, align 4")


def _index_type(*sizes: int) -> str:
    """32-bit index arithmetic (cheaper on the GPU) when every buffer has fewer than 2^31 elements."""
    return "i32" if max(sizes, default=0) < 2**31 else "i64"


def _shape(value) -> tuple[int, ...]:
    return tuple(value.type.get_shape())


def _external(body, op) -> list:
    """Values the kernel reads from outside, in first-use order (the kernel's input parameters)."""
    from xdsl.dialects.builtin import NoneType

    inside = {r for o in body for r in o.results}
    values = []
    for o in body:
        for v in o.operands:
            if v not in inside and v not in values and not isinstance(v.type, NoneType):
                values.append(v)
    return values


def _yields(op) -> list:
    return list(op.body.block.last_op.operands)


class _Broadcast:
    """Loads of kernel inputs at one output element, with numpy broadcasting against `shape`."""

    def __init__(self, fn: _Function, shape: tuple[int, ...], linear: str, coords=None):
        self.fn, self.shape, self.linear, self._coords = fn, shape, linear, coords

    def coords(self) -> list[str]:
        if self._coords is None:  # the multi-index of the linear one, computed once per kernel
            fn, coords, rest = self.fn, [], self.linear
            strides = [math.prod(self.shape[d + 1:]) for d in range(len(self.shape))]
            for d, (extent, stride) in enumerate(zip(self.shape, strides)):
                quotient = rest if stride == 1 else fn(f"udiv {fn.ity} {rest}, {stride}")
                coords.append(quotient if d == 0 else fn(f"urem {fn.ity} {quotient}, {extent}"))
            self._coords = coords
        return self._coords

    def index(self, shape: tuple[int, ...]) -> str:
        fn = self.fn
        if math.prod(shape) == 1:
            return "0"
        if shape == self.shape:
            return self.linear
        offset = len(self.shape) - len(shape)
        terms = []
        for d, extent in enumerate(shape):
            if extent != 1:
                stride = math.prod(shape[d + 1:])
                coord = self.coords()[offset + d]
                terms.append(coord if stride == 1 else fn(f"mul {fn.ity} {coord}, {stride}"))
        total = terms[0]
        for term in terms[1:]:
            total = fn(f"add {fn.ity} {total}, {term}")
        return total


def _exp(fn: _Function, x: str) -> str:
    """e^x as 2^(x log2 e) with ex2.approx, the product's rounding error carried by a second term
    (Cody-Waite style) so that large |x| keep ~2 ulp: ex2(hi) * (1 + lo ln 2)."""
    # Clamped to [-150, 89] first (NaN passes): e^x is 0 below and inf above either way, and a
    # product x log2 e that overflows would make the correction term inf and the result NaN
    # (a masked attention score of -3.4e38).
    x = _select(fn, fn(f"fcmp olt float {x}, -150.0"), "-150.0", x)
    x = _select(fn, fn(f"fcmp ogt float {x}, 89.0"), "89.0", x)
    hi = fn(f"fmul float {x}, {_float(LOG2E)}")
    lo = fn(f"call float @llvm.fma.f32(float {x}, float {_float(LOG2E)}, float {fn(f'fneg float {hi}')})")
    lo = fn(f"call float @llvm.fma.f32(float {x}, float {_float(LOG2E - float(_f32(LOG2E)))}, float {lo})")
    power = fn(f"call float @llvm.nvvm.ex2.approx.f(float {hi})")
    correction = fn(f"call float @llvm.fma.f32(float {lo}, float {_float(math.log(2))}, float 1.0)")
    return fn(f"fmul float {power}, {correction}")


def _f32(value: float) -> float:
    import numpy as np

    return float(np.float32(value))


POW_EXPONENTS = (0.5, 1.0, 2.0, 3.0)  # what exporters write: a square, a cube (tanh GELU), a root


def pow_exponent(op) -> float | None:
    """Pow's exponent when it is a one-element constant, else None."""
    from passes.graph.utils.constants import constant_of

    value = constant_of(op.operands[1])
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _tanh(fn: _Function, x: str) -> str:
    """(1 - e^-2|x|) / (1 + e^-2|x|) with x's sign: no overflow for any x."""
    t = _exp(fn, fn(f"fmul float {fn(f'call float @llvm.fabs.f32(float {x})')}, -2.0"))
    numerator, denominator = fn(f"fsub float 1.0, {t}"), fn(f"fadd float 1.0, {t}")
    ratio = fn(f"fdiv float {numerator}, {denominator}")
    return fn(f"call float @llvm.copysign.f32(float {ratio}, float {x})")


# Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7) for |x| >= 0.5; below, the Maclaurin series to
# x^11 (truncation < 2e-9), which keeps erf's relative accuracy near 0 where 7.1.26's absolute
# error would dominate.
_ERF_AS = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_ERF_SERIES = (1.0, -1 / 3, 1 / 10, -1 / 42, 1 / 216, -1 / 1320)


def _erf(fn: _Function, x: str) -> str:
    a = fn(f"call float @llvm.fabs.f32(float {x})")
    t = fn(f"fdiv float 1.0, {fn(f'call float @llvm.fma.f32(float {a}, float {_float(0.3275911)}, float 1.0)')}")
    poly = _float(_ERF_AS[-1])
    for c in reversed(_ERF_AS[:-1]):
        poly = fn(f"call float @llvm.fma.f32(float {poly}, float {t}, float {_float(c)})")
    poly = fn(f"fmul float {poly}, {t}")
    square = fn(f"fmul float {a}, {a}")
    gauss = _exp(fn, fn(f"fneg float {square}"))
    far = fn(f"fsub float 1.0, {fn(f'fmul float {poly}, {gauss}')}")
    far = fn(f"call float @llvm.copysign.f32(float {far}, float {x})")
    series = _float(_ERF_SERIES[-1])
    for c in reversed(_ERF_SERIES[:-1]):
        series = fn(f"call float @llvm.fma.f32(float {series}, float {square}, float {_float(c)})")
    near = fn(f"fmul float {fn(f'fmul float {series}, {x}')}, {_float(2 / math.sqrt(math.pi))}")
    return _select(fn, fn(f"fcmp olt float {a}, 0.5"), near, far)


def _select(fn: _Function, condition: str, a: str, b: str) -> str:
    return fn(f"select i1 {condition}, float {a}, float {b}")


def _scalar(fn: _Function, op, args: list[str]) -> str:
    """The float formula of one elementwise ONNX op on scalars (NaN propagates as in onnxruntime)."""
    kind = op.onnx_type
    binary = {"Add": "fadd", "Sub": "fsub", "Mul": "fmul", "Div": "fdiv"}
    if kind in binary:
        return fn(f"{binary[kind]} float {args[0]}, {args[1]}")
    if kind == "Sum":
        result = args[0]
        for other in args[1:]:
            result = fn(f"fadd float {result}, {other}")
        return result
    if kind == "Where":
        return _select(fn, args[0], args[1], args[2])
    if kind in ("Max", "Min"):
        result = args[0]
        for other in args[1:]:
            result = fn(f"call float @llvm.{'maximum' if kind == 'Max' else 'minimum'}.f32(float {result}, "
                        f"float {other})")
        return result
    x = args[0]
    if kind == "Relu":
        return _select(fn, fn(f"fcmp olt float {x}, 0.0"), "0.0", x)
    if kind == "LeakyRelu":
        scaled = fn(f"fmul float {x}, {_float(op.attr('alpha', 0.01))}")
        return _select(fn, fn(f"fcmp olt float {x}, 0.0"), scaled, x)
    if kind == "Neg":
        return fn(f"fneg float {x}")
    if kind == "Abs":
        return fn(f"call float @llvm.fabs.f32(float {x})")
    if kind == "Sqrt":
        return fn(f"call float @llvm.sqrt.f32(float {x})")  # sqrt.rn: correctly rounded
    if kind == "Reciprocal":
        return fn(f"fdiv float 1.0, {x}")
    if kind == "Exp":
        return _exp(fn, x)
    if kind == "Sigmoid":
        denominator = fn(f"fadd float 1.0, {_exp(fn, fn(f'fneg float {x}'))}")
        return fn(f"fdiv float 1.0, {denominator}")
    if kind == "Tanh":
        return _tanh(fn, x)
    if kind == "Pow":  # a constant exponent of POW_EXPONENTS (target.support_of refuses others)
        exponent = pow_exponent(op)
        if exponent == 0.5:
            return fn(f"call float @llvm.sqrt.f32(float {x})")
        result = x
        for _ in range(int(exponent) - 1):
            result = fn(f"fmul float {result}, {x}")
        return result
    if kind == "Erf":
        return _erf(fn, x)
    if kind == "Gelu":
        if op.attr("approximate", "none") == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = fn(f"fmul float {fn(f'fmul float {x}, {x}')}, {x}")
            inner = fn(f"call float @llvm.fma.f32(float {cube}, float {_float(0.044715)}, float {x})")
            t = _tanh(fn, fn(f"fmul float {inner}, {_float(math.sqrt(2 / math.pi))}"))
        else:  # 0.5 x (1 + erf(x / sqrt 2))
            t = _erf(fn, fn(f"fmul float {x}, {_float(1 / math.sqrt(2))}"))
        return fn(f"fmul float {fn(f'fmul float {x}, 0.5')}, {fn(f'fadd float {t}, 1.0')}")
    if kind == "Clip":  # opset >= 11: bounds are inputs, each optional (None when absent)
        lo = args[1] if len(args) > 1 else None
        hi = args[2] if len(args) > 2 else None
        if lo is not None:
            x = _select(fn, fn(f"fcmp olt float {x}, {lo}"), lo, x)
        if hi is not None:
            x = _select(fn, fn(f"fcmp ogt float {x}, {hi}"), hi, x)
        return x
    raise CompileError(f"cuda: no GPU formula for {op.onnx_type} (node '{op.node_name}')")


def _present(op, i: int) -> bool:
    from xdsl.dialects.builtin import NoneType

    return len(op.operands) > i and not isinstance(op.operands[i].type, NoneType)


def _evaluate(fn: _Function, ops, values: dict, loads: _Broadcast, params: dict) -> None:
    """Compute each elementwise op of `ops` at one element; inputs from outside are loaded once."""
    from xdsl.dialects.builtin import NoneType

    for op in ops:
        args = []
        for v in op.operands:
            if isinstance(v.type, NoneType):
                args.append(None)
                continue
            if v not in values and _is_bool(v):  # Where's condition: numpy bools, one byte each
                address = fn(f"getelementptr inbounds i8, ptr addrspace(1) {params[v]}, {fn.ity} "
                             f"{loads.index(_shape(v))}")
                values[v] = fn(f"icmp ne i8 {fn(f'load i8, ptr addrspace(1) {address}, align 1')}, 0")
            elif v not in values:
                values[v] = fn.load(params[v], loads.index(_shape(v)))
            args.append(values[v])
        values[op.results[0]] = _scalar(fn, op, args)


def _is_bool(value) -> bool:
    from xdsl.dialects.builtin import IntegerType

    return isinstance(getattr(value.type, "element_type", None), IntegerType) and \
        value.type.element_type.width.data == 1


def _signature(name: str, inputs: list, outputs: list, params: dict) -> str:
    parts = []
    for i, v in enumerate(inputs):
        params[v] = f"%in{i}"
        parts.append(f"ptr addrspace(1) noalias readonly align 4 %in{i}")
    for i, _ in enumerate(outputs):
        parts.append(f"ptr addrspace(1) noalias align 4 %out{i}")
    return f"define ptx_kernel void @{name}({', '.join(parts)}) {{"


# --- elementwise kernels --------------------------------------------------------------------

def _tf32_copies(op, options: dict) -> list[int]:
    """The results (indices) the kernel also stores rounded to TF32, each into one more output
    parameter after its results (dlc/targets/cuda/target.py, round_tf32_operands)."""
    copies = options.get("tf32_copies", ())
    return [i for i, r in enumerate(op.results) if r in copies]


def _elementwise_kernel(name: str, op, body, options: dict):
    yields = _yields(op)
    shape = _shape(yields[0])
    if any(_shape(v) != shape for v in yields):
        raise CompileError(f"cuda: kernel {op.kernel_name} yields values of different shapes "
                           f"{[_shape(v) for v in yields]}; its elementwise code needs one")
    inputs = _external(body, op)
    count = math.prod(shape)
    fn = _Function(_index_type(count, *(math.prod(_shape(v)) for v in inputs)))
    params: dict = {}
    copies = _tf32_copies(op, options)
    header = _signature(name, inputs, yields + [None] * len(copies), params)
    fn.label("entry")
    block_size = options["elementwise_block"]
    linear = fn.int("add", fn.int("mul", fn.sreg("ctaid.x"), block_size), fn.sreg("tid.x"))
    fn.emit(f"br i1 {fn.below(linear, count)}, label %body, label %exit")
    fn.label("body")
    values: dict = {}
    _evaluate(fn, body, values, _Broadcast(fn, shape, linear), params)
    rounded = options.get("tf32_results", ())
    for i, v in enumerate(yields):
        value = values[v] if v in values else fn.load(params[v], linear)
        fn.store(_tf32(fn, value) if op.results[i] in rounded else value, f"%out{i}", linear)
        if i in copies:
            fn.store(_tf32(fn, value), f"%out{len(yields) + copies.index(i)}", linear)
    fn.emit("br label %exit")
    fn.label("exit")
    fn.emit("ret void")
    text = "\n".join([header, *fn.lines, "}", ""])
    grid = (max(1, math.ceil(count / block_size)), 1, 1)
    return text, Launch(name, grid, (block_size, 1, 1), inputs, rounds_outputs=True)


# --- GEMM kernels ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D Conv (NCHW, one group) as the implicit GEMM W x im2col(X)."""

    images: int
    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    out: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int]  # top, left (the bottom and right ones only bound the output size)
    dilations: tuple[int, int]


@dataclass(frozen=True)
class GemmShape:
    """C[b] (M x N) = A[b] (M x K) @ B[b] (K x N); element strides of A and B, and batch steps.
    A Conv: A is its weight, B the implicit im2col of its input (`conv`)."""

    m: int
    n: int
    k: int
    batch: int
    a_strides: tuple[int, int]  # (row m, column k)
    b_strides: tuple[int, int]  # (row k, column n)
    a_batch: int  # elements between A's batches (0: A is shared by every batch)
    b_batch: int
    conv: ConvGeometry | None = None


def gemm_shape(op) -> GemmShape:
    """The GEMM a MatMul or Gemm node computes (supports() has refused the ones this cannot)."""
    a, b = _shape(op.operands[0]), _shape(op.operands[1])
    out = _shape(op.results[0])
    if op.onnx_type == "Conv":
        (n, c, h, w), (co, _, kh, kw), (oh, ow) = a, b, out[2:]
        pads = list(op.attr("pads", [0, 0, 0, 0]))
        geometry = ConvGeometry(n, c, h, w, (kh, kw), (oh, ow), tuple(op.attr("strides", [1, 1])),
                                (pads[0], pads[1]), tuple(op.attr("dilations", [1, 1])))
        k = c * kh * kw
        return GemmShape(co, n * oh * ow, k, 1, (k, 1), (0, 0), 0, 0, geometry)
    if op.onnx_type == "Gemm":
        trans_a, trans_b = op.attr("transA", 0), op.attr("transB", 0)
        m, k = (a[1], a[0]) if trans_a else a
        n = b[0] if trans_b else b[1]
        return GemmShape(m, n, k, 1, (1, m) if trans_a else (k, 1), (1, k) if trans_b else (n, 1), 0, 0)
    m, k, n = a[-2], a[-1], b[-1]
    batch = math.prod(out[:-2])
    a_batch = m * k if math.prod(a[:-2]) == batch and batch > 1 else 0
    b_batch = k * n if math.prod(b[:-2]) == batch and batch > 1 else 0
    return GemmShape(m, n, k, batch, (k, 1), (n, 1), a_batch, b_batch)


def select_tile(g: GemmShape, options: dict) -> dict:
    """The options with the tile for this GEMM: LARGE_TILE when it leaves no SM idle and fills
    its rows and columns (a Conv of 64 channels would waste half), unless the target file named
    a tile of its own; else the description's."""
    if options.get("gemm_tile_auto") and min(g.m, g.n) >= LARGE_TILE["gemm_tile_m"]:
        blocks = math.ceil(g.m / LARGE_TILE["gemm_tile_m"]) * math.ceil(g.n / LARGE_TILE["gemm_tile_n"]) * g.batch
        if blocks >= options.get("sms", DEVICE_KEYS["sms"]):
            return {**options, **LARGE_TILE}
    return options


class _FmaSchedule:
    """FP32 FMA: each thread a TM x TN register tile, rows ty + i * (BM/TM), columns tx + j * (BN/TN)
    (a warp reads one A value and 16-32 consecutive B values per step: no bank conflicts)."""

    tf32 = False

    def __init__(self, options: dict):
        self.bm, self.bn, self.bk = options["gemm_tile_m"], options["gemm_tile_n"], options["gemm_tile_k"]
        self.tm, self.tn = options["gemm_thread_tile_m"], options["gemm_thread_tile_n"]
        self.threads_m, self.threads_n = self.bm // self.tm, self.bn // self.tn
        self.threads = self.threads_m * self.threads_n
        self.accumulators = self.tm * self.tn
        self.lda, self.ldb = self.bm + 1, self.bn  # A transposed (k-major), padded against bank conflicts

    def setup(self, fn: _Function, tid: str) -> None:
        self.ty, self.tx = fn.int("udiv", tid, self.threads_n), fn.int("urem", tid, self.threads_n)

    def multiply(self, fn: _Function, shared_a: str, shared_b: str, acc: list[str]) -> list[str]:
        tm, tn = self.tm, self.tn
        for kk in range(self.bk):
            a = [_shared_load(fn, shared_a, kk * self.lda + i * self.threads_m, self.ty) for i in range(tm)]
            b = [_shared_load(fn, shared_b, kk * self.ldb + j * self.threads_n, self.tx) for j in range(tn)]
            acc = [fn(f"call float @llvm.fma.f32(float {a[i]}, float {b[j]}, float {acc[i * tn + j]})")
                   for i in range(tm) for j in range(tn)]
        return acc

    def outputs(self, fn: _Function):
        """(accumulator, row, column in the block's tile) of each output the thread holds."""
        for i in range(self.tm):
            for j in range(self.tn):
                yield (i * self.tn + j, fn.int("add", self.ty, i * self.threads_m),
                       fn.int("add", self.tx, j * self.threads_n))


class _MmaSchedule:
    """TF32 tensor cores (`gemm_tf32`): warps of `mma.sync.m16n8k8` (inline PTX), each warp a
    (BM/WM) x (BN/WN) tile of 16 x 8 fragments. Tiles are rounded to TF32 (cvt.rna) once, when
    staged; shared rows padded by 8 floats so that a fragment's 32 loads hit 32 banks. Fragment
    layouts: PTX ISA, "Matrix fragments for mma.m16n8k8" (.tf32)."""

    tf32 = True

    def __init__(self, g: GemmShape, options: dict):
        big = min(g.m, g.n) >= 128 and \
            math.ceil(g.m / 128) * math.ceil(g.n / 128) * g.batch >= options.get("sms", DEVICE_KEYS["sms"])
        self.bm, self.bn, self.bk, warps_m, warps_n = (128, 128, 16, 2, 4) if big else (64, 64, 16, 2, 2)
        self.warps_n = warps_n
        self.threads = 32 * warps_m * warps_n
        self.wm, self.wn = self.bm // warps_m, self.bn // warps_n
        self.fm, self.fn = self.wm // 16, self.wn // 8
        self.accumulators = self.fm * self.fn * 4
        self.lda, self.ldb = self.bm + 8, self.bn + 8

    def setup(self, fn: _Function, tid: str) -> None:
        warp, lane = fn.int("udiv", tid, 32), fn.int("urem", tid, 32)
        self.group, self.thread = fn.int("udiv", lane, 4), fn.int("urem", lane, 4)
        self.wrow = fn.int("mul", fn.int("udiv", warp, self.warps_n), self.wm)
        self.wcol = fn.int("mul", fn.int("urem", warp, self.warps_n), self.wn)
        # Shared-memory offsets of this lane's first A and B fragment elements.
        self.a_lane = fn.int("add", fn.int("mul", self.thread, self.lda), fn.int("add", self.wrow, self.group))
        self.b_lane = fn.int("add", fn.int("mul", self.thread, self.ldb), fn.int("add", self.wcol, self.group))

    def multiply(self, fn: _Function, shared_a: str, shared_b: str, acc: list[str]) -> list[str]:
        acc = list(acc)
        for ks in range(0, self.bk, 8):
            a = [[_bits(fn, _shared_load(fn, shared_a, (ks + dk) * self.lda + i * 16 + dm, self.a_lane))
                  for dm, dk in ((0, 0), (8, 0), (0, 4), (8, 4))] for i in range(self.fm)]
            b = [[_bits(fn, _shared_load(fn, shared_b, (ks + dk) * self.ldb + j * 8, self.b_lane)) for dk in (0, 4)]
                 for j in range(self.fn)]
            for i in range(self.fm):
                for j in range(self.fn):
                    first = (i * self.fn + j) * 4
                    acc[first:first + 4] = mma_sync(fn, a[i], b[j], acc[first:first + 4])
        return acc

    def outputs(self, fn: _Function):
        for i in range(self.fm):
            for j in range(self.fn):
                for r in range(4):  # c0, c1: row g, columns 2t, 2t+1; c2, c3: row g + 8
                    row = fn.int("add", self.wrow, fn.int("add", self.group, i * 16 + 8 * (r // 2)))
                    col = fn.int("add", self.wcol, fn.int("add", fn.int("mul", self.thread, 2), j * 8 + r % 2))
                    yield (i * self.fn + j) * 4 + r, row, col


def _bits(fn: _Function, value: str) -> str:
    return fn(f"bitcast float {value} to i32")


def _tf32(fn: _Function, value: str) -> str:
    """`value` rounded to TF32 (10 mantissa bits, to nearest, ties away), as cuBLAS rounds."""
    bits = fn(f'call i32 asm "cvt.rna.tf32.f32 $0, $1;", "=r,f"(float {value})')
    return fn(f"bitcast i32 {bits} to float")


ROUND_KERNEL = "dlc_tf32_round"
ROUND_BLOCK = 256


def round_kernel(count: int) -> tuple[str, str, tuple[int, int, int]]:
    """(name, LLVM IR, grid) of the kernel that rounds `count` floats to TF32 with `cvt.rna` (what
    the K loop's round 1 does per fragment), from its first parameter to its second: the same
    buffer when it rounds in place, so neither is noalias. It is a pure stream (64 MiB each way
    for a 4096^2 A), so when `count` is a multiple of four (every buffer is its own cuMemAlloc:
    256-byte aligned) each thread rounds two 16-byte vectors, i and i + threads (both loads in
    flight before either store; a warp's accesses stay contiguous). One float per thread
    streamed 1 TB/s of the H200's 4.8 (0.133 ms for that A), one vector per thread 2.1."""
    name = f"{ROUND_KERNEL}_{count}"
    vectors = count // 4 if count % 4 == 0 else 0
    threads = -(-vectors // 2) if vectors else count
    fn = _Function(_index_type(count))
    fn.label("entry")
    linear = fn.int("add", fn.int("mul", fn.sreg("ctaid.x"), ROUND_BLOCK), fn.sreg("tid.x"))
    fn.emit(f"br i1 {fn.below(linear, threads)}, label %body, label %exit")
    fn.label("body")
    if not vectors:
        fn.store(_tf32(fn, fn.load("%in0", linear)), "%out0", linear)
        fn.emit("br label %exit")
    else:
        vector = "<4 x float>"
        second = fn.int("add", linear, threads)
        has_second = fn.below(second, vectors)
        second = fn(f"select i1 {has_second}, {fn.ity} {second}, {fn.ity} {linear}")  # else: the first again

        def address(pointer: str, index: str) -> str:
            return fn(f"getelementptr inbounds {vector}, ptr addrspace(1) {pointer}, {fn.ity} {index}")

        values = [fn(f"load {vector}, ptr addrspace(1) {address('%in0', i)}, align 16") for i in (linear, second)]
        for index, value in zip((linear, second), values):
            rounded = "poison"
            for lane in range(4):
                element = _tf32(fn, fn(f"extractelement {vector} {value}, i32 {lane}"))
                rounded = fn(f"insertelement {vector} {rounded}, float {element}, i32 {lane}")
            fn.emit(f"store {vector} {rounded}, ptr addrspace(1) {address('%out0', index)}, align 16")
        fn.emit("br label %exit")
    fn.label("exit")
    fn.emit("ret void")
    header = f"define ptx_kernel void @{name}(ptr addrspace(1) align 4 %in0, ptr addrspace(1) align 4 %out0) {{"
    return name, "\n".join([header, *fn.lines, "}", ""]), (math.ceil(threads / ROUND_BLOCK), 1, 1)


def _gemm_kernel(name: str, op, body, options: dict):
    head, epilogue = body[0], body[1:]
    g = gemm_shape(head)
    if g.m * g.n * g.batch == 0:  # an empty output: nothing to store (and no row to store it in)
        inputs, params = _external(body, op), {}
        text = "\n".join([_signature(name, inputs, _yields(op), params), "entry:", "  ret void", "}", ""])
        return text, Launch(name, (1, 1, 1), (32, 1, 1), inputs), []
    yields = _yields(op)
    out_shape = _shape(head.results[0])
    if any(_shape(v) != out_shape for v in yields):
        raise CompileError(f"cuda: kernel {op.kernel_name}: its epilogue changes the GEMM's shape {out_shape}")

    inputs = _external(body, op)
    sizes = [g.batch * g.m * g.n, *(math.prod(_shape(v)) for v in inputs)]
    fn = _Function(_index_type(*sizes))
    ity = fn.ity
    params: dict = {}
    copies = _tf32_copies(op, options)
    header = _signature(name, inputs, yields + [None] * len(copies), params)
    a_value, b_value = (head.operands[1], head.operands[0]) if g.conv else (head.operands[0], head.operands[1])
    a_ptr, b_ptr = params[a_value], params[b_value]

    rounded = [r in options.get("tf32_results", ()) for r in op.results]

    def emit_outputs(fn: _Function, z: str, row0: str, col0: str, items) -> None:
        _store_outputs(fn, g, head, epilogue, yields, out_shape, params, z, row0, col0, items, rounded, copies)

    from dialects.onnx import WeightOp

    # wgmma is sm_90a's alone (Blackwell's tensor cores take tcgen05): other GPUs keep mma.sync.
    if options.get("gemm_tf32") and options.get("gemm_tf32_wgmma") and options.get("sm", 90) == 90:
        done = _wgmma_gemm(fn, name, head, g, body, inputs, a_value, b_value, a_ptr, b_ptr, epilogue, header,
                           emit_outputs, options)
        if done is not None:
            return done
    pipelined = pipeline_plan(g, options, isinstance(a_value.owner, WeightOp)) if options.get("gemm_tf32") else None
    transposed = []
    if (pipelined is not None and pipelined.b_kmajor and not g.conv and g.batch == 1
            and options.get("gemm_tf32_weight_row_major", 1) and isinstance(b_value.owner, WeightOp)
            and not any(b_value in o.operands for o in epilogue)):
        # A constant K-major B (Gemm transB = 1, a Linear layer's [N, K] weight) is uploaded
        # transposed, row-major [K, N]: on the H200 the K loop over a row-major B (its fragments
        # a shared-memory word per register) ran 4096^3 in 0.689 ms, over a K-major one (ldmatrix,
        # rows padded by 4 floats) in 0.800 ms.
        from dataclasses import replace

        row_major_plan = pipeline_plan(replace(g, b_strides=(g.n, 1)), options)
        if row_major_plan is not None:
            g, pipelined, transposed = replace(g, b_strides=(g.n, 1)), row_major_plan, [inputs.index(b_value)]
    tf32 = []
    if pipelined is not None and pipelined.round == 0 and options.get("gemm_tf32_preround", 1):
        # The K loop reads A and B without a cvt: the partition hands it TF32 values (weights
        # rounded on the host, activations by their producer's store or a rounding kernel),
        # unless the kernel reads an operand elsewhere too (its epilogue, Gemm's C), which must
        # see the float32 value: then it rounds per fragment.
        operands = [a_value, b_value]
        elsewhere = [v for o in body for i, v in enumerate(o.operands)
                     if v in operands and not (o is head and i < 2)]
        if elsewhere:
            from dataclasses import replace

            pipelined = replace(pipelined, round=1)
        else:
            tf32 = sorted({inputs.index(v) for v in operands})
    if pipelined is not None:  # the cp.async pipeline of mma.sync (dlc/targets/cuda/tf32_gemm.py)
        grid, block, shared = pipelined_kernel(fn, name, head.node_name, g, pipelined, a_ptr, b_ptr, emit_outputs)
        text = "\n".join([header, *fn.lines, "}", ""])
        tap_major = [inputs.index(a_value)] if pipelined.a_tap_major else []
        return text, Launch(name, grid, block, inputs, shared_bytes=pipelined.shared_bytes, tap_major=tap_major,
                            transposed=transposed, tf32=tf32, rounds_outputs=True), shared
    plan = _MmaSchedule(g, options) if options.get("gemm_tf32") else _FmaSchedule(select_tile(g, options))
    bm, bn, bk, threads, lda, ldb = plan.bm, plan.bn, plan.bk, plan.threads, plan.lda, plan.ldb
    shared_a, shared_b = f"@{name}_As", f"@{name}_Bs"
    shared = [f"{shared_a} = internal addrspace(3) global [{bk * lda} x float] undef, align 16",
              f"{shared_b} = internal addrspace(3) global [{bk * ldb} x float] undef, align 16"]

    fn.label("entry")
    tid = fn.sreg("tid.x")
    col0, row0 = fn.int("mul", fn.sreg("ctaid.x"), bn), fn.int("mul", fn.sreg("ctaid.y"), bm)
    z = fn.sreg("ctaid.z")
    plan.setup(fn, tid)
    a_base, b_base = fn.int("mul", z, g.a_batch), fn.int("mul", z, g.b_batch)
    # The register tile: an alloca indexed by constants only, which SROA turns into registers.
    count = plan.accumulators
    accumulators = fn(f"alloca [{count} x float], align 4")

    def slot(i: int) -> str:
        return fn(f"getelementptr [{count} x float], ptr {accumulators}, i32 0, i32 {i}")

    for i in range(count):
        fn.emit(f"store float 0.0, ptr {slot(i)}, align 4")
    fn.emit("br label %tile")

    # One K step: stage the A and B tiles (zeros outside the matrices), then multiply them.
    fn.label("tile")
    k0 = fn(f"phi {ity} [0, %entry], [%knext, %tile_end]")
    _stage(fn, tid, threads, a_ptr, _strided(a_base, g.a_strides), g.a_strides[1] == 1, (row0, g.m, bm),
           (k0, g.k, bk), shared_a, lda, transpose=True, tf32=plan.tf32)
    b_address = _im2col(g.conv) if g.conv else _strided(b_base, g.b_strides)
    _stage(fn, tid, threads, b_ptr, b_address, g.conv is not None or g.b_strides[1] == 1, (k0, g.k, bk),
           (col0, g.n, bn), shared_b, ldb, transpose=False, tf32=plan.tf32)
    fn.emit("call void @llvm.nvvm.barrier0()")
    acc = plan.multiply(fn, shared_a, shared_b, [fn(f"load float, ptr {slot(i)}, align 4") for i in range(count)])
    for i, value in enumerate(acc):
        fn.emit(f"store float {value}, ptr {slot(i)}, align 4")
    fn.emit("call void @llvm.nvvm.barrier0()")
    fn.emit("br label %tile_end")
    fn.label("tile_end")
    fn.lines.append(f"  %knext = add {ity} {k0}, {bk}")
    fn.emit(f"br i1 {fn.below('%knext', g.k)}, label %tile, label %store")

    # The epilogue and the guarded store of each output the thread holds.
    fn.label("store")
    emit_outputs(fn, z, row0, col0,
                 [(lambda index=index: fn(f"load float, ptr {slot(index)}, align 4"), tile_row, tile_col)
                  for index, tile_row, tile_col in plan.outputs(fn)])
    fn.emit("ret void")
    text = "\n".join([header, *fn.lines, "}", ""])
    if g.batch > 65535 or math.ceil(g.m / bm) > 65535:
        raise CompileError(f"cuda: node '{head.node_name}' ({head.onnx_type}): a grid of {g.batch} batches and "
                           f"{math.ceil(g.m / bm)} row tiles exceeds CUDA's 65535 blocks in y and z")
    grid = (math.ceil(g.n / bn), math.ceil(g.m / bm), g.batch)
    return text, Launch(name, grid, (threads, 1, 1), inputs, rounds_outputs=True), shared


def _wgmma_gemm(fn, name, head, g, body, inputs, a_value, b_value, a_ptr, b_ptr, epilogue, header, emit_outputs,
                options):
    """The kernel of dlc/targets/cuda/wgmma_gemm.py, or None where it does not apply: a row-major
    A and a K-major B (a constant row-major B uploaded transposed, `NAME:transposed`), operands
    read only by the multiply (exact TF32 before the loop: a cvt per fragment is impossible)."""
    from dataclasses import replace

    from dialects.onnx import WeightOp
    from dlc.targets.cuda.wgmma_gemm import wgmma_kernel, wgmma_plan

    if g.conv is not None or g.a_strides != (g.k, 1) or g.k % 4:
        return None
    operands = [a_value, b_value]
    if any(v in operands for o in body for i, v in enumerate(o.operands) if not (o is head and i < 2)):
        return None
    transposed = []
    if g.b_strides != (1, g.k):
        if not (g.b_strides == (g.n, 1) and g.batch == 1 and isinstance(b_value.owner, WeightOp)):
            return None
        g, transposed = replace(g, b_strides=(1, g.k), b_batch=0), [inputs.index(b_value)]
    preround = options.get("gemm_tf32_preround", 1)
    plan = wgmma_plan(g, options)
    if plan is None:  # the mma.sync kernel's keys, which wgmma cannot take
        return None
    grid, block, shared = wgmma_kernel(fn, name, head.node_name, g, plan, a_ptr, b_ptr, emit_outputs)
    text = "\n".join([header, *fn.lines, "}", ""])
    return text, Launch(name, grid, block, inputs, shared_bytes=plan.shared_bytes, transposed=transposed,
                        tf32=sorted({inputs.index(v) for v in operands}) if preround else [],
                        rounds_outputs=True), shared


def _store_outputs(fn: _Function, g: GemmShape, head, epilogue, yields, out_shape, params: dict, z: str,
                   row0: str, col0: str, items, rounded=(), copies=()) -> None:
    """The epilogue and the guarded store of each output a thread holds: `items` are (value, or a
    function that loads it inside the guard; row and column in the block's tile); output y is
    rounded to TF32 (cvt.rna) where `rounded[y]` (every reader is a TF32 GEMM's operand), and
    also stored rounded into output len(yields) + k where y is `copies[k]`."""
    for index, (value, tile_row, tile_col) in enumerate(items):
        here = f"e{index}"
        row, col = fn.int("add", row0, tile_row), fn.int("add", col0, tile_col)
        inside = fn.both(fn.below(row, g.m), fn.below(col, g.n))
        fn.emit(f"br i1 {inside}, label %{here}, label %{here}_next")
        fn.label(here)
        value = value() if callable(value) else value
        linear, coords = _output_index(fn, g, z, row, col, out_shape)
        loads = _Broadcast(fn, out_shape, linear, coords)
        values = {head.results[0]: _gemm_scale(fn, head, value, loads, params)}
        _evaluate(fn, epilogue, values, loads, params)
        for y, v in enumerate(yields):
            fn.store(_tf32(fn, values[v]) if rounded and rounded[y] else values[v], f"%out{y}", linear)
            if y in copies:
                fn.store(_tf32(fn, values[v]), f"%out{len(yields) + list(copies).index(y)}", linear)
        fn.emit(f"br label %{here}_next")
        fn.label(f"{here}_next")


def _strided(base: str, strides: tuple[int, int]):
    """Element (row, col) of a strided matrix: its index, always valid inside the matrix."""
    def address(fn: _Function, row: str, col: str):
        return fn.int("add", base, fn.int("add", fn.int("mul", row, strides[0]), fn.int("mul", col, strides[1]))), None
    return address


def _im2col(conv: ConvGeometry):
    """Element (k, col) of a Conv's im2col matrix: k = (c, kh, kw), col = (image, oh, ow); the
    input pixel it reads, and whether that pixel is inside the image (else padding: zero)."""
    (kh_, kw_), (oh_, ow_) = conv.kernel, conv.out

    def address(fn: _Function, k: str, col: str):
        ity = fn.ity
        channel, tap = fn.int("udiv", k, kh_ * kw_), fn.int("urem", k, kh_ * kw_)
        kh, kw = fn.int("udiv", tap, kw_), fn.int("urem", tap, kw_)
        image, pixel = fn.int("udiv", col, oh_ * ow_), fn.int("urem", col, oh_ * ow_)
        oh, ow = fn.int("udiv", pixel, ow_), fn.int("urem", pixel, ow_)
        ih = fn.int("sub", fn.int("add", fn.int("mul", oh, conv.strides[0]), fn.int("mul", kh, conv.dilations[0])),
                    conv.pads[0])
        iw = fn.int("sub", fn.int("add", fn.int("mul", ow, conv.strides[1]), fn.int("mul", kw, conv.dilations[1])),
                    conv.pads[1])
        # Signed: a tap in the top or left padding has a negative row or column.
        valid = fn.both(fn.both(fn(f"icmp sge {ity} {ih}, 0"), fn(f"icmp slt {ity} {ih}, {conv.height}")),
                        fn.both(fn(f"icmp sge {ity} {iw}, 0"), fn(f"icmp slt {ity} {iw}, {conv.width}")))
        plane = fn.int("add", fn.int("mul", image, conv.channels), channel)
        index = fn.int("add", fn.int("mul", fn.int("add", fn.int("mul", plane, conv.height), ih), conv.width), iw)
        return index, valid
    return address


def _output_index(fn: _Function, g: GemmShape, z: str, row: str, col: str, out_shape):
    """(linear index, coordinates) of output element (row, col) of batch z: [..batch, M, N], or a
    Conv's NCHW output (row = channel, col = image * OH * OW + pixel)."""
    if g.conv is None:
        linear = fn.int("add", fn.int("mul", z, g.m * g.n), fn.int("add", fn.int("mul", row, g.n), col))
        return linear, _batch_coords(fn, z, out_shape[:-2]) + [row, col]
    pixels = g.conv.out[0] * g.conv.out[1]
    image, pixel = fn.int("udiv", col, pixels), fn.int("urem", col, pixels)
    linear = fn.int("add", fn.int("mul", fn.int("add", fn.int("mul", image, g.m), row), pixels), pixel)
    return linear, [image, row, fn.int("udiv", pixel, g.conv.out[1]), fn.int("urem", pixel, g.conv.out[1])]


def _stage(fn: _Function, tid, threads, pointer, address, row_major, rows, cols, shared, ld, transpose, tf32):
    """Copy a (rows x cols) tile of a matrix into shared memory, zeros past its edges (and where
    `address` says the element is padding). Consecutive threads walk the dimension that is
    contiguous in memory (`row_major`: along a row), so global reads coalesce."""
    ity = fn.ity
    (row0, row_count, tile_rows), (col0, col_count, tile_cols) = rows, cols
    for step in range(math.ceil(tile_rows * tile_cols / threads)):
        e = fn.int("add", tid, step * threads)
        if row_major:
            r, c = fn.int("udiv", e, tile_cols), fn.int("urem", e, tile_cols)
        else:
            c, r = fn.int("udiv", e, tile_rows), fn.int("urem", e, tile_rows)
        in_tile = fn.below(e, tile_rows * tile_cols)
        grow, gcol = fn.int("add", row0, r), fn.int("add", col0, c)
        inside = fn.both(in_tile, fn.both(fn.below(grow, row_count), fn.below(gcol, col_count)))
        index, valid = address(fn, grow, gcol)
        if valid is not None:
            inside = fn.both(inside, valid)
        # A clamped index (element 0) keeps the load in bounds; the select puts the zero instead.
        safe = fn(f"select i1 {inside}, {ity} {index}, {ity} 0")
        value = fn(f"select i1 {inside}, float {fn.load(pointer, safe)}, float 0.0")
        if tf32:
            value = _tf32(fn, value)
        slot = fn.int("add", fn.int("mul", c, ld), r) if transpose else fn.int("add", fn.int("mul", r, ld), c)
        store = f"s{fn.count}"
        fn.emit(f"br i1 {in_tile}, label %{store}, label %{store}_done")
        fn.label(store)
        where = fn(f"getelementptr inbounds float, ptr addrspace(3) {shared}, {ity} {slot}")
        fn.emit(f"store float {value}, ptr addrspace(3) {where}, align 4")
        fn.emit(f"br label %{store}_done")
        fn.label(f"{store}_done")


def _shared_load(fn: _Function, shared: str, offset: int, lane: str) -> str:
    address = fn(f"getelementptr inbounds float, ptr addrspace(3) {shared}, {fn.ity} {fn.int('add', lane, offset)}")
    return fn(f"load float, ptr addrspace(3) {address}, align 4")


def _batch_coords(fn: _Function, z: str, batch_shape) -> list[str]:
    coords, rest = [], z
    for d in range(len(batch_shape) - 1, -1, -1):
        coords.insert(0, fn(f"urem {fn.ity} {rest}, {batch_shape[d]}") if d else rest)
        rest = fn(f"udiv {fn.ity} {rest}, {batch_shape[d]}") if d else rest
    return coords


def _gemm_scale(fn: _Function, head, value: str, loads: _Broadcast, params: dict) -> str:
    """Gemm's alpha * AB + beta * C, a Conv's per-channel bias (MatMul: AB)."""
    if head.onnx_type == "Conv":
        if not _present(head, 2):
            return value
        bias = fn.load(params[head.operands[2]], loads.coords()[1])  # indexed by the output channel
        return fn(f"fadd float {value}, {bias}")
    if head.onnx_type != "Gemm":
        return value
    alpha, beta = head.attr("alpha", 1.0), head.attr("beta", 1.0)
    if alpha != 1.0:
        value = fn(f"fmul float {value}, {_float(alpha)}")
    if _present(head, 2) and beta != 0.0:
        c = head.operands[2]
        term = fn.load(params[c], loads.index(_shape(c)))
        if beta != 1.0:
            term = fn(f"fmul float {term}, {_float(beta)}")
        value = fn(f"fadd float {value}, {term}")
    return value
