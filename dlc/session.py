"""onnxruntime's session API over dlc, so that a script switches runtimes with one import.

Mirrors onnxruntime's Python API (`onnxruntime.InferenceSession`, `SessionOptions`,
`NodeArg`, `ModelMetadata`, `GraphOptimizationLevel`; onnxruntime 1.x,
https://onnxruntime.ai/docs/api/python/api_summary.html) as far as it maps onto a compiler:
`import dlc as ort` runs `ort.InferenceSession(path).run(None, feed)` unchanged. What does
not map, and how errors differ, is in docs/onnxruntime-compat.md.
"""

from __future__ import annotations

import enum
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from dlc.errors import DlcError, InputError, ModelLoadError

__all__ = ["InferenceSession", "SessionOptions", "GraphOptimizationLevel", "ExecutionMode", "NodeArg",
           "ModelMetadata", "get_available_providers", "get_device"]

CPU_PROVIDER = "CPUExecutionProvider"
# onnxruntime reports an unset model_version as INT64_MAX; scripts that print it should match.
UNSET_MODEL_VERSION = 2**63 - 1


class GraphOptimizationLevel(enum.IntEnum):
    """onnxruntime's levels, with its values; each maps onto one of dlc's fusion levels."""
    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1  # accepted; dlc runs kernels one after another (threads split each kernel)


# DISABLE_ALL: no fusion and no fusing graph rewrites; BASIC: elementwise chains only, like
# onnxruntime's basic level (redundant nodes, simple fusions); EXTENDED and above: every rule.
FUSION_OF_LEVEL = {0: "none", 1: "elementwise", 2: "all", 3: "all", 99: "all"}


class SessionOptions:
    """onnxruntime.SessionOptions' fields that change what dlc builds, and the ones that only
    tune onnxruntime itself (accepted so that scripts run; they change nothing here). As in
    onnxruntime, setting a field that does not exist raises AttributeError."""

    __slots__ = ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level", "execution_mode",
                 "log_severity_level", "log_verbosity_level", "logid", "enable_cpu_mem_arena",
                 "enable_mem_pattern", "enable_mem_reuse", "use_deterministic_compute", "enable_profiling",
                 "optimized_model_filepath", "_free_dimensions", "_config")

    def __init__(self):
        self.intra_op_num_threads = 0  # 0: all cores, as onnxruntime
        self.inter_op_num_threads = 0
        self.graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL
        self.execution_mode = ExecutionMode.ORT_SEQUENTIAL
        self.log_severity_level = 2
        self.log_verbosity_level = 0
        self.logid = ""
        self.enable_cpu_mem_arena = True
        self.enable_mem_pattern = True
        self.enable_mem_reuse = True
        self.use_deterministic_compute = False  # dlc's results never depend on threads anyway
        self.enable_profiling = False
        self.optimized_model_filepath = ""
        self._free_dimensions: dict[str, int] = {}
        self._config: dict[str, str] = {}

    def add_free_dimension_override_by_name(self, dim_name: str, dim_value: int) -> None:
        """Fix every symbolic dimension named `dim_name` to `dim_value` (what `--shape` does per input)."""
        self._free_dimensions[dim_name] = int(dim_value)

    def add_session_config_entry(self, key: str, value: str) -> None:
        self._config[key] = value

    def get_session_config_entry(self, key: str) -> str:
        if key not in self._config:
            raise DlcError(f"SessionOptions: no session config entry '{key}'")
        return self._config[key]


@dataclass(frozen=True)
class NodeArg:
    """An input or output as onnxruntime describes it: dims are ints, symbolic names (str) or None."""
    name: str
    shape: list
    type: str


@dataclass(frozen=True)
class ModelMetadata:
    producer_name: str
    graph_name: str
    domain: str
    description: str
    graph_description: str
    version: int
    custom_metadata_map: dict = field(default_factory=dict)


def get_available_providers() -> list[str]:
    return [CPU_PROVIDER]


def get_device() -> str:
    return "CPU"


class InferenceSession:
    """A model compiled by dlc behind onnxruntime's InferenceSession interface.

    path_or_bytes: an .onnx path, the serialised model, or an onnx.ModelProto.
    sess_options: a dlc.SessionOptions (or an onnxruntime.SessionOptions: the same fields are read).
    providers: onnxruntime's provider list; dlc runs on the CPU, so other providers are warned
        about and skipped, as onnxruntime does with providers it was not built with.

    A model whose inputs have only static dimensions (after free-dimension overrides) is
    compiled here; one with symbolic dimensions is a dlc.specializations.SpecializingModel:
    compiled at the first run of each new input shape (then reused; the compile cache keeps
    it across processes), and once for every batch size where the batch proof holds
    (docs/symbolic-shapes.md).
    """

    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
        from dlc.frontend.importer import graph_inputs, load_model

        options = sess_options if sess_options is not None else SessionOptions()
        self._options = options
        self._providers = _check_providers(providers)
        self._source = _model_source(path_or_bytes)
        proto = load_model(self._source)
        self._proto = proto
        overrides = dict(getattr(options, "_free_dimensions", {}))
        self._inputs = [_node_arg(v, overrides) for v in graph_inputs(proto)]
        # Inputs whose symbolic dims the overrides fixed: compiled with those shapes.
        self._overridden = {arg.name: tuple(arg.shape) for arg, value in zip(self._inputs, graph_inputs(proto))
                            if arg != _node_arg(value, {}) and all(isinstance(d, int) for d in arg.shape)}
        self._outputs = [_node_arg(v, overrides) for v in _inferred_outputs(proto)]
        self._threads = _threads(options)
        level = int(getattr(options, "graph_optimization_level", GraphOptimizationLevel.ORT_ENABLE_ALL))
        if level not in FUSION_OF_LEVEL:
            raise DlcError(f"SessionOptions.graph_optimization_level {level}: expected one of "
                           f"{sorted(FUSION_OF_LEVEL)} (GraphOptimizationLevel)")
        self._fusion = FUSION_OF_LEVEL[level]
        if getattr(options, "enable_profiling", False):
            raise DlcError("SessionOptions.enable_profiling: dlc does not write onnxruntime's profile JSON",
                           "time each kernel with `dlc run MODEL.onnx --profile` instead")
        self._models: dict[tuple, object] = {}
        self._specializing = None
        if all(isinstance(d, int) for i in self._inputs for d in i.shape):
            from dlc.errors import UnsupportedError
            from dlc.specializations import value_specializing_model
            from dlc.targets import CompileOptions

            try:
                self._model_for({})
            except UnsupportedError as error:  # a Loop's scan outputs sized at run time: per value
                self._specializing = value_specializing_model(
                    self._source, error, "cpu", CompileOptions(threads=self._threads, fusion=self._fusion),
                    dict(self._overridden), max_shapes=8)
                if self._specializing is None:
                    raise
        else:
            import warnings

            from dlc.frontend.input_shapes import dimension_names
            from dlc.specializations import specializing_model
            from dlc.targets import CompileOptions

            # onnxruntime ignores an override naming no dimension of the model; so does dlc.
            names = dimension_names(proto)
            pins = {**{name: (size,) for name, size in overrides.items() if name in names}, **self._overridden}
            with warnings.catch_warnings():  # a model compiled per batch size is onnxruntime's normal case
                warnings.simplefilter("ignore")
                self._specializing = specializing_model(
                    self._source, proto, "cpu", CompileOptions(threads=self._threads, fusion=self._fusion), pins,
                    max_shapes=8)

    # ------------------------------------------------------------------ onnxruntime's interface

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return list(self._providers)

    def get_provider_options(self) -> dict:
        return {name: {} for name in self._providers}

    def get_session_options(self):
        return self._options

    def get_modelmeta(self) -> ModelMetadata:
        proto = self._proto
        return ModelMetadata(
            producer_name=proto.producer_name, graph_name=proto.graph.name, domain=proto.domain,
            description=proto.doc_string, graph_description=proto.graph.doc_string,
            version=proto.model_version if proto.HasField("model_version") else UNSET_MODEL_VERSION,
            custom_metadata_map={p.key: p.value for p in proto.metadata_props})

    def run(self, output_names, input_feed, run_options=None) -> list:
        """The outputs named in `output_names` (None: all, in the model's order) for `input_feed`
        ({input name: array}), as a list of numpy arrays in that order."""
        import numpy as np

        names = [o.name for o in self._outputs] if output_names is None else list(output_names)
        known = [o.name for o in self._outputs]
        for name in names:
            if name not in known:
                raise InputError(f"run: unknown output name '{name}'; the model's outputs are {known}")
        if not isinstance(input_feed, dict):
            raise InputError(f"run: input_feed must be a dict of input name -> numpy array, "
                             f"got {type(input_feed).__name__}")
        feeds = {name: np.asarray(value) for name, value in input_feed.items()}
        symbolic = self._check_feed(feeds)
        model = self._model_for(symbolic) if self._specializing is None else self._specializing
        outputs = model.run(feeds)
        return [outputs[name] for name in names]

    # ------------------------------------------------------------------ dlc's side

    def _check_feed(self, feeds: dict) -> dict[str, tuple[int, ...]]:
        """Check names, element types and static dims as onnxruntime does before running; return
        the shapes of the inputs with symbolic dimensions (what the compiled model is chosen by)."""
        expected = [i.name for i in self._inputs]
        missing = [name for name in expected if name not in feeds]
        if missing:
            raise InputError(f"run: required input(s) {missing} missing from input_feed (got {sorted(feeds)})")
        unknown = [name for name in feeds if name not in expected]
        if unknown:
            raise InputError(f"run: unknown input name(s) {unknown}; the model's inputs are {expected}")
        symbolic = {}
        for arg in self._inputs:
            value = feeds[arg.name]
            got = _ORT_TYPE_OF_DTYPE.get(value.dtype.str.lstrip("<>=|"), f"numpy {value.dtype}")
            if got != arg.type:
                raise InputError(f"run: input '{arg.name}' has element type {got}, the model expects {arg.type}",
                                 f"convert it, e.g. array.astype(numpy.{_DTYPE_OF_ORT_TYPE.get(arg.type)})")
            if value.ndim != len(arg.shape):
                raise InputError(f"run: input '{arg.name}' has rank {value.ndim} (shape {list(value.shape)}), "
                                 f"the model expects rank {len(arg.shape)} {arg.shape}")
            for axis, (dim, size) in enumerate(zip(arg.shape, value.shape)):
                if isinstance(dim, int) and dim != size:
                    raise InputError(f"run: input '{arg.name}' has size {size} on axis {axis}, the model expects "
                                     f"{dim} (shape {arg.shape}; got {list(value.shape)})")
            if not all(isinstance(d, int) for d in arg.shape):
                symbolic[arg.name] = tuple(value.shape)
        return symbolic

    def _model_for(self, shapes: dict[str, tuple[int, ...]]):
        """The compiled model for these symbolic inputs' shapes (compiled on first use)."""
        # The driver, not dlc.compile: dlc/__init__ imports this module (no import cycle).
        from dlc.driver import compile_model
        from dlc.targets import CompileOptions

        key = tuple(sorted(shapes.items()))
        if key not in self._models:
            self._models[key] = compile_model(
                self._source, options=CompileOptions(threads=self._threads, fusion=self._fusion),
                input_shapes={**self._overridden, **shapes}).executable
        return self._models[key]

    def __repr__(self) -> str:
        return (f"dlc.InferenceSession(inputs={[i.name for i in self._inputs]}, "
                f"outputs={[o.name for o in self._outputs]}, providers={self._providers})")


# ---------------------------------------------------------------------- helpers

_ORT_TYPE_NAMES = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                   8: "string", 9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64",
                   14: "complex64", 15: "complex128", 16: "bfloat16"}
_DTYPE_OF_ORT_TYPE = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
                      "tensor(bool)": "bool_", **{f"tensor({t})": t for t in (
                          "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")}}
_ORT_TYPE_OF_DTYPE = {"f4": "tensor(float)", "f8": "tensor(double)", "f2": "tensor(float16)", "b1": "tensor(bool)",
                      "i1": "tensor(int8)", "i2": "tensor(int16)", "i4": "tensor(int32)", "i8": "tensor(int64)",
                      "u1": "tensor(uint8)", "u2": "tensor(uint16)", "u4": "tensor(uint32)", "u8": "tensor(uint64)"}


def _model_source(path_or_bytes):
    """What dlc.compile takes: a path as is (external data, cache key by file), bytes parsed."""
    import onnx

    if isinstance(path_or_bytes, onnx.ModelProto):
        return path_or_bytes
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(path_or_bytes))
        except Exception as error:  # protobuf raises DecodeError and friends
            raise ModelLoadError(f"InferenceSession: the bytes are not an ONNX model (protobuf parse failed: "
                                 f"{error})", "pass the serialised ModelProto or the .onnx path") from None
        if not proto.HasField("graph"):
            raise ModelLoadError("InferenceSession: the bytes are not an ONNX model (no graph found)",
                                 "pass the serialised ModelProto or the .onnx path")
        return proto
    if isinstance(path_or_bytes, (str, os.PathLike)):
        return str(Path(path_or_bytes))
    raise DlcError(f"InferenceSession: expected a path, bytes or an onnx.ModelProto, "
                   f"got {type(path_or_bytes).__name__}")


def _check_providers(providers) -> list[str]:
    for entry in providers or [CPU_PROVIDER]:
        name = entry[0] if isinstance(entry, tuple) else entry
        if not isinstance(name, str):
            raise DlcError(f"InferenceSession: providers: expected names or (name, options) pairs, got {entry!r}")
        if name != CPU_PROVIDER:
            warnings.warn(f"dlc: provider '{name}' is not available; dlc runs on '{CPU_PROVIDER}'", stacklevel=3)
    return [CPU_PROVIDER]


def _threads(options) -> int | None:
    threads = getattr(options, "intra_op_num_threads", 0)
    if not isinstance(threads, int) or threads < 0:
        raise DlcError(f"SessionOptions.intra_op_num_threads {threads!r}: expected 0 (all cores) or a "
                       "positive number of threads")
    return threads or None


def _node_arg(value, overrides: dict[str, int]) -> NodeArg:
    """A ValueInfoProto as onnxruntime shows it: 'tensor(float)', dims int / symbolic name / None."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return NodeArg(value.name, [], f"unsupported({kind})")
    tensor = value.type.tensor_type
    shape = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(dim.dim_value)
        elif dim.dim_param:
            shape.append(overrides.get(dim.dim_param, dim.dim_param))
        else:
            shape.append(None)
    return NodeArg(value.name, shape, f"tensor({_ORT_TYPE_NAMES.get(tensor.elem_type, 'undefined')})")


def _inferred_outputs(proto):
    """The graph outputs with ONNX shape inference's shapes, as onnxruntime reports them (a
    declared output without a shape gets the inferred one)."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(proto).graph.output
    except Exception:  # inference is best effort here: the compile reports real faults
        return proto.graph.output
