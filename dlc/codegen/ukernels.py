"""Specialised fp32 GEMM functions as LLVM IR: C = act(A @ B [+ C] [+ bias] [+ R]), sizes static.

The GotoBLAS/BLIS loop nest (Goto & van de Geijn, "Anatomy of High-Performance Matrix
Multiplication", 2008) around an MR x NR register-blocked micro-kernel of `llvm.fma` on
<VW x float> accumulators, with the epilogue fused into the micro-kernel's last store.
What a GEMM computes, its tiles and layouts are its `GemmSpec` (dialects/gemm_ukernel.py).
The loop nest is specialised per GEMM; the fp32 micro-kernel tiles are shared by the GEMMs of
a module that agree on the register tile, epilogue and A's strides, with k, B's and C's
strides and the edges as arguments (as BLIS's micro-kernel is generic in k and strides).

The integer GEMM (dtype "u8s8": uint8 A, int8 B, int32 C) shares the loop nest; its
micro-kernel sums four u8 x s8 products per int32 lane with `vpdpbusd` (AVX512-VNNI, or the
256-bit AVX-VNNI form), as oneDNN and MLAS do, or, on a CPU without VNNI ("widen"), as exact
int16 products summed in int32. Not `vpmaddubsw`: it saturates each pair sum to int16
(255 * 127 * 2 > 32767), which is why onnxruntime's AVX2 kernels need 7-bit weights.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from dialects.gemm_ukernel import GemmSpec, vector_registers
from dlc.codegen.function_attributes import FunctionAttributes
from dlc.codegen.llvm_types import FASTMATH_FLAGS
from dlc.codegen.ukernel_epilogues import IN_PLACE, IN_REGISTERS_TRANSPOSED, apply_in_place, in_registers

__all__ = ["emit_gemm"]

F32 = ir.FloatType()
I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

_POINTERS = ("A", "B", "C", "bias", "R")
# A shared float tile's arguments after the pointers (`_GemmEmitter._kernel`).
_TILE_ARGS = ("kc", "load_c", "last", "b_stride", "ldc", "rows", "cols")
# Window tiles whose k block holds at most this many channels clamp the last channel's prefetch
# even where the tile spills a register (`_channel_loop`): stems and patch embeddings.
FEW_WINDOW_CHANNELS = 16
# Rank-1 updates per iteration of a window's k loop, at least (`_window_channels`).
WINDOW_STEPS = 4
# A row-major B's tiles prefetch the next panel's row segment at each k step (`_k_step`). On the
# 16-core Xeon, interleaved, on/off: MobileNetV2 0.950 / 0.958 / 0.961 / 1.026, EfficientNet-B0
# 0.984 / 0.961 / 0.974 / 1.001, MobileNetV3 1.028 / 0.974 / 0.970 / 1.028, SqueezeNet 0.967 /
# 1.005 / 0.990 / 1.014, ResNet-50 0.995 / 1.007 / 0.993 / 0.988 at 1 / 2 / 4 / 16 threads (at 16
# a thread's few panels end in one prefetched for nothing).
ROW_B_PREFETCH = True
# A GEMM whose packed B is a large weight prefetches B's rows B_AHEAD_ROWS ahead of those its
# tiles read (`_prefetch_b_ahead`; into the next panel, but never past the last): such a weight
# comes from memory, not L2, each run, and the hardware's prefetchers, which stop at every 4 KiB
# page, left the first row tile of each panel waiting (ResNet-18's 3x3 512-channel conv over a
# 7x7 map, 9.4 MB of weight in panels of 884 KB, one for every 7 tiles: 1.5 ms with the weight
# in the cache, 2.2 from memory as in the model). Xeon VM, one thread, kernel by kernel
# interleaved (`benchmarks/kernels.py --builds`): that conv 2.25 -> 1.91 ms, 3x3 256 over 14x14
# (2.4 MB) 1.53 -> 1.44, ResNet-50's 1x1 512 -> 2048 + residual over 7x7 (4 MB) 0.92 -> 0.86;
# whole runs ResNet-18 26.0 -> 23.6 ms, ResNet-50 57.0 -> 53.3, the d256 encoder layer 1.71 ->
# 1.64, EfficientNet-B0 9.78 -> 9.64, MobileNetV2 5.44 -> 5.39; SqueezeNet and MLPs within
# noise kernel by kernel. Weights under B_AHEAD_MIN_BYTES stay in L2 (ResNet's 56x56 3x3
# convs, 147 KB, ran 1-2% slower prefetching). The int8 GEMM does the same in bytes: ResNet-50
# quantized by onnxruntime (QDQ), its 7x7-map QLinearConvs 0.52 -> 0.41-0.42 ms, the run 21.4
# -> 20.8 and 21.2 -> 20.0 ms (two pairs).
B_AHEAD_ROWS = 32
B_AHEAD_MIN_BYTES = 256 * 1024
# A window conv that stores C transposed (NCHW planes) and whose C holds at least
# C_AHEAD_MIN_BYTES prefetches, for writing, the lines its tile will store before its k loop
# (`_prefetch_c_columns`). Such a C is larger than a core's L2 and is written once a run, so its
# lines come from memory each time; a tile stores into nr planes at once, a run of mr pixels in
# each, more streams than the hardware's prefetchers follow, so each store missed and waited.
# ResNet-18's stem (3 -> 64 channels, 7x7/2, 3.2 MB of output) on the 16-core Xeon with 16
# callers of one thread each, kernel by kernel (`kernels.py --callers 16`): 5.58 ms against
# onnxruntime's 2.55, where alone (its output then stays in L3) 2.02 against 1.95.
C_AHEAD_MIN_BYTES = 2 * 1024 * 1024


# GEMMs whose tile calls do at least this many multiply-adds get an unoptimised loop nest
# (`_GemmEmitter.emit`): 128 cycles of one core's FMAs against a few dozen for the call.
OPTNONE_MIN_TILE_MACS = 4096


def _i64(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


class _Spelled(ir.Constant):
    """A vector constant written the short way (`zeroinitializer`, `poison`, `splat (float
    6.0)`): llvmlite spells out every lane, which was a third of the tiles' IR text, and
    formatting and parsing that text is compile time."""

    def __init__(self, typ: ir.Type, value, text: str):
        super().__init__(typ, value)
        self.text = text

    def _get_reference(self) -> str:
        return self.text


# Vector constants are made once (keyed by text: llvmlite gives every vector type one hash):
# llvmlite builds a Constant per lane, and the tiles ask for thousands of them.
_CONSTANTS: dict[tuple[str, ...], ir.Constant] = {}


def _constant(key: tuple[str, ...], make: Callable[[], ir.Constant]) -> ir.Constant:
    if key not in _CONSTANTS:
        _CONSTANTS[key] = make()
    return _CONSTANTS[key]


def _lane_mask(width: int, lanes: int) -> ir.Constant:
    return _constant(("mask", str(width), str(lanes)),
                     lambda: ir.Constant(ir.VectorType(I1, width), [1] * lanes + [0] * (width - lanes)))


def _float_splat(typ: ir.VectorType, bits: str) -> ir.Constant:
    """`float.fromhex(bits)` in every lane (keyed by its hex form: 0.0 and -0.0 differ)."""
    value = float.fromhex(bits)
    if value == 0.0 and math.copysign(1.0, value) > 0:
        return _zeros(typ)
    return _constant(("splat", str(typ), bits), lambda: _Spelled(
        typ, [value] * typ.count, f"splat ({ir.Constant(typ.element, value)})"))


def _zeros(typ: ir.VectorType) -> ir.Constant:
    return _constant(("zeros", str(typ)), lambda: _Spelled(typ, [0] * typ.count, "zeroinitializer"))


def _poison(typ: ir.VectorType) -> ir.Constant:
    return _constant(("poison", str(typ)), lambda: _Spelled(typ, ir.Undefined, "poison"))


@dataclass(frozen=True)
class _Vec:
    """One vector of a row of a tile: columns [offset, offset + lanes) (lanes < width: masked)."""

    offset: int
    lanes: int


I8 = ir.IntType(8)


def emit_gemm(
    module: ir.Module,
    name: str,
    spec: GemmSpec,
    *,
    exported: bool = False,
    noalias: bool = True,
    target: tuple[str, str] | None = None,
) -> ir.Function:
    """Add `void NAME(ptr A, ptr B, ptr C, ptr bias, ptr R)` computing `spec` to `module`.

    bias and R may be null when the spec has none. Also adds `void NAME_range(ptr A, ptr B,
    ptr C, ptr bias, ptr R, i64 first_panel, i64 last_panel, i64 first_row, i64 last_row)`,
    which computes only the block of C in columns [first_panel*nr, min(last_panel*nr, n))
    and rows [first_row, last_row) (first_row a multiple of mr; last_row too, or m): blocks
    are independent, so threads may run disjoint ones (NAME runs the whole of C).
    Both are internal unless `exported`. `noalias` promises that C overlaps no input (true for
    the memory planner's buffers). `target`: (cpu, features) written as function attributes.
    Vector memory accesses say `align 4`: no alignment of the callers' buffers is assumed.
    """
    emitter = _Int8GemmEmitter if spec.dtype == "u8s8" else _GemmEmitter
    return emitter(module, name, spec, exported, noalias, target).emit()


class _GemmEmitter:
    def __init__(self, module, name, spec, exported, noalias, target):
        self.module, self.name, self.spec = module, name, spec
        self.linkage = "" if exported else "internal"
        self.noalias = noalias and not spec.residual_in_c  # C is R there
        self.strings = {"prefer-vector-width": str(32 * spec.vector_width)}
        if target is not None:
            self.strings |= {"target-cpu": target[0], "target-features": target[1]}
        self.vw = spec.vector_width
        self.vec = ir.VectorType(F32, self.vw)
        self.zero = _zeros(self.vec)
        self.kernels: dict[tuple[int, int], ir.Function] = {}
        self.tail_mask: ir.Value | None = None  # the shared tile's last vector's lanes
        self.b_ahead: ir.Value | None = None  # the shared tile's prefetch distance along B
        self.b: ir.IRBuilder = None

    # -- helpers ------------------------------------------------------------------------------

    def _function(self, name: str, args: list[ir.Type], names: tuple[str, ...], linkage: str):
        fn = ir.Function(self.module, ir.FunctionType(VOID, args), name)
        fn.linkage = linkage
        for arg, arg_name in zip(fn.args, names):
            arg.name = arg_name
        pointers = sum(t == PTR for t in args)
        fn.attributes = FunctionAttributes(("nounwind",), self.strings)
        for arg in fn.args[:pointers]:
            arg.add_attribute("captures(none)")
            if self.noalias:
                arg.add_attribute("noalias")
        return fn

    def _intrinsic(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        if name in self.module.globals:
            return self.module.globals[name]
        return ir.Function(self.module, ir.FunctionType(ret, args), name)

    def _gep(self, base: ir.Value, offset: ir.Value | int) -> ir.Value:
        if isinstance(offset, int):
            if offset == 0:
                return base
            offset = _i64(offset)
        return self.b.gep(base, [offset], inbounds=True, source_etype=F32)

    def _prefetch(self, address: ir.Value, write: bool = False) -> None:
        """Prefetch `address`'s line into all cache levels (llvm.prefetch, data, locality 3),
        for writing (prefetchw) with `write`. A prefetch never faults."""
        prefetch = self._intrinsic("llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
        self.b.call(prefetch, [address, ir.Constant(I32, int(write)), ir.Constant(I32, 3), ir.Constant(I32, 1)])

    def _mask(self, lanes: int) -> ir.Constant:
        return _lane_mask(self.vw, lanes)

    def _lane_mask(self, vec: _Vec) -> ir.Value:
        """The lanes of a partial vector: a constant, or the tile's run-time tail (lanes < 0)."""
        return self.tail_mask if vec.lanes < 0 else self._mask(vec.lanes)

    def _load(self, base: ir.Value, vec: _Vec) -> ir.Value:
        ptr = self._gep(base, vec.offset)
        if vec.lanes == self.vw:
            return self.b.load(ptr, typ=self.vec, align=4)
        fn = self._intrinsic(f"llvm.masked.load.v{self.vw}f32.p0", self.vec,
                             [PTR, I32, ir.VectorType(I1, self.vw), self.vec])  # fmt: skip
        return self.b.call(fn, [ptr, ir.Constant(I32, 4), self._lane_mask(vec), self.zero])

    def _store(self, value: ir.Value, base: ir.Value, vec: _Vec) -> None:
        ptr = self._gep(base, vec.offset)
        if vec.lanes == self.vw:
            self.b.store(value, ptr, align=4)
            return
        fn = self._intrinsic(f"llvm.masked.store.v{self.vw}f32.p0", VOID,
                             [self.vec, PTR, I32, ir.VectorType(I1, self.vw)])  # fmt: skip
        self.b.call(fn, [value, ptr, ir.Constant(I32, 4), self._lane_mask(vec)])

    def _load_c_tile(self, c: ir.Value, c_rows: list[ir.Value], tile) -> list[ir.Value]:
        """The tile's vectors of C (or R, `c` its row 0), in `tile` order."""
        if not self.spec.c_transposed:
            return [self._load(c_rows[i], v) for i, v in tile]
        out = {}
        for v in dict.fromkeys(v for _, v in tile):
            for chunk in range(0, self.spec.mr, self.vw):
                columns = [self._column_access(c, v, chunk, lane, None) for lane in range(self.vw)]
                for i, row in enumerate(self._transpose(columns)[:self.spec.mr - chunk]):
                    out[chunk + i, v] = row
        return [out[i, v] for i, v in tile]

    def _store_c_tile(self, values: list[ir.Value], c: ir.Value, c_rows: list[ir.Value], tile) -> None:
        """Store the tile's vectors (in `tile` order) into C, `c` its row 0."""
        if not self.spec.c_transposed:
            for value, (i, v) in zip(values, tile):
                self._store(value, c_rows[i], v)
            return
        by_place = {(i, v): value for value, (i, v) in zip(values, tile)}
        for v in dict.fromkeys(v for _, v in tile):
            for chunk in range(0, self.spec.mr, self.vw):
                rows = [by_place.get((chunk + i, v), self.zero) for i in range(self.vw)]
                for lane, column in enumerate(self._transpose(rows)):
                    self._column_access(c, v, chunk, lane, column)

    def _store_transposed_with_residual(self, values, tile, bias, res: ir.Value, c: ir.Value) -> None:
        """The epilogue of a transposed C with a residual, a column (one output channel's run of
        the tile's rows) at a time: the accumulators transposed, then bias (lane j of the bias
        vector, splat), R's column as one masked load and the activation, then the store: the
        same operations in the same order as `_epilogue`, so the same bits. Transposing R as
        well held its whole tile beside the accumulators, past the 16 vector registers of AVX2:
        LLVM spilled accumulators inside the k loop (82 stack accesses in the 6x16 tile against
        12 by column): on the Zen 1 VM (one thread, interleaved) ResNet-18's 56x56 conv + Add +
        Relu went 8.33 -> 7.28 ms and the whole model 117.8 -> 113.4."""
        spec, b, vw = self.spec, self.b, self.vw
        by_place = {(i, v): value for value, (i, v) in zip(values, tile)}
        for v in dict.fromkeys(v for _, v in tile):
            bias_vector = self._load(bias, v) if spec.bias == "row" else None
            for chunk in range(0, spec.mr, vw):
                rows = [by_place.get((chunk + i, v), self.zero) for i in range(vw)]
                for lane, column in enumerate(self._transpose(rows)):
                    if 0 <= v.lanes <= lane:
                        continue  # a constant partial vector's missing column
                    if bias_vector is not None:
                        lane_bias = b.extract_element(bias_vector, ir.Constant(I32, lane))
                        column = b.fadd(column, self._splat(lane_bias), flags=FASTMATH_FLAGS)
                    column = b.fadd(column, self._column_access(res, v, chunk, lane, None), flags=FASTMATH_FLAGS)
                    self._column_access(c, v, chunk, lane, self._activation(column))

    def _transpose(self, rows: list[ir.Value]) -> list[ir.Value]:
        """The transpose of vw vectors of vw lanes: vector j holds lane j of each. Stage s
        swaps the off-diagonal s x s blocks of every 2s x 2s block (two shuffles a row pair)."""
        vw, matrix, s = self.vw, list(rows), self.vw // 2
        while s >= 1:
            lo = ir.Constant(ir.VectorType(I32, vw), [c if (c // s) % 2 == 0 else vw + c - s for c in range(vw)])
            hi = ir.Constant(ir.VectorType(I32, vw), [c + s if (c // s) % 2 == 0 else vw + c for c in range(vw)])
            new = list(matrix)
            for i in range(vw):
                if (i // s) % 2 == 0:
                    new[i] = self.b.shuffle_vector(matrix[i], matrix[i + s], lo)
                    new[i + s] = self.b.shuffle_vector(matrix[i], matrix[i + s], hi)
            matrix, s = new, s // 2
        return matrix

    def _column_access(self, c: ir.Value, vec: _Vec, chunk: int, lane: int, value: ir.Value | None):
        """Load (value None) or store column vec.offset + lane of a transposed C, rows
        [chunk, chunk + vw) of the tile: one masked vector of the channel's plane, its lanes the
        rows before the tile's `rows`, none past a masked vector's columns."""
        b, vw = self.b, self.vw
        if 0 <= vec.lanes <= lane:
            return self.zero  # a constant partial vector's missing column
        iota = ir.Constant(ir.VectorType(I64, vw), list(range(chunk, chunk + vw)))
        mask = b.icmp_signed("<", iota, self._splat(self.tile_rows))
        if vec.lanes < 0:  # the run-time tail: this column only if it is before `cols`
            inside = b.icmp_signed("<", _i64(vec.offset + lane), self.tile_cols)
            mask = b.and_(mask, self._splat(inside))
        ptr = self._gep(c, b.add(b.mul(_i64(vec.offset + lane), self.tile_ldc), _i64(chunk)))
        if value is None:
            fn = self._intrinsic(f"llvm.masked.load.v{vw}f32.p0", self.vec, [PTR, I32, ir.VectorType(I1, vw), self.vec])
            return b.call(fn, [ptr, ir.Constant(I32, 4), mask, self.zero])
        fn = self._intrinsic(f"llvm.masked.store.v{vw}f32.p0", VOID, [self.vec, PTR, I32, ir.VectorType(I1, vw)])
        b.call(fn, [value, ptr, ir.Constant(I32, 4), mask])
        return None

    def _splat(self, scalar: ir.Value) -> ir.Value:
        """`scalar` in every lane of a vector of its type."""
        typ = ir.VectorType(scalar.type, self.vw)
        one = self.b.insert_element(_poison(typ), scalar, ir.Constant(I32, 0))
        return self.b.shuffle_vector(one, _poison(typ), _zeros(ir.VectorType(I32, self.vw)))

    def _splat_const(self, value: float) -> ir.Constant:
        return _float_splat(self.vec, float(value).hex())

    def _loop(self, start: ir.Value, stop: ir.Value, step: int, body: Callable[[ir.Value], None]):
        """for (iv = start; iv < stop; iv += step) body(iv), as a guarded do-while loop."""
        b = self.b
        loop = b.function.append_basic_block("loop")
        done = b.function.append_basic_block("loop.end")
        b.cbranch(b.icmp_signed("<", start, stop), loop, done)
        entry = b.block
        b.position_at_end(loop)
        iv = b.phi(I64, "iv")
        iv.add_incoming(start, entry)
        body(iv)
        nxt = b.add(iv, _i64(step), flags=("nsw",))
        iv.add_incoming(nxt, b.block)
        b.cbranch(b.icmp_signed("<", nxt, stop), loop, done)
        b.position_at_end(done)

    def _if(self, cond: ir.Value, then: Callable[[], None]) -> None:
        with self.b.if_then(cond):
            then()

    def _min(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", x, y), x, y)

    # -- the micro-kernel ---------------------------------------------------------------------

    def _vectors(self, cols: int) -> list[_Vec]:
        full, rest = divmod(cols, self.vw)
        tail = [_Vec(full * self.vw, rest)] if rest else []
        return [_Vec(v * self.vw, self.vw) for v in range(full)] + tail

    def _tile_name(self, vectors: int, masked: bool) -> str:
        """The shared tile's name: everything its body depends on but its run-time arguments."""
        spec = self.spec
        layout = ("w" if spec.b_layout in ("packed", "window") else "r") if masked else ""
        if self._prefetches_next_panel():
            layout += "p"
        if self._prefetches_b_ahead():
            layout += "b"
        if self._prefetches_c():
            layout += "c"
        parts = [f"dlc_gemm_tile_{spec.dtype}_{spec.mr}x{vectors}v{self.vw}{'m' if masked else ''}{layout}",
                 f"a{spec.a_row_stride}s{spec.a_k_stride}{self._window_name(vectors)}", spec.bias or "",
                 "res" if spec.residual else "", spec.activation or ""]
        parts += [float(p).hex() for p in spec.activation_params]
        if not self.noalias:
            parts.append("alias")
        if "target-cpu" in self.strings:  # a module holds one target; this keeps two apart
            target = f"{self.strings['target-cpu']},{self.strings['target-features']}"
            parts.append(hashlib.sha256(target.encode()).hexdigest()[:8])
        return "_".join(parts)

    def _window_name(self, vectors: int) -> str:
        spec = self.spec
        if not spec.a_window_h:
            return ""
        # a spilling tile's few-channel variant clamps its prefetches: its kc is no part of the name
        clamp = "f" if self._spills(vectors) and self._clamps_last_channel(vectors) else ""
        return (f"w{spec.a_window_h}x{spec.a_window_w}r{spec.a_window_row}c{spec.a_window_col}"
                f"ch{spec.a_window_channel}{'t' if spec.c_transposed else ''}{clamp}")

    def _kernel(self, vectors: int, masked: bool) -> ir.Function:
        """A micro-kernel tile shared by every GEMM of the module with the same register tile,
        epilogue and A strides (the BLIS micro-kernel, generic in k and the other strides):
        `void t(A, B, C, bias, R, i64 kc, i1 load_c, i1 last, i64 b_stride, i64 ldc, i64 rows,
        i64 cols)` computes mr rows x `vectors` vectors of C over kc steps of k, pointers
        already at the tile; accumulators start from C when `load_c`, and the epilogue runs
        when `last` (the final kc block). B's row kk is at B + kk*b_stride, C's (and R's) row i
        at C + i*ldc.

        A's strides stay constants: each k step broadcasts mr values of A, at constant offsets
        from one pointer that way; as run-time values they took a register each (or a chain of
        adds), which ran GEMMs 2-6% slower (a 12x784x128 one 40%, spilling).
        Edges: the tile holds the first `rows` (1..mr) rows of C; rows past them repeat its
        last row (the same A, C, bias and R row, so the same values are computed and stored
        again there, and nothing outside the rows is read or written): an edge costs a whole
        mr-row tile, and full and edge rows share one body. With `masked`, its last vector
        holds the columns before `cols` only (masked loads and stores; a packed or window B
        reads its padded panel whole).
        Specialised per GEMM and edge, ResNet-50 had 66 tiles (3.3 of 3.9 MB of LLVM IR);
        shared, 37 of 0.8 MB.
        A window A (an implicit-GEMM convolution, `a_window_h`) is read a channel at a time,
        its KH x KW taps unrolled at constant offsets; with `c_transposed` C's (and R's) row i
        is at C + i and its column j at j*ldc: the tile is transposed in registers and each
        channel's run of the tile's rows stored (or loaded) as one masked vector. Scattering each
        vector's 16 lanes instead (vscatterdps) ran 1.00-1.07x as long on the 16-core Xeon
        (ResNet-18's 3x3 layers, interleaved; the whole ResNet-18 1.04 / 1.06 / 0.96 at 1 / 4 /
        16 threads, the last within that host's noise)."""
        name = self._tile_name(vectors, masked)
        if name in self.module.globals:
            return self.module.globals[name]
        ahead = self._prefetches_b_ahead()
        fn = self._function(name, [PTR] * 5 + [I64, I1, I1] + [I64] * (5 if ahead else 4),
                            (*_POINTERS, *_TILE_ARGS, *(("b_ahead",) if ahead else ())), "internal")  # fmt: skip
        # One body for all its call sites: inlined, LLVM would optimise a copy per GEMM.
        fn.attributes.add("noinline")
        saved, self.b = self.b, ir.IRBuilder(fn.append_basic_block("entry"))
        a, bp, c, bias, res, kc, load_c, last, b_stride, ldc, n_rows, n_cols = fn.args[:12]
        self.b_ahead = fn.args[12] if len(fn.args) > 12 else None  # `_prefetch_b_ahead`
        lda, a_k = _i64(self.spec.a_row_stride), _i64(self.spec.a_k_stride)
        spec, b, vw = self.spec, self.b, self.vw
        rows = spec.mr
        vecs = [_Vec(v * vw, vw) for v in range(vectors)]
        if masked:
            vecs[-1] = _Vec((vectors - 1) * vw, -1)
            lanes = b.trunc(b.sub(n_cols, _i64((vectors - 1) * vw)), I32)
            iota = ir.Constant(ir.VectorType(I32, vw), list(range(vw)))
            self.tail_mask = b.icmp_signed("<", iota, self._splat(lanes))
        last_row = b.sub(n_rows, _i64(1))
        row_index = [_i64(0)] + [self._min(_i64(i), last_row) for i in range(1, rows)]
        a_rows = [b.mul(r, lda) for r in row_index]
        self.tile_rows, self.tile_cols, self.tile_ldc = n_rows, n_cols, ldc
        if spec.c_transposed:  # row i at C + i, column j at j*ldc (`_column_access`)
            c_rows = [self._gep(c, r) for r in row_index]
            r_rows = [self._gep(res, r) for r in row_index] if spec.residual else None
        else:
            c_rows = [self._gep(c, b.mul(r, ldc)) for r in row_index]
            r_rows = [self._gep(res, b.mul(r, ldc)) for r in row_index] if spec.residual else None
        tile = [(i, v) for i in range(rows) for v in vecs]
        if self._prefetches_c():
            self._prefetch_c_columns(c, vecs)

        entry = b.block
        load_bb = fn.append_basic_block("load_c")
        loop = fn.append_basic_block("k")
        done = fn.append_basic_block("k.end")
        b.cbranch(load_c, load_bb, loop)
        b.position_at_end(load_bb)
        loaded = self._load_c_tile(c, c_rows, tile)
        b.branch(loop)

        b.position_at_end(loop)
        if spec.a_window_h:
            updated = self._window_channels(a, bp, kc, vecs, a_rows, b_stride,
                                            [(self.zero, entry), (loaded, load_bb)], done)
        else:
            kk = b.phi(I64, "kk")
            accs = [b.phi(self.vec) for _ in tile]
            for acc, init in zip(accs, loaded):
                acc.add_incoming(self.zero, entry)
                acc.add_incoming(init, load_bb)
            kk.add_incoming(_i64(0), entry)
            kk.add_incoming(_i64(0), load_bb)
            updated = self._k_step(a, bp, kk, vecs, a_rows, accs, a_k, b_stride)
            nxt = b.add(kk, _i64(1), flags=("nsw",))
            for acc, new in zip(accs, updated):
                acc.add_incoming(new, b.block)
            kk.add_incoming(nxt, b.block)
            b.cbranch(b.icmp_signed("<", nxt, kc), loop, done)

        b.position_at_end(done)
        with b.if_else(last) as (with_epilogue, plain):
            with with_epilogue:
                if spec.c_transposed and spec.residual and spec.bias != "col":
                    self._store_transposed_with_residual(updated, tile, bias, res, c)
                else:
                    r_values = self._load_c_tile(res, r_rows, tile) if spec.residual else None
                    values = self._epilogue(updated, tile, bias, r_rows, row_index, r_values)
                    self._store_c_tile(values, c, c_rows, tile)
                    if spec.activation in IN_PLACE and not spec.c_transposed:  # from L1 (ukernel_epilogues)
                        apply_in_place(self, c, ldc, n_rows, vecs)
            with plain:
                self._store_c_tile(updated, c, c_rows, tile)
        b.ret_void()
        self.b = saved
        return fn

    def _window_channels(self, a, bp, kc, vecs, a_rows, b_stride, starts, done) -> list[ir.Value]:
        """The k loop of a window A, a channel at a time: its KH x KW taps unrolled at constant
        offsets from the channel's start (A moves a plane, B kh*kw rows per channel), and for a
        window of fewer than WINDOW_STEPS taps (a 1x1 conv) that many steps' worth of channels
        an iteration, then a channel at a time. Accumulators start from `starts` ([(value or
        values, block)]); branches to `done`; returns the accumulators after the last step.
        One rank-1 update per loop iteration, its tap's offset from a table, took 10 scalar
        instructions to 28 FMAs (counter wrap, table load, selects), which on Intel cores share
        ports 0 and 5 with 512-bit FMAs: unrolled, ResNet-18's 3x3 layers run 0.84-0.89x as
        long on one thread (Emerald Rapids VM, interleaved).
        Each tap prefetches its line of the next channel (a plane further on, where the
        hardware's stream prefetchers, which follow one 4 KiB page, do not look): on the 16-core
        Xeon ResNet-18's 3x3 layers ran 0.91-1.00x as long on one thread and 0.91-1.02x on four
        (c56: 0.913 and 1.023), interleaved; two channels ahead did no better."""
        b, spec = self.b, self.spec
        taps = [i * spec.a_window_row + j * spec.a_window_col
                for i in range(spec.a_window_h) for j in range(spec.a_window_w)]
        accs = [b.phi(self.vec) for _ in range(len(a_rows) * len(vecs))]
        for start, block in starts:
            for index, acc in enumerate(accs):
                acc.add_incoming(start if isinstance(start, ir.Value) else start[index], block)
        state = [_i64(0), a, bp, *accs]  # kk, the channel's A, its first row of B, accumulators
        channels = max(WINDOW_STEPS // len(taps), 1)
        if channels > 1:
            whole = _i64(channels * len(taps))
            state = self._channel_loop(state, channels, taps, vecs, a_rows, b_stride, kc,
                                       lambda kk: b.icmp_signed("<=", b.add(kk, whole), kc))
        state = self._channel_loop(state, 1, taps, vecs, a_rows, b_stride, kc,
                                   lambda kk: b.icmp_signed("<", kk, kc))
        b.branch(done)
        return state[3:]

    def _channel_loop(self, state, channels, taps, vecs, a_rows, b_stride, kc, more) -> list[ir.Value]:
        """while more(kk): `channels` channels of rank-1 updates, one per tap. `state` is
        [kk, A at the channel, B at its first row, *accumulators] on entry; returns it on exit.

        Each tap prefetches its line of the next channel; the k block's last channel its own
        line again: past A's last channel the address may lie in no mapping, where a prefetch
        costs a page walk that fails every time (on the Zen 1 VM a 7x7 stride-2 conv reading a
        3-channel input directly ran 61-67 ms where the input had no mapping after it, 11 ms
        where it had; onnxruntime 11.4). A tile that already spills a register (7 x 16 on
        AVX2) keeps the plain address where its k block holds more than FEW_WINDOW_CHANNELS
        channels: the choice's one more live register cost its 256- and 512-channel convs
        (14x14, 7x7) 18% in ResNet-50, and there only one prefetch in hundreds points past A.
        With few channels a third of them may: a 3-channel stem forced to 7 x 16 ran 6.4 ms
        unclamped against 2.0 clamped, its input in numpy's allocation (onnxruntime 1.7); ViT's
        16x16 stride-16 patch conv, 7 x 16 by default on 14-pixel rows, 6.6 against 6.1 with a
        PROT_NONE page after its input, 5.5-5.8 against 5.6-5.9 with its input elsewhere."""
        b, spec = self.b, self.spec
        before = b.block
        body = b.function.append_basic_block("window.channels")
        after = b.function.append_basic_block("window.next")
        b.cbranch(more(state[0]), body, after)
        b.position_at_end(body)
        phis = [b.phi(value.type) for value in state]
        for phi, value in zip(phis, state):
            phi.add_incoming(value, before)
        kk, a_channel, b_row, *accs = phis
        # A's pointer passes through an empty asm at each tap: LLVM then cannot prove tap t+1's
        # pixel i is tap t's pixel i+1, and does not keep broadcasts alive across taps (it did:
        # unrolled without it, the 3x3 layers spilled accumulators and ran 1.25-1.7x as long).
        opaque = ir.InlineAsm(ir.FunctionType(PTR, [PTR]), "", "=r,0", side_effect=True)
        row = b_row
        clamped = self._clamps_last_channel(len(vecs))
        for channel in range(channels):
            plane = _i64(spec.a_window_channel)
            if clamped:  # the k block's last channel: its own plane
                later = b.icmp_signed("<", b.add(kk, _i64((channel + 1) * len(taps))), kc)
                plane = b.select(later, plane, _i64(0))
            ahead_row = b.add(a_rows[-1], plane)
            for offset in taps:
                a_tap = b.call(opaque, [a_channel])
                # the tile's last pixel at this tap, a channel ahead (a plain GEP: see above)
                self._prefetch(b.gep(a_tap, [b.add(ahead_row, _i64(offset))], source_etype=F32))
                self._prefetch_b_ahead(row)
                accs = self._rank1(self._gep(a_tap, offset), row, vecs, a_rows, accs)
                row = b.gep(row, [b_stride], inbounds=True, source_etype=F32)
            a_channel = self._gep(a_channel, spec.a_window_channel)
        nxt = b.add(kk, _i64(channels * len(taps)), flags=("nsw",))
        out = [nxt, a_channel, row, *accs]
        for phi, value in zip(phis, out):
            phi.add_incoming(value, b.block)
        b.cbranch(more(nxt), body, after)
        b.position_at_end(after)
        merged = [b.phi(value.type) for value in state]
        for phi, entry, exit_value in zip(merged, state, out):
            phi.add_incoming(entry, before)
            phi.add_incoming(exit_value, body)
        return merged

    def _spills(self, vectors: int) -> bool:
        """Whether a tile of `vectors` vectors holds more than the vector registers."""
        return self.spec.mr * vectors + vectors + 1 > vector_registers(self.vw)

    def _clamps_last_channel(self, vectors: int) -> bool:
        """Whether a window tile of `vectors` vectors clamps its last channel's prefetches
        (`_channel_loop`): unless it spills a register and its k block has many channels."""
        spec = self.spec
        channels = min(spec.k, spec.kc) // (spec.a_window_h * spec.a_window_w)
        return not self._spills(vectors) or channels <= FEW_WINDOW_CHANNELS

    def _prefetches_next_panel(self) -> bool:
        return ROW_B_PREFETCH and self.spec.b_layout == "row" and self.spec.dtype == "f32"

    def _prefetches_b_ahead(self) -> bool:
        """Whether the tiles prefetch B's rows B_AHEAD_ROWS ahead of those they read: a GEMM
        (float or int8) whose packed B is a large weight."""
        spec = self.spec
        return (spec.b_layout == "packed" and spec.k >= B_AHEAD_ROWS
                and spec.k * spec.n * (4 if spec.dtype == "f32" else 1) >= B_AHEAD_MIN_BYTES)

    def _prefetches_c(self) -> bool:
        """Whether the tiles prefetch the lines of C they store (C_AHEAD_MIN_BYTES): a float
        window conv's large C, stored transposed."""
        spec = self.spec
        return (spec.dtype == "f32" and bool(spec.c_transposed)
                and spec.m * spec.n * 4 >= C_AHEAD_MIN_BYTES)

    def _prefetch_c_columns(self, c: ir.Value, vecs: list[_Vec]) -> None:
        """Prefetch for writing the lines of the tile's transposed C: in each of its columns
        (an output channel's plane, ldc apart) the run of its rows, whose first and last
        elements lie on the one or two lines the run covers. Columns past a masked tile's
        `cols` take its last one: nothing outside the tile's C is touched."""
        b = self.b
        last_row = b.sub(self.tile_rows, _i64(1))
        last_col = b.sub(self.tile_cols, _i64(1))
        for vec in vecs:
            for lane in range(self.vw if vec.lanes < 0 else vec.lanes):
                column = _i64(vec.offset + lane)
                if vec.lanes < 0:
                    column = self._min(column, last_col)
                start = b.mul(column, self.tile_ldc)
                for offset in (start, b.add(start, last_row)):
                    self._prefetch(self._gep(c, offset), write=True)

    def _b_row_lines(self) -> tuple[ir.Type, range]:
        """B's element type as the tiles index it, and the offsets of a row's 64-byte lines."""
        return F32, range(0, self.spec.nr, 16)

    def _prefetch_b_ahead(self, b_row: ir.Value) -> None:
        """Prefetch, a line at a time, B's row `b_ahead` elements on from `b_row` (the tile's
        argument: rows of this panel, then the next one's; 0 in the last panel, past which may
        lie no mapping)."""
        if self.b_ahead is None:
            return
        b = self.b
        etype, lines = self._b_row_lines()
        for line in lines:
            self._prefetch(b.gep(b_row, [b.add(self.b_ahead, _i64(line))], source_etype=etype))

    def _k_step(self, a, bp, kk, vecs, a_rows, accs, a_k, b_stride) -> list[ir.Value]:
        """One rank-1 update: acc[i][v] += A[i, kk] * B[kk, v].

        A row-major B (a 1x1 conv's X in W @ X) also prefetches row kk of the next panel, nr
        columns on: its rows are channel planes a plane apart, more streams than the hardware
        prefetchers follow, so each line came in on demand, from another core's cache where
        the kernel before split the channels (a depthwise conv) and this GEMM the pixels."""
        b = self.b
        b_row = self._gep(bp, b.mul(kk, b_stride))
        self._prefetch_b_ahead(b_row)
        if self._prefetches_next_panel():
            for column in range(0, self.spec.nr, 16):  # a 64-byte line each
                # A plain GEP: past the last panel it points past the row, which a prefetch may.
                self._prefetch(b.gep(b_row, [_i64(self.spec.nr + column)], source_etype=F32))
        return self._rank1(self._gep(a, b.mul(kk, a_k)), b_row, vecs, a_rows, accs)

    def _rank1(self, a_col, b_row, vecs, a_rows, accs) -> list[ir.Value]:
        """acc[i][v] += A's column (a_col + a_rows[i]) * B's row (b_row)."""
        spec, b = self.spec, self.b
        fma = self._intrinsic(f"llvm.fma.v{self.vw}f32", self.vec, [self.vec] * 3)
        # Panels are padded to nr columns, so even a partial vector loads whole.
        whole = spec.b_layout in ("packed", "window")
        b_vecs = [self._load(b_row, _Vec(v.offset, self.vw) if whole else v) for v in vecs]
        out = []
        for i, a_row in enumerate(a_rows):
            scalar = b.load(self._gep(a_col, a_row), typ=F32, align=4)
            broadcast = self._splat(scalar)
            for j, bv in enumerate(b_vecs):
                out.append(b.call(fma, [broadcast, bv, accs[i * len(vecs) + j]]))
        return out

    def _store_tile(self, c, values, tile) -> None:
        for value, (i, v) in zip(values, tile):
            self._store(value, self._gep(c, i * self.spec.ldc), v)

    def _epilogue(self, values, tile, bias, r_rows, row_index, r_values=None) -> list[ir.Value]:
        """act(acc + bias + R), in that order (ONNX: Gemm/Conv with bias, then Add, then Relu).
        R's row i starts at r_rows[i] (or its vectors are `r_values`, in tile order); a column
        bias's value for row i is bias[row_index[i]]."""
        spec, b = self.spec, self.b
        row_bias, col_bias = {}, {}
        out = []
        for index, (x, (i, v)) in enumerate(zip(values, tile)):
            if spec.bias == "row":
                if v.offset not in row_bias:
                    row_bias[v.offset] = self._load(bias, v)
                x = b.fadd(x, row_bias[v.offset], flags=FASTMATH_FLAGS)
            elif spec.bias == "col":
                if i not in col_bias:
                    scalar = b.load(self._gep(bias, row_index[i]), typ=F32, align=4)
                    col_bias[i] = self._splat(scalar)
                x = b.fadd(x, col_bias[i], flags=FASTMATH_FLAGS)
            if spec.residual:
                r = r_values[index] if r_values is not None else self._load(r_rows[i], v)
                x = b.fadd(x, r, flags=FASTMATH_FLAGS)
            out.append(self._activation(x))
        return out

    def _activation(self, x: ir.Value) -> ir.Value:
        """Compare-and-select, so a NaN input stays NaN (as onnxruntime's Relu/Clip)."""
        b, act, params = self.b, self.spec.activation, self.spec.activation_params
        if act in IN_PLACE and self.spec.c_transposed:
            assert act in IN_REGISTERS_TRANSPOSED, f"a transposed C cannot take {act} in its store"
            return in_registers(self, x)
        if act is None or act in IN_PLACE:  # applied after the store (`apply_in_place`)
            return x
        if act == "leaky_relu":
            scaled = b.fmul(x, self._splat_const(params[0]))
            return b.select(b.fcmp_ordered("<", x, self.zero), scaled, x)
        lo, hi = (0.0, math.inf) if act == "relu" else (0.0, 6.0) if act == "relu6" else params
        if lo != -math.inf:
            x = b.select(b.fcmp_ordered("<", x, self._splat_const(lo)), self._splat_const(lo), x)
        if hi != math.inf:
            x = b.select(b.fcmp_ordered(">", x, self._splat_const(hi)), self._splat_const(hi), x)
        return x

    # -- the loop nest ------------------------------------------------------------------------

    def emit(self) -> ir.Function:
        spec = self.spec
        range_fn = self._function(f"{self.name}_range", [PTR] * 5 + [I64] * 4,
                                  (*_POINTERS, "first_panel", "last_panel", "first_row", "last_row"),
                                  self.linkage)  # fmt: skip
        # One out-of-line copy of the loop nest however many kernels call this GEMM: inlining
        # it into each caller multiplied LLVM's O3 time (a 32x32 ResNet block: 14 s vs 2 s).
        range_fn.attributes.add("noinline")
        if spec.mr * spec.nr * min(spec.k, spec.kc) >= OPTNONE_MIN_TILE_MACS:
            # The loop nest only counts and calls tiles: unoptimised, it costs a few dozen
            # cycles a tile call against the tile's mr x nr x kc multiply-adds, and optimising
            # it took LLVM a quarter of ResNet-50's GEMM code time (whole module 2.58 -> 1.92
            # CPU-s). Run time, artifacts interleaved in one process, both orders: ResNet-50
            # 0.98, MobileNetV2 1.003-1.004, an MLP's matrix-vector products 0.99-1.02.
            # GEMMs whose tile calls do little work keep an optimised nest.
            range_fn.attributes.add("optnone")
        self.b = ir.IRBuilder(range_fn.append_basic_block("entry"))
        self._loop_nest(*range_fn.args)
        self.b.ret_void()

        fn = self._function(self.name, [PTR] * 5, _POINTERS, self.linkage)
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.b.call(range_fn, [*fn.args, _i64(0), _i64(spec.panels), _i64(0), _i64(spec.row_extent)])
        self.b.ret_void()
        return fn

    def _loop_nest(self, a, bp, c, bias, res, first_panel, last_panel, first_row, last_row) -> None:
        """jc (nc columns) / pc (kc of k) / ic (mc rows) / jr (one nr panel) / ir (mr rows)."""
        spec, b = self.spec, self.b
        rows = (first_row, last_row)
        j_begin = b.mul(first_panel, _i64(spec.nr))
        self.j_begin = j_begin  # where a "window" B starts
        j_end = self._min(b.mul(last_panel, _i64(spec.nr)), _i64(spec.n))
        n_full = spec.n - spec.n % spec.nr

        def jc_block(jc):
            jc_end = self._min(b.add(jc, _i64(spec.nc)), j_end)
            self._loop(_i64(0), _i64(spec.k), spec.kc, lambda pc: pc_block(jc, jc_end, pc))

        def pc_block(jc, jc_end, pc):
            kc = self._min(b.sub(_i64(spec.k), pc), _i64(spec.kc))
            load_c = b.icmp_signed("!=", pc, _i64(0))
            if spec.accumulate:
                load_c = ir.Constant(I1, 1)
            last = b.icmp_signed(">=", b.add(pc, _i64(spec.kc)), _i64(spec.k))
            flags = (kc, load_c, last)
            self._loop(first_row, last_row, spec.mc,
                       lambda ic: self._loop(jc, jc_end, spec.nr,
                                             lambda jr: panel(ic, pc, jr, flags)))  # fmt: skip

        def panel(ic, pc, jr, flags):
            if n_full == spec.n:
                self._row_tiles(ic, rows, pc, jr, spec.nr, flags, (a, bp, c, bias, res))
                return
            with b.if_else(b.icmp_signed("<", jr, _i64(n_full))) as (full, edge):
                with full:
                    self._row_tiles(ic, rows, pc, jr, spec.nr, flags, (a, bp, c, bias, res))
                with edge:
                    self._row_tiles(ic, rows, pc, jr, spec.n - n_full, flags, (a, bp, c, bias, res))

        self._loop(j_begin, j_end, spec.nc, jc_block)

    def _row_tiles(self, ic, rows, pc, jr, cols, flags, pointers) -> None:
        """The mr-row tiles of one panel within the mc block at ic (clipped to the row range);
        the block that ends the range at m also gets the m % mr remainder rows (the range and
        mc are multiples of mr, so only there)."""
        spec, b = self.spec, self.b
        if spec.a_group:
            self._group_row_tiles(ic, rows, pc, jr, cols, flags, pointers)
            return
        m_full = spec.m - spec.m % spec.mr
        last_row = rows[1]
        ic_end = self._min(self._min(b.add(ic, _i64(spec.mc)), last_row), _i64(m_full))

        def tile(ir_, rows):
            self._call_tile(rows, cols, ir_, pc, jr, flags, pointers)

        self._loop(ic, ic_end, spec.mr, lambda ir_: tile(ir_, spec.mr))
        if m_full != spec.m:
            last_block = b.and_(b.icmp_signed(">=", b.add(ic, _i64(spec.mc)), last_row),
                                b.icmp_signed(">", last_row, _i64(m_full)))
            self._if(last_block, lambda: tile(_i64(m_full), spec.m - m_full))

    def _group_row_tiles(self, ic, rows, pc, jr, cols, flags, pointers) -> None:
        """With `a_group` (an implicit-GEMM convolution): the tiles of the rows [ic, ic + mc)
        in the blocked numbering (`GemmSpec.row_extent`), each within one group of A's rows:
        block row r of group g is C's row g * a_group + r, A's at g's first row + r rows."""
        spec, b = self.spec, self.b
        group = spec.a_group
        per_group = -(-group // spec.mr) * spec.mr
        edge = group % spec.mr
        ic_end = self._min(b.add(ic, _i64(spec.mc)), rows[1])

        def tile(row):
            g = b.udiv(row, _i64(per_group))
            r = b.sub(row, b.mul(g, _i64(per_group)))
            if spec.a_image_groups:
                image = b.udiv(g, _i64(spec.a_image_groups))
                first = b.add(b.mul(image, _i64(spec.a_image_stride)),
                              b.mul(b.sub(g, b.mul(image, _i64(spec.a_image_groups))), _i64(spec.a_group_stride)))
            else:
                first = b.mul(g, _i64(spec.a_group_stride))
            a_off = b.add(first, b.mul(r, _i64(spec.a_row_stride)))
            c_row = b.add(b.mul(g, _i64(group)), r)
            if spec.c_transposed and spec.a_image_groups:
                # C[i, j] at j*ldc + i within an image, images n*ldc apart: a row offset of
                # image * (n*ldc - pixels per image) moves row i into its image.
                pixels = spec.a_image_groups * group
                c_row = b.add(c_row, b.mul(image, _i64(spec.n * spec.ldc - pixels)))
            if edge == 0:
                self._call_tile_at(spec.mr, cols, a_off, c_row, pc, jr, flags, pointers)
                return
            with b.if_else(b.icmp_signed("<=", b.add(r, _i64(spec.mr)), _i64(group))) as (full, last):
                with full:
                    self._call_tile_at(spec.mr, cols, a_off, c_row, pc, jr, flags, pointers)
                with last:
                    self._call_tile_at(edge, cols, a_off, c_row, pc, jr, flags, pointers)

        self._loop(ic, ic_end, spec.mr, tile)

    def _call_tile(self, rows, cols, i, pc, jr, flags, pointers) -> None:
        self._call_tile_at(rows, cols, self.b.mul(i, _i64(self.spec.a_row_stride)), i, pc, jr, flags, pointers)

    def _call_tile_at(self, rows, cols, a_off, i, pc, jr, flags, pointers) -> None:
        """The tile whose A starts `a_off` elements into A (+ column pc) and C at row i."""
        spec, b = self.spec, self.b
        a, bp, c, bias, res = pointers
        if spec.a_window_h:  # column pc of a window A: the first tap of channel pc / taps
            taps = spec.a_window_h * spec.a_window_w
            k_off = b.mul(b.udiv(pc, _i64(taps)), _i64(spec.a_window_channel))
        else:
            k_off = b.mul(pc, _i64(spec.a_k_stride))
        a_tile = self._gep(a, b.add(a_off, k_off))
        if spec.b_layout in ("packed", "window"):  # panel jr/nr of depth k, then kc rows of nr
            panel_start = b.sub(jr, self.j_begin) if spec.b_layout == "window" else jr
            b_off = b.add(b.mul(panel_start, _i64(spec.k)), b.mul(pc, _i64(spec.nr)))
        else:
            b_off = b.add(b.mul(pc, _i64(spec.ldb)), jr)
        c_off = b.add(b.mul(jr, _i64(spec.ldc)), i) if spec.c_transposed else b.add(b.mul(i, _i64(spec.ldc)), jr)
        bias_tile = {"row": jr, "col": i}.get(spec.bias)
        bias_tile = bias if bias_tile is None else self._gep(bias, bias_tile)
        res_tile = self._gep(res, c_off) if spec.residual else res
        vectors = -(-cols // self.vw)
        kernel = self._kernel(vectors, cols % self.vw != 0)
        b_stride = spec.nr if spec.b_layout in ("packed", "window") else spec.ldb
        sizes = [*map(_i64, (b_stride, spec.ldc, rows, cols))]
        b.call(kernel, [a_tile, self._gep(bp, b_off), self._gep(c, c_off), bias_tile, res_tile, *flags, *sizes,
                        *self._b_ahead_argument(jr)])

    def _b_ahead_argument(self, jr: ir.Value) -> list[ir.Value]:
        """The tile's `b_ahead` for panel `jr` (none where B is not prefetched ahead):
        B_AHEAD_ROWS rows of nr on, elements or bytes alike, but 0 in the last panel."""
        if not self._prefetches_b_ahead():
            return []
        b, spec = self.b, self.spec
        return [b.select(b.icmp_signed("<", b.add(jr, _i64(spec.nr)), _i64(spec.n)),
                         _i64(B_AHEAD_ROWS * spec.nr), _i64(0))]


class _Int8GemmEmitter(_GemmEmitter):
    """C(int32) = A(uint8) @ B(int8) [+ bias]: the same loop nest, a micro-kernel of dot
    products of four bytes per int32 lane. Offsets into A and B are in bytes; k runs in groups
    of four (B is zero-padded to them) and a last group of k % 4 reads only its bytes of A."""

    def __init__(self, *args):
        super().__init__(*args)
        self.vec = ir.VectorType(I32, self.vw)
        self.zero = ir.Constant(self.vec, [0] * self.vw)
        self.bytes = ir.VectorType(I8, 4 * self.vw)

    def _gep(self, base: ir.Value, offset: ir.Value | int, etype: ir.Type = I32) -> ir.Value:
        if isinstance(offset, int):
            if offset == 0:
                return base
            offset = _i64(offset)
        return self.b.gep(base, [offset], inbounds=True, source_etype=etype)

    def _load(self, base: ir.Value, vec: _Vec) -> ir.Value:
        ptr = self._gep(base, vec.offset)
        if vec.lanes == self.vw:
            return self.b.load(ptr, typ=self.vec, align=4)
        fn = self._intrinsic(f"llvm.masked.load.v{self.vw}i32.p0", self.vec,
                             [PTR, I32, ir.VectorType(I1, self.vw), self.vec])  # fmt: skip
        return self.b.call(fn, [ptr, ir.Constant(I32, 4), self._mask(vec.lanes), self.zero])

    def _store(self, value: ir.Value, base: ir.Value, vec: _Vec) -> None:
        ptr = self._gep(base, vec.offset)
        if vec.lanes == self.vw:
            self.b.store(value, ptr, align=4)
            return
        fn = self._intrinsic(f"llvm.masked.store.v{self.vw}i32.p0", VOID,
                             [self.vec, PTR, I32, ir.VectorType(I1, self.vw)])  # fmt: skip
        self.b.call(fn, [value, ptr, ir.Constant(I32, 4), self._mask(vec.lanes)])

    def _dot(self, acc: ir.Value, a_word: ir.Value, b_bytes: ir.Value) -> ir.Value:
        """acc + the sums of four u8 (the word of A, every lane) x s8 (B) products per lane."""
        b = self.b
        a_bytes = b.bitcast(self._splat(a_word), self.bytes)
        if self.spec.dot == "vpdpbusd":
            bits = 32 * self.vw
            name = "llvm.x86.avx512.vpdpbusd.512" if bits == 512 else f"llvm.x86.avx512.vpdpbusd.{bits}"
            fn = self._intrinsic(name, self.vec, [self.vec, self.bytes, self.bytes])
            return b.call(fn, [acc, a_bytes, b_bytes])
        # Products and sums in int32 (exact), from operands that fit int16: LLVM makes the
        # pairwise sums one vpmaddwd (int16 x int16 -> int32 pairs), never vpmaddubsw's
        # saturating int16 pair sums.
        i32s = ir.VectorType(I32, 4 * self.vw)
        products = b.mul(b.zext(a_bytes, i32s), b.sext(b_bytes, i32s), flags=("nsw",))

        def halves(value, lanes):
            even = b.shuffle_vector(value, value, ir.Constant(ir.VectorType(I32, lanes), list(range(0, 2 * lanes, 2))))
            odd = b.shuffle_vector(value, value, ir.Constant(ir.VectorType(I32, lanes), list(range(1, 2 * lanes, 2))))
            return b.add(even, odd)

        return b.add(acc, halves(halves(products, 2 * self.vw), self.vw))

    def _a_words(self, a: ir.Value, offset: ir.Value, rows: int, partial: ir.Value | None) -> list[ir.Value]:
        """Four bytes of each of A's rows at byte `offset` as one i32; with `partial`, only
        the first `partial` (1-3) bytes are read, the others are zero."""
        b, spec = self.b, self.spec
        words = []
        for i in range(rows):
            ptr = self._gep(a, b.add(offset, _i64(i * spec.a_row_stride)), I8)
            if partial is None:
                words.append(b.load(ptr, typ=I32, align=1))
                continue
            v4 = ir.VectorType(I8, 4)
            lanes = ir.Constant(ir.VectorType(I64, 4), [0, 1, 2, 3])
            mask = b.icmp_unsigned("<", lanes, self._splat_i64(partial))
            fn = self._intrinsic("llvm.masked.load.v4i8.p0", v4, [PTR, I32, ir.VectorType(I1, 4), v4])
            loaded = b.call(fn, [ptr, ir.Constant(I32, 1), mask, ir.Constant(v4, [0] * 4)])
            words.append(b.bitcast(loaded, I32))
        return words

    def _splat_i64(self, value: ir.Value) -> ir.Value:
        typ = ir.VectorType(I64, 4)
        one = self.b.insert_element(ir.Constant(typ, ir.Undefined), value, ir.Constant(I32, 0))
        return self.b.shuffle_vector(one, ir.Constant(typ, ir.Undefined), ir.Constant(ir.VectorType(I32, 4), [0] * 4))

    def _b_row_lines(self) -> tuple[ir.Type, range]:
        """In bytes: a quad's row of B is 4 * nr bytes (so B_AHEAD_ROWS rows on, `b_ahead`,
        is B_AHEAD_ROWS * nr bytes)."""
        return I8, range(0, 4 * self.spec.nr, 64)

    def _tile_function(self, rows: int, cols: int) -> ir.Function:
        """This GEMM's tile of rows x cols (with `b_ahead` last where B is prefetched ahead)."""
        ahead = self._prefetches_b_ahead()
        fn = self._function(f"{self.name}.tile{rows}x{cols}", [PTR] * 5 + [I64, I1, I1] + ([I64] if ahead else []),
                            (*_POINTERS, "kc", "load_c", "last", *(("b_ahead",) if ahead else ())), "internal")
        self.b_ahead = fn.args[8] if ahead else None
        return fn

    def _quad_step(self, a, bp, quad, vecs, rows, accs, partial=None) -> list[ir.Value]:
        """acc[i][v] += the dot of A[i, 4q:4q+4] and B[4q:4q+4, v]'s columns."""
        b = self.b
        b_row = self._gep(bp, b.mul(quad, _i64(4 * self.spec.nr)), I8)
        self._prefetch_b_ahead(b_row)
        b_vecs = [b.load(self._gep(b_row, 4 * v.offset, I8), typ=self.bytes, align=1) for v in vecs]
        words = self._a_words(a, b.mul(quad, _i64(4)), rows, partial)
        return [self._dot(accs[i * len(vecs) + j], words[i], bv)
                for i in range(rows) for j, bv in enumerate(b_vecs)]

    def _kernel(self, rows: int, cols: int) -> ir.Function:
        """As the float kernel, with kc's k values in groups of four, then its k % 4 tail."""
        if (rows, cols) in self.kernels:
            return self.kernels[rows, cols]
        if self.spec.a_k_run:
            return self._run_kernel(rows, cols)
        fn = self._tile_function(rows, cols)
        self.kernels[rows, cols] = fn
        saved, self.b = self.b, ir.IRBuilder(fn.append_basic_block("entry"))
        a, bp, c, bias, res, kc, load_c, last = fn.args[:8]
        spec, b, vecs = self.spec, self.b, self._vectors(cols)
        tile = [(i, v) for i in range(rows) for v in vecs]
        blocks = {name: fn.append_basic_block(name) for name in ("load_c", "start", "k", "k.end", "tail", "done")}

        def merge(pairs):
            phis = [b.phi(self.vec) for _ in tile]
            for values, block in pairs:
                for phi, value in zip(phis, values):
                    phi.add_incoming(value, block)
            return phis

        entry = b.block
        b.cbranch(load_c, blocks["load_c"], blocks["start"])
        b.position_at_end(blocks["load_c"])
        loaded = [self._load(self._gep(c, i * spec.ldc), v) for i, v in tile]
        b.branch(blocks["start"])

        b.position_at_end(blocks["start"])
        initial = merge([([self.zero] * len(tile), entry), (loaded, blocks["load_c"])])
        quads = b.lshr(kc, _i64(2))
        b.cbranch(b.icmp_signed(">", quads, _i64(0)), blocks["k"], blocks["k.end"])

        b.position_at_end(blocks["k"])
        q = b.phi(I64, "q")
        accs = merge([(initial, blocks["start"])])
        updated = self._quad_step(a, bp, q, vecs, rows, accs)
        nxt = b.add(q, _i64(1), flags=("nsw",))
        q.add_incoming(_i64(0), blocks["start"])
        q.add_incoming(nxt, b.block)
        for acc, new in zip(accs, updated):
            acc.add_incoming(new, b.block)
        b.cbranch(b.icmp_signed("<", nxt, quads), blocks["k"], blocks["k.end"])
        loop_end = b.block

        b.position_at_end(blocks["k.end"])
        summed = merge([(initial, blocks["start"]), (updated, loop_end)])
        rest = b.and_(kc, _i64(3))
        b.cbranch(b.icmp_signed("!=", rest, _i64(0)), blocks["tail"], blocks["done"])

        b.position_at_end(blocks["tail"])
        tail = self._quad_step(a, bp, quads, vecs, rows, summed, partial=rest)
        tail_end = b.block
        b.branch(blocks["done"])

        b.position_at_end(blocks["done"])
        final = merge([(summed, blocks["k.end"]), (tail, tail_end)])
        if spec.requantize:  # one kc block takes all of k (GemmSpec), so this call is the last
            self._requantize_store(c, self._epilogue(final, tile, bias, res), tile, res)
            b.ret_void()
            self.b = saved
            return fn
        with b.if_else(last) as (with_epilogue, plain):
            with with_epilogue:
                self._store_tile(c, self._epilogue(final, tile, bias, res), tile)
            with plain:
                self._store_tile(c, final, tile)
        b.ret_void()
        self.b = saved
        return fn

    def _epilogue(self, values, tile, bias, res) -> list[ir.Value]:
        if self.spec.bias is None:
            return values
        row_bias: dict[int, ir.Value] = {}
        out = []
        for x, (_, v) in zip(values, tile):
            if v.offset not in row_bias:
                row_bias[v.offset] = self._load(bias, v)
            out.append(self.b.add(x, row_bias[v.offset]))
        return out

    def _requantize_store(self, c, values, tile, multipliers) -> None:
        """C[i, j] = saturate(round_half_even(f32(acc) * multiplier[j]) + y_zero), as
        passes/lowering/rules/quantize.py's `requantize` computes it (no contraction: the
        product is rounded on its own), stored as bytes."""
        b, spec = self.b, self.spec
        fvec, bytes_vec = ir.VectorType(F32, self.vw), ir.VectorType(I8, self.vw)
        low, high = (0.0, 255.0) if spec.requantize == "u8" else (-128.0, 127.0)
        round_even = self._intrinsic(f"llvm.roundeven.v{self.vw}f32", fvec, [fvec])

        def splat(value: float) -> ir.Constant:
            return ir.Constant(fvec, [value] * self.vw)

        scale: dict[int, ir.Value] = {}
        for x, (i, v) in zip(values, tile):
            if v.offset not in scale:
                ptr = self.b.gep(multipliers, [_i64(v.offset)], inbounds=True, source_etype=F32)
                if v.lanes == self.vw:
                    scale[v.offset] = b.load(ptr, typ=fvec, align=4)
                else:
                    load = self._intrinsic(f"llvm.masked.load.v{self.vw}f32.p0", fvec,
                                           [PTR, I32, ir.VectorType(I1, self.vw), fvec])
                    scale[v.offset] = b.call(load, [ptr, ir.Constant(I32, 4), self._mask(v.lanes), splat(0.0)])
            q = b.call(round_even, [b.fmul(b.sitofp(x, fvec), scale[v.offset])])
            q = b.fadd(q, splat(float(spec.y_zero)))
            q = b.select(b.fcmp_ordered("<", q, splat(low)), splat(low), q)
            q = b.select(b.fcmp_ordered(">", q, splat(high)), splat(high), q)
            out = b.trunc(b.fptosi(q, self.vec), bytes_vec)
            ptr = self._gep(c, i * spec.ldc + v.offset, I8)
            if v.lanes == self.vw:
                b.store(out, ptr, align=1)
            elif v.lanes == 1:
                # Not a one-lane masked store: LLVM 20's x86 back end makes a truncating masked
                # store with one constant lane a 4-byte `vmovss`, 3 bytes past C's column.
                b.store(b.extract_element(out, ir.Constant(I32, 0)), ptr)
            else:
                store = self._intrinsic(f"llvm.masked.store.v{self.vw}i8.p0", VOID,
                                        [bytes_vec, PTR, I32, ir.VectorType(I1, self.vw)])
                b.call(store, [out, ptr, ir.Constant(I32, 1), self._mask(v.lanes)])

    def _run_kernel(self, rows: int, cols: int) -> ir.Function:
        """The tile of an implicit-GEMM A (`a_k_run`): k is k / a_k_run runs of a_k_run bytes,
        a_k_run_stride apart in A (a kernel row of the padded input), packed B's groups of four
        k in order; one k block, requantized in the store."""
        fn = self._tile_function(rows, cols)
        self.kernels[rows, cols] = fn
        saved, self.b = self.b, ir.IRBuilder(fn.append_basic_block("entry"))
        a, bp, c, bias, res, _, _, _ = fn.args[:8]
        spec, b, vecs = self.spec, self.b, self._vectors(cols)
        tile = [(i, v) for i in range(rows) for v in vecs]
        quads, runs = spec.a_k_run // 4, spec.k // spec.a_k_run
        entry = b.block
        run_bb, k_bb, next_bb, done_bb = (fn.append_basic_block(n) for n in ("run", "k", "run.next", "done"))
        b.branch(run_bb)

        b.position_at_end(run_bb)
        run = b.phi(I64, "run")
        run_accs = [b.phi(self.vec) for _ in tile]
        a_run = self._gep(a, b.mul(run, _i64(spec.a_k_run_stride)), I8)
        b_run = self._gep(bp, b.mul(run, _i64(spec.a_k_run * spec.nr)), I8)
        b.branch(k_bb)

        b.position_at_end(k_bb)
        q = b.phi(I64, "q")
        accs = [b.phi(self.vec) for _ in tile]
        updated = self._quad_step(a_run, b_run, q, vecs, rows, accs)
        nxt = b.add(q, _i64(1), flags=("nsw",))
        q.add_incoming(_i64(0), run_bb)
        q.add_incoming(nxt, b.block)
        for acc, start, new in zip(accs, run_accs, updated):
            acc.add_incoming(start, run_bb)
            acc.add_incoming(new, b.block)
        b.cbranch(b.icmp_signed("<", nxt, _i64(quads)), k_bb, next_bb)

        b.position_at_end(next_bb)
        run_next = b.add(run, _i64(1), flags=("nsw",))
        run.add_incoming(_i64(0), entry)
        run.add_incoming(run_next, next_bb)
        for acc, new in zip(run_accs, updated):
            acc.add_incoming(self.zero, entry)
            acc.add_incoming(new, next_bb)
        b.cbranch(b.icmp_signed("<", run_next, _i64(runs)), run_bb, done_bb)

        b.position_at_end(done_bb)
        self._requantize_store(c, self._epilogue(updated, tile, bias, res), tile, res)
        b.ret_void()
        self.b = saved
        return fn

    def _call_tile_at(self, rows, cols, a_off, i, pc, jr, flags, pointers) -> None:
        """The tile whose A starts `a_off` bytes into A (+ column pc) and C at row i."""
        spec, b = self.spec, self.b
        a, bp, c, bias, res = pointers
        k4 = -(-spec.k // 4) * 4
        a_tile = self._gep(a, b.add(a_off, pc), I8)
        b_tile = self._gep(bp, b.add(b.mul(jr, _i64(k4)), b.mul(pc, _i64(spec.nr))), I8)
        c_tile = self._gep(c, b.add(b.mul(i, _i64(spec.ldc)), jr), I8 if spec.requantize else I32)
        bias_tile = self._gep(bias, jr) if spec.bias == "row" else bias
        res_tile = self._gep(res, jr, F32) if spec.requantize else res
        b.call(self._kernel(rows, cols), [a_tile, b_tile, c_tile, bias_tile, res_tile, *flags,
                                          *self._b_ahead_argument(jr)])
