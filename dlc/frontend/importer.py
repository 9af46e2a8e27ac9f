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
    i64,
)
from xdsl.ir import Attribute, Block, Region, SSAValue

from dialects.onnx import CANONICAL_OPSET, NONDETERMINISTIC, OPS, NoneOp, WeightOp
from dialects.types import element_type_for, numpy_dtype_for_onnx
from dialects.weights import WeightStore, attach_weights
from dlc.runtime import memory_limit
from dlc.errors import ModelLoadError, UnsupportedError

_MAX_FOLD_ITERATIONS = 16


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
    return proto


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
    """Every value name a node's If/Loop/Scan bodies read (they may read outer-scope values)."""
    names: set[str] = set()
    for attr in node.attribute:
        for graph in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in graph.node:
                names.update(inner.input)
                names |= _names_read_by_subgraphs(inner)
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


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs: IR version 3 files also list every initializer as an input."""
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _fix_input_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> None:
    real = {value.name: value for value in graph_inputs(model)}
    for name, shape in input_shapes.items():
        if name not in real:
            raise ModelLoadError(f"--shape names input '{name}', but the model's inputs are "
                                 f"{sorted(real)}")
        if any(not isinstance(size, (int, np.integer)) or size <= 0 for size in shape):
            raise ModelLoadError(f"--shape {name}: dimensions must be positive integers, got {list(shape)}",
                                 f"give every dimension of input '{name}', e.g. --shape {name}=1x3x224x224")
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
            if dim.HasField("dim_value") and dim.dim_value < 0:
                raise ModelLoadError(f"input '{name}' declares dimension {dim.dim_value} on axis {axis}; "
                                     "dimensions cannot be negative",
                                     f"fix the model, or give the shape with --shape {name}=... "
                                     f"(input_shapes={{'{name}': (...)}} in dlc.compile)")
            if not dim.HasField("dim_value"):
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
    _restore_declared_output_types(model, converted)
    return converted


def _restore_declared_output_types(original: onnx.ModelProto, converted: onnx.ModelProto) -> None:
    """The version converter re-infers graph outputs and can replace their declared static
    shapes with symbolic ones (an intermediate listed as an output); the declaration stands."""
    declared = {value.name: value.type for value in original.graph.output
                if _static_shape(value.type) is not None}
    for value in converted.graph.output:
        if value.name in declared and _static_shape(value.type) is None:
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
    # NaN and Inf weights fold to what IEEE arithmetic gives, as at run time: no warnings.
    with np.errstate(all="ignore"):
        return ReferenceEvaluator(node, opsets={"": CANONICAL_OPSET}).run(None, feeds)


class _Folder:
    """Shape inference and constant folding over the graph, until a fixed point."""

    def __init__(self, model: onnx.ModelProto, limit: int | None = None):
        self.model = model
        self.limit = limit if limit is not None else memory_limit.resolve_limit()
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
        # First without data propagation, which is cheap and cannot allocate: a Range or
        # ConstantOfShape of billions of elements is refused before data propagation (which
        # materialises such values) or folding does allocate it.
        self.types = _value_types(self._inferred(data_prop=False))
        self._check_memory()
        self.types = _value_types(self._inferred(data_prop=True))
        self._check_memory()

    def _inferred(self, data_prop: bool) -> onnx.ModelProto:
        try:
            return onnx.shape_inference.infer_shapes(self.model, check_type=True, strict_mode=True,
                                                     data_prop=data_prop)
        except MemoryError:
            raise _memory_error("ONNX shape inference (data propagation)") from None
        except Exception as error:
            if "bad_alloc" in str(error):
                raise _memory_error("ONNX shape inference (data propagation)") from None
            raise _inference_error(self.model, error) from None

    def _check_memory(self) -> None:
        """Inputs, outputs, weights and the largest intermediate must fit under the limit."""
        graph = self.model.graph
        sizes = {name: _type_bytes(value_type) for name, value_type in self.types.items()}
        io_names = {v.name for v in (*graph.input, *graph.output)}
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
        self._check_fold_size(node)
        try:
            return _evaluate(node, [self.constants.get(name) for name in node.input])
        except MemoryError:
            raise _memory_error(f"constant folding node '{node.name}' ({node.op_type})") from None
        except Exception:
            return None  # leave it to the compiler, which reports a precise error

    def _check_fold_size(self, node: onnx.NodeProto) -> None:
        """Folding allocates the node's outputs as weights: refuse it above the limit first."""
        outputs = {name: _type_bytes(self.types.get(name, onnx.TypeProto())) or 0 for name in node.output if name}
        weights = sum(array.nbytes for array in self.constants.values())
        shapes = ", ".join(f"'{name}' {_type_text(self.types.get(name))}" for name in outputs)
        memory_limit.check(weights + sum(outputs.values()), self.limit,
                           f"constant folding node '{node.name}' ({node.op_type}) into {shapes}",
                           {"its outputs": sum(outputs.values()), "weights so far": weights})


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
    return int(np.prod(shape, dtype=object)) * itemsize  # Python ints: no overflow at 1e20 elements


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
            texts = [text.decode() for text in (attr.strings if attr.strings else [attr.s])]
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
                 max_memory: str | int | None = None) -> ModuleOp:
    """Import an ONNX model into the `onnx` phase (weights attached to the module).

    max_memory: refuse models whose tensors need more bytes (dlc/runtime/memory_limit.py).
    """
    limit = memory_limit.resolve_limit(max_memory)
    proto = onnx.ModelProto()
    proto.CopyFrom(load_model(model, limit))
    _fix_input_shapes(proto, dict(input_shapes or {}))
    proto = _convert_opset(proto)
    folder = _Folder(proto, limit)
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
        if node.op_type == "Reshape":
            _check_reshape(node, operands[0].type, result_types[0])
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
