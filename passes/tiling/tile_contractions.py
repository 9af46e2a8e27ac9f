"""Choose the register and cache tiles of every GEMM micro-kernel; store them in the IR.

Tiles (mr, nr, kc, mc, nc) come from the target description on the module
(passes/target_info.py) through `choose_tiles`; tiles already in the IR are
kept and the others chosen around them, so a user (apply-user-tiles, `--tile`, or an edit of
the `linalg` phase) or a search can override them.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from dialects.diagnostics import CompileError
from dialects.gemm_ukernel import choose_tiles, gemm_attributes, gemm_spec, rows_in_turn, ukernels
from passes.target_info import target_info

TILES = ("mr", "nr", "kc", "mc", "nc")


@dataclass(frozen=True)
class TileContractionsPass(ModulePass):
    """Set mr/nr/kc/mc/nc on each GEMM micro-kernel from the target's registers and caches."""

    name = "tile-contractions"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        info = target_info(op)
        for decl in ukernels(op):
            spec = gemm_spec(decl)
            given = {t: spec[t] for t in TILES if spec.get(t)}
            if spec.get("residual_in_c"):  # k in one block (GemmSpec.residual_in_c)
                if given.get("kc", spec["k"]) < spec["k"]:
                    raise CompileError(
                        f"@{decl.sym_name.data} (GEMM {spec['m']}x{spec['n']}x{spec['k']}): kc={given['kc']} "
                        "splits k, but this GEMM overwrites its residual in place and needs all of k in one block",
                        f"leave kc to dlc for this kernel, or give kc={spec['k']}")
                given["kc"] = spec["k"]
            if len(given) < len(TILES):
                chosen = choose_tiles(spec["m"], spec["n"], spec["k"], info.vector_width, info.l1_bytes,
                                      info.l2_bytes, spec.get("b_layout", "row"), rows_in_turn=rows_in_turn(spec),
                                      **given)
                spec.update(zip(TILES, chosen))
            if spec["mc"] % spec["mr"] or spec["nc"] % spec["nr"] or spec["nr"] % info.vector_width:
                raise CompileError(
                    f"@{decl.sym_name.data} (GEMM {spec['m']}x{spec['n']}x{spec['k']}): tiles mr={spec['mr']} "
                    f"nr={spec['nr']} mc={spec['mc']} nc={spec['nc']} do not nest",
                    f"mc must be a multiple of mr, nc of nr, and nr of the vector width ({info.vector_width})")
            decl.attributes["dlc.gemm"] = gemm_attributes(spec)
