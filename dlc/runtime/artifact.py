"""The artifact on disk (DESIGN.md "The artifact"): its format, reading and checking.

A directory with `model.so` (a shared library linked by the system linker,
dlc/codegen/link.py, exporting `void dlc_main(void **buffers, void *weights, void *context)`,
buffers = inputs, outputs, arena, the thread pool and the C API of docs/c-api.md),
`weights.bin` (64-byte aligned weights at manifest offsets) and `manifest.json`. Where no
linker exists, object files instead of `model.so`: `model.o` and, for a large model, the
other parts it was split into and compiled in parallel (`model.1.o`, ...;
dlc/codegen/split_module.py), and `pool.o` (the thread pool, dlc/runtime/thread_pool.py).

Integrity: the manifest lists the size and SHA-256 of every other file (weights included) and
carries `integrity`, the SHA-256 of its own canonical JSON without that field, so an edited
field (an output shape, the arena size) is caught too: the code was compiled for the values
written. Loading checks, before anything is allocated or mapped: every manifest field against
`_FIELDS`, the memory the manifest claims against the limit, then each file (a regular file,
opened without blocking, of the listed size, read once and hashed as it is read). Hashing the
weights costs ResNet-50 (100 MiB) 87 ms with SHA-256 (1.15 GiB/s with SHA-NI), against 192 ms
with BLAKE2b. The object code is then checked as ELF (dlc/runtime/elf_loader.py) before any
loader sees it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dlc.errors import ArtifactError
from dlc.runtime import memory_limit

ALIGNMENT = 64  # weights.bin offsets and the arena
# 3: "objects" and "pool" are file names; "files" (size and SHA-256 of every file) and
# "integrity" (the manifest's own hash) were added. 4: "library" (model.so) in place of the
# objects where a linker exists, "c_api", "cpu_target".
MAX_THREADS = 4096  # what a manifest may ask for; the pool itself caps its workers
MANIFEST_VERSION = 4
ENTRY_SYMBOL = "dlc_main"
POOL_SYMBOLS = ("dlc_pool_parallel", "dlc_pool_start", "dlc_pool_stop", "dlc_pool_forget", "dlc_pool_own_items")
MANIFEST_FILE, WEIGHTS_FILE, POOL_FILE, LIBRARY_FILE = "manifest.json", "weights.bin", "pool.o", "model.so"
MAX_LIBRARY_BYTES = 4 << 30
OBJECT_FILE = re.compile(r"model(\.[1-9][0-9]{0,3})?\.o")
MAX_MANIFEST_BYTES = 16 << 20  # a 10,000-kernel model's manifest is under 4 MiB
MAX_OBJECT_BYTES = 1 << 30
# What dlc emits (dialects/types.py): nothing else may size an input or output buffer.
DTYPES = frozenset(
    {
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
    }
)
RECOMPILE = "the artifact is damaged or was edited: compile the model again with `dlc compile`"
_READ_CHUNK = 4 << 20  # hashed while still in the cache, right after it is read
_SHA256 = re.compile(r"[0-9a-f]{64}")


def aligned_empty(shape, dtype, alignment: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised C-contiguous array whose data pointer is `alignment`-aligned."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = max(count, 1) * dtype.itemsize  # an empty tensor still gets a valid pointer
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + nbytes].view(dtype)[:count].reshape(shape)


# A weights blob or an arena of at least this many bytes goes on transparent huge pages where
# the OS has them (Linux's MADV_HUGEPAGE; with THP "never" the advice does nothing): an LSTM's
# time step streams its 1 MiB recurrent weight every step, and on 4 KiB pages each 4 KiB of it
# is a DTLB miss (benchmarks/README.md "Native loops": lstm_h256_s64 ~5% faster). An arena from
# numpy instead lands wherever malloc puts it: after a compile in the same process (glibc's mmap
# threshold has grown past the compile's freed arrays) that is the heap's recycled small pages.
HUGE_PAGE_MIN_BYTES = 1 << 20
_HUGE_PAGE = 2 << 20


_HUGE_PAGES = [True]  # `no_huge_pages` turns the advice off for the process


def no_huge_pages() -> None:
    """From now on this process advises neither weight blobs nor numpy's large arrays for huge
    pages: for a process that runs no model (`dlc compile`). The advice buys run time only, and
    with THP's defrag on "madvise" (the development VM's) a huge page fault compacts memory
    first: 4 x 46 MB of numpy arrays took 0.03-1.4 s to fill with the advice, 0.1 s without,
    and ResNet-50's compile spent 0.5-1.1 s of system time against 0.3 (issue 16)."""
    _HUGE_PAGES[0] = False
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy 1.x
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return
    with contextlib.suppress(Exception):
        _set_madvise_hugepage(False)


def huge_page_buffer(nbytes: int) -> np.ndarray:
    """A zeroed uint8 buffer of `nbytes` (the weights blob, an arena), `ALIGNMENT`-aligned; from
    HUGE_PAGE_MIN_BYTES on, private anonymous memory aligned to 2 MiB and advised for huge
    pages (the mapping lives as long as the array; not after `no_huge_pages`)."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_PAGE_MIN_BYTES or advice is None or not hasattr(mmap, "MAP_ANONYMOUS"):
        buffer = aligned_empty((nbytes,), np.uint8)
        buffer[:] = 0
        return buffer
    size = -(-nbytes // _HUGE_PAGE) * _HUGE_PAGE
    mapping = mmap.mmap(-1, size + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = np.frombuffer(mapping, np.uint8)
    start = -whole.ctypes.data % _HUGE_PAGE
    if _HUGE_PAGES[0]:
        with contextlib.suppress(OSError):  # a kernel without THP: ordinary pages
            mapping.madvise(advice, start, size)
    return whole[start:start + nbytes]


def object_file_names(count: int) -> list[str]:
    """The artifact's object files: `model.o`, then `model.1.o`, ... for a split module."""
    return ["model.o"] + [f"model.{index}.o" for index in range(1, count)]


# --- files: regular, bounded, never blocking -----------------------------------------------------


def open_regular_file(path: Path, max_bytes: int | None = None) -> tuple[int, int]:
    """(descriptor, size) of the regular file at `path`. O_NONBLOCK: opening a FIFO must not
    wait for a writer; fstat, not a path check, so what is checked is what is read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise ArtifactError(f"{path}: cannot be opened ({error.strerror})", RECOMPILE) from None
    info = os.fstat(descriptor)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file (a FIFO, device or directory is never read)"
    elif max_bytes is not None and info.st_size > max_bytes:
        problem = f"holds {info.st_size} bytes, more than the {max_bytes} this file may hold"
    if problem:
        os.close(descriptor)
        raise ArtifactError(f"{path}: {problem}", RECOMPILE)
    return descriptor, info.st_size


@contextlib.contextmanager
def _read_errors(path: Path):
    """A read the OS refuses (EIO from a /proc file that fstat calls regular, a disk error) is
    the artifact's fault, named as such, not an internal error."""
    try:
        yield
    except OSError as error:
        raise ArtifactError(f"{path}: cannot be read ({error.strerror or error})", RECOMPILE) from None


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The whole regular file at `path`, of at most `max_bytes`."""
    descriptor, _ = open_regular_file(path, max_bytes)
    with os.fdopen(descriptor, "rb") as file, _read_errors(path):
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew after the check
        raise ArtifactError(
            f"{path}: more than the {max_bytes} bytes this file may hold", RECOMPILE
        )
    return data


def file_identity(info: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file's bytes may have: device, inode, size, and the modification
    and status-change times in nanoseconds. The kernel sets the change time at every write,
    truncation and chmod, and no call sets it back (only a reset clock could), so a file whose
    identity is one recorded after its bytes were hashed still holds those bytes. The compile
    cache records it at store (dlc/cache.py STAMPS) to skip hashing its entries at every hit."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def file_sha256(path: Path) -> str:
    """SHA-256 of the regular file at `path`, read in chunks."""
    return identified_sha256(path)[1]


def identified_sha256(path: Path) -> tuple[tuple[int, ...], str]:
    """(identity, SHA-256) of the regular file at `path`; the identity is taken before the
    bytes are read, so a write during the read leaves the file with another identity."""
    digest = hashlib.sha256()
    descriptor, _ = open_regular_file(path)
    identity = file_identity(os.fstat(descriptor))
    with os.fdopen(descriptor, "rb", buffering=0) as file, _read_errors(path):
        for block in iter(lambda: file.read(_READ_CHUNK), b""):
            digest.update(block)
    return identity, digest.hexdigest()


def _read_listed(directory: Path, name: str, entry: dict, into: np.ndarray | None = None,
                 unchanged: Mapping[str, tuple] | None = None):
    """A file the manifest lists, of its listed size and SHA-256: into `into` (the weights'
    aligned buffer), else as bytes. Its hash is not computed when its identity is
    `unchanged[name]`: the caller hashed those very bytes before (the compile cache)."""
    path = directory / name
    if not os.path.lexists(path):
        raise ArtifactError(f"{directory}: incomplete artifact, {name} is missing", RECOMPILE)
    descriptor, found = open_regular_file(path)
    hashed = unchanged is None or unchanged.get(name) != file_identity(os.fstat(descriptor))
    size = entry["size"]
    with os.fdopen(descriptor, "rb", buffering=0) as file, _read_errors(path):
        if found != size:
            detail = f"expected {size} bytes, found {found}"
            raise ArtifactError(
                f"{path}: {detail}" if name == WEIGHTS_FILE else f"{path}: damaged ({detail})",
                RECOMPILE,
            )
        out = memoryview(into if into is not None else bytearray(size)).cast("B")
        digest, at = hashlib.sha256(), 0
        while at < size:
            read = file.readinto(out[at : at + _READ_CHUNK])
            if not read:
                raise ArtifactError(f"{path}: shrank to {at} bytes while it was read", RECOMPILE)
            if hashed:
                digest.update(out[at : at + read])
            at += read
    if hashed and digest.hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{path}: damaged (its SHA-256 differs from the manifest's)", RECOMPILE)
    return into if into is not None else bytes(out)


# --- the manifest: one schema ---------------------------------------------------------------------


def _natural(value, limit: int = 1 << 62) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _text(value, limit: int = 4096) -> bool:
    return isinstance(value, str) and len(value) <= limit


def _texts(value, limit: int = 1 << 20) -> bool:
    return isinstance(value, list) and len(value) <= limit and all(map(_text, value))


def _tensor_specs(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= 1 << 16
        and all(
            isinstance(spec, dict)
            and spec.keys() == {"name", "shape", "dtype"}
            and _text(spec["name"])
            and _text(spec["dtype"]) and spec["dtype"] in DTYPES  # a list is unhashable: test the type first
            and isinstance(spec["shape"], list)
            and len(spec["shape"]) <= 64
            and all(_natural(dim, 1 << 40) for dim in spec["shape"])
            for spec in value
        )
        and len({spec["name"] for spec in value}) == len(value)
    )


def _files(value) -> bool:
    return (
        isinstance(value, dict)
        and len(value) <= 1 << 12
        and all(
            isinstance(entry, dict)
            and entry.keys() == {"size", "sha256"}
            and _natural(entry["size"])
            and isinstance(entry["sha256"], str)
            and _SHA256.fullmatch(entry["sha256"])
            for entry in value.values()
        )
    )


# A kernel's fields: the last two only where it computes its ops another way than their FLOPs
# count (a Winograd conv): the FLOPs it executes and what it ran as.
_KERNEL_FIELDS = {"name", "nodes", "flops", "bytes", "executed_flops", "algorithm"}


def _kernels(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= 1 << 20
        and all(
            isinstance(kernel, dict)
            and {"name", "nodes", "flops", "bytes"} <= kernel.keys() <= _KERNEL_FIELDS
            and _text(kernel["name"])
            and _texts(kernel["nodes"])
            and _natural(kernel["flops"])
            and _natural(kernel["bytes"])
            and _natural(kernel.get("executed_flops", 0))
            and _text(kernel.get("algorithm", "-"))
            for kernel in value
        )
    )


# field: (check, what it must be). Every field is listed: an unknown one is refused.
_FIELDS = {
    "format": (lambda v: v == "dlc-artifact", '"dlc-artifact"'),
    "manifest_version": (lambda v: v == MANIFEST_VERSION, str(MANIFEST_VERSION)),
    "dlc_version": (_text, "a string"),
    "target": (lambda v: v == "cpu", '"cpu"'),
    "cpu": (_text, "a string"),
    "cpu_features": (
        lambda v: (
            _text(v, 1 << 16) and all(re.fullmatch(r"[+-][\w.-]+", f) for f in v.split(",") if f)
        ),
        'a string like "+avx2,-avx512f"',
    ),
    "cpu_flags": (lambda v: _texts(v, 4096), "a list of strings"),
    # What `--cpu` asked for: "native" (cpu_flags: all the compiling machine's flags) or a
    # named CPU (cpu_flags: exactly the flags its code needs).
    "cpu_target": (lambda v: _text(v, 256) and bool(v), "a CPU name such as \"native\""),
    "entry": (lambda v: v == ENTRY_SYMBOL, f'"{ENTRY_SYMBOL}"'),
    "objects": (
        lambda v: isinstance(v, list) and 0 < len(v) <= 1000 and v == object_file_names(len(v)),
        '["model.o", "model.1.o", ...]',
    ),
    "pool": (lambda v: v == POOL_FILE, f'"{POOL_FILE}"'),
    "library": (lambda v: v == LIBRARY_FILE, f'"{LIBRARY_FILE}"'),
    # Whether `library` holds the C API (dlc_model_open, ...); linked by `ld` alone it does not.
    "c_api": (lambda v: isinstance(v, bool), "true or false"),
    # --embed-weights: model.so holds weights.bin's bytes too (the C API's open with NULL).
    "embedded_weights": (lambda v: v is True, "true"),
    "files": (_files, "{file name: {size, sha256}}"),
    "inputs": (_tensor_specs, "a list of {name, shape, dtype} with distinct names, dlc's dtypes"),
    "outputs": (_tensor_specs, "a list of {name, shape, dtype} with distinct names, dlc's dtypes"),
    "arena_size": (lambda v: _natural(v) and v % ALIGNMENT == 0, f"a multiple of {ALIGNMENT}"),
    "weights_size": (lambda v: _natural(v) and v % ALIGNMENT == 0, f"a multiple of {ALIGNMENT}"),
    "weights": (
        lambda v: (
            isinstance(v, dict) and all(_natural(o) and o % ALIGNMENT == 0 for o in v.values())
        ),
        f"{{weight name: offset, a multiple of {ALIGNMENT}}}",
    ),
    "threads": (
        lambda v: v is None or (_natural(v, MAX_THREADS) and v > 0),
        f"null or a count from 1 to {MAX_THREADS}",
    ),
    "profile_sites": (_texts, "a list of strings"),
    "kernels": (_kernels, "a list of {name, nodes, flops, bytes[, executed_flops, algorithm]}"),
    # Run-time checks (passes/lowering/utils/runtime_checks.py): the status word's offset in
    # the arena and the message of each error code.
    "status_offset": (lambda v: _natural(v) and v % 4 == 0, "a multiple of 4"),
    "error_sites": (_texts, "a list of strings"),
    # Initializers the model also lists as inputs, compiled in: feeding one is refused.
    "constant_inputs": (_texts, "a list of strings"),
    "integrity": (
        lambda v: isinstance(v, str) and v.startswith("sha256:") and _SHA256.fullmatch(v[7:]),
        '"sha256:" and 64 hex digits',
    ),
}
_OPTIONAL = {"objects", "pool", "library", "c_api", "embedded_weights", "status_offset", "error_sites",
             "constant_inputs"}


def manifest_integrity(manifest: dict) -> str:
    """The `integrity` field: SHA-256 of the manifest's canonical JSON without that field."""
    rest = {key: value for key, value in manifest.items() if key != "integrity"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _parse_manifest(path: Path) -> dict:
    """The manifest's JSON, bounded in size (and, by the schema, in depth); version checked
    first, so an older manifest gets the "compile again" hint rather than a field error."""
    text = read_regular_file(path, MAX_MANIFEST_BYTES)

    def no_constant(name: str):
        raise ValueError(f"{name} is not JSON")

    try:
        manifest = json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise ArtifactError(f"{path}: JSON nested too deeply", RECOMPILE) from None
    except ValueError as error:  # JSONDecodeError, bad UTF-8, an integer of 5,000 digits
        raise ArtifactError(f"{path}: invalid JSON ({error})", RECOMPILE) from None
    if not isinstance(manifest, dict) or manifest.get("format") != "dlc-artifact":
        raise ArtifactError(
            f"{path}: not a dlc artifact manifest (its top level must be an object "
            'with "format": "dlc-artifact")',
            RECOMPILE,
        )
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        version = repr(manifest.get("manifest_version"))
        raise ArtifactError(
            f"{path}: not a dlc artifact manifest of version {MANIFEST_VERSION} "
            f"(found version {version if len(version) <= 40 else version[:40] + '...'})",
            "compile the model again with this dlc: `dlc compile MODEL.onnx -o DIR`",
        )
    return manifest


def check_manifest(manifest: dict, path: Path) -> None:
    """Every field against `_FIELDS`, then the fields against each other."""

    def bad(field: str, expected: str) -> ArtifactError:
        return ArtifactError(
            f"{path}: field '{field}' is missing or malformed (expected {expected})", RECOMPILE
        )

    unknown = sorted(set(manifest) - set(_FIELDS))
    if unknown:
        raise ArtifactError(f"{path}: unknown field '{str(unknown[0])[:100]}'", RECOMPILE)
    for field, (check, expected) in _FIELDS.items():
        present = field in manifest
        if (present or field not in _OPTIONAL) and not (present and check(manifest[field])):
            raise bad(field, expected)
    # The code: either one linked library (with its C API or not) or object files and a pool.
    if ("library" in manifest) == ("objects" in manifest) or ("library" in manifest) != ("c_api" in manifest):
        raise bad("library", f'either "library": "{LIBRARY_FILE}" with "c_api", or "objects"')
    if "library" in manifest and "pool" in manifest:
        raise bad("pool", f"absent with a library (the pool is inside {LIBRARY_FILE})")
    code_files = [LIBRARY_FILE] if "library" in manifest else manifest["objects"]
    listed = [*code_files, *([POOL_FILE] if "pool" in manifest else []), WEIGHTS_FILE]
    if set(manifest["files"]) != set(listed):
        raise bad("files", f"exactly the files {listed}")
    if manifest["files"][WEIGHTS_FILE]["size"] != manifest["weights_size"]:
        raise bad("weights_size", "the size of weights.bin in 'files'")
    largest = MAX_LIBRARY_BYTES if "library" in manifest else MAX_OBJECT_BYTES
    if any(manifest["files"][name]["size"] > largest for name in listed[:-1]):
        raise bad("files", f"code files of at most {largest} bytes")
    if manifest.get("status_offset", 0) + 4 > max(manifest["arena_size"], 4):
        raise bad("status_offset", "an offset inside the arena")
    if any(offset > manifest["weights_size"] for offset in manifest["weights"].values()):
        raise bad("weights", "offsets inside weights.bin")


def _check_memory(manifest: dict, path: Path, max_memory: str | int | None) -> None:
    tensors = sum(
        int(np.prod(spec["shape"], dtype=object)) * np.dtype(spec["dtype"]).itemsize
        for spec in manifest["inputs"] + manifest["outputs"]
    )
    memory_limit.check(
        tensors + manifest["arena_size"] + manifest["weights_size"],
        memory_limit.resolve_limit(max_memory),
        f"running the artifact {path.parent}",
        {
            "inputs and outputs": tensors,
            "weights": manifest["weights_size"],
            "intermediates (memory plan)": manifest["arena_size"],
        },
    )


def code_files(manifest: dict) -> list[str]:
    """The files holding the code: `model.so`, or the object files where no linker was found."""
    return [LIBRARY_FILE] if "library" in manifest else list(manifest["objects"])


def read_artifact(directory: str | Path, max_memory: str | int | None = None,
                  unchanged: Mapping[str, tuple] | None = None):
    """(manifest, code files, weights, pool object) of an artifact directory, every part
    checked; one needing more than the memory limit is refused before anything is read. The
    code files are `[model.so's bytes]` or the object files (then with the pool's object).
    `unchanged`: {file name: identity} of files whose bytes the caller has hashed already
    (`file_identity`); they are read without hashing them again."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not os.path.lexists(manifest_path):
        raise ArtifactError(
            f"{directory}: not a dlc artifact (no manifest.json)",
            "make one with `dlc compile MODEL.onnx -o DIR`",
        )
    manifest = _parse_manifest(manifest_path)
    check_manifest(manifest, manifest_path)
    _check_memory(manifest, manifest_path, max_memory)
    if manifest["integrity"] != manifest_integrity(manifest):
        raise ArtifactError(
            f"{manifest_path}: edited or damaged (its integrity hash does not match "
            "its content; the code was compiled for the values first written)",
            RECOMPILE,
        )
    files = manifest["files"]
    weights = _read_listed(
        directory,
        WEIGHTS_FILE,
        files[WEIGHTS_FILE],
        huge_page_buffer(manifest["weights_size"]),
        unchanged,
    )
    objects = [_read_listed(directory, name, files[name], unchanged=unchanged) for name in code_files(manifest)]
    pool_object = (
        _read_listed(directory, POOL_FILE, files[POOL_FILE], unchanged=unchanged)
        if "pool" in manifest else None
    )
    return manifest, objects, weights, pool_object


def _put_in_place(new: Path, path: Path) -> None:
    """Rename `new` to `path`, the file there (if any) renamed away first and then removed.

    Not renamed over it: ext4 (`auto_da_alloc`, on by default) takes a rename over an existing
    file for an application's crash-safe rewrite and starts writing the new file to disk at
    once. Compiling ResNet-50 into the same directory again, its 47 MB weights.bin then cost
    0.4-0.7 s (0.3 CPU-s) against 0.04 s into a new directory (issue 16): that write waited for
    the one before it, and the compile cache copies its entries the same way. Readers checking
    the manifest's hashes (the manifest is written last) never took one file's rename for a
    consistent artifact anyway."""
    old = path.with_name(f".{path.name}.old")
    try:
        os.rename(path, old)
    except FileNotFoundError:
        old = None
    os.replace(new, path)
    if old is not None:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()


def write_artifact(
    directory: str | Path, manifest: dict, objects, weights: np.ndarray, pool_object: bytes | None
) -> None:
    """Write an artifact directory (what `read_artifact` reads back): the data files first, then
    the manifest with their sizes and hashes and its own integrity hash."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = code_files(manifest)
    for stale in directory.iterdir():  # code of an earlier compile into this directory
        if (OBJECT_FILE.fullmatch(stale.name) or stale.name in (POOL_FILE, LIBRARY_FILE)) \
                and stale.name not in names and not (stale.name == POOL_FILE and "pool" in manifest):
            stale.unlink()
    contents = dict(zip(names, objects, strict=True))
    if pool_object is not None and "pool" in manifest:
        contents[POOL_FILE] = pool_object
    early = _EARLY.get(id(weights))
    written = early.take(directory, weights) if early is not None else None  # None: not this one's
    contents[WEIGHTS_FILE] = np.ascontiguousarray(weights).view(np.uint8).reshape(-1)
    digests = {}
    for name, data in contents.items():
        # A new file put in the old one's place: a process that has the old model.so mapped
        # keeps its pages (rewriting the file in place would pull them from under it).
        if name == WEIGHTS_FILE and written is not None:  # written while the code compiled
            partial, digests[name] = written
        else:
            partial = directory / f".{name}.partial"
            partial.write_bytes(data)
        _put_in_place(partial, directory / name)
    manifest = {key: value for key, value in manifest.items() if key not in ("files", "integrity")}
    manifest["files"] = {
        name: {"size": memoryview(data).nbytes,
               "sha256": digests[name] if name in digests else hashlib.sha256(data).hexdigest()}
        for name, data in contents.items()
    }
    manifest["integrity"] = manifest_integrity(manifest)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


# -- weights.bin written while the code compiles (issue 16) ------------------------------------
# ResNet-50's 47 MB weights.bin (and its SHA-256) took 0.1-0.4 s after everything else, on one
# core: on this VM a page the process has not had before costs far more than the copy into it.
# Its blob is final before the LLVM parts start (dlc/targets/cpu.py `weight_layout`), so inside
# `weights_written_early` (the `dlc compile` command) a thread writes it beside the artifact's
# other files while the code compiles, and `write_artifact` only puts it in place.
_DESTINATIONS: list[Path] = []
_EARLY: dict[int, _EarlyWeights] = {}  # by id() of the blob, while it is being written or unclaimed


@contextlib.contextmanager
def weights_written_early(directory: str | Path):
    """Within: a compile's weight blob (`start_weights`) is written into `directory` while its
    code compiles; `write_artifact` into `directory` takes it. On leaving, a blob nobody took
    (the compile failed) is removed, and `directory` if it was made for it and is empty."""
    _DESTINATIONS.append(Path(directory))
    try:
        yield
    finally:
        _DESTINATIONS.pop()
        for key, early in list(_EARLY.items()):
            del _EARLY[key]
            early.discard()


def start_weights(weights: np.ndarray) -> None:
    """Start writing `weights`, a compile's finished weight blob, into the directory of the
    innermost `weights_written_early` on a thread; outside one, nothing."""
    if not _DESTINATIONS or id(weights) in _EARLY:
        return
    directory = _DESTINATIONS[-1]
    made = False
    try:
        if not directory.is_dir():
            directory.mkdir()  # its parent must exist: a deeper path is made by write_artifact
            made = True
    except OSError:
        return  # write_artifact makes it, or says why it cannot
    _EARLY[id(weights)] = _EarlyWeights(directory, weights, made)


class _EarlyWeights:
    """A thread writing a blob to DIRECTORY/.weights.bin.early and hashing it."""

    def __init__(self, directory: Path, weights: np.ndarray, made: bool):
        import threading

        self.directory, self.weights, self.made = directory, weights, made
        self.partial = directory / f".{WEIGHTS_FILE}.early"
        self.digest: str | None = None
        self.thread = threading.Thread(target=self._write, name="dlc-weights-bin", daemon=True)
        self.thread.start()

    def _write(self) -> None:
        if sys.platform.startswith("linux"):  # a thread's own niceness there: the compiling
            with contextlib.suppress(OSError):  # processes first, this in what they leave idle
                os.nice(10)
        data = np.ascontiguousarray(self.weights).view(np.uint8).reshape(-1)
        try:  # both let go of the GIL: the emitter and LLVM's caller go on meanwhile
            self.partial.write_bytes(data)
            self.digest = hashlib.sha256(data).hexdigest()
        except OSError:
            self.digest = None  # write_artifact writes it again, and reports the error

    def take(self, directory: Path, weights: np.ndarray) -> tuple[Path, str] | None:
        """(the written file, its SHA-256) when it holds `weights` for `directory`, and it is
        no longer pending; else None. An artifact of the same blob saved elsewhere first (the
        compile cache's entry, dlc/cache.py `store`) leaves it to the one it is written for."""
        if weights is not self.weights or os.path.abspath(directory) != os.path.abspath(self.directory):
            return None
        self.thread.join()
        if _EARLY.get(id(weights)) is self:
            del _EARLY[id(weights)]
        if self.digest is None:
            self.discard(keep_directory=True)  # write_artifact writes into `directory` now
            return None
        return self.partial, self.digest

    def discard(self, keep_directory: bool = False) -> None:
        self.thread.join()
        with contextlib.suppress(OSError):
            self.partial.unlink()
        if self.made and not keep_directory:
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # only when empty
