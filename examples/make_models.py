"""Build the example models shipped in examples/models with onnx.helper (seeded weights).

    python examples/make_models.py    # rewrites examples/models/*.onnx

mlp.onnx: 784-512-512-10 MLP (Gemm+Relu, batch 1). cnn.onnx: a small CNN
(Conv/BatchNormalization/Relu/MaxPool, a residual Add, GlobalAveragePool,
Flatten, Gemm, Softmax) on a 1x3x32x32 image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _weights(rng, name, *shape, scale=None):
    scale = scale if scale is not None else 1.0 / np.sqrt(np.prod(shape[1:]) or 1)
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def mlp(batch: int = 1, sizes=(784, 512, 512, 10), seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "input"
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        inits += [_weights(rng, f"fc{i}.weight", fan_out, fan_in), _weights(rng, f"fc{i}.bias", fan_out, scale=0.1)]
        nodes.append(helper.make_node("Gemm", [current, f"fc{i}.weight", f"fc{i}.bias"], [f"fc{i}"],
                                      name=f"fc{i}", transB=1))
        current = f"fc{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"], name=f"relu{i}"))
            current = f"relu{i}"
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(nodes, "mlp",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, sizes[0]])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, sizes[-1]])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dlc-examples")


def cnn(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv_bn_relu(name, source, cin, cout, stride=1, relu=True):
        inits.extend([_weights(rng, f"{name}.weight", cout, cin, 3, 3),
                      numpy_helper.from_array(rng.uniform(0.5, 1.5, cout).astype(np.float32), f"{name}.bn.scale"),
                      numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"{name}.bn.bias"),
                      numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"{name}.bn.mean"),
                      numpy_helper.from_array(rng.uniform(0.5, 1.5, cout).astype(np.float32), f"{name}.bn.var")])
        nodes.append(helper.make_node("Conv", [source, f"{name}.weight"], [f"{name}.conv"], name=f"{name}.conv",
                                      pads=[1, 1, 1, 1], strides=[stride, stride]))
        nodes.append(helper.make_node("BatchNormalization",
                                      [f"{name}.conv"] + [f"{name}.bn.{p}" for p in ("scale", "bias", "mean", "var")],
                                      [f"{name}.bn"], name=f"{name}.bn"))
        if not relu:
            return f"{name}.bn"
        nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    x = conv_bn_relu("stem", "image", 3, 16)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    y = conv_bn_relu("block.a", "pool", 16, 16)
    y = conv_bn_relu("block.b", y, 16, 16, relu=False)
    nodes.append(helper.make_node("Add", ["pool", y], ["residual"], name="residual"))
    nodes.append(helper.make_node("Relu", ["residual"], ["block.out"], name="block.relu"))
    z = conv_bn_relu("down", "block.out", 16, 32, stride=2)
    nodes.append(helper.make_node("GlobalAveragePool", [z], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    inits += [_weights(rng, "fc.weight", 10, 32), _weights(rng, "fc.bias", 10, scale=0.1)]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1))
    graph = helper.make_graph(nodes, "cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 10])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dlc-examples")


def main() -> None:
    out = Path(__file__).parent / "models"
    out.mkdir(exist_ok=True)
    for name, model in (("mlp", mlp()), ("cnn", cnn())):
        onnx.checker.check_model(model)
        onnx.save(model, out / f"{name}.onnx")
        print(f"wrote {out / name}.onnx")


if __name__ == "__main__":
    main()
