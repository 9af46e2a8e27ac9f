"""Direct (non-GEMM) convolutions: depthwise and other few-rows-per-group convs, as
passes/lowering/rules/conv.py lowers them (`_direct_conv`): output boxes that read x in
place through only their in-bounds taps, the flat interior of stride-1 convs, the
interleaved stride-2 reads, the looped path for large kernels and the padded-copy
fallback for large pads; and the phase planes small maps take (`_phase_flat_conv`). dlc vs
onnxruntime through both lowerings, then every case again under guard pages.

Tolerance is conftest's default (rtol=1e-4, atol=1e-5): at most 27 taps are summed, in
another order than onnxruntime's.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_matches_onnxruntime, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper
from test_bounds import _run_child

CASES = {  # name: (x shape, weight shape, attributes); group is x's channels unless given
    "s1_pad1_7x7": ([1, 6, 7, 7], [6, 1, 3, 3], {"pads": [1] * 4}),
    "s1_pad1_odd": ([2, 5, 9, 11], [5, 1, 3, 3], {"pads": [1] * 4}),
    "s2_pad1_even": ([1, 4, 14, 14], [4, 1, 3, 3], {"pads": [1] * 4, "strides": [2, 2]}),
    "s2_pad1_odd": ([1, 3, 15, 13], [3, 1, 3, 3], {"pads": [1] * 4, "strides": [2, 2]}),
    "s2_pads_asymmetric": ([1, 3, 12, 10], [3, 1, 3, 3], {"pads": [0, 1, 1, 0], "strides": [2, 2]}),
    "s2_pads_at_end": ([1, 3, 8, 9], [3, 1, 3, 3], {"pads": [0, 0, 1, 1], "strides": [2, 2]}),
    "s3": ([1, 2, 11, 10], [2, 1, 3, 3], {"pads": [1] * 4, "strides": [3, 3]}),
    "strides_1_2": ([1, 3, 9, 10], [3, 1, 3, 3], {"pads": [1] * 4, "strides": [1, 2]}),
    "strides_2_1": ([1, 3, 9, 10], [3, 1, 3, 3], {"pads": [1] * 4, "strides": [2, 1]}),
    "dilations_2": ([1, 3, 10, 9], [3, 1, 3, 3], {"pads": [2] * 4, "dilations": [2, 2]}),
    "dilations_s2": ([1, 3, 13, 12], [3, 1, 3, 3], {"pads": [1, 2, 1, 2], "dilations": [2, 2],
                                                     "strides": [2, 2]}),
    "5x5_s1": ([1, 4, 9, 8], [4, 1, 5, 5], {"pads": [2] * 4}),
    "5x5_s2": ([1, 4, 14, 14], [4, 1, 5, 5], {"pads": [2] * 4, "strides": [2, 2]}),
    "7x7_looped_padded": ([1, 3, 9, 9], [3, 1, 7, 7], {"pads": [3] * 4}),
    "kernel_over_input": ([1, 3, 2, 2], [3, 1, 3, 3], {"pads": [1] * 4}),
    "no_pads": ([1, 3, 6, 7], [3, 1, 3, 3], {}),
    "same_upper_s2": ([1, 3, 7, 8], [3, 1, 3, 3], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "multiplier_2": ([1, 3, 6, 6], [6, 1, 3, 3], {"pads": [1] * 4}),
    "grouped_2_in": ([1, 4, 7, 6], [6, 2, 3, 3], {"group": 2, "pads": [1] * 4}),
    "grouped_2_in_s2": ([1, 4, 9, 8], [6, 2, 3, 3], {"group": 2, "pads": [1] * 4,
                                                      "strides": [2, 2]}),
    "conv1d_s1": ([2, 4, 10], [4, 1, 3], {"pads": [1, 1]}),
    "conv1d_s2": ([1, 4, 11], [4, 1, 3], {"pads": [1, 1], "strides": [2]}),
    "conv1d_pads_beyond_kernel": ([1, 2, 5], [2, 1, 3], {"pads": [3, 3]}),
    "conv3d_1x3x3": ([1, 3, 4, 5, 6], [3, 1, 1, 3, 3], {"pads": [0, 1, 1, 0, 1, 1]}),
    "conv3d_3x3x3_looped": ([1, 2, 4, 5, 6], [2, 1, 3, 3, 3], {"pads": [1] * 6}),
    # MobileNetV2-like sizes: long flat interiors and vector remainders.
    "mobilenet_s1": ([1, 32, 28, 28], [32, 1, 3, 3], {"pads": [1] * 4}),
    "mobilenet_s2": ([1, 32, 28, 28], [32, 1, 3, 3], {"pads": [1] * 4, "strides": [2, 2]}),
    # Small maps (MobileNetV3, EfficientNet): phase planes, flat rows padded to full vectors.
    "phase_5x5_7x7": ([1, 24, 7, 7], [24, 1, 5, 5], {"pads": [2] * 4}),
    "phase_5x5_s2_multiplier": ([1, 4, 14, 14], [8, 1, 5, 5], {"pads": [2] * 4, "strides": [2, 2]}),
    "phase_3x3_s2_odd_pads": ([2, 5, 13, 11], [5, 1, 3, 3], {"pads": [1, 0, 0, 1], "strides": [2, 2]}),
    "phase_strides_3_2_dilated": ([1, 3, 12, 11], [3, 1, 3, 3], {"pads": [2, 1, 1, 2], "strides": [3, 2],
                                                                  "dilations": [2, 1]}),
    # Stride 1, output rows as long as x's (the row-pitch lowering): pads unequal or over the
    # kernel's reach, dilated, 1xK and Kx1, more output rows than input rows.
    "row_pitch_asymmetric": ([2, 5, 6, 9], [5, 1, 3, 3], {"pads": [2, 0, 0, 2]}),
    "row_pitch_dilated_5x5": ([1, 3, 9, 10], [3, 1, 5, 5], {"pads": [4] * 4, "dilations": [2, 2]}),
    "row_pitch_1x5": ([1, 4, 5, 8], [4, 1, 1, 5], {"pads": [0, 2, 0, 2]}),
    "row_pitch_5x1_taller": ([1, 4, 5, 8], [4, 1, 5, 1], {"pads": [4, 0, 3, 0]}),
    "row_pitch_one_column": ([1, 3, 6, 1], [3, 1, 3, 3], {"pads": [1] * 4}),
    # Strided, rows of OW (`_phase_pitch_conv`): odd sizes, phases of unequal width, dilation.
    "phase_pitch_odd": ([1, 4, 9, 7], [4, 1, 3, 3], {"pads": [1] * 4, "strides": [2, 2]}),
    "phase_pitch_5x5_s3": ([2, 3, 13, 11], [3, 1, 5, 5], {"pads": [2, 1, 2, 3], "strides": [3, 3]}),
    "phase_pitch_dilated_s2_1": ([1, 3, 10, 9], [3, 1, 3, 3], {"pads": [2] * 4, "strides": [2, 1],
                                                                "dilations": [2, 2]}),
    # Strided 5x5 on maps whose rows are long (`_strided_wide_kernel`): even and odd widths.
    "phase_pitch_5x5_s2_wide": ([1, 2, 64, 64], [2, 1, 5, 5], {"pads": [2] * 4, "strides": [2, 2]}),
    "phase_pitch_5x5_s2_wide_odd": ([1, 2, 63, 65], [2, 1, 5, 5], {"pads": [1, 2, 2, 1], "strides": [2, 2]}),
}


def _weights(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _conv_nodes(name: str, x: str, bias: bool, seed: int):
    """The Conv node of case `name` reading `x`, and its initializers."""
    x_shape, w_shape, attrs = CASES[name]
    attrs = {"group": x_shape[1], **attrs}
    inits = [numpy_helper.from_array(_weights(w_shape, seed), f"{name}_w")]
    if bias:
        inits.append(numpy_helper.from_array(_weights([w_shape[0]], seed + 1), f"{name}_b"))
    node = helper.make_node("Conv", [x, *(i.name for i in inits)], [f"{name}_y"], **attrs)
    return node, inits


def _model(names, bias: bool | int) -> onnx.ModelProto:
    """One conv per case; `bias` True or False for all, or 0 / 1: a bias on the cases of even /
    odd index only."""
    nodes, inits, inputs = [], [], []
    for i, name in enumerate(names):
        with_bias = bias if isinstance(bias, bool) else i % 2 == bias
        node, node_inits = _conv_nodes(name, f"{name}_x", with_bias, seed=2 * i)
        nodes.append(node)
        inits += node_inits
        inputs.append(helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT, CASES[name][0]))
    outputs = [helper.make_tensor_value_info(f"{n}_y", TensorProto.FLOAT, None) for n in names]
    graph = helper.make_graph(nodes, "convs", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


# MIN_INTERIOR_SHARE that sends every depthwise conv with unrolled taps to the small-map
# lowerings (above 1) or none (0): each case runs through every lowering, whatever its size
# picks; "phase_planes" also for the convs the row-pitch lowerings (`_row_pitch_conv`,
# `_phase_pitch_conv` for strided ones) take.
PATHS = {"boxes": 0.0, "phase_planes": 1.01, "row_pitch": 1.01}


@pytest.fixture(params=PATHS)
def lowering(request, monkeypatch):
    from passes.lowering.rules import conv

    monkeypatch.setattr(conv, "MIN_INTERIOR_SHARE", PATHS[request.param])
    monkeypatch.setattr(conv, "STRIDED_SHORT_ROW", 0 if request.param == "boxes" else conv.STRIDED_SHORT_ROW)
    monkeypatch.setattr(conv, "ROW_PITCH_CONV", request.param == "row_pitch")
    monkeypatch.setattr(conv, "PHASE_PITCH_CONV", request.param == "row_pitch")
    monkeypatch.setenv("DLC_CACHE", "0")  # the cache key does not see the module constant
    return request.param


@pytest.mark.parametrize("bias", [0, pytest.param(1, marks=pytest.mark.slow)],
                         ids=["bias_on_even_cases", "bias_on_odd_cases"])
def test_direct_conv_matches_onnxruntime_on_every_case(bias, lowering):
    """Every case through one lowering in one model (a Conv and an input each, nothing
    shared): the same checks as one model per case, in one compile and one onnxruntime
    session; a mismatch names its output, `<case>_y`. Half the cases carry a bias, so both
    epilogues run on every lowering; `-m slow` adds the other half (and one model per case)."""
    assert_matches_onnxruntime(_model(list(CASES), bias))


# One model per (lowering, case, bias): the checks above, a compile each (258 of them, a
# minute and a half of a core), for bisecting a failure; `-m slow` runs them.
@pytest.mark.slow
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("name", CASES)
def test_direct_conv_matches_onnxruntime(name, bias, lowering):
    assert_matches_onnxruntime(_model([name], bias))


@pytest.mark.parametrize("activation", ["Relu", "Clip"])
@pytest.mark.parametrize("name", ["s1_pad1_odd", "s2_pad1_odd", "5x5_s2", "kernel_over_input", "mobilenet_s1"])
def test_activation_applied_as_outputs_are_stored(name, activation, lowering):
    """A Relu or ReLU6 (Clip 0..6) after a depthwise conv joins its kernel and is applied as
    each output is stored, border boxes and padding-only outputs (the bias alone) included;
    NaN inputs stay NaN, as in onnxruntime."""
    model = _model([name], bias=True)
    graph = model.graph
    conv_out = graph.output[0].name
    graph.node[0].output[0] = "conv"
    extra = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in [("lo", 0.0), ("hi", 6.0)]]
    graph.initializer.extend(extra)
    graph.node.append(helper.make_node(activation, ["conv", *(["lo", "hi"] if activation == "Clip" else [])],
                                       [conv_out]))
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    x = np.random.default_rng(3).uniform(-8, 8, CASES[name][0]).astype(np.float32)
    x.flat[::7] = np.nan
    import dlc

    got = dlc.compile(model).run({f"{name}_x": x})[conv_out]
    np.testing.assert_allclose(got, run_onnxruntime(model, {f"{name}_x": x})[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("x_shape, kernel, pads, strides, phase_planes", [
    ([1, 960, 7, 7], 5, 2, 1, True),  # MobileNetV3's last stage: interior 9 of 49 outputs
    ([1, 672, 14, 14], 5, 2, 2, True),
    ([1, 480, 14, 14], 3, 1, 1, True),  # interior 144 of 196
    ([1, 144, 28, 28], 3, 1, 1, False),  # MobileNetV2: interior 676 of 784
    ([1, 96, 112, 112], 3, 1, 2, False),
    ([1, 192, 28, 28], 3, 1, 2, True),  # interior 169 of 196, but strided rows of 14
    ([1, 144, 56, 56], 3, 1, 2, False),  # strided rows of 28
])
def test_small_maps_take_phase_planes(x_shape, kernel, pads, strides, phase_planes):
    """Depthwise convs whose interior (windows inside x) is under MIN_INTERIOR_SHARE of the
    outputs, or strided ones with output rows under STRIDED_SHORT_ROW, run on phase planes;
    large maps keep their boxes (phase planes took 2.4-7x as
    long there: they copy the whole input and compute on a wider pitch)."""
    from xdsl.dialects.builtin import MemRefType, f32
    from xdsl.utils.test_value import create_ssa_value

    from passes.lowering.rules.conv import Window, _phase_flat_worthwhile

    out = [(n + 2 * pads - kernel) // strides + 1 for n in x_shape[2:]]
    window = Window((kernel,) * 2, (strides,) * 2, (1, 1), (pads,) * 2, (pads,) * 2, tuple(out))
    x = create_ssa_value(MemRefType(f32, x_shape))
    w = create_ssa_value(MemRefType(f32, [x_shape[1], 1, kernel, kernel]))
    assert _phase_flat_worthwhile(x, w, window) == phase_planes


def test_direct_convs_stay_in_bounds(tmp_path):
    """Every case in one model, run between guard pages on one and two threads: the box
    views, the flat interior (which reads and writes across row ends) and the interleaved
    stride-2 reads never touch memory outside x, w and y."""
    result = _run_child(tmp_path, _model(list(CASES), bias=True), "1,2")
    assert "invalid memory access" not in result.stderr, result.stderr
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count("identical under the bounds check") == 2

