"""Pack constant GEMM operands at compile time into the panel layout the micro-kernel reads.

As fast libraries and IREE's data tiling do: a constant B (a MatMul/Gemm weight)
becomes a new weight, Bp[j // nr][k][j % nr] zero-padded to whole panels, so each
micro-kernel step reads one contiguous, cache-line aligned vector row; a Gemm
transB weight is transposed in the same step. The register tile width nr is chosen
here (from the target's vector width) unless the IR already sets it. An int8 B of an
integer GEMM (dtype "u8s8") is packed in groups of four k values per column instead
(`pack_b_u8s8`, the layout vpdpbusd reads).

A constant A (a convolution's weights, rows = output channels) whose rows lie a multiple of
4 KiB apart gets one cache line of padding per row: the mr rows a micro-kernel step
broadcasts from then fall in mr different L1 sets instead of one (an 8-way L1 held 8 of the
13; ResNet-50's 1x1 convs over 1024 channels ran at 60-84 GFLOP/s, 96-99 padded, on Zen 4).

Constant A's of GEMMs of one shape (m x n) whose row lengths lie within SHARED_STRIDE_RATIO of
each other get one row stride, the longest's (zero-padded rows): the micro-kernel tile is one
function per A row stride (its broadcasts' offsets are constants: dlc/codegen/ukernels.py),
so DenseNet-121's 1x1 convs over 64, 96, ..., 992 channels had 58 strides and 107 tiles
(3.7 of its 7.7 CPU-s of LLVM) where 18 strides serve (issue 16). The padding is never read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func, memref
from xdsl.dialects.builtin import DictionaryAttr, MemRefType, ModuleOp, StringAttr, UnitAttr
from xdsl.ir import BlockArgument, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from dialects.diagnostics import CompileError
from dialects.gemm_ukernel import (
    CACHE_LINE_FLOATS,
    a_rows_alias,
    choose_tiles,
    gemm_attributes,
    gemm_spec,
    pack_b,
    pack_b_u8s8,
    ukernels,
)
from dialects.weights import weights_of
from passes.target_info import target_info


def _through_views(value: SSAValue) -> SSAValue:
    """The buffer a whole-buffer reshape view (memref.reinterpret_cast, offset 0) reads."""
    while isinstance(value.owner, memref.ReinterpretCastOp) and list(value.owner.static_offsets.get_values()) == [0]:
        value = value.owner.source
    return value


def _single_use(value: SSAValue):
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


# Row lengths of constant A's that share a stride: the longest is at most this much longer than
# the shortest (at most 25% of an A padded, ~10% on average over DenseNet-121's 1x1 convs).
SHARED_STRIDE_RATIO = 1.25


def shared_strides(lengths: set[int], ratio: float = SHARED_STRIDE_RATIO) -> dict[int, int]:
    """Each row length -> the stride it is stored at: lengths taken longest first, each group
    stored at its longest, which is at most `ratio` times its shortest."""
    stride: dict[int, int] = {}
    top = 0
    for length in sorted(lengths, reverse=True):
        if not top or top > length * ratio:
            top = length
        stride[length] = top
    return stride


def pad_rows(a: np.ndarray, m: int, stride: int) -> np.ndarray:
    """A (m rows, row-major) with each row zero-padded to `stride` elements."""
    padded = np.zeros((m, stride), a.dtype)
    padded[:, :a.size // m] = a.reshape(m, -1)
    return padded


@dataclass(frozen=True)
class PackWeightsPass(ModulePass):
    """Pack each constant GEMM B operand into nr-column panels, and pad the rows of a constant
    A that would alias in L1 (each a new weight)."""

    name = "pack-weights"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        functions = {f.sym_name.data: f for f in op.ops if isinstance(f, func.FuncOp)}
        main = functions.get("main")
        if main is None:
            return
        calls_in_main = {c.callee.root_reference.data: c for c in main.body.walk() if isinstance(c, func.CallOp)}
        # Each GEMM's first call site, from one walk: a walk of every kernel per GEMM was
        # quadratic (a Swin-T's 2,207 functions: 25-39 s).
        first_calls: dict[str, tuple[func.FuncOp, func.CallOp]] = {}
        for kernel in functions.values():
            if kernel.body.blocks and kernel is not main:
                for call in kernel.body.walk():
                    if isinstance(call, func.CallOp):
                        first_calls.setdefault(call.callee.root_reference.data, (kernel, call))
        store = weights_of(op)
        info = target_info(op)
        # One packed copy per (weight, layout), however many GEMMs read it: an unrolled LSTM's
        # 64 steps share one R, and 64 packed copies streamed it from DRAM at every step.
        done: dict[tuple, tuple[str, MemRefType]] = {}
        declarations = list(ukernels(op))
        # Constant A's (GEMM -> its A's row length); their strides shared within each GEMM shape.
        a_sites: dict[str, int] = {}
        lengths: dict[tuple[int, int], set[int]] = {}
        for decl in declarations:
            spec = gemm_spec(decl)
            if spec.get("dtype", "f32") != "f32" or spec["a_k_stride"] != 1:
                continue
            site = self._pack_site(decl, first_calls, calls_in_main, 0)
            if site is None or store[site[4]].size != spec["m"] * spec["a_row_stride"]:
                continue  # not exactly the m x stride matrix the GEMM reads
            a_sites[decl.sym_name.data] = spec["a_row_stride"]
            lengths.setdefault((spec["m"], spec["n"]), set()).add(spec["a_row_stride"])
        strides = {shape: shared_strides(group) for shape, group in lengths.items()}
        for decl in declarations:
            spec = gemm_spec(decl)
            if spec.get("b_layout") == "row":
                self._pack_b(op, decl, spec, first_calls, calls_in_main, main, store, info, done)
            if decl.sym_name.data in a_sites:
                stride = strides[spec["m"], spec["n"]][spec["a_row_stride"]]
                if a_rows_alias(stride, 1):
                    stride += CACHE_LINE_FLOATS
                site = self._pack_site(decl, first_calls, calls_in_main, 0)
                if stride != spec["a_row_stride"] and site is not None:
                    self._pad_a_rows(op, decl, spec, site, main, store, done, stride)

    def _pack_b(self, op, decl, spec, first_calls, calls_in_main, main, store, info, done) -> None:
        site = self._pack_site(decl, first_calls, calls_in_main, 1)
        if site is None:
            if spec.get("dtype", "f32") == "u8s8":  # the integer kernel reads B packed only
                raise CompileError(f"pack-weights: the int8 B of @{decl.sym_name.data} "
                                   f"({spec['m']}x{spec['n']}x{spec['k']}) is not a weight that only this GEMM "
                                   "reads, so it cannot be packed for the integer micro-kernel")
            return
        kernel, gemm_call, arg_index, main_call, weight_name = site
        array = store[weight_name].reshape((spec["n"], spec["k"]) if spec.get("b_trans") else (spec["k"], spec["n"]))
        if spec.get("b_trans"):
            array = array.T
        nr = spec.get("nr") or choose_tiles(spec["m"], spec["n"], spec["k"], info.vector_width,
                                            info.l1_bytes, info.l2_bytes)[1]
        int8 = spec.get("dtype", "f32") == "u8s8"
        pack = pack_b_u8s8 if int8 else pack_b
        key = (weight_name, "packed_u8s8" if int8 else "packed", nr, bool(spec.get("b_trans")), array.shape)
        self._replace_weight(op, decl, main, site, f"{weight_name}.packed{nr}", lambda: pack(array, nr), 1,
                             done, key)
        spec.update(b_layout="packed", b_trans=0, nr=nr, ldb=spec["n"])
        decl.attributes["dlc.gemm"] = _attrs(spec)

    def _pad_a_rows(self, op, decl, spec, site, main, store, done, stride: int) -> None:
        """A's rows stored `stride` apart (zero-padded): a stride shared with GEMMs of other
        row lengths, and no 4 KiB multiple (`a_rows_alias`)."""
        weight_name, m = site[4], spec["m"]
        weight = store[weight_name]
        self._replace_weight(op, decl, main, site, f"{weight_name}.rows{stride}",
                             lambda: pad_rows(weight, m, stride), 0, done, (weight_name, "rows", m, stride))
        spec.update(a_row_stride=stride)
        decl.attributes["dlc.gemm"] = _attrs(spec)

    def _replace_weight(self, op, decl, main, site, name: str, make: Callable[[], np.ndarray], operand: int,
                        done: dict, key: tuple) -> None:
        """Store `make()` as a new weight (or reuse the one stored under `key`) and make the
        GEMM's operand `operand` read it."""
        kernel, gemm_call, arg_index, main_call, _ = site
        if key not in done:
            array = make()
            new_name = weights_of(op).add(name, array)
            new_type = MemRefType(decl.function_type.inputs.data[operand].element_type, list(array.shape))
            op.body.block.insert_op_before(
                memref.GlobalOp.get(StringAttr(new_name), new_type, UnitAttr(), constant=UnitAttr()), main)
            done[key] = new_name, new_type
        new_name, new_type = done[key]
        get = memref.GetGlobalOp(new_name, new_type)
        Rewriter.insert_op(get, InsertPoint.before(main_call))
        main_call.operands[arg_index] = get.memref
        self._retype_kernel_arg(kernel, arg_index, new_type, gemm_call, operand)
        decl.function_type = _with_input(decl.function_type, operand, new_type)

    def _pack_site(self, decl, first_calls, calls_in_main, operand: int):
        """(kernel, call, kernel arg index, main's call, weight) when the GEMM's `operand`
        (0: A, 1: B) is a weight that only it reads (`first_calls`: GEMM -> its first call site)."""
        site = first_calls.get(decl.sym_name.data)
        if site is None:
            return None
        kernel, call = site
        source = _through_views(call.operands[operand])
        if not isinstance(source, BlockArgument) or source.block is not kernel.body.block:
            return None
        # Only this GEMM may read the argument (through views): its layout changes.
        user = _single_use(source)
        while isinstance(user, memref.ReinterpretCastOp):
            user = _single_use(user.result)
        if user is not call:
            return None
        main_call = calls_in_main.get(kernel.sym_name.data)
        if main_call is None:
            return None
        getter = main_call.operands[source.index].owner
        if not isinstance(getter, memref.GetGlobalOp):
            return None
        return kernel, call, source.index, main_call, getter.name_.root_reference.data

    @staticmethod
    def _retype_kernel_arg(kernel: func.FuncOp, index: int, new_type: MemRefType, gemm_call: func.CallOp,
                           operand: int) -> None:
        block = kernel.body.block
        old = block.args[index]
        new = block.insert_arg(new_type, index)
        # The GEMM reads the packed buffer directly; the reshape views of the old one go away.
        view_chain = []
        value = gemm_call.operands[operand]
        while value is not old:
            view_chain.append(value.owner)
            value = value.owner.source
        gemm_call.operands[operand] = new
        for view in view_chain:
            Rewriter.erase_op(view)
        block.erase_arg(old)
        kernel.function_type = _with_input(kernel.function_type, index, new_type)


def _with_input(function_type, index: int, new_type):
    from xdsl.dialects.builtin import FunctionType

    inputs = list(function_type.inputs.data)
    inputs[index] = new_type
    return FunctionType.from_lists(inputs, list(function_type.outputs.data))


def _attrs(spec: dict) -> DictionaryAttr:
    return gemm_attributes(spec)

