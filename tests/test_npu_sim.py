"""npu-sim (issue 6): the npu dialect, the cycle model against hand-computed cases, tiling to the
scratchpad, numerics against onnxruntime, and a golden instruction stream."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_matches_onnxruntime, random_feeds, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

# Round numbers for hand computation: 16 B/cycle, 64 cycles per DMA transfer, a 32x32 array.
CONFIG = {"mac_rows": 32, "mac_cols": 32, "vector_lanes": 32, "scratchpad_bytes": 64 * 1024,
          "dma_bandwidth_gbps": 16.0, "dma_latency_cycles": 64, "clock_ghz": 1.0}


def _program(build):
    from dialects.npu import ProgramOp

    program = ProgramOp("test", CONFIG["scratchpad_bytes"])
    for op in build():
        program.body.block.add_op(op)
    return program


def _simulate(build, dram):
    from dlc.targets.npu.simulator import NpuConfig, Simulator

    simulator = Simulator(NpuConfig(**CONFIG))
    return simulator.run(_program(build), dram), simulator


# --- the dialect --------------------------------------------------------------------------------

def test_npu_dialect_round_trips_through_mlir_text():
    from xdsl.context import Context
    from xdsl.dialects.builtin import Builtin, ModuleOp
    from xdsl.parser import Parser

    from dialects import npu

    module = ModuleOp([_program(lambda: [
        npu.BufferOp("x", [1, 2, 4, 4], "input"), npu.BufferOp("v", [2, 16], "view", "x"),
        npu.DmaLoadOp("x", [0, 0, -1, -1], [1, 2, 6, 6], 0, -np.inf),
        npu.MacOp("conv2d", 0, [2, 6, 6], 512, [3, 2, 3, 3], 1024, [3, 4, 4], False, [1, 1], [1, 1]),
        npu.VectorOp("max_pool", [1024], [[3, 4, 4]], 1024, [3, 2, 2], window=([2, 2], [2, 2], [1, 1])),
        npu.DmaStoreOp("y", [0, 0, 0, 0], [1, 3, 2, 2], 1024), npu.SyncOp()])])
    module.verify()
    context = Context()
    context.load_dialect(Builtin)
    context.load_dialect(npu.NPU)
    text = str(module)
    assert str(Parser(context, text).parse_module()) == text


# --- the cycle model, by hand ---------------------------------------------------------------------

def _matmul_tile(a_addr=0, b_addr=8192, acc=16384):
    from dialects import npu

    return npu.MacOp("matmul", a_addr, [32, 64], b_addr, [64, 32], acc, [32, 32], False)


def test_single_mac_tile_cycles_and_numerics():
    from dialects import npu

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((32, 64), np.float32), rng.standard_normal((64, 32), np.float32)
    dram = {"a": a, "b": b, "c": np.zeros((32, 32), np.float32)}
    report, _ = _simulate(lambda: [npu.DmaLoadOp("a", [0, 0], [32, 64], 0),
                                   npu.DmaLoadOp("b", [0, 0], [64, 32], 8192),
                                   _matmul_tile(), npu.DmaStoreOp("c", [0, 0], [32, 32], 16384)], dram)
    # Loads: 64 + 8192/16 = 576 cycles each, back to back on the DMA engine (1152).
    # MAC: M * ceil(N/32) * ceil(K/32) = 32 * 1 * 2 = 64 -> 1216. Store: 64 + 4096/16 = 320 -> 1536.
    assert report.cycles == 1536
    assert report.compute_cycles == 64
    assert report.macs == 32 * 64 * 32
    assert report.mac_utilisation == pytest.approx(32 * 64 * 32 / (1536 * 1024))
    assert report.dma_bytes == 2 * 8192 + 4096
    assert report.scratchpad_peak == 16384 + 4096
    np.testing.assert_allclose(dram["c"], a @ b, rtol=1e-5, atol=1e-5)


def test_a_depthwise_tile_filters_one_channel_per_row():
    """depthwise2d: 64 channels of a 10x10 padded tile, 3x3 filters, 8x8 out: each array row
    takes a channel, so ceil(64/32) * 9 * 64 = 1152 cycles (as conv2d, one channel per pass of
    the array: 64 * 9 * 64 = 36864)."""
    from dialects import npu

    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 10, 10)).astype(np.float32)
    w = rng.standard_normal((64, 1, 3, 3)).astype(np.float32)
    dram = {"x": x[None], "w": w, "y": np.zeros((1, 64, 8, 8), np.float32)}
    report, _ = _simulate(lambda: [
        npu.DmaLoadOp("x", [0, 0, 0, 0], [1, 64, 10, 10], 0), npu.DmaLoadOp("w", [0, 0, 0, 0], [64, 1, 3, 3], 25600),
        npu.MacOp("depthwise2d", 0, [64, 10, 10], 25600, [64, 1, 3, 3], 28160, [64, 8, 8], False, [1, 1], [1, 1]),
        npu.DmaStoreOp("y", [0, 0, 0, 0], [1, 64, 8, 8], 28160)], dram)
    assert report.mac_cycles == 1152 and report.macs == 64 * 9 * 64
    expected = sum(w[:, 0, i, j][:, None, None] * x[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3))
    np.testing.assert_allclose(dram["y"][0], expected, rtol=1e-5, atol=1e-5)


def test_dma_bound_copy():
    from dialects import npu

    x = np.arange(4096, dtype=np.float32).reshape(64, 64)
    dram = {"x": x, "y": np.zeros_like(x)}
    report, _ = _simulate(lambda: [npu.DmaLoadOp("x", [0, 0], [64, 64], 0),
                                   npu.VectorOp("copy", [0], [[64, 64]], 16384, [64, 64]),
                                   npu.DmaStoreOp("y", [0, 0], [64, 64], 16384)], dram)
    # 16 KiB each way: 64 + 1024 cycles; the vector copy 4096 / 32 lanes = 128 cycles in between.
    assert report.cycles == 2 * (64 + 1024) + 128
    assert report.mac_utilisation == 0
    np.testing.assert_array_equal(dram["y"], x)


def test_double_buffering_overlaps_dma_with_compute():
    from dialects import npu

    rng = np.random.default_rng(1)
    a = rng.standard_normal((64, 64), np.float32)
    b = rng.standard_normal((64, 32), np.float32)
    dram = {"a": a, "b": b, "c": np.zeros((64, 32), np.float32)}
    report, _ = _simulate(lambda: [
        npu.DmaLoadOp("b", [0, 0], [64, 32], 8192),
        npu.DmaLoadOp("a", [0, 0], [32, 64], 0),            # ping
        npu.DmaLoadOp("a", [32, 0], [32, 64], 20480),       # pong: loads while the first tile computes
        _matmul_tile(0, 8192, 16384), _matmul_tile(20480, 8192, 28672),
        npu.DmaStoreOp("c", [0, 0], [32, 32], 16384), npu.DmaStoreOp("c", [32, 0], [32, 32], 28672)], dram)
    # DMA: b [0, 576), a0 [576, 1152), a1 [1152, 1728); MAC: tile 0 [1152, 1216) under a1's load,
    # tile 1 [1728, 1792); store 0 waits only for the DMA engine: [1728, 2048), store 1 [2048, 2368).
    # Serially it would be 3 * 576 + 2 * 64 + 2 * 320 = 2496.
    assert report.cycles == 2368
    assert report.cycles < report.compute_cycles + report.dma_busy_cycles
    np.testing.assert_allclose(dram["c"], a @ b, rtol=1e-5, atol=1e-5)


def test_a_load_waits_for_the_compute_reading_its_slot():
    from dialects import npu

    dram = {"a": np.ones((32, 64), np.float32), "b": np.ones((64, 32), np.float32)}
    report, _ = _simulate(lambda: [npu.DmaLoadOp("a", [0, 0], [32, 64], 0), npu.DmaLoadOp("b", [0, 0], [64, 32], 8192),
                                   _matmul_tile(), npu.DmaLoadOp("a", [0, 0], [32, 64], 0)], dram)
    # The second load of slot 0 must not overwrite it before the MAC (ends at 1216) read it.
    assert report.cycles == 1216 + 576


def test_scratchpad_accesses_are_bounds_checked():
    from dialects import npu
    from dlc.targets.npu.simulator import NpuFault

    dram = {"x": np.zeros((64, 64), np.float32)}
    with pytest.raises(NpuFault, match="outside"):
        _simulate(lambda: [npu.DmaLoadOp("x", [0, 0], [64, 64], CONFIG["scratchpad_bytes"] - 1024)], dram)
    with pytest.raises(NpuFault, match="leaves tensor"):
        _simulate(lambda: [npu.DmaStoreOp("x", [60, 0], [8, 64], 0)], dram)


# --- lowering: tiles, numerics, golden stream ------------------------------------------------------

def _conv_model(cin=3, cout=8, size=8, kernel=3, pads=1, strides=1, group=1, dilations=1, extra=("Relu",)):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((cout, cin // group, kernel, kernel)).astype(np.float32) * 0.3
    b = rng.standard_normal(cout).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[pads] * 4,
                              strides=[strides] * 2, group=group, dilations=[dilations] * 2)]
    last = "c"
    for i, op in enumerate(extra):
        nodes.append(helper.make_node(op, [last], [f"e{i}"], name=f"{op.lower()}{i}"))
        last = f"e{i}"
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return _inferred(graph)


def _inferred(graph) -> onnx.ModelProto:
    """Output shapes from ONNX shape inference, the arithmetic onnxruntime uses."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _programs(model):
    """The npu.program of each kernel at the `loops` phase (after convert-kernels-to-npu)."""
    from dialects.npu import ProgramOp
    from dlc.driver import compile_model

    module = compile_model(model, target="npu-sim", compile_to="loops").module
    return [op for op in module.walk() if isinstance(op, ProgramOp)]


def _npu(model, monkeypatch, tmp_path, **config):
    """Compile for npu-sim with a target file (the documented way to change the hardware)."""
    import json

    import dlc

    if config:
        path = tmp_path / "npu.json"
        path.write_text(json.dumps(config))
        monkeypatch.setenv("DLC_NPU_TARGET", str(path))
    return dlc.compile(model, target="npu-sim")


def test_conv_relu_runs_on_the_npu_and_matches_onnxruntime(monkeypatch, tmp_path):
    model = _conv_model()
    compiled = _npu(model, monkeypatch, tmp_path)
    feeds = random_feeds(model)
    np.testing.assert_allclose(compiled.run(feeds)["e0"], run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)
    steps = compiled._executable.steps
    assert [s.target for s in steps] == ["npu-sim"]  # nothing fell back
    report = steps[0].executable.last_report
    assert report.macs == 8 * 3 * 9 * 64 and report.cycles > 0


@pytest.mark.parametrize("case", [
    {},                                                      # fits whole
    {"cin": 40, "cout": 48, "size": 12},                     # Cin and Cout span several array passes
    {"cin": 8, "cout": 8, "group": 8},                       # depthwise
    {"strides": 2, "dilations": 2, "pads": 2, "size": 11},   # strided, dilated, odd size
])
def test_conv_tiled_into_a_small_scratchpad_matches_onnxruntime(case, monkeypatch, tmp_path):
    model = _conv_model(**case)
    compiled = _npu(model, monkeypatch, tmp_path, scratchpad_bytes=8 * 1024)
    feeds = random_feeds(model)
    np.testing.assert_allclose(compiled.run(feeds)["e0"], run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-4)
    report = compiled._executable.steps[0].executable.last_report
    assert report.scratchpad_peak <= 8 * 1024


def test_an_op_that_cannot_fit_is_a_compile_error_naming_the_node(monkeypatch, tmp_path):
    from dlc.errors import CompileError

    with pytest.raises(CompileError, match=r"node 'conv' \(Conv\) cannot fit the 512 B scratchpad.*needs \d+ B"):
        _npu(_conv_model(size=64), monkeypatch, tmp_path, scratchpad_bytes=512)


def _single_op_model(op_type, inputs, attrs=None, weights=()):
    """One node over float inputs [(name, shape)] and weights [(name, array)]."""
    node = helper.make_node(op_type, [n for n, _ in inputs] + [n for n, _ in weights], ["y"], name="node",
                            **(attrs or {}))
    graph = helper.make_graph([node], op_type, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                for n, s in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, n) for n, a in weights])
    return _inferred(graph)


_W = np.random.default_rng(3).standard_normal((24, 40)).astype(np.float32)


@pytest.mark.parametrize("model", [
    _single_op_model("Gemm", [("a", [5, 40])], {"transB": 1, "alpha": 0.5, "beta": 2.0},
                     [("w", _W), ("c", np.arange(24, dtype=np.float32))]),
    _single_op_model("MatMul", [("a", [7, 24]), ("b", [24, 40])]),
    _single_op_model("MaxPool", [("x", [1, 4, 9, 9])], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}),
    _single_op_model("AveragePool", [("x", [1, 4, 8, 8])], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    _single_op_model("GlobalAveragePool", [("x", [1, 6, 5, 5])]),
    _single_op_model("Add", [("x", [2, 3, 4, 5]), ("z", [3, 1, 5])]),
    _single_op_model("Mul", [("x", [2, 3, 4, 5]), ("z", [5])]),
    _single_op_model("LeakyRelu", [("x", [3, 70])], {"alpha": 0.2}),
    _single_op_model("Clip", [("x", [3, 70])], weights=[("lo", np.float32(-0.5)), ("hi", np.float32(0.25))]),
], ids=["gemm", "matmul", "maxpool", "avgpool", "gap", "add-bcast", "mul-bcast", "leakyrelu", "clip"])
def test_ops_on_the_npu_match_onnxruntime(model, monkeypatch, tmp_path):
    monkeypatch.setenv("DLC_NPU_TARGET", "")
    assert_matches_onnxruntime(model, target="npu-sim")


def test_fusion_cuts_dma_traffic_and_keeps_results():
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions
    from dlc.targets.npu.simulator import NpuConfig
    from dlc.targets.npu.target import NpuSimTarget
    from dlc.targets.partition import compile_partitioned

    model = _conv_model(extra=("Relu", "Sigmoid"))
    feeds = random_feeds(model)
    results = {}
    for fusion in ("none", "all"):
        module = compile_model(model, target="npu-sim", compile_to="graph").module
        executable = compile_partitioned(module, NpuSimTarget(NpuConfig()), CompileOptions(fusion=fusion))
        results[fusion] = (executable.run(feeds)["e1"], executable.npu_reports()[0][1])
    np.testing.assert_array_equal(results["none"][0], results["all"][0])
    # Unfused, the conv output goes to DRAM and back twice (Relu, Sigmoid): 2 x 2 x 2 KiB more.
    assert results["none"][1].dma_bytes - results["all"][1].dma_bytes == 4 * 8 * 8 * 8 * 4


def test_golden_instruction_stream_of_a_small_conv():
    [program] = _programs(_conv_model(cin=2, cout=4, size=4))
    lines = [line.strip() for line in str(program).splitlines()]
    assert lines == [
        ('%0 = npu.program(%x, %w, %b) : (tensor<1x2x4x4xf32>, tensor<4x2x3x3xf32>, tensor<4xf32>) '
         'attributes {sym_name = "k0_Conv_fused", scratchpad_bytes = 524288 : i64} {'),
        'npu.buffer {sym_name = "in0", shape = array<i64: 1, 2, 4, 4>, kind = "input"}',
        'npu.buffer {sym_name = "@w", shape = array<i64: 4, 2, 3, 3>, kind = "weight"}',
        'npu.buffer {sym_name = "@b", shape = array<i64: 4>, kind = "weight"}',
        'npu.buffer {sym_name = "out", shape = array<i64: 1, 4, 4, 4>, kind = "output"}',
        # The padded input box (rows and columns -1..4), the weights, one MAC tile.
        ('npu.dma_load {tensor = "in0", offsets = array<i64: 0, 0, -1, -1>, sizes = array<i64: 1, 2, 6, 6>, '
         'addr = 0 : i64, pad_value = 0.000000e+00 : f32}'),
        ('npu.dma_load {tensor = "@w", offsets = array<i64: 0, 0, 0, 0>, sizes = array<i64: 4, 2, 3, 3>, '
         'addr = 640 : i64, pad_value = 0.000000e+00 : f32}'),
        ('npu.mac {kind = "conv2d", a = 0 : i64, a_shape = array<i64: 2, 6, 6>, b = 640 : i64, '
         'b_shape = array<i64: 4, 2, 3, 3>, acc = 1280 : i64, acc_shape = array<i64: 4, 4, 4>, accumulate = 0 : i64, '
         'strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>}'),
        # Bias, then the fused Relu in place on the accumulator, then one store.
        ('npu.dma_load {tensor = "@b", offsets = array<i64: 0>, sizes = array<i64: 4>, addr = 1792 : i64, '
         'pad_value = 0.000000e+00 : f32}'),
        ('npu.vector {fn = "add", ins = array<i64: 1280, 1792>, '
         'in_shapes = [array<i64: 4, 4, 4>, array<i64: 4, 1, 1>], '
         'out = 1280 : i64, out_shape = array<i64: 4, 4, 4>}'),
        ('npu.vector {fn = "relu", ins = array<i64: 1280>, in_shapes = [array<i64: 1, 4, 4, 4>], out = 1280 : i64, '
         'out_shape = array<i64: 1, 4, 4, 4>}'),
        ('npu.dma_store {tensor = "out", offsets = array<i64: 0, 0, 0, 0>, sizes = array<i64: 1, 4, 4, 4>, '
         'addr = 1280 : i64}'),
        'npu.sync',
        '} -> tensor<1x4x4x4xf32>',
    ]


def test_explain_shows_the_npu_kernels_and_why():
    """npu-sim goes through form-kernels and fuse-kernels with its own rules (issue 13)."""
    from conftest import ROOT

    from dlc.tools.fusion_report import explain

    text = explain(ROOT / "examples" / "models" / "cnn.onnx", target="npu-sim")
    assert "kernel k5_Conv_fused: block.b.conv (Conv), residual (Add), block.relu (Relu)" in text
    assert ("residual: joined block.b.conv's kernel (vector-unit epilogue of a MAC-array op, "
            "in place on its output tile)") in text
    assert "pool <- stem.relu: a pooling op reads whole windows: it starts a kernel of its own" in text
    assert "softmax <- fc: kernels on different targets (npu-sim, cpu) are not fused" in text


def test_a_value_with_other_users_ends_the_npu_chain():
    """The NPU stores only a kernel's last value: a Relu whose input is also a graph output
    starts a kernel of its own (on cpu the rules would fuse it)."""
    from dlc.driver import compile_model
    from dlc.tools.fusion_report import kernel_infos

    model = _conv_model()
    model.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 8, 8, 8]))
    module = compile_model(model, target="npu-sim", compile_to="kernels").module
    relu = next(k for k in kernel_infos(module) if k.nodes == ["relu0"])
    assert relu.apart == [("relu0 <- conv: the target's kernels are chains: the kernel's last value has "
                           "other users (a chain stores only its end)")]


@pytest.mark.parametrize("weight_name", ["in0", "in1", "out"])
def test_a_weight_named_like_an_npu_buffer_keeps_its_own_dram_tensor(weight_name):
    """DRAM tensors of a program are its inputs (in0, in1, ...), its weights and `out`; a weight
    called in1 or out once shared the name of another tensor (found by the hostile fuzzer:
    NpuFault, or a wrong answer)."""
    import dlc

    weight = np.array([[1.0, -np.inf, -2.5]], np.float32)
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Sub", [weight_name, "x"], ["d"]), helper.make_node("Mul", ["d", "y"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(weight, weight_name)]), opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": np.array([1.0, 2.0, 3.0], np.float32), "y": np.array([[2.0, 3.0, 4.0]], np.float32)}
    np.testing.assert_array_equal(dlc.compile(model, target="npu-sim").run(feeds)["z"],
                                  (weight - feeds["x"]) * feeds["y"])
