"""Every MLIR phase prints text that parses back to the same IR, and compiling resumes from it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, random_feeds

import dlc
from dialects.weights import weights_of
from dlc.driver import MLIR_PHASES, compile_model, parse_mlir, read_mlir, write_mlir

MODELS = [ROOT / "examples" / "models" / "mlp.onnx", ROOT / "examples" / "models" / "cnn.onnx"]


@pytest.mark.parametrize("phase", MLIR_PHASES)
@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.stem)
def test_phase_text_round_trips(model, phase):
    module = compile_model(model, compile_to=phase).module
    text = str(module)
    reparsed = parse_mlir(text, weights_of(module))
    reparsed.verify()
    assert str(reparsed) == text


@pytest.mark.parametrize("phase", ["graph", "kernels", "linalg", "loops"])
def test_compile_resumes_from_written_phase(tmp_path, phase):
    import onnx

    model_path = MODELS[1]
    path = tmp_path / f"cnn.{phase}.mlir"
    write_mlir(compile_model(model_path, compile_to=phase).module, path)
    assert (tmp_path / f"cnn.{phase}.weights.npz").exists()
    assert "dense" not in path.read_text(), "weights must stay out of the IR"
    resumed = compile_model(path, compile_from=phase).executable
    feeds = random_feeds(onnx.load(model_path))
    direct = dlc.compile(model_path).run(feeds)
    np.testing.assert_array_equal(resumed.run(feeds)["probabilities"], direct["probabilities"])


def test_llvm_phase_is_llvm_ir():
    text = compile_model(MODELS[0], compile_to="llvm").text
    assert 'define void @"dlc_main"' in text or "define void @dlc_main" in text


def test_read_mlir_without_sidecar_has_no_weights(tmp_path):
    path = tmp_path / "m.mlir"
    path.write_text(str(compile_model(MODELS[0], compile_to="onnx").module))
    assert len(weights_of(read_mlir(path))) == 0
