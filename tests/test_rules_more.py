"""ArgMax/ArgMin/Hardmax, Resize, LpPool, Instance/GroupNormalization, LRN, ConvTranspose, Det, Col2Im,
AffineGrid, Einsum, the NLL and softmax cross-entropy losses, and Slice/Pad with run-time
starts/pads: dlc vs onnxruntime on one-node models.

Run-time inputs get chosen values (or seeded random data); the output shape is taken from
onnxruntime's result, since shape inference cannot know it when starts/pads/scales are
computed at run time. Tolerance is rtol=1e-4, atol=1e-5, as in test_rules_nn.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_onnxruntime
from onnx import helper, numpy_helper

OPSET = 21


def _random(*shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _ties(*shape, seed: int = 0) -> np.ndarray:
    """Few distinct values, so that arg-reductions see ties."""
    return np.random.default_rng(seed).integers(0, 3, shape).astype(np.float32)


def _check(op_type: str, feeds: dict, constants: dict | None = None, order=None,
           rtol: float = 1e-4, atol: float = 1e-5, opset: int = OPSET, **attrs) -> None:
    """Build `op_type` over run-time `feeds` and constant `constants` (inputs in `order`,
    "" for an omitted one), run onnxruntime, then dlc with the output shape it found."""
    import dlc

    constants = constants or {}
    order = order or [*feeds, *constants]
    node = helper.make_node(op_type, order, ["y"], **attrs)

    out_type = onnx.TensorProto.INT64 if op_type in ("ArgMax", "ArgMin") else \
        helper.np_dtype_to_tensor_dtype(next(iter(feeds.values())).dtype)

    def model(out_shape):
        graph = helper.make_graph(
            [node], op_type,
            [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for name, v in feeds.items()],
            [helper.make_tensor_value_info("y", out_type, out_shape)],
            [numpy_helper.from_array(v, name) for name, v in constants.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])

    expected = run_onnxruntime(model(None), feeds)[0]
    declared = model(expected.shape)
    got = dlc.compile(declared).run(feeds)["y"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


# --- ArgMax, ArgMin, Hardmax ------------------------------------------------------------------

@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last", [(0, 1, 0), (-1, 0, 1), (1, 0, 0), (2, 1, 1)])
def test_arg_extreme(op_type, axis, keepdims, last):
    _check(op_type, {"x": _ties(3, 4, 5)}, axis=axis, keepdims=keepdims, select_last_index=last)


def test_argmax_int32():
    _check("ArgMax", {"x": np.random.default_rng(1).integers(-50, 50, (4, 6)).astype(np.int32)},
           axis=1)


@pytest.mark.parametrize("axis", [0, -1])
def test_hardmax(axis):
    _check("Hardmax", {"x": _ties(3, 4, 5)}, axis=axis)


# --- Resize -----------------------------------------------------------------------------------

RESIZE_CASES = [  # (scales or None, sizes or None, attributes)
    pytest.param([1, 1, 2, 1.5], None, {"mode": "nearest"}, id="nearest_up"),
    pytest.param([1, 1, 0.6, 0.8], None, {"mode": "nearest", "nearest_mode": "round_prefer_ceil",
                                          "coordinate_transformation_mode": "asymmetric"},
                 id="nearest_down_ceil_asymmetric"),
    # align_corners at scales whose output sizes are exact: onnxruntime divides by the
    # integer output size, the spec's reference by the un-rounded one (dlc, like the suite).
    pytest.param([1, 1, 1.6, 0.5], None, {"mode": "nearest", "nearest_mode": "floor",
                                          "coordinate_transformation_mode": "align_corners"},
                 id="nearest_floor_align_corners"),
    pytest.param([1, 1, 1.7, 2.3], None, {"mode": "nearest", "nearest_mode": "ceil"},
                 id="nearest_ceil"),
    pytest.param([1, 1, 2, 2], None, {"mode": "linear"}, id="bilinear_up"),
    pytest.param([1, 1, 0.6, 0.5], None, {"mode": "linear", "coordinate_transformation_mode":
                                          "pytorch_half_pixel"}, id="linear_pytorch"),
    pytest.param([1, 1, 2, 1.5], None, {"mode": "linear", "coordinate_transformation_mode":
                                          "align_corners"}, id="linear_align_corners"),
    pytest.param([1, 1, 1.5, 2], None, {"mode": "cubic", "coordinate_transformation_mode":
                                        "asymmetric"}, id="cubic_asymmetric"),
    pytest.param([1, 1, 0.6, 0.5], None, {"mode": "cubic", "exclude_outside": 1,
                                          "cubic_coeff_a": -0.5}, id="cubic_exclude_outside"),
    pytest.param([1, 1, 0.4, 0.6], None, {"mode": "linear", "antialias": 1}, id="linear_antialias"),
    pytest.param([1, 1, 0.5, 0.7], None, {"mode": "cubic", "antialias": 1}, id="cubic_antialias"),
    pytest.param(None, [1, 3, 4, 9], {"mode": "linear"}, id="sizes_stretch"),
    pytest.param(None, [4, 4], {"mode": "nearest", "axes": [3, 2],
                                "keep_aspect_ratio_policy": "not_larger"}, id="sizes_not_larger"),
    pytest.param(None, [9, 4], {"mode": "linear", "axes": [2, 3],
                                "keep_aspect_ratio_policy": "not_smaller"}, id="sizes_not_smaller"),
]


@pytest.mark.parametrize("runtime", [False, True], ids=["constant", "runtime"])
@pytest.mark.parametrize("scales,sizes,attrs", RESIZE_CASES)
def test_resize(scales, sizes, attrs, runtime):
    x = {"x": _random(1, 3, 5, 6)}
    if scales is not None:
        given = {"scales": np.array(scales, np.float32)}
        order = ["x", "", "scales"]
    else:
        given = {"sizes": np.array(sizes, np.int64)}
        order = ["x", "", "", "sizes"]
    feeds, constants = ({**x, **given}, {}) if runtime else (x, given)
    _check("Resize", feeds, constants, order, **attrs)


def test_resize_tf_crop_and_resize():
    roi = np.array([0, 0, 0.2, 0.3, 1, 1, 0.9, 1.2], np.float32)
    _check("Resize", {"x": _random(1, 2, 5, 6), "roi": roi},
           {"sizes": np.array([1, 2, 4, 5], np.int64)}, ["x", "roi", "", "sizes"],
           mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
           extrapolation_value=3.0)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample_opset9(mode):
    """Upsample (deprecated at opset 10) imports as the equivalent Resize."""
    _check("Upsample", {"x": _random(1, 2, 3, 4)}, {"scales": np.array([1, 1, 2, 1.5], np.float32)},
           opset=9, mode=mode)


# --- LpPool, normalisations -------------------------------------------------------------------

@pytest.mark.parametrize("attrs", [
    {"p": 2, "kernel_shape": [3, 3], "pads": [1, 0, 1, 1], "strides": [2, 1]},
    {"p": 1, "kernel_shape": [2, 3], "dilations": [2, 1], "ceil_mode": 1, "strides": [2, 2]},
    {"p": 3, "kernel_shape": [3], "auto_pad": "SAME_UPPER"},
], ids=["p2_pads_strides", "p1_dilations_ceil", "p3_1d_same"])
def test_lp_pool(attrs):
    shape = (2, 3, 7) if len(attrs["kernel_shape"]) == 1 else (2, 3, 7, 6)
    _check("LpPool", {"x": _random(*shape)}, **attrs)


def test_instance_norm():
    _check("InstanceNormalization", {"x": _random(2, 3, 4, 5)},
           {"scale": _random(3, seed=1), "bias": _random(3, seed=2)}, epsilon=1e-3)


def test_group_norm():
    _check("GroupNormalization", {"x": _random(2, 6, 3, 4)},
           {"scale": _random(6, seed=1), "bias": _random(6, seed=2)}, num_groups=3)


@pytest.mark.parametrize("size", [3, 5])  # onnxruntime refuses even sizes
def test_lrn(size):
    _check("LRN", {"x": _random(2, 6, 3, 4)}, size=size, alpha=0.02, beta=0.6, bias=1.5)


@pytest.mark.parametrize("axis,p", [(-1, 2), (1, 1), (0, 2)])
def test_lp_normalization(axis, p):
    x = _random(3, 4, 5)
    x[1, :, 2] = 0.0  # a zero slice: its norm along axis 1 is 0
    _check("LpNormalization", {"x": x}, axis=axis, p=p)


# --- ConvTranspose ----------------------------------------------------------------------------

CONV_TRANSPOSE_CASES = [  # (x shape, weight shape, bias?, attributes)
    pytest.param([1, 3, 4, 5], [3, 2, 3, 3], True, {}, id="plain_bias"),
    pytest.param([2, 2, 3, 4], [2, 3, 3, 2], False, {"strides": [2, 3], "pads": [1, 0, 0, 1]},
                 id="strides_pads"),
    pytest.param([1, 2, 3, 3], [2, 2, 3, 3], True, {"strides": [2, 2], "output_padding": [1, 0]},
                 id="output_padding"),
    pytest.param([1, 2, 3, 3], [2, 2, 3, 3], False, {"strides": [3, 2], "output_shape": [10, 8]},
                 id="output_shape"),
    pytest.param([1, 4, 3, 4], [4, 3, 2, 2], True, {"group": 2, "dilations": [2, 1]},
                 id="group_dilations"),
    pytest.param([1, 2, 4, 3], [2, 2, 3, 3], False, {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
                 id="same_lower"),
    pytest.param([2, 3, 5], [3, 2, 4], True, {"strides": [3], "pads": [2, 1]}, id="1d"),
]


@pytest.mark.parametrize("x_shape,w_shape,bias,attrs", CONV_TRANSPOSE_CASES)
def test_conv_transpose(x_shape, w_shape, bias, attrs):
    constants = {"w": _random(*w_shape, seed=1)}
    if bias:
        constants["b"] = _random(w_shape[1] * attrs.get("group", 1), seed=2)
    _check("ConvTranspose", {"x": _random(*x_shape)}, constants, **attrs)


# --- Einsum -----------------------------------------------------------------------------------

EINSUM_CASES = [  # (equation, operand shapes)
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij->ji", [(3, 4)]),
    ("ij->i", [(3, 4)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(4, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("...ij,...jk", [(2, 1, 3, 4), (1, 3, 4, 2)]),
    ("ij,jk", [(3, 4), (4, 2)]),
]


@pytest.mark.parametrize("equation,shapes", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum(equation, shapes):
    feeds = {f"x{i}": _random(*s, seed=i) for i, s in enumerate(shapes)}
    _check("Einsum", feeds, equation=equation)


# --- Slice and Pad with run-time starts and pads ----------------------------------------------

@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1, -3], [4, 100], [0, -1], [1, 2]),
    ([20, 4, -1], [0, -100, 0], [0, 1, 2], [-1, -2, -3]),
    ([-2], [10], None, None),
], ids=["positive_steps", "negative_steps", "default_axes_steps"])
def test_runtime_slice(starts, ends, axes, steps):
    feeds = {"x": _random(5, 6, 7), "starts": np.array(starts, np.int64),
             "ends": np.array(ends, np.int64)}
    order = ["x", "starts", "ends"]
    for name, value in (("axes", axes), ("steps", steps)):
        if value is not None:
            feeds[name] = np.array(value, np.int64)
            order.append(name)
    _check("Slice", feeds, order=order)


@pytest.mark.parametrize("mode,pads,axes", [
    ("constant", [0, 2, -1, 1, 3, 0], None),
    ("constant", [1, -2, 0, 2], [2, -3]),
    ("edge", [0, 2, 1, 1, 0, 3], None),
    ("reflect", [0, 3, 2, 0, 2, 1], None),
    ("wrap", [0, 4, 1, 1, 0, 7], None),
])
def test_runtime_pad(mode, pads, axes):
    feeds = {"x": _random(2, 5, 4), "pads": np.array(pads, np.int64)}
    order = ["x", "pads"]
    if mode == "constant":
        feeds["value"] = np.array(0.5, np.float32)
        order.append("value")
    if axes is not None:
        feeds["axes"] = np.array(axes, np.int64)
        order.append("axes")
    _check("Pad", feeds, order=order, mode=mode)


# --- Det --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [[3, 3], [4, 2, 2], [2, 3, 5, 5], [8, 8], [1, 1]])
def test_det(shape):
    """Random matrices (a pivot swap at most steps), plus a singular one (two equal rows: 0, or
    a rounding's worth) and one whose first pivot is 0 (a swap is needed) where the batch has
    room. Relative tolerance 1e-4 of the elimination's own size: onnxruntime's LU pivots alike."""
    x = _random(*shape, seed=len(shape))
    if len(shape) > 2 and shape[-1] > 1:
        flat = x.reshape(-1, shape[-1], shape[-1])
        flat[0, 1] = flat[0, 0]
        flat[-1, 0, 0] = 0
    _check("Det", {"x": x}, rtol=1e-4, atol=1e-5)


def test_det_order_past_the_unrolled_limit_is_refused():
    import dlc
    from dialects.diagnostics import UnsupportedError

    node = helper.make_node("Det", ["x"], ["y"], name="det")
    graph = helper.make_graph([node], "det", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [9, 9])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(UnsupportedError, match=r"node 'det' \(Det\): 9x9 matrices; dlc unrolls"):
        dlc.compile(model)


# --- Col2Im -----------------------------------------------------------------------------------

def _col2im_model(x_shape, image, channels, **attrs):
    node = helper.make_node("Col2Im", ["x", "image", "block"], ["y"], name="col2im", **attrs)
    f, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    graph = helper.make_graph([node], "col2im", [helper.make_tensor_value_info("x", f, x_shape),
                                                 helper.make_tensor_value_info("image", i64, [len(image)]),
                                                 helper.make_tensor_value_info("block", i64, [len(image)])],
                              [helper.make_tensor_value_info("y", f, [x_shape[0], channels, *image])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


@pytest.mark.parametrize("x_shape,image,blocks,attrs", [
    ([2, 6, 8], [4, 4], [[1, 3], [3, 1]], {"channels": 2}),
    ([1, 8, 9], [5, 5], [[2, 2]], {"channels": 2, "strides": [2, 2], "pads": [1, 0, 1, 1]}),
    ([1, 4, 9], [5, 5], [[2, 2]], {"channels": 1, "dilations": [2, 2], "pads": [0, 0, 0, 0]}),
    ([1, 8, 12], [3, 4, 3], [[2, 2, 2]], {"channels": 1}),
])
def test_col2im(x_shape, image, blocks, attrs):
    """Block shapes are run-time inputs: one compiled model serves each that fits (here [1, 3]
    and [3, 1] both give 8 blocks of 3 on a 4x4 image)."""
    import dlc
    from dialects.diagnostics import DlcError

    model = _col2im_model(x_shape, image, **attrs)
    compiled = dlc.compile(model)
    x = _random(*x_shape, seed=len(image))
    for block in blocks:
        feeds = {"x": x, "image": np.array(image), "block": np.array(block)}
        np.testing.assert_allclose(compiled.run(feeds)["y"], run_onnxruntime(model, feeds)[0],
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(DlcError, match=r"node 'col2im' \(Col2Im\): input 'block_shape' does not fit"):
        compiled.run({**feeds, "block": np.array([1] * len(image))})
    with pytest.raises(DlcError, match=r"node 'col2im' \(Col2Im\): input 'image_shape' is not"):
        compiled.run({**feeds, "image": np.array(image) + 1})


# --- NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss ----------------------------------------

@pytest.mark.parametrize("op_type", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted,ignore", [(False, None), (True, 2), (True, -1)])
def test_losses(op_type, reduction, weighted, ignore):
    """NLL natively, SCE through its function body (LogSoftmax, then NLL): targets hit
    ignore_index where it is set; SCE's log_prob output too."""
    import dlc

    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    target = rng.integers(0, 5, (3, 4)).astype(np.int64)
    if ignore is not None:
        target[0, :2] = ignore
    f = onnx.TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("x", f, x.shape),
              helper.make_tensor_value_info("t", onnx.TensorProto.INT64, target.shape)]
    constants = [numpy_helper.from_array(rng.uniform(0.5, 2, 5).astype(np.float32), "w")] if weighted else []
    outputs = ["loss"] + (["log_prob"] if op_type == "SoftmaxCrossEntropyLoss" else [])
    attrs = {"reduction": reduction} | ({"ignore_index": ignore} if ignore is not None else {})
    node = helper.make_node(op_type, ["x", "t", "w"] if weighted else ["x", "t"], outputs, name="loss", **attrs)
    graph = helper.make_graph([node], "loss", inputs,
                              [helper.make_tensor_value_info(n, f, None) for n in outputs], constants)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))
    feeds = {"x": x, "t": target}
    got = dlc.compile(model).run(feeds)
    for name, want in zip(outputs, run_onnxruntime(model, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_nll_loss_target_out_of_range_fails_the_run():
    import dlc
    from dialects.diagnostics import DlcError

    f = onnx.TensorProto.FLOAT
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["loss"], name="nll", ignore_index=-1)
    graph = helper.make_graph([node], "nll", [helper.make_tensor_value_info("x", f, [2, 3]),
                                              helper.make_tensor_value_info("t", onnx.TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("loss", f, [])])
    compiled = dlc.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))
    x = _random(2, 3)
    np.testing.assert_allclose(compiled.run({"x": x, "t": np.array([2, -1])})["loss"], -x[0, 2], rtol=1e-6)
    for bad in (3, -2):
        with pytest.raises(DlcError, match=r"node 'nll' \(NegativeLogLikelihoodLoss\): a value of input 'target' "
                                           r"is outside \[0, 3\) and is not ignore_index \(-1\)"):
            compiled.run({"x": x, "t": np.array([0, bad])})


# --- AffineGrid -------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [[2, 3, 4, 5], [1, 2, 3, 1, 4]])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_affine_grid(size, align_corners):
    """2-D and 3-D grids (an axis of size 1 included) with 'size' a run-time input: its channel
    count is free, another N or spatial size fails the run. An axis of size 1 with
    align_corners is degenerate (2 / (L - 1)): onnx's reference and torch put it at -1,
    onnxruntime 1.32 at +1; dlc follows the reference there, onnxruntime elsewhere."""
    from onnx.reference import ReferenceEvaluator

    import dlc
    from dialects.diagnostics import DlcError

    spatial = len(size) - 2
    theta = _random(size[0], spatial, spatial + 1, seed=spatial)
    f, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    node = helper.make_node("AffineGrid", ["theta", "size"], ["grid"], name="grid", align_corners=align_corners)
    graph = helper.make_graph([node], "grid", [helper.make_tensor_value_info("theta", f, theta.shape),
                                               helper.make_tensor_value_info("size", i64, [len(size)])],
                              [helper.make_tensor_value_info("grid", f, [size[0], *size[2:], spatial])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    compiled = dlc.compile(model)
    feeds = {"theta": theta, "size": np.array(size)}
    degenerate = align_corners and 1 in size[2:]
    with np.errstate(divide="ignore"):
        want = ReferenceEvaluator(model).run(None, feeds)[0] if degenerate else run_onnxruntime(model, feeds)[0]
    np.testing.assert_allclose(compiled.run(feeds)["grid"], want, rtol=1e-5, atol=1e-6)
    other_channels = np.array(size) + np.eye(len(size), dtype=np.int64)[1]
    compiled.run({**feeds, "size": other_channels})
    with pytest.raises(DlcError, match=r"node 'grid' \(AffineGrid\): input 'size' is not"):
        compiled.run({**feeds, "size": np.array(size) + np.eye(len(size), dtype=np.int64)[-1]})
