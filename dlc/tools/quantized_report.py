"""`dlc compare FP32.onnx --quantized INT8.onnx` (issue 20): what quantization costs in accuracy
and gains in time, for dlc and onnxruntime side by side.

Both models run on the same seeded random inputs (dlc/tools/oracle.py's `random_inputs`, one
set per sample). Each int8 build's outputs are compared with the fp32 build of the same
runtime: max and mean absolute error over all samples, and, for an output whose last axis
holds more than one value (class scores), top-1 agreement: the share of rows whose arg max
over that axis is the same. Latency is the median of `repeat` runs of one sample, the four
builds' runs interleaved (dlc/tools/bench.py), so a noisy machine slows them alike.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from dlc.tools.bench import median_latencies


@dataclass
class QuantizedBuild:
    label: str
    latency_ms: float = 0.0
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)  # one dict per sample


def compare_quantized(fp32_model, int8_model, samples: int = 8, repeat: int = 20, threads: int = 1,
                      input_shapes=None, seed: int = 0, with_onnxruntime: bool = True) -> list[QuantizedBuild]:
    """dlc fp32, dlc int8 (and onnxruntime fp32, int8), each run on the same `samples` inputs."""
    import dlc
    from dlc.tools.oracle import onnxruntime_session, random_inputs

    feeds = None
    runners = []
    for label, model in (("dlc fp32", fp32_model), ("dlc int8", int8_model)):
        compiled = dlc.compile(model, threads=threads, input_shapes=input_shapes)
        if feeds is None:
            feeds = [random_inputs(compiled.inputs, seed + i) for i in range(samples)]
        runners.append((label, compiled.run))
    if with_onnxruntime:
        for label, model in (("onnxruntime fp32", fp32_model), ("onnxruntime int8", int8_model)):
            session = onnxruntime_session(model, threads=threads)
            names = [o.name for o in session.get_outputs()]
            runners.append((label, lambda f, s=session, n=names: dict(zip(n, s.run(None, f)))))
    builds = [QuantizedBuild(label, outputs=[run(f) for f in feeds]) for label, run in runners]
    seconds = median_latencies({label: functools.partial(run, feeds[0]) for label, run in runners}, repeat,
                               threads=threads)
    for build in builds:
        build.latency_ms = seconds[build.label] * 1e3
    return builds


def accuracy(reference: QuantizedBuild, quantized: QuantizedBuild) -> dict[str, tuple[float, float, float | None]]:
    """Per output: (max abs error, mean abs error, top-1 agreement or None) of `quantized`
    against `reference` over all samples."""
    out = {}
    for name in reference.outputs[0]:
        want = np.stack([o[name] for o in reference.outputs]).astype(np.float64)
        got = np.stack([o[name] for o in quantized.outputs]).astype(np.float64)
        error = np.abs(got - want)
        top1 = None
        if want.ndim >= 2 and want.shape[-1] > 1:
            top1 = float(np.mean(np.argmax(got, axis=-1) == np.argmax(want, axis=-1)))
        out[name] = (float(error.max(initial=0.0)), float(error.mean()) if error.size else 0.0, top1)
    return out


def format_quantized(builds: list[QuantizedBuild]) -> str:
    by_label = {b.label: b for b in builds}
    lines = [f"{'build':18s} {'median ms':>10s} {'vs fp32':>8s}"]
    for build in builds:
        fp32 = by_label[build.label.replace("int8", "fp32")]
        lines.append(f"{build.label:18s} {build.latency_ms:10.3f} {fp32.latency_ms / build.latency_ms:7.2f}x")
    samples = len(builds[0].outputs)
    lines += ["", f"int8 against fp32 of the same runtime, over {samples} random input(s):",
              f"{'build':18s} {'output':12s} {'max abs err':>12s} {'mean abs err':>13s} {'top-1 agree':>12s}"]
    for build in builds:
        if "int8" not in build.label:
            continue
        for name, (worst, mean, top1) in accuracy(by_label[build.label.replace("int8", "fp32")], build).items():
            agree = "-" if top1 is None else f"{100 * top1:.1f}%"
            lines.append(f"{build.label:18s} {name:12s} {worst:12.4g} {mean:13.4g} {agree:>12s}")
    return "\n".join(lines)
