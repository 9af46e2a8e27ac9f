"""The weights blob's buffer (dlc/runtime/artifact.py `huge_page_buffer`): zeroed, aligned, and
from HUGE_PAGE_MIN_BYTES on 2 MiB-aligned anonymous memory advised for transparent huge pages
(benchmarks/README.md "Native loops": an LSTM step streams its 1 MiB recurrent weight)."""

from __future__ import annotations

import json

import numpy as np

from dlc.runtime.artifact import ALIGNMENT, HUGE_PAGE_MIN_BYTES, huge_page_buffer


def test_small_and_large_huge_page_buffers_are_zeroed_aligned_and_writable():
    for nbytes in (64, HUGE_PAGE_MIN_BYTES - 64, HUGE_PAGE_MIN_BYTES, 5 * HUGE_PAGE_MIN_BYTES + 64):
        buffer = huge_page_buffer(nbytes)
        assert buffer.dtype == np.uint8 and buffer.shape == (nbytes,) and buffer.flags.writeable
        assert buffer.ctypes.data % ALIGNMENT == 0 and not buffer.any()
        if nbytes >= HUGE_PAGE_MIN_BYTES:
            assert buffer.ctypes.data % (2 << 20) == 0
        buffer[-1] = 7  # its last byte is its own
        assert buffer[-1] == 7


def test_a_compiled_and_a_loaded_models_weights_sit_on_2mib_boundaries(tmp_path):
    """Both allocation sites: the compile's blob (targets/cpu.py) and an artifact's read."""
    from onnx import TensorProto, helper, numpy_helper

    import dlc

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((512, 512)).astype(np.float32)  # 1 MiB
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 512])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = dlc.compile(model, threads=1)
    compiled.save(tmp_path / "mm")
    assert json.loads((tmp_path / "mm" / "manifest.json").read_text())["weights_size"] >= HUGE_PAGE_MIN_BYTES
    loaded = dlc.load(tmp_path / "mm")
    x = rng.standard_normal((2, 512)).astype(np.float32)
    for model_ in (compiled, loaded):
        assert model_._executable._weights.ctypes.data % (2 << 20) == 0
        np.testing.assert_allclose(model_.run({"x": x})["y"], x @ weight, rtol=1e-4, atol=1e-4)


def test_a_large_arena_sits_on_a_2mib_boundary_after_a_compile_in_this_process():
    """Arenas come from the same buffer as the weights: numpy's malloc would put one on the heap's
    recycled 4 KiB pages after a compile in the same process (dlc/runtime/artifact.py)."""
    from onnx import TensorProto, helper

    import dlc

    shape = [512, 1024]  # 2 MiB intermediates
    graph = helper.make_graph([helper.make_node("Exp", ["x"], ["t"]), helper.make_node("Sqrt", ["t"], ["u"]),
                               helper.make_node("Add", ["u", "x"], ["y"])], "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = dlc.compile(model, threads=1, fusion="none")
    executable = compiled._executable
    assert executable._arena_size >= HUGE_PAGE_MIN_BYTES
    arena, address = executable._free_arenas[0]
    assert address == arena.ctypes.data and address % (2 << 20) == 0 and arena.size == executable._arena_size
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    np.testing.assert_allclose(compiled.run({"x": x})["y"], np.sqrt(np.exp(x)) + x, rtol=1e-5)
