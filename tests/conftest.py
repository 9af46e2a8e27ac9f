"""Shared fixtures and helpers: build small ONNX models and compare dlc with onnxruntime."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The compile cache lives in a per-run directory: tests never read a previous run's artifacts.
os.environ.setdefault("DLC_CACHE_DIR", tempfile.mkdtemp(prefix="dlc-test-cache-"))
# No progress lines (dlc/progress.py) before the errors that tests read from stderr; the
# progress tests turn it back on.
os.environ.setdefault("DLC_QUIET", "1")
# Compiles verify the IR once per phase, as users' do: verifying after every pass took a third
# of a small model's compile, and the suite compiles thousands. A phase that fails names its
# passes; `DLC_VERIFY_EACH=1 pytest ...` (or --verify-each) names the one that broke the IR.


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs in graph order, from the tools' one session builder (dlc/tools/oracle.py)."""
    pytest.importorskip("onnxruntime")
    from dlc.tools.oracle import run_onnxruntime as reference

    return list(reference(model, feeds).values())


def random_feeds(model: onnx.ModelProto, seed: int = 0, low: int = 0, high: int = 4) -> dict[str, np.ndarray]:
    """Seeded inputs from the tools' one input generator: floats in [-1, 1), bools, integers in [low, high)."""
    from dlc.tools.oracle import input_specs, random_inputs

    return random_inputs(input_specs(model), seed, int_range=(low, high))


def assert_matches_onnxruntime(model: onnx.ModelProto, rtol: float = 1e-4, atol: float = 1e-5,
                               target: str = "cpu", seed: int = 0) -> None:
    """dlc's outputs equal onnxruntime's on seeded random inputs.

    Default tolerance: float32 sums accumulate in a different order than
    onnxruntime's (MLAS blocks its reductions), so results differ by a few ulp
    times the reduction length; 1e-4 relative covers reductions of ~10^4 terms.
    """
    import dlc

    feeds = random_feeds(model, seed)
    expected = run_onnxruntime(model, feeds)
    compiled = dlc.compile(model, target=target)
    actual = compiled.run(feeds)
    assert list(actual) == [o.name for o in model.graph.output]
    for name, want in zip(actual, expected):
        got = actual[name]
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"output {name}")


def parse_run_model_output(stdout: str) -> dict[str, np.ndarray]:
    """examples/c/run_model's output: `name dtype AxB` then one value per line, per output."""
    outputs, lines = {}, stdout.splitlines()
    while lines:
        name, dtype, dims = lines.pop(0).split()
        shape = tuple(int(d) for d in dims.split("x"))
        count = int(np.prod(shape))
        outputs[name] = np.array([float(v) for v in lines[:count]], dtype=dtype).reshape(shape)
        del lines[:count]
    return outputs
