"""A compiled model loaded into this process: inputs checked, then one native call per run.

`NativeExecutable` owns the loaded code (the artifact's `model.so` through dlopen; object
files where no linker was found: dlc's own ELF loader on x86-64 Linux,
dlc/runtime/elf_loader.py, else llvmlite's MCJIT, dlc/runtime/mcjit.py), the weights, the
arena of the memory plan and the runtime context that generated code reads (thread pool,
thread count, profile counters). Loading an artifact from disk: dlc/runtime/artifact.py.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlc.errors import ArtifactError, DlcError, InputError
from dlc.runtime.artifact import (
    ENTRY_SYMBOL,
    LIBRARY_FILE,
    huge_page_buffer,
    read_artifact,
    write_artifact,
)
from dlc.runtime.contract import CONTRACT_SYMBOL, TRUSTED_SYMBOL, check_contract, check_trusted_weights
from dlc.runtime.guard import GuardedBuffers, report_faults
from dlc.runtime.host import check_cpu, default_threads
from dlc.runtime.loader import SharedLibrary, load_code


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


def check_inputs(specs: list[TensorSpec], feeds: dict[str, np.ndarray],
                 constant_inputs: Sequence[str] = ()) -> list[np.ndarray]:
    """Inputs in declared order, checked (names, shapes, dtypes) before any native code runs.

    `constant_inputs`: initializers the model also lists as graph inputs (ONNX IR >= 4 lets a
    caller override them) whose values were compiled in; feeding one is refused, not ignored.
    """
    if not isinstance(feeds, dict):
        raise InputError(f"inputs must be a dict of name -> numpy array, got {type(feeds).__name__}")
    expected = [s.name for s in specs]
    baked = [name for name in feeds if name in constant_inputs]
    if baked:
        raise InputError(f"input(s) {baked} are initializers that the model also lists as graph inputs; "
                         "dlc compiled their values into the model (and folded them), so a value fed "
                         "at run time would be ignored",
                         "recompile with --initializers-as-inputs (dlc.compile(..., "
                         "initializers_as_inputs=True)) to feed them on every run")
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
        if value.dtype == np.bool_ and value.size and value.view(np.uint8).max() > 1:
            # A bool array built from raw bytes (np.frombuffer, .view) can hold 2..255, which
            # generated code would and/xor bitwise; onnxruntime reads any non-zero byte as true.
            value = value.view(np.uint8) != 0
        arrays.append(value)
    return arrays


def check_outputs(specs: list[TensorSpec], outputs, inputs: Sequence[np.ndarray] = ()) -> dict[str, np.ndarray]:
    """The caller's buffers for some or all outputs (`run(feeds, outputs=...)`, as onnxruntime's
    IO binding), checked before any native code writes them: each an ndarray of the output's
    dtype and shape, C-contiguous, aligned and writeable, sharing no memory with an input or with
    another output (the native code reads its inputs while it writes its outputs)."""
    if not isinstance(outputs, dict):
        raise InputError(f"outputs must be a dict of name -> numpy array, got {type(outputs).__name__}")
    by_name = {spec.name: spec for spec in specs}
    unknown = [name for name in outputs if name not in by_name]
    if unknown:
        raise InputError(f"unknown output name(s) {unknown}; the model's outputs are {list(by_name)}")
    checked = {}
    for name, value in outputs.items():
        spec = by_name[name]
        if not isinstance(value, np.ndarray):
            raise InputError(f"output '{name}': expected a numpy array to write into, got {type(value).__name__}")
        if value.dtype != np.dtype(spec.dtype) or tuple(value.shape) != tuple(spec.shape):
            raise InputError(f"output '{name}': expected a {spec.dtype} array of shape {list(spec.shape)}, "
                             f"got {value.dtype} of shape {list(value.shape)}",
                             f"allocate it with numpy.empty({tuple(spec.shape)}, numpy.{spec.dtype})")
        if not (value.flags.c_contiguous and value.flags.aligned and value.flags.writeable):
            raise InputError(f"output '{name}': the array must be C-contiguous, aligned and writeable",
                             "pass numpy.empty(shape, dtype), or leave it out to get a new array")
        others = [*inputs, *checked.values()]
        if any(np.may_share_memory(value, other) for other in others):
            raise InputError(f"output '{name}': the array shares memory with an input or another output",
                             "give every output a buffer of its own")
        checked[name] = value
    return checked


def write_outputs(results: dict[str, np.ndarray], outputs, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """`results` copied into the caller's buffers (`run(..., outputs=...)` of a model whose code
    cannot write them itself: other targets, shapes only known per run): checked as
    `check_outputs` does, against each result's own shape; returns `results` with them in."""
    specs = [TensorSpec(spec.name, tuple(results[spec.name].shape), str(results[spec.name].dtype))
             for spec in specs if spec.name in results]
    for name, buffer in check_outputs(specs, outputs).items():
        np.copyto(buffer, results[name])
        results[name] = buffer
    return results


# Arenas kept for reuse per model (runs in flight at once beyond this allocate and free theirs).
MAX_FREE_ARENAS = 64


class RuntimeContext(ctypes.Structure):
    """What generated code asks of the runtime (dlc/codegen/llvm_emitter.py RUNTIME_FIELDS)."""

    _fields_ = [("parallel", ctypes.c_void_p),    # dlc_pool_parallel(worker, data, items)
                ("num_threads", ctypes.c_int64),
                ("profile", ctypes.c_void_p)]     # int64 nanoseconds per kernel call site



class NativeExecutable:
    """A compiled model loaded into this process: one native call per run."""

    def __init__(self, manifest: dict, objects: Sequence[bytes], weights: np.ndarray,
                 pool_object: bytes | None = None, library_path: Path | None = None):
        """`objects`: `[model.so]` when the manifest has a `library` (opened from
        `library_path`, its checked copy on disk, else from these bytes), else the object files."""
        self.manifest = manifest
        self.inputs = [TensorSpec.from_json(t) for t in manifest["inputs"]]
        self.outputs = [TensorSpec.from_json(t) for t in manifest["outputs"]]
        self.constant_inputs = tuple(manifest.get("constant_inputs", ()))
        check_cpu(manifest)
        self._weights = weights  # kept alive: native code reads it
        self._weights_address = weights.ctypes.data
        # Arenas of the memory plan, one per run in flight: a run takes a free one (or makes
        # one) and gives it back, so concurrent callers do not allocate and fault in a fresh
        # arena on every run (15 of 16 callers did, when only one arena existed).
        self._arena_size = max(manifest["arena_size"], 1)
        self._free_arenas = [self._new_arena()]
        self._arenas_lock = threading.Lock()
        # What a well-formed feed looks like, for `_exact_inputs` (the common case's fast path).
        self._input_signature = [(s.name, np.dtype(s.dtype), tuple(s.shape)) for s in self.inputs]
        self._bool_inputs = any(dtype == np.bool_ for _, dtype, _ in self._input_signature)
        self._output_signature = [(s.shape, np.dtype(s.dtype)) for s in self.outputs]
        self._in_flight = 0  # runs inside the native call now (Python threads)
        self._most_in_flight = 1
        if "library" in manifest:
            self._module = SharedLibrary(library_path, None if library_path else objects[0])
            pool_code = self._module  # the pool is inside; the process's first one serves all
        else:
            self._module = load_code(objects, exports=(ENTRY_SYMBOL,))
            pool_code = pool_object
        try:
            entry = self._module.address(ENTRY_SYMBOL)
        except KeyError:
            raise ArtifactError(f"the model's code does not export {ENTRY_SYMBOL}",
                                "compile the model again with `dlc compile`") from None
        self._entry = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                       ctypes.c_void_p)(entry)
        try:  # before any buffer is sized by the manifest: its sizes are the code's (dlc/runtime/contract.py)
            check_contract(manifest, self._module.address(CONTRACT_SYMBOL))
        except KeyError:
            raise ArtifactError(f"the model's code does not export {CONTRACT_SYMBOL}",
                                "compile the model again with `dlc compile`") from None
        try:  # before anything runs: integer weights steer addresses (dlc/runtime/contract.py)
            trusted = self._module.address(TRUSTED_SYMBOL)
        except KeyError:  # code of a dlc before the check: it trusts what its hashes say
            trusted = None
        if trusted is not None:
            check_trusted_weights(trusted, weights)
        self.objects = tuple(objects)
        self.pool_object = pool_object
        self.profile_sites: list[str] = manifest.get("profile_sites", [])
        self._profile = np.zeros(max(len(self.profile_sites), 1), dtype=np.int64)
        threads = manifest.get("threads") or default_threads()
        parallel = None
        if threads > 1:
            from dlc.runtime.thread_pool import pool

            parallel = pool(pool_code).parallel
            threads = pool().ensure_threads(threads)
        self._context = RuntimeContext(parallel, threads, self._profile.ctypes.data)
        # Read once: the normal path pays one attribute test per run for the checked mode.
        self._check_bounds = os.environ.get("DLC_CHECK_BOUNDS", "0") not in ("", "0", "off", "false")

    @property
    def num_threads(self) -> int:
        return self._context.num_threads

    def profile(self) -> list[tuple[str, float]]:
        """(kernel, seconds) accumulated since the last reset (a --profile build only)."""
        return [(name, ns * 1e-9) for name, ns in zip(self.profile_sites, self._profile)]

    def reset_profile(self) -> None:
        self._profile[:] = 0

    def run(self, feeds: dict[str, np.ndarray], check_bounds: bool | None = None,
            outputs: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Outputs for `feeds`, written into `outputs`' arrays where given (`check_outputs`);
        `check_bounds` (default: $DLC_CHECK_BOUNDS) runs `_checked_run`."""
        if check_bounds or (check_bounds is None and self._check_bounds):
            results = self._checked_run(feeds)
            return results if outputs is None else write_outputs(results, outputs, self.outputs)
        inputs = self._exact_inputs(feeds)
        if inputs is None:
            arrays = check_inputs(self.inputs, feeds, self.constant_inputs)
            # Native code reads contiguous buffers of exactly the declared shape, at the element
            # type's natural alignment (every load and store says so; none assumes more).
            inputs = [a if a.flags.c_contiguous and a.flags.aligned else np.ascontiguousarray(a)
                      for a in arrays]
        given = {} if outputs is None else check_outputs(self.outputs, outputs, inputs)
        outputs = [given[spec.name] if spec.name in given else np.empty(shape, dtype)
                   for spec, (shape, dtype) in zip(self.outputs, self._output_signature)]
        # The arena holds this run's intermediates: a run on another Python thread meanwhile
        # (the GIL is released during the native call) gets an arena of its own.
        with self._arenas_lock:
            arena = self._free_arenas.pop() if self._free_arenas else None
            self._in_flight += 1
            callers = self._in_flight
        if arena is None:
            arena = self._new_arena()
        if callers > self._most_in_flight and self._context.parallel:
            self._widen_pool(callers)
        try:
            buffers = (ctypes.c_void_p * (len(inputs) + len(outputs) + 1))(
                *[a.ctypes.data for a in (*inputs, *outputs)], arena[1])
            self._entry(buffers, self._weights_address, ctypes.addressof(self._context))
            self._raise_failed_check(arena[0].data)
        finally:
            with self._arenas_lock:
                self._in_flight -= 1
                if len(self._free_arenas) < MAX_FREE_ARENAS:
                    self._free_arenas.append(arena)
        return {spec.name: out for spec, out in zip(self.outputs, outputs)}

    def _new_arena(self) -> tuple[np.ndarray, int]:
        """An arena of the memory plan and its address (read once: `.ctypes.data` costs about
        a microsecond, a tenth of a small model's whole call); a large one on huge pages, as
        the weights are, wherever this process's heap stands."""
        arena = huge_page_buffer(self._arena_size)
        return arena, arena.ctypes.data

    def _exact_inputs(self, feeds) -> list[np.ndarray] | None:
        """The feeds in declared order when each is already what the native code reads (an
        ndarray of the declared dtype and shape, C-contiguous and aligned, no other names; not
        bool, whose bytes `check_inputs` may have to normalise), else None: `check_inputs` then
        checks them, converts them or says what is wrong."""
        if type(feeds) is not dict or len(feeds) != len(self._input_signature) or self._bool_inputs:
            return None
        arrays = []
        for name, dtype, shape in self._input_signature:
            value = feeds.get(name)
            if (type(value) is not np.ndarray or value.dtype != dtype or value.shape != shape
                    or not (value.flags.c_contiguous and value.flags.aligned)):
                return None
            arrays.append(value)
        return arrays

    def _widen_pool(self, callers: int) -> None:
        """Workers for `callers` concurrent runs: each publishes regions of up to num_threads
        items (a job slot each, served by every worker), so the pool needs num_threads - 1
        workers per caller, but never more threads than cores with the callers counted: the
        pool only grows, and idle workers spin, so on the 16-core machine 15 workers beside 2
        callers of 8 threads (17 threads) left ResNet-18 at half onnxruntime's throughput."""
        from dlc.runtime.thread_pool import pool

        self._most_in_flight = callers
        workers = min(default_threads() - callers, callers * (self.num_threads - 1))
        pool().ensure_threads(max(workers, self.num_threads - 1) + 1)

    def _raise_failed_check(self, arena: memoryview) -> None:
        """Raise the error a run-time check of the generated code recorded in this run's status
        word (passes/lowering/utils/runtime_checks.py): integer division by zero, an index out
        of range. The code has kept every access safe; the outputs are refused."""
        offset = self.manifest.get("status_offset")
        if offset is None:
            return
        code = int.from_bytes(arena[offset:offset + 4], "little", signed=True)
        if code:
            sites = self.manifest.get("error_sites", [])
            raise DlcError(sites[code - 1] if 0 < code <= len(sites) else
                           f"a run-time check failed with the unknown code {code}",
                           "the model's result for these inputs is undefined in ONNX; "
                           "onnxruntime refuses them too")

    def _checked_run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run twice with every buffer in its own mapping between PROT_NONE guard pages.

        Pass 1 ends each buffer exactly at a guard page (catches overruns, to the byte); pass 2
        starts each right after one (catches underruns). Inputs and the weights are read-only
        (generated code must never write them); outputs and the arena start filled with a
        different byte pattern in each pass, so the two passes' outputs differ if the code reads
        memory it never wrote - that raises a DlcError. An invalid access raises SIGSEGV: the
        handler names the buffer and offset on stderr, then the process dies of the signal.

        Alignment: every load and store the code generators emit claims only the element's
        natural alignment (ukernels.py `align 4`; llvm_emitter.py `byte_size(element)`), and
        the normal path hands numpy's 16-byte aligned arrays straight in. End-aligning a
        buffer of n bytes puts its start at the page end minus n, which keeps
        gcd(n, 4096)-byte alignment: at least the element size for a tensor and 64 for the arena
        and the weights blob (both sizes are multiples of 64). So pass 1 needs no slack: the byte
        after a buffer is the guard page's first byte. Not covered: overruns from one
        weight into the next one's 64-byte padding or between tensors sharing the arena (one
        pointer each reaches native code), and stack buffers (memref.alloca).
        """
        arrays = check_inputs(self.inputs, feeds, self.constant_inputs)
        results = [self._guarded_run(arrays, placement, poison)
                   for placement, poison in (("end", 0xFF), ("start", 0x5A))]
        for spec in self.outputs:
            if results[0][spec.name].tobytes() != results[1][spec.name].tobytes():
                raise DlcError(f"output '{spec.name}' differs between the two checked runs (buffers placed "
                               "at a guard page's end vs its start, arena and outputs pre-filled with "
                               "0xFF vs 0x5A bytes): the generated code reads memory it never wrote",
                               "this is a bug in dlc; report it with the model and `dlc run --check-bounds`")
        return results[0]

    def _guarded_run(self, arrays: list[np.ndarray], placement: str, poison: int) -> dict[str, np.ndarray]:
        with GuardedBuffers(placement) as guarded:
            contiguous = [np.ascontiguousarray(array) for array in arrays]
            inputs = [guarded.add(f"input '{spec.name}'", array.nbytes, source=array, writable=False)
                      for spec, array in zip(self.inputs, contiguous)]
            outputs = [guarded.add(f"output '{spec.name}'",
                                   int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize,
                                   fill=poison) for spec in self.outputs]
            arena = guarded.add("the arena", int(self.manifest["arena_size"]), fill=poison)
            weights = guarded.add("the weights", self._weights.nbytes, source=self._weights, writable=False)
            buffers = (ctypes.c_void_p * (len(inputs) + len(outputs) + 1))(
                *[b.address for b in (*inputs, *outputs, arena)])
            with report_faults(guarded):
                self._entry(buffers, weights.address, ctypes.addressof(self._context))
            arena_bytes = (ctypes.c_uint8 * arena.nbytes).from_address(arena.address)
            self._raise_failed_check(memoryview(arena_bytes))
            return {spec.name: buffer.copy_out(spec) for spec, buffer in zip(self.outputs, outputs)}

    def save(self, directory: str | Path) -> None:
        write_artifact(directory, self.manifest, self.objects, self._weights, self.pool_object)


class ForeignExecutable:
    """A model compiled for a CPU this machine is not (`--cpu x86-64-v4` on an AVX2 machine):
    it saves as an artifact for the machine it was built for; running it here raises the CPU
    check's error (dlc/runtime/host.py check_cpu) rather than dying of SIGILL."""

    def __init__(self, manifest: dict, objects: Sequence[bytes], weights: np.ndarray,
                 pool_object: bytes | None, error: ArtifactError):
        self.manifest, self.objects, self._weights, self.pool_object = manifest, tuple(objects), weights, pool_object
        self.inputs = [TensorSpec.from_json(t) for t in manifest["inputs"]]
        self.outputs = [TensorSpec.from_json(t) for t in manifest["outputs"]]
        self.constant_inputs = tuple(manifest.get("constant_inputs", ()))
        self.profile_sites: list[str] = manifest.get("profile_sites", [])
        self.error = error

    def run(self, feeds: dict[str, np.ndarray], check_bounds: bool | None = None) -> dict[str, np.ndarray]:
        raise self.error

    def save(self, directory: str | Path) -> None:
        write_artifact(directory, self.manifest, self.objects, self._weights, self.pool_object)


def executable_for(manifest: dict, objects: Sequence[bytes], weights: np.ndarray,
                   pool_object: bytes | None = None) -> NativeExecutable | ForeignExecutable:
    """A freshly compiled model: loaded here when this CPU runs its code, else kept to save."""
    try:
        check_cpu(manifest)
    except ArtifactError as error:
        return ForeignExecutable(manifest, objects, weights, pool_object, error)
    return NativeExecutable(manifest, objects, weights, pool_object)


def load_artifact(directory: str | Path, max_memory: str | int | None = None,
                  unchanged: Mapping[str, tuple] | None = None) -> NativeExecutable:
    """Load an artifact directory; one needing more than the memory limit
    (dlc/runtime/memory_limit.py) is refused before anything is allocated. `unchanged`: files
    the caller has hashed already, by identity (dlc/runtime/artifact.py `read_artifact`)."""
    manifest, objects, weights, pool_object = read_artifact(directory, max_memory, unchanged)
    # dlopen maps the file whose hash was just checked (the artifact is as trusted as its
    # directory, docs/artifact.md); perf and gdb then name its functions.
    library = Path(directory) / LIBRARY_FILE if "library" in manifest else None
    return NativeExecutable(manifest, objects, weights, pool_object, library)
