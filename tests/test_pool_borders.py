"""Padded pooling without a padded copy of the input, as passes/lowering/rules/pooling.py
lowers it (`_pool_in_place`): output boxes that read x in place through only their in-bounds
taps, the flat interior of stride-1 pools with its masked border columns, the interleaved
stride-2 reads, the looped path for kernels of more than 25 taps, the padded-copy fallback for
large pads, and the per-box divisors of AveragePool (count_include_pad 0/1, ceil_mode). dlc vs
onnxruntime, NaN through the border boxes, then every case again under guard pages.

Tolerance is conftest's default (rtol=1e-4, atol=1e-5): at most 30 taps are summed, in
another order than onnxruntime's, and LpPool's root adds an ulp or two.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_matches_onnxruntime, run_onnxruntime
from onnx import TensorProto, helper
from test_bounds import _run_child

import dlc

WINDOWS = {  # name: (x shape, attributes)
    "3x3_s1_pad1": ([1, 3, 7, 9], {"kernel_shape": [3, 3], "pads": [1] * 4}),
    "3x3_s1_pads_asymmetric": ([1, 2, 8, 9], {"kernel_shape": [3, 3], "pads": [2, 2, 0, 0]}),
    "5x5_s1_pad2": ([1, 2, 9, 11], {"kernel_shape": [5, 5], "pads": [2] * 4}),
    "3x3_s2_pad1_even": ([2, 3, 14, 12], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}),
    "3x3_s2_pad1_odd": ([1, 3, 15, 13], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}),
    "3x3_s2_pads_asymmetric": ([1, 2, 12, 10], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                "pads": [0, 1, 1, 0]}),
    "3x3_s2_pads_at_end": ([1, 2, 8, 9], {"kernel_shape": [3, 3], "strides": [2, 2],
                                          "pads": [0, 0, 1, 1]}),
    "3x3_s3": ([1, 2, 11, 10], {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1] * 4}),
    "3x3_strides_1_2": ([1, 2, 9, 10], {"kernel_shape": [3, 3], "strides": [1, 2], "pads": [1] * 4}),
    "3x3_strides_2_1": ([1, 2, 9, 10], {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1] * 4}),
    "3x2_s2_1": ([1, 3, 13, 11], {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    "3x3_dilations_2": ([1, 2, 10, 9], {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2] * 4}),
    "3x3_dilations_s2": ([1, 2, 13, 12], {"kernel_shape": [3, 3], "dilations": [2, 2],
                                          "strides": [2, 2], "pads": [1, 2, 1, 2]}),
    "3x3_s2_ceil": ([1, 2, 8, 9], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "3x3_s2_pad1_ceil": ([1, 2, 10, 9], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4,
                                         "ceil_mode": 1}),
    "2x2_s2": ([1, 3, 8, 10], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "same_upper_s2": ([1, 2, 7, 8], {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "same_lower_s1": ([1, 2, 7, 8], {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}),
    "kernel_over_input": ([1, 2, 2, 2], {"kernel_shape": [3, 3], "pads": [1] * 4}),
    "6x5_looped_pad2": ([1, 2, 9, 8], {"kernel_shape": [6, 5], "pads": [2, 2, 3, 2]}),
    "5x5_pads4_padded_copy": ([1, 2, 9, 9], {"kernel_shape": [5, 5], "pads": [4] * 4}),
    "1d_s1": ([2, 3, 10], {"kernel_shape": [3], "pads": [1, 1]}),
    "1d_s2_ceil": ([1, 3, 11], {"kernel_shape": [3], "strides": [2], "pads": [1, 0], "ceil_mode": 1}),
    "3d_1x3x3": ([1, 2, 4, 5, 6], {"kernel_shape": [1, 3, 3], "pads": [0, 1, 1, 0, 1, 1]}),
    "3d_3x3x3_s2_padded_copy": ([1, 2, 5, 6, 7], {"kernel_shape": [3, 3, 3], "strides": [2, 2, 2],
                                                  "pads": [1] * 6}),
    # ResNet stem and Inception sizes: long flat interiors and vector remainders.
    "resnet_stem": ([1, 8, 56, 56], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}),
    "inception_s1": ([1, 8, 28, 28], {"kernel_shape": [3, 3], "pads": [1] * 4}),
}
OPS = {  # name: (op, extra attributes)
    "max": ("MaxPool", {}),
    "average": ("AveragePool", {}),
    "average_include_pad": ("AveragePool", {"count_include_pad": 1}),
    "lp2": ("LpPool", {"p": 2}),
    "lp3": ("LpPool", {"p": 3}),
}


def _model(pairs, windows=WINDOWS) -> onnx.ModelProto:
    """One pooling node per (op, window) pair, each with its own input."""
    nodes, inputs = [], []
    for op_name, window in pairs:
        op, extra = OPS[op_name]
        shape, attrs = windows[window]
        if op == "LpPool":  # LpPool has no ceil_mode before opset 18 nor count_include_pad
            attrs = {k: v for k, v in attrs.items() if k != "count_include_pad"}
        name = f"{op_name}_{window}"
        nodes.append(helper.make_node(op, [f"{name}_x"], [f"{name}_y"], **attrs, **extra))
        inputs.append(helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT, shape))
    outputs = [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes]
    graph = helper.make_graph(nodes, "pools", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


@pytest.mark.parametrize("op", OPS)
def test_pool_matches_onnxruntime_on_every_window(op):
    """Every window of one op in one model (a node and an input each, nothing shared): the
    same checks as one model per window, in one compile and one onnxruntime session; a
    mismatch names its output, `<op>_<window>_y`."""
    assert_matches_onnxruntime(_model([(op, window) for window in WINDOWS]))


# One model per (op, window): the checks above, a compile each (135 of them, a minute of a
# core), for bisecting a failure; `-m slow` runs them.
@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("window", WINDOWS)
def test_pool_matches_onnxruntime(op, window):
    assert_matches_onnxruntime(_model([(op, window)]))


@pytest.mark.parametrize("window", ["3x3_s1_pad1", "5x5_s1_pad2", "3x3_s2_pad1_odd", "3x3_s2_pads_asymmetric",
                                    "6x5_looped_pad2"])
def test_max_pool_propagates_nan_through_every_box(window):
    """A NaN in a corner, on an edge and inside: every window that holds one gives NaN (the
    indicator pooled by onnxruntime says which), the others are exact."""
    model = _model([("max", window)])
    name = model.graph.input[0].name
    x = np.random.default_rng(3).uniform(-1, 1, WINDOWS[window][0]).astype(np.float32)
    (without_nan,) = run_onnxruntime(model, {name: x})
    last_row, last_column = x.shape[2] - 1, x.shape[3] - 1
    x[0, 0, 0, 0] = x[0, 1, last_row, last_column // 2] = x[0, 1, last_row // 2, last_column] = np.nan
    x[0, 0, last_row // 2, last_column // 2] = np.nan
    (indicator,) = run_onnxruntime(model, {name: np.isnan(x).astype(np.float32)})
    got = dlc.compile(model).run({name: x})[model.graph.output[0].name]
    np.testing.assert_array_equal(np.isnan(got), indicator == 1)
    np.testing.assert_array_equal(got[indicator == 0], without_nan[indicator == 0])


@pytest.mark.parametrize("op,want", [("max", -np.inf), ("average", np.nan),
                                     ("average_include_pad", 0.0), ("lp2", 0.0)])
def test_window_of_only_padding(op, want):
    """Taps 3 apart over an input of 2 with a pad of 1 on each side: the one window reads
    only padding. As the padded copy gives: -inf for MaxPool, 0/0 for AveragePool
    without the pads counted (onnxruntime: -FLT_MAX and 0)."""
    window = ([1, 2, 2], {"kernel_shape": [2], "dilations": [3], "pads": [1, 1]})
    model = _model([(op, "only_padding")], {"only_padding": window})
    x = np.ones([1, 2, 2], np.float32)
    got = dlc.compile(model).run({model.graph.input[0].name: x})[model.graph.output[0].name]
    np.testing.assert_array_equal(got, np.full([1, 2, 1], want, np.float32))


# One window of each path `_pool_in_place` takes, and of each kind of edge: the default run's
# bounds check (a compile of 81 pools at two thread counts took 35 s of a core; `-m slow` runs
# every window).
BOUNDS_WINDOWS = ("3x3_s1_pads_asymmetric", "3x3_s2_pad1_odd", "3x3_s2_pads_at_end", "3x3_strides_2_1",
                  "3x3_dilations_s2", "3x3_s2_pad1_ceil", "same_lower_s1", "kernel_over_input",
                  "6x5_looped_pad2", "5x5_pads4_padded_copy", "1d_s2_ceil", "3d_1x3x3", "resnet_stem",
                  "inception_s1")


@pytest.mark.parametrize("windows", [BOUNDS_WINDOWS, pytest.param(tuple(WINDOWS), marks=pytest.mark.slow)],
                         ids=["each_path", "every_window"])
def test_pools_stay_in_bounds(tmp_path, windows):
    """The cases in one model, run between guard pages on one and two threads: the box
    views, the flat interior (which reads and writes across row ends) and the interleaved
    stride-2 reads never touch memory outside x and y."""
    pairs = [(op, window) for op in ("max", "average_include_pad", "lp2") for window in windows]
    result = _run_child(tmp_path, _model(pairs), "1,2")
    assert "invalid memory access" not in result.stderr, result.stderr
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count("identical under the bounds check") == 2
