"""Tile sizes for the GEMM micro-kernel from a target's register file and caches.

The GotoBLAS/BLIS analysis (Goto & van de Geijn 2008; Low et al., "Analytical modeling is
enough for high-performance BLIS", 2016) with constants measured on this project's
reference host (Emerald Rapids, AVX-512). Used by the tile-contractions pass, which stores
the choice in the IR where a user or a search may override it.
"""

from __future__ import annotations

import math

# Tiles with fewer accumulators than this ran slower at 1024^3 on this host (4x64: 0.78 of
# numpy; 6x64, 8x48 and 14x32: 0.97-1.00): loop overhead and the latency of 4-cycle FMAs on
# two ports are then exposed. So smaller tiles cost as much as this many FMAs per k step.
_MIN_USEFUL_FMAS = 24
# 25x16 (26 loads per 25 FMAs) ran 0.62-1.27 of numpy at 49x512x4608, 7x48 1.38-1.51.
_LOAD_COST = 1.5


def _register_tile(m: int, n: int, vector_width: int) -> tuple[int, int]:
    """(mr, nr) minimising the modelled cycles per k step over the whole padded C.

    A micro-kernel holds mr x nv accumulators, nv B vectors and one broadcast A scalar in
    registers (32 with AVX-512, 16 otherwise), and issues mr*nv FMAs and mr + nv loads per
    k step (two of each per cycle, but the mr broadcasts come from mr rows far apart, so they
    count `_LOAD_COST` each). Ties go to the narrower tile (less padding of N).
    """
    registers = 32 if vector_width >= 16 else 16
    min_fmas = _MIN_USEFUL_FMAS * registers // 32
    best = None
    for nv in range(1, 5):
        for mr in range(1, min(m, registers) + 1):
            if mr * nv + nv + 1 > registers:
                break
            per_step = max(mr * nv, _LOAD_COST * (mr + nv), min_fmas)
            cost = math.ceil(m / mr) * math.ceil(n / (nv * vector_width)) * per_step
            key = (cost, nv, -mr)
            if best is None or key < best[0]:
                best = key, (mr, nv * vector_width)
    return best[1]


def choose_tiles(
    m: int, n: int, k: int, vector_width: int, l1_bytes: int, l2_bytes: int,
    b_layout: str = "packed", **given: int,
) -> tuple[int, int, int, int, int]:
    """(mr, nr, kc, mc, nc) for a GEMM on a core with the given cache sizes; tiles in `given`
    (a user's override) are kept and the others chosen around them.

    kc: a kc x nr micro-panel of B (packed; see below for row-major B) takes up to twice L1: it streams in order, which the
    prefetcher hides, and a longer kc reloads C less often (at 1024^3 with 14x32, kc=512 ran
    1.04 of numpy, kc=256 0.98). k is split into equal blocks, so there is no short tail block.
    mc: the mc x kc block of A, re-read for every B micro-panel, takes 1/16 of L2 (at 1024^3
    mc=112 ran 0.98 of numpy, mc=1022 0.84); nc: the kc x nc block of B takes half of L2.
    """
    mr, nr = _register_tile(m, n, vector_width)
    mr, nr = given.get("mr") or mr, given.get("nr") or nr
    kc = _balanced(k, 2 * l1_bytes // (4 * nr), 1)
    if b_layout == "row":
        # Rows of a row-major B micro-panel lie ldb apart: no stream for the prefetcher and
        # few L1/L2 sets, so it must fit L1 (1024^3 with 14x32: kc=512 ran 0.57 of numpy,
        # 0.98 with B packed).
        kc = _balanced(k, l1_bytes // (4 * nr), 1)
    kc = given.get("kc") or kc
    mc = given.get("mc") or _balanced(m, l2_bytes // (16 * 4 * kc), mr)
    nc = given.get("nc") or _balanced(n, l2_bytes // (2 * 4 * kc), nr)
    return mr, nr, kc, mc, nc


def _balanced(total: int, most: int, unit: int) -> int:
    """The block (a multiple of `unit`, at most about `most`) that splits `total` into the
    fewest blocks of equal size, so no block is a short tail."""
    units = -(-total // unit)
    blocks = -(-units // max(most // unit, 1))
    return -(-units // blocks) * unit


