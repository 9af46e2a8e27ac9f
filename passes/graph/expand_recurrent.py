"""`expand-recurrent`: LSTM, GRU and RNN as the ONNX ops they are made of, one time step after another.

Mirrors https://onnx.ai/onnx/operators/onnx__LSTM.html, onnx__GRU.html and onnx__RNN.html
(opset 14+): every attribute (direction, activations with activation_alpha/beta, clip,
layout, hidden_size, LSTM's input_forget as f = 1 - i like onnxruntime, GRU's
linear_before_reset), every optional input (B, sequence_lens, initial_h/c, peepholes P)
and output (Y, Y_h, Y_c). The input
projection of all time steps and both directions is one MatMul (one GEMM with the biases
after fuse-matmul-add); each step is a MatMul by R and the gate math as elementwise ops
that fuse-kernels merges. Weights that are constants fold at compile time (the
Transposes and Slices below go away in fold-constants, which runs after this pass).
A batch row whose sequence_lens ends before step t keeps its state and writes zeros to
Y, as onnxruntime does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    NoneType,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    f32,
    i1,
    i64,
)
from xdsl.ir import Block, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern, op_type_rewrite_pattern
from xdsl.rewriter import InsertPoint

from dialects.diagnostics import UnsupportedError
from dialects.loop import bodies_of
from dialects.onnx import OPS, NoneOp, OnnxOp, WeightOp
from dialects.types import element_type_for as element_for
from dialects.types import numpy_dtype
from dialects.weights import weights_of
from passes.graph.utils.constants import add_weight, constant_of, is_absent

# Sequences of at most this many steps are unrolled (no call and state copies per step:
# 0-35% faster at 2-8 steps, at most 0.7 CPU-s more to compile); longer ones run one step's
# body in a native loop, as fast and compiled in constant time (benchmarks/README.md, "Native loops").
UNROLL_MAX_STEPS = 8
_ONNX_INT = {np.dtype(np.int32): 6, np.dtype(np.int64): 7}

# Gates per cell, the activations each direction takes and their defaults (the spec's).
_CELLS = {"LSTM": (4, ("Sigmoid", "Tanh", "Tanh")), "GRU": (3, ("Sigmoid", "Tanh")), "RNN": (1, ("Tanh",))}

# Activations that are ONNX ops, with their alpha/beta attribute defaults (None: takes none).
_ACTIVATIONS = {"relu": ("Relu", None, None), "tanh": ("Tanh", None, None),
                "sigmoid": ("Sigmoid", None, None), "softsign": ("Softsign", None, None),
                "softplus": ("Softplus", None, None), "leakyrelu": ("LeakyRelu", 0.01, None),
                "thresholdedrelu": ("ThresholdedRelu", 1.0, None), "elu": ("Elu", 1.0, None),
                "hardsigmoid": ("HardSigmoid", 0.2, 0.5),
                # Not ONNX ops (any more): built from Mul, Add and Tanh below.
                "affine": (None, 1.0, 0.0), "scaledtanh": (None, 1.0, 1.0)}


class _Graph:
    """Builds ONNX ops before `anchor`, named after it (errors then name the recurrent node)."""

    def __init__(self, rewriter: PatternRewriter, anchor: OnnxOp):
        self.rewriter, self.anchor = rewriter, anchor
        self.element = anchor.operands[0].type.element_type
        self.dtype = numpy_dtype(self.element)
        self.count = 0

    def op(self, onnx_type: str, operands: list[SSAValue], shapes: list[tuple[int, ...]],
           element=None, **attributes) -> list[SSAValue]:
        # A name of its own per op ("lstm/Mul12"): a partition names tensors by node.
        self.count += 1
        attrs = {"onnx_node_name": StringAttr(f"{self.anchor.node_name}/{onnx_type}{self.count}")}
        for name, value in attributes.items():
            attrs[name] = (FloatAttr(value, f32) if isinstance(value, float) else
                           DenseArrayBase.from_list(i64, value) if isinstance(value, list) else IntegerAttr(value, i64))
        types = [TensorType(element or self.element, shape) for shape in shapes]
        new = OPS[onnx_type].create(operands=operands, result_types=types, attributes=attrs)
        self.rewriter.insert(new, InsertPoint.before(self.anchor))
        return list(new.results)

    def one(self, onnx_type: str, operands: list[SSAValue], shape, element=None, **attributes) -> SSAValue:
        return self.op(onnx_type, operands, [tuple(shape)], element, **attributes)[0]

    def const(self, array, dtype=None) -> SSAValue:
        array = np.asarray(array, dtype or self.dtype)
        return add_weight(self.rewriter, self.anchor, f"{self.anchor.node_name}.const", array)

    def ints(self, values) -> SSAValue:
        return self.const(list(values), np.int64)

    def slice(self, x: SSAValue, starts, ends, axes) -> SSAValue:
        shape = list(x.type.get_shape())
        for start, end, axis in zip(starts, ends, axes):
            shape[axis] = end - start
        return self.one("Slice", [x, self.ints(starts), self.ints(ends), self.ints(axes)], shape,
                        x.type.element_type)

    def reshape(self, x: SSAValue, shape) -> SSAValue:
        return self.one("Reshape", [x, self.ints(shape)], shape, x.type.element_type)

    def transpose(self, x: SSAValue, perm) -> SSAValue:
        shape = x.type.get_shape()
        return self.one("Transpose", [x], [shape[p] for p in perm], x.type.element_type, perm=list(perm))

    def binary(self, onnx_type: str, x: SSAValue, y: SSAValue) -> SSAValue:
        shape = np.broadcast_shapes(tuple(x.type.get_shape()), tuple(y.type.get_shape()))
        return self.one(onnx_type, [x, y], shape)

    def matmul(self, x: SSAValue, y: SSAValue) -> SSAValue:
        return self.one("MatMul", [x, y], (x.type.get_shape()[0], y.type.get_shape()[1]))

    def split(self, x: SSAValue, sizes) -> list[SSAValue]:
        rows = x.type.get_shape()[0]
        return self.op("Split", [x, self.ints(sizes)], [(rows, s) for s in sizes], axis=1)


class _Cell:
    """One recurrent node's attributes and weights, read and checked once."""

    def __init__(self, op: OnnxOp, g: _Graph):
        self.op, self.g = op, g
        self.kind = op.onnx_type
        self.gates, defaults = _CELLS[self.kind]
        direction = op.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            raise self.error(f"direction={direction!r}", "'forward', 'reverse' or 'bidirectional'")
        self.directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        self.layout = op.attr("layout", 0)
        if self.layout not in (0, 1):
            raise self.error(f"layout={self.layout}", "0 or 1")
        x_shape, r_shape = op.operands[0].type.get_shape(), op.operands[2].type.get_shape()
        self.steps, self.batch = (x_shape[1], x_shape[0]) if self.layout else (x_shape[0], x_shape[1])
        self.hidden = r_shape[-1]
        self.clip = op.attr("clip")
        self.input_forget = self.kind == "LSTM" and bool(op.attr("input_forget", 0))
        self.activations = self._activations(defaults)

    def error(self, got: str, expected: str) -> UnsupportedError:
        return UnsupportedError(f"{self.op.describe()}: {got} is not an ONNX value (expected {expected})",
                                "fix the attribute in the exporter or the model")

    def _activations(self, defaults) -> list[list[tuple[str, float | None, float | None]]]:
        """Per direction, (name, alpha, beta) of each activation; alpha/beta consumed in order."""
        names = self.op.attr("activations") or list(defaults) * len(self.directions)
        if len(names) == len(defaults) and len(self.directions) == 2:
            names = names * 2  # one list given for both directions
        if len(names) != len(defaults) * len(self.directions):
            raise self.error(f"{len(names)} activations", f"{len(defaults) * len(self.directions)}: "
                             f"{len(defaults)} per direction")
        alphas, betas = list(self.op.attr("activation_alpha") or []), list(self.op.attr("activation_beta") or [])
        chosen = []
        for name in names:
            if name.lower() not in _ACTIVATIONS:
                raise self.error(f"activation {name!r}", ", ".join(sorted(_ACTIVATIONS)))
            _, alpha, beta = _ACTIVATIONS[name.lower()]
            if alpha is not None and alphas:
                alpha = alphas.pop(0)
            if beta is not None and betas:
                beta = betas.pop(0)
            chosen.append((name.lower(), alpha, beta))
        per = len(defaults)
        return [chosen[d * per:(d + 1) * per] for d in range(len(self.directions))]

    def input(self, index: int) -> SSAValue | None:
        return None if is_absent(self.op, index) else self.op.operands[index]

    def result(self, index: int) -> SSAValue | None:
        if index >= len(self.op.results) or isinstance(self.op.results[index].type, NoneType):
            return None
        return self.op.results[index]

    def activate(self, x: SSAValue, direction: int, which: int, clip: bool = True) -> SSAValue:
        g = self.g
        if clip and self.clip is not None:
            x = g.one("Clip", [x, g.const(-self.clip), g.const(self.clip)], x.type.get_shape())
        name, alpha, beta = self.activations[direction][which]
        onnx_type = _ACTIVATIONS[name][0]
        if name == "affine":
            return g.binary("Add", g.binary("Mul", x, g.const(alpha)), g.const(beta))
        if name == "scaledtanh":
            tanh = g.one("Tanh", [g.binary("Mul", x, g.const(beta))], x.type.get_shape())
            return g.binary("Mul", tanh, g.const(alpha))
        attributes = {key: float(value) for key, value in (("alpha", alpha), ("beta", beta)) if value is not None}
        return g.one(onnx_type, [x], x.type.get_shape(), **attributes)


def _biases(cell: _Cell, width: int) -> tuple[SSAValue | None, list[SSAValue | None]]:
    """The bias of the input projection, [D * width] (Wb + Rb), and GRU's Rbh per direction where
    linear_before_reset keeps it inside r * (H Rh^T + Rbh)."""
    g, b = cell.g, cell.input(3)
    directions = len(cell.directions)
    if b is None:
        return None, [None] * directions
    wb, rb = g.slice(b, [0], [width], [1]), g.slice(b, [width], [2 * width], [1])
    inside = [None] * directions
    if cell.kind == "GRU" and cell.op.attr("linear_before_reset", 0):
        keep = np.ones(width)
        keep[2 * cell.hidden:] = 0
        rb = g.binary("Mul", rb, g.const(keep))
        inside = [g.slice(b, [d, width + 2 * cell.hidden], [d + 1, 2 * width], [0, 1])
                  for d in range(directions)]
    return g.reshape(g.binary("Add", wb, rb), [directions * width]), inside


def _initial(cell: _Cell, index: int, d: int) -> SSAValue:
    """Direction d's initial state [B, H] from initial_h/initial_c, zeros when absent."""
    g, value = cell.g, cell.input(index)
    if value is None:
        return g.const(np.zeros((cell.batch, cell.hidden)))
    axis = 1 if cell.layout else 0
    return g.reshape(g.slice(value, [d], [d + 1], [axis]), [cell.batch, cell.hidden])


def _masks(cell: _Cell) -> list[SSAValue] | None:
    """Per time step, [B, 1] true where the row's sequence is still running; None when all run to the end."""
    g, lens = cell.g, cell.input(4)
    if lens is None:
        return None
    known = constant_of(lens)
    if known is not None and (known >= cell.steps).all():
        return None
    element = lens.type.element_type
    masks = []
    for t in range(cell.steps):
        step = g.const([t], numpy_dtype(element))
        running = g.one("Less", [step, lens], [cell.batch], element=i1)
        masks.append(g.reshape(running, [cell.batch, 1]))
    return masks


def _lstm_step(cell: _Cell, d: int, x: SSAValue, h: SSAValue, c: SSAValue, r: SSAValue,
               peepholes: list[SSAValue] | None) -> tuple[SSAValue, SSAValue]:
    g, hidden = cell.g, cell.hidden
    i, o, f, candidate = g.split(g.binary("Add", x, g.matmul(h, r)), [hidden] * 4)
    if peepholes:
        i = g.binary("Add", i, g.binary("Mul", peepholes[0], c))
        f = g.binary("Add", f, g.binary("Mul", peepholes[2], c))
    i, f, candidate = cell.activate(i, d, 0), cell.activate(f, d, 0), cell.activate(candidate, d, 1)
    if cell.input_forget:  # coupled gates, as onnxruntime couples them: f = 1 - i
        f = g.binary("Sub", g.const(1.0), i)
    c = g.binary("Add", g.binary("Mul", f, c), g.binary("Mul", i, candidate))
    if peepholes:
        o = g.binary("Add", o, g.binary("Mul", peepholes[1], c))
    o = cell.activate(o, d, 0)
    return g.binary("Mul", o, cell.activate(c, d, 2, clip=False)), c


def _gru_step(cell: _Cell, d: int, x: SSAValue, h: SSAValue, r: SSAValue,
              inside_bias: SSAValue | None) -> SSAValue:
    g, hidden = cell.g, cell.hidden
    x_zr, x_h = g.split(x, [2 * hidden, hidden])
    if cell.op.attr("linear_before_reset", 0):
        rec_zr, rec_h = g.split(g.matmul(h, r), [2 * hidden, hidden])
        if inside_bias is not None:
            rec_h = g.binary("Add", rec_h, inside_bias)
        z, reset = g.split(g.binary("Add", x_zr, rec_zr), [hidden, hidden])
        z, reset = cell.activate(z, d, 0), cell.activate(reset, d, 0)
        candidate = g.binary("Add", x_h, g.binary("Mul", reset, rec_h))
    else:
        r_zr, r_h = g.slice(r, [0], [2 * hidden], [1]), g.slice(r, [2 * hidden], [3 * hidden], [1])
        z, reset = g.split(g.binary("Add", x_zr, g.matmul(h, r_zr)), [hidden, hidden])
        z, reset = cell.activate(z, d, 0), cell.activate(reset, d, 0)
        candidate = g.binary("Add", x_h, g.matmul(g.binary("Mul", reset, h), r_h))
    candidate = cell.activate(candidate, d, 1)
    keep_new = g.binary("Sub", g.const(1.0), z)
    return g.binary("Add", g.binary("Mul", keep_new, candidate), g.binary("Mul", z, h))


def _stack(cell: _Cell, states: list[SSAValue], shape: list[int], perm: list[int]) -> SSAValue:
    """Concatenate [B, H] states along a new leading axis, reshape to `shape`, transpose for layout 1."""
    g = cell.g
    rows = [g.reshape(s, [1, cell.batch, cell.hidden]) for s in states]
    joined = rows[0] if len(rows) == 1 else g.one("Concat", rows, [len(rows), cell.batch, cell.hidden], axis=0)
    if list(joined.type.get_shape()) != list(shape):
        joined = g.reshape(joined, shape)
    return g.transpose(joined, perm) if cell.layout else joined


class _BodyGraph(_Graph):
    """Builds the ops of a time step's body function: appended to `block`, constants as weights
    of the shared store, outer values (`outer`) as extra arguments of the body."""

    def __init__(self, outer: _Graph, block: Block):
        self.rewriter, self.anchor, self.element, self.dtype = outer.rewriter, outer.anchor, outer.element, outer.dtype
        self.count, self.block, self.outer = 1000, block, outer
        self.store = weights_of(outer.anchor.get_toplevel_object())
        self.captured: dict[SSAValue, SSAValue] = {}

    def op(self, onnx_type, operands, shapes, element=None, **attributes):
        self.count += 1
        attrs = {"onnx_node_name": StringAttr(f"{self.anchor.node_name}/step/{onnx_type}{self.count}")}
        for name, value in attributes.items():
            attrs[name] = (FloatAttr(value, f32) if isinstance(value, float) else
                           DenseArrayBase.from_list(i64, value) if isinstance(value, list) else IntegerAttr(value, i64))
        types = [TensorType(element or self.element, shape) for shape in shapes]
        new = OPS[onnx_type].create(operands=operands, result_types=types, attributes=attrs)
        self.block.add_op(new)
        return list(new.results)

    def const(self, array, dtype=None) -> SSAValue:
        array = np.asarray(array, dtype or self.dtype)
        weight = WeightOp(self.store.add(f"{self.anchor.node_name}.step", array),
                          TensorType(element_for(array.dtype), array.shape))
        self.block.add_op(weight)
        return weight.result

    def value(self, outer: SSAValue | None, array: np.ndarray | None = None) -> SSAValue | None:
        """`outer` (a value of the enclosing graph) inside the body: `array` as a constant when
        known (so the body's GEMM packs it), else an argument of the body."""
        if outer is None:
            return None
        if array is not None:
            return self.const(array, array.dtype)
        if outer not in self.captured:
            self.captured[outer] = self.block.insert_arg(outer.type, len(self.block.args))
        return self.captured[outer]


def _native_direction(cell: _Cell, d: int, projection: SSAValue, inside_bias: SSAValue | None):
    """Direction d's time steps as a native loop (dialects/loop.py): one `onnx.Loop` over a
    body module holding one time step, whose scan input is the step's slice of the input
    projection and whose scan output is Y's. Returns (Y [steps, B, H], final h, final c)."""
    g, op = cell.g, cell.op
    steps, batch, hidden = cell.steps, cell.batch, cell.hidden
    width = cell.gates * hidden
    directions = len(cell.directions)
    reverse = cell.directions[d] == "reverse"
    x_d = projection if directions == 1 else g.slice(projection, [d * width], [(d + 1) * width], [2])
    h0 = _initial(cell, 5, d)
    c0 = _initial(cell, 6, d) if cell.kind == "LSTM" else None
    state = TensorType(g.element, [batch, hidden])
    lstm = cell.kind == "LSTM"
    block = Block(arg_types=[TensorType(i64, []), TensorType(i1, []), state, *([state] if lstm else []),
                             TensorType(g.element, [batch, width])])
    body = _BodyGraph(g, block)
    iteration, cond, h, c = block.args[0], block.args[1], block.args[2], block.args[3] if lstm else None
    xt = block.args[-1]
    recurrent = constant_of(op.operands[2])
    r_array = None if recurrent is None else np.ascontiguousarray(recurrent[d].reshape(width, hidden).T)
    if r_array is None:  # a run-time R: its transpose computed outside, once
        r = body.value(g.transpose(g.reshape(g.slice(op.operands[2], [d], [d + 1], [0]), [width, hidden]), [1, 0]))
    else:
        r = body.const(r_array)
    peepholes = None
    if lstm and cell.input(7) is not None:
        known = constant_of(cell.input(7))
        peepholes = [body.const(known[d:d + 1, k * hidden:(k + 1) * hidden]) if known is not None else
                     body.value(g.slice(cell.input(7), [d, k * hidden], [d + 1, (k + 1) * hidden], [0, 1]))
                     for k in range(3)]
    bias = None
    if inside_bias is not None:
        bias = body.value(inside_bias)
    cell.g = body
    try:
        if lstm:
            h_new, c_new = _lstm_step(cell, d, xt, h, c, r, peepholes)
        elif cell.kind == "GRU":
            h_new, c_new = _gru_step(cell, d, xt, h, r, bias), None
        else:
            h_new, c_new = cell.activate(body.binary("Add", xt, body.matmul(h, r)), d, 0), None
        y = h_new
        lens = cell.input(4)
        known = constant_of(lens) if lens is not None else None
        if lens is not None and not (known is not None and (known >= steps).all()):
            # Rows whose sequence ended keep their state and write zeros (onnxruntime's rule).
            element = lens.type.element_type
            t = body.one("Cast", [iteration], [], element=element, to=_ONNX_INT[numpy_dtype(element)])
            if reverse:
                t = body.one("Sub", [body.const(steps - 1, numpy_dtype(element)), t], [], element=element)
            running = body.one("Less", [t, body.value(lens, known)], [batch], element=i1)
            running = body.reshape(running, [batch, 1])
            y = body.one("Where", [running, h_new, body.const(0.0)], [batch, hidden])
            h_new = body.one("Where", [running, h_new, h], [batch, hidden])
            if c_new is not None:
                c_new = body.one("Where", [running, c_new, c], [batch, hidden])
    finally:
        cell.g = g
    results = [cond, h_new, *([c_new] if lstm else []), y]
    block.add_op(func.ReturnOp(*results))
    main = func.FuncOp("main", ([a.type for a in block.args], [v.type for v in results]), Region(block))
    module = op.get_toplevel_object()
    taken = {b.sym_name.data for b in (*module.ops, *bodies_of(module))
             if isinstance(b, ModuleOp) and b.sym_name is not None}
    name = next(f"{cell.kind.lower()}_{k}" for k in range(len(taken) + 1) if f"{cell.kind.lower()}_{k}" not in taken)
    nested = ModuleOp([main], sym_name=StringAttr(name))
    module.body.block.insert_op_before(nested, module.body.block.first_op)

    none = NoneOp()
    g.rewriter.insert(none, InsertPoint.before(op))
    outer = list(body.captured)
    operands = [g.const(np.array(steps, np.int64), np.int64), none.result, h0, *([c0] if lstm else []), x_d, *outer]
    x_steps = x_d.type.get_shape()
    assert list(x_steps) == [steps, batch, width]
    reversed_ = int(reverse)
    loop = OPS["Loop"].create(
        operands=operands,
        result_types=[state, *([state] if lstm else []), TensorType(g.element, [steps, batch, hidden])],
        attributes={"onnx_node_name": StringAttr(f"{op.node_name}/steps{d}"), "body": SymbolRefAttr(name),
                    "dlc.num_outer": IntegerAttr(len(outer), i64), "dlc.num_scan_inputs": IntegerAttr(1, i64),
                    "dlc.reverse": DenseArrayBase.from_list(i64, [reversed_, reversed_])})
    g.rewriter.insert(loop, InsertPoint.before(op))
    results = list(loop.results)
    return results[-1], results[0], results[1] if lstm else None


def expand(op: OnnxOp, rewriter: PatternRewriter) -> None:
    """Replace the LSTM/GRU/RNN `op` by its time steps."""
    g = _Graph(rewriter, op)
    cell = _Cell(op, g)
    steps, batch, hidden = cell.steps, cell.batch, cell.hidden
    directions, width = len(cell.directions), cell.gates * cell.hidden
    x = g.transpose(op.operands[0], [1, 0, 2]) if cell.layout else op.operands[0]
    features = x.type.get_shape()[2]
    weights = g.transpose(g.reshape(op.operands[1], [directions * width, features]), [1, 0])
    projection = g.matmul(g.reshape(x, [steps * batch, features]), weights)
    bias, inside_bias = _biases(cell, width)
    if bias is not None:
        projection = g.binary("Add", projection, bias)
    projection = g.reshape(projection, [steps, batch, directions * width])
    # Native loops (dialects/loop.py) are the cpu target's; other targets get the steps unrolled.
    target = op.get_toplevel_object().attributes.get("dlc.target")
    native = steps > UNROLL_MAX_STEPS and (not isinstance(target, StringAttr) or target.data == "cpu")
    masks = None if native else _masks(cell)  # a native step computes its own mask
    zeros = g.const(0.0)
    ys: list[list[SSAValue]] = []
    finals_h, finals_c = [], []
    for d, direction in enumerate(cell.directions):
        if native:
            ys.append(None)
            y, h, c = _native_direction(cell, d, projection, inside_bias[d] if inside_bias else None)
            finals_h.append(h)
            finals_c.append(c)
            ys[d] = y
            continue
        r = g.slice(op.operands[2], [d], [d + 1], [0])
        r = g.transpose(g.reshape(r, [width, hidden]), [1, 0])
        peepholes = None
        if cell.kind == "LSTM" and cell.input(7) is not None:
            peepholes = [g.slice(cell.input(7), [d, k * hidden], [d + 1, (k + 1) * hidden], [0, 1])
                         for k in range(3)]
        h = _initial(cell, 5, d)
        c = _initial(cell, 6, d) if cell.kind == "LSTM" else None
        y = [None] * steps
        for t in range(steps) if direction == "forward" else reversed(range(steps)):
            xt = g.reshape(g.slice(projection, [t, d * width], [t + 1, (d + 1) * width], [0, 2]), [batch, width])
            if cell.kind == "LSTM":
                h_new, c_new = _lstm_step(cell, d, xt, h, c, r, peepholes)
            elif cell.kind == "GRU":
                h_new, c_new = _gru_step(cell, d, xt, h, r, inside_bias[d]), None
            else:
                h_new, c_new = cell.activate(g.binary("Add", xt, g.matmul(h, r)), d, 0), None
            if masks is None:
                y[t], h, c = h_new, h_new, c_new
            else:
                y[t] = g.one("Where", [masks[t], h_new, zeros], [batch, hidden])
                h = g.one("Where", [masks[t], h_new, h], [batch, hidden])
                if c_new is not None:
                    c = g.one("Where", [masks[t], c_new, c], [batch, hidden])
        ys.append(y)
        finals_h.append(h)
        finals_c.append(c)
    replacements = {}
    if cell.result(0) is not None and native:  # ys[d]: direction d's [steps, B, H]
        rows = [g.reshape(y, [steps, 1, batch, hidden]) for y in ys]
        joined = rows[0] if directions == 1 else g.one("Concat", rows, [steps, directions, batch, hidden], axis=1)
        replacements[0] = g.transpose(joined, [2, 0, 1, 3]) if cell.layout else joined
    elif cell.result(0) is not None:
        order = [ys[d][t] for t in range(steps) for d in range(directions)]
        replacements[0] = _stack(cell, order, [steps, directions, batch, hidden], [2, 0, 1, 3])
    if cell.result(1) is not None:
        replacements[1] = _stack(cell, finals_h, [directions, batch, hidden], [1, 0, 2])
    if cell.result(2) is not None and cell.kind == "LSTM":
        replacements[2] = _stack(cell, finals_c, [directions, batch, hidden], [1, 0, 2])
    for index, value in replacements.items():
        rewriter.replace_all_uses_with(op.results[index], value)
    rewriter.erase(op, safe_erase=False)


class ExpandRecurrentOp(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: OnnxOp, rewriter: PatternRewriter) -> None:
        if op.onnx_type in _CELLS:
            expand(op, rewriter)


@dataclass(frozen=True)
class ExpandRecurrentPass(ModulePass):
    """Expand LSTM, GRU and RNN into one input-projection MatMul and per-step MatMuls and gate math."""

    name = "expand-recurrent"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(ExpandRecurrentOp(), apply_recursively=False).rewrite_module(op)
