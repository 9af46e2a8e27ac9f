"""The GEMM micro-kernel's contract: what one call computes, its tiles, its operand layouts
and how threads share it. The passes that lower, tile and pack a GEMM and the code generator
that emits it (dlc/codegen/ukernels.py) all read it from here.

Mirrors the BLIS/GotoBLAS micro-kernel (Goto & van de Geijn, "Anatomy of High-Performance
Matrix Multiplication", 2008; Low et al., "Analytical modeling is enough for high-performance
BLIS", 2016) and IREE's data tiling, where the tile choice lives beside the micro-kernel
(`mmt4d_select_tile`) and a pass stores it in the IR where a user or a search may override it.

- `GemmSpec`: one GEMM, every size static: shape, strides, B's layout, tiles, epilogue.
- `choose_tiles`: (mr, nr, kc, mc, nc) from the target's vector width and caches.
- `pack_b`, `pack_b_u8s8`, `pad_a_rows`: the compile-time layouts of constant operands.
- `thread_grid`: how C's blocks are split over threads.
- `gemm_attributes`, `gemm_spec`, `ukernels`: the spec as IR, on a `dlc.ukernel = "gemm"`
  declaration (passes/lowering/utils/ukernel_calls.py emits the calls).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.ir import Attribute

# name -> number of `activation_params`; "relu6" is clip(0, 6); "silu" is x * sigmoid(x) and
# "hardswish" ONNX HardSwish, applied to each tile after its store (dlc/codegen/ukernel_epilogues.py).
ACTIVATIONS = {"relu": 0, "relu6": 0, "clip": 2, "leaky_relu": 1, "silu": 0, "hardswish": 0}
TILES = ("mr", "nr", "kc", "mc", "nc")
B_LAYOUTS = ("row", "window", "packed")
# Element types: "f32", or "u8s8": A uint8, B int8 (packed by `pack_b_u8s8`), C int32, the
# products summed in int32 by `dot`: "vpdpbusd" (AVX512-VNNI / AVX-VNNI) or "widen" (any CPU).
DTYPES = ("f32", "u8s8")
DOTS = ("vpdpbusd", "widen")


@dataclass(frozen=True)
class GemmSpec:
    """One GEMM, every size static. Element (i, kk) of A is at A + i*a_row_stride +
    kk*a_k_stride floats (so a transposed A is just strides). B is "row" (B[kk, j] at
    B + kk*ldb + j), "packed" by `pack_b(B, nr)` (panels of nr columns, zero-padded), or
    "window": a range call's columns only, in pack_b's panels from its first panel on (B[kk, j]
    at B + (j - first_panel*nr)*k + kk*nr for j at a panel's start; a convolution's im2col
    block, which must fill the last panel's lanes past n with finite values, is built so). C,
    and the residual R, have row stride ldc. The result is act(A@B [+ C if accumulate] + bias
    + R): bias and residual are added before the activation, as ONNX graphs do (Gemm/Conv, Add,
    Relu). bias "row" is one value per column j (a Gemm/Linear bias), "col" one per row i.
    Tiles left at 0 come from `choose_tiles` for caches of `l1_bytes` and `l2_bytes` (which
    only choose tiles: two specs with the same tiles are the same GEMM).

    dtype "u8s8" is the integer GEMM: A uint8 with a_k_stride 1 (strides in bytes), B int8
    packed by `pack_b_u8s8`, C and a "row" bias int32, int32 sums without saturation; kc a
    multiple of 4 (the group of k one dot instruction sums); no activation or accumulate.
    With `requantize` ("u8" or "s8") C is of that type and its store requantizes, as
    onnxruntime's MlasRequantizeOutput: saturate(round_half_even(f32(acc + bias) * R[j]) +
    y_zero), R (the residual operand) holding one float32 multiplier per column; then k must
    fit one kc block (no int32 partial sums to keep in C).

    An implicit-GEMM convolution (u8s8, requantizing) reads A from the padded NHWC input
    itself instead of a copied patch matrix: `a_group` > 0 rows (one output row of pixels) lie
    a_row_stride bytes apart, groups a_group_stride apart, and every `a_image_groups` groups
    (0: all) start an image a_image_stride further on; along k, A is runs of `a_k_run` bytes
    (a kernel row's KW*C contiguous bytes, a multiple of 4) a_k_run_stride apart. A register
    tile never spans two groups: row blocks are counted per group (`row_blocks`) and the range
    functions take rows in that blocked numbering (`row_extent`), each group's last tile holding
    its a_group % mr rows.

    A float32 implicit-GEMM convolution reads A from the padded NCHW input itself
    (`a_window_h` > 0): k runs over (c, i, j) of a KH x KW window (a_window_h x a_window_w),
    element (row, (c, i, j)) at the row's start + c*a_window_channel + i*a_window_row +
    j*a_window_col; rows are grouped as above (one output row of pixels a group, a_row_stride
    apart: the stride along W). kc is a multiple of KH*KW. With `c_transposed` C (and R) are
    stored transposed, C[i, j] at j*ldc + i (each image's, images n*ldc apart): the tile's
    vectors (one pixel, nr output channels each) are transposed in registers and stored into
    the channels' planes of an NCHW output, a run of the tile's pixels each.

    With `residual_in_c` R is C itself: the output overwrites the residual it adds (an Add whose
    other input dies here, run in place as onnxruntime's Sum fusion does, which saves the
    output's own stream of memory). Each tile reads R before it stores C at the same place, so
    k must be one block (kc = k: a k block's partial sums would overwrite R), and C and R are
    not `noalias`.

    With `split_rows` threads split C's rows only (`thread_grids`' rows_only): a 1x1 conv as
    W @ X whose output channels a depthwise conv reads, split by channels as it is.
    """

    m: int
    n: int
    k: int
    a_row_stride: int
    a_k_stride: int
    b_layout: str
    ldb: int
    ldc: int
    accumulate: bool = False
    bias: str | None = None
    activation: str | None = None
    activation_params: tuple[float, ...] = ()
    residual: bool = False
    residual_in_c: bool = False
    vector_width: int = 16
    dtype: str = "f32"
    dot: str = "vpdpbusd"
    requantize: str | None = None
    y_zero: int = 0
    a_group: int = 0
    a_group_stride: int = 0
    a_image_groups: int = 0
    a_image_stride: int = 0
    a_k_run: int = 0
    a_k_run_stride: int = 0
    a_window_h: int = 0
    a_window_w: int = 0
    a_window_row: int = 0
    a_window_col: int = 0
    a_window_channel: int = 0
    c_transposed: bool = False
    split_rows: bool = False
    mr: int = 0
    nr: int = 0
    kc: int = 0
    mc: int = 0
    nc: int = 0
    l1_bytes: int = field(default=0, compare=False, repr=False)
    l2_bytes: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._check()
        if any(getattr(self, t) == 0 for t in TILES):
            if not (self.l1_bytes and self.l2_bytes):
                raise ValueError(f"GemmSpec: tiles left at 0 need l1_bytes and l2_bytes to choose "
                                 f"them ({self})")
            given = {"kc": self.kc or self.k} if self.residual_in_c else {}  # k in one block
            chosen = choose_tiles(self.m, self.n, self.k, self.vector_width, self.l1_bytes, self.l2_bytes,
                                  self.b_layout, rows_in_turn=rows_in_turn(asdict(self)), **given)
            for t, value in zip(TILES, chosen):
                if getattr(self, t) == 0:
                    object.__setattr__(self, t, value)
        self._check_tiles()

    def _check(self) -> None:
        def require(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"GemmSpec: {what} ({self})")

        require(min(self.m, self.n, self.k) >= 1, "m, n and k must be >= 1")
        require(self.b_layout in B_LAYOUTS, "b_layout must be 'row', 'window' or 'packed'")
        require(self.b_layout != "row" or self.ldb >= self.n, "ldb must be >= n")
        if self.c_transposed:  # C's columns are ldc apart, each an image's rows long
            image_rows = self.a_image_groups * self.a_group if self.a_image_groups else self.m
            require(self.ldc >= image_rows, "a transposed C's ldc must be >= its rows per image")
        else:
            require(self.ldc >= self.n, "ldc must be >= n")
        require(self.bias in (None, "row", "col"), "bias must be None, 'row' or 'col'")
        require(self.activation is None or self.activation in ACTIVATIONS,
                f"activation must be None or one of {sorted(ACTIVATIONS)}")
        wanted = ACTIVATIONS.get(self.activation, 0)
        require(len(self.activation_params) == wanted, f"activation takes {wanted} parameters")
        require(self.vector_width >= 1, "vector_width must be >= 1")
        require(self.dtype in DTYPES and self.dot in DOTS, f"dtype must be one of {DTYPES}, dot of {DOTS}")
        if self.dtype == "u8s8":
            require(self.a_k_stride == 1 and self.b_layout == "packed" and self.bias in (None, "row")
                    and not (self.activation or self.accumulate),
                    "a u8s8 GEMM reads A row-major and B packed, adds a row bias at most")
            require(self.requantize in (None, "u8", "s8") and self.residual == bool(self.requantize),
                    "requantize is 'u8' or 's8', with the multipliers as R (and R only then)")
        else:
            require(self.requantize is None, "only a u8s8 GEMM requantizes")
        if self.residual_in_c:
            require(self.residual and self.dtype == "f32" and not self.accumulate,
                    "residual_in_c is a float32 GEMM's residual, read from C, without accumulate")
        if self.a_window_h:
            require(self.dtype == "f32" and self.a_group > 0 and self.m % self.a_group == 0
                    and self.a_window_w > 0 and self.k % (self.a_window_h * self.a_window_w) == 0
                    and not (self.a_k_run or self.accumulate) and self.b_layout == "packed",
                    "a window A (a_window_h) is a float32 GEMM's with rows in groups (a_group), k a "
                    "multiple of the window, B packed, no runs or accumulation")
        elif self.c_transposed:
            require(False, "only a window A's GEMM stores C transposed")
        if self.a_k_run or (self.a_group and not self.a_window_h):
            require(self.dtype == "u8s8" and self.requantize is not None and self.a_group > 0
                    and self.m % self.a_group == 0 and self.a_k_run > 0 and self.a_k_run % 4 == 0
                    and self.k % self.a_k_run == 0 and self.a_image_groups >= 0,
                    "an implicit-GEMM A (a_group, a_k_run) is for a requantizing u8s8 GEMM: m a multiple "
                    "of a_group, k of a_k_run, a_k_run of 4")

    def _check_tiles(self) -> None:
        vw = self.vector_width
        if min(self.mr, self.nr, self.kc, self.mc, self.nc) < 1 or self.nr % vw:
            raise ValueError(f"GemmSpec: tiles must be >= 1 and nr a multiple of {vw} ({self})")
        if self.mc % self.mr or self.nc % self.nr:
            raise ValueError(f"GemmSpec: mc must be a multiple of mr, nc of nr ({self})")
        if self.a_window_h and self.kc % (self.a_window_h * self.a_window_w):
            raise ValueError(f"GemmSpec: a window A's kc must be a multiple of its window's taps ({self})")
        if self.residual_in_c and self.kc < self.k:
            raise ValueError(f"GemmSpec: a residual read from C needs k in one block (kc >= k): a "
                             f"k block's partial sums would overwrite it ({self})")
        if self.dtype == "u8s8" and (self.kc % 4 or (self.requantize and self.kc < self.k)):
            raise ValueError(f"GemmSpec: a u8s8 GEMM's kc must be a multiple of 4, and take all of k "
                             f"when it requantizes ({self})")

    @property
    def panels(self) -> int:
        """Number of nr-column panels of C: the column unit of work `NAME_range` takes."""
        return -(-self.n // self.nr)

    @property
    def row_blocks(self) -> int:
        """Number of mr-row blocks of C: the row unit of work `NAME_range` takes (with
        `a_group`, counted per group: a group's last block may hold fewer rows)."""
        if self.a_group:
            return self.m // self.a_group * -(-self.a_group // self.mr)
        return -(-self.m // self.mr)

    @property
    def row_extent(self) -> int:
        """The end of the rows `NAME_range` takes: m, or with `a_group` row_blocks * mr (rows
        numbered by blocks, each group taking a whole number of them)."""
        return self.row_blocks * self.mr if self.a_group else self.m


# ---------------------------------------------------------------------------------------------
# Tile choice: the BLIS analysis, with constants measured on this project's reference host
# (Emerald Rapids, AVX-512). tile-contractions stores the choice in the IR.
# ---------------------------------------------------------------------------------------------

# Tiles with fewer accumulators than this ran slower at 1024^3 on this host (4x64: 0.78 of
# numpy; 6x64, 8x48 and 14x32: 0.97-1.00): loop overhead and the latency of 4-cycle FMAs on
# two ports are then exposed. So smaller tiles cost as much as this many FMAs per k step.
_MIN_USEFUL_FMAS = 24
# 25x16 (26 loads per 25 FMAs) ran 0.62-1.27 of numpy at 49x512x4608, 7x48 1.38-1.51.
_LOAD_COST = 1.5
# GEMMs with at most this many rows may take a tile of 7-9 rows that splits them evenly
# (`choose_tiles`).
SMALL_M = 64
# Rows of a tile one vector wide (`choose_tiles`): 8 independent FMA chains cover the latency
# of 4-cycle FMAs on two ports.
NARROW_ROWS = 8


def vector_registers(vector_width: int) -> int:
    """The vector registers a micro-kernel has: 32 with AVX-512 (16 lanes), 16 otherwise."""
    return 32 if vector_width >= 16 else 16


def _register_tile(m: int, n: int, vector_width: int, registers_over: int = 0,
                   added_load_cost: float = 0.0) -> tuple[int, int]:
    """(mr, nr) minimising the modelled cycles per k step over the whole padded C.

    A micro-kernel holds mr x nv accumulators, nv B vectors and one broadcast A scalar in
    registers (32 with AVX-512, 16 otherwise), and issues mr*nv FMAs and mr + nv loads per
    k step (two of each per cycle, but the mr broadcasts come from mr rows far apart, so they
    count `_LOAD_COST` each). Ties go to the narrower tile (less padding of N).
    `registers_over` admits tiles of one or two vectors that many registers past the budget,
    at `SPILLED_TILE_COST`: LLVM keeps one accumulator on the stack (a load, FMA and store a
    k step, whose store-to-load latency hides under the step's other FMAs).
    `added_load_cost`: each load adds that many FMAs' time to a k step rather than overlapping
    with the FMAs (see WINDOW_LOAD_COST_AVX2).
    """
    registers = vector_registers(vector_width)
    min_fmas = _MIN_USEFUL_FMAS * registers // 32
    best = None
    for nv in range(1, 5):
        for mr in range(1, min(m, registers) + 1):
            needed = mr * nv + nv + 1
            if needed > registers + (registers_over if nv <= 2 else 0):
                break
            if added_load_cost:
                per_step = max(mr * nv, min_fmas) + added_load_cost * (mr + nv)
            else:
                per_step = max(mr * nv, _LOAD_COST * (mr + nv), min_fmas)
            if needed > registers:
                per_step *= SPILLED_TILE_COST
            cost = math.ceil(m / mr) * math.ceil(n / (nv * vector_width)) * per_step
            key = (cost, nv, -mr)
            if best is None or key < best[0]:
                best = key, (mr, nv * vector_width)
    return best[1]


def choose_tiles(
    m: int, n: int, k: int, vector_width: int, l1_bytes: int, l2_bytes: int,
    b_layout: str = "packed", *, rows_in_turn: bool = False, **given: int,
) -> tuple[int, int, int, int, int]:
    """(mr, nr, kc, mc, nc) for a GEMM on a core with the given cache sizes; tiles in `given`
    (a user's override) are kept and the others chosen around them.

    kc: a kc x nr micro-panel of B (packed; see below for row-major B) takes up to twice L1:
    it streams in order, which the prefetcher hides, and a longer kc reloads C less often (at
    1024^3 with 14x32, kc=512 ran 1.04 of numpy, kc=256 0.98). k is split into equal blocks,
    so there is no short tail block.
    mc: the mc x kc block of A, re-read for every B micro-panel, takes 1/16 of L2 (at 1024^3
    mc=112 ran 0.98 of numpy, mc=1022 0.84); nc: the kc x nc block of B takes half of L2.
    But a GEMM that `rows_in_turn` allows, whose packed B is one kc x nc block, runs each
    mr-row tile across all of B's panels before the next (mc = mr):
    B stays in L2 while the row tiles sweep it, and C's rows, and a residual's, are written
    and read one after another, contiguous streams, where mc rows a block visited each row
    once per panel, nr floats at a time. ResNet-50's NHWC expand convs (3136 x 256 x 64 +
    residual + Relu), one thread of the VM, per kernel: 0.739 -> 0.688, 0.667 -> 0.614,
    0.624 -> 0.602 ms.
    """
    mr, nr = _register_tile(m, n, vector_width)
    if m <= SMALL_M and m % mr and vector_width >= 16:
        # A few rows with a ragged last block: rows that split into equal blocks of 7-9 rows
        # take three vectors (the model's FMA floor rates 7x48 below 13x32). 1x1 convs over
        # 7x7 maps with the channels in the lanes (m = 49; then a row-major copy of x, now
        # implicit GEMMs, whose tiles `window_conv_tiles` chooses), 13x32 -> 7x48, interleaved, both
        # orders: 1152x49x192 0.92-0.94, 1280x49x320 0.95-0.97, 320x49x1152 0.95-0.97,
        # 192x49x672 0.95, 960x49x160 0.95.
        exact = [rows for rows in range(9, 6, -1) if m % rows == 0]
        if exact:
            mr, nr = exact[0], 3 * vector_width
    if rows_in_turn and n <= vector_width and m > SMALL_M and vector_width >= 16:
        # One vector of columns (an NHWC 1x1 conv to 16 channels): every FMA takes a broadcast of
        # its own whatever mr is, so rows past the NARROW_ROWS that cover the FMAs' latency only
        # add streams of A. MobileNetV2's and EfficientNet-B0's 32 -> 16 over 112x112 (12544 x
        # 16 x 32), one thread, interleaved: 30 rows 0.161 and 0.170 ms, 14 rows 0.143, 8 rows
        # 0.120 and 0.135, 6 rows 0.128, 4 rows 0.140.
        mr = NARROW_ROWS
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
    if "mc" not in given and rows_in_turn and b_layout == "packed" and kc >= k and nc >= n:
        mc = mr
    return mr, nr, kc, mc, nc


def rows_in_turn(spec: dict) -> bool:
    """Whether `choose_tiles` may run a GEMM's row tiles in turn across B: a float GEMM that
    reads A row by row (not a convolution's window, whose tiles `window_conv_tiles` sizes:
    ResNet-50's 3x3 convs with their tiles in turn ran 0.5-2% slower) and stores whole rows of
    C (not transposed)."""
    return (spec.get("dtype", "f32") == "f32" and not spec.get("c_transposed")
            and not spec.get("a_window_h"))


def _balanced(total: int, most: int, unit: int) -> int:
    """The block (a multiple of `unit`, at most about `most`) that splits `total` into the
    fewest blocks of equal size, so no block is a short tail."""
    units = -(-total // unit)
    blocks = -(-units // max(most // unit, 1))
    return -(-units // blocks) * unit


# A window conv's register tile one vector narrower costs this much more per FLOP on one core
# (Emerald Rapids VM, interleaved: 7 x 32 for 7 x 48 on ResNet's 512-channel 7x7 layer 1.04-1.07,
# 14 x 16 for 14 x 32 on its 256-channel 14x14 layer 1.015).
NARROWER_TILE_COST = 1.06
# A register tile one register past AVX2's 16 (7 x 16: 14 accumulators, 2 B vectors, a
# broadcast) costs this much more per k step, its spilled accumulator's load and store (Zen 1
# VM, one thread, interleaved, against 6 x 16 / 4 x 24: 56x56 and 28x28 3x3 layers 0.99-1.01
# (so not chosen there), 14x14 0.94-0.95, 7x7 0.91-0.93, where 4 x 24 splits a row of 7 into
# 4 + 3 and of 14 into 4 + 4 + 4 + 2).
SPILLED_TILE_COST = 1.08
# On 16-register targets a window conv's loads (mr broadcasts from rows far apart, nv B
# vectors) do not hide under its FMAs: each adds about this many FMAs' time to a k step. With
# it 4 x 24 (4 + 3 loads a step) replaces 6 x 16 (6 + 2) on 56- and 28-pixel rows, and 7 x 16
# stays on 7- and 14-pixel rows, as measured (Zen 1 VM, one thread, interleaved: one conv
# 64 x 56x56 0.95, 128 x 28x28 0.97; ResNet-18 with 4 x 24 on its 56- and 28-pixel layers
# 0.975, and on its 14-pixel layers too 1.022 more).
WINDOW_LOAD_COST_AVX2 = 2.0


def window_conv_tiles(group: int, rows: int, n: int, k: int, taps: int, vector_width: int, l2_bytes: int,
                      threads: int = 1) -> dict[str, int]:
    """mr, nr and kc of a float32 implicit-GEMM convolution (a window A: `rows` output rows of
    `group` pixels, n output channels, k = C * `taps`), C stored transposed; tile-contractions
    chooses mc and nc around them (and keeps a user's overrides).

    The register tile is `_register_tile`'s for one output row (a tile never spans two), so
    its rows divide the row evenly where they can (28 -> 14 + 14, 7 -> 7); on `threads`
    threads, one vector narrower where the tiles then split more evenly over the threads'
    grid (`thread_grid`) by more than NARROWER_TILE_COST: a 7x7 map's 512 channels make
    7 x 11 tiles 7 x 48, of which 16 threads' best grid (1 x 11) uses 11 threads, where
    7 x 16 tiles 7 x 32 keep all 16 busy. kc is all of k
    while a kc x nr micro-panel of B takes at most half of L2: each k block of a transposed C
    loads and stores its partial sums transposed (16 shuffles a row of vectors), where the
    micro-panel streams from L2 in order (a 7x7 map's k = 4608: 590 KB a 32-wide panel)."""
    window_on_16_registers = vector_registers(vector_width) == 16 and taps > 1
    mr, nr = _register_tile(group, n, vector_width, 1 if window_on_16_registers else 0,
                            WINDOW_LOAD_COST_AVX2 if window_on_16_registers else 0.0)

    def busiest(nr: int) -> int:
        """Columns x row blocks of the busiest part of the best grid (work, up to mr and k)."""
        row_blocks, panels = rows * -(-group // mr), -(-n // nr)
        tm, tn = thread_grid(row_blocks, panels, threads, mr=mr, nr=nr, k=k)
        return -(-row_blocks // tm) * -(-panels // tn) * nr

    if threads > 1 and nr >= 2 * vector_width:
        narrower = nr - vector_width
        if busiest(narrower) * NARROWER_TILE_COST < busiest(nr):
            nr = narrower
    per_block = _balanced(k // taps, max(l2_bytes // (2 * 4 * nr * taps), 1), 1)
    return dict(mr=mr, nr=nr, kc=per_block * taps)


# ---------------------------------------------------------------------------------------------
# Operand layouts: constants are packed at compile time (pack-weights)
# ---------------------------------------------------------------------------------------------


def pack_b(b: np.ndarray, nr: int) -> np.ndarray:
    """B (K x N) as panels Bp[j // nr][kk][j % nr] (zero-padded to whole panels), the layout
    `b_layout="packed"` reads. The weight blob aligns every weight to 64 bytes, so each panel
    of nr=16k floats starts on a cache line."""
    k, n = b.shape
    panels = -(-n // nr)
    padded = np.zeros((k, panels * nr), np.float32)
    padded[:, :n] = b
    return np.ascontiguousarray(padded.reshape(k, panels, nr).transpose(1, 0, 2))


def pack_b_u8s8(b: np.ndarray, nr: int) -> np.ndarray:
    """int8 B (K x N) as panels Bp[j // nr][kk // 4][j % nr][kk % 4] (k and n zero-padded to
    multiples of 4 and nr): each k step of the integer micro-kernel reads, per column, the four
    int8 values one vpdpbusd lane multiplies by four uint8 of A and sums into int32 (oneDNN's
    and MLAS's VNNI weight layout). Panels are (K rounded up to 4) * nr bytes."""
    k, n = b.shape
    k4, panels = -(-k // 4) * 4, -(-n // nr)
    padded = np.zeros((k4, panels * nr), np.int8)
    padded[:k, :n] = b
    return np.ascontiguousarray(padded.reshape(k4 // 4, 4, panels, nr).transpose(2, 0, 3, 1))


# Rows of A this many bytes apart (or a multiple) map to the same L1 set on x86 cores (64
# sets of 64-byte lines); one more line per row spreads them.
ALIASING_STRIDE_BYTES = 4096
CACHE_LINE_FLOATS = 16


def a_rows_alias(a_row_stride: int, a_k_stride: int) -> bool:
    """Whether the mr rows a micro-kernel step broadcasts from fall in one L1 set: rows of a
    row-major A lying a multiple of 4 KiB apart (an 8-way L1 then holds 8 of 13 such rows;
    ResNet-50's 1x1 convs over 1024 channels ran at 60-84 GFLOP/s, 96-99 padded, on Zen 4)."""
    return a_k_stride == 1 and (4 * a_row_stride) % ALIASING_STRIDE_BYTES == 0


def pad_a_rows(a: np.ndarray, m: int) -> np.ndarray:
    """A (m rows, row-major) with one cache line of zeros after each row; the GEMM then reads
    it with a_row_stride = its columns (the old stride + CACHE_LINE_FLOATS)."""
    stride = a.size // m
    padded = np.zeros((m, stride + CACHE_LINE_FLOATS), np.float32)
    padded[:, :stride] = a.reshape(m, stride)
    return padded


# ---------------------------------------------------------------------------------------------
# Thread grid
# ---------------------------------------------------------------------------------------------

# A core's rates in `thread_grid`'s time model: the micro-kernel's FLOP/s and what one core
# streams from L3/DRAM (this project's reference machine: ~150 GFLOP/s, ~20 GB/s).
CORE_FLOPS = 150e9
CORE_BYTES_PER_S = 20e9
# What each thread of a parallel region beyond the caller costs the region: publishing and
# claiming its item (compare-exchanges on one shared cache line), its late start, signalling
# it when it sleeps. With t threads a region of T seconds of work takes about
# T / t + THREAD_SECONDS * (t - 1), so it pays to use about sqrt(T / THREAD_SECONDS) threads:
# 6 for 10 us of work, 16 from 75 us (issue 15: a small kernel woke all 16 threads).
# Calibrated on the 16-core Xeon (benchmarks/README.md, "Many cores"): `benchmarks/pool_cost.py`
# measured 0.21-0.43 us per extra thread between back-to-back regions (workers spinning), and
# the first guess, 1 us, left EfficientNet-B0 and ResNet-18 15% and 8% slower at 16 threads
# than taking every thread.
THREAD_SECONDS = 0.3e-6


def thread_grid(row_blocks: int, panels: int, threads: int, *, mr: int, nr: int,
                k: int) -> tuple[int, int]:
    """(tm, tn), tm * tn <= threads: C's mr-row blocks split tm ways and its nr-column panels
    tn ways, for the least time of the busiest part, modelled as its tiles' FLOPs plus the
    bytes it streams: its rows of A (each column part reads them again) and its columns of B
    (each row part reads them again), plus THREAD_SECONDS per thread beyond the first, so a
    small GEMM takes fewer threads than it could split into.

    A 7x7 ResNet-50 layer (1x1, 512 -> 2048 channels: 2 panels of 49 pixels) splits its rows
    (2 threads: 0.35 ms, against 0.44 ms split in columns, which read all 4 MB of weights
    twice); a 56x56 one (256 -> 64 channels) its columns (0.34-0.37 ms against 0.41-0.42).
    Splitting columns alone left the 7x7 layers on 2 of 16 threads.
    """
    return thread_grids(row_blocks, panels, threads, mr=mr, nr=nr, k=k)[-1]


def grid_seconds(row_blocks: int, panels: int, tm: int, tn: int, *, mr: int, nr: int, k: int) -> float:
    """`thread_grid`'s modelled time of a tm x tn grid: its busiest part's FLOPs, the rows of A and
    columns of B it streams, and THREAD_SECONDS per thread beyond the first."""
    row_part, col_part = -(-row_blocks // tm), -(-panels // tn)
    flops = row_part * col_part * mr * nr * k * 2
    return (flops / CORE_FLOPS + 4 * k * (row_part * mr + col_part * nr) / CORE_BYTES_PER_S
            + THREAD_SECONDS * (tm * tn - 1))


# A GEMM whose modelled time on one core (`grid_seconds` of the 1 x 1 grid: its FLOPs and the
# bytes it streams) is under a million multiply-adds' runs on the caller's thread: waking the
# pool (~5-20 us) costs more than it saves. The bytes count as the FLOPs do: ResNet-18's
# 1x512x1000 classifier is half a million MACs but reads 2 MB of weights (0.042 ms on one core
# of the 2-core VM, no faster on two when it was counted by its MACs alone).
MIN_PARALLEL_SECONDS = 2 * (1 << 20) / CORE_FLOPS


def runs_serially(row_blocks: int, panels: int, *, mr: int, nr: int, k: int) -> bool:
    """Whether a GEMM of `row_blocks` x `panels` register tiles is not worth a parallel region."""
    return (row_blocks * panels < 2
            or grid_seconds(row_blocks, panels, 1, 1, mr=mr, nr=nr, k=k) < MIN_PARALLEL_SECONDS)


# A GEMM whose rows its reader splits (`GemmSpec.split_rows`) splits its rows alone where its
# busiest part then holds at most this many times 1/t of the rows: what each core reads from its
# own cache pays for the B it reads whole (MobileNetV2 and MobileNetV3 0.89-0.99x at 2-8 threads
# on the 16-core Xeon), not for idle threads (96 rows in 8 blocks at 16 threads: 1.04-1.09x).
ROWS_ONLY_SLACK = 1.1


def thread_grids(row_blocks: int, panels: int, most_threads: int, *, mr: int, nr: int,
                 k: int, rows_only: bool = False) -> list[tuple[int, int]]:
    """`thread_grid` for 1, 2, ..., most_threads threads, in one pass over the grids (the
    compile-time table of a GEMM asks for 64 of them: 64 separate searches cost ~10 ms a GEMM);
    with `rows_only`, rows split alone (tm x 1) wherever they split evenly enough
    (ROWS_ONLY_SLACK)."""

    def seconds(tm: int, tn: int) -> float:
        return grid_seconds(row_blocks, panels, tm, tn, mr=mr, nr=nr, k=k)

    best_with = [None] * (most_threads + 1)  # the best grid of exactly t = tm * tn threads
    for tm in range(1, min(most_threads, row_blocks) + 1):
        for tn in range(1, min(most_threads // tm, panels) + 1):
            key = (seconds(tm, tn), (tm, tn))
            if best_with[tm * tn] is None or key < best_with[tm * tn]:
                best_with[tm * tn] = key
    grids, best = [], None
    for t in range(1, most_threads + 1):  # at most t threads: the best of up to t
        if best_with[t] is not None and (best is None or best_with[t] < best):
            best = best_with[t]
        used = best[1][0] * best[1][1]  # as many threads as the best grid takes, no more
        busiest = -(-row_blocks // min(used, row_blocks))  # row blocks of the busiest row part
        if rows_only and busiest * used <= ROWS_ONLY_SLACK * row_blocks:
            grids.append((-(-row_blocks // busiest), 1))  # the fewest parts of that many blocks
        else:
            grids.append(best[1])
    return grids


# ---------------------------------------------------------------------------------------------
# The spec as IR: a `dlc.ukernel = "gemm"` declaration's `dlc.gemm` dictionary
# ---------------------------------------------------------------------------------------------

# `b_trans` marks a constant B stored transposed ([N, K], Gemm transB): pack-weights packs it.
GEMM_INTS = ("m", "n", "k", "a_row_stride", "a_k_stride", "ldb", "ldc", "accumulate", "b_trans",
             "residual", "residual_in_c", "y_zero", "a_group", "a_group_stride", "a_image_groups", "a_image_stride",
             "a_k_run", "a_k_run_stride", "a_window_h", "a_window_w", "a_window_row", "a_window_col",
             "a_window_channel", "c_transposed", "split_rows", *TILES)
GEMM_STRINGS = ("b_layout", "bias", "activation", "dtype", "dot", "requantize")


def gemm_attributes(spec: dict) -> DictionaryAttr:
    """The `dlc.gemm` attribute of a spec given as a plain dict (None values left out)."""
    entries: dict[str, Attribute] = {}
    for key, value in spec.items():
        if value is None:
            continue
        if key in GEMM_INTS:
            entries[key] = IntegerAttr(int(value), i64)
        elif key in GEMM_STRINGS:
            entries[key] = StringAttr(str(value))
        else:
            raise ValueError(f"unknown gemm spec field {key}")
    return DictionaryAttr(entries)


def gemm_spec(decl: func.FuncOp) -> dict:
    """The spec of a gemm ukernel declaration as a plain dict."""
    spec = {}
    for key, value in decl.attributes["dlc.gemm"].data.items():
        spec[key] = value.value.data if isinstance(value, IntegerAttr) else value.data
    return spec


def ukernels(module: ModuleOp, kind: str = "gemm") -> list[func.FuncOp]:
    """The module's micro-kernel declarations of `kind` (`dlc.ukernel = kind`)."""
    return [op for op in module.ops if isinstance(op, func.FuncOp)
            and isinstance(op.attributes.get("dlc.ukernel"), StringAttr)
            and op.attributes["dlc.ukernel"].data == kind]
