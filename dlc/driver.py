"""The compiler driver: phases, the default pipeline, and running it with checks.

Phases (DESIGN.md): onnx -> graph -> kernels -> linalg -> loops -> llvm -> exe.
Every MLIR phase can be printed as text (plus a weights sidecar) and read back
(`dlc opt`, `--compile-from`). The default pipeline is `default_pipeline`: read
it top to bottom.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass

from dialects.context import make_context
from dialects.loop import attach_bodies, bodies_of, detach_bodies
from dialects.weights import WeightStore, attach_weights, sidecar_path, weights_of
from dlc import cache, progress
from dlc.errors import CompileError, DlcError
from dlc.targets import CompileOptions, Target, describe_target_on, get_target
from passes import all_passes
from passes.pipeline import PassInstrumentation, parse_pass_pipeline, run_passes

PHASES = ("onnx", "graph", "kernels", "linalg", "loops", "llvm", "exe")
MLIR_PHASES = PHASES[:5]


def default_pipeline(target: Target, options: CompileOptions) -> list[tuple[str, list[ModulePass]]]:
    """The default pipeline: (phase reached, passes that reach it), top to bottom."""
    p = all_passes()
    fuse = options.fusion != "none"  # --fusion=none turns off the fusing graph rewrites too
    graph = [
        p["expand-recurrent"](),          # LSTM/GRU/RNN -> MatMuls and gate math, one step after another
        p["remove-identity"](),           # no-ops first, so the patterns below see real producers
        p["remove-dropout"](),
        p["cancel-transposes"](),
        p["remove-noop-reshape"](),
        *([p["fuse-qdq-contractions"]()] if fuse else []),  # int8 kernels, before weights fold
        *([p["qlinear-conv-nhwc"]()] if target.name == "cpu" else []),  # int8 convs pass NHWC bytes on
        p["fold-constants"](),            # whatever the removals exposed
        *([p["fuse-matmul-add"](),           # MatMul + bias -> Gemm, so the folds below see Gemms
           p["fold-batchnorm-into-conv"](),  # BN after Conv/Gemm/MatMul -> scaled weights and bias
           p["fold-scale-into-conv"](),      # Mul/Add by per-channel constants -> weights and bias
           ] if fuse else []),
        p["merge-identical-nodes"](),     # CSE for ONNX ops (node names differ) and equal weights
        *([p["pointwise-convs-nhwc"]()] if target.name == "cpu" else []),  # bottleneck models: 1x1 convs in NHWC
        p["dce"](),
        p["mark-depthwise-feeders"](),    # 1x1 convs a depthwise conv reads: threads split channels
    ]
    return [("graph", graph), *target.pipeline(options)]


def pipeline_text(target: Target, options: CompileOptions) -> str:
    """`default_pipeline` as the pipeline text `-p` takes (`dlc passes --pipeline`).

    Options are spelled out, defaults included, so the text shows every knob it sets.
    """
    passes = [pass_ for _, stage in default_pipeline(target, options) for pass_ in stage]
    unregistered = [pass_.name for pass_ in passes if pass_.name not in all_passes()]
    if unregistered:  # e.g. a pass holding the target object itself: no text can name it
        raise CompileError(f"target '{target.name}' runs passes that are not registered "
                           f"({', '.join(unregistered)}): its pipeline cannot be written as text")
    return ",".join(str(pass_.spec(include_default=True)) for pass_ in passes)


@dataclass
class CompileResult:
    phase: str
    module: ModuleOp | None = None
    text: str | None = None
    executable: object | None = None
    timings: list[tuple[str, float]] = field(default_factory=list)


def parse_mlir(text: str, weights: WeightStore | None = None, source: str = "<input>") -> ModuleOp:
    from xdsl.parser import Parser

    try:
        module = Parser(make_context(), text, source).parse_module()
    except Exception as error:
        raise DlcError(f"{source}: cannot parse MLIR: {error}") from None
    attach_weights(module, weights if weights is not None else WeightStore())
    return module


def read_mlir(path: str | Path) -> ModuleOp:
    """Parse an MLIR file and its weights sidecar (`NAME.weights.npz`, if present)."""
    path = Path(path)
    if not path.exists():
        raise DlcError(f"{path}: no such file")
    sidecar = sidecar_path(path)
    weights = WeightStore.load(sidecar) if sidecar.exists() else WeightStore()
    return parse_mlir(path.read_text(), weights, str(path))


def write_mlir(module: ModuleOp, path: str | Path) -> None:
    path = Path(path)
    path.write_text(str(module) + "\n")
    weights_of(module).save(sidecar_path(path))


def compile_model(model, *, target: str = "cpu", options: CompileOptions | None = None,
                  input_shapes: dict | None = None, pipeline: str | None = None,
                  compile_to: str = "exe", compile_from: str | None = None,
                  instrument: PassInstrumentation | None = None) -> CompileResult:
    """Compile an ONNX model (path or ModelProto) or MLIR text of phase `compile_from`."""
    from dlc.frontend.importer import import_model

    options = options or CompileOptions()
    cacheable = (compile_to == "exe" and pipeline is None and compile_from is None and instrument is None)
    instrument = instrument or PassInstrumentation()
    instrument.notify = instrument.notify or progress.current().pass_event
    if compile_to not in PHASES:
        raise DlcError(f"unknown phase '{compile_to}'; phases are {', '.join(PHASES)}")
    backend = get_target(target)
    cacheable = cacheable and backend.saves_artifact and cache.cache_dir() is not None
    ctx = make_context()
    timings = instrument.timings
    key = shared = None

    if compile_from is not None:
        if compile_from not in MLIR_PHASES:
            raise DlcError(f"--compile-from takes an MLIR phase ({', '.join(MLIR_PHASES)}), got '{compile_from}'")
        module, phase = read_mlir(model), compile_from
    else:
        if cacheable:
            key = _cache_key(model, target, options, input_shapes)
            cached = cache.lookup(key) if key else None
            if cached is not None:
                return CompileResult("exe", executable=cached, timings=[("cache hit", 0.0)])
        if compile_to == "exe" and backend.name == "cpu":
            from dlc.codegen.link import start_shared_objects

            shared = start_shared_objects(options.cpu, options.cpu_features)  # on the core the passes leave idle
        progress.current().begin("import")
        start = time.perf_counter()
        module = import_model(model, input_shapes, options.max_memory,
                              initializers_as_inputs=options.initializers_as_inputs,
                              native_loops=backend.name == "cpu")  # dialects/loop.py: cpu runs them
        timings.append(("import", time.perf_counter() - start))
        progress.current().end("import", timings[-1][1])
        phase = "onnx"
    module.attributes["dlc.target"] = StringAttr(backend.name)
    if compile_from is None:
        describe_target_on(module, backend, options.threads, options)
    if phase == compile_to:
        return CompileResult(phase, module=module, timings=timings)

    if pipeline is not None:
        stages = [("custom", parse_pass_pipeline(pipeline))]
    else:
        stages = default_pipeline(backend, options)
        order = PHASES.index(phase)
        stages = [(name, passes) for name, passes in stages if PHASES.index(name) > order]
    detach_bodies(module)  # Loop bodies (dialects/loop.py): each stage runs on them first, apart
    apart = None  # the process compiling the GEMMs from the end of the linalg phase on
    try:
        for name, passes in stages:
            with progress.step(f"{name} phase"):
                _run_stage(ctx, module, passes, instrument)
            phase = name
            if compile_to == "exe" and name in WEIGHT_STAGES:
                drop_unused_weights(module)
            if name == "linalg" and compile_to == "exe" and pipeline is None and backend.name == "cpu" \
                    and not backend.partial and not bodies_of(module):
                apart = _start_gemms_apart(module, options)
            # A custom pipeline (-p) replaces the stages: its result is whatever phase was asked for.
            if phase == compile_to or (name == "custom" and compile_to in MLIR_PHASES):
                return CompileResult(compile_to, module=module, timings=timings)
    except BaseException:
        if apart is not None:
            apart.abandon()
        raise
    finally:
        attach_bodies(module)
    if compile_to in MLIR_PHASES:
        raise CompileError(f"target '{backend.name}' has no phase '{compile_to}' "
                           f"(it compiles from '{backend.start_phase}')")

    if compile_to == "llvm":
        text = backend.translate(module, "llvm")
        if text is None:
            raise CompileError(f"target '{backend.name}' does not produce LLVM IR")
        return CompileResult("llvm", text=text, timings=timings)
    try:
        _check_memory_plan(module, options)
    except BaseException:
        if apart is not None:
            apart.abandon()
        raise
    if shared is not None:
        shared.join()  # done long ago (0.14 s against the passes' second): the build uses its pool
    progress.current().begin("codegen")
    start = time.perf_counter()
    try:
        if backend.partial:  # it takes some nodes: partition, the rest on cpu (dlc/targets/partition.py)
            from dlc.targets.partition import compile_partitioned

            executable = compile_partitioned(module, backend, options, instrument)
        else:
            executable = backend.build(module, options)
    except DlcError:
        raise
    except Exception as error:
        raise CompileError(f"target '{backend.name}' failed to build the model: "
                           f"{type(error).__name__}: {error}") from error
    finally:
        if apart is not None:
            apart.abandon()  # done with (its objects are in the build), or never asked for
    timings.append(("codegen", time.perf_counter() - start))
    progress.current().end("codegen", timings[-1][1])
    if key:
        cache.store(key, executable)
    return CompileResult("exe", module=module, executable=executable, timings=timings)


def _start_gemms_apart(module: ModuleOp, options: CompileOptions):
    """A process that compiles the module's GEMMs while the loops phase runs and the kernels are
    emitted and compiled here (dlc/codegen/native.py `start_gemms_apart`), for the CPU the build
    compiles for; None where it cannot start (the build then compiles them with the kernels)."""
    from dlc.codegen.cpus import resolve_cpu, target_triple
    from dlc.codegen.llvm_emitter import emit_gemms, gemm_declarations
    from dlc.codegen.native import start_gemms_apart

    try:
        cpu, features = resolve_cpu(options.cpu, options.cpu_features)
        return start_gemms_apart(module, cpu, features, options.opt_level, target_triple(options.cpu),
                                 gemm_declarations, emit_gemms)
    except DlcError:
        return None  # a bad --cpu: the build says why


def run_on_module_and_bodies(ctx, module: ModuleOp, passes: list[ModulePass],
                             instrument: PassInstrumentation) -> None:
    """Run `passes` on `module` and its Loop bodies (dialects/loop.py), as a compile's stage
    does: `dlc opt -p` with a module that holds bodies."""
    detach_bodies(module)
    try:
        _run_stage(ctx, module, passes, instrument)
    finally:
        attach_bodies(module)


def _run_stage(ctx, module: ModuleOp, passes: list[ModulePass], instrument: PassInstrumentation) -> None:
    """Run a stage on the module's detached Loop bodies (theirs first), then on the module:
    when a Loop is lowered its body is already at that phase (its arena planned). A body that
    a pass of the stage made (expand-recurrent's time step) then runs the whole stage too."""
    done = bodies_of(module)
    for body in done:
        _run_stage(ctx, body, passes, instrument)
    run_passes(ctx, module, passes, instrument)
    for body in detach_bodies(module):
        if all(body is not other for other in done):
            _run_stage(ctx, body, passes, instrument)


# The stages after which a compile to code drops the weights its IR no longer names: the
# graph's folds (fold-batchnorm-into-conv and fold-scale-into-conv scale each Conv's weight
# into a new array) and pack-weights (packed and padded copies) replace the weights, and the
# arrays they replaced stayed in the store to the end: ResNet-50 kept four copies of its
# 100 MB of weights (import, folded, packed, the code's blob), 470-480 MB at its peak. Freed,
# the next copy takes their pages, already the process's, instead of new ones the kernel must
# find and clear (0.1-0.6 s of system time per 100 MB on the development VM; issue 16).
WEIGHT_STAGES = ("graph", "linalg")


def drop_unused_weights(module: ModuleOp) -> None:
    """Remove from `module`'s weight store the arrays that neither it nor its Loop bodies
    (detached or not) name any more, and the `memref.global` ops of those that no
    `memref.get_global` reads (pack-weights leaves the unpacked ones). A weight is named by a
    symbol reference (`onnx.weight @w`, `memref.get_global @w`) or any string in an op's
    properties or attributes, nested ones included: kept when in doubt."""
    from itertools import chain

    from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, SymbolRefAttr
    from xdsl.ir import ParametrizedAttribute, TypeAttribute

    store = weights_of(module)
    if not store:
        return
    named: set[str] = set()

    leaves: set[type] = set()  # attribute classes that hold no name (integers, floats, types)

    def collect(attribute) -> None:
        kind = type(attribute)
        if kind in leaves:
            return
        if isinstance(attribute, StringAttr):
            named.add(attribute.data)
        elif isinstance(attribute, SymbolRefAttr):
            named.add(attribute.root_reference.data)
        elif isinstance(attribute, ArrayAttr):
            for item in attribute.data:
                collect(item)
        elif isinstance(attribute, DictionaryAttr):
            for item in attribute.data.values():
                collect(item)
        elif isinstance(attribute, ParametrizedAttribute) and not isinstance(attribute, TypeAttribute):
            for item in attribute.parameters:
                collect(item)
        else:
            leaves.add(kind)  # a type, or data other than a string (IntAttr, FloatData, ...)

    modules = [module]
    for holder in modules:  # the detached bodies, and theirs
        modules += [body for body in bodies_of(holder) if all(body is not m for m in modules)]
    definitions = []  # a weight's memref.global names it only while something reads it
    for holder in modules:
        for op in holder.walk():
            properties = op.properties.items()
            if op.name == "memref.global" and op.parent_op() is holder and "sym_name" in op.properties \
                    and op.properties["sym_name"].data in store:
                definitions.append(op)
                properties = [(key, value) for key, value in properties if key != "sym_name"]
            for _, attribute in chain(properties, op.attributes.items()):
                collect(attribute)
    for op in definitions:
        if op.properties["sym_name"].data not in named:
            op.detach()
            op.erase()
    for name in [name for name in store if name not in named]:
        del store[name]


def _check_memory_plan(module: ModuleOp, options: CompileOptions) -> None:
    """Before the target allocates anything: inputs, outputs, weights and the arena under the limit."""
    from xdsl.dialects import func
    from xdsl.dialects.builtin import IntegerAttr, MemRefType, TensorType

    from dialects.types import numpy_dtype
    from dlc.runtime import memory_limit

    def nbytes(value_type) -> int:
        if not isinstance(value_type, (MemRefType, TensorType)):
            return 0
        count = 1
        for size in value_type.get_shape():
            count *= max(size, 0)
        return count * numpy_dtype(value_type.element_type).itemsize

    main = next((op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == "main"), None)
    if main is None:
        return
    arena = main.attributes.get("dlc.arena_size")
    arena_bytes = arena.value.data if isinstance(arena, IntegerAttr) else 0
    io_types = [arg.type for arg in main.body.block.args] or list(main.function_type.inputs.data)
    if not any(isinstance(t, MemRefType) for t in io_types):  # graph phase: results are the outputs
        io_types += list(main.function_type.outputs.data)
    # The cpu arena is @main's last argument (plan-memory): count it once, as the arena.
    io_bytes = sum(nbytes(t) for t in io_types) - (nbytes(io_types[-1]) if arena is not None and io_types else 0)
    weights = sum(array.nbytes for array in weights_of(module).values())
    memory_limit.check(arena_bytes + io_bytes + weights, memory_limit.resolve_limit(options.max_memory),
                       "running this model", {"inputs and outputs": io_bytes, "weights": weights,
                                              "intermediates (memory plan)": arena_bytes})


def _cache_key(model, target: str, options: CompileOptions, input_shapes) -> str | None:
    """The cache key of an ONNX model given as a path or a ModelProto (None: not cacheable)."""
    import dataclasses

    import onnx

    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
    else:
        try:
            data = Path(model).read_bytes()
        except OSError:
            return None  # the importer reports the error
    if b"location" in data and _uses_external_data(data):
        return None  # the key would not cover the weights, which live in other files
    return cache.cache_key(data, target, dataclasses.asdict(options), input_shapes)


def _uses_external_data(data: bytes) -> bool:
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:
        return False  # the importer reports the error
    return any(uses_external_data(tensor) for tensor in _get_all_tensors(proto))
