"""The `loops` -> LLVM IR emitter and native loading: small programs checked against numpy."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects import affine, arith, builtin, func, linalg, math, memref, scf
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser
from xdsl.transforms.convert_linalg_to_loops import ConvertLinalgToLoopsPass

from dialects.arith_remf import RemFOp
from dlc.codegen.llvm_emitter import emit_llvm, entry_symbol
from dlc.codegen.native import compile_object
from dlc.errors import CompileError
from dlc.runtime.mcjit import NativeModule, host_cpu

_DIALECTS = (builtin.Builtin, func.Func, arith.Arith, math.Math, memref.MemRef, scf.Scf,
             affine.Affine, linalg.Linalg)  # fmt: skip


def lower(text: str) -> ModuleOp:
    """Parse MLIR text and lower linalg to scf loops, as the `loops` phase does."""
    ctx = Context()
    for dialect in _DIALECTS:
        ctx.load_dialect(dialect)
    ctx.load_op(RemFOp)  # arith.remf, missing from xDSL 0.75's arith (as dialects/context.py)
    module = Parser(ctx, text).parse_module()
    ConvertLinalgToLoopsPass().apply(ctx, module)
    module.verify()
    return module


def aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A C-contiguous copy of `array` whose data starts on an `alignment`-byte boundary."""
    raw = np.empty(array.nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    out = raw[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


class Program:
    """A lowered module compiled for this host; call it with numpy arrays (one per @main arg)."""

    def __init__(self, text: str, weight_offsets: dict[str, int] | None = None, **options):
        self.llvm_ir = emit_llvm(lower(text), weight_offsets or {}, **options)
        self.native = NativeModule(compile_object(self.llvm_ir))
        prototype = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        self.entry = prototype(self.native.address(entry_symbol()))

    def __call__(self, *arrays: np.ndarray, weights: np.ndarray | None = None) -> None:
        buffers = (ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays))
        self.entry(ctypes.addressof(buffers), None if weights is None else weights.ctypes.data, None)


def test_broadcast_add():
    program = Program("""
    func.func @main(%a: memref<3x5xf32>, %b: memref<1x5xf32>, %out: memref<3x5xf32>) {
      linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>,
                                       affine_map<(d0, d1) -> (0, d1)>,
                                       affine_map<(d0, d1) -> (d0, d1)>],
                      iterator_types = ["parallel", "parallel"]}
          ins(%a, %b : memref<3x5xf32>, memref<1x5xf32>) outs(%out : memref<3x5xf32>) {
      ^bb0(%x: f32, %y: f32, %o: f32):
        %s = arith.addf %x, %y : f32
        linalg.yield %s : f32
      }
      func.return
    }""")
    rng = np.random.default_rng(0)
    a = aligned(rng.standard_normal((3, 5), dtype=np.float32))
    b = aligned(rng.standard_normal((1, 5), dtype=np.float32))
    out = aligned(np.zeros((3, 5), np.float32))
    program(a, b, out)
    np.testing.assert_array_equal(out, a + b)


def test_matmul_with_n_innermost():
    # Iteration space (m, k, n): the innermost loop walks along rows of B and C.
    program = Program("""
    func.func @main(%a: memref<6x7xf32>, %b: memref<7x9xf32>, %c: memref<6x9xf32>) {
      %zero = arith.constant 0.0 : f32
      linalg.fill ins(%zero : f32) outs(%c : memref<6x9xf32>)
      linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1)>,
                                       affine_map<(d0, d1, d2) -> (d1, d2)>,
                                       affine_map<(d0, d1, d2) -> (d0, d2)>],
                      iterator_types = ["parallel", "reduction", "parallel"]}
          ins(%a, %b : memref<6x7xf32>, memref<7x9xf32>) outs(%c : memref<6x9xf32>) {
      ^bb0(%x: f32, %y: f32, %acc: f32):
        %p = arith.mulf %x, %y : f32
        %s = arith.addf %acc, %p : f32
        linalg.yield %s : f32
      }
      func.return
    }""")
    rng = np.random.default_rng(1)
    a = aligned(rng.standard_normal((6, 7), dtype=np.float32))
    b = aligned(rng.standard_normal((7, 9), dtype=np.float32))
    c = aligned(np.full((6, 9), 42.0, np.float32))
    program(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


def test_reduction_of_exp():
    program = Program("""
    func.func @main(%x: memref<4x33xf32>, %out: memref<4xf32>) {
      %zero = arith.constant 0.0 : f32
      linalg.fill ins(%zero : f32) outs(%out : memref<4xf32>)
      linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>,
                                       affine_map<(d0, d1) -> (d0)>],
                      iterator_types = ["parallel", "reduction"]}
          ins(%x : memref<4x33xf32>) outs(%out : memref<4xf32>) {
      ^bb0(%v: f32, %acc: f32):
        %e = math.exp %v : f32
        %s = arith.addf %acc, %e : f32
        linalg.yield %s : f32
      }
      func.return
    }""")
    x = aligned(np.random.default_rng(2).standard_normal((4, 33), dtype=np.float32))
    out = aligned(np.zeros(4, np.float32))
    program(x, out)
    np.testing.assert_allclose(out, np.exp(x).sum(axis=1), rtol=1e-5)


def test_view_into_i8_arena():
    program = Program("""
    func.func @main(%arena: memref<256xi8>, %out: memref<4x4xf32>) {
      %shift = arith.constant 64 : index
      %v = memref.view %arena[%shift][] : memref<256xi8> to memref<4x4xf32>
      linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d1, d0)>,
                                       affine_map<(d0, d1) -> (d0, d1)>],
                      iterator_types = ["parallel", "parallel"]}
          ins(%v : memref<4x4xf32>) outs(%out : memref<4x4xf32>) {
      ^bb0(%x: f32, %o: f32):
        %d = arith.addf %x, %x : f32
        linalg.yield %d : f32
      }
      func.return
    }""")
    data = np.arange(16, dtype=np.float32).reshape(4, 4)
    arena = aligned(np.zeros(256, np.uint8))
    arena[64:128] = data.view(np.uint8).ravel()
    out = aligned(np.zeros((4, 4), np.float32))
    program(arena, out)
    np.testing.assert_array_equal(out, 2 * data.T)


def test_weight_from_get_global_in_a_kernel_called_by_main():
    program = Program(
        """
    "memref.global"() <{sym_name = "w0", type = memref<4x3xf32>, initial_value,
                        sym_visibility = "private", constant}> : () -> ()
    "memref.global"() <{sym_name = "w1", type = memref<3xf32>, initial_value,
                        sym_visibility = "private", constant}> : () -> ()
    func.func @kernel(%x: memref<4x3xf32>, %out: memref<4x3xf32>) {
      %w = memref.get_global @w0 : memref<4x3xf32>
      %bias = memref.get_global @w1 : memref<3xf32>
      linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>,
                                       affine_map<(d0, d1) -> (d0, d1)>,
                                       affine_map<(d0, d1) -> (d1)>,
                                       affine_map<(d0, d1) -> (d0, d1)>],
                      iterator_types = ["parallel", "parallel"]}
          ins(%x, %w, %bias : memref<4x3xf32>, memref<4x3xf32>, memref<3xf32>)
          outs(%out : memref<4x3xf32>) {
      ^bb0(%a: f32, %b: f32, %c: f32, %o: f32):
        %p = arith.mulf %a, %b : f32
        %s = arith.addf %p, %c : f32
        linalg.yield %s : f32
      }
      func.return
    }
    func.func @main(%x: memref<4x3xf32>, %out: memref<4x3xf32>) {
      func.call @kernel(%x, %out) : (memref<4x3xf32>, memref<4x3xf32>) -> ()
      func.return
    }""",
        weight_offsets={"w0": 64, "w1": 128},
    )  # xDSL 0.75 has no custom syntax for memref.global: the generic form above.
    assert 'define internal void @"kernel"' in program.llvm_ir
    assert "noalias" in program.llvm_ir
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((4, 3), dtype=np.float32)
    w1 = rng.standard_normal(3, dtype=np.float32)
    weights = aligned(np.zeros(192, np.uint8))
    weights[64:112] = w0.view(np.uint8).ravel()
    weights[128:140] = w1.view(np.uint8).ravel()
    x = aligned(rng.standard_normal((4, 3), dtype=np.float32))
    out = aligned(np.zeros((4, 3), np.float32))
    program(x, out, weights=weights)
    np.testing.assert_allclose(out, x * w0 + w1, rtol=1e-6)


def test_scf_for_with_iter_args_and_scalar_kernel_result():
    program = Program("""
    func.func @total(%x: memref<100xf64>) -> f64 {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %n = arith.constant 100 : index
      %zero = arith.constant 0.0 : f64
      %sum = scf.for %i = %c0 to %n step %c1 iter_args(%acc = %zero) -> (f64) {
        %v = memref.load %x[%i] : memref<100xf64>
        %s = arith.addf %acc, %v : f64
        scf.yield %s : f64
      }
      func.return %sum : f64
    }
    func.func @main(%x: memref<100xf64>, %out: memref<f64>) {
      %sum = func.call @total(%x) : (memref<100xf64>) -> f64
      memref.store %sum, %out[] : memref<f64>
      func.return
    }""")
    x = aligned(np.linspace(-3, 7, 100))
    out = aligned(np.zeros((), np.float64))
    program(x, out)
    np.testing.assert_allclose(out, x.sum(), rtol=1e-12)


def test_integer_division_rounds_like_python():
    # affine floordiv/mod and arith.floordivsi/ceildivsi on negative operands.
    program = Program("""
    func.func @main(%out: memref<4x11xi64>) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c3 = arith.constant 3 : index
      %c11 = arith.constant 11 : index
      %c5 = arith.constant 5 : index
      %m3 = arith.constant -3 : i64
      scf.for %i = %c0 to %c11 step %c1 {
        %j = arith.subi %i, %c5 : index
        %fd = affine.apply affine_map<(d0) -> (d0 floordiv 3)>(%j)
        %md = affine.apply affine_map<(d0) -> (d0 mod 3)>(%j)
        %fdi = arith.index_cast %fd : index to i64
        %mdi = arith.index_cast %md : index to i64
        %ji = arith.index_cast %j : index to i64
        %fneg = arith.floordivsi %ji, %m3 : i64
        %cneg = arith.ceildivsi %ji, %m3 : i64
        memref.store %fdi, %out[%c0, %i] : memref<4x11xi64>
        memref.store %mdi, %out[%c1, %i] : memref<4x11xi64>
        memref.store %fneg, %out[%c2, %i] : memref<4x11xi64>
        memref.store %cneg, %out[%c3, %i] : memref<4x11xi64>
      }
      func.return
    }""")
    out = aligned(np.zeros((4, 11), np.int64))
    program(out)
    j = np.arange(-5, 6)
    np.testing.assert_array_equal(out, [j // 3, j % 3, j // -3, -(j // 3)])


def test_memref_views_copy_alloca_and_a_loop_with_a_runtime_bound():
    # memref.copy has no custom syntax in xDSL 0.75: generic form.
    program = Program("""
    func.func @main(%x: memref<2x3xf32>, %out: memref<6xf32>, %n: memref<i64>, %r: memref<2xf32>) {
      %flat = memref.collapse_shape %x [[0, 1]] : memref<2x3xf32> into memref<6xf32>
      %scratch = memref.alloca() {alignment = 64 : i64} : memref<6xf32>
      "memref.copy"(%flat, %scratch) : (memref<6xf32>, memref<6xf32>) -> ()
      "memref.copy"(%scratch, %out) : (memref<6xf32>, memref<6xf32>) -> ()
      %tail = memref.reinterpret_cast %x to offset: [3], sizes: [3], strides: [1]
          : memref<2x3xf32> to memref<3xf32, strided<[1], offset: 3>>
      %e = memref.expand_shape %out [[0, 1]] output_shape [3, 2]
          : memref<6xf32> into memref<3x2xf32>
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %ni = memref.load %n[] : memref<i64>
      %ub = arith.index_cast %ni : i64 to index
      %zero = arith.constant 0.0 : f32
      %s = scf.for %i = %c0 to %ub step %c1 iter_args(%acc = %zero) -> (f32) {
        %v = memref.load %tail[%i] : memref<3xf32, strided<[1], offset: 3>>
        %pos = arith.cmpf ogt, %v, %zero : f32
        %t = scf.if %pos -> (f32) {
          %a = arith.addf %acc, %v : f32
          scf.yield %a : f32
        } else {
          scf.yield %acc : f32
        }
        scf.yield %t : f32
      }
      memref.store %s, %r[%c0] : memref<2xf32>
      %v21 = memref.load %e[%c1, %c1] : memref<3x2xf32>
      memref.store %v21, %r[%c1] : memref<2xf32>
      func.return
    }""")
    x = aligned(np.array([[1, -2, 3], [-4, 5, 6]], np.float32))
    out = aligned(np.zeros(6, np.float32))
    r = aligned(np.zeros(2, np.float32))
    for n, expected_sum in ((3, 11.0), (2, 5.0), (0, 0.0)):  # sum of positives in x[1, :n]
        program(x, out, aligned(np.array(n, np.int64)), r)
        np.testing.assert_array_equal(out, x.ravel())
        np.testing.assert_array_equal(r, [expected_sum, x.ravel()[3]])


def test_a_view_at_a_run_time_offset_moves_its_pointer():
    """Winograd's loop over blocks of rows: a reinterpret_cast whose offset is a loop value
    (type `offset: ?`) addresses from the source's base plus that offset, through a strided
    2-D view and a linalg copy inside the loop; the source's own static offset does not count
    (MLIR's reinterpret_cast offsets from the base)."""
    program = Program("""
    func.func @main(%x: memref<4x6xf32>, %y: memref<4x2xf32>) {
      %c0 = arith.constant 0 : index
      %c2 = arith.constant 2 : index
      %c4 = arith.constant 4 : index
      %shifted = memref.reinterpret_cast %x to offset: [1], sizes: [24], strides: [1]
          : memref<4x6xf32> to memref<24xf32, strided<[1], offset: 1>>
      scf.for %i = %c0 to %c4 step %c2 {
        %start = arith.muli %i, %c2 overflow<nsw> : index
        %o6 = arith.constant 6 : index
        %row = arith.muli %i, %o6 : index
        %at = arith.addi %row, %c2 : index
        %block = memref.reinterpret_cast %shifted to offset: [%at], sizes: [2, 2], strides: [6, 1]
            : memref<24xf32, strided<[1], offset: 1>> to memref<2x2xf32, strided<[6, 1], offset: ?>>
        %out = memref.reinterpret_cast %y to offset: [%start], sizes: [2, 2], strides: [2, 1]
            : memref<4x2xf32> to memref<2x2xf32, strided<[2, 1], offset: ?>>
        linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0, d1)>],
                        iterator_types = ["parallel", "parallel"]}
            ins(%block : memref<2x2xf32, strided<[6, 1], offset: ?>>)
            outs(%out : memref<2x2xf32, strided<[2, 1], offset: ?>>) {
        ^bb0(%a: f32, %b: f32):
          linalg.yield %a : f32
        }
      }
      func.return
    }""")
    x = aligned(np.arange(24, dtype=np.float32).reshape(4, 6))
    y = aligned(np.zeros((4, 2), np.float32))
    program(x, y)
    np.testing.assert_array_equal(y, x[:, 2:4])


def test_a_view_of_a_view_at_a_run_time_offset_is_refused():
    module = lower("""
    func.func @main(%x: memref<24xf32>, %n: memref<i64>) {
      %ni = memref.load %n[] : memref<i64>
      %i = arith.index_cast %ni : i64 to index
      %v = memref.reinterpret_cast %x to offset: [%i], sizes: [4], strides: [1]
          : memref<24xf32> to memref<4xf32, strided<[1], offset: ?>>
      %w = memref.reinterpret_cast %v to offset: [2], sizes: [2], strides: [1]
          : memref<4xf32, strided<[1], offset: ?>> to memref<2xf32, strided<[1], offset: 2>>
      func.return
    }""")
    with pytest.raises(NotImplementedError, match="of a view at a run-time offset"):
        emit_llvm(module, {})


def test_nan_and_inf_propagate():
    program = Program("""
    func.func @main(%x: memref<6xf32>, %out: memref<4x6xf32>) {
      %zero = arith.constant 0.0 : f32
      %inf = arith.constant 0x7F800000 : f32
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c3 = arith.constant 3 : index
      %c6 = arith.constant 6 : index
      scf.for %i = %c0 to %c6 step %c1 {
        %v = memref.load %x[%i] : memref<6xf32>
        %relu = arith.maximumf %v, %zero : f32
        %e = math.exp %v : f32
        %t = math.tanh %v : f32
        %isnan = arith.cmpf uno, %v, %v : f32
        %flag = arith.select %isnan, %inf, %zero : f32
        memref.store %relu, %out[%c0, %i] : memref<4x6xf32>
        memref.store %e, %out[%c1, %i] : memref<4x6xf32>
        memref.store %t, %out[%c2, %i] : memref<4x6xf32>
        memref.store %flag, %out[%c3, %i] : memref<4x6xf32>
      }
      func.return
    }""")
    x = aligned(np.array([np.nan, -np.inf, np.inf, -1.0, 0.5, -0.0], np.float32))
    out = aligned(np.zeros((4, 6), np.float32))
    program(x, out)
    np.testing.assert_array_equal(out[0], np.array([np.nan, 0, np.inf, 0, 0.5, 0], np.float32))
    np.testing.assert_allclose(out[1], np.exp(x), rtol=1e-6)
    np.testing.assert_allclose(out[2], np.tanh(x), rtol=1e-6)
    np.testing.assert_array_equal(out[3], [np.inf, 0, 0, 0, 0, 0])


def _elementwise_8(body: str, result: str) -> str:
    """@main: out[i] = `result` of `body` (MLIR ops on %v = x[i] and %o = out[i]), over 8 floats."""
    return f"""
    func.func @main(%x: memref<8xf32>, %out: memref<8xf32>) {{
      linalg.generic {{indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>],
                      iterator_types = ["parallel"]}}
          ins(%x : memref<8xf32>) outs(%out : memref<8xf32>) {{
      ^bb0(%v: f32, %o: f32):
        {body}
        linalg.yield {result} : f32
      }}
      func.return
    }}"""


def test_fast_math_is_only_reassoc_contract():
    text = _elementwise_8("""%p = arith.mulf %v, %v : f32
        %s = arith.addf %p, %v : f32
        %d = arith.divf %s, %v : f32""", "%d")
    fast = emit_llvm(lower(text), {})
    strict = emit_llvm(lower(text), {}, fastmath=False)
    assert "fadd reassoc contract float" in fast and "fmul reassoc contract float" in fast
    assert "reassoc" not in strict
    for ir_text in (fast, strict):
        assert not any(flag in ir_text for flag in (" nnan", " ninf", " fast ", " afn", " arcp"))


def test_an_ops_own_fastmath_flags_replace_the_default():
    """`fastmath<contract>` (Body.add in_order) keeps a sum in order: no reassoc on that fadd."""
    text = _elementwise_8("""%s = arith.addf %o, %v fastmath<contract> : f32
        %t = arith.addf %s, %v : f32""", "%t")
    fast = emit_llvm(lower(text), {})
    assert fast.count("fadd contract float") == 1 and fast.count("fadd reassoc contract float") == 1
    assert "reassoc" not in emit_llvm(lower(text), {}, fastmath=False)


def test_vector_width_is_the_targets_from_the_module():
    """One rule: the target writes `dlc.vector_bits` on the module and the emitter reads it;
    a module without one gets passes/target_info.py's default, as the passes do."""
    from xdsl.dialects.builtin import IntegerAttr, i64

    from passes.target_info import DEFAULTS

    text = _elementwise_8("%s = arith.addf %v, %v : f32", "%s")
    module = lower(text)
    assert f'"prefer-vector-width"="{DEFAULTS["dlc.vector_bits"]}"' in emit_llvm(module, {})
    module.attributes["dlc.vector_bits"] = IntegerAttr(128, i64)
    assert '"prefer-vector-width"="128"' in emit_llvm(module, {})


def test_unknown_op_is_reported_by_name():
    module = lower("""
    func.func @main(%out: memref<4xf32>) {
      %tmp = memref.alloc() : memref<4xf32>
      func.return
    }""")
    with pytest.raises(NotImplementedError, match="llvm emitter: no rule for memref.alloc"):
        emit_llvm(module, {})


def test_invalid_llvm_ir_is_reported_with_the_ir():
    bad = "define void @f() {\n  ret i32 0\n}\n"
    with pytest.raises(CompileError, match="ret i32 0"):
        compile_object(bad)


def test_host_cpu_reports_name_and_features():
    name, features = host_cpu()
    assert name and features.startswith(("+", "-"))


def run_elementwise(exprs: list[str], x: np.ndarray, y: np.ndarray, out_dtype) -> np.ndarray:
    """Evaluate MLIR expressions of `%a` (from x) and `%b` (from y) at every index, one result
    row per expression. An expression may be a chain of lines; `%prev` names the previous
    line's value and the last line's value is stored. Types come from the numpy dtypes."""
    mlir_type = {np.float32: "f32", np.float64: "f64", np.int32: "i32", np.bool_: "i1"}
    t, u, n = mlir_type[x.dtype.type], mlir_type[np.dtype(out_dtype).type], x.size
    out_type = f"memref<{len(exprs)}x{n}x{u}>"
    body = []
    for k, expr in enumerate(exprs):
        lines = expr.split("\n")
        for j, line in enumerate(lines):
            body.append(f"%r{k}_{j} = " + line.replace("%prev", f"%r{k}_{j - 1}"))
        body.append(f"%k{k} = arith.constant {k} : index")
        body.append(f"memref.store %r{k}_{len(lines) - 1}, %out[%k{k}, %i] : {out_type}")
    program = Program(f"""
    func.func @main(%x: memref<{n}x{t}>, %y: memref<{n}x{t}>, %out: {out_type}) {{
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %n = arith.constant {n} : index
      scf.for %i = %c0 to %n step %c1 {{
        %a = memref.load %x[%i] : memref<{n}x{t}>
        %b = memref.load %y[%i] : memref<{n}x{t}>
        {chr(10).join(body)}
      }}
      func.return
    }}""")
    out = aligned(np.zeros((len(exprs), n), out_dtype))
    program(aligned(x), aligned(y), out)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_math_matches_numpy(dtype):
    from math import erf

    t = {np.float32: "f32", np.float64: "f64"}[dtype]
    x = np.array([-2.5, -1.5, -0.5, 0.0, 0.25, 0.5, 1.5, 3.7], dtype)
    y = x[::-1].copy()
    unary = {
        "math.exp": np.exp, "math.exp2": np.exp2, "math.log": np.log, "math.log2": np.log2,
        "math.log10": np.log10, "math.log1p": np.log1p, "math.expm1": np.expm1,
        "math.sqrt": np.sqrt, "math.rsqrt": lambda v: 1 / np.sqrt(v), "math.tanh": np.tanh,
        "math.sin": np.sin, "math.cos": np.cos, "math.tan": np.tan, "math.asin": np.arcsin,
        "math.acos": np.arccos, "math.atan": np.arctan, "math.sinh": np.sinh,
        "math.cosh": np.cosh, "math.asinh": np.arcsinh, "math.acosh": np.arccosh,
        "math.atanh": np.arctanh, "math.erf": np.vectorize(erf), "math.absf": np.abs,
        "math.floor": np.floor, "math.ceil": np.ceil, "math.trunc": np.trunc,
        "math.round": lambda v: np.copysign(np.floor(np.abs(v) + 0.5), v),  # half away from 0
        "math.roundeven": np.round, "math.cbrt": np.cbrt, "arith.negf": np.negative,
    }  # fmt: skip
    binary = {  # arith.remf: dialects/arith_remf.py (xDSL 0.75 lacks it), emitted as LLVM's frem
        "arith.remf": np.fmod, "arith.addf": np.add, "arith.subf": np.subtract, "arith.mulf": np.multiply,
        "arith.divf": np.divide, "arith.maximumf": np.maximum, "arith.minimumf": np.minimum,
        "arith.maxnumf": np.fmax, "arith.minnumf": np.fmin, "math.powf": np.power,
        "math.atan2": np.arctan2, "math.copysign": np.copysign,
    }  # fmt: skip
    exprs = [f"{name} %a : {t}" for name in unary] + [f"{name} %a, %b : {t}" for name in binary]
    exprs.append(f"math.fma %a, %b, %a : {t}")
    got = run_elementwise(exprs, x, y, dtype)
    with np.errstate(all="ignore"):
        expected = [f(x) for f in unary.values()] + [f(x, y) for f in binary.values()]
        expected.append(x * y + x)
    np.testing.assert_allclose(got, np.array(expected, dtype), rtol=2e-6, atol=1e-6, equal_nan=True)


def test_float_comparisons_with_nan():
    predicates = ["false", "oeq", "ogt", "oge", "olt", "ole", "one", "ord",
                  "ueq", "ugt", "uge", "ult", "ule", "une", "uno", "true"]  # fmt: skip
    x = np.array([1.0, 2.0, np.nan, 3.0, -np.inf, np.nan], np.float32)
    y = np.array([1.0, 1.0, 0.0, np.nan, -np.inf, np.nan], np.float32)
    got = run_elementwise([f"arith.cmpf {p}, %a, %b : f32" for p in predicates], x, y, np.bool_)
    unordered = np.isnan(x) | np.isnan(y)
    with np.errstate(invalid="ignore"):
        base = {"eq": x == y, "gt": x > y, "ge": x >= y, "lt": x < y, "le": x <= y, "ne": x != y}
    expected = []
    for p in predicates:
        if p in ("false", "true"):
            expected.append(np.full(x.shape, p == "true"))
        elif p in ("ord", "uno"):
            expected.append(unordered == (p == "uno"))
        elif p[0] == "o":
            expected.append(base[p[1:]] & ~unordered)
        else:
            expected.append(base[p[1:]] | unordered)
    np.testing.assert_array_equal(got, expected)


def test_integer_ops_and_comparisons_match_numpy():
    x = np.array([7, -7, 7, -7, 0, 100, -1, 2**31 - 1], np.int32)
    y = np.array([2, 2, -2, -2, 3, 7, 5, 1], np.int32)
    ux, uy, shift = x.view(np.uint32), y.view(np.uint32), y & 7
    mask = "arith.constant 7 : i32\narith.andi %b, %prev : i32\n"  # shift amounts below 32
    cases = {
        "arith.addi %a, %b": x + y, "arith.subi %a, %b": x - y, "arith.muli %a, %b": x * y,
        "arith.divsi %a, %b": np.trunc(x / y).astype(np.int32), "arith.remsi %a, %b": np.fmod(x, y),
        "arith.floordivsi %a, %b": x // y, "arith.ceildivsi %a, %b": -(-x // y),
        "arith.divui %a, %b": (ux // uy).view(np.int32),
        "arith.remui %a, %b": (ux % uy).view(np.int32),
        "arith.andi %a, %b": x & y, "arith.ori %a, %b": x | y, "arith.xori %a, %b": x ^ y,
        "arith.maxsi %a, %b": np.maximum(x, y), "arith.minsi %a, %b": np.minimum(x, y),
        "arith.maxui %a, %b": np.maximum(ux, uy).view(np.int32),
        "arith.minui %a, %b": np.minimum(ux, uy).view(np.int32),
        mask + "arith.shli %a, %prev": x << shift, mask + "arith.shrsi %a, %prev": x >> shift,
        mask + "arith.shrui %a, %prev": (ux >> shift.view(np.uint32)).view(np.int32),
    }  # fmt: skip
    exprs = [f"{expr} : i32" for expr in cases] + ["math.absi %a : i32"]
    got = run_elementwise(exprs, x, y, np.int32)
    np.testing.assert_array_equal(got, [*cases.values(), np.abs(x)])

    predicates = {
        "eq": x == y, "ne": x != y, "slt": x < y, "sle": x <= y, "sgt": x > y, "sge": x >= y,
        "ult": ux < uy, "ule": ux <= uy, "ugt": ux > uy, "uge": ux >= uy,
    }  # fmt: skip
    got = run_elementwise([f"arith.cmpi {p}, %a, %b : i32" for p in predicates], x, y, np.bool_)
    np.testing.assert_array_equal(got, list(predicates.values()))


def test_casts_round_trip():
    x = np.array([-2.75, -1.0, 0.5, 3.25], np.float32)
    chains = [
        "arith.fptosi %a : f32 to i32\narith.sitofp %prev : i32 to f32",
        "arith.extf %a : f32 to f64\narith.truncf %prev : f64 to f32",
        "arith.bitcast %a : f32 to i32\narith.bitcast %prev : i32 to f32",
        (
            "arith.fptosi %a : f32 to i32\narith.extsi %prev : i32 to i64\n"
            "arith.index_cast %prev : i64 to index\narith.index_cast %prev : index to i16\n"
            "arith.extui %prev : i16 to i32\narith.trunci %prev : i32 to i8\n"
            "arith.extsi %prev : i8 to i32\narith.sitofp %prev : i32 to f32"
        ),
        "math.absf %a : f32\narith.fptoui %prev : f32 to i32\narith.uitofp %prev : i32 to f32",
    ]
    got = run_elementwise(chains, x, x, np.float32)
    truncated = np.trunc(x)
    np.testing.assert_array_equal(got, [truncated, x, x, truncated, np.trunc(np.abs(x))])


def test_window_taps_share_one_address_and_unit_axis_loops_vanish():
    """A strided 3-tap window over a batch of one (as a depthwise conv's loops): right results;
    the batch loop of one iteration leaves no loop and no stride behind, and the taps'
    addresses share one sum, differing by a constant (one `mul` per loop index, not per tap)."""
    program = Program("""
    func.func @main(%x: memref<1x4x17xf32>, %out: memref<1x4x8xf32>) {
      linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, (d2 * 2))>,
                                       affine_map<(d0, d1, d2) -> (d0, d1, ((d2 * 2) + 1))>,
                                       affine_map<(d0, d1, d2) -> (d0, d1, ((d2 * 2) + 2))>,
                                       affine_map<(d0, d1, d2) -> (d0, d1, d2)>],
                      iterator_types = ["parallel", "parallel", "parallel"]}
          ins(%x, %x, %x : memref<1x4x17xf32>, memref<1x4x17xf32>, memref<1x4x17xf32>)
          outs(%out : memref<1x4x8xf32>) {
      ^bb0(%a: f32, %b: f32, %c: f32, %o: f32):
        %ab = arith.addf %a, %b : f32
        %s = arith.addf %ab, %c : f32
        linalg.yield %s : f32
      }
      func.return
    }""")
    rng = np.random.default_rng(0)
    x = aligned(rng.standard_normal((1, 4, 17), dtype=np.float32))
    out = aligned(np.zeros((1, 4, 8), np.float32))
    program(x, out)
    np.testing.assert_array_equal(out, (x[..., 0:16:2] + x[..., 1:17:2]) + x[..., 2:17:2])
    body = program.llvm_ir[program.llvm_ir.index("define"):]
    assert "68" not in body  # the batch stride (4 * 17): the loop of one iteration is gone
    assert body.count("phi") == 2  # the channel and column loops
    # d2 * 2, then * 1 (folded), the channel's * 17, and the output's channel * 8.
    assert len([line for line in body.splitlines() if " = mul " in line]) == 3, body


def test_only_small_kernels_keep_their_loops_rolled():
    """The loops of a kernel under SMALL_KERNEL_BYTES and SMALL_KERNEL_FLOPS carry
    `llvm.loop.unroll.disable` (O3 would fully unroll them for nothing); a larger kernel's
    loops are left to O3. Both compile, and the metadata is the well-formed kind: distinct,
    naming itself first."""
    import re

    from onnx import TensorProto, helper

    from dlc.codegen.llvm_emitter import SMALL_KERNEL_BYTES
    from dlc.driver import compile_model

    shapes = {"small": [2, 3], "large": [SMALL_KERNEL_BYTES // 4]}  # its input alone moves the limit
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Exp", [name], [f"{name}_y"], name=f"{name}_exp") for name in shapes], "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in shapes.items()],
        [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, shape) for name, shape in shapes.items()]),
        opset_imports=[helper.make_opsetid("", 17)])
    module = compile_model(model, compile_to="loops").module
    kernel_of = {f.attributes["dlc.nodes"].data[0].data: f.sym_name.data
                 for f in module.ops if isinstance(f, func.FuncOp) and "dlc.nodes" in f.attributes}
    text = emit_llvm(module, {})
    bodies = {re.search(r'@"([^"]+)"', chunk).group(1): chunk for chunk in text.split("\ndefine ")[1:]}
    small, large = bodies[kernel_of["small_exp"]], bodies[kernel_of["large_exp"]]
    loop_ids = re.findall(r"!llvm.loop (!\d+)", small)
    assert loop_ids and "!llvm.loop" not in large
    for loop_id in loop_ids:
        definition = re.search(rf"^{loop_id} = distinct !{{ {loop_id}, (!\d+) }}$", text, re.M)
        assert definition, loop_id
        assert re.search(rf'^{definition.group(1)} = !{{ !"llvm.loop.unroll.disable" }}$', text, re.M)
    compile_object(text)  # LLVM accepts it


def test_a_small_kernels_reduction_nest_is_left_to_o3():
    """In a small ReduceSum kernel the loop that fills the output with zeros is rolled, but no
    loop of the nest that sums (the reduction loop and the loop around it): the order of a
    float sum follows how LLVM unrolls and vectorises the nest."""
    from onnx import TensorProto, helper

    from dlc.codegen.llvm_emitter import _loops_to_keep_rolled, _small_kernel
    from dlc.driver import compile_model

    model = helper.make_model(helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 17])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])]), opset_imports=[helper.make_opsetid("", 18)])
    module = compile_model(model, compile_to="loops").module
    (kernel,) = [f for f in module.ops if isinstance(f, func.FuncOp) and "dlc.nodes" in f.attributes]
    assert _small_kernel(kernel)
    top_loops = [op for op in kernel.body.block.ops if isinstance(op, scf.ForOp)]
    fill, nest = top_loops  # y = 0, then y[i] += x[i, j]
    rolled = _loops_to_keep_rolled(kernel)
    assert fill in rolled
    assert not any(isinstance(op, scf.ForOp) and op in rolled for op in nest.walk())
