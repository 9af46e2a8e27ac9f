"""Benchmark int8 models (issue 20): dlc int8 vs onnxruntime int8, and dlc int8 vs dlc fp32.

    python benchmarks/int8.py                     # every model, 1 thread
    python benchmarks/int8.py --threads 2 --models cnn
    python benchmarks/int8.py --cpu-time --models cnn,mobile  # 1 thread, thread CPU seconds
    python benchmarks/int8.py --models resnet50,mobilenet_v2,bert    # the full models (minutes)

All models carry random weights and are quantized by onnxruntime's own tools, as users do:
- `resnet50` and `mobilenet_v2`: the full 224x224 models the issue names (ResNet-50 from
  benchmarks/cuda_models.py, MobileNetV2 from benchmarks/models.py, both with BatchNormalization
  after every Conv), quantize_static (QDQ, per-channel int8 weights, uint8 activations) calibrated
  on two random batches. They are quantized as written, without onnxruntime's quant_pre_process,
  so each BatchNormalization stays a float op between a DequantizeLinear and a QuantizeLinear
  (in both dlc and onnxruntime) and the ReLU/ReLU6 go into the quantization ranges.
- `bert`: a BERT-base encoder layer (benchmarks/models.py `transformer_encoder`: d=768, 12
  heads, FFN 3072, seq 128, LayerNorm, GELU, its pooler) with quantize_dynamic, as
  onnxruntime's tools quantize transformers (MatMulInteger + DynamicQuantizeLinear).
- the small stand-ins built with onnx.helper: `cnn`, a ResNet-style stack of 3x3 convs, and
  `mobile`, two MobileNetV2 inverted residual blocks (depthwise), both with quantize_static as
  above; `encoder`, a BERT-style encoder layer with quantize_dynamic.
All use reduce_range (7-bit weights): without it onnxruntime's AVX2 u8 x s8 kernels saturate
int16 pair sums and compute another function than the spec on CPUs without VNNI. Models are
saved with IR version 10 (onnxruntime 1.30 reads IR <= 13). Runs alternate between the
sessions (dlc/tools/bench.py), so quote the ratios, not the times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _init(rng, name, *shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    bound = scale if scale is not None else 1 / np.sqrt(max(fan_in, 1))
    return numpy_helper.from_array(rng.uniform(-bound, bound, shape).astype(np.float32), name)


def cnn(rng, channels: int = 64, size: int = 56, blocks: int = 3):
    """A stem conv and `blocks` pairs of 3x3 convs with ReLU, then pooling and a classifier."""
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["h0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h0"], ["a0"])]
    inits = [_init(rng, "w0", channels, 3, 3, 3), _init(rng, "b0", channels, scale=0.1)]
    last = "a0"
    for i in range(1, 2 * blocks + 1):
        nodes += [helper.make_node("Conv", [last, f"w{i}", f"b{i}"], [f"h{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"h{i}"], [f"a{i}"])]
        inits += [_init(rng, f"w{i}", channels, channels, 3, 3), _init(rng, f"b{i}", channels, scale=0.1)]
        last = f"a{i}"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    inits += [_init(rng, "wf", 10, channels), _init(rng, "bf", 10, scale=0.1)]
    return nodes, inits, [1, 3, size, size], [1, 10]


def mobile(rng, channels: int = 24, expand: int = 6, size: int = 56, blocks: int = 2):
    """MobileNetV2's inverted residual blocks: 1x1 expansion, ReLU6, 3x3 depthwise, ReLU6,
    1x1 projection, residual Add; then pooling and a classifier."""
    wide = channels * expand
    nodes, inits = [], [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                        numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    last = "x"
    for i in range(blocks):
        nodes += [helper.make_node("Conv", [last, f"we{i}", f"be{i}"], [f"e{i}"]),
                  helper.make_node("Clip", [f"e{i}", "zero", "six"], [f"er{i}"]),
                  helper.make_node("Conv", [f"er{i}", f"wd{i}", f"bd{i}"], [f"d{i}"], pads=[1, 1, 1, 1], group=wide),
                  helper.make_node("Clip", [f"d{i}", "zero", "six"], [f"dr{i}"]),
                  helper.make_node("Conv", [f"dr{i}", f"wp{i}", f"bp{i}"], [f"p{i}"]),
                  helper.make_node("Add", [f"p{i}", last], [f"r{i}"])]
        inits += [_init(rng, f"we{i}", wide, channels, 1, 1), _init(rng, f"be{i}", wide, scale=0.1),
                  _init(rng, f"wd{i}", wide, 1, 3, 3), _init(rng, f"bd{i}", wide, scale=0.1),
                  _init(rng, f"wp{i}", channels, wide, 1, 1), _init(rng, f"bp{i}", channels, scale=0.1)]
        last = f"r{i}"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    inits += [_init(rng, "wf", 10, channels), _init(rng, "bf", 10, scale=0.1)]
    return nodes, inits, [1, channels, size, size], [1, 10]


def encoder(rng, seq: int = 128, d: int = 256, ff: int = 1024):
    """One head of self-attention with a residual and a ReLU MLP (no LayerNorm: a stand-in)."""
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"]),
             helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("MatMul", ["x", "wv"], ["v"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Mul", ["s", "inv_sqrt_d"], ["ss"]),
             helper.make_node("Softmax", ["ss"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["o"]),
             helper.make_node("MatMul", ["o", "wo"], ["proj"]),
             helper.make_node("Add", ["proj", "x"], ["r"]),
             helper.make_node("MatMul", ["r", "w1"], ["h"]),
             helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["hr"]),
             helper.make_node("MatMul", ["hr", "w2"], ["m"]),
             helper.make_node("Add", ["m", "r"], ["y"])]
    inits = [_init(rng, "wq", d, d), _init(rng, "wk", d, d), _init(rng, "wv", d, d),
             _init(rng, "wo", d, d), _init(rng, "w1", d, ff), _init(rng, "b1", ff, scale=0.1),
             _init(rng, "w2", ff, d),
             numpy_helper.from_array(np.array(d ** -0.5, np.float32), "inv_sqrt_d")]
    return nodes, inits, [1, seq, d], [1, seq, d]


def _full(module: str, function: str):
    """A full model of benchmarks/MODULE.py (its input `x`), as the small ones' makers return
    a graph: the ModelProto itself, built on first use (ResNet-50 takes seconds)."""
    def make(rng):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        model = getattr(__import__(module), function)()
        x = model.graph.input[0]
        return model, [d.dim_value for d in x.type.tensor_type.shape.dim]
    return make


MODELS = {"cnn": (cnn, "static"), "mobile": (mobile, "static"), "encoder": (encoder, "dynamic"),
          "resnet50": (_full("cuda_models", "resnet50"), "static"),
          "mobilenet_v2": (_full("models", "mobilenet_v2"), "static"),
          "bert": (_full("models", "transformer_encoder"), "dynamic")}
CALIBRATION_BATCHES = {"resnet50": 2, "mobilenet_v2": 2}  # others: 4 (a full model's calibration takes minutes)


def build(name: str, folder: Path) -> tuple[Path, Path, list[int]]:
    """The float model and its int8 version (written by onnxruntime.quantization), x's shape."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    make, how = MODELS[name]
    rng = np.random.default_rng(0)
    made = make(rng)
    if isinstance(made[0], onnx.ModelProto):
        model, x_shape = made
    else:
        nodes, inits, x_shape, y_shape = made
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # IR 10: onnxruntime 1.30 (the 16-core machine's) reads IR <= 13, newer onnx writes 14
    model.ir_version = 10
    fp32, int8 = folder / f"{name}.onnx", folder / f"{name}.int8.onnx"
    onnx.save(model, fp32)
    batches = CALIBRATION_BATCHES.get(name, 4)

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rng.uniform(-1, 1, x_shape).astype(np.float32)} for _ in range(batches)])

        def get_next(self):
            return next(self.batches, None)

    if how == "dynamic":
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, reduce_range=True)
    else:
        quantize_static(fp32, int8, Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
    return fp32, int8, x_shape


def _cpu_line() -> str:
    """The CPU the figures come from, and whether the integer GEMM has vpdpbusd on it."""
    from dlc.codegen.cpus import resolve_cpu

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    cpu, features = resolve_cpu("native")
    return f"cpu: {model} (LLVM: {cpu}); AVX512-VNNI: {'yes' if '+avx512vnni' in features else 'no'}"


def cpu_time_ratios(runners: dict, repeat: int) -> dict[str, float]:
    """Median thread CPU seconds of each runner, run in turn `repeat` times (one thread: the
    work is on this thread, and CPU time leaves out the waits a loaded machine adds to wall time).
    The order reverses every repeat: in a fixed order, two builds of one model measured 0.93-0.95
    of each other in their second place (one process, load 7)."""
    import time

    times: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():  # warm up
        run()
    order = list(runners.items())
    for i in range(repeat):
        for name, run in (order if i % 2 == 0 else order[::-1]):
            t0 = time.thread_time()
            run()
            times[name].append(time.thread_time() - t0)
    return {name: float(np.median(values)) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread: dlc int8 / onnxruntime int8 in thread CPU seconds (median of --repeat)")
    args = parser.parse_args(argv)
    if args.cpu_time:
        args.threads = 1

    import logging

    import dlc
    from dlc.tools.bench import median_latencies
    from dlc.tools.oracle import onnxruntime_session

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's pre-processing advice
    print(_cpu_line())
    if not args.cpu_time:
        print(f"{'model':10} {'dlc int8 ms':>12} {'ort int8 ms':>12} {'dlc fp32 ms':>12} "
              f"{'dlc/ort int8':>13} {'int8 speedup':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            fp32, int8, x_shape = build(name, Path(tmp))
            feeds = {"x": np.random.default_rng(1).uniform(-1, 1, x_shape).astype(np.float32)}
            dlc_int8 = dlc.compile(str(int8), threads=args.threads)
            dlc_fp32 = None if args.cpu_time else dlc.compile(str(fp32), threads=args.threads)
            ort_int8 = onnxruntime_session(str(int8), threads=args.threads)
            runners = {"dlc int8": lambda c=dlc_int8, f=feeds: c.run(f),
                       "ort int8": lambda s=ort_int8, f=feeds: s.run(None, f),
                       "dlc fp32": lambda c=dlc_fp32, f=feeds: c.run(f)}
            if args.cpu_time:
                cpu = cpu_time_ratios({k: runners[k] for k in ("dlc int8", "ort int8")}, args.repeat)
                print(f"{name:10} thread CPU ms: dlc int8 {cpu['dlc int8'] * 1e3:.3f}, ort int8 "
                      f"{cpu['ort int8'] * 1e3:.3f}, dlc/ort {cpu['dlc int8'] / cpu['ort int8']:.3f}")
                continue
            times = median_latencies(runners, args.repeat, threads=args.threads)
            ms = {k: v * 1e3 for k, v in times.items()}
            print(f"{name:10} {ms['dlc int8']:12.3f} {ms['ort int8']:12.3f} {ms['dlc fp32']:12.3f} "
                  f"{ms['dlc int8'] / ms['ort int8']:13.2f} {ms['dlc fp32'] / ms['dlc int8']:13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
