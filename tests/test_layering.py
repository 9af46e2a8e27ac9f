"""The walls between dlc's rooms (docs/architecture.md, DESIGN.md "Walls between the parts").

Every import of every module under `dialects/`, `passes/` and `dlc/` is read with `ast`,
lazy imports inside functions included (only `if TYPE_CHECKING:` blocks are left out: they
never run). The rules:
- no import cycle between modules;
- `dialects/` (the bottom) imports neither `passes/` nor `dlc/`;
- `passes/` never imports `dlc/` (passes read the target from the IR, not from a target);
- the runtime (`dlc/runtime/`) imports no compiler: no xDSL, no onnx, nothing from
  `dialects/` but the error vocabulary (`dialects/diagnostics.py`, which imports nothing:
  errors are the one thing every layer shares, like LLVM's Support library), nothing from
  `passes/`, and of `dlc/` only itself and `dlc.errors`; llvmlite only in `mcjit.py`, the
  fallback loader;
- `import dlc` loads neither xDSL nor onnx (the compiler is imported by `dlc.compile`).
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dialects", "passes", "dlc")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name `module` imports (a module, or a module's attribute)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if _is_type_checking_block(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            submodules = [f"{source}.{alias.name}" for alias in node.names]
            names.update(submodules)
            # `from package import module` runs the package's __init__ as `import a.b` does;
            # like it, that counts as an import of the module alone.
            if not all(name in MODULES for name in submodules):
                names.add(source)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return names


def _project_module(name: str) -> str | None:
    """The project module that `name` refers to (itself or the module defining the attribute)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


# Read when a test first asks (not at import): each xdist worker collects this file, and parsing
# every module took ~1.5 s of each worker's collection.
@functools.cache
def _imports() -> dict[str, set[str]]:
    return {module: _imported_names(module, path) for module, path in MODULES.items()}


@functools.cache
def _edges() -> dict[str, set[str]]:
    return {module: {m for m in map(_project_module, names) if m and m != module}
            for module, names in _imports().items()}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_import_graph_is_read():
    # A guard against a silently empty graph: these edges exist today.
    assert "dialects.diagnostics" in _edges()["dlc.errors"]
    assert "passes" in _edges()["dlc.driver"]


def test_no_import_cycles():
    graph = nx.DiGraph([(a, b) for a, deps in _edges().items() for b in deps])
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, "import cycles (lazy imports count too):\n" + "\n".join(map(str, cycles))


@pytest.mark.parametrize("lower, forbidden", [("dialects", ("passes", "dlc")), ("passes", ("dlc",))])
def test_lower_layers_do_not_import_higher_ones(lower, forbidden):
    broken = sorted(f"{module} imports {dep}" for module, deps in _edges().items() if _in(module, lower)
                    for dep in deps if any(_in(dep, f) for f in forbidden))
    assert not broken, "\n".join(broken)


def test_the_error_vocabulary_imports_nothing_of_the_project():
    assert not _edges()["dialects.diagnostics"]
    assert (ROOT / "dialects" / "__init__.py").read_text().strip() == ""
    assert _edges()["dlc.errors"] == {"dialects.diagnostics"}


def test_the_runtime_needs_no_compiler():
    allowed_project = ("dlc.runtime", "dlc.errors", "dialects.diagnostics")
    broken = []
    for module, names in _imports().items():
        if not _in(module, "dlc.runtime"):
            continue
        for name in names:
            top = name.split(".")[0]
            if top in ("xdsl", "onnx", "onnxruntime", "networkx"):
                broken.append(f"{module} imports {name}")
            elif top == "llvmlite" and module != "dlc.runtime.mcjit":
                broken.append(f"{module} imports {name} (only the MCJIT fallback, mcjit.py, may)")
        for dep in _edges()[module]:
            if not any(_in(dep, allowed) for allowed in allowed_project):
                broken.append(f"{module} imports {dep}")
    assert not broken, "\n".join(sorted(broken))


def _modules_loaded_by(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    return {name.split(".")[0] for name in result.stdout.split()}


def test_import_dlc_is_light():
    loaded = _modules_loaded_by("import dlc")
    assert not loaded & {"xdsl", "onnx", "passes", "llvmlite"}, sorted(loaded & {"xdsl", "onnx", "passes"})


def test_loading_and_running_an_artifact_needs_no_compiler(tmp_path):
    import dlc

    model = dlc.compile(str(ROOT / "examples" / "models" / "mlp.onnx"), threads=2)
    model.save(tmp_path)
    loaded = _modules_loaded_by(
        "import numpy as np, dlc\n"
        f"m = dlc.load({str(tmp_path)!r})\n"
        "m.run({s.name: np.zeros(s.shape, s.dtype) for s in m.inputs})")
    assert not loaded & {"xdsl", "onnx", "passes"}, sorted(loaded & {"xdsl", "onnx", "passes"})
