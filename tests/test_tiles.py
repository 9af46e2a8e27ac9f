"""User tile overrides (`--tile`, `--tiles FILE.json`, `dlc.compile(tiles=...)`): the tiles
land in the IR on the GEMMs the selectors match, results stay right, mistakes are named."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from conftest import ROOT, random_feeds, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper
from test_cli import run_cli

import dlc
from dlc.driver import compile_model
from dlc.errors import CompileError
from dlc.targets import CompileOptions

CNN = str(ROOT / "examples" / "models" / "cnn.onnx")


def _conv_model() -> onnx.ModelProto:
    """Two convs with odd sizes (implicit GEMMs 81x24x27 and 81x20x216: 9x9 pixels, 3x3
    windows): edge tiles everywhere."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.uniform(-1, 1, (24, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.uniform(-1, 1, (20, 24, 3, 3)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1], name="conv1"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")],
        "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 20, 9, 9])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _gemm_specs(model, tiles) -> list[dict[str, int]]:
    module = compile_model(model, options=CompileOptions(tiles=tiles), compile_to="linalg").module
    specs = []
    for text in re.findall(r"dlc\.gemm = \{([^}]*)\}", str(module)):
        specs.append({k: int(v) for k, v in re.findall(r"(\w+) = (\d+) : i64", text)})
    return specs


def test_overrides_reach_the_ir_by_selector():
    specs = _gemm_specs(_conv_model(), "*:kc=18;81x20x216:mr=4,nr=16,mc=8")
    by_shape = {(s["m"], s["n"], s["k"]): s for s in specs}
    assert by_shape[81, 24, 27]["kc"] == 18 and by_shape[81, 20, 216]["kc"] == 18
    assert (by_shape[81, 20, 216]["mr"], by_shape[81, 20, 216]["nr"]) == (4, 16)
    default = {(s["m"], s["n"], s["k"]): s for s in _gemm_specs(_conv_model(), None)}
    assert default[81, 20, 216]["kc"] == 216  # the override is what changed it
    for spec in specs:  # the tiles chosen around the user's still nest
        assert spec["mc"] % spec["mr"] == 0 and spec["nc"] % spec["nr"] == 0


@pytest.mark.parametrize("tiles", [
    {"*": {"mr": 1, "nr": 16, "kc": 9, "mc": 3, "nc": 16}},  # every loop has a tail
    {"*": {"mr": 7, "nr": 48, "kc": 99, "mc": 7}},
    "mr=3,nr=32,mc=9;81x20x216:kc=63",
])
def test_overridden_tiles_compute_the_same_result(tiles):
    model = _conv_model()
    feeds = random_feeds(model)
    got = dlc.compile(model, tiles=tiles, threads=2).run(feeds)["y"]
    # Tiles only reorder the k sum (kc blocks): float32 rounding, 216 terms of |x| < 24.
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-4)


def test_kernel_selector_and_json_file_on_the_cli(capsys, tmp_path):
    tiles = tmp_path / "tiles.json"
    tiles.write_text(json.dumps({"k3_Conv_fused": {"mr": 4, "nr": 32, "kc": 45}}))
    out = tmp_path / "cnn.mlir"
    code, _, err = run_cli(capsys, "compile", CNN, "--compile-to", "linalg", "-o", str(out),
                           "--tiles", str(tiles), "--tile", "k3_Conv_fused:kc=18")
    assert code == 0, err
    text = out.read_text()
    gemm = re.search(r"func.call @(dlc_gemm_\d+)", text[text.index("@k3_Conv_fused("):]).group(1)
    spec = re.search(rf"@{gemm}\(.*dlc\.gemm = \{{([^}}]*)\}}", text).group(1)
    assert "mr = 4 : i64" in spec and "nr = 32 : i64" in spec and "kc = 18 : i64" in spec  # later wins
    code, out_text, _ = run_cli(capsys, "run", CNN, "--tile", "k3_Conv_fused:mr=4,nr=32", "--repeat", "1")
    assert code == 0 and "probabilities" in out_text


@pytest.mark.parametrize("tile, message", [
    ("k99_Conv:mr=4", "no GEMM matches 'k99_Conv'"),
    ("mr=4,zz=3", "'zz=3' is not TILE=N"),
    ("kc=-2", "kc must be a positive integer"),
    ("nr=20", "nr=20 is not a multiple of the target's vector width"),
    ("mr=3,mc=16", "do not nest"),
    ("kc=8", "kc=8 is not a multiple of the 9 taps"),
])
def test_bad_overrides_are_named(capsys, tile, message):
    code, out, err = run_cli(capsys, "compile", CNN, "--compile-to", "linalg", "--tile", tile)
    assert code == 1
    assert message in err + out and "Traceback" not in err + out


def test_bad_tiles_json_is_named(capsys, tmp_path):
    bad = tmp_path / "tiles.json"
    bad.write_text('{"*": 3}')
    code, out, err = run_cli(capsys, "compile", CNN, "--compile-to", "linalg", "--tiles", str(bad))
    assert code == 1 and "must map selectors to tiles" in err + out
    with pytest.raises(CompileError, match="no GEMM matches"):
        dlc.compile(CNN, tiles={"nothing": {"kc": 8}})


def _fake_sysfs(root, entries):
    root.mkdir()
    for i, (level, kind, size) in enumerate(entries):
        index = root / f"index{i}"
        index.mkdir()
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")
    return root


def test_cache_sizes_come_from_sysfs(tmp_path):
    """Tiles follow the host's caches: a Zen 4 core's 32 KiB L1d and 1 MiB L2 are read, the
    instruction cache and L3 are not taken for them."""
    from dlc.runtime.host import DEFAULT_L1_BYTES, DEFAULT_L2_BYTES, cache_sizes

    zen4 = _fake_sysfs(tmp_path / "zen4", [(1, "Data", "32K"), (1, "Instruction", "64K"),
                                           (2, "Unified", "1024K"), (3, "Unified", "32768K")])
    assert cache_sizes(zen4) == (32 << 10, 1 << 20)
    odd = _fake_sysfs(tmp_path / "odd", [(1, "Data", "garbage"), (2, "Unified", "2M")])
    assert cache_sizes(odd) == (DEFAULT_L1_BYTES, 2 << 20)
    assert cache_sizes(tmp_path / "missing") == (DEFAULT_L1_BYTES, DEFAULT_L2_BYTES)


def test_the_cpu_target_describes_this_hosts_caches():
    from dlc.runtime.host import host_caches
    from passes.target_info import target_info

    module = compile_model(_conv_model(), options=CompileOptions(threads=1), compile_to="linalg").module
    info = target_info(module)
    assert (info.l1_bytes, info.l2_bytes) == host_caches()


def test_a_few_rows_that_split_evenly_take_three_vector_tiles():
    """A GEMM of <= 64 rows whose modelled tile leaves a ragged row block takes 7-9 rows by
    three vectors when that splits the rows evenly (a 7x7 map's 49 pixels: 7x48, not 13x32);
    a user's tiles, an even split already, and 16-register targets keep the model's choice."""
    from dialects.gemm_ukernel import _register_tile, choose_tiles

    caches = (48 * 1024, 2 * 1024 * 1024)
    assert choose_tiles(49, 1152, 192, 16, *caches)[:2] == (7, 48)
    assert choose_tiles(63, 320, 1152, 16, *caches)[:2] == (9, 48)
    assert choose_tiles(49, 1152, 192, 16, *caches, mr=13, nr=32)[:2] == (13, 32)
    for m, lanes in ((48, 16), (200, 16), (49, 8), (50, 16)):
        assert choose_tiles(m, 1152, 192, lanes, *caches)[:2] == _register_tile(m, 1152, lanes)


def test_a_tile_one_vector_wide_takes_eight_rows():
    """Rows read in turn, one vector of columns (an NHWC 1x1 conv to 16 channels): NARROW_ROWS rows,
    not the model's 30; wider, AVX2, window or a user's rows keep the model's choice."""
    from dialects.gemm_ukernel import NARROW_ROWS, _register_tile, choose_tiles

    caches = (48 * 1024, 2 * 1024 * 1024)
    assert _register_tile(12544, 16, 16)[0] > NARROW_ROWS
    assert choose_tiles(12544, 16, 32, 16, *caches, "packed", rows_in_turn=True)[:2] == (NARROW_ROWS, 16)
    assert choose_tiles(12544, 16, 32, 16, *caches, "packed")[:2] == _register_tile(12544, 16, 16)  # a window's
    assert choose_tiles(12544, 24, 32, 16, *caches, "packed", rows_in_turn=True)[:2] == _register_tile(12544, 24, 16)
    assert choose_tiles(12544, 8, 32, 8, *caches, "packed", rows_in_turn=True)[:2] == _register_tile(12544, 8, 8)
    assert choose_tiles(12544, 16, 32, 16, *caches, "packed", rows_in_turn=True, mr=30)[0] == 30


def test_a_window_conv_takes_a_narrower_tile_where_it_splits_evenly_over_the_threads():
    """ResNet's 512-channel 3x3 conv on a 7x7 map: 7 x 48 tiles make 7 x 11 of them, whose best
    grid over 16 threads (1 x 11) leaves 5 idle; 7 x 32 tiles (7 x 16) keep all 16 busy. On one
    thread, and where the wider tile already splits evenly, the register tile stays."""
    from dialects.gemm_ukernel import NARROWER_TILE_COST, thread_grid, window_conv_tiles

    l2 = 2 * 1024 * 1024
    assert window_conv_tiles(7, 7, 512, 4608, 9, 16, l2)["nr"] == 48
    assert window_conv_tiles(7, 7, 512, 4608, 9, 16, l2, threads=16)["nr"] == 32
    assert window_conv_tiles(56, 56, 64, 576, 9, 16, l2, threads=16)["nr"] == 32  # 14 x 32: even already
    assert window_conv_tiles(14, 14, 256, 2304, 9, 16, l2, threads=8)["nr"] == 32

    def busiest_tiles(nr: int) -> int:
        panels = -(-512 // nr)
        tm, tn = thread_grid(7, panels, 16, mr=7, nr=nr, k=4608)
        return -(-7 // tm) * -(-panels // tn)

    # the choice is the model's: 7x32's busiest part does less work, even at NARROWER_TILE_COST
    assert busiest_tiles(32) * 32 * NARROWER_TILE_COST < busiest_tiles(48) * 48


def test_avx2_window_convs_take_a_tile_one_register_over_where_rows_would_be_ragged():
    """With AVX2's 16 registers, 4 x 24 splits a row of 7 pixels into 4 + 3 (8 rows computed) and
    of 14 into 4 + 4 + 4 + 2; 7 x 16 needs 17 (one accumulator spilled, at SPILLED_TILE_COST)
    but divides both evenly, and the model takes it there. On 56- and 28-pixel rows the spill
    outweighs a ragged last tile, and there 4 x 24 (7 loads a k step) beats 6 x 16 (8), whose
    loads add to its FMAs' time (WINDOW_LOAD_COST_AVX2); 1x1 windows and AVX-512 keep their
    tiles."""
    from dialects.gemm_ukernel import window_conv_tiles

    l2 = 512 * 1024
    tile = lambda group, n, k, taps, lanes=8: (  # noqa: E731
        lambda t: (t["mr"], t["nr"]))(window_conv_tiles(group, group, n, k, taps, lanes, l2))
    assert tile(7, 512, 4608, 9) == (7, 16)
    assert tile(14, 256, 2304, 9) == (7, 16)
    assert tile(56, 64, 576, 9) == (4, 24)
    assert tile(28, 128, 1152, 9) == (4, 24)
    assert tile(55, 64, 16, 1) == (6, 16)  # a 1x1 window: no spilled tiles
    assert tile(7, 512, 4608, 9, lanes=16) == (7, 48)


def test_a_gemm_its_depthwise_reader_splits_by_channels_splits_its_rows_where_they_split_evenly():
    """`split_rows` (a 1x1 conv that mark-depthwise-feeders marked): rows alone wherever the
    busiest row part holds at most ROWS_ONLY_SLACK / t of them, with no more threads than the
    best grid takes; elsewhere the best grid."""
    from dialects.gemm_ukernel import ROWS_ONLY_SLACK, thread_grids

    blocks, panels = 12, 98  # MobileNetV2's 24 -> 144 expand over 56x56: 144 rows of 12, 98 panels of 32
    best = thread_grids(blocks, panels, 16, mr=12, nr=32, k=24)
    rows = thread_grids(blocks, panels, 16, mr=12, nr=32, k=24, rows_only=True)
    assert best[1] == (1, 2) and rows[0] == (1, 1)
    assert [rows[t - 1] for t in (2, 3, 4, 6)] == [(2, 1), (3, 1), (4, 1), (6, 1)]
    assert 2 * 8 > ROWS_ONLY_SLACK * blocks and rows[7] == best[7]  # 8 threads: 2 blocks a part, 1.33x
    assert rows[15] == best[15]
    tiny = thread_grids(2, 1, 16, mr=12, nr=32, k=8, rows_only=True)  # worth one thread: stays one
    assert set(tiny) == {(1, 1)}


def test_the_expand_convs_of_inverted_residual_blocks_split_their_rows():
    """In a MobileNetV2 block compiled for 2 threads in NCHW (pointwise-convs-nhwc, which runs such
    blocks in NHWC, switched off), the 1x1 expand convs (read by depthwise convs) carry
    split_rows into their GEMMs, the project convs (read by an Add) do not."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from models import mobilenet_block

    from passes.pipeline import PassInstrumentation

    text = str(compile_model(mobilenet_block(resolution=56), options=CompileOptions(threads=2), compile_to="linalg",
                             instrument=PassInstrumentation(disabled=frozenset({"pointwise-convs-nhwc"}))).module)
    gemms = [line for line in text.splitlines() if "dlc.gemm =" in line]
    split = [line for line in gemms if "split_rows = 1" in line]
    assert len(split) == 2 and all("memref<96x16xf32>" in line for line in split), split  # 16 -> 96 channels
    assert len(gemms) > len(split)  # 96 -> 16 and 96 -> 32 (read by an Add, a classifier): not split


@pytest.mark.parametrize("spec, in_turn", [
    ({"m": 3136, "n": 256, "k": 64}, True),                        # ResNet-50's NHWC expand conv
    ({"m": 3136, "n": 256, "k": 64, "c_transposed": 1}, False),   # stores into NCHW planes
    ({"m": 3136, "n": 64, "k": 576, "a_window_h": 3}, False),     # a 3x3 conv's window A
    ({"m": 128, "n": 768, "k": 256, "dtype": "u8s8"}, False),     # the integer GEMM keeps its blocks
])
def test_row_tiles_run_in_turn_across_a_b_that_fits_l2(spec, in_turn):
    """A float GEMM storing whole rows of C from a packed B of one block runs each row tile
    across all panels (mc = mr): its C and residual rows become contiguous streams."""
    from dialects.gemm_ukernel import choose_tiles, rows_in_turn

    assert rows_in_turn(spec) == in_turn
    mr, nr, kc, mc, nc = choose_tiles(spec["m"], spec["n"], spec["k"], 16, 48 << 10, 2 << 20, "packed",
                                      rows_in_turn=rows_in_turn(spec))
    assert (mc == mr) == in_turn
    # B larger than one kc x nc block (here 8 MB of it): the usual mc blocks
    mr, nr, kc, mc, nc = choose_tiles(3136, 2048, 1024, 16, 48 << 10, 2 << 20, "packed", rows_in_turn=True)
    assert mc > mr
