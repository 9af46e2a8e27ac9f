"""ONNX model -> the `onnx` phase: one `func.func @main` of onnx-dialect ops, static types.

Steps, in order (mirrors what onnx-mlir's frontend and onnx-simplifier do):
load and `onnx.checker`; inputs fixed by the user (`input_shapes`); conversion to
`CANONICAL_OPSET` with `onnx.version_converter`; shape inference and constant
folding repeated until no more nodes fold (Shape/Size of static tensors, and any
node whose inputs are all constant, e.g. the ConstantOfShape weights of the
model-zoo files), so every type is static; then IR construction with weights
kept outside the IR, referred to by symbol.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, version_converter
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    f64,
    i64,
)
from xdsl.ir import Attribute, Block, Region, SSAValue

from dialects.onnx import CANONICAL_OPSET, NONDETERMINISTIC, OPS, NoneOp, WeightOp
from dialects.types import element_type_for, numpy_dtype_for_onnx
from dialects.weights import WeightStore, attach_weights
from dlc.errors import ModelLoadError, UnsupportedError

_MAX_FOLD_ITERATIONS = 16


def load_model(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """Read and check a model; every failure is a ModelLoadError naming the file."""
    if isinstance(model, onnx.ModelProto):
        source, proto = "<ModelProto>", model
    else:
        path = Path(model)
        source = str(path)
        if not path.exists():
            raise ModelLoadError(f"{source}: no such file")
        if path.is_dir():
            raise ModelLoadError(f"{source}: is a directory, not an .onnx file",
                                 "to run a compiled artifact directory use `dlc run DIR`")
        data = path.read_bytes()
        if not data:
            raise ModelLoadError(f"{source}: the file is empty")
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception as error:  # protobuf raises DecodeError and friends
            raise ModelLoadError(f"{source}: not an ONNX model (protobuf parse failed: {error})") from None
        if not proto.HasField("graph") or not proto.graph.node and not proto.graph.output:
            raise ModelLoadError(f"{source}: not an ONNX model (no graph found; truncated file?)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ModelLoadError(f"{source}: fails onnx.checker: {first_line}") from None
    return proto


def opset_of(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return CANONICAL_OPSET


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs: IR version 3 files also list every initializer as an input."""
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _fix_input_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> None:
    real = {value.name: value for value in graph_inputs(model)}
    for name in input_shapes:
        if name not in real:
            raise ModelLoadError(f"--shape names input '{name}', but the model's inputs are "
                                 f"{sorted(real)}")
    for name, value in real.items():
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise UnsupportedError(f"input '{name}' is not a tensor (sequences and maps are not supported)")
        if name in input_shapes:
            shape = input_shapes[name]
            if tensor_type.HasField("shape") and len(tensor_type.shape.dim) != len(shape):
                raise ModelLoadError(f"--shape {name}: the model declares rank "
                                     f"{len(tensor_type.shape.dim)}, got {len(shape)} dims {list(shape)}")
            tensor_type.shape.ClearField("dim")
            for size in shape:
                tensor_type.shape.dim.add().dim_value = int(size)
            continue
        if not tensor_type.HasField("shape"):
            raise UnsupportedError(f"input '{name}' has no declared shape",
                                   f"fix it with --shape {name}=1x3x224x224 (input_shapes= in dlc.compile)")
        for axis, dim in enumerate(tensor_type.shape.dim):
            if not dim.HasField("dim_value") or dim.dim_value < 0:
                label = dim.dim_param or "?"
                raise UnsupportedError(
                    f"input '{name}' has a symbolic dimension '{label}' (axis {axis}); "
                    "dlc compiles for static shapes",
                    f"fix it with --shape {name}=... on the CLI or input_shapes={{'{name}': (...)}} "
                    "in dlc.compile")


def _convert_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    version = opset_of(model)
    if version == CANONICAL_OPSET:
        return model
    # Opsets below 7 are tried too: the version converter upgrades many of them.
    if version > CANONICAL_OPSET and _same_signatures(model, version):
        # Newer opsets mostly widen type lists (bfloat16, float8): where every node's
        # signature is the canonical one, relabelling is exact, while the version
        # converter has no down-adapters for many ops.
        for entry in model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = CANONICAL_OPSET
        return model
    try:
        converted = version_converter.convert_version(model, CANONICAL_OPSET)
    except Exception as error:
        raise UnsupportedError(f"could not convert the model from opset {version} to dlc's canonical "
                               f"opset {CANONICAL_OPSET}: {str(error).strip().splitlines()[0]}",
                               f"dlc reads opsets 7 to {onnx.defs.onnx_opset_version()} (older ones when the "
                               "ONNX version converter can upgrade them)") from None
    if version < 11:
        _keep_old_resize_semantics(converted)
    return converted


def _keep_old_resize_semantics(model: onnx.ModelProto) -> None:
    """Upsample (opsets 7-9) and Resize-10 sample at x_out / scale and round nearest down; the
    version converter emits an opset-11+ Resize without saying so, whose defaults
    (half_pixel, round_prefer_floor) would compute something else."""
    from onnx import helper

    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        present = {attr.name for attr in node.attribute}
        if "coordinate_transformation_mode" not in present:
            node.attribute.append(helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
        if "nearest_mode" not in present:
            node.attribute.append(helper.make_attribute("nearest_mode", "floor"))


def _signature(schema: onnx.defs.OpSchema) -> tuple:
    """What a node can rely on: inputs, outputs and attributes (names, arity, types, defaults)."""
    return (tuple((p.name, p.option) for p in schema.inputs),
            tuple((p.name, p.option) for p in schema.outputs),
            tuple(sorted((a.name, a.type, a.required, a.default_value.SerializeToString())
                         for a in schema.attributes.values())))


def _same_signatures(model: onnx.ModelProto, version: int) -> bool:
    """Does every node mean the same at `version` as at the canonical opset?"""
    for op_type in {node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx")}:
        try:
            newer = onnx.defs.get_schema(op_type, version, "")
            canonical = onnx.defs.get_schema(op_type, CANONICAL_OPSET, "")
        except onnx.defs.SchemaError:
            return False
        if newer.since_version > CANONICAL_OPSET and _signature(newer) != _signature(canonical):
            return False
    return True


def _static_shape(value_type: onnx.TypeProto) -> tuple[int, ...] | None:
    if not value_type.HasField("tensor_type") or not value_type.tensor_type.HasField("shape"):
        return None
    dims = value_type.tensor_type.shape.dim
    if any(not d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


def _evaluate(node: onnx.NodeProto, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    feeds = {name: value for name, value in zip(node.input, inputs) if name}
    return ReferenceEvaluator(node, opsets={"": CANONICAL_OPSET}).run(None, feeds)


class _Folder:
    """Shape inference and constant folding over the graph, until a fixed point."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.constants: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        self.types: dict[str, onnx.TypeProto] = {}

    def run(self) -> None:
        for _ in range(_MAX_FOLD_ITERATIONS):
            self._infer_types()
            if not self._fold_once():
                return

    def _infer_types(self) -> None:
        graph = self.model.graph
        del graph.initializer[:]
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        graph.initializer.extend(numpy_helper.from_array(array, name)
                                 for name, array in self.constants.items() if name in used)
        # IR 3 lists initializers as inputs; shape inference and the checker dislike
        # initializers that are inputs once they are ours to manage.
        real = [value for value in graph.input if value.name not in self.constants]
        del graph.input[:]
        graph.input.extend(real)
        del graph.value_info[:]
        # From IR version 4 on, initializers need not be inputs (IR 3 required it).
        self.model.ir_version = max(self.model.ir_version, 4)
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=True, data_prop=True)
        except Exception as error:
            raise UnsupportedError(f"ONNX shape inference failed: {str(error).strip().splitlines()[0]}") from None
        self.types = {v.name: v.type for v in (*inferred.graph.input, *inferred.graph.value_info,
                                              *inferred.graph.output)}

    def _fold_once(self) -> bool:
        graph = self.model.graph
        kept, folded = [], False
        for node in graph.node:
            outputs = self._try_fold(node)
            if outputs is None:
                kept.append(node)
                continue
            folded = True
            for name, value in zip(node.output, outputs):
                if name:
                    self.constants[name] = np.asarray(value)
        if folded:
            del graph.node[:]
            graph.node.extend(kept)
        return folded

    def _try_fold(self, node: onnx.NodeProto) -> list[np.ndarray] | None:
        if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC:
            return None
        if node.op_type in ("Shape", "Size") and node.input[0] not in self.constants:
            shape = _static_shape(self.types.get(node.input[0], onnx.TypeProto()))
            if shape is None:
                return None
            return _evaluate(node, [np.zeros(shape, np.uint8)])
        if any(name and name not in self.constants for name in node.input):
            return None
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            return None
        try:
            return _evaluate(node, [self.constants.get(name) for name in node.input])
        except Exception:
            return None  # leave it to the compiler, which reports a precise error


def _attribute(attr: onnx.AttributeProto, node: onnx.NodeProto) -> Attribute:
    kind = attr.type
    if kind == onnx.AttributeProto.INT:
        return IntegerAttr(attr.i, i64)
    if kind == onnx.AttributeProto.FLOAT:
        return FloatAttr(attr.f, f32)
    if kind == onnx.AttributeProto.STRING:
        return StringAttr(attr.s.decode())
    if kind == onnx.AttributeProto.INTS:
        return DenseArrayBase.from_list(i64, list(attr.ints))
    if kind == onnx.AttributeProto.FLOATS:
        return DenseArrayBase.from_list(f32, list(attr.floats))
    if kind == onnx.AttributeProto.STRINGS:
        return ArrayAttr([StringAttr(s.decode()) for s in attr.strings])
    if kind == onnx.AttributeProto.TENSOR:
        array = numpy_helper.to_array(attr.t)
        element = element_type_for(array.dtype)
        return DenseIntOrFPElementsAttr.from_list(TensorType(element, array.shape), array.ravel().tolist())
    raise UnsupportedError(f"node '{node.name}' ({node.op_type}): attribute '{attr.name}' of kind "
                           f"{onnx.AttributeProto.AttributeType.Name(kind)} is not supported")


def _tensor_type(name: str, value_type: onnx.TypeProto, where: str) -> TensorType:
    shape = _static_shape(value_type)
    if shape is None or not value_type.tensor_type.elem_type:
        raise UnsupportedError(f"could not infer a static shape for '{name}' ({where})",
                               "fix the model's input shapes with --shape NAME=AxBxC, or check that "
                               "shape-computing subgraphs only depend on static shapes")
    dtype = numpy_dtype_for_onnx(value_type.tensor_type.elem_type, f"'{name}' ({where})")
    return TensorType(element_type_for(dtype), shape)


def import_model(model: str | Path | onnx.ModelProto,
                 input_shapes: dict[str, tuple[int, ...]] | None = None) -> ModuleOp:
    """Import an ONNX model into the `onnx` phase (weights attached to the module)."""
    proto = onnx.ModelProto()
    proto.CopyFrom(load_model(model))
    _fix_input_shapes(proto, dict(input_shapes or {}))
    proto = _convert_opset(proto)
    folder = _Folder(proto)
    folder.run()
    graph = proto.graph

    weights = WeightStore()
    inputs = graph_inputs(proto)
    input_types = [_tensor_type(v.name, v.type, "a graph input") for v in inputs]
    block = Block(arg_types=input_types)
    values: dict[str, SSAValue] = {}
    for value, arg in zip(inputs, block.args):
        arg.name_hint = _ssa_name(value.name)
        values[value.name] = arg

    def value_of(name: str) -> SSAValue:
        if name in values:
            return values[name]
        array = folder.constants[name]
        symbol = weights.add(name, array)
        weight = WeightOp(symbol, TensorType(element_type_for(array.dtype), array.shape))
        weight.result.name_hint = _ssa_name(name)
        block.add_op(weight)
        values[name] = weight.result
        return weight.result

    none_value: SSAValue | None = None
    for index, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
            raise UnsupportedError(
                f"node '{node.name}': operator '{node.domain + '.' if node.domain else ''}{node.op_type}' "
                f"(opset {opset_of(proto)}) is not an ONNX operator dlc knows",
                "`dlc ops` lists the supported operators")
        operands = []
        for name in node.input:
            if name:
                operands.append(value_of(name))
            else:
                if none_value is None:
                    none_op = NoneOp()
                    block.add_op(none_op)
                    none_value = none_op.result
                operands.append(none_value)
        attributes = {attr.name: _attribute(attr, node) for attr in node.attribute}
        attributes["onnx_node_name"] = StringAttr(node.name)
        where = f"output of node '{node.name}' ({node.op_type})"
        result_types = [_tensor_type(name, folder.types.get(name, onnx.TypeProto()), where)
                        for name in node.output]
        op = OPS[node.op_type].create(operands=operands, result_types=result_types, attributes=attributes)
        for name, result in zip(node.output, op.results):
            result.name_hint = _ssa_name(name)
            values[name] = result
        block.add_op(op)

    outputs = [value_of(out.name) for out in graph.output]
    block.add_op(func.ReturnOp(*outputs))
    main = func.FuncOp("main", (input_types, [v.type for v in outputs]), Region(block))
    main.attributes["dlc.input_names"] = ArrayAttr([StringAttr(v.name) for v in inputs])
    main.attributes["dlc.output_names"] = ArrayAttr([StringAttr(v.name) for v in graph.output])
    module = ModuleOp([main])
    attach_weights(module, weights)
    return module


def _ssa_name(name: str) -> str | None:
    """A readable SSA name hint from an ONNX value name (xDSL allows [A-Za-z0-9_.$-])."""
    cleaned = "".join(c if c.isalnum() or c in "_." else "_" for c in name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = f"v{cleaned}"
    return cleaned
