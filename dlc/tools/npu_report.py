"""What a simulated NPU did with a model: its cost of a float32 build against the int8 one
(`dlc compare FP32.onnx --quantized INT8.onnx --target npu-sim`, issue 20 deliverable 7),
and the contractions that left it for the cpu, with the reason its `supports` gave.

The costs are the simulator's (dlc/targets/npu/simulator.py): cycles, the MAC array's busy
cycles, DMA bytes (a byte per int8 element, four per float32 one) and the scratchpad peak,
summed over the NPU's partitions; both builds run the same seeded inputs, and the int8
build's outputs are compared with the float32 ones (quantization error, not a bug).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def contractions_off_npu(placement) -> list[str]:
    """'node 'n' (Op): reason' for each contraction (float or 8-bit) the target refused."""
    from dialects.op_classes import CONTRACTION, op_class
    from passes.lowering.utils.npu_kernels import INTEGER_CONTRACTIONS

    return [f"{placement.describe(node)}: {reason}" for node, reason in placement.reasons.items()
            if op_class(placement.kinds.get(node, "")) == CONTRACTION or placement.kinds.get(node) in
            INTEGER_CONTRACTIONS]


def format_contractions_off(lines: list[str], label: str = "") -> str:
    """One line per contraction off the NPU (each prefixed with `label`), or one saying none."""
    if not lines:
        return f"{label}contractions off the NPU: none"
    return "\n".join(f"{label}contraction off the NPU: {line}" for line in lines)


@dataclass
class NpuBuild:
    label: str
    report: object  # NpuReport, summed over the NPU partitions
    nodes_on_npu: int
    nodes: int
    left: list[str] = field(default_factory=list)  # contractions off the NPU, with reasons
    outputs: dict = field(default_factory=dict)
    max_error: float | None = None  # against the fp32 build's outputs


def _build(label: str, model, target: str, input_shapes, feeds):
    from dlc.driver import compile_model
    from dlc.errors import DlcError
    from dlc.tools.oracle import random_inputs

    executable = compile_model(model, target=target, input_shapes=input_shapes).executable
    if feeds is not None:
        wanted = {spec.name: tuple(spec.shape) for spec in executable.inputs}
        given = {name: tuple(array.shape) for name, array in feeds.items()}
        if wanted != given:
            raise DlcError(f"compare --quantized: the {label} model's inputs {wanted} are not the fp32 model's "
                           f"{given}", "compare a model with its own quantized version (same inputs)")
    feeds = feeds if feeds is not None else random_inputs(executable.inputs, 0)
    outputs = executable.run(feeds)
    reports = [r for _, r in executable.npu_reports()]
    total = reports[0] if reports else None
    for report in reports[1:]:
        total = total + report
    placement = executable.placement
    on = sum(1 for t in placement.nodes.values() if t == target)
    return NpuBuild(label, total, on, len(placement.nodes), contractions_off_npu(placement), outputs), feeds


def compare_npu_quantized(fp32_model, int8_model, target: str = "npu-sim", input_shapes=None) -> list[NpuBuild]:
    """The fp32 and int8 builds on `target`, run on the same seeded inputs."""
    fp32, feeds = _build("fp32", fp32_model, target, input_shapes, None)
    int8, _ = _build("int8", int8_model, target, input_shapes, feeds)
    errors = [float(np.max(np.abs(int8.outputs[k].astype(np.float64) - fp32.outputs[k]), initial=0.0))
              for k in fp32.outputs if k in int8.outputs]
    int8.max_error = max(errors, default=None)
    return [fp32, int8]


def format_npu_quantized(builds: list[NpuBuild], target: str = "npu-sim") -> str:
    header = (f"{'build':10s} {'nodes on NPU':>13s} {'cycles':>10s} {'MAC cycles':>11s} {'int8 MACs':>11s} "
              f"{'MAC util':>9s} {'DMA bytes':>11s} {'spad peak B':>12s} {'est. us':>9s}")
    lines = [f"{target}: fp32 vs int8 (simulated costs, summed over the NPU partitions)", header]
    for b in builds:
        r = b.report
        if r is None:
            lines.append(f"{b.label:10s} {f'{b.nodes_on_npu}/{b.nodes}':>13s}  (nothing ran on the NPU)")
            continue
        lines.append(f"{b.label:10s} {f'{b.nodes_on_npu}/{b.nodes}':>13s} {r.cycles:>10d} {r.mac_cycles:>11d} "
                     f"{r.int8_macs:>11d} {100 * r.mac_utilisation:>8.1f}% {r.dma_bytes:>11d} "
                     f"{r.scratchpad_peak:>12d} {r.latency_us:>9.2f}")
    fp32, int8 = builds[0].report, builds[1].report
    if fp32 is not None and int8 is not None:
        def ratio(a, b):
            return f"{a / b:.2f}" if b else "-"

        lines.append(f"{'int8/fp32':10s} {'':>13s} {ratio(int8.cycles, fp32.cycles):>10s} "
                     f"{ratio(int8.mac_cycles, fp32.mac_cycles):>11s} {'':>11s} {'':>9s} "
                     f"{ratio(int8.dma_bytes, fp32.dma_bytes):>11s} "
                     f"{ratio(int8.scratchpad_peak, fp32.scratchpad_peak):>12s}")
    if builds[1].max_error is not None:
        lines.append(f"int8 vs fp32 outputs (same inputs): max abs difference {builds[1].max_error:.4g}")
    for b in builds:
        lines.append(format_contractions_off(b.left, f"{b.label}: "))
    return "\n".join(lines)
