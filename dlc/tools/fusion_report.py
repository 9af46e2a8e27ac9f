"""What fusion did and what it bought: `dlc explain` and `dlc compare`.

Reads the `kernels` phase (the `dlc.fusion` / `dlc.apart` attributes written by
fuse-kernels), counts the bytes kernels write and read through intermediate
buffers, and times the fused and unfused builds on the same inputs.

`dlc compare` checks each output against the unfused build with its own tolerance: a float
output within 1e-3 absolute or 1e-3 relative (to the largest |value| of that output: fusion
only reorders float32 arithmetic); an output a DequantizeLinear with a constant scale writes
within QUANTIZED_STEPS quantization steps (the largest scale of a per-axis one). Two builds may
round an integer one step apart where the ONNX spec leaves the rounding open (a float op between
a DequantizeLinear and a QuantizeLinear, onnxruntime's own int8 kernels; issue 20), and a layer
whose input moved one step may move one more: MobileNetV2 and ResNet-50 int8 end 2 steps apart
on a few logits (dlc's integer kernels against its float-conv unfused build, and against
onnxruntime), every layer being within one. A fusion bug moves values by many steps.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from dlc.errors import DlcError


@dataclass
class KernelInfo:
    name: str
    nodes: list[str]
    op_types: list[str]
    fusion: list[str]
    apart: list[str]
    bytes_written: int
    bytes_read: int
    ms_per_run: float | None = None  # from a profiled build; None where the target cannot profile
    flops: int = 0
    in_body: str | None = None  # the Loop body module (dialects/loop.py) the kernel runs in, if any
    runs_bodies: list[str] = field(default_factory=list)  # the bodies a Loop kernel runs


FLOAT_ABS_TOLERANCE = 1e-3
FLOAT_REL_TOLERANCE = 1e-3
QUANTIZED_STEPS = 2  # a quantized output's bound, in its steps (see the module docstring)


@dataclass
class OutputError:
    """How far one output of a build is from the unfused build's, and what it may be."""

    name: str
    worst_abs: float
    worst_rel: float  # worst_abs / the largest |value| of the reference output
    step: float | None = None  # the output's quantization step, when a DequantizeLinear writes it
    beyond: int = 0  # how many of its `size` values are beyond QUANTIZED_STEPS steps
    size: int = 0
    # A float output's bound, (abs, rel): within either is agreement.
    float_tolerance: tuple[float, float] = (FLOAT_ABS_TOLERANCE, FLOAT_REL_TOLERANCE)

    @property
    def beyond_tolerance(self) -> bool:
        if not np.isfinite(self.worst_abs):
            return True
        if self.step is not None:  # the float32 product (q - zero) * scale: a few ulps of slack
            return self.beyond > 0
        return self.worst_abs > self.float_tolerance[0] and self.worst_rel > self.float_tolerance[1]

    def describe(self) -> str:
        bound = (f"{QUANTIZED_STEPS} quantization steps of {self.step:.3g} (the DequantizeLinear writing it)"
                 if self.step is not None else
                 f"{self.float_tolerance[0]:g} abs or {self.float_tolerance[1]:g} rel")
        verdict = "BEYOND" if self.beyond_tolerance else "within"
        count = f": {self.beyond} of {self.size} values" if self.step is not None and self.beyond else ""
        return (f"{self.name}: abs error {self.worst_abs:.3g}, rel error {self.worst_rel:.3g} "
                f"({verdict} {bound}{count})")


@dataclass
class Disagreement:
    """A build's outputs against the unfused build's: the worst figures and each output's."""

    outputs: list[OutputError]

    @property
    def worst_abs(self) -> float:
        return max((o.worst_abs for o in self.outputs), default=0.0)

    @property
    def worst_rel(self) -> float:
        return max((o.worst_rel for o in self.outputs), default=0.0)

    @property
    def beyond_tolerance(self) -> bool:
        return any(o.beyond_tolerance for o in self.outputs)


def quantization_steps(model) -> dict[str, float]:
    """The graph outputs a DequantizeLinear writes with a constant scale (an initializer or a
    Constant node): output name -> its step (the largest |scale| of a per-axis one)."""
    import onnx
    from onnx import numpy_helper

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    constants = {}
    for init in proto.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            constants[init.name] = init
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    producers = {out: node for node in proto.graph.node for out in node.output}
    steps = {}
    for output in proto.graph.output:
        node = producers.get(output.name)
        if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        scale = constants.get(node.input[1]) if len(node.input) > 1 else None
        if scale is not None:
            values = np.abs(numpy_helper.to_array(scale).astype(np.float64))
            if values.size and np.all(np.isfinite(values)):
                steps[output.name] = float(values.max())
    return steps


def output_errors(outputs: dict, reference: dict, steps: dict[str, float],
                  float_tolerance: tuple[float, float] = (FLOAT_ABS_TOLERANCE, FLOAT_REL_TOLERANCE)) -> Disagreement:
    """Each output against the reference build's: worst absolute error, and that relative to
    the largest |reference| of the output (elementwise ratios blow up where the reference is 0)."""
    errors = []
    for name, value in outputs.items():
        if name not in reference:
            raise DlcError(f"compare: output '{name}' missing from the unfused build")
        ref = np.asarray(reference[name]).astype(np.float64)
        diff = np.abs(np.asarray(value).astype(np.float64) - ref)
        worst_abs = float(np.nanmax(diff)) if diff.size else 0.0
        magnitude = float(np.nanmax(np.abs(ref))) if ref.size else 0.0
        worst_rel = worst_abs / magnitude if magnitude > 0 else (0.0 if worst_abs == 0 else float("inf"))
        step = steps.get(name)
        beyond = int(np.count_nonzero(~(diff <= QUANTIZED_STEPS * step * (1 + 1e-5)))) if step is not None else 0
        errors.append(OutputError(name, worst_abs, worst_rel, step, beyond, int(diff.size), float_tolerance))
    return Disagreement(errors)


@dataclass
class GraphNode:
    name: str
    op_type: str
    kernel: str | None  # None: a view (Reshape, Flatten...) left outside kernels


@dataclass
class BuildReport:
    label: str
    kernels: list[KernelInfo]
    arena_bytes: int = 0
    latency_ms: float = 0.0
    outputs: dict = field(default_factory=dict)
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)  # data flow between indices of `nodes`
    threads: int = 1

    @property
    def intermediate_bytes(self) -> tuple[int, int]:
        return sum(k.bytes_written for k in self.kernels), sum(k.bytes_read for k in self.kernels)


def kernel_infos(module) -> list[KernelInfo]:
    """One KernelInfo per kernel.launch of a kernels-phase module."""
    from xdsl.dialects.builtin import SymbolRefAttr, TensorType

    from dialects.kernel import LaunchOp
    from dialects.onnx import OnnxOp
    from dialects.types import byte_size

    def produced_by_kernel(value) -> bool:
        owner = value.owner
        while isinstance(owner, OnnxOp) and owner.onnx_type in ("Reshape", "Flatten", "Squeeze", "Unsqueeze",
                                                                 "Identity", "Dropout"):
            owner = owner.operands[0].owner
        return isinstance(owner, LaunchOp)

    infos = []
    for launch in module.walk():
        if not isinstance(launch, LaunchOp):
            continue
        ops = [o for o in launch.body.block.ops if isinstance(o, OnnxOp)]
        inside = {r for o in ops for r in o.results}
        read = set()
        for o in ops:
            for operand in o.operands:
                if operand not in inside and isinstance(operand.type, TensorType) and produced_by_kernel(operand):
                    read.add(operand)

        def lines(key, launch=launch):
            attr = launch.attributes.get(key)
            return [s.data for s in attr.data] if attr is not None else []

        infos.append(KernelInfo(
            name=launch.kernel_name, nodes=[o.node_name for o in ops], op_types=[o.onnx_type for o in ops],
            fusion=lines("dlc.fusion"), apart=lines("dlc.apart"),
            bytes_written=sum(byte_size(r.type) for r in launch.results),
            bytes_read=sum(byte_size(v.type) for v in read),
            in_body=_body_holding(launch),
            runs_bodies=[o.attributes["body"].root_reference.data for o in ops
                         if o.onnx_type == "Loop" and isinstance(o.attributes.get("body"), SymbolRefAttr)]))
    return infos


def _body_holding(op) -> str | None:
    """The name of the Loop body module `op` is in (a nested `builtin.module @NAME`), or None."""
    from xdsl.dialects.builtin import ModuleOp, StringAttr

    holder = op.parent_op()
    while holder is not None and not isinstance(holder, ModuleOp):
        holder = holder.parent_op()
    name = getattr(holder, "sym_name", None)
    return name.data if isinstance(name, StringAttr) else None


def kernel_graph(module) -> tuple[list[GraphNode], list[tuple[int, int]]]:
    """The ONNX nodes of a kernels-phase module, the kernel running each, and the edges between them."""
    from dialects.kernel import LaunchOp, YieldOp
    from dialects.onnx import OnnxOp

    nodes, edges, producer = [], [], {}
    for op in module.walk():
        if isinstance(op, YieldOp):
            # A launch's results stand for the inner values it yields.
            launch = op.parent_op()
            producer.update({r: producer[v] for r, v in zip(launch.results, op.operands) if v in producer})
        if not isinstance(op, OnnxOp):
            continue
        parent = op.parent_op()
        index = len(nodes)
        nodes.append(GraphNode(op.node_name, op.onnx_type,
                               parent.kernel_name if isinstance(parent, LaunchOp) else None))
        for operand in op.operands:
            if operand in producer and (producer[operand], index) not in edges:
                edges.append((producer[operand], index))
        producer.update({r: index for r in op.results})
    return nodes, edges


def profile_kernels(executable, feeds: dict, infos: list[KernelInfo], runs: int) -> None:
    """Fill `ms_per_run` and `flops` of `infos` from a profiled build (CompileOptions(profile=True)).

    Each kernel's time is its median over the runs, so one run disturbed by the machine's other
    work does not skew it.
    """
    if not hasattr(executable, "profile"):  # a cuda build times its kernels with CUDA events instead
        from dlc.targets.cuda.runtime import CudaProfile

        executable = CudaProfile.of(executable)
        if executable is None:
            return
    executable.run(feeds)
    samples = defaultdict(list)
    for _ in range(max(runs, 1)):
        executable.reset_profile()
        executable.run(feeds)
        per_kernel = defaultdict(float)
        for name, spent in executable.profile():
            per_kernel[name] += spent
        for name, spent in per_kernel.items():
            samples[name].append(spent)
    costs = {k["name"]: k for k in executable.manifest.get("kernels", [])}
    for info in infos:
        if info.name in samples:
            info.ms_per_run = float(np.median(samples[info.name])) * 1e3
        info.flops = costs.get(info.name, {}).get("flops", 0)


def explain(model, fusion: str = "all", input_shapes=None, target: str = "cpu") -> str:
    """The fusion decisions as text: node -> kernel, and why neighbours stayed apart."""
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    options = CompileOptions(fusion=fusion)
    result = compile_model(model, target=target, options=options, input_shapes=input_shapes, compile_to="kernels")
    infos = kernel_infos(result.module)
    lowered = _lowering_notes(compile_model(model, target=target, options=options, input_shapes=input_shapes,
                                            compile_to="linalg").module) if target == "cpu" else {}
    lines = [f"{len(infos)} kernels from {sum(len(k.nodes) for k in infos)} nodes (--fusion={fusion})", ""]
    for info in infos:
        where = f" (in loop body @{info.in_body})" if info.in_body else ""
        lines.append(f"kernel {info.name}{where}: {', '.join(f'{n} ({t})' for n, t in zip(info.nodes, info.op_types))}")
        for body in info.runs_bodies:
            lines.append(f"    = runs loop body @{body} once per iteration, as a native loop")
        for note in info.fusion:
            lines.append(f"    + {note}")
        for note in info.apart:
            lines.append(f"    - apart: {note}")
        for note in lowered.get(info.name, ()):
            lines.append(f"    = {note}")
    return "\n".join(lines)


def _lowering_notes(module) -> dict[str, list[str]]:
    """Kernel name -> what its lowering chose where a user would ask: the algorithm a kernel
    runs as (`dlc.algorithm`: Winograd) and why a rule chose as it did (`dlc.lowering`)."""
    from xdsl.dialects import func

    notes: dict[str, list[str]] = {}
    for op in module.walk():
        if not isinstance(op, func.FuncOp):
            continue
        kernel_notes = []
        if "dlc.algorithm" in op.attributes:
            kernel_notes.append(f"runs as {op.attributes['dlc.algorithm'].data}")
        if "dlc.lowering" in op.attributes:
            kernel_notes += op.attributes["dlc.lowering"].data.split("; ")
        if kernel_notes:
            notes[op.sym_name.data] = kernel_notes
    return notes


def _median_ms(run, repeat: int) -> float:
    run()
    times = []
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def compare(model, repeat: int = 20, input_shapes=None, target: str = "cpu", seed: int = 0,
            with_onnxruntime: bool = True, threads: int = 1, profile: bool = True,
            float_tolerance: tuple[float, float] = (FLOAT_ABS_TOLERANCE, FLOAT_REL_TOLERANCE),
            ) -> tuple[list[BuildReport], dict]:
    """Compile with fusion off and on, run both (and onnxruntime) on the same inputs.

    With `profile`, a third build per fusion setting times each kernel (for `--html`).
    """
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions
    from dlc.tools.oracle import random_inputs

    reports = []
    feeds = None
    for label, fusion in (("unfused", "none"), ("fused", "all")):
        options = CompileOptions(fusion=fusion, threads=threads)
        kernels = compile_model(model, target=target, options=options, input_shapes=input_shapes,
                                compile_to="kernels").module
        executable = compile_model(model, target=target, options=options, input_shapes=input_shapes).executable
        if feeds is None:
            feeds = random_inputs(executable.inputs, seed)
        nodes, edges = kernel_graph(kernels)
        report = BuildReport(label, kernel_infos(kernels),
                             arena_bytes=getattr(executable, "manifest", {}).get("arena_size", 0),
                             nodes=nodes, edges=edges, threads=threads)
        report.outputs = executable.run(feeds)
        report.latency_ms = _median_ms(functools.partial(executable.run, feeds), repeat)
        if profile:
            # Timers inside the code cost a little, so the profiled build is not the one timed above.
            profiled = compile_model(model, target=target, options=replace(options, profile=True),
                                     input_shapes=input_shapes).executable
            profile_kernels(profiled, feeds, report.kernels, repeat)
        reports.append(report)
    if with_onnxruntime:
        try:
            import onnx

            from dlc.tools.oracle import onnxruntime_session

            proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
            session = onnxruntime_session(proto, threads=threads)
            names = [o.name for o in session.get_outputs()]
            report = BuildReport("onnxruntime", [], threads=threads)
            report.outputs = dict(zip(names, session.run(None, feeds)))
            report.latency_ms = _median_ms(lambda: session.run(None, feeds), repeat)
            reports.append(report)
        except DlcError:  # onnxruntime is not installed: the two builds alone
            pass
    steps = quantization_steps(model)
    errors = {report.label: output_errors(report.outputs, reports[0].outputs, steps, float_tolerance)
              for report in reports[1:]}
    return reports, errors


SUMMARY_COLUMNS = ("build", "kernels", "interm. written", "interm. read", "arena peak", "median ms",
                   "speedup")
_SUMMARY_WIDTHS = (12, 8, 16, 13, 11, 10, 8)


def summary_rows(reports: list[BuildReport]) -> list[tuple[str, ...]]:
    """The cells of `dlc compare`'s table, one row per build (the text and HTML reports share them)."""
    base = reports[0].latency_ms
    rows = []
    for r in reports:
        written, read = r.intermediate_bytes
        sizes = [format_bytes(b) if r.kernels else "-" for b in (written, read, r.arena_bytes)]
        rows.append((r.label, str(len(r.kernels)) if r.kernels else "-", *sizes,
                     f"{r.latency_ms:.3f}", f"{base / r.latency_ms:.2f}x"))
    return rows


def error_lines(errors: dict[str, Disagreement]) -> list[str]:
    """One line per build; an output with a quantization step, or beyond its tolerance, gets
    its own line under it (the step says why it may differ by more than a float output)."""
    lines = []
    for label, disagreement in errors.items():
        lines.append(f"{label} vs unfused: worst abs error {disagreement.worst_abs:.3g}, "
                     f"worst rel error {disagreement.worst_rel:.3g}")
        lines += [f"  {o.describe()}" for o in disagreement.outputs if o.step is not None or o.beyond_tolerance]
    return lines


def format_compare(reports: list[BuildReport], errors: dict) -> str:
    def line(cells):
        first, *rest = cells
        return " ".join([f"{first:{_SUMMARY_WIDTHS[0]}s}",
                         *(f"{c:>{w}s}" for c, w in zip(rest, _SUMMARY_WIDTHS[1:]))])

    return "\n".join([line(SUMMARY_COLUMNS), *map(line, summary_rows(reports)), "", *error_lines(errors)])


def format_bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def compare_fusion(model, target: str, input_shapes=None, seed: int = 0) -> tuple[str, float]:
    """`dlc compare` on a partial target: its cost reports with fusion off and on, same inputs.

    Returns the table and the worst absolute difference between the two builds' outputs.
    """
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions
    from dlc.tools.npu_report import contractions_off_npu, format_contractions_off
    from dlc.tools.oracle import random_inputs

    rows, outputs, feeds = [], [], None
    for label, fusion in (("unfused", "none"), ("fused", "all")):
        executable = compile_model(model, target=target, options=CompileOptions(fusion=fusion),
                                   input_shapes=input_shapes).executable
        feeds = feeds if feeds is not None else random_inputs(executable.inputs, seed)
        outputs.append(executable.run(feeds))
        reports = [r for _, r in executable.npu_reports()]
        if not reports:
            return f"target {target} reports no costs: nothing to compare", 0.0
        total = reports[0]
        for report in reports[1:]:
            total = total + report
        rows.append(f"{label:10s} {total.cycles:>10d} {100 * total.mac_utilisation:>8.1f}% "
                    f"{total.dma_bytes:>12d} {total.scratchpad_peak:>12d} {total.latency_us:>10.2f}")
    worst = max((float(np.max(np.abs(outputs[0][k] - outputs[1][k]), initial=0.0)) for k in outputs[0]),
                default=0.0)
    header = f"{'build':10s} {'cycles':>10s} {'MAC util':>9s} {'DMA bytes':>12s} {'spad peak B':>12s} {'est. us':>10s}"
    return "\n".join([f"{target}: fused vs unfused", header, *rows, "",
                      f"fused vs unfused: worst abs difference {worst:.3g}",
                      format_contractions_off(contractions_off_npu(executable.placement))]), worst
