"""Conv, pooling, normalisation and reduction rules: dlc vs onnxruntime on one-node models.

Tolerance is conftest's default (rtol=1e-4, atol=1e-5): float32 sums accumulate in
another order than onnxruntime's, so results differ by a few ulp per term.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_matches_onnxruntime, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

OPSET = 21


def _model(op_type: str, x_shape, constants=(), opset: int = OPSET,
           dtype: int = TensorProto.FLOAT, **attrs):
    """A one-node model: input x, then the named constants as initializers, output y.

    y's shape comes from ONNX shape inference, the same arithmetic onnxruntime uses.
    """
    names = ["x", *[name for name, _ in constants]]
    node = helper.make_node(op_type, names, ["y"], name=op_type.lower(), **attrs)
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info("x", dtype, x_shape)],
        [helper.make_tensor_value_info("y", dtype, None)],
        [numpy_helper.from_array(value, name) for name, value in constants])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _weights(*shape, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _assert_matches(model, feeds) -> None:
    """Like conftest's assert_matches_onnxruntime, on chosen inputs."""
    import dlc

    expected = run_onnxruntime(model, feeds)[0]
    np.testing.assert_allclose(dlc.compile(model).run(feeds)["y"], expected, rtol=1e-4, atol=1e-5)


# --- Conv -------------------------------------------------------------------------------------

CONV_CASES = [  # (x shape, weight shape, attributes)
    pytest.param([1, 3, 6, 6], [4, 3, 3, 3], {}, id="plain"),
    pytest.param([2, 3, 7, 6], [4, 3, 3, 3], {"pads": [1, 1, 1, 0], "strides": [2, 2]},
                 id="pads_strides"),
    pytest.param([1, 2, 9, 9], [3, 2, 3, 3], {"dilations": [2, 1]}, id="dilations"),
    pytest.param([1, 4, 5, 5], [6, 2, 3, 3], {"group": 2, "pads": [1, 1, 1, 1]}, id="groups"),
    pytest.param([1, 4, 6, 6], [8, 1, 3, 3], {"group": 4, "pads": [1, 1, 1, 1], "strides": [2, 2]},
                 id="depthwise"),
    pytest.param([1, 2, 5, 6], [3, 2, 4, 4], {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
                 id="same_upper"),
    pytest.param([1, 2, 5, 6], [3, 2, 4, 4], {"auto_pad": "SAME_LOWER"}, id="same_lower"),
    pytest.param([1, 2, 6, 6], [3, 2, 2, 3], {"auto_pad": "VALID", "strides": [2, 2]}, id="valid"),
    pytest.param([1, 8, 4, 4], [5, 8, 1, 1], {}, id="pointwise"),
    # Weight rows 4 KiB apart: pack-weights pads them a cache line (a_row_stride 1040).
    pytest.param([1, 1024, 3, 5], [20, 1024, 1, 1], {}, id="pointwise_1024_channels"),
    # Squeeze-and-excitation's fcs: a 1x1 map is a Gemm with the weights as a transposed B.
    pytest.param([1, 40, 1, 1], [24, 40, 1, 1], {}, id="pointwise_1x1_map"),
    pytest.param([3, 16, 1, 1], [8, 16, 1, 1], {}, id="pointwise_1x1_map_batch"),
    pytest.param([2, 3, 10], [4, 3, 3], {"pads": [1, 0], "strides": [2]}, id="conv1d"),
    # 1-D convs with enough output channels take the 2-D GEMM path as unit-height convs.
    pytest.param([2, 8, 21], [16, 8, 3], {"pads": [1, 2], "strides": [2]}, id="conv1d_gemm"),
    pytest.param([1, 16, 30], [16, 8, 5], {"group": 2, "dilations": [2], "pads": [4, 3]},
                 id="conv1d_gemm_groups_dilated"),
    pytest.param([1, 1, 203], [16, 1, 10], {"strides": [5]}, id="conv1d_gemm_k10_s5"),
    pytest.param([1, 2, 4, 5, 5], [2, 2, 2, 3, 3], {"pads": [0, 1, 0, 0, 0, 1]}, id="conv3d"),
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_CASES)
def test_conv(x_shape, w_shape, attrs, bias):
    constants = [("w", _weights(*w_shape))]
    if bias:
        constants.append(("b", _weights(w_shape[0], seed=2)))
    assert_matches_onnxruntime(_model("Conv", x_shape, constants, **attrs))


# --- Pooling ----------------------------------------------------------------------------------

POOL_CASES = [  # (x shape, attributes)
    pytest.param([1, 3, 6, 6], {"kernel_shape": [2, 2], "strides": [2, 2]}, id="plain"),
    pytest.param([2, 2, 5, 5], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, id="pads"),
    pytest.param([1, 2, 5, 6], {"kernel_shape": [3, 2], "pads": [2, 0, 0, 1], "strides": [2, 2]},
                 id="asymmetric_pads"),
    pytest.param([1, 2, 6, 7], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
                 id="ceil_mode"),
    pytest.param([1, 1, 7, 7], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 0, 0],
                                "ceil_mode": 1}, id="ceil_mode_pads"),
    pytest.param([1, 2, 5, 5], {"kernel_shape": [3, 3], "strides": [2, 2],
                                "auto_pad": "SAME_UPPER"}, id="same_upper"),
    pytest.param([1, 2, 6, 6], {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}, id="same_lower"),
    pytest.param([1, 2, 8, 8], {"kernel_shape": [2, 2], "dilations": [2, 2], "strides": [2, 2],
                                "pads": [1, 1, 1, 1]}, id="dilated"),
    pytest.param([2, 3, 9], {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, id="pool1d"),
]


@pytest.mark.parametrize("x_shape,attrs", POOL_CASES)
def test_max_pool(x_shape, attrs):
    assert_matches_onnxruntime(_model("MaxPool", x_shape, **attrs))


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("x_shape,attrs", POOL_CASES)
def test_average_pool(x_shape, attrs, count_include_pad):
    assert_matches_onnxruntime(_model("AveragePool", x_shape, count_include_pad=count_include_pad,
                                      **attrs))


@pytest.mark.parametrize("op_type", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [[1, 3, 5, 5], [2, 4, 7], [1, 2, 3, 4, 5], [2, 6, 14, 14]])
def test_global_pool(op_type, shape):
    assert_matches_onnxruntime(_model(op_type, shape))


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("x_shape,attrs", POOL_CASES)
def test_max_pool_indices(x_shape, attrs, storage_order):
    """The Indices output: few distinct values, so ties decide which tap is picked (the first in
    the window's row-major order, as onnxruntime scans); indices are exact."""
    import dlc

    model = _model("MaxPool", x_shape, storage_order=storage_order, **attrs)
    model.graph.node[0].output.append("indices")
    model.graph.output.append(helper.make_tensor_value_info("indices", TensorProto.INT64, None))
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    x = np.random.default_rng(len(x_shape)).integers(0, 3, x_shape).astype(np.float32)
    values, indices = run_onnxruntime(model, {"x": x})
    got = dlc.compile(model).run({"x": x})
    np.testing.assert_array_equal(got["y"], values)
    np.testing.assert_array_equal(got["indices"], indices)


# --- Normalisation ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [[2, 3, 4, 5], [4, 6], [1, 2, 3, 3, 2]])
def test_batch_normalization(shape):
    channels = shape[1]
    constants = [("scale", _weights(channels, seed=1)), ("bias", _weights(channels, seed=2)),
                 ("mean", _weights(channels, seed=3)),
                 ("var", np.abs(_weights(channels, seed=4)) + 0.1)]
    assert_matches_onnxruntime(_model("BatchNormalization", shape, constants, epsilon=1e-3))


def test_batch_normalization_factor_from_constants_has_the_kernel_loops_bits():
    """Constant scale and var: scale / sqrt(var + eps) is a weight computed at compile time
    (no loop, no sqrt in the kernel), bit for bit what the kernel computes when they are fed."""
    import dlc
    from dlc.driver import compile_model

    names = ["scale", "bias", "mean", "var"]
    rng = np.random.default_rng(5)
    params = {"scale": _weights(7, seed=1), "bias": _weights(7, seed=2), "mean": _weights(7, seed=3),
              "var": np.abs(_weights(7, seed=4)) * rng.uniform(1e-4, 1e3, 7).astype(np.float32)}
    constant = _model("BatchNormalization", [2, 7, 5], list(params.items()), epsilon=1e-5)
    node = helper.make_node("BatchNormalization", ["x", *names], ["y"], name="bn", epsilon=1e-5)
    fed = helper.make_model(helper.make_graph(
        [node], "bn", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
                       for name, shape in [("x", [2, 7, 5])] + [(name, [7]) for name in names]],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7, 5])]),
        opset_imports=[helper.make_opsetid("", OPSET)])
    linalg = str(compile_model(constant, compile_to="linalg").module)
    assert "batchnormalization.factor" in linalg and "math.sqrt" not in linalg
    assert "math.sqrt" in str(compile_model(fed, compile_to="linalg").module)
    x = _weights(2, 7, 5, seed=9) * 100
    got = dlc.compile(constant).run({"x": x})["y"]
    want = dlc.compile(fed).run({"x": x, **params})["y"]
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis", [([2, 3, 5], -1), ([2, 3, 5], 1), ([2, 3, 5], 0), ([7], 0)])
def test_softmax(op_type, shape, axis):
    assert_matches_onnxruntime(_model(op_type, shape, axis=axis))


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
def test_softmax_is_stable_for_large_inputs(op_type):
    feeds = {"x": np.array([[1000, 999, -1000, 0], [-1e4, -1e4 + 1, -1e4, -1e4]], np.float32)}
    _assert_matches(_model(op_type, [2, 4]), feeds)


@pytest.mark.parametrize("shape,axis,bias", [([2, 3, 8], -1, True), ([2, 3, 4], 1, False),
                                             ([4, 6], 0, True)])
def test_layer_normalization(shape, axis, bias):
    normalized = shape[axis:]
    constants = [("scale", _weights(*normalized, seed=1))]
    if bias:
        constants.append(("bias", _weights(*normalized, seed=2)))
    assert_matches_onnxruntime(_model("LayerNormalization", shape, constants, axis=axis))


def test_layer_normalization_mean_and_inv_std_outputs():
    constants = [("scale", _weights(6, seed=1)), ("bias", _weights(6, seed=2))]
    model = _model("LayerNormalization", [3, 6], constants)
    model.graph.node[0].output.extend(["mean", "inv_std"])
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, [3, 1])
                              for name in ("mean", "inv_std"))
    assert_matches_onnxruntime(model)


def test_batch_normalization_training_mode_matches_onnxruntime():
    """Batch statistics normalise y; the running ones are outputs 1 and 2."""
    import dlc

    names = ["x", "scale", "bias", "mean", "var"]
    node = helper.make_node("BatchNormalization", names, ["y", "running_mean", "running_var"],
                            name="bn", training_mode=1)
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
               for name, shape in (("y", [1, 2, 3]), ("running_mean", [2]), ("running_var", [2]))]
    graph = helper.make_graph(
        [node], "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])], outputs,
        [numpy_helper.from_array(_weights(2, seed=k) + 1.5, name) for k, name in enumerate(names[1:])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    feeds = {"x": _weights(1, 2, 3, seed=9)}
    got = dlc.compile(model).run(feeds)
    for name, want in zip(["y", "running_mean", "running_var"], run_onnxruntime(model, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)


# --- Reductions -------------------------------------------------------------------------------

REDUCTIONS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare",
              "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp"]
X_SHAPE = [2, 3, 4]


@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize("axes", [[1], [-1], [0, 2], None], ids=["1", "-1", "0_2", "all"])
@pytest.mark.parametrize("op_type", REDUCTIONS)
def test_reduce(op_type, axes, keepdims):
    constants = [] if axes is None else [("axes", np.array(axes, np.int64))]
    model = _model(op_type, X_SHAPE, constants, keepdims=keepdims)
    if op_type == "ReduceLogSum":  # a log of the negative sums random inputs give is NaN
        _assert_matches(model, {"x": np.abs(_weights(*X_SHAPE, seed=5)) + 0.1})
    else:
        assert_matches_onnxruntime(model)


@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"])
def test_reduce_int64(op_type):
    model = _model(op_type, X_SHAPE, [("axes", np.array([1], np.int64))], dtype=TensorProto.INT64)
    assert_matches_onnxruntime(model)


@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMax", "ReduceSumSquare"])
def test_reduce_noop_with_empty_axes(op_type):
    assert_matches_onnxruntime(_model(op_type, X_SHAPE, noop_with_empty_axes=1))


def test_reduce_sum_opset13_axes_input():
    model = _model("ReduceSum", X_SHAPE, [("axes", np.array([1], np.int64))], opset=13)
    assert_matches_onnxruntime(model)


def _computed_axes_model(out_shape, keepdims):
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum", keepdims=keepdims)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def test_reduce_with_computed_axes_reads_them_off_the_static_shapes():
    import dlc

    x = np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float32)
    model = dlc.compile(_computed_axes_model([2, 1, 3], keepdims=1))
    got = model.run({"x": x, "axes": np.array([1], np.int64)})["y"]
    np.testing.assert_allclose(got, x.sum(axis=1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMax", "ReduceLogSumExp"])
def test_reduce_with_computed_axes_picks_at_run_time_when_shapes_are_ambiguous(op_type):
    """[2, 3, 3] -> [2, 3] without keepdims: axis 1 or axis 2, the shapes cannot tell. Both are
    computed and the run-time axes pick one; axes that name neither fail the run."""
    import dlc
    from dialects.diagnostics import DlcError

    model = _computed_axes_model([2, 3], keepdims=0)
    model.graph.node[0].op_type = op_type
    compiled = dlc.compile(model)
    x = np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float32)
    for axes in ([1], [2], [-1], [-2]):
        feeds = {"x": x, "axes": np.array(axes, np.int64)}
        np.testing.assert_allclose(compiled.run(feeds)["y"], run_onnxruntime(model, feeds)[0],
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(DlcError, match=r"sum.*input 'axes' names none of the reductions"):
        compiled.run({"x": x, "axes": np.array([0], np.int64)})


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conv_im2col_in_l2_sized_blocks_with_a_residual_epilogue(threads):
    """A conv whose im2col columns exceed half of L2 (576 x 1600 floats, 3.7 MB) is one GEMM
    call that builds its columns in blocks of at most half of L2, split into work items for
    the module's threads; the residual Add + Relu are applied in each block's store. (Its filter
    is an input, known at run time: a weight filter takes the implicit GEMM instead.)"""
    import re

    from conftest import random_feeds

    import dlc
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions
    from passes.target_info import target_info

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.uniform(-1, 1, (64,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["c", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])], "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 40, 40]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [64, 64, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 40, 40])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    module = compile_model(model, options=CompileOptions(threads=threads), compile_to="linalg").module
    assert len(re.findall(r"func\.call @dlc_gemm_\d+", str(module))) == 1
    (decl,) = [op for op in module.ops if "dlc.im2col" in op.attributes]
    plan = {key: value.value.data for key, value in decl.attributes["dlc.im2col"].data.items()}
    gemm = {key: getattr(value, "value", value).data for key, value in decl.attributes["dlc.gemm"].data.items()}
    assert gemm["b_layout"] == "window" and gemm["k"] == 576 and gemm["n"] == 1600
    assert plan["width"] <= gemm["ldb"] and 576 * gemm["ldb"] * 4 <= target_info(module).l2_bytes // 2 + 64 * 576
    assert plan["width"] < 1600  # several blocks
    assert (plan["tm"] * plan["tn"] >= 2) == (threads > 1)
    feeds = random_feeds(model)
    feeds["w"] *= 0.1
    got = dlc.compile(model, threads=threads).run(feeds)["y"]
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conv1d_stack_as_gemm_with_a_residual_epilogue(threads):
    """A speech front end (Conv1d k10/5 from one channel, then k3/2 ones, a residual Add +
    Relu fused into a stride-1 one) lowers every conv to one im2col GEMM call, with no
    direct loop nest left, and matches onnxruntime at any thread count."""
    import re

    from conftest import random_feeds

    import dlc
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(-0.3, 0.3, shape).astype(np.float32), name)
             for name, shape in [("w0", (32, 1, 10)), ("w1", (32, 32, 3)), ("b1", (32,)), ("w2", (32, 32, 3))]]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], strides=[5]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], strides=[2]),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], pads=[1, 1]),
             helper.make_node("Add", ["c2", "c1"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "front_end", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1600])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))
    text = str(compile_model(model, options=CompileOptions(threads=threads), compile_to="linalg").module)
    assert len(re.findall(r"func\.call @dlc_gemm_\d+", text)) == 3
    feeds = random_feeds(model)
    got = dlc.compile(model, threads=threads).run(feeds)["y"]
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("output_shape", [None, [2, 3, 6, 6]])
def test_max_unpool_after_max_pool(output_shape):
    """MaxPool's Indices fed to MaxUnpool, as segmentation decoders do; output_shape (a run-time
    input here) the unpooled shape, checked at run time."""
    import dlc
    from dialects.diagnostics import DlcError

    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])
    unpool = helper.make_node("MaxUnpool", ["p", "i"] + (["s"] if output_shape else []), ["y"],
                              name="unpool", kernel_shape=[2, 2], strides=[2, 2])
    inputs = [helper.make_tensor_value_info("x", f, [2, 3, 6, 6])]
    if output_shape:
        inputs.append(helper.make_tensor_value_info("s", i64, [4]))
    graph = helper.make_graph([pool, unpool], "unpool", inputs,
                              [helper.make_tensor_value_info("y", f, output_shape or [2, 3, 6, 6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    feeds = {"x": np.random.default_rng(14).integers(0, 5, (2, 3, 6, 6)).astype(np.float32)}
    if output_shape:
        feeds["s"] = np.array(output_shape, np.int64)
    compiled = dlc.compile(model)
    np.testing.assert_array_equal(compiled.run(feeds)["y"], run_onnxruntime(model, feeds)[0])
    if output_shape:
        with pytest.raises(DlcError, match=r"node 'unpool' \(MaxUnpool\): input 'output_shape' is not"):
            compiled.run({**feeds, "s": np.array([2, 3, 8, 8], np.int64)})


def test_max_unpool_larger_output_shape_is_refused():
    """onnxruntime takes the indices into a larger output_shape's flattening, onnx's reference
    places the unpooled tensor at its start: dlc refuses rather than pick one silently."""
    import dlc
    from dialects.diagnostics import UnsupportedError

    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    node = helper.make_node("MaxUnpool", ["p", "i", "s"], ["y"], name="unpool", kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph([node], "unpool", [helper.make_tensor_value_info("p", f, [1, 1, 2, 2]),
                                                 helper.make_tensor_value_info("i", i64, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", f, [1, 1, 5, 5])],
                              [numpy_helper.from_array(np.array([1, 1, 5, 5], np.int64), "s")])
    with pytest.raises(UnsupportedError, match=r"unpool.*output shape \[1, 1, 5, 5\] differs from the unpooled"):
        dlc.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))


def test_max_unpool_index_out_of_range_fails_the_run():
    import dlc
    from dialects.diagnostics import DlcError

    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    node = helper.make_node("MaxUnpool", ["p", "i"], ["y"], name="unpool", kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph([node], "unpool", [helper.make_tensor_value_info("p", f, [1, 1, 2, 2]),
                                                 helper.make_tensor_value_info("i", i64, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", f, [1, 1, 4, 4])])
    compiled = dlc.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))
    p = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(DlcError, match=r"node 'unpool' \(MaxUnpool\): an index in input 'I' is outside \[0, 16\)"):
        compiled.run({"p": p, "i": np.array([[[[0, 16], [3, 4]]]], np.int64)})
