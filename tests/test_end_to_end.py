"""End to end: example models through dlc vs onnxruntime and the reference target; artifacts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ROOT, assert_matches_onnxruntime, random_feeds

import dlc

sys_path = str(ROOT / "examples")


def _example(name: str) -> onnx.ModelProto:
    return onnx.load(ROOT / "examples" / "models" / f"{name}.onnx")


@pytest.mark.parametrize("name", ["mlp"])
@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_example_models_match_onnxruntime(name, target):
    assert_matches_onnxruntime(_example(name), target=target)


@pytest.mark.parametrize("name", ["mlp"])
def test_cpu_matches_reference_target(name):
    model = _example(name)
    feeds = random_feeds(model, seed=3)
    cpu = dlc.compile(model).run(feeds)
    reference = dlc.compile(model, target="reference").run(feeds)
    for key in cpu:
        np.testing.assert_allclose(cpu[key], reference[key], rtol=1e-4, atol=1e-5)


def test_artifact_saved_loaded_and_run(tmp_path):
    model = dlc.compile(ROOT / "examples" / "models" / "mlp.onnx")
    feeds = random_feeds(_example("mlp"))
    expected = model.run(feeds)
    model.save(tmp_path / "art")
    from dlc.codegen.link import find_linker

    code = {"model.so"} if find_linker() else {"model.o", "pool.o"}  # docs/artifact.md
    assert {p.name for p in (tmp_path / "art").iterdir()} == {*code, "weights.bin", "manifest.json"}
    loaded = dlc.load(tmp_path / "art")
    assert loaded.input_names == ["input"] and loaded.output_names == ["logits"]
    np.testing.assert_array_equal(loaded.run(feeds)["logits"], expected["logits"])


def test_python_api_accepts_path_and_proto():
    by_path = dlc.compile(str(ROOT / "examples" / "models" / "mlp.onnx"))
    by_proto = dlc.compile(_example("mlp"))
    feeds = random_feeds(_example("mlp"))
    np.testing.assert_array_equal(by_path.run(feeds)["logits"], by_proto.run(feeds)["logits"])
    assert by_path.input_names == by_proto.input_names == ["input"]
