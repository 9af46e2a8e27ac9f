"""Run-time checks (passes/lowering/utils/runtime_checks.py): integer division by zero or
overflow and out-of-range gather indices fail the run with a DlcError naming the node, on
cpu (no SIGFPE, no silent clamp) and on the reference target; constant indices out of
range are refused at compile time.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

import dlc
from dialects.diagnostics import CompileError, DlcError

F32, I64, I32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
INT_TYPES = {np.int8: TensorProto.INT8, np.int32: I32, np.int64: I64, np.uint8: TensorProto.UINT8}


def _model(nodes, inputs, constants=None) -> onnx.ModelProto:
    """Nodes (op_type, inputs, attrs) chained by name: node k is named `{op_type}_{k}`, writes
    `y{k}`, and the last one's output is the model's."""
    made = [helper.make_node(t, i, [f"y{k}"], name=f"{t}_{k}", **a)
            for k, (t, i, a) in enumerate(nodes)]
    graph = helper.make_graph(
        made, "checks",
        [helper.make_tensor_value_info(n, dtype, shape) for n, (dtype, shape) in inputs.items()],
        [helper.make_tensor_value_info(made[-1].output[0], TensorProto.UNDEFINED, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (constants or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _division(op_type: str, dtype, n: int = 4, **attrs) -> onnx.ModelProto:
    onnx_type = INT_TYPES[dtype]
    return _model([(op_type, ["a", "b"], attrs)], {"a": (onnx_type, [n]), "b": (onnx_type, [n])})


# --- integer Div and Mod ----------------------------------------------------------------------


@pytest.mark.parametrize("op_type, attrs", [("Div", {}), ("Mod", {}), ("Mod", {"fmod": 1})])
@pytest.mark.parametrize("dtype", list(INT_TYPES))
def test_division_by_zero_raises_naming_the_node(op_type, attrs, dtype):
    model = _division(op_type, dtype, **attrs)
    compiled = dlc.compile(model)
    good = {"a": np.array([7, 9, 100, 1], dtype), "b": np.array([2, 4, 7, 1], dtype)}
    np.testing.assert_array_equal(compiled.run(good)["y0"], run_onnxruntime(model, good)[0])
    bad = {"a": good["a"], "b": np.array([2, 0, 7, 1], dtype)}
    message = rf"node '{op_type}_0' \({op_type}\): integer division by zero"
    with pytest.raises(DlcError, match=message):
        compiled.run(bad)
    # The status word is per run: the next valid run succeeds.
    np.testing.assert_array_equal(compiled.run(good)["y0"], run_onnxruntime(model, good)[0])


@pytest.mark.parametrize("op_type", ["Div", "Mod"])
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_minimum_divided_by_minus_one_raises(op_type, dtype):
    compiled = dlc.compile(_division(op_type, dtype))
    low = np.iinfo(dtype).min
    feeds = {"a": np.array([1, low, 3, 4], dtype), "b": np.array([1, -1, 1, 1], dtype)}
    with pytest.raises(DlcError, match=rf"node '{op_type}_0' \({op_type}\): integer overflow"):
        compiled.run(feeds)


def test_division_check_in_a_parallel_loop_and_a_fused_kernel():
    # 1M elements: the loop runs on every thread; Add -> Div -> Mul share one kernel.
    n = 1 << 20
    model = _model([("Add", ["a", "a"], {}), ("Div", ["y0", "b"], {}), ("Mul", ["y1", "b"], {})],
                   {"a": (I32, [n]), "b": (I32, [n])})
    compiled = dlc.compile(model, threads=2)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(-1000, 1000, n).astype(np.int32),
             "b": rng.integers(1, 50, n).astype(np.int32)}
    np.testing.assert_array_equal(compiled.run(feeds)["y2"], run_onnxruntime(model, feeds)[0])
    feeds["b"][n - 3] = 0
    with pytest.raises(DlcError, match="node 'Div_1' \\(Div\\): integer division by zero"):
        compiled.run(feeds)


def test_checked_run_reports_the_failed_check_too():
    compiled = dlc.compile(_division("Div", np.int64))
    feeds = {"a": np.arange(4), "b": np.array([1, 1, 0, 1])}
    with pytest.raises(DlcError, match="integer division by zero"):
        compiled._executable.run(feeds, check_bounds=True)


def test_concurrent_runs_keep_their_own_status():
    compiled = dlc.compile(_division("Div", np.int64, n=1 << 16))
    good = {"a": np.arange(1 << 16), "b": np.full(1 << 16, 3)}
    bad = {"a": good["a"], "b": np.where(np.arange(1 << 16) == 5, 0, 3)}
    outcomes = []

    def run(feeds):
        for _ in range(20):
            try:
                compiled.run(feeds)
                outcomes.append(feeds is good)
            except DlcError:
                outcomes.append(feeds is bad)

    threads = [threading.Thread(target=run, args=(f,)) for f in (good, bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 40 and all(outcomes)


def test_cli_run_of_an_integer_division_fails_cleanly(tmp_path):
    # dlc's own random integer inputs include 0: a clear error, not a SIGFPE (exit 136).
    path = tmp_path / "int_div.onnx"
    onnx.save(_division("Div", np.int32, n=64), path)
    cli = "import sys; from dlc.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", cli, "run", str(path)], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 1, result.stderr
    assert "node 'Div_0' (Div): integer division by zero" in result.stderr
    assert "Traceback" not in result.stderr


def test_reference_target_raises_the_same_errors():
    model = _division("Div", np.int32)
    reference = dlc.compile(model, target="reference")
    with pytest.raises(DlcError, match=r"node 'Div_0' \(Div\): integer division by zero"):
        reference.run({"a": np.arange(4, dtype=np.int32), "b": np.zeros(4, np.int32)})
    gather = _model([("Gather", ["x", "i"], {})], {"x": (F32, [3, 2]), "i": (I64, [2])})
    reference = dlc.compile(gather, target="reference")
    message = r"node 'Gather_0' \(Gather\): index 3 .* out of range \[-3, 3\)"
    with pytest.raises(DlcError, match=message):
        reference.run({"x": np.zeros((3, 2), np.float32), "i": np.array([0, 3])})


# --- gathers ------------------------------------------------------------------------------------

OUT_OF_RANGE = [3, -4, 10**12, np.iinfo(np.int64).min, np.iinfo(np.int64).max]

GATHERS = {  # name: (node, data shape, indices shape, where to put the bad index)
    "Gather": (("Gather", ["x", "i"], {}), [3, 2], [2, 2], (1, 0)),
    "Gather axis 1": (("Gather", ["x", "i"], {"axis": 1}), [2, 3], [4], (2,)),
    "GatherElements": (("GatherElements", ["x", "i"], {"axis": 0}), [3, 2], [2, 2], (1, 1)),
    "GatherND": (("GatherND", ["x", "i"], {}), [3, 3, 2], [2, 2], (1, 1)),
    "GatherND batch": (("GatherND", ["x", "i"], {"batch_dims": 1}), [2, 3, 2], [2, 1], (1, 0)),
}


@pytest.fixture(scope="module", params=list(GATHERS))
def gather_case(request):
    node, data_shape, index_shape, where = GATHERS[request.param]
    model = _model([node], {"x": (F32, data_shape), "i": (I64, index_shape)})
    return node[0], model, dlc.compile(model, threads=2), data_shape, index_shape, where


@pytest.mark.parametrize("bad", OUT_OF_RANGE)
def test_gather_index_out_of_range_raises_naming_the_node(gather_case, bad):
    op_type, model, compiled, data_shape, index_shape, where = gather_case
    x = np.arange(np.prod(data_shape), dtype=np.float32).reshape(data_shape)
    indices = np.zeros(index_shape, np.int64) - 1  # -1: valid, counts from the end
    np.testing.assert_array_equal(compiled.run({"x": x, "i": indices})["y0"],
                                  run_onnxruntime(model, {"x": x, "i": indices})[0])
    indices[where] = bad
    with pytest.raises(DlcError, match=rf"node '{op_type}_0' \({op_type}\): an index in input "
                                       "'indices' is out of range"):
        compiled.run({"x": x, "i": indices})


@pytest.mark.parametrize("name", list(GATHERS))
def test_gather_checks_indices_inside_the_parallel_gather_loop(name):
    # No second pass over the indices: one generic, all parallel, whose body stores the code.
    from xdsl.dialects import memref
    from xdsl.dialects.linalg import ops as linalg

    from dlc.driver import compile_model
    from passes.lowering.utils.runtime_checks import SETS_STATUS

    node, data_shape, index_shape, _ = GATHERS[name]
    model = _model([node], {"x": (F32, data_shape), "i": (I64, index_shape)})
    module = compile_model(model, compile_to="linalg").module
    generics = [op for op in module.walk() if isinstance(op, linalg.GenericOp)]
    assert len(generics) == 1
    assert all(t.data.value == "parallel" for t in generics[0].iterator_types)
    assert any(isinstance(op, memref.StoreOp) and SETS_STATUS in op.attributes
               for op in generics[0].walk())


def test_gather_int32_indices_are_checked():
    model = _model([("Gather", ["x", "i"], {})], {"x": (F32, [3, 2]), "i": (I32, [3])})
    compiled = dlc.compile(model)
    x = np.zeros((3, 2), np.float32)
    compiled.run({"x": x, "i": np.array([-3, 0, 2], np.int32)})
    with pytest.raises(DlcError, match=r"out of range for axis 0 of 'data' \(size 3\)"):
        compiled.run({"x": x, "i": np.array([0, np.iinfo(np.int32).min, 2], np.int32)})


@pytest.mark.parametrize("node, indices", [
    (("Gather", ["x", "k"], {}), np.array([0, 3])),
    (("GatherElements", ["x", "k"], {"axis": 1}), np.array([[0, -3], [1, 0], [0, 0]])),
    (("GatherND", ["x", "k"], {}), np.array([[2, 1], [3, 0]])),
])
def test_constant_index_out_of_range_is_refused_at_compile_time(node, indices):
    model = _model([node], {"x": (F32, [3, 2])}, {"k": indices})
    message = (rf"node '{node[0]}_0' \({node[0]}\): index -?\d+ at .* of constant input "
               "'indices' is out of range")
    with pytest.raises(CompileError, match=message):
        dlc.compile(model)


# --- hostile fuzzer findings (issue 14) ----------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, -2, -1])
def test_reference_gather_elements_with_indices_smaller_than_the_data(axis):
    # The spec (and onnxruntime) let indices be smaller than 'data' on the other axes; onnx's
    # own kernel raised a ValueError there, which escaped the reference target.
    model = _model([("GatherElements", ["x", "i"], {"axis": axis})],
                   {"x": (F32, [3, 4]), "i": (I64, [2, 2])})
    reference = dlc.compile(model, target="reference")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    size = x.shape[axis]
    indices = np.array([[0, size - 1], [-1, -size]])
    np.testing.assert_array_equal(reference.run({"x": x, "i": indices})["y0"],
                                  run_onnxruntime(model, {"x": x, "i": indices})[0])
    indices[1, 0] = size
    message = (rf"node 'GatherElements_0' \(GatherElements\): index {size} at \[1, 0\] of input "
               rf"'indices' is out of range \[{-size}, {size}\)")
    with pytest.raises(DlcError, match=message):
        reference.run({"x": x, "i": indices})


@pytest.mark.parametrize("name", list(GATHERS))
@pytest.mark.parametrize("bad", OUT_OF_RANGE)
def test_reference_gather_index_out_of_range_raises(name, bad):
    node, data_shape, index_shape, where = GATHERS[name]
    model = _model([node], {"x": (F32, data_shape), "i": (I64, index_shape)})
    reference = dlc.compile(model, target="reference")
    indices = np.zeros(index_shape, np.int64) - 1
    indices[where] = bad
    with pytest.raises(DlcError, match=rf"node '{node[0]}_0' \({node[0]}\): index -?\d+ at .* "
                                       "of input 'indices' is out of range"):
        reference.run({"x": np.zeros(data_shape, np.float32), "i": indices})


@pytest.mark.parametrize("target", ["cpu", "reference"])
@pytest.mark.parametrize("op_type, attrs, dtype, a, b, message", [
    ("Mod", {"fmod": 1}, np.uint8, [4, 83, 32], [3, 0, 5], "integer division by zero"),
    ("Div", {}, np.int32, [4, 83, 32], [0, 1, 5], "integer division by zero"),
    ("Mod", {}, np.int64, [4, 83, 32], [[1], [0]], "integer division by zero"),
    ("Div", {}, np.int8, [1, -128, 3], [1, -1, 1], "integer overflow"),
])
def test_constant_integer_division_by_zero_is_not_folded(target, op_type, attrs, dtype, a, b, message):
    # Folded, it answered on every target where onnxruntime raises "Integer division by zero".
    model = _model([(op_type, ["a", "b"], attrs)], {},
                   {"a": np.array(a, dtype), "b": np.array(b, dtype)})
    with pytest.raises(CompileError, match=rf"node '{op_type}_0' \({op_type}\): {message}"):
        dlc.compile(model, target=target)


def test_fold_constants_pass_refuses_a_zero_divisor():
    # Constants that graph passes expose are folded by fold-constants, not the importer.
    from dialects.onnx_eval import check_foldable

    check_foldable("node 'd' (Div)", "Div", [np.array([1, 2], np.int32), np.array([1, 2], np.int32)])
    check_foldable("node 'd' (Div)", "Div", [np.array([1.0]), np.array([0.0])])  # float: inf, no error
    with pytest.raises(CompileError, match=r"node 'd' \(Mod\): integer division by zero"):
        check_foldable("node 'd' (Mod)", "Mod", [np.array([1, 2], np.uint8), np.array([0], np.uint8)])
