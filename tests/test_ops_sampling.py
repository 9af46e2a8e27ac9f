"""GridSample (and the other sampling operators of issue 18 item 4): dlc vs onnxruntime on
one-node models, on cases the official node tests do not cover (batches and channels > 1,
grid points far outside [-1, 1], every mode x padding pair, 3-D reflection), and hostile grids
(NaN, huge values) that must neither crash nor read outside X.

Tolerance is rtol=1e-4, atol=1e-5, as in test_rules_more.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_onnxruntime
from onnx import helper

OPSET = 21


def _model(op_type: str, feeds: dict, out_shape, out_dtype=onnx.TensorProto.FLOAT, outputs=("y",),
           **attrs) -> onnx.ModelProto:
    node = helper.make_node(op_type, list(feeds), list(outputs), name="node", **attrs)
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for name, v in feeds.items()],
        [helper.make_tensor_value_info(name, out_dtype, out_shape) for name in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _versus_onnxruntime(op_type: str, feeds: dict, rtol=1e-4, atol=1e-5, **attrs) -> None:
    import dlc

    expected = run_onnxruntime(_model(op_type, feeds, None, **attrs), feeds)[0]
    got = dlc.compile(_model(op_type, feeds, expected.shape, **attrs)).run(feeds)["y"]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


# --- GridSample -------------------------------------------------------------------------------

def _image_and_grid(spatial, out_spatial, spread, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2, 3, *spatial)).astype(np.float32)
    grid = rng.uniform(-spread, spread, (2, *out_spatial, len(spatial))).astype(np.float32)
    return x, grid


@pytest.mark.parametrize("mode,padding,align", [
    ("linear", "zeros", 0), ("linear", "border", 1), ("linear", "reflection", 0),
    ("nearest", "zeros", 1), ("nearest", "border", 0), ("nearest", "reflection", 1),
    ("cubic", "zeros", 0), ("cubic", "border", 1), ("cubic", "reflection", 0), ("cubic", "reflection", 1),
])
def test_grid_sample_2d(mode, padding, align):
    # points up to 2.5x outside the image: reflection folds some of them more than once
    x, grid = _image_and_grid((5, 7), (4, 6), 2.5, seed=len(mode) + len(padding) + align)
    _versus_onnxruntime("GridSample", {"x": x, "grid": grid}, mode=mode, padding_mode=padding,
                        align_corners=align)


@pytest.mark.parametrize("mode,padding,align", [("linear", "reflection", 0), ("nearest", "border", 1),
                                                ("linear", "zeros", 1)])
def test_grid_sample_3d(mode, padding, align):
    x, grid = _image_and_grid((3, 4, 5), (2, 3, 2), 1.6, seed=7)
    _versus_onnxruntime("GridSample", {"x": x, "grid": grid}, mode=mode, padding_mode=padding,
                        align_corners=align)


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_grid_sample_length_one_axis_reflects_aligned(mode):
    """A length-1 axis with align_corners: reflection has a zero-width range (onnx.reference
    divides by it); every coordinate lands on the one pixel, as in onnxruntime."""
    x = np.random.default_rng(0).uniform(-1, 1, (1, 2, 1, 5)).astype(np.float32)
    grid = np.random.default_rng(1).uniform(-1.5, 1.5, (1, 3, 3, 2)).astype(np.float32)
    _versus_onnxruntime("GridSample", {"x": x, "grid": grid}, mode=mode, padding_mode="reflection",
                        align_corners=1)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_hostile_grid_stays_inside(padding):
    """NaN, infinite and huge grid values: the run finishes, finite grid points match
    onnxruntime, and every output is a value of X, 0 or NaN (never memory outside X)."""
    import dlc

    x, grid = _image_and_grid((4, 4), (3, 5), 1.0, seed=3)
    hostile = grid.copy()
    hostile[0, 0, 0] = [np.nan, 0.2]
    hostile[0, 0, 1] = [np.inf, -np.inf]
    hostile[1, 2, 4] = [3e38, -3e38]
    hostile[1, 1, 1] = [1e7, -7e6]
    feeds = {"x": x, "grid": hostile}
    got = dlc.compile(_model("GridSample", feeds, [2, 3, 3, 5], mode="nearest", padding_mode=padding)
                      ).run(feeds)["y"]
    allowed = set(x.ravel().tolist()) | {0.0}
    assert all(v in allowed or np.isnan(v) for v in got.ravel().tolist())
    expected = run_onnxruntime(_model("GridSample", feeds, None, mode="nearest", padding_mode=padding),
                               feeds)[0]
    finite = np.isfinite(hostile).all(axis=-1) & (np.abs(hostile) < 1e6).all(axis=-1)  # [N, H, W]
    mask = np.broadcast_to(finite[:, None], got.shape)
    np.testing.assert_array_equal(got[mask], expected[mask])


def test_grid_sample_refuses_unknown_mode():
    import dlc
    from dlc.errors import DlcError

    x, grid = _image_and_grid((4, 4), (2, 2), 1.0)
    model = _model("GridSample", {"x": x, "grid": grid}, [2, 3, 2, 2], mode="linear", padding_mode="wrap")
    with pytest.raises(DlcError, match=r"node 'node' \(GridSample\): .*padding_mode 'wrap'"):
        dlc.compile(model)


# --- RoiAlign ---------------------------------------------------------------------------------

def _rois(seed: int, count: int, size: float) -> np.ndarray:
    """(x1, y1, x2, y2) boxes in image pixels, some reaching past the image's sides."""
    rng = np.random.default_rng(seed)
    corner = rng.uniform(-0.2 * size, size, (count, 2))
    extent = rng.uniform(0.5, 0.8 * size, (count, 2))
    return np.concatenate([corner, corner + extent], axis=1).astype(np.float32)


@pytest.mark.parametrize("mode,transform,ratio,scale", [
    ("avg", "half_pixel", 0, 0.25), ("avg", "output_half_pixel", 2, 0.5),
    ("max", "half_pixel", 3, 0.25), ("max", "output_half_pixel", 0, 0.25),
])
def test_roi_align(mode, transform, ratio, scale):
    """Two images, rois of both (sample counts per bin from 1 to ~4 when sampling_ratio is 0)."""
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 12, 10)).astype(np.float32)
    rois = _rois(2, 6, 40.0)
    feeds = {"x": x, "rois": rois, "batch": np.array([0, 1, 1, 0, 1, 0], np.int64)}
    _versus_onnxruntime("RoiAlign", feeds, mode=mode, coordinate_transformation_mode=transform,
                        sampling_ratio=ratio, spatial_scale=scale, output_height=3, output_width=4)


def test_roi_align_refuses_a_batch_index_outside_x():
    import dlc
    from dlc.errors import DlcError

    x = np.zeros((2, 1, 6, 6), np.float32)
    feeds = {"x": x, "rois": _rois(0, 2, 6.0), "batch": np.array([0, 2], np.int64)}
    compiled = dlc.compile(_model("RoiAlign", feeds, [2, 1, 2, 2], output_height=2, output_width=2))
    with pytest.raises(DlcError, match=r"node 'node' \(RoiAlign\): input 'batch_indices' holds an index outside"):
        compiled.run(feeds)
    feeds["rois"] = np.array([[0, 0, 2, 2], [0, 0, 1e30, 3]], np.float32)  # 1e30 / 2 samples per bin
    feeds["batch"] = np.array([0, 1], np.int64)
    with pytest.raises(DlcError, match=r"\(RoiAlign\): a roi asks for more than 70 x 70 sampling points"):
        compiled.run(feeds)


# --- NonZero, Compress (value-dependent sizes: the declared output shape fixes them) -----------

def _declared_run(op_type: str, feeds: dict, out_dtype, **attrs):
    """onnxruntime's output, and dlc's compiled with the output shape onnxruntime found."""
    import dlc

    expected = run_onnxruntime(_model(op_type, feeds, None, out_dtype=out_dtype, **attrs), feeds)[0]
    compiled = dlc.compile(_model(op_type, feeds, expected.shape, out_dtype=out_dtype, **attrs))
    return expected, compiled


@pytest.mark.parametrize("dtype", ["float32", "int32", "bool"])
def test_nonzero(dtype):
    rng = np.random.default_rng(4)
    x = (rng.uniform(0, 1, (3, 4, 5)) < 0.3) * rng.integers(1, 5, (3, 4, 5))
    x = x.astype(dtype)
    if dtype == "float32":
        x[1, 2, 3] = np.nan  # nonzero, as in numpy
    feeds = {"x": x}
    expected, compiled = _declared_run("NonZero", feeds, onnx.TensorProto.INT64)
    np.testing.assert_array_equal(compiled.run(feeds)["y"], expected)


def test_nonzero_count_other_than_compiled_fails_the_run():
    from dlc.errors import DlcError

    x = np.array([[0, 1, 0], [2, 0, 3]], np.float32)
    _, compiled = _declared_run("NonZero", {"x": x}, onnx.TensorProto.INT64)
    with pytest.raises(DlcError, match=r"\(NonZero\): the number of nonzero elements of input 'X' is not 3"):
        compiled.run({"x": np.ones((2, 3), np.float32)})


@pytest.mark.parametrize("axis,length", [(0, 4), (1, 5), (-1, 3), (None, 7), (None, 60)])
def test_compress(axis, length):
    """A run-time condition along each axis, shorter than the axis, or of the flattened input."""
    import dlc
    from dlc.errors import DlcError

    rng = np.random.default_rng(length)
    data = rng.uniform(-1, 1, (4, 5, 3)).astype(np.float32)
    condition = rng.uniform(0, 1, length) < 0.5
    feeds = {"x": data, "condition": condition}
    attrs = {} if axis is None else {"axis": axis}
    expected, compiled = _declared_run("Compress", feeds, onnx.TensorProto.FLOAT, **attrs)
    np.testing.assert_array_equal(compiled.run(feeds)["y"], expected)
    condition[:] = True  # more true entries than compiled for
    with pytest.raises(DlcError, match=r"\(Compress\): the number of true entries of input 'condition' is not"):
        compiled.run(feeds)
    # the reference target says so too, naming the node, rather than numpy's reshape error
    reference = dlc.compile(_model("Compress", feeds, expected.shape, out_dtype=onnx.TensorProto.FLOAT, **attrs),
                            target="reference")
    with pytest.raises(DlcError, match=r"\(Compress\), output 'y': the inputs give shape .* the model declares"):
        reference.run(feeds)


# --- NonMaxSuppression ------------------------------------------------------------------------

def _nms_feeds(seed: int, center: bool, limit: int, score_floor: float | None):
    """Two images, three classes, 40 clustered boxes (many overlaps), scores with ties."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, 10, (2, 40, 2)) // 2.5 * 2.5 + rng.uniform(-0.6, 0.6, (2, 40, 2))
    size = rng.uniform(0.5, 3.0, (2, 40, 2))
    if center:
        boxes = np.concatenate([centre, size], axis=-1)
    else:  # [y1, x1, y2, x2], some with the corners flipped
        first, second = centre - size / 2, centre + size / 2
        flip = rng.uniform(0, 1, (2, 40, 1)) < 0.3
        boxes = np.concatenate([np.where(flip, second, first)[..., ::-1], np.where(flip, first, second)[..., ::-1]],
                               axis=-1)
    feeds = {"boxes": boxes.astype(np.float32),
             "scores": (rng.integers(0, 20, (2, 3, 40)) / 20).astype(np.float32),
             "limit": np.array([limit], np.int64), "iou": np.array([0.3], np.float32)}
    if score_floor is not None:
        feeds["floor"] = np.array([score_floor], np.float32)
    return feeds


@pytest.mark.parametrize("center,limit,score_floor", [(0, 40, None), (1, 5, 0.4), (0, 3, 0.0), (1, 0, None)])
def test_non_max_suppression(center, limit, score_floor):
    feeds = _nms_feeds(limit, center, limit, score_floor)
    expected, compiled = _declared_run("NonMaxSuppression", feeds, onnx.TensorProto.INT64,
                                       center_point_box=center)
    np.testing.assert_array_equal(compiled.run(feeds)["y"], expected)


def test_non_max_suppression_other_count_fails_the_run():
    from dlc.errors import DlcError

    feeds = _nms_feeds(1, 0, 4, 0.2)
    _, compiled = _declared_run("NonMaxSuppression", feeds, onnx.TensorProto.INT64)
    feeds["limit"] = np.array([2], np.int64)
    with pytest.raises(DlcError, match=r"\(NonMaxSuppression\): the number of boxes it selects is not"):
        compiled.run(feeds)


# --- DFT, STFT --------------------------------------------------------------------------------

def _dft_model(x, out_shape, axis: int, length: int | None, **attrs) -> onnx.ModelProto:
    """DFT (opset 20) with constant axis and dft_length (the latter omitted when None)."""
    from onnx import numpy_helper

    inputs = ["x", "len" if length is not None else "", "axis"]
    node = helper.make_node("DFT", inputs, ["y"], name="node", **attrs)
    constants = [numpy_helper.from_array(np.array(axis, np.int64), "axis")]
    if length is not None:
        constants.append(numpy_helper.from_array(np.array(length, np.int64), "len"))
    graph = helper.make_graph([node], "dft", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_shape)], constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


@pytest.mark.parametrize("parts,axis,length,inverse,onesided", [
    (2, 1, None, 0, 0),   # complex, forward, along a middle axis
    (1, 2, 12, 0, 1),     # real, zero-padded to 12, one-sided
    (2, 1, 5, 0, 0),      # complex, truncated to 5
    (1, 1, 9, 0, 1),      # real, odd one-sided length
    (2, -2, None, 1, 0),  # complex inverse, negative axis
    (2, 1, 10, 1, 1),     # irfft (even length: onnxruntime's odd-length irfft is wrong, below)
])
def test_dft(parts, axis, length, inverse, onesided):
    """onnxruntime computes in float32, so the tolerance scales with the sum's length (~1e-6
    relative per term); dlc sums in float64."""
    import dlc

    x = np.random.default_rng(parts + (length or 0)).uniform(-1, 1, (2, 7, 8, parts)).astype(np.float32)
    feeds = {"x": x}
    attrs = {"inverse": inverse, "onesided": onesided}
    expected = run_onnxruntime(_dft_model(x, None, axis, length, **attrs), feeds)[0]
    got = dlc.compile(_dft_model(x, expected.shape, axis, length, **attrs)).run(feeds)["y"]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5 * x.shape[axis])


def test_dft_irfft_odd_length_matches_numpy():
    """irfft to an odd length 9 from 7 one-sided bins (5 used): numpy.fft.irfft, the spec's
    reference (onnxruntime 1.32 is off by 0.35 here)."""
    import dlc

    x = np.random.default_rng(11).uniform(-1, 1, (2, 7, 8, 2)).astype(np.float32)
    expected = np.fft.irfft(x[..., 0].astype(np.float64) + 1j * x[..., 1], n=9, axis=1)[..., None]
    got = dlc.compile(_dft_model(x, [2, 9, 8, 1], 1, 9, inverse=1, onesided=1)).run({"x": x})["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_stft_against_onnxruntime():
    """A complex signal of two batches, a Hann window, hop 3 (frames overlap)."""
    x = np.random.default_rng(5).uniform(-1, 1, (2, 50, 2)).astype(np.float32)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(10) / 10)).astype(np.float32)
    feeds = {"signal": x, "step": np.array(3, np.int64), "window": window}
    _versus_onnxruntime("STFT", feeds, rtol=1e-4, atol=2e-4, onesided=0)


def test_dft_run_time_axis_outside_the_candidates_fails_the_run():
    """A run-time axis: every axis the shapes allow is compiled; another value fails the run."""
    import dlc
    from dlc.errors import DlcError

    x = np.random.default_rng(0).uniform(-1, 1, (3, 4, 4, 1)).astype(np.float32)
    node = helper.make_node("DFT", ["x", "", "axis"], ["y"], name="node")
    graph = helper.make_graph([node], "dft", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape),
                                              helper.make_tensor_value_info("axis", onnx.TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 4, 4, 2])])
    compiled = dlc.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))
    for axis in (0, 1, 2, -2):
        got = compiled.run({"x": x, "axis": np.array(axis, np.int64)})["y"]
        expected = np.fft.fft(x[..., 0].astype(np.float64), axis=axis % 4)
        np.testing.assert_allclose(got, np.stack([expected.real, expected.imag], -1), rtol=1e-5, atol=1e-5)
    with pytest.raises(DlcError, match=r"\(DFT\): input 'axis' is not one of \[0, 1, 2\]"):
        compiled.run({"x": x, "axis": np.array(3, np.int64)})  # the re/im axis


# --- DeformConv -------------------------------------------------------------------------------

@pytest.mark.parametrize("group,offset_group,stride,dilation,with_mask", [
    (1, 1, 1, 1, False), (2, 2, 2, 1, True), (1, 2, 1, 2, True)])
def test_deform_conv(group, offset_group, stride, dilation, with_mask):
    """Offsets up to 3 pixels (taps leave the image), bias, pads; dlc vs onnxruntime."""
    import dlc

    rng = np.random.default_rng(group * 10 + offset_group)
    x = rng.uniform(-1, 1, (2, 4, 7, 6)).astype(np.float32)
    w = rng.uniform(-1, 1, (6, 4 // group, 3, 3)).astype(np.float32)
    oh, ow = (7 + 2 - 2 * dilation - 1) // stride + 1, (6 + 2 - 2 * dilation - 1) // stride + 1
    feeds = {"x": x, "w": w, "offset": rng.uniform(-3, 3, (2, offset_group * 18, oh, ow)).astype(np.float32),
             "b": rng.uniform(-1, 1, 6).astype(np.float32)}
    if with_mask:
        feeds["mask"] = rng.uniform(0, 1, (2, offset_group * 9, oh, ow)).astype(np.float32)
    attrs = {"group": group, "offset_group": offset_group, "strides": [stride] * 2,
             "dilations": [dilation] * 2, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    model = _model("DeformConv", feeds, [2, 6, oh, ow], **attrs)
    expected = run_onnxruntime(model, feeds)[0]
    got = dlc.compile(model).run(feeds)["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# --- TfIdfVectorizer --------------------------------------------------------------------------

@pytest.mark.parametrize("mode,low,high,skip,rank,weighted", [
    ("TF", 1, 3, 2, 2, False), ("IDF", 2, 3, 1, 1, True), ("TFIDF", 1, 2, 0, 2, True), ("IDF", 1, 1, 3, 2, False)])
def test_tfidf_vectorizer(mode, low, high, skip, rank, weighted):
    """Rows of 12 tokens from a vocabulary of 4 (n-grams recur), a pool of 1- to 3-grams in
    permuted output columns (two sharing one when unweighted); int64 tokens. Weights belong to
    the pool's n-grams, as the spec and onnxruntime have it (onnx.reference indexes them by
    output column)."""
    rng = np.random.default_rng(len(mode) + skip)
    x = rng.integers(0, 4, (3, 12) if rank == 2 else (12,)).astype(np.int64)
    unigrams, bigrams, trigrams = [0, 2, 3], [0, 1, 2, 2, 3, 0, 1, 1], [0, 1, 2, 2, 2, 3]
    attrs = {"mode": mode, "min_gram_length": low, "max_gram_length": high, "max_skip_count": skip,
             "ngram_counts": [0, 3, 11], "pool_int64s": unigrams + bigrams + trigrams,
             "ngram_indexes": [0, 1, 2, 3, 4, 5, 6, 3, 7]}
    if weighted:
        attrs["ngram_indexes"] = [4, 1, 0, 3, 2, 5, 8, 6, 7]
        attrs["weights"] = rng.uniform(0.5, 2.0, 9).astype(np.float32).tolist()
    _versus_onnxruntime("TfIdfVectorizer", {"x": x}, **attrs)


# --- MelWeightMatrix --------------------------------------------------------------------------

@pytest.mark.parametrize("mels,length,rate,low,high", [(10, 64, 16000, 20.0, 8000.0), (40, 400, 16000, 0.0, 8000.0),
                                                        (16, 256, 22050, 125.0, 7600.0)])
def test_mel_weight_matrix(mels, length, rate, low, high):
    """Run-time parameters (constants would be folded at import), Whisper-like sizes among them."""
    feeds = {"mels": np.array(mels, np.int64), "length": np.array(length, np.int64),
             "rate": np.array(rate, np.int64), "low": np.array(low, np.float32), "high": np.array(high, np.float32)}
    _versus_onnxruntime("MelWeightMatrix", feeds)


def test_mel_weight_matrix_other_sizes_fail_the_run():
    import dlc
    from dlc.errors import DlcError

    feeds = {"mels": np.array(8, np.int64), "length": np.array(16, np.int64), "rate": np.array(8192, np.int64),
             "low": np.array(0.0, np.float32), "high": np.array(4096.0, np.float32)}
    compiled = dlc.compile(_model("MelWeightMatrix", feeds, [9, 8]))
    feeds["mels"] = np.array(9, np.int64)
    with pytest.raises(DlcError, match=r"\(MelWeightMatrix\): inputs 'num_mel_bins' and 'dft_length' do not give"):
        compiled.run(feeds)


# --- BitShift on signed integers (opset 28) -----------------------------------------------------

@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64"])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_signed_bit_shift(dtype, direction):
    """Extremes, negatives and amounts from -3 to width + 3, broadcast over a row (dlc writes
    the node in opset-21 operators: ONNX inference at 21 refuses signed BitShift)."""
    import dlc

    info = np.iinfo(dtype)
    rng = np.random.default_rng(info.bits)
    x = np.concatenate([[info.min, info.max, -1, 0, 1], rng.integers(info.min, info.max, 11, dtype=dtype)])
    x = x.astype(dtype)
    x = x.reshape(4, 4, 1)
    y = np.arange(-3, info.bits + 4, dtype=dtype)[None, None, :]
    node = helper.make_node("BitShift", ["x", "y"], ["z"], name="node", direction=direction)
    tensor = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph([node], "shift", [helper.make_tensor_value_info("x", tensor, x.shape),
                                                helper.make_tensor_value_info("y", tensor, y.shape)],
                              [helper.make_tensor_value_info("z", tensor, [4, 4, y.shape[-1]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 28)])
    expected = run_onnxruntime(model, {"x": x, "y": y})[0]
    got = dlc.compile(model).run({"x": x, "y": y})["z"]
    np.testing.assert_array_equal(got, expected)


def test_optional_get_element_of_a_tensor():
    """OptionalGetElement of a plain tensor (opset 18+) is that tensor, as in onnxruntime."""
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype(np.float32)
    _versus_onnxruntime("OptionalGetElement", {"x": x}, rtol=0, atol=0)


# --- TreeEnsemble (ai.onnx.ml 5) --------------------------------------------------------------

def _tree_ensemble_model(aggregate: int, with_members: bool) -> onnx.ModelProto:
    """Two trees over 3 features, depth 3 and 1, every comparison mode, NaN tracked to true at
    one node; the second tree's root is a set-membership test when `with_members`."""
    tensor = onnx.helper.make_tensor
    modes = [0, 1, 2, 3, 4, 5] + ([6] if with_members else [2])
    node = helper.make_node(
        "TreeEnsemble", ["x"], ["y"], name="node", domain="ai.onnx.ml", n_targets=3,
        aggregate_function=aggregate, tree_roots=[0, 6],
        nodes_modes=tensor("m", onnx.TensorProto.UINT8, [7], modes),
        nodes_featureids=[0, 1, 2, 0, 1, 2, 1],
        nodes_splits=tensor("s", onnx.TensorProto.FLOAT, [7], [0.1, -0.2, 0.3, 0.5, 0.0, -0.4, 0.25]),
        nodes_truenodeids=[1, 3, 4, 1, 3, 5, 7], nodes_trueleafs=[0, 0, 0, 1, 1, 1, 1],
        nodes_falsenodeids=[2, 0, 5, 2, 4, 6, 8], nodes_falseleafs=[0, 1, 0, 1, 1, 1, 1],
        nodes_missing_value_tracks_true=[0, 1, 0, 0, 0, 0, 0],
        leaf_targetids=[0, 1, 2, 0, 1, 2, 1, 0, 2],
        leaf_weights=tensor("w", onnx.TensorProto.FLOAT, [9], [1.0, -2.0, 3.0, 0.5, 4.0, -1.5, 2.5, 0.25, -0.75]),
        **({"membership_values": tensor("v", onnx.TensorProto.FLOAT, [3], [1.0, -1.0, np.nan])}
           if with_members else {}))
    graph = helper.make_graph([node], "trees", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [40, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [40, 3])])
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", 5)]
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize("aggregate,with_members", [(1, False), (0, True), (2, False), (3, True)])
def test_tree_ensemble(aggregate, with_members):
    """Features on the splits (the comparisons' equality edge), set members and NaN among them;
    dlc vs onnxruntime, and vs onnx.reference for SUM/AVERAGE (for MIN/MAX it leaves the type's
    max/min where no tree reaches a target, onnxruntime and dlc 0). The set holds whole numbers
    other than 0: onnxruntime takes only those and truncates the feature to an integer first
    (dlc tests x in the set, as the spec says: the features here truncate into it only when in
    it), and onnx.reference stops reading a set at a 0."""
    from onnx.reference import ReferenceEvaluator

    import dlc

    rng = np.random.default_rng(aggregate)
    x = rng.choice(np.array([-1.0, -0.4, -0.2, 0.0, 0.1, 0.25, 0.3, 0.5, 0.7, np.nan], np.float32), (40, 3))
    model = _tree_ensemble_model(aggregate, with_members)
    got = dlc.compile(model).run({"x": x})["y"]
    np.testing.assert_allclose(got, run_onnxruntime(model, {"x": x})[0], rtol=1e-6)
    if aggregate in (0, 1):
        np.testing.assert_allclose(got, ReferenceEvaluator(model).run(None, {"x": x})[0], rtol=1e-6)
