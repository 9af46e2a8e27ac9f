"""Weights kept out of the IR: numpy arrays named by symbol, saved beside the MLIR text.

DESIGN.md "Weights": a dense attribute of millions of floats makes every pass and
print crawl, so the IR refers to weights by symbol (`onnx.weight @name`,
`memref.global @name`) and the arrays live in a `WeightStore` attached to the
module. A phase written as `NAME.mlir` gets its weights in `NAME.weights.npz`.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp


class WeightStore(dict[str, np.ndarray]):
    """Symbol name -> numpy array. A dict, with npz I/O and fresh-name allocation."""

    def add(self, hint: str, array: np.ndarray) -> str:
        """Store `array` under a fresh name derived from `hint`; return the name."""
        name, n = hint or "w", 0
        while name in self:
            n += 1
            name = f"{hint}_{n}"
        self[name] = np.asarray(array, order="C")  # not ascontiguousarray: it makes a scalar (1,)
        return name

    def save(self, path: str | Path) -> None:
        np.savez(path, **self)

    @classmethod
    def load(cls, path: str | Path) -> WeightStore:
        from dialects.diagnostics import ModelLoadError

        try:
            with np.load(path, allow_pickle=False) as data:
                return cls({name: data[name] for name in data.files})
        except Exception as error:  # not a zip, pickled objects, a truncated member...
            raise ModelLoadError(f"{path}: cannot read the weights sidecar ({error})",
                                 "it is written beside NAME.mlir by `dlc compile --compile-to PHASE -o "
                                 "NAME.mlir`; write it again") from None


_STORES: weakref.WeakKeyDictionary[ModuleOp, WeightStore] = weakref.WeakKeyDictionary()


def attach_weights(module: ModuleOp, store: WeightStore) -> None:
    """Make `store` the weights of `module` (passes find them with `weights_of`)."""
    _STORES[module] = store


def weights_of(module: ModuleOp) -> WeightStore:
    """The weights of `module`; an empty store is attached if it has none yet."""
    store = _STORES.get(module)
    if store is None:
        store = _STORES[module] = WeightStore()
    return store


def sidecar_path(mlir_path: str | Path) -> Path:
    """`model.mlir` -> `model.weights.npz`."""
    path = Path(mlir_path)
    return path.with_name(path.name.removesuffix(".mlir") + ".weights.npz")
