"""The `reference` target: interprets the `graph` phase with onnx.reference (numpy).

The oracle in tests: it shares the importer and graph passes with `cpu` but not
the lowering or code generation, and each node runs on the ONNX project's own
numpy implementation of the spec (`onnx.reference`), so it handles every ONNX
operator, slowly.
"""

from __future__ import annotations

import numpy as np

from dlc.errors import CompileError
from dlc.targets import CompileOptions, Target, TargetDescription, graph_io_specs, graph_main


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

        arrays = check_inputs(self.inputs, feeds)
        env = dict(self._constants)
        env.update(zip(self._arg_names, arrays))
        for node, evaluator in self._steps:
            results = evaluator.run(None, {n: env[n] for n in node.input if n})
            env.update(zip(node.output, results))
        return {spec.name: np.asarray(env[name]).astype(spec.dtype, copy=False).reshape(spec.shape)
                for spec, name in zip(self.outputs, self._result_names)}

    def save(self, directory) -> None:
        raise CompileError("the reference target has no artifact to save; use --target cpu")


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
    """Replacements for onnx.reference kernels that disagree with the spec (found by dlc.fuzz)."""
    from onnx.reference.op_run import OpRun

    class GlobalMaxPool(OpRun):
        # onnx 1.23 reduces axes (d-2, d-1) of an input of d-2 spatial dims: wrong unless d == 4.
        op_domain = ""

        def _run(self, x):
            return (x.max(axis=tuple(range(2, x.ndim)), keepdims=True),)

    return [GlobalMaxPool]


_FIXED_OPS = _fixed_ops()
