"""The pass framework: registry, pipeline text, and the checked pass runner.

Mirrors mlir-opt/xdsl-opt: every pass is an xDSL `ModulePass`; a pass file's stem
with `_` replaced by `-` is its registered name (`passes/graph/fold_constants.py`
is `fold-constants`). xDSL's own passes we expose keep their xDSL names.
Third-party packages add passes through the `dlc.passes` entry-point group;
`load_pass_plugin(path)` loads a single file.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from xdsl.passes import ModulePass

# xDSL passes exposed under their own names: name -> "module:Class".
_XDSL_PASSES = {
    "canonicalize": "xdsl.transforms.canonicalize:CanonicalizePass",
    "cse": "xdsl.transforms.common_subexpression_elimination:CommonSubexpressionElimination",
    "dce": "xdsl.transforms.dead_code_elimination:DeadCodeElimination",
    "convert-linalg-to-loops": "xdsl.transforms.convert_linalg_to_loops:ConvertLinalgToLoopsPass",
    "lower-affine": "xdsl.transforms.lower_affine:LowerAffinePass",
    "loop-invariant-code-motion": "xdsl.transforms.loop_invariant_code_motion:LoopInvariantCodeMotionPass",
}

_REGISTRY: dict[str, type[ModulePass]] = {}


def _passes_in_module(module) -> list[type[ModulePass]]:
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, ModulePass) and cls.__module__ == module.__name__
            and not inspect.isabstract(cls)]


def register(cls: type[ModulePass]) -> type[ModulePass]:
    """Register a pass class under `cls.name` (usable as a decorator)."""
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    package_dir = Path(__file__).parent
    for info in pkgutil.walk_packages([str(package_dir)], prefix=f"{__name__}."):  # dlc.passes in a wheel
        if info.ispkg:
            continue
        module = importlib.import_module(info.name)
        for cls in _passes_in_module(module):
            register(cls)
    for name, target in _XDSL_PASSES.items():
        module_name, class_name = target.split(":")
        _REGISTRY[name] = getattr(importlib.import_module(module_name), class_name)
    for entry in entry_points(group="dlc.passes"):
        register(entry.load())


_DISCOVERED: list[bool] = []  # whether _discover ran (a lookup by name may register a few before)


def all_passes() -> dict[str, type[ModulePass]]:
    """Every registered pass, by name."""
    if not _DISCOVERED:
        _discover()
        _DISCOVERED.append(True)
    return dict(sorted(_REGISTRY.items()))


def find_pass(name: str) -> type[ModulePass] | None:
    """The pass registered as `name`, or None. Where the name says its file (`fold-constants`:
    passes/<group>/fold_constants.py) or it is one of xDSL's, only that module is imported:
    `dlc opt -p one-pass` need not import every pass and the dialects they use (a third of its
    start-up). Any other name (plugins, entry points) looks through every pass."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _XDSL_PASSES:
        module_name, class_name = _XDSL_PASSES[name].split(":")
        _REGISTRY[name] = getattr(importlib.import_module(module_name), class_name)
        return _REGISTRY[name]
    package_dir = Path(__file__).parent
    for path in package_dir.glob(f"*/{name.replace('-', '_')}.py"):
        module = importlib.import_module(f"{__name__}.{path.parent.name}.{path.stem}")
        for cls in _passes_in_module(module):
            register(cls)
        if name in _REGISTRY:
            return _REGISTRY[name]
    return all_passes().get(name)


def load_pass_plugin(path: str | Path) -> list[str]:
    """Import a Python file and register the ModulePass classes it defines."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"dlc_plugin_{path.stem}", path)
    if spec is None or spec.loader is None:
        from dialects.diagnostics import CompileError
        raise CompileError(f"cannot load pass plugin {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    all_passes()
    found = _passes_in_module(module)
    for cls in found:
        register(cls)
    return [cls.name for cls in found]


def pass_summary(cls: type[ModulePass]) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.splitlines()[0] if doc else ""


PassFactory = Callable[[], ModulePass]
