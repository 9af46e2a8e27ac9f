"""A minimal third-party dlc target in one file: it runs Add and Relu with numpy (docs/adding-a-target.md).

Every other node falls back to `cpu` through dlc's partitioner. Register it from
your package's pyproject.toml:

    [project.entry-points."dlc.targets"]
    add-relu = "your_module:AddReluTarget"

then `dlc run model.onnx --target add-relu`.
"""

from __future__ import annotations

import numpy as np

from dlc.targets import SUPPORTED, CompileOptions, Support, Target, TargetDescription

KERNELS = {"Add": np.add, "Relu": lambda x: np.maximum(x, 0)}


class AddReluTarget(Target):
    name = "add-relu"
    start_phase = "graph"  # build() gets a partition in the onnx dialect
    partial = True  # it takes only what supports() accepts; the rest runs on cpu

    def description(self) -> TargetDescription:
        return TargetDescription(dtypes=("float32",), vector_bits=128)

    def supports(self, op) -> Support:
        if op.onnx_type not in KERNELS:
            return Support(False, f"add-relu runs Add and Relu only, not {op.onnx_type}")
        if any(str(v.type.element_type) != "f32" for v in [*op.operands, *op.results]):
            return Support(False, "add-relu computes float32 only")
        return SUPPORTED

    def build(self, module, options: CompileOptions):
        return AddReluExecutable(module)


class AddReluExecutable:
    """Walks the partition's @main once per run: arguments, weights, then each op."""

    def __init__(self, module):
        from dialects.onnx import WeightOp
        from dialects.weights import weights_of
        from dlc.targets import graph_io_specs, graph_main

        block = graph_main(module).body.block
        self.inputs, self.outputs = graph_io_specs(module)
        self._args, self._returned = list(block.args), list(block.last_op.operands)
        self._ops = [op for op in list(block.ops)[:-1] if not isinstance(op, WeightOp)]
        store = weights_of(module)
        self._weights = {op.result: store[op.weight_name] for op in block.ops if isinstance(op, WeightOp)}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = dict(self._weights)
        values.update((arg, feeds[spec.name]) for arg, spec in zip(self._args, self.inputs))
        for op in self._ops:
            values[op.results[0]] = KERNELS[op.onnx_type](*(values[v] for v in op.operands))
        return {spec.name: np.asarray(values[v], dtype=spec.dtype) for spec, v in zip(self.outputs, self._returned)}

    def save(self, directory) -> None:
        raise NotImplementedError("add-relu keeps no artifact")
