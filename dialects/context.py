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


def _upstream(module: str, name: str) -> Callable[[], Dialect]:
    def load() -> Dialect:
        import importlib

        return getattr(importlib.import_module(f"xdsl.dialects.{module}"), name)
    return load


def _own(module: str, name: str) -> Callable[[], Dialect]:
    def load() -> Dialect:
        import importlib

        return getattr(importlib.import_module(f"dialects.{module}"), name)
    return load


def _arith() -> Dialect:
    """xDSL's arith with `arith.remf` (dialects/arith_remf.py), which xDSL 0.75's lacks."""
    from xdsl.dialects.arith import Arith

    from dialects.arith_remf import RemFOp

    return Dialect("arith", [*Arith.operations, RemFOp], list(Arith.attributes))


# Dialect name -> what imports it.
DIALECTS: dict[str, Callable[[], Dialect]] = {
    "func": _upstream("func", "Func"), "arith": _arith, "math": _upstream("math", "Math"),
    "memref": _upstream("memref", "MemRef"), "scf": _upstream("scf", "Scf"), "affine": _upstream("affine", "Affine"),
    "linalg": _upstream("linalg", "Linalg"), "onnx": _own("onnx", "ONNX"), "kernel": _own("kernel", "KERNEL"),
    "npu": _own("npu", "NPU"), "loop": _own("loop", "LOOP"),
}


def make_context() -> Context:
    """A context with every dialect dlc's phases use: builtin loaded, the others on first use."""
    from xdsl.dialects.builtin import Builtin

    ctx = Context()
    ctx.load_dialect(Builtin)
    for name, load in DIALECTS.items():
        ctx.register_dialect(name, load)
    return ctx
