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

import itertools
import math
import weakref
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
    NoneType,
    StringAttr,
    TensorType,
    f32,
    i64,
)
from xdsl.ir import Attribute, Block, Region, SSAValue

from dialects.onnx import CANONICAL_OPSET, NONDETERMINISTIC, OPS, NoneOp, WeightOp
from dialects.onnx_eval import check_foldable
from dialects.types import element_type_for, numpy_dtype_for_onnx
from dialects.weights import WeightStore, attach_weights
from dlc.errors import ModelLoadError, UnsupportedError
from dlc.frontend.control_flow import (
    expand_control_flow,
    import_native_loop,
    refuse_unconvertible_control_flow,
)
from dlc.frontend.expand_functions import expand_newer_functions
from dlc.frontend.input_shapes import graph_inputs, resolve_input_shapes, unpinned_error
from dlc.runtime import memory_limit

_MAX_FOLD_ITERATIONS = 16
_PACKED_FOUR_BIT = {getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1")
                    if hasattr(onnx.TensorProto, name)}
_COMPLEX = (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)
_POOLS = ("MaxPool", "AveragePool", "LpPool")
_WINDOW_OPS = (*_POOLS, "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv", "MaxUnpool")
# No image window comes near: larger kernels, strides, dilations or pads overflow ONNX's int64
# shape arithmetic into wrong (even positive) output sizes.
_MAX_WINDOW_ATTRIBUTE = 1 << 31
# Slice steps beyond this make ONNX's data propagation allocate without bound (onnx 1.17:
# step INT64_MIN); a step longer than its axis selects one element, as the axis length does.
_MAX_SLICE_STEP = 1 << 31
_INT64_MAX = (1 << 63) - 1
# Shape inference and the version converter read constants only as shapes, axes, sizes
# (a few elements); larger initializers are weights, which they need as types alone. Given
# as typed inputs, they stay out of the bytes that both serialise and parse on every call
# (ResNet-50's 100 MB cost 0.15 s a call, a ViT's 5.3 s over its import).
_VALUE_ELEMENTS = 1024


def load_model(model: str | Path | onnx.ModelProto, max_memory: str | int | None = None) -> onnx.ModelProto:
    """Read and check a model; every failure is a ModelLoadError naming the file.

    Structural faults (cycles, values no one produces, values produced twice, unknown
    operators) are reported with the node's name and op type before `onnx.checker`, whose
    messages name neither; external data is read only from the model's own folder.
    """
    limit = memory_limit.resolve_limit(max_memory)
    if isinstance(model, onnx.ModelProto):
        source, proto, folder = "<ModelProto>", model, None
    else:
        path = Path(model)
        source, folder = str(path), path.parent
        if not path.exists():
            raise ModelLoadError(f"{source}: no such file", "check the path")
        if path.is_dir():
            raise ModelLoadError(f"{source}: is a directory, not an .onnx file",
                                 "to run a compiled artifact directory use `dlc run DIR`")
        memory_limit.check(path.stat().st_size, limit, f"reading {source}")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ModelLoadError(f"{source}: cannot read the file ({error.strerror})") from None
        if not data:
            raise ModelLoadError(f"{source}: the file is empty", "an ONNX model is a binary protobuf file")
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception as error:  # protobuf raises DecodeError and friends
            raise ModelLoadError(f"{source}: not an ONNX model (protobuf parse failed: {error})",
                                 "an ONNX model is a binary protobuf file; is this file truncated or "
                                 "another format?") from None
        if not proto.HasField("graph") or not proto.graph.node and not proto.graph.output:
            raise ModelLoadError(f"{source}: not an ONNX model (no graph found; truncated file?)")
    _check_text_fields(proto, source)
    proto = _topologically_sorted(proto, source)
    _check_operators_exist(proto, source)
    proto = _with_external_data(proto, source, folder, limit)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ModelLoadError(f"{source}: fails onnx.checker: {first_line}") from None
    _check_tensor_lengths(proto, source)
    return proto


def _stored_tensors(graph: onnx.GraphProto):
    """(tensor, where) for each initializer and each tensor attribute of a node."""
    for init in graph.initializer:
        yield init, f"initializer '{init.name}'"
    for index, node in enumerate(graph.node):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t, f"attribute '{attr.name}' of {_describe(node, index)}"


def _check_tensor_lengths(proto: onnx.ModelProto, source: str) -> None:
    """Every stored tensor holds exactly as many values as its dims say.

    onnx.checker refuses too few values but not too many, which numpy then fails to reshape.
    """
    for tensor, where in _stored_tensors(proto.graph):
        elements = math.prod(tensor.dims)
        if tensor.data_type in _PACKED_FOUR_BIT or tensor.data_type == onnx.TensorProto.STRING:
            continue
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
        except (KeyError, ValueError, TypeError):
            continue  # an unknown data type: the importer names it where it is used
        if tensor.HasField("raw_data"):
            stored, needed, unit = len(tensor.raw_data), elements * itemsize, "bytes"
        else:
            complex_parts = 2 if tensor.data_type in _COMPLEX else 1
            stored, needed, unit = len(getattr(tensor, field)), elements * complex_parts, "values"
        if stored != needed:
            raise ModelLoadError(f"{source}: {where} has dims {list(tensor.dims)} ({elements} elements, "
                                 f"{needed} {unit}) but holds {stored} {unit}",
                                 "the file is damaged or was written by a faulty exporter; export the "
                                 "model again")


def _check_text_fields(message, source: str, path: str = "model") -> None:
    """Every string field (names, op types, domains) must be UTF-8 text.

    protobuf hands invalid UTF-8 in a proto2 string field back as `bytes` (a bit flip in a
    node name does it); onnx and the IR printer would then fail far from the cause.
    """
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        items = value if repeated else [value]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for index, item in enumerate(items):
                _check_text_fields(item, source, f"{path}.{field.name}[{index}]" if repeated else
                                   f"{path}.{field.name}")
        elif field.type == FieldDescriptor.TYPE_STRING:
            for item in items:
                if not isinstance(item, str):
                    raise ModelLoadError(f"{source}: {path}.{field.name} is not valid UTF-8 text ({item[:60]!r})",
                                         "the file is damaged (or was not written as ONNX); export the "
                                         "model again")


def _describe(node: onnx.NodeProto, index: int) -> str:
    return f"node '{node.name or f'#{index}'}' ({node.op_type})"


def _names_read_by_subgraphs(node: onnx.NodeProto) -> set[str]:
    """Every outer-scope value name a node's If/Loop/Scan bodies read (a body's own inputs and
    values may reuse an outer name, even the node's own output: they are not reads of it)."""
    names: set[str] = set()
    for attr in node.attribute:
        for graph in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            local = {value.name for value in graph.input} | {init.name for init in graph.initializer}
            local |= {name for inner in graph.node for name in inner.output}
            reads = {value.name for value in graph.output}
            for inner in graph.node:
                reads.update(inner.input)
                reads |= _names_read_by_subgraphs(inner)
            names |= reads - local
    return names


def _topologically_sorted(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The model with its nodes in topological order, or a ModelLoadError naming the fault.

    ONNX requires sorted nodes, but onnxruntime sorts them itself, so an unsorted acyclic
    graph is accepted (sorted on a copy); a value produced twice, read but never produced,
    or produced on a cycle is refused with the nodes involved.
    """
    graph = proto.graph
    producer: dict[str, str] = {}
    for name in {*(init.name for init in graph.initializer), *(value.name for value in graph.input)}:
        producer[name] = "a graph input or initializer"
    for index, node in enumerate(graph.node):
        for name in node.output:
            if not name:
                continue
            if name in producer:
                raise ModelLoadError(f"{source}: {_describe(node, index)} writes '{name}', which "
                                     f"{producer[name]} already provides",
                                     "every value needs exactly one producer (ONNX graphs are in SSA "
                                     "form); rename one of them")
            producer[name] = _describe(node, index)
    node_of = {name: index for index, node in enumerate(graph.node) for name in node.output if name}
    needs: list[set[int]] = []
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in producer:
                raise ModelLoadError(f"{source}: {_describe(node, index)} reads '{name}', which no node, "
                                     "graph input or initializer produces",
                                     "the model is incomplete: add the missing input or initializer, "
                                     "or re-export it")
        reads = set(node.input) | _names_read_by_subgraphs(node)
        needs.append({node_of[name] for name in reads if name in node_of})
    if all(all(need < index for need in needs[index]) for index in range(len(needs))):
        return proto  # already sorted: keep the file's order
    order, placed = [], set()
    remaining = list(range(len(graph.node)))
    while remaining:
        ready = [index for index in remaining if needs[index] <= placed]
        if not ready:
            cycle = ", ".join(_describe(graph.node[i], i) for i in remaining[:6])
            more = f" and {len(remaining) - 6} more" if len(remaining) > 6 else ""
            raise ModelLoadError(f"{source}: the graph has a cycle through {cycle}{more}",
                                 "ONNX graphs must be acyclic (loops are written with the Loop "
                                 "operator); check how the model was built")
        order.extend(ready)
        placed.update(ready)
        remaining = [index for index in remaining if index not in placed]
    sorted_proto = onnx.ModelProto()
    sorted_proto.CopyFrom(proto)
    del sorted_proto.graph.node[:]
    sorted_proto.graph.node.extend(graph.node[i] for i in order)
    return sorted_proto


def _check_operators_exist(proto: onnx.ModelProto, source: str) -> None:
    """Nodes of the standard domains must name an operator the ONNX standard defines."""
    versions = {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import}
    local = {(function.domain, function.name) for function in proto.functions}
    for index, node in enumerate(proto.graph.node):
        domain = node.domain or "ai.onnx"
        if (node.domain, node.op_type) in local:
            continue
        if domain not in versions:
            raise ModelLoadError(f"{source}: {_describe(node, index)} uses domain '{domain}', which the "
                                 f"model does not import (its opset imports: {sorted(versions)})",
                                 "add the domain to the model's opset_import, or fix the node's domain")
        if domain not in ("ai.onnx", "ai.onnx.ml"):
            continue
        schema_domain = "" if domain == "ai.onnx" else domain
        if not onnx.defs.has(node.op_type, schema_domain):
            raise ModelLoadError(f"{source}: {_describe(node, index)}: '{node.op_type}' is not an "
                                 f"operator of the ONNX standard (domain {domain})",
                                 "check the op type's spelling; `dlc ops` lists the operators dlc "
                                 "supports")
        try:
            onnx.defs.get_schema(node.op_type, versions[domain], schema_domain)
        except onnx.defs.SchemaError:
            first = onnx.defs.get_schema(node.op_type, schema_domain).since_version
            raise ModelLoadError(f"{source}: {_describe(node, index)}: '{node.op_type}' does not exist at "
                                 f"the model's opset {versions[domain]} of domain {domain} (it was added "
                                 f"in opset {first})",
                                 f"raise the model's opset import to {first} or more") from None


def _with_external_data(proto: onnx.ModelProto, source: str, folder: Path | None,
                        limit: int) -> onnx.ModelProto:
    """The model with its external tensor data read in, from files inside the model's folder.

    A location that is absolute or leaves the folder (`../`, a symbolic link out) is refused:
    a downloaded model must not make dlc read arbitrary files.
    """
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    external = [tensor for tensor in _get_all_tensors(proto) if uses_external_data(tensor)]
    if not external:
        return proto
    if folder is None:
        raise ModelLoadError(f"{source}: tensor '{external[0].name}' keeps its data in an external file, "
                             "and a ModelProto in memory has no folder to find it in",
                             "pass the model's path instead (dlc reads the data from its folder), or "
                             "load it with onnx.load(path)")
    root = folder.resolve()
    total = 0
    for tensor in external:
        try:
            info = ExternalDataInfo(tensor)
        except ValueError as error:
            raise ModelLoadError(f"{source}: tensor '{tensor.name}': bad external data entry ({error})") from None
        if "\0" in info.location:
            raise ModelLoadError(f"{source}: tensor '{tensor.name}' keeps its data in "
                                 f"{info.location!r}, a location with a NUL character",
                                 "the file is damaged: no file name holds a NUL; export the model again")
        where = f"{source}: tensor '{tensor.name}' keeps its data in '{info.location}'"
        if not info.location:
            raise ModelLoadError(f"{where}: the external data entry has no location")
        if Path(info.location).is_absolute():
            raise ModelLoadError(f"{where}, an absolute path; external data must be a file inside the "
                                 f"model's folder {folder}", "refused for safety: move the data file "
                                 "next to the model and give its relative name")
        file = (root / info.location).resolve()
        if not file.is_relative_to(root):
            raise ModelLoadError(f"{where}, which is outside the model's folder {folder}",
                                 "refused for safety: move the data file next to the model and give "
                                 "its relative name")
        if not file.is_file():
            raise ModelLoadError(f"{where}, which does not exist in {folder}",
                                 "copy the data file next to the model (onnx.save writes it there)")
        size = file.stat().st_size
        offset = info.offset or 0
        length = info.length if info.length is not None else size - offset
        if offset + length > size:
            raise ModelLoadError(f"{where} at bytes {offset}..{offset + length}, but the file has "
                                 f"{size} bytes", "the data file is truncated or belongs to another model")
        total += length
    memory_limit.check(total, limit, f"reading the external data of {source}")
    loaded = onnx.ModelProto()
    loaded.CopyFrom(proto)
    from onnx.external_data_helper import load_external_data_for_model

    try:
        load_external_data_for_model(loaded, str(root))
    except Exception as error:
        raise ModelLoadError(f"{source}: cannot read its external data: {error}") from None
    return loaded


def opset_of(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return CANONICAL_OPSET


def _fix_input_shapes(model: onnx.ModelProto, input_shapes: dict) -> None:
    """Pin the inputs' shapes (by input or dimension name: dlc/frontend/input_shapes.py); every
    input left with a symbolic dimension is named in one error."""
    real = {value.name: value for value in graph_inputs(model)}
    input_shapes = resolve_input_shapes(model, input_shapes)
    left = {}
    for name, value in real.items():
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise UnsupportedError(f"input '{name}' is not a tensor (sequences and maps are not supported)")
        if name in input_shapes:
            shape = input_shapes[name]
            if tensor_type.HasField("shape") and len(tensor_type.shape.dim) != len(shape):
                raise ModelLoadError(f"--shape {name}: the model declares rank "
                                     f"{len(tensor_type.shape.dim)}, got {len(shape)} dims {list(shape)}")
            for axis, (dim, size) in enumerate(zip(tensor_type.shape.dim, shape)):
                # Only symbolic dimensions are the user's to fix: a static one is what the
                # model's weights and reshapes were built for (issue 17: it was overridden).
                if dim.HasField("dim_value") and dim.dim_value != size:
                    declared = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                for d in tensor_type.shape.dim]
                    raise ModelLoadError(
                        f"--shape {name}: axis {axis} of input '{name}' is static ({dim.dim_value}) in the "
                        f"model, got {size}; --shape fixes symbolic dimensions only (declared {declared})",
                        "keep the model's static sizes, or export the model with a symbolic dimension there")
            tensor_type.shape.ClearField("dim")
            for size in shape:
                tensor_type.shape.dim.add().dim_value = int(size)
            continue
        if not tensor_type.HasField("shape"):
            raise UnsupportedError(f"input '{name}' has no declared shape",
                                   f"fix it with --shape {name}=1x3x224x224 (input_shapes= in dlc.compile)")
        for axis, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                raise ModelLoadError(f"input '{name}' declares dimension {dim.dim_value} on axis {axis}; "
                                     "dimensions cannot be negative",
                                     f"fix the model, or give the shape with --shape {name}=... "
                                     f"(input_shapes={{'{name}': (...)}} in dlc.compile)")
        if any(not dim.HasField("dim_value") for dim in tensor_type.shape.dim):
            left[name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                          for d in tensor_type.shape.dim]
    if left:
        raise unpinned_error(model, left)


def _convert_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    version = opset_of(model)
    if version == CANONICAL_OPSET:
        return model
    # Opsets below 7 are tried too: the version converter upgrades many of them.
    if _same_signatures(model, version):
        # Newer opsets mostly widen type lists (bfloat16, float8): where every node's
        # signature is the canonical one, relabelling is exact, while the version
        # converter has no down-adapters for many ops. From an older opset whose ops all
        # kept their schema up to the canonical one, the converter would only relabel too,
        # after copying the model (8 ms of a one-node compile).
        for entry in model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = CANONICAL_OPSET
        return model
    light, weights = _without_weights(model)
    try:
        converted = version_converter.convert_version(light, CANONICAL_OPSET)
    except Exception as error:
        raise UnsupportedError(f"could not convert the model from opset {version} to dlc's canonical "
                               f"opset {CANONICAL_OPSET}: {str(error).strip().splitlines()[0]}",
                               f"dlc reads opsets 7 to {onnx.defs.onnx_opset_version()} (older ones when the "
                               "ONNX version converter can upgrade them)") from None
    if version < 11:
        _keep_old_resize_semantics(converted)
    _restore_declared_output_types(model, converted)
    _put_back_weights(converted, weights, {value.name for value in model.graph.input})
    return converted


def _is_weight(tensor: onnx.TensorProto) -> bool:
    elements = 1
    for size in tensor.dims:
        elements *= size
    return elements > _VALUE_ELEMENTS and tensor.data_type != onnx.TensorProto.STRING


def _weight_input(name: str, elem_type: int, shape) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(name, elem_type, list(shape))


def _without_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """A copy of `model` whose weights (initializers larger than _VALUE_ELEMENTS) are typed graph
    inputs, and those weights: what the version converter needs, without serialising them."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    graph = light.graph
    weights = [tensor for tensor in model.graph.initializer if _is_weight(tensor)]
    if not weights:
        return light, []
    names = {tensor.name for tensor in weights}
    kept = [tensor for tensor in graph.initializer if tensor.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    listed = {value.name for value in graph.input}
    graph.input.extend(_weight_input(t.name, t.data_type, t.dims) for t in weights if t.name not in listed)
    light.ir_version = max(light.ir_version, 4)  # initializers that are not inputs (IR 3 wanted them listed)
    return light, weights


def _put_back_weights(model: onnx.ModelProto, weights: list[onnx.TensorProto], inputs: set[str]) -> None:
    """Undo `_without_weights` on the converted model: initializers again, inputs as before."""
    if not weights:
        return
    names = {tensor.name for tensor in weights}
    real = [value for value in model.graph.input if value.name not in names or value.name in inputs]
    del model.graph.input[:]
    model.graph.input.extend(real)
    model.graph.initializer.extend(weights)


def _restore_declared_output_types(original: onnx.ModelProto, converted: onnx.ModelProto) -> None:
    """The version converter re-infers graph outputs: it can replace declared static shapes with
    symbolic ones (an intermediate listed as an output) and fill in ONNX's own sizes where the
    model declared none (wrong for ceil_mode pools, see _ceil_pool_proxy); the declaration stands."""
    declared = {value.name: value.type for value in original.graph.output}
    for value in converted.graph.output:
        if value.name in declared:
            value.type.CopyFrom(declared[value.name])


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


def _default_domain_ops(graph: onnx.GraphProto) -> set[str]:
    """The op types of the ONNX-domain nodes of `graph` and of its subgraphs (If, Loop, Scan)."""
    ops = set()
    for node in graph.node:
        if node.domain in ("", "ai.onnx"):
            ops.add(node.op_type)
        for attribute in node.attribute:
            for body in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                ops |= _default_domain_ops(body)
    return ops


def _same_signatures(model: onnx.ModelProto, version: int) -> bool:
    """Does every node mean at opset `version` what it means at the canonical opset? Newer: its
    signature is the canonical one (newer opsets mostly widen type lists). Older: no op
    changed in between and none is deprecated (the version converter would only relabel)."""
    for op_type in _default_domain_ops(model.graph):
        try:
            other = onnx.defs.get_schema(op_type, version, "")
            canonical = onnx.defs.get_schema(op_type, CANONICAL_OPSET, "")
        except onnx.defs.SchemaError:
            return False
        if version > CANONICAL_OPSET:
            if other.since_version > CANONICAL_OPSET and _signature(other) != _signature(canonical):
                return False
        elif other.since_version != canonical.since_version or canonical.deprecated:
            return False
    return True


def _static_shape(value_type: onnx.TypeProto) -> tuple[int, ...] | None:
    if not value_type.HasField("tensor_type") or not value_type.tensor_type.HasField("shape"):
        return None
    dims = value_type.tensor_type.shape.dim
    if any(not d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


def _constant_of_shape(node: onnx.NodeProto, inputs: list[np.ndarray | None]) -> list[np.ndarray] | None:
    """ConstantOfShape as onnx's reference evaluator computes it (np.full of the value's one
    element, float32 0 without one), or None for what it should judge (an odd value)."""
    attribute = next((a for a in node.attribute if a.name == "value"), None)
    fill = np.array(0, dtype=np.float32) if attribute is None else numpy_helper.to_array(attribute.t)
    if fill.size != 1 or fill.dtype.kind not in "biuf" or len(inputs) != 1 or inputs[0] is None:
        return None
    shape = tuple(int(size) for size in inputs[0])
    value = fill if attribute is None else fill.flat[0]
    if math.prod(shape) * fill.dtype.itemsize < _SHARED_FILL_BYTES:
        return [np.full(shape, value)]
    key = (shape, fill.dtype.str, fill.tobytes())
    array = _SHARED_FILLS.get(key)
    if array is None:
        array = np.full(shape, value)
        array.flags.writeable = False  # shared: whoever wants other values makes a new array
        _SHARED_FILLS[key] = array
    return [array]


# Equal large fills are one read-only array: the light model zoo's models make every weight
# with ConstantOfShape, and layers repeat shapes (ResNet-50: 239 fills, 102 MB, 46 MB of
# them distinct; filling fresh memory was the import's largest cost, issue 16). Weakly held:
# an array lives as long as a model that reads it.
_SHARED_FILL_BYTES = 64 << 10
_SHARED_FILLS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


# Operators folded here rather than by a ReferenceEvaluator built per node (~0.3 ms each:
# a model that makes its weights with ConstantOfShape, as the light model zoo's do, has one
# per weight, DenseNet-121 1,320).
_DIRECT = {"ConstantOfShape": _constant_of_shape}


def _evaluate(node: onnx.NodeProto, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    direct = _DIRECT.get(node.op_type)
    outputs = direct(node, inputs) if direct is not None else None
    if outputs is not None:
        return outputs
    from onnx.reference import ReferenceEvaluator  # imported only here: 10-60 ms (issue 16)

    feeds = {name: value for name, value in zip(node.input, inputs) if name}
    # NaN and Inf weights fold to what IEEE arithmetic gives, as at run time: no warnings.
    with np.errstate(all="ignore"):
        return ReferenceEvaluator(node, opsets={"": CANONICAL_OPSET}).run(None, feeds)


def _ints(node: onnx.NodeProto, name: str) -> list[int]:
    return next((list(attr.ints) for attr in node.attribute if attr.name == name), [])


def _check_window_attributes(graph: onnx.GraphProto) -> None:
    """Kernels, strides, dilations and pads in range, and pools' pads shorter than the kernel
    (onnxruntime refuses longer ones; windows that are all padding would read -inf or 0/0)."""
    for index, node in enumerate(graph.node):
        if node.op_type not in _WINDOW_OPS or node.domain not in ("", "ai.onnx"):
            continue
        for name, least in (("kernel_shape", 1), ("strides", 1), ("dilations", 1), ("pads", 0)):
            bad = [value for value in _ints(node, name) if not least <= value < _MAX_WINDOW_ATTRIBUTE]
            if bad:
                raise ModelLoadError(f"{_describe(node, index)}: attribute {name}={_ints(node, name)} "
                                     f"has {bad[0]}, outside {least}..{_MAX_WINDOW_ATTRIBUTE - 1}",
                                     f"fix the node's {name}: a window that size fits no tensor")
        kernel, pads = _ints(node, "kernel_shape"), _ints(node, "pads")
        if node.op_type in _POOLS and len(pads) == 2 * len(kernel):
            too_long = [axis for axis in range(len(pads)) if pads[axis] >= kernel[axis % len(kernel)]]
            if too_long:
                raise ModelLoadError(f"{_describe(node, index)}: pads {pads} are not all shorter than "
                                     f"kernel_shape {kernel}",
                                     "onnxruntime refuses such pools too (windows made only of padding "
                                     "have no value); make each pad smaller than the kernel")


def _check_dimensions(graph: onnx.GraphProto, types: dict[str, onnx.TypeProto],
                      constants: dict[str, np.ndarray]) -> None:
    """Refuse the shapes ONNX inference computes but no tensor can have, naming the node:
    negative dimensions (a kernel larger than its padded input, a negative Pad, Split or
    Resize scale), an element count beyond int64, and Conv outputs of size 0 (which
    onnxruntime refuses; zero-size tensors elsewhere are valid ONNX)."""
    for index, node in enumerate(graph.node):
        for name in node.output:
            shape = _static_shape(types[name]) if name in types else None
            if shape is None:
                continue
            nonzero = math.prod(size for size in shape if size)
            empty_conv = node.op_type in ("Conv", "ConvTranspose") and 0 in shape
            if min(shape, default=0) >= 0 and nonzero <= _INT64_MAX and not empty_conv:
                continue
            what = ("an element count beyond int64" if nonzero > _INT64_MAX else
                    "a negative dimension" if min(shape) < 0 else "an empty spatial dimension")
            inputs = ", ".join(_value_text(value, types, constants) for value in node.input if value)
            raise ModelLoadError(f"{_describe(node, index)} computes output '{name}' of shape "
                                 f"{list(shape)}, {what}; its inputs: {inputs}",
                                 "fix the node's attributes or constant inputs (kernel, pads, "
                                 "split sizes, scales, target shape) so they fit its inputs' shapes; "
                                 "onnxruntime refuses this model too")


def _value_text(name: str, types: dict[str, onnx.TypeProto], constants: dict[str, np.ndarray]) -> str:
    """`'x' float32[1, 3]`, or a small constant with its values: `'pads' int64[4] = [0, -3, 0, -3]`."""
    array = constants.get(name)
    if array is None:
        return f"'{name}' {_type_text(types.get(name))}"
    values = f" = {array.ravel().tolist()}" if array.size <= 8 else ""
    return f"'{name}' {array.dtype}{list(array.shape)}{values}"


def _ceil_pool_proxy(node: onnx.NodeProto, types: dict[str, onnx.TypeProto]) -> list | None:
    """The attributes of a floor_mode pool of the size the ONNX spec gives ceil_mode `node`
    (windows starting in the end padding dropped), or None where ONNX sizes it right."""
    if node.op_type not in _POOLS:
        return None
    present = {attr.name: attr for attr in node.attribute}
    ceil = "ceil_mode" in present and present["ceil_mode"].i
    explicit = "auto_pad" not in present or present["auto_pad"].s in (b"", b"NOTSET")
    shape = _static_shape(types[node.input[0]]) if node.input[0] in types else None
    if not ceil or not explicit or shape is None:
        return None
    kernel = _ints(node, "kernel_shape")
    rank = len(kernel)
    pads = _ints(node, "pads") or [0] * (2 * rank)
    strides = _ints(node, "strides") or [1] * rank
    dilations = _ints(node, "dilations") or [1] * rank
    spatial = shape[2:]
    if len(spatial) != rank or len(pads) != 2 * rank:
        return None  # ONNX inference reports the mismatch
    end_pads = []
    for axis in range(rank):
        extent = dilations[axis] * (kernel[axis] - 1) + 1
        padded = spatial[axis] + pads[axis] + pads[axis + rank]
        count = -(-(padded - extent) // strides[axis]) + 1
        if (count - 1) * strides[axis] >= spatial[axis] + pads[axis]:
            count -= 1
        # floor((spatial + begin + end - extent) / stride) + 1 == count for this end pad.
        end_pads.append(count * strides[axis] - 1 + extent - spatial[axis] - pads[axis])
    proxy = [attr for attr in node.attribute if attr.name not in ("ceil_mode", "pads")]
    proxy.append(onnx.helper.make_attribute("pads", pads[:rank] + end_pads))
    return proxy


class _Folder:
    """Shape inference and constant folding over the graph, until a fixed point."""

    def __init__(self, model: onnx.ModelProto, limit: int | None = None, native_loops: bool = True):
        self.model = model
        self.native_loops = native_loops
        self.limit = limit if limit is not None else memory_limit.resolve_limit()
        self.constants: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        self.types: dict[str, onnx.TypeProto] = {}
        self._position = 0  # the place in the graph of the node being folded (for messages)
        self._weight_bytes, self._weights_counted = 0, 0  # a running sum over self.constants

    def run(self) -> None:
        _check_window_attributes(self.model.graph)
        if any(node.op_type in _POOLS for node in self.model.graph.node):
            # ceil_mode pools are sized from their inputs' shapes (_ceil_pool_proxy), needed
            # before the first strict inference, which a declared output after them would fail.
            try:
                self._stage_weights()
                self.types = _value_types(onnx.shape_inference.infer_shapes(self.model))
            except Exception:  # noqa: BLE001 - the strict inference reports the fault
                pass
        try:
            for _ in range(_MAX_FOLD_ITERATIONS):
                self._infer_types()
                if not self._fold_once() and not expand_control_flow(self.model.graph, self.constants,
                                                                     self.types, self.native_loops):
                    return
        finally:  # the weights' typed inputs were for inference only
            graph = self.model.graph
            real = [value for value in graph.input if value.name not in self.constants]
            del graph.input[:]
            graph.input.extend(real)

    def _infer_types(self) -> None:
        self._shorten_slice_steps()
        self._stage_weights()
        # First without data propagation, which is cheap and cannot allocate: a Range or
        # ConstantOfShape of billions of elements is refused before data propagation (which
        # materialises such values) or folding does allocate it.
        self._infer(data_prop=False)
        # A ceil_mode pool is sized right only once its input's shape is known (_sized_pools):
        # infer again while inference reveals more of them.
        sized = None
        while sized != (sized := self._sized_pools()):
            self._infer(data_prop=True)

    def _stage_weights(self) -> None:
        """The graph as inference reads it: the constants it uses as initializers, weights as
        typed inputs (_VALUE_ELEMENTS)."""
        graph = self.model.graph
        del graph.initializer[:]
        used = {name for node in graph.node for name in (*node.input, *_names_read_by_subgraphs(node))}
        used |= {o.name for o in graph.output}
        weights = {name for name in used if name in self.constants and self._is_weight(self.constants[name])}
        graph.initializer.extend(numpy_helper.from_array(array, name)
                                 for name, array in self.constants.items() if name in used and name not in weights)
        # IR 3 lists initializers as inputs; shape inference and the checker dislike
        # initializers that are inputs once they are ours to manage. Weights are typed
        # inputs while inferring (_VALUE_ELEMENTS), removed again when folding ends.
        real = [value for value in graph.input if value.name not in self.constants]
        del graph.input[:]
        graph.input.extend(real)
        graph.input.extend(_weight_input(name, onnx.helper.np_dtype_to_tensor_dtype(self.constants[name].dtype),
                                         self.constants[name].shape) for name in sorted(weights))
        del graph.value_info[:]
        # From IR version 4 on, initializers need not be inputs (IR 3 required it).
        self.model.ir_version = max(self.model.ir_version, 4)

    @staticmethod
    def _is_weight(array: np.ndarray) -> bool:
        return array.size > _VALUE_ELEMENTS and array.dtype.kind in "biuf"

    def _infer(self, data_prop: bool) -> None:
        self.types = _value_types(self._inferred(data_prop))
        _check_dimensions(self.model.graph, self.types, self.constants)
        self._check_memory()

    def _sized_pools(self) -> int:
        return sum(1 for node in self.model.graph.node if _ceil_pool_proxy(node, self.types))

    def _shorten_slice_steps(self) -> None:
        """Constant Slice steps longer than _MAX_SLICE_STEP become that long (same result)."""
        for node in self.model.graph.node:
            steps = self.constants.get(node.input[4]) if node.op_type == "Slice" and len(node.input) > 4 \
                else None
            if steps is None or np.abs(steps.astype(object)).max(initial=0) <= _MAX_SLICE_STEP:
                continue
            name = f"{node.input[4]}.shortened"
            self.constants[name] = np.clip(steps, -_MAX_SLICE_STEP, _MAX_SLICE_STEP).astype(steps.dtype)
            node.input[4] = name

    def _inferred(self, data_prop: bool) -> onnx.ModelProto:
        # ONNX sizes ceil_mode pools without dropping the windows that start in the end
        # padding (onnx 1.17); onnxruntime and the spec drop them. The pools are inferred as
        # the floor_mode pools of the same size, then restored.
        originals = {}
        for node in self.model.graph.node:
            proxy = _ceil_pool_proxy(node, self.types)
            if proxy is not None:
                originals[id(node)] = (node, list(node.attribute))
                del node.attribute[:]
                node.attribute.extend(proxy)
        try:
            return onnx.shape_inference.infer_shapes(self.model, check_type=True, strict_mode=True,
                                                     data_prop=data_prop)
        except MemoryError:
            raise _memory_error("ONNX shape inference (data propagation)") from None
        except Exception as error:
            if "bad_alloc" in str(error):
                raise _memory_error("ONNX shape inference (data propagation)") from None
            raise _inference_error(self.model, error) from None
        finally:
            for node, attributes in originals.values():
                del node.attribute[:]
                node.attribute.extend(attributes)

    def _check_memory(self) -> None:
        """Inputs, outputs, weights and the largest intermediate must fit under the limit."""
        graph = self.model.graph
        sizes = {name: _type_bytes(value_type) for name, value_type in self.types.items()}
        io_names = {v.name for v in graph.input if v.name not in self.constants} | {v.name for v in graph.output}
        inputs_outputs = sum(sizes.get(name) or 0 for name in io_names)
        weights = sum(array.nbytes for array in self.constants.values())
        intermediates = {name: size for name, size in sizes.items()
                         if size and name not in io_names and name not in self.constants}
        largest = max(intermediates, key=intermediates.get, default=None)
        largest_bytes = intermediates.get(largest, 0)
        parts = {"inputs and outputs": inputs_outputs, "weights": weights,
                 f"largest intermediate '{largest}' {_type_text(self.types.get(largest))}": largest_bytes}
        memory_limit.check(inputs_outputs + weights + largest_bytes, self.limit, "this model", parts)

    def _fold_once(self) -> bool:
        graph = self.model.graph
        kept, folded = [], False
        for self._position, node in enumerate(graph.node):
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
        if node.op_type == "DequantizeLinear":
            # Kept: fuse-qdq-contractions needs a weight's integers and scales (the integer
            # kernel); fold-constants folds the DequantizeLinears it leaves.
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
        self._check_fold_size(node)
        check_foldable(_describe(node, self._position), node.op_type,
                       [self.constants.get(name) for name in node.input])
        try:
            return _evaluate(node, [self.constants.get(name) for name in node.input])
        except MemoryError:
            raise _memory_error(f"constant folding {_describe(node, self._position)}") from None
        except Exception:
            return None  # leave it to the compiler, which reports a precise error

    def _check_fold_size(self, node: onnx.NodeProto) -> None:
        """Folding allocates the node's outputs as weights: refuse it above the limit first."""
        outputs = {name: self._fold_output_bytes(node, name) for name in node.output if name}
        weights = self._weights_so_far()
        shapes = ", ".join(f"'{name}' {_type_text(self.types.get(name))}" for name in outputs)
        memory_limit.check(weights + sum(outputs.values()), self.limit,
                           f"constant folding {_describe(node, self._position)} into {shapes}",
                           {"its outputs": sum(outputs.values()), "weights so far": weights})

    def _weights_so_far(self) -> int:
        """Bytes of self.constants, which only grows: summing it all for every fold was quadratic."""
        if len(self.constants) != self._weights_counted:
            new = itertools.islice(self.constants.values(), self._weights_counted, None)
            self._weight_bytes += sum(array.nbytes for array in new)
            self._weights_counted = len(self.constants)
        return self._weight_bytes

    def _fold_output_bytes(self, node: onnx.NodeProto, name: str) -> int:
        """What folding `node` allocates for output `name`: its ONNX type's size, else what the
        operator computes its output shape from (ONNX sizes no MaxUnpool given output_shape)."""
        known = _type_bytes(self.types.get(name))
        if known is not None:
            return known
        inputs = [self.constants.get(input_name) for input_name in node.input]
        if node.op_type == "MaxUnpool" and len(inputs) > 2 and inputs[2] is not None:
            elements = int(np.prod([max(int(size), 0) for size in inputs[2]], dtype=object))
            return elements * inputs[0].itemsize
        # The other operators ONNX cannot size from constant inputs (NonZero, Unique, Compress)
        # select from their inputs: at most one int64 index per input element and axis.
        return sum(array.size * 8 * max(array.ndim, 1) for array in inputs if array is not None)


def _value_types(inferred: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    return {v.name: v.type for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}


def _type_bytes(value_type: onnx.TypeProto | None) -> int | None:
    """Bytes of a static tensor type (None: not a tensor, or a dimension unknown)."""
    if value_type is None:
        return None
    shape = _static_shape(value_type)
    if shape is None or not value_type.tensor_type.elem_type:
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(value_type.tensor_type.elem_type).itemsize
    except (KeyError, ValueError, TypeError):
        itemsize = 1
    # Python ints (no overflow at 1e20 elements); math.prod, not np.prod: 13,874 calls on
    # DenseNet-121, 0.1 s.
    return math.prod(shape) * itemsize


def _type_text(value_type: onnx.TypeProto | None) -> str:
    """`float32[50000, 50000]`, or `?` when unknown."""
    if value_type is None or not value_type.HasField("tensor_type"):
        return "?"
    tensor_type = value_type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except (KeyError, ValueError, TypeError):
        dtype = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
    if not tensor_type.HasField("shape"):
        return f"{dtype}[?]"
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
    return f"{dtype}[{', '.join(dims)}]"


def _memory_error(what: str) -> Exception:
    from dlc.errors import MemoryLimitError

    return MemoryLimitError(f"{what} ran out of memory",
                            "the model makes tensors too big for this machine; check its shapes, or "
                            f"set a lower limit with --max-memory / ${memory_limit.ENV_VARIABLE} so dlc "
                            "refuses such models up front")


def _inference_error(model: onnx.ModelProto, error: Exception) -> ModelLoadError:
    """ONNX shape inference refused the model: name the node, its op type and its inputs' types."""
    import re

    text = str(error).strip().splitlines()[0]
    # onnx nests the reason: "Inference error(s): (op_type:MatMul, node name: mm): [ShapeInferenceError] ..."
    located = re.findall(r"\(op_type:(\w+)(?:, node name: ([^)]*))?\):\s*(?:\[\w+\]\s*)?", text)
    reason = re.split(r"\(op_type:\w+(?:, node name: [^)]*)?\):\s*(?:\[\w+\]\s*)?", text)[-1].strip()
    if not located:
        return ModelLoadError(f"ONNX shape inference failed: {text}",
                              "the model breaks ONNX's type or shape rules; check it with "
                              "onnx.checker.check_model(model, full_check=True)")
    op_type, node_name = located[0]
    node = next((n for n in model.graph.node if n.name == node_name and n.op_type == op_type), None)
    inputs = ""
    if node is not None:
        try:
            types = _value_types(onnx.shape_inference.infer_shapes(model, strict_mode=False))
        except Exception:
            types = {}
        types.update({init.name: onnx.helper.make_tensor_type_proto(init.data_type, list(init.dims))
                      for init in model.graph.initializer})
        inputs = "; its inputs: " + ", ".join(f"'{name}' {_type_text(types.get(name))}"
                                              for name in node.input if name)
    return ModelLoadError(f"node '{node_name or '?'}' ({op_type}) fails ONNX shape inference: {reason}{inputs}",
                          "the model breaks ONNX's type or shape rules for this operator: fix the shapes or "
                          "dtypes of its inputs (or the --shape given); if onnxruntime runs the model, "
                          "report it to dlc")


def _attribute(attr: onnx.AttributeProto, node: onnx.NodeProto) -> Attribute:
    kind = attr.type
    if kind == onnx.AttributeProto.INT:
        return IntegerAttr(attr.i, i64)
    if kind == onnx.AttributeProto.FLOAT:
        return FloatAttr(attr.f, f32)
    if kind in (onnx.AttributeProto.STRING, onnx.AttributeProto.STRINGS):
        try:
            for text in attr.strings if attr.strings else [attr.s]:
                text.decode()
        except UnicodeDecodeError:
            raise ModelLoadError(f"node '{node.name}' ({node.op_type}): attribute '{attr.name}' is not valid "
                                 "UTF-8 text", "the file is damaged; export the model again") from None
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
                 input_shapes: dict[str, tuple[int, ...]] | None = None,
                 max_memory: str | int | None = None, initializers_as_inputs: bool = False,
                 native_loops: bool = True) -> ModuleOp:
    """Import an ONNX model into the `onnx` phase (weights attached to the module).

    max_memory: refuse models whose tensors need more bytes (dlc/runtime/memory_limit.py).
    initializers_as_inputs: an initializer that the model also lists as a graph input (from IR
    version 4 on, a default the caller may override) becomes a real input; otherwise it is a
    constant, recorded in `dlc.constant_inputs` so that feeding it is refused at run time.
    native_loops: keep Loop and Scan as native loops where control_flow.py can (a target that
    runs them: cpu); otherwise they are unrolled.
    """
    limit = memory_limit.resolve_limit(max_memory)
    proto = onnx.ModelProto()
    proto.CopyFrom(load_model(model, limit))
    overridable = _overridable_initializers(proto)
    if initializers_as_inputs and overridable:
        kept = [init for init in proto.graph.initializer if init.name not in overridable]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
        overridable = []
    _fix_input_shapes(proto, dict(input_shapes or {}))
    refuse_unconvertible_control_flow(proto)
    proto = _convert_opset(expand_newer_functions(proto))
    folder = _Folder(proto, limit, native_loops)
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

    def none() -> SSAValue:
        nonlocal none_value
        if none_value is None:
            none_op = NoneOp()
            block.add_op(none_op)
            none_value = none_op.result
        return none_value

    bodies: list[ModuleOp] = []  # Loop bodies compiled once (control_flow.import_native_loop)
    for index, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
            raise UnsupportedError(
                f"node '{node.name}': operator '{node.domain + '.' if node.domain else ''}{node.op_type}' "
                f"(opset {opset_of(proto)}) is not an ONNX operator dlc knows",
                "onnxruntime's QOperator format: quantize with quant_format=QuantFormat.QDQ, whose "
                "Q/DQ pairs dlc runs as integer kernels" if node.domain == "com.microsoft"
                and node.op_type.startswith("QLinear") else "`dlc ops` lists the supported operators")
        if node.op_type in ("Loop", "Scan"):  # one the fold loop left as a loop: it runs natively
            op, body = import_native_loop(node, folder.constants, folder.types, value_of, none, weights,
                                          f"loop_{len(bodies)}", lambda body_model: import_model(
                                              body_model, max_memory=max_memory), _tensor_type)
            bodies.append(body)
            for name, result in zip(node.output, op.results):
                if name:
                    result.name_hint = _ssa_name(name)
                    values[name] = result
            block.add_op(op)
            continue
        operands = [value_of(name) if name else none() for name in node.input]
        attributes = {attr.name: _attribute(attr, node) for attr in node.attribute}
        attributes["onnx_node_name"] = StringAttr(node.name)
        where = f"output of node '{node.name}' ({node.op_type})"
        # An empty output name is an optional output the model does not want (LSTM's Y):
        # a `none` result, as an absent input is an `onnx.none` operand.
        result_types = [_tensor_type(name, folder.types.get(name, onnx.TypeProto()), where)
                        if name else NoneType() for name in node.output]
        if node.op_type == "Reshape":
            _check_reshape(node, operands[0].type, result_types[0])
        op = OPS[node.op_type].create(operands=operands, result_types=result_types, attributes=attributes)
        for name, result in zip(node.output, op.results):
            if name:
                result.name_hint = _ssa_name(name)
                values[name] = result
        block.add_op(op)

    outputs = [value_of(out.name) for out in graph.output]
    block.add_op(func.ReturnOp(*outputs))
    main = func.FuncOp("main", (input_types, [v.type for v in outputs]), Region(block))
    main.attributes["dlc.input_names"] = ArrayAttr([StringAttr(v.name) for v in inputs])
    main.attributes["dlc.output_names"] = ArrayAttr([StringAttr(v.name) for v in graph.output])
    module = ModuleOp([*bodies, main])
    if overridable:
        module.attributes["dlc.constant_inputs"] = ArrayAttr([StringAttr(name) for name in overridable])
    attach_weights(module, weights)
    return module


def _overridable_initializers(model: onnx.ModelProto) -> list[str]:
    """Initializers also listed as graph inputs, which IR >= 4 lets a caller override (onnxruntime
    does); IR 3 required every initializer to be listed, so there they are plain constants."""
    if model.ir_version < 4:
        return []
    listed = {value.name for value in model.graph.input}
    return [init.name for init in model.graph.initializer if init.name in listed]


def _check_reshape(node: onnx.NodeProto, source: TensorType, result: TensorType) -> None:
    """ONNX shape inference takes Reshape's constant target shape on trust, whatever its element
    count; compiled code would then read past the input (onnxruntime refuses at run time)."""
    before, after = source.get_shape(), result.get_shape()
    if int(np.prod(before, dtype=np.int64)) != int(np.prod(after, dtype=np.int64)):
        raise ModelLoadError(f"node '{node.name}' (Reshape): cannot reshape input '{node.input[0]}' of shape "
                             f"{list(before)} ({int(np.prod(before))} elements) to {list(after)} "
                             f"({int(np.prod(after))} elements)",
                             "fix the target shape (its second input); use -1 for the dimension to infer")


def _ssa_name(name: str) -> str | None:
    """A readable SSA name hint from an ONNX value name (xDSL allows [A-Za-z0-9_.$-])."""
    cleaned = "".join(c if c.isalnum() or c in "_." else "_" for c in name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = f"v{cleaned}"
    return cleaned
