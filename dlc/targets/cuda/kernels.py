"""The cuda target's kernels beyond GEMM and elementwise chains (issue 21, second step).

Two kernel shapes, both written from the ONNX op of the `kernels` phase as nvptx64 LLVM IR:
- per output element (`POINT_OPS`): one thread per element of the op's output, which computes
  the element from its coordinates (MaxPool/AveragePool windows, grouped and depthwise Conv as a
  direct convolution, Transpose, Slice, Concat, Gather, Split) and then applies the kernel's
  elementwise epilogue like an elementwise kernel;
- per row (`ROW_OPS`): one warp per row of the last axis (or per H x W plane of the global
  pools), its 32 lanes striding over the row and combining their partial results with
  `shfl.sync.bfly` (Softmax, LayerNormalization, ReduceMean/Sum/Max, GlobalAverage/MaxPool),
  as the CUDA samples' warp reductions do. Softmax and LayerNormalization follow the ONNX spec
  (opset 13 / 17): max-subtracted exponentials, two-pass mean and variance.
`emit_module` (here, as it picks among these and codegen.py's GEMM and elementwise kernels) writes
the module. Every index is computed from compile-time shapes and guarded: no thread reads or writes outside
a buffer. Gather's indices are data: an index outside [-d, d) reads nothing, writes 1 to the
kernel's error word, and the runtime fails the run naming the node (as the cpu target's
passes/lowering/utils/runtime_checks.py does).
"""

from __future__ import annotations

import math

from dlc.errors import CompileError
from dlc.targets.cuda.codegen import (
    _DECLARATIONS,
    GEMM_OPS,
    TRIPLE,
    Launch,
    _Broadcast,
    _elementwise_kernel,
    _evaluate,
    _external,
    _float,
    _Function,
    _gemm_kernel,
    _index_type,
    _present,
    _shape,
    _signature,
    _symbol,
    _yields,
)

POINT_OPS = {"MaxPool", "AveragePool", "Transpose", "Slice", "Concat", "Gather", "Conv"}
ROW_OPS = {"Softmax", "LayerNormalization", "ReduceMean", "ReduceSum", "ReduceMax", "GlobalAveragePool",
           "GlobalMaxPool"}
ROWS_PER_BLOCK = 8  # warps of a 256-thread block, one row each
MAX_TAPS = 256  # pooling and grouped-conv windows are unrolled: beyond this they stay on cpu


def is_point_head(op) -> bool:
    return op.onnx_type in POINT_OPS and (op.onnx_type != "Conv" or op.attr("group", 1) != 1)


def constant(value):
    """The array of a constant operand (an `onnx.weight` in the store), else None."""
    from passes.graph.utils.constants import constant_of

    return constant_of(value)


def _strides(shape) -> list[int]:
    return [math.prod(shape[d + 1:]) for d in range(len(shape))]


def _linear(fn: _Function, coords, shape) -> str:
    """Row-major index of `coords` (index values, or ints) in a tensor of `shape`."""
    total = "0"
    for coord, stride in zip(coords, _strides(shape)):
        term = coord if stride == 1 else fn.int("mul", coord, stride)
        total = term if total == "0" else fn.int("add", total, term)
    return total


def _in_range(fn: _Function, value: str, low: int, high: int) -> str:
    """low <= value < high, signed (window taps may be negative)."""
    return fn.both(fn(f"icmp sge {fn.ity} {value}, {low}"), fn(f"icmp slt {fn.ity} {value}, {high}"))


def _load_safe(fn: _Function, pointer: str, index: str, valid: str) -> str:
    """The element at `index` where `valid`, else 0.0, never reading outside (index 0 instead)."""
    safe = fn(f"select i1 {valid}, {fn.ity} {index}, {fn.ity} 0")
    return fn(f"select i1 {valid}, float {fn.load(pointer, safe)}, float 0.0")


# --- per output element ----------------------------------------------------------------------

def point_kernel(name: str, op, body, options: dict):
    """One thread per output element of the head op, then its elementwise epilogue."""
    head, epilogue = body[0], body[1:]
    yields = _yields(op)
    shape = _shape(head.results[0])
    if any(_shape(v) != shape for v in yields):
        raise CompileError(f"cuda: kernel {op.kernel_name}: its epilogue changes {head.onnx_type}'s shape {shape}")
    inputs = _external(body, op)
    count = math.prod(shape)
    fn = _Function(_index_type(count, *(math.prod(_shape(v)) for v in inputs)))
    params: dict = {}
    header = _signature(name, inputs, yields, params)
    checked = head.onnx_type == "Gather"
    if checked:
        header = header.replace(") {", ", ptr addrspace(1) %flag) {")
    fn.label("entry")
    block_size = options["elementwise_block"]
    linear = fn.int("add", fn.int("mul", fn.sreg("ctaid.x"), block_size), fn.sreg("tid.x"))
    fn.emit(f"br i1 {fn.below(linear, count)}, label %body, label %exit")
    fn.label("body")
    loads = _Broadcast(fn, shape, linear)
    values = {head.results[0]: HEADS[head.onnx_type](fn, head, loads.coords() if shape else [], params)}
    _evaluate(fn, epilogue, values, loads, params)
    for i, v in enumerate(yields):
        fn.store(values[v], f"%out{i}", linear)
    fn.emit("br label %exit")
    fn.label("exit")
    fn.emit("ret void")
    text = "\n".join([header, *fn.lines, "}", ""])
    launch = Launch(name, (max(1, math.ceil(count / block_size)), 1, 1), (block_size, 1, 1), inputs)
    if checked:
        extent = _shape(head.operands[0])[_axis(head)]
        launch.check = (f"Gather node '{head.node_name}': an index is outside [-{extent}, {extent})"
                        f" of axis {_axis(head)}")
    return text, launch


def _axis(op, default: int = 0) -> int:
    rank = len(_shape(op.operands[0]))
    axis = op.attr("axis", default)
    return axis + rank if axis < 0 else axis


def _transpose(fn, op, coords, params):
    in_shape = _shape(op.operands[0])
    perm = list(op.attr("perm", list(range(len(in_shape)))[::-1]))
    source = [None] * len(in_shape)
    for d, p in enumerate(perm):
        source[p] = coords[d]
    return fn.load(params[op.operands[0]], _linear(fn, source, in_shape))


def slice_params(op) -> list[tuple[int, int]] | None:
    """(start, step) per axis of a Slice with constant starts/ends/axes/steps, else None."""
    shape = _shape(op.operands[0])
    arrays = [constant(op.operands[i]) if _present(op, i) else None for i in range(1, 5)]
    if arrays[0] is None or arrays[1] is None or any(a is None for i, a in enumerate(arrays) if _present(op, i + 1)):
        return None
    starts, ends = [int(v) for v in arrays[0]], [int(v) for v in arrays[1]]
    axes = [int(v) for v in arrays[2]] if arrays[2] is not None else list(range(len(starts)))
    steps = [int(v) for v in arrays[3]] if arrays[3] is not None else [1] * len(starts)
    result = [(0, 1)] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis + len(shape) if axis < 0 else axis
        if step == 0:
            return None
        first, _, _ = slice(start, end, step).indices(shape[axis])
        result[axis] = (first, step)
    return result


def _slice(fn, op, coords, params):
    source = []
    for coord, (start, step) in zip(coords, slice_params(op)):
        scaled = coord if step == 1 else fn.int("mul", coord, step)  # a negative step wraps, then adds back
        source.append(scaled if start == 0 else fn.int("add", scaled, start))
    return fn.load(params[op.operands[0]], _linear(fn, source, _shape(op.operands[0])))


def _concat(fn, op, coords, params):
    """The input whose span of the axis holds the coordinate: each input is read at a clamped
    index and the one in range selected (no branch per input)."""
    axis = _axis(op)
    result, offset = "0.0", 0
    for value in op.operands:
        extent = _shape(value)[axis]
        if extent == 0:
            continue
        local = fn.int("sub", coords[axis], offset)
        inside = _in_range(fn, local, 0, extent)
        source = list(coords)
        source[axis] = local
        element = _load_safe(fn, params[value], _linear(fn, source, _shape(value)), inside)
        result = fn(f"select i1 {inside}, float {element}, float {result}")
        offset += extent
    return result


def _gather(fn, op, coords, params):
    data, indices = op.operands[0], op.operands[1]
    axis, shape, index_shape = _axis(op), _shape(op.operands[0]), _shape(op.operands[1])
    index_type = "i64" if op.operands[1].type.element_type.width.data == 64 else "i32"
    at = _linear(fn, coords[axis:axis + len(index_shape)], index_shape) if index_shape else "0"
    address = fn(f"getelementptr inbounds {index_type}, ptr addrspace(1) {params[indices]}, {fn.ity} {at}")
    raw = fn(f"load {index_type}, ptr addrspace(1) {address}, align 4")
    if index_type != "i64":
        raw = fn(f"sext {index_type} {raw} to i64")
    negative = fn(f"icmp slt i64 {raw}, 0")
    fixed = fn(f"select i1 {negative}, i64 {fn(f'add i64 {raw}, {shape[axis]}')}, i64 {raw}")
    bad = fn(f"icmp uge i64 {fixed}, {shape[axis]}")
    safe = fn(f"select i1 {bad}, i64 0, i64 {fixed}")
    if fn.ity != "i64":
        safe = fn(f"trunc i64 {safe} to {fn.ity}")
    tag = f"g{fn.count}"
    fn.emit(f"br i1 {bad}, label %{tag}_bad, label %{tag}_ok")
    fn.label(f"{tag}_bad")
    fn.emit("store i32 1, ptr addrspace(1) %flag, align 4")
    fn.emit(f"br label %{tag}_ok")
    fn.label(f"{tag}_ok")
    source = list(coords[:axis]) + [safe] + list(coords[axis + len(index_shape):])
    return fn.load(params[data], _linear(fn, source, shape))


def _pool(fn, op, coords, params):
    """A MaxPool/AveragePool window, its taps unrolled; padding never contributes (AveragePool
    divides by the taps inside the image, or inside the padded image with count_include_pad)."""
    shape = _shape(op.operands[0])
    (kh, kw), (sh, sw) = op.attr("kernel_shape"), op.attr("strides", [1, 1])
    dh, dw = op.attr("dilations", [1, 1])
    pads = list(op.attr("pads", [0, 0, 0, 0]))
    is_max, include = op.onnx_type == "MaxPool", op.attr("count_include_pad", 0)
    n, c, oh, ow = coords
    plane = fn.int("mul", fn.int("add", fn.int("mul", n, shape[1]), c), shape[2] * shape[3])
    top, left = fn.int("sub", fn.int("mul", oh, sh), pads[0]), fn.int("sub", fn.int("mul", ow, sw), pads[1])
    acc, taps = ("0xFFF0000000000000" if is_max else "0.0"), "0.0"
    for i in range(kh):
        ih = fn.int("add", top, i * dh)
        for j in range(kw):
            iw = fn.int("add", left, j * dw)
            valid = fn.both(_in_range(fn, ih, 0, shape[2]), _in_range(fn, iw, 0, shape[3]))
            index = fn.int("add", plane, fn.int("add", fn.int("mul", ih, shape[3]), iw))
            x = _load_safe(fn, params[op.operands[0]], index, valid)
            if is_max:
                acc = fn(f"select i1 {valid}, float {fn(f'call float @llvm.maximum.f32(float {acc}, float {x})')}, "
                         f"float {acc}")
            else:
                acc = fn(f"fadd float {acc}, {x}")
                counted = fn.both(_in_range(fn, ih, -pads[0], shape[2] + pads[2]),
                                  _in_range(fn, iw, -pads[1], shape[3] + pads[3])) if include else valid
                taps = fn(f"fadd float {taps}, {fn(f'uitofp i1 {counted} to float')}")
    return acc if is_max else fn(f"fdiv float {acc}, {taps}")


def _grouped_conv(fn, op, coords, params):
    """A direct convolution: the thread's output channel reads its group's Cin/group input
    channels (a loop) through the KH x KW window (unrolled), zero padding skipped."""
    x_shape, w_shape = _shape(op.operands[0]), _shape(op.operands[1])
    cout, cin_g, kh, kw = w_shape
    group = op.attr("group", 1)
    (sh, sw), (dh, dw) = op.attr("strides", [1, 1]), op.attr("dilations", [1, 1])
    pads = list(op.attr("pads", [0, 0, 0, 0]))
    n, co, oh, ow = coords
    first_channel = fn.int("mul", fn.int("udiv", co, cout // group), cin_g)
    top, left = fn.int("sub", fn.int("mul", oh, sh), pads[0]), fn.int("sub", fn.int("mul", ow, sw), pads[1])
    tag = f"c{fn.count}"
    fn.emit(f"br label %{tag}_pre")
    fn.label(f"{tag}_pre")
    fn.emit(f"br label %{tag}_loop")
    fn.label(f"{tag}_loop")
    ci = fn(f"phi {fn.ity} [0, %{tag}_pre], [%{tag}_ci_next, %{tag}_loop_end]")
    acc_in, line = _phi_placeholder(fn)
    channel = fn.int("add", first_channel, ci)
    plane = fn.int("mul", fn.int("add", fn.int("mul", n, x_shape[1]), channel), x_shape[2] * x_shape[3])
    w_base = fn.int("mul", fn.int("add", fn.int("mul", co, cin_g), ci), kh * kw)
    acc = acc_in
    for i in range(kh):
        ih = fn.int("add", top, i * dh)
        for j in range(kw):
            iw = fn.int("add", left, j * dw)
            valid = fn.both(_in_range(fn, ih, 0, x_shape[2]), _in_range(fn, iw, 0, x_shape[3]))
            index = fn.int("add", plane, fn.int("add", fn.int("mul", ih, x_shape[3]), iw))
            x = _load_safe(fn, params[op.operands[0]], index, valid)
            w = fn.load(params[op.operands[1]], fn.int("add", w_base, i * kw + j))
            acc = fn(f"call float @llvm.fma.f32(float {x}, float {w}, float {acc})")
    fn.emit(f"br label %{tag}_loop_end")
    fn.label(f"{tag}_loop_end")
    fn.lines[line] = f"  {acc_in} = phi float [0.0, %{tag}_pre], [{acc}, %{tag}_loop_end]"
    fn.lines.append(f"  %{tag}_ci_next = add {fn.ity} {ci}, 1")
    fn.emit(f"br i1 {fn.below(f'%{tag}_ci_next', cin_g)}, label %{tag}_loop, label %{tag}_done")
    fn.label(f"{tag}_done")
    result = acc
    if _present(op, 2):
        result = fn(f"fadd float {result}, {fn.load(params[op.operands[2]], co)}")
    return result


HEADS = {"Transpose": _transpose, "Slice": _slice, "Concat": _concat, "Gather": _gather, "MaxPool": _pool,
         "AveragePool": _pool, "Conv": _grouped_conv}


def split_kernel(name: str, op, body, options: dict):
    """Split: one thread per element of the largest output; each output guarded by its own size."""
    (head,) = body
    yields = _yields(op)
    shape, axis = _shape(head.operands[0]), _axis(head)
    inputs = _external(body, op)
    counts = [math.prod(_shape(v)) for v in head.results]
    fn = _Function(_index_type(math.prod(shape)))
    params: dict = {}
    header = _signature(name, inputs, yields, params)
    fn.label("entry")
    block_size = options["elementwise_block"]
    linear = fn.int("add", fn.int("mul", fn.sreg("ctaid.x"), block_size), fn.sreg("tid.x"))
    offset = 0
    for i, result in enumerate(head.results):
        out = _shape(result)
        fn.emit(f"br i1 {fn.below(linear, counts[i])}, label %part{i}, label %part{i}_done")
        fn.label(f"part{i}")
        coords = _Broadcast(fn, out, linear).coords()
        source = list(coords)
        source[axis] = fn.int("add", coords[axis], offset) if offset else coords[axis]
        if result in yields:  # an unused output is not stored
            value = fn.load(params[head.operands[0]], _linear(fn, source, shape))
            fn.store(value, f"%out{yields.index(result)}", linear)
        fn.emit(f"br label %part{i}_done")
        fn.label(f"part{i}_done")
        offset += out[axis]
    fn.emit("ret void")
    text = "\n".join([header, *fn.lines, "}", ""])
    return text, Launch(name, (max(1, math.ceil(max(counts) / block_size)), 1, 1), (block_size, 1, 1), inputs)


# --- per row (one warp each) -----------------------------------------------------------------

def row_geometry(op) -> tuple[int, int]:
    """(rows, row length) of a last-axis op, or of a global pool's N*C planes of H*W."""
    shape = _shape(op.operands[0])
    if op.onnx_type.startswith("Global"):
        return shape[0] * shape[1], math.prod(shape[2:])
    return math.prod(shape[:-1]), shape[-1] if shape else 1


def _warp_reduce(fn: _Function, value: str, combine: str) -> str:
    """Butterfly over the warp's 32 lanes: every lane ends with the combined value."""
    for offset in (16, 8, 4, 2, 1):
        other = fn(f"call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float {value}, i32 {offset}, i32 31)")
        value = fn(combine.format(a=value, b=other))
    return value


ADD = "fadd float {a}, {b}"
MAX = "call float @llvm.maximum.f32(float {a}, float {b})"


class _RowLoop:
    """for j = lane; j < n; j += 32: body(j, accumulator) -> accumulator, as an LLVM loop."""

    def __init__(self, fn: _Function, lane: str, n: int):
        self.fn, self.lane, self.n = fn, lane, n

    def run(self, init: str, body) -> str:
        fn, tag = self.fn, f"r{self.fn.count}"
        fn.emit(f"br label %{tag}_pre")
        fn.label(f"{tag}_pre")
        fn.emit(f"br i1 {fn.below(self.lane, self.n)}, label %{tag}_loop, label %{tag}_done")
        fn.label(f"{tag}_loop")
        j = fn(f"phi {fn.ity} [{self.lane}, %{tag}_pre], [%{tag}_next, %{tag}_loop_end]")
        acc, line = _phi_placeholder(fn)
        new = body(j, acc)
        fn.emit(f"br label %{tag}_loop_end")
        fn.label(f"{tag}_loop_end")
        fn.lines[line] = f"  {acc} = phi float [{init}, %{tag}_pre], [{new}, %{tag}_loop_end]"
        fn.lines.append(f"  %{tag}_next = add {fn.ity} {j}, 32")
        fn.emit(f"br i1 {fn.below(f'%{tag}_next', self.n)}, label %{tag}_loop, label %{tag}_done")
        fn.label(f"{tag}_done")
        return fn(f"phi float [{init}, %{tag}_pre], [{new}, %{tag}_loop_end]")


def _phi_placeholder(fn: _Function) -> tuple[str, int]:
    """A phi's name and line, filled in once the loop body has made the value it carries."""
    name = fn("phi")
    return name, len(fn.lines) - 1


def row_kernel(name: str, op, body, options: dict):
    if len(body) != 1:
        raise CompileError(f"cuda: kernel {op.kernel_name}: a {body[0].onnx_type} kernel runs that op alone")
    (head,) = body
    kind = head.onnx_type
    rows, n = row_geometry(head)
    inputs = _external(body, op)
    yields = _yields(op)
    fn = _Function(_index_type(rows * n, *(math.prod(_shape(v)) for v in inputs)))
    params: dict = {}
    header = _signature(name, inputs, yields, params)
    x, out = params[head.operands[0]], "%out0"
    fn.label("entry")
    tid = fn.sreg("tid.x")
    lane = fn.int("urem", tid, 32)
    row = fn.int("add", fn.int("mul", fn.sreg("ctaid.x"), ROWS_PER_BLOCK), fn.int("udiv", tid, 32))
    # A whole warp shares its row, so a warp leaves together and every shuffle has 32 lanes.
    fn.emit(f"br i1 {fn.below(row, rows)}, label %body, label %exit")
    fn.label("body")
    base = fn.int("mul", row, n)
    loop = _RowLoop(fn, lane, n)

    def at(j):
        return fn.int("add", base, j)

    def first_lane_stores(value: str) -> None:
        fn.emit(f"br i1 {fn(f'icmp eq {fn.ity} {lane}, 0')}, label %write, label %exit")
        fn.label("write")
        fn.store(value, out, row)
        fn.emit("br label %exit")

    if kind in ("ReduceMax", "GlobalMaxPool"):
        first_lane_stores(_warp_reduce(fn, loop.run("0xFFF0000000000000", lambda j, a: fn(MAX.format(
            a=a, b=fn.load(x, at(j))))), MAX))
    elif kind in ("ReduceSum", "ReduceMean", "GlobalAveragePool"):
        total = _warp_reduce(fn, loop.run("0.0", lambda j, a: fn(f"fadd float {a}, {fn.load(x, at(j))}")), ADD)
        first_lane_stores(total if kind == "ReduceSum" else fn(f"fdiv float {total}, {_float(n)}"))
    elif kind == "Softmax":
        peak = _warp_reduce(fn, loop.run("0xFFF0000000000000", lambda j, a: fn(MAX.format(
            a=a, b=fn.load(x, at(j))))), MAX)

        def exponentials(j, a):
            from dlc.targets.cuda.codegen import _exp

            e = _exp(fn, fn(f"fsub float {fn.load(x, at(j))}, {peak}"))
            fn.store(e, out, at(j))  # this lane reads it back below
            return fn(f"fadd float {a}, {e}")

        total = _warp_reduce(fn, loop.run("0.0", exponentials), ADD)

        def normalise(j, a):
            fn.store(fn(f"fdiv float {fn(f'load float, ptr addrspace(1) {_gep(fn, out, at(j))}, align 4')}, "
                        f"{total}"), out, at(j))
            return a

        loop.run("0.0", normalise)
        fn.emit("br label %exit")
    elif kind == "LayerNormalization":
        total = _warp_reduce(fn, loop.run("0.0", lambda j, a: fn(f"fadd float {a}, {fn.load(x, at(j))}")), ADD)
        mean = fn(f"fdiv float {total}, {_float(n)}")

        def squares(j, a):
            d = fn(f"fsub float {fn.load(x, at(j))}, {mean}")
            return fn(f"call float @llvm.fma.f32(float {d}, float {d}, float {a})")

        variance = fn(f"fdiv float {_warp_reduce(fn, loop.run('0.0', squares), ADD)}, {_float(n)}")
        eps = _float(head.attr("epsilon", 1e-5))
        shifted = fn(f"fadd float {variance}, {eps}")
        rstd = fn(f"fdiv float 1.0, {fn(f'call float @llvm.sqrt.f32(float {shifted})')}")
        scale = head.operands[1]
        bias = head.operands[2] if _present(head, 2) else None

        def normalise(j, a):
            y = fn(f"fmul float {fn(f'fsub float {fn.load(x, at(j))}, {mean}')}, {rstd}")
            y = fn(f"fmul float {y}, {fn.load(params[scale], j if math.prod(_shape(scale)) == n else '0')}")
            if bias is not None:
                y = fn(f"fadd float {y}, {fn.load(params[bias], j if math.prod(_shape(bias)) == n else '0')}")
            fn.store(y, out, at(j))
            return a

        loop.run("0.0", normalise)
        fn.emit("br label %exit")
    else:
        raise CompileError(f"cuda: no row kernel for {kind} (node '{head.node_name}')")
    fn.label("exit")
    fn.emit("ret void")
    text = "\n".join([header, *fn.lines, "}", ""])
    return text, Launch(name, (max(1, math.ceil(rows / ROWS_PER_BLOCK)), 1, 1), (32 * ROWS_PER_BLOCK, 1, 1), inputs)


def _gep(fn: _Function, pointer: str, index: str) -> str:
    return fn(f"getelementptr inbounds float, ptr addrspace(1) {pointer}, {fn.ity} {index}")


# --- the module -------------------------------------------------------------------------------

def emit_module(launch_ops, options: dict) -> tuple[str, list[Launch]]:
    """LLVM IR text of one kernel per `kernel.launch` (all placed on cuda), and how to launch each."""
    functions, launches, globals_ = [], [], []
    for op in launch_ops:
        body = [o for o in op.body.block.ops if o.name != "kernel.yield"]
        name = _symbol(op.kernel_name)
        head = body[0].onnx_type if body else ""
        if head in GEMM_OPS and not is_point_head(body[0]):
            text, launch, shared = _gemm_kernel(name, op, body, options)
            globals_ += shared
        elif head in ROW_OPS:
            text, launch = row_kernel(name, op, body, options)
        elif head == "Split":
            text, launch = split_kernel(name, op, body, options)
        elif is_point_head(body[0]):
            text, launch = point_kernel(name, op, body, options)
        else:
            text, launch = _elementwise_kernel(name, op, body, options)
        functions.append(text)
        launch.nodes = [n.data for n in op.nodes.data] if op.nodes else []
        launches.append(launch)
    header = [f'target triple = "{TRIPLE}"', "", *_DECLARATIONS, *globals_, ""]
    return "\n".join(header + functions) + "\n", launches
