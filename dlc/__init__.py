"""dlc: an MLIR-style deep-learning compiler. ONNX in, native CPU code out.

    import dlc
    model = dlc.compile("model.onnx")            # or an onnx.ModelProto
    outputs = model.run({"x": array})             # dict: output name -> numpy array
    model.save("out/"); dlc.load("out/").run(...)
    session = dlc.InferenceSession("model.onnx")  # onnxruntime's API: session.run(None, feeds)

`import dlc` is light: the compiler (xDSL, onnx) is imported by `dlc.compile`
only; `dlc.load` and running an artifact need numpy and llvmlite.
"""

from __future__ import annotations

from pathlib import Path

from dlc import layers
from dlc.version import __version__

layers.install()  # `dlc.dialects`/`dlc.passes` in a source tree too (dlc/layers.py)

__all__ = ["compile", "load", "CompiledModel", "__version__", "InferenceSession", "SessionOptions",
           "GraphOptimizationLevel", "ExecutionMode", "NodeArg", "ModelMetadata", "get_available_providers",
           "get_device"]
# onnxruntime's session API (dlc/session.py): `import dlc as ort` runs onnxruntime scripts.
# Loaded on first use, so that `import dlc` stays light.
_SESSION_NAMES = frozenset(__all__[4:])


def __getattr__(name: str):
    if name in _SESSION_NAMES:
        from dlc import session

        return getattr(session, name)
    raise AttributeError(f"module 'dlc' has no attribute '{name}'")


class CompiledModel:
    """A model ready to run: `run(feeds) -> {output name: array}`, one native call on cpu."""

    def __init__(self, executable, target: str):
        self._executable = executable
        self.target = target

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self._executable.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self._executable.outputs]

    @property
    def inputs(self):
        """Input specs: name, shape, dtype."""
        return list(self._executable.inputs)

    @property
    def outputs(self):
        return list(self._executable.outputs)

    def run(self, feeds: dict, outputs: dict | None = None) -> dict:
        """{output name: array} for `feeds`. `outputs` ({name: numpy array}, some or all of them)
        are the caller's buffers to write into, reused from run to run, as onnxruntime's IO
        binding: each of the output's dtype and shape, C-contiguous, writeable, sharing no memory
        with an input; the returned dict holds those very arrays."""
        from dlc.runtime.executable import NativeExecutable, write_outputs

        if outputs is None:
            return self._executable.run(feeds)
        if isinstance(self._executable, NativeExecutable):
            return self._executable.run(feeds, outputs=outputs)
        return write_outputs(self._executable.run(feeds), outputs, self._executable.outputs)

    def save(self, directory: str | Path) -> None:
        self._executable.save(directory)

    def __repr__(self) -> str:
        return f"CompiledModel(target={self.target!r}, inputs={self.input_names}, outputs={self.output_names})"


def compile(model, target: str = "cpu", threads: int | None = None,
            input_shapes: dict | None = None, pipeline: str | None = None,
            fusion: str = "all", max_memory: str | int | None = None,
            tiles: str | dict | None = None, initializers_as_inputs: bool = False,
            max_shapes: int = 8, cpu: str = "native", cpu_features: str = "",
            embed_weights: bool = False, winograd: bool | str = "f2") -> CompiledModel:
    """Compile an ONNX model (a path or an onnx.ModelProto) for `target`.

    threads: worker threads for parallel kernels (None: all cores).
    input_shapes: pins symbolic input dimensions, by input ({"x": (1, 3, 224, 224)}) or by
        dimension name ({"batch": 1, "seq": 128}); an input named wins over dimension names.
    pipeline: pass pipeline text replacing the default one.
    fusion: "none", "elementwise" or "all" (default): which kernel fusion rules apply.
    max_memory: refuse models needing more memory ("8GiB" or bytes; default $DLC_MAX_MEMORY,
        else half the machine's RAM) with dlc.errors.MemoryLimitError, before allocating.
    tiles: GEMM tile overrides, {"*" | kernel name | "MxNxK": {"mr": 8, "nr": 32, "kc": 256,
        "mc": ..., "nc": ...}} or the text "k5_Conv_fused:mr=8,nr=32;..." (as `--tile`).
    initializers_as_inputs: initializers the model also lists as graph inputs (ONNX IR >= 4,
        overridable in onnxruntime) become inputs to feed on every run; by default they are
        compiled in as constants and feeding one raises dlc.errors.InputError.
    max_shapes: a model whose inputs keep symbolic dimensions (after `input_shapes`) is
        returned as a dlc.specializations.SpecializingModel, which compiles the model for each
        new input shape on its first run and keeps at most this many in memory (least
        recently used dropped first; the compile cache keeps them on disk).
    cpu, cpu_features: the CPU the cpu target compiles for (as `--cpu`, `--cpu-features`):
        "native", "x86-64-v2", "x86-64-v3", "x86-64-v4" or an LLVM CPU name, and LLVM
        features to add or remove ("+avx512vnni,-fma"). A model for a CPU this machine is not
        saves but does not run here.
    embed_weights: model.so holds the weights too, for the C API's one-file deployment.
    winograd: stride-1 3x3 convs over maps of 14x14 or more (10x10 from deep channels, odd
        ones from 27x27) as Winograd: "f2" (or True, the default) F(2x2, 3x3), 16/36 of the
        multiply-adds (ResNet-18 0.82x the time on one thread, 0.85x on two; VGG-19 0.65x),
        rounding closer to float64 than the direct conv; "f4"
        F(4x4, 3x3) where its tiles cover the map, 1/4 of them (a conv 0.75-0.82x F(2x2)'s
        time), 2-3x the direct conv's rounding error; "none" (False, `--no-winograd`) the direct
        conv. Results are the same at every thread count.
    """
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions
    from passes.tiling.apply_user_tiles import format_tiles

    shapes = {k: (int(v),) if isinstance(v, int) else tuple(v) for k, v in (input_shapes or {}).items()}
    options = CompileOptions(threads=threads, fusion=fusion, max_memory=max_memory,
                             tiles=format_tiles(tiles) if tiles else None,
                             initializers_as_inputs=initializers_as_inputs, cpu=cpu, cpu_features=cpu_features,
                             embed_weights=embed_weights, winograd=winograd)
    from dlc.errors import UnsupportedError

    try:
        result = compile_model(model, target=target, options=options,
                               input_shapes=shapes, pipeline=pipeline)
    except UnsupportedError as error:
        # Inputs left symbolic (the importer's error says so): compile per input shape. Asked
        # here, not before, so that a static model is not parsed once more (a cache hit reads
        # no model at all).
        if not getattr(error, "unpinned_inputs", None):
            # A Loop whose scan outputs' length is known only at run time: compile per input value.
            from dlc.specializations import value_specializing_model

            compiled = value_specializing_model(model, error, target, options, shapes, max_shapes, pipeline)
            if compiled is None:
                raise
            return compiled
        from dlc.specializations import specializing_model, symbolic_model

        proto = symbolic_model(model, shapes)
        if proto is None:
            raise
        return specializing_model(model, proto, target, options, shapes, max_shapes, pipeline)
    return CompiledModel(result.executable, target)


def load(directory: str | Path, max_memory: str | int | None = None) -> CompiledModel:
    """Load an artifact directory written by `dlc compile -o DIR` or `CompiledModel.save`.

    max_memory: as in `compile`; an artifact needing more (weights, arena, inputs, outputs)
    is refused before any of it is allocated.
    A directory saved from a model with symbolic dimensions (several shapes, `shapes.json`)
    loads as a dlc.specializations.SpecializingModel.
    """
    from dlc.runtime import load_artifact
    from dlc.specializations import is_index, load_index

    if is_index(directory):  # several shapes of a model with symbolic dimensions
        return load_index(directory, max_memory=max_memory)
    from dlc.targets.partition_artifact import is_partitioned, load_partitioned

    if is_partitioned(directory):  # a model split across targets (cpu and cuda partitions)
        saved = load_partitioned(directory, max_memory=max_memory)
        return CompiledModel(saved, saved.target)
    return CompiledModel(load_artifact(directory, max_memory=max_memory), "cpu")
