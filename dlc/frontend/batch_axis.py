"""Proof that a model treats the samples of its batch axis independently (issue 18).

When every input's leading dimension is the same symbolic name and each node provably computes
sample i of its outputs from sample i of its inputs alone (elementwise ops, Conv, pooling,
normalisations over other axes, MatMul/Gemm on the rows, Reshape/Transpose that keep the batch
axis leading, ...), the model at batch N is N runs of the model at batch 1, one per sample:
one compile serves every batch size. Sizes read from the batch axis (Shape -> Gather -> Concat
-> Reshape, as exporters write `x.view(x.size(0), -1)`) are allowed only as the leading entry of
a shape operand whose result keeps the batch axis leading; anything else that reads the batch
size, and every operator not listed here, leaves the model to be compiled per batch size.
Shapes come from ONNX shape inference with data propagation on the symbolic model.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from dlc.frontend.input_shapes import UNNAMED, graph_inputs, symbolic_inputs

ELEMENTWISE = frozenset("""
Abs Acos Acosh Add And Asin Asinh Atan Atanh BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Cast CastLike
Ceil Celu Clip Cos Cosh Div Dropout Elu Equal Erf Exp Floor Gelu Greater GreaterOrEqual HardSigmoid HardSwish
Identity IsInf IsNaN LeakyRelu Less LessOrEqual Log Max Mean Min Mish Mod Mul Neg Not Or Pow PRelu Reciprocal Relu
Round Selu Shrink Sigmoid Sign Sin Sinh Softplus Softsign Sqrt Sub Sum Tan Tanh ThresholdedRelu Where Xor
""".split())
# Operators of one data input (the first) whose sample i reads sample i only, the other inputs
# being weights; with the attribute test that keeps them off the batch axis.
PER_SAMPLE = frozenset("""
Conv ConvTranspose MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool BatchNormalization
InstanceNormalization LRN DepthToSpace SpaceToDepth GroupNormalization
""".split())
AXIS_NOT_BATCH = frozenset("Softmax LogSoftmax Hardmax LayerNormalization LpNormalization ArgMax ArgMin "
                           "Split TopK Flatten".split())
REDUCE = frozenset("ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
                   "ReduceLogSumExp ReduceSumSquare".split())
ALL = None  # a size whose every element may depend on the batch size


class NotProved(Exception):
    pass


def batch_dimension(proto: onnx.ModelProto) -> tuple[str | None, str]:
    """(the batch dimension's name, "") when the proof holds; (None, why not) otherwise, and
    (None, "") when no input has a symbolic leading dimension (nothing to say)."""
    name, why, _ = batch_proof(proto)
    return name, why


# A contraction of fewer rows than this per sample runs as a matrix-vector product in the
# batch-1 body: its weights are read once per sample instead of once per batch (an MLP at batch
# 8 ran 7x slower sample by sample than compiled for batch 8).
MIN_ROWS = 8
# Above this share of the contraction work in such products, a batch size compiles on its own.
MAX_THIN_SHARE = 0.25


def thin_share(contractions: list[tuple[list, list]], sizes: dict[str, int]) -> float:
    """The share of the multiply-adds of one sample in contractions of fewer than MIN_ROWS rows;
    `sizes` gives the symbolic dimensions (an unknown one counts as MIN_ROWS)."""
    def product(dims) -> int:
        total = 1
        for d in dims:
            total *= d if isinstance(d, int) else sizes.get(d, MIN_ROWS)
        return total

    work = [(product(rows), product(rows) * product(inner)) for rows, inner in contractions]
    total = sum(w for _, w in work)
    return sum(w for rows, w in work if rows < MIN_ROWS) / total if total else 0.0


def batch_proof(proto: onnx.ModelProto) -> tuple[str | None, str, list[tuple[list, list]]]:
    """batch_dimension's answer, and each contraction of a sample as (its rows' dims, the dims
    of the rest of its work): what `thin_share` weighs."""
    symbolic = symbolic_inputs(proto)
    leading = {dims[0] for dims in symbolic.values() if dims and isinstance(dims[0], str)}
    if not leading:
        return None, "", []
    if len(leading) != 1 or UNNAMED in leading:
        return None, ("the inputs' leading dimensions are not one named symbolic dimension "
                      f"({sorted(map(str, leading)) or 'none'})"), []
    name = leading.pop()
    for input_name, dims in symbolic.items():
        if name in dims[1:]:
            return None, f"input '{input_name}' has the dimension '{name}' on an axis other than the first", []
    proof = _Proof(proto, name)
    try:
        proof.run()
    except NotProved as error:
        return None, str(error), []
    return name, "", proof.contractions


class _Proof:
    def __init__(self, proto: onnx.ModelProto, name: str):
        self.name = name
        self.proto = proto
        inferred = onnx.shape_inference.infer_shapes(_without_value_info(proto), data_prop=True)
        self.shapes = {}
        for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                self.shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                           for d in value.type.tensor_type.shape.dim]
        self.constants = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        for node in proto.graph.node:  # Constant nodes' values, read as axes and sizes
            if node.op_type == "Constant" and self.attr(node, "value") is not None:
                self.constants[node.output[0]] = numpy_helper.to_array(self.attr(node, "value"))
        for value, array in self.constants.items():
            self.shapes.setdefault(value, list(array.shape))
        self.batch: set[str] = set()
        self.sizes: dict[str, frozenset | None] = {}  # value -> positions that depend on the batch size
        self.contractions: list[tuple[list, list]] = []  # (rows, other dims of the work) per sample
        for value in graph_inputs(proto):
            dims = self.shapes.get(value.name) or []
            if dims and dims[0] == name:
                self.batch.add(value.name)

    # -------------------------------------------------------------- helpers

    def fail(self, node: onnx.NodeProto, why: str) -> NotProved:
        return NotProved(f"node '{node.name or node.output[0]}' ({node.op_type}) {why}")

    def rank(self, value: str) -> int | None:
        shape = self.shapes.get(value)
        return None if shape is None else len(shape)

    def const(self, node: onnx.NodeProto, value: str):
        if value not in self.constants:
            raise self.fail(node, f"reads '{value}' as axes or sizes, and it is not a constant")
        return self.constants[value]

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        for attribute in node.attribute:
            if attribute.name == name:
                return onnx.helper.get_attribute_value(attribute)
        return default

    def axes(self, node: onnx.NodeProto, position: int, rank: int | None) -> list[int] | None:
        """Axes from the attribute or (newer opsets) the input at `position`, normalised."""
        axes = self.attr(node, "axes")
        if axes is None and len(node.input) > position and node.input[position]:
            axes = [int(a) for a in self.const(node, node.input[position]).reshape(-1)]
        if axes is None:
            return None
        if rank is None:
            raise self.fail(node, "has an input of unknown rank")
        return [a + rank if a < 0 else a for a in axes]

    def keeps_leading(self, node: onnx.NodeProto, output: str) -> None:
        shape = self.shapes.get(output)
        if not shape or shape[0] != self.name:
            raise self.fail(node, f"gives '{output}' the leading dimension {shape[0] if shape else 'unknown'}, "
                                  f"not '{self.name}'")

    # -------------------------------------------------------------- the walk

    def run(self) -> None:
        for node in self.proto.graph.node:
            self.visit(node)
        for output in self.proto.graph.output:
            if output.name not in self.batch:
                raise NotProved(f"output '{output.name}' does not carry the batch axis '{self.name}' first")

    def visit(self, node: onnx.NodeProto) -> None:
        inputs = [i for i in node.input if i]
        batch = [i in self.batch for i in node.input]
        if any(i in self.sizes for i in inputs) and not any(batch):
            self.size_node(node)
            return
        if not any(batch):
            if node.op_type in ("If", "Loop", "Scan"):
                raise self.fail(node, "has a subgraph, which this proof does not read")
            return  # reads no sample and no batch size: the same for every sample
        if node.op_type in ("Shape", "Size"):  # the batch size, as data: only shape operands may read it
            start = self.attr(node, "start", 0)
            if node.op_type == "Size" or start in (0, -self.rank(node.input[0])):
                self.sizes[node.output[0]] = frozenset({0}) if node.op_type == "Shape" else ALL
            return
        if any(i in self.sizes for i in inputs) and node.op_type not in ("Reshape", "Expand"):
            raise self.fail(node, "reads the batch size as data")
        self.sample_node(node, batch)
        for output in node.output:
            if output:
                self.keeps_leading(node, output)
                self.batch.add(output)

    def size_node(self, node: onnx.NodeProto) -> None:
        """Arithmetic on sizes: positions of 1-D shape vectors that depend on the batch size."""
        op, first = node.op_type, self.sizes.get(node.input[0], frozenset()) if node.input else ALL
        if op in ("ConstantOfShape", "Expand"):  # a tensor of the batch's shape, each sample the same
            if op == "Expand":
                first = self.sizes.get(node.input[1], frozenset())
                if node.input[0] in self.sizes:
                    raise self.fail(node, "reads the batch size as data")
            if first is ALL or not first <= {0}:
                raise self.fail(node, "builds a tensor whose shape reads the batch size beyond its first entry")
            self.keeps_leading(node, node.output[0])
            self.batch.add(node.output[0])
            return
        positions: frozenset | None = ALL
        if op in ("Cast", "Identity", "Squeeze", "Unsqueeze") and first is not ALL:
            positions = first
        elif op == "Gather" and first is not ALL and node.input[1] in self.constants:
            length = (self.shapes.get(node.input[0]) or [None])[0]
            picked = [int(i) for i in self.constants[node.input[1]].reshape(-1)]
            if any(i < 0 for i in picked) and not isinstance(length, int):
                positions = ALL
            else:
                positions = frozenset(k for k, i in enumerate(picked) if (i + length if i < 0 else i) in first)
        elif op == "Concat" and node.input:
            positions, offset = frozenset(), 0
            for value in node.input:
                part, length = self.sizes.get(value, frozenset()), (self.shapes.get(value) or [None])[0]
                if part is ALL or not isinstance(length, int):
                    positions = ALL
                    break
                positions |= {offset + p for p in part}
                offset += length
        if positions is not ALL and not positions:
            return  # no element depends on the batch size: a constant for the proof
        for output in node.output:
            self.sizes[output] = positions

    def sample_node(self, node: onnx.NodeProto, batch: list[bool]) -> None:
        op = node.op_type
        out_rank = self.rank(node.output[0])
        if op in ELEMENTWISE:
            for value, is_batch in zip(node.input, batch):
                if not value or is_batch:
                    if value and self.rank(value) != out_rank:
                        raise self.fail(node, f"broadcasts the batched input '{value}' to a higher rank")
                    continue
                shape = self.shapes.get(value)
                if shape is None or (len(shape) == out_rank and shape[0] != 1):
                    raise self.fail(node, f"broadcasts '{value}' (shape {shape}) against the batch axis")
            return
        if op not in ("MatMul", "Gemm", "Concat", "Gather") and (not batch[0] or any(batch[1:])):
            raise self.fail(node, "reads a batched tensor as weights, sizes or indices")
        if op in ("Conv", "ConvTranspose"):  # im2col rows: the output's pixels
            out, weight = self.shapes.get(node.output[0]) or [], self.shapes.get(node.input[1]) or []
            self.contractions.append((list(out[2:]), list(weight)))
        if op in PER_SAMPLE:
            if op == "BatchNormalization" and self.attr(node, "training_mode", 0):
                raise self.fail(node, "computes batch statistics (training_mode=1)")
            if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
                raise self.fail(node, "returns indices into the whole batch (its Indices output)")
            return
        if op in AXIS_NOT_BATCH:
            default = {"Flatten": 1, "Split": 0, "ArgMax": 0, "ArgMin": 0, "TopK": -1}.get(op, -1)
            axis = self.attr(node, "axis", default)
            rank = self.rank(node.input[0])
            if rank is None or (axis + rank if axis < 0 else axis) == 0:
                raise self.fail(node, f"works along axis {axis}, the batch axis")
            return
        if op in REDUCE:
            axes = self.axes(node, 1, self.rank(node.input[0]))
            if axes is None or 0 in axes:
                raise self.fail(node, "reduces over the batch axis")
            return
        if op == "Transpose":
            if list(self.attr(node, "perm", [])[:1]) != [0]:
                raise self.fail(node, "moves the batch axis")
            return
        if op in ("Squeeze", "Unsqueeze"):
            axes = self.axes(node, 1, self.rank(node.output[0] if op == "Unsqueeze" else node.input[0]))
            if axes is None or 0 in axes:
                raise self.fail(node, "squeezes or inserts the leading axis")
            return
        if op == "Concat":
            if not all(batch) or self.attr(node, "axis") in (0, -self.rank(node.output[0])):
                raise self.fail(node, "joins along the batch axis or with an unbatched tensor")
            return
        if op == "Gather":
            axis = self.attr(node, "axis", 0)
            if batch[0] and not batch[1] and axis not in (0, -self.rank(node.input[0])):
                return  # picks along another axis of each sample
            if not batch[0] and batch[1] and axis in (0, -self.rank(node.input[0])):
                return  # an embedding lookup: each sample's indices into shared rows
            raise self.fail(node, "gathers along the batch axis")
        if op == "MatMul":
            self.matmul(node, batch)
            return
        if op == "Gemm":
            if not batch[0] or (len(batch) > 1 and batch[1]) or self.attr(node, "transA", 0):
                raise self.fail(node, "does not take its rows from the batch axis (A batched, transA=0)")
            self.contractions.append(([], list(self.shapes.get(node.input[1]) or [])))  # one row a sample
            return
        if op in ("Reshape", "Expand"):
            shape = self.sizes.get(node.input[1], frozenset())
            if not batch[0] or (shape is ALL or not shape <= {0}):
                raise self.fail(node, "takes a shape that reads the batch size beyond its first entry")
            return
        if op == "Slice":
            axes = self.axes(node, 3, self.rank(node.input[0]))
            if axes is None or 0 in axes or any(batch[1:]):
                raise self.fail(node, "slices the batch axis")
            return
        if op == "Pad":
            pads = self.attr(node, "pads")
            if pads is None and len(node.input) > 1:
                pads = self.const(node, node.input[1]).reshape(-1).tolist()
            rank = self.rank(node.input[0])
            axes = self.axes(node, 3, rank) if len(node.input) > 3 and node.input[3] else list(range(rank or 0))
            if pads is None or any(pads[k] or pads[k + len(axes)] for k, a in enumerate(axes) if a == 0):
                raise self.fail(node, "pads the batch axis")
            return
        if op == "Tile":
            repeats = self.const(node, node.input[1]).reshape(-1)
            if not len(repeats) or int(repeats[0]) != 1:
                raise self.fail(node, "repeats the batch axis")
            return
        raise self.fail(node, "is not one of the operators this proof knows to keep samples apart")

    def matmul(self, node: onnx.NodeProto, batch: list[bool]) -> None:
        a, b = node.input[0], node.input[1]
        rank_a, rank_b, rank = self.rank(a), self.rank(b), self.rank(node.output[0])
        if None in (rank_a, rank_b, rank):
            raise self.fail(node, "has an operand of unknown rank")
        shape_a, shape_b = self.shapes[a], self.shapes[b]
        rows = shape_a[1:-1] if batch[0] else shape_a[:-1]
        self.contractions.append((list(rows), [shape_a[-1], shape_b[-1]]))
        if batch[0] and batch[1] and rank_a == rank_b == rank >= 3:
            return  # batched products, sample by sample
        if batch[0] and not batch[1] and rank_a == rank >= 2 and (rank_b < rank or self.shapes[b][0] == 1):
            return  # rows of each sample times shared weights
        if batch[1] and not batch[0] and rank_b == rank >= 3 and (rank_a < rank or self.shapes[a][0] == 1):
            return
        raise self.fail(node, "contracts over the batch axis")


def _without_value_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The graph without its recorded intermediate and output shapes, which an exporter may
    have written for the traced batch size or as unknowns; inference recomputes them."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.value_info[:]
    for output in copy.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    return copy
