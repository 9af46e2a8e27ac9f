"""Tiled Transposes (movement.py `_tiled_transpose`): a permutation that swaps two runs of
axes ([lead, a, b] -> [lead, b, a], a a multiple of 16) whose plain loop would miss L1 is
looped in tiles of 16 input rows;
the values must be exactly numpy's transpose, for float32 and uint8, with a batch of leading
axes kept, and on 1 and 2 threads. The shapes the tiling declines (a not a multiple of 16,
other permutations) keep the plain loop and are covered by test_rules_movement.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from passes.lowering.rules.movement import _column_reads_thrash, _swapped_blocks

# (shape, perm, element type), each a shape whose plain loop misses L1 (`_column_reads_thrash`):
# attention's K^T, uint8 rows 1 KiB apart, a uint8 NHWC -> NCHW map of 64-byte rows, a rotation
# of three axes with nothing kept (lead 1), a kept batch of 3 x 2 with rows 2 KiB apart.
CASES = [
    ([1, 128, 256], [0, 2, 1], TensorProto.FLOAT),
    ([2, 32, 1024], [0, 2, 1], TensorProto.UINT8),
    ([1, 56, 56, 64], [0, 3, 1, 2], TensorProto.UINT8),
    ([3, 32, 256], [2, 0, 1], TensorProto.FLOAT),
    ([3, 2, 32, 512], [0, 1, 3, 2], TensorProto.FLOAT),
]


def _model(shape, perm, dtype) -> onnx.ModelProto:
    out_shape = [shape[p] for p in perm]
    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=perm)], "transpose",
                              [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("y", dtype, out_shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_only_plain_loops_that_miss_l1_are_tiled():
    assert _column_reads_thrash(128, 1024, 48 * 1024)  # rows 1 KiB apart: 4 sets of 64
    assert _column_reads_thrash(3136, 64, 48 * 1024)  # 3136 lines: more than L1 holds
    assert not _column_reads_thrash(64, 3136, 48 * 1024)  # NCHW -> NHWC of 64 channels
    assert not _column_reads_thrash(64, 12544, 48 * 1024)


def test_swapped_blocks_finds_the_two_runs():
    assert _swapped_blocks([1, 24, 56, 56], [0, 2, 3, 1]) == (1, 24, 3136)
    assert _swapped_blocks([1, 56, 56, 24], [0, 3, 1, 2]) == (1, 3136, 24)
    assert _swapped_blocks([3, 48, 20], [2, 0, 1]) == (1, 144, 20)
    assert _swapped_blocks([2, 3, 4], [0, 1, 2]) is None  # the identity
    assert _swapped_blocks([2, 3, 4, 5], [0, 3, 2, 1]) is None  # three runs, not two


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_tiled_transpose_is_exact(case, threads):
    import dlc

    shape, perm, dtype = CASES[case]
    _, a, b = _swapped_blocks(shape, perm)
    row_bytes = b * (1 if dtype == TensorProto.UINT8 else 4)
    assert a % 16 == 0 and _column_reads_thrash(a, row_bytes, 48 * 1024)  # the tiled loop, not the plain one
    rng = np.random.default_rng(case)
    x = (rng.integers(0, 256, shape).astype(np.uint8) if dtype == TensorProto.UINT8
         else rng.standard_normal(shape).astype(np.float32))
    y = dlc.compile(_model(shape, perm, dtype), threads=threads).run({"x": x})["y"]
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, x.transpose(perm))
