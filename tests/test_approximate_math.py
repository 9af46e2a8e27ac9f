"""`approximate-math`: compiled f32 exp/tanh/erf against float64 references, in ulp, and the
C99 Annex F special values bit for bit; the loop vectorises once the libm calls are gone."""

from __future__ import annotations

import ctypes
import math
import re

import llvmlite.binding as llvm
import numpy as np
import pytest
from test_llvm_emitter import aligned, lower

from dlc.codegen.llvm_emitter import emit_llvm, entry_symbol
from dlc.codegen.native import compile_object, parse_llvm
from dlc.runtime.mcjit import NativeModule, host_cpu
from passes.lowering.approximate_math import ApproximateMathPass

N = 1 << 21
FUNCTIONS = {  # op -> float64 reference
    "math.exp": np.exp,
    "math.tanh": np.tanh,
    "math.erf": np.frompyfunc(math.erf, 1, 1),
}
# Measured maxima, every f32 with 2^-6 <= |x| < 128 plus 16M random bit patterns: 1.01 (exp),
# 1.33 (tanh), 1.09 (erf) ulp; the same on any host (llvm.fma rounds once everywhere).
MAX_ULP = 2.0


def _loop(n: int, ops: list[str]) -> str:
    """A loops-phase @main applying each op to x[i], one output row per op."""
    out = f"memref<{len(ops)}x{n}xf32>"
    body = "\n".join(
        f"%r{k} = {op} %v : f32\n%k{k} = arith.constant {k} : index\n"
        f"memref.store %r{k}, %out[%k{k}, %i] : {out}"
        for k, op in enumerate(ops)
    )
    return f"""
    func.func @main(%x: memref<{n}xf32>, %out: {out}) {{
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %n = arith.constant {n} : index
      scf.for %i = %c0 to %n step %c1 {{
        %v = memref.load %x[%i] : memref<{n}xf32>
        {body}
      }}
      func.return
    }}"""


def _approximated_ir(n: int, ops: list[str]) -> str:
    module = lower(_loop(n, ops))
    ApproximateMathPass().apply(None, module)
    module.verify()
    return emit_llvm(module, {})


@pytest.fixture(scope="module")
def evaluate():
    """x (f32, length N) -> one row per op in FUNCTIONS, computed by the compiled pass output."""
    native = NativeModule(compile_object(_approximated_ir(N, list(FUNCTIONS))))
    entry = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
        native.address(entry_symbol())
    )

    def run(x: np.ndarray) -> np.ndarray:
        x = aligned(np.resize(x.astype(np.float32), N))
        out = aligned(np.zeros((len(FUNCTIONS), N), np.float32))
        buffers = (ctypes.c_void_p * 2)(x.ctypes.data, out.ctypes.data)
        entry(ctypes.addressof(buffers), None, None)
        return out

    run.native = native  # the code lives as long as the engine that loaded it
    return run


def ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the f32 spacing at `exact` (denormal spacing below 2^-126);
    0 where `got` is `exact` rounded to f32 (so a correct inf or 0 counts as exact)."""
    exponent = np.frexp(np.abs(exact))[1] - 1
    exponent = np.where(exact == 0, -126, np.maximum(exponent, -126))
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf: judged through `rounded`
        rounded = exact.astype(np.float32)
        error = np.abs(got.astype(np.float64) - exact) / np.ldexp(1.0, exponent - 23)
    return np.where(got == rounded, 0.0, error)


def _sweep() -> np.ndarray:
    """N points: a dense grid over the interesting range, every binade through random bit
    patterns, and the regions where the formulas or the exponent arithmetic switch."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 0x7F800000, N // 4, dtype=np.uint32)  # finite, any magnitude
    random = bits.view(np.float32) * rng.choice(np.float32([-1, 1]), bits.size)
    edges = [0.625, 0.9, 4.0, 9.0, 87.34, 88.72, 103.28, 103.97]  # see approximate_math.py
    near = [np.linspace(e * (1 - 2e-3), e * (1 + 2e-3), N // 64) for e in edges]
    dense = np.linspace(-105, 90, N - random.size - len(edges) * 2 * (N // 64))
    return np.concatenate([dense, random, *near, *(-a for a in near)]).astype(np.float32)


def test_ulp_error_over_a_dense_sweep(evaluate):
    x = _sweep()
    got = evaluate(x)
    with np.errstate(over="ignore", under="ignore"):
        for row, (name, reference) in enumerate(FUNCTIONS.items()):
            exact = reference(x.astype(np.float64)).astype(np.float64)
            error = ulp_error(got[row], exact)
            worst = int(np.argmax(error))
            assert error[worst] <= MAX_ULP, (
                f"{name}({x[worst]!r}) = {got[row, worst]!r}, exact {exact[worst]!r}: "
                f"{error[worst]:.2f} ulp"
            )


SPECIAL_X = np.float32([np.inf, -np.inf, 0.0, -0.0, 100.0, -200.0, 3e38, -3e38, 1e-45, -1e-45])
SPECIAL = {  # op -> expected results for SPECIAL_X, bit for bit (the sign of zero included)
    "math.exp": [np.inf, 0.0, 1.0, 1.0, np.inf, 0.0, np.inf, 0.0, 1.0, 1.0],
    "math.tanh": [1.0, -1.0, 0.0, -0.0, 1.0, -1.0, 1.0, -1.0, 1e-45, -1e-45],
    "math.erf": [1.0, -1.0, 0.0, -0.0, 1.0, -1.0, 1.0, -1.0, 1e-45, -1e-45],
}


def test_special_values_are_exact(evaluate):
    got = evaluate(np.concatenate([SPECIAL_X, np.float32([np.nan, -np.nan])]))
    for row, name in enumerate(FUNCTIONS):
        expected = np.float32(SPECIAL[name])
        assert (
            got[row, : SPECIAL_X.size].view(np.uint32).tolist() == expected.view(np.uint32).tolist()
        ), name
        assert np.isnan(got[row, SPECIAL_X.size : SPECIAL_X.size + 2]).all(), f"{name}(NaN)"


def test_exp_underflows_gradually(evaluate):
    # Denormal results, as glibc's expf gives, rather than flushing below 2^-126 (x < -87.3).
    x = np.float32([-87.5, -95.0, -100.0, -103.0, -103.9])
    got = evaluate(x)[0, : x.size]
    assert (got > 0).all() and (got < np.finfo(np.float32).tiny).all()
    assert ulp_error(got, np.exp(x.astype(np.float64))).max() <= MAX_ULP


def _optimised(llvm_ir: str) -> str:
    """The IR after LLVM's O3 pipeline for this host, as `compile_object` runs it."""
    module = parse_llvm(llvm_ir)
    cpu, features = host_cpu()
    machine = llvm.Target.from_default_triple().create_target_machine(
        cpu=cpu, features=features, opt=3
    )
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = True
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(module, builder)
    return str(module)


def test_f32_loop_vectorises_without_libm_calls():
    # Without the pass LLVM does vectorise exp, into llvm.exp.v8f32, which codegen then splits
    # into 8 expf calls; tanhf and erff keep the loop scalar.
    text = _approximated_ir(1024, list(FUNCTIONS))
    assert not re.search(r"@(expf|tanhf|erff|llvm\.exp\.f32)\b", text)
    optimised = _optimised(text)
    called = set(re.findall(r"call [^@]*@(llvm\.\w+|\w+)", optimised))
    assert called <= {"llvm.fma", "llvm.roundeven", "llvm.copysign", "llvm.fabs"}, called
    assert re.search(r"@llvm\.fma\.v\d+f32", optimised), "the loop did not vectorise"


# --- sigmoid: 1 / (1 + exp(-x)), as linalg_builder's Body.sigmoid writes it -----------------------

# Measured, the sweep above: 2.3 ulp of the exact value where that is a normal float, 0.75 ulp
# of 1.0 anywhere (below SIGMOID_LOW the result is 0 where the exact one is under 6.1e-39).
SIGMOID_MAX_ULP = 3.0
SIGMOID_MAX_ABS = np.finfo(np.float32).eps


def _sigmoid_ir(n: int, exp_also_stored: bool = False) -> str:
    """A loops-phase @main storing 1 / (1 + exp(-x[i])) (and, if asked, exp(-x[i]) as well)."""
    rows = 2 if exp_also_stored else 1
    out = f"memref<{rows}x{n}xf32>"
    extra = f"%k1 = arith.constant 1 : index\nmemref.store %e, %out[%k1, %i] : {out}" if exp_also_stored else ""
    module = lower(f"""
    func.func @main(%x: memref<{n}xf32>, %out: {out}) {{
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %n = arith.constant {n} : index
      %one = arith.constant 1.0 : f32
      scf.for %i = %c0 to %n step %c1 {{
        %v = memref.load %x[%i] : memref<{n}xf32>
        %m = arith.negf %v : f32
        %e = math.exp %m : f32
        %d = arith.addf %one, %e : f32
        %s = arith.divf %one, %d : f32
        %k0 = arith.constant 0 : index
        memref.store %s, %out[%k0, %i] : {out}
        {extra}
      }}
      func.return
    }}""")
    ApproximateMathPass().apply(None, module)
    module.verify()
    return emit_llvm(module, {})


def _run_sigmoid(llvm_ir: str, x: np.ndarray, rows: int = 1, n: int = N) -> np.ndarray:
    """The compiled loop's rows of outputs for x (resized to the loop's length n)."""
    native = NativeModule(compile_object(llvm_ir))
    entry = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(native.address(entry_symbol()))
    x = aligned(np.resize(x.astype(np.float32), n))
    out = aligned(np.zeros((rows, n), np.float32))
    buffers = (ctypes.c_void_p * 2)(x.ctypes.data, out.ctypes.data)
    entry(ctypes.addressof(buffers), None, None)
    return out


@pytest.fixture(scope="module")
def sigmoid_ir():
    return _sigmoid_ir(N)


def test_sigmoid_takes_its_own_sequence(sigmoid_ir):
    """The pass rewrites the whole 1 / (1 + exp(-x)): no exp's sequence (roundeven, its
    two-step scaling) is left, and the loop still vectorises without libm calls."""
    assert "roundeven" not in sigmoid_ir and "ashr" not in sigmoid_ir
    assert sigmoid_ir.count("fdiv") == 1
    optimised = _optimised(sigmoid_ir)
    called = set(re.findall(r"call [^@]*@(llvm\.\w+|\w+)", optimised))
    assert called <= {"llvm.fma"}, called
    assert re.search(r"@llvm\.fma\.v\d+f32", optimised), "the loop did not vectorise"


def test_sigmoid_error_over_a_dense_sweep(sigmoid_ir):
    x = _sweep()
    got = _run_sigmoid(sigmoid_ir, x)[0, : x.size]
    with np.errstate(over="ignore"):
        exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    absolute = np.abs(got - exact)
    worst = int(np.argmax(absolute))
    assert absolute[worst] <= SIGMOID_MAX_ABS, f"sigmoid({x[worst]!r}) = {got[worst]!r}, exact {exact[worst]!r}"
    normal = exact >= np.finfo(np.float32).tiny
    error = np.where(normal, ulp_error(got, exact), 0.0)
    worst = int(np.argmax(error))
    assert error[worst] <= SIGMOID_MAX_ULP, (
        f"sigmoid({x[worst]!r}) = {got[worst]!r}, exact {exact[worst]!r}: {error[worst]:.2f} ulp")


def test_sigmoid_special_values(sigmoid_ir):
    x = np.float32([np.inf, -np.inf, 0.0, -0.0, 87.5, 100.0, -88.5, -200.0, 3e38, -3e38, 1e-45, -1e-45,
                    np.nan, -np.nan])
    expected = np.float32([1.0, 0.0, 0.5, 0.5, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.5])
    got = _run_sigmoid(sigmoid_ir, x)[0, : x.size]
    assert got[: expected.size].view(np.uint32).tolist() == expected.view(np.uint32).tolist()
    assert np.isnan(got[expected.size :]).all()


def test_sigmoid_whose_exp_is_used_elsewhere_stays_exp():
    """exp(-x) also stored: the rewrite would drop it, so the exp is expanded as exp."""
    text = _sigmoid_ir(64, exp_also_stored=True)
    assert "roundeven" in text
    x = np.linspace(-20, 20, 64, dtype=np.float32)
    got = _run_sigmoid(text, x, rows=2, n=64)
    x64 = x.astype(np.float64)
    assert ulp_error(got[1], np.exp(-x64)).max() <= MAX_ULP
    assert ulp_error(got[0], 1 / (1 + np.exp(-x64))).max() <= SIGMOID_MAX_ULP
