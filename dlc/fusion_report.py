"""What fusion did and what it bought: `dlc explain` and `dlc compare`.

Reads the `kernels` phase (the `dlc.fusion` / `dlc.apart` attributes written by
fuse-kernels), counts the bytes kernels write and read through intermediate
buffers, and times the fused and unfused builds on the same inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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


@dataclass
class BuildReport:
    label: str
    kernels: list[KernelInfo]
    arena_bytes: int = 0
    latency_ms: float = 0.0
    outputs: dict = field(default_factory=dict)

    @property
    def intermediate_bytes(self) -> tuple[int, int]:
        return sum(k.bytes_written for k in self.kernels), sum(k.bytes_read for k in self.kernels)


def kernel_infos(module) -> list[KernelInfo]:
    """One KernelInfo per kernel.launch of a kernels-phase module."""
    from xdsl.dialects.builtin import TensorType

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

        def lines(key):
            attr = launch.attributes.get(key)
            return [s.data for s in attr.data] if attr is not None else []

        infos.append(KernelInfo(
            name=launch.kernel_name, nodes=[o.node_name for o in ops], op_types=[o.onnx_type for o in ops],
            fusion=lines("dlc.fusion"), apart=lines("dlc.apart"),
            bytes_written=sum(byte_size(r.type) for r in launch.results),
            bytes_read=sum(byte_size(v.type) for v in read)))
    return infos


def explain(model, fusion: str = "all", input_shapes=None, target: str = "cpu") -> str:
    """The fusion decisions as text: node -> kernel, and why neighbours stayed apart."""
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    result = compile_model(model, target=target, options=CompileOptions(fusion=fusion),
                           input_shapes=input_shapes, compile_to="kernels")
    infos = kernel_infos(result.module)
    lines = [f"{len(infos)} kernels from {sum(len(k.nodes) for k in infos)} nodes (--fusion={fusion})", ""]
    for info in infos:
        lines.append(f"kernel {info.name}: {', '.join(f'{n} ({t})' for n, t in zip(info.nodes, info.op_types))}")
        for note in info.fusion:
            lines.append(f"    + {note}")
        for note in info.apart:
            lines.append(f"    - apart: {note}")
    return "\n".join(lines)


def _median_ms(run, repeat: int) -> float:
    run()
    times = []
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def compare(model, repeat: int = 20, input_shapes=None, target: str = "cpu", seed: int = 0,
            with_onnxruntime: bool = True, threads: int = 1) -> tuple[list[BuildReport], dict]:
    """Compile with fusion off and on, run both (and onnxruntime) on the same inputs."""
    from dlc.cli import random_inputs
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    reports = []
    feeds = None
    for label, fusion in (("unfused", "none"), ("fused", "all")):
        options = CompileOptions(fusion=fusion, threads=threads)
        kernels = compile_model(model, target=target, options=options, input_shapes=input_shapes,
                                compile_to="kernels").module
        executable = compile_model(model, target=target, options=options, input_shapes=input_shapes).executable
        if feeds is None:
            feeds = random_inputs(executable.inputs, seed)
        report = BuildReport(label, kernel_infos(kernels),
                             arena_bytes=getattr(executable, "manifest", {}).get("arena_size", 0))
        report.outputs = executable.run(feeds)
        report.latency_ms = _median_ms(lambda: executable.run(feeds), repeat)
        reports.append(report)
    if with_onnxruntime:
        try:
            import onnxruntime as ort
            import onnx

            proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(proto.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            report = BuildReport("onnxruntime", [])
            report.outputs = dict(zip(names, session.run(None, feeds)))
            report.latency_ms = _median_ms(lambda: session.run(None, feeds), repeat)
            reports.append(report)
        except ImportError:
            pass
    errors = {}
    base = reports[0].outputs
    for report in reports[1:]:
        worst_abs, worst_rel = 0.0, 0.0
        for name, value in report.outputs.items():
            if name not in base:
                raise DlcError(f"compare: output '{name}' missing from the unfused build")
            diff = np.abs(value.astype(np.float64) - base[name].astype(np.float64))
            if diff.size:
                worst_abs = max(worst_abs, float(np.nanmax(diff)))
                scale = np.maximum(np.abs(base[name].astype(np.float64)), 1e-30)
                worst_rel = max(worst_rel, float(np.nanmax(diff / scale)))
        errors[report.label] = (worst_abs, worst_rel)
    return reports, errors


def format_compare(reports: list[BuildReport], errors: dict) -> str:
    base = reports[0].latency_ms
    lines = [f"{'build':12s} {'kernels':>8s} {'interm. written':>16s} {'interm. read':>13s} "
             f"{'arena peak':>11s} {'median ms':>10s} {'speedup':>8s}"]
    for r in reports:
        written, read = r.intermediate_bytes
        kernels = str(len(r.kernels)) if r.kernels else "-"
        lines.append(f"{r.label:12s} {kernels:>8s} {_bytes(written) if r.kernels else '-':>16s} "
                     f"{_bytes(read) if r.kernels else '-':>13s} {_bytes(r.arena_bytes) if r.kernels else '-':>11s} "
                     f"{r.latency_ms:10.3f} {base / r.latency_ms:7.2f}x")
    lines.append("")
    for label, (worst_abs, worst_rel) in errors.items():
        lines.append(f"{label} vs unfused: worst abs error {worst_abs:.3g}, worst rel error {worst_rel:.3g}")
    return "\n".join(lines)


def _bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)
