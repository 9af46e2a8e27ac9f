"""DFT and STFT: discrete Fourier transforms along one axis, direct (O(N^2) per signal).

Mirrors https://onnx.ai/onnx/operators/onnx__DFT.html (opset 20: 'axis' and 'dft_length' are
inputs; opset 17's attribute axis imports as an input) and
https://onnx.ai/onnx/operators/onnx__STFT.html (opset 17), with their reference
implementations (numpy.fft): the last axis of input and output holds [re] or [re, im];
X[k] = sum_n x[n] e^(-2 pi i k n / N), the inverse e^(+...) / N; 'onesided' keeps the
N//2 + 1 first frequencies, and inverse with onesided is numpy's irfft (a one-sided spectrum
extended by Hermitian symmetry to a real signal of length N: the terms of 0 < k < N/2 count
twice, the imaginary parts at k = 0 and N/2 drop out). dft_length zero-pads or truncates.
STFT frames the signal ([B, L, 1|2]) every frame_step samples, multiplies each frame by
the window, and transforms it.

The twiddle factors come from a table of cos/sin(2 pi t / N) for t < N computed at compile
time in float64 (index (k * n) mod N, so large k*n lose no precision). N and the axis are
compile-time facts: the output shape fixes N; an axis (or STFT frame_length) given at run
time is matched against every candidate the shapes allow, each candidate's transform adding
into the output only where the run-time value names it, and a value matching none fails the
run with a DlcError (as CumSum's run-time axis). A run-time frame_step is read in the loop;
frames that would read past the signal fail the run (the read stays inside it).
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import math
from xdsl.dialects.builtin import IndexType, IntegerType, MemRefType, NoneType, f64

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import FLOAT, require_kinds
from passes.lowering.rules.movement import constant_input, is_empty
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, cst, dim
from passes.lowering.utils.runtime_checks import error_code, flag_if, status_word

BOOL = IntegerType(1)
I64 = IntegerType(64)


def _table(kb, op, element, n: int, scale: float):
    """memref [2, n]: cos and sin of 2 pi t / n for t < n, times `scale`, as constants."""
    angles = 2 * np.pi * np.arange(n) / n
    array = (np.stack([np.cos(angles), np.sin(angles)]) * scale).astype(np.float64 if element == f64 else np.float32)
    return kb.constant(op, "twiddle", array)


def _present(op, index: int) -> bool:
    return index < len(op.operands) and not isinstance(op.operands[index].type, NoneType)


def _scalar(b, buffer):
    i = b.on(IndexType())
    return b.on(buffer.type.element_type).load(buffer, [i.const(0)] * len(buffer.type.get_shape()))


def _component(b, x, at: list, complex_input: bool):
    """(re, im) of x at `at` (its last index appended)."""
    i = b.on(IndexType())
    real = b.load(x, [*at, i.const(0)])
    return real, (b.load(x, [*at, i.const(1)]) if complex_input else b.const(0.0, real.type))


@lowers("DFT")
def lower_dft(kb, op, ins, outs) -> None:
    x, out = ins[0], outs[0]
    require_kinds(op, [x], (FLOAT,))
    in_shape, out_shape = list(x.type.get_shape()), list(out.type.get_shape())
    rank = len(in_shape)
    inverse, onesided = bool(op.attr("inverse", 0)), bool(op.attr("onesided", 0))
    if rank < 2 or in_shape[-1] not in (1, 2) or len(out_shape) != rank:
        raise UnsupportedError(f"{op.describe()}: input shape {in_shape}: the last axis must hold 1 (real) or "
                               "2 (complex) values")
    if is_empty(out):
        return
    kb.fill(out, 0)
    axis_value = constant_input(op, 2, required=False) if _present(op, 2) else np.array(-2)
    candidates = [a for a in range(rank - 1) if all(in_shape[d] == out_shape[d] for d in range(rank - 1) if d != a)]
    if axis_value is not None:
        axis = int(axis_value.reshape(-1)[0])
        axis = axis + rank if axis < 0 else axis
        if axis not in candidates:
            raise UnsupportedError(f"{op.describe()}: axis {int(axis_value.reshape(-1)[0])} does not fit the "
                                   f"input {in_shape} and output {out_shape} shapes (the last axis is re/im)")
        candidates = [axis]
    if not candidates:
        raise UnsupportedError(f"{op.describe()}: no axis maps input {in_shape} to output {out_shape}")
    status = status_word(kb) if axis_value is None else None
    code = None
    if status is not None:
        code = error_code(op, f"{op.describe()}: input 'axis' is not one of {candidates} (or their negative "
                              "forms), the axes the input and output shapes allow")
    for number, axis in enumerate(candidates):
        m = in_shape[axis]
        if inverse and onesided:
            n = out_shape[axis]
            terms = min(m, n // 2 + 1)
        else:
            n = out_shape[axis] if not onesided else None
            if onesided:
                n = _onesided_length(op, x, out_shape[axis], m)
            terms = min(m, n)
        if _present(op, 1):
            length = constant_input(op, 1, required=False)
            if length is not None and int(length.reshape(-1)[0]) != n:
                raise UnsupportedError(f"{op.describe()}: dft_length {int(length.reshape(-1)[0])} but the output "
                                       f"was inferred for {n}")
        when = None
        if status is not None:
            def when(b, axis=axis, first=number == 0):
                named = _scalar(b, ins[2])
                a = b.on(named.type)
                if first:
                    ok = a.const(0, BOOL)
                    for c in candidates:
                        ok = a.or_(ok, a.or_(a.compare("eq", named, a.const(c)),
                                             a.compare("eq", named, a.const(c - rank))))
                    flag_if(b, status, a.xor(ok, a.const(1, BOOL)), code)
                return a.or_(a.compare("eq", named, a.const(axis)), a.compare("eq", named, a.const(axis - rank)))

        def sample(b, t, active, axis=axis):
            at = [t if d == axis else b.index(d) for d in range(rank - 1)]
            return _component(b, x, at, in_shape[-1] == 2)

        _transform(kb, op, out, axis, terms, n, inverse, inverse and onesided, sample, when)


def _onesided_length(op, x, bins: int, m: int) -> int:
    """N of a one-sided forward transform with `bins` outputs: 2(bins-1) or 2(bins-1)+1, the one
    dft_length (a constant) or the input's own length gives."""
    length = constant_input(op, 1, required=False) if _present(op, 1) else None
    if length is not None:
        return int(length.reshape(-1)[0])
    if _present(op, 1):
        raise UnsupportedError(f"{op.describe()}: a run-time dft_length with onesided=1 (the output "
                               "size does not fix it)")
    return m


def _transform(kb, op, out, freq: int, terms: int, n: int, inverse: bool, halfcomplex: bool, sample,
               when=None) -> None:
    """out[..., k (on axis `freq`), ..., c] += the N = `n` transform of the `terms` terms
    `sample(b, t, active)` gives as (re, im) for the output element.

    halfcomplex: irfft (the terms are a one-sided spectrum, the output is real). `when(b)`: an
    i1, whether this candidate's transform applies (else it adds 0; `active` is it, or None).
    Sums run in float64 (a scratch, then rounded once into the output), as numpy's FFT
    computes: an inverse transform's ~0 imaginary parts stay within 1e-7."""
    shape = out.type.get_shape()
    rank = len(shape)
    wide = f64
    acc_buffer = kb.scratch(MemRefType(wide, shape))
    kb.fill(acc_buffer, 0)
    table = _table(kb, op, wide, n, 1.0)
    loops = rank + 1
    # The term loop's bound comes from an operand indexed by it: the table's first `terms` cosines.
    bound = kb.subview(table, [0, 0], [1, terms])

    def body(b, args):
        i = b.on(IndexType())
        acc = args[1]
        t = b.index(rank)
        active = when(b) if when is not None else None
        angle = i.remsi(i.mul(b.index(freq), t), i.const(n))
        cos, sin = b.load(table, [i.const(0), angle]), b.load(table, [i.const(1), angle])
        real, imag = (b.cast(v, wide) for v in sample(b, t, active))
        if halfcomplex:  # Re(X_t e^{+i}), twice for 0 < t < N/2
            value = b.sub(b.mul(real, cos), b.mul(imag, sin))
            single = i.cmp("eq", t, i.const(0))
            if n % 2 == 0:
                single = i.or_(single, i.cmp("eq", t, i.const(n // 2)))
            value = b.select(single, value, b.add(value, value))
        elif inverse:
            re, im = b.sub(b.mul(real, cos), b.mul(imag, sin)), b.add(b.mul(imag, cos), b.mul(real, sin))
            value = b.select(i.cmp("eq", b.index(rank - 1), i.const(0)), re, im)
        else:
            re, im = b.add(b.mul(real, cos), b.mul(imag, sin)), b.sub(b.mul(imag, cos), b.mul(real, sin))
            value = b.select(i.cmp("eq", b.index(rank - 1), i.const(0)), re, im)
        if active is not None:
            value = b.select(active, value, b.const(0.0))
        return [b.add(acc, value)]

    maps = [affine_map(loops, [cst(0), dim(rank)]), affine_map(loops, [dim(d) for d in range(rank)])]
    kb.generic([bound], [acc_buffer], maps, [PARALLEL] * rank + [REDUCTION], body)
    scale = 1.0 / n if inverse else 1.0
    identity = affine_map(rank, [dim(d) for d in range(rank)])
    # out += acc * scale: each candidate of a run-time axis adds into the output (0 elsewhere)
    kb.generic([acc_buffer], [out], [identity, identity], [PARALLEL] * rank,
               lambda b, args: [b.add(args[1], b.cast(b.on(wide).mul(args[0], b.on(wide).const(scale)),
                                                      out.type.element_type))])


@lowers("STFT")
def lower_stft(kb, op, ins, outs) -> None:
    signal, step_input = ins[0], ins[1]
    window = ins[2] if _present(op, 2) else None
    out = outs[0]
    require_kinds(op, [signal, window], (FLOAT,))
    batches, length, parts = signal.type.get_shape()
    _, frames, bins, _ = out.type.get_shape()
    onesided = bool(op.attr("onesided", 1))
    if window is not None:
        n = window.type.get_shape()[0]
        lengths = [n]
    elif onesided:
        lengths = [2 * (bins - 1), 2 * (bins - 1) + 1]
    else:
        lengths = [bins]
    frame_length = constant_input(op, 3, required=False) if _present(op, 3) else None
    if frame_length is not None:
        wanted = int(frame_length.reshape(-1)[0])
        if wanted not in lengths:
            raise UnsupportedError(f"{op.describe()}: frame_length {wanted} does not fit the window or the "
                                   f"output's {bins} frequencies")
        lengths = [wanted]
    runtime_length = _present(op, 3) and frame_length is None
    if not runtime_length and len(lengths) > 1:
        lengths = lengths[:1]
    if is_empty(out):
        return
    kb.fill(out, 0)
    status = status_word(kb)
    past_end = error_code(op, f"{op.describe()}: frame_step and frame_length read past the end of the "
                              f"signal ({length} samples) for {frames} frames")
    wrong_length = error_code(op, f"{op.describe()}: input 'frame_length' is not one of {lengths}, what the "
                                  "window and output shapes allow") if runtime_length else None
    step_constant = constant_input(op, 1, required=False)
    for number, n in enumerate(lengths):
        def sample(b, t, active, n=n):
            i = b.on(IndexType())
            if step_constant is not None:
                step = i.const(int(step_constant.reshape(-1)[0]))
            else:
                step = b.index_from(_scalar(b, step_input))
            start = i.mul(b.index(1), step)
            at = i.add(start, t)
            outside = i.cmp("uge", at, i.const(length))  # also a negative step's wrap-around
            flag_if(b, status, outside if active is None else b.and_(outside, active), past_end)
            at = i.select(outside, i.const(0), at)
            real, imag = _component(b, signal, [b.index(0), at], parts == 2)
            if window is not None:
                w = b.load(window, [t])
                real, imag = b.mul(real, w), b.mul(imag, w)
            return real, imag

        when = None
        if runtime_length:
            def when(b, n=n, first=number == 0):
                named = _scalar(b, ins[3])
                a = b.on(named.type)
                if first:
                    ok = a.const(0, BOOL)
                    for c in lengths:
                        ok = a.or_(ok, a.compare("eq", named, a.const(c)))
                    flag_if(b, status, a.xor(ok, a.const(1, BOOL)), wrong_length)
                return a.compare("eq", named, a.const(n))

        _transform(kb, op, out, 2, n, n, False, False, sample, when)


@lowers("MelWeightMatrix")
def lower_mel_weight_matrix(kb, op, ins, outs) -> None:
    """The triangular mel filter bank [dft_length//2 + 1, num_mel_bins]
    (https://onnx.ai/onnx/operators/onnx__MelWeightMatrix.html, opset 17, and its reference):
    num_mel_bins + 2 points evenly spaced in mel (2595 log10(1 + f/700)) from lower_edge_hertz
    to upper_edge_hertz (step: the span / (num_mel_bins + 2)), each back in hertz and to the
    spectrogram bin floor((dft_length + 1) f / sample_rate); filter i rises linearly from point
    i to i+1 (1 there) and falls to point i+2. In float64 like the reference. The output's
    static shape stands for num_mel_bins and dft_length, which a run checks."""
    out = outs[0]
    out_shape = list(out.type.get_shape())
    bins, mels = out_shape
    if is_empty(out):
        return
    status = status_word(kb)
    code = error_code(op, f"{op.describe()}: inputs 'num_mel_bins' and 'dft_length' do not give the "
                          f"output shape {out_shape} this model was compiled for (dlc compiles static shapes)")
    num_mel, dft_length, sample_rate, lower, upper = ins
    wide = f64
    rank = 2

    def body(b, args):
        w = b.on(wide)
        as_wide = [w.cast(_scalar(b, v), wide) for v in (num_mel, dft_length, sample_rate, lower, upper)]
        n_mel, length, rate, low_hz, high_hz = as_wide
        mel_count = b.on(I64).cast(_scalar(b, num_mel), I64)
        length_int = b.on(I64).cast(_scalar(b, dft_length), I64)
        rows = b.on(I64).add(b.on(I64).div(length_int, b.on(I64).const(2)), b.on(I64).const(1))
        wrong = b.or_(b.on(I64).compare("ne", mel_count, b.on(I64).const(mels)),
                      b.on(I64).compare("ne", rows, b.on(I64).const(bins)))
        flag_if(b, status, wrong, code)
        ln10 = float(np.log(10))

        def to_mel(hz):
            return w.div(w.mul(w.const(2595.0), w.math(math.Log1pOp, w.div(hz, w.const(700.0)))), w.const(ln10))

        low_mel = to_mel(low_hz)
        step = w.div(w.sub(to_mel(high_hz), low_mel), w.add(n_mel, w.const(2.0)))
        column = b.index(1)

        def point(offset: int):
            k = w.add(b.index_to(column, wide), w.const(float(offset)))
            hz = w.mul(w.const(700.0), w.math(math.ExpM1Op, w.div(w.mul(w.add(w.mul(k, step), low_mel),
                                                                             w.const(ln10)), w.const(2595.0))))
            return w.math(math.FloorOp, w.div(w.mul(w.add(length, w.const(1.0)), hz), rate))

        left, centre, right = point(0), point(1), point(2)
        j = b.index_to(b.index(0), wide)
        falling = w.and_(w.compare("ge", j, centre), w.compare("lt", j, right))
        rising = w.and_(w.compare("ge", j, left), w.compare("le", j, centre))
        down = w.div(w.sub(right, j), w.sub(right, centre))
        up = w.select(w.compare("eq", j, centre), w.const(1.0), w.div(w.sub(j, left), w.sub(centre, left)))
        value = w.select(falling, down, w.select(rising, up, w.const(0.0)))
        return [b.cast(value, b.type)]

    kb.generic([], [out], [affine_map(rank, [dim(0), dim(1)])], [PARALLEL] * rank, body)
