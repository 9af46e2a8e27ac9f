"""pointwise-convs-nhwc end to end: a bottleneck network (1x1 convs in NHWC, the 3x3 convs
between layouts, a strided stage with its 1x1 shortcut, batch 2) matches onnxruntime, and its
results are bit-identical across thread counts."""

from __future__ import annotations

import numpy as np
from conftest import random_feeds, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper
from test_parallel_loops import _with_threads

import dlc
from dlc.driver import CompileOptions, compile_model
from passes.pipeline import PassInstrumentation


def _bottleneck_net(batch: int = 2, blocks: int = 4, residual: str = "Add") -> object:
    rng = np.random.default_rng(0)
    nodes, weights = [], []

    def conv(x, cin, cout, k, stride=1, name="conv"):
        w = numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k))
                                    .astype(np.float32), f"{name}.w")
        b = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"{name}.b")
        weights.extend([w, b])
        nodes.append(helper.make_node("Conv", [x, w.name, b.name], [name], name=name, strides=[stride] * 2,
                                      pads=[k // 2] * 4))
        return name

    def relu(x):
        nodes.append(helper.make_node("Relu", [x], [f"{x}.relu"]))
        return f"{x}.relu"

    x = relu(conv("x", 8, 32, 3, name="stem"))
    channels = 32
    for i in range(blocks):
        stride, out = (2, 64) if i == 1 else (1, channels)
        h = relu(conv(x, channels, out // 4, 1, name=f"b{i}.reduce"))
        h = relu(conv(h, out // 4, out // 4, 3, stride, name=f"b{i}.spatial"))
        h = conv(h, out // 4, out, 1, name=f"b{i}.expand")
        shortcut = conv(x, channels, out, 1, stride, name=f"b{i}.down") if (stride, out) != (1, channels) else x
        nodes.append(helper.make_node(residual, [h, shortcut], [f"b{i}.sum"]))
        x, channels = relu(f"b{i}.sum"), out
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    graph = helper.make_graph(
        nodes, "bottlenecks", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, 12, 12])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [batch, channels, 1, 1])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bottleneck_network_in_nhwc_matches_onnxruntime_at_every_thread_count():
    model = _bottleneck_net()
    graph = str(compile_model(model, compile_to="graph").module)
    assert graph.count('dlc.layout = "NHWC"') == 9  # each block's reduce and expand, the shortcut
    # Each 3x3 conv writes its expand conv's layout, the stem the NHWC the first block reads.
    assert graph.count('dlc.out_layout = "NHWC"') == 5
    assert graph.count('"onnx.Transpose"') == 1  # the pooled [2, 1, 1, 64] back to NCHW
    assert graph.count('"onnx.ReduceMean"') == 1  # the GlobalAveragePool, over the NHWC map
    feeds = random_feeds(model)
    compiled = dlc.compile(model, threads=1)
    serial = compiled.run(feeds)["pooled"]
    for threads in (2, 3):
        np.testing.assert_array_equal(_with_threads(compiled, threads).run(feeds)["pooled"], serial,
                                      err_msg=f"{threads} threads")
    # float32 sums of at most 288 products in another order than onnxruntime's
    np.testing.assert_allclose(serial, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_the_nhwc_build_computes_what_the_nchw_build_does():
    """The layouts move no value: the GEMMs sum each output over the weight's (c, i, j) order
    either way, so the two builds agree to float32 rounding of a different split of k."""
    model = _bottleneck_net(batch=1, blocks=3)
    feeds = random_feeds(model, seed=1)
    options = CompileOptions(threads=1)
    nhwc = compile_model(model, options=options)
    nchw = compile_model(model, options=options,
                         instrument=PassInstrumentation(disabled=frozenset({"pointwise-convs-nhwc"})))
    assert "NHWC" in str(compile_model(model, compile_to="graph").module)
    np.testing.assert_allclose(nchw.executable.run(feeds)["pooled"], nhwc.executable.run(feeds)["pooled"],
                               rtol=1e-5, atol=1e-6)


def test_a_residual_written_as_sum_joins_the_expand_convs_store():
    """ResNet-50 as exported from Caffe2 writes its residuals as Sum: the expand conv's GEMM adds
    it and applies the Relu as it stores, as it does an Add (no loop over the output left)."""
    model = _bottleneck_net(batch=1, blocks=2, residual="Sum")
    linalg = str(compile_model(model, compile_to="linalg").module)
    assert linalg.count("residual = 1") == 2
    feeds = random_feeds(model)
    got = dlc.compile(model, threads=2).run(feeds)["pooled"]
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_a_padded_1x1_conv_pads_its_nhwc_input():
    """A 1x1 conv with pads (legal, if rare) reads a padded NHWC copy of its input."""
    from onnx import numpy_helper

    model = _bottleneck_net(batch=2, blocks=4)
    pool = model.graph.node[-1]
    weight = np.random.default_rng(3).standard_normal((64, 64, 1, 1)).astype(np.float32) * 0.1
    model.graph.initializer.append(numpy_helper.from_array(weight, "padded.w"))
    model.graph.node.insert(len(model.graph.node) - 1, helper.make_node(
        "Conv", [pool.input[0], "padded.w"], ["padded"], pads=[1, 1, 1, 1], name="padded"))
    pool.input[0] = "padded"
    assert 'onnx_node_name = "padded", dlc.layout = "NHWC"' in str(compile_model(model, compile_to="graph").module)
    feeds = random_feeds(model)
    np.testing.assert_allclose(dlc.compile(model, threads=2).run(feeds)["pooled"], run_onnxruntime(model, feeds)[0],
                               rtol=1e-4, atol=1e-5)
