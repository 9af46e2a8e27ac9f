"""Which ONNX operators dlc compiles for cpu, with the opsets it accepts (for `dlc ops`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorSupport:
    name: str
    opsets: str
    how: str


def supported_operators() -> list[OperatorSupport]:
    import onnx.defs

    from dialects.onnx import VIEW_OPS
    from passes.lowering.rules import load_rules

    latest = onnx.defs.onnx_opset_version()
    first_version: dict[str, int] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain in ("", "ai.onnx"):
            first_version[schema.name] = min(first_version.get(schema.name, 99), schema.since_version)
    rows = []
    rules = load_rules()
    for name in sorted(set(rules) | VIEW_OPS):
        family = rules[name].__module__.rsplit(".", 1)[-1] if name in rules else ""
        how = "view (no kernel, no copy)" if name in VIEW_OPS else f"linalg ({family})"
        rows.append(OperatorSupport(name, f"{max(7, first_version.get(name, 7))}-{latest}", how))
    return rows
