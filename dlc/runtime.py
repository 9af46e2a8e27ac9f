"""Load and run a compiled artifact: manifest + weights + object code, one native call.

The artifact (DESIGN.md "The artifact"): a directory with `model.o` (llvmlite
object code exporting `void dlc_main(void **buffers, void *weights)`, buffers =
inputs, outputs, arena), `weights.bin` (64-byte aligned weights at manifest
offsets) and `manifest.json`. Loading needs numpy and llvmlite only.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlc.errors import ArtifactError, InputError

ALIGNMENT = 64
MANIFEST_VERSION = 1
ENTRY_SYMBOL = "dlc_main"


def aligned_empty(shape, dtype, alignment: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised C-contiguous array whose data pointer is `alignment`-aligned."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = max(count, 1) * dtype.itemsize  # an empty tensor still gets a valid pointer
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype)[:count].reshape(shape)


def aligned_copy(array: np.ndarray) -> np.ndarray:
    out = aligned_empty(array.shape, array.dtype)
    out[...] = array
    return out


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict) -> TensorSpec:
        return cls(data["name"], tuple(data["shape"]), data["dtype"])


def check_inputs(specs: list[TensorSpec], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Inputs in declared order, checked (names, shapes, dtypes) before any native code runs."""
    if not isinstance(feeds, dict):
        raise InputError(f"inputs must be a dict of name -> numpy array, got {type(feeds).__name__}")
    expected = [s.name for s in specs]
    unknown = [name for name in feeds if name not in expected]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {expected}")
    arrays = []
    for spec in specs:
        if spec.name not in feeds:
            raise InputError(f"missing input '{spec.name}' (shape {list(spec.shape)}, {spec.dtype}); "
                             f"the model's inputs are {expected}")
        value = np.asarray(feeds[spec.name])
        if value.dtype != np.dtype(spec.dtype):
            raise InputError(f"input '{spec.name}': expected dtype {spec.dtype}, got {value.dtype}",
                             f"convert it with array.astype(numpy.{spec.dtype})")
        if tuple(value.shape) != spec.shape:
            raise InputError(f"input '{spec.name}': expected shape {list(spec.shape)}, got {list(value.shape)}",
                             "dlc compiles for static shapes; recompile with --shape NAME=... to change them")
        arrays.append(value)
    return arrays


class RuntimeContext(ctypes.Structure):
    """What generated code asks of the runtime (dlc/codegen/llvm_emitter.py RUNTIME_FIELDS)."""

    _fields_ = [("parallel", ctypes.c_void_p),    # GOMP_parallel(fn, data, num_threads, flags)
                ("thread_num", ctypes.c_void_p),  # omp_get_thread_num()
                ("num_threads", ctypes.c_int64),
                ("profile", ctypes.c_void_p),     # int64 nanoseconds per kernel call site
                ("team_size", ctypes.c_void_p)]   # omp_get_num_threads()


def _gomp():
    """libgomp's GOMP_parallel, omp_get_thread_num and omp_get_num_threads (Nones where missing)."""
    import ctypes.util

    name = ctypes.util.find_library("gomp")
    if name is None:
        return None, None, None
    try:
        library = ctypes.CDLL(name)
        return tuple(ctypes.cast(getattr(library, symbol), ctypes.c_void_p).value
                     for symbol in ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads"))
    except (OSError, AttributeError):
        return None, None, None


def default_threads() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class NativeExecutable:
    """A compiled model loaded into this process: one native call per run."""

    def __init__(self, manifest: dict, object_code: bytes, weights: np.ndarray):
        from dlc.codegen.native import NativeModule, host_cpu

        self.manifest = manifest
        self.inputs = [TensorSpec.from_json(t) for t in manifest["inputs"]]
        self.outputs = [TensorSpec.from_json(t) for t in manifest["outputs"]]
        _check_cpu(manifest, host_cpu())
        self._weights = weights  # kept alive: native code reads it
        self._arena = aligned_empty((max(manifest["arena_size"], 1),), np.uint8)
        self._module = NativeModule(object_code)
        self._entry = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                       ctypes.c_void_p)(self._module.address(ENTRY_SYMBOL))
        self.object_code = object_code
        self.profile_sites: list[str] = manifest.get("profile_sites", [])
        self._profile = np.zeros(max(len(self.profile_sites), 1), dtype=np.int64)
        parallel, thread_num, team_size = _gomp()
        threads = manifest.get("threads") or default_threads()
        self._context = RuntimeContext(parallel, thread_num, threads if parallel else 1,
                                       self._profile.ctypes.data, team_size)

    @property
    def num_threads(self) -> int:
        return self._context.num_threads

    def profile(self) -> list[tuple[str, float]]:
        """(kernel, seconds) accumulated since the last reset (a --profile build only)."""
        return [(name, ns * 1e-9) for name, ns in zip(self.profile_sites, self._profile)]

    def reset_profile(self) -> None:
        self._profile[:] = 0

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = check_inputs(self.inputs, feeds)
        # Native code reads contiguous buffers of exactly the declared shape, at the element
        # type's natural alignment (every load and store says so; none assumes more).
        inputs = [a if a.flags.c_contiguous and a.flags.aligned else np.ascontiguousarray(a)
                  for a in arrays]
        outputs = [np.empty(s.shape, s.dtype) for s in self.outputs]
        buffers = (ctypes.c_void_p * (len(inputs) + len(outputs) + 1))(
            *[a.ctypes.data for a in (*inputs, *outputs, self._arena)])
        self._entry(buffers, self._weights.ctypes.data, ctypes.addressof(self._context))
        return {spec.name: out for spec, out in zip(self.outputs, outputs)}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.o").write_bytes(self.object_code)
        self._weights.tofile(directory / "weights.bin")
        (directory / "manifest.json").write_text(json.dumps(self.manifest, indent=2) + "\n")


def _check_cpu(manifest: dict, host: tuple[str, str]) -> None:
    host_features = {f[1:] for f in host[1].split(",") if f.startswith("+")}
    needed = {f[1:] for f in manifest.get("cpu_features", "").split(",") if f.startswith("+")}
    missing = sorted(needed - host_features)
    if missing:
        raise ArtifactError(f"this artifact was compiled for CPU '{manifest.get('cpu')}' and needs "
                            f"features this machine lacks: {', '.join(missing[:8])}",
                            "recompile the model on this machine with `dlc compile`")


def load_artifact(directory: str | Path) -> NativeExecutable:
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise ArtifactError(f"{directory}: not a dlc artifact (no manifest.json)",
                            "make one with `dlc compile MODEL.onnx -o DIR`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{manifest_path}: invalid JSON ({error})") from None
    if manifest.get("format") != "dlc-artifact" or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ArtifactError(f"{manifest_path}: not a dlc artifact manifest of version {MANIFEST_VERSION}")
    for name in ("model.o", "weights.bin"):
        if not (directory / name).exists():
            raise ArtifactError(f"{directory}: incomplete artifact, {name} is missing")
    raw = np.fromfile(directory / "weights.bin", dtype=np.uint8)
    if raw.size != manifest["weights_size"]:
        raise ArtifactError(f"{directory}/weights.bin: expected {manifest['weights_size']} bytes, "
                            f"found {raw.size}")
    return NativeExecutable(manifest, (directory / "model.o").read_bytes(), aligned_copy(raw))
