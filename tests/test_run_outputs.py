"""`run(feeds, outputs=...)`: the caller's buffers written in place (as onnxruntime's IO binding),
on the native code's path and, copied, on others; each buffer checked before anything runs, with
the checked path's kind of message for a wrong name, dtype, shape, layout or an overlap."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import dlc
from dlc.errors import InputError


def _model():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"]),
             helper.make_node("Sigmoid", ["m"], ["s"])]
    graph = helper.make_graph(nodes, "two_outputs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16]),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, [4, 16])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.fixture(scope="module", params=["cpu", "reference"])
def model(request):
    return dlc.compile(_model(), target=request.param, threads=1)


def _feeds(seed=1):
    return {"x": np.random.default_rng(seed).standard_normal((4, 8)).astype(np.float32)}


def test_outputs_are_written_into_the_callers_arrays(model):
    feeds = _feeds()
    want = model.run(feeds)
    y = np.full((4, 16), np.nan, np.float32)
    got = model.run(feeds, outputs={"y": y})
    assert got["y"] is y  # the very array, filled
    np.testing.assert_array_equal(y, want["y"])
    np.testing.assert_array_equal(got["s"], want["s"])  # the output left out: a new array
    s = np.empty((4, 16), np.float32)
    again = model.run(_feeds(2), outputs={"y": y, "s": s})  # reused for the next run
    assert again["y"] is y and again["s"] is s
    np.testing.assert_array_equal(s, model.run(_feeds(2))["s"])


@pytest.mark.parametrize("bad, message", [
    ({"z": np.empty((4, 16), np.float32)}, r"unknown output name\(s\) \['z'\]"),
    ({"y": np.empty((4, 16), np.float64)}, r"output 'y': expected a float32 array of shape \[4, 16\], got float64"),
    ({"y": np.empty((16, 4), np.float32)}, r"got float32 of shape \[16, 4\]"),
    ({"y": np.empty((4, 32), np.float32)[:, ::2]}, "C-contiguous"),
    ({"y": [[0.0] * 16] * 4}, "expected a numpy array to write into"),
])
def test_a_wrong_output_buffer_is_refused_before_anything_runs(model, bad, message):
    with pytest.raises(InputError, match=message):
        model.run(_feeds(), outputs=bad)


def test_read_only_or_overlapping_buffers_are_refused():
    model = dlc.compile(_model(), threads=1)
    frozen = np.empty((4, 16), np.float32)
    frozen.setflags(write=False)
    with pytest.raises(InputError, match="writeable"):
        model.run(_feeds(), outputs={"y": frozen})
    both = np.empty((2, 4, 16), np.float32)
    with pytest.raises(InputError, match="shares memory with an input or another output"):
        model.run(_feeds(), outputs={"y": both[0], "s": both[0]})
    block = np.empty(64 + 32, np.float32)
    feeds = {"x": block[:32].reshape(4, 8)}
    with pytest.raises(InputError, match="shares memory with an input"):
        model.run(feeds, outputs={"y": block[16:80].reshape(4, 16)})


def test_concurrent_callers_each_with_their_own_outputs():
    model = dlc.compile(_model(), threads=1)
    feeds = [_feeds(seed) for seed in range(8)]
    want = [model.run(f)["y"] for f in feeds]
    buffers = [np.empty((4, 16), np.float32) for _ in feeds]
    errors = []

    def caller(index):
        try:
            for _ in range(200):
                out = model.run(feeds[index], outputs={"y": buffers[index]})
                if out["y"] is not buffers[index] or not np.array_equal(buffers[index], want[index]):
                    errors.append(index)
                    return
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(feeds))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
