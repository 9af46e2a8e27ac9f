"""The Target interface and registry (DESIGN.md "Targets").

A target names itself, describes its hardware, says per node whether it can
run it (like ONNX Runtime's GetCapability), lists the passes that take the
module from its start phase down to its last MLIR phase, and builds an
executable from that. Targets register here or, from other packages, through
the `dlc.targets` entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:  # keep `import dlc` light: xDSL is imported only when compiling
    import numpy as np
    from xdsl.dialects.builtin import ModuleOp
    from xdsl.passes import ModulePass

    from dlc.runtime import TensorSpec

from dlc.errors import DlcError


@dataclass(frozen=True)
class MemoryLevel:
    name: str
    size_bytes: int
    bandwidth_gbps: float


@dataclass(frozen=True)
class TargetDescription:
    """What passes may ask about the hardware (stored on the module as attributes)."""

    memory: tuple[MemoryLevel, ...] = ()
    vector_bits: int = 0
    mac_array: tuple[int, int] | None = None
    dtypes: tuple[str, ...] = ("float32",)
    cores: int = 1
    clock_ghz: float = 0.0
    extra: dict = field(default_factory=dict)
    # Which ops fuse into which kernels, as data read by fuse-kernels (passes/fusion/fuse_kernels.py
    # documents the keys); None: that pass's default rules (TVM's operator patterns, the CPU's).
    fusion_rules: dict | None = None


@dataclass(frozen=True)
class Support:
    ok: bool
    reason: str = ""


SUPPORTED = Support(True)


# `CompileOptions.winograd` -> the largest Winograd output tile the lowering may use
# (module attribute `dlc.winograd`, passes/target_info.py).
WINOGRAD_TILES = {"none": 0, "f2": 2, "f4": 4}


@dataclass
class CompileOptions:
    threads: int | None = None
    opt_level: int = 3
    fusion: str = "all"  # none | elementwise | all
    profile: bool = False  # time each kernel call inside the native code
    placement_from: str | None = None  # a placement JSON forcing nodes onto targets (partial targets)
    # Refuse models needing more bytes ("8GiB" or an int; None: $DLC_MAX_MEMORY or half the RAM).
    max_memory: str | int | None = None
    # GEMM tile overrides, "SELECTOR:mr=8,nr=32;..." (passes/tiling/apply_user_tiles.py).
    tiles: str | None = None
    # Initializers the model also lists as graph inputs (IR >= 4): compiled in as constants and
    # folded (False), or inputs the caller feeds on every run (True; nothing folds through them).
    initializers_as_inputs: bool = False
    # The CPU the cpu target compiles for (dlc/codegen/cpus.py): "native", "x86-64-v3", an LLVM
    # CPU name; `cpu_features` edits its feature set ("+avx512vnni,-fma").
    cpu: str = "native"
    cpu_features: str = ""
    # The weights also inside model.so, for a one-file C deployment (docs/c-api.md).
    embed_weights: bool = False
    # Stride-1 3x3 convs as Winograd (passes/lowering/rules/winograd.py): "f2" F(2x2, 3x3), 16/36
    # of the multiply-adds and less rounding error than the direct conv (the default; True says
    # the same); "f4" F(4x4, 3x3) over maps whose sides are multiples of 4 (1/4 of them, about
    # 2-3x the direct conv's rounding error; F(2x2) elsewhere); "none" (False) the direct conv
    # (`--winograd f4`, `--no-winograd`; benchmarks/threads.py --also-direct measures both).
    winograd: bool | str = "f2"

    def __post_init__(self):
        from dlc.runtime.artifact import MAX_THREADS

        self.winograd = {True: "f2", False: "none", None: "none"}.get(self.winograd, self.winograd)
        if self.winograd not in WINOGRAD_TILES:
            raise DlcError(f"winograd must be one of {', '.join(WINOGRAD_TILES)} (or True / False), "
                           f"got {self.winograd!r}", "f2: Winograd F(2x2, 3x3), f4: F(4x4, 3x3), none: the direct conv")
        if self.threads is not None and not (isinstance(self.threads, int) and 1 <= self.threads <= MAX_THREADS):
            raise DlcError(f"threads must be a count from 1 to {MAX_THREADS} (or None: all cores), "
                           f"got {self.threads!r}", "pass --threads N with N >= 1")


class Executable(Protocol):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def save(self, directory) -> None: ...


class Target(ABC):
    name: ClassVar[str]
    # The phase the target's own pipeline starts from ("graph": it takes the
    # graph as is; "kernels": it takes kernel groups).
    start_phase: ClassVar[str] = "kernels"
    # Whether build() returns an executable that saves as an artifact (and can be cached).
    saves_artifact: ClassVar[bool] = False
    # Whether the target takes only the nodes `supports` accepts: the driver then partitions
    # the graph (dlc/targets/partition.py), builds each of its partitions, and the rest on `cpu`.
    partial: ClassVar[bool] = False

    @abstractmethod
    def description(self) -> TargetDescription: ...

    def configure(self, options: CompileOptions) -> None:
        """Take the options that change the description (the cpu target: `--cpu`); called
        before `description` when the driver writes it on a module. Default: none."""
        return None

    def set_variant(self, variant: str) -> None:
        """Take the VARIANT of `--target NAME:VARIANT` (the cuda target: `cuda:fp32`, exact FP32
        contractions; `get_target` calls it on the fresh target). Default: none, an error."""
        raise DlcError(f"target '{self.name}' has no variants, got '{self.name}:{variant}'",
                       f"use --target {self.name}")

    def supports(self, op) -> Support:
        return SUPPORTED

    def pipeline(self, options: CompileOptions) -> list[tuple[str, list[ModulePass]]]:
        """(phase, passes that reach it) after `start_phase`, in order."""
        return []

    def translate(self, module: ModuleOp, phase: str) -> str | None:
        """Text of a non-MLIR phase this target defines (e.g. `llvm`), or None."""
        return None

    @abstractmethod
    def build(self, module: ModuleOp, options: CompileOptions) -> Executable: ...

    def load(self, directory) -> Executable:
        """Runtime hook: the executable that `build`'s result saved in `directory`, loaded without
        the compiler (a model split across targets: dlc/targets/partition_artifact.py)."""
        raise DlcError(f"target '{self.name}' cannot load a saved partition",
                       "run the .onnx model with --target instead")


def graph_main(module):
    """The `func.func @main` of a graph-phase module (what a target's build() receives)."""
    from xdsl.dialects import func

    return next(f for f in module.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "main")


def constant_inputs_of(module) -> tuple[str, ...]:
    """Initializers the model also lists as graph inputs, compiled in as constants (the importer
    records them: a caller feeding one gets an error rather than a silently ignored value)."""
    from xdsl.dialects.builtin import ArrayAttr

    names = module.attributes.get("dlc.constant_inputs")
    return tuple(name.data for name in names.data) if isinstance(names, ArrayAttr) else ()


def graph_io_specs(module) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(input specs, output specs) of a graph-phase module: names, static shapes, dtypes."""
    from dialects.types import numpy_dtype
    from dlc.runtime import TensorSpec

    main = graph_main(module)
    block = main.body.block

    def specs(key: str, values) -> list[TensorSpec]:
        names = [a.data for a in main.attributes[key].data]
        return [TensorSpec(n, tuple(v.type.get_shape()), str(numpy_dtype(v.type.element_type)))
                for n, v in zip(names, values)]

    return specs("dlc.input_names", block.args), specs("dlc.output_names", block.last_op.operands)


_BUILTIN = {
    "cpu": "dlc.targets.cpu:CpuTarget",
    "reference": "dlc.targets.reference:ReferenceTarget",
    "npu-sim": "dlc.targets.npu.target:NpuSimTarget",
    "cuda": "dlc.targets.cuda.target:CudaTarget",
}


def available_targets() -> dict[str, str]:
    """Target name -> "module:Class", built-in and from the `dlc.targets` entry points."""
    found = dict(_BUILTIN)
    from importlib.metadata import entry_points  # 15-30 ms: only when plugins are looked for

    for entry in entry_points(group="dlc.targets"):
        found.setdefault(entry.name, entry.value)
    return found


def get_target(spec: str) -> Target:
    """The target `spec` names: NAME, or NAME:VARIANT for a variant of it (`Target.set_variant`)."""
    import importlib

    name, colon, variant = spec.partition(":")
    # Built-in names win over plugins (available_targets), so they skip the entry-point scan,
    # which reads every installed distribution's metadata: 24 ms, a tenth of a small compile.
    targets = _BUILTIN if name in _BUILTIN else available_targets()
    if name not in targets:
        raise DlcError(f"unknown target '{name}'; available targets: {', '.join(sorted(targets))}")
    module_name, class_name = targets[name].split(":")
    target = getattr(importlib.import_module(module_name), class_name)()
    if colon:
        target.set_variant(variant)
    return target


def describe_target_on(module: ModuleOp, target: Target, threads: int | None = None,
                       options: CompileOptions | None = None) -> None:
    """Write the target description on the module, where passes read it (like MLIR's DLTI),
    with the thread count the code is compiled for (`threads`, None: all cores).

    Caches are `dlc.l1_bytes`/`dlc.l2_bytes`; another memory level NAME is `dlc.NAME_bytes` and
    `dlc.NAME_gbps`; a MAC array `dlc.mac_array`; numbers in `extra` `dlc.KEY`; fusion rules
    `dlc.fusion_rules = {TARGET = {...}}` (keyed by target: a module placed on several targets
    fuses each target's kernels by its own rules).
    """
    from xdsl.dialects.builtin import (
        DenseArrayBase,
        DictionaryAttr,
        FloatAttr,
        IntegerAttr,
        f64,
        i64,
    )

    from dlc.runtime.host import default_threads

    attributes = module.attributes
    attributes["dlc.threads"] = IntegerAttr(threads or default_threads(), i64)
    if options is not None:
        target.configure(options)
        if WINOGRAD_TILES[options.winograd]:
            attributes["dlc.winograd"] = IntegerAttr(WINOGRAD_TILES[options.winograd], i64)
    description = target.description()
    if description.vector_bits:
        attributes["dlc.vector_bits"] = IntegerAttr(description.vector_bits, i64)
    for level in description.memory:
        key = {"L1": "dlc.l1_bytes", "L2": "dlc.l2_bytes"}.get(level.name)
        if key:
            attributes[key] = IntegerAttr(level.size_bytes, i64)
        else:
            attributes[f"dlc.{level.name}_bytes"] = IntegerAttr(level.size_bytes, i64)
            attributes[f"dlc.{level.name}_gbps"] = FloatAttr(level.bandwidth_gbps, f64)
    if description.mac_array:
        attributes["dlc.mac_array"] = DenseArrayBase.from_list(i64, list(description.mac_array))
    if description.clock_ghz:
        attributes["dlc.clock_ghz"] = FloatAttr(description.clock_ghz, f64)
    for key, value in description.extra.items():
        if isinstance(value, int) and not isinstance(value, bool):
            attributes[f"dlc.{key}"] = IntegerAttr(value, i64)
    if description.fusion_rules is not None:
        attributes["dlc.fusion_rules"] = DictionaryAttr({target.name: _attribute(description.fusion_rules)})


def _attribute(value):
    """A JSON-like Python value (dict, list, str, int, bool) as the MLIR attribute that prints it."""
    from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, IntegerAttr, StringAttr, i64

    if isinstance(value, dict):
        return DictionaryAttr({key: _attribute(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return ArrayAttr([_attribute(item) for item in value])
    if isinstance(value, bool | int):
        return IntegerAttr(int(value), i64)
    return StringAttr(value)
