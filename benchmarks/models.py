"""Models written the way today's exporters (torch.onnx, tf2onnx) write them, built with onnx.helper.

Seeded random weights; operator signatures follow the ONNX operator docs of each model's opset.
Used by benchmarks/run_all.py and tests/test_exporter_models.py.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.make_models import mlp

__all__ = [
    "GraphBuilder",
    "efficientnet_b0",
    "mlp",
    "mobilenet_block",
    "mobilenet_v2",
    "mobilenet_v3",
    "opset_variants",
    "resnet18",
    "resnet_block",
    "se_block",
    "speech_front_end",
    "symbolic_bert_layer",
    "transformer_encoder",
]


class GraphBuilder:
    """Collects nodes and seeded initializers; names every node as exporters do (`op_N`)."""

    def __init__(self, seed: int = 0, opset: int = 17):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()

    def _unique(self, base: str) -> str:
        name, n = base, 0
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def const(self, name: str, array) -> str:
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, name: str, values) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64))

    def scalar(self, name: str, value: float) -> str:
        return self.const(name, np.asarray(value, dtype=np.float32))

    def weight(self, name: str, *shape: int, fan_in: int | None = None) -> str:
        fan_in = fan_in or int(np.prod(shape[1:])) or 1
        return self.const(name, (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))

    def bias(self, name: str, size: int) -> str:
        return self.const(name, (self.rng.standard_normal(size) * 0.1).astype(np.float32))

    def reduce_mean(self, x: str, axes: list[int]) -> str:
        """ReduceMean with keepdims; its axes became an input at opset 18."""
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.ints("axes", axes)], keepdims=1)
        return self.node("ReduceMean", [x], axes=axes, keepdims=1)

    def node(self, op: str, inputs: list[str], outputs: int = 1, **attrs) -> str | list[str]:
        name = self._unique(f"{op}_{len(self.nodes)}")
        names = [f"{name}_out{i}" if outputs > 1 else f"{name}_out" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=name, **attrs))
        return names if outputs > 1 else names[0]

    def model(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: dict[str, str]) -> onnx.ModelProto:
        """outputs maps each graph output name to the value computing it (renamed in place)."""
        renames = {value: out for out, value in outputs.items()}
        for node in self.nodes:
            node.output[:] = [renames.get(o, o) for o in node.output]
            node.input[:] = [renames.get(i, i) for i in node.input]
        graph = helper.make_graph(self.nodes, name, inputs,
                                  [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                                  self.initializers)
        # IR version 10: what onnxruntime 1.20+ reads (newer onnx packages write newer ones).
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="dlc-benchmarks", ir_version=10)
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model)
        return model


def _float_input(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


# --- transformer encoder layer (torch.onnx style) -----------------------------------------------

def _linear(g: GraphBuilder, x: str, fan_in: int, fan_out: int, name: str) -> str:
    """torch.nn.Linear on a 3-D input: MatMul by the transposed weight, then Add of the bias."""
    y = g.node("MatMul", [x, g.weight(f"{name}.weight_T", fan_in, fan_out, fan_in=fan_in)])
    return g.node("Add", [y, g.bias(f"{name}.bias", fan_out)])


def _dim(g: GraphBuilder, x: str, axis: int) -> str:
    """The Shape -> Gather -> Unsqueeze idiom torch.onnx emits for `x.size(axis)` in a view."""
    size = g.node("Gather", [g.node("Shape", [x]), g.const("axis", np.asarray(axis, np.int64))], axis=0)
    return g.node("Unsqueeze", [size, g.ints("zero", [0])])


def _split_heads(g: GraphBuilder, x: str, heads: int, dk: int) -> str:
    shape = g.node("Concat", [_dim(g, x, 0), _dim(g, x, 1), g.ints("heads", [heads]), g.ints("dk", [dk])], axis=0)
    return g.node("Transpose", [g.node("Reshape", [x, shape])], perm=[0, 2, 1, 3])


def _layer_norm(g: GraphBuilder, x: str, d: int, decomposed: bool, name: str) -> str:
    gamma = g.const(f"{name}.weight", g.rng.uniform(0.5, 1.5, d).astype(np.float32))
    beta = g.bias(f"{name}.bias", d)
    if not decomposed:
        return g.node("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)
    # What torch.onnx wrote before opset 17.
    mean = g.reduce_mean(x, [-1])
    centred = g.node("Sub", [x, mean])
    var = g.reduce_mean(g.node("Pow", [centred, g.scalar("two", 2.0)]), [-1])
    std = g.node("Sqrt", [g.node("Add", [var, g.scalar("eps", 1e-5)])])
    return g.node("Add", [g.node("Mul", [g.node("Div", [centred, std]), gamma]), beta])


def _gelu(g: GraphBuilder, x: str, form: str) -> str:
    if form == "op":
        return g.node("Gelu", [x])
    if form == "erf":  # x * 0.5 * (1 + erf(x / sqrt(2))), torch.onnx's exact GELU
        erf = g.node("Erf", [g.node("Div", [x, g.scalar("sqrt2", math.sqrt(2.0))])])
        return g.node("Mul", [g.node("Mul", [x, g.node("Add", [erf, g.scalar("one", 1.0)])]),
                              g.scalar("half", 0.5)])
    if form == "tanh":  # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
        cube = g.node("Mul", [g.node("Pow", [x, g.scalar("three", 3.0)]), g.scalar("c", 0.044715)])
        inner = g.node("Mul", [g.node("Add", [x, cube]), g.scalar("sqrt_2_over_pi", math.sqrt(2 / math.pi))])
        tanh = g.node("Add", [g.node("Tanh", [inner]), g.scalar("one", 1.0)])
        return g.node("Mul", [g.node("Mul", [g.scalar("half", 0.5), x]), tanh])
    raise ValueError(f"gelu must be 'erf', 'tanh' or 'op', got {form!r}")


def _mask_scores(g: GraphBuilder, scores: str, seq: int, mask: str) -> str:
    """Padding mask over the last quarter of the keys, as HF exports it (Cast, Expand, Where or Add)."""
    keep = np.ones((1, 1, 1, seq), np.int64)
    keep[..., seq - max(1, seq // 4):] = 0
    keep = g.const("attention_mask", keep)
    if mask == "where":
        hidden = g.node("Cast", [g.node("Equal", [keep, g.const("zero_i", np.asarray(0, np.int64))])],
                        to=TensorProto.BOOL)
        hidden = g.node("Expand", [hidden, g.node("Shape", [scores])])
        return g.node("Where", [hidden, g.scalar("neg_inf", np.finfo(np.float32).min), scores])
    if mask == "add":
        keep_f = g.node("Cast", [keep], to=TensorProto.FLOAT)
        bias = g.node("Mul", [g.node("Sub", [g.scalar("one", 1.0), keep_f]), g.scalar("neg_big", -10000.0)])
        return g.node("Add", [scores, bias])
    raise ValueError(f"mask must be 'where' or 'add', got {mask!r}")


def transformer_encoder(d_model: int = 768, heads: int = 12, seq: int = 128, ffn: int = 3072,
                        decomposed_layernorm: bool = False, gelu: str = "erf", mask: str = "where",
                        seed: int = 0) -> onnx.ModelProto:
    """One post-norm BERT encoder layer plus its pooler; input `x` [1, seq, d_model].

    Outputs `hidden` [1, seq, d_model] and `pooled` [1, d_model] (first token, Slice + Squeeze + Gemm + Tanh).
    Opset 17, or 20 for gelu="op" (the Gelu operator).
    """
    assert d_model % heads == 0, "d_model must be a multiple of heads"
    g, dk = GraphBuilder(seed, opset=20 if gelu == "op" else 17), d_model // heads
    x = "x"
    qkv = _linear(g, x, d_model, 3 * d_model, "attn.qkv")
    q, k, v = g.node("Split", [qkv, g.ints("split", [d_model] * 3)], outputs=3, axis=-1)
    q, k, v = (_split_heads(g, t, heads, dk) for t in (q, k, v))
    k_t = g.node("Transpose", [k], perm=[0, 1, 3, 2])
    scores = g.node("Div", [g.node("MatMul", [q, k_t]), g.scalar("sqrt_dk", math.sqrt(dk))])
    probs = g.node("Softmax", [_mask_scores(g, scores, seq, mask)], axis=-1)
    context = g.node("Transpose", [g.node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    merged_shape = g.node("Concat", [_dim(g, context, 0), _dim(g, context, 1), g.ints("d", [d_model])], axis=0)
    attn = _linear(g, g.node("Reshape", [context, merged_shape]), d_model, d_model, "attn.out")
    h = _layer_norm(g, g.node("Add", [x, attn]), d_model, decomposed_layernorm, "ln1")
    up = _gelu(g, _linear(g, h, d_model, ffn, "ffn.up"), gelu)
    out = _layer_norm(g, g.node("Add", [h, _linear(g, up, ffn, d_model, "ffn.down")]),
                      d_model, decomposed_layernorm, "ln2")
    first = g.node("Slice", [out, g.ints("start", [0]), g.ints("end", [1]), g.ints("axes", [1])])
    first = g.node("Squeeze", [first, g.ints("axes", [1])])
    pooled = g.node("Tanh", [g.node("Gemm", [first, g.weight("pooler.weight", d_model, d_model),
                                             g.bias("pooler.bias", d_model)], transB=1)])
    return g.model("transformer_encoder", [_float_input(x, [1, seq, d_model])],
                   {"hidden": out, "pooled": pooled})


# --- convolutional networks (torchvision layouts, BatchNormalization left unfolded) --------------

def _conv_bn(g: GraphBuilder, x: str, cin: int, cout: int, kernel: int, stride: int = 1, group: int = 1,
             name: str = "conv") -> str:
    w = g.weight(f"{name}.weight", cout, cin // group, kernel, kernel)
    pad = kernel // 2
    y = g.node("Conv", [x, w], kernel_shape=[kernel, kernel], strides=[stride, stride],
               pads=[pad] * 4, group=group, dilations=[1, 1])
    params = [g.const(f"{name}.bn.weight", g.rng.uniform(0.5, 1.5, cout).astype(np.float32)),
              g.bias(f"{name}.bn.bias", cout), g.bias(f"{name}.bn.running_mean", cout),
              g.const(f"{name}.bn.running_var", g.rng.uniform(0.5, 1.5, cout).astype(np.float32))]
    return g.node("BatchNormalization", [y, *params], epsilon=1e-5, momentum=0.9)


def _activation(g: GraphBuilder, x: str, kind: str) -> str:
    if kind == "relu":
        return g.node("Relu", [x])
    if kind == "relu6":  # torch.onnx writes ReLU6 as Clip with min/max inputs (opset 11+)
        return g.node("Clip", [x, g.scalar("min", 0.0), g.scalar("max", 6.0)])
    if kind == "hardswish":
        return g.node("HardSwish", [x])
    if kind == "hardsigmoid":  # torch.nn.Hardsigmoid: relu6(x + 3) / 6
        return g.node("HardSigmoid", [x], alpha=1.0 / 6)
    if kind == "sigmoid":
        return g.node("Sigmoid", [x])
    if kind == "silu":  # torch.onnx writes SiLU as x * Sigmoid(x)
        return g.node("Mul", [x, g.node("Sigmoid", [x])])
    if kind == "none":
        return x
    raise ValueError(f"unknown activation {kind!r}")


def _classifier(g: GraphBuilder, x: str, channels: int, classes: int) -> str:
    flat = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    return g.node("Gemm", [flat, g.weight("fc.weight", classes, channels), g.bias("fc.bias", classes)],
                  alpha=1.0, beta=1.0, transB=1)


def _inverted_residual(g: GraphBuilder, x: str, cin: int, cout: int, stride: int, expand: int,
                       activation: str = "relu6", name: str = "block") -> str:
    hidden = cin * expand
    y = x
    if expand != 1:
        y = _activation(g, _conv_bn(g, y, cin, hidden, 1, name=f"{name}.expand"), activation)
    y = _activation(g, _conv_bn(g, y, hidden, hidden, 3, stride, group=hidden, name=f"{name}.dw"), activation)
    y = _conv_bn(g, y, hidden, cout, 1, name=f"{name}.project")
    return g.node("Add", [x, y]) if stride == 1 and cin == cout else y


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding for width multipliers."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


MOBILENET_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]  # expansion t, channels c, repeats n, stride s


def mobilenet_v2(width: float = 1.0, resolution: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """torchvision MobileNetV2 (ReLU6 as Clip), input `x` [1, 3, resolution, resolution], opset 17."""
    g = GraphBuilder(seed)
    cin = _make_divisible(32 * width)
    y = _activation(g, _conv_bn(g, "x", 3, cin, 3, 2, name="stem"), "relu6")
    for stage, (t, c, n, s) in enumerate(MOBILENET_V2_STAGES):
        cout = _make_divisible(c * width)
        for i in range(n):
            y = _inverted_residual(g, y, cin, cout, s if i == 0 else 1, t, name=f"features.{stage}.{i}")
            cin = cout
    last = _make_divisible(1280 * max(1.0, width))
    y = _activation(g, _conv_bn(g, y, cin, last, 1, name="head"), "relu6")
    return g.model("mobilenet_v2", [_float_input("x", [1, 3, resolution, resolution])],
                   {"logits": _classifier(g, y, last, classes)})


def mobilenet_block(channels: int = 16, resolution: int = 32, expand: int = 6, activation: str = "relu6",
                    seed: int = 0) -> onnx.ModelProto:
    """Two inverted residual blocks (stride 1 with its residual Add, then stride 2) and a classifier.

    activation="hardswish" is the MobileNetV3-style variant.
    """
    g = GraphBuilder(seed)
    y = _inverted_residual(g, "x", channels, channels, 1, expand, activation, name="block0")
    y = _inverted_residual(g, y, channels, 2 * channels, 2, expand, activation, name="block1")
    return g.model("mobilenet_block", [_float_input("x", [1, channels, resolution, resolution])],
                   {"logits": _classifier(g, y, 2 * channels, 10)})


def _squeeze_excite(g: GraphBuilder, x: str, channels: int, squeezed: int, activation: str, gate: str,
                    name: str) -> str:
    """x * gate(fc2(activation(fc1(GlobalAveragePool(x))))), the fcs as 1x1 convs with bias."""
    y = g.node("GlobalAveragePool", [x])
    y = g.node("Conv", [y, g.weight(f"{name}.fc1.weight", squeezed, channels, 1, 1),
                        g.bias(f"{name}.fc1.bias", squeezed)])
    y = _activation(g, y, activation)
    y = g.node("Conv", [y, g.weight(f"{name}.fc2.weight", channels, squeezed, 1, 1),
                        g.bias(f"{name}.fc2.bias", channels)])
    return g.node("Mul", [x, _activation(g, y, gate)])


def _mbconv(g: GraphBuilder, x: str, cin: int, cout: int, kernel: int, stride: int, hidden: int, squeezed: int,
            activation: str, se_activation: str, gate: str, name: str) -> str:
    """An inverted residual block with optional squeeze-and-excitation (MobileNetV3, EfficientNet):
    1x1 expansion (none when hidden == cin), depthwise kxk, SE on the hidden channels, 1x1 projection."""
    y = x
    if hidden != cin:
        y = _activation(g, _conv_bn(g, y, cin, hidden, 1, name=f"{name}.expand"), activation)
    y = _activation(g, _conv_bn(g, y, hidden, hidden, kernel, stride, group=hidden, name=f"{name}.dw"), activation)
    if squeezed:
        y = _squeeze_excite(g, y, hidden, squeezed, se_activation, gate, name=f"{name}.se")
    y = _conv_bn(g, y, hidden, cout, 1, name=f"{name}.project")
    return g.node("Add", [x, y]) if stride == 1 and cin == cout else y


def se_block(channels: int = 112, hidden: int = 672, kernel: int = 5, stride: int = 1, resolution: int = 14,
             activation: str = "hardswish", seed: int = 0) -> onnx.ModelProto:
    """One MobileNetV3-style mobile block: 1x1 expansion, depthwise kxk, squeeze-and-excitation
    (Relu, HardSigmoid gate), 1x1 projection and its residual Add (stride 1); defaults are
    MobileNetV3-Large's 112->672 block at 14x14 with a 5x5 depthwise. Input `x`
    [1, channels, resolution, resolution], opset 17."""
    g = GraphBuilder(seed)
    y = _mbconv(g, "x", channels, channels, kernel, stride, hidden, _make_divisible(hidden // 4), activation,
                "relu", "hardsigmoid", name="block")
    return g.model("se_block", [_float_input("x", [1, channels, resolution, resolution])], {"y": y})


# torchvision mobilenet_v3_large: kernel, expanded channels, out channels, SE, activation, stride
MOBILENET_V3_LARGE = [(3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
                      (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
                      (3, 240, 80, False, "hardswish", 2), (3, 200, 80, False, "hardswish", 1),
                      (3, 184, 80, False, "hardswish", 1), (3, 184, 80, False, "hardswish", 1),
                      (3, 480, 112, True, "hardswish", 1), (3, 672, 112, True, "hardswish", 1),
                      (5, 672, 160, True, "hardswish", 2), (5, 960, 160, True, "hardswish", 1),
                      (5, 960, 160, True, "hardswish", 1)]  # fmt: skip


def mobilenet_v3(resolution: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """torchvision MobileNetV3-Large: HardSwish, depthwise 3x3 and 5x5, squeeze-and-excitation with
    a HardSigmoid gate; input `x` [1, 3, resolution, resolution], opset 17."""
    g = GraphBuilder(seed)
    y = _activation(g, _conv_bn(g, "x", 3, 16, 3, 2, name="stem"), "hardswish")
    cin = 16
    for i, (kernel, hidden, cout, se, activation, stride) in enumerate(MOBILENET_V3_LARGE):
        y = _mbconv(g, y, cin, cout, kernel, stride, hidden, _make_divisible(hidden // 4) if se else 0,
                    activation, "relu", "hardsigmoid", name=f"features.{i + 1}")
        cin = cout
    y = _activation(g, _conv_bn(g, y, cin, 960, 1, name="head"), "hardswish")
    y = g.node("Flatten", [g.node("GlobalAveragePool", [y])], axis=1)
    y = g.node("Gemm", [y, g.weight("classifier.0.weight", 1280, 960), g.bias("classifier.0.bias", 1280)], transB=1)
    y = _activation(g, y, "hardswish")
    y = g.node("Gemm", [y, g.weight("classifier.3.weight", classes, 1280), g.bias("classifier.3.bias", classes)],
               transB=1)
    return g.model("mobilenet_v3", [_float_input("x", [1, 3, resolution, resolution])], {"logits": y})


# EfficientNet-B0: expansion, kernel, stride, out channels, repeats
EFFICIENTNET_B0 = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                   (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def efficientnet_b0(resolution: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """torchvision EfficientNet-B0: SiLU (Sigmoid, Mul), depthwise 3x3 and 5x5, squeeze-and-excitation
    (SiLU, Sigmoid gate) on every block; input `x` [1, 3, resolution, resolution], opset 17."""
    g = GraphBuilder(seed)
    y = _activation(g, _conv_bn(g, "x", 3, 32, 3, 2, name="stem"), "silu")
    cin = 32
    for stage, (expand, kernel, stride, cout, repeats) in enumerate(EFFICIENTNET_B0):
        for i in range(repeats):
            y = _mbconv(g, y, cin, cout, kernel, stride if i == 0 else 1, cin * expand, max(1, cin // 4),
                        "silu", "silu", "sigmoid", name=f"features.{stage + 1}.{i}")
            cin = cout
    y = _activation(g, _conv_bn(g, y, cin, 1280, 1, name="head"), "silu")
    return g.model("efficientnet_b0", [_float_input("x", [1, 3, resolution, resolution])],
                   {"logits": _classifier(g, y, 1280, classes)})


# --- speech: wav2vec2's convolutional feature encoder ------------------------------------------

WAV2VEC2_CONVS = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2  # kernel, stride


def speech_front_end(samples: int = 16000, channels: int = 512, seed: int = 0) -> onnx.ModelProto:
    """wav2vec2-base's feature encoder as torch.onnx writes it: seven bias-free Conv1d (k10/5 from
    the raw signal, then k3/2 and k2/2, 512 channels), GroupNorm(512 groups) after the first
    (Reshape, InstanceNormalization, Reshape, Mul, Add), GELU as Erf; input `x` [1, 1, samples]."""
    g = GraphBuilder(seed)
    y, cin = "x", 1
    for i, (kernel, stride) in enumerate(WAV2VEC2_CONVS):
        y = g.node("Conv", [y, g.weight(f"conv{i}.weight", channels, cin, kernel)], kernel_shape=[kernel],
                   strides=[stride])
        if i == 0:
            grouped = g.node("Reshape", [y, g.ints("groups", [0, channels, -1])])
            normed = g.node("InstanceNormalization", [grouped, g.const("ones", np.ones(channels, np.float32)),
                                                      g.const("zeros", np.zeros(channels, np.float32))],
                            epsilon=1e-5)
            y = g.node("Reshape", [normed, g.node("Shape", [y])])
            y = g.node("Mul", [y, g.const("norm.weight", g.rng.uniform(0.5, 1.5, (channels, 1)).astype(np.float32))])
            shift = (g.rng.standard_normal((channels, 1)) * 0.1).astype(np.float32)
            y = g.node("Add", [y, g.const("norm.bias", shift)])
        y = _gelu(g, y, "erf")
        cin = channels
    return g.model("speech_front_end", [_float_input("x", [1, 1, samples])], {"features": y})


def _basic_block(g: GraphBuilder, x: str, cin: int, cout: int, stride: int, name: str) -> str:
    y = g.node("Relu", [_conv_bn(g, x, cin, cout, 3, stride, name=f"{name}.conv1")])
    y = _conv_bn(g, y, cout, cout, 3, name=f"{name}.conv2")
    shortcut = x if stride == 1 and cin == cout else _conv_bn(g, x, cin, cout, 1, stride, name=f"{name}.downsample")
    return g.node("Relu", [g.node("Add", [y, shortcut])])


def resnet18(resolution: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """torchvision ResNet-18, input `x` [1, 3, resolution, resolution], opset 17."""
    g = GraphBuilder(seed)
    y = g.node("Relu", [_conv_bn(g, "x", 3, 64, 7, 2, name="conv1")])
    y = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for layer, cout in enumerate((64, 128, 256, 512)):
        for i in range(2):
            y = _basic_block(g, y, cin, cout, 2 if i == 0 and layer > 0 else 1, name=f"layer{layer + 1}.{i}")
            cin = cout
    return g.model("resnet18", [_float_input("x", [1, 3, resolution, resolution])],
                   {"logits": _classifier(g, y, 512, classes)})


def resnet_block(channels: int = 16, resolution: int = 32, batch: int | str = 1, seed: int = 0) -> onnx.ModelProto:
    """Stem conv, an identity basic block and a downsampling one (1x1 stride-2 shortcut), classifier.

    Input `x` [batch, 3, resolution, resolution]; batch may be a symbolic name such as "N".
    """
    g = GraphBuilder(seed)
    y = g.node("Relu", [_conv_bn(g, "x", 3, channels, 3, name="stem")])
    y = _basic_block(g, y, channels, channels, 1, name="block0")
    y = _basic_block(g, y, channels, 2 * channels, 2, name="block1")
    return g.model("resnet_block", [_float_input("x", [batch, 3, resolution, resolution])],
                   {"logits": _classifier(g, y, 2 * channels, 10)})


# --- one small model written at each opset whose operator signatures differ ---------------------

def opset_variants(opset: int, seed: int = 0) -> onnx.ModelProto:
    """BatchNormalization, Clip, Pad, Slice, Split, Squeeze/Unsqueeze, Dropout, ReduceMean, Reshape
    and Softmax on x [1, 4, 8, 8], each in the form its operator docs give at `opset` (7 to 21).

    Attributes became inputs at: Pad 11, Clip 11, Slice 10, Split 13, Squeeze/Unsqueeze 13,
    Dropout ratio 12, ReduceMean axes 18. Softmax below opset 13 flattens from `axis` into 2-D.
    """
    g = GraphBuilder(seed, opset)
    bn = [g.const("bn.scale", g.rng.uniform(0.5, 1.5, 4).astype(np.float32)), g.bias("bn.bias", 4),
          g.bias("bn.mean", 4), g.const("bn.var", g.rng.uniform(0.5, 1.5, 4).astype(np.float32))]
    y = g.node("BatchNormalization", ["x", *bn], epsilon=1e-5)
    if opset >= 11:
        y = g.node("Clip", [y, g.scalar("min", -0.5), g.scalar("max", 1.5)])
        y = g.node("Pad", [y, g.ints("pads", [0, 0, 1, 2, 0, 0, 2, 1]), g.scalar("pad_value", 0.25)])
    else:
        y = g.node("Clip", [y], min=-0.5, max=1.5)
        y = g.node("Pad", [y], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.25)
    # Padded to [1, 4, 11, 11]; Slice back a strided 5x5 window (steps exist from opset 10).
    if opset >= 10:
        y = g.node("Slice", [y, g.ints("starts", [1, 1]), g.ints("ends", [11, -1]), g.ints("axes", [2, 3]),
                             g.ints("steps", [2, 2])])
    else:
        y = g.node("Slice", [y], starts=[1, 2], ends=[6, 7], axes=[2, 3])
    if opset >= 13:
        a, b = g.node("Split", [y, g.ints("split", [1, 3])], outputs=2, axis=1)
        a = g.node("Unsqueeze", [g.node("Squeeze", [a, g.ints("axes", [1])]), g.ints("axes", [1])])
    else:
        a, b = g.node("Split", [y], outputs=2, axis=1, split=[1, 3])
        a = g.node("Unsqueeze", [g.node("Squeeze", [a], axes=[1])], axes=[1])
    y = g.node("Concat", [b, a], axis=1)
    y = g.node("Dropout", [y, g.scalar("ratio", 0.3)]) if opset >= 12 else g.node("Dropout", [y], ratio=0.3)
    y = g.reduce_mean(y, [3])
    y = g.node("Softmax", [y], axis=1)  # [1, 4, 5, 1]: one axis from 13, axes 1.. flattened before
    y = g.node("Reshape", [y, g.ints("shape", [0, -1])])
    return g.model("opset_variants", [_float_input("x", [1, 4, 8, 8])], {"y": y})


# --- a BERT layer exported with symbolic batch and sequence axes (issue 18) ---------------------

def symbolic_bert_layer(d_model: int = 64, heads: int = 4, ffn: int = 256, vocab: int = 100,
                        batch: int | str = "batch", seq: int | str = "seq", seed: int = 0) -> onnx.ModelProto:
    """Embedding lookup, one post-norm encoder layer with a padding mask, as torch.onnx exports a
    BERT with `dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, ...}`: the head reshapes read
    the sizes through Shape -> Gather -> Unsqueeze -> Concat. Inputs `input_ids` and
    `attention_mask` [batch, seq] int64; output `hidden` [batch, seq, d_model]. Opset 17."""
    g, dk = GraphBuilder(seed), d_model // heads
    x = g.node("Gather", [g.weight("embeddings", vocab, d_model, fan_in=1), "input_ids"], axis=0)
    keep = g.node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = g.node("Mul", [g.node("Sub", [g.scalar("one", 1.0), keep]), g.scalar("neg_big", -10000.0)])
    bias = g.node("Unsqueeze", [bias, g.ints("axes", [1, 2])])  # [batch, 1, 1, seq]
    q, k, v = (_split_heads(g, _linear(g, x, d_model, d_model, f"attn.{n}"), heads, dk) for n in "qkv")
    scores = g.node("Div", [g.node("MatMul", [q, g.node("Transpose", [k], perm=[0, 1, 3, 2])]),
                            g.scalar("sqrt_dk", math.sqrt(dk))])
    probs = g.node("Softmax", [g.node("Add", [scores, bias])], axis=-1)
    context = g.node("Transpose", [g.node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    merged = g.node("Concat", [_dim(g, context, 0), _dim(g, context, 1), g.ints("d", [d_model])], axis=0)
    attn = _linear(g, g.node("Reshape", [context, merged]), d_model, d_model, "attn.out")
    h = _layer_norm(g, g.node("Add", [x, attn]), d_model, False, "ln1")
    up = _gelu(g, _linear(g, h, d_model, ffn, "ffn.up"), "erf")
    out = _layer_norm(g, g.node("Add", [h, _linear(g, up, ffn, d_model, "ffn.down")]), d_model, False, "ln2")
    ids = [helper.make_tensor_value_info(name, TensorProto.INT64, [batch, seq])
           for name in ("input_ids", "attention_mask")]
    return g.model("symbolic_bert_layer", ids, {"hidden": out})


# --- recurrent layers (torch.nn.LSTM / GRU, batch_first, as torch.onnx exports them; issue 18) ---

def recurrent(kind: str = "LSTM", hidden: int = 256, seq: int = 64, batch: int = 1, features: int = 128,
              layers: int = 1, seed: int = 0) -> onnx.ModelProto:
    """A stack of `layers` torch.nn.LSTM/GRU layers with batch_first=True as the TorchScript
    exporter writes them: Transpose to time-major, one node per layer with zero initial states
    as constants, Squeeze of the direction axis between layers, Transpose back. torch's gate
    order (ifgo, rzn) is already permuted into ONNX's (iofc, zrh) in the weights, and GRU has
    linear_before_reset=1. Input `x` [batch, seq, features]; outputs `y` [batch, seq, hidden]
    and `h_n` [layers, batch, hidden]. Opset 17."""
    g = GraphBuilder(seed)
    gates = {"LSTM": 4, "GRU": 3}[kind]
    y, width, finals = g.node("Transpose", ["x"], perm=[1, 0, 2]), features, []
    for layer in range(layers):
        zeros = g.const(f"h0.{layer}", np.zeros((1, batch, hidden), np.float32))
        inputs = [y, g.weight(f"W.{layer}", 1, gates * hidden, width, fan_in=hidden),
                  g.weight(f"R.{layer}", 1, gates * hidden, hidden, fan_in=hidden),
                  g.weight(f"B.{layer}", 1, 2 * gates * hidden, fan_in=hidden), "", zeros]
        attrs = {"linear_before_reset": 1} if kind == "GRU" else {}
        if kind == "LSTM":
            inputs.append(g.const(f"c0.{layer}", np.zeros((1, batch, hidden), np.float32)))
        outs = g.node(kind, inputs, outputs=3 if kind == "LSTM" else 2, hidden_size=hidden, **attrs)
        y = g.node("Squeeze", [outs[0], g.ints("axis", [1])])
        finals.append(outs[1])
        width = hidden
    h_n = finals[0] if layers == 1 else g.node("Concat", finals, axis=0)
    return g.model(f"{kind.lower()}{layers}", [_float_input("x", [batch, seq, features])],
                   {"y": g.node("Transpose", [y], perm=[1, 0, 2]), "h_n": h_n})
