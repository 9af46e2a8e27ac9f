"""npu-sim in integers (issue 20, deliverable 7): 8-bit contractions on the MAC array.

QLinearConv, QLinearMatMul, ConvInteger and MatMulInteger run on npu-sim with uint8/int8
tiles, zero points subtracted in the array, int32 accumulation and requantization on the
vector unit with the multipliers the cpu target folds; QuantizeLinear/DequantizeLinear are
vector functions. Results must be bit-exact with the cpu target, and on these cases with onnx's
reference evaluator too (an independent check; it multiplies the int32 accumulator by the
scale in float64 where onnxruntime and dlc use float32, so elsewhere it can differ by one
step near a tie, as a random sweep found once in 150 cases: npu-sim, cpu and onnxruntime
agreed there), and a QDQ CNN quantized by onnxruntime's quantize_static runs wholly on the NPU, bit-exact
with onnxruntime as test_quantization.py shows for the cpu target. The cost model counts
8-bit MACs at `int8_macs_per_pe` times the float32 rate and moves a byte per element.

The cases a quantized model has beyond that run on the NPU too: QuantizeLinear and
DequantizeLinear per axis (parameters read as tiles), zero points and scales computed at run
time (DynamicQuantizeLinear on the vector unit, its zero point in the MAC array's zero point
register, multipliers computed per tile), and batched B (attention's Q x K^T and P x V); a
quantize_dynamic encoder layer runs on the NPU except the ops it has no unit for. What still
cannot map keeps a reason in the target description's terms.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from test_quantization import _float_model, _one_node, _quantized, _small_cnn

import dlc
from dlc.tools.oracle import run_onnxruntime

T = TensorProto
CONFIG = {"mac_rows": 32, "mac_cols": 32, "vector_lanes": 32, "scratchpad_bytes": 64 * 1024,
          "dma_bandwidth_gbps": 16.0, "dma_latency_cycles": 64, "clock_ghz": 1.0, "int8_macs_per_pe": 4}


def _npu(model, monkeypatch, tmp_path, **config):
    """Compiled for npu-sim, with a target file when `config` changes the hardware."""
    if config:
        path = tmp_path / "npu.json"
        path.write_text(json.dumps(config))
        monkeypatch.setenv("DLC_NPU_TARGET", str(path))
    else:
        monkeypatch.setenv("DLC_NPU_TARGET", "")
    return dlc.compile(model, target="npu-sim")


def _assert_bit_exact(model, feeds, compiled) -> None:
    """npu-sim == cpu == onnx's reference evaluator (on these cases; see the module docstring),
    bit for bit, and nothing left the NPU."""
    assert [s.target for s in compiled._executable.steps] == ["npu-sim"], compiled._executable.placement.reasons
    got = compiled.run(feeds)["y"]
    cpu = dlc.compile(model).run(feeds)["y"]
    expected = ReferenceEvaluator(model).run(None, feeds)[0]
    assert got.dtype == cpu.dtype == expected.dtype
    np.testing.assert_array_equal(got, cpu)
    np.testing.assert_array_equal(got, expected)


def _assert_matches_cpu_and_onnxruntime(compiled, model, x_shape, runs: int, **onnxruntime_options) -> None:
    """On `runs` random inputs: npu-sim == the cpu target == onnxruntime, bit for bit."""
    cpu = dlc.compile(model)
    rng = np.random.default_rng(7)
    for _ in range(runs):
        feeds = {"x": rng.uniform(-1, 1, x_shape).astype(np.float32)}
        got = compiled.run(feeds)["y"]
        np.testing.assert_array_equal(got, cpu.run(feeds)["y"])
        np.testing.assert_array_equal(got, run_onnxruntime(model, feeds, **onnxruntime_options)["y"])


# --- the simulator, by hand -------------------------------------------------------------------------

def test_an_integer_mac_tile_subtracts_zero_points_and_runs_at_the_int8_rate():
    from dialects import npu
    from dlc.targets.npu.simulator import NpuConfig, Simulator

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 256)).astype(np.uint8)
    b = rng.integers(-128, 128, (256, 32)).astype(np.int8)
    dram = {"a": a, "b": b, "c": np.zeros((32, 32), np.int32)}
    program = npu.ProgramOp("t", CONFIG["scratchpad_bytes"])
    program.body.block.add_ops([
        npu.BufferOp("a", [32, 256], "input", dtype="u8"), npu.BufferOp("b", [256, 32], "weight", dtype="i8"),
        npu.BufferOp("c", [32, 32], "output", dtype="i32"),
        npu.DmaLoadOp("a", [0, 0], [32, 256], 0), npu.DmaLoadOp("b", [0, 0], [256, 32], 8192),
        npu.MacOp("matmul", 0, [32, 256], 8192, [256, 32], 16384, [32, 32], False, dtype="u8i8", zeros=(128, -3)),
        npu.DmaStoreOp("c", [0, 0], [32, 32], 16384)])
    report = Simulator(NpuConfig(**CONFIG)).run(program, dram)
    np.testing.assert_array_equal(dram["c"], (a.astype(np.int64) - 128) @ (b.astype(np.int64) + 3))
    # Loads of a byte per element: 64 + 8192/16 = 576 cycles each (float32 would move 32 KiB each).
    # MAC: M * ceil(N/32) * ceil(K/(32*4)) = 32 * 1 * 2 = 64 -> 1216 (float32: ceil(256/32) = 8, 256).
    # Store of int32: 64 + 4096/16 = 320 -> 1536.
    assert report.compute_cycles == 64 and report.cycles == 1536
    assert report.dma_load_bytes == 2 * 32 * 256 and report.dma_store_bytes == 4 * 32 * 32
    assert report.macs == report.int8_macs == 32 * 256 * 32
    assert report.mac_utilisation == pytest.approx(32 * 256 * 32 / 4 / (1536 * 1024))


def test_the_vector_unit_requantizes_as_the_cpu_does():
    """Ties round to even, results saturate, and the product is float32(acc) * multiplier."""
    from dialects import npu
    from dlc.targets.npu.simulator import NpuConfig, Simulator

    acc = np.array([[5, 15, 25, -5, -15, 100000, -100000, 7]], np.int32)
    multiplier = np.full(8, 0.1, np.float32)
    dram = {"acc": acc, "m": multiplier, "y": np.zeros((1, 8), np.uint8)}
    program = npu.ProgramOp("t", CONFIG["scratchpad_bytes"])
    program.body.block.add_ops([
        npu.BufferOp("acc", [1, 8], "input", dtype="i32"), npu.BufferOp("m", [8], "weight"),
        npu.BufferOp("y", [1, 8], "output", dtype="u8"),
        npu.DmaLoadOp("acc", [0, 0], [1, 8], 0), npu.DmaLoadOp("m", [0], [8], 64),
        npu.VectorOp("requantize", [0, 64], [[1, 8], [1, 8]], 0, [1, 8], types=["i32", "f32", "u8"], zero_point=10),
        npu.DmaStoreOp("y", [0, 0], [1, 8], 0)])
    Simulator(NpuConfig(**CONFIG)).run(program, dram)
    expected = np.clip(np.rint(acc.astype(np.float32) * multiplier) + 10, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(dram["y"], expected)
    assert list(dram["y"][0]) == [10, 12, 12, 10, 8, 255, 0, 11]


def test_a_float_function_on_integer_tiles_is_a_fault():
    from dialects import npu
    from dlc.targets.npu.simulator import NpuConfig, NpuFault, Simulator

    program = npu.ProgramOp("t", CONFIG["scratchpad_bytes"])
    program.body.block.add_ops([npu.VectorOp("relu", [0], [[4]], 64, [4], types=["u8", "u8"])])
    with pytest.raises(NpuFault, match="'relu' computes float32 only"):
        Simulator(NpuConfig(**CONFIG)).run(program, {})


# --- one operator at a time: bit-exact with the cpu target and the spec ---------------------------

def _qlinear_conv(x_type=T.UINT8, cin=3, cout=8, size=9, kernel=3, group=1, per_channel=True, bias=True,
                  **attrs):
    rng = np.random.default_rng(1)
    unsigned = x_type == T.UINT8
    w = rng.integers(-60, 60, (cout, cin // group, kernel, kernel)).astype(np.int8)
    w_scale = rng.uniform(0.002, 0.01, cout if per_channel else 1).astype(np.float32).reshape(
        [cout] if per_channel else [])
    constants = [("x_scale", np.float32(0.02)), ("x_zero", np.uint8(120) if unsigned else np.int8(-7)), ("w", w),
                 ("w_scale", w_scale), ("w_zero", np.zeros(cout, np.int8) if per_channel else np.int8(0)),
                 ("y_scale", np.float32(0.05)), ("y_zero", np.uint8(100) if unsigned else np.int8(3))]
    if bias:
        constants.append(("B", rng.integers(-500, 500, cout).astype(np.int32)))
    model = _one_node("QLinearConv", [("x", x_type, [1, cin, size, size])], constants, x_type, group=group,
                      **attrs)
    x = (rng.integers(0, 256, (1, cin, size, size)) - (0 if unsigned else 128)).astype(
        np.uint8 if unsigned else np.int8)
    return model, {"x": x}


@pytest.mark.parametrize("case", [
    {},                                                                  # fits whole, per-channel, bias
    {"pads": [1, 1, 1, 1], "strides": [2, 2]},                           # padding reads as x's zero point
    {"pads": [0, 2, 1, 0], "dilations": [2, 2], "per_channel": False},   # one-sided pads, dilated
    {"x_type": T.INT8, "pads": [1, 1, 1, 1], "bias": False},             # int8 x
    {"cin": 8, "cout": 8, "group": 8, "pads": [1, 1, 1, 1]},             # depthwise
])
def test_qlinear_conv_on_the_npu_is_bit_exact(case, monkeypatch, tmp_path):
    model, feeds = _qlinear_conv(**case)
    _assert_bit_exact(model, feeds, _npu(model, monkeypatch, tmp_path))


def test_qlinear_conv_tiled_over_input_channels_accumulates_in_int32(monkeypatch, tmp_path):
    """A 4 KiB scratchpad splits Cin and the output rows: partial sums accumulate in the int32 tile."""
    model, feeds = _qlinear_conv(cin=48, cout=40, size=12, pads=[1, 1, 1, 1])
    compiled = _npu(model, monkeypatch, tmp_path, **{**CONFIG, "scratchpad_bytes": 4096})
    _assert_bit_exact(model, feeds, compiled)
    launch_tile = compiled._executable.steps[0].executable.module
    from dialects.kernel import LaunchOp
    from dialects.npu import ints_of

    tile = next(ints_of(op.attributes["dlc.npu_tile"]) for op in launch_tile.walk() if isinstance(op, LaunchOp))
    assert tile[1] < 48  # Cin was split
    assert compiled._executable.steps[0].executable.last_report.scratchpad_peak <= 4096


@pytest.mark.parametrize("a_type", [T.UINT8, T.INT8])
def test_qlinear_matmul_on_the_npu_is_bit_exact(a_type, monkeypatch, tmp_path):
    rng = np.random.default_rng(2)
    unsigned = a_type == T.UINT8
    b = rng.integers(-100, 100, (40, 24)).astype(np.int8)
    constants = [("a_scale", np.float32(0.03)), ("a_zero", np.uint8(131) if unsigned else np.int8(5)),
                 ("b", b), ("b_scale", rng.uniform(0.001, 0.004, 24).astype(np.float32)),
                 ("b_zero", np.zeros(24, np.int8)), ("y_scale", np.float32(0.07)),
                 ("y_zero", np.uint8(90) if unsigned else np.int8(-4))]
    model = _one_node("QLinearMatMul", [("a", a_type, [7, 40])], constants, a_type)
    a = (rng.integers(0, 256, (7, 40)) - (0 if unsigned else 128)).astype(np.uint8 if unsigned else np.int8)
    compiled = _npu(model, monkeypatch, tmp_path, **{**CONFIG, "scratchpad_bytes": 2048})  # tiles in M, K, N
    _assert_bit_exact(model, {"a": a}, compiled)


@pytest.mark.parametrize("batch", [[1], [3], [2, 2]])
def test_a_batched_a_by_a_matrix_runs_on_the_npu(batch, monkeypatch, tmp_path):
    """A [..., M, K] (a transformer's activations) by a matrix, one product per leading index:
    in int8, bit-exact; in float32 with a fused bias and Relu (epilogue boxes carry the
    index), as onnxruntime."""
    rng = np.random.default_rng(5)
    constants = [("a_scale", np.float32(0.03)), ("a_zero", np.uint8(131)),
                 ("b", rng.integers(-100, 100, (40, 24)).astype(np.int8)), ("b_scale", np.float32(0.002)),
                 ("b_zero", np.int8(0)), ("y_scale", np.float32(0.07)), ("y_zero", np.uint8(90))]
    model = _one_node("QLinearMatMul", [("a", T.UINT8, [*batch, 7, 40])], constants, T.UINT8)
    a = rng.integers(0, 256, (*batch, 7, 40)).astype(np.uint8)
    _assert_bit_exact(model, {"a": a}, _npu(model, monkeypatch, tmp_path, **{**CONFIG, "scratchpad_bytes": 2048}))

    w, bias = rng.standard_normal((40, 24)).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Add", ["h", "b"], ["hb"]),
         helper.make_node("Relu", ["hb"], ["y"])], "g",
        [helper.make_tensor_value_info("x", T.FLOAT, [*batch, 7, 40])],
        [helper.make_tensor_value_info("y", T.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(bias, "b")])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    compiled = _npu(model, monkeypatch, tmp_path, **{**CONFIG, "scratchpad_bytes": 2048})
    assert [s.target for s in compiled._executable.steps] == ["npu-sim"]
    feeds = {"x": rng.standard_normal((*batch, 7, 40)).astype(np.float32)}
    np.testing.assert_allclose(compiled.run(feeds)["y"], run_onnxruntime(model, feeds)["y"], rtol=1e-5, atol=1e-5)


def test_matmul_integer_and_conv_integer_on_the_npu_are_bit_exact(monkeypatch, tmp_path):
    rng = np.random.default_rng(3)
    b = rng.integers(0, 256, (33, 17)).astype(np.uint8)
    model = _one_node("MatMulInteger", [("a", T.INT8, [5, 33])], [("b", b), ("a_zero", np.int8(-9)),
                                                                  ("b_zero", np.uint8(140))], T.INT32)
    a = rng.integers(-128, 128, (5, 33)).astype(np.int8)
    _assert_bit_exact(model, {"a": a}, _npu(model, monkeypatch, tmp_path))

    w = rng.integers(-128, 128, (6, 4, 3, 3)).astype(np.int8)
    model = _one_node("ConvInteger", [("x", T.UINT8, [1, 4, 7, 7])], [("w", w), ("x_zero", np.uint8(77))],
                      T.INT32, pads=[1, 1, 1, 1])
    x = rng.integers(0, 256, (1, 4, 7, 7)).astype(np.uint8)
    _assert_bit_exact(model, {"x": x}, _npu(model, monkeypatch, tmp_path))


@pytest.mark.parametrize("op_type, inputs, constants, reason", [
    ("MatMulInteger", [("a", T.UINT8, [4, 8]), ("b", T.INT8, [8, 3]), ("a_zero", T.UINT8, [4])], [],
     "A's zero point is computed at run time with 4 values (the MAC array's zero point register holds one)"),
    ("MatMulInteger", [("a", T.UINT8, [4, 8])], [("b", np.ones((8, 3), np.int8)), ("a_zero", np.uint8(1)),
                                                 ("b_zero", np.array([0, 1, 0], np.int8))],
     "B's zero point differs between channels"),
    ("QLinearMatMul", [("a", T.UINT8, [4, 8]), ("a_scale", T.FLOAT, []), ("a_zero", T.UINT8, []),
                       ("b", T.INT8, [8, 3]), ("b_scale", T.FLOAT, []), ("b_zero", T.INT8, []),
                       ("y_scale", T.FLOAT, []), ("y_zero", T.UINT8, [])], [],
     "y's zero point is computed at run time (the requantizing store adds a constant one)"),
    ("QLinearMatMul", [("a", T.UINT8, [4, 8]), ("a_scale", T.FLOAT, [4])],
     [("a_zero", np.uint8(1)), ("b", np.ones((8, 3), np.int8)), ("b_scale", np.float32(1)),
      ("b_zero", np.int8(0)), ("y_scale", np.float32(1)), ("y_zero", np.uint8(0))],
     "a_scale has shape [4] (the vector unit takes one a scale"),
    ("QuantizeLinear", [("x", T.FLOAT, [1, 4, 3]), ("s", T.FLOAT, [4])], [("z", np.zeros(4, np.uint8))],
     "QuantizeLinear's scale is computed at run time with 4 values"),
    ("MatMulInteger", [("a", T.UINT8, [2, 4, 8])], [("b", np.ones(8, np.int8))],
     "only A [..., M, K] by B [..., K, N] runs on the MAC array (a vector operand, rank 1, is not tiled)"),
])
def test_int8_ops_the_npu_refuses_fall_back_with_the_reason(op_type, inputs, constants, reason, monkeypatch,
                                                            tmp_path):
    """What the target description cannot map keeps a precise reason, in its terms."""
    out = T.INT32 if op_type == "MatMulInteger" else T.UINT8
    model = _one_node(op_type, inputs, constants, out)
    compiled = _npu(model, monkeypatch, tmp_path)
    placement = compiled._executable.placement
    assert placement.nodes == {op_type.lower(): "cpu"}
    assert reason in placement.reasons[op_type.lower()]


# --- a model quantized by onnxruntime's tools --------------------------------------------------------

@pytest.mark.parametrize("how", ["static", "static-per-channel"])
def test_quantized_cnn_runs_wholly_on_the_npu_bit_exact(how, monkeypatch, tmp_path):
    """quantize_static's QDQ CNN: Quantize, two QLinearConvs (fuse-qdq-contractions), the float
    pooling and Gemm between Q/DQ pairs, all on npu-sim; bit-exact with the cpu target and with
    onnxruntime's optimised session (which fuses the same patterns, test_quantization.py)."""
    model, x_shape = _quantized(_small_cnn, how, tmp_path)
    compiled = _npu(model, monkeypatch, tmp_path)
    executable = compiled._executable
    assert [s.target for s in executable.steps] == ["npu-sim"] and not executable.placement.reasons
    _assert_matches_cpu_and_onnxruntime(compiled, model, x_shape, 3)
    assert executable.npu_reports()[0][1].int8_macs == 8 * 27 * 64 + 16 * 72 * 16


def test_quantized_attention_splits_between_npu_and_cpu_bit_exact(monkeypatch, tmp_path):
    """quantize_static's attention block (batch 2): the projections and the MLP ([2, 6, 16] by a
    matrix) and the two products of activations (Q x K^T and P x V: a batched B) run on the NPU,
    Transpose and Softmax on cpu, each with its reason; bit-exact with the cpu target and with
    onnxruntime as written."""
    from test_quantization import _attention_block

    model, x_shape = _quantized(_attention_block, "static", tmp_path)
    compiled = _npu(model, monkeypatch, tmp_path)
    placement = compiled._executable.placement
    kinds = {placement.kinds[n] for n in placement.reasons}
    assert kinds == {"Transpose", "Softmax"}, placement.reasons
    on_npu = [n for n, t in placement.nodes.items() if t == "npu-sim"]
    assert set(on_npu) == set(placement.nodes) - set(placement.reasons)
    assert sum(n.startswith("MatMul_") for n in on_npu) == 7  # all seven (fused into QLinearMatMul)
    _assert_matches_cpu_and_onnxruntime(compiled, model, x_shape, 2, graph_optimisation="none")


def _mlp(rng):
    """A batch-1 transformer MLP with a residual: x @ W1 + b1 -> Relu -> @ W2 + x."""
    from test_quantization import _init

    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["hr"]), helper.make_node("MatMul", ["hr", "w2"], ["m"]),
             helper.make_node("Add", ["m", "x"], ["y"])]
    inits = [_init(rng, "w1", 16, 32), _init(rng, "b1", 32), _init(rng, "w2", 32, 16)]
    return nodes, inits, [1, 6, 16], [1, 6, 16]


def test_dequantize_float_ops_quantize_chains_fuse_into_the_contraction(monkeypatch, tmp_path):
    """On the NPU QuantizeLinear/DequantizeLinear are vector-unit functions (its fusion rules'
    `classes`), so QLinearMatMul -> DequantizeLinear -> Add -> QuantizeLinear is one kernel,
    requantized, dequantized, added and quantized again in place on each tile; still bit-exact
    with the cpu target and with onnxruntime run as the ONNX graph says."""
    from dlc.driver import compile_model
    from dlc.tools.fusion_report import kernel_infos

    model, x_shape = _quantized(_mlp, "static-per-channel", tmp_path)
    monkeypatch.setenv("DLC_NPU_TARGET", "")
    module = compile_model(model, target="npu-sim", compile_to="kernels").module
    kernels = {tuple(k.nodes) for k in kernel_infos(module)}
    types = {op.node_name: op.onnx_type for op in module.walk() if hasattr(op, "node_name")}
    chains = [[types[n] for n in nodes] for nodes in kernels if len(nodes) > 1]
    assert ["QLinearMatMul", "DequantizeLinear", "Add", "QuantizeLinear"] in chains, chains
    # The integer instructions (types, zero points, scales) print and parse back (dlc opt, -o).
    from xdsl.parser import Parser

    from dialects.context import make_context

    text = str(compile_model(model, target="npu-sim", compile_to="loops").module)
    assert 'fn = "dequantize"' in text and 'dtype = "u8i8"' in text
    assert str(Parser(make_context(), text).parse_module()) == text
    compiled = _npu(model, monkeypatch, tmp_path)
    assert [s.target for s in compiled._executable.steps] == ["npu-sim"]
    _assert_matches_cpu_and_onnxruntime(compiled, model, x_shape, 3, graph_optimisation="none")


def _matmuls(m=64, k=256, n=64):
    """The same [m, k] x [k, n] product in float32 (MatMul) and in int8 (QLinearMatMul)."""
    rng = np.random.default_rng(4)
    fp32 = _one_node("MatMul", [("a", T.FLOAT, [m, k])], [("b", rng.standard_normal((k, n)).astype(np.float32))],
                     T.FLOAT)
    int8 = _one_node("QLinearMatMul", [("a", T.UINT8, [m, k])],
                     [("a_scale", np.float32(0.03)), ("a_zero", np.uint8(128)),
                      ("b", rng.integers(-127, 128, (k, n)).astype(np.int8)), ("b_scale", np.float32(0.002)),
                      ("b_zero", np.int8(0)), ("y_scale", np.float32(0.5)), ("y_zero", np.uint8(128))], T.UINT8)
    feeds = {"fp32": {"a": rng.standard_normal((m, k)).astype(np.float32)},
             "int8": {"a": rng.integers(0, 256, (m, k)).astype(np.uint8)}}
    return {"fp32": fp32, "int8": int8}, feeds


def test_int8_moves_a_quarter_of_the_bytes_at_the_int8_mac_rate(monkeypatch, tmp_path):
    """One tile each (the scratchpad holds the whole product): A and B load a byte per element
    instead of four, y stores one, and the int8 build adds its 64 float32 multipliers; the
    array reduces 32 x 4 int8 elements a cycle against 32 float32 ones."""
    models, feeds = _matmuls()
    reports = {}
    for name, model in models.items():
        compiled = _npu(model, monkeypatch, tmp_path, **{**CONFIG, "scratchpad_bytes": 512 * 1024})
        compiled.run(feeds[name])
        [(_, reports[name])] = compiled._executable.npu_reports()
    fp, q = reports["fp32"], reports["int8"]
    assert fp.dma_load_bytes == 4 * (64 * 256 + 256 * 64) and fp.dma_store_bytes == 4 * 64 * 64
    assert q.dma_load_bytes == 64 * 256 + 256 * 64 + 4 * 64 and q.dma_store_bytes == 64 * 64
    # M * ceil(N/32) * ceil(K/cols): cols 32 for float32, 128 for int8.
    assert fp.mac_cycles == 64 * 2 * 8 and q.mac_cycles == 64 * 2 * 2
    assert q.int8_macs == q.macs == fp.macs == 64 * 256 * 64 and fp.int8_macs == 0
    assert q.cycles < fp.cycles


def test_compare_reports_int8_against_fp32_on_the_npu(tmp_path, capsys):
    """`dlc compare FP32 --quantized INT8 --target npu-sim`: cycles, MAC cycles and DMA bytes of
    both builds and their ratio, and every contraction that left the NPU with its reason."""
    from dlc.cli import main
    from dlc.tools.npu_report import compare_npu_quantized

    int8, _ = _quantized(_small_cnn, "static-per-channel", tmp_path)
    fp32, _ = _float_model(_small_cnn, np.random.default_rng(0))
    onnx.save(fp32, tmp_path / "fp32.onnx")
    onnx.save(int8, tmp_path / "int8.onnx")
    rows = {row.label: row for row in compare_npu_quantized(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")}
    fp, q = rows["fp32"], rows["int8"]
    # Fewer bytes (the convolutions' a quarter; the Q/DQ pairs around the float pooling and Gemm
    # add some); no fewer MAC cycles: 3 and 8 input channels fill one column pass either way.
    assert q.report.dma_bytes < fp.report.dma_bytes and q.report.mac_cycles == fp.report.mac_cycles
    assert q.report.int8_macs == q.report.macs - 16 * 10 and fp.report.int8_macs == 0
    assert fp.left == [] and q.left == []
    assert 0 < q.max_error < 0.1  # int8 against fp32 on the same input: quantization error only
    assert main(["compare", str(tmp_path / "fp32.onnx"), "--quantized", str(tmp_path / "int8.onnx"),
                 "--target", "npu-sim"]) == 0
    out = capsys.readouterr().out
    assert "int8/fp32" in out and "DMA bytes" in out and "contractions off the NPU: none" in out


def test_compare_of_models_with_different_inputs_is_a_clear_error(tmp_path):
    from dlc.errors import DlcError
    from dlc.tools.npu_report import compare_npu_quantized

    models, _ = _matmuls(m=4, k=8, n=4)
    other = _one_node("Relu", [("b", T.FLOAT, [4, 8])], [], T.FLOAT)
    onnx.save(models["fp32"], tmp_path / "fp32.onnx")
    onnx.save(other, tmp_path / "other.onnx")
    with pytest.raises(DlcError, match="inputs .* are not the fp32 model's"):
        compare_npu_quantized(tmp_path / "fp32.onnx", tmp_path / "other.onnx")


def test_compare_names_contractions_that_left_the_npu(tmp_path, capsys):
    """A MatMulInteger of a vector B stays on cpu: `dlc compare --target npu-sim` says so, and why."""
    from dlc.cli import main

    model = _one_node("MatMulInteger", [("a", T.UINT8, [2, 4, 8])], [("b", np.ones(8, np.int8))], T.INT32)
    model.graph.node.append(helper.make_node("Cast", ["y"], ["f"], to=T.FLOAT, name="cast"))
    model.graph.node.append(helper.make_node("Relu", ["f"], ["r"], name="relu"))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("r", T.FLOAT, None))
    model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, tmp_path / "m.onnx")
    assert main(["compare", str(tmp_path / "m.onnx"), "--target", "npu-sim"]) == 0
    out = capsys.readouterr().out
    assert "contraction off the NPU: node 'matmulinteger' (MatMulInteger): only A [..., M, K] by B [..., K, N]" in out


def test_the_target_description_lists_int8_macs():
    from dlc.targets.npu.simulator import NpuConfig
    from dlc.targets.npu.target import NpuSimTarget

    description = NpuSimTarget(NpuConfig(**{**CONFIG, "int8_macs_per_pe": 2})).description()
    assert "int8" in description.dtypes and "uint8" in description.dtypes
    assert description.extra["macs_per_cycle"] == {"float32": 1024, "int8": 2048}


def test_golden_instruction_stream_of_a_small_qlinear_conv():
    """Bytes in, zero points in the MAC, an int32 bias add, requantization, bytes out."""
    from dialects.npu import ProgramOp
    from dlc.driver import compile_model

    model, _ = _qlinear_conv(cin=2, cout=4, size=4, pads=[1, 1, 1, 1])
    module = compile_model(model, target="npu-sim", compile_to="loops").module
    [program] = [op for op in module.walk() if isinstance(op, ProgramOp)]
    lines = [line.strip() for line in str(program).splitlines()]
    assert lines == [
        ('%0 = npu.program(%x, %w, %B, %1) : (tensor<1x2x4x4xui8>, tensor<4x2x3x3xi8>, tensor<4xi32>, '
         'tensor<4xf32>) attributes {sym_name = "k0_QLinearConv", scratchpad_bytes = 524288 : i64} {'),
        'npu.buffer {sym_name = "in0", shape = array<i64: 1, 2, 4, 4>, kind = "input", dtype = "u8"}',
        'npu.buffer {sym_name = "@w", shape = array<i64: 4, 2, 3, 3>, kind = "weight", dtype = "i8"}',
        'npu.buffer {sym_name = "@B", shape = array<i64: 4>, kind = "weight", dtype = "i32"}',
        'npu.buffer {sym_name = "@k0_QLinearConv.requantize", shape = array<i64: 4>, kind = "weight"}',
        'npu.buffer {sym_name = "out", shape = array<i64: 1, 4, 4, 4>, kind = "output", dtype = "u8"}',
        # The padded box reads x's zero point (120) outside x: (x - x_zero) is 0 there.
        ('npu.dma_load {tensor = "in0", offsets = array<i64: 0, 0, -1, -1>, sizes = array<i64: 1, 2, 6, 6>, '
         'addr = 0 : i64, pad_value = 1.200000e+02 : f32}'),
        ('npu.dma_load {tensor = "@w", offsets = array<i64: 0, 0, 0, 0>, sizes = array<i64: 4, 2, 3, 3>, '
         'addr = 256 : i64, pad_value = 0.000000e+00 : f32}'),
        ('npu.mac {kind = "conv2d", a = 0 : i64, a_shape = array<i64: 2, 6, 6>, b = 256 : i64, '
         'b_shape = array<i64: 4, 2, 3, 3>, acc = 512 : i64, acc_shape = array<i64: 4, 4, 4>, accumulate = 0 : i64, '
         'strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>, dtype = "u8i8", a_zero = 120 : i64, '
         'b_zero = 0 : i64}'),
        ('npu.dma_load {tensor = "@B", offsets = array<i64: 0>, sizes = array<i64: 4>, addr = 1024 : i64, '
         'pad_value = 0.000000e+00 : f32}'),
        ('npu.vector {fn = "add", ins = array<i64: 512, 1024>, in_shapes = [array<i64: 4, 4, 4>, '
         'array<i64: 4, 1, 1>], out = 512 : i64, out_shape = array<i64: 4, 4, 4>, types = ["i32", "i32", "i32"]}'),
        # One float32 multiplier per output channel (quantize.py's), then y's zero point (100).
        ('npu.dma_load {tensor = "@k0_QLinearConv.requantize", offsets = array<i64: 0>, sizes = array<i64: 4>, '
         'addr = 1152 : i64, pad_value = 0.000000e+00 : f32}'),
        ('npu.vector {fn = "requantize", ins = array<i64: 512, 1152>, in_shapes = [array<i64: 4, 4, 4>, '
         'array<i64: 4, 1, 1>], out = 512 : i64, out_shape = array<i64: 4, 4, 4>, types = ["i32", "f32", "u8"], '
         'zero_point = 100 : i64}'),
        ('npu.dma_store {tensor = "out", offsets = array<i64: 0, 0, 0, 0>, sizes = array<i64: 1, 4, 4, 4>, '
         'addr = 512 : i64}'),
        'npu.sync',
        '} -> tensor<1x4x4x4xui8>',
    ]


@pytest.mark.parametrize("values, message", [
    ({"int8_macs_per_pe": 0}, "int8_macs_per_pe = 0; it must be a positive integer"),
    ({"int8_macs_per_pe": 2.5}, "int8_macs_per_pe = 2.5; it must be a positive integer"),
    ({"clock_ghz": -1}, "clock_ghz = -1; it must be a positive number"),
    ({"dma_latency_cycles": -3}, "dma_latency_cycles = -3; it must be a non-negative integer"),
    ({"scratchpad_kib": "lots"}, "scratchpad_bytes = 'lots'"),
    ([32, 32], "expected a JSON object"),
])
def test_a_target_file_with_a_bad_value_is_a_clear_error(values, message, tmp_path):
    """A zero rate once divided by zero in the cycle model; now the file is named and the key."""
    from dlc.errors import DlcError
    from dlc.targets.npu.target import load_config

    path = tmp_path / "npu.json"
    path.write_text(json.dumps(values))
    with pytest.raises(DlcError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(path)
    path.write_text(json.dumps({"dma_latency_cycles": 0, "int8_macs_per_pe": 8}))
    assert load_config(path).int8_macs_per_pe == 8


@pytest.mark.parametrize("y_type, zero", [(T.UINT8, np.uint8(3)), (T.INT8, np.int8(-5))])
def test_quantize_and_dequantize_on_the_vector_unit_are_bit_exact(y_type, zero, monkeypatch, tmp_path):
    """Ties to even and saturation as the cpu target and the spec; infinities saturate as on
    the cpu (onnx's reference evaluator casts them to 0); a NaN, which has no integer in the
    spec, must only not crash or warn."""
    import warnings

    from test_quantization import TIES

    x = np.concatenate([TIES * np.float32(0.1), [0.15, 25.5, -25.5]]).astype(np.float32)
    model = _one_node("QuantizeLinear", [("x", T.FLOAT, [x.size])], [("s", np.float32(0.1)), ("z", zero)], y_type)
    compiled = _npu(model, monkeypatch, tmp_path)
    _assert_bit_exact(model, {"x": x}, compiled)
    infinite = {"x": np.resize(np.array([np.inf, -np.inf], np.float32), x.size)}
    np.testing.assert_array_equal(compiled.run(infinite)["y"], dlc.compile(model).run(infinite)["y"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled.run({"x": np.full(x.size, np.nan, np.float32)})
    q = compiled.run({"x": x})["y"]
    back = _one_node("DequantizeLinear", [("x", y_type, [x.size])], [("s", np.float32(0.1)), ("z", zero)], T.FLOAT)
    _assert_bit_exact(back, {"x": q}, _npu(back, monkeypatch, tmp_path))


# --- per-axis quantizers, zero points computed at run time, batched B (issue 20, deliverable 7) ------

def _on_npu(compiled) -> None:
    """Every node ran on the NPU, and it did some work: cycles and DMA bytes counted."""
    executable = compiled._executable
    assert [s.target for s in executable.steps] == ["npu-sim"], executable.placement.reasons
    report = executable.npu_reports()[0][1]
    assert report.cycles > 0 and report.dma_load_bytes > 0 and report.dma_store_bytes > 0


def _assert_outputs_bit_exact(model, feeds, compiled) -> dict:
    """Every output: npu-sim == the cpu target == onnxruntime (graph as written), bit for bit."""
    got, cpu = compiled.run(feeds), dlc.compile(model).run(feeds)
    expected = run_onnxruntime(model, feeds, graph_optimisation="none")
    for name in expected:
        assert got[name].dtype == cpu[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got[name], cpu[name], err_msg=name)
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    return got


@pytest.mark.parametrize("y_type, axis, shape", [(T.UINT8, 1, [2, 4, 3, 3]), (T.INT8, -1, [3, 5]),
                                                 (T.UINT8, 0, [6, 7])])
def test_per_axis_quantize_and_dequantize_on_the_vector_unit(y_type, axis, shape, monkeypatch, tmp_path):
    """A scale and zero point per index of `axis`: the vector unit reads them as tiles (re-laid out
    at compile time to broadcast along the axis); ties to even and saturation as the spec."""
    rng = np.random.default_rng(11)
    channels = shape[axis]
    scale = rng.uniform(0.02, 0.2, channels).astype(np.float32)
    zero = (rng.integers(0, 256, channels) - (0 if y_type == T.UINT8 else 128)).astype(
        np.uint8 if y_type == T.UINT8 else np.int8)
    x = (rng.integers(-400, 400, shape) * 0.5 * np.broadcast_to(
        scale.reshape([-1] + [1] * (len(shape) - 1 - axis % len(shape))), shape)).astype(np.float32)
    model = _one_node("QuantizeLinear", [("x", T.FLOAT, shape)], [("s", scale), ("z", zero)], y_type, axis=axis)
    compiled = _npu(model, monkeypatch, tmp_path, **{**CONFIG, "scratchpad_bytes": 2048})
    _assert_bit_exact(model, {"x": x}, compiled)
    _on_npu(compiled)
    q = compiled.run({"x": x})["y"]
    back = _one_node("DequantizeLinear", [("x", y_type, shape)], [("s", scale), ("z", zero)], T.FLOAT, axis=axis)
    _assert_bit_exact(back, {"x": q}, _npu(back, monkeypatch, tmp_path))


def test_per_axis_dequantize_float_ops_quantize_is_one_kernel(monkeypatch, tmp_path):
    """DequantizeLinear (per channel) -> Relu -> QuantizeLinear (per channel): one vector-unit
    chain, in place on each tile, its parameters DMA'd with the tile; bit-exact."""
    rng = np.random.default_rng(12)
    s1, s2 = (rng.uniform(0.01, 0.1, 8).astype(np.float32) for _ in range(2))
    z1, z2 = (rng.integers(0, 256, 8).astype(np.uint8) for _ in range(2))
    nodes = [helper.make_node("DequantizeLinear", ["x", "s1", "z1"], ["d"], axis=1, name="dq"),
             helper.make_node("Relu", ["d"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "s2", "z2"], ["y"], axis=1, name="q")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.UINT8, [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", T.UINT8, None)],
                              [onnx.numpy_helper.from_array(v, n) for n, v in
                               (("s1", s1), ("z1", z1), ("s2", s2), ("z2", z2))])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    compiled = _npu(model, monkeypatch, tmp_path)
    _assert_bit_exact(model, {"x": rng.integers(0, 256, (1, 8, 6, 6)).astype(np.uint8)}, compiled)
    _on_npu(compiled)
    [(_, report)] = compiled._executable.npu_reports()
    # One kernel: load x, s1, z1, dequantize, relu, load s2, z2, quantize, store.
    assert report.instructions == 9
    # One tile: x and y a byte per element, the four parameter vectors (float32 scales, byte zero points).
    assert report.dma_load_bytes == 288 + 4 * 8 + 8 + 4 * 8 + 8 and report.dma_store_bytes == 288


@pytest.mark.parametrize("shape, scratchpad, low, high", [([3, 40], 64 * 1024, -1, 3), ([2, 64, 16], 2048, -2, 0.5),
                                                          ([5, 7], 64 * 1024, 0, 0)])
def test_dynamic_quantize_linear_on_the_vector_unit(shape, scratchpad, low, high, monkeypatch, tmp_path):
    """Two passes over x's tiles (the range, then the quantization), three outputs, all bit-exact
    with the cpu target and onnxruntime; a constant input (low == high) gets scale 1."""
    model = _one_node("DynamicQuantizeLinear", [("x", T.FLOAT, shape)], [], T.UINT8,
                      outputs=("y", ("s", T.FLOAT), ("z", T.UINT8)))
    compiled = _npu(model, monkeypatch, tmp_path, **{**CONFIG, "scratchpad_bytes": scratchpad})
    x = np.random.default_rng(13).uniform(low, high, shape).astype(np.float32)
    got = _assert_outputs_bit_exact(model, {"x": x}, compiled)
    _on_npu(compiled)
    size = int(np.prod(shape))
    report = compiled._executable.npu_reports()[0][1]
    # x once when it fits in the two slots of x (the second pass starts with the tiles still
    # there), else all but two tiles twice; y a byte per element, the scale (4 B), the zero point (1 B).
    if scratchpad == 2048:
        assert 4 * size < report.dma_load_bytes < 2 * 4 * size
    else:
        assert report.dma_load_bytes == 4 * size
    assert report.dma_store_bytes == size + 5
    if low == high:
        assert got["s"] == 1 and got["z"] == 0


def test_dynamic_quantize_linear_of_non_finite_and_huge_ranges(monkeypatch, tmp_path):
    """NaN, infinities and ranges that overflow float32 give what the cpu target gives (the spec
    leaves NaN open; onnxruntime's differ), without a warning or a crash."""
    import warnings

    model = _one_node("DynamicQuantizeLinear", [("x", T.FLOAT, [4, 8])], [], T.UINT8,
                      outputs=("y", ("s", T.FLOAT), ("z", T.UINT8)))
    compiled, cpu = _npu(model, monkeypatch, tmp_path), dlc.compile(model)
    for value in (np.nan, np.inf, -np.inf, 3e38, 1e-44):
        x = np.full((4, 8), 0.5, np.float32)
        x[1, 2], x[2, 3] = value, -value
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = compiled.run({"x": x})
        expected = cpu.run({"x": x})
        for name in got:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{name} of {value}")


def _dynamic_matmul(rng, a_shape, b_shape, b_dynamic: bool, qlinear: bool = False):
    """x -> DynamicQuantizeLinear -> MatMulInteger (zero point computed at run time) -> Cast ->
    Mul by x_scale * w_scale, as quantize_dynamic writes it; or QLinearMatMul with x's scale and
    zero point computed at run time; with B an int8 weight, or (b_dynamic) a second activation
    quantized at run time (attention's products, B batched)."""
    inputs = [helper.make_tensor_value_info("x", T.FLOAT, a_shape)]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql_x")]
    inits = []
    if b_dynamic:
        inputs.append(helper.make_tensor_value_info("w", T.FLOAT, b_shape))
        nodes.append(helper.make_node("DynamicQuantizeLinear", ["w"], ["wq", "ws", "wz"], name="dql_w"))
    else:
        inits += [onnx.numpy_helper.from_array(rng.integers(-64, 64, b_shape).astype(np.int8), "wq"),
                  onnx.numpy_helper.from_array(np.float32(0.01), "ws"),
                  onnx.numpy_helper.from_array(np.int8(0), "wz")]
    if qlinear:
        inits += [onnx.numpy_helper.from_array(np.float32(0.05), "ys"),
                  onnx.numpy_helper.from_array(np.uint8(128), "yz")]
        nodes.append(helper.make_node("QLinearMatMul", ["xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz"], ["y"],
                                      name="qlinearmatmul"))
        out = T.UINT8
    else:
        nodes += [helper.make_node("MatMulInteger", ["xq", "wq", "xz", "wz"], ["acc"], name="matmulinteger"),
                  helper.make_node("Cast", ["acc"], ["accf"], to=T.FLOAT, name="cast"),
                  helper.make_node("Mul", ["xs", "ws"], ["scale"], name="scale"),
                  helper.make_node("Mul", ["accf", "scale"], ["y"], name="rescale")]
        out = T.FLOAT
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", out, None)], inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]),
                                              strict_mode=True)
    feeds = {"x": rng.uniform(-1, 2, a_shape).astype(np.float32)}
    if b_dynamic:
        feeds["w"] = rng.uniform(-3, 1, b_shape).astype(np.float32)
    return model, feeds


@pytest.mark.parametrize("a_shape, b_shape, b_dynamic, qlinear", [
    ([6, 40], [40, 24], False, False),              # quantize_dynamic's projection: x's zero point at run time
    ([2, 6, 40], [40, 24], False, True),            # QLinearMatMul: x's scale and zero point at run time
    ([2, 3, 6, 16], [2, 3, 16, 6], True, False),    # Q x K^T: both zero points at run time, B batched
    ([2, 3, 6, 16], [3, 16, 6], True, False),       # B broadcast over the batch
])
def test_zero_points_computed_at_run_time_on_the_mac_array(a_shape, b_shape, b_dynamic, qlinear, monkeypatch,
                                                           tmp_path):
    """DynamicQuantizeLinear's zero point feeds the MAC array's zero point register (a one-element
    tile loaded once), its scale the vector unit's float ops or multipliers: the whole graph runs
    on the NPU, bit-exact with the cpu target and onnxruntime (as written), at the int8 MAC rate."""
    model, feeds = _dynamic_matmul(np.random.default_rng(14), a_shape, b_shape, b_dynamic, qlinear)
    compiled = _npu(model, monkeypatch, tmp_path, **{**CONFIG, "scratchpad_bytes": 4096})
    _assert_outputs_bit_exact(model, feeds, compiled)
    _on_npu(compiled)
    report = compiled._executable.npu_reports()[0][1]
    out = np.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2])) + (a_shape[-2], b_shape[-1])
    assert report.int8_macs == report.macs == int(np.prod(out)) * a_shape[-1]


@pytest.mark.parametrize("qlinear, pads, group", [(False, [0, 0, 0, 0], 1), (False, [1, 1, 1, 1], 1),
                                                  (True, [1, 0, 2, 1], 1), (True, [1, 1, 1, 1], 4)])
def test_convolutions_with_a_zero_point_computed_at_run_time(qlinear, pads, group, monkeypatch, tmp_path):
    """DynamicQuantizeLinear -> ConvInteger, or QLinearConv with x's scale and zero point computed
    at run time (multipliers per output channel on the vector unit), depthwise too: on the NPU,
    bit-exact; padding reads as the run-time zero point (the DMA's `pad_addr`, its register)."""
    rng = np.random.default_rng(17)
    cout = 4 if group == 4 else 6
    w = rng.integers(-60, 60, (cout, 4 // group, 3, 3)).astype(np.int8)
    inits = [onnx.numpy_helper.from_array(w, "w")]
    if qlinear:
        inits += [onnx.numpy_helper.from_array(rng.uniform(0.002, 0.01, cout).astype(np.float32), "ws"),
                  onnx.numpy_helper.from_array(np.zeros(cout, np.int8), "wz"),
                  onnx.numpy_helper.from_array(np.float32(0.04), "ys"),
                  onnx.numpy_helper.from_array(np.uint8(100), "yz")]
        conv = helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], strides=[2, 1],
                                pads=pads, group=group)
    else:
        conv = helper.make_node("ConvInteger", ["xq", "w", "xz"], ["y"], strides=[2, 1], pads=pads, group=group)
    graph = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]), conv], "g",
                              [helper.make_tensor_value_info("x", T.FLOAT, [1, 4, 9, 9])],
                              [helper.make_tensor_value_info("y", T.UINT8 if qlinear else T.INT32, None)], inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    compiled = _npu(model, monkeypatch, tmp_path)
    _assert_outputs_bit_exact(model, {"x": rng.uniform(-1, 3, (1, 4, 9, 9)).astype(np.float32)}, compiled)
    _on_npu(compiled)
    out = compiled.run({"x": np.zeros((1, 4, 9, 9), np.float32)})["y"].shape
    assert compiled._executable.npu_reports()[0][1].int8_macs == np.prod(out) * 4 // group * 9


@pytest.mark.parametrize("qlinear", [False, True])
def test_batched_b_runs_on_the_mac_array_bit_exact(qlinear, monkeypatch, tmp_path):
    """A [2, 3, 7, 40] by B [2, 3, 40, 24] (or [3, 40, 24], broadcast): one product per leading
    index, tiled in M, K and N by a small scratchpad; B's boxes carry the index."""
    rng = np.random.default_rng(15)
    for b_shape in ([2, 3, 40, 24], [3, 40, 24]):
        if qlinear:
            constants = [("a_scale", np.float32(0.03)), ("a_zero", np.uint8(131)), ("b_scale", np.float32(0.02)),
                         ("b_zero", np.uint8(120)), ("y_scale", np.float32(9.0)), ("y_zero", np.uint8(90))]
            model = _one_node("QLinearMatMul", [("a", T.UINT8, [2, 3, 7, 40]), ("a_scale", T.FLOAT, []),
                                                ("a_zero", T.UINT8, []), ("b", T.UINT8, b_shape)],
                              constants[2:], T.UINT8)
            feeds = {"a_scale": np.array(0.03, np.float32), "a_zero": np.array(131, np.uint8)}
        else:
            model = _one_node("MatMulInteger", [("a", T.UINT8, [2, 3, 7, 40]), ("b", T.INT8, b_shape)],
                              [("a_zero", np.uint8(3)), ("b_zero", np.int8(-2))], T.INT32)
            feeds = {}
        feeds["a"] = rng.integers(0, 256, (2, 3, 7, 40)).astype(np.uint8)
        feeds["b"] = (rng.integers(0, 256, b_shape) - (0 if qlinear else 128)).astype(
            np.uint8 if qlinear else np.int8)
        compiled = _npu(model, monkeypatch, tmp_path, **{**CONFIG, "scratchpad_bytes": 2048})
        _assert_bit_exact(model, feeds, compiled)
        if qlinear:  # MatMulInteger's exact int32 result is the reference evaluator's above:
            # onnxruntime's u8 x s8 kernel saturates pairs of products to int16 on CPUs without VNNI.
            _assert_outputs_bit_exact(model, feeds, compiled)
        report = compiled._executable.npu_reports()[0][1]
        assert report.int8_macs == 2 * 3 * 7 * 40 * 24 and report.mac_cycles > 0


@pytest.mark.parametrize("build", ["_small_cnn", "_small_mobile"])
def test_quantize_dynamic_cnns_run_wholly_on_the_npu(build, monkeypatch, tmp_path):
    """quantize_dynamic's CNNs: DynamicQuantizeLinear -> padded (depthwise) ConvInteger -> Cast ->
    Mul -> Add -> Relu/Clip per layer, pooling, MatMulInteger, all on the NPU. Its integers are
    the cpu target's; the float pooling sums in another order (numpy's mean), so float32 tolerance."""
    import test_quantization

    model, x_shape = _quantized(getattr(test_quantization, build), "dynamic", tmp_path)
    compiled = _npu(model, monkeypatch, tmp_path)
    feeds = {"x": np.random.default_rng(18).uniform(-1, 1, x_shape).astype(np.float32)}
    got = compiled.run(feeds)["y"]
    _on_npu(compiled)
    assert compiled._executable.npu_reports()[0][1].int8_macs > 0
    np.testing.assert_allclose(got, dlc.compile(model).run(feeds)["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds, graph_optimisation="none")["y"], rtol=1e-5,
                               atol=1e-6)


def test_quantize_dynamic_encoder_runs_on_the_npu_in_integers(monkeypatch, tmp_path):
    """A BERT-style encoder layer (benchmarks/models.py's, small) quantized by quantize_dynamic:
    every DynamicQuantizeLinear, MatMulInteger, Cast and rescale, and the float products of
    activations, run on the NPU; only what its units lack (Transpose, Split, Slice, Where,
    Softmax, LayerNormalization, Erf) goes to cpu, each with its reason. Outputs: the same
    int32 accumulators as onnxruntime; the float products of activations round differently
    (numpy's float32 matmul on the NPU), so float32 tolerance; `dlc compare`'s int8 build
    moves fewer bytes and takes fewer MAC cycles than the fp32 one."""
    import importlib.util
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from dlc.tools.npu_report import compare_npu_quantized

    spec = importlib.util.spec_from_file_location("dlc_benchmark_models",
                                                  Path(__file__).resolve().parent.parent / "benchmarks" / "models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    onnx.save(models.transformer_encoder(d_model=32, heads=2, seq=8, ffn=64), tmp_path / "fp32.onnx")
    quantize_dynamic(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", weight_type=QuantType.QInt8, reduce_range=True)
    model = onnx.load(tmp_path / "int8.onnx")
    compiled = _npu(model, monkeypatch, tmp_path)
    placement = compiled._executable.placement
    kinds = {n.name: n.op_type for n in model.graph.node}
    on_npu = {kinds[n] for n, t in placement.nodes.items() if t == "npu-sim"}
    assert {"DynamicQuantizeLinear", "MatMulInteger", "Cast", "Mul", "Add", "MatMul"} <= on_npu
    assert {placement.kinds[n] for n in placement.reasons} == {
        "Transpose", "Split", "Slice", "Where", "Softmax", "LayerNormalization", "Erf"}, placement.reasons
    assert sum(kinds[n] == "MatMulInteger" for n, t in placement.nodes.items() if t == "npu-sim") == 5
    feeds = {"x": np.random.default_rng(16).standard_normal((1, 8, 32)).astype(np.float32)}
    got = compiled.run(feeds)
    expected = run_onnxruntime(model, feeds, graph_optimisation="none")  # the cpu target: test_quantization.py
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5)
    fp32, int8 = compare_npu_quantized(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    assert int8.report.int8_macs > 0 and fp32.report.int8_macs == 0
    assert int8.report.dma_bytes < fp32.report.dma_bytes and int8.report.mac_cycles < fp32.report.mac_cycles
    assert int8.left == [] and fp32.left == []
