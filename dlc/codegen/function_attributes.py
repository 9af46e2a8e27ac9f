"""LLVM function attributes for llvmlite functions, string ones included."""

from __future__ import annotations

from llvmlite import ir


class FunctionAttributes(ir.values.FunctionAttributes):
    """llvmlite's FunctionAttributes accepts only enum attributes; LLVM also has "key"="value"
    string attributes (prefer-vector-width, target-cpu, target-features, no-builtins)."""

    def __init__(self, names: tuple[str, ...], strings: dict[str, str]):
        super().__init__(names)
        self.strings = strings

    def _to_list(self, ret_type: ir.Type) -> list[str]:
        return super()._to_list(ret_type) + [f'"{k}"="{v}"' for k, v in self.strings.items()]
