"""What passes know about the target: read from module attributes (like MLIR's DLTI).

The driver writes the target description on the module (`dlc.vector_bits`,
`dlc.l1_bytes`, `dlc.l2_bytes`), the thread count compiled for (`dlc.threads`) and the
options lowering rules read (`dlc.winograd`); passes never import a target.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import IntegerAttr, ModuleOp

DEFAULTS = {"dlc.vector_bits": 512, "dlc.l1_bytes": 48 * 1024, "dlc.l2_bytes": 2 * 1024 * 1024,
            "dlc.threads": 1, "dlc.winograd": 0}


@dataclass(frozen=True)
class TargetInfo:
    vector_bits: int
    l1_bytes: int
    l2_bytes: int
    threads: int = 1  # the thread count the code is compiled for
    # The largest Winograd output tile stride-1 3x3 convs may use: 0 (the direct conv), 2
    # (F(2x2, 3x3)) or 4 (F(4x4, 3x3) where it covers the map, `--winograd f4`).
    winograd: int = 0

    @property
    def vector_width(self) -> int:
        """fp32 lanes per vector."""
        return max(self.vector_bits // 32, 1)


def target_info(module: ModuleOp) -> TargetInfo:
    def get(key: str) -> int:
        value = module.attributes.get(key)
        return value.value.data if isinstance(value, IntegerAttr) else DEFAULTS[key]

    winograd = get("dlc.winograd")
    return TargetInfo(get("dlc.vector_bits"), get("dlc.l1_bytes"), get("dlc.l2_bytes"), get("dlc.threads"),
                      2 if winograd == 1 else winograd)  # 1: an on/off flag, as IR before F(4x4) wrote it
