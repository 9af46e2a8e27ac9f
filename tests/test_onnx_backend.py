"""The official ONNX backend test suite (onnx.backend.test) run against `dlc.backend`.

Node, simple, pytorch-converted, pytorch-operator and the light `real` models,
CPU variants only. Every test dlc does not pass yet is listed, with a reason, in
`onnx_backend_unsupported.txt` and applied with `BackendTest.xfail`; a listed
test that passes fails the run, so regenerate the list with
`python tests/update_backend_list.py`.
"""

from __future__ import annotations

import re
import sys
import unittest
import warnings
from pathlib import Path

import pytest
from onnx.backend.test import BackendTest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # node_cases, when imported from elsewhere

from node_cases import use_cached_node_cases

import dlc.backend

UNSUPPORTED_LIST = Path(__file__).with_name("onnx_backend_unsupported.txt")

# The light real models that take long to compile or to check on 2 cores; they
# run with `-m slow` (the default CI run is `-m "not slow"`). So do the `_expanded` node
# tests (an operator's function body, as primitive nodes): they check the same lowerings as
# the primitives' own tests, in combination, and were a quarter of the suite's compiles.
SLOW_TESTS = {"test_vgg19_cpu", "test_zfnet512_cpu", "test_bvlc_alexnet_cpu",
              "test_resnet50_cpu", "test_densenet121_cpu", "test_inception_v1_cpu",
              "test_inception_v2_cpu", "test_squeezenet_cpu"}


def read_unsupported_list(path: Path = UNSUPPORTED_LIST) -> dict[str, str]:
    """Test name -> reason, from lines `test_name_cpu  # reason` (blank and `#` lines skipped)."""
    entries = {}
    if not path.exists():
        return entries
    for line in path.read_text().splitlines():
        name, _, reason = line.partition("#")
        if name.strip():
            entries[name.strip()] = reason.strip()
    return entries


def cpu_test_cases(xfails: dict[str, str]) -> dict[str, type[unittest.TestCase]]:
    """The suite's unittest classes, CPU tests only, with `xfails` marked as expected failures."""
    use_cached_node_cases()  # onnx generates them in Python: ~10 s per process otherwise
    with warnings.catch_warnings():  # the node-test generators overflow and divide by 0 on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        backend_test = BackendTest(dlc.backend, __name__)
    for name in xfails:
        backend_test.xfail(f"^{re.escape(name)}$")
    cases = backend_test.test_cases
    for case in cases.values():
        for name in [n for n in vars(case) if n.startswith("test_")]:
            if not name.endswith("_cpu"):
                delattr(case, name)  # CUDA variants: dlc has no GPU target
            elif name in SLOW_TESTS or "_expanded" in name:
                setattr(case, name, pytest.mark.slow(getattr(case, name)))
    return cases


globals().update(cpu_test_cases(read_unsupported_list()))
