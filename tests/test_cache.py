"""The compile cache: hits for the same model and options, misses when anything changes."""

from __future__ import annotations

import numpy as np
from conftest import ROOT, random_feeds

from dlc.driver import compile_model
from dlc.targets import CompileOptions

MLP = ROOT / "examples" / "models" / "mlp.onnx"


def _hit(result) -> bool:
    return result.timings == [("cache hit", 0.0)]


def test_second_compile_loads_from_cache(tmp_path, monkeypatch):
    import onnx

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    first = compile_model(MLP)
    second = compile_model(MLP)
    assert not _hit(first) and _hit(second)
    feeds = random_feeds(onnx.load(MLP))
    np.testing.assert_array_equal(first.executable.run(feeds)["logits"], second.executable.run(feeds)["logits"])


def test_changed_options_or_model_recompile(tmp_path, monkeypatch):
    import onnx

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    assert not _hit(compile_model(MLP, options=CompileOptions(fusion="none")))
    model = onnx.load(MLP)
    model.graph.initializer[0].float_data[:] = []  # a different weight file
    model.graph.initializer[0].raw_data = np.zeros((512, 784), np.float32).tobytes()
    assert not _hit(compile_model(model))


def test_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DLC_CACHE", "0")
    compile_model(MLP)
    assert not _hit(compile_model(MLP))
    assert not any(tmp_path.iterdir())


def test_damaged_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    (entry,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    (entry / "weights.bin").write_bytes(b"broken")
    assert not _hit(compile_model(MLP))
    assert _hit(compile_model(MLP))
