"""im2col into the micro-kernel's panels (dlc/codegen/im2col.py): every column of a block
lands where b_layout "window" reads it, the last panel's lanes past the block are zeros (not
stale scratch), and nothing outside the block is written. One function per (kernel width,
column stride, nr) serves every geometry it is called with (the rest are arguments), and it
reads only the padded input and writes only the block: both lie against pages that cannot
be touched."""

from __future__ import annotations

import ctypes
import mmap

import numpy as np
import pytest
from llvmlite import ir

from dlc.codegen.im2col import RUNTIME_FIELDS, Im2colSpec, im2col_function, im2col_name
from dlc.codegen.native import compile_object
from dlc.runtime.mcjit import NativeModule


def _reference(x: np.ndarray, s: Im2colSpec) -> np.ndarray:
    """col[(c, kh, kw), (oh, ow)] of the padded input x [channels, hp, wp]."""
    oh_count = (s.hp - (s.kh - 1) * s.dh - 1) // s.sh + 1
    rows = []
    for c in range(s.channels):
        for kh in range(s.kh):
            for kw in range(s.kw):
                window = x[c, kh * s.dh:, kw * s.dw:][::s.sh, ::s.sw][:oh_count, :s.ow]
                rows.append(window.reshape(-1))
    return np.stack(rows)


def _full_width(spec: Im2colSpec) -> Im2colSpec:
    """`spec` with the widest ow its padded input holds (the last tap of a row at its end)."""
    ow = (spec.wp - (spec.kw - 1) * spec.dw - 1) // spec.sw + 1
    return Im2colSpec(**{**spec.__dict__, "ow": ow})


GEOMETRIES = [  # (spec, nr); specs of one (kw, sw, nr) share a function
    (Im2colSpec(3, 3, 3, 1, 1, 1, 1, 9, 10, 8), 16),
    (Im2colSpec(5, 2, 3, 2, 1, 1, 2, 12, 15, 11), 16),  # another kh, sh, dilation, sizes: same function
    (Im2colSpec(2, 3, 3, 2, 2, 1, 1, 11, 11, 5), 32),
    (Im2colSpec(3, 1, 3, 1, 2, 1, 1, 7, 35, 17), 32),
    (Im2colSpec(2, 2, 3, 1, 2, 2, 1, 10, 12, 5), 48),
    (Im2colSpec(3, 3, 3, 1, 1, 1, 1, 40, 40, 38), 24),  # AVX2's panels
    (Im2colSpec(2, 3, 5, 1, 4, 1, 1, 12, 40, 9), 16),  # stride 4: the widest vector loads
    (Im2colSpec(2, 3, 3, 1, 5, 1, 1, 12, 33, 7), 16),  # stride 5: a float at a time
    (Im2colSpec(4, 1, 1, 2, 2, 1, 1, 9, 9, 5), 32),  # a 1x1 stride-2 conv (ResNet's shortcut)
    (Im2colSpec(3, 7, 7, 2, 2, 1, 1, 37, 37, 16), 48),  # ResNet's stem, smaller
    (Im2colSpec(1, 1, 3, 1, 1, 1, 1, 1, 3, 1), 16),  # one output column
]
GEOMETRIES += [(_full_width(spec), nr) for spec, nr in GEOMETRIES]
IDS = [f"c{s.channels}_k{s.kh}x{s.kw}_s{s.sh}x{s.sw}_d{s.dh}x{s.dw}_{s.hp}x{s.wp}_ow{s.ow}_nr{nr}"
       for s, nr in GEOMETRIES]
SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, *[ctypes.c_int64] * (2 + len(RUNTIME_FIELDS)))


@pytest.fixture(scope="module")
def im2col_functions():
    """{(spec, nr): callable} from one module holding each (kw, sw, nr) function once."""
    module = ir.Module("im2col")
    for spec, nr in GEOMETRIES:
        im2col_function(module, spec, nr).linkage = ""
    names = {im2col_name(spec, nr) for spec, nr in GEOMETRIES}
    assert len([f for f in module.functions if f.name.startswith("dlc_gemm_im2col")]) == len(names) < len(GEOMETRIES)
    native = NativeModule(compile_object(str(module)))
    return native, {(spec, nr): SIGNATURE(native.address(im2col_name(spec, nr))) for spec, nr in GEOMETRIES}


def _blocks(pixels: int, nr: int) -> list[tuple[int, int]]:
    """Column ranges [j0, j1) a worker may ask for: whole, from a later panel, short tails, the last column."""
    return sorted({(0, pixels), (min(nr, pixels - 1), pixels), (0, min(pixels, nr + 5)),
                   (min(nr, pixels - 1), min(pixels, 2 * nr - 3)), (pixels - 1, pixels), (0, 1)})


@pytest.mark.parametrize("index", range(len(GEOMETRIES)), ids=IDS)
def test_columns_land_in_panels_and_the_tail_is_zero(im2col_functions, index):
    _native, functions = im2col_functions
    spec, nr = GEOMETRIES[index]
    rng = np.random.default_rng(index)
    x = rng.standard_normal((spec.channels, spec.hp, spec.wp)).astype(np.float32)
    expected = _reference(x, spec)
    pixels = expected.shape[1]
    for j0, j1 in _blocks(pixels, nr):
        panels = -(-(j1 - j0) // nr)
        guard = 64
        col = np.full(panels * spec.depth * nr + guard, np.nan, np.float32)
        functions[spec, nr](x.ctypes.data, col.ctypes.data, j0, j1, *(getattr(spec, f) for f in RUNTIME_FIELDS))
        block = col[:-guard].reshape(panels, spec.depth, nr)
        got = block.transpose(1, 0, 2).reshape(spec.depth, panels * nr)
        np.testing.assert_array_equal(got[:, : j1 - j0], expected[:, j0:j1])
        assert not got[:, j1 - j0:].any(), "lanes past the block must be zeros"
        assert np.isnan(col[-guard:]).all(), "wrote past the block"


class _Guarded:
    """`nbytes` of read-write memory with a PROT_NONE page right after it (`after`) or right
    before it: a read or write outside them is a SIGSEGV."""

    libc = ctypes.CDLL(None, use_errno=True)

    def __init__(self, nbytes: int, after: bool):
        page = mmap.PAGESIZE
        pages = -(-max(nbytes, 1) // page)
        self.map = mmap.mmap(-1, (pages + 1) * page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self.guard = base + pages * page if after else base
        self.address = base + pages * page - nbytes if after else base + page
        assert self.libc.mprotect(ctypes.c_void_p(self.guard), page, 0) == 0

    def array(self, count: int) -> np.ndarray:
        return np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.address))

    def close(self) -> None:
        self.libc.mprotect(ctypes.c_void_p(self.guard), mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_WRITE)


@pytest.mark.parametrize("index", range(len(GEOMETRIES)), ids=IDS)
def test_reads_and_writes_stay_inside_the_input_and_the_block(im2col_functions, index):
    """The padded input and the block of columns lie against a guard page after them, then
    before them, for every block a worker may ask for: a masked load or store that touched
    a float outside would crash the test process."""
    _native, functions = im2col_functions
    spec, nr = GEOMETRIES[index]
    x = np.random.default_rng(index).standard_normal((spec.channels, spec.hp, spec.wp)).astype(np.float32)
    expected = _reference(x, spec)
    for j0, j1 in _blocks(expected.shape[1], nr):
        panels = -(-(j1 - j0) // nr)
        for after in (True, False):
            source, target = _Guarded(x.nbytes, after), _Guarded(panels * spec.depth * nr * 4, after)
            source.array(x.size)[:] = x.reshape(-1)
            functions[spec, nr](source.address, target.address, j0, j1, *(getattr(spec, f) for f in RUNTIME_FIELDS))
            got = target.array(panels * spec.depth * nr).reshape(panels, spec.depth, nr).transpose(1, 0, 2)
            np.testing.assert_array_equal(got.reshape(spec.depth, -1)[:, : j1 - j0], expected[:, j0:j1])
            source.close()
            target.close()


def test_a_grid_of_row_parts_shares_one_im2col():
    """With several row parts (`shared` in `dlc.im2col`), one region packs the whole im2col,
    panels and channel ranges split over the threads, and a second multiplies it: the output
    is the one-thread build's, bit for bit, and onnxruntime's. (Its filter is an input, known at
    run time, so not an implicit GEMM, which reads a filter packed at compile time.) 192 output
    channels at 8 threads take row parts with AVX2's 6-row tiles and AVX-512's 12-row ones alike
    (96 at 4 threads does only with AVX-512's), so the path runs on either host."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from dlc.driver import compile_model
    from dlc.targets import CompileOptions
    from dlc.tools.oracle import onnxruntime_session

    rng = np.random.default_rng(3)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)
               for name, shape in (("b", (192,)),)]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 8, 8]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [192, 64, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 192, 8, 8])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    x = {"x": rng.standard_normal((1, 64, 8, 8)).astype(np.float32),
         "w": rng.standard_normal((192, 64, 3, 3)).astype(np.float32) * 0.1}
    loops = str(compile_model(model, options=CompileOptions(threads=8), compile_to="loops").module)
    assert "shared = 1" in loops and "tm = 1 " not in loops
    single = compile_model(model, options=CompileOptions(threads=1)).executable.run(x)["y"]
    for threads in (2, 8):
        shared = compile_model(model, options=CompileOptions(threads=threads)).executable.run(x)["y"]
        assert shared.tobytes() == single.tobytes(), threads
    np.testing.assert_allclose(single, onnxruntime_session(model).run(None, x)[0], rtol=1e-5, atol=1e-5)


def test_grid_counts_where_the_columns_come_from():
    """A row part of its own builds its columns in L2 from the input; several row parts share one
    im2col streamed through L3. ResNet's 28x28 3x3 conv (128 x 784 x 1152, 13 x 32 tiles) at 4
    threads: columns only, 1 x 4 (2 x 2 shared the im2col and ran 1.7x onnxruntime on the Xeon);
    a shared im2col's columns cost a part more than the weights' rows (other cores wrote them),
    so at 16 threads the 14x14 layer (20 x 7 tiles) takes 2 x 7 (0.331 ms on the Xeon) over
    4 x 4 (0.423) and a 7x7 map's 2 panels split 8 x 2 (0.203) over 15 x 1 (0.225), where the
    rows still split most; one thread takes no grid."""
    from dialects.gemm_ukernel import thread_grid
    from passes.lowering.rules.conv import _im2col_grid

    assert thread_grid(10, 25, 4, mr=13, nr=32, k=1152) == (2, 2)  # the bare GEMM model's choice
    assert _im2col_grid(10, 25, 4, 13, 32, 1152, 784, 9) == (1, 4)
    assert _im2col_grid(10, 25, 16, 13, 32, 1152, 784, 9) == (1, 13)
    assert _im2col_grid(20, 7, 16, 13, 32, 2304, 196, 9) == (2, 7)
    assert _im2col_grid(43, 2, 16, 12, 32, 2304, 49, 9) == (8, 2)
    assert _im2col_grid(10, 25, 1, 13, 32, 1152, 784, 9) == (1, 1)
