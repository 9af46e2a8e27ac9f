"""Shape and data-movement rules (movement.py, indexing.py) and view ops: dlc vs onnxruntime.

Movement copies values exactly, so every comparison is exact (rtol=0, atol=0). Several
cases share one model where their nodes are independent, to keep compile time low.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import random_feeds, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from dialects.diagnostics import UnsupportedError

F32, I64, I32, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL


def _model(nodes, inputs, outputs, constants=None, opset: int = 21, declared=None
           ) -> onnx.ModelProto:
    """Nodes given as (op_type, inputs, outputs, attrs); inputs as {name: (dtype, shape)}.

    Output shapes come from ONNX shape inference, the arithmetic onnxruntime uses, unless
    `declared` ({name: (dtype, shape)}) gives them, as models with run-time shape inputs do.
    """
    declared = declared or {}
    graph = helper.make_graph(
        [helper.make_node(t, i, o, name=f"{t}_{n}", **a) for n, (t, i, o, a) in enumerate(nodes)],
        "movement",
        [helper.make_tensor_value_info(name, dtype, shape) for name, (dtype, shape) in inputs.items()],
        [helper.make_tensor_value_info(name, *declared.get(name, (TensorProto.UNDEFINED, None)))
         for name in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (constants or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _feeds(model, seed: int = 0, low: int = -3, high: int = 4) -> dict[str, np.ndarray]:
    """conftest's random_feeds with negative integers too (indices, pads)."""
    return random_feeds(model, seed, low, high)


def _assert_matches(model, feeds=None) -> None:
    """Every output of dlc equals onnxruntime's exactly (same shape, dtype and values)."""
    import dlc

    feeds = _feeds(model) if feeds is None else feeds
    expected = run_onnxruntime(model, feeds)
    actual = dlc.compile(model).run(feeds)
    assert list(actual) == [o.name for o in model.graph.output]
    for (name, got), want in zip(actual.items(), expected):
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
        np.testing.assert_array_equal(got, want, err_msg=f"output {name}")


def _i64(*values) -> np.ndarray:
    return np.array(values, np.int64)


# --- Transpose, Concat, Split -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, I64, I32, BOOL], ids=["f32", "i64", "i32", "bool"])
def test_transpose_concat_split_dtypes(dtype):
    model = _model([
        ("Transpose", ["x"], ["t_default"], {}),
        ("Transpose", ["x"], ["t_perm"], {"perm": [1, 2, 0]}),
        ("Concat", ["x", "x2", "x"], ["c_neg"], {"axis": -1}),
        ("Concat", ["x", "x2"], ["c_0"], {"axis": 2}),
        ("Split", ["x"], ["s0", "s1"], {"axis": -1, "num_outputs": 2}),
    ], {"x": (dtype, [2, 3, 5]), "x2": (dtype, [2, 3, 1])},
        ["t_default", "t_perm", "c_neg", "c_0", "s0", "s1"])
    _assert_matches(model)


def test_concat_with_empty_inputs_and_split_sizes():
    # The empty tensors are made in the graph and never returned: dlc refuses 0-sized graph
    # inputs, and its runtime cannot return 0-sized outputs yet.
    model = _model([
        ("Slice", ["x", "zero", "zero", "one"], ["empty"], {}),
        ("Concat", ["empty", "x", "empty"], ["c"], {"axis": 1}),
        ("Concat", ["x", "x"], ["c0"], {"axis": 0}),
        ("Split", ["x", "sizes"], ["a", "b", "c_empty", "d"], {"axis": 1}),
        ("Concat", ["c_empty", "d"], ["d_again"], {"axis": 1}),
        ("Split", ["x"], ["u", "v", "w"], {"axis": 0, "num_outputs": 3}),
    ], {"x": (F32, [3, 7])}, ["c", "c0", "a", "b", "d_again", "u", "v", "w"],
        {"sizes": _i64(2, 4, 0, 1), "zero": _i64(0), "one": _i64(1)})
    _assert_matches(model)


# --- Slice ------------------------------------------------------------------------------------

SLICE_CASES = {  # starts, ends, axes, steps (None: input absent)
    "basic": ([1, 0], [3, 5], None, None),
    "negative_and_clamped": ([-3, -100], [100, -1], [0, 2], None),
    "steps": ([0, 1], [4, 6], [1, 2], [2, 3]),
    "negative_steps": ([-1, 4], [-100, 0], [0, 2], [-1, -2]),
    "negative_axes": ([1], [-1], [-2], [1]),
    "reverse_all": ([-1, -1, -1], [-1000, -1000, -1000], [0, 1, 2], [-1, -1, -1]),
}


@pytest.mark.parametrize("case", SLICE_CASES)
def test_slice(case):
    starts, ends, axes, steps = SLICE_CASES[case]
    constants = {"starts": _i64(*starts), "ends": _i64(*ends)}
    inputs = ["x", "starts", "ends"]
    if axes is not None:
        constants["axes"] = _i64(*axes)
    inputs.append("axes" if axes is not None else "")
    if steps is not None:
        constants["steps"] = _i64(*steps)
        inputs.append("steps")
    model = _model([("Slice", inputs, ["y"], {})], {"x": (F32, [4, 5, 6])}, ["y"], constants)
    _assert_matches(model)


def test_slice_int32_indices_on_int64_data():
    model = _model([("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"], {})],
                   {"x": (I64, [5, 4])}, ["y"],
                   {"starts": np.array([3], np.int32), "ends": np.array([0], np.int32),
                    "axes": np.array([0], np.int32), "steps": np.array([-2], np.int32)})
    _assert_matches(model)


# --- Gather family ----------------------------------------------------------------------------


@pytest.mark.parametrize("index_dtype", [I64, I32], ids=["i64", "i32"])
def test_gather(index_dtype):
    model = _model([
        ("Gather", ["x", "i"], ["axis0"], {}),
        ("Gather", ["x", "j"], ["axis1"], {"axis": 1}),
        ("Gather", ["x", "j"], ["axis_neg"], {"axis": -1}),
        ("Gather", ["x", "s"], ["scalar"], {"axis": 1}),
        ("Gather", ["m", "i"], ["bools"], {}),
    ], {"x": (F32, [3, 4, 5]), "i": (index_dtype, [2, 2]), "j": (index_dtype, [3]),
        "s": (index_dtype, []), "m": (BOOL, [3, 2])}, ["axis0", "axis1", "axis_neg", "scalar", "bools"])
    for seed in range(2):  # indices in [-3, 2]: negative ones count from the end
        _assert_matches(model, _feeds(model, seed, low=-3, high=3))


def test_gather_negative_indices_exporter_idiom():
    # What exporters write for x[:, -1]: Gather with a constant index -1.
    model = _model([("Gather", ["x", "last"], ["y"], {"axis": 1})],
                   {"x": (I64, [2, 5, 3])}, ["y"], {"last": np.array(-1, np.int64)})
    _assert_matches(model)


def test_gather_refuses_out_of_range_indices():
    """ONNX calls an out-of-range index an error: the run fails naming the node (the loop
    still clamps, so it never reads out of bounds). More in tests/test_runtime_checks.py."""
    import dlc
    from dialects.diagnostics import DlcError

    model = _model([("Gather", ["x", "i"], ["y"], {})], {"x": (F32, [4, 2]), "i": (I64, [4])}, ["y"])
    compiled = dlc.compile(model)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    with pytest.raises(DlcError, match=r"node 'Gather_0' \(Gather\): an index in input 'indices' "
                                       r"is out of range for axis 0 of 'data' \(size 4\)"):
        compiled.run({"x": x, "i": _i64(7, -9, -1, 1)})
    valid = compiled.run({"x": x, "i": _i64(3, -4, -1, 1)})["y"]
    np.testing.assert_array_equal(valid, x[[3, 0, 3, 1]])


def test_gather_elements():
    model = _model([
        ("GatherElements", ["x", "i"], ["axis0"], {}),
        ("GatherElements", ["x", "i"], ["axis_neg"], {"axis": -1}),
        ("GatherElements", ["b", "k"], ["bools"], {"axis": 1}),
    ], {"x": (F32, [4, 4]), "i": (I64, [2, 4]), "b": (BOOL, [2, 3, 2]), "k": (I32, [2, 5, 2])},
        ["axis0", "axis_neg", "bools"])
    _assert_matches(model, _feeds(model, low=-2, high=2))


@pytest.mark.parametrize("batch_dims", [0, 1])
def test_gather_nd(batch_dims):
    model = _model([
        ("GatherND", ["x", "pairs"], ["full"], {"batch_dims": batch_dims}),
        ("GatherND", ["x", "singles"], ["slices"], {"batch_dims": batch_dims}),
    ], {"x": (F32, [3, 3, 4]), "pairs": (I64, [3, 2, 2]), "singles": (I64, [3, 1])},
        ["full", "slices"])
    _assert_matches(model, _feeds(model, low=-3, high=3))


# --- Scatter family ---------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements(reduction):
    """Indices in [-2, 2) repeat: duplicates combine in index order (reduction none: the last
    update wins, as in onnxruntime), so the outputs are equal, not only close."""
    model = _model([
        ("ScatterElements", ["x", "i", "u"], ["axis0"], {"reduction": reduction}),
        ("ScatterElements", ["x", "j", "v"], ["axis_neg"], {"axis": -1, "reduction": reduction}),
        ("ScatterElements", ["n", "k", "w"], ["ints"], {"axis": 1, "reduction": reduction}),
    ], {"x": (F32, [4, 3]), "i": (I64, [3, 3]), "u": (F32, [3, 3]), "j": (I32, [4, 5]),
        "v": (F32, [4, 5]), "n": (I64, [2, 4, 3]), "k": (I64, [2, 6, 1]), "w": (I64, [2, 6, 1])},
        ["axis0", "axis_neg", "ints"])
    for seed in range(2):
        _assert_matches(model, _feeds(model, seed, low=-2, high=2))


def test_scatter_deprecated_opset10():
    """Scatter (opset 9-10, deprecated) reaches the lowering as ScatterElements."""
    model = _model([("Scatter", ["x", "i", "u"], ["y"], {"axis": 1})],
                   {"x": (F32, [3, 4]), "i": (I64, [3, 2]), "u": (F32, [3, 2])}, ["y"], opset=10)
    _assert_matches(model, _feeds(model, low=-4, high=4))


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction):
    model = _model([
        ("ScatterND", ["x", "pairs", "u"], ["elements"], {"reduction": reduction}),
        ("ScatterND", ["x", "singles", "v"], ["rows"], {"reduction": reduction}),
    ], {"x": (F32, [3, 3, 4]), "pairs": (I64, [2, 3, 2]), "u": (F32, [2, 3, 4]),
        "singles": (I64, [4, 1]), "v": (F32, [4, 3, 4])}, ["elements", "rows"])
    for seed in range(2):
        _assert_matches(model, _feeds(model, seed, low=-3, high=3))


@pytest.mark.parametrize("op_type,indices,bad", [
    ("ScatterElements", (I64, [2, 2]), np.array([[0, 1], [4, 0]])),
    ("ScatterElements", (I64, [2, 2]), np.array([[0, -5], [1, 0]])),
    ("ScatterND", (I64, [2, 1]), np.array([[1], [-5]])),
])
def test_scatter_out_of_range_index_fails_the_run(op_type, indices, bad):
    """An index outside [-4, 4) fails the run naming the node (the loop skips its write, never
    stores out of bounds); the same compiled model then runs valid indices as onnxruntime does."""
    import dlc
    from dialects.diagnostics import DlcError

    elements = op_type == "ScatterElements"
    model = _model([(op_type, ["x", "i", "u"], ["y"], {"axis": 1} if elements else {})],
                   {"x": (F32, [2, 4] if elements else [4, 3]), "i": indices,
                    "u": (F32, [2, 2] if elements else [2, 3])}, ["y"])
    compiled = dlc.compile(model)
    feeds = _feeds(model)
    axis_text = r"axis 1 of 'data' \(size 4\)" if elements else r"axes 0..0 of 'data' \(sizes \[4\]\)"
    with pytest.raises(DlcError, match=rf"node '{op_type}_0' \({op_type}\): an index in input "
                                       rf"'indices' is out of range for {axis_text}"):
        compiled.run({**feeds, "i": bad})
    feeds["i"] = np.where(bad >= 4, 3, np.where(bad < -4, -4, bad))
    np.testing.assert_array_equal(compiled.run(feeds)["y"], run_onnxruntime(model, feeds)[0])


def test_scatter_constant_index_out_of_range_is_refused():
    import dlc
    from dialects.diagnostics import CompileError

    model = _model([("ScatterElements", ["x", "i", "u"], ["y"], {})],
                   {"x": (F32, [3, 2]), "u": (F32, [1, 2])}, ["y"], {"i": np.array([[0, 3]])})
    with pytest.raises(CompileError, match=r"ScatterElements_0.*index 3 at \[0, 1\] of constant "
                                           r"input 'indices' is out of range \[-3, 3\)"):
        dlc.compile(model)


# --- CenterCropPad -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axes", [([5, 4, 6], None), ([3, 7], [0, -1]), ([8], [1]), ([2, 9], [2, 0])])
def test_center_crop_pad(shape, axes):
    """Crops and pads by even and odd amounts on one model's axes; 'shape' a constant, then a
    run-time input the compiled sizes are checked against."""
    import dlc
    from dialects.diagnostics import DlcError

    attrs = {} if axes is None else {"axes": axes}
    x_shape = [6, 5, 3]
    model = _model([("CenterCropPad", ["x", "s"], ["y"], attrs)], {"x": (F32, x_shape)}, ["y"],
                   {"s": _i64(*shape)})
    _assert_matches(model)
    out_shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    runtime = _model([("CenterCropPad", ["x", "s"], ["y"], attrs)],
                     {"x": (F32, x_shape), "s": (I64, [len(shape)])}, ["y"], declared={"y": (F32, out_shape)})
    compiled = dlc.compile(runtime)
    feeds = {"x": _feeds(model)["x"], "s": _i64(*shape)}
    np.testing.assert_array_equal(compiled.run(feeds)["y"], run_onnxruntime(runtime, feeds)[0])
    wrong = _i64(*[d + 1 for d in shape])
    with pytest.raises(DlcError, match=rf"CenterCropPad_0.*input 'shape' is not \[{shape[0]}"):
        compiled.run({**feeds, "s": wrong})


# --- Expand, Tile, Pad ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, I64, BOOL], ids=["f32", "i64", "bool"])
def test_expand_and_tile(dtype):
    model = _model([
        ("Expand", ["x", "shape"], ["expanded"], {}),
        ("Expand", ["x", "same"], ["same_rank"], {}),
        ("Tile", ["x", "repeats"], ["tiled"], {}),
        ("Tile", ["x", "zero"], ["empty"], {}),
        ("Concat", ["x", "empty"], ["with_empty"], {"axis": 1}),  # a 0-sized output fails
    ], {"x": (dtype, [3, 1, 2])}, ["expanded", "same_rank", "tiled", "with_empty"],
        {"shape": _i64(2, 1, 4, 1), "same": _i64(1, 5, 1), "repeats": _i64(2, 3, 1),
         "zero": _i64(1, 0, 1)})
    _assert_matches(model)


PAD_CASES = {  # mode, pads, axes (None: input absent)
    "constant": ("constant", [1, 0, 2, 0, 2, 1], None),
    "constant_crop": ("constant", [-1, 2, 0, 1, -2, 1], None),
    "constant_axes": ("constant", [2, 3], [-1]),
    "reflect": ("reflect", [0, 2, 1, 1, 1, 2], None),
    "edge": ("edge", [2, 0, 3, 1, 4, 0], None),
    "wrap": ("wrap", [1, 2, 3, 1, 1, 2], None),
    "edge_crop": ("edge", [0, -1, 2, 0, 2, -1], None),
    # onnxruntime crops before it pads, so wrap repeats the cropped input.
    "wrap_crop": ("wrap", [-1, -1, -1, 1, 1, 3], None),
    "reflect_crop": ("reflect", [1, -1, 2, 0, 1, -1], None),
}


@pytest.mark.parametrize("case", PAD_CASES)
def test_pad(case):
    mode, pads, axes = PAD_CASES[case]
    constants = {"pads": _i64(*pads), "value": np.array(2.5, np.float32)}
    inputs = ["x", "pads", "value" if mode == "constant" else ""]
    if axes is not None:
        constants["axes"] = _i64(*axes)
        inputs.append("axes")
    model = _model([("Pad", inputs, ["y"], {"mode": mode})], {"x": (F32, [2, 3, 4])}, ["y"],
                   constants)
    _assert_matches(model)


def test_pad_runtime_value_and_int_types():
    model = _model([
        ("Pad", ["x", "pads", "v"], ["runtime_value"], {}),
        ("Pad", ["n", "pads"], ["ints_zero"], {}),
        ("Pad", ["n", "pads", "", "axes"], ["ints_axes"], {"mode": "edge"}),
    ], {"x": (F32, [3, 2]), "v": (F32, []), "n": (I64, [3, 2])},
        ["runtime_value", "ints_zero", "ints_axes"],
        {"pads": _i64(1, 0, 0, 2), "axes": _i64(0, 1)})
    _assert_matches(model)


def test_reflect_pad_as_large_as_the_input_is_refused():
    import dlc

    model = _model([("Pad", ["x", "pads"], ["y"], {"mode": "reflect"})], {"x": (F32, [3, 4])},
                   ["y"], {"pads": _i64(0, 4, 0, 0)})
    with pytest.raises(UnsupportedError, match="reflect pads"):
        dlc.compile(model)


def test_pad_with_runtime_pads_is_refused():
    """Run-time pads leave the result shape unknown: refused with a clear error, never guessed."""
    import dlc

    model = _model([("Pad", ["x", "pads"], ["y"], {})], {"x": (F32, [3]), "pads": (I64, [2])}, ["y"])
    with pytest.raises(UnsupportedError):
        dlc.compile(model)


# --- DepthToSpace, SpaceToDepth, Trilu, OneHot ------------------------------------------------


def test_depth_to_space_and_space_to_depth():
    # float32 only: onnxruntime has no integer DepthToSpace kernel to compare with.
    model = _model([
        ("DepthToSpace", ["x"], ["dcr"], {"blocksize": 2}),
        ("DepthToSpace", ["x"], ["crd"], {"blocksize": 2, "mode": "CRD"}),
        ("SpaceToDepth", ["x"], ["s2d"], {"blocksize": 3}),
        ("DepthToSpace", ["x"], ["dcr3"], {"blocksize": 3}),
    ], {"x": (F32, [2, 36, 3, 6])}, ["dcr", "crd", "s2d", "dcr3"])
    _assert_matches(model)


def test_trilu():
    model = _model([
        ("Trilu", ["x"], ["upper"], {}),
        ("Trilu", ["x", "k_pos"], ["upper_k"], {}),
        ("Trilu", ["x", "k_neg"], ["lower_k"], {"upper": 0}),
        ("Trilu", ["x", "k"], ["lower_runtime_k"], {"upper": 0}),
        ("Trilu", ["n"], ["ints"], {"upper": 0}),
        ("Trilu", ["m", "k"], ["bools_runtime_k"], {}),
    ], {"x": (F32, [2, 4, 5]), "n": (I64, [5, 3]), "m": (BOOL, [3, 6]), "k": (I64, [])},
        ["upper", "upper_k", "lower_k", "lower_runtime_k", "ints", "bools_runtime_k"],
        {"k_pos": np.array(2, np.int64), "k_neg": np.array(-1, np.int64)})
    _assert_matches(model)


def test_one_hot():
    model = _model([
        ("OneHot", ["i", "depth", "values"], ["last_axis"], {}),
        ("OneHot", ["i", "depth", "values"], ["axis0"], {"axis": 0}),
        ("OneHot", ["f", "fdepth", "fvalues"], ["float_indices"], {"axis": 1}),
    ], {"i": (I64, [2, 3]), "f": (F32, [4]), "values": (I64, [2])},
        ["last_axis", "axis0", "float_indices"],
        {"depth": np.array(5, np.int64), "fdepth": np.array(5, np.float32),
         "fvalues": np.array([-1.5, 3.0], np.float32)})
    feeds = _feeds(model, low=-6, high=7)  # some indices outside [-depth, depth-1]
    feeds["f"] = np.array([-1.7, 4.9, 2.2, 7.0], np.float32)
    _assert_matches(model, feeds)


# --- Older opset signatures (the importer converts them to opset 21) ------------------------


def test_opset9_attribute_signatures():
    """Split `split`, Slice `starts`/`ends`/`axes` and Pad `pads` were attributes at opset 9."""
    model = _model([
        ("Split", ["x"], ["a", "b"], {"axis": 1, "split": [1, 3]}),
        ("Slice", ["x"], ["s"], {"starts": [1, -3], "ends": [3, 100], "axes": [0, 1]}),
        ("Pad", ["x"], ["p"], {"pads": [1, 0, 0, 2], "mode": "edge"}),
        ("Tile", ["x", "r"], ["t"], {}),
        ("Gather", ["x", "i"], ["g"], {"axis": 1}),
    ], {"x": (F32, [3, 4]), "i": (I64, [2])}, ["a", "b", "s", "p", "t", "g"], {"r": _i64(2, 1)},
        opset=9)
    _assert_matches(model, _feeds(model, low=-4, high=4))


def test_opset11_signatures():
    model = _model([
        ("Split", ["x"], ["a", "b"], {"axis": 1, "split": [1, 3]}),
        ("Pad", ["x", "pads", "v"], ["p"], {}),
        ("DepthToSpace", ["y"], ["d"], {"blocksize": 2}),
    ], {"x": (F32, [3, 4]), "y": (F32, [1, 8, 2, 2])}, ["a", "b", "p", "d"],
        {"pads": _i64(1, 0, 0, 2), "v": np.array(1.5, np.float32)}, opset=11)
    _assert_matches(model)


# --- Folded shape computations and views ------------------------------------------------------


def test_shape_gather_unsqueeze_concat_reshape_idiom():
    """x.view(x.size(0), -1) as exporters write it: folded at import, then a view."""
    model = _model([
        ("Shape", ["x"], ["shape"], {}),
        ("Gather", ["shape", "zero"], ["batch"], {"axis": 0}),
        ("Unsqueeze", ["batch", "axes0"], ["batch1"], {}),
        ("Concat", ["batch1", "minus_one"], ["target"], {"axis": 0}),
        ("Reshape", ["x", "target"], ["flat"], {}),
        ("Size", ["x"], ["size"], {}),
        ("Relu", ["flat"], ["y"], {}),
    ], {"x": (F32, [2, 3, 4])}, ["y", "shape", "size"],
        {"zero": np.array(0, np.int64), "axes0": _i64(0), "minus_one": _i64(-1)})
    _assert_matches(model)


def test_folded_range_and_constant_of_shape():
    model = _model([
        ("Range", ["start", "limit", "delta"], ["r"], {}),
        ("Shape", ["x"], ["shape"], {}),
        ("ConstantOfShape", ["shape"], ["filled"],
         {"value": numpy_helper.from_array(np.array([7], np.int64))}),
        ("Add", ["x", "r"], ["y"], {}),
    ], {"x": (I64, [2, 4])}, ["y", "filled"],
        {"start": np.array(3, np.int64), "limit": np.array(-5, np.int64),
         "delta": np.array(-2, np.int64)})
    _assert_matches(model)


def test_range_and_constant_of_shape_with_runtime_inputs():
    """Not folded when the inputs come at run time; the model declares the result shapes."""
    model = _model([
        ("Range", ["start", "limit", "delta"], ["ints"], {}),
        ("Range", ["fstart", "flimit", "fdelta"], ["floats"], {}),
        ("ConstantOfShape", ["shape"], ["filled"],
         {"value": numpy_helper.from_array(np.array([1.5], np.float32))}),
        ("ConstantOfShape", ["shape"], ["zeros"], {}),
    ], {"start": (I32, []), "limit": (I32, []), "delta": (I32, []), "fstart": (F32, []),
        "flimit": (F32, []), "fdelta": (F32, []), "shape": (I64, [2])},
        ["ints", "floats", "filled", "zeros"],
        declared={"ints": (I32, [4]), "floats": (F32, [5]), "filled": (F32, [2, 3]),
                  "zeros": (F32, [2, 3])})
    feeds = {"start": np.array(7, np.int32), "limit": np.array(-1, np.int32),
             "delta": np.array(-2, np.int32), "fstart": np.array(-1.0, np.float32),
             "flimit": np.array(1.5, np.float32), "fdelta": np.array(0.5, np.float32),
             "shape": _i64(2, 3)}
    _assert_matches(model, feeds)


VIEW_CASES = {  # opset: nodes (x is f32 [2, 3, 4]), constants
    "reshape_allowzero0": (21, [("Reshape", ["x", "s"], ["v"], {})], {"s": _i64(0, -1, 2)}),
    "reshape_allowzero1": (21, [("Reshape", ["x", "s"], ["v"], {"allowzero": 1})],
                           {"s": _i64(4, 6)}),
    "reshape_opset7": (7, [("Reshape", ["x", "s"], ["v"], {})], {"s": _i64(-1, 4)}),
    "flatten": (21, [("Flatten", ["x"], ["v"], {"axis": 2})], {}),
    "flatten_axis0_opset11": (11, [("Flatten", ["x"], ["v"], {"axis": 0})], {}),
    "flatten_negative": (13, [("Flatten", ["x"], ["v"], {"axis": -1})], {}),
    "squeeze_unsqueeze_inputs": (13, [("Unsqueeze", ["x", "a"], ["u"], {}),
                                      ("Squeeze", ["u", "a"], ["v"], {})], {"a": _i64(-1, 1)}),
    "squeeze_unsqueeze_attrs": (11, [("Unsqueeze", ["x"], ["u"], {"axes": [0, 4]}),
                                     ("Squeeze", ["u"], ["v"], {"axes": [0, -1]})], {}),
    "squeeze_all_ones": (21, [("Unsqueeze", ["x", "a"], ["u"], {}),
                              ("Squeeze", ["u"], ["v"], {})], {"a": _i64(0, 2)}),
    "identity_dropout": (21, [("Identity", ["x"], ["i"], {}),
                              ("Dropout", ["i"], ["v"], {})], {}),
    "dropout_opset7": (7, [("Dropout", ["x"], ["v"], {"ratio": 0.3})], {}),
}


@pytest.mark.parametrize("case", VIEW_CASES)
def test_view_ops(case):
    opset, nodes, constants = VIEW_CASES[case]
    # Relu after the view makes the view feed a kernel, not just the output copy.
    model = _model([*nodes, ("Relu", ["v"], ["y"], {})], {"x": (F32, [2, 3, 4])}, ["v", "y"],
                   constants, opset=opset)
    _assert_matches(model)
