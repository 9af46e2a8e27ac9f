"""Compile-time packing of constant GEMM operands into the panel layout the micro-kernel reads."""

from __future__ import annotations

import numpy as np


def pack_b(b: np.ndarray, nr: int) -> np.ndarray:
    """B (K x N) as panels Bp[j // nr][kk][j % nr] (zero-padded to whole panels), the layout
    `b_layout="packed"` reads. The weight blob aligns every weight to 64 bytes, so each panel
    of nr=16k floats starts on a cache line."""
    k, n = b.shape
    panels = -(-n // nr)
    padded = np.zeros((k, panels * nr), np.float32)
    padded[:, :n] = b
    return np.ascontiguousarray(padded.reshape(k, panels, nr).transpose(1, 0, 2))


