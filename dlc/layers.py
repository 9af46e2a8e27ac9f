"""`dlc.dialects` and `dlc.passes`: the spelling that works in a source tree and in a wheel.

The source tree keeps the layers at the top level (`dialects/`, `passes/`); a wheel ships them
inside the package as `dlc.dialects` and `dlc.passes` (setup.py, issue 17). Code outside dlc -
a pass plugin, a user's script - imports them as `dlc.dialects...`/`dlc.passes...`: in a wheel
those are the real modules; in a source tree this finder answers them with the very module
objects of `dialects...`/`passes...` (one copy, so an op class is the same class under both
names), the way `os.path` is `posixpath`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

LAYERS = ("dialects", "passes")


class _LayerAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `dlc.<layer>[.x]` as the already importable `<layer>[.x]`."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, rest = fullname.partition(".")
        layer = rest.split(".")[0]
        if head != "dlc" or layer not in LAYERS:
            return None
        real = importlib.util.find_spec(rest)
        if real is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=real.submodule_search_locations is not None)

    def __init__(self):
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def create_module(self, spec):
        module = importlib.import_module(spec.name.partition(".")[2])
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module):
        # The import system set __spec__ to the alias's in between: the module keeps its own.
        module.__spec__ = self._specs.pop(module.__name__, module.__spec__)


def install() -> None:
    """In a source tree only (the wheel has the real `dlc/dialects`), and once."""
    package = Path(__file__).resolve().parent
    if (package / "dialects").is_dir() or any(isinstance(f, _LayerAlias) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _LayerAlias())  # before the path finder, which would load a second copy
