"""The GEMM micro-kernel's in-place activations (dlc/codegen/ukernel_epilogues.py: SiLU and
HardSwish applied to each tile after its store) against numpy, with test_ukernels.py's NaN
guards around every buffer: ragged tiles, masked columns, blocked k, panel ranges."""

from __future__ import annotations

import ctypes
import random

import numpy as np
import pytest
from llvmlite import ir
from test_ukernels import EPS32, Problem, _spec, compile_gemms

from dlc.codegen.native import compile_object
from dlc.codegen.ukernels import emit_gemm
from dlc.runtime.mcjit import NativeModule


def _silu(x):
    return x / (1 + np.exp(-x))


def _hardswish(x):
    return x * np.clip(x / 6 + 0.5, 0, 1)


# |f'| is at most 1.1 (SiLU) and 1.5 (HardSwish): the GEMM's error bound grows by that much,
# and the activation adds a few ulp of its own (exp's 1.4 ulp, the division, the product).
SLOPE = {"silu": 1.1, "hardswish": 1.5}
FORMULA = {"silu": _silu, "hardswish": _hardswish}


def _cases() -> list:
    rng = random.Random(1)
    specs = []
    for activation in ("silu", "hardswish"):
        specs += [_spec(1, 1, 1, activation=activation, bias="row", residual=True),
                  _spec(29, 53, 31, activation=activation, bias="col", layout="row"),
                  _spec(40, 150, 23, activation=activation, mr=3, nr=32, kc=5, mc=6, nc=64, bias="row"),
                  _spec(40, 150, 23, activation=activation, mr=3, nr=32, kc=5, mc=6, nc=64, layout="row",
                        accumulate=True)]  # fmt: skip
        for _ in range(6):
            m, n, k = (rng.randint(1, 70) for _ in range(3))
            specs.append(_spec(m, n, k, activation=activation, transposed_a=rng.random() < 0.3,
                               layout=rng.choice(["packed", "row"]), pad=rng.choice([0, 3]),
                               bias=rng.choice([None, "row", "col"]), residual=rng.random() < 0.3,
                               vector_width=rng.choice([16, 8, 4, 1])))  # fmt: skip
    return specs


SPECS = _cases()


@pytest.fixture(scope="module")
def kernels():
    native, functions, ranges = compile_gemms(SPECS)
    return native, (functions, ranges)


def _check(problem: Problem) -> None:
    spec, c = problem.spec, problem.c_view()
    plain = Problem.__new__(Problem)
    plain.__dict__ = dict(problem.__dict__, spec=_without_activation(spec))
    total, bound = plain.expected()
    want = FORMULA[spec.activation](total)
    bound = SLOPE[spec.activation] * bound + 8 * EPS32 * np.abs(want) + 1e-30
    got = c[:, : spec.n]
    assert not np.isnan(got).any(), f"NaN in C (out-of-bounds read?) for {spec}"
    error = np.abs(got - want)
    assert (error <= bound).all(), f"max error {error.max()} over bound for {spec}"
    np.testing.assert_array_equal(c[:, spec.n :], problem.c0[:, spec.n :], "wrote past n")
    assert np.isnan(problem.c_buf[: 64]).all() and np.isnan(problem.c_buf[64 + c.size :]).all()


def _without_activation(spec):
    from dataclasses import replace

    return replace(spec, activation=None)


@pytest.mark.parametrize("index", range(len(SPECS)))
def test_activation_matches_numpy(kernels, index):
    _native, (functions, _ranges) = kernels
    problem = Problem(SPECS[index], seed=index)
    functions[index](*problem.pointers())
    _check(problem)


@pytest.mark.parametrize("index", [2, 12])
def test_ranges_apply_the_activation_once(kernels, index):
    """Disjoint blocks (as threads run them) each apply the activation to their own rows only:
    an activation applied twice (silu(silu(x))) or to a neighbour's rows would show."""
    _native, (_functions, ranges) = kernels
    spec = SPECS[index]
    problem = Problem(spec, seed=index)
    pointers = problem.pointers()
    panels = -(-spec.n // spec.nr)
    rows = [0, spec.mr, 2 * spec.mr, spec.m]
    for first_row, last_row in zip(rows, rows[1:]):
        for first, last in ((0, 1), (1, panels)):
            ranges[index](*pointers, first, last, first_row, last_row)
    _check(problem)


def test_nan_and_infinities():
    """NaN stays NaN; silu(+-inf) and hardswish(+-inf) as numpy computes them in float32."""
    module = ir.Module("special")
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 100.0, -100.0, 1e-30, 3.0, -3.0, 88.0, -88.0,
                       0.5, -0.5, 7.0, -7.0], np.float32)
    for activation in ("silu", "hardswish"):
        emit_gemm(module, activation, _spec(1, 16, 1, activation=activation, layout="row", bias="row"),
                  exported=True)
    native = NativeModule(compile_object(str(module)))
    for activation in ("silu", "hardswish"):
        fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5)(native.address(activation))
        a, b = np.zeros(1, np.float32), np.ones(16, np.float32)
        c = np.full(16, -1.0, np.float32)
        bias = values.copy()  # C = 0 * 1 + bias: the activation of each special value
        fn(a.ctypes.data, b.ctypes.data, c.ctypes.data, bias.ctypes.data, None)
        with np.errstate(all="ignore"):
            want = FORMULA[activation](values)
        np.testing.assert_allclose(c, want, rtol=4e-7, atol=1e-37, equal_nan=True,
                                   err_msg=activation)
