"""Loops split over threads (mark-parallel-loops + the emitter's outlining): several threads give
bit-identical results to one thread and match onnxruntime; the outlined functions exist."""

from __future__ import annotations

import ctypes
import re

import numpy as np
import onnx
import pytest
from conftest import random_feeds, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper
from test_llvm_emitter import aligned

import dlc
from dialects.gemm_ukernel import THREAD_SECONDS
from dlc.codegen.llvm_emitter import emit_llvm, entry_symbol
from dlc.codegen.native import compile_object
from dlc.codegen.parallel_loops import nest_iterations, threads_for_work
from dlc.codegen.thread_pool_ir import pool_object
from dlc.driver import CompileOptions, compile_model, parse_mlir
from dlc.runtime import NativeExecutable, RuntimeContext
from dlc.runtime.mcjit import NativeModule
from dlc.runtime.thread_pool import pool
from passes.lowering.mark_parallel_loops import ITERATION_SECONDS

OPSET = 21
X = "x"


def _graph_model(nodes, x_shape, constants=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(X, TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, n) for n, v in constants])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _conv_relu():
    w = np.random.default_rng(1).uniform(-1, 1, (16, 8, 3, 3)).astype(np.float32)
    return _graph_model([helper.make_node("Conv", [X, "w"], ["c"], pads=[1, 1, 1, 1]),
                         helper.make_node("Relu", ["c"], ["y"])], [1, 8, 64, 64], [("w", w)])


def _conv_small_image():
    """Few pixels, many channels (a late ResNet layer): threads split the GEMM's rows too."""
    w = np.random.default_rng(3).uniform(-1, 1, (100, 64, 3, 3)).astype(np.float32)
    return _graph_model([helper.make_node("Conv", [X, "w"], ["y"], pads=[1, 1, 1, 1])], [1, 64, 7, 7],
                        [("w", w)])


def _max_pool():
    return _graph_model([helper.make_node("MaxPool", [X], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                          pads=[1, 1, 1, 1])], [1, 16, 64, 64])


def _softmax():
    return _graph_model([helper.make_node("Softmax", [X], ["y"], axis=-1)], [64, 1000])


def _transpose():
    return _graph_model([helper.make_node("Transpose", [X], ["y"], perm=[0, 2, 3, 1])], [1, 32, 40, 40])


def _elementwise_chain():
    b = np.random.default_rng(2).uniform(-1, 1, (1, 24, 1, 1)).astype(np.float32)
    return _graph_model([helper.make_node("Add", [X, "b"], ["s"]), helper.make_node("Sigmoid", ["s"], ["g"]),
                         helper.make_node("Mul", ["g", X], ["y"])], [2, 24, 32, 32], [("b", b)])


def _depthwise_int8():
    """A depthwise QLinearConv: its loop nest writes four output pixels of a row per iteration,
    four views of one buffer (mark-parallel-loops splits it when those stay disjoint)."""
    rng = np.random.default_rng(3)
    constants = [("xs", np.float32(0.02)), ("xz", np.uint8(128)), ("ws", np.float32(0.01)), ("wz", np.int8(0)),
                 ("w", rng.integers(-100, 100, (64, 1, 3, 3)).astype(np.int8)), ("ys", np.float32(0.05)),
                 ("yz", np.uint8(100))]
    node = helper.make_node("QLinearConv", [X, "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], group=64,
                            pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(X, TensorProto.UINT8, [1, 64, 56, 56])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 64, 56, 56])],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in constants])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)


MODELS = {"depthwise_int8": _depthwise_int8, "conv_pad_relu": _conv_relu, "conv_small_image": _conv_small_image,
          "max_pool": _max_pool, "softmax": _softmax, "transpose": _transpose, "elementwise_chain": _elementwise_chain}


def _with_threads(model: dlc.CompiledModel, threads: int) -> NativeExecutable:
    """The same object code, run on `threads` threads (the count is read when it is loaded)."""
    executable = model._executable
    return NativeExecutable({**executable.manifest, "threads": threads}, executable.objects,
                            executable._weights, executable.pool_object)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_threads_are_bit_identical_and_match_onnxruntime(name):
    model = MODELS[name]()
    feeds = random_feeds(model)
    compiled = dlc.compile(model, threads=1)
    serial = compiled.run(feeds)["y"]
    for threads in (2, 3):  # 3: chunks of unequal length
        parallel = _with_threads(compiled, threads)
        assert parallel.num_threads == threads
        np.testing.assert_array_equal(parallel.run(feeds)["y"], serial, err_msg=f"{threads} threads")
    np.testing.assert_allclose(serial, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["conv_pad_relu", "softmax"])
def test_llvm_ir_outlines_parallel_loops(name):
    llvm_ir = compile_model(MODELS[name](), compile_to="llvm").text
    # The thread-pool worker and the function running a range of iterations.
    assert re.search(r'define internal void @"\w+_par0"\(ptr ', llvm_ir)
    assert re.search(r'define internal void @"\w+_par0_body"\(', llvm_ir)


def test_loops_phase_marks_only_worthwhile_kernel_loops():
    module = compile_model(_conv_relu(), compile_to="loops").module
    marked = [op for op in module.walk() if "dlc.parallel" in op.attributes]
    # The padded copy: its zero fill and its interior copy write one buffer channel by channel,
    # so they share one loop over the channels (fuse-parallel-siblings). im2col runs inside the
    # GEMM's work items and the Relu in its final store.
    assert len(marked) == 1
    assert all(op.name == "scf.for" for op in marked)


# A kernel whose marked loop has run-time bounds, a step of 3, and captures a float, an index
# and two buffers: the outlined function must carry every kind of value across.
_KERNEL = """
builtin.module {
  func.func private @scale(%a: memref<200xf32>, %out: memref<200xf32>, %s: f32, %lb: index, %ub: index) {
    %c3 = arith.constant 3 : index
    scf.for %i = %lb to %ub step %c3 {
      %x = memref.load %a[%i] : memref<200xf32>
      %n = arith.index_cast %lb : index to i64
      %f = arith.sitofp %n : i64 to f32
      %y = arith.mulf %x, %s : f32
      %z = arith.addf %y, %f : f32
      memref.store %z, %out[%i] : memref<200xf32>
    } {dlc.parallel}
    func.return
  }
  func.func @main(%a: memref<200xf32>, %out: memref<200xf32>) {
    %s = arith.constant 2.5 : f32
    %lb = arith.constant 7 : index
    %ub = arith.constant 190 : index
    func.call @scale(%a, %out, %s, %lb, %ub) : (memref<200xf32>, memref<200xf32>, f32, index, index) -> ()
    func.return
  }
}
"""


@pytest.mark.parametrize("threads", [1, 2, 5, 64])
def test_outlined_loop_with_runtime_bounds_and_captured_scalars(threads):
    llvm_ir = emit_llvm(parse_mlir(_KERNEL), {}, fastmath=False)  # no FMA: numpy rounds twice
    assert '@"scale_par0"(ptr' in llvm_ir
    native = NativeModule(compile_object(llvm_ir))
    entry = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
        native.address(entry_symbol()))
    a = aligned(np.random.default_rng(0).standard_normal(200, dtype=np.float32))
    out = aligned(np.full(200, -1.0, np.float32))
    buffers = (ctypes.c_void_p * 2)(a.ctypes.data, out.ctypes.data)
    context = RuntimeContext(pool(pool_object()).parallel, pool(pool_object()).ensure_threads(threads), None)
    entry(ctypes.addressof(buffers), None, ctypes.addressof(context))
    expected = np.full(200, -1.0, np.float32)
    expected[7:190:3] = a[7:190:3] * np.float32(2.5) + np.float32(7)
    np.testing.assert_array_equal(out, expected)


def test_thread_count_follows_the_work():
    """A loop takes the thread count its work pays for (issue 15: small kernels woke all 16
    threads): one more thread always saves less than THREAD_SECONDS past the optimum."""
    assert threads_for_work(0.0) == 1
    assert threads_for_work(THREAD_SECONDS) == 1  # one thread's cost of work: not worth a second thread
    counts = [threads_for_work(n * ITERATION_SECONDS) for n in (1 << 15, 1 << 17, 1 << 20)]
    assert counts == sorted(counts) and counts[0] >= 2 and counts[-1] >= 16
    for seconds in (3e-6, 40e-6, 300e-6):
        t = threads_for_work(seconds)
        cost = [seconds / n + THREAD_SECONDS * (n - 1) for n in (t - 1, t, t + 1)]
        assert cost[1] <= cost[2] and (t == 1 or cost[1] < cost[0])


_SMALL_STATIC = """
builtin.module {
  func.func private @double(%a: memref<1024xf32>, %out: memref<1024xf32>) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %n = arith.constant 1024 : index
    scf.for %i = %c0 to %n step %c1 {
      %x = memref.load %a[%i] : memref<1024xf32>
      %y = arith.addf %x, %x : f32
      memref.store %y, %out[%i] : memref<1024xf32>
    } {dlc.parallel}
    func.return
  }
  func.func @main(%a: memref<1024xf32>, %out: memref<1024xf32>) {
    func.call @double(%a, %out) : (memref<1024xf32>, memref<1024xf32>) -> ()
    func.return
  }
}
"""


def test_a_loop_worth_one_thread_runs_on_the_callers_thread():
    """1024 iterations (~0.3 us, a thread's cost): the outlined body is called directly, no pool worker exists."""
    module = parse_mlir(_SMALL_STATIC)
    (loop,) = [op for op in module.walk() if "dlc.parallel" in op.attributes]
    assert nest_iterations(loop) == 1024
    llvm_ir = emit_llvm(module, {}, fastmath=False)
    assert '@"double_par0_body"(' in llvm_ir and '@"double_par0"(ptr' not in llvm_ir
    native = NativeModule(compile_object(llvm_ir))
    entry = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
        native.address(entry_symbol()))
    a = aligned(np.random.default_rng(0).standard_normal(1024, dtype=np.float32))
    out = aligned(np.zeros(1024, np.float32))
    buffers = (ctypes.c_void_p * 2)(a.ctypes.data, out.ctypes.data)
    context = RuntimeContext(pool(pool_object()).parallel, pool(pool_object()).ensure_threads(4), None)
    entry(ctypes.addressof(buffers), None, ctypes.addressof(context))
    np.testing.assert_array_equal(out, a + a)


def test_nest_iterations_sum_sibling_nests_and_stop_at_dynamic_bounds():
    module = compile_model(_conv_relu(), compile_to="loops").module
    (loop,) = [op for op in module.walk() if "dlc.parallel" in op.attributes]
    # The padded copy of 8 channels: a 66x66 zero fill and a 64x64 interior copy per channel.
    assert nest_iterations(loop) == 8 * (66 * 66 + 64 * 64)
    (dynamic,) = [op for op in parse_mlir(_KERNEL).walk() if "dlc.parallel" in op.attributes]
    assert nest_iterations(dynamic) is None  # run-time bounds: every thread may be used


# A branch counts its larger side; a while loop's trips are unknown, so its nest may use every thread.
_BRANCHES = """
builtin.module {
  func.func private @branchy(%a: memref<64x100xf32>, %flag: i1) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c64 = arith.constant 64 : index
    %c100 = arith.constant 100 : index
    %c10 = arith.constant 10 : index
    scf.for %i = %c0 to %c64 step %c1 {
      scf.if %flag {
        scf.for %j = %c0 to %c100 step %c1 {
          %x = memref.load %a[%i, %j] : memref<64x100xf32>
          memref.store %x, %a[%i, %j] : memref<64x100xf32>
        }
      } else {
        scf.for %j = %c0 to %c10 step %c1 {
          %x = memref.load %a[%i, %j] : memref<64x100xf32>
          memref.store %x, %a[%i, %j] : memref<64x100xf32>
        }
      }
    } {dlc.parallel}
    scf.for %i = %c0 to %c64 step %c1 {
      %r = scf.while (%k = %c0) : (index) -> index {
        %go = arith.cmpi slt, %k, %c10 : index
        scf.condition(%go) %k : index
      } do {
      ^bb0(%k2 : index):
        %n = arith.addi %k2, %c1 : index
        scf.yield %n : index
      }
    } {dlc.parallel}
    func.return
  }
}
"""


def test_nest_iterations_take_the_larger_branch_and_give_up_on_while_loops_and_calls():
    loops = [op for op in parse_mlir(_BRANCHES).walk() if "dlc.parallel" in op.attributes]
    assert [nest_iterations(loop) for loop in loops] == [64 * 100, None]
    calling = parse_mlir("""
builtin.module {
  func.func private @work(%a: memref<64xf32>) {
    func.return
  }
  func.func private @k(%a: memref<64xf32>) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c64 = arith.constant 64 : index
    scf.for %i = %c0 to %c64 step %c1 {
      func.call @work(%a) : (memref<64xf32>) -> ()
    } {dlc.parallel}
    func.return
  }
}
""")
    (loop,) = [op for op in calling.walk() if "dlc.parallel" in op.attributes]
    assert nest_iterations(loop) is None  # a call's work is not counted: every thread may be used


def test_loop_writing_four_views_of_one_buffer_is_split():
    """The int8 depthwise conv's nest (four output pixels of a row, four strided views of y)
    is marked: on the 16-core machine it ran on one thread, 0.34 ms of a 0.92 ms model."""
    module = compile_model(_depthwise_int8(), compile_to="loops").module
    marked = [op for op in module.walk() if "dlc.parallel" in op.attributes]
    stores = [{str(store.memref.type) for store in loop.walk() if store.name == "memref.store"} for loop in marked]
    assert any(len(types) == 4 for types in stores), stores


def test_a_classifier_gemm_of_few_macs_and_megabytes_of_weights_splits_over_threads():
    """ResNet-18's 1x512x1000 classifier (0.5 M MACs, 2 MB of weights) calls the pool (its
    work items' `gemm_data`); results are bit-identical across thread counts."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((1000, 512)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(1000).astype(np.float32), "b")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "fc",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert "gemm_data" in compile_model(model, compile_to="llvm").text
    feeds = random_feeds(model)
    compiled = dlc.compile(model, threads=1)
    serial = compiled.run(feeds)["y"]
    np.testing.assert_array_equal(_with_threads(compiled, 4).run(feeds)["y"], serial)
    np.testing.assert_allclose(serial, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-4)


def test_a_body_of_many_arithmetic_ops_counts_as_that_much_work():
    """An innermost body of 16 arithmetic ops counts as 2 iterations (`body_weight`), in the
    thread count the emitter gives a loop and in whether a generic is split at all: an NHWC
    depthwise 5x5 conv of 96 channels over 14x14 (its interior box, 4,800 iterations of 2
    outputs x 25 taps each) runs on threads, where 4,800 iterations of an elementwise op would
    stay on the caller's."""
    from passes.lowering.mark_parallel_loops import MIN_ITERATIONS, body_weight

    chain = "\n".join(f"          %y{i + 1} = arith.mulf %y{i}, %y{i} : f32" for i in range(16))
    text = f"""
builtin.module {{
  func.func private @heavy(%a: memref<64x16xf32>) {{
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c16 = arith.constant 16 : index
    %c64 = arith.constant 64 : index
    scf.for %i = %c0 to %c64 step %c1 {{
      scf.for %j = %c0 to %c16 step %c1 {{
          %y0 = memref.load %a[%i, %j] : memref<64x16xf32>
{chain}
          memref.store %y16, %a[%i, %j] : memref<64x16xf32>
      }}
    }} {{dlc.parallel}}
    func.return
  }}
}}
"""
    (loop,) = [op for op in parse_mlir(text).walk() if "dlc.parallel" in op.attributes]
    inner = next(op for op in loop.body.block.ops if op.name == "scf.for")
    assert body_weight(inner.body.block) == 2
    assert nest_iterations(loop) == 64 * 16 * 2

    from test_pointwise_convs_nhwc import _mobile_block

    model = _mobile_block(32, 14, 5, 1, [2, 2, 2, 2])
    loops = compile_model(model, options=CompileOptions(threads=2), compile_to="loops").module
    kernel = next(f for f in loops.walk() if f.name == "func.func" and "depthwise" in str(f.attributes))
    assert 10 * 5 * 96 < MIN_ITERATIONS  # the interior's loop trips alone would not be split
    assert any("dlc.parallel" in op.attributes for op in kernel.walk())
