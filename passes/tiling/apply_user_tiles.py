"""Write the user's GEMM tile sizes into the micro-kernel declarations (`--tile`, `--tiles`).

Tiles are the BLIS blocking of dlc/codegen/ukernels.py: the mr x nr register tile and the
kc / mc / nc cache blocks. The passes after this one keep tiles already in the IR:
pack-weights packs a constant B for the user's nr, and tile-contractions chooses only the
tiles left unset (IREE's lowering_config attributes play the same part). Overrides are text:

    "*:kc=128;k5_Conv_fused:mr=8,nr=32;64x3136x576:mc=112"

one `SELECTOR:TILE=N,...` entry per `;`, applied in order, a later entry winning. A
selector is `*` (every GEMM), a kernel's name (the names `--profile` prints), or a GEMM
shape `MxNxK`; an entry without a selector means `*`. GEMMs in Loop bodies (dialects/loop.py:
a recurrent layer's time step) are selected alike, a kernel of one by `BODY.KERNEL`
(`lstm_0.k2_MatMul`, as the LLVM symbols name it): the pass runs on each body before the module
holding it (the driver's stages), and a selector is an error only when it matches no GEMM in
the module or any of its bodies.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from dialects.diagnostics import CompileError
from dialects.gemm_ukernel import gemm_attributes, gemm_spec, ukernels
from dialects.loop import bodies_of
from passes.target_info import target_info

TILES = ("mr", "nr", "kc", "mc", "nc")


def parse_tiles(text: str) -> list[tuple[str, dict[str, int]]]:
    """`"*:kc=128;k5:mr=8"` -> [("*", {"kc": 128}), ("k5", {"mr": 8})], with clear errors."""
    entries = []
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        selector, _, assignments = entry.rpartition(":")
        selector = selector.strip() or "*"
        tiles = {}
        for assignment in filter(None, (a.strip() for a in assignments.split(","))):
            name, equals, value = assignment.partition("=")
            name = name.strip()
            if name not in TILES or not equals:
                raise CompileError(f"tile override '{entry}': '{assignment}' is not TILE=N with TILE one of "
                                   f"{', '.join(TILES)}", "example: --tile k5_Conv_fused:mr=8,nr=32,kc=256")
            try:
                tiles[name] = int(value)
            except ValueError:
                tiles[name] = 0
            if tiles[name] < 1:
                raise CompileError(f"tile override '{entry}': {name} must be a positive integer, got '{value.strip()}'")
        if not tiles:
            raise CompileError(f"tile override '{entry}' sets no tile", "example: --tile kc=128")
        entries.append((selector, tiles))
    return entries


def _callers(module: ModuleOp) -> dict[str, list[str]]:
    """GEMM declaration name -> names of the kernels (functions) that call it."""
    callers: dict[str, list[str]] = {}
    for function in module.ops:
        if isinstance(function, func.FuncOp) and function.body.blocks:
            for call in function.body.walk():
                if isinstance(call, func.CallOp):
                    callers.setdefault(call.callee.root_reference.data, []).append(function.sym_name.data)
    return callers


def _gemms(module: ModuleOp):
    """(declaration, spec, the selectors that name it, its callers) of each GEMM of `module`;
    a Loop body's kernels are named BODY.KERNEL."""
    prefix = f"{module.sym_name.data}." if module.sym_name is not None else ""
    callers = _callers(module)
    for decl in ukernels(module):
        spec = gemm_spec(decl)
        kernels = [prefix + name for name in callers.get(decl.sym_name.data, [])]
        yield decl, spec, {"*", f"{spec['m']}x{spec['n']}x{spec['k']}", *kernels}, kernels


def _all_bodies(module: ModuleOp) -> list[ModuleOp]:
    """The Loop bodies of `module` and theirs, detached (the driver's stages) or attached."""
    found = []
    for body in (*bodies_of(module), *(op for op in module.ops if isinstance(op, ModuleOp))):
        found += [body, *_all_bodies(body)]
    return found


@dataclass(frozen=True)
class ApplyUserTilesPass(ModulePass):
    """Set the tiles a user asked for on the GEMM micro-kernels their selectors match."""

    name = "apply-user-tiles"

    tiles: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        entries = parse_tiles(self.tiles)
        if not entries:
            return
        vector_width = target_info(op).vector_width
        matched = set()
        for decl, spec, names, kernels in _gemms(op):
            chosen = {}
            for selector, tiles in entries:
                if selector in names:
                    chosen |= tiles
                    matched.add(selector)
            if not chosen:
                continue
            where = f"GEMM {spec['m']}x{spec['n']}x{spec['k']} in {', '.join(kernels or ['?'])}"
            if "nr" in chosen and chosen["nr"] % vector_width:
                raise CompileError(f"tile override for {where}: nr={chosen['nr']} is not a multiple of the "
                                   f"target's vector width ({vector_width} floats)")
            taps = spec.get("a_window_h", 0) * spec.get("a_window_w", 0)
            if taps and chosen.get("kc", taps) % taps:
                raise CompileError(f"tile override for {where}: kc={chosen['kc']} is not a multiple of the "
                                   f"{taps} taps of its convolution's window (an implicit GEMM reads k a "
                                   "channel's window at a time)", f"example: kc={max(chosen['kc'] // taps, 1) * taps}")
            if spec.get("b_layout") == "packed" and spec.get("nr") and chosen.get("nr", spec["nr"]) != spec["nr"]:
                raise CompileError(f"tile override for {where}: its weight is already packed for nr={spec['nr']}",
                                   "set tiles before pack-weights runs (the default pipeline does)")
            decl.attributes["dlc.gemm"] = gemm_attributes(spec | chosen)
        if op.sym_name is not None:
            return  # a Loop body: the module holding it (run after it) checks every selector
        every = [gemm for body in [op, *_all_bodies(op)] for gemm in _gemms(body)]
        matched |= {selector for _, _, names, _ in every for selector, _ in entries if selector in names}
        unmatched = [selector for selector, _ in entries if selector not in matched]
        if unmatched:
            kernels = sorted({name for _, _, _, callers in every for name in callers})
            raise CompileError(f"tile override: no GEMM matches {', '.join(map(repr, unmatched))}",
                               f"selectors are '*', MxNxK, or a kernel with a GEMM: {', '.join(kernels) or 'none'}")


def format_tiles(overrides) -> str:
    """The override text for a {selector: {tile: n}} mapping (a `--tiles` JSON file's
    content); text passes through unchanged."""
    if isinstance(overrides, str):
        return overrides
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise CompileError('tile overrides must map selectors to tiles, e.g. {"*": {"kc": 128}, '
                           '"k5_Conv_fused": {"mr": 8, "nr": 32}}')
    return ";".join(f"{selector}:" + ",".join(f"{k}={v}" for k, v in tiles.items())
                    for selector, tiles in overrides.items())
