"""A model with symbolic input dimensions, compiled for each input shape it is run with.

What `dlc.compile` returns when the pins leave a dimension symbolic (issue 18). The first run
with a new shape compiles a specialisation (through the driver, so the on-disk compile cache
keeps it across processes: a later process pays a cache load, not a compile); the
specialisations stay in memory, at most `max_shapes` of them (least recently used dropped
first; a dropped one comes back from the disk cache). `save` writes every specialisation held
in one directory (`shapes.json` listing them, one ordinary artifact per shape: docs/artifact.md
"Several shapes"), with the source model beside them when asked, so that a loaded model can
compile shapes it does not hold; without it, such a shape is an error listing those it holds.

Input values, too (docs/architecture.md "Loops"): a Loop whose scan outputs' length is known
only at run time makes the importer name the graph inputs its trip count and condition come
from (`value_inputs`); their values join the key. What a compile depends on is the trip
count and initial condition they give each Loop of the main graph (evaluated from the values
with onnx's reference evaluator), so values that give the same ones share one specialisation
in which those are constants and the values stay run-time inputs (a trip count ceil(n / step)
as onnx's Range body computes it: 10/3 and 11/3 both run 4 times); where the model needs the
values elsewhere to fix a shape, each value set compiles with the values as constants instead.
A Loop that can end early gets a row counter (`counted_outputs`, control_flow.count_rows): its
scan outputs are bounded by the trip count, and `run` returns the rows written.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from dlc.errors import ArtifactError, InputError, UnsupportedError

DEFAULT_MAX_SHAPES = 8
INDEX_FILE, MODEL_FILE = "shapes.json", "model.onnx"
INDEX_FORMAT, INDEX_VERSION = "dlc-shapes", 1
_SHAPE_DIRECTORY = re.compile(r"shape-[0-9]{1,4}")
MAX_INDEX_BYTES = 1 << 20


class InputSpec:
    """An input as declared: dims are ints where static, names (str) where symbolic."""

    __slots__ = ("name", "shape", "dtype")

    def __init__(self, name: str, shape: tuple, dtype: str):
        self.name, self.shape, self.dtype = name, tuple(shape), dtype

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def __repr__(self) -> str:
        return f"InputSpec({self.name!r}, {list(self.shape)}, {self.dtype!r})"


class SpecializingModel:
    """Compiles a specialisation per input shape on first use; `run(feeds) -> {name: array}`.

    compile_shape: input shapes -> executable (None for a loaded artifact without its model).
    held: specialisations already built ({shape key: executable or a loader}).
    """

    def __init__(self, inputs: list[InputSpec], output_names: list[str], target: str, compile_shape,
                 max_shapes: int = DEFAULT_MAX_SHAPES, source: str | Path | bytes | None = None,
                 batch: str | None = None):
        if not isinstance(max_shapes, int) or max_shapes < 1:
            raise InputError(f"max_shapes {max_shapes!r}: expected a positive number of shapes to keep")
        self._inputs = inputs
        self._output_names = list(output_names)
        self.target = target
        self._compile_shape = compile_shape
        self.max_shapes = max_shapes
        self._source = source  # the model's path or bytes, for save(include_model=True)
        self._held: OrderedDict[tuple, object] = OrderedDict()
        self._loaders: dict[tuple, object] = {}  # a loaded artifact's shapes, loaded on first use
        self._lock = threading.Lock()
        self.compiles = 0  # specialisations built by this object (a compile or a cache load)
        # The batch dimension proved sample-independent (dlc/frontend/batch_axis.py): inputs
        # whose leading dimension it is run one sample at a time through a batch-1 compile.
        self.batch = batch
        self.batch_note = ""  # why a model with a symbolic leading dimension is compiled per batch size
        self._batched = {spec.name for spec in inputs if batch is not None and spec.shape[:1] == (batch,)}
        self._contractions: list | None = None  # the proof's, to weigh matrix-vector work per shape
        self._thin: set[tuple] = set()  # shape keys compiled per batch size for their thin contractions
        # Inputs whose values join the key, and scan outputs returned up to their row counter
        # (the importer's `value_inputs` and `counted_outputs`: a Loop's run-time length).
        self._values: list[str] = []
        self._counted: list[str] = []
        self._rows: dict[str, str] = {}  # scan output -> its counter's graph output
        self._proto = None  # the source model, parsed once for a compile per input value
        # The Loops' trip counts and conditions the value inputs fix, and a model computing
        # them (`_derivation`), for the values in `_values` when made; None: key by the values.
        self._derived: tuple | None = None
        self._examples: dict[tuple, tuple] = {}  # a held specialisation's key -> the first feeds' key
        self._shared: dict[tuple, tuple] = {}  # feeds' key -> `_shared_key`, for the runs that follow

    # ------------------------------------------------------------------ CompiledModel's interface

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    @property
    def inputs(self) -> list[InputSpec]:
        """Input specs: name, shape (symbolic dims by name), dtype."""
        return list(self._inputs)

    @property
    def shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The input shapes of the specialisations held (a loaded artifact's first)."""
        return [dict(key) for key in self._keys()]

    @property
    def value_inputs(self) -> list[str]:
        """Inputs whose values are part of the key (a Loop's run-time length comes from them)."""
        return list(self._values)

    def specialisation(self, feeds: dict) -> tuple[object, dict]:
        """The executable these feeds run on and the feeds it takes (without the inputs whose
        values it holds as constants); compiled on first use. Feeds split by sample (a
        batch-proved model) give the batch-1 executable and the first sample's feeds."""
        key = self.shape_key(feeds)
        if self._values or self._counted:
            executable = self.executable_for(key)
            return executable, _own_feeds(executable, feeds, self._values)
        if self._batched and not self._thin_products(key):
            key = tuple((name, (1, *shape[1:]) if name in self._batched else shape) for name, shape in key)
            feeds = {name: value[:1] if name in self._batched else value for name, value in feeds.items()}
        return self.executable_for(key), feeds

    def _keys(self) -> list[tuple]:
        return list(self._loaders) + [self._examples.get(key, key) for key in self._held if key not in self._loaders]

    def run(self, feeds: dict) -> dict:
        while True:  # until the importer asks for no more input values (at most twice)
            key = self.shape_key(feeds)
            try:
                return self._run(key, feeds)
            except UnsupportedError as error:
                if not self._learn(error):
                    raise

    def _run(self, key: tuple, feeds: dict) -> dict:
        if self._values or self._counted:
            executable = self.executable_for(key)
            outputs = executable.run(_own_feeds(executable, feeds, self._values))
            for name, counter in self._rows.items():
                rows = int(outputs.pop(counter))
                if name in outputs:
                    outputs[name] = outputs[name][:rows]
            return outputs
        if not self._batched or self._thin_products(key):
            return self.executable_for(key).run(feeds)
        executable = self.executable_for(tuple((name, (1, *shape[1:]) if name in self._batched else shape)
                                               for name, shape in key))
        size = next(np.shape(feeds[name])[0] for name in self._batched)
        if size == 1:
            return executable.run(feeds)
        # One batch-1 run per sample, each writing its slice of the outputs.
        outputs = {}

        def run_sample(sample: int) -> dict:
            return executable.run({name: value[sample:sample + 1] if name in self._batched else value
                                   for name, value in feeds.items()})

        first = run_sample(0)
        for name, value in first.items():
            outputs[name] = np.empty((size, *value.shape[1:]), value.dtype)
            outputs[name][:1] = value
        # Samples run on as many Python threads as the model has pool threads (the GIL is
        # released during each native call; each run has its own arena, and the pool serves
        # every caller's parallel loops): at batch 8 on 2 cores, 0.81-1.09x of a compile pinned
        # to batch 8 against 1.03-1.18x one sample after another (benchmarks/README.md).
        workers = min(size - 1, getattr(executable, "num_threads", 1))
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                for sample, results in zip(range(1, size), pool.map(run_sample, range(1, size))):
                    for name, value in results.items():
                        outputs[name][sample:sample + 1] = value
        else:
            for sample in range(1, size):
                for name, value in run_sample(sample).items():
                    outputs[name][sample:sample + 1] = value
        return outputs

    def save(self, directory: str | Path, include_model: bool = False) -> None:
        """Every specialisation held, in one directory; with `include_model`, the source model
        too, so that `dlc.load` compiles shapes the directory does not hold."""
        save_index(self, Path(directory), include_model)

    def _learn(self, error) -> bool:
        """Take the importer's `value_inputs` and `counted_outputs` into the key; False when
        the error brings nothing new (then it is the user's)."""
        values = [name for name in getattr(error, "value_inputs", None) or [] if name not in self._values]
        counted = [name for name in getattr(error, "counted_outputs", None) or [] if name not in self._counted]
        unknown = [name for name in values if name not in self.input_names]
        if unknown or not values and not counted:
            return False
        self._values += values
        self._counted += counted
        self._batched = set()  # a loop's inputs are never split by sample
        if values:  # each new value is a compile: say so once, as for batch sizes
            warnings.warn(f"dlc: compiling per value of input(s) {values}: {error.message}", stacklevel=4)
        return True

    def __repr__(self) -> str:
        return (f"SpecializingModel(target={self.target!r}, inputs={self._inputs}, "
                f"shapes held={len(self.shapes)}, max_shapes={self.max_shapes})")

    # ------------------------------------------------------------------ shapes

    def shape_key(self, feeds: dict) -> tuple:
        """(input name, shape) of every input with a symbolic dimension, checked against the
        declared dims: names, ranks and static sizes before anything compiles."""
        if not isinstance(feeds, dict):
            raise InputError(f"inputs must be a dict of name -> numpy array, got {type(feeds).__name__}")
        expected = self.input_names
        unknown = [name for name in feeds if name not in expected]
        if unknown:
            raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {expected}")
        key = []
        for spec in self._inputs:
            if spec.name not in feeds:
                raise InputError(f"missing input '{spec.name}' (shape {list(spec.shape)}, {spec.dtype}); "
                                 f"the model's inputs are {expected}")
            shape = tuple(np.shape(feeds[spec.name]))
            static = all(isinstance(d, int) for d in spec.shape)
            if len(shape) != len(spec.shape) or any(isinstance(d, int) and d != s for d, s in zip(spec.shape, shape)):
                raise InputError(f"input '{spec.name}': expected shape {list(spec.shape)}, got {list(shape)}",
                                 "the named dimensions take any size; the others are fixed by the model "
                                 "(or by the pins given to dlc.compile)")
            if spec.name in self._values:
                value = np.asarray(feeds[spec.name])
                if value.dtype != np.dtype(spec.dtype):
                    raise InputError(f"input '{spec.name}': expected {spec.dtype}, got {value.dtype}")
                key.append((spec.name, ("=", shape, tuple(value.reshape(-1).tolist()))))
            elif not static:
                key.append((spec.name, shape))
        sizes = {shape[0] for name, shape in key if name in self._batched}
        if len(sizes) > 1:
            raise InputError(f"inputs {sorted(self._batched)} share the batch dimension '{self.batch}', "
                             f"got the sizes {sorted(sizes)}", "give every input the same batch size")
        return tuple(key)

    def _thin_products(self, key: tuple) -> bool:
        """Whether this shape's samples would spend too much in matrix-vector products at batch
        1 (dlc/frontend/batch_axis.py MIN_ROWS): then each batch size compiles on its own."""
        if not self._contractions:
            return False
        from dlc.frontend.batch_axis import MAX_THIN_SHARE, thin_share

        sizes = {dim: size for spec in self._inputs for dim, size in zip(spec.shape, dict(key).get(spec.name, ()))
                 if isinstance(dim, str)}
        share = thin_share(self._contractions, sizes)
        if share <= MAX_THIN_SHARE:
            return False
        per_sample = tuple((name, (1, *shape[1:]) if name in self._batched else shape) for name, shape in key)
        if per_sample not in self._thin:
            self._thin.add(per_sample)
            self.batch_note = (f"{share:.0%} of a sample's multiply-adds are in products of fewer than 8 rows, "
                               "faster compiled for the whole batch")
            warnings.warn(f"dlc: compiling per batch size for input shapes {_shape_text(dict(per_sample))}: "
                          f"{self.batch_note}", stacklevel=3)
        return True

    def executable_for(self, key: tuple):
        """The specialisation for `key` (shape_key), compiled or loaded on first use."""
        with self._lock:
            shared = self._shared_key(key)
            for held in (shared, key):
                if held in self._held:
                    self._held.move_to_end(held)
                    return self._held[held]
            if key in self._loaders:
                executable, shared = self._loaders[key](), key
            elif self._compile_shape is None:
                held = "; ".join(_shape_text(dict(k)) for k in self._loaders) or "none"
                raise InputError(f"no specialisation for input shapes {_shape_text(dict(key))}: this artifact "
                                 f"holds {held}",
                                 "feed one of those shapes, or save the model with "
                                 "CompiledModel.save(directory, include_model=True) so that new shapes "
                                 "compile on load")
            else:
                executable, shared = self._compile(key, shared)
                self.compiles += 1
            self._held[shared] = executable
            self._examples.setdefault(shared, key)
            while len(self._held) > self.max_shapes:
                self._examples.pop(self._held.popitem(last=False)[0], None)
            return executable

    def _shared_key(self, key: tuple) -> tuple:
        """The key of what `key`'s compile depends on: its shapes and the trip counts and
        conditions its values give the Loops (`_derivation`); `key` itself where those are not
        known (no source model, a cone the reference evaluator cannot run, or a model that
        needs the values elsewhere)."""
        derivation = self._derivation()
        if derivation is None:
            return key
        if key not in self._shared:
            if len(self._shared) >= 1024:
                self._shared.clear()
            self._shared[key] = self._derive(key, *derivation)
        return self._shared[key]

    def _derive(self, key: tuple, evaluator, heads: list) -> tuple:
        values = {name: np.array(entry[2], np.dtype(self._dtype(name))).reshape(entry[1])
                  for name, entry in key if _is_value(entry)}
        try:
            results = evaluator.run(None, {name: values[name] for name in evaluator.input_names})
        except Exception:  # noqa: BLE001 - then the values themselves key the compile
            return key
        derived = []
        for (node, position, _), value in zip(heads, results):
            flat = np.asarray(value).reshape(-1)
            if flat.size != 1:
                return key
            derived.append((node, position, max(int(flat[0]), 0) if position == 0 else bool(flat[0])))
        return (*((name, entry) for name, entry in key if not _is_value(entry)), (_DERIVED, tuple(derived)))

    def _dtype(self, name: str) -> str:
        return next(spec.dtype for spec in self._inputs if spec.name == name)

    def _derivation(self):
        """(a reference evaluator computing the trip counts and conditions of the main graph's
        Loops that the value inputs fix, [(node index, input position, name)]), or None."""
        if self._derived is not None and self._derived[0] == tuple(self._values):
            return self._derived[1]
        derivation = None
        if self._values and (self._source is not None or self._proto is not None):
            try:
                derivation = _loop_heads(self._source_proto(), set(self._values))
            except Exception:  # noqa: BLE001 - a cone onnx cannot evaluate: key by the values
                derivation = None
        self._derived = (tuple(self._values), derivation)
        self._shared.clear()
        return derivation


    def _compile(self, key: tuple, shared: tuple) -> tuple[object, tuple]:
        """Compile the specialisation for `key` and say which key holds it: `shared` (the
        Loops' trip counts and conditions as constants, the values run-time inputs) or, where
        that does not compile, `key` (the values as constants of the model). Counted Loops get
        their row counters."""
        from dlc.errors import DlcError

        shapes = {name: shape for name, shape in key if not _is_value(shape)}
        if not self._values and not self._counted:
            return self._compile_shape(shapes), key
        if shared != key:
            try:
                return self._compile_proto(key, dict(shared)[_DERIVED]), shared
            except DlcError:
                executable = self._compile_proto(key, None)  # raises the model's own error
                self._derived = (tuple(self._values), None)  # the values fix more than the Loops
                self._shared.clear()
                return executable, key
        return self._compile_proto(key, None), key

    def _compile_proto(self, key: tuple, derived: tuple | None):
        """The source model with the Loops' heads `derived` as constants (the values stay
        inputs), or with the values of `key` as constants (derived None); compiled."""
        import onnx

        from dlc.frontend.control_flow import count_rows

        shapes = {name: shape for name, shape in key if not _is_value(shape)}
        proto = onnx.ModelProto()
        proto.CopyFrom(self._source_proto())
        for node, position, value in derived or ():
            loop = proto.graph.node[node]
            name = f"dlc.{'trips' if position == 0 else 'cond'}/{loop.name or node}"
            proto.graph.initializer.append(onnx.numpy_helper.from_array(
                np.array(value, np.int64 if position == 0 else np.bool_), name))
            loop.input[position] = name
        for name, (_, shape, flat) in ((n, v) for n, v in key if _is_value(v) and derived is None):
            spec = next(spec for spec in self._inputs if spec.name == name)
            position = next(i for i, value in enumerate(proto.graph.input) if value.name == name)
            del proto.graph.input[position]
            proto.graph.initializer.append(onnx.numpy_helper.from_array(
                np.array(flat, np.dtype(spec.dtype)).reshape(shape), name))
        # A Loop's outputs take the shapes these values give them, not the ones the model
        # declares (onnx's test_loop11 declares the scan output of its test's trip count).
        looped = {name for node in proto.graph.node if node.op_type == "Loop" for name in node.output}
        for value in proto.graph.output:
            if value.name in looped:
                for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                    dim.dim_param = f"{value.name}_{axis}"
        self._rows = count_rows(proto, self._counted) if self._counted else {}
        return self._compile_shape(shapes, proto)

    def _source_proto(self):
        import onnx

        if self._proto is None:
            if self._source is None:
                raise InputError("this loaded artifact holds no source model to compile a new input value with")
            self._proto = onnx.load_from_string(self._source) if isinstance(self._source, bytes) \
                else onnx.load(str(self._source))
        return self._proto


_DERIVED = "=loops"  # the key entry of the Loops' trip counts and conditions (`_shared_key`)


def _own_feeds(executable, feeds: dict, values: list[str]) -> dict:
    """The feeds `executable` takes: without the value inputs it holds as constants."""
    inputs = getattr(executable, "inputs", None)
    if inputs is None:
        return {name: value for name, value in feeds.items() if name not in values}
    taken = {spec.name for spec in inputs}
    return {name: value for name, value in feeds.items() if name in taken}


def _loop_heads(proto, values: set[str]):
    """(a reference evaluator of the trip counts and conditions of `proto`'s top-level Loops
    that graph inputs among `values` (and constants) compute, [(node index, input position,
    name)]), or None when no Loop's are."""
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    from dlc.frontend.control_flow import MAX_VALUE_CONE_NODES

    graph = proto.graph
    constants = {init.name for init in graph.initializer}
    producers = {out: (index, node) for index, node in enumerate(graph.node) for out in node.output if out}
    heads, cone, inputs = [], {}, set()
    for index, node in enumerate(graph.node):
        if node.op_type != "Loop" or node.domain not in ("", "ai.onnx"):
            continue
        for position in (0, 1):
            name = node.input[position] if position < len(node.input) else ""
            if not name or name in constants:
                continue
            found, seen, pending = {}, set(), [name]
            used = set()
            while pending:
                value = pending.pop()
                if value in seen or not value or value in constants:
                    continue
                seen.add(value)
                if value in values:
                    used.add(value)
                    continue
                producer = producers.get(value)
                if producer is None or producer[1].op_type in ("Loop", "Scan", "If") or \
                        len(found) >= MAX_VALUE_CONE_NODES:
                    found = None
                    break
                found[producer[0]] = producer[1]
                pending.extend(producer[1].input)
            if found is None or not used:
                continue
            heads.append((index, position, name))
            cone.update(found)
            inputs |= used
    if not heads:
        return None
    nodes = [cone[index] for index in sorted(cone)]
    read = {name for node in nodes for name in node.input}
    sub = helper.make_graph(
        nodes, "loop_heads", [value for value in graph.input if value.name in inputs],
        [onnx.ValueInfoProto(name=name) for _, _, name in heads],
        [init for init in graph.initializer if init.name in read])
    model = helper.make_model(sub, opset_imports=proto.opset_import, functions=proto.functions)
    return ReferenceEvaluator(model), heads


def _is_value(entry) -> bool:
    return isinstance(entry, tuple) and len(entry) == 3 and entry[0] == "="


def _shape_text(shapes: dict) -> str:
    def text(entry) -> str:
        if _is_value(entry):  # an input whose value is in the key
            return f"value {entry[2][0] if len(entry[2]) == 1 else list(entry[2])}"
        return "x".join(map(str, entry))

    return ", ".join(f"{name}={text(entry)}" for name, entry in shapes.items()) or "(no inputs)"


# ---------------------------------------------------------------------- compile

def declared_inputs(proto, pins: dict | None) -> list[InputSpec]:
    """The model's inputs with the user's pins applied (static where pinned, names elsewhere)."""
    from onnx import helper

    from dlc.frontend.input_shapes import UNNAMED, declared_shape, graph_inputs, split_pins

    by_input, by_dim = split_pins(proto, pins)
    specs = []
    for value in graph_inputs(proto):
        dims = declared_shape(value)
        if value.name in by_input:
            dims = list(by_input[value.name])
        dims = [by_dim.get(d, d) if isinstance(d, str) and d != UNNAMED else d for d in dims or []]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        specs.append(InputSpec(value.name, tuple(dims), "bool" if dtype == np.bool_ else dtype.name))
    return specs


def symbolic_model(model, pins: dict):
    """The ModelProto of `model` (a path or a ModelProto) when `pins` leave a symbolic dimension
    among its inputs, else None (also for a file that does not parse: the compile says why)."""
    import onnx

    from dlc.frontend.input_shapes import unpinned

    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        try:
            proto = onnx.load(str(model), load_external_data=False)
        except Exception:  # noqa: BLE001 - the importer reports what is wrong with the file
            return None
    return proto if unpinned(proto, pins) else None


def specializing_model(model, proto, target: str, options, pins: dict, max_shapes: int,
                       pipeline: str | None = None) -> SpecializingModel:
    """dlc.compile's result for a model whose pins leave symbolic dimensions."""
    from dlc.driver import compile_model

    def compile_shape(shapes: dict, proto=None) -> object:
        return compile_model(model if proto is None else proto, target=target, options=options,
                             input_shapes={**pins, **shapes}, pipeline=pipeline).executable

    from dlc.frontend.batch_axis import batch_proof

    batch, why, contractions = batch_proof(_pinned(proto, pins))
    source = str(model) if isinstance(model, (str, Path)) else proto.SerializeToString()
    compiled = SpecializingModel(declared_inputs(proto, pins), [o.name for o in proto.graph.output], target,
                                 compile_shape, max_shapes, source, batch)
    compiled._contractions = contractions
    if why:
        compiled.batch_note = why
        warnings.warn(f"dlc: compiling per batch size: one compile for every batch size needs each node to "
                      f"keep the samples apart, and {why}", stacklevel=3)
    return compiled


def value_specializing_model(model, error, target: str, options, pins: dict, max_shapes: int,
                             pipeline: str | None = None) -> SpecializingModel | None:
    """dlc.compile's result for a model whose Loop needs input values or a row counter
    (`error`, the importer's, carries `value_inputs` and `counted_outputs`); None when the
    error asks for neither."""
    import onnx

    if not getattr(error, "value_inputs", None) and not getattr(error, "counted_outputs", None):
        return None
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    outside = [name for name in getattr(error, "value_inputs", None) or []
               if name not in {value.name for value in proto.graph.input}]
    if outside:  # a Loop in a Loop body whose length comes from the enclosing body's values
        raise UnsupportedError(f"{error.message.split(': its scan outputs')[0]}: its scan outputs' length is "
                               f"known only at run time and comes from {outside}, values of an enclosing loop "
                               "body, not inputs of the model (dlc compiles such a loop per value of model inputs)",
                               "return the values as loop-carried state, or give the inner loop a trip count "
                               "the model fixes")
    compiled = specializing_model(model, proto, target, options, pins, max_shapes, pipeline)
    compiled._proto = proto
    if not compiled._learn(error):
        return None
    return compiled


def _pinned(proto, pins: dict):
    """A copy of `proto` whose inputs carry the user's pins (so the proof sees them)."""
    import onnx

    if not pins:
        return proto
    specs = {spec.name: spec for spec in declared_inputs(proto, pins)}
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for value in copy.graph.input:
        if value.name in specs and value.type.tensor_type.HasField("shape"):
            value.type.tensor_type.shape.ClearField("dim")
            for size in specs[value.name].shape:
                dim = value.type.tensor_type.shape.dim.add()
                if isinstance(size, int):
                    dim.dim_value = size
                elif size != "?":
                    dim.dim_param = size
    return copy


# ---------------------------------------------------------------------- save and load

def save_index(model: SpecializingModel, directory: Path, include_model: bool) -> None:
    keys = model._keys()
    executables = [model.executable_for(key) for key in keys]  # before any folder is replaced
    if not keys:
        raise InputError("save: no shape has been compiled yet, so there is nothing to save",
                         "run the model once with each shape to keep (or pin the shapes in dlc.compile)")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("shape-*"):
        if stale.is_dir() and _SHAPE_DIRECTORY.fullmatch(stale.name):
            shutil.rmtree(stale)
    entries = []
    for index, key in enumerate(keys):
        name = f"shape-{index}"
        executables[index].save(directory / name)
        entry = {"directory": name, "inputs": {k: list(v) for k, v in key if not _is_value(v)}}
        if model._values:
            entry["values"] = {k: {"shape": list(v[1]), "values": list(v[2])} for k, v in key if _is_value(v)}
        entries.append(entry)
    model_file = None
    if include_model:
        model_file = MODEL_FILE
        if model._source is None:
            raise InputError("save: include_model needs the source model, which this loaded artifact "
                             "does not carry")
        if isinstance(model._source, bytes):
            (directory / MODEL_FILE).write_bytes(model._source)
        elif Path(model._source).resolve() != (directory / MODEL_FILE).resolve():
            shutil.copyfile(model._source, directory / MODEL_FILE)
    elif (directory / MODEL_FILE).exists():
        (directory / MODEL_FILE).unlink()
    index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "target": model.target,
             "inputs": [spec.to_json() for spec in model._inputs], "outputs": model.output_names,
             "shapes": entries, "model": model_file,
             # Shapes compiled per batch size hold whole batches: then none is run per sample.
             "batch": model.batch if not model._thin else None}
    if model._values or model._counted:  # a Loop's run-time length (the module docstring)
        index["value_inputs"] = list(model._values)
        index["rows"] = dict(model._rows)
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")


def is_index(directory: str | Path) -> bool:
    return (Path(directory) / INDEX_FILE).is_file()


def load_index(directory: str | Path, max_memory=None, max_shapes: int = DEFAULT_MAX_SHAPES) -> SpecializingModel:
    """A directory that `save` wrote: its shapes load on first use; with its model, others compile."""
    from dlc.runtime import load_artifact
    from dlc.runtime.artifact import read_regular_file

    directory = Path(directory)
    bad = f"{directory / INDEX_FILE}: not a dlc shapes index"
    hint = "save the model again with this dlc (CompiledModel.save / dlc compile -o)"
    try:
        index = json.loads(read_regular_file(directory / INDEX_FILE, MAX_INDEX_BYTES))
    except (ValueError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{bad} ({error})", hint) from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise ArtifactError(f"{bad} (format is not '{INDEX_FORMAT}')", hint)
    if index.get("version") != INDEX_VERSION:
        raise ArtifactError(f"{bad} of version {INDEX_VERSION} (found version {index.get('version')!r})", hint)
    inputs = _checked_inputs(index.get("inputs"), bad, hint)
    outputs = index.get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise ArtifactError(f"{bad} ('outputs' must be a list of names)", hint)
    values = index.get("value_inputs", [])
    rows = index.get("rows", {})
    names = {spec.name for spec in inputs}
    if (not isinstance(values, list) or not all(v in names for v in values) or not isinstance(rows, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in rows.items())):
        raise ArtifactError(f"{bad} ('value_inputs' must list input names and 'rows' map output names to "
                            "output names)", hint)
    symbolic = {spec.name: spec for spec in inputs
                if not all(isinstance(d, int) for d in spec.shape) and spec.name not in values}
    loaders = {}
    for entry in index.get("shapes") if isinstance(index.get("shapes"), list) else [None]:
        if (not isinstance(entry, dict) or set(entry) != {"directory", "inputs", *(["values"] if values else [])}
                or not isinstance(entry["directory"], str) or not _SHAPE_DIRECTORY.fullmatch(entry["directory"])
                or not isinstance(entry["inputs"], dict) or set(entry["inputs"]) != set(symbolic)
                or values and not _valid_values(entry["values"], values)):
            raise ArtifactError(f"{bad} (a 'shapes' entry must be {{'directory': 'shape-N', 'inputs': "
                                f"{{each symbolic input: its shape}}}} (and 'values': {{each value input: "
                                f"{{'shape', 'values'}}}}), got {entry!r:.200})", hint)
        key = []
        for name in values:
            item = entry["values"][name]
            key.append((name, ("=", tuple(item["shape"]), tuple(item["values"]))))
        for name, shape in entry["inputs"].items():
            spec = symbolic[name]
            if (not isinstance(shape, list) or len(shape) != len(spec.shape)
                    or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
                raise ArtifactError(f"{bad} (shape {shape!r:.100} of input '{name}' does not fit {list(spec.shape)})",
                                    hint)
            key.append((name, tuple(shape)))
        order = [spec.name for spec in inputs]
        key = tuple(sorted(key, key=lambda item: order.index(item[0])))
        path = directory / entry["directory"]
        loaders[key] = lambda path=path: load_artifact(path, max_memory=max_memory)
    compile_shape = None
    model_file = index.get("model")
    if model_file not in (None, MODEL_FILE):
        raise ArtifactError(f"{bad} ('model' must be null or '{MODEL_FILE}')", hint)
    if model_file is not None:
        source = str(directory / MODEL_FILE)

        def compile_shape(shapes: dict, proto=None) -> object:
            from dlc.driver import compile_model
            from dlc.targets import CompileOptions

            return compile_model(source if proto is None else proto, options=CompileOptions(max_memory=max_memory),
                                 input_shapes=shapes).executable
    batch = index.get("batch")
    if batch is not None and (not isinstance(batch, str) or not any(spec.shape[:1] == (batch,) for spec in inputs)):
        raise ArtifactError(f"{bad} ('batch' must be null or the leading dimension of an input)", hint)
    model = SpecializingModel(inputs, outputs, index.get("target", "cpu"), compile_shape, max_shapes,
                              source if model_file else None, batch)
    model._loaders = loaders
    model._values, model._rows, model._counted = list(values), dict(rows), list(rows)
    if values or rows:
        model._batched = set()
    return model


def _valid_values(item, names: list[str]) -> bool:
    """A saved entry's input values: {name: {"shape": [...], "values": [numbers]}} for each of `names`."""
    return (isinstance(item, dict) and set(item) == set(names) and all(
        isinstance(v, dict) and set(v) == {"shape", "values"} and isinstance(v["shape"], list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v["shape"])
        and isinstance(v["values"], list) and len(v["values"]) == int(np.prod(v["shape"], dtype=np.int64))
        and all(isinstance(x, (int, float, bool)) for x in v["values"]) for v in item.values()))


def _checked_inputs(value, bad: str, hint: str) -> list[InputSpec]:
    specs = []
    if not isinstance(value, list):
        raise ArtifactError(f"{bad} ('inputs' must be a list)", hint)
    for item in value:
        if (not isinstance(item, dict) or set(item) != {"name", "shape", "dtype"} or not isinstance(item["name"], str)
                or not isinstance(item["dtype"], str) or not isinstance(item["shape"], list)
                or not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in item["shape"])):
            raise ArtifactError(f"{bad} (an input must be {{'name', 'shape', 'dtype'}}, got {item!r:.200})", hint)
        specs.append(InputSpec(item["name"], tuple(item["shape"]), item["dtype"]))
    return specs
