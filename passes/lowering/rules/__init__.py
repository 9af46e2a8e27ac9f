"""Lowering rules, one per ONNX operator: an onnx op on memrefs -> linalg ops.

A rule is `rule(kb: KernelBuilder, op: OnnxOp, ins, outs)`: `ins` are the memrefs
of the op's operands (None for an absent optional input), `outs` the memrefs its
results must be written to. Rules raise UnsupportedError for attribute values
or dtypes they do not handle, naming the node; they never guess.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

Rule = Callable[..., None]
RULES: dict[str, Rule] = {}


def lowers(*op_types: str) -> Callable[[Rule], Rule]:
    """Register the decorated function as the lowering of `op_types`."""

    def register(rule: Rule) -> Rule:
        for op_type in op_types:
            RULES[op_type] = rule
        return rule

    return register


def load_rules() -> dict[str, Rule]:
    if not RULES:
        for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
            importlib.import_module(f"{__name__}.{info.name}")
    return RULES
