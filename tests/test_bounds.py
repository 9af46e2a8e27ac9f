"""Memory safety of generated code (issue 7): compiled models run between guard pages.

`NativeExecutable.run(feeds, check_bounds=True)` (dlc/runtime/executable.py `_checked_run`) maps every
buffer the native entry gets - each input, output, the arena, the weights blob - with a
PROT_NONE page right after its last byte, then again with one right before its first byte;
inputs and weights are read-only. An invalid access is a SIGSEGV, so each model runs in a
child process: the test asserts it exits 0 and its checked outputs equal the normal run's
bit for bit. The negative tests compile loops-phase MLIR with a hand-made off-by-one store
and assert the checker kills the run and names the buffer - proof the check can fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from conftest import ROOT, random_feeds
from onnx import TensorProto, helper


def _benchmark_models():
    # By path, as test_exporter_models.py does: xDSL installs a top-level `benchmarks` package.
    import importlib.util

    if "dlc_benchmark_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location("dlc_benchmark_models", ROOT / "benchmarks" / "models.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["dlc_benchmark_models"]


_models = _benchmark_models()
GraphBuilder, mlp, mobilenet_block, transformer_encoder = (
    _models.GraphBuilder, _models.mlp, _models.mobilenet_block, _models.transformer_encoder)

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import onnx
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    model, feeds = onnx.load(sys.argv[1]), dict(np.load(sys.argv[2]))
    for threads in map(int, sys.argv[3].split(",")):
        executable = compile_model(model, options=CompileOptions(threads=threads)).executable
        plain = executable.run(feeds)
        checked = executable.run(feeds, check_bounds=True)
        for name, value in plain.items():
            assert checked[name].tobytes() == value.tobytes(), f"threads={threads}: output {name} differs"
        print(f"threads={threads}: {len(plain)} output(s) identical under the bounds check")
""")


def _float(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _conv_edge_tiles() -> onnx.ModelProto:
    """Channel counts and widths off the GEMM tiles (16/32 wide): every edge-tile path runs."""
    g = GraphBuilder(seed=1)
    y = g.node("Conv", ["x", g.weight("w1", 21, 5, 3, 3), g.bias("b1", 21)], pads=[1, 1, 1, 1])
    y = g.node("Relu", [y])
    y = g.node("Conv", [y, g.weight("w2", 37, 21, 1, 1), g.bias("b2", 37)])
    y = g.node("Conv", [y, g.weight("w3", 37, 1, 3, 3)], group=37, strides=[2, 2], pads=[0, 1, 1, 0])
    return g.model("conv_edge_tiles", [_float("x", [1, 5, 17, 19])], {"y": y})


def _gemm_odd() -> onnx.ModelProto:
    g = GraphBuilder(seed=2)
    y = g.node("MatMul", ["x", g.weight("w", 37, 45)])
    y = g.node("Softmax", [g.node("Add", [y, g.bias("b", 45)])], axis=-1)
    z = g.node("Gemm", [g.node("Flatten", [y]), g.weight("w2", 3, 7 * 45), g.bias("b2", 3)], transB=1)
    return g.model("gemm_odd", [_float("x", [3, 7, 37])], {"y": y, "z": z})


def _pooling_with_pads() -> onnx.ModelProto:
    g = GraphBuilder(seed=3)
    a = g.node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    b = g.node("AveragePool", ["x"], kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1],
               count_include_pad=0)
    c = g.node("GlobalAveragePool", ["x"])
    return g.model("pooling", [_float("x", [1, 3, 13, 11])], {"max": a, "avg": b, "global": c})


def _slice_pad() -> onnx.ModelProto:
    g = GraphBuilder(seed=4)
    s = g.node("Slice", ["x", g.ints("starts", [-1, 1]), g.ints("ends", [-100, 9]), g.ints("axes", [2, 3]),
                         g.ints("steps", [-2, 3])])
    p = g.node("Pad", ["x", g.ints("pads", [0, 1, 2, 3, 0, 2, 1, 0])], mode="reflect")
    c = g.node("Pad", [s, g.ints("pads2", [0, 0, 1, 0, 0, 0, 0, 2]), g.scalar("value", 0.5)])
    return g.model("slice_pad", [_float("x", [1, 3, 7, 11])], {"slice": s, "reflect": p, "constant": c})


def _gather() -> onnx.ModelProto:
    g = GraphBuilder(seed=5)
    rows = g.node("Gather", ["x", "idx"], axis=0)
    cols = g.node("Gather", ["x", g.ints("column_indices", [[4, 0], [-1, 2]])], axis=1)
    return g.model("gather", [_float("x", [7, 5]), helper.make_tensor_value_info("idx", TensorProto.INT64, [3, 2])],
                   {"rows": rows, "cols": cols})


def _resize() -> onnx.ModelProto:
    g = GraphBuilder(seed=6)
    empty = g.const("roi", np.zeros(0, np.float32))
    nearest = g.node("Resize", ["x", empty, g.const("scales", np.array([1, 1, 2, 1.5], np.float32))],
                     mode="nearest")
    linear = g.node("Resize", ["x", empty, "", g.ints("sizes", [1, 2, 9, 13])], mode="linear")
    return g.model("resize", [_float("x", [1, 2, 5, 7])], {"nearest": nearest, "linear": linear})


def _qlinear_matmul_edge_columns() -> onnx.ModelProto:
    """Integer GEMMs requantized in their store whose last column panel holds 1 column (N = 1,
    17): LLVM made that one-lane byte store a 4-byte one, 3 bytes past the output."""
    constants = {"as": np.float32(0.02), "az": np.uint8(128), "bs": np.float32(0.01), "bz": np.int8(0),
                 "ys": np.float32(0.05), "yz": np.uint8(100)}
    nodes, outputs = [], []
    for n in (1, 17):
        constants[f"b{n}"] = np.random.default_rng(n).integers(-128, 128, (48, n)).astype(np.int8)
        nodes.append(helper.make_node("QLinearMatMul", ["a", "as", "az", f"b{n}", "bs", "bz", "ys", "yz"], [f"y{n}"]))
        outputs.append(helper.make_tensor_value_info(f"y{n}", TensorProto.UINT8, [38, n]))
    graph = helper.make_graph(nodes, "qlinear_matmul_edge_columns",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [38, 48])], outputs,
                              [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _qlinear_conv_implicit() -> onnx.ModelProto:
    """Implicit-GEMM QLinearConvs (A read from x's rows in place): the first unpadded (A is x
    itself, its last tile reading to x's last byte), batch 2, output rows of 19 and 9 pixels
    (short last tiles), 17 output channels (edge columns); the second with one-sided pads,
    strides and a row dilation; then a depthwise one (output columns in blocks of four and a
    remainder of one) with one-sided pads; then a grouped one (4 groups of 5 channels, 2 output
    channels each: one integer GEMM per group, each storing 2 of y's 8 columns)."""
    rng = np.random.default_rng(7)
    constants = {"xs": np.float32(0.02), "xz": np.uint8(100), "ys": np.float32(0.5), "yz": np.uint8(90),
                 "w1": rng.integers(-128, 128, (17, 8, 3, 3)).astype(np.int8), "s1": np.float32(0.01),
                 "z1": np.int8(0), "w2": rng.integers(-128, 128, (20, 17, 3, 4)).astype(np.int8),
                 "s2": np.float32(0.01), "z2": np.int8(0), "b2": rng.integers(-900, 900, 20).astype(np.int32),
                 "w3": rng.integers(-128, 128, (20, 1, 3, 3)).astype(np.int8), "z3": np.zeros(20, np.int8),
                 "w4": rng.integers(-128, 128, (8, 5, 3, 3)).astype(np.int8), "z4": np.zeros(8, np.int8),
                 "s4": rng.uniform(0.005, 0.02, 8).astype(np.float32)}
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w1", "s1", "z1", "ys", "yz"], ["h"]),
             helper.make_node("QLinearConv", ["h", "ys", "yz", "w2", "s2", "z2", "ys", "yz", "b2"], ["y2"],
                              pads=[0, 2, 1, 0], strides=[1, 2], dilations=[2, 1]),
             helper.make_node("QLinearConv", ["y2", "ys", "yz", "w3", "s2", "z3", "ys", "yz", "b2"], ["y3"],
                              pads=[1, 0, 1, 2], group=20),
             helper.make_node("QLinearConv", ["y3", "ys", "yz", "w4", "s4", "z4", "ys", "yz"], ["y"],
                              pads=[1, 1, 1, 1], group=4)]
    graph = helper.make_graph(nodes, "qlinear_conv_implicit",
                              [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 8, 9, 21])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [2, 8, 4, 9])],
                              [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _conv_shared_im2col() -> onnx.ModelProto:
    """Convs whose 2-thread grid has two row parts, so their im2col is built once and shared
    (passes/lowering/rules/conv.py `_im2col_plan`): a 5x5 map of 25 columns (one panel, its
    packing split by channel ranges) and a strided 9x9 one."""
    g = GraphBuilder(seed=7)
    y = g.node("Conv", ["x", g.weight("w1", 96, 64, 3, 3), g.bias("b1", 96)], pads=[1, 1, 1, 1])
    y = g.node("Conv", [g.node("Relu", [y]), g.weight("w2", 80, 96, 3, 3)], strides=[2, 2], pads=[1, 0, 1, 1])
    return g.model("conv_shared_im2col", [_float("x", [1, 64, 5, 5])], {"y": y})


MODELS = {
    "conv_shared_im2col": _conv_shared_im2col,
    "cnn": lambda: onnx.load(ROOT / "examples" / "models" / "cnn.onnx"),
    "mlp": lambda: mlp(batch=3, sizes=(37, 64, 10)),
    "transformer_small": lambda: transformer_encoder(d_model=64, heads=4, seq=13, ffn=96),
    "mobilenet_block": lambda: mobilenet_block(channels=8, resolution=15),
    "conv_edge_tiles": _conv_edge_tiles,
    "gemm_odd": _gemm_odd,
    "pooling_with_pads": _pooling_with_pads,
    "slice_pad": _slice_pad,
    "gather": _gather,
    "resize": _resize,
    "qlinear_matmul_edge_columns": _qlinear_matmul_edge_columns,
    "qlinear_conv_implicit": _qlinear_conv_implicit,
}


def _run_child(tmp_path, model: onnx.ModelProto, threads: str) -> subprocess.CompletedProcess:
    onnx.save(model, tmp_path / "model.onnx")
    np.savez(tmp_path / "feeds.npz", **random_feeds(model))
    return subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "model.onnx"), str(tmp_path / "feeds.npz"),
                           threads], check=False, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("name", MODELS)
def test_model_has_no_invalid_access(tmp_path, name):
    result = _run_child(tmp_path, MODELS[name](), "1,2")
    assert "invalid memory access" not in result.stderr, result.stderr
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count("identical under the bounds check") == 2


# --- the checker catches what it claims to -------------------------------------------------------

RELU_LOOPS = """
builtin.module attributes {dlc.target = "cpu"} {
  func.func private @k0_Relu(%0: memref<1x10xf32>, %1: memref<1x10xf32>) {
    %c1 = arith.constant 1 : index
    %c10 = arith.constant 10 : index
    %c0 = arith.constant 0 : index
    %zero = arith.constant 0.000000e+00 : f32
    scf.for %i = %c0 to %c10 step %c1 {
      %x = memref.load %0[%c0, %i] : memref<1x10xf32>
      %negative = arith.cmpf olt, %x, %zero : f32
      %y = arith.select %negative, %zero, %x : f32
      %j = INDEX
      memref.store %y, %1[%c0, %j] : memref<1x10xf32>
    }
    func.return
  }
  func.func @main(%0: memref<1x10xf32>, %1: memref<1x10xf32>, %2: memref<64xi8>) attributes {
      dlc.input_names = ["x"], dlc.output_names = ["y"], dlc.num_inputs = "1", dlc.arena_size = 0 : i64} {
    func.call @k0_Relu(%0, %1) : (memref<1x10xf32>, memref<1x10xf32>) -> ()
    func.return
  }
}
"""


def _relu_artifact(tmp_path, index: str):
    """Relu over 10 floats, compiled from loops-phase MLIR, storing y[INDEX] for x[i]."""
    from dlc.cli import main

    source = tmp_path / "relu.mlir"
    source.write_text(RELU_LOOPS.replace("INDEX", index))
    np.savez(tmp_path / "relu.weights.npz")
    assert main(["compile", str(source), "--compile-from", "loops", "-o", str(tmp_path / "art")]) == 0
    return tmp_path / "art"


def _dlc_run_checked(artifact) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlc.cli", "run", str(artifact), "--check-bounds", "--repeat", "1"],
                          check=False, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_correct_kernel_passes_the_check(tmp_path):
    result = _dlc_run_checked(_relu_artifact(tmp_path, "arith.addi %i, %c0 : index"))
    assert result.returncode == 0, result.stderr
    assert "bounds check: no invalid access" in result.stdout


def test_store_one_past_the_end_is_caught(tmp_path):
    result = _dlc_run_checked(_relu_artifact(tmp_path, "arith.addi %i, %c1 : index"))
    assert result.returncode == -signal.SIGSEGV, (result.returncode, result.stdout, result.stderr)
    assert "byte offset 40 of output 'y' (40 bytes" in result.stderr
    assert "the first byte past its end" in result.stderr


def test_store_one_before_the_start_is_caught(tmp_path):
    # Pass 1 (end-aligned) lets y[-1] land in the page's slack; pass 2 (start-aligned) catches it.
    result = _dlc_run_checked(_relu_artifact(tmp_path, "arith.subi %i, %c1 : index"))
    assert result.returncode == -signal.SIGSEGV, (result.returncode, result.stdout, result.stderr)
    assert "4 byte(s) before the start of output 'y'" in result.stderr


def test_write_to_an_input_is_caught(tmp_path):
    source = _relu_artifact(tmp_path, "arith.addi %i, %c0 : index")
    mlir = (tmp_path / "relu.mlir").read_text().replace("memref.store %y, %1[", "memref.store %y, %0[")
    (tmp_path / "relu.mlir").write_text(mlir)
    from dlc.cli import main

    assert main(["compile", str(tmp_path / "relu.mlir"), "--compile-from", "loops", "-o", str(source)]) == 0
    result = _dlc_run_checked(source)
    assert result.returncode == -signal.SIGSEGV, (result.returncode, result.stdout, result.stderr)
    assert "of input 'x' (40 bytes" in result.stderr and "which is read-only" in result.stderr


def test_reading_unwritten_output_memory_is_an_error(tmp_path):
    """An output element the code never writes reads as the pre-fill pattern: the passes disagree."""
    import dlc
    from dlc.errors import DlcError

    # y[j] = relu(x[j]) for j = 2*i, i < 5: the odd elements of y are never written.
    mlir = RELU_LOOPS.replace("%c10 = arith.constant 10", "%c10 = arith.constant 5").replace(
        "%x = memref.load %0[%c0, %i]", "%j = arith.addi %i, %i : index\n      %x = memref.load %0[%c0, %j]")
    (tmp_path / "relu.mlir").write_text(mlir.replace("%j = INDEX\n", ""))
    np.savez(tmp_path / "relu.weights.npz")
    from dlc.cli import main

    assert main(["compile", str(tmp_path / "relu.mlir"), "--compile-from", "loops", "-o", str(tmp_path / "a")]) == 0
    executable = dlc.load(tmp_path / "a")._executable
    with pytest.raises(DlcError, match="output 'y' differs between the two checked runs"):
        executable.run({"x": np.ones((1, 10), np.float32)}, check_bounds=True)


def test_cli_check_bounds_on_an_onnx_model_with_threads():
    result = subprocess.run([sys.executable, "-m", "dlc.cli", "run", str(ROOT / "examples" / "models" / "cnn.onnx"),
                             "--check-bounds", "--threads", "2", "--repeat", "1"],
                            check=False, capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "bounds check: no invalid access" in result.stdout


def test_environment_variable_turns_the_check_on(tmp_path, monkeypatch):
    """DLC_CHECK_BOUNDS=1 checks every run of an executable loaded afterwards."""
    import dlc

    artifact = _relu_artifact(tmp_path, "arith.addi %i, %c0 : index")
    monkeypatch.setenv("DLC_CHECK_BOUNDS", "1")
    executable = dlc.load(artifact)._executable
    calls = []
    monkeypatch.setattr(type(executable), "_checked_run",
                        lambda self, feeds: calls.append(feeds) or {"y": np.zeros((1, 10), np.float32)})
    executable.run({"x": np.ones((1, 10), np.float32)})
    assert len(calls) == 1


def test_overrun_in_a_worker_thread_is_caught(tmp_path):
    """Rows split over two threads (two items): the last row, and its overrun, is item 1's.
    The row count is computed, not a constant, so the loop's work is unknown and it goes to the
    pool: 40 known iterations would run on the caller's thread (parallel_loops.threads_for_work)."""
    from dlc.cli import main

    mlir = RELU_LOOPS.replace("1x10xf32", "4x10xf32").replace("%c0, %i]", "%row, %i]").replace(
        "%c0, %j]", "%row, %j]").replace("%zero = arith.constant 0.000000e+00 : f32\n", """\
%zero = arith.constant 0.000000e+00 : f32
    %c2 = arith.constant 2 : index
    %c4 = arith.addi %c2, %c2 : index
    scf.for %row = %c0 to %c4 step %c1 {
""").replace("    }\n    func.return", "    }\n    } {dlc.parallel}\n    func.return", 1)
    (tmp_path / "relu.mlir").write_text(mlir.replace("INDEX", "arith.addi %i, %c1 : index"))
    np.savez(tmp_path / "relu.weights.npz")
    assert main(["compile", str(tmp_path / "relu.mlir"), "--compile-from", "loops", "--threads", "2",
                 "-o", str(tmp_path / "art")]) == 0
    result = _dlc_run_checked(tmp_path / "art")
    assert result.returncode == -signal.SIGSEGV, (result.returncode, result.stdout, result.stderr)
    assert "byte offset 160 of output 'y' (160 bytes" in result.stderr


@pytest.mark.slow
def test_operator_tests_pass_with_every_run_checked(tmp_path):
    """DLC_CHECK_BOUNDS=1 checks every run of the per-operator tests (hundreds of odd shapes)."""
    tests = sorted(str(path) for path in (ROOT / "tests").glob("test_rules_*.py"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DLC_CHECK_BOUNDS": "1", "DLC_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                            check=False, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    assert "invalid memory access" not in result.stderr + result.stdout, result.stderr[-4000:]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_tiled_transposes_have_no_invalid_access(tmp_path):
    """Transposes looped in tiles of 16 input rows (movement.py `_tiled_transpose`): float32
    rows 1 KiB apart (attention's K^T) and a uint8 NHWC -> NCHW map of 64-byte rows."""
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1]),
         helper.make_node("Transpose", ["q"], ["z"], perm=[0, 3, 1, 2])], "tiled_transposes",
        [_float("x", [1, 48, 256]), helper.make_tensor_value_info("q", TensorProto.UINT8, [1, 64, 32, 64])],
        [_float("y", [1, 256, 48]), helper.make_tensor_value_info("z", TensorProto.UINT8, [1, 64, 64, 32])])
    result = _run_child(tmp_path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), "1,2")
    assert "invalid memory access" not in result.stderr, result.stderr
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count("identical under the bounds check") == 2


def test_dynamic_quantize_range_has_no_invalid_access(tmp_path):
    """DynamicQuantizeLinear's range folded in 64 lanes (quantize.py `_range_of`): 3 blocks
    and a tail of 18 floats, exactly one block, fewer floats than a block, and 259 blocks and
    17 floats (on two threads: two runs of 129 blocks, one block left over)."""
    nodes, outputs = [], []
    for name, shape in (("a", [3, 70]), ("b", [64]), ("c", [5, 7]), ("d", [16593])):
        nodes.append(helper.make_node("DynamicQuantizeLinear", [name], [f"{name}_q", f"{name}_s", f"{name}_z"]))
        outputs += [helper.make_tensor_value_info(f"{name}_q", TensorProto.UINT8, shape), _float(f"{name}_s", []),
                    helper.make_tensor_value_info(f"{name}_z", TensorProto.UINT8, [])]
    graph = helper.make_graph(nodes, "dynamic_quantize_range",
                              [_float("a", [3, 70]), _float("b", [64]), _float("c", [5, 7]), _float("d", [16593])],
                              outputs)
    result = _run_child(tmp_path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), "1,2")
    assert "invalid memory access" not in result.stderr, result.stderr
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count("identical under the bounds check") == 2


def test_implicit_gemm_conv_of_int8_x_has_no_invalid_access(tmp_path):
    """Implicit-GEMM QLinearConvs of an int8 x (quantize.py `_implicit_a`): A read from a copy
    of x + 128, padded (one-sided pads, batch 2, 17 output channels) and, for the second conv,
    unpadded (the flipped copy alone), its last tile reading to the copy's last byte."""
    rng = np.random.default_rng(11)
    constants = {"xs": np.float32(0.02), "xz": np.int8(-20), "ys": np.float32(0.5), "yz": np.int8(7),
                 "w1": rng.integers(-128, 128, (17, 8, 3, 3)).astype(np.int8), "s1": np.float32(0.01),
                 "z1": np.int8(0), "w2": rng.integers(-128, 128, (12, 17, 2, 4)).astype(np.int8)}
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w1", "s1", "z1", "ys", "yz"], ["h"],
                              pads=[1, 0, 0, 2]),
             helper.make_node("QLinearConv", ["h", "ys", "yz", "w2", "s1", "z1", "ys", "yz"], ["y"], strides=[1, 2])]
    graph = helper.make_graph(nodes, "qlinear_conv_implicit_int8",
                              [helper.make_tensor_value_info("x", TensorProto.INT8, [2, 8, 9, 21])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, [2, 12, 7, 9])],
                              [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    result = _run_child(tmp_path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), "1,2")
    assert "invalid memory access" not in result.stderr, result.stderr
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count("identical under the bounds check") == 2


def _small_map_pointwise_and_depthwise() -> onnx.ModelProto:
    """Issue 15's mobile kernels at their edges: 1x1 convs over 7x7 and 5x5 maps as implicit GEMMs
    with the output channels in the lanes (x read in place to its last float, 40 channels: a
    masked edge panel; a SiLU after the GEMM's transposed store, a residual Add in it), and strided depthwise
    convs (3x3/2 and 5x5/2) on small maps with SiLU, whose sigmoid is approximate-math's."""
    g = GraphBuilder(seed=8)
    y = g.node("Conv", ["x", g.weight("w1", 40, 19, 1, 1), g.bias("b1", 40)])
    y = g.node("Mul", [y, g.node("Sigmoid", [y])])
    y = g.node("Add", [g.node("Conv", [y, g.weight("w2", 40, 40, 1, 1)]), y])
    d = g.node("Conv", [y, g.weight("w3", 40, 1, 3, 3)], group=40, strides=[2, 2], pads=[1, 1, 1, 1])
    d = g.node("Mul", [d, g.node("Sigmoid", [d])])
    z = g.node("Conv", [d, g.weight("w4", 48, 40, 1, 1)])
    z = g.node("Conv", [z, g.weight("w5", 48, 1, 5, 5)], group=48, strides=[2, 2], pads=[2, 2, 2, 2])
    return g.model("small_map_pointwise", [_float("x", [1, 19, 7, 7])], {"y": y, "z": g.node("Sigmoid", [z])})


def test_small_map_mobile_kernels_have_no_invalid_access(tmp_path):
    result = _run_child(tmp_path, _small_map_pointwise_and_depthwise(), "1,2")
    assert "invalid memory access" not in result.stderr, result.stderr
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count("identical under the bounds check") == 2


def _small_map_implicit_gemm_convs() -> onnx.ModelProto:
    """Convs over small maps as implicit GEMMs (A read in place from the padded input, C stored
    transposed into y's channel planes): 3x3 padded over 7x7 (+ Relu), 3x3/2 over 14x14 -> 7x7
    reading the padded input's last row and column, 3x3 dilated 2 over 6x6 (+ a residual Add),
    40 channels (a masked edge panel), a 3x3 over a 14x14 map; and 1x1 convs: stride 2 onto
    7x7 (24 channels), and 256 deep over 14x14 with a residual Add and Relu."""
    g = GraphBuilder(seed=9)
    y = g.node("Relu", [g.node("Conv", ["x", g.weight("w1", 40, 19, 3, 3), g.bias("b1", 40)], pads=[1, 1, 1, 1])])
    s = g.node("Conv", ["x14", g.weight("w2", 40, 19, 3, 3)], strides=[2, 2], pads=[1, 1, 1, 1])
    y = g.node("Add", [y, s])
    d = g.node("Conv", ["x6", g.weight("w3", 40, 40, 3, 3), g.bias("b3", 40)], dilations=[2, 2], pads=[2, 2, 2, 2])
    d = g.node("Add", [d, "r6"])
    m = g.node("Conv", ["x14m", g.weight("w4", 32, 120, 3, 3)], pads=[1, 1, 1, 1])
    p = g.node("Conv", ["x14", g.weight("w5", 24, 19, 1, 1), g.bias("b5", 24)], strides=[2, 2])
    q = g.node("Conv", ["x14d", g.weight("w6", 40, 256, 1, 1), g.bias("b6", 40)])
    q = g.node("Relu", [g.node("Add", [q, "r14"])])
    return g.model("small_map_implicit", [_float("x", [1, 19, 7, 7]), _float("x14", [1, 19, 14, 14]),
                                          _float("x6", [1, 40, 6, 6]), _float("r6", [1, 40, 6, 6]),
                                          _float("x14m", [1, 120, 14, 14]), _float("x14d", [1, 256, 14, 14]),
                                          _float("r14", [1, 40, 14, 14])], {"y": y, "d": d, "m": m, "p": p, "q": q})


def test_small_map_implicit_gemm_convs_have_no_invalid_access(tmp_path):
    result = _run_child(tmp_path, _small_map_implicit_gemm_convs(), "1,2")
    assert "invalid memory access" not in result.stderr, result.stderr
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.count("identical under the bounds check") == 2
