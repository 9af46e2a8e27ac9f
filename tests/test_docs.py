"""Docs that quote the code are checked against it, so they cannot go stale.

docs/writing-passes.md quotes the default pipeline (`dlc passes --pipeline`); the text
must be what the driver prints, and `dlc compile -p TEXT` must build what the default
compile builds.
"""

from __future__ import annotations

import re

import numpy as np
from conftest import ROOT

from dlc.cli import main

CNN = str(ROOT / "examples" / "models" / "cnn.onnx")
WRITING_PASSES = ROOT / "docs" / "writing-passes.md"
PLUGIN = str(ROOT / "examples" / "passes" / "remove_double_relu.py")


def _printed_pipeline(capsys) -> str:
    assert main(["passes", "--pipeline"]) == 0
    return capsys.readouterr().out.strip()


def _quoted_pipeline() -> str:
    """The ```text block after the `<!-- dlc passes --pipeline ... -->` marker."""
    found = re.search(r"<!-- dlc passes --pipeline .*?-->\n```text\n(.*?)\n```",
                      WRITING_PASSES.read_text(), re.S)
    assert found, f"{WRITING_PASSES.name} lost its quoted default pipeline"
    return found[1].strip()


def _outputs(artifact) -> dict[str, np.ndarray]:
    import dlc

    model = dlc.load(artifact)
    rng = np.random.default_rng(0)
    feeds = {spec.name: rng.standard_normal(spec.shape).astype(spec.dtype) for spec in model.inputs}
    return model.run(feeds)


def test_writing_passes_quotes_the_current_default_pipeline(capsys):
    assert _quoted_pipeline() == _printed_pipeline(capsys), (
        "docs/writing-passes.md quotes an old default pipeline: paste `dlc passes --pipeline`")


def test_opt_accepts_the_printed_pipeline(capsys, tmp_path):
    graph = tmp_path / "cnn.mlir"
    assert main(["compile", CNN, "--compile-to", "graph", "-o", str(graph)]) == 0
    capsys.readouterr()
    assert main(["opt", str(graph), "-p", _printed_pipeline(capsys)]) == 0
    assert "func.func @main" in capsys.readouterr().out


def test_compile_with_the_printed_pipeline_builds_what_the_default_builds(capsys, tmp_path):
    pipeline = _printed_pipeline(capsys)
    assert main(["compile", CNN, "-o", str(tmp_path / "default")]) == 0
    assert main(["compile", CNN, "-o", str(tmp_path / "text"), "-p", pipeline]) == 0
    # The docs' example: a plugin pass in front of the default pipeline.
    assert main(["compile", CNN, "-o", str(tmp_path / "plugin"), "--load-pass-plugin", PLUGIN,
                 "-p", f"remove-double-relu,{pipeline}"]) == 0
    expected = _outputs(tmp_path / "default")
    for variant in ("text", "plugin"):
        got = _outputs(tmp_path / variant)
        assert got.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{variant}: {name}")
