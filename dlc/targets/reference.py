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
                evaluator = ReferenceEvaluator(node, opsets={"": CANONICAL_OPSET})
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
