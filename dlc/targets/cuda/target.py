"""The `cuda` target: NVIDIA GPUs through llvmlite's NVPTX backend and the CUDA driver (issue 21).

A partial target like npu-sim (dlc/targets/partition.py): it takes float32 elementwise ops,
MatMul/Gemm and 2-D Conv (`supports` gives the reason for anything else, which runs on `cpu`),
places nodes and forms and fuses kernels on the whole graph with its own rules (a GEMM or Conv
with its elementwise epilogue, elementwise chains), then writes each of its kernels as LLVM IR for nvptx64
(dlc/targets/cuda/codegen.py), compiled to sm_90 PTX by llvmlite; the operands of TF32 GEMMs
whose K loop has no cvt are rounded where they are produced (`round_tf32_operands`). Float32
MatMul, Gemm and Conv multiply in TF32 on the tensor cores by default; `--target cuda:fp32` (or
`"gemm_tf32": 0` in the target file) keeps them exact FP32 FMA (`PRECISIONS`). The executable
(dlc/targets/cuda/runtime.py) loads the PTX with the CUDA driver API of cuda-bindings, which is
imported only when a model runs: compiling needs no GPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dlc.errors import CompileError, DlcError
from dlc.targets import SUPPORTED, CompileOptions, MemoryLevel, Support, Target, TargetDescription
from dlc.targets.cuda import kernels

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Exp",
               "Neg", "Abs", "Sqrt", "Reciprocal", "Clip", "Sum", "Where", "Erf", "Gelu", "Pow"}
VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}

# How the GPU fuses (keys: passes/fusion/fuse_kernels.py): a kernel is a GEMM or an elementwise op,
# then a chain of elementwise ops applied to each output element in registers before the one store.
FUSION_RULES = {
    "apart": {"contraction": "a GEMM stages its inputs through shared memory itself: they are not fused"},
    "producers": ["elementwise", "contraction"],
    "joins": [
        {"consumer": "elementwise", "kernel_has": ["contraction"], "fuse": 1,
         "reason": "elementwise epilogue of a GEMM, applied in registers before its store"},
        {"consumer": "elementwise", "fuse": 1, "reason": "elementwise chain, one thread per element"},
    ],
    "chain": 1,
}

# An H200 (sm_90): 132 SMs, 227 KiB of shared memory a block may use, HBM3e at 4.8 TB/s.
# The GEMM tile (64 x 64 x 16, 4 x 4 per thread: 256 threads; 128 x 128 x 8, 8 x 8 per thread
# for GEMMs with a block per SM, codegen.select_tile) is read back by the code generator from
# the module, like the CPU's GEMM tiles, so it can be overridden there.
H200 = {"sm": 90, "sms": 132, "clock_ghz": 1.98, "hbm_bytes": 141 << 30, "hbm_gbps": 4800.0,
        "shared_bytes": 227 << 10, "registers_per_sm": 65536, "warp_size": 32,
        "max_threads_per_block": 1024}


# `--target cuda:VARIANT` (Target.set_variant): how float32 contractions multiply, the value of
# `gemm_tf32` it sets (over the target file's). TF32 keeps 10 of float32's 23 mantissa bits: an
# operand is off by up to 2^-11 relative, a product by 2^-10 (~1e-3).
PRECISIONS = {"tf32": 1, "fp32": 0}
PRECISION_NOTES = {
    "tf32": "TF32 on the tensor cores (operands rounded to 10 mantissa bits: ~1e-3 relative per product; "
            "--target cuda:fp32 for exact FP32)",
    "fp32": "exact FP32 (FMA; --target cuda, the default, for TF32 on the tensor cores)",
}


def load_config(config: dict | str | Path | None = None) -> tuple[dict, dict]:
    """(device, tiles): the H200 and the default tiles, with the keys of a target file (JSON, path
    in $DLC_CUDA_TARGET, as npu-sim's) or dict replacing theirs; unknown keys are errors."""
    from dlc.targets.cuda.codegen import DEFAULT_TILES

    config = config if config is not None else os.environ.get("DLC_CUDA_TARGET")
    values = {}
    if isinstance(config, dict):
        values = dict(config)
    elif config:
        try:
            values = json.loads(Path(config).read_text())
        except (OSError, ValueError) as error:
            raise DlcError(f"cuda target file {config}: cannot read it as JSON ({error})") from None
    unknown = sorted(set(values) - set(H200) - set(DEFAULT_TILES))
    if unknown:
        raise DlcError(f"cuda target: unknown keys {unknown}; known: {sorted(set(H200) | set(DEFAULT_TILES))}")
    device = {k: values.get(k, v) for k, v in H200.items()}
    tiles = {k: int(values.get(k, v)) for k, v in DEFAULT_TILES.items()}
    if tiles["gemm_tf32"] not in PRECISIONS.values():
        raise DlcError(f"cuda target: gemm_tf32 is {values['gemm_tf32']!r}; it takes 1 (TF32 tensor cores, "
                       "the default) or 0 (exact FP32 FMA)")
    if any(k.startswith(("gemm_tile_", "gemm_thread_")) for k in values) and "gemm_tile_auto" not in values:
        tiles["gemm_tile_auto"] = 0  # a file that names a tile gets that tile
    return device, tiles


class CudaTarget(Target):
    name = "cuda"
    start_phase = "graph"
    partial = True
    runs_on_device = True  # `dlc compare` times it (CUDA events) rather than a cost model

    def __init__(self, config: dict | str | Path | None = None):
        self.device, self.tiles = load_config(config)

    def set_variant(self, variant: str) -> None:
        """`--target cuda:tf32` or `cuda:fp32`: float32 contractions in TF32 or exact FP32."""
        if variant not in PRECISIONS:
            raise DlcError(f"unknown cuda target variant '{variant}' (--target cuda:{variant}); the variants "
                           "are cuda:tf32 (float32 MatMul, Gemm and Conv on the tensor cores in TF32, the "
                           "default) and cuda:fp32 (exact FP32 FMA)", "e.g. --target cuda:fp32")
        self.tiles["gemm_tf32"] = PRECISIONS[variant]

    @property
    def precision(self) -> str:
        """"tf32" or "fp32": how this target's float32 contractions multiply (`dlc compare` says it)."""
        return "tf32" if self.tiles["gemm_tf32"] else "fp32"

    @property
    def precision_note(self) -> str:
        return PRECISION_NOTES[self.precision]

    def description(self) -> TargetDescription:
        d = self.device
        return TargetDescription(
            memory=(MemoryLevel("hbm", d["hbm_bytes"], d["hbm_gbps"]),
                    MemoryLevel("shared", d["shared_bytes"], 0.0)),
            dtypes=("float32",), cores=d["sms"], clock_ghz=d["clock_ghz"],
            extra={**{k: d[k] for k in ("sm", "sms", "warp_size", "registers_per_sm", "max_threads_per_block")},
                   **self.tiles},
            fusion_rules=FUSION_RULES)

    def supports(self, op) -> Support:
        return support_of(op)

    def pipeline(self, options: CompileOptions):
        from dlc.targets.partition import kernel_stage

        return [("kernels", kernel_stage(self, options))]

    def translate(self, module, phase: str) -> str | None:
        """`--compile-to llvm`: the LLVM IR (nvptx64) of the kernels placed on cuda."""
        if phase != "llvm":
            return None
        return plan_partition(module)[0]

    def build(self, module, options: CompileOptions):
        from dlc.targets.cuda.runtime import CudaExecutable

        ptx, plan, weights, llvm_ir = lower_partition(module, options)
        executable = CudaExecutable(ptx, plan, weights)
        executable.llvm_ir = llvm_ir  # kept for the host emulation (dlc/targets/cuda/emulate.py), not saved
        return executable

    def load(self, directory):
        from dlc.targets.cuda.runtime import load_cuda

        return load_cuda(directory)


def cuda_launches(module) -> list:
    from dialects.kernel import LaunchOp
    from dlc.targets import graph_main

    return [op for op in graph_main(module).body.block.ops if isinstance(op, LaunchOp) and op.target.data == "cuda"]


def lower_partition(module, options: CompileOptions | None = None) -> tuple[str, dict, dict, str]:
    """A cuda partition (kernels phase) -> (PTX, launch plan, weights, LLVM IR): the plan names a device
    buffer per value (inputs, weights uploaded once, kernel results; a view shares its source's
    buffer) and the launches in program order (dlc/targets/cuda/runtime.py runs it)."""
    from dlc.targets.cuda.codegen import compile_ptx, kernel_options

    llvm_ir, plan, weights = plan_partition(module)
    ptx = compile_ptx(llvm_ir, kernel_options(module)["sm"], options.opt_level if options else 3)
    return ptx, plan, weights, llvm_ir


def plan_partition(module) -> tuple[str, dict, dict]:
    """(LLVM IR, launch plan, weights) of a cuda partition: `lower_partition` without the PTX."""
    import numpy as np

    from dialects.kernel import LaunchOp
    from dialects.onnx import NoneOp, OnnxOp, WeightOp
    from dialects.types import numpy_dtype
    from dialects.weights import weights_of
    from dlc.targets import constant_inputs_of, graph_io_specs, graph_main
    from dlc.targets.cuda.codegen import kernel_options
    from dlc.targets.cuda.kernels import emit_module

    tiles = kernel_options(module)
    launch_ops = cuda_launches(module)
    llvm_ir, launches = emit_module(launch_ops, tiles)
    inputs, outputs = graph_io_specs(module)
    block = graph_main(module).body.block
    store = weights_of(module)
    buffers, weights, ids = [], {}, {}

    def buffer(value, kind: str, name: str | None = None) -> int:
        ids[value] = len(buffers)
        buffers.append({"shape": list(value.type.get_shape()), "kind": kind, "dtype": str(numpy_dtype(value.type)),
                        **({"name": name} if name else {})})
        return ids[value]

    for spec, arg in zip(inputs, block.args):
        buffer(arg, "input", spec.name)
    for op in block.ops:
        if isinstance(op, WeightOp):
            buffer(op.result, "weight", op.weight_name)
        elif isinstance(op, LaunchOp):
            for result in op.results:
                buffer(result, "temp")
        elif isinstance(op, OnnxOp) and op.onnx_type in VIEWS:  # moves no data: shares its source's buffer
            ids[op.results[0]] = ids[op.operands[0]]
        elif not isinstance(op, NoneOp) and op is not block.last_op:
            raise CompileError(f"cuda: {op.name} ({getattr(op, 'node_name', '')}) is outside every kernel; "
                               "the cuda partition runs kernels and views only")
    # Parameters: the kernel's inputs, then its results (kernels.emit_module's order).
    plan_launches = []
    for op, launch in zip(launch_ops, launches):
        args = [ids[v] for v in launch.inputs] + [ids[r] for r in op.results]
        for position in launch.tap_major:  # a Conv weight the TF32 pipeline reads [O, KH, KW, I]
            args[position] = _weight_copy(buffers, args[position], "tap_major")
        for position in launch.transposed:  # a constant B the TF32 pipeline reads transposed
            args[position] = _weight_copy(buffers, args[position], "transposed")
        if launch.check:  # an error word the kernel sets and the runtime reads after the run
            args.append(len(buffers))
            buffers.append({"shape": [1], "kind": "check", "dtype": "int32", "message": launch.check})
        plan_launches.append({"kernel": launch.kernel, "grid": list(launch.grid), "block": list(launch.block),
                              "args": args, "nodes": launch.nodes,
                              **({"shared_bytes": launch.shared_bytes} if launch.shared_bytes else {})})
    returned = list(block.last_op.operands)
    plan_launches, in_store, copies, kernels = round_tf32_operands(buffers, plan_launches, launches, launch_ops,
                                                                  {ids[v] for v in returned})
    if in_store or copies:  # the producers that round results in their store: those kernels written again
        again = [op for op in launch_ops if any(r in in_store or r in copies for r in op.results)]
        text = emit_module(again, dict(tiles, tf32_results=in_store, tf32_copies=copies))[0]
        for launch in (launches[launch_ops.index(op)] for op in again):
            llvm_ir = llvm_ir.replace(_function(llvm_ir, launch.kernel), _function(text, launch.kernel))
    if kernels:
        llvm_ir += "\n" + "\n".join(kernels)
    used = {i for launch in plan_launches for i in launch["args"]}
    used |= {ids[v] for v in returned}
    for i, entry in enumerate(buffers):
        if entry["kind"] == "weight" and i in used:
            array = np.asarray(store[entry.get("from", entry["name"])])
            array = _laid_out(array, entry.get("layout"))
            if entry.get("tf32") and array.dtype == np.float32:
                array = round_tf32(array)
            if array.dtype not in (np.float32, np.int64, np.int32, np.bool_):
                raise CompileError(f"cuda: weight {entry['name']} is {array.dtype}; the cuda kernels read float32 "
                                   "(and int32/int64 indices, bool conditions)")
            weights[entry["name"]] = np.ascontiguousarray(array)
    plan = {"buffers": buffers, "launches": plan_launches,
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "buffer": ids[a]}
                       for s, a in zip(inputs, block.args)],
            "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "buffer": ids[v]}
                        for s, v in zip(outputs, returned)],
            "constant_inputs": list(constant_inputs_of(module)), "sm": tiles["sm"]}
    return llvm_ir, plan, weights


def _function(llvm_ir: str, kernel: str) -> str:
    """The text of kernel `kernel`'s definition in `llvm_ir`."""
    start = llvm_ir.index(f"define ptx_kernel void @{kernel}(")
    return llvm_ir[start:llvm_ir.index("\n}\n", start) + 3]


def round_tf32(array):
    """float32 -> the nearest TF32 value (10 mantissa bits, ties away from zero), bit for bit what
    `cvt.rna.tf32.f32` gives (PTX ISA, "cvt"); Inf and NaN kept as they are, as cvt.rna keeps them."""
    import numpy as np

    bits = np.ascontiguousarray(array, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    special = (bits & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
    return np.where(special, bits, rounded).astype(np.uint32).view(np.float32).reshape(np.shape(array))


# A weight's copy in another layout: its shape from the weight's, the array by `_laid_out`.
WEIGHT_LAYOUTS = {"tap_major": lambda s: [s[0], s[2], s[3], s[1]],  # [O, I, KH, KW] -> [O, KH, KW, I]
                  "transposed": lambda s: s[:-2] + [s[-1], s[-2]]}  # [.., K, N] -> [.., N, K]


def _weight_copy(buffers: list, source: int, layout: str) -> int:
    """The buffer of weight `source` copied in `layout` (one per weight and layout), added if new."""
    entry = buffers[source]
    name = f"{entry['name']}:{layout}"
    found = [i for i, b in enumerate(buffers) if b.get("name") == name and b["kind"] == "weight"]
    if found:
        return found[0]
    buffers.append({"shape": WEIGHT_LAYOUTS[layout](list(entry["shape"])), "kind": "weight", "dtype": entry["dtype"],
                    "name": name, "from": entry["name"], "layout": layout})
    return len(buffers) - 1


def _laid_out(array, layout: str | None):
    """A weight's array in its copy's `layout` (WEIGHT_LAYOUTS; None: as it is)."""
    import numpy as np

    if layout == "tap_major":
        return array.transpose(0, 2, 3, 1)
    if layout == "transposed":
        return np.swapaxes(array, -1, -2)
    return array


def round_tf32_operands(buffers: list, launches: list, emitted: list, launch_ops: list, returned: set):
    """Make every operand a TF32 GEMM reads without a cvt (`Launch.tf32`: its positions) an exact
    TF32 value (tf32_gemm.py, "Rounding"): a weight by a rounded copy made on the host (`tf32` on
    its buffer, named NAME:tf32). A value produced by a kernel that can round in its store (a
    GEMM's epilogue, an elementwise chain): rounded there when every reader is such an operand,
    else (a graph output, a value some kernel reads as float32 too, as a residual) stored twice,
    as it is and rounded into a copy (one more output of that kernel). Any other value (a graph
    input, a pool's or a normalization's result): by a rounding kernel before its first reader,
    in place when every reader is such an operand, else into a copy.
    Returns (launches, rounding kernels inserted; results rounded in their producers' store;
    results also stored rounded as an extra output; the rounding kernels' LLVM IR). `buffers`
    grows by the copies."""
    import numpy as np

    from dlc.targets.cuda.codegen import ROUND_BLOCK, round_kernel

    wanted = {(j, p) for j, launch in enumerate(emitted) for p in launch.tf32}
    if not wanted:
        return launches, set(), set(), []
    readers: dict[int, list] = {}  # buffer -> every (launch, position) that reads it
    producers = {}  # buffer -> (the launch that writes it, its result, the result's index)
    for j, (launch, kernel, op) in enumerate(zip(launches, emitted, launch_ops)):
        for p in range(len(kernel.inputs)):
            readers.setdefault(launch["args"][p], []).append((j, p))
        for r, (result, written) in enumerate(zip(op.results, launch["args"][len(kernel.inputs):])):
            producers[written] = (j, result, r)
    before: dict[int, list] = {}  # launch -> the rounding launches to run just before it
    extra: dict[int, dict] = {}  # launch -> {result index: the buffer of its rounded copy}
    copies, in_store, stored_twice, kernels = {}, set(), set(), {}
    for j, p in sorted(wanted):
        args = launches[j]["args"]
        source = args[p]
        entry = buffers[source]
        if entry["kind"] == "weight":
            name = f"{entry['name']}:tf32"
            found = [i for i, b in enumerate(buffers) if b.get("name") == name and b["kind"] == "weight"]
            if not found:
                buffers.append({**entry, "name": name, "from": entry.get("from", entry["name"]), "tf32": True})
            args[p] = found[0] if found else len(buffers) - 1
            continue
        if source in copies:
            args[p] = copies[source]
            continue
        only_tf32 = source not in returned and all(r in wanted for r in readers[source])
        producer = producers.get(source)
        in_kernel = producer is not None and emitted[producer[0]].rounds_outputs and not emitted[producer[0]].check
        target = source
        if not only_tf32:
            target = len(buffers)
            buffers.append({"shape": list(entry["shape"]), "kind": "temp", "dtype": entry["dtype"]})
        if in_kernel and only_tf32:
            in_store.add(producer[1])
        elif in_kernel:
            stored_twice.add(producer[1])
            extra.setdefault(producer[0], {})[producer[2]] = target
        else:
            count = max(1, int(np.prod(entry["shape"], dtype=np.int64)))
            name, text, grid = round_kernel(count)
            kernels[name] = text
            first = min(r[0] for r in readers[source] if r in wanted)
            before.setdefault(first, []).append({"kernel": name, "grid": list(grid), "block": [ROUND_BLOCK, 1, 1],
                                                 "args": [source, target], "nodes": []})
        copies[source] = target
        args[p] = target
    for j, targets in extra.items():  # the copies' parameters follow the results, in result order
        end = len(emitted[j].inputs) + len(launch_ops[j].results)
        args = launches[j]["args"]
        args[end:end] = [targets[r] for r in sorted(targets)]
    ordered = []
    for j, launch in enumerate(launches):
        ordered += before.get(j, []) + [launch]
    return ordered, in_store, stored_twice, list(kernels.values())


# --- capability ------------------------------------------------------------------------------

def _is_f32(value) -> bool:
    from xdsl.dialects.builtin import Float32Type, NoneType, TensorType

    return isinstance(value.type, NoneType) or (
        isinstance(value.type, TensorType) and isinstance(value.type.element_type, Float32Type))


def _present(value) -> bool:
    from xdsl.dialects.builtin import NoneType

    return not isinstance(value.type, NoneType)


def _shape(value) -> tuple[int, ...]:
    return tuple(value.type.get_shape())


def support_of(op) -> Support:
    """Whether the cuda target runs `op`, and if not, why (shown in the placement summary)."""
    kind = op.onnx_type
    if kind in VIEWS:
        used = [r for r in op.results[1:] if r.uses]
        return Support(False, "Dropout's mask output is not computed") if used else SUPPORTED
    values = [v for v in op.operands if _present(v)] + list(op.results)
    # The float data (Where's condition, Gather's indices, Slice's and Split's constants are not).
    data = {"Where": values[1:], "Gather": [values[0], *values[2:]],
            "Slice": [values[0], *op.results], "Split": [values[0], *op.results]}.get(kind, values)
    if kind.startswith("Reduce"):  # its axes may be an int64 operand
        data = [values[0], *op.results]
    if not all(_is_f32(v) for v in data):
        return Support(False, "the cuda kernels compute float32 only")
    if kind == "Where" and not _is_bool(op.operands[0]):
        return Support(False, "Where's condition must be bool")
    if kind in ELEMENTWISE:
        if op.attributes.get("min") is not None or op.attributes.get("max") is not None:
            return Support(False, "Clip with min/max attributes (opset < 11) is not handled")
        if len(op.results) != 1:
            return Support(False, f"{kind} with {len(op.results)} outputs")
        if kind == "Pow":
            from dlc.targets.cuda.codegen import POW_EXPONENTS, pow_exponent

            if pow_exponent(op) not in POW_EXPONENTS:
                return Support(False, f"Pow runs with a constant exponent of {list(POW_EXPONENTS)} only")
        return SUPPORTED
    if kind == "MatMul":
        return _check_matmul(op)
    if kind == "Gemm":  # 2-D by the spec; transA/transB, alpha, beta and C's broadcast are handled
        a = _shape(op.operands[0])
        return _check_rows(a[1] if op.attr("transA", 0) else a[0])
    if kind == "Conv":
        return _check_conv(op)
    if kind in kernels.ROW_OPS or kind in kernels.POINT_OPS or kind == "Split":
        return _check_other(op)
    return Support(False, f"the cuda target has no {kind} kernel yet (it runs Conv, MatMul/Gemm, elementwise ops, "
                          "pools, Softmax, LayerNormalization, last-axis reductions, Transpose, Slice, Split, "
                          "Concat and Gather)")


def _is_bool(value) -> bool:
    from dlc.targets.cuda.codegen import _is_bool as is_bool

    return is_bool(value)


def _last_axis(op, axes) -> bool:
    rank = len(_shape(op.operands[0]))
    return rank > 0 and [a + rank if a < 0 else a for a in axes] == [rank - 1]


def _check_other(op) -> Support:
    """The ops of dlc/targets/cuda/kernels.py: the forms its kernels compute."""
    import math

    kind, shape = op.onnx_type, _shape(op.operands[0])
    if any(r.uses for r in op.results[1:]) and kind not in ("Split",):
        return Support(False, f"{kind}'s extra outputs are not computed")
    if kind in ("Softmax", "LayerNormalization") and not _last_axis(op, [op.attr("axis", -1)]):
        return Support(False, f"{kind} on an axis other than the last is not handled")
    if kind.startswith("Reduce"):
        axes = op.attr("axes", None)
        if len(op.operands) > 1 and _present(op.operands[1]):
            constant = kernels.constant(op.operands[1])
            axes = None if constant is None else [int(a) for a in constant.reshape(-1)]
            if constant is None:
                return Support(False, f"{kind} with axes computed at run time is not handled")
        if axes is None or not _last_axis(op, list(axes)):
            return Support(False, f"{kind} over axes other than the last alone is not handled")
    if kind.startswith("Global") and len(shape) < 3:
        return Support(False, f"{kind} needs an N x C x spatial input")
    if kind in ("MaxPool", "AveragePool", "Conv"):
        if len(shape) != 4:
            return Support(False, f"only 2-D {kind} (NCHW inputs) is handled")
        if op.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return Support(False, f"auto_pad={op.attr('auto_pad')} is not handled (explicit pads are)")
        window = _shape(op.operands[1])[2:] if kind == "Conv" else op.attr("kernel_shape")  # unrolled taps
        if math.prod(window) > kernels.MAX_TAPS:
            return Support(False, f"a window of {math.prod(window)} taps is over the {kernels.MAX_TAPS} unrolled")
    if kind == "Slice" and kernels.slice_params(op) is None:
        return Support(False, "Slice with starts/ends/axes/steps computed at run time is not handled")
    if kind == "Gather" and len(op.operands[1].type.get_shape()) + len(shape) == 0:
        return Support(False, "Gather of a scalar is not handled")
    if kind == "Gather" and op.operands[1].type.element_type.width.data not in (32, 64):
        return Support(False, "Gather's indices must be int32 or int64")
    return SUPPORTED


def _check_conv(op) -> Support:
    if len(_shape(op.operands[0])) != 4:
        return Support(False, "only 2-D convolutions (NCHW inputs) run as an implicit GEMM")
    if op.attr("group", 1) != 1:  # a direct convolution per output element (kernels.py)
        return _check_other(op)
    if op.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return Support(False, f"auto_pad={op.attr('auto_pad')} is not handled (explicit pads are)")
    return SUPPORTED


def _check_matmul(op) -> Support:
    import math

    a, b, out = _shape(op.operands[0]), _shape(op.operands[1]), _shape(op.results[0])
    if len(a) < 2 or len(b) < 2:
        return Support(False, "MatMul with a 1-D operand is not handled (it runs on cpu)")
    batch = out[:-2]
    for side, shape in (("A", a), ("B", b)):
        own = shape[:-2]
        if math.prod(own) != 1 and tuple(own) != tuple(batch):
            return Support(False, f"MatMul whose {side} batch dims {list(own)} broadcast partially "
                                  f"against {list(batch)} is not handled")
    if math.prod(batch) > 65535:
        return Support(False, f"{math.prod(batch)} batches exceed the 65535 blocks of a CUDA grid's z")
    return _check_rows(a[-2])


def _check_rows(rows: int) -> Support:
    """Row tiles go on the grid's y, at most 65535 blocks (of the smallest tile, 64 rows)."""
    from dlc.targets.cuda.codegen import DEFAULT_TILES

    if -(-rows // DEFAULT_TILES["gemm_tile_m"]) > 65535:
        return Support(False, f"{rows} rows exceed the 65535 row tiles of a CUDA grid's y")
    return SUPPORTED
