"""The `npu-sim` target: a simulated NPU that computes (issue 6).

It takes Conv, MatMul/Gemm, elementwise ops and pooling in float32, and the 8-bit
contractions (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger: uint8/int8 operands,
int32 accumulation on the MAC array at `int8_macs_per_pe` times the float32 rate,
requantization bit-exact with the cpu target) with per-tensor QuantizeLinear and
DequantizeLinear (issue 20); `supports` gives the reason for anything else, which then
falls back to `cpu`. It goes
through the shared phases like `cpu`: nodes placed (dlc/targets/partition.py),
form-kernels, fuse-kernels with the NPU's own rules (`FUSION_RULES`, written on
the module with the rest of its description), then convert-kernels-to-npu turns
each kernel into an `npu` instruction stream (dialects/npu.py) whose tiles fit
the scratchpad with double buffering; dlc/targets/npu/simulator.py runs it. The
hardware comes from a target file (JSON, keys of `NpuConfig`), path in
$DLC_NPU_TARGET or given to `NpuSimTarget(path)`; defaults in docs/adding-a-target.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import numpy as np

from dlc.errors import CompileError, DlcError
from dlc.targets import SUPPORTED, CompileOptions, MemoryLevel, Support, Target, TargetDescription
from dlc.targets.npu.simulator import NpuConfig, NpuReport, Simulator

# The ONNX ops each unit runs (instruction selection: passes/lowering/utils/npu_kernels.py).
VECTOR_OPS = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Exp",
              "Neg", "Abs", "Sqrt", "Clip"}
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
INTEGER_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QuantizeLinear", "DequantizeLinear"}

# How the NPU fuses (keys: passes/fusion/fuse_kernels.py): a kernel is one op on the MAC array or a
# pooling window, or an elementwise op, and then a chain of elementwise ops that the vector unit
# applies in place on each output tile before the one store. Operator classes: dialects/op_classes.py.
FUSION_RULES = {
    "apart": {"contraction": "inputs of a MAC-array op are not fused (it loads them as tiles of its own)",
              "reduction": "a pooling op reads whole windows: it starts a kernel of its own"},
    "producers": ["elementwise", "reduction", "contraction"],
    "joins": [
        {"consumer": "elementwise", "kernel_has": ["contraction"], "fuse": 1,
         "reason": "vector-unit epilogue of a MAC-array op, in place on its output tile"},
        {"consumer": "elementwise", "kernel_has": ["reduction"], "fuse": 1,
         "reason": "vector-unit epilogue of a pooling op, in place on its output tile"},
        {"consumer": "elementwise", "fuse": 1, "reason": "elementwise chain on the vector unit, in place"},
    ],
    "chain": 1,
    # Where the NPU's units differ from the op classes: quantizing is a vector-unit function (so a
    # DequantizeLinear -> float ops -> QuantizeLinear chain is one epilogue, in place on the tile),
    # the 8-bit contractions run on the MAC array.
    "classes": {"QuantizeLinear": "elementwise", "DequantizeLinear": "elementwise",
                **{kind: "contraction" for kind in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")}},
}


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
    if not isinstance(values, dict):
        raise DlcError(f"npu-sim target file {path}: expected a JSON object of NpuConfig keys")
    if "scratchpad_kib" in values:
        kib = values.pop("scratchpad_kib")
        values["scratchpad_bytes"] = kib * 1024 if isinstance(kib, int) and not isinstance(kib, bool) else kib
    unknown = sorted(set(values) - known)
    if unknown:
        raise DlcError(f"npu-sim target file {path}: unknown keys {unknown}; known: {sorted(known)}")
    # Sizes and rates divide the cycle model: a zero, a negative or a fraction where a count
    # belongs is the file's error, not a ZeroDivisionError or a hang in the simulator.
    counts = {f.name for f in fields(NpuConfig) if f.type in (int, "int")}
    for key, value in values.items():
        count, least = key in counts, 0 if key == "dma_latency_cycles" else 1e-300
        if isinstance(value, bool) or not isinstance(value, int if count else int | float) or not value >= least \
                or value != value or value == float("inf"):
            raise DlcError(f"npu-sim target file {path}: {key} = {value!r}; it must be a "
                           f"{'non-negative' if least == 0 else 'positive'} {'integer' if count else 'number'}")
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
            vector_bits=32 * c.vector_lanes, mac_array=(c.mac_rows, c.mac_cols),
            dtypes=("float32", "uint8", "int8", "int32"),
            clock_ghz=c.clock_ghz, extra={"dma_latency_cycles": c.dma_latency_cycles,
                                          "int8_macs_per_pe": c.int8_macs_per_pe,
                                          "macs_per_cycle": {"float32": c.mac_rows * c.mac_cols,
                                                             "int8": c.mac_rows * c.mac_cols * c.int8_macs_per_pe},
                                          "layout": "NCHW", "double_buffering": True},
            fusion_rules=FUSION_RULES)

    def supports(self, op) -> Support:
        return support_of(op)

    def pipeline(self, options: CompileOptions):
        from dlc.targets.partition import kernel_stage
        from passes import all_passes

        return [("kernels", kernel_stage(self, options)), ("loops", [all_passes()["convert-kernels-to-npu"]()])]

    def build(self, module, options: CompileOptions):
        return NpuExecutable(module, self.config)


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
    if kind in INTEGER_OPS:
        reason = _check_integer(op)
        return Support(False, reason) if reason else SUPPORTED
    values = [v for v in op.operands if _present(v)] + list(op.results)
    if kind == "Reshape":
        values = values[:1] + list(op.results)
    if not all(_is_f32(v) for v in values):
        return Support(False, "npu-sim computes float32, and 8-bit integers only in " + ", ".join(sorted(INTEGER_OPS)))
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


def _check_matmul(op, a: int = 0, b: int = 1) -> str | None:
    """A [..., M, K] by a matrix B: one matrix product per leading index of A."""
    if _rank(op.operands[a]) < 2 or _rank(op.operands[b]) != 2:
        return "only A [..., M, K] by a matrix B runs on the MAC array (a batched B falls back)"
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


def _element(value) -> str | None:
    from xdsl.dialects.builtin import TensorType

    from dialects.types import numpy_dtype

    if not isinstance(value.type, TensorType):
        return None
    try:
        return str(numpy_dtype(value.type.element_type))
    except DlcError:
        return None


_BYTES = ("uint8", "int8")


def _constant(op, index: int):
    """The array of operand `index` when it is a weight; None when absent or computed at run time."""
    from dialects.weights import weights_of

    if index >= len(op.operands) or not _present(op.operands[index]) or not _is_weight(op.operands[index]):
        return None
    owner = op.operands[index].owner
    return weights_of(owner.get_toplevel_object()).get(owner.weight_name)


def _one_zero_point(op, index: int, what: str) -> str | None:
    """None when operand `index` is absent or a constant holding one value throughout (the MAC
    array and the vector unit subtract one zero point), else the reason."""
    if index >= len(op.operands) or not _present(op.operands[index]):
        return None
    array = _constant(op, index)
    if array is None:
        return f"{what}'s zero point is computed at run time (the NPU takes constant zero points)"
    if array.size == 0 or not (array == array.reshape(-1)[0]).all():
        return f"{what}'s zero point differs between channels (the MAC array subtracts one value)"
    return None


def _check_integer(op) -> str | None:
    """An 8-bit op on the NPU: the operand types it has units for, constant zero points and
    scales (folded at compile time, as the cpu folds them), tiles of the shapes it handles."""
    from passes.lowering.rules.quantize import requantize_multipliers
    from passes.lowering.utils.npu_kernels import INTEGER_CONTRACTIONS

    kind = op.onnx_type
    if any(not r.type.get_shape() for r in op.results[:1]):
        return "scalar results are not tiled"
    if kind in ("QuantizeLinear", "DequantizeLinear"):
        quantize = kind == "QuantizeLinear"
        data, out = _element(op.operands[0]), _element(op.results[0])
        if (quantize and (data != "float32" or out not in _BYTES)) or \
                (not quantize and (data not in (*_BYTES, "int32") or out != "float32")):
            return f"{kind} from {data} to {out} (the vector unit quantizes float32 to 8 bits and back)"
        if op.attr("block_size", 0):
            return f"{kind} by blocks is not handled"
        scale = _constant(op, 1)
        if scale is None or scale.size != 1 or scale.dtype != np.float32:
            return f"{kind}'s scale is not one float32 constant (per-axis scales are not handled)"
        if len(op.operands) > 2 and _present(op.operands[2]):
            zero = _constant(op, 2)
            if zero is None or zero.size != 1:
                return f"{kind}'s zero point is not one constant (per-axis zero points are not handled)"
        return None
    a, b, a_zero, b_zero, _ = INTEGER_CONTRACTIONS[kind]
    conv = "Conv" in kind
    layout = op.attributes.get("dlc.layout")
    if layout is not None and getattr(layout, "data", None) != "NCHW":
        return f"dlc.layout = {layout} (the MAC array's convolutions read NCHW)"
    if conv:
        reason = _check_conv(op)
        if reason:
            return reason
    elif _check_matmul(op, a, b):
        return _check_matmul(op, a, b)
    for index, what in ((a, "x" if conv else "A"), (b, "w" if conv else "B")):
        if _element(op.operands[index]) not in _BYTES:
            return f"{what} is {_element(op.operands[index])} (the MAC array multiplies 8-bit integers)"
    for index, what in ((a_zero, "x" if conv else "A"), (b_zero, "w" if conv else "B")):
        reason = _one_zero_point(op, index, what)
        if reason:
            return reason
    if kind.startswith("QLinear"):
        if _element(op.results[0]) not in _BYTES:
            return f"y is {_element(op.results[0])}"
        if requantize_multipliers(op) is None:
            return ("its scales and y's zero point are not all constants, with one scale for "
                    f"{'x' if conv else 'A'} (the NPU requantizes with multipliers folded at compile time)")
    elif _element(op.results[0]) != "int32":
        return f"y is {_element(op.results[0])}, not int32"
    return None


_CHECKS = {"Conv": _check_conv, "MatMul": _check_matmul, "Gemm": _check_gemm,
           **{k: _check_elementwise for k in VECTOR_OPS},
           **{k: (lambda op: None if _rank(op.operands[0]) == 4 else "only NCHW inputs")
              for k in ("GlobalAveragePool", "GlobalMaxPool")},
           "MaxPool": _check_pool, "AveragePool": _check_pool}


# --- the executable --------------------------------------------------------------------------

class NpuExecutable:
    """Runs a partition's kernels (npu.program streams) in order on the simulator; `last_report`
    is the cost of the latest run, summed over its kernels."""

    def __init__(self, module, config: NpuConfig):
        from dialects.weights import weights_of
        from dlc.targets import constant_inputs_of, graph_io_specs

        self.inputs, self.outputs = graph_io_specs(module)
        self.constant_inputs = constant_inputs_of(module)
        self.module, self.config = module, config
        self.weights = weights_of(module)
        self.last_report: NpuReport | None = None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from dialects.kernel import LaunchOp
        from dialects.npu import ProgramOp
        from dialects.onnx import OnnxOp, WeightOp
        from dialects.types import numpy_dtype
        from dlc.runtime import check_inputs
        from dlc.targets import graph_main

        block = graph_main(self.module).body.block
        values = {arg: np.asarray(a, dtype=numpy_dtype(arg.type.element_type))
                  for arg, a in zip(block.args, check_inputs(self.inputs, feeds, self.constant_inputs))}
        simulator, report = Simulator(self.config), NpuReport(self.config)
        for op in block.ops:
            if isinstance(op, WeightOp):
                values[op.result] = np.asarray(self.weights[op.weight_name],
                                               numpy_dtype(op.result.type.element_type))
            elif isinstance(op, LaunchOp):
                program = next(o for o in op.body.block.ops if isinstance(o, ProgramOp))
                report = report + simulator.run(program, _dram(program, values))
                values[op.results[0]] = simulator.read("out").copy()
            elif isinstance(op, OnnxOp) and op.onnx_type in VIEWS:  # moves no data
                values[op.results[0]] = values[op.operands[0]].reshape(op.results[0].type.get_shape())
        self.last_report = report
        returned = block.last_op.operands
        return {spec.name: values[value] for spec, value in zip(self.outputs, returned)}

    def save(self, directory) -> None:
        raise CompileError("npu-sim has no artifact to save; run the .onnx model with --target npu-sim")


def _dram(program, values: dict) -> dict[str, np.ndarray]:
    """The program's DRAM: its input and weight buffers bound, in order, to its operands."""
    from dialects.npu import BufferOp

    names = [op.sym_name.data for op in program.body.block.ops
             if isinstance(op, BufferOp) and op.kind.data in ("input", "weight")]
    return {name: values[value] for name, value in zip(names, program.inputs)}
