"""dlc as an ONNX backend: `onnx.backend.base.Backend` over `dlc.compile`.

Mirrors the backend API the official suite drives (onnx/backend/base.py,
docs/ImplementingAnOnnxBackend.md): `prepare` compiles once, `BackendRep.run`
takes inputs positionally or by name and returns outputs in graph order.
The target is "cpu" unless `target=` or the environment variable
DLC_BACKEND_TARGET says otherwise. Importing this module does not import xDSL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, namedtupledict

TARGET_ENV = "DLC_BACKEND_TARGET"


def default_target() -> str:
    return os.environ.get(TARGET_ENV, "cpu")


def real_input_names(model: onnx.ModelProto) -> list[str]:
    """Graph inputs that are not initializers (IR version 3 lists weights as inputs too)."""
    initializers = {init.name for init in model.graph.initializer}
    return [value.name for value in model.graph.input if value.name not in initializers]


def shapes_come_from_feeds(model: onnx.ModelProto) -> bool:
    """Whether to compile at the first run: every real input is a tensor and some dimension is
    named or unknown (a dim_value of 0 is a static, empty dimension)."""
    names = set(real_input_names(model))
    types = [v.type for v in model.graph.input if v.name in names]
    if not all(t.HasField("tensor_type") for t in types):
        return False  # sequences, maps, optionals: let the compiler say so at prepare
    return any(t.tensor_type.HasField("shape") and
               any(not d.HasField("dim_value") for d in t.tensor_type.shape.dim) for t in types)


class DlcRep(BackendRep):
    """A compiled model; `run` returns a namedtuple-like tuple of outputs in graph order.

    dlc compiles for static shapes: a model with symbolic input dimensions is
    compiled at its first run for the shapes fed, and again for new shapes.
    """

    def __init__(self, model: onnx.ModelProto, target: str):
        self.model = model
        self.target = target
        self.input_names = real_input_names(model)
        self.output_names = [o.name for o in model.graph.output]
        self._compiled: dict[tuple | None, Any] = {}
        if not shapes_come_from_feeds(model):  # compile now: unsupported models fail in prepare
            self._compiled[None] = self._compile(None)

    def _compile(self, input_shapes: dict | None):
        import dlc

        return dlc.compile(self.model, target=self.target, input_shapes=input_shapes)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        feeds = self._feeds(inputs)
        if None in self._compiled:
            compiled = self._compiled[None]
        else:
            shapes = {name: feeds[name].shape for name in self.input_names if name in feeds}
            key = tuple(sorted(shapes.items()))
            if key not in self._compiled:
                self._compiled[key] = self._compile(shapes)
            compiled = self._compiled[key]
        results = compiled.run(feeds)
        return namedtupledict("Outputs", self.output_names)(
            *[results[name] for name in self.output_names])

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            return {name: np.asarray(value) for name, value in inputs.items()}
        if isinstance(inputs, np.ndarray):  # a single input passed bare
            inputs = [inputs]
        if len(inputs) != len(self.input_names):
            from dlc.errors import InputError

            raise InputError(f"got {len(inputs)} inputs, the model takes {len(self.input_names)}: "
                             f"{self.input_names}")
        return {name: np.asarray(value) for name, value in zip(self.input_names, inputs)}


class DlcBackend(Backend):
    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().split(":")[0] == "CPU"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> DlcRep:
        if not cls.supports_device(device):
            from dlc.errors import UnsupportedError

            raise UnsupportedError(f"dlc.backend runs on CPU only, not on device '{device}'")
        return DlcRep(model, kwargs.get("target") or default_target())

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[Any, ...]:
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        model = node_model(node, inputs, outputs_info, kwargs.get("opset_version"))
        return cls.run_model(model, inputs, device, **kwargs)


def node_model(node: onnx.NodeProto, inputs: Any,
               outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
               opset_version: int | None = None) -> onnx.ModelProto:
    """A one-node model whose input types come from the arrays about to be fed."""
    names = [name for name in node.input if name]
    arrays = inputs.values() if isinstance(inputs, Mapping) else inputs
    graph_inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                    for name, a in zip(names, map(np.asarray, arrays))]
    if outputs_info is not None:
        graph_outputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                                       shape)
                         for name, (dtype, shape) in zip(node.output, outputs_info)]
    else:  # leave the types to shape inference in the importer
        graph_outputs = [helper.make_empty_tensor_value_info(name) for name in node.output if name]
    graph = helper.make_graph([node], f"{node.op_type}_node", graph_inputs, graph_outputs)
    opset = opset_version or onnx.defs.onnx_opset_version()
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


prepare = DlcBackend.prepare
run_model = DlcBackend.run_model
run_node = DlcBackend.run_node
supports_device = DlcBackend.supports_device
