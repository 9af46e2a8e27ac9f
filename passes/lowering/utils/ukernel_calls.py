"""Calls to micro-kernels (IREE's "ukernels"): contractions the rules hand to tuned code.

A contraction rule that can use the GEMM micro-kernel emits `func.call @dlc_gemm_N(A, B,
C[, bias][, R])` to a private declaration whose attributes specify it completely:

    func.func private @dlc_gemm_0(memref<..>, memref<..>, memref<..>) attributes
        {dlc.ukernel = "gemm", dlc.gemm = {m = 64 : i64, n = 3136 : i64, k = 576 : i64, ...}}

Strides are in elements; `b_layout` is "row" (B[k, j] at k*ldb + j) until pack-weights
packs a constant B; `b_trans` marks a constant B stored transposed ([N, K], Gemm transB),
which must be packed. tile-contractions adds the tile sizes (mr, nr, kc, mc, nc); the LLVM
emitter generates the function from the spec (dlc/codegen/ukernels.py). The spec, its tiles
and its attribute form are the micro-kernel's contract (dialects/gemm_ukernel.py).

A convolution's GEMM reads B as im2col of the padded input, built block by block where it is
consumed: its call passes the padded input as B, then a scratch buffer, and its declaration
has `dlc.im2col` = {channels, kh, kw, sh, sw, dh, dw, hp, wp, ow (the geometry), tm, tn (the
grid of work items), width (columns per block)}; b_layout is "window" (each block is built
in the micro-kernel's nr-column panels) and ldb is `width`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, MemRefType, ModuleOp, StringAttr, i64
from xdsl.ir import SSAValue

from dialects.gemm_ukernel import gemm_attributes, ukernels


def emit_gemm_call(kb, anchor, a: SSAValue, b: SSAValue, c: SSAValue, *, bias_buffer: SSAValue | None = None,
                   residual_buffer: SSAValue | None = None, im2col: dict | None = None,
                   scratch: SSAValue | None = None, batch: dict | None = None, **spec) -> func.CallOp:
    """Declare a gemm ukernel for `spec` in the module holding `anchor` and call it here
    (with `im2col` and `scratch`: b is a padded convolution input, see the module docstring;
    with `batch` {count, a, b, c}: `count` GEMMs of this spec, the i-th's A, B and C i * a, b,
    c elements past a, b and c, which must span them all, run in one parallel region)."""
    module = anchor.get_toplevel_object()
    assert isinstance(module, ModuleOp)
    names = _NAMES.get()
    if names is None or names.module is not module:
        names = _GemmNames.of(module)
    name = names.next_name()
    bias, residual = bias_buffer, residual_buffer
    operands = [a, b, c] + ([bias] if bias is not None else []) + ([residual] if residual is not None else [])
    if (im2col is None) != (scratch is None):
        raise ValueError("emit_gemm_call: an im2col GEMM needs both `im2col` and `scratch`")
    if scratch is not None:
        operands.append(scratch)
    decl = func.FuncOp.external(name, [v.type for v in operands], [])
    if im2col is not None:
        decl.attributes["dlc.im2col"] = DictionaryAttr({k: IntegerAttr(int(v), i64) for k, v in im2col.items()})
    if batch is not None:
        decl.attributes["dlc.batch"] = DictionaryAttr({k: IntegerAttr(int(v), i64) for k, v in batch.items()})
    decl.attributes["dlc.ukernel"] = StringAttr("gemm")
    if (bias is None) != (spec.get("bias") is None):
        raise ValueError("emit_gemm_call: pass a bias operand exactly when spec has bias='row'/'col'")
    decl.attributes["dlc.gemm"] = gemm_attributes({"b_layout": "row", **spec,
                                                   "residual": int(residual is not None)})
    call = func.CallOp(name, operands, [])
    kb.insert(call)
    module.body.block.add_op(decl)
    names.declared(name)
    return call


@dataclass
class _GemmNames:
    """The names a module's functions take and how many GEMM declarations it holds."""

    module: ModuleOp
    taken: set[str]
    gemms: int

    @staticmethod
    def of(module: ModuleOp) -> _GemmNames:
        return _GemmNames(module, {op.sym_name.data for op in module.ops if isinstance(op, func.FuncOp)},
                          len(ukernels(module)))

    def next_name(self) -> str:
        """`dlc_gemm_<N>`: N counts the GEMMs declared so far, then skips names taken."""
        index = self.gemms
        while f"dlc_gemm_{index}" in self.taken:
            index += 1
        return f"dlc_gemm_{index}"

    def declared(self, name: str) -> None:
        self.taken.add(name)
        self.gemms += 1


_NAMES: ContextVar[_GemmNames | None] = ContextVar("gemm_names", default=None)


@contextmanager
def gemm_names(module: ModuleOp) -> Iterator[None]:
    """Within this block, `emit_gemm_call` names GEMMs in `module` from a table read once.

    Reading the module's functions for every call was quadratic in the GEMMs of a model.
    The table stays right while only `emit_gemm_call` adds functions named `dlc_gemm_<N>`
    and no GEMM declaration goes away: a lowering pass, not a clean-up.
    """
    token = _NAMES.set(_GemmNames.of(module))
    try:
        yield
    finally:
        _NAMES.reset(token)


def is_f32_memref(*values: SSAValue | None) -> bool:
    from xdsl.dialects.builtin import f32

    return all(v is None or (isinstance(v.type, MemRefType) and v.type.element_type == f32) for v in values)


def take_epilogue(kb, has_residual: bool = False):
    """The elementwise tail (kernels-to-linalg's GemmEpilogue) the GEMM calls must apply, or None.

    Taking it is a promise: every GEMM call of the contraction then applies its activation
    and adds its residual, and the separate loop over the output is not emitted.
    """
    epilogue = getattr(kb, "epilogue", None)
    if epilogue is None or (has_residual and epilogue.residual is not None):
        return None
    epilogue.consumed = True
    return epilogue
