"""`--winograd`: stride-1 3x3 convs as Winograd F(2x2, 3x3) (passes/lowering/rules/winograd.py).

The transform matrices reproduce a 3x3 correlation exactly (in float64); compiled convs match a
float64 reference as closely as the direct conv does, with the bias, a residual Add and the
activation in the output transform, across row blocks, images and output channels that fill
no whole register tile; results are the same at every thread count; convs it cannot take, and
builds without the option, keep the direct conv.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from dlc.driver import compile_model, parse_mlir
from dlc.targets import CompileOptions
from passes.lowering.rules.winograd import F2X2, F4X4, plane_stride, row_blocks, transformed_filter


@pytest.mark.parametrize("form", [F2X2, F4X4], ids=lambda form: form.name)
def test_the_transforms_compute_a_3x3_correlation(form):
    rng = np.random.default_rng(0)
    g, d = rng.standard_normal((3, 3)), rng.standard_normal((form.tile, form.tile))
    u = form.filter_transform @ g @ form.filter_transform.T
    v = form.input_transform @ d @ form.input_transform.T
    y = form.output_transform @ (u * v) @ form.output_transform.T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(form.out)] for i in range(form.out)])
    np.testing.assert_allclose(y, direct, rtol=0, atol=1e-12)
    weights = rng.standard_normal((5, 2, 3, 3)).astype(np.float32)
    g = form.filter_transform
    np.testing.assert_allclose(transformed_filter(weights, form)[form.tile + 2, 1, 4],
                               (g @ weights[4, 1] @ g.T)[1, 2], rtol=1e-6)


@pytest.mark.parametrize("rows,cols,channels,l2", [(28, 28, 64, 2 << 20), (14, 14, 128, 2 << 20),
                                                   (7, 7, 256, 2 << 20), (28, 28, 64, 256 << 10)])
def test_row_blocks_cover_the_tile_rows_once_and_fit_the_budget(rows, cols, channels, l2):
    blocks = row_blocks(rows, cols, channels, channels, l2)
    assert [first for first, _ in blocks] == list(np.cumsum([0] + [count for _, count in blocks])[:-1])
    assert sum(count for _, count in blocks) == rows
    per_row = 4 * 16 * 2 * channels * cols
    budget = max(l2 // 4, 4 * 16 * channels * channels)
    assert all(count * per_row <= budget or count == 1 for _, count in blocks)


def test_plane_strides_skew_the_sixteen_planes_over_l1_sets():
    for floats in (64 * 112, 1024, 28672 // 4, 3):
        stride = plane_stride(floats)
        assert floats <= stride < floats + 1024
        assert len({(k * stride * 4) % 4096 // 64 for k in range(16)}) == 16


def _conv_model(channels, out_channels, side, batch=1, bias=True, tail="relu", stride=1, dilation=1):
    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.uniform(-0.5, 0.5, (out_channels, channels, 3, 3)).astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        weights.append(numpy_helper.from_array(rng.uniform(-1, 1, out_channels).astype(np.float32), "b"))
        inputs.append("b")
    out_side = (side - 1) // stride + 1  # pads of `dilation` keep a stride-1 map its size
    out_shape = [batch, out_channels, out_side, out_side]
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, side, side])]
    nodes = [helper.make_node("Conv", inputs, ["c"], kernel_shape=[3, 3], pads=[dilation] * 4,
                              strides=[stride] * 2, dilations=[dilation] * 2)]
    last = "c"
    if tail in ("residual", "residual_relu"):
        graph_inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, out_shape))
        nodes.append(helper.make_node("Add", ["c", "r"], ["s"]))
        last = "s"
    if tail in ("relu", "residual_relu"):
        nodes.append(helper.make_node("Relu", [last], ["y"]))
    elif tail == "relu6":
        nodes.append(helper.make_node("Clip", [last, "lo", "hi"], ["y"]))
        weights += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                    numpy_helper.from_array(np.array(6, np.float32), "hi")]
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(nodes, "conv", graph_inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _reference(model, feeds) -> np.ndarray:
    """The model's conv and tail in float64 (numpy)."""
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x = feeds["x"].astype(np.float64)
    w = weights["w"]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    side = x.shape[2]
    y = np.zeros((x.shape[0], w.shape[0], side, side))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", padded[:, :, i:i + side, j:j + side], w[:, :, i, j])
    if "b" in weights:
        y += weights["b"][None, :, None, None]
    if "r" in feeds:
        y += feeds["r"]
    ops = [node.op_type for node in model.graph.node]
    if "Relu" in ops:
        y = np.maximum(y, 0)
    if "Clip" in ops:
        y = np.clip(y, 0, 6)
    return y


def _winograd_taken(model, threads=1, winograd=True) -> bool:
    """Whether the lowered module holds a transformed filter (winograd.py's constant)."""
    module = compile_model(model, compile_to="linalg",
                           options=CompileOptions(threads=threads, winograd=winograd)).module
    return 'sym_name = "winograd_filter' in str(module)


CASES = {
    # ResNet-18's first stage: 28 tile rows in blocks, the residual Add and Relu in the store
    "resnet_stage1": dict(channels=64, out_channels=64, side=56, tail="residual_relu"),
    # output channels filling no whole register tile, no bias, no tail
    "ragged_channels": dict(channels=128, out_channels=48, side=14, bias=False, tail="none"),
    "two_images_relu6": dict(channels=64, out_channels=64, side=16, batch=2, tail="relu6"),
    # three images of (on any L2 of 2 MiB or less) several blocks of rows: the passes' loops
    "three_images_in_blocks": dict(channels=64, out_channels=64, side=56, batch=3, tail="residual_relu"),
    "residual_only": dict(channels=96, out_channels=64, side=28, tail="residual"),
    # odd maps: the last row and column of 2x2 tiles overhang y (SqueezeNet's last fire, GoogLeNet)
    "odd_27x27_residual": dict(channels=128, out_channels=192, side=27, tail="residual_relu"),
    "odd_29x29_two_images": dict(channels=128, out_channels=96, side=29, batch=2, tail="relu"),
    "odd_31x31_no_bias": dict(channels=160, out_channels=64, side=31, bias=False, tail="none"),
    # a small map from deep channels (AlexNet's and ZFNet's 12x12)
    "small_12x12_deep": dict(channels=128, out_channels=256, side=12, tail="relu"),
}


@pytest.mark.parametrize("name", CASES)
def test_winograd_convs_match_a_float64_reference_as_the_direct_conv_does(name, monkeypatch):
    monkeypatch.setenv("DLC_CACHE", "0")
    model = _conv_model(**CASES[name])
    assert _winograd_taken(model)
    rng = np.random.default_rng(2)
    feeds = {i.name: rng.uniform(-1, 1, [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    reference = _reference(model, feeds)
    scale = np.abs(reference).max()
    errors = {}
    for winograd in ("none", "f2", "f4"):
        executable = compile_model(model, options=CompileOptions(threads=1, winograd=winograd)).executable
        errors[winograd] = np.abs(executable.run(feeds)["y"] - reference).max() / scale
    # float32 sums of 9C products: the direct conv's error here is 1e-7-1e-6 of the output's
    # scale; F(2x2)'s transforms' adds (B^T d B, A^T M A with entries 0 and +-1, G's halves) may
    # add a few ulp of each intermediate, not more.
    assert errors["f2"] < max(4 * errors["none"], 2e-6), errors
    # F(4x4) (where 4 divides the map; F(2x2) elsewhere) multiplies by up to 8 in A and 5/2 in
    # B, G's entries are 15ths: measured 2.2-2.9x the direct conv's error (winograd.py F4X4).
    assert errors["f4"] < max(4 * errors["none"], 2e-6), errors


def test_winograd_outputs_are_bit_identical_across_thread_counts(monkeypatch):
    """Two images of 28 tile rows: passes in loops at every count (a block of rows is at most
    half the rows where L2 is 2 MiB a core or less), their transforms parallel inside."""
    monkeypatch.setenv("DLC_CACHE", "0")
    model = _conv_model(64, 64, 56, batch=2, tail="relu")
    feeds = {"x": np.random.default_rng(3).uniform(-1, 1, (2, 64, 56, 56)).astype(np.float32)}
    odd = _conv_model(128, 96, 27, batch=2, tail="relu")  # overhanging tiles: the edges' own loops
    odd_feeds = {"x": np.random.default_rng(4).uniform(-1, 1, (2, 128, 27, 27)).astype(np.float32)}
    for conv, inputs, form in ((model, feeds, "f2"), (model, feeds, "f4"), (odd, odd_feeds, "f2")):
        outputs = [compile_model(conv, options=CompileOptions(threads=threads, winograd=form)).executable.run(
            inputs)["y"] for threads in (1, 2, 3)]
        assert _winograd_taken(conv, threads=3, winograd=form)
        for other in outputs[1:]:
            assert np.array_equal(outputs[0], other), form


@pytest.mark.parametrize("shape,reason,said", [
    (dict(channels=64, out_channels=64, side=56), "with --no-winograd", None),
    (dict(channels=64, out_channels=64, side=28, stride=2), "stride 2", None),
    (dict(channels=64, out_channels=64, side=28, dilation=2), "dilation 2", None),
    (dict(channels=64, out_channels=64, side=7), "a 7x7 map: 16 tiles, its U streamed for few of them",
     "64 -> 64 channels over 7x7: too few output tiles (16)"),
    (dict(channels=64, out_channels=64, side=12), "64 -> 64 over 12x12: a small map needs deeper channels",
     "on a map this small the channels' harmonic mean must be at least 128 (it is 64)"),
    (dict(channels=512, out_channels=512, side=8), "an 8x8 map, under 10x10", "too few output tiles (16)"),
    (dict(channels=16, out_channels=64, side=56), "16 -> 64 channels: transforms cost what the GEMMs save",
     "the transforms would cost what the GEMMs save (the channels' harmonic mean 26 is under 64)"),
    (dict(channels=256, out_channels=384, side=13), "256 -> 384 over 13x13: the overhanging tiles' loops cost more",
     "256 -> 384 channels over 13x13: on an odd map this small the overhanging tiles would cost more"),
    (dict(channels=48, out_channels=192, side=27), "48 -> 192 over 27x27: the overhanging tiles' loops cost more",
     "48 -> 192 channels over 27x27: the tiles overhanging"),
])
def test_convs_winograd_cannot_take_keep_the_direct_conv(shape, reason, said):
    """...and where the conv is a stride-1 3x3 one, the kernel says why (`dlc explain` prints it)."""
    winograd = reason != "with --no-winograd"
    model = _conv_model(**shape)
    assert not _winograd_taken(model, winograd=winograd), reason
    module = str(compile_model(model, compile_to="linalg", options=CompileOptions(threads=1, winograd=winograd)).module)
    if said is None:
        assert "dlc.lowering" not in module
    else:
        assert "stays a direct conv, not Winograd: " in module and said in module, said


def test_explain_says_how_each_conv_runs_and_why_not_winograd(tmp_path):
    direct, winograd = tmp_path / "direct.onnx", tmp_path / "winograd.onnx"
    onnx.save(_conv_model(64, 256, 13), direct)
    onnx.save(_conv_model(64, 64, 28), winograd)
    said = {}
    for path in (direct, winograd):
        out = subprocess.run([sys.executable, "-m", "dlc", "explain", str(path)], capture_output=True, text=True,
                             cwd=ROOT)
        assert out.returncode == 0, out.stderr
        said[path.stem] = out.stdout
    assert ("= node 'Conv_0' (Conv) stays a direct conv, not Winograd: 64 -> 256 channels over 13x13: on an odd "
            "map this small the overhanging tiles would cost more than the GEMMs save") in said["direct"]
    assert "= runs as Winograd F(2x2, 3x3)" in said["winograd"] and "stays a direct conv" not in said["winograd"]


def test_winograd_is_the_default_and_no_winograd_keeps_the_direct_conv(tmp_path):
    model = _conv_model(64, 64, 28)
    assert _winograd_taken(model, winograd=CompileOptions().winograd)
    path = tmp_path / "conv.onnx"
    onnx.save(model, path)
    outputs = {}
    for flags in ([], ["--winograd", "f4"], ["--no-winograd"], ["--winograd", "none"]):
        name = "_".join(flags) or "default"
        out = subprocess.run([sys.executable, "-m", "dlc", "compile", str(path), *flags, "--threads", "1", "-o",
                              str(tmp_path / f"{name}.mlir"), "--compile-to", "linalg"],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DLC_CACHE": "0"})
        assert out.returncode == 0, out.stderr
        outputs[name] = (tmp_path / f"{name}.mlir").read_text()
    assert "count = 16" in outputs["default"] and "count = 36" in outputs["--winograd_f4"]
    assert all("winograd_filter" not in outputs[name] for name in ("--no-winograd", "--winograd_none"))
    out = subprocess.run([sys.executable, "-m", "dlc", "run", str(path), "--no-winograd", "--threads", "1"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DLC_CACHE": "0"})
    assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "-m", "dlc", "bench", str(path), "--threads", "1",
                          "--repeat", "3", "--vs", "none"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "GFLOP/s of the direct convs' work: Winograd's 3x3 convs do 16/36 of it" in out.stdout
    out = subprocess.run([sys.executable, "-m", "dlc", "run", str(path), "--winograd", "f6"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and "invalid choice: 'f6'" in out.stderr and "Traceback" not in out.stderr



@pytest.mark.parametrize("side", [28, 55])
def test_a_bottleneck_block_3x3_conv_writes_nhwc_through_winograd(side, monkeypatch):
    """pointwise-convs-nhwc's 3x3 convs between 1x1 convs read NCHW and write NHWC (ResNet-50's):
    the GEMMs then store M as rows of output channels for the output transform (over an odd
    map, its overhanging tiles' outputs stored by loops of their own)."""
    monkeypatch.setenv("DLC_CACHE", "0")
    rng = np.random.default_rng(4)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.uniform(-0.3, 0.3, shape).astype(np.float32), name)

    nodes, initializers, last = [], [], "x"
    for block in range(3):  # enough blocks that the pass keeps NHWC (its Transposes amortised)
        w1, b1, w2, b2, w3, b3 = (f"{name}_{block}" for name in ("w1", "b1", "w2", "b2", "w3", "b3"))
        a, ar, c, cr, e, s, y = (f"{name}_{block}" for name in ("a", "ar", "c", "cr", "e", "s", "y"))
        y = "y" if block == 2 else y
        nodes += [helper.make_node("Conv", [last, w1, b1], [a], kernel_shape=[1, 1]),
                  helper.make_node("Relu", [a], [ar]),
                  helper.make_node("Conv", [ar, w2, b2], [c], kernel_shape=[3, 3], pads=[1] * 4),
                  helper.make_node("Relu", [c], [cr]),
                  helper.make_node("Conv", [cr, w3, b3], [e], kernel_shape=[1, 1]),
                  helper.make_node("Add", [e, last], [s]),
                  helper.make_node("Relu", [s], [y])]
        initializers += [weight(w1, 64, 128, 1, 1), weight(b1, 64), weight(w2, 64, 64, 3, 3), weight(b2, 64),
                         weight(w3, 128, 64, 1, 1), weight(b3, 128)]
        last = y
    shape = [1, 128, side, side]
    graph = helper.make_graph(nodes, "bottleneck", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = CompileOptions(threads=1, winograd=True)
    assert 'dlc.out_layout = "NHWC"' in str(compile_model(model, compile_to="kernels", options=options).module)
    linalg = str(compile_model(model, compile_to="linalg", options=options).module)
    assert 'sym_name = "winograd_filter' in linalg
    feeds = {"x": rng.uniform(-1, 1, shape).astype(np.float32)}
    expected = run_onnxruntime(model, feeds)[0]
    outputs = [compile_model(model, options=CompileOptions(threads=1, winograd=w)).executable.run(feeds)["y"]
               for w in ("none", "f2", "f4")]
    scale = np.abs(expected).max()
    errors = [np.abs(out - expected).max() / scale for out in outputs]
    assert errors[1] < max(4 * errors[0], 2e-6) and errors[2] < max(4 * errors[0], 2e-6), errors


def test_both_transforms_split_over_threads():
    """On 16 threads the 64 -> 64 conv over 56x56 takes one pass (its V and M fit 16 L2s), whose
    input transform writes 16 views of V (one point each, apart in memory) and output transform
    the four outputs of each 2x2 tile: mark-parallel-loops splits both, and the padded copy."""
    loops = str(compile_model(_conv_model(64, 64, 56), compile_to="loops",
                              options=CompileOptions(threads=16, winograd=True)).module)
    assert loops.count("dlc.parallel") == 3
    assert loops.count("dlc.batch") == 1  # the 16 GEMMs: one call, one parallel region


@pytest.mark.parametrize("threads", [1, 2])
def test_the_passes_are_loops_not_copies(threads):
    """However many passes a conv takes (images x blocks of rows), its lowered code holds one
    pass of each block size: loops over images and over the blocks of one size, a view of x
    and of y at each pass's run-time offset. Straight-line passes made ResNet-18's one-thread
    compile 9.0 s against 2.4."""
    from passes.lowering.rules.winograd import row_blocks
    from passes.target_info import target_info

    model = _conv_model(64, 64, 56, batch=3, tail="residual_relu")
    module = compile_model(model, compile_to="linalg", options=CompileOptions(threads=threads, winograd=True)).module
    target = target_info(module)
    blocks = row_blocks(28, 28, 64, 64, target.l2_bytes, target.threads)
    sizes = {count for _, count in blocks}
    text = str(module)
    assert text.count("winograd input transform") == len(sizes)
    assert text.count("winograd output transform") == len(sizes)
    assert text.count("scf.for") == 1 + (len(blocks) > 1 and any(c == blocks[0][1] for _, c in blocks[1:]))
    assert "offset: ?" in text
    # the loops phase prints and reads back (dlc opt), with its views at run-time offsets
    loops = compile_model(model, compile_to="loops", options=CompileOptions(threads=threads, winograd=True)).module
    assert str(parse_mlir(str(loops))) == str(loops)
    if threads > 1:  # the padded copy, and both transforms inside the loops, split over threads
        assert str(loops).count("dlc.parallel") == 3


def test_f4_takes_maps_its_tiles_cover_and_f2_the_rest():
    """`--winograd f4`: F(4x4, 3x3) (36 planes, 36 GEMMs a pass) over 28x28, F(2x2, 3x3) (16) over
    30x30, which 4x4 tiles do not cover; the default keeps F(2x2) over both."""
    def planes(side, form):
        text = str(compile_model(_conv_model(64, 64, side), compile_to="linalg",
                                 options=CompileOptions(threads=1, winograd=form)).module)
        (count,) = {int(part.split("count = ")[1].split(" ")[0]) for part in text.split("dlc.batch")[1:]}
        return count

    assert planes(28, "f4") == 36 and planes(30, "f4") == 16
    assert planes(28, "f2") == 16


def test_the_winograd_option_names_its_forms():
    assert CompileOptions(winograd=True).winograd == "f2" and CompileOptions(winograd=False).winograd == "none"
    assert CompileOptions().winograd == "f2"
    with pytest.raises(Exception, match="winograd must be one of none, f2, f4"):
        CompileOptions(winograd="f6")


def test_a_view_of_a_view_counts_from_the_outer_views_offset():
    """view_at is relative to its source: reinterpret_cast offsets count from the base buffer,
    so a source at offset 3 moves a view at 5 (or at a run-time offset) to 8 (offset + 3)."""
    from xdsl.builder import Builder
    from xdsl.dialects import arith
    from xdsl.dialects.builtin import IndexType, MemRefType, f32
    from xdsl.ir import Block
    from xdsl.rewriter import InsertPoint

    from passes.lowering.kernels_to_linalg import view_at

    block = Block(arg_types=[MemRefType(f32, [32]), IndexType()])
    builder = Builder(InsertPoint.at_end(block))
    inner = view_at(builder, block.args[0], 3, [16])
    assert view_at(builder, inner, 5, [4]).type.layout.get_offset() == 8
    dynamic = view_at(builder, inner, block.args[1], [4])
    assert dynamic.type.layout.get_offset() is None
    (shift,) = [op for op in block.ops if isinstance(op, arith.AddiOp)]
    assert dynamic.owner.operands[1] is shift.result and shift.operands[0] is block.args[1]
    with pytest.raises(NotImplementedError, match="run-time offset"):
        view_at(builder, dynamic, 1, [2])


def test_the_manifest_and_profile_count_what_a_winograd_conv_executes(tmp_path):
    """A Winograd kernel's manifest entry keeps its ops' FLOPs (the direct conv's, which `dlc
    bench` divides by) and adds the FLOPs it executes and its algorithm; `--profile` judges it
    by those (else it read up to 135% of the machine's peak) and says so under the table."""
    import dlc
    from dlc.runtime.artifact import read_artifact

    compiled = dlc.compile(_conv_model(64, 64, 28, tail="relu"), threads=1)
    (kernel,) = [k for k in compiled._executable.manifest["kernels"] if "algorithm" in k]
    assert kernel["algorithm"] == "Winograd F(2x2, 3x3)"
    direct = 2 * 9 * 64 * 64 * 28 * 28
    assert kernel["flops"] == direct + 64 * 28 * 28  # and one a value for the Relu
    # 16 GEMMs over 14 x 14 tiles do 16/36 of the direct multiply-adds; the transforms add a little
    assert 16 / 36 * direct < kernel["executed_flops"] < 0.5 * direct
    compiled.save(tmp_path / "w")
    read_artifact(tmp_path / "w")  # the validator takes the two fields
    onnx.save(_conv_model(64, 64, 28, tail="relu"), tmp_path / "conv.onnx")
    out = subprocess.run([sys.executable, "-m", "dlc", "run", str(tmp_path / "conv.onnx"), "--profile", "--threads",
                          "1", "--repeat", "2"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "* runs as Winograd F(2x2, 3x3): its GFLOP/s, FLOP/B and %roof count the FLOPs it executes" in out.stdout
