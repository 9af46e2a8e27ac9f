"""The generated GEMM kernels (dlc/codegen/ukernels.py) against numpy: ragged shapes, layouts,
strides, epilogues, vector widths, blocking and panel ranges; out-of-bounds access is detected
with NaN guards around every buffer. Also the micro-kernel's contract (dialects/gemm_ukernel.py):
tiles, packing, padding and the thread grid."""

from __future__ import annotations

import ctypes
import random
import re
from dataclasses import replace

import numpy as np
import pytest
from llvmlite import ir

from dialects.gemm_ukernel import (
    CACHE_LINE_FLOATS,
    CORE_BYTES_PER_S,
    CORE_FLOPS,
    THREAD_SECONDS,
    GemmSpec,
    a_rows_alias,
    choose_tiles,
    pack_b,
    pad_a_rows,
    runs_serially,
    thread_grid,
    thread_grids,
)
from dlc.codegen.native import compile_object
from dlc.codegen.ukernels import emit_gemm
from dlc.runtime import aligned_empty
from dlc.runtime.mcjit import NativeModule

GUARD = 64  # floats of NaN after every input and around C
EPS32 = np.finfo(np.float32).eps
PARAMS = {"clip": (-0.5, 0.75), "leaky_relu": (0.1,)}
# Tiles are chosen for the reference machine's caches, whatever host runs the tests.
CACHES = {"l1_bytes": 48 * 1024, "l2_bytes": 2 * 1024 * 1024}


def _spec(m, n, k, *, transposed_a=False, layout="packed", pad=0, **options) -> GemmSpec:
    a_strides = (1, m + pad) if transposed_a else (k + pad, 1)
    options.setdefault("activation_params", PARAMS.get(options.get("activation"), ()))
    return GemmSpec(m, n, k, *a_strides, b_layout=layout, ldb=n + pad, ldc=n + pad, **CACHES,
                    **options)


def _random_cases(count: int, seed: int = 0) -> list[GemmSpec]:
    rng = random.Random(seed)
    specs = []
    for _ in range(count):
        m, n, k = (rng.randint(1, 70) for _ in range(3))
        activation = rng.choice([None, "relu", "relu6", "clip", "leaky_relu"])
        specs.append(_spec(m, n, k, transposed_a=rng.random() < 0.3,
                           layout=rng.choice(["packed", "row"]), pad=rng.choice([0, 3]),
                           accumulate=rng.random() < 0.3, bias=rng.choice([None, "row", "col"]),
                           activation=activation, residual=rng.random() < 0.3,
                           vector_width=rng.choice([16, 16, 8, 4, 1])))  # fmt: skip
    return specs


def _edge_cases() -> list[GemmSpec]:
    one = {"bias": "row", "activation": "relu", "residual": True}
    specs = [_spec(1, 1, 1, **one), _spec(1, 1000, 37, **one), _spec(1, 17, 300),
             _spec(45, 1, 20, bias="col"), _spec(33, 47, 1, accumulate=True),
             _spec(64, 64, 64, layout="row", bias="col", activation="relu6"),
             _spec(70, 70, 70, transposed_a=True, pad=5, residual=True, accumulate=True)]  # fmt: skip
    # Small blocks, so every loop of the nest runs several ragged iterations.
    blocked = {"mr": 3, "nr": 32, "kc": 5, "mc": 6, "nc": 64, "bias": "row", "activation": "relu"}
    specs += [_spec(40, 150, 23, **blocked), _spec(40, 150, 23, layout="row", accumulate=True,
                                                     **blocked)]  # fmt: skip
    for width in (16, 8, 4, 1):
        specs.append(_spec(29, 53, 31, vector_width=width, bias="row", residual=True))
    return specs


SPECS = _random_cases(48) + _edge_cases()


def compile_gemms(specs) -> tuple[NativeModule, dict, dict]:
    """All `specs` in one LLVM module (one compilation): the module, and each spec's GEMM and
    range function by index, callable through ctypes."""
    module = ir.Module("gemms")
    for index, spec in enumerate(specs):
        emit_gemm(module, f"gemm{index}", spec, exported=True)
    native = NativeModule(compile_object(str(module)))
    signature = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5)
    range_signature = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5, *[ctypes.c_int64] * 4)
    functions = {i: signature(native.address(f"gemm{i}")) for i in range(len(specs))}
    ranges = {i: range_signature(native.address(f"gemm{i}_range")) for i in range(len(specs))}
    return native, functions, ranges


@pytest.fixture(scope="module")
def kernels():
    return compile_gemms(SPECS)


def _guarded(values: np.ndarray) -> np.ndarray:
    """A 64-byte aligned flat copy of `values` followed by NaNs: reading past it poisons C."""
    out = aligned_empty(values.size + GUARD, np.float32)
    out[:] = np.nan
    out[: values.size] = values.ravel()
    return out


class Problem:
    """Random operands for a spec, laid out as the spec says, and the float64 reference."""

    def __init__(self, spec: GemmSpec, seed: int):
        rng = np.random.default_rng(seed)
        m, n, k = spec.m, spec.n, spec.k
        self.spec = spec
        self.a = rng.standard_normal((m, k)).astype(np.float32)
        self.b = rng.standard_normal((k, n)).astype(np.float32)
        a_flat = np.full(max(m - 1, 0) * spec.a_row_stride + (k - 1) * spec.a_k_stride + 1, np.nan)
        rows, cols = np.indices((m, k))
        a_flat[rows * spec.a_row_stride + cols * spec.a_k_stride] = self.a
        self.a_buf = _guarded(a_flat)
        if spec.b_layout == "packed":
            self.b_buf = _guarded(pack_b(self.b, spec.nr))
        else:
            b_padded = np.full((k, spec.ldb), np.nan, np.float32)
            b_padded[:, :n] = self.b
            self.b_buf = _guarded(b_padded)
        bias_len = {"row": n, "col": m}.get(spec.bias, 0)
        self.bias = rng.standard_normal(bias_len).astype(np.float32)
        self.residual = rng.standard_normal((m, spec.ldc)).astype(np.float32)
        self.c0 = rng.standard_normal((m, spec.ldc)).astype(np.float32)
        if not spec.accumulate:
            self.c0[:, :n] = np.nan  # must be overwritten, never read
        # C sits between two NaN guards; its padding columns (ldc > n) must stay as they are.
        self.c_buf = _guarded(np.concatenate([np.full(GUARD, np.nan, np.float32), self.c0.ravel()]))

    def c_view(self) -> np.ndarray:
        return self.c_buf[GUARD : GUARD + self.c0.size].reshape(self.c0.shape)

    def pointers(self) -> tuple:
        bias = _guarded(self.bias) if self.spec.bias else None
        res = _guarded(self.residual) if self.spec.residual else None
        self._keep = (bias, res)
        return (self.a_buf.ctypes.data, self.b_buf.ctypes.data,
                self.c_buf.ctypes.data + 4 * GUARD,
                None if bias is None else bias.ctypes.data, None if res is None else res.ctypes.data)  # fmt: skip

    def expected(self) -> tuple[np.ndarray, np.ndarray]:
        """(result, error bound): fp32 sums of k products may be reassociated, so each element
        may be off by k*eps times the sum of magnitudes (Higham's gamma_k bound), not more."""
        spec, n = self.spec, self.spec.n
        a, b = self.a.astype(np.float64), self.b.astype(np.float64)
        total, magnitude = a @ b, np.abs(a) @ np.abs(b)
        extra = np.zeros_like(total)
        if spec.accumulate:
            extra += self.c0[:, :n]
        if spec.bias == "row":
            extra += self.bias[None, :]
        elif spec.bias == "col":
            extra += self.bias[:, None]
        if spec.residual:
            extra += self.residual[:, :n]
        total = total + extra
        bound = (spec.k + 4) * EPS32 * (magnitude + np.abs(extra)) + 1e-30
        return _activate(total, spec), bound


def _activate(x: np.ndarray, spec: GemmSpec) -> np.ndarray:
    act, params = spec.activation, spec.activation_params
    if act == "relu":
        return np.maximum(x, 0)
    if act == "relu6":
        return np.clip(x, 0, 6)
    if act == "clip":
        return np.clip(x, *params)
    if act == "leaky_relu":
        return np.where(x < 0, x * params[0], x)
    return x


def _check(problem: Problem) -> None:
    spec, c = problem.spec, problem.c_view()
    want, bound = problem.expected()
    error = np.abs(c[:, : spec.n] - want)
    assert not np.isnan(c[:, : spec.n]).any(), f"NaN in C (out-of-bounds read?) for {spec}"
    assert (error <= bound).all(), f"max error {error.max()} over bound for {spec}"
    np.testing.assert_array_equal(c[:, spec.n :], problem.c0[:, spec.n :], "wrote past n")
    assert np.isnan(problem.c_buf[:GUARD]).all() and np.isnan(problem.c_buf[GUARD + c.size :]).all()


@pytest.mark.parametrize("index", range(len(SPECS)))
def test_matches_numpy(kernels, index):
    _native, functions, _ranges = kernels
    problem = Problem(SPECS[index], seed=index)
    functions[index](*problem.pointers())
    _check(problem)


def test_gemms_of_different_sizes_share_micro_kernel_tiles():
    """GEMMs that agree on A's strides, the register tile and the epilogue call one tile
    function per column width (k, ldb, ldc and the edge rows and columns are its arguments),
    and each still matches numpy, at awkward sizes, several kc blocks and ragged edges."""
    tiles = {"mr": 6, "nr": 32, "kc": 16, "mc": 12, "nc": 64}
    shapes = [(1, 7, 17), (7, 17, 65), (17, 65, 1), (65, 33, 7), (13, 64, 40)]
    specs = [GemmSpec(m, n, k, 72, 1, "row", n + 3, n + 5, bias="col", activation="relu",
                      vector_width=16, **tiles, **CACHES) for m, n, k in shapes]  # fmt: skip
    module = ir.Module("shared")
    for index, spec in enumerate(specs):
        emit_gemm(module, f"g{index}", spec, exported=True)
    text = str(module)
    callers: dict[str, set[str]] = {}
    for chunk in re.split(r"\n(?=define )", text):
        caller = re.match(r'define [^@]*@"([^"]+)"', chunk)
        for tile in re.findall(r'call void @"(dlc_gemm_tile_[^"]+)"', chunk):
            callers.setdefault(tile, set()).add(caller.group(1))
    defined = re.findall(r'^define internal void @"(dlc_gemm_tile_[^"]+)"', text, re.M)
    assert sorted(defined) == sorted(callers) and len(defined) == 3, callers
    # Every range driver has a whole-panel branch; n=7, 65 and 33 end in one masked vector.
    users = sorted(len(names) for names in callers.values())
    assert users == [1, 3, 5], callers
    native = NativeModule(compile_object(text))
    signature = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5)
    for index, spec in enumerate(specs):
        problem = Problem(spec, seed=100 + index)
        signature(native.address(f"g{index}"))(*problem.pointers())
        _check(problem)


# A residual read from C itself (overwrite-dead-residuals): ragged edges, narrow vectors, a
# column bias, a k far past the kc the caches would choose (k is then one block).
IN_C = [_spec(29, 53, 31, bias="row", activation="relu", residual=True),
        _spec(29, 53, 31, vector_width=8, bias="col", activation="relu6", residual=True),
        _spec(40, 150, 23, mr=3, nr=32, mc=6, nc=64, kc=23, residual=True),
        _spec(20, 40, 3000, pad=3, bias="row", activation="relu", residual=True)]  # fmt: skip


@pytest.mark.parametrize("index", range(len(IN_C)))
def test_a_residual_read_from_c_gives_the_bits_of_a_separate_one(index):
    """C already holding R, the GEMM that reads R from C stores, bit for bit, what the same GEMM
    with R apart stores; its columns past n stay as they were, and k is one block."""
    apart = IN_C[index]
    in_c = GemmSpec(**{f: getattr(apart, f) for f in apart.__dataclass_fields__
                       if f not in ("kc", "mc", "nc", "mr", "nr")} | {"residual_in_c": True},
                    **{t: getattr(apart, t) for t in ("mr", "nr", "mc", "nc")})
    assert in_c.kc >= in_c.k and (apart.k < 1000 or apart.kc < apart.k)  # the last splits k apart
    native, functions, _ranges = compile_gemms([apart, in_c])
    separate = Problem(apart, seed=7)
    functions[0](*separate.pointers())
    _check(separate)
    overwritten = Problem(in_c, seed=7)
    overwritten.c_view()[:, : in_c.n] = overwritten.residual[:, : in_c.n]
    a, b, c, bias, _res = overwritten.pointers()
    functions[1](a, b, c, bias, c)
    np.testing.assert_array_equal(overwritten.c_view(), separate.c_view())
    assert "noalias" not in native_ir_of(in_c)


def native_ir_of(spec: GemmSpec) -> str:
    module = ir.Module("one")
    emit_gemm(module, "g", spec, exported=True)
    return str(module)


def test_a_residual_read_from_c_needs_k_in_one_block():
    with pytest.raises(ValueError, match="one block"):
        _spec(16, 32, 64, residual=True, residual_in_c=True, mr=4, nr=32, kc=32, mc=8, nc=32)
    with pytest.raises(ValueError, match="residual_in_c"):
        _spec(16, 32, 64, residual_in_c=True)


@pytest.mark.parametrize("index", [i for i, s in enumerate(SPECS) if s.panels >= 3 and s.row_blocks >= 3][:6])
def test_blocks_of_a_thread_grid_cover_the_whole(kernels, index):
    """Disjoint blocks of rows x panels (what the threads of a grid run) together compute the
    whole product, the m % mr remainder rows included, each element once."""
    _native, _functions, ranges = kernels
    spec = SPECS[index]
    problem = Problem(spec, seed=index)
    pointers, panels, blocks = problem.pointers(), spec.panels, spec.row_blocks
    row_cuts = [0, spec.mr, (blocks - 1) * spec.mr, spec.m]  # the last block ends at m
    panel_cuts = [0, 1, panels - 1, panels]
    for first_row, last_row in zip(row_cuts, row_cuts[1:]):
        for first, last in zip(panel_cuts, panel_cuts[1:]):
            ranges[index](*pointers, first, last, first_row, last_row)
    _check(problem)


@pytest.mark.parametrize("blocks, panels, threads, tiles, grid", [
    # 1x1 conv 512 -> 2048 on 7x7: rows, so each thread reads half of the 4 MB of weights
    (158, 2, 2, (13, 32, 512), (2, 1)),
    # 1x1 conv 256 -> 64 on 56x56 (5 row blocks, 98 panels): columns
    (5, 98, 2, (13, 32, 256), (1, 2)),
    (37, 2, 16, (14, 32, 4608), (8, 2)),   # a 7x7 layer on 16 threads: rows and both panels
    (1, 40, 4, (1, 64, 2048), (1, 4)),     # one row block (a GEMV): columns only
    (5, 1, 8, (13, 32, 256), (5, 1)),      # one panel: rows only, 5 blocks -> 5 threads
    (10, 24, 2, (13, 32, 768), (1, 2)),    # a transformer projection: columns (B is the big one)
    # 66 panels of a 56x56 3x3 conv: 14 parts of 5 panels end as soon as 16 parts of 4-5 would
    (8, 66, 16, (8, 48, 576), (1, 14)),
    # 2 MFLOP (~13 us on one core): 10 threads, not 16 woken for less than a microsecond each
    (2, 20, 16, (8, 48, 64), (1, 10)),
])
def test_thread_grid_minimises_the_busiest_parts_time(blocks, panels, threads, tiles, grid):
    mr, nr, k = tiles
    assert thread_grid(blocks, panels, threads, mr=mr, nr=nr, k=k) == grid

    def seconds(tm, tn):
        row_part, col_part = -(-blocks // tm), -(-panels // tn)
        return (row_part * col_part * mr * nr * k * 2 / CORE_FLOPS
                + 4 * k * (row_part * mr + col_part * nr) / CORE_BYTES_PER_S + THREAD_SECONDS * (tm * tn - 1))

    every = [(tm, tn) for tm in range(1, threads + 1) for tn in range(1, threads // tm + 1)
             if tm <= blocks and tn <= panels]
    assert grid[0] * grid[1] <= threads
    assert seconds(*grid) == min(seconds(*g) for g in every)


@pytest.mark.parametrize("blocks, panels, tiles", [
    (37, 2, (14, 32, 4608)), (8, 66, (8, 48, 576)), (224, 4, (14, 32, 576)),
    (200, 64, (14, 32, 64)), (1, 1, (1, 16, 1)),
])
def test_thread_grids_table_is_thread_grid_for_each_count(blocks, panels, tiles):
    """The compile-time table (one pass over the grids) is the one search per thread count."""
    mr, nr, k = tiles
    assert thread_grids(blocks, panels, 64, mr=mr, nr=nr, k=k) == [
        thread_grid_by_search(blocks, panels, t, mr, nr, k) for t in range(1, 65)]


def thread_grid_by_search(blocks, panels, threads, mr, nr, k):
    def key(grid):
        tm, tn = grid
        row_part, col_part = -(-blocks // tm), -(-panels // tn)
        return (row_part * col_part * mr * nr * k * 2 / CORE_FLOPS
                + 4 * k * (row_part * mr + col_part * nr) / CORE_BYTES_PER_S + THREAD_SECONDS * (tm * tn - 1), grid)

    return min(((tm, tn) for tm in range(1, min(threads, blocks) + 1)
                for tn in range(1, min(threads // tm, panels) + 1)), key=key)


@pytest.mark.parametrize("blocks, panels, tiles, serial", [
    (1, 16, (1, 64, 512), False),   # ResNet-18's classifier: 0.5 M MACs, but 2 MB of weights
    (1, 20, (1, 64, 1280), False),  # MobileNetV2's: 1.3 M MACs, 5 MB
    (11, 2, (6, 32, 64), True),     # 64x64x64: a quarter million MACs, 16 KB of weights
    (1, 1, (1, 64, 4096), True),    # one tile: nothing to split
    (1, 4, (1, 64, 64), True),      # a 1x256x64 layer: 16 K MACs and 64 KB, ~4 us
])
def test_a_gemm_runs_serially_only_where_one_core_is_quick(blocks, panels, tiles, serial):
    """The serial rule counts the bytes a GEMM streams as well as its FLOPs: a classifier of
    few MACs and megabytes of weights is worth a parallel region."""
    mr, nr, k = tiles
    assert runs_serially(blocks, panels, mr=mr, nr=nr, k=k) == serial


def test_nan_propagates_through_relu():
    spec = _spec(2, 16, 3, activation="relu", layout="row")
    module = ir.Module("nan")
    emit_gemm(module, "gemm", spec, exported=True)
    native = NativeModule(compile_object(str(module)))
    fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5)(native.address("gemm"))
    a = _guarded(np.array([[np.nan, 0, 0], [-1, 0, 0]], np.float32))
    b = _guarded(np.ones((3, 16), np.float32))
    c = aligned_empty((2, 16), np.float32)
    fn(a.ctypes.data, b.ctypes.data, c.ctypes.data, None, None)
    assert np.isnan(c[0]).all() and (c[1] == 0).all()


def test_ir_uses_masks_fma_and_no_unsafe_fast_math():
    module = ir.Module("text")
    emit_gemm(module, "g", _spec(5, 20, 7, bias="row", activation="relu"))
    text = str(module)
    assert "llvm.masked.store.v16f32" in text and "llvm.fma.v16f32" in text
    assert (
        '"prefer-vector-width"="512"' in text
        and 'define internal void @"g"(ptr captures(none) noalias %"A"' in text
    )
    assert "nnan" not in text and "ninf" not in text and " fast " not in text


def test_row_major_b_tiles_prefetch_the_next_panel_and_packed_ones_do_not():
    """A row-major B (a 1x1 conv's X) prefetches, at each k step, its row of the next panel,
    one call per 64-byte line of nr columns; a packed B streams in order and does not. One
    module with both keeps two tiles apart by name, and both still match numpy."""
    module = ir.Module("prefetch")
    specs = {layout: _spec(12, 70, 9, layout=layout, mr=6, nr=32, kc=9, mc=12, nc=64)
             for layout in ("row", "packed")}
    for layout, spec in specs.items():
        emit_gemm(module, f"g_{layout}", spec, exported=True)
    text = str(module)
    bodies = {name: body for name, body in re.findall(
        r'^define internal void @"(dlc_gemm_tile_[^"]+)"(.*?)^}', text, re.M | re.S)}
    prefetching = sorted(name for name, body in bodies.items() if "llvm.prefetch" in body)
    assert prefetching and all(re.search(r"v16m?r?p_", name) for name in prefetching), prefetching
    assert all(body.count("call void @\"llvm.prefetch.p0\"") == 2 for name, body in bodies.items()
               if name in prefetching), "one prefetch per line of a 32-column panel"
    assert len(bodies) > len(prefetching), "the packed B's tiles do not prefetch"
    native = NativeModule(compile_object(text))
    signature = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5)
    for index, (layout, spec) in enumerate(specs.items()):
        problem = Problem(spec, seed=7 + index)
        signature(native.address(f"g_{layout}"))(*problem.pointers())
        _check(problem)


def test_a_large_packed_weight_is_prefetched_ahead_but_not_past_its_last_panel():
    """A packed B of B_AHEAD_MIN_BYTES or more (a weight read from memory each run) prefetches
    its rows B_AHEAD_ROWS on at each k step, a line each of nr columns, its own tiles apart by
    name; the range function passes that distance but 0 in the last panel, past which may lie
    no mapping. A small B does neither. Both still match numpy."""
    from dlc.codegen.ukernels import B_AHEAD_MIN_BYTES, B_AHEAD_ROWS

    tiles = {"mr": 6, "nr": 32, "mc": 12, "nc": 512}
    large = _spec(12, 500, 160, kc=160, bias="row", activation="relu", **tiles)
    small = _spec(12, 64, 160, kc=160, bias="row", activation="relu", **tiles)
    assert large.k * large.n * 4 >= B_AHEAD_MIN_BYTES > small.k * small.n * 4
    module = ir.Module("ahead")
    for name, spec in (("large", large), ("small", small)):
        emit_gemm(module, name, spec, exported=True)
    text = str(module)
    bodies = dict(re.findall(r'^define internal void @"(dlc_gemm_tile_[^"]+)"(.*?)^}', text, re.M | re.S))
    ahead = sorted(name for name, body in bodies.items() if "llvm.prefetch" in body)
    assert ahead and all(re.search(r"v16m?w?b_", name) for name in ahead), ahead
    assert len(bodies) > len(ahead), "the small B's tiles do not prefetch"
    assert all(bodies[name].count('call void @"llvm.prefetch.p0"') == 2 for name in ahead)
    large_range = re.search(r'^define void @"large_range"(.*?)^}', text, re.M | re.S).group(1)
    assert re.search(rf"select\s+i1 %[^,]+, i64 {B_AHEAD_ROWS * 32}, i64 0", large_range)
    native = NativeModule(compile_object(text))
    signature = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5)
    for index, (name, spec) in enumerate((("large", large), ("small", small))):
        problem = Problem(spec, seed=11 + index)
        signature(native.address(name))(*problem.pointers())
        _check(problem)


def test_pack_b_panels():
    b = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    packed = pack_b(b, 4)
    assert packed.shape == (2, 3, 4) and packed.flags.c_contiguous  # the weight blob aligns it
    np.testing.assert_array_equal(packed[1, :, 0], b[:, 4])
    np.testing.assert_array_equal(packed[1, :, 1:], 0)


@pytest.mark.parametrize("shape", [(1024, 1024, 1024), (49, 512, 4608), (1, 1000, 2048), (7, 3, 2)])
@pytest.mark.parametrize("width", [16, 8, 1])
def test_chosen_tiles_fit_registers_and_nest(shape, width):
    mr, nr, kc, mc, nc = choose_tiles(*shape, width, CACHES["l1_bytes"], CACHES["l2_bytes"])
    registers = 32 if width == 16 else 16
    assert mr * (nr // width) + nr // width + 1 <= registers
    assert nr % width == 0 and mc % mr == 0 and nc % nr == 0 and 1 <= kc <= shape[2]


def test_a_rows_4k_apart_are_padded_by_a_cache_line():
    assert a_rows_alias(1024, 1) and a_rows_alias(2048, 1)
    assert not a_rows_alias(1000, 1) and not a_rows_alias(1024, 1024)
    a = np.arange(3 * 1024, dtype=np.float32)
    padded = pad_a_rows(a, 3)
    assert padded.shape == (3, 1024 + CACHE_LINE_FLOATS)
    np.testing.assert_array_equal(padded[:, :1024], a.reshape(3, 1024))
    np.testing.assert_array_equal(padded[:, 1024:], 0)


def test_caches_only_choose_tiles():
    chosen = _spec(64, 64, 64)
    assert chosen == GemmSpec(64, 64, 64, 64, 1, "packed", ldb=64, ldc=64, mr=chosen.mr,
                              nr=chosen.nr, kc=chosen.kc, mc=chosen.mc, nc=chosen.nc)
    with pytest.raises(ValueError, match="l1_bytes and l2_bytes"):
        GemmSpec(64, 64, 64, 64, 1, "packed", ldb=64, ldc=64)


def test_invalid_spec_is_refused():
    with pytest.raises(ValueError, match="ldb"):
        GemmSpec(4, 8, 2, 2, 1, "row", ldb=4, ldc=8, **CACHES)
    with pytest.raises(ValueError, match="activation takes 2"):
        replace(_spec(4, 8, 2), activation="clip", activation_params=())


def test_loop_nests_of_gemms_with_heavy_tile_calls_are_left_unoptimised():
    """LLVM spent a quarter of ResNet-50's GEMM code time optimising loop nests that only count
    and call tiles; GEMMs whose tile calls do enough work skip that (`OPTNONE_MIN_TILE_MACS`),
    those whose tile calls are light keep it. SPECS above run both kinds."""
    from dlc.codegen.ukernels import OPTNONE_MIN_TILE_MACS

    def heavy(spec) -> bool:
        return spec.mr * spec.nr * min(spec.k, spec.kc) >= OPTNONE_MIN_TILE_MACS

    def unoptimised(spec) -> bool:
        module = ir.Module("one")
        emit_gemm(module, "g", spec, exported=True)
        line = next(line for line in str(module).splitlines() if line.startswith("define") and '@"g_range"' in line)
        return "optnone" in line

    deep, shallow = _spec(64, 100, 512), _spec(64, 100, 2)
    assert heavy(deep) and unoptimised(deep)
    assert not heavy(shallow) and not unoptimised(shallow)
    assert any(heavy(spec) for spec in SPECS) and any(not heavy(spec) for spec in SPECS)


@pytest.mark.parametrize("cpu", ["x86-64-v3", "x86-64-v4"])
def test_a_window_tiles_last_channel_prefetches_nothing_past_a(cpu):
    """A window conv's taps prefetch the next channel's lines, but the k block's last channel
    prefetches its own again (a select of the plane or 0): past the input's last channel the
    address may lie in no mapping, where each prefetch costs a failing page walk (a 3-channel
    7x7 stride-2 conv reading its input directly ran 5.6x slower on the Zen 1 VM). The conv's
    numbers stay onnxruntime's."""
    import onnx
    from conftest import assert_matches_onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((16, 3, 7, 7)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[7, 7], strides=[2, 2])],
                              "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 29, 29])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    text = compile_model(model, compile_to="llvm", options=CompileOptions(cpu=cpu)).text
    tile = text[text.index("gemm_tile"):]
    plane = 64 * 64  # the input's channel stride, in floats (no padding: A is the input itself)
    prefetches = re.findall(r"call void @\"?llvm\.prefetch", text)
    assert prefetches, "the window tile prefetches the next channel"
    assert re.search(rf"select\s+i1 %\S+, i64 {plane}, i64 0", tile), "the last channel's prefetch is not clamped"
    assert_matches_onnxruntime(model)


@pytest.mark.parametrize("out_channels, prefetched", [(45, True), (16, False)])
def test_a_large_transposed_c_is_prefetched_for_writing(out_channels, prefetched):
    """A window conv storing a C of C_AHEAD_MIN_BYTES or more into NCHW planes (a stem's output,
    larger than L2, its lines cold each run) prefetches for writing, before its k loop, the first
    and last line of each column's run: two calls a column, a masked tile's columns past `cols`
    clamped to its last one, its tiles apart by name. A small C does not. Both match onnxruntime
    (45 channels: a ragged last panel, the masked tile)."""
    import onnx
    from conftest import assert_matches_onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from dlc.codegen.ukernels import C_AHEAD_MIN_BYTES
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((out_channels, 3, 7, 7)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[7, 7], strides=[2, 2],
                                                pads=[3, 3, 3, 3])],
                              "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 216, 216])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, 108, 108])],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    assert (out_channels * 108 * 108 * 4 >= C_AHEAD_MIN_BYTES) == prefetched
    text = compile_model(model, compile_to="llvm", options=CompileOptions(cpu="x86-64-v4")).text
    bodies = dict(re.findall(r'^define internal void @"(dlc_gemm_tile_[^"]+)"(.*?)^}', text, re.M | re.S))
    assert bodies
    writing = {name: body.count("i32 1, i32 3, i32 1)") for name, body in bodies.items()}
    if not prefetched:
        assert not any(writing.values()) and not any(re.search(r"v16m?w?c_", name) for name in bodies)
        return
    assert all(re.search(r"v16m?w?c_", name) for name in bodies), sorted(bodies)
    # 2 x 16 columns a vector; the masked tile's run-time tail clamps each column to `cols` - 1
    assert all(count == 2 * 16 * int(re.search(r"x(\d)v16", name).group(1)) for name, count in writing.items())
    assert any("m" in name.split("_")[4] for name in bodies), "a masked tile for the ragged panel"
    assert_matches_onnxruntime(model)


@pytest.mark.parametrize("channels, clamped", [(3, True), (64, False)])
def test_a_spilling_window_tile_clamps_the_last_channel_only_with_few_channels(channels, clamped):
    """AVX2's 7 x 16 tile (14-pixel rows) spills a register; with many channels it keeps the plain
    prefetch address (the select's live register cost ResNet-50's deep convs 18%, and one prefetch
    in hundreds points past A), with few it clamps it (ViT's 16x16/16 patch conv on 3 channels:
    a third of its prefetches would point past the image). The two tiles get different names,
    since a module may hold both."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((32, channels, 4, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[4, 4], strides=[4, 4])],
                              "patches", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 56, 56])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 14, 14])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    text = compile_model(model, compile_to="llvm", options=CompileOptions(cpu="x86-64-v3")).text
    tiles = re.findall(r'define [^@]*@"?(dlc_gemm_tile_f32_7x2v8[^"(]*)', text)
    assert tiles, "a 7 x 16 window tile"
    assert all(re.search(r"ch3136t?f_", name) for name in tiles) == clamped, tiles
    tile = text[text.index("define", text.index(tiles[0]) - 200):]
    tile = tile[:tile.index("\n}")]
    plane = 56 * 56
    assert bool(re.search(rf"select\s+i1 %\S+, i64 {plane}, i64 0", tile)) == clamped
