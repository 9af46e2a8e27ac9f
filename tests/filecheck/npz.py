"""Write the weights sidecar of a golden test: `python npz.py OUT.weights.npz NAME=EXPR ...`.

EXPR is a numpy expression (`np` is numpy), e.g. `"w=np.ones((4, 2, 1, 1), np.float32)"`.
`dlc opt X.mlir` reads the weights of X.mlir from X.weights.npz beside it.
"""

import sys

import numpy as np

out, *pairs = sys.argv[1:]
arrays = dict(pair.split("=", 1) for pair in pairs)
np.savez(out, **{name: np.asarray(eval(expr, {"np": np})) for name, expr in arrays.items()})
