"""Determinism (issue 7): the same model and options give bit-identical outputs run to run and
byte-identical artifacts compile to compile; outputs do not depend on the thread count.

The thread-count claim is the design's (README "How it works": static schedule, outlined loop
bodies serve every thread count, each output element is reduced by one thread in one order).
Compiles run in two child processes with different PYTHONHASHSEED values, so an artifact
that depended on set or dict-of-str iteration order, a global counter, a temporary name or
an object address would differ between them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from conftest import ROOT, random_feeds
from test_bounds import MODELS

from dlc.driver import compile_model
from dlc.targets import CompileOptions

SAMPLE = ["cnn", "mlp", "transformer_small", "mobilenet_block", "conv_edge_tiles", "pooling_with_pads",
          "resize"]
ARTIFACT_FILES = ("model.so", "weights.bin", "manifest.json")  # linked by cc here


def _outputs(executable, feeds) -> dict[str, bytes]:
    return {name: value.tobytes() for name, value in executable.run(feeds).items()}


def _misaligned_copy(array: np.ndarray) -> np.ndarray:
    """The same values at an address one element past a 64-byte boundary."""
    raw = np.empty(array.nbytes + 64 + array.itemsize, np.uint8)
    start = -raw.ctypes.data % 64 + array.itemsize
    copy = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


@pytest.mark.parametrize("name", SAMPLE)
def test_outputs_are_bit_identical_across_runs_threads_and_input_addresses(name, monkeypatch):
    monkeypatch.setenv("DLC_CACHE", "0")
    model = MODELS[name]()
    feeds = random_feeds(model)
    reference = None
    for threads in (1, 2, 4):
        executable = compile_model(model, options=CompileOptions(threads=threads)).executable
        for run in range(4):
            outputs = _outputs(executable, feeds)
            reference = reference or outputs
            assert outputs == reference, f"threads={threads}, run {run}: outputs differ from threads=1, run 0"
        shifted = {key: _misaligned_copy(value) for key, value in feeds.items()}
        assert _outputs(executable, shifted) == reference, f"threads={threads}: input address changes outputs"


COMPILE_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    import dlc

    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    for model in sorted(source.glob("*.onnx")):
        dlc.compile(str(model), threads=2).save(out / model.stem)
    for model in sorted(source.glob("*.onnx"))[:2]:
        # a second compile in the same process: global counters or caches would show here
        dlc.compile(str(model), threads=2).save(out / f"{model.stem}-again")
""")


def test_compiles_are_byte_identical(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in SAMPLE:
        onnx.save(MODELS[name](), models / f"{name}.onnx")
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed, "DLC_CACHE": "0"}
        result = subprocess.run([sys.executable, "-c", COMPILE_CHILD, str(models), str(tmp_path / f"out{seed}")],
                                check=False, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert result.returncode == 0, result.stderr
    artifacts = sorted(p.name for p in (tmp_path / "out1").iterdir())
    assert len(artifacts) == len(SAMPLE) + 2
    differing = []
    for artifact in artifacts:
        for file in ARTIFACT_FILES:
            first = (tmp_path / "out1" / artifact / file).read_bytes()
            if first != (tmp_path / "out2" / artifact / file).read_bytes():
                differing.append(f"{artifact}/{file} (PYTHONHASHSEED 1 vs 2)")
            if artifact.endswith("-again"):
                once = (tmp_path / "out1" / artifact.removesuffix("-again") / file).read_bytes()
                if first != once:
                    differing.append(f"{artifact}/{file} (second compile in one process)")
    assert differing == []
