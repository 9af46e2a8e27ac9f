"""Models as torch.onnx writes them (benchmarks/models.py), small sizes, against onnxruntime.

Covers the exporter idioms (Shape->Gather->Unsqueeze->Concat->Reshape head splits, Split of a
fused QKV, masks through Cast/Expand/Where, decomposed LayerNorm and GELU), the operator
signatures of opsets 7 to 21, and symbolic batch dimensions fixed with input_shapes / --shape.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT, assert_matches_onnxruntime, random_feeds, run_onnxruntime

import dlc
from dlc.cli import main


def _load_models():
    # By path: xDSL installs a top-level `benchmarks` package that shadows ours.
    spec = importlib.util.spec_from_file_location("dlc_benchmark_models", ROOT / "benchmarks" / "models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


models = _load_models()


@pytest.mark.parametrize("layernorm", ["op", "decomposed"])
@pytest.mark.parametrize("gelu", ["erf", "tanh", "op"])
def test_transformer_encoder(layernorm, gelu):
    model = models.transformer_encoder(d_model=64, heads=4, seq=16, ffn=128,
                                       decomposed_layernorm=layernorm == "decomposed", gelu=gelu)
    assert_matches_onnxruntime(model)


def test_transformer_encoder_additive_mask():
    assert_matches_onnxruntime(models.transformer_encoder(d_model=64, heads=4, seq=16, ffn=128, mask="add"))


@pytest.mark.parametrize("activation", ["relu6", "hardswish"])
def test_mobilenet_block(activation):
    assert_matches_onnxruntime(models.mobilenet_block(channels=16, resolution=32, activation=activation))


@pytest.mark.parametrize("stride", [1, 2])
def test_se_block(stride):
    # Depthwise 5x5 on phase planes (a 7x7 map), squeeze-and-excitation's 1x1 convs on a 1x1 map.
    assert_matches_onnxruntime(models.se_block(channels=16, hidden=48, stride=stride, resolution=7))


def test_resnet_block():
    # Resolution 16, not 32: at 32x32 LLVM's O3 pipeline takes ~14 s on this block's Conv kernels.
    assert_matches_onnxruntime(models.resnet_block(channels=16, resolution=16))


def test_speech_front_end():
    # wav2vec2's seven strided Conv1d (GEMMs as unit-height convs), GroupNorm as
    # InstanceNormalization between Reshapes, GELU as Erf; 16 channels over 800 samples.
    assert_matches_onnxruntime(models.speech_front_end(samples=800, channels=16))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3", "efficientnet_b0"])
def test_mobile_networks_with_squeeze_excitation(name):
    # Depthwise 5x5, squeeze-and-excitation, HardSwish/HardSigmoid and SiLU/Sigmoid; 64x64 input.
    assert_matches_onnxruntime(getattr(models, name)(resolution=64, classes=10))


@pytest.mark.parametrize("batch", [1, 64])
def test_mlp(batch):
    assert_matches_onnxruntime(models.mlp(batch))


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 17, 21])
def test_opset_signatures(opset):
    model = models.opset_variants(opset)
    assert model.opset_import[0].version == opset
    assert_matches_onnxruntime(model)


def test_opset_variants_use_the_old_signatures():
    """The builder really writes attributes where old opsets had them (else the test above proves little)."""
    def attributes(model):
        return {(n.op_type, a.name) for n in model.graph.node for a in n.attribute}

    old, new = attributes(models.opset_variants(7)), attributes(models.opset_variants(21))
    for op, attr in [("Clip", "min"), ("Pad", "pads"), ("Slice", "starts"), ("Split", "split"),
                     ("Squeeze", "axes"), ("Unsqueeze", "axes"), ("Dropout", "ratio"), ("ReduceMean", "axes")]:
        assert (op, attr) in old and (op, attr) not in new


def _symbolic_batch_model() -> onnx.ModelProto:
    model = models.resnet_block(channels=8, resolution=16, batch="N")
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    return model


def test_symbolic_batch_compiles_at_the_first_run():
    model = _symbolic_batch_model()
    compiled = dlc.compile(model)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(compiled.run({"x": x})["logits"], run_onnxruntime(model, {"x": x})[0],
                               rtol=1e-4, atol=1e-5)


def test_symbolic_batch_fixed_by_input_shapes():
    model = _symbolic_batch_model()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    got = dlc.compile(model, input_shapes={"x": (1, 3, 16, 16)}).run({"x": x})
    np.testing.assert_allclose(got["logits"], run_onnxruntime(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_symbolic_batch_on_the_cli(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_symbolic_batch_model(), path)
    assert main(["compile", str(path), "-o", str(tmp_path / "out")]) == 1
    assert "'x' [N, 3, 16, 16]" in capsys.readouterr().err
    assert main(["run", str(path), "--repeat", "1"]) == 0  # N=1, said on stderr
    assert "logits: shape [1, 10] float32" in capsys.readouterr().out
    assert main(["run", str(path), "--shape", "x=1x3x16x16", "--repeat", "1"]) == 0
    assert "logits: shape [1, 10] float32" in capsys.readouterr().out


def test_intermediates_listed_as_outputs_keep_their_declared_shapes_through_opset_conversion():
    """The version converter re-infers graph outputs and left the exporter-style transformer's
    Reshape/Where intermediates symbolic; a declared static output shape must stand (what
    `dlc verify` and debugging exporters write)."""
    model = models.transformer_encoder(d_model=32, heads=2, seq=8, ffn=64)
    assert model.opset_import[0].version != 21  # so the converter runs
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    static = {v.name: v for v in inferred.graph.value_info
              if all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
    listed = [name for node in model.graph.node for name in node.output if name in static]
    model.graph.output.extend(static[name] for name in listed)
    outputs = dlc.compile(model).run(random_feeds(model))
    assert set(listed) <= set(outputs)


# Control flow as the torch exporters write it (issue 18.3; dlc/frontend/control_flow.py).

def _control_flow_model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = onnx.helper.make_graph(nodes, "exported", inputs, outputs, initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _value(name, shape, elem=onnx.TensorProto.FLOAT):
    return onnx.helper.make_tensor_value_info(name, elem, shape)


def _weight(name, shape, seed):
    array = np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32)
    return onnx.numpy_helper.from_array(array, name)


def test_torch_style_if_on_a_shape_comparison_is_inlined():
    """TorchScript's `if x.size(1) > 4: y = relu(x @ w) else: y = x[:, :4] @ w[:4]`:
    Shape -> Gather -> Greater -> Cast(bool) -> If, both branches reading outer values."""
    helper = onnx.helper
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["mm"]),
                              helper.make_node("Relu", ["mm"], ["big"])],
                             "then", [], [_value("big", [2, 6])])
    other = helper.make_graph([helper.make_node("Slice", ["x", "zero", "four", "one"], ["xs"]),
                               helper.make_node("Slice", ["w", "zero", "four", "zero"], ["ws"]),
                               helper.make_node("MatMul", ["xs", "ws"], ["small"])],
                              "else", [], [_value("small", [2, 6])])
    ints = onnx.TensorProto.INT64
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one_scalar"], ["width"], axis=0),
             helper.make_node("Greater", ["width", "four_scalar"], ["wide"]),
             helper.make_node("Cast", ["wide"], ["cond"], to=onnx.TensorProto.BOOL),
             helper.make_node("If", ["cond"], ["y"], name="size_branch", then_branch=then, else_branch=other)]
    initializers = [_weight("w", [8, 6], 1), helper.make_tensor("one_scalar", ints, [], [1]),
                    helper.make_tensor("four_scalar", ints, [], [4]), helper.make_tensor("zero", ints, [1], [0]),
                    helper.make_tensor("four", ints, [1], [4]), helper.make_tensor("one", ints, [1], [1])]
    model = _control_flow_model(nodes, [_value("x", [2, 8])], [_value("y", [2, 6])], initializers)
    from dlc.frontend.importer import import_model

    assert not [op for op in import_model(model).walk() if op.name == "onnx.If"]
    assert_matches_onnxruntime(model)


def test_loop_with_a_constant_trip_count_carrying_state():
    """`for _ in range(4): h = tanh(h @ r + x)` with the per-step h collected: a Loop whose
    trip count is an initializer, condition true, the body's condition a Constant true."""
    helper = onnx.helper
    true = helper.make_tensor("true_value", onnx.TensorProto.BOOL, [], [True])
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "r"], ["hr"]),
         helper.make_node("Add", ["hr", "x"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["h_out"]),
         helper.make_node("Identity", ["h_out"], ["h_step"]),
         helper.make_node("Constant", [], ["keep_going"], value=true)],
        "body", [_value("i", [], onnx.TensorProto.INT64), _value("cond_in", [], onnx.TensorProto.BOOL),
                 _value("h_in", [3, 5])],
        [_value("keep_going", [], onnx.TensorProto.BOOL), _value("h_out", [3, 5]), _value("h_step", [3, 5])])
    nodes = [helper.make_node("Loop", ["trips", "go", "h0"], ["h", "hs"], name="recurrence", body=body)]
    initializers = [_weight("r", [5, 5], 2), helper.make_tensor("trips", onnx.TensorProto.INT64, [], [4]),
                    helper.make_tensor("go", onnx.TensorProto.BOOL, [], [True])]
    model = _control_flow_model(nodes, [_value("x", [3, 5]), _value("h0", [3, 5])],
                                [_value("h", [3, 5]), _value("hs", [4, 3, 5])], initializers)
    assert_matches_onnxruntime(model)


def _scan_rnn(seq) -> onnx.ModelProto:
    """An Elman RNN over a batch-first sequence x[2, seq, 4] (scan axis 1), the hidden state
    carried and each step's output stacked on axis 1, as a hand-written recurrence exports to Scan."""
    helper = onnx.helper
    body = helper.make_graph(
        [helper.make_node("MatMul", ["xt", "w"], ["xw"]),
         helper.make_node("MatMul", ["h_in", "r"], ["hr"]),
         helper.make_node("Add", ["xw", "hr"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["h_out"]),
         helper.make_node("Identity", ["h_out"], ["y"])],
        "body", [_value("h_in", [2, 3]), _value("xt", [2, 4])], [_value("h_out", [2, 3]), _value("y", [2, 3])])
    nodes = [helper.make_node("Scan", ["h0", "x"], ["h", "ys"], name="rnn", body=body, num_scan_inputs=1,
                              scan_input_axes=[1], scan_output_axes=[1])]
    return _control_flow_model(nodes, [_value("h0", [2, 3]), _value("x", [2, seq, 4])],
                               [_value("h", [2, 3]), _value("ys", [2, seq, 3])],
                               [_weight("w", [4, 3], 3), _weight("r", [3, 3], 4)])


def test_scan_over_the_sequence_axis():
    assert_matches_onnxruntime(_scan_rnn(6))


def test_scan_over_a_symbolic_sequence_axis_compiles_once_per_length():
    """The sequence axis left symbolic, as export recipes leave it: each new length unrolls anew."""
    model = _scan_rnn("seq")
    compiled = dlc.compile(model)
    for length in (3, 5, 3):
        feeds = {"h0": np.zeros((2, 3), np.float32),
                 "x": np.random.default_rng(length).uniform(-1, 1, (2, length, 4)).astype(np.float32)}
        got = compiled.run(feeds)
        for (name, value), want in zip(got.items(), run_onnxruntime(model, feeds)):
            np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=name)
    assert compiled.compiles == 2
