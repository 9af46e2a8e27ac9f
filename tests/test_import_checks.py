"""What the importer refuses or corrects before compiling (issue 14), each against onnxruntime.

ceil_mode pools sized as the spec says (ONNX's inference keeps windows that start in the end
padding); pools whose pads reach the kernel; constant folds that ONNX cannot size (MaxUnpool's
output_shape) counted against the memory limit; negative, overflowing and empty-Conv inferred
dimensions refused with the node named; Slice steps of INT64_MIN; stored tensors longer than
their dims; window attributes that overflow ONNX's shape arithmetic; NUL characters in
external-data locations; bool inputs holding bytes other than 0 and 1. Every refusal is a
ModelLoadError (or MemoryLimitError) from the API and exit 1 with a hint from the CLI.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper
from test_hostile_inputs import expect_cli_error, make_model, save, tensor

import dlc
from dlc.errors import MemoryLimitError, ModelLoadError

INT64_MIN = np.iinfo(np.int64).min
MLP = str(ROOT / "examples" / "models" / "mlp.onnx")


def constant(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def single_node_model(
    op: str, x_shape, out_rank: int, inputs=("x",), initializers=(), opset=19, **attributes
) -> onnx.ModelProto:
    node = helper.make_node(op, list(inputs), ["y"], name="n", **attributes)
    return make_model(
        [node], [tensor("x", x_shape)], [tensor("y", [None] * out_rank)], initializers, opset=opset
    )


def assert_matches_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    expected = run_onnxruntime(model, feeds)
    actual = list(dlc.compile(model).run(feeds).values())
    for mine, theirs in zip(actual, expected, strict=True):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


# --- finding 3: pools -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, extra",
    [
        ("MaxPool", {}),
        ("AveragePool", {"count_include_pad": 0}),
        ("AveragePool", {"count_include_pad": 1}),
        ("LpPool", {}),
    ],
)
def test_ceil_mode_drops_windows_starting_in_the_end_padding(op, extra):
    """9x9, pads [1, 0, 2, 1], strides [2, 3]: 5x3 as onnxruntime says, not ONNX's 6x4."""
    model = single_node_model(
        op,
        [1, 2, 9, 9],
        4,
        kernel_shape=[3, 3],
        pads=[1, 0, 2, 1],
        strides=[2, 3],
        ceil_mode=1,
        **extra,
    )
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 9)).astype(np.float32)
    assert_matches_onnxruntime(model, {"x": x})


def test_ceil_mode_pool_sized_right_for_the_nodes_after_it():
    """The corrected size reaches the nodes that read the pool (and a declared output)."""
    pool = helper.make_node(
        "MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 0, 2, 1], strides=[2, 3], ceil_mode=1
    )
    flatten = helper.make_node("Flatten", ["p"], ["y"])
    model = make_model(
        [pool, flatten], [tensor("x", [1, 1, 9, 9])], [tensor("y", [1, 15])], opset=17
    )
    x = np.random.default_rng(1).standard_normal((1, 1, 9, 9)).astype(np.float32)
    assert_matches_onnxruntime(model, {"x": x})


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
def test_pool_pads_as_long_as_the_kernel_are_refused(capsys, tmp_path, op):
    model = single_node_model(op, [1, 1, 4, 4], 4, kernel_shape=[2, 2], pads=[0, 2, 0, 0])
    with pytest.raises(ModelLoadError, match=f"node 'n' \\({op}\\): pads"):
        dlc.compile(model)
    expect_cli_error(
        capsys, ["compile", save(tmp_path, model)], "node 'n'", "shorter than", "hint:"
    )


# --- finding 4: folds that ONNX cannot size ---------------------------------------------------


def test_max_unpool_with_constant_output_shape_counts_against_the_memory_limit(capsys, tmp_path):
    """ONNX infers no shape for MaxUnpool given output_shape: the fold would make 256 MB."""
    unpool = helper.make_node(
        "MaxUnpool", ["v", "i", "shape"], ["u"], name="unpool", kernel_shape=[2, 2]
    )
    add = helper.make_node("Add", ["u", "x"], ["y"], name="add")
    model = make_model(
        [unpool, add],
        [tensor("x", [1])],
        [tensor("y", [None] * 4)],
        [
            constant("v", np.ones((1, 1, 2, 2)), np.float32),
            constant("i", np.zeros((1, 1, 2, 2))),
            constant("shape", [1, 1, 8000, 8000]),
        ],
    )
    with pytest.raises(MemoryLimitError, match=r"constant folding node 'unpool' \(MaxUnpool\)"):
        dlc.compile(model, max_memory="100MiB")
    expect_cli_error(
        capsys,
        ["compile", save(tmp_path, model), "--max-memory", "100MiB"],
        "node 'unpool' (MaxUnpool)",
        "244 MiB",
        "memory limit",
    )


# --- finding 7: inferred dimensions -----------------------------------------------------------

NEGATIVE = {  # name: (op, x shape, output rank, inputs, initializers, attributes)
    "conv_kernel_over_input": (
        "Conv",
        [1, 1, 3, 3],
        4,
        ("x", "w"),
        [constant("w", np.ones((1, 1, 5, 5)), np.float32)],
        {},
    ),
    "pool_kernel_over_input": ("MaxPool", [1, 1, 3, 3], 4, ("x",), [], {"kernel_shape": [5, 5]}),
    "negative_pad_past_the_size": (
        "Pad",
        [1, 4],
        2,
        ("x", "pads"),
        [constant("pads", [0, -3, 0, -3])],
        {},
    ),
    "negative_split": ("Split", [4], 1, ("x", "split"), [constant("split", [6, -2])], {}),
    "negative_resize_scale": (
        "Resize",
        [1, 1, 4, 4],
        4,
        ("x", "", "scales"),
        [constant("scales", [1, 1, -2, 2], np.float32)],
        {},
    ),
    "expand_to_minus_3": ("Expand", [1, 4], 2, ("x", "shape"), [constant("shape", [-3, 4])], {}),
    "conv_of_empty_output": (
        "Conv",
        [1, 1, 3, 3],
        4,
        ("x", "w"),
        [constant("w", np.ones((1, 1, 4, 4)), np.float32)],
        {},
    ),
}


@pytest.mark.parametrize("case", NEGATIVE)
def test_impossible_inferred_dimensions_are_refused_with_the_node_named(capsys, tmp_path, case):
    op, shape, rank, inputs, initializers, attributes = NEGATIVE[case]
    model = single_node_model(op, shape, rank, inputs, initializers, opset=17, **attributes)
    if op == "Split":
        model.graph.node[0].output[:] = ["y", "z"]
        model.graph.output.append(tensor("z", [None]))
    with pytest.raises(ModelLoadError, match=f"node 'n' \\({op}\\) computes output"):
        dlc.compile(model)
    expect_cli_error(
        capsys,
        ["compile", save(tmp_path, model), "-o", str(tmp_path / "out")],
        f"node 'n' ({op})",
        "hint:",
    )
    assert not (tmp_path / "out").exists()  # no artifact that `dlc run` would call damaged


def test_zero_size_slice_still_compiles_and_runs():
    model = single_node_model(
        "Slice", [5], 1, ("x", "starts", "ends"), [constant("starts", [2]), constant("ends", [2])]
    )
    assert_matches_onnxruntime(model, {"x": np.arange(5, dtype=np.float32)})


@pytest.mark.parametrize("start, end", [(-1, INT64_MIN), (4, 0), (-1, -100)])
def test_slice_step_int64_min_matches_onnxruntime(start, end):
    model = single_node_model(
        "Slice",
        [5],
        1,
        ("x", "starts", "ends", "axes", "steps"),
        [
            constant("starts", [start]),
            constant("ends", [end]),
            constant("axes", [0]),
            constant("steps", [INT64_MIN]),
        ],
    )
    assert_matches_onnxruntime(model, {"x": np.arange(5, dtype=np.float32)})


# --- finding 8: other faults a user can reach ------------------------------------------------


def _add_model(weight: onnx.TensorProto) -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add")],
        [tensor("x", [2, 2])],
        [tensor("y", [2, 2])],
        [weight],
    )


def test_raw_data_longer_than_the_dims_say(capsys, tmp_path):
    weight = constant("w", np.ones((2, 2)), np.float32)
    weight.raw_data = np.ones(6, np.float32).tobytes()
    expect_cli_error(
        capsys,
        ["compile", save(tmp_path, _add_model(weight))],
        "initializer 'w' has dims [2, 2]",
        "holds 24 bytes",
    )


def test_float_data_longer_than_the_dims_say(capsys, tmp_path):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0] * 4)
    weight.float_data.extend([1.0, 1.0])
    with pytest.raises(ModelLoadError, match="initializer 'w' .* holds 6 values"):
        dlc.compile(_add_model(weight))


def test_huge_conv_dilation(capsys, tmp_path):
    model = single_node_model(
        "Conv",
        [1, 1, 3, 3],
        4,
        ("x", "w"),
        [constant("w", np.ones((1, 1, 2, 2)), np.float32)],
        dilations=[2**62] * 2,
    )
    expect_cli_error(capsys, ["compile", save(tmp_path, model)], "node 'n' (Conv)", "dilations")


def test_nul_in_an_external_data_location(capsys, tmp_path):
    weight = constant("w", np.ones((2, 2)), np.float32)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="w\0.bin")
    expect_cli_error(capsys, ["compile", save(tmp_path, _add_model(weight))], "tensor 'w'", "NUL")


def test_output_naming_an_existing_file(capsys, tmp_path):
    existing = tmp_path / "taken"
    existing.write_text("mine")
    expect_cli_error(capsys, ["compile", MLP, "-o", str(existing)], "is a file", "hint:")
    expect_cli_error(capsys, ["compile", MLP, "-o", str(existing / "sub")], "is a file")
    expect_cli_error(
        capsys,
        ["compile", MLP, "--compile-to", "llvm", "-o", str(tmp_path / "no" / "m.ll")],
        "does not exist",
        "mkdir -p",
    )
    assert existing.read_text() == "mine"


def test_save_outputs_into_a_missing_folder_creates_it(capsys, tmp_path):
    from test_cli import run_cli

    folder = tmp_path / "new" / "outputs"
    code, _, err = run_cli(capsys, "run", MLP, "--repeat", "1", "--save-outputs", str(folder))
    assert code == 0, err
    assert [p.suffix for p in folder.iterdir()] == [".npy"]
    (tmp_path / "file").write_text("")
    expect_cli_error(capsys, ["run", MLP, "--save-outputs", str(tmp_path / "file")], "is a file")


# --- finding 9 (part): bool inputs -----------------------------------------------------------


@pytest.mark.parametrize("op", ["And", "Or", "Xor", "Not"])
def test_bool_inputs_holding_other_bytes_read_as_true(op):
    inputs = ["a"] if op == "Not" else ["a", "b"]
    model = make_model(
        [helper.make_node(op, inputs, ["y"])],
        [tensor(name, [4], TensorProto.BOOL) for name in inputs],
        [tensor("y", [4], TensorProto.BOOL)],
    )
    raw = {
        "a": np.array([2, 1, 0, 255], np.uint8).view(np.bool_),
        "b": np.array([1, 4, 0, 1], np.uint8).view(np.bool_),
    }
    feeds = {name: raw[name] for name in inputs}
    clean = {name: value.view(np.uint8) != 0 for name, value in feeds.items()}
    np.testing.assert_array_equal(
        dlc.compile(model).run(feeds)["y"], run_onnxruntime(model, clean)[0]
    )
