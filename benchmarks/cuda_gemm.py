"""GPU figures of the cuda target (issue 21): the shared-memory tiled GEMM's kernel time against
torch.matmul (cuBLAS, FP32 and TF32) on the same GPU, and an MLP's end-to-end latency.

    python benchmarks/cuda_gemm.py [--sizes 1024 2048 4096] [--repeat 10]
    python benchmarks/cuda_gemm.py --tf32 --sizes 4096 --no-models [--configs '{"gemm_tf32_stages": 4}' ...]

dlc compiles for `cuda:fp32` (exact FP32 FMA), or with `--tf32` for `cuda:tf32` (the tensor cores,
the cuda target's default), either way explicitly, so a row's precision is the one it says; each
`--configs` JSON (cuda target keys) is one more row of the same GEMM (a tile sweep).
In TF32 the GEMM's K loop reads operands already rounded to TF32 (`gemm_tf32_round` 0, the
default): the weight B on the host, the input A by a rounding kernel that runs before the GEMM
(dlc/targets/cuda/target.py, round_tf32_operands). The "dlc kernels" column is the two together,
as the ratios to torch; the GEMM alone and the rounding kernels are shown apart.

Kernel times come from CUDA events around each launch (CudaExecutable.run(profile=True)), with
the stream held by a spinning kernel while the host enqueues (runtime.HOLD_PTX), and torch's
behind `torch.cuda._sleep` the same way, so neither side's time includes a host launch gap; the
end-to-end latency of a dlc run includes copying its inputs in and outputs out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TORCH_HOLD_CYCLES = 2_000_000  # ~1 ms of the GPU's clock: longer than torch's enqueue of one matmul


def gemm_model(n: int, seed: int = 0) -> onnx.ModelProto:
    b = np.random.default_rng(seed).standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"], name="gemm")], "gemm",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
                              [numpy_helper.from_array(b, "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def mlp_model(batch: int, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    sizes, nodes, weights, x = [784, 512, 512, 10], [], [], "x"
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        weights += [numpy_helper.from_array((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32), f"W{i}"),
                    numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"b{i}"], [f"g{i}"], name=f"gemm{i}"))
        x = f"g{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 784])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, 10])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def conv_model(batch: int, channels: int = 64, size: int = 56, seed: int = 0) -> onnx.ModelProto:
    """ResNet-50's 3x3 conv of stage 1 (64 -> 64 channels, 56 x 56, pad 1) with bias and Relu."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((channels, channels, 3, 3)) / 24).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, channels, size, size])],
        [numpy_helper.from_array(w, "W"),
         numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def bench_conv(batch: int, repeat: int, target: str) -> str:
    import torch

    import dlc

    model = conv_model(batch)
    step = cuda_step(dlc.compile(model, target=target))
    x = np.random.default_rng(3).standard_normal((batch, 64, 56, 56)).astype(np.float32)
    feeds = {step.inputs[0].name: x}
    got = step.run(feeds)[step.outputs[0].name]
    kernel_ms = kernel_times(step, feeds, repeat)[0]
    w, b = (torch.from_numpy(numpy_helper.to_array(i).copy()).cuda() for i in model.graph.initializer)
    tx = torch.from_numpy(x).cuda()
    figures = {}
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        figures[tf32] = torch_ms(lambda: torch.relu(torch.nn.functional.conv2d(tx, w, b, padding=1)), repeat)
    torch.backends.cudnn.allow_tf32 = False
    want = torch.relu(torch.nn.functional.conv2d(tx, w, b, padding=1)).cpu().numpy()
    error = float(np.max(np.abs(got - want)))
    tflops = 2 * batch * 64 * 56 * 56 * 64 * 9 / (kernel_ms * 1e-3) / 1e12
    return (f"| conv 3x3 64->64 56x56 + bias + Relu, batch {batch}, {target} | {kernel_ms:.3f} ms, "
            f"{tflops:.1f} TFLOP/s | {figures[False]:.3f} ms | {figures[True]:.3f} ms | {error:.1e} |")


def cuda_step(compiled):
    return next(s.executable for s in compiled._executable.steps if s.target == "cuda")


def torch_ms(fn, repeat: int) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(TORCH_HOLD_CYCLES)  # as dlc's profiled runs hold their stream: no launch gap timed
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def wall_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_gemm(n: int, repeat: int, target: str, config: dict | None = None) -> str:
    import json
    import os
    import tempfile

    import torch

    import dlc

    model = gemm_model(n)
    start = time.perf_counter()
    given = os.environ.get("DLC_CUDA_TARGET")  # a target file of the caller's: its keys, then `config`'s
    keys = {**(json.loads(Path(given).read_text()) if given else {}), **(config or {})}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as target_file:
        json.dump(keys, target_file)
    os.environ["DLC_CUDA_TARGET"] = target_file.name  # read when the target is made (dlc.compile)
    try:
        compiled = dlc.compile(model, target=target)  # its variant's precision over the file's gemm_tf32
    finally:
        os.environ.pop("DLC_CUDA_TARGET")
        if given:
            os.environ["DLC_CUDA_TARGET"] = given
        os.unlink(target_file.name)
    compile_s = time.perf_counter() - start
    step = cuda_step(compiled)
    a = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    feeds = {step.inputs[0].name: a}
    out = step.run(feeds)[step.outputs[0].name]
    kernel_ms, gemm_ms, rounding_ms = kernel_times(step, feeds, repeat)
    e2e_ms = wall_ms(lambda: compiled.run({"A": a}), repeat)
    b = numpy_helper.to_array(model.graph.initializer[0]).copy()
    rows = np.sort(np.random.default_rng(5).choice(n, min(n, 96), replace=False))  # rows of every block row
    reference = a[rows].astype(np.float64) @ b.astype(np.float64)
    error = float(np.max(np.abs(out[rows] - reference)) / np.max(np.abs(reference)))
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    figures = {}
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        figures[tf32] = torch_ms(lambda: torch.matmul(ta, tb), repeat)
    torch.backends.cuda.matmul.allow_tf32 = False
    flops = 2 * n**3

    def tflops(ms: float) -> float:
        return flops / (ms * 1e-3) / 1e12

    shown = json.dumps(config) if config else ""
    return (f"| {n}^3 {target} {shown} | {kernel_ms:.3f} ms, {tflops(kernel_ms):.1f} TFLOP/s | "
            f"{gemm_ms:.3f} ms, {tflops(gemm_ms):.1f} | {rounding_ms:.3f} ms | {e2e_ms:.2f} ms | "
            f"{figures[False]:.3f} ms, {tflops(figures[False]):.1f} | {figures[True]:.3f} ms, "
            f"{tflops(figures[True]):.1f} | {100 * figures[False] / kernel_ms:.0f}% | "
            f"{100 * figures[True] / kernel_ms:.0f}% ({100 * figures[True] / gemm_ms:.0f}%) | {error:.1e} | "
            f"{compile_s:.1f} s |")


def kernel_times(step, feeds, repeat: int) -> tuple[float, float, float]:
    """Median kernel times in ms of one cuda partition (CUDA events around each launch): all its
    kernels, its GEMM/conv kernels alone, its TF32 rounding kernels alone."""
    from dlc.targets.cuda.codegen import ROUND_KERNEL

    runs = []
    for _ in range(repeat):
        step.run(feeds, profile=True)
        rounding = sum(ms for name, ms in step.last_kernel_ms if name.startswith(ROUND_KERNEL))
        rest = sum(ms for name, ms in step.last_kernel_ms if not name.startswith(ROUND_KERNEL))
        runs.append((rest + rounding, rest, rounding))
    return tuple(statistics.median(run[i] for run in runs) for i in range(3))


def bench_mlp(batch: int, repeat: int, target: str) -> str:
    import torch

    import dlc

    model = mlp_model(batch)
    compiled = dlc.compile(model, target=target)
    x = np.random.default_rng(2).standard_normal((batch, 784)).astype(np.float32)
    dlc_ms = wall_ms(lambda: compiled.run({"x": x}), repeat * 10)
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i)).cuda() for i in model.graph.initializer}

    def eager(tx):
        h = torch.relu(tx @ weights["W0"] + weights["b0"])
        h = torch.relu(h @ weights["W1"] + weights["b1"])
        return h @ weights["W2"] + weights["b2"]

    resident = torch.from_numpy(x).cuda()
    torch_resident = wall_ms(lambda: (eager(resident), torch.cuda.synchronize()), repeat * 10)
    torch_copies = wall_ms(lambda: eager(torch.from_numpy(x).cuda()).cpu(), repeat * 10)
    from dlc.tools.oracle import run_onnxruntime

    want = list(run_onnxruntime(model, {"x": x}).values())[0]
    got = compiled.run({"x": x})[model.graph.output[0].name]
    error = float(np.max(np.abs(got - want)))
    return (f"| MLP 784-512-512-10, batch {batch}, {target} | {dlc_ms:.3f} ms | {torch_copies:.3f} ms | "
            f"{torch_resident:.3f} ms | {error:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--no-models", action="store_true", help="GEMMs only (a tile sweep)")
    parser.add_argument("--tf32", action="store_true",
                        help="dlc's GEMMs on the TF32 tensor cores (--target cuda:tf32; default: cuda:fp32)")
    parser.add_argument("--configs", nargs="*", default=[], help="cuda target keys (JSON), a row each")
    args = parser.parse_args()
    import json

    import torch

    from dlc.errors import DlcError

    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print("| GEMM | dlc kernels (GEMM + TF32 rounding) | GEMM alone | rounding | dlc run (copies in/out) "
          "| torch FP32 | torch TF32 | dlc / torch FP32 | dlc / torch TF32 (GEMM alone) | max rel. error | compile |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    target = "cuda:tf32" if args.tf32 else "cuda:fp32"  # over any gemm_tf32 of $DLC_CUDA_TARGET
    for n in args.sizes:
        for config in [{}] + [json.loads(c) for c in args.configs]:
            try:
                print(bench_gemm(n, args.repeat, target, config), flush=True)
            except DlcError as error:  # a sweep's combination that cannot work: its row says why
                print(f"| {n}^3 {target} {json.dumps(config)} | {error} |", flush=True)
    if args.no_models:
        return
    print("\n| conv | dlc kernel | cuDNN FP32 | cuDNN TF32 | max abs. error |")
    print("|---|---|---|---|---|")
    for batch in (1, 32):
        print(bench_conv(batch, args.repeat, target), flush=True)
    print("\n| model | dlc cuda run | torch eager, copies in/out | torch eager, input resident | "
          "max abs. error vs onnxruntime |")
    print("|---|---|---|---|---|")
    for batch in (1, 64):
        print(bench_mlp(batch, args.repeat, target), flush=True)


if __name__ == "__main__":
    main()
