"""Hostile and malformed inputs (issue 7): each gets a clear error, exit code 1, no traceback.

One test per case, through the real CLI (`dlc.cli.main` in-process, and a subprocess where
the exit code or the process's memory matters) and through the Python API, which raises
the matching `dlc.errors` class. Messages must say what is wrong, where (file, node name
and op type, input name) and what to do (a `hint:` line), as README.md "Errors" promises.
The cases: random bytes, empty and text files, truncated protobuf, cycles, dangling and
duplicate names, unknown domains and operators, shape and type mismatches, negative and
huge dimensions (refused under the memory limit before anything is allocated: inputs,
constant folding, the memory plan, artifacts), external data outside the model's folder,
wrong inputs at run time, missing and damaged files.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper
from test_cli import run_cli

import dlc
import dlc.driver
from dlc.errors import ArtifactError, InputError, MemoryLimitError, ModelLoadError

MLP = str(ROOT / "examples" / "models" / "mlp.onnx")
FLOAT = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17, **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs)


def tensor(name: str, shape, elem_type: int = FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def save(tmp_path, model: onnx.ModelProto, name: str = "m.onnx") -> str:
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())  # no checker: these models are broken on purpose
    return str(path)


def expect_cli_error(capsys, argv, *fragments: str) -> str:
    """Run the CLI; it must exit 1 with every fragment and a hint in its message, no traceback."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 1, f"exit code {code}; stdout: {out}; stderr: {err}"
    assert "Traceback" not in out + err and "internal error" not in err, err
    assert err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in: {err}"
    return err


def run_subprocess(argv, memory_cap_bytes: int | None = None, timeout: int = 120, env_extra=None):
    """`python -m dlc.cli ...` in a child process, optionally under an address-space cap (so a
    missing memory check fails with a MemoryError instead of swapping the machine)."""
    def cap():
        if memory_cap_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (memory_cap_bytes, memory_cap_bytes))

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "dlc.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=cap, env=env, cwd=str(ROOT))


# --- files that are not ONNX models ------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(capsys, tmp_path, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / "random.onnx"
    path.write_bytes(rng.bytes(int(rng.integers(1, 4000))))
    err = expect_cli_error(capsys, ["compile", str(path)], str(path))
    assert "not an ONNX model" in err or "fails onnx.checker" in err
    with pytest.raises(ModelLoadError):
        dlc.compile(str(path))


def test_random_bytes_real_process_exit_code(tmp_path):
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(99).bytes(2048))
    result = run_subprocess(["run", str(path)])
    assert result.returncode == 1
    assert "not an ONNX model" in result.stderr and "Traceback" not in result.stderr


def test_empty_file(capsys, tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    expect_cli_error(capsys, ["run", str(path)], str(path), "the file is empty", "hint:")
    with pytest.raises(ModelLoadError, match="empty"):
        dlc.compile(str(path))


def test_text_file(capsys, tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("graph {\n  node { op_type: 'Relu' }\n}\nthis is text, not a protobuf\n")
    expect_cli_error(capsys, ["compile", str(path)], str(path), "not an ONNX model", "hint:")
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        dlc.compile(str(path))


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999])
def test_truncated_protobuf(capsys, tmp_path, fraction):
    data = open(MLP, "rb").read()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    err = expect_cli_error(capsys, ["compile", str(path)], str(path))
    assert any(s in err for s in ("not an ONNX model", "fails onnx.checker", "no node, graph input")), err
    with pytest.raises(ModelLoadError):
        dlc.compile(str(path))


def test_missing_model_file(capsys, tmp_path):
    missing = str(tmp_path / "nowhere.onnx")
    expect_cli_error(capsys, ["compile", missing], missing, "no such file")
    with pytest.raises(ModelLoadError, match="no such file"):
        dlc.compile(missing)


def test_directory_instead_of_model(capsys, tmp_path):
    expect_cli_error(capsys, ["compile", str(tmp_path)], "is a directory", "dlc run DIR")


# --- graph structure -----------------------------------------------------------------------------

def test_cycle_names_the_nodes_on_it(capsys, tmp_path):
    model = make_model([helper.make_node("Relu", ["b"], ["a"], name="relu_a"),
                        helper.make_node("Add", ["x", "a"], ["b"], name="add_b"),
                        helper.make_node("Relu", ["b"], ["y"], name="relu_out")],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    path = save(tmp_path, model)
    expect_cli_error(capsys, ["compile", path], "cycle", "'relu_a' (Relu)", "'add_b' (Add)", "hint:")
    with pytest.raises(ModelLoadError, match="cycle"):
        dlc.compile(path)


def test_dangling_input_names_node_and_value(capsys, tmp_path):
    model = make_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add_ghost")],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    path = save(tmp_path, model)
    expect_cli_error(capsys, ["compile", path], "node 'add_ghost' (Add) reads 'ghost'",
                     "no node, graph input or initializer produces", "hint:")
    with pytest.raises(ModelLoadError, match="ghost"):
        dlc.compile(path)


def test_duplicate_output_names(capsys, tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["t"], name="first"),
                        helper.make_node("Neg", ["x"], ["t"], name="second"),
                        helper.make_node("Relu", ["t"], ["y"], name="out")],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    path = save(tmp_path, model)
    expect_cli_error(capsys, ["compile", path], "node 'second' (Neg) writes 't'", "node 'first' (Relu)",
                     "SSA", "hint:")
    with pytest.raises(ModelLoadError, match="writes 't'"):
        dlc.compile(path)


def test_node_output_shadowing_a_graph_input(capsys, tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["x"], name="self_loop")],
                       [tensor("x", [2, 3])], [tensor("x", [2, 3])])
    path = save(tmp_path, model)
    expect_cli_error(capsys, ["compile", path], "node 'self_loop' (Relu) writes 'x'", "graph input")


def test_unsorted_acyclic_graph_is_sorted_and_matches_onnxruntime(tmp_path):
    """onnxruntime sorts nodes itself, so dlc accepts an unsorted graph that has no cycle."""
    nodes = [helper.make_node("Relu", ["t"], ["y"], name="second"),
             helper.make_node("Neg", ["x"], ["t"], name="first")]
    model = make_model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    (expected,) = run_onnxruntime(model, {"x": x})
    np.testing.assert_array_equal(dlc.compile(model).run({"x": x})["y"], expected)
    assert [n.name for n in model.graph.node] == ["second", "first"]  # the caller's model untouched


def test_unknown_domain(capsys, tmp_path):
    node = helper.make_node("Frob", ["x"], ["y"], name="frob", domain="com.example")
    graph = helper.make_graph([node], "g", [tensor("x", [2])], [tensor("y", [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = save(tmp_path, model)
    expect_cli_error(capsys, ["compile", path], "node 'frob'", "com.example.Frob", "dlc ops")
    with pytest.raises(dlc.errors.UnsupportedError, match="frob"):
        dlc.compile(path)


def test_domain_not_imported(capsys, tmp_path):
    node = helper.make_node("Frob", ["x"], ["y"], name="frob", domain="com.example")
    path = save(tmp_path, make_model([node], [tensor("x", [2])], [tensor("y", [2])]))
    expect_cli_error(capsys, ["compile", path], "node 'frob' (Frob) uses domain 'com.example'",
                     "opset_import")


def test_unknown_operator(capsys, tmp_path):
    node = helper.make_node("Frobnicate", ["x"], ["y"], name="frob")
    path = save(tmp_path, make_model([node], [tensor("x", [2])], [tensor("y", [2])]))
    expect_cli_error(capsys, ["compile", path], "node 'frob' (Frobnicate)", "not an operator of the ONNX standard",
                     "dlc ops")
    with pytest.raises(ModelLoadError, match="Frobnicate"):
        dlc.compile(path)


def test_operator_newer_than_the_models_opset(capsys, tmp_path):
    node = helper.make_node("Gelu", ["x"], ["y"], name="gelu")  # Gelu arrived in opset 20
    path = save(tmp_path, make_model([node], [tensor("x", [2])], [tensor("y", [2])], opset=13))
    expect_cli_error(capsys, ["compile", path], "node 'gelu' (Gelu)", "opset 13", "added in opset 20")


def test_shape_mismatch_names_node_and_input_shapes(capsys, tmp_path):
    weight = numpy_helper.from_array(np.ones((4, 5), np.float32), "w")
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
                       [tensor("x", [2, 3])], [tensor("y", ["a", "b"])], [weight])
    path = save(tmp_path, model)
    expect_cli_error(capsys, ["compile", path], "node 'proj' (MatMul)", "Incompatible dimensions",
                     "'x' float32[2, 3]", "'w' float32[4, 5]", "hint:")
    with pytest.raises(ModelLoadError, match="proj"):
        dlc.compile(path)


def test_type_mismatch_names_node_and_input_types(capsys, tmp_path):
    weight = numpy_helper.from_array(np.ones((2, 3), np.int64), "w")
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add_int")],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])], [weight])
    path = save(tmp_path, model)
    expect_cli_error(capsys, ["compile", path], "node 'add_int' (Add)", "int64", "'x' float32[2, 3]")
    with pytest.raises(ModelLoadError, match="add_int"):
        dlc.compile(path)


def test_shape_given_on_the_command_line_breaks_a_node(capsys, tmp_path):
    weight = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
                       [tensor("x", ["n", "k"])], [tensor("y", ["n", 4])], [weight])
    path = save(tmp_path, model)
    # Both dims symbolic: --shape fixes those only (a static one must match, issue 17).
    expect_cli_error(capsys, ["compile", path, "--shape", "x=2x5"], "node 'proj' (MatMul)", "'x' float32[2, 5]")


# --- dimensions and the memory limit -----------------------------------------------------------

def test_negative_dimension_in_model(capsys, tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")],
                       [tensor("x", [2, -3])], [tensor("y", [2, -3])])
    path = save(tmp_path, model)
    expect_cli_error(capsys, ["compile", path], "input 'x' declares dimension -3 on axis 1", "--shape x=")
    with pytest.raises(ModelLoadError, match="-3"):
        dlc.compile(path)


def test_negative_dimension_in_initializer(capsys, tmp_path):
    weight = helper.make_tensor("w", FLOAT, [6], [1.0] * 6)
    weight.dims[:] = [-2, -3]
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="a")],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])], [weight])
    expect_cli_error(capsys, ["compile", save(tmp_path, model)], "Negative dimension", "tensor name: w")


@pytest.mark.parametrize("shape", ["x=0x784", "x=-1x784", "x=1xabc"])
def test_bad_shape_option(capsys, shape):
    expect_cli_error(capsys, ["compile", MLP, "--shape", shape], f"--shape {shape}")


def test_non_positive_input_shapes_in_python_api():
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")],
                       [tensor("x", ["n", 3])], [tensor("y", ["n", 3])])
    with pytest.raises(ModelLoadError, match=r"--shape x: dimensions must be positive integers, got \[0, 3\]"):
        dlc.compile(model, input_shapes={"x": (0, 3)})


def test_initializer_claiming_more_elements_than_it_holds(capsys, tmp_path):
    weight = helper.make_tensor("w", FLOAT, [6], [1.0] * 6)
    weight.dims[:] = [100000, 100000]
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="a")],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])], [weight])
    expect_cli_error(capsys, ["compile", save(tmp_path, model)], "tensor name: w", "too small")


def _relu_model(shape) -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [tensor("x", shape)],
                      [tensor("y", shape)])


def test_huge_dimensions_refused_before_allocating(tmp_path):
    """A 100000 x 100000 input (2 x 37 GiB with its output) under a 6 GiB address-space cap."""
    path = save(tmp_path, _relu_model([100000, 100000]))
    start = time.perf_counter()
    result = run_subprocess(["run", path, "--max-memory", "2GiB"], memory_cap_bytes=6 << 30)
    assert result.returncode == 1, result.stderr
    assert "needs 74.5 GiB (inputs and outputs 74.5 GiB), above the memory limit of 2 GiB" in result.stderr
    assert "--max-memory" in result.stderr and "Traceback" not in result.stderr
    assert time.perf_counter() - start < 60


def test_memory_limit_from_python_api_and_environment(tmp_path, monkeypatch):
    model = _relu_model([1024, 1024])  # 4 MiB in, 4 MiB out
    with pytest.raises(MemoryLimitError, match=r"needs 8 MiB .* above the memory limit of 4 MiB"):
        dlc.compile(model, max_memory="4MiB")
    monkeypatch.setenv("DLC_MAX_MEMORY", "4MiB")
    with pytest.raises(MemoryLimitError, match="limit of 4 MiB"):
        dlc.compile(model)
    assert dlc.compile(model, max_memory=16 << 20).run({"x": np.ones((1024, 1024), np.float32)})["y"].sum() \
        == 1024 * 1024  # the explicit option wins over the environment


def test_memory_limit_option_on_the_cli(capsys, tmp_path):
    path = save(tmp_path, _relu_model([1024, 1024]))
    expect_cli_error(capsys, ["compile", path, "--max-memory", "4MiB", "-o", str(tmp_path / "a")],
                     "above the memory limit of 4 MiB", "--max-memory")
    expect_cli_error(capsys, ["compile", path, "--max-memory", "lots"], "--max-memory: cannot read 'lots'",
                     "8GiB")


def test_giant_constant_of_shape_is_not_folded(tmp_path):
    """Constant folding would fill a 50000 x 50000 float32 tensor (9.3 GiB) at compile time."""
    model = make_model(
        [helper.make_node("ConstantOfShape", ["s"], ["c"], name="fill",
                          value=helper.make_tensor("v", FLOAT, [1], [1.0])),
         helper.make_node("Add", ["x", "c"], ["y"], name="add")],
        [tensor("x", [1])], [tensor("y", ["a", "b"])],
        [numpy_helper.from_array(np.array([50000, 50000], np.int64), "s")])
    result = run_subprocess(["compile", save(tmp_path, model), "--max-memory", "1GiB"],
                            memory_cap_bytes=6 << 30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "largest intermediate 'c' float32[50000, 50000] 9.31 GiB" in result.stderr
    assert "above the memory limit of 1 GiB" in result.stderr


def test_giant_range_is_refused_before_shape_inference_materialises_it(tmp_path):
    """ONNX's data propagation would build Range's 3e9 values (std::bad_alloc after ~10 s)."""
    model = make_model([helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="range"),
                        helper.make_node("Add", ["x", "r"], ["y"], name="add")],
                       [tensor("x", [1])], [tensor("y", ["n"])],
                       [numpy_helper.from_array(np.array(v, np.float32), n)
                        for n, v in (("start", 0), ("limit", 3e9), ("delta", 1))])
    start = time.perf_counter()
    result = run_subprocess(["compile", save(tmp_path, model), "--max-memory", "1GiB"],
                            memory_cap_bytes=6 << 30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "'r' float32[3000000000]" in result.stderr and "above the memory limit" in result.stderr
    assert time.perf_counter() - start < 30


def test_size_known_only_after_folding_is_checked_before_the_next_fold(tmp_path):
    """Shape(x) * 20000 -> ConstantOfShape: the 2e4 x 2e4 size appears only once Mul is folded."""
    model = make_model(
        [helper.make_node("Shape", ["x"], ["s"], name="shape"),
         helper.make_node("Mul", ["s", "k"], ["big"], name="scale"),
         helper.make_node("ConstantOfShape", ["big"], ["c"], name="fill",
                          value=helper.make_tensor("v", FLOAT, [1], [2.0])),
         helper.make_node("ReduceSum", ["c"], ["y"], name="sum", keepdims=0)],
        [tensor("x", [1, 1])], [tensor("y", [])],
        [numpy_helper.from_array(np.array([20000, 20000], np.int64), "k")])
    with pytest.raises(MemoryLimitError, match=r"'c' float32\[20000, 20000\] 1.49 GiB"):
        dlc.compile(model, max_memory="256MiB")


@pytest.mark.parametrize("op,inputs,constants", [
    ("Expand", ["one", "shape"], {"one": np.float32(1), "shape": np.array([20000, 20000], np.int64)}),
    ("Tile", ["block", "repeats"], {"block": np.ones((10, 10), np.float32),
                                    "repeats": np.array([2000, 2000], np.int64)}),
    ("Pad", ["block", "pads"], {"block": np.ones((10, 10), np.float32),
                                "pads": np.array([19990, 19990, 0, 0], np.int64)}),
])
def test_giant_constants_from_other_ops_are_not_folded(op, inputs, constants):
    """Every foldable op whose inferred output is 1.5 GiB is refused before it is evaluated."""
    model = make_model([helper.make_node(op, inputs, ["big"], name="grow"),
                        helper.make_node("ReduceSum", ["big"], ["total"], name="sum", keepdims=0),
                        helper.make_node("Add", ["x", "total"], ["y"], name="add")],
                       [tensor("x", [1])], [tensor("y", [1])],
                       [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    with pytest.raises(MemoryLimitError, match=r"largest intermediate 'big' float32\[\d+, \d+\] 1.49 GiB"):
        dlc.compile(model, max_memory="256MiB")


def test_memory_plan_checked_before_the_arena_is_allocated():
    """Inputs, outputs and weights are tiny; two live 64 MiB intermediates only show in the plan."""
    shape = numpy_helper.from_array(np.array([4096, 4096], np.int64), "shape")
    model = make_model([helper.make_node("Expand", ["x", "shape"], ["wide"], name="expand"),
                        helper.make_node("Exp", ["wide"], ["e"], name="exp"),
                        helper.make_node("MatMul", ["wide", "e"], ["p"], name="square"),
                        helper.make_node("ReduceSum", ["p"], ["y"], name="sum", keepdims=0)],
                       [tensor("x", [1, 1])], [tensor("y", [])], [shape])
    with pytest.raises(MemoryLimitError, match=r"running this model needs .*intermediates \(memory plan\)"):
        dlc.compile(model, max_memory="100MiB", fusion="none")


# --- external data -----------------------------------------------------------------------------

def _external_model(folder, location: str | None = None) -> str:
    """An Add with its weight in `good.bin` beside the model; `location` rewrites where it points."""
    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])], [weight])
    path = folder / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, location="good.bin", size_threshold=0)
    if location is not None:
        model = onnx.load(path, load_external_data=False)
        for entry in model.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save(model, path)
    return str(path)


def test_external_data_in_the_models_folder_loads(tmp_path, monkeypatch):
    path = _external_model(tmp_path / "models")
    monkeypatch.chdir(tmp_path)  # the data is found next to the model, not in the working directory
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(dlc.compile(path).run({"x": x})["y"], x + np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("location,fragment", [
    ("../../../../../../etc/passwd", "outside the model's folder"),
    ("../secret.bin", "outside the model's folder"),
    ("/etc/passwd", "an absolute path"),
])
def test_external_data_escaping_the_folder_is_refused(capsys, tmp_path, location, fragment):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    path = _external_model(tmp_path / "models", location)
    expect_cli_error(capsys, ["compile", path], f"tensor 'w' keeps its data in '{location}'", fragment,
                     "refused for safety")
    with pytest.raises(ModelLoadError, match=fragment):
        dlc.compile(path)


def test_external_data_through_a_symlink_out_of_the_folder_is_refused(capsys, tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    folder = tmp_path / "models"
    path = _external_model(folder, "link.bin")
    (folder / "link.bin").symlink_to(tmp_path / "secret.bin")
    expect_cli_error(capsys, ["compile", path], "'link.bin', which is outside the model's folder")


def test_external_data_file_missing(capsys, tmp_path):
    path = _external_model(tmp_path, "nothere.bin")
    expect_cli_error(capsys, ["compile", path], "'nothere.bin', which does not exist", "hint:")


def test_external_data_file_truncated(capsys, tmp_path):
    path = _external_model(tmp_path)
    (tmp_path / "good.bin").write_bytes(b"\0" * 8)  # 24 bytes expected
    expect_cli_error(capsys, ["compile", path], "but the file has 8 bytes", "truncated")


def test_external_data_of_an_in_memory_model(tmp_path):
    model = onnx.load(_external_model(tmp_path), load_external_data=False)
    with pytest.raises(ModelLoadError, match="has no folder to find it in"):
        dlc.compile(model)


# --- run time: inputs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp():
    return dlc.compile(MLP)


def test_wrong_input_name(mlp):
    with pytest.raises(InputError, match=r"unknown input name\(s\) \['inptu'\]; the model's inputs are \['input'\]"):
        mlp.run({"inptu": np.zeros((1, 784), np.float32)})


def test_missing_input(mlp):
    with pytest.raises(InputError, match=r"missing input 'input' \(shape \[1, 784\], float32\)"):
        mlp.run({})


def test_wrong_input_shape(capsys, tmp_path, mlp):
    with pytest.raises(InputError, match=r"expected shape \[1, 784\], got \[784\]"):
        mlp.run({"input": np.zeros(784, np.float32)})
    np.save(tmp_path / "x.npy", np.zeros((1, 28, 28), np.float32))
    expect_cli_error(capsys, ["run", MLP, "--input", f"input={tmp_path / 'x.npy'}"],
                     "input 'input': expected shape [1, 784], got [1, 28, 28]", "--shape")


def test_wrong_input_dtype(capsys, tmp_path, mlp):
    with pytest.raises(InputError, match="expected dtype float32, got int64"):
        mlp.run({"input": np.zeros((1, 784), np.int64)})
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float16))
    expect_cli_error(capsys, ["run", MLP, "--input", f"input={tmp_path / 'x.npy'}"],
                     "expected dtype float32, got float16", "astype")


def test_inputs_the_fast_path_does_not_take_are_checked_and_converted(mlp):
    """A well-formed feed skips `check_inputs` (NativeExecutable._exact_inputs); a strided view,
    a Fortran-ordered copy or an ndarray subclass go the checked way and give the same outputs;
    a list (float64) or an extra name are refused there with its messages."""
    x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
    (want,) = mlp.run({"input": x}).values()
    strided = np.zeros((1, 1568), np.float32)
    strided[:, ::2] = x
    for feed in (strided[:, ::2], np.asfortranarray(x), x.view(np.recarray)):
        (got,) = mlp.run({"input": feed}).values()
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InputError, match="expected dtype float32, got float64"):
        mlp.run({"input": x.tolist()})
    with pytest.raises(InputError, match=r"unknown input name\(s\) \['extra'\]"):
        mlp.run({"input": x, "extra": x})


def test_inputs_not_a_dict(mlp):
    with pytest.raises(InputError, match="inputs must be a dict"):
        mlp.run([np.zeros((1, 784), np.float32)])


def test_missing_input_file(capsys, tmp_path):
    missing = tmp_path / "absent.npy"
    expect_cli_error(capsys, ["run", MLP, "--input", f"input={missing}"], f"no such file '{missing}'")


@pytest.mark.parametrize("content", [b"", b"not numpy at all\n", b"\x93NUMPY\x01\x00garbage"])
def test_bad_npy_file(capsys, tmp_path, content):
    path = tmp_path / "bad.npy"
    path.write_bytes(content)
    expect_cli_error(capsys, ["run", MLP, "--input", f"input={path}"], f"cannot read '{path}' as a .npy file",
                     "numpy.save")


def test_pickled_npy_is_refused(capsys, tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    expect_cli_error(capsys, ["run", MLP, "--input", f"input={path}"], "cannot read", "allow_pickle")


def test_npz_archive_given_as_input(capsys, tmp_path):
    path = tmp_path / "several.npz"
    np.savez(path, a=np.zeros(3))
    expect_cli_error(capsys, ["run", MLP, "--input", f"input={path}"], "is an .npz archive")


def test_input_option_without_a_name(capsys, tmp_path):
    expect_cli_error(capsys, ["run", MLP, "--input", "x.npy"], "expected NAME=FILE.npy")


# --- artifacts ---------------------------------------------------------------------------------

@pytest.fixture()
def artifact(tmp_path):
    out = tmp_path / "artifact"
    dlc.compile(MLP).save(out)
    return out


def _code_file(artifact) -> str:
    """model.so, or model.o where no linker was found (docs/artifact.md)."""
    return "model.so" if (artifact / "model.so").exists() else "model.o"


def test_damaged_object_code_is_refused_not_crashed(capsys, artifact):
    code = _code_file(artifact)
    (artifact / code).write_bytes(np.random.default_rng(0).bytes(3000))
    expect_cli_error(capsys, ["run", str(artifact)], f"{code}: damaged", "compile the model again")
    with pytest.raises(ArtifactError, match="damaged"):
        dlc.load(artifact)


def test_artifact_claiming_a_huge_arena_is_refused(capsys, artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["arena_size"] = 1 << 50
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    expect_cli_error(capsys, ["run", str(artifact)], "running the artifact", "1024 TiB",
                     "above the memory limit")
    with pytest.raises(MemoryLimitError):
        dlc.load(artifact)


@pytest.mark.parametrize("field,value", [("arena_size", "big"), ("inputs", [{"name": "x"}]),
                                         ("outputs", None), ("weights_size", -1), ("objects", []),
                                         ("objects", [{"file": "../../etc/passwd", "sha256": "0"}]),
                                         ("objects", [{"file": "model.o"}])])
def test_artifact_with_malformed_manifest(capsys, artifact, field, value):
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest[field] = value
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    expect_cli_error(capsys, ["run", str(artifact)], f"field '{field}' is missing or malformed")


def test_artifact_with_truncated_weights(capsys, artifact):
    with open(artifact / "weights.bin", "r+b") as f:
        f.truncate(100)
    expect_cli_error(capsys, ["run", str(artifact)], "weights.bin: expected", "found 100")


def test_artifact_missing_files(capsys, artifact):
    code = _code_file(artifact)
    (artifact / code).unlink()
    expect_cli_error(capsys, ["run", str(artifact)], f"incomplete artifact, {code} is missing")
    shutil.rmtree(artifact)
    artifact.mkdir()
    expect_cli_error(capsys, ["run", str(artifact)], "not a dlc artifact", "dlc compile")


def test_artifact_manifest_not_json(capsys, artifact):
    (artifact / "manifest.json").write_text("{ not json")
    expect_cli_error(capsys, ["run", str(artifact)], "invalid JSON")


def test_cache_does_not_serve_stale_external_weights(tmp_path):
    """The cache key covers the .onnx bytes only, so a model with external data is not cached."""
    path = _external_model(tmp_path)
    x = np.zeros((2, 3), np.float32)
    assert dlc.compile(path).run({"x": x})["y"][1, 2] == 5
    (tmp_path / "good.bin").write_bytes(np.full(6, 7, np.float32).tobytes())
    assert dlc.compile(path).run({"x": x})["y"][1, 2] == 7


def test_damaged_weights_sidecar_of_an_mlir_file(capsys, tmp_path):
    path = tmp_path / "m.mlir"
    assert run_cli(capsys, "compile", MLP, "--compile-to", "graph", "-o", str(path))[0] == 0
    (tmp_path / "m.weights.npz").write_bytes(b"garbage, not a zip archive")
    expect_cli_error(capsys, ["opt", str(path)], "m.weights.npz: cannot read the weights sidecar", "hint:")
    expect_cli_error(capsys, ["compile", str(path), "--compile-from", "graph"], "cannot read the weights sidecar")


def test_name_that_is_not_utf8(capsys, tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="NODENAME")],
                       [tensor("x", [2])], [tensor("y", [2])])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString().replace(b"NODENAME", b"NODENA\xff\xfe"))
    expect_cli_error(capsys, ["compile", str(path)], "model.graph.node[0].name is not valid UTF-8 text",
                     "damaged")


def test_byte_mutations_never_crash_the_loader(tmp_path):
    """Seeded random byte edits (mostly in the graph structure, some in the weights, some
    truncations) of the example CNN: each loads, or fails with a DlcError; never another error."""
    data = (ROOT / "examples" / "models" / "cnn.onnx").read_bytes()
    rng = np.random.default_rng(2026)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(120):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 6))):
            position = int(rng.integers(0, len(mutated) if rng.random() < 0.3 else min(len(mutated), 4000)))
            mutated[position] = int(rng.integers(0, 256))
        if rng.random() < 0.1:
            mutated = mutated[: int(rng.integers(1, len(mutated)))]
        path = tmp_path / "mutated.onnx"
        path.write_bytes(bytes(mutated))
        try:
            dlc.driver.compile_model(str(path), compile_to="graph")
            outcomes["loaded"] += 1
        except dlc.errors.DlcError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 20 and outcomes["loaded"] > 20, outcomes  # both paths exercised


def test_reshape_to_a_different_element_count(capsys, tmp_path):
    """ONNX shape inference accepts it; compiled code would read past the input."""
    model = make_model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="view")],
                       [tensor("x", [2, 3])], [tensor("y", ["a", "b"])],
                       [numpy_helper.from_array(np.array([4, 3], np.int64), "shape")])
    path = save(tmp_path, model)
    expect_cli_error(capsys, ["run", path], "node 'view' (Reshape): cannot reshape input 'x' of shape [2, 3] "
                     "(6 elements) to [4, 3] (12 elements)", "-1")
    with pytest.raises(ModelLoadError, match="cannot reshape"):
        dlc.compile(path)


def _initializer_input_model(ir_version: int) -> onnx.ModelProto:
    """y = x + W, with W an initializer that is also listed as a graph input."""
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = make_model([helper.make_node("Add", ["x", "W"], ["y"], name="add")],
                       [tensor("x", [2, 3]), tensor("W", [2, 3])], [tensor("y", [2, 3])],
                       [numpy_helper.from_array(weight, "W")])
    model.ir_version = ir_version
    return model


@pytest.mark.parametrize("target", ["cpu", "reference", "npu-sim"])
def test_feeding_an_initializer_listed_as_input_is_refused_not_ignored(tmp_path, target):
    """IR >= 4 lets a caller override such an initializer (onnxruntime does); dlc compiles it in,
    so a fed value would be silently ignored: it is refused, naming the way to feed it."""
    model = _initializer_input_model(8)
    x = np.ones((2, 3), np.float32)
    compiled = dlc.compile(model, target=target)
    assert compiled.input_names == ["x"]
    np.testing.assert_array_equal(compiled.run({"x": x})["y"], x + np.arange(6, dtype=np.float32).reshape(2, 3))
    with pytest.raises(InputError, match=r"(?s)\['W'\] are initializers .* --initializers-as-inputs"):
        compiled.run({"x": x, "W": x})
    if target == "cpu":  # the refusal survives saving: the manifest lists the constant inputs
        compiled.save(tmp_path / "art")
        with pytest.raises(InputError, match="initializers-as-inputs"):
            dlc.load(tmp_path / "art").run({"x": x, "W": x})


@pytest.mark.parametrize("target", ["cpu", "reference", "npu-sim"])
def test_initializers_as_inputs_matches_onnxruntime_override(target):
    model = _initializer_input_model(8)
    feeds = {"x": np.ones((2, 3), np.float32), "W": np.full((2, 3), 5, np.float32)}
    compiled = dlc.compile(model, target=target, initializers_as_inputs=True)
    assert compiled.input_names == ["x", "W"]
    np.testing.assert_array_equal(compiled.run(feeds)["y"], run_onnxruntime(model, feeds)[0])


def test_initializers_as_inputs_on_the_cli(capsys, tmp_path):
    path = save(tmp_path, _initializer_input_model(8))
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    np.save(tmp_path / "w.npy", np.full((2, 3), 5, np.float32))
    expect_cli_error(capsys, ["run", path, "--input", f"x={tmp_path / 'x.npy'}", "--input", f"W={tmp_path / 'w.npy'}"],
                     "are initializers that the model also lists as graph inputs")
    code, out, err = run_cli(capsys, "run", path, "--initializers-as-inputs", "--input", f"x={tmp_path / 'x.npy'}",
                             "--input", f"W={tmp_path / 'w.npy'}")
    assert code == 0, err


def test_ir3_initializers_listed_as_inputs_are_plain_constants():
    """IR 3 required every initializer to be listed as an input: nothing to override there."""
    compiled = dlc.compile(_initializer_input_model(3))
    assert compiled.input_names == ["x"]
    with pytest.raises(InputError, match="unknown input"):
        compiled.run({"x": np.ones((2, 3), np.float32), "W": np.ones((2, 3), np.float32)})
