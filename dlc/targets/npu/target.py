"""The `npu-sim` target: a simulated NPU that computes (issue 6).

It takes Conv, MatMul/Gemm (A [..., M, K] by B [..., K, N], a batched B included),
elementwise ops and pooling in float32, and the 8-bit contractions (QLinearConv,
QLinearMatMul, ConvInteger, MatMulInteger: uint8/int8 operands, int32 accumulation on the MAC
array at `int8_macs_per_pe` times the float32 rate, requantization bit-exact with the cpu
target) with QuantizeLinear and DequantizeLinear (per tensor or per axis),
DynamicQuantizeLinear and Cast of int32 or 8-bit integers to float32, all on the vector unit
(issue 20). Zero points and scales computed at run time (DynamicQuantizeLinear's, as
quantize_dynamic writes transformers) are read from the scratchpad: the MAC array's zero point
register loads a one-element tile (the DMA pads a convolution's input with it too), the vector
unit computes the requantization multipliers per tile. `supports` gives the reason for
anything else, which then falls back to `cpu`. It goes through the shared phases like
`cpu`: nodes placed (dlc/targets/partition.py), form-kernels, fuse-kernels with the NPU's
own rules (`FUSION_RULES`, written on the module with the rest of its description), then
convert-kernels-to-npu turns each kernel into an `npu` instruction stream (dialects/npu.py)
whose tiles fit the scratchpad with double buffering; dlc/targets/npu/simulator.py runs it.
The hardware comes from a target file (JSON, keys of `NpuConfig`), path in
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
INTEGER_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QuantizeLinear", "DequantizeLinear",
               "DynamicQuantizeLinear", "Cast"}

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
    """A [..., M, K] by B [..., K, N], leading dims broadcast: one matrix product per leading
    index of the output (a batched B, as attention's Q x K^T and P x V, included)."""
    if _rank(op.operands[a]) < 2 or _rank(op.operands[b]) < 2:
        return ("only A [..., M, K] by B [..., K, N] runs on the MAC array (a vector operand, rank 1, "
                "is not tiled)")
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


def _size(value) -> int:
    return int(np.prod(value.type.get_shape()))


def _one_zero_point(op, index: int, what: str) -> str | None:
    """None when operand `index` is absent, a constant holding one value throughout (the MAC
    array subtracts one zero point), or one value computed at run time (DynamicQuantizeLinear's:
    the MAC's zero point register loads it from the scratchpad), else the reason."""
    if index >= len(op.operands) or not _present(op.operands[index]):
        return None
    array = _constant(op, index)
    if array is None:
        if _size(op.operands[index]) != 1:
            return (f"{what}'s zero point is computed at run time with {_size(op.operands[index])} values "
                    "(the MAC array's zero point register holds one)")
        return None
    if array.size == 0 or not (array == array.reshape(-1)[0]).all():
        return f"{what}'s zero point differs between channels (the MAC array subtracts one value)"
    return None


def _check_quantizer_parameter(op, index: int, what: str, axis_size: int | None) -> str | None:
    """A QuantizeLinear/DequantizeLinear scale or zero point the vector unit reads: one value
    (a constant it carries, or a one-element tile computed at run time), or a constant per axis
    (one element per index of `axis`, re-laid out to broadcast along it)."""
    kind = op.onnx_type
    value = op.operands[index]
    array = _constant(op, index)
    if array is None:
        if _size(value) != 1:
            return (f"{kind}'s {what} is computed at run time with {_size(value)} values (the vector unit "
                    "reads a per-axis one only as a constant, re-laid out along the axis at compile time)")
        return None
    if array.size != 1 and (array.ndim != 1 or array.size != axis_size):
        return f"{kind}'s {what} of shape {list(array.shape)} is neither one value nor one per element of its axis"
    return None


def _check_integer(op) -> str | None:
    """An 8-bit op on the NPU: the operand types it has units for, constant zero points and
    scales (folded at compile time, as the cpu folds them), tiles of the shapes it handles."""
    from passes.lowering.rules.quantize import requantize_multipliers
    from passes.lowering.utils.npu_kernels import INTEGER_CONTRACTIONS

    kind = op.onnx_type
    if kind in ("QuantizeLinear", "DequantizeLinear"):
        quantize = kind == "QuantizeLinear"
        data, out = _element(op.operands[0]), _element(op.results[0])
        if (quantize and (data != "float32" or out not in _BYTES)) or \
                (not quantize and (data not in (*_BYTES, "int32") or out != "float32")):
            return f"{kind} from {data} to {out} (the vector unit quantizes float32 to 8 bits and back)"
        if op.attr("block_size", 0):
            return f"{kind} by blocks is not handled"
        if _element(op.operands[1]) != "float32":
            return f"{kind}'s scale is {_element(op.operands[1])} (the vector unit quantizes with float32 scales)"
        shape = op.operands[0].type.get_shape()
        axis = op.attr("axis", 1)
        axis_size = shape[axis] if shape and -len(shape) <= axis < len(shape) else None
        for index, what in ((1, "scale"), (2, "zero point")):
            if index < len(op.operands) and _present(op.operands[index]):
                reason = _check_quantizer_parameter(op, index, what, axis_size)
                if reason:
                    return reason
        return None
    if kind == "DynamicQuantizeLinear":
        if _element(op.operands[0]) != "float32":
            return f"DynamicQuantizeLinear of {_element(op.operands[0])} (the vector unit quantizes float32)"
        return None
    if kind == "Cast":
        source, target = _element(op.operands[0]), _element(op.results[0])
        if source not in (*_BYTES, "int32") or target != "float32":
            return (f"Cast from {source} to {target} (the vector unit converts int32 and 8-bit integers to "
                    "float32, and computes float32)")
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
            return _check_runtime_scales(op, conv)
    elif _element(op.results[0]) != "int32":
        return f"y is {_element(op.results[0])}, not int32"
    return None


def _present_at(op, index: int) -> bool:
    return index < len(op.operands) and _present(op.operands[index])


def _check_runtime_scales(op, conv: bool) -> str | None:
    """QLinearConv/QLinearMatMul with a scale computed at run time (DynamicQuantizeLinear's): the
    vector unit computes the multipliers per tile, float32(x_scale * w_scale) / y_scale as the cpu
    does, from one x scale, one or one-per-output-channel w scales and one y scale, all float32;
    y's zero point must be a constant (the requantizing store carries it)."""
    x, w = ("x", "w") if conv else ("a", "b")
    out = op.results[0].type.get_shape()
    channels = out[1] if conv else out[-1]
    for index, what, sizes in ((1, f"{x}_scale", (1,)), (4, f"{w}_scale", (1, channels)), (6, "y_scale", (1,))):
        value = op.operands[index]
        if _element(value) != "float32":
            return f"{what} is {_element(value)} (the vector unit computes float32 multipliers)"
        if _size(value) not in sizes or (_size(value) > 1 and _rank(value) != 1):
            return (f"{what} has shape {list(value.type.get_shape())} (the vector unit takes one {x} scale, one "
                    f"y scale and one {w} scale or one per output channel)")
    if _present_at(op, 7) and _constant(op, 7) is None:
        return "y's zero point is computed at run time (the requantizing store adds a constant one)"
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
                for result, name in zip(op.results, _outputs(program)):
                    values[result] = simulator.read(name).copy()
            elif isinstance(op, OnnxOp) and op.onnx_type in VIEWS:  # moves no data
                values[op.results[0]] = values[op.operands[0]].reshape(op.results[0].type.get_shape())
        self.last_report = report
        returned = block.last_op.operands
        return {spec.name: values[value] for spec, value in zip(self.outputs, returned)}

    def save(self, directory) -> None:
        raise CompileError("npu-sim has no artifact to save; run the .onnx model with --target npu-sim")


def _outputs(program) -> list[str]:
    """The program's output buffers, in the order of its results (a DynamicQuantizeLinear
    kernel stores three)."""
    from dialects.npu import BufferOp

    return [op.sym_name.data for op in program.body.block.ops if isinstance(op, BufferOp) and op.kind.data == "output"]


def _dram(program, values: dict) -> dict[str, np.ndarray]:
    """The program's DRAM: its input and weight buffers bound, in order, to its operands."""
    from dialects.npu import BufferOp

    names = [op.sym_name.data for op in program.body.block.ops
             if isinstance(op, BufferOp) and op.kind.data in ("input", "weight")]
    return {name: values[value] for name, value in zip(names, program.inputs)}
