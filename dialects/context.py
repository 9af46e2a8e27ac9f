"""An xDSL context that knows every dialect dlc's phases use (to parse any phase's text).

As mlir-opt registers every dialect of the tree: dlc's own (onnx, kernel, npu, loop) and the
upstream ones the lowering reaches (func, arith, math, memref, scf, affine, linalg). Each is
registered by name and imported when text first names one of its ops or attributes (xDSL's
lazy `register_dialect`, as MLIR's DialectRegistry loads on demand): defining a dialect's
classes is most of `dlc opt`'s start-up, and one phase's text names a few of them.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.context import Context
from xdsl.ir import Dialect


def _lazy(module: str, name: str) -> Callable[[], Dialect]:
    """What imports the dialect `name` of `module` when the context first needs it."""
    def load() -> Dialect:
        import importlib

        return getattr(importlib.import_module(module), name)
    return load


def _arith() -> Dialect:
    """xDSL's arith with `arith.remf` (dialects/arith_remf.py), which xDSL 0.75's lacks."""
    from xdsl.dialects.arith import Arith

    from dialects.arith_remf import RemFOp

    return Dialect("arith", [*Arith.operations, RemFOp], list(Arith.attributes))


# Dialect name -> what imports it.
DIALECTS: dict[str, Callable[[], Dialect]] = {
    "func": _lazy("xdsl.dialects.func", "Func"), "arith": _arith, "math": _lazy("xdsl.dialects.math", "Math"),
    "memref": _lazy("xdsl.dialects.memref", "MemRef"), "scf": _lazy("xdsl.dialects.scf", "Scf"),
    "affine": _lazy("xdsl.dialects.affine", "Affine"), "linalg": _lazy("xdsl.dialects.linalg", "Linalg"),
    "onnx": _lazy("dialects.onnx", "ONNX"), "kernel": _lazy("dialects.kernel", "KERNEL"),
    "npu": _lazy("dialects.npu", "NPU"), "loop": _lazy("dialects.loop", "LOOP"),
}


def make_context() -> Context:
    """A context with every dialect dlc's phases use: builtin loaded, the others on first use."""
    from xdsl.dialects.builtin import Builtin

    ctx = Context()
    ctx.load_dialect(Builtin)
    for name, load in DIALECTS.items():
        ctx.register_dialect(name, load)
    return ctx
