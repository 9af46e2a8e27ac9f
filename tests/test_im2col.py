"""im2col into the micro-kernel's panels (dlc/codegen/im2col.py): every column of a block
lands where b_layout "window" reads it, the last panel's lanes past the block are zeros (not
stale scratch), and nothing outside the block is written."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from llvmlite import ir

from dlc.codegen.im2col import Im2colSpec, emit_im2col
from dlc.codegen.native import compile_object
from dlc.runtime.mcjit import NativeModule


def _reference(x: np.ndarray, s: Im2colSpec) -> np.ndarray:
    """col[(c, kh, kw), (oh, ow)] of the padded input x [channels, hp, wp]."""
    oh_count = (s.hp - (s.kh - 1) * s.dh - 1) // s.sh + 1
    rows = []
    for c in range(s.channels):
        for kh in range(s.kh):
            for kw in range(s.kw):
                window = x[c, kh * s.dh:, kw * s.dw:][::s.sh, ::s.sw][:oh_count, :s.ow]
                rows.append(window.reshape(-1))
    return np.stack(rows)


GEOMETRIES = [
    pytest.param(Im2colSpec(3, 3, 3, 1, 1, 1, 1, 9, 10, 8), 16, id="3x3_s1"),
    pytest.param(Im2colSpec(2, 3, 3, 2, 2, 1, 1, 11, 11, 5), 32, id="3x3_s2"),
    pytest.param(Im2colSpec(2, 2, 3, 1, 2, 2, 1, 10, 12, 5), 48, id="dilated_strided"),
    pytest.param(Im2colSpec(3, 3, 3, 1, 1, 1, 1, 40, 40, 38), 24, id="avx2_panels"),
    pytest.param(Im2colSpec(2, 3, 5, 1, 4, 1, 1, 12, 40, 9), 16, id="stride4"),
    pytest.param(Im2colSpec(2, 3, 3, 1, 5, 1, 1, 12, 33, 7), 16, id="stride5_scalar"),
]


@pytest.mark.parametrize("spec,nr", GEOMETRIES)
def test_columns_land_in_panels_and_the_tail_is_zero(spec, nr):
    module = ir.Module("im2col")
    fn = emit_im2col(module, "im2col", spec, nr)
    fn.linkage = ""
    native = NativeModule(compile_object(str(module)))
    call = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(
        native.address("im2col"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((spec.channels, spec.hp, spec.wp)).astype(np.float32)
    expected = _reference(x, spec)
    pixels = expected.shape[1]
    for j0, j1 in [(0, pixels), (nr, pixels), (0, min(pixels, nr + 5)), (nr, min(pixels, 2 * nr - 3))]:
        panels = -(-(j1 - j0) // nr)
        guard = 64
        col = np.full(panels * spec.depth * nr + guard, np.nan, np.float32)
        call(x.ctypes.data, col.ctypes.data, j0, j1)
        block = col[:-guard].reshape(panels, spec.depth, nr)
        got = block.transpose(1, 0, 2).reshape(spec.depth, panels * nr)
        np.testing.assert_array_equal(got[:, : j1 - j0], expected[:, j0:j1])
        assert not got[:, j1 - j0:].any(), "lanes past the block must be zeros"
        assert np.isnan(col[-guard:]).all(), "wrote past the block"
