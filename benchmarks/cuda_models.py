"""Whole models on the cuda target (issue 21) against PyTorch eager on the same GPU.

    python benchmarks/cuda_models.py [--repeat 20] [--models resnet50_b1 resnet50_b32 transformer_d768]

ResNet-50 (torchvision's layout, BatchNormalization unfolded in the ONNX, seeded weights) at
batch 1 and 32, and `transformer_d768` (benchmarks/models.py: a BERT-base encoder layer, seq 128).
PyTorch runs the same ONNX graph with the same weights: `TorchGraph` below executes its nodes
with torch.nn.functional on the GPU, one eager call per node as a hand-written module would,
with every shape-only subgraph (Shape, Gather, Concat... of constants) evaluated once beforehand.
Each model is checked to run wholly on cuda (no cpu partition). Latency: median of --repeat
timed runs after a warm-up; dlc's run includes copying the input in and the outputs out, torch's
is timed both with the input resident on the GPU and with the same copies. Errors: max abs
difference against onnxruntime on the CPU. dlc is measured with exact FP32 FMA GEMMs (`--target
cuda:fp32`) and with TF32 tensor cores (`cuda:tf32`, the default), each named explicitly, torch with
TF32 off and on (torch.backends.*.allow_tf32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import models  # noqa: E402  (benchmarks/models.py)
from cuda_gemm import wall_ms  # noqa: E402  (median wall time of a call, first call excluded)
from models import GraphBuilder, _classifier, _conv_bn, _float_input  # noqa: E402


def _bottleneck(g: GraphBuilder, x: str, cin: int, width: int, stride: int, name: str) -> str:
    y = g.node("Relu", [_conv_bn(g, x, cin, width, 1, name=f"{name}.conv1")])
    y = g.node("Relu", [_conv_bn(g, y, width, width, 3, stride, name=f"{name}.conv2")])
    y = _conv_bn(g, y, width, 4 * width, 1, name=f"{name}.conv3")
    shortcut = x if stride == 1 and cin == 4 * width else \
        _conv_bn(g, x, cin, 4 * width, 1, stride, name=f"{name}.downsample")
    return g.node("Relu", [g.node("Add", [y, shortcut])])


def resnet50(batch: int = 1, resolution: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """torchvision ResNet-50 (bottlenecks 3, 4, 6, 3), input `x` [batch, 3, resolution, resolution]."""
    g = GraphBuilder(seed)
    y = g.node("Relu", [_conv_bn(g, "x", 3, 64, 7, 2, name="conv1")])
    y = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for layer, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for i in range(blocks):
            y = _bottleneck(g, y, cin, width, 2 if i == 0 and layer > 0 else 1, name=f"layer{layer + 1}.{i}")
            cin = 4 * width
    return g.model("resnet50", [_float_input("x", [batch, 3, resolution, resolution])],
                   {"logits": _classifier(g, y, 2048, classes)})


MODELS = {
    "resnet50_b1": lambda: resnet50(1),
    "resnet50_b32": lambda: resnet50(32),
    "transformer_d768": lambda: models.transformer_encoder(768, 12, 128, 3072),
}


# --- the same graph in PyTorch eager -------------------------------------------------------------

def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _torch_op(node, args, a):
    import torch
    import torch.nn.functional as F

    kind = node.op_type
    if kind == "Conv":
        pads = a.get("pads", [0, 0, 0, 0])
        assert pads[:2] == pads[2:], "asymmetric pads"
        return F.conv2d(args[0], args[1], args[2] if len(args) > 2 else None, a.get("strides", 1), pads[:2],
                        a.get("dilations", 1), a.get("group", 1))
    if kind == "BatchNormalization":
        return F.batch_norm(args[0], args[3], args[4], args[1], args[2], False, 0.0, a.get("epsilon", 1e-5))
    if kind in ("MaxPool", "AveragePool"):
        pads = a.get("pads", [0, 0, 0, 0])
        if kind == "MaxPool":
            return F.max_pool2d(args[0], a["kernel_shape"], a.get("strides", 1), pads[:2], a.get("dilations", 1),
                                bool(a.get("ceil_mode", 0)))
        return F.avg_pool2d(args[0], a["kernel_shape"], a.get("strides", 1), pads[:2], bool(a.get("ceil_mode", 0)),
                            bool(a.get("count_include_pad", 0)))
    if kind == "GlobalAveragePool":
        return args[0].mean(dim=(2, 3), keepdim=True)
    if kind == "Flatten":
        return torch.flatten(args[0], a.get("axis", 1))
    if kind == "Gemm":
        x, w = args[0], args[1]
        x = x.t() if a.get("transA", 0) else x
        w = w.t() if a.get("transB", 0) else w
        y = a.get("alpha", 1.0) * (x @ w)
        return y + a.get("beta", 1.0) * args[2] if len(args) > 2 else y
    simple = {"Relu": torch.relu, "Tanh": torch.tanh, "Erf": torch.erf, "Sigmoid": torch.sigmoid, "Exp": torch.exp,
              "Sqrt": torch.sqrt, "MatMul": torch.matmul, "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul,
              "Div": torch.div, "Pow": torch.pow, "Equal": torch.eq, "Where": torch.where}
    if kind in simple:
        return simple[kind](*args)
    if kind == "Sum":
        return sum(args[1:], args[0])
    if kind == "Gelu":
        return F.gelu(args[0], approximate=a.get("approximate", "none"))
    if kind == "Softmax":
        return torch.softmax(args[0], a.get("axis", -1))
    if kind == "LayerNormalization":
        axis = a.get("axis", -1) % args[0].dim()
        return F.layer_norm(args[0], args[0].shape[axis:], args[1], args[2] if len(args) > 2 else None,
                            a.get("epsilon", 1e-5))
    if kind == "ReduceMean":
        axes = a.get("axes") or [int(v) for v in args[1].tolist()]
        return args[0].mean(dim=tuple(axes), keepdim=bool(a.get("keepdims", 1)))
    if kind == "Transpose":
        return args[0].permute(a["perm"])
    if kind == "Reshape":
        shape = [int(v) for v in args[1].tolist()]  # ONNX's 0 copies the input's dimension
        return args[0].reshape([args[0].shape[i] if v == 0 else v for i, v in enumerate(shape)])
    if kind == "Split":
        sizes = [int(v) for v in args[1].tolist()] if len(args) > 1 else a["split"]
        return list(torch.split(args[0], sizes, a.get("axis", 0)))
    if kind == "Squeeze":
        return args[0].squeeze(tuple(int(v) for v in args[1].tolist()))
    if kind == "Unsqueeze":
        y = args[0]
        for axis in sorted(int(v) for v in args[1].tolist()):
            y = y.unsqueeze(axis)
        return y
    if kind == "Slice":
        index = [slice(None)] * args[0].dim()
        axes = args[3].tolist() if len(args) > 3 else range(len(args[1]))
        steps = args[4].tolist() if len(args) > 4 else [1] * len(args[1])
        for start, end, axis, step in zip(args[1].tolist(), args[2].tolist(), axes, steps):
            assert step > 0, "negative Slice steps"
            index[axis] = slice(*slice(start, end, step).indices(args[0].shape[axis]))
        return args[0][tuple(index)]
    if kind == "Shape":
        return torch.tensor(args[0].shape, dtype=torch.int64)
    if kind == "Gather":
        axis = a.get("axis", 0) % args[0].dim()
        picked = torch.index_select(args[0], axis, args[1].reshape(-1).long() % args[0].shape[axis])
        return picked.reshape((*args[0].shape[:axis], *args[1].shape, *args[0].shape[axis + 1:]))
    if kind == "Concat":
        return torch.cat(args, a.get("axis", 0))
    if kind == "Cast":
        types = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.BOOL: torch.bool,
                 onnx.TensorProto.INT64: torch.int64}
        return args[0].to(types[a["to"]])
    if kind == "Expand":
        return args[0].expand(*torch.broadcast_shapes(args[0].shape, tuple(int(v) for v in args[1].tolist())))
    if kind == "Identity":
        return args[0]
    raise NotImplementedError(f"TorchGraph: no torch form of {kind}")


class TorchGraph:
    """An ONNX graph run node by node with torch on one device (eager, no compilation)."""

    def __init__(self, model: onnx.ModelProto, device: str = "cuda"):
        import torch

        self.device, self.model = device, model
        constants = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
        inputs = {i.name for i in model.graph.input} - set(constants)
        inferred = onnx.shape_inference.infer_shapes(model).graph
        static = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                  for v in [*inferred.value_info, *inferred.input, *inferred.output]
                  if all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
        self.nodes = []
        for node in model.graph.node:
            if node.op_type == "Shape" and node.input[0] in static:  # static shapes: as a module's ints
                constants[node.output[0]] = torch.tensor(static[node.input[0]], dtype=torch.int64)
                continue
            if not any(name in inputs for name in node.input):  # shapes and constants: evaluated once
                result = _torch_op(node, [constants[n] for n in node.input if n], _attrs(node))
                for name, value in zip(node.output, result if isinstance(result, list) else [result]):
                    constants[name] = value
                continue
            self.nodes.append(node)
            inputs |= set(node.output)
        # Floats and masks on the GPU; integer tensors (shapes, axes) stay host values, as a
        # module's Python ints would.
        self.constants = {k: v if v.dtype == torch.int64 else v.to(device) for k, v in constants.items()}
        self.outputs = [o.name for o in model.graph.output]

    def __call__(self, feeds: dict):
        values = dict(self.constants, **feeds)
        for node in self.nodes:
            result = _torch_op(node, [values[n] for n in node.input if n], _attrs(node))
            for name, value in zip(node.output, result if isinstance(result, list) else [result]):
                values[name] = value
        return [values[name] for name in self.outputs]


# --- compile and time ----------------------------------------------------------------------------

def compile_cuda(model, tf32: bool):
    import dlc

    # The variant says the precision, over any gemm_tf32 of a target file in $DLC_CUDA_TARGET.
    return dlc.compile(model, target="cuda:tf32" if tf32 else "cuda:fp32")


def bench(name: str, repeat: int) -> list[str]:
    from dlc.tools.oracle import run_onnxruntime

    model = MODELS[name]()
    x = np.random.default_rng(1).standard_normal(
        [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    want = list(run_onnxruntime(model, {model.graph.input[0].name: x}).values())
    return [bench_mode(name, model, x, want, tf32, repeat) for tf32 in (False, True)]


def bench_mode(name: str, model, x: np.ndarray, want: list, tf32: bool, repeat: int) -> str:
    import torch

    feeds = {model.graph.input[0].name: x}
    start = time.perf_counter()
    compiled = compile_cuda(model, tf32)
    compile_s = time.perf_counter() - start
    steps = compiled._executable.steps
    if [s.target for s in steps] != ["cuda"]:
        raise SystemExit(f"{name}: not wholly on cuda: steps {[s.target for s in steps]}, "
                         f"{compiled._executable.placement.reasons}")
    cuda = steps[0].executable
    error = max(float(np.max(np.abs(g - w))) for g, w in zip(compiled.run(feeds).values(), want))
    dlc_ms = wall_ms(lambda: compiled.run(feeds), repeat)
    kernels = []
    for _ in range(max(repeat // 4, 1)):
        cuda.run({cuda.inputs[0].name: x}, profile=True)
        kernels.append(sum(ms for _, ms in cuda.last_kernel_ms))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    graph, name_in = TorchGraph(model), model.graph.input[0].name
    tx = torch.from_numpy(x).cuda()
    with torch.no_grad():
        torch_error = max(float(np.max(np.abs(t.cpu().numpy() - w))) for t, w in zip(graph({name_in: tx}), want))
        resident = wall_ms(lambda: (graph({name_in: tx}), torch.cuda.synchronize()), repeat)
        copies = wall_ms(lambda: [t.cpu() for t in graph({name_in: torch.from_numpy(x).cuda()})], repeat)
    mode = "TF32" if tf32 else "FP32"
    launches, kernel_ms = len(cuda.plan["launches"]), statistics.median(kernels)
    return (f"| {name} | {mode} | {launches} | {dlc_ms:.3f} ms | {kernel_ms:.3f} ms | "
            f"{copies:.3f} ms | {resident:.3f} ms | {dlc_ms / copies:.2f}x | {error:.1e} | "
            f"{torch_error:.1e} | {compile_s:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    import torch

    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, median of {args.repeat} runs")
    print("| model | GEMMs | kernels | dlc run (copies in/out) | dlc kernels (CUDA events) | torch eager "
          "(copies in/out) | torch eager (input resident) | dlc / torch (copies) | dlc max abs err vs ort "
          "| torch max abs err vs ort | dlc compile |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for row in bench(name, args.repeat):
            print(row, flush=True)


if __name__ == "__main__":
    main()
