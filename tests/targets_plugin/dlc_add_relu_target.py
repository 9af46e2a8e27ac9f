"""Test plugin: re-exports the example target of examples/targets/add_relu_target.py (one source of truth)."""

import importlib.util
from pathlib import Path

import dlc

_EXAMPLE = Path(dlc.__file__).resolve().parents[1] / "examples" / "targets" / "add_relu_target.py"
_spec = importlib.util.spec_from_file_location("add_relu_target", _EXAMPLE)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

AddReluTarget = _module.AddReluTarget
