"""im2col for a column block: the GEMM operand of a convolution, built where it is consumed.

A Conv is the GEMM Y[Cout, OH*OW] = W[Cout, C*KH*KW] @ col[C*KH*KW, OH*OW] with
col[(c, kh, kw), (oh, ow)] = X_padded[c, oh*sh + kh*dh, ow*sw + kw*dw] (the lowering of
onnx__Conv.html that Caffe named im2col). `emit_im2col` writes columns [j0, j1) of col into a
buffer with row stride `ldb`; the convolution's GEMM worker (llvm_emitter) builds the block of
columns it is about to multiply, so the block is still in that core's L2 when the micro-kernel
reads it, whichever thread runs it (a whole-image col is several MB, 115 MB on VGG's first layer).
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

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


def emit_im2col(module: ir.Module, name: str, spec: Im2colSpec, ldb: int) -> ir.Function:
    """`void NAME(ptr padded, ptr col, i64 j0, i64 j1)`: col[r * ldb + (j - j0)] for every
    row r of the depth and output pixel j in [j0, j1) (j1 - j0 <= ldb).

    Loops: row r = (c, kh, kw), then output rows oh that [j0, j1) touches, then the run of
    output columns of that row inside [j0, j1): a unit-stride store loop that LLVM vectorises
    (a strided gather from the input for sw > 1).
    """
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, I64, I64]), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    padded, col, j0, j1 = fn.args
    padded.name, col.name, j0.name, j1.name = "padded", "col", "j0", "j1"
    for pointer in (padded, col):
        pointer.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    s = spec
    ow = _i64(s.ow)
    first_oh = b.sdiv(j0, ow)
    last_oh = b.sdiv(b.sub(j1, _i64(1)), ow)  # inclusive

    def channel_row(r):
        c = b.sdiv(r, _i64(s.kh * s.kw))
        tap = b.srem(r, _i64(s.kh * s.kw))
        kh, kw = b.sdiv(tap, _i64(s.kw)), b.srem(tap, _i64(s.kw))
        plane = b.mul(c, _i64(s.hp * s.wp))
        source_col0 = b.mul(kw, _i64(s.dw))
        row_out = b.mul(r, _i64(ldb))

        def output_row(oh):
            row_start = b.mul(oh, ow)
            begin = b.select(b.icmp_signed(">", j0, row_start), b.sub(j0, row_start), _i64(0))
            end_here = b.sub(j1, row_start)
            end = b.select(b.icmp_signed("<", end_here, ow), end_here, ow)
            source_row = b.add(plane, b.mul(b.add(b.mul(oh, _i64(s.sh)), b.mul(kh, _i64(s.dh))), _i64(s.wp)))
            source_base = b.add(source_row, source_col0)
            target_base = b.add(row_out, b.sub(row_start, j0))

            def pixel(x):
                source = b.add(source_base, b.mul(x, _i64(s.sw)) if s.sw != 1 else x)
                value = b.load(b.gep(padded, [source], inbounds=True, source_etype=F32), typ=F32, align=4)
                b.store(value, b.gep(col, [b.add(target_base, x)], inbounds=True, source_etype=F32), align=4)

            counted_loop(b, begin, end, pixel)

        counted_loop(b, first_oh, b.add(last_oh, _i64(1)), output_row)

    with b.if_then(b.icmp_signed("<", j0, j1)):
        counted_loop(b, _i64(0), _i64(s.depth), channel_row)
    b.ret_void()
    return fn
