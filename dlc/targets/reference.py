"""The `reference` target: interprets the `graph` phase with onnx.reference (numpy).

The oracle in tests: it shares the importer and graph passes with `cpu` but not
the lowering or code generation, and each node runs on the ONNX project's own
numpy implementation of the spec (`onnx.reference`), so it handles every ONNX
operator, slowly. What ONNX calls an error and numpy lets pass (integer division by zero,
gather indices out of range) raises a DlcError naming the node, as the cpu target's run-time
checks do.
"""

from __future__ import annotations

import numpy as np

from dlc.errors import CompileError, DlcError
from dlc.targets import CompileOptions, Target, TargetDescription, constant_inputs_of, graph_io_specs, graph_main


class ReferenceTarget(Target):
    name = "reference"
    start_phase = "graph"

    def description(self) -> TargetDescription:
        return TargetDescription(dtypes=("float32", "float64", "float16", "int64", "int32", "bool"))

    def build(self, module, options: CompileOptions):
        return ReferenceExecutable(module)


class ReferenceExecutable:
    """Runs @main node by node; values are numpy arrays."""

    def __init__(self, module):
        from onnx.reference import ReferenceEvaluator
        from onnx.reference.op_run import RuntimeContextError

        from dialects.onnx import CANONICAL_OPSET, NoneOp, OnnxOp, WeightOp
        from dialects.onnx_eval import node_proto
        from dialects.weights import weights_of

        block = graph_main(module).body.block
        names = {arg: f"in{i}" for i, arg in enumerate(block.args)}
        self.inputs, self.outputs = graph_io_specs(module)
        self.constant_inputs = constant_inputs_of(module)
        returned = list(block.last_op.operands)
        self._constants: dict[str, np.ndarray] = {}
        self._steps = []
        store = weights_of(module)
        for index, op in enumerate(list(block.ops)[:-1]):
            for j, result in enumerate(op.results):
                names[result] = f"v{index}_{j}"
            if isinstance(op, WeightOp):
                self._constants[names[op.result]] = store[op.weight_name]
            elif isinstance(op, NoneOp):
                names[op.result] = ""
            elif isinstance(op, OnnxOp):
                node = node_proto(op, [names[v] for v in op.operands], [names[r] for r in op.results])
                try:
                    evaluator = ReferenceEvaluator(node, opsets={"": CANONICAL_OPSET}, new_ops=_FIXED_OPS)
                except RuntimeContextError:  # a function op (Gelu): its body needs typed inputs
                    evaluator = ReferenceEvaluator(_typed_model(node, op), new_ops=_FIXED_OPS)
                self._steps.append((node, evaluator))
            else:
                raise CompileError(f"reference target: cannot interpret {op.name}; it runs the graph phase")
        self._arg_names = [names[a] for a in block.args]
        self._result_names = [names[v] for v in returned]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from dlc.runtime import check_inputs

        arrays = check_inputs(self.inputs, feeds, self.constant_inputs)
        env = dict(self._constants)
        env.update(zip(self._arg_names, arrays))
        for node, evaluator in self._steps:
            check_node_inputs(node, [env[n] if n else None for n in node.input])
            node_inputs = {n: env[n] for n in node.input if n}
            try:
                results = _evaluate(evaluator, node_inputs)
            except (ValueError, TypeError, IndexError, ArithmeticError) as error:
                # The evaluator refused these values (Bernoulli of a probability outside [0, 1]):
                # the user's input, named with its node, not a bug of ours.
                raise DlcError(f"node '{node.name}' ({node.op_type}): onnx's reference evaluator "
                               f"refused its inputs: {error}",
                               "check the values fed to this node (`dlc run` feeds random ones: "
                               "give yours with --input)") from error
            env.update(zip(node.output, results))
        outputs = {}
        for spec, name in zip(self.outputs, self._result_names):
            value = np.asarray(env[name])
            if value.size != int(np.prod(spec.shape, dtype=np.int64)):
                # a value-dependent size (NonZero, Compress) that these inputs set otherwise
                node = next((n for n, _ in self._steps if name in n.output), None)
                where = f"node '{node.name}' ({node.op_type}), " if node is not None else ""
                raise DlcError(f"{where}output '{spec.name}': the inputs give shape {list(value.shape)}, "
                               f"the model declares {list(spec.shape)} (dlc compiles static shapes)",
                               "the model's result for these inputs does not have its declared shape; "
                               "feed inputs that give it, or export the model with this output's size")
            outputs[spec.name] = value.astype(spec.dtype, copy=False).reshape(spec.shape)
        return outputs

    def save(self, directory) -> None:
        raise CompileError("the reference target has no artifact to save; use --target cpu")


def _evaluate(evaluator, node_inputs: dict[str, np.ndarray]) -> list:
    try:
        return evaluator.run(None, node_inputs)
    except TypeError:
        # onnx.reference's unary ops (Softsign: np.abs of a 0-d array is a scalar, then `out=`
        # fails) cannot take 0-d tensors; an elementwise op on one element reads the same as 1-d
        # and back.
        if not node_inputs or any(np.ndim(v) for v in node_inputs.values()):
            raise
        results = evaluator.run(None, {n: np.reshape(v, (1,)) for n, v in node_inputs.items()})
        return [np.reshape(r, ()) if np.size(r) == 1 else r for r in results]


def _index_bounds(node, data: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray | int, str]:
    """Per element of `indices`, the size n of the data axis it indexes ([-n, n) is valid)."""
    attrs = {a.name: a.i for a in node.attribute}
    if node.op_type == "GatherND":
        batch = attrs.get("batch_dims", 0)
        sizes = list(data.shape[batch:batch + indices.shape[-1]])
        bounds = np.broadcast_to(np.asarray(sizes, np.int64), indices.shape)
        return bounds, f"data axes sizes {sizes}"
    axis = attrs.get("axis", 0) % data.ndim
    return data.shape[axis], f"axis {axis} of 'data' (size {data.shape[axis]})"


def check_node_inputs(node, inputs: list) -> None:
    """Refuse what ONNX calls an error and numpy would not (or would not name the node for):
    integer division by zero or overflow, and gather indices outside [-n, n)."""
    name = f"node '{node.name}' ({node.op_type})"
    if node.op_type in ("Div", "Mod") and np.issubdtype(inputs[1].dtype, np.integer):
        x, y = np.broadcast_arrays(*inputs[:2])
        if (y == 0).any():
            raise DlcError(f"{name}: integer division by zero (input 'B' holds a 0)")
        if np.issubdtype(y.dtype, np.signedinteger):
            low = np.iinfo(y.dtype).min
            if ((x == low) & (y == -1)).any():
                raise DlcError(f"{name}: integer overflow (input 'A' holds the minimum "
                               f"{y.dtype}, {low}, where 'B' holds -1)")
    if node.op_type in ("Gather", "GatherElements", "GatherND"):
        data, indices = inputs[0], np.asarray(inputs[1]).astype(np.int64)
        bounds, axes_text = _index_bounds(node, data, indices)
        outside = (indices < -bounds) | (indices >= bounds)
        if outside.any():
            where = tuple(int(k) for k in np.argwhere(outside)[0])
            n = bounds if isinstance(bounds, int) else int(bounds[where])
            raise DlcError(f"{name}: index {int(indices[where])} at {list(where)} of input "
                           f"'indices' is out of range [{-n}, {n}) for {axes_text}")


def _typed_model(node, op):
    """`node` alone in a model whose inputs and outputs carry the op's types (onnx.reference
    expands context-dependent function ops such as Gelu only with typed inputs)."""
    from onnx import helper

    from dialects.onnx import CANONICAL_OPSET
    from dialects.types import numpy_dtype

    def info(name, value):
        elem = helper.np_dtype_to_tensor_dtype(numpy_dtype(value.type.element_type))
        return helper.make_tensor_value_info(name, elem, list(value.type.get_shape()))

    inputs = [info(n, v) for n, v in zip(node.input, op.operands) if n]
    outputs = [info(n, v) for n, v in zip(node.output, op.results) if n]
    graph = helper.make_graph([node], "node", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", CANONICAL_OPSET)])


def _fixed_ops() -> list:
    """Replacements for onnx.reference kernels that disagree with the spec (found by dlc.tools.fuzz)."""
    from onnx.reference.op_run import OpRun

    class GlobalMaxPool(OpRun):
        # onnx 1.23 reduces axes (d-2, d-1) of an input of d-2 spatial dims: wrong unless d == 4.
        op_domain = ""

        def _run(self, x):
            return (x.max(axis=tuple(range(2, x.ndim)), keepdims=True),)

    from onnx.reference.ops.op_average_pool import AveragePool_19
    from onnx.reference.ops.op_max_pool import MaxPool as OnnxMaxPool

    # onnx 1.23's pooling mis-sizes or crashes with padding at the end, ceil_mode and 1-D
    # inputs (MaxPool kernel 3, pads [0, 2] on length 4 gives 2 outputs, not 4), and its
    # Indices leave out the batch and channel (1-D). Explicit pads (and VALID) run on _pool
    # below; auto_pad SAME stays with onnx.
    class MaxPool(OnnxMaxPool):
        op_domain = ""

        def _run(self, x, **attributes):
            if attributes.get("auto_pad") not in (None, "NOTSET", "VALID"):
                return super()._run(x, **attributes)
            values = _pool(x, "max", attributes)
            return (values, _max_pool_indices(x, values, attributes)) if len(self.output) > 1 else (values,)

    class AveragePool(AveragePool_19):
        op_domain = ""

        def _run(self, x, **attributes):
            if attributes.get("auto_pad") not in (None, "NOTSET", "VALID"):
                return super()._run(x, **attributes)
            return (_pool(x, "average", attributes),)

    class Mean(OpRun):
        # onnx 1.23 adds in place into a copy of the first input: fails when a later input
        # broadcasts it to a larger shape.
        op_domain = ""

        def _run(self, *args):
            return ((sum(args) / len(args)).astype(args[0].dtype),)

    from onnx.reference.ops.op_pad import Pad_18

    class Pad(Pad_18):
        # onnx 1.23 hands negative pads (the spec's cropping) to np.pad, which refuses them:
        # crop first, then pad by the non-negative rest.
        op_domain = ""

        def _run(self, data, pads, constant_value=None, axes=None, mode=None):
            rank = data.ndim
            axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
            pads = [int(p) for p in pads]
            crop = [slice(None)] * rank
            for i, axis in enumerate(axes):
                begin, end = pads[i], pads[i + len(axes)]
                crop[axis] = slice(max(0, -begin), data.shape[axis] - max(0, -end))
            return super()._run(data[tuple(crop)], np.maximum(np.array(pads, np.int64), 0), constant_value,
                                axes, mode)

    class GatherElements(OpRun):
        # onnx 1.23 refuses indices smaller than 'data' on an axis other than `axis` (the spec
        # and onnxruntime allow it: output[..j..] reads data at the same j) and mis-slices a
        # negative axis. Indices are in range here: check_node_inputs ran first.
        op_domain = ""

        def _run(self, data, indices, axis=None):
            axis = int(axis or 0) % data.ndim
            crop = tuple(slice(None) if i == axis else slice(0, n) for i, n in enumerate(indices.shape))
            idx = indices.astype(np.int64)
            idx = np.where(idx < 0, idx + data.shape[axis], idx)
            return (np.take_along_axis(data[crop], idx, axis=axis),)

    return [GlobalMaxPool, MaxPool, AveragePool, Mean, Pad, GatherElements]


def _pool(x: np.ndarray, kind: str, attributes: dict) -> np.ndarray:
    """MaxPool/AveragePool as the ONNX spec defines them (explicit pads, dilations, ceil_mode,
    count_include_pad); output sizes as onnxruntime computes them."""
    kernel = list(attributes["kernel_shape"])
    nd = len(kernel)
    spatial = x.shape[2:]
    strides = list(attributes.get("strides") or [1] * nd)
    dilations = list(attributes.get("dilations") or [1] * nd)
    pads = [0] * (2 * nd) if attributes.get("auto_pad") == "VALID" else list(attributes.get("pads") or [0] * (2 * nd))
    ceil_mode = attributes.get("ceil_mode") or 0
    out, end = [], []
    for i in range(nd):
        span = spatial[i] + pads[i] + pads[i + nd] - dilations[i] * (kernel[i] - 1) - 1
        n = (-(-span // strides[i]) if ceil_mode else span // strides[i]) + 1
        if ceil_mode and (n - 1) * strides[i] >= spatial[i] + pads[i]:
            n -= 1  # the last window would start in the end padding
        out.append(n)
        reach = (n - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1  # extent the windows read
        end.append(max(pads[i + nd], reach - spatial[i] - pads[i]))
    widths = [(0, 0), (0, 0)] + [(pads[i], end[i]) for i in range(nd)]
    fill = -np.inf if kind == "max" else 0.0
    # In x's own precision, as onnxruntime sums: float64 would keep finite an average whose
    # float32 sum overflows to -Inf there (the hostile fuzzer's -1e38 inputs).
    padded = np.pad(x, widths, constant_values=fill)
    real = np.pad(np.ones(spatial), widths[2:], constant_values=0.0)  # input elements
    declared = np.pad(np.ones([s + pads[i] + pads[i + nd] for i, s in enumerate(spatial)]),
                      [(0, end[i] - pads[i + nd]) for i in range(nd)], constant_values=0.0)
    counted = declared if attributes.get("count_include_pad") else real
    result = np.full(x.shape[:2] + tuple(out), fill, dtype=x.dtype)
    count = np.zeros(out)
    with np.errstate(invalid="ignore", over="ignore"):  # a float32 sum may overflow, as in onnxruntime
        for tap in np.ndindex(*kernel):
            window = tuple(slice(t * d, t * d + (n - 1) * s + 1, s)
                           for t, d, n, s in zip(tap, dilations, out, strides))
            if kind == "max":
                result = np.maximum(result, padded[(..., *window)])
            else:
                result = result + padded[(..., *window)]
                count = count + counted[window]
        if kind == "average":
            result = result / count.astype(x.dtype)
    return result.astype(x.dtype)


def _max_pool_indices(x: np.ndarray, values: np.ndarray, attributes: dict) -> np.ndarray:
    """MaxPool's Indices as onnxruntime gives them: the flat index into x (row-major, or the
    spatial dims column-major with storage_order 1) of the first tap in the window's row-major
    order that holds the maximum; padding is never picked."""
    nd, spatial, out = len(attributes["kernel_shape"]), x.shape[2:], values.shape[2:]
    strides = list(attributes.get("strides") or [1] * nd)
    dilations = list(attributes.get("dilations") or [1] * nd)
    pads = [0] * nd if attributes.get("auto_pad") == "VALID" else list(attributes.get("pads") or [0] * nd)
    sizes = spatial if not attributes.get("storage_order") else spatial[::-1]
    steps = [int(np.prod(sizes[i + 1:])) for i in range(nd)]
    steps = steps if not attributes.get("storage_order") else steps[::-1]
    planes = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * nd) * int(np.prod(spatial))
    found = np.full(values.shape, -1, np.int64)
    for tap in np.ndindex(*attributes["kernel_shape"]):
        at = np.meshgrid(*[np.arange(o) * s + t * d - p for o, s, t, d, p in
                           zip(out, strides, tap, dilations, pads)], indexing="ij")
        inside = np.logical_and.reduce([(a >= 0) & (a < n) for a, n in zip(at, spatial)])
        v = x[(slice(None), slice(None), *[np.clip(a, 0, n - 1) for a, n in zip(at, spatial)])]
        hit = inside & ((v == values) | np.isnan(v)) & (found < 0)
        found = np.where(hit, planes + sum(a * step for a, step in zip(at, steps)), found)
    return found


_FIXED_OPS = _fixed_ops()
