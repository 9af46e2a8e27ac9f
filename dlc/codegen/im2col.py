"""im2col for a column block: the GEMM operand of a convolution, built where it is consumed.

A Conv is the GEMM Y[Cout, OH*OW] = W[Cout, C*KH*KW] @ col[C*KH*KW, OH*OW] with
col[(c, kh, kw), (oh, ow)] = X_padded[c, oh*sh + kh*dh, ow*sw + kw*dw] (the lowering of
onnx__Conv.html that Caffe named im2col). `emit_im2col` writes columns [j0, j1) of col into a
buffer in the micro-kernel's panel layout (so building it is also packing B); the convolution's
GEMM worker (gemm_calls.py) builds the block of columns it is about to multiply, so the block is
still in that core's L2 when the micro-kernel reads it, whichever thread runs it (a whole-image
col is several MB, 115 MB on VGG's first layer).

One function per (kernel width, column stride, nr) is emitted per module and shared by every
convolution that has them: the channels, kernel height, row stride, dilations and map sizes
are its arguments (`Im2colSpec.arguments`). One function per convolution cost ResNet-50 1.1
CPU-s of LLVM for its 11 im2col functions (~0.1 s each, whatever their size), its 5 shared
ones (issue 16).
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from dlc.codegen.function_attributes import FunctionAttributes

I64 = ir.IntType(64)
F32 = ir.FloatType()
PTR = ir.PointerType()


@dataclass(frozen=True)
class Im2colSpec:
    """One image (and group) of a 2-D convolution, on its padded input [channels, hp, wp]."""

    channels: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    hp: int
    wp: int
    ow: int

    @property
    def depth(self) -> int:
        """Rows of col: one per (channel, kernel row, kernel column)."""
        return self.channels * self.kh * self.kw

    def arguments(self) -> list[ir.Constant]:
        """What the shared im2col function takes after (padded, col, j0, j1): RUNTIME_FIELDS."""
        return [_i64(getattr(self, name)) for name in RUNTIME_FIELDS]


# The geometry an im2col function takes at run time. The kernel's size and dilations (its rows
# and taps are unrolled, each at a constant offset from the first), the column stride (the
# shape of its vector loads) and nr (its panels) are in its name: with the kernel height an
# argument too, the copies of ResNet-50's 1x1 stride-2 convolutions ran 2x slower (a loop of
# one row per channel); with the dilations, its 3x3 ones 1.1-1.2x (a pointer per tap, spilled).
RUNTIME_FIELDS = ("channels", "sh", "hp", "wp", "ow")


def _i64(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


def counted_loop(b: ir.IRBuilder, start: ir.Value, stop: ir.Value, body, step: int = 1) -> None:
    """for (iv = start; iv < stop; iv += step) body(iv): a guarded do-while loop."""
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


# Lanes of the explicit vectors a run is copied in (AVX-512's; LLVM splits them on narrower ISAs).
COPY_LANES = 16
# Column strides copied as vectors (a masked load of the span, then a shuffle); wider ones
# (rare: AlexNet's first layer has 4) gather a float at a time.
MAX_VECTOR_STRIDE = 4


def im2col_name(spec: Im2colSpec, nr: int) -> str:
    """The shared im2col function of `spec`'s kernel size, dilations and column stride, for
    panels of nr."""
    return f"dlc_gemm_im2col_k{spec.kh}x{spec.kw}_d{spec.dh}x{spec.dw}_s{spec.sw}_nr{nr}"


def im2col_function(module: ir.Module, spec: Im2colSpec, nr: int) -> ir.Function:
    """The module's im2col function for `spec` and nr (`emit_im2col`), emitted the first time.
    Call it with (padded, col, j0, j1, *spec.arguments())."""
    name = im2col_name(spec, nr)
    existing = module.globals.get(name)
    return existing if existing is not None else emit_im2col(module, name, spec, nr)


def emit_im2col(module: ir.Module, name: str, spec: Im2colSpec, nr: int) -> ir.Function:
    """`void NAME(ptr padded, ptr col, i64 j0, i64 j1, i64 channels, i64 sh, i64 hp, i64 wp,
    i64 ow)`: columns [j0, j1) of col for `spec`'s kernel size, dilations and column stride
    (the rest of its geometry, RUNTIME_FIELDS, as arguments), in the
    GEMM's panels of nr columns (pack_b's layout, b_layout "window"): column j of row r at
    col[p*depth*nr + r*nr + (j - j0) % nr] with p = (j - j0) // nr. Lanes of the last panel
    past j1 get zeros: the micro-kernel reads whole panels, and stale scratch there could be
    denormals (slow) or NaN.

    The micro-kernel then streams each panel in order (rows nr floats apart), as it does a
    packed weight; with the block row-major (rows `width` apart) a 32 x 3136 x 1152 GEMM
    ran at 85 GFLOP/s instead of 105 on Zen 4, as its micro-panel had to fit L1.

    Loops: the runs of columns [j0, j1) falls into (an output row oh, cut at panel edges),
    then every row r = (c, kh, kw) of the depth: the run's geometry and its tail mask are
    worked out once for all rows, and a stride-1 run is copied as whole vectors and one masked
    vector (a strided gather for sw > 1). The function is "no-builtins": LLVM turned the copy
    loops into a memcpy call per run, slower than these short runs (a 1152 x 3136 im2col:
    1.3 ms with per-row geometry and memcpy, ~0.3 ms this way). It is "noinline": shared by
    several convolutions' workers, one copy is compiled, and a call per block of columns costs
    nothing next to the block's copy.
    """
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, I64, I64] + [I64] * len(RUNTIME_FIELDS)),
                     name)
    fn.linkage = "internal"
    fn.attributes = FunctionAttributes(("nounwind", "noinline"), {"no-builtins": ""})
    padded, col, j0, j1, *geometry = fn.args
    padded.name, col.name, j0.name, j1.name = "padded", "col", "j0", "j1"
    for argument, field_name in zip(geometry, RUNTIME_FIELDS):
        argument.name = field_name
    channels, sh, hp, wp, ow = geometry
    kh, kw, sw, dh, dw = spec.kh, spec.kw, spec.sw, spec.dh, spec.dw
    for pointer in (padded, col):
        pointer.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vec = ir.VectorType(F32, COPY_LANES)
    mask_type = ir.VectorType(ir.IntType(1), COPY_LANES)
    i32 = ir.IntType(32)

    def intrinsic(name, ret, args):
        return module.globals.get(name) or ir.Function(module, ir.FunctionType(ret, args), name)

    masked_load = intrinsic(f"llvm.masked.load.v{COPY_LANES}f32.p0", vec, [PTR, i32, mask_type, vec])
    masked_store = intrinsic(f"llvm.masked.store.v{COPY_LANES}f32.p0", ir.VoidType(), [vec, PTR, i32, mask_type])

    def minimum(x, y):
        return b.select(b.icmp_signed("<", x, y), x, y)

    def maximum(x, y):
        return b.select(b.icmp_signed(">", x, y), x, y)

    def at(base, index):
        return b.gep(base, [index], inbounds=True, source_etype=F32)

    # Strides of the loops over the depth's rows, once per call.
    plane_floats = b.mul(hp, wp, flags=("nsw",))  # one channel of the padded input
    kernel_row_floats = b.mul(wp, _i64(dh), flags=("nsw",))
    kernel_row_rows = _i64(kw * nr)  # col's rows of one kernel row, nr floats each
    channel_rows = _i64(kh * kw * nr)
    depth = b.mul(channels, _i64(kh * kw), flags=("nsw",))

    def for_each_row(source_base, target_base, copy):
        """copy(source offset, target offset) for every row r = (c, kh, kw) of the depth."""
        def channel(c):
            plane = b.add(source_base, b.mul(c, plane_floats))
            rows = b.add(target_base, b.mul(c, channel_rows))

            def kernel_row(kh):
                line = b.add(plane, b.mul(kh, kernel_row_floats))
                row = b.add(rows, b.mul(kh, kernel_row_rows))
                for tap in range(kw):  # unrolled: a few taps, each a short run
                    copy(b.add(line, _i64(tap * dw)), b.add(row, _i64(tap * nr)))

            counted_loop(b, _i64(0), _i64(kh), kernel_row)

        counted_loop(b, _i64(0), channels, channel)

    def lane_mask(limit):
        """Lanes i < limit of a COPY_LANES-wide vector (limit: a runtime i64)."""
        lane_ids = ir.Constant(ir.VectorType(I64, COPY_LANES), list(range(COPY_LANES)))
        splat = b.insert_element(ir.Constant(ir.VectorType(I64, COPY_LANES), ir.Undefined), limit,
                                 ir.Constant(i32, 0))
        splat = b.shuffle_vector(splat, ir.Constant(ir.VectorType(I64, COPY_LANES), ir.Undefined),
                                 ir.Constant(ir.VectorType(i32, COPY_LANES), [0] * COPY_LANES))
        return b.icmp_signed("<", lane_ids, splat)

    # Strides up to MAX_VECTOR_STRIDE: a chunk of 16 outputs is one masked load of the
    # 15*sw + 1 floats it spans and a shuffle of every sw-th lane (no read past the last tap).
    wide = ir.VectorType(F32, COPY_LANES * sw)
    wide_mask_type = ir.VectorType(ir.IntType(1), COPY_LANES * sw)
    wide_load = intrinsic(f"llvm.masked.load.v{COPY_LANES * sw}f32.p0", wide, [PTR, i32, wide_mask_type, wide])
    every_sw = ir.Constant(ir.VectorType(i32, COPY_LANES), [lane * sw for lane in range(COPY_LANES)])

    def load_chunk(address, outputs_mask, outputs):
        """The outputs of one chunk (lanes of `outputs_mask`, `outputs` of them; all when None)."""
        if sw == 1:
            if outputs_mask is None:
                return b.load(address, typ=vec, align=4)
            return b.call(masked_load, [address, ir.Constant(i32, 4), outputs_mask,
                                        ir.Constant(vec, [0.0] * COPY_LANES)])
        if outputs_mask is None:
            span = ir.Constant(wide_mask_type, [lane < (COPY_LANES - 1) * sw + 1 for lane in range(COPY_LANES * sw)])
        else:
            ids = ir.Constant(ir.VectorType(I64, COPY_LANES * sw), list(range(COPY_LANES * sw)))
            limit = b.add(b.mul(b.sub(outputs, _i64(1)), _i64(sw)), _i64(1))
            splat = b.insert_element(ir.Constant(ir.VectorType(I64, COPY_LANES * sw), ir.Undefined), limit,
                                     ir.Constant(i32, 0))
            splat = b.shuffle_vector(splat, ir.Constant(ir.VectorType(I64, COPY_LANES * sw), ir.Undefined),
                                     ir.Constant(ir.VectorType(i32, COPY_LANES * sw), [0] * (COPY_LANES * sw)))
            span = b.icmp_signed("<", ids, splat)
        taps = b.call(wide_load, [address, ir.Constant(i32, 4), span, ir.Constant(wide, [0.0] * (COPY_LANES * sw))])
        return b.shuffle_vector(taps, ir.Constant(wide, ir.Undefined), every_sw)

    def run(source_base, target_base, count):
        """Copy `count` output columns (<= nr) of every row: source stride sw, target 1."""
        if sw > MAX_VECTOR_STRIDE:
            def copy_scalar(source, target):
                def pixel(x):
                    value = b.load(at(padded, b.add(source, b.mul(x, _i64(sw)))), typ=F32, align=4)
                    b.store(value, at(col, b.add(target, x)), align=4)

                counted_loop(b, _i64(0), count, pixel)

            for_each_row(source_base, target_base, copy_scalar)
            return
        whole = b.mul(b.sdiv(count, _i64(COPY_LANES)), _i64(COPY_LANES))
        rest = b.sub(count, whole)
        mask = lane_mask(rest)  # the lanes of the last, partial chunk

        def copy(source, target):
            # A run is at most nr columns: its whole chunks unrolled, each taken if the run has it.
            for v in range(nr // COPY_LANES):
                x = _i64(v * COPY_LANES)
                with b.if_then(b.icmp_signed("<", x, whole)):
                    b.store(load_chunk(at(padded, b.add(source, _i64(v * COPY_LANES * sw))), None, None),
                            at(col, b.add(target, x)), align=4)
            with b.if_then(b.icmp_signed(">", rest, _i64(0))):
                value = load_chunk(at(padded, b.add(source, b.mul(whole, _i64(sw)))), mask, rest)
                b.call(masked_store, [value, at(col, b.add(target, whole)), ir.Constant(i32, 4), mask])

        for_each_row(source_base, target_base, copy)

    panel_floats = b.mul(depth, _i64(nr), flags=("nsw",))
    source_row_floats = b.mul(sh, wp, flags=("nsw",))  # padded input between output rows

    def output_row(oh):
        row_start = b.mul(oh, ow)
        begin = b.select(b.icmp_signed(">", j0, row_start), b.sub(j0, row_start), _i64(0))
        end = minimum(b.sub(j1, row_start), ow)
        source_row = b.mul(oh, source_row_floats)
        offset = b.sub(row_start, j0)  # block column of this output row's x = 0
        first_panel = b.sdiv(b.add(offset, begin), _i64(nr))
        last_panel = b.sdiv(b.add(offset, b.sub(end, _i64(1))), _i64(nr))  # inclusive

        def panel(p):
            panel_col0 = b.mul(p, _i64(nr))  # block column of the panel's first lane
            x0 = maximum(begin, b.sub(panel_col0, offset))
            x1 = minimum(end, b.sub(b.add(panel_col0, _i64(nr)), offset))
            target = b.add(b.mul(p, panel_floats), b.sub(b.add(offset, x0), panel_col0))
            run(b.add(source_row, b.mul(x0, _i64(sw))), target, b.sub(x1, x0))

        counted_loop(b, first_panel, b.add(last_panel, _i64(1)), panel)

    def zero_tail(lanes, last_panel_base):
        def row(r):
            base = b.add(last_panel_base, b.mul(r, _i64(nr)))
            counted_loop(b, lanes, _i64(nr), lambda lane: b.store(
                ir.Constant(F32, 0.0), at(col, b.add(base, lane)), align=4))

        counted_loop(b, _i64(0), depth, row)

    with b.if_then(b.icmp_signed("<", j0, j1)):
        counted_loop(b, b.sdiv(j0, ow), b.add(b.sdiv(b.sub(j1, _i64(1)), ow), _i64(1)), output_row)
        columns = b.sub(j1, j0)
        lanes = b.srem(columns, _i64(nr))
        with b.if_then(b.icmp_signed("!=", lanes, _i64(0))):
            zero_tail(lanes, b.mul(b.sdiv(columns, _i64(nr)), panel_floats))
    b.ret_void()
    return fn
