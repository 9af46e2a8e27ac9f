"""Partitioning across targets (issue 6): placement, fallback to cpu, no cycles between partitions,
placement files, the CLI, and a third-party target registered through the `dlc.targets` entry points."""

from __future__ import annotations

import json
import shutil
import tomllib

import numpy as np
import onnx
import pytest
from conftest import ROOT, assert_matches_onnxruntime, random_feeds, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper


def _weights(*shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32))


def _model(nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _named(proto, name):
    proto.name = name
    return proto


def mixed_model():
    """Conv, Relu (npu) -> Softmax, Gather (cpu) -> Conv, Add (npu); the Add also reads the Relu."""
    return _model(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4),
         helper.make_node("Relu", ["c1"], ["r"], name="relu"),
         helper.make_node("Softmax", ["r"], ["s"], name="softmax", axis=1),
         helper.make_node("Gather", ["s", "idx"], ["g"], name="gather", axis=1),
         helper.make_node("Conv", ["g", "w2"], ["c2"], name="conv2", pads=[1] * 4),
         helper.make_node("Add", ["c2", "r"], ["y"], name="add")],
        [("x", [1, 3, 8, 8])], ["y"],
        [_named(_weights(4, 3, 3, 3), "w1"), _named(_weights(4, 3, 3, 3, seed=1), "w2"),
         numpy_helper.from_array(np.array([0, 2, 3], np.int64), "idx")])


def _compile(model, target="npu-sim", **options):
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    return compile_model(model, target=target, options=CompileOptions(**options)).executable


def _placed(executable):
    return dict(executable.placement.nodes)


def test_mixed_graph_falls_back_to_cpu_and_matches_onnxruntime():
    model = mixed_model()
    assert_matches_onnxruntime(model, target="npu-sim")
    executable = _compile(model)
    assert _placed(executable) == {"conv1": "npu-sim", "relu": "npu-sim", "softmax": "cpu", "gather": "cpu",
                                   "conv2": "npu-sim", "add": "npu-sim"}
    reasons = executable.placement.reasons
    assert set(reasons) == {"softmax", "gather"} and "Softmax" in reasons["softmax"]
    # conv1's and conv2's groups cannot merge: the path relu -> softmax -> gather -> conv2 would be a cycle.
    assert [(p.target, p.nodes) for p in executable.partitions] == [
        ("npu-sim", ["conv1", "relu"]), ("cpu", ["softmax", "gather"]), ("npu-sim", ["conv2", "add"])]


def test_independent_branches_share_one_partition():
    model = _model(
        [helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a"),
         helper.make_node("Softmax", ["x"], ["s"], name="softmax", axis=1),
         helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b"),
         helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        [("x", [1, 3, 6, 6])], ["y", "s"],
        [_named(_weights(4, 3, 1, 1), "wa"), _named(_weights(4, 3, 1, 1, seed=2), "wb")])
    assert_matches_onnxruntime(model, target="npu-sim")
    parts = _compile(model).partitions
    assert sorted((p.target, len(p.nodes)) for p in parts) == [("cpu", 1), ("npu-sim", 3)]


def test_placement_file_round_trip_and_forcing(tmp_path):
    from dlc.errors import DlcError
    from dlc.targets.partition import write_placement

    model = mixed_model()
    path = tmp_path / "placement.json"
    write_placement(path, _compile(model).placement)
    data = json.loads(path.read_text())
    assert data["nodes"]["conv1"] == "npu-sim" and "softmax" in data["unsupported"]
    data["nodes"]["conv1"] = "cpu"  # the user moves a node back to the CPU
    path.write_text(json.dumps(data))
    forced = _compile(model, placement_from=str(path))
    assert _placed(forced)["conv1"] == "cpu" and _placed(forced)["relu"] == "npu-sim"
    feeds = random_feeds(model)
    np.testing.assert_allclose(forced.run(feeds)["y"], run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)

    data["nodes"]["softmax"] = "npu-sim"
    path.write_text(json.dumps(data))
    with pytest.raises(DlcError, match=r"node 'softmax' \(Softmax\) cannot run on npu-sim: npu-sim has no Softmax"):
        _compile(model, placement_from=str(path))


def test_cli_prints_placement_and_npu_report(tmp_path, capsys):
    from dlc.cli import main

    model_path = tmp_path / "mixed.onnx"
    onnx.save(mixed_model(), model_path)
    placement = tmp_path / "p.json"
    assert main(["compile", str(model_path), "--target", "npu-sim", "--placement", str(placement),
                 "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "npu-sim       4 nodes" in out and "not on npu-sim: node 'gather' (Gather)" in out
    assert placement.exists() and (tmp_path / "out" / "partition0.npu-sim.mlir").read_text().count("npu.mac") == 1
    assert main(["run", str(model_path), "--target", "npu-sim", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "partition 2 (npu-sim):" in out and "total:" in out and "MAC utilisation" in out


@pytest.fixture
def add_relu_plugin(tmp_path, monkeypatch):
    """Install tests/targets_plugin into a directory on sys.path, as pip would: module + dist-info.

    The offline test environment has no `wheel`, so pip cannot build the package;
    the dist-info is written from the package's own pyproject.toml, and the
    entry point is then found by importlib.metadata exactly as for a pip install.
    """
    import importlib

    package = ROOT / "tests" / "targets_plugin"
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    shutil.copy(package / "dlc_add_relu_target.py", tmp_path)
    info = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                         f"Version: {project['version']}\n")
    points = project["entry-points"]["dlc.targets"]
    info.joinpath("entry_points.txt").write_text(
        "[dlc.targets]\n" + "".join(f"{name} = {value}\n" for name, value in points.items()))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield


def test_third_party_target_through_an_entry_point(add_relu_plugin):
    from dlc.targets import available_targets

    assert available_targets()["add-relu"] == "dlc_add_relu_target:AddReluTarget"
    model = _model(
        [helper.make_node("Add", ["x", "z"], ["a"], name="add"),
         helper.make_node("Relu", ["a"], ["r"], name="relu"),
         helper.make_node("Softmax", ["r"], ["s"], name="softmax", axis=-1),
         helper.make_node("Add", ["s", "z"], ["y"], name="add2")],
        [("x", [2, 5]), ("z", [2, 5])], ["y"], [])
    assert_matches_onnxruntime(model, target="add-relu")
    executable = _compile(model, target="add-relu")
    assert _placed(executable) == {"add": "add-relu", "relu": "add-relu", "softmax": "cpu", "add2": "add-relu"}
    assert [p.target for p in executable.partitions] == ["add-relu", "cpu", "add-relu"]
