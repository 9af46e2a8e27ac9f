"""The wgmma TF32 GEMM of the cuda target (dlc/targets/cuda/wgmma_gemm.py, issue 21): its PTX,
plans and fallbacks without a GPU; its numerics on the host emulation, whose wgmma decodes the
descriptors and swizzles as the PTX ISA says and checks the asynchronous proxy's and wgmma's
ordering rules (dlc/targets/cuda/emulate.py); against onnxruntime on a GPU (`gpu` marker)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from onnx import helper
from test_cuda_target import _check, _compile, _cuda_steps, _gpu, _model, _ptx, gpu, use_target_file

assert _gpu  # `gpu`'s skip condition is evaluated in this module's namespace

WGMMA = "wgmma.mma_async.sync.aligned.m64n{}k8.f32.tf32.tf32"


def _target(tmp_path, monkeypatch, **keys):
    use_target_file(tmp_path, monkeypatch, {"gemm_tf32": 1, "gemm_tf32_wgmma": 1, **keys})


def _weight_matmul(m, k, n, seed=1):
    """MatMul(A, B) with A a graph input and B a constant [K, N] (the benchmark's GEMM)."""
    b = np.random.default_rng(seed).standard_normal((k, n))
    return _model([helper.make_node("MatMul", ["a", "B"], ["c"], name="mm")], [("a", [m, k])], [("c", [m, n])],
                  [("B", b)])


def _gemm_transb(m, k, n, weight=True, seed=2):
    """Gemm(x, W^T) + b -> Relu: W [N, K] is K-major as it is (a weight, or a graph input)."""
    rng = np.random.default_rng(seed)
    w = [("W", rng.standard_normal((n, k)))] if weight else []
    return _model([helper.make_node("Gemm", ["x", "W", "b"], ["g"], name="g", transB=1),
                   helper.make_node("Relu", ["g"], ["y"], name="relu")],
                  [("x", [m, k])] + ([] if weight else [("W", [n, k])]), [("y", [m, n])],
                  w + [("b", rng.standard_normal(n))])


def _tf32(x):
    from dlc.targets.cuda.target import round_tf32

    return round_tf32(np.asarray(x, np.float32)).astype(np.float64)


def _initializer(model, name):
    from onnx import numpy_helper

    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def _gemm_launch(cuda) -> dict:
    (launch,) = [launch for launch in cuda.plan["launches"] if not launch["kernel"].startswith("dlc_tf32_round")]
    return launch


def _emulated(model, feeds, llvm_ir=None):
    from dlc.targets.cuda.emulate import Emulator

    (cuda,) = _cuda_steps(_compile(model))
    return list(Emulator(llvm_ir or cuda.llvm_ir).run(cuda.plan, cuda.weights, feeds).values())[0], cuda


def _want(model, feeds):
    """The float64 product of the TF32-rounded operands (+ bias, Relu for the Gemm)."""
    if "x" in feeds:
        w = feeds["W"] if "W" in feeds else _initializer(model, "W")
        return np.maximum(_tf32(feeds["x"]) @ _tf32(w).T + _initializer(model, "b"), 0)
    return _tf32(feeds["a"]) @ _tf32(_initializer(model, "B"))


# --- without a GPU -------------------------------------------------------------------------------

def test_wgmma_kernel_ptx(tmp_path, monkeypatch):
    _target(tmp_path, monkeypatch)
    llvm_ir, ptx = _ptx(_weight_matmul(2048, 512, 2048))
    assert ".target sm_90a" in ptx  # wgmma is architecture-specific
    kernel = ptx[ptx.index(".entry k0_MatMul("):]
    # 128 x 128 blocks of 2 warpgroups, each an m64n128k8 per 8-deep step of a 32-deep K tile
    # (LLVM may copy the loop's body: a multiple of 4)
    assert kernel.count(WGMMA.format(128)) % 4 == 0 and WGMMA.format(128) in kernel and "mma.sync" not in kernel
    for instruction in ("fence.proxy.async.shared::cta;", "wgmma.fence.sync.aligned;",
                        "wgmma.commit_group.sync.aligned;", "wgmma.wait_group.sync.aligned 1;",
                        "wgmma.wait_group.sync.aligned 0;", "cp.async.cg.shared.global"):
        assert instruction in kernel, instruction
    # The descriptors' constant fields: LBO 1 (unused), SBO 1024 bytes (64), 128-byte swizzle.
    assert str((1 << 16) | (64 << 32) | (1 << 62)) in llvm_ir
    (cuda,) = _cuda_steps(_compile(_weight_matmul(2048, 512, 2048)))
    launch = _gemm_launch(cuda)
    assert launch["block"] == [256, 1, 1] and launch["grid"] == [256, 1, 1]
    # 3 stages (two blocks an SM) + the slack of the run-time alignment
    assert launch["shared_bytes"] == 3 * (128 + 128) * 32 * 4 + 1024
    assert cuda.weights["B:transposed:tf32"].shape == (2048, 512)  # [K, N] uploaded K-major, rounded
    ptxas = shutil.which("ptxas")
    if ptxas is not None:  # the CUDA toolkit: it assembles, without spills or serialized wgmma
        (tmp_path / "k.ptx").write_text(ptx)
        done = subprocess.run([ptxas, "-arch=sm_90a", "-v", str(tmp_path / "k.ptx"), "-o", str(tmp_path / "k.o")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[:2000]
        report = done.stdout + done.stderr
        assert "serialized" not in report and " 0 bytes spill stores" in report.split("k0_MatMul")[-1]
    # Off (the default): the mma.sync pipeline, sm_90.
    _target(tmp_path, monkeypatch, gemm_tf32_wgmma=0)
    assert "wgmma" not in _ptx(_weight_matmul(256, 64, 256))[1]


def test_large_gemms_take_128x256_blocks(tmp_path, monkeypatch):
    from dlc.targets.cuda.wgmma_gemm import auto_block, auto_stages

    _target(tmp_path, monkeypatch)
    # 2048 x 4096: 256 blocks of 128 x 256 for 132 SMs; two warpgroups of m64n256, 4 stages
    (cuda,) = _cuda_steps(_compile(_weight_matmul(2048, 64, 4096)))
    launch = _gemm_launch(cuda)
    assert WGMMA.format(256) in cuda.ptx and launch["grid"] == [256, 1, 1]
    assert launch["shared_bytes"] == 4 * (128 + 256) * 32 * 4 + 1024
    from dlc.targets.cuda.codegen import GemmShape

    def shape(m, n, batch=1):
        return GemmShape(m, n, 64, batch, (64, 1), (1, 64), 0, 0)

    assert auto_block(shape(2048, 2048), 132) == (128, 128)  # 256 blocks of 128 x 128; 128 of 128 x 256
    assert auto_block(shape(1024, 1024, batch=8), 132) == (128, 256)
    assert auto_block(shape(1024, 1024), 132) == auto_block(shape(48, 4096), 132) == (64, 64)
    assert [auto_stages(bm, bn, 32, 2 if bm > 64 else 1) for bm, bn in ((128, 128), (128, 256), (64, 64))] == [3, 4, 4]


def test_wgmma_falls_back_where_it_does_not_apply(tmp_path, monkeypatch):
    _target(tmp_path, monkeypatch)
    # B a row-major graph input (cannot be uploaded K-major): the mma.sync pipeline
    both_inputs = _model([helper.make_node("MatMul", ["a", "b"], ["c"], name="mm")],
                         [("a", [64, 32]), ("b", [32, 64])], [("c", [64, 64])])
    # an operand also read as float32 by the epilogue: mma.sync, rounding per fragment
    reread = _model([helper.make_node("MatMul", ["a", "B"], ["c"], name="mm"),
                     helper.make_node("Add", ["c", "a"], ["y"], name="add")],
                    [("a", [64, 64])], [("y", [64, 64])], [("B", np.eye(64))])
    conv = _model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv", kernel_shape=[1, 1])],
                  [("x", [1, 32, 8, 8])], [("y", [1, 32, 8, 8])], [("W", np.ones((32, 32, 1, 1)))])
    for model in (both_inputs, reread, conv):
        llvm_ir, _ = _ptx(model)
        assert "wgmma" not in llvm_ir and "mma.sync" in llvm_ir


@pytest.mark.parametrize("keys", [{"gemm_tf32_round": 1}, {"gemm_tf32_tile_k": 16}, {"gemm_tf32_block_m": 96}])
def test_keys_set_for_mma_sync_keep_a_gemm_there_by_default(keys, tmp_path, monkeypatch):
    """`gemm_tf32_wgmma` 1 (the default): keys the mma.sync kernel takes and wgmma cannot send the
    GEMM to mma.sync; the same keys with one of wgmma's own set are an error."""
    from dlc.errors import CompileError

    _target(tmp_path, monkeypatch, **keys)
    llvm_ir, _ = _ptx(_weight_matmul(256, 64, 256))
    assert "wgmma" not in llvm_ir and "mma.sync" in llvm_ir
    _target(tmp_path, monkeypatch, **keys, gemm_tf32_wgmma_stages=3)
    with pytest.raises(CompileError, match="gemm_tf32_wgmma 0"):
        _ptx(_weight_matmul(256, 64, 256))


def test_wgmma_is_the_default_on_sm_90_only(tmp_path, monkeypatch):
    (tmp_path / "gpu.json").write_text('{"sm": 80}')
    monkeypatch.setenv("DLC_CUDA_TARGET", str(tmp_path / "gpu.json"))
    llvm_ir, ptx = _ptx(_weight_matmul(256, 64, 256))
    assert "wgmma" not in llvm_ir and "mma.sync" in llvm_ir and ".target sm_90a" not in ptx
    monkeypatch.delenv("DLC_CUDA_TARGET")
    llvm_ir, ptx = _ptx(_weight_matmul(256, 64, 256))
    assert "wgmma.mma_async" in llvm_ir and ".target sm_90a" in ptx


@pytest.mark.parametrize("keys, message", [
    ({"gemm_tf32_round": 1}, "gemm_tf32_round 1"),
    ({"gemm_tf32_block_n": 264}, "264-column block"),
    ({"gemm_tf32_block_m": 96}, "96-row block"),
    ({"gemm_tf32_wgmma_swizzle": 64}, "gemm_tf32_wgmma_swizzle 64"),
    ({"gemm_tf32_tile_k": 16}, "a multiple of 32"),
    ({"gemm_tf32_wgmma_stages": 2}, "at least 3 with gemm_tf32_wgmma_pending 1"),
    ({"gemm_tf32_block_m": 128, "gemm_tf32_block_n": 256, "gemm_tf32_wgmma_stages": 5}, "bytes of shared memory"),
    ({"gemm_tf32_block_m": 256, "gemm_tf32_block_n": 256, "gemm_tf32_wgmma_stages": 2,
      "gemm_tf32_wgmma_pending": 0}, "256 accumulators per thread"),
])
def test_bad_wgmma_keys_are_clear_errors(keys, message, tmp_path, monkeypatch):
    from dlc.errors import CompileError

    _target(tmp_path, monkeypatch, **{"gemm_tf32_wgmma": 2, **keys})  # 2: wgmma or an error
    with pytest.raises(CompileError, match=re.escape(message)) as caught:
        _ptx(_weight_matmul(256, 64, 256))
    assert "gemm_tf32_wgmma 0" in str(caught.value.hint)


# Each case a few hundred emulated threads meeting per wgmma: ~1-2 s of a core.
EMULATED = {
    # one 128 x 128 block over M = 70, N = 72 (edges), K = 100: 4 tiles, the last ending inside
    # (zero-filled chunks); the copies of tile 2 go out while tile 0 is multiplied (4 stages)
    "edges": ({"gemm_tf32_block_m": 128, "gemm_tf32_block_n": 128, "gemm_tf32_wgmma_stages": 4},
              lambda: _weight_matmul(70, 100, 72)),
    # no swizzle: interleaved 8 x 16-byte core matrices, 8-deep K tiles, 3 stages, wait_group 0
    "interleave": ({"gemm_tf32_wgmma_swizzle": 0, "gemm_tf32_tile_k": 8, "gemm_tf32_wgmma_stages": 3,
                    "gemm_tf32_wgmma_pending": 0}, lambda: _weight_matmul(70, 44, 20)),
    # a Gemm's K-major weight as it is, with bias and Relu; one warpgroup of m64n256
    "gemm_transb": ({"gemm_tf32_block_m": 64, "gemm_tf32_block_n": 256}, lambda: _gemm_transb(40, 64, 200)),
    # 256 x 32 blocks: each warpgroup two 64-row slices; K in two 64-deep tiles (two swizzle panels),
    # the weight a graph input (rounded by a kernel)
    "slices": ({"gemm_tf32_block_m": 256, "gemm_tf32_block_n": 32, "gemm_tf32_tile_k": 64,
                "gemm_tf32_wgmma_stages": 3}, lambda: _gemm_transb(150, 100, 24, weight=False)),
}


# The default run keeps ~15 s of the suite: `pytest -m slow` adds these.
SLOW = {"slices", "wgmma_fence", "layout", "alignment"}


def _cases(table):
    return [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in sorted(table)]


@pytest.mark.parametrize("case", _cases(EMULATED))
def test_wgmma_kernel_on_the_host_emulation(case, tmp_path, monkeypatch):
    from conftest import random_feeds

    keys, build = EMULATED[case]
    _target(tmp_path, monkeypatch, **keys)
    model = build()
    feeds = random_feeds(model, 0)
    got, cuda = _emulated(model, feeds)
    assert "wgmma.mma_async" in cuda.llvm_ir
    # Only float32 accumulation differs from the float64 product of the TF32 operands: a chunk
    # in the wrong place (layout, swizzle, descriptor) would be off by O(1).
    np.testing.assert_allclose(got, _want(model, feeds), rtol=0, atol=1e-5)


# Kernels broken on purpose: the emulation says what is wrong (or computes a wrong answer).
BROKEN = {
    # no fence.proxy.async: the copies are not visible to wgmma's async proxy
    "fence_proxy": ('call void asm sideeffect "fence.proxy.async.shared::cta;", "~{memory}"()', "",
                    "without a fence.proxy.async"),
    # waiting for one cp.async group too few: the wgmma reads a stage before its copies land
    "cp_async_wait": ("cp.async.wait_group 1;", "cp.async.wait_group 2;", "copies have not landed"),
    # stage reuse one tile too early for wait_group 1 (copies 3 tiles ahead of 4 stages)
    "wgmma_wait": ("wgmma.wait_group.sync.aligned 0;", "wgmma.wait_group.sync.aligned 1;",
                   "a wgmma not yet waited for"),
    "wgmma_fence": ('call void asm sideeffect "wgmma.fence.sync.aligned;", "~{memory}"()', "", "without a wgmma.fence"),
    # descriptors that say "no swizzle" over swizzled tiles: wrong numbers
    "layout": (f" {(1 << 16) | (64 << 32) | (1 << 62)}\n", f" {(1 << 16) | (64 << 32)}\n", None),
    # tiles not aligned to 1024 bytes at run time (the emulated shared array starts 48 bytes past
    # 1024): the swizzle, on absolute address bits, no longer matches the copies' layout
    "alignment": (re.compile(r"(and i32 %v\d+), 1023\n"), r"\1, 0\n", None),
}


@pytest.mark.parametrize("case", _cases(BROKEN))
def test_host_emulation_sees_broken_wgmma_kernels(case, tmp_path, monkeypatch):
    from conftest import random_feeds

    from dlc.errors import DlcError

    old, new, message = BROKEN[case]
    in_order = {"gemm_tf32_wgmma_pending": 0, "gemm_tf32_wgmma_stages": 3}
    keys = in_order if case in ("cp_async_wait", "wgmma_wait") else {}
    _target(tmp_path, monkeypatch, gemm_tf32_block_m=128, gemm_tf32_block_n=128, **keys)
    model = _weight_matmul(70, 100, 72)
    feeds = random_feeds(model, 0)
    (cuda,) = _cuda_steps(_compile(model))
    pattern = old if isinstance(old, re.Pattern) else re.compile(re.escape(old))
    broken, count = pattern.subn(new if isinstance(old, re.Pattern) else (lambda _: new), cuda.llvm_ir)
    assert count
    if message is None:
        got, _ = _emulated(model, feeds, broken)
        assert np.abs(got - _want(model, feeds)).max() > 0.1
        return
    with pytest.raises(DlcError, match=message):
        _emulated(model, feeds, broken)


# --- on a GPU ------------------------------------------------------------------------------------

def _tolerance(k: int) -> float:
    # As tests/test_cuda_tf32_gemm.py: inputs rounded to TF32 (2^-11 relative each), K products
    # adding like a random walk, O(1) inputs, 8 bounds of that for the largest of ~10^5 outputs.
    return 8 * 2**-10 * np.sqrt(k)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("keys", [{}, {"gemm_tf32_block_n": 256}, {"gemm_tf32_wgmma_stages": 4},
                                  {"gemm_tf32_block_m": 256, "gemm_tf32_wgmma_stages": 3},
                                  {"gemm_tf32_block_m": 64, "gemm_tf32_block_n": 64},
                                  {"gemm_tf32_wgmma_swizzle": 0}, {"gemm_tf32_wgmma_pending": 0},
                                  {"gemm_tf32_tile_k": 64, "gemm_tf32_wgmma_stages": 3}])
def test_gpu_wgmma_matches_onnxruntime(keys, tmp_path, monkeypatch):
    _target(tmp_path, monkeypatch, **keys)
    # M, N past the last tile, K = 520 ends inside a K tile; then a Gemm's K-major weight with
    # bias and Relu as it is
    for model, k in ((_weight_matmul(700, 520, 900), 520), (_gemm_transb(300, 256, 200), 256)):
        compiled = _check(model, rtol=0, atol=_tolerance(k))
        (cuda,) = _cuda_steps(compiled._executable)
        assert "wgmma.mma_async" in cuda.ptx
