"""The pipelined TF32 GEMM of the cuda target (dlc/targets/cuda/tf32_gemm.py, issue 21): its PTX,
tiling and fallbacks without a GPU; its numerics against onnxruntime on one (`gpu` marker).
TF32 is the target's default; each test still names it (`"gemm_tf32": 1` in the target file that
`_target` writes, with the keys it varies), so none depends on the default."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from onnx import helper
from test_cuda_target import (
    _check,
    _compile,
    _conv_block,
    _cuda_steps,
    _gpu,
    _matmul,
    _mlp,
    _model,
    _ptx,
    gpu,
    use_target_file,
)

assert _gpu  # `gpu`'s skip condition is evaluated in this module's namespace

MMA = "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"


def _target(tmp_path, monkeypatch, **keys):
    """This file's GEMMs on the mma.sync pipeline (Hopper's wgmma: tests/test_cuda_wgmma.py)."""
    use_target_file(tmp_path, monkeypatch, {"gemm_tf32": 1, "gemm_tf32_wgmma": 0, **keys})


def _gemm_transb(m, k, n, seed=1):
    """Gemm(x, W^T) + b -> Relu, W stored [N, K] as torch's Linear: B is K-major."""
    rng = np.random.default_rng(seed)
    return _model([helper.make_node("Gemm", ["x", "W", "b"], ["g"], name="g", transB=1),
                   helper.make_node("Relu", ["g"], ["y"], name="relu")],
                  [("x", [m, k])], [("y", [m, n])],
                  [("W", rng.standard_normal((n, k))), ("b", rng.standard_normal(n))])


def _conv1x1(n, c, hw, co, seed=2):
    rng = np.random.default_rng(seed)
    return _model([helper.make_node("Conv", ["x", "W", "b"], ["c"], name="conv", kernel_shape=[1, 1]),
                   helper.make_node("Relu", ["c"], ["y"], name="relu")],
                  [("x", [n, c, hw, hw])], [("y", [n, co, hw, hw])],
                  [("W", rng.standard_normal((co, c, 1, 1))), ("b", rng.standard_normal(co))])


def _conv(n, c, hw, co, kernel=3, seed=3, weight_input=False, **attrs):
    """Conv (+ bias) -> Relu with `attrs` (pads, strides, dilations); W a graph input or a weight."""
    rng = np.random.default_rng(seed)
    attrs = {"pads": [1, 1, 1, 1], "strides": [1, 1], "dilations": [1, 1], **attrs}
    (top, left, bottom, right), (sh, sw), (dh, dw) = attrs["pads"], attrs["strides"], attrs["dilations"]
    oh = (hw + top + bottom - dh * (kernel - 1) - 1) // sh + 1
    ow = (hw + left + right - dw * (kernel - 1) - 1) // sw + 1
    return _model([helper.make_node("Conv", ["x", "W", "b"], ["c"], name="conv", kernel_shape=[kernel, kernel],
                                    **attrs),
                   helper.make_node("Relu", ["c"], ["y"], name="relu")],
                  [("x", [n, c, hw, hw])] + ([("W", [co, c, kernel, kernel])] if weight_input else []),
                  [("y", [n, co, oh, ow])],
                  ([] if weight_input else [("W", rng.standard_normal((co, c, kernel, kernel)) / kernel)]) +
                  [("b", rng.standard_normal(co))])


def _initializer(model, name):
    from onnx import numpy_helper

    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def _conv_reference(x, w, b, out_shape, pads, strides, dilations):
    """The Conv of float64 x and w (NCHW, OIHW) + bias, then Relu."""
    n, c, h, wd = x.shape
    padded = np.zeros((n, c, h + pads[0] + pads[2], wd + pads[1] + pads[3]))
    padded[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = x
    out = np.zeros(out_shape) + b[None, :, None, None]
    oh, ow = out_shape[2:]
    for kh in range(w.shape[2]):
        for kw in range(w.shape[3]):
            y0, x0 = kh * dilations[0], kw * dilations[1]
            rows = slice(y0, y0 + strides[0] * (oh - 1) + 1, strides[0])
            cols = slice(x0, x0 + strides[1] * (ow - 1) + 1, strides[1])
            window = padded[:, :, rows, cols]
            out += np.einsum("oc,nchw->nohw", w[:, :, kh, kw], window)
    return np.maximum(out, 0)


def _ptxas(ptx: str, tmp_path) -> str | None:
    """ptxas -v's report for sm_90, or None where the CUDA toolkit is not installed."""
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        return None
    (tmp_path / "k.ptx").write_text(ptx)
    done = subprocess.run([ptxas, "-arch=sm_90", "-v", str(tmp_path / "k.ptx"), "-o", str(tmp_path / "k.o")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[:2000]
    return done.stdout + done.stderr


def _entry(ptx: str, name: str) -> str:
    """The PTX of one kernel (`.entry name` to the next entry)."""
    start = ptx.index(f".entry {name}(")
    end = ptx.find(".entry ", start + 1)
    return ptx[start:end if end > 0 else len(ptx)]


def _gemm_launch(cuda) -> dict:
    """The plan's launch of the (one) GEMM kernel, past the TF32 rounding kernels."""
    (launch,) = [launch for launch in cuda.plan["launches"] if not launch["kernel"].startswith("dlc_tf32_round")]
    return launch


def test_large_gemm_is_a_cp_async_pipeline_of_mma(tmp_path, monkeypatch):
    _target(tmp_path, monkeypatch)
    _, whole = _ptx(_matmul(2048, 256, 2048))
    # Both operands are graph inputs that only the GEMM reads: each rounded in place by the one
    # rounding kernel of 2048 x 256 floats (cvt.rna per element, two 16-byte vectors per thread)
    # before the GEMM, whose K loop then has no cvt (gemm_tf32_round 0).
    rounding = _entry(whole, "dlc_tf32_round_524288")
    assert whole.count("cvt.rna.tf32.f32") == rounding.count("cvt.rna.tf32.f32") == 8
    assert "ld.global.v4" in rounding and "st.global.v4" in rounding
    ptx = _entry(whole, "k0_MatMul")
    # 128 x 128 x 32 tiles, 4 warps of 64 x 64: 4 x 8 fragments, 4 k-steps of 8 per tile.
    assert ptx.count(MMA) == 4 * 8 * 4
    # 16-byte copies: (128 x 32 of A + 32 x 128 of B) / 4 / 128 threads = 16 per tile; the
    # prologue issues 2 tiles (3 stages) and the loop one; each is a commit group.
    assert ptx.count("cp.async.cg.shared.global") == 3 * 16
    assert ptx.count("cp.async.commit_group") == 3 and ptx.count("cp.async.wait_group 1;") == 1
    assert ptx.count("bar.sync") == 1  # one barrier per K tile
    # A's fragments: one ldmatrix.x4 each (4 x 4 per tile); a row-major B's: 2 words each.
    assert ptx.count("ldmatrix.sync.aligned.m8n8.x4.shared.b16") == 4 * 4
    assert ptx.count("ld.shared.b32") == 4 * 8 * 2 and "cvt.rna" not in ptx
    assert ".extern .shared .align 16 .b8 k0_MatMul_smem[];" in whole and ".local" not in whole
    cuda = _cuda_steps(_compile(_matmul(2048, 256, 2048)))[0]
    a, b = (cuda.plan["inputs"][i]["buffer"] for i in (0, 1))
    rounding = {"kernel": "dlc_tf32_round_524288", "grid": [256, 1, 1], "block": [256, 1, 1], "nodes": []}
    assert cuda.plan["launches"][:2] == [{**rounding, "args": [a, a]}, {**rounding, "args": [b, b]}]
    launch = _gemm_launch(cuda)
    assert launch["args"][:2] == [a, b]
    assert launch["grid"] == [16 * 16, 1, 1] and launch["block"] == [128, 1, 1]
    assert launch["shared_bytes"] == 3 * 4 * (128 * (32 + 4) + 32 * (128 + 8))  # padded rows, 3 stages
    _target(tmp_path, monkeypatch, gemm_tf32_round=1)  # the K loop rounds each fragment instead
    _, rounded = _ptx(_matmul(2048, 256, 2048))
    assert "dlc_tf32_round" not in rounded and rounded.count("cvt.rna.tf32.f32") == 4 * (16 + 16)
    report = _ptxas(whole, tmp_path)
    if report is not None:  # the accumulators fit in registers: no spills
        assert "0 bytes spill stores" in report and "0 bytes stack frame" in report


def test_block_is_128x128_when_every_sm_gets_one(tmp_path, monkeypatch):
    _target(tmp_path, monkeypatch)
    # 128 x 128 blocks of 4 warps (two an SM) while there are 132 of them; 64 x 64 below (1024^2:
    # 64 blocks of 128 x 128, so 256 of 64 x 64, 4 warps of 32 x 32).
    for n, grid, threads in ((4096, 32 * 32, 128), (2048, 16 * 16, 128), (1024, 16 * 16, 128)):
        launch = _gemm_launch(_cuda_steps(_compile(_matmul(n, 64, n)))[0])
        assert launch["grid"] == [grid, 1, 1] and launch["block"] == [threads, 1, 1], n
    # 128 x 256 of 8 warps by keys (4096^2: 512 blocks)
    _target(tmp_path, monkeypatch, gemm_tf32_block_m=128, gemm_tf32_block_n=256)
    launch = _gemm_launch(_cuda_steps(_compile(_matmul(4096, 64, 4096)))[0])
    assert launch["grid"] == [32 * 16, 1, 1] and launch["block"] == [256, 1, 1]
    _, ptx = _ptx(_matmul(4096, 64, 4096))
    assert ptx.count(MMA) == 4 * 8 * 4  # still 64 x 64 per warp


def test_k_major_b_small_gemms_and_options(tmp_path, monkeypatch):
    # Gemm transB = 1: B's fragments come by ldmatrix too, two 8-column ones per x4; 300 x 200
    # has too few 128 x 128 blocks for 132 SMs, so 64 x 64 tiles of 4 warps of 32 x 32 (2 x 4
    # fragments), 2 k-steps per 16-deep tile.
    _target(tmp_path, monkeypatch, gemm_tf32_stages=4, gemm_tf32_tile_k=16, gemm_tf32_round=0,
            gemm_tf32_weight_row_major=0)
    _, ptx = _ptx(_gemm_transb(300, 256, 200))
    ptx = _entry(ptx, "k0_Gemm_fused")
    assert ptx.count(MMA) == 2 * 4 * 2 and ptx.count("ldmatrix") == (2 + 4 // 2) * 2 and "ld.shared" not in ptx
    assert ptx.count("cp.async.wait_group 2;") == 1 and ptx.count("cp.async.commit_group") == 4
    assert "cvt.rna" not in ptx  # gemm_tf32_round 0: the tensor cores read the fp32 bits
    cuda = _cuda_steps(_compile(_gemm_transb(300, 256, 200)))[0]
    launch = _gemm_launch(cuda)
    assert launch["grid"] == [5 * 4, 1, 1] and launch["shared_bytes"] == 4 * 4 * 2 * 64 * (16 + 4)
    # The weight is uploaded rounded (W:tf32 in place of W), the bias as it is.
    assert [cuda.plan["buffers"][i].get("name") for i in launch["args"][:3]] == ["x", "W:tf32", "b"]
    assert "W" not in cuda.weights and cuda.plan["launches"][0]["kernel"] == "dlc_tf32_round_76800"


def test_constant_k_major_b_is_uploaded_row_major(tmp_path, monkeypatch):
    """A constant K-major B (Gemm transB, W stored [N, K]) is uploaded transposed and rounded
    (W:transposed:tf32 = round(W^T), [K, N]) and read as a row-major B, a shared-memory word per
    register (faster on the H200 than ldmatrix over K-major rows); `gemm_tf32_weight_row_major` 0
    keeps it K-major, read by ldmatrix."""
    _target(tmp_path, monkeypatch, gemm_tf32_stages=4, gemm_tf32_tile_k=16)
    model = _gemm_transb(300, 256, 200)
    cuda = _cuda_steps(_compile(model))[0]
    launch = _gemm_launch(cuda)
    assert [cuda.plan["buffers"][i].get("name") for i in launch["args"][:2]] == ["x", "W:transposed:tf32"]
    assert cuda.plan["buffers"][launch["args"][1]]["shape"] == [256, 200]
    np.testing.assert_array_equal(cuda.weights["W:transposed:tf32"], _tf32(_initializer(model, "W").T))
    row_major = _entry(_ptx(model)[1], "k0_Gemm_fused")
    assert row_major.count("ldmatrix") == 2 * 2 and "ld.shared" in row_major  # A's fragments only


def test_3x3_conv_is_gathered_a_word_at_a_time(tmp_path, monkeypatch):
    # ResNet's 3x3 conv of stage 1 at batch 8: 64 channels, K = 576 in 18 tiles of one tap
    # and 32 channels; 64 x 25088 outputs: 64 rows, so 64 x 64 blocks of 4 warps of 32 x 32.
    _target(tmp_path, monkeypatch)
    model = _conv(8, 64, 56, 64)
    _, whole = _ptx(model)
    ptx = _entry(whole, "k0_Conv_fused")
    # A from the weight copied [O, KH, KW, I]: 16-byte chunks, 64 x 32 / 4 / 128 threads = 4; B
    # gathered in 4-byte copies (.ca), 32 rows of 64 columns, 2 threads a column: 16 per tile;
    # the prologue issues 2 tiles, the loop 1
    assert ptx.count("cp.async.cg.shared.global") == 3 * 4 and ptx.count("cp.async.ca.shared.global") == 3 * 16
    assert ptx.count(MMA) == 2 * 4 * 4
    (cuda,) = _cuda_steps(_compile(model))
    launch = _gemm_launch(cuda)
    assert launch["grid"] == [8 * 56 * 56 // 64, 1, 1] and launch["block"] == [128, 1, 1]
    assert cuda.plan["buffers"][launch["args"][1]]["name"] == "W:tap_major:tf32"  # and rounded to TF32
    np.testing.assert_array_equal(cuda.weights["W:tap_major:tf32"],
                                  _tf32(_initializer(model, "W").transpose(0, 2, 3, 1)).astype(np.float32))
    assert set(cuda.weights) == {"W:tap_major:tf32", "b"}  # nothing reads the OIHW weight: not uploaded
    from dlc.targets.cuda.runtime import load_cuda

    cuda.save(tmp_path / "saved")  # a saved partition keeps the copy and its launch's shared memory
    loaded = load_cuda(tmp_path / "saved")
    np.testing.assert_array_equal(loaded.weights["W:tap_major:tf32"], cuda.weights["W:tap_major:tf32"])
    assert _gemm_launch(loaded)["shared_bytes"] == launch["shared_bytes"] > 48 << 10
    report = _ptxas(whole, tmp_path)
    if report is not None:
        assert "0 bytes spill stores" in report


def test_other_layouts_keep_the_register_staged_schedule(tmp_path, monkeypatch):
    _target(tmp_path, monkeypatch)
    for model in (_matmul(256, 130, 256),  # K % 4: a 16-byte chunk would straddle the end of a row
                  _matmul(256, 128, 258),  # N % 4 for a row-major B
                  _conv_block(),  # 5 channels: a K tile would span two taps
                  _conv1x1(2, 24, 7, 20)):  # 7 x 7 pixels (a chunk would straddle two images), 24 channels
        _, ptx = _ptx(model)
        assert "cp.async" not in ptx and MMA in ptx and "_As[" in ptx
    _target(tmp_path, monkeypatch, gemm_tf32_pipeline=0)
    _, ptx = _ptx(_matmul(2048, 64, 2048))
    assert "cp.async" not in ptx and MMA in ptx


def test_bad_tf32_tiles_are_clear_errors(tmp_path, monkeypatch):
    from dlc.errors import CompileError

    for keys, words in (({"gemm_tf32_block_m": 128, "gemm_tf32_block_n": 72}, "warp tiles of 64 x 36"),
                        ({"gemm_tf32_tile_k": 12}, "K tile of 12"),
                        ({"gemm_tf32_stages": 1}, "1 stages"),
                        ({"gemm_tf32_round": 3}, "gemm_tf32_round 3"),
                        ({"gemm_tf32_stages": 8}, "bytes of shared memory"),
                        ({"gemm_tf32_block_m": 256, "gemm_tf32_block_n": 256, "gemm_tf32_warps_m": 2,
                          "gemm_tf32_warps_n": 2}, "accumulators per thread")):
        _target(tmp_path, monkeypatch, **keys)
        with pytest.raises(CompileError, match=re.escape(words)) as error:
            _ptx(_matmul(2048, 64, 2048))
        assert "gemm_tf32_" in str(error.value)


# --- on the host emulation (dlc/targets/cuda/emulate.py: mma, cvt and cp.async emulated) ---------

def _tf32(array) -> np.ndarray:
    """float32 -> TF32 (round to nearest, ties away), as cvt.rna.tf32.f32, in float64."""
    bits = np.asarray(array, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32).astype(np.float64)


def _emulated(model, feeds, llvm_ir=None):
    from dlc.targets.cuda.emulate import Emulator

    (cuda,) = _cuda_steps(_compile(model))
    return list(Emulator(llvm_ir or cuda.llvm_ir).run(cuda.plan, cuda.weights, feeds).values())[0], cuda


EMULATED = {
    # one 128 x 128 block over M = 70, N = 72 (edges), K = 40 in three 16-deep tiles (the loop
    # issues a tile: 3 stages), both operands graph inputs
    "edges": ({"gemm_tf32_block_m": 128, "gemm_tf32_block_n": 128, "gemm_tf32_tile_k": 16},
              lambda: _matmul(70, 40, 72)),
    # 128 x 256, 8 warps (the large GEMMs' block): one block over 40 x 200, K in 2 tiles
    "wide": ({"gemm_tf32_block_m": 128, "gemm_tf32_block_n": 256}, lambda: _matmul(40, 64, 200)),
    # K-major B (Gemm transB) with its bias and Relu, K = 100 in 4 tiles of 32, 64 x 64 block
    "k_major_b": ({"gemm_tf32_weight_row_major": 0}, lambda: _gemm_transb(33, 100, 20)),
    # 64 x 16 blocks: a warp has one 8-column B fragment, so K-major B is read word by word
    "k_major_b_odd": ({"gemm_tf32_block_m": 64, "gemm_tf32_block_n": 16, "gemm_tf32_weight_row_major": 0},
                      lambda: _gemm_transb(33, 100, 20)),
    # the same Gemm with its weight uploaded transposed, read row-major (the default)
    "k_major_b_uploaded_row_major": ({}, lambda: _gemm_transb(33, 100, 20)),
    # a 1x1 Conv (ResNet's bottleneck) with bias and Relu: B is each image's [C, H*W]; columns
    # 36..71 are the second image, 72 columns of a 64-wide tile: the second tile straddles them
    "conv1x1": ({}, lambda: _conv1x1(2, 24, 6, 20)),
    # a 3x3 Conv, pad 1: both tiles gathered a word at a time, K in (tap, channel) order
    "conv3x3": ({"gemm_tf32_tile_k": 16}, lambda: _conv(1, 16, 8, 20)),
    # strided, dilated, asymmetric padding (bottom/right pads only bound the output)
    "conv_strided": ({"gemm_tf32_tile_k": 8}, lambda: _conv(2, 8, 11, 12, strides=[2, 2], dilations=[2, 1],
                                                            pads=[0, 1, 2, 0])),
    # gemm_tf32_round 2: each copied element rounded once in shared memory, chunks and words
    "round_in_shared": ({"gemm_tf32_round": 2, "gemm_tf32_tile_k": 16}, lambda: _matmul(40, 40, 72)),
    "round_in_shared_conv": ({"gemm_tf32_round": 2, "gemm_tf32_tile_k": 8},
                             lambda: _conv(2, 8, 11, 12, strides=[2, 2], dilations=[2, 1], pads=[0, 1, 2, 0])),
    # the weight is a graph input: no tap-major copy, A gathered a word at a time too
    "conv_weight_input": ({"gemm_tf32_tile_k": 8}, lambda: _conv(2, 8, 7, 12, weight_input=True)),
    # two batches, each its A and B (grid z), 2 stages
    "batched": ({"gemm_tf32_stages": 2, "gemm_tf32_tile_k": 8},
                lambda: _model([helper.make_node("MatMul", ["a", "b"], ["c"], name="mm")],
                               [("a", [2, 20, 24]), ("b", [2, 24, 12])], [("c", [2, 20, 12])])),
}


# Emulated threads are slow (a case takes 4-12 s of a core): the default run keeps one case of each
# path (edges, K-major B, 1x1, the gathered conv with strides, dilations and uneven pads, cvt.rna
# per fragment), and `pytest -m slow` adds the variants of those paths (conv3x3: the same
# gathered tiles, unstrided) and the 256-thread block (~25 s).
SLOW_EMULATED = {"wide", "k_major_b_uploaded_row_major", "conv_weight_input", "round_in_shared",
                 "round_in_shared_conv", "k_major_b_odd", "batched", "conv3x3"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_EMULATED else c
                                  for c in sorted(EMULATED)])
def test_pipelined_kernel_on_the_host_emulation(case, tmp_path, monkeypatch):
    from conftest import random_feeds

    keys, build = EMULATED[case]
    _target(tmp_path, monkeypatch, **keys)
    model = build()
    feeds = random_feeds(model, 0)
    got, cuda = _emulated(model, feeds)
    assert "cp.async" in cuda.ptx
    # Against the same product of TF32-rounded inputs in float64: only float32 accumulation
    # differs (a few ulp of sums of |x| <= K), so a lost or misplaced chunk would show.
    if case.startswith("k_major_b"):
        w, b = (_initializer(model, n) for n in ("W", "b"))
        want = np.maximum(_tf32(feeds["x"]) @ _tf32(w).T + b, 0)
    elif case in ("conv3x3", "conv_strided", "round_in_shared_conv", "conv_weight_input"):
        w, b = (feeds["W"] if "W" in feeds else _initializer(model, "W"), _initializer(model, "b"))
        attrs = {a.name: list(a.ints) for a in model.graph.node[0].attribute}
        want = _conv_reference(_tf32(feeds["x"]), _tf32(w), b, got.shape, attrs["pads"], attrs["strides"],
                               attrs["dilations"])
    elif case == "conv1x1":
        w, b = (_initializer(model, n) for n in ("W", "b"))
        want = np.einsum("oc,nchw->nohw", _tf32(w[:, :, 0, 0]), _tf32(feeds["x"])) + b[:, None, None]
        want = np.maximum(want, 0)
    else:
        want = _tf32(feeds["a"]) @ _tf32(feeds["b"])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # Operands rounded where they are produced (round 0, the default) or once in shared memory
    # (round 2) give the same TF32 values as cvt.rna per fragment: the same bits out.
    _target(tmp_path, monkeypatch, **{**keys, "gemm_tf32_round": 1})
    per_fragment, cuda = _emulated(model, feeds)
    assert "dlc_tf32_round" not in cuda.llvm_ir and "W:tf32" not in cuda.weights
    assert np.array_equal(got, per_fragment)


def _conv_chain():
    """A residual block: x -> Conv 3x3 -> Relu (r1) -> Conv 3x3 -> Relu (r2) -> Conv 3x3 -> + r1 ->
    Relu, and x -> Relu. r2 is read only by conv3 (rounded in conv2's store); r1 by conv2 and by
    conv3's epilogue as float32 (conv1 stores it twice: as it is, and rounded for conv2); x by
    conv1 and a Relu (a rounding kernel's copy); the weights rounded on the host."""
    rng = np.random.default_rng(4)
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    return _model([helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], name="conv1", **conv),
                   helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
                   helper.make_node("Conv", ["r1", "W2", "b2"], ["c2"], name="conv2", **conv),
                   helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
                   helper.make_node("Conv", ["r2", "W3", "b3"], ["c3"], name="conv3", **conv),
                   helper.make_node("Add", ["c3", "r1"], ["s"], name="add"),
                   helper.make_node("Relu", ["s"], ["y"], name="relu3"),
                   helper.make_node("Relu", ["x"], ["z"], name="relu_x")],
                  [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6]), ("z", [1, 8, 6, 6])],
                  [(f"{w}{i}", rng.standard_normal((8, 8, 3, 3)) / 3 if w == "W" else rng.standard_normal(8))
                   for i in (1, 2, 3) for w in "Wb"])


def _matmul_input_and_relu():
    """MatMul of two graph inputs whose A is also a graph output's Relu input (a rounded copy;
    B rounded in place)."""
    return _model([helper.make_node("MatMul", ["a", "b"], ["c"], name="mm"),
                   helper.make_node("Relu", ["a"], ["r"], name="relu")],
                  [("a", [20, 24]), ("b", [24, 12])], [("c", [20, 12]), ("r", [20, 24])])


def _elementwise_producers():
    """Relu(a) read only by a MatMul (rounded in the Relu kernel's store); Abs(a) read by a MatMul
    and returned (stored twice by its kernel); b read by both MatMuls only (rounded in place)."""
    return _model([helper.make_node("Relu", ["a"], ["r"], name="relu"),
                   helper.make_node("MatMul", ["r", "b"], ["c"], name="mm1"),
                   helper.make_node("Abs", ["a"], ["t"], name="abs"),
                   helper.make_node("MatMul", ["t", "b"], ["e"], name="mm2")],
                  [("a", [20, 24]), ("b", [24, 12])], [("c", [20, 12]), ("e", [20, 12]), ("t", [20, 24])])


@pytest.mark.parametrize("build", [_conv_chain, _matmul_input_and_relu, _elementwise_producers])
def test_rounded_where_produced_is_bit_identical_to_cvt_per_fragment(build, tmp_path, monkeypatch):
    from conftest import random_feeds

    from dlc.targets.cuda.emulate import Emulator

    model = build()
    feeds = random_feeds(model, 0)
    outputs = {}
    for round_ in (0, 1):
        _target(tmp_path, monkeypatch, gemm_tf32_round=round_, gemm_tf32_tile_k=8)
        (cuda,) = _cuda_steps(_compile(model))
        outputs[round_] = Emulator(cuda.llvm_ir).run(cuda.plan, cuda.weights, feeds)
        if round_ == 0:
            plan = cuda.plan
            kernels = [launch["kernel"] for launch in plan["launches"]]
            ptx = cuda.ptx
    for name, got in outputs[0].items():
        assert np.array_equal(got, outputs[1][name]), name
    if build is _elementwise_producers:
        b = next(spec["buffer"] for spec in plan["inputs"] if spec["name"] == "b")
        rounding = [launch for launch in plan["launches"] if launch["kernel"].startswith("dlc_tf32_round")]
        assert [launch["args"] for launch in rounding] == [[b, b]]  # a's kernels round their results
        elementwise = [k for k in kernels if "Relu" in k or "Abs" in k]
        assert elementwise and all("cvt.rna" in _entry(ptx, k) for k in elementwise)
        assert all("cvt.rna" not in _entry(ptx, k) for k in kernels if "MatMul" in k)
        return
    x = next(spec["buffer"] for spec in plan["inputs"] if spec["name"] in ("x", "a"))
    (copy,) = [launch for launch in plan["launches"] if launch["kernel"].startswith("dlc_tf32_round")
               and launch["args"][0] == x]
    assert copy["args"][1] != x and plan["buffers"][copy["args"][1]]["kind"] == "temp"  # a copy: Relu reads x too
    if build is _conv_chain:
        assert kernels == ["dlc_tf32_round_288", "k0_Conv_fused", "k2_Conv_fused", "k4_Conv_fused", "k7_Relu"]
        assert {b.get("name") for b in plan["buffers"] if b.get("tf32")} == \
            {f"W{i}:tap_major:tf32" for i in (1, 2, 3)}
        conv1, conv2, conv3 = (plan["launches"][i]["args"] for i in (1, 2, 3))
        # conv1: x's copy, W1, b1 -> r1 and r1 rounded (one more output); conv2 reads the rounded
        # r1, conv3's epilogue the float32 one.
        assert len(conv1) == 5 and conv1[0] == copy["args"][1] and conv2[0] == conv1[4] and conv1[3] in conv3
        # conv3 reads r2 as it is: no cvt anywhere in it; conv1 rounds one of its two stores,
        # conv2 each of its stores.
        assert "cvt.rna" not in _entry(ptx, "k4_Conv_fused")
        first, second = _entry(ptx, "k0_Conv_fused"), _entry(ptx, "k2_Conv_fused")
        assert 2 * first.count("cvt.rna") == first.count("st.global") > 0
        assert second.count("cvt.rna") == second.count("st.global") > 0
    else:
        b = next(spec["buffer"] for spec in plan["inputs"] if spec["name"] == "b")
        assert any(launch["args"] == [b, b] for launch in plan["launches"])  # only the GEMM reads b: in place
        assert "cvt.rna" not in _entry(ptx, next(k for k in kernels if "MatMul" in k))


def test_host_rounding_is_cvt_rna():
    from dlc.targets.cuda.emulate import _tf32_round
    from dlc.targets.cuda.target import round_tf32

    bits = np.array([0, 0x80000000, 0x3F800FFF, 0x3F801000, 0x3F803000, 0xBF801000, 0x7F7FFFFF, 0x00000FFF,
                     0x00001000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF], np.uint32)
    bits = np.concatenate([bits, np.random.default_rng(0).integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)])
    values = bits.view(np.float32)
    got = round_tf32(values.reshape(2, -1)).reshape(-1).view(np.uint32)
    want = np.array([_tf32_round(v) for v in values], np.int64).astype(np.uint32)
    assert np.array_equal(got, want)


def test_register_staged_schedule_on_the_host_emulation(tmp_path, monkeypatch):
    # The first-step schedule (Conv's of few channels, transposed A) runs on the emulation too.
    from conftest import random_feeds

    _target(tmp_path, monkeypatch, gemm_tf32_pipeline=0)
    model = _matmul(70, 40, 72)
    feeds = random_feeds(model, 0)
    got, cuda = _emulated(model, feeds)
    assert "cp.async" not in cuda.ptx and MMA in cuda.ptx
    np.testing.assert_allclose(got, _tf32(feeds["a"]) @ _tf32(feeds["b"]), rtol=0, atol=1e-5)


def test_host_emulation_sees_a_stage_read_before_its_copies_land(tmp_path, monkeypatch):
    # The emulated copies land when wait_group says they must: a kernel that waited for one
    # group too few reads stale shared memory and is wrong by O(1), as it may be on a GPU.
    from conftest import random_feeds

    _target(tmp_path, monkeypatch, **EMULATED["edges"][0])
    model = _matmul(70, 40, 72)
    feeds = random_feeds(model, 0)
    (cuda,) = _cuda_steps(_compile(model))
    assert "cp.async.wait_group 1;" in cuda.llvm_ir
    got, _ = _emulated(model, feeds, cuda.llvm_ir.replace("cp.async.wait_group 1;", "cp.async.wait_group 2;"))
    assert np.abs(got - _tf32(feeds["a"]) @ _tf32(feeds["b"])).max() > 0.1


# --- on a GPU ------------------------------------------------------------------------------------

def _tolerance(k: int, rounded: bool = True) -> float:
    # TF32 keeps 10 of float32's 23 mantissa bits: a product is off by up to 2^-10 relative when
    # both inputs are rounded to nearest (2^-9 when truncated), and K of them add like a random
    # walk; inputs are O(1), so 8 of those bounds the largest of ~10^5 outputs.
    return 8 * (2**-10 if rounded else 2**-9) * np.sqrt(k)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("case", ["edges", "k_major_b", "batched", "one_row", "conv1x1", "conv3x3", "conv_strided"])
def test_gpu_pipelined_tf32_shapes_match_onnxruntime(case, tmp_path, monkeypatch):
    _target(tmp_path, monkeypatch)
    rng = np.random.default_rng(7)
    model, k = {
        # M, N past the last tile, K = 100 ends inside a 32-deep tile (zero-filled chunks).
        "edges": (lambda: (_mlp(1000, 100, 1004), 100)),
        "k_major_b": (lambda: (_gemm_transb(300, 256, 200), 256)),
        "batched": (lambda: (_model([helper.make_node("MatMul", ["q", "k"], ["s"], name="scores"),
                                     helper.make_node("MatMul", ["s", "W"], ["y"], name="proj")],
                                    [("q", [2, 3, 33, 16]), ("k", [2, 3, 16, 40])], [("y", [2, 3, 33, 8])],
                                    [("W", rng.standard_normal((40, 8)))]), 40)),
        "one_row": (lambda: (_matmul(1, 512, 36), 512)),
        "conv1x1": (lambda: (_conv1x1(3, 64, 28, 96), 64)),
        "conv3x3": (lambda: (_conv(2, 64, 28, 64), 576)),
        "conv_strided": (lambda: (_conv(2, 32, 29, 48, strides=[2, 2], pads=[1, 1, 0, 0]), 288)),
    }[case]()
    _check(model, rtol=0, atol=_tolerance(k))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("keys", [{}, {"gemm_tf32_stages": 2}, {"gemm_tf32_stages": 4, "gemm_tf32_tile_k": 16},
                                  {"gemm_tf32_block_m": 256, "gemm_tf32_block_n": 128, "gemm_tf32_warps_m": 4},
                                  {"gemm_tf32_block_m": 128, "gemm_tf32_block_n": 256, "gemm_tf32_warps_n": 4,
                                   "gemm_tf32_group_m": 3},
                                  {"gemm_tf32_round": 1}, {"gemm_tf32_round": 2},
                                  {"gemm_tf32_round": 0, "gemm_tf32_preround": 0}])
def test_gpu_pipelined_tf32_tilings_match_onnxruntime(keys, tmp_path, monkeypatch):
    _target(tmp_path, monkeypatch, **keys)
    truncated = keys.get("gemm_tf32_round", 0) == 0 and keys.get("gemm_tf32_preround", 1) == 0
    _check(_mlp(700, 520, 900), rtol=0, atol=_tolerance(520, not truncated))


# The rounding kernel alone, on the host: counts that are a multiple of four (two 16-byte
# vectors per thread: 3 and 515 vectors leave the last thread one, which it rounds twice; 2048
# fills its blocks) and counts that are not (a float per thread), in place and into a copy.
# Values straddle every rounding case: ties, carries into the exponent, a quiet NaN, -inf.
@pytest.mark.parametrize("count", [12, 2060, 8192, 7, 1027])
@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "copy"])
def test_rounding_kernel_rounds_every_element(count, in_place):
    from dlc.targets.cuda.codegen import ROUND_BLOCK, round_kernel
    from dlc.targets.cuda.emulate import Emulator
    from dlc.targets.cuda.target import round_tf32

    name, text, grid = round_kernel(count)
    bits = np.random.default_rng(count).integers(0, 2 ** 32, count, dtype=np.uint64).astype(np.uint32)
    bits[(bits & 0x7F800000) == 0x7F800000] &= 0xFF7FFFFF  # finite: the host quiets signalling NaNs
    bits[:6] = [0x3F801000, 0x3F803000, 0x3FFFF000, 0x7F7FF000, 0x7FC00001, 0xFF800000][:min(6, count)]
    x = bits.view(np.float32)
    buffers = [{"shape": [count], "kind": "input"}] + ([] if in_place else [{"shape": [count], "kind": "temp"}])
    out = 0 if in_place else 1
    plan = {"buffers": buffers, "inputs": [{"name": "x", "buffer": 0, "shape": [count]}],
            "outputs": [{"name": "y", "buffer": out, "shape": [count]}],
            "launches": [{"kernel": name, "grid": list(grid), "block": [ROUND_BLOCK, 1, 1], "args": [0, out]}]}
    got = Emulator(text).run(plan, {}, {"x": x})["y"]
    np.testing.assert_array_equal(got.view(np.uint32), round_tf32(x).view(np.uint32))
