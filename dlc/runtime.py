"""Load and run a compiled artifact: manifest + weights + object code, one native call.

The artifact (DESIGN.md "The artifact"): a directory with `model.o` (ELF object code
exporting `void dlc_main(void **buffers, void *weights)`, buffers =
inputs, outputs, arena), for a large model the other parts it was split into and compiled
as in parallel (`model.1.o`, ...; dlc/codegen/split_module.py), `weights.bin` (64-byte
aligned weights at manifest offsets), `pool.o` (the thread pool, dlc/thread_pool.py) and
`manifest.json`, which lists the object files with their SHA-256. Loading needs numpy only
on x86-64 Linux (dlc/codegen/elf_loader.py), llvmlite's MCJIT elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import mmap
import os
import re
import sys
import threading
from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np

from dlc.errors import ArtifactError, DlcError, InputError

ALIGNMENT = 64
MANIFEST_VERSION = 2  # 2: "objects" (the parts of a split module) replaced "model_sha256"
ENTRY_SYMBOL = "dlc_main"
OBJECT_FILE = re.compile(r"model(\.[0-9]+)?\.o")


def object_file_names(count: int) -> list[str]:
    """The artifact's object files: `model.o`, then `model.1.o`, ... for a split module."""
    return ["model.o"] + [f"model.{index}.o" for index in range(1, count)]


def aligned_empty(shape, dtype, alignment: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised C-contiguous array whose data pointer is `alignment`-aligned."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = max(count, 1) * dtype.itemsize  # an empty tensor still gets a valid pointer
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype)[:count].reshape(shape)


def aligned_read(path: Path, nbytes: int) -> np.ndarray:
    """The first `nbytes` of the file at `path`, read straight into an aligned buffer (one
    copy of the weights in memory, not two)."""
    out = aligned_empty((nbytes,), np.uint8)
    with path.open("rb") as file:
        read = file.readinto(memoryview(out))
    if read != nbytes:
        raise ArtifactError(f"{path}: expected {nbytes} bytes, read {read}", "the artifact is damaged: compile it again")
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

    _fields_ = [("parallel", ctypes.c_void_p),    # dlc_pool_parallel(worker, data, items)
                ("num_threads", ctypes.c_int64),
                ("profile", ctypes.c_void_p)]     # int64 nanoseconds per kernel call site


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


LOADER_VARIABLE = "DLC_LOADER"


def load_code(objects: Sequence[bytes]):
    """The object files loaded into this process: dlc's own ELF loader where it applies (no
    LLVM in the process: 50 MB less resident memory), else llvmlite's MCJIT. `address(symbol)`
    on the result. DLC_LOADER=mcjit forces MCJIT."""
    from dlc.codegen.elf_loader import ElfImage, UnresolvedSymbol, UnsupportedObject, supported_host

    if supported_host() and os.environ.get(LOADER_VARIABLE, "elf") != "mcjit":
        try:
            return ElfImage(objects)
        except UnresolvedSymbol as symbol:
            raise ArtifactError(f"the object code calls '{symbol}', which this process does not define",
                                "compile the model again on this machine with `dlc compile`") from None
        except UnsupportedObject as reason:
            import logging

            logging.getLogger("dlc.runtime").debug("MCJIT loads this artifact: %s", reason)
    from dlc.codegen.native import NativeModule

    return NativeModule(objects)


class NativeExecutable:
    """A compiled model loaded into this process: one native call per run."""

    def __init__(self, manifest: dict, objects: Sequence[bytes], weights: np.ndarray,
                 pool_object: bytes | None = None):
        self.manifest = manifest
        self.inputs = [TensorSpec.from_json(t) for t in manifest["inputs"]]
        self.outputs = [TensorSpec.from_json(t) for t in manifest["outputs"]]
        _check_cpu(manifest)
        self._weights = weights  # kept alive: native code reads it
        self._arena = aligned_empty((max(manifest["arena_size"], 1),), np.uint8)
        self._arena_lock = threading.Lock()
        self._module = load_code(objects)
        self._entry = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                       ctypes.c_void_p)(self._module.address(ENTRY_SYMBOL))
        self.objects = tuple(objects)
        self.pool_object = pool_object
        self.profile_sites: list[str] = manifest.get("profile_sites", [])
        self._profile = np.zeros(max(len(self.profile_sites), 1), dtype=np.int64)
        threads = manifest.get("threads") or default_threads()
        parallel = None
        if threads > 1:
            from dlc.thread_pool import pool

            parallel = pool(pool_object).parallel
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

    def run(self, feeds: dict[str, np.ndarray], check_bounds: bool | None = None) -> dict[str, np.ndarray]:
        """Outputs for `feeds`; `check_bounds` (default: $DLC_CHECK_BOUNDS) runs `_checked_run`."""
        if check_bounds or (check_bounds is None and self._check_bounds):
            return self._checked_run(feeds)
        arrays = check_inputs(self.inputs, feeds)
        # Native code reads contiguous buffers of exactly the declared shape, at the element
        # type's natural alignment (every load and store says so; none assumes more).
        inputs = [a if a.flags.c_contiguous and a.flags.aligned else np.ascontiguousarray(a)
                  for a in arrays]
        outputs = [np.empty(s.shape, s.dtype) for s in self.outputs]
        # The arena holds this run's intermediates: a run on another Python thread meanwhile
        # (the GIL is released during the native call) gets an arena of its own.
        mine = self._arena_lock.acquire(blocking=False)
        try:
            arena = self._arena if mine else aligned_empty(self._arena.shape, np.uint8)
            buffers = (ctypes.c_void_p * (len(inputs) + len(outputs) + 1))(
                *[a.ctypes.data for a in (*inputs, *outputs, arena)])
            self._entry(buffers, self._weights.ctypes.data, ctypes.addressof(self._context))
        finally:
            if mine:
                self._arena_lock.release()
        return {spec.name: out for spec, out in zip(self.outputs, outputs)}

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
        arrays = check_inputs(self.inputs, feeds)
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
            return {spec.name: buffer.copy_out(spec) for spec, buffer in zip(self.outputs, outputs)}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.iterdir():  # parts of an earlier, larger compile into this directory
            if OBJECT_FILE.fullmatch(stale.name) and stale.name not in {e["file"] for e in self.manifest["objects"]}:
                stale.unlink()
        for entry, code in zip(self.manifest["objects"], self.objects, strict=True):
            (directory / entry["file"]).write_bytes(code)
        if self.pool_object is not None and "pool" in self.manifest:
            (directory / self.manifest["pool"]["file"]).write_bytes(self.pool_object)
        self._weights.tofile(directory / "weights.bin")
        (directory / "manifest.json").write_text(json.dumps(self.manifest, indent=2) + "\n")


# --- checked runs: guard pages around every buffer ---------------------------------------------

PAGE = mmap.PAGESIZE
PROT_NONE = 0  # POSIX; Python's mmap module does not export it


@functools.cache
def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    return libc


@dataclass
class GuardedBuffer:
    """One buffer: [guard page][data pages][guard page] mapped, `address` somewhere in the data."""

    name: str
    base: int      # start of the mapping (the low guard page)
    pages: int     # data pages
    address: int   # what native code gets
    nbytes: int
    writable: bool

    @property
    def data_start(self) -> int:
        return self.base + PAGE

    @property
    def data_end(self) -> int:
        return self.base + PAGE * (1 + self.pages)

    def copy_out(self, spec: TensorSpec) -> np.ndarray:
        if self.nbytes == 0:
            return np.empty(spec.shape, spec.dtype)
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.address))
        return raw.view(spec.dtype).reshape(spec.shape).copy()

    def describe(self, fault: int) -> str | None:
        """Where `fault` lies relative to this buffer, or None when it is not in its mapping."""
        where = f"{self.name} ({self.nbytes} bytes at {self.address:#x})"
        if self.base <= fault < self.data_start:
            return f"{self.address - fault} byte(s) before the start of {where}: the guard page below it"
        if self.data_end <= fault < self.data_end + PAGE:
            past = fault - self.address - self.nbytes
            past = "the first byte past its end" if past == 0 else f"{past} byte(s) after its end"
            return f"byte offset {fault - self.address} of {where}, {past}: the guard page above it"
        if self.data_start <= fault < self.data_end:
            if self.address <= fault < self.address + self.nbytes and not self.writable:
                return f"byte offset {fault - self.address} of {where}, which is read-only (a write?)"
            return (f"byte offset {fault - self.address} of {where}: outside it, in the same page "
                    f"(only the {'end' if fault > self.address else 'start'} of each buffer is "
                    "guarded in this pass)")
        return None


class GuardedBuffers:
    """Each buffer in its own anonymous mapping between PROT_NONE pages; unmapped on exit.

    placement "end": the buffer's last byte is the last byte before the upper guard page;
    placement "start": its first byte is the first byte after the lower guard page.
    """

    def __init__(self, placement: str):
        assert placement in ("end", "start")
        self.placement = placement
        self.buffers: list[GuardedBuffer] = []
        self._libc = _libc()

    def add(self, name: str, nbytes: int, source: np.ndarray | None = None, fill: int = 0,
            writable: bool = True) -> GuardedBuffer:
        pages = max(1, -(-nbytes // PAGE))
        length = PAGE * (pages + 2)
        base = self._libc.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE,
                               mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise MemoryError(f"mmap of {length} bytes for {name} failed: {os.strerror(ctypes.get_errno())}")
        data_start, data_end = base + PAGE, base + PAGE * (1 + pages)
        address = data_end - nbytes if self.placement == "end" else data_start
        buffer = GuardedBuffer(name, base, pages, address, nbytes, writable)
        self.buffers.append(buffer)
        ctypes.memset(data_start, fill, data_end - data_start)
        if source is not None and nbytes:
            ctypes.memmove(address, source.ctypes.data, nbytes)
        self._protect(base, PAGE, PROT_NONE)
        self._protect(data_end, PAGE, PROT_NONE)
        if not writable:
            self._protect(data_start, data_end - data_start, mmap.PROT_READ)
        return buffer

    def _protect(self, address: int, length: int, protection: int) -> None:
        if self._libc.mprotect(address, length, protection) != 0:
            raise OSError(ctypes.get_errno(), f"mprotect failed: {os.strerror(ctypes.get_errno())}")

    def describe(self, fault: int) -> str:
        for buffer in self.buffers:
            where = buffer.describe(fault)
            if where is not None:
                return where
        spans = ", ".join(f"{b.name} [{b.address:#x}, {b.address + b.nbytes:#x})" for b in self.buffers)
        return f"not in any buffer of the call (the stack, or a wild pointer); the buffers: {spans}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        for buffer in self.buffers:
            self._libc.munmap(buffer.base, PAGE * (buffer.pages + 2))
        self.buffers.clear()


class _SigAction(ctypes.Structure):
    """glibc's struct sigaction on Linux (x86-64 and AArch64)."""

    _fields_ = [("sigaction", ctypes.c_void_p), ("mask", ctypes.c_uint64 * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


_SA_SIGINFO, _SA_RESETHAND = 0x4, 0x80000000
_SIGINFO_ADDRESS_OFFSET = 16  # siginfo_t.si_addr on Linux (after si_signo, si_errno, si_code, padding)
_FaultHandler = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_active_guards: list[GuardedBuffers] = []


def _on_fault(signum: int, info: int, _context: int) -> None:
    # Runs on the faulting thread (the GIL was released for the native call). SA_RESETHAND
    # restored the default action, so returning re-executes the access and the process dies
    # of the signal as it would have without the check - with the culprit named first.
    fault = ctypes.c_void_p.from_address(info + _SIGINFO_ADDRESS_OFFSET).value or 0
    where = _active_guards[-1].describe(fault) if _active_guards else "no checked run active"
    os.write(2, f"dlc --check-bounds: invalid memory access (signal {signum}) at {fault:#x}: {where}\n".encode())


_fault_handler = _FaultHandler(_on_fault)  # kept alive for the process: libc holds its address
_fault_lock = threading.Lock()


@contextlib.contextmanager
def report_faults(guarded: GuardedBuffers):
    """While active, SIGSEGV/SIGBUS print where the fault lies relative to `guarded` (Linux)."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = guarded._libc
    import signal

    action = _SigAction(ctypes.cast(_fault_handler, ctypes.c_void_p).value, (ctypes.c_uint64 * 16)(),
                        _SA_SIGINFO | _SA_RESETHAND, None)
    previous = {sig: _SigAction() for sig in (signal.SIGSEGV, signal.SIGBUS)}
    with _fault_lock:  # one checked call at a time: the handler and its buffers are process-wide
        for sig, old in previous.items():
            libc.sigaction(sig, ctypes.byref(action), ctypes.byref(old))
        _active_guards.append(guarded)
        try:
            yield
        finally:
            _active_guards.pop()
            for sig, old in previous.items():
                libc.sigaction(sig, ctypes.byref(old), None)


@functools.cache
def cpuinfo_flags() -> frozenset[str] | None:
    """This machine's CPU flags as Linux lists them (/proc/cpuinfo), or None elsewhere."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _check_cpu(manifest: dict) -> None:
    """Refuse code for instructions this CPU lacks (it would die of SIGILL).

    When this machine has every flag of the machine that compiled the artifact (the usual
    case: the same machine), the check needs no LLVM; else LLVM's feature list decides.
    """
    here = cpuinfo_flags()
    there = manifest.get("cpu_flags")
    if here is not None and isinstance(there, list) and there and here.issuperset(there):
        return
    from dlc.codegen.native import host_cpu

    host = host_cpu()
    host_features = {f[1:] for f in host[1].split(",") if f.startswith("+")}
    needed = {f[1:] for f in manifest.get("cpu_features", "").split(",") if f.startswith("+")}
    missing = sorted(needed - host_features)
    if missing:
        raise ArtifactError(f"this artifact was compiled for CPU '{manifest.get('cpu')}' and needs "
                            f"features this machine lacks: {', '.join(missing[:8])}",
                            "recompile the model on this machine with `dlc compile`")


def load_artifact(directory: str | Path, max_memory: str | int | None = None) -> NativeExecutable:
    """Load an artifact; one needing more than the memory limit (dlc/memory_limit.py) is refused first."""
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
        raise ArtifactError(f"{manifest_path}: not a dlc artifact manifest of version {MANIFEST_VERSION} "
                            f"(found version {manifest.get('manifest_version')!r})",
                            "compile the model again with this dlc: `dlc compile MODEL.onnx -o DIR`")
    _check_manifest(manifest, manifest_path, max_memory)
    files = [entry["file"] for entry in manifest["objects"] + ([manifest["pool"]] if "pool" in manifest else [])]
    for name in (*files, "weights.bin"):
        if not (directory / name).exists():
            raise ArtifactError(f"{directory}: incomplete artifact, {name} is missing")
    size = (directory / "weights.bin").stat().st_size
    if size != manifest["weights_size"]:
        raise ArtifactError(f"{directory}/weights.bin: expected {manifest['weights_size']} bytes, "
                            f"found {size}", "the artifact is damaged: compile it again")
    weights = aligned_read(directory / "weights.bin", manifest["weights_size"])
    objects = [_read_verified(directory, entry) for entry in manifest["objects"]]
    pool_object = _read_verified(directory, manifest["pool"]) if "pool" in manifest else None
    return NativeExecutable(manifest, objects, weights, pool_object)


def _read_verified(directory: Path, entry: dict) -> bytes:
    """An object file the manifest lists, checked against its SHA-256: linking damaged
    object code would crash the process."""
    code = (directory / entry["file"]).read_bytes()
    if hashlib.sha256(code).hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{directory}/{entry['file']}: damaged (its SHA-256 differs from the manifest's)",
                            "compile the model again with `dlc compile`")
    return code


def _check_manifest(manifest: dict, path: Path, max_memory: str | int | None) -> None:
    """Fields the loader trusts have the right types, and the memory they claim fits the limit."""
    from dlc import memory_limit

    def bad(field: str) -> ArtifactError:
        return ArtifactError(f"{path}: field '{field}' is missing or malformed",
                             "the artifact is damaged: compile the model again with `dlc compile`")

    objects = manifest.get("objects")
    if (not isinstance(objects, list) or not objects
            or not all(isinstance(entry, dict) and isinstance(entry.get("file"), str)
                       and OBJECT_FILE.fullmatch(entry["file"]) and isinstance(entry.get("sha256"), str)
                       for entry in objects)):
        raise bad("objects")  # names are checked: a manifest must not point outside its directory
    pool = manifest.get("pool")
    if pool is not None and not (isinstance(pool, dict) and pool.get("file") == "pool.o"
                                 and isinstance(pool.get("sha256"), str)):
        raise bad("pool")
    for field in ("arena_size", "weights_size"):
        if not isinstance(manifest.get(field), int) or isinstance(manifest[field], bool) or manifest[field] < 0:
            raise bad(field)
    tensors = 0
    for field in ("inputs", "outputs"):
        specs = manifest.get(field)
        if not isinstance(specs, list):
            raise bad(field)
        for spec in specs:
            try:
                shape = [int(d) for d in spec["shape"]]
                itemsize = np.dtype(spec["dtype"]).itemsize
                str(spec["name"])
            except (KeyError, TypeError, ValueError):
                raise bad(field) from None
            if any(d < 0 for d in shape):
                raise bad(field)
            tensors += int(np.prod(shape, dtype=object)) * itemsize
    memory_limit.check(tensors + manifest["arena_size"] + manifest["weights_size"],
                       memory_limit.resolve_limit(max_memory), f"running the artifact {path.parent}",
                       {"inputs and outputs": tensors, "weights": manifest["weights_size"],
                        "intermediates (memory plan)": manifest["arena_size"]})
