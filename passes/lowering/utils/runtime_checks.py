"""Run-time checks in generated code: a failed check sets a per-run status word.

ONNX calls an integer division by zero and an out-of-range index errors (onnxruntime refuses
them). Generated code must neither trap (SIGFPE kills the process) nor read out of bounds, so
the access itself still uses a safe divisor or an in-range index; in addition the check stores
the node's error code into a status word: an i32 that plan-memory reserves in the arena (one
arena per run, so concurrent runs never share it) and @main zeroes first. After the native
call the runtime reads it and raises the DlcError of that code (manifest `error_sites`).

A check never makes a loop serial nor reads its data twice: inside a parallel loop it is a
branch, never taken on valid data, around a store of a constant (racy but idempotent). An
index is checked where the gather loop loads it (`index_check`), so the loop stays parallel
and vectorised and the indices are read once.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from xdsl.dialects import memref, scf
from xdsl.dialects.builtin import (
    ArrayAttr,
    IndexType,
    MemRefType,
    ModuleOp,
    StringAttr,
    UnitAttr,
    i32,
)
from xdsl.ir import Block, Region, SSAValue

from passes.lowering.utils.linalg_builder import Body

STATUS_TYPE = MemRefType(i32, [1])
ERROR_SITES = "dlc.error_sites"  # on the module: the message of error code k at position k - 1
SETS_STATUS = "dlc.sets_status"  # on each op that writes the status word (plan-memory finds it)

_status_of_kernel: WeakKeyDictionary = WeakKeyDictionary()


def error_code(op, message: str) -> int:
    """The code (1, 2, ...) of `message`, a failure of ONNX node `op`, in its module's table."""
    module = op.get_toplevel_object()
    if not isinstance(module, ModuleOp):
        raise TypeError(f"{op.describe()}: a run-time check needs the op inside a module")
    sites = [s.data for s in module.attributes.get(ERROR_SITES, ArrayAttr([])).data]
    if message not in sites:
        sites.append(message)
        module.attributes[ERROR_SITES] = ArrayAttr([StringAttr(s) for s in sites])
    return sites.index(message) + 1


def error_sites(module: ModuleOp) -> list[str]:
    return [s.data for s in module.attributes.get(ERROR_SITES, ArrayAttr([])).data]


def status_word(kb) -> SSAValue:
    """The kernel's memref<1xi32> status argument (one per kernel, whatever checks it holds).

    A scratch buffer to kernels-to-linalg; plan-memory places every one at the same reserved
    arena slot. Asking for it from an elementwise dry run raises NotInlinable: a checking
    formula is lowered as a loop of its own rather than inlined into a fused one.
    """
    if kb not in _status_of_kernel:
        _status_of_kernel[kb] = kb.scratch(STATUS_TYPE)
    return _status_of_kernel[kb]


def flag_if(b: Body, status: SSAValue, violated: SSAValue, code: int) -> None:
    """if (violated) status = code: a branch inside the loop body, not taken on valid data."""
    then_block = Block()
    then = Body(then_block, i32)
    store = memref.StoreOp.get(then.const(code), status, [then.const(0, IndexType())])
    store.attributes[SETS_STATUS] = UnitAttr()
    then_block.add_ops([store, scf.YieldOp()])
    b.block.add_op(scf.IfOp(violated, [], Region(then_block)))


def index_check(b: Body, status: SSAValue, index: SSAValue, n: int, code: int) -> SSAValue:
    """Flag `code` when `index` (an `index` value just loaded by the gather loop) lies outside
    [-n, n): a compare and a never-taken branch where the index already is, no second pass
    (the loop stays parallel and vectorised). Returns the i1 `outside`: the caller must still
    keep the access in bounds (indexing.wrap_and_clamp selects index 0 then)."""
    i = b.on(IndexType())
    # -n <= index < n exactly when index + n, as an unsigned number, is below 2n.
    outside = i.cmp("uge", i.add(index, i.const(n)), i.const(2 * n))
    flag_if(b, status, outside, code)
    return outside


def divisor_check(op, b: Body, status: SSAValue, x: SSAValue, y: SSAValue, signed: bool
                  ) -> SSAValue:
    """The divisor to use for x / y or x % y: 1 where y == 0 and, when signed, where x is the
    type's minimum and y == -1 (the quotient overflows: x86 traps on both), each flagged."""
    # Unsigned: xDSL 0.75 verifies no arith.constant of an unsigned type, so 0 is y - y and
    # the safe divisor y + 1 where y == 0.
    zero_divisor = b.compare("eq", y, b.const(0) if signed else b.sub(y, y))
    flag_if(b, status, zero_divisor,
            error_code(op, f"{op.describe()}: integer division by zero (input 'B' holds a 0)"))
    if not signed:
        return b.add(y, b.cast(zero_divisor, y.type))
    width = y.type.width.data
    overflow = b.and_(b.compare("eq", x, b.const(-(1 << (width - 1)))),
                      b.compare("eq", y, b.const(-1)))
    flag_if(b, status, overflow,
            error_code(op, f"{op.describe()}: integer overflow (input 'A' holds the minimum "
                           f"int{width}, {-(1 << (width - 1))}, where 'B' holds -1)"))
    return b.select(b.or_(zero_divisor, overflow), b.const(1), y)
