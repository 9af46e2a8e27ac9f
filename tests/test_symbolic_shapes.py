"""Models with symbolic dimensions (issue 18): pins by input or dimension name, `dlc run`'s
defaults, and one error naming every input left symbolic. Outputs against onnxruntime."""

from __future__ import annotations

import importlib.util
import json
import time
import warnings

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_onnxruntime

import dlc
from dlc.cli import main
from dlc.errors import ArtifactError, InputError, ModelLoadError


def _benchmark_models():
    spec = importlib.util.spec_from_file_location("dlc_benchmark_models", ROOT / "benchmarks" / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


models = _benchmark_models()


@pytest.fixture(scope="module")
def bert():
    return models.symbolic_bert_layer(d_model=32, heads=2, ffn=64, vocab=50)


def bert_feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[:, seq - seq // 3:] = 0  # padding at the end of every sequence
    return {"input_ids": rng.integers(0, 50, (batch, seq)).astype(np.int64), "attention_mask": mask}


def assert_bert_matches(model, compiled, batch: int, seq: int) -> None:
    feeds = bert_feeds(batch, seq)
    got = compiled.run(feeds)["hidden"]
    want = run_onnxruntime(model, feeds)[0]
    assert got.shape == want.shape == (batch, seq, 32)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# --- pins -----------------------------------------------------------------------------------------

def test_dimension_names_pin_every_input_that_uses_them(bert):
    assert_bert_matches(bert, dlc.compile(bert, input_shapes={"batch": 2, "seq": 5}), 2, 5)


def test_an_input_pinned_by_name_wins_over_dimension_names(bert):
    compiled = dlc.compile(bert, input_shapes={"input_ids": (1, 7), "attention_mask": (1, 7), "seq": 3})
    assert [spec.shape for spec in compiled.inputs] == [(1, 7), (1, 7)]


def test_unknown_pin_names_the_inputs_and_dimension_names(bert):
    with pytest.raises(ModelLoadError, match=r"'sequence', which is neither an input nor a symbolic dimension.*"
                                             r"\['attention_mask', 'input_ids'\].*\['batch', 'seq'\]"):
        dlc.compile(bert, input_shapes={"sequence": 8})


def test_a_dimension_name_takes_one_size(bert):
    with pytest.raises(ModelLoadError, match=r"'seq' is a symbolic dimension name, which takes one size"):
        dlc.compile(bert, input_shapes={"seq": (1, 8)})


def test_the_error_names_every_symbolic_input_at_once(bert, tmp_path, capsys):
    path = tmp_path / "bert.onnx"
    onnx.save(bert, path)
    assert main(["compile", str(path), "-o", str(tmp_path / "out"), "--shape", "batch=1"]) == 1
    err = capsys.readouterr().err
    assert "2 input(s) have symbolic dimensions" in err
    assert "'input_ids' [batch, seq], 'attention_mask' [batch, seq]" in err
    assert "--shape batch=1,seq=1" in err and "--shape input_ids=1x1,attention_mask=1x1" in err
    assert err.count("error:") == 1  # one error for both inputs


# --- the command line -----------------------------------------------------------------------------

def test_shape_takes_a_comma_separated_list_and_later_wins(bert, tmp_path, capsys):
    path = tmp_path / "bert.onnx"
    onnx.save(bert, path)
    args = ["run", str(path), "--repeat", "1", "--shape", "input_ids=1x4,attention_mask=1x4",
            "--shape", "batch=3,seq=9", "--shape", "seq=6"]
    assert main(args) == 0
    assert "hidden: shape [1, 4, 32] float32" in capsys.readouterr().out  # inputs named win
    assert main(["run", str(path), "--repeat", "1", "--shape", "batch=3,seq=9", "--shape", "seq=6"]) == 0
    assert "hidden: shape [3, 6, 32] float32" in capsys.readouterr().out


def test_run_sets_unpinned_dimensions_to_one_and_says_so(bert, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DLC_QUIET", "0")
    path = tmp_path / "bert.onnx"
    onnx.save(bert, path)
    assert main(["run", str(path), "--repeat", "1", "--shape", "seq=5"]) == 0
    out, err = capsys.readouterr()
    assert "hidden: shape [1, 5, 32] float32" in out
    assert [line for line in err.splitlines() if "symbolic" in line] == [
        "dlc run: symbolic dimensions set to batch=1; pin other sizes with --shape NAME=SIZE"]
    assert main(["run", str(path), "--repeat", "1", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "hidden: shape [1, 1, 32] float32" in out and "symbolic" not in err


def test_run_takes_the_shape_of_an_input_file(bert, tmp_path, capsys):
    path = tmp_path / "bert.onnx"
    onnx.save(bert, path)
    feeds = bert_feeds(2, 6)
    for name, array in feeds.items():
        np.save(tmp_path / f"{name}.npy", array)
    args = ["run", str(path), "--repeat", "1", "--save-outputs", str(tmp_path / "outs"),
            *(f"--input={name}={tmp_path / name}.npy" for name in feeds)]
    assert main(args) == 0
    np.testing.assert_allclose(np.load(tmp_path / "outs" / "hidden.npy"), run_onnxruntime(bert, feeds)[0],
                               rtol=1e-4, atol=1e-5)


def test_unnamed_dimensions_are_pinned_per_input(tmp_path, capsys):
    model = models.symbolic_bert_layer(d_model=32, heads=2, ffn=64, vocab=50)
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[1].ClearField("dim_param")
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert main(["compile", str(path), "-o", str(tmp_path / "out"), "--shape", "batch=1"]) == 1
    err = capsys.readouterr().err
    assert "'input_ids' [batch, ?]" in err and "--shape input_ids=1x1,attention_mask=1x1" in err
    assert main(["run", str(path), "--repeat", "1", "--shape", "batch=2"]) == 0
    assert "hidden: shape [2, 1, 32] float32" in capsys.readouterr().out


# --- specialisations ------------------------------------------------------------------------------

def test_compile_specialises_on_each_new_shape_and_keeps_them(bert):
    compiled = dlc.compile(bert, input_shapes={"batch": 1})
    assert [list(spec.shape) for spec in compiled.inputs] == [[1, "seq"], [1, "seq"]]
    for seq in (4, 7, 4, 7):
        assert_bert_matches(bert, compiled, 1, seq)
    assert compiled.compiles == 2
    assert compiled.shapes == [{"input_ids": (1, 4), "attention_mask": (1, 4)},
                               {"input_ids": (1, 7), "attention_mask": (1, 7)}]
    with pytest.raises(InputError, match=r"input 'input_ids': expected shape \[1, 'seq'\], got \[2, 4\]"):
        compiled.run(bert_feeds(2, 4))


def test_the_least_recently_used_shape_goes_first_and_comes_back_from_the_compile_cache(bert):
    compiled = dlc.compile(bert, input_shapes={"batch": 1}, max_shapes=2)
    for seq in (3, 5, 3, 6):
        compiled.run(bert_feeds(1, seq))
    assert [s["input_ids"] for s in compiled.shapes] == [(1, 3), (1, 6)]
    assert compiled.compiles == 3
    started = time.perf_counter()
    assert_bert_matches(bert, compiled, 1, 5)  # dropped from memory, a cache load now
    assert compiled.compiles == 4 and time.perf_counter() - started < 2.0


def test_a_saved_model_holds_its_shapes_and_names_them_for_another(bert, tmp_path):
    compiled = dlc.compile(bert, input_shapes={"batch": 1})
    for seq in (3, 5):
        compiled.run(bert_feeds(1, seq))
    compiled.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shape-0", "shape-1", "shapes.json"]
    loaded = dlc.load(tmp_path / "out")
    assert_bert_matches(bert, loaded, 1, 5)
    assert loaded.compiles == 0
    with pytest.raises(InputError, match=r"no specialisation for input shapes input_ids=1x4, attention_mask=1x4: "
                                         r"this artifact holds input_ids=1x3, attention_mask=1x3; "
                                         r"input_ids=1x5, attention_mask=1x5"):
        loaded.run(bert_feeds(1, 4))


def test_a_saved_model_with_its_source_compiles_new_shapes(bert, tmp_path):
    compiled = dlc.compile(bert, input_shapes={"batch": 1})
    compiled.run(bert_feeds(1, 3))
    compiled.save(tmp_path / "out", include_model=True)
    loaded = dlc.load(tmp_path / "out")
    assert_bert_matches(bert, loaded, 1, 4)
    assert loaded.compiles == 1 and len(loaded.shapes) == 2


@pytest.mark.parametrize("edit", ["version", "directory", "shape"])
def test_a_damaged_shapes_index_is_refused(bert, tmp_path, edit):
    compiled = dlc.compile(bert, input_shapes={"batch": 1})
    compiled.run(bert_feeds(1, 3))
    compiled.save(tmp_path / "out")
    index_path = tmp_path / "out" / "shapes.json"
    index = json.loads(index_path.read_text())
    if edit == "version":
        index["version"] = 99
    elif edit == "directory":
        index["shapes"][0]["directory"] = "../elsewhere"
    else:
        index["shapes"][0]["inputs"]["input_ids"] = [1, "3"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="not a dlc shapes index"):
        dlc.load(tmp_path / "out")


# --- the batch axis: one compile for every batch size ---------------------------------------------

def test_a_dynamic_batch_cnn_compiles_once_for_every_batch_size():
    model = models.resnet_block(channels=8, resolution=16, batch="N")
    compiled = dlc.compile(model)
    assert compiled.batch == "N"
    rng = np.random.default_rng(0)
    for batch in (1, 3, 8):
        x = rng.uniform(-1, 1, (batch, 3, 16, 16)).astype(np.float32)
        got = compiled.run({"x": x})["logits"]
        want = run_onnxruntime(model, {"x": x})[0]
        assert got.shape == want.shape == (batch, 10)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert compiled.compiles == 1 and compiled.shapes == [{"x": (1, 3, 16, 16)}]


def test_a_transformer_with_symbolic_batch_and_sequence_compiles_once_per_sequence_length(bert):
    compiled = dlc.compile(bert)
    assert compiled.batch == "batch"
    for batch, seq in ((2, 8), (3, 8), (1, 12), (4, 12)):
        assert_bert_matches(bert, compiled, batch, seq)
    assert compiled.compiles == 2  # seq 8 and seq 12, each at batch 1
    with pytest.raises(InputError, match=r"share the batch dimension 'batch', got the sizes \[1, 2\]"):
        compiled.run({"input_ids": bert_feeds(1, 8)["input_ids"], "attention_mask": bert_feeds(2, 8)["attention_mask"]})


def test_a_model_that_mixes_samples_is_compiled_per_batch_size_with_a_note():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    mean = helper.make_node("ReduceMean", ["x"], ["m"], name="batch_mean", axes=[0], keepdims=1)
    model = helper.make_model(helper.make_graph([mean, helper.make_node("Sub", ["x", "m"], ["y"], name="centre")],
                                                "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.warns(UserWarning, match=r"compiling per batch size: .* node 'batch_mean' \(ReduceMean\) "
                                         r"reduces over the batch axis"):
        compiled = dlc.compile(model)
    assert compiled.batch is None
    for batch in (2, 3):
        feeds = {"x": np.random.default_rng(batch).uniform(-1, 1, (batch, 4)).astype(np.float32)}
        np.testing.assert_allclose(compiled.run(feeds)["y"], run_onnxruntime(model, feeds)[0], rtol=1e-5, atol=1e-6)
    assert compiled.compiles == 2


def test_a_saved_batch_model_serves_every_batch_size(tmp_path):
    model = models.resnet_block(channels=8, resolution=16, batch="N")
    compiled = dlc.compile(model)
    compiled.run({"x": np.zeros((1, 3, 16, 16), np.float32)})
    compiled.save(tmp_path / "out")
    loaded = dlc.load(tmp_path / "out")
    x = np.random.default_rng(1).uniform(-1, 1, (5, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(loaded.run({"x": x})["logits"], run_onnxruntime(model, {"x": x})[0],
                               rtol=1e-4, atol=1e-5)
    assert loaded.compiles == 0


# --- the proof alone (no compile) -----------------------------------------------------------------

def _graph(nodes, inputs, outputs, initializers=()):
    from onnx import TensorProto, helper

    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], list(initializers)),
        opset_imports=[helper.make_opsetid("", 17)])
    return model


def _ints(name, values):
    return onnx.numpy_helper.from_array(np.asarray(values, np.int64), name)


@pytest.mark.parametrize("nodes, initializers, proved, why", [
    ([("Softmax", ["x"], {"axis": -1})], [], True, ""),
    ([("Softmax", ["x"], {"axis": 0})], [], False, "works along axis 0, the batch axis"),
    ([("Transpose", ["x"], {"perm": [1, 0, 2]})], [], False, "moves the batch axis"),
    ([("Reshape", ["x", "flat"], {})], [_ints("flat", [0, -1])], True, ""),
    ([("Reshape", ["x", "rows"], {})], [_ints("rows", [-1, 8])], False, "leading dimension"),
    ([("ReduceSum", ["x", "axes"], {"keepdims": 0})], [_ints("axes", [2])], True, ""),
    ([("ReduceSum", ["x", "axes"], {"keepdims": 1})], [_ints("axes", [0])], False, "reduces over the batch axis"),
    ([("Size", ["x"], {}), ("Cast", ["Size_0"], {"to": 1}), ("Div", ["x", "Cast_1"], {})], [], False,
     "reads the batch size as data"),
    ([("NonZero", ["x"], {})], [], False, "is not one of the operators"),
    ([("Unsqueeze", ["x", "axes"], {}), ("MaxPool", ["Unsqueeze_0"], {"kernel_shape": [1, 2]})],
     [_ints("axes", [1])], True, ""),
])
def test_the_batch_proof(nodes, initializers, proved, why):
    from onnx import helper

    from dlc.frontend.batch_axis import batch_dimension

    made, previous = [], "x"
    for index, (op, inputs, attrs) in enumerate(nodes):
        name = f"{op}_{index}"
        made.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        previous = name
    model = _graph(made, [("x", ["N", 4, 8])], [previous], initializers)
    name, reason = batch_dimension(model)
    assert (name == "N") is proved and why in reason


def test_the_proof_reads_exporters_shape_idiom_and_refuses_a_batch_dimension_elsewhere():
    from onnx import helper

    from dlc.frontend.batch_axis import batch_dimension

    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    consts = [_ints("zero", 0), _ints("axes0", [0]), _ints("minus1", [-1])]
    assert batch_dimension(_graph(nodes, [("x", ["N", 4, 8])], ["y"], consts)) == ("N", "")
    assert batch_dimension(_graph(nodes, [("x", ["N", "N", 8])], ["y"], consts))[0] is None
    assert batch_dimension(_graph(nodes, [("x", [2, 4, 8])], ["y"], consts)) == (None, "")


def test_an_inference_session_serves_every_batch_size_from_one_compile():
    model = models.resnet_block(channels=8, resolution=16, batch="N")
    session = dlc.InferenceSession(model.SerializeToString())
    assert session.get_inputs()[0].shape == ["N", 3, 16, 16]
    for batch in (2, 3):
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, 3, 16, 16)).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], run_onnxruntime(model, {"x": x})[0],
                                   rtol=1e-4, atol=1e-5)
    assert session._specializing.compiles == 1


def test_a_pooled_transformer_with_an_expanded_mask_serves_every_batch_size():
    """torch.onnx's padding mask (Expand to Shape(scores), Where) and the pooler (Slice, Squeeze, Gemm)."""
    model = models.transformer_encoder(d_model=32, heads=2, seq=8, ffn=64)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "B"
    del model.graph.value_info[:]  # recorded at batch 1 by the builder's shape inference
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = "B"
    compiled = dlc.compile(model)
    assert compiled.batch == "B"
    x = np.random.default_rng(0).uniform(-1, 1, (3, 8, 32)).astype(np.float32)
    got, want = compiled.run({"x": x}), run_onnxruntime(model, {"x": x})
    for name, expected in zip(("hidden", "pooled"), want):
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-5)
    assert compiled.compiles == 1


def test_a_model_of_matrix_vector_products_compiles_per_batch_size_with_a_note():
    """An MLP's sample is one row: run sample by sample, each layer would read its weights per
    sample (7x slower at batch 8), so each batch size compiles on its own."""
    from examples.make_models import mlp

    model = mlp()
    for value in (model.graph.input[0], *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    compiled = dlc.compile(model)
    assert compiled.batch == "N"
    for batch in (4, 4, 6):
        feeds = {"input": np.random.default_rng(batch).uniform(-1, 1, (batch, 784)).astype(np.float32)}
        with warnings.catch_warnings():  # the note, once per shape: batch_note below
            warnings.simplefilter("ignore")
            got = compiled.run(feeds)["logits"]
        np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)
    assert compiled.compiles == 2 and "products of fewer than 8 rows" in compiled.batch_note
    assert compiled.shapes == [{"input": (4, 784)}, {"input": (6, 784)}]
