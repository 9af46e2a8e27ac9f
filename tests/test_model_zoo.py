"""The nine ONNX "light" model-zoo models (onnx/backend/test/data/light): shipped outputs, random weights.

Inputs and tolerances are those of `onnx.backend.test.runner` for these models: no input files
ship, so the runner feeds arange(n)/n in the input's shape and compares with rtol 1e-3, atol 1e-7.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import random_feeds, run_onnxruntime
from onnx import helper, numpy_helper

import dlc

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

# The runner's defaults (onnx/backend/test/loader: rtol 1e-3, atol 1e-7); light models set none.
RUNNER_RTOL, RUNNER_ATOL = 1e-3, 1e-7

MODELS = [
    "squeezenet",
    "shufflenet",
    pytest.param("resnet50", marks=pytest.mark.slow),
    pytest.param("vgg19", marks=pytest.mark.slow),
    pytest.param("densenet121", marks=pytest.mark.slow),
    pytest.param("inception_v2", marks=pytest.mark.slow),
    pytest.param("bvlc_alexnet", marks=pytest.mark.slow),
    pytest.param("zfnet512", marks=pytest.mark.slow),
    pytest.param("inception_v1", marks=pytest.mark.slow),
]


def load(name: str) -> onnx.ModelProto:
    return onnx.load(LIGHT / f"light_{name}.onnx")


def runner_input(value: onnx.ValueInfoProto) -> np.ndarray:
    """What `Runner.generate_dummy_data(random=False)` feeds: arange(n)/n, symbolic dims as 1."""
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


@pytest.mark.parametrize("name", MODELS)
def test_matches_shipped_outputs(name):
    model = load(name)
    compiled = dlc.compile(model)
    (value,) = [v for v in model.graph.input if v.name == compiled.input_names[0]]
    got = compiled.run({value.name: runner_input(value)})
    want = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / f"light_{name}_output_0.pb")))
    (output,) = got.values()
    np.testing.assert_allclose(output, want, rtol=RUNNER_RTOL, atol=RUNNER_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "vgg19"])
def test_matches_shipped_outputs_with_the_direct_conv(name):
    """Their stride-1 3x3 convs over 14x14-224x224 maps as direct convs (`--no-winograd`), where
    the default runs them as Winograd F(2x2, 3x3)."""
    model = load(name)
    compiled = dlc.compile(model, winograd=False)
    (value,) = [v for v in model.graph.input if v.name == compiled.input_names[0]]
    (output,) = compiled.run({value.name: runner_input(value)}).values()
    want = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / f"light_{name}_output_0.pb")))
    np.testing.assert_allclose(output, want, rtol=RUNNER_RTOL, atol=RUNNER_ATOL)


def _consumers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Who reads each value, looking through the Unsqueeze/Reshape that caffe2 exports put on scales."""
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, index))
    resolved = {}
    for name, uses in readers.items():
        final = []
        for node, index in uses:
            if node.op_type in ("Unsqueeze", "Reshape") and index == 0:
                final += readers.get(node.output[0], [])
            else:
                final.append((node, index))
        resolved[name] = final
    return resolved


def _random_weight(rng, shape, uses) -> np.ndarray:
    """He-scaled weights (deep ReLU nets keep their activation scale, so outputs are not uniform);
    positive scales and variances; small biases."""
    kinds = {(node.op_type, index) for node, index in uses}
    if len(shape) >= 2:
        transposed = any(op in ("Gemm", "MatMul") and not any(a.name == "transB" and a.i for a in node.attribute)
                         for node, _ in uses for op in [node.op_type])
        fan_in = shape[0] if transposed else int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if kinds & {("BatchNormalization", 1), ("BatchNormalization", 4)} or any(op == "Mul" for op, _ in kinds):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def _drop_final_softmax(model: onnx.ModelProto) -> None:
    last = model.graph.node[-1]
    if last.op_type == "Softmax" and last.output[0] == model.graph.output[0].name:
        model.graph.node.remove(last)
        model.graph.output[0].name = last.input[0]  # the logits: same shape and type


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Every float weight (initializer or ConstantOfShape fill) replaced by seeded random values,
    and the final Softmax removed so the logits are compared.

    The shipped weights are ConstantOfShape fills of 0.02, which make 8 of 9 outputs 0.001 for
    every class: a wrong kernel would still match them. With random weights the logits of deep
    residual nets reach the hundreds and their softmax saturates to one-hot, which hides errors too.
    """
    rng = np.random.default_rng(seed)
    uses = _consumers(model)
    shapes = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = {}
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            weights[node.output[0]] = tuple(int(d) for d in shapes[node.input[0]])
    for name, array in shapes.items():
        if array.dtype == np.float32:
            weights[name] = array.shape
    new = onnx.ModelProto()
    new.CopyFrom(model)
    _drop_final_softmax(new)
    fills = [n for n in new.graph.node if n.op_type == "ConstantOfShape" and n.output[0] in weights]
    for node in fills:
        new.graph.node.remove(node)
    del new.graph.initializer[:]
    for name, array in shapes.items():
        if name not in weights and any(name in n.input for n in new.graph.node):
            new.graph.initializer.append(numpy_helper.from_array(array, name))
    for name, shape in weights.items():
        new.graph.initializer.append(numpy_helper.from_array(_random_weight(rng, shape, uses.get(name, [])), name))
    # IR version 3 lists every initializer as a graph input too.
    kept = {i.name for i in new.graph.initializer}
    real = [v for v in new.graph.input if v.name not in shapes and v.name not in weights]
    del new.graph.input[:]
    new.graph.input.extend(real)
    new.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, i.dims) for i in new.graph.initializer
                           if i.name in kept)
    onnx.checker.check_model(new)
    return new


@pytest.mark.parametrize("name", MODELS)
def test_random_weights_match_onnxruntime(name):
    model = with_random_weights(load(name))
    feeds = random_feeds(model)
    (want,) = run_onnxruntime(model, feeds)
    (got,) = dlc.compile(model).run(feeds).values()
    # 20-120 layers of float32 sums in another order than onnxruntime's: the runner's rtol 1e-3.
    # Logits near zero are cancellations of terms as large as the largest logit, so the absolute
    # slack scales with that.
    np.testing.assert_allclose(got, want, rtol=RUNNER_RTOL, atol=1e-5 * float(np.abs(want).max()))
