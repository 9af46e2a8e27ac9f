"""TopK and CumSum (passes/lowering/rules/topk.py, cumulative.py), the bitwise operators and
BitShift (logic.py) and operators expanded into function bodies (dlc/frontend/expand_functions.py): dlc vs
onnxruntime on small models. TopK and CumSum: every attribute, K and axis as constants or run-time inputs; a run-time K
that the compiled shapes do not hold fails the run with a DlcError, a constant one too
large is refused at import.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

import dlc
from dialects.diagnostics import DlcError, ModelLoadError

OPSET = 21


def _model(op_type, feeds: dict, constants: dict, order, outputs, attrs, out_shapes=None):
    """A one-node model over run-time `feeds` and constant `constants`; output types from
    shape inference unless `out_shapes` (name -> (elem type, shape)) says."""
    node = helper.make_node(op_type, order, list(outputs), name=f"{op_type}_0", **attrs)
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in feeds.items()],
        [helper.make_tensor_value_info(n, *(out_shapes or {}).get(n, (TensorProto.UNDEFINED, None)))
         for n in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _compare(op_type, feeds, constants, order, outputs, attrs, types) -> None:
    """onnxruntime first (outputs of element `types`, no shapes); dlc compiles the model with
    the output shapes onnxruntime found."""
    typed = {n: (t, None) for n, t in zip(outputs, types)}
    expected = run_onnxruntime(_model(op_type, feeds, constants, order, outputs, attrs, typed), feeds)
    shapes = {n: (helper.np_dtype_to_tensor_dtype(e.dtype), e.shape) for n, e in zip(outputs, expected)}
    got = dlc.compile(_model(op_type, feeds, constants, order, outputs, attrs, shapes)).run(feeds)
    for name, want in zip(outputs, expected):
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)


def _ties(*shape, seed=0) -> np.ndarray:
    """Few distinct values, so that ties decide indices."""
    return np.random.default_rng(seed).integers(0, 4, shape).astype(np.float32)


# --- TopK -------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis,k,largest,runtime_k", [
    (-1, 3, 1, False), (0, 2, 0, True), (1, 5, 1, True), (2, 1, 0, False), (1, 0, 1, True)])
def test_topk(axis, k, largest, runtime_k):
    x = _ties(3, 5, 4, seed=k)
    k_value = np.array([k], np.int64)
    feeds, constants = ({"x": x, "k": k_value}, {}) if runtime_k else ({"x": x}, {"k": k_value})
    _compare("TopK", feeds, constants, ["x", "k"], ["values", "indices"],
             {"axis": axis, "largest": largest, "sorted": 1}, [TensorProto.FLOAT, TensorProto.INT64])


@pytest.mark.parametrize("dtype", [np.int32, np.float64])
def test_topk_dtypes(dtype):
    x = np.random.default_rng(1).integers(-50, 50, (4, 9)).astype(dtype)
    _compare("TopK", {"x": x}, {"k": np.array([4], np.int64)}, ["x", "k"], ["values", "indices"],
             {"largest": 0}, [helper.np_dtype_to_tensor_dtype(x.dtype), TensorProto.INT64])


def test_topk_runtime_k_other_than_compiled_fails_the_run():
    x = _ties(2, 6)
    shapes = {"values": (TensorProto.FLOAT, [2, 3]), "indices": (TensorProto.INT64, [2, 3])}
    model = _model("TopK", {"x": x, "k": np.array([3])}, {}, ["x", "k"], ["values", "indices"], {},
                   shapes)
    compiled = dlc.compile(model)
    compiled.run({"x": x, "k": np.array([3])})
    for bad in (2, 7, -1):
        with pytest.raises(DlcError, match=r"TopK_0.*input 'K' is not 3"):
            compiled.run({"x": x, "k": np.array([bad])})


def test_topk_constant_k_too_large_is_refused_naming_the_node():
    x = _ties(2, 6)
    shapes = {"values": (TensorProto.FLOAT, [2, 7]), "indices": (TensorProto.INT64, [2, 7])}
    model = _model("TopK", {"x": x}, {"k": np.array([7])}, ["x", "k"], ["values", "indices"], {},
                   shapes)
    with pytest.raises(ModelLoadError, match=r"TopK_0.*less than the requested k"):
        dlc.compile(model)


# --- CumSum -----------------------------------------------------------------------------------

@pytest.mark.parametrize("axis,exclusive,reverse,runtime_axis,dtype", [
    (1, 0, 0, False, np.float32), (-1, 1, 0, True, np.int64), (0, 0, 1, True, np.float32),
    (2, 1, 1, False, np.int32)])
def test_cumsum(axis, exclusive, reverse, runtime_axis, dtype):
    x = np.random.default_rng(axis + 3).uniform(-4, 4, (2, 5, 3)).astype(dtype)
    axis_value = np.array(axis, np.int64 if runtime_axis else np.int32)
    feeds, constants = ({"x": x, "axis": axis_value}, {}) if runtime_axis else ({"x": x}, {"axis": axis_value})
    _compare("CumSum", feeds, constants, ["x", "axis"], ["y"],
             {"exclusive": exclusive, "reverse": reverse}, [helper.np_dtype_to_tensor_dtype(x.dtype)])


def test_cumsum_position_ids_as_roberta_exports_them():
    """mask = input_ids != pad; position_ids = CumSum(mask, axis=1) * mask + pad."""
    ids = np.array([[0, 5, 7, 1, 1], [0, 9, 1, 1, 1]], np.int64)
    pad = np.array(1, np.int64)
    nodes = [helper.make_node("Equal", ["ids", "pad"], ["is_pad"]),
             helper.make_node("Not", ["is_pad"], ["keep"]),
             helper.make_node("Cast", ["keep"], ["mask"], to=TensorProto.INT32),
             helper.make_node("CumSum", ["mask", "one"], ["running"]),
             helper.make_node("Mul", ["running", "mask"], ["masked"]),
             helper.make_node("Cast", ["masked"], ["wide"], to=TensorProto.INT64),
             helper.make_node("Add", ["wide", "pad"], ["positions"])]
    graph = helper.make_graph(
        nodes, "position_ids", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])],
        [helper.make_tensor_value_info("positions", TensorProto.INT64, [2, 5])],
        [numpy_helper.from_array(pad, "pad"), numpy_helper.from_array(np.array(1, np.int32), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    expected = run_onnxruntime(model, {"ids": ids})[0]
    np.testing.assert_array_equal(dlc.compile(model).run({"ids": ids})["positions"], expected)


def test_cumsum_runtime_axis_out_of_range_fails_the_run():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = _model("CumSum", {"x": x, "axis": np.array(0)}, {}, ["x", "axis"], ["y"], {},
                   {"y": (TensorProto.FLOAT, [2, 3])})
    compiled = dlc.compile(model)
    np.testing.assert_array_equal(compiled.run({"x": x, "axis": np.array(-1)})["y"], np.cumsum(x, 1))
    for bad in (2, -3):
        with pytest.raises(DlcError, match=r"CumSum_0.*input 'axis' is out of range \[-2, 2\)"):
            compiled.run({"x": x, "axis": np.array(bad)})


# --- operators newer than opset 21, expanded into their ONNX function bodies -----------------

def _newer_model(nodes, inputs, outputs, constants=(), opset=24):
    graph = helper.make_graph(
        nodes, "newer", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(v, n) for n, v in constants])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _assert_newer_matches(model, feeds, rtol=1e-5, atol=1e-6) -> None:
    expected = run_onnxruntime(model, feeds)
    got = dlc.compile(model).run(feeds)
    for output, want in zip(model.graph.output, expected):
        np.testing.assert_allclose(got[output.name], want, rtol=rtol, atol=atol)


def test_rms_normalization_as_llama_uses_it():
    """RMSNormalization (opset 23) over the last axis with a learned scale, then a Swish (24)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, 16).astype(np.float32)
    model = _newer_model([helper.make_node("RMSNormalization", ["x", "scale"], ["n"], axis=-1, epsilon=1e-5),
                          helper.make_node("Swish", ["n"], ["y"], alpha=1.5)],
                         [("x", [2, 5, 16])], [("y", [2, 5, 16])], [("scale", scale)])
    _assert_newer_matches(model, {"x": x})


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding_with_position_ids(interleaved):
    """RotaryEmbedding (opset 23) on [batch, heads, seq, head_size] with cos/sin caches."""
    rng = np.random.default_rng(interleaved)
    x = rng.standard_normal((1, 2, 3, 8)).astype(np.float32)
    angles = np.outer(np.arange(6), 1.0 / 10000 ** (np.arange(4) / 4)).astype(np.float32)
    positions = np.array([[2, 3, 4]], np.int64)
    nodes = [helper.make_node("RotaryEmbedding", ["x", "cos", "sin", "pos"], ["y"], interleaved=interleaved)]
    graph = helper.make_graph(
        nodes, "rope", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
                        helper.make_tensor_value_info("pos", TensorProto.INT64, positions.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)],
        [numpy_helper.from_array(np.cos(angles), "cos"), numpy_helper.from_array(np.sin(angles), "sin")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    _assert_newer_matches(model, {"x": x, "pos": positions})


# --- BitwiseAnd/Or/Xor/Not --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int64])
def test_bitwise(dtype):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, (2, 3, 4), dtype=dtype, endpoint=True)
    b = rng.integers(info.min, info.max, (3, 1), dtype=dtype, endpoint=True)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("BitwiseAnd", ["a", "b"], ["and"]),
             helper.make_node("BitwiseOr", ["a", "b"], ["or"]),
             helper.make_node("BitwiseXor", ["and", "or"], ["xor"]),
             helper.make_node("BitwiseNot", ["xor"], ["not"])]
    graph = helper.make_graph(
        nodes, "bitwise", [helper.make_tensor_value_info("a", elem, a.shape),
                           helper.make_tensor_value_info("b", elem, b.shape)],
        [helper.make_tensor_value_info(n, elem, a.shape) for n in ("and", "or", "not")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    feeds = {"a": a, "b": b}
    got = dlc.compile(model).run(feeds)
    for name, want in zip(("and", "or", "not"), run_onnxruntime(model, feeds)):
        np.testing.assert_array_equal(got[name], want)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_bit_shift(dtype):
    """Amounts below the width against onnxruntime (its C++ shift is undefined past it); from
    the width on, the spec's 0 (the x86 shift would wrap the amount around instead)."""
    rng = np.random.default_rng(4)
    width = np.dtype(dtype).itemsize * 8
    x = rng.integers(0, np.iinfo(dtype).max, (3, 8), dtype=dtype, endpoint=True)
    y = rng.integers(0, width, (1, 8)).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("BitShift", ["x", "y"], [d.lower()], direction=d) for d in ("LEFT", "RIGHT")]
    graph = helper.make_graph(nodes, "bitshift", [helper.make_tensor_value_info(n, elem, v.shape)
                                                  for n, v in (("x", x), ("y", y))],
                              [helper.make_tensor_value_info(n, elem, x.shape) for n in ("left", "right")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    compiled = dlc.compile(model)
    got = compiled.run({"x": x, "y": y})
    for name, want in zip(("left", "right"), run_onnxruntime(model, {"x": x, "y": y})):
        np.testing.assert_array_equal(got[name], want)
    past = np.array([[width, width + 1, np.iinfo(dtype).max, 0, 1, width - 1, width, 3]], dtype)
    got = compiled.run({"x": x, "y": past})
    inside = past < width
    amount = np.where(inside, past, 0)
    np.testing.assert_array_equal(got["left"], np.where(inside, x << amount, 0))
    np.testing.assert_array_equal(got["right"], np.where(inside, x >> amount, 0))


# --- EyeLike and the window functions ---------------------------------------------------------

@pytest.mark.parametrize("k,dtype", [(0, None), (2, TensorProto.INT64), (-1, TensorProto.FLOAT)])
def test_eye_like(k, dtype):
    attrs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    x = np.zeros((4, 6), np.float32)
    _compare("EyeLike", {"x": x}, {}, ["x"], ["y"], attrs, [dtype or TensorProto.FLOAT])


@pytest.mark.parametrize("op_type", ["HannWindow", "HammingWindow", "BlackmanWindow"])
def test_window(op_type):
    size = np.array(9, np.int64)
    for periodic in (0, 1):
        _compare(op_type, {"size": size}, {}, ["size"], ["y"], {"periodic": periodic}, [TensorProto.FLOAT])


def test_window_runtime_size_other_than_compiled_fails_the_run():
    model = _model("HannWindow", {"size": np.array(8, np.int64)}, {}, ["size"], ["y"], {},
                   {"y": (TensorProto.FLOAT, [8])})
    compiled = dlc.compile(model)
    compiled.run({"size": np.array(8, np.int64)})
    with pytest.raises(DlcError, match=r"HannWindow_0.*input 'size' is not 8"):
        compiled.run({"size": np.array(9, np.int64)})


def test_attention_opset23_causal_gqa():
    """Attention (opset 23) expanded into its function body: 4-D, grouped-query, causal."""
    rng = np.random.default_rng(7)
    q = rng.standard_normal((1, 4, 3, 8)).astype(np.float32)
    k = rng.standard_normal((1, 2, 5, 8)).astype(np.float32)
    v = rng.standard_normal((1, 2, 5, 8)).astype(np.float32)
    model = _newer_model([helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1)],
                         [("q", q.shape), ("k", k.shape), ("v", v.shape)], [("y", [1, 4, 3, 8])], opset=23)
    _assert_newer_matches(model, {"q": q, "k": k, "v": v}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset,axes", [(13, None), (21, [1, 2])])
def test_mean_variance_normalization_through_its_body(opset, axes):
    """MeanVarianceNormalization has no lowering: its body (opset 13's with axes an attribute of
    ReduceMean, 18's with axes an input) is expanded at any opset."""
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 5)).astype(np.float32)
    attrs = {} if axes is None else {"axes": axes}
    model = _newer_model([helper.make_node("MeanVarianceNormalization", ["x"], ["y"], **attrs)],
                         [("x", x.shape)], [("y", x.shape)], opset=opset)
    _assert_newer_matches(model, {"x": x}, rtol=1e-4, atol=1e-5)


def test_space_to_depth_crd_opset28():
    """SpaceToDepth with mode=CRD (opset 28; onnxruntime 1.32 stops before it, so the oracle is
    numpy: y[n, c*b*b + i*b + j, h, w] = x[n, c, h*b + i, w*b + j])."""
    x = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6)
    model = _newer_model([helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2, mode="CRD")],
                         [("x", x.shape)], [("y", [2, 12, 2, 3])], opset=28)
    want = x.reshape(2, 3, 2, 2, 3, 2).transpose(0, 1, 3, 5, 2, 4).reshape(2, 12, 2, 3)
    np.testing.assert_array_equal(dlc.compile(model).run({"x": x})["y"], want)


@pytest.mark.parametrize("elem", [TensorProto.FLOAT, TensorProto.INT64])
def test_binarizer_ai_onnx_ml(elem):
    """ai.onnx.ml Binarizer through the body dlc writes for it: a model importing only ai.onnx.ml
    (onnxruntime 1.32 implements it for float only: int64 is checked against numpy)."""
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    x = np.random.default_rng(6).uniform(-3, 3, (3, 7)).astype(dtype)
    x[0, :3] = 1  # equal to the threshold: not above it
    node = helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=1.0)
    graph = helper.make_graph([node], "binarizer", [helper.make_tensor_value_info("x", elem, x.shape)],
                              [helper.make_tensor_value_info("y", elem, x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 3)])
    got = dlc.compile(model).run({"x": x})["y"]
    assert got.dtype == dtype
    want = run_onnxruntime(model, {"x": x})[0] if elem == TensorProto.FLOAT else (x > 1).astype(dtype)
    np.testing.assert_array_equal(got, want)


def test_dropout_mask_in_inference():
    """Dropout's mask output, read downstream, in inference: Y = X and a mask of all true."""
    x = np.random.default_rng(8).standard_normal((2, 3, 4)).astype(np.float32)
    nodes = [helper.make_node("Dropout", ["x", "ratio"], ["y", "mask"], name="drop"),
             helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["y", "m"], ["out"])]
    model = _newer_model(nodes, [("x", x.shape)], [("out", x.shape)],
                         [("ratio", np.array(0.3, np.float32))], opset=OPSET)
    model.graph.output.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, x.shape))
    got = dlc.compile(model).run({"x": x})
    want_out, want_mask = run_onnxruntime(model, {"x": x})
    np.testing.assert_array_equal(got["out"], want_out)
    np.testing.assert_array_equal(got["mask"], want_mask)


def _cumprod_reference(x, axis, exclusive, reverse):
    """numpy's cumprod with the spec's exclusive and reverse (onnxruntime 1.32 stops before
    opset 26, where CumProd appears)."""
    y = np.flip(x, axis) if reverse else x
    if exclusive:
        y = np.concatenate([np.ones_like(np.take(y, [0], axis)), np.delete(y, -1, axis)], axis)
    y = np.cumprod(y, axis=axis, dtype=x.dtype)
    return np.flip(y, axis) if reverse else y


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumprod(exclusive, reverse, dtype):
    """CumProd (opset 26) through the body dlc writes for it, axis a constant and a run-time
    input; zeros and negative values in x."""
    x = np.random.default_rng(9).integers(-3, 4, (2, 3, 4)).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node("CumProd", ["x", "axis"], ["y"], name="cumprod", exclusive=exclusive,
                            reverse=reverse)
    out = [helper.make_tensor_value_info("y", elem, x.shape)]
    for axis in (1, -1):
        graph = helper.make_graph([node], "cumprod", [helper.make_tensor_value_info("x", elem, x.shape)], out,
                                  [numpy_helper.from_array(np.array(axis, np.int64), "axis")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26)])
        got = dlc.compile(model).run({"x": x})["y"]
        np.testing.assert_array_equal(got, _cumprod_reference(x, axis % 3, exclusive, reverse))
    graph = helper.make_graph([node], "cumprod", [helper.make_tensor_value_info("x", elem, x.shape),
                                                  helper.make_tensor_value_info("axis", TensorProto.INT32, [])], out)
    compiled = dlc.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26)]))
    for axis in (0, 2, -2):
        got = compiled.run({"x": x, "axis": np.array(axis, np.int32)})["y"]
        np.testing.assert_array_equal(got, _cumprod_reference(x, axis % 3, exclusive, reverse))
    with pytest.raises(DlcError, match=r"cumprod_expanded_axis.*out of range"):
        compiled.run({"x": x, "axis": np.array(3, np.int32)})


@pytest.mark.parametrize("mode,axis", [("linear", -2), ("circular", -2), ("circular", 1)])
def test_tensor_scatter_kv_cache_update(mode, axis):
    """TensorScatter (opset 24) as a decoder appends to its KV cache: per-sample write indices,
    wrapping when circular; a linear write past the cache's end fails the run."""
    rng = np.random.default_rng(10)
    cache = rng.standard_normal((2, 3, 6, 4)).astype(np.float32)
    update_shape = [2, 3, 6, 4]
    update_shape[axis] = 2
    update = rng.standard_normal(update_shape).astype(np.float32)
    where = np.array([1, 4], np.int64) if mode == "linear" else np.array([5, 2], np.int64)
    node = helper.make_node("TensorScatter", ["cache", "update", "where"], ["present"], name="kv",
                            mode=mode, axis=axis)
    graph = helper.make_graph([node], "kv", [helper.make_tensor_value_info("cache", TensorProto.FLOAT, cache.shape),
                                             helper.make_tensor_value_info("update", TensorProto.FLOAT, update.shape),
                                             helper.make_tensor_value_info("where", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("present", TensorProto.FLOAT, cache.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    feeds = {"cache": cache, "update": update, "where": where}
    compiled = dlc.compile(model)
    np.testing.assert_array_equal(compiled.run(feeds)["present"], run_onnxruntime(model, feeds)[0])
    if mode == "linear":
        with pytest.raises(DlcError, match=r"kv_expanded_write.*out of range"):
            compiled.run({**feeds, "where": np.array([0, 5], np.int64)})


@pytest.mark.parametrize("op_type,attrs,states", [
    ("Adagrad", {"decay_factor": 0.1, "epsilon": 1e-6, "norm_coefficient": 0.01}, ["H"]),
    ("Adam", {"alpha": 0.9, "beta": 0.99, "epsilon": 1e-5, "norm_coefficient": 0.02,
              "norm_coefficient_post": 0.01}, ["V", "H"]),
    ("Momentum", {"alpha": 0.9, "beta": 0.5, "mode": "standard", "norm_coefficient": 0.01}, ["V"]),
    ("Momentum", {"alpha": 0.9, "beta": 0.5, "mode": "nesterov", "norm_coefficient": 0.01}, ["V"]),
])
def test_training_optimizer_step(op_type, attrs, states):
    """One optimizer step (ai.onnx.preview.training) on two tensor groups through the body dlc
    writes; T = 0 and T > 0 from one compile (the bias correction and first-step beta are
    picked at run time). onnxruntime's standard build lacks these operators: the oracle is
    onnx's reference evaluator, the spec's own code."""
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(11)
    shapes = [[3], [2, 4]]
    f = TensorProto.FLOAT
    groups = [[f"{kind}{k}" for k in range(2)] for kind in ["X", "G", *states]]
    inputs = [helper.make_tensor_value_info("R", f, []), helper.make_tensor_value_info("T", TensorProto.INT64, [])]
    inputs += [helper.make_tensor_value_info(n, f, shapes[k]) for group in groups for k, n in enumerate(group)]
    outputs = [helper.make_tensor_value_info(f"{n}_new", f, shapes[k])
               for group in [groups[0], *groups[2:]] for k, n in enumerate(group)]
    node = helper.make_node(op_type, [i.name for i in inputs], [o.name for o in outputs],
                            domain="ai.onnx.preview.training", name="step", **attrs)
    model = helper.make_model(helper.make_graph([node], "step", inputs, outputs),
                              opset_imports=[helper.make_opsetid("ai.onnx.preview.training", 1)])
    feeds = {i.name: rng.uniform(0.1, 1, shapes[int(i.name[-1])]).astype(np.float32)
             for i in inputs[2:]}
    compiled = dlc.compile(model)
    for step in (0, 3):
        feeds.update(R=np.array(0.1, np.float32), T=np.array(step, np.int64))
        got = compiled.run(feeds)
        for output, want in zip(outputs, ReferenceEvaluator(model).run(None, feeds)):
            np.testing.assert_allclose(got[output.name], want, rtol=1e-5, atol=1e-6, err_msg=output.name)


@pytest.mark.parametrize("x_shape", [[3, 5], [2, 3, 6], [7]])
def test_array_feature_extractor(x_shape):
    """ai.onnx.ml ArrayFeatureExtractor: the last axis at the indices (repeats allowed); a 1-D
    X gives [1, k] as in onnxruntime."""
    x = np.random.default_rng(12).standard_normal(x_shape).astype(np.float32)
    indices = np.array([4, 0, 4, 2], np.int64)
    node = helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain="ai.onnx.ml", name="afe")
    out_shape = [1, 4] if len(x_shape) == 1 else [*x_shape[:-1], 4]
    graph = helper.make_graph([node], "afe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
                                              helper.make_tensor_value_info("i", TensorProto.INT64, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 3),
                                                    helper.make_opsetid("", OPSET)])
    compiled = dlc.compile(model)
    feeds = {"x": x, "i": indices}
    np.testing.assert_array_equal(compiled.run(feeds)["y"], run_onnxruntime(model, feeds)[0])
    with pytest.raises(DlcError, match=r"afe_expanded_gather.*out of range"):
        compiled.run({**feeds, "i": np.array([0, 1, 2, x_shape[-1]], np.int64)})


# --- ReverseSequence --------------------------------------------------------------------------

@pytest.mark.parametrize("time_axis,batch_axis", [(0, 1), (1, 0)])
def test_reverse_sequence(time_axis, batch_axis):
    x = np.random.default_rng(2).standard_normal((4, 5, 3)).astype(np.float32)
    batch = x.shape[batch_axis]
    lengths = np.random.default_rng(3).integers(0, x.shape[time_axis] + 1, batch).astype(np.int64)
    _compare("ReverseSequence", {"x": x, "lens": lengths}, {}, ["x", "lens"], ["y"],
             {"time_axis": time_axis, "batch_axis": batch_axis}, [TensorProto.FLOAT])


def test_reverse_sequence_length_out_of_range_fails_the_run():
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    model = _model("ReverseSequence", {"x": x, "lens": np.array([1, 2])}, {}, ["x", "lens"], ["y"],
                   {"time_axis": 1, "batch_axis": 0}, {"y": (TensorProto.FLOAT, [2, 4])})
    compiled = dlc.compile(model)
    with pytest.raises(DlcError, match=r"ReverseSequence_0.*'sequence_lens' is outside \[0, 4\]"):
        compiled.run({"x": x, "lens": np.array([5, 1])})


# --- BatchNormalization with training_mode=1 --------------------------------------------------

def test_batch_norm_training_mode_after_a_conv():
    """Batch statistics, and the running ones as outputs, behind a Conv (fusion in the way)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    params = {"w": rng.uniform(-0.5, 0.5, (4, 3, 3, 3)).astype(np.float32),
              "scale": rng.uniform(0.5, 1.5, 4).astype(np.float32),
              "bias": rng.uniform(-1, 1, 4).astype(np.float32),
              "mean": rng.uniform(-1, 1, 4).astype(np.float32),
              "var": rng.uniform(0.5, 1.5, 4).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"],
                              ["y", "running_mean", "running_var"], training_mode=1, momentum=0.8,
                              epsilon=1e-3),
             helper.make_node("Relu", ["y"], ["r"])]
    graph = helper.make_graph(
        nodes, "bn_training", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 4, 5, 5]),
         helper.make_tensor_value_info("running_mean", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("running_var", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(v, n) for n, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    _assert_newer_matches(model, {"x": x}, rtol=1e-4, atol=1e-5)
