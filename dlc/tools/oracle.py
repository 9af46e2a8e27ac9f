"""The oracle the tools share: inputs to run a model on (and, with onnxruntime, what it
should answer). verify, fuzz, compare and bench draw from here so they cannot drift apart."""

from __future__ import annotations

import numpy as np


def random_inputs(specs, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs of the declared shapes (floats in [-1, 1), small ints, bools)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.uniform(-1, 1, spec.shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, spec.shape).astype(bool)
        else:
            feeds[spec.name] = rng.integers(0, 4, spec.shape).astype(dtype)
    return feeds
