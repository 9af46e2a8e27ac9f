"""Choose the register and cache tiles of every GEMM micro-kernel; store them in the IR.

Tiles (mr, nr, kc, mc, nc) come from the target description on the module
(passes/tiling/target_info.py) through `choose_tiles`; tiles already in the IR are
kept, so a user (editing the `linalg` phase) or a search can override them.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from passes.lowering.ukernel_calls import gemm_attributes, gemm_spec, ukernels
from passes.tiling.gemm_tiles import choose_tiles
from passes.tiling.target_info import target_info

TILES = ("mr", "nr", "kc", "mc", "nc")


@dataclass(frozen=True)
class TileContractionsPass(ModulePass):
    """Set mr/nr/kc/mc/nc on each GEMM micro-kernel from the target's registers and caches."""

    name = "tile-contractions"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        info = target_info(op)
        for decl in ukernels(op):
            spec = gemm_spec(decl)
            if all(spec.get(t) for t in TILES):
                continue
            chosen = dict(zip(TILES, choose_tiles(spec["m"], spec["n"], spec["k"], info.vector_width,
                                                  info.l1_bytes, info.l2_bytes, spec.get("b_layout", "row"))))
            if spec.get("nr") and spec["nr"] != chosen["nr"]:
                # nr is fixed by a packed weight: keep the block sizes multiples of it.
                nr = spec["nr"]
                chosen["nc"] = max(nr, chosen["nc"] // nr * nr)
            for tile in TILES:
                spec.setdefault(tile, chosen[tile])
                if not spec[tile]:
                    spec[tile] = chosen[tile]
            decl.attributes["dlc.gemm"] = gemm_attributes(spec)
