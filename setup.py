"""A wheel ships `dialects/` and `passes/` as `dlc.dialects` and `dlc.passes` (issue 17).

The source tree keeps its three top-level layers (dialects <- passes <- dlc: the walls that
tests/test_layering.py keeps) and an editable install maps them as they are. A wheel must not
claim the generic top-level names `dialects` and `passes`, which any other distribution may
also install: its build moves both under `dlc/` and rewrites the imports that name them
(`from passes.x import y` -> `from dlc.passes.x import y`). Everything else is pyproject.toml.
"""

import re
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info

LAYERS = ("dialects", "passes")
FROM_LAYER = re.compile(r"^(\s*)from\s+(dialects|passes)(\.[\w.]+)?\s+import\b", re.M)
IMPORT_LAYER = re.compile(r"^\s*import\s+(dialects|passes)\b", re.M)


def under_dlc(text: str, path: Path) -> str:
    """`text` with its imports of the layers pointing into `dlc`; `import passes` (which would
    bind another name) is refused so that nobody writes it and gets a wheel that breaks."""
    bare = IMPORT_LAYER.search(text)
    if bare:
        raise SystemExit(f"{path}: write `from {bare.group(1)} import ...`, not `import {bare.group(1)}`: "
                         "the wheel moves the layer under dlc/ (setup.py)")
    return FROM_LAYER.sub(lambda m: f"{m.group(1)}from dlc.{m.group(2)}{m.group(3) or ''} import", text)


class BuildPyUnderDlc(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install imports the source tree as it is
        lib = Path(self.build_lib)
        for layer in LAYERS:
            if (lib / layer).is_dir():
                shutil.rmtree(lib / "dlc" / layer, ignore_errors=True)
                shutil.move(str(lib / layer), str(lib / "dlc" / layer))
        for path in (lib / "dlc").rglob("*.py"):
            text = path.read_text()
            rewritten = under_dlc(text, path)
            if rewritten != text:
                path.write_text(rewritten)


class EggInfoTopLevelDlc(egg_info):
    """top_level.txt names `dlc` alone, as the wheel installs it."""

    def run(self):
        super().run()
        top_level = Path(self.egg_info) / "top_level.txt"
        if top_level.exists() and not getattr(self, "_editable", False):
            top_level.write_text("dlc\n")


setup(cmdclass={"build_py": BuildPyUnderDlc, "egg_info": EggInfoTopLevelDlc})
