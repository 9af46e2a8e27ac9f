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

# Node tests whose model, inputs and expected outputs are a prefix of a twin's that returns one
# output more (SoftmaxCrossEntropyLoss's log_prob, Dropout's mask, MaxPool's indices, Attention's
# qk_matmul_output): the twin checks the same node on the same data and the same outputs, so
# the default run leaves the test to its twin and `-m slow` runs both.
# test_subsumed_node_tests_are_checked_by_their_twins keeps this true across onnx versions.
SUBSUMED = {
    "test_attention_3d_with_past_and_present": "test_attention_3d_with_past_and_present_qk_matmul",
    "test_attention_4d": "test_attention_4d_with_qk_matmul",
    "test_attention_4d_with_past_and_present": "test_attention_4d_with_past_and_present_qk_matmul",
    "test_dropout_default": "test_dropout_default_mask",
    "test_dropout_default_ratio": "test_dropout_default_mask_ratio",
    "test_maxpool_2d_precomputed_pads": "test_maxpool_with_argmax_2d_precomputed_pads",
    **{f"test_sce_{name}": f"test_sce_{name}_log_prob" for name in (
        "NCd1_mean_weight_negative_ii", "NCd1d2d3_none_no_weight_negative_ii", "NCd1d2d3_sum_weight_high_ii",
        "NCd1d2d3d4d5_mean_weight", "NCd1d2d3d4d5_none_no_weight", "mean", "mean_3d", "mean_no_weight_ii",
        "mean_no_weight_ii_3d", "mean_no_weight_ii_4d", "mean_weight", "mean_weight_ii", "mean_weight_ii_3d",
        "mean_weight_ii_4d", "none", "none_weights", "sum",
    )},
}


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
            elif name in SLOW_TESTS or "_expanded" in name or name.removesuffix("_cpu") in SUBSUMED:
                setattr(case, name, pytest.mark.slow(getattr(case, name)))
    return cases


globals().update(cpu_test_cases(read_unsupported_list()))


def test_subsumed_node_tests_are_checked_by_their_twins():
    """Each SUBSUMED test's node, inputs and expected outputs are its twin's, and the twin
    passes (it is not in the unsupported list): leaving the test to `-m slow` loses no check."""
    import numpy as np
    from node_cases import load_node_cases

    cases = {case.name: case for case in load_node_cases()}
    unsupported = read_unsupported_list()
    for name, twin in SUBSUMED.items():
        test, other = cases[name], cases[twin]
        assert f"{name}_cpu" not in unsupported and f"{twin}_cpu" not in unsupported, name
        graph, wider = test.model.graph, other.model.graph
        assert [(n.op_type, n.domain, list(n.input), list(n.attribute)) for n in graph.node] == \
            [(n.op_type, n.domain, list(n.input), list(n.attribute)) for n in wider.node], name
        assert [i.name for i in graph.input] == [i.name for i in wider.input], name
        outputs = [o.name for o in graph.output]
        assert outputs == [o.name for o in wider.output][:len(outputs)] and len(wider.output) > len(outputs), name
        assert len(test.data_sets) == len(other.data_sets), name
        for (inputs, expected), (twin_inputs, twin_expected) in zip(test.data_sets, other.data_sets):
            assert all(np.array_equal(a, b) for a, b in zip(inputs, twin_inputs, strict=True)), name
            assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(expected, twin_expected)), name
