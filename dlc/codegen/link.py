"""The artifact's object files -> one `model.so`, linked by the system linker (issue 19).

Mirrors what onnx-mlir (`model.so` with a C API) and TVM (`export_library`) ship: the loader
the operating system already has, which `perf`, `gdb` and sanitizers know. `cc` links when it
is on PATH (it also compiles the C API, dlc/codegen/c_api/; with gold where installed, a third
faster than GNU ld), else `ld` links the code alone;
`$DLC_LINKER` names another driver or linker, or `none` to keep the objects (the fallback
when no linker exists: dlc's own ELF loader or MCJIT loads them, dlc/runtime/loader.py).

Only the documented API leaves the library (a version script; docs/c-api.md, docs/artifact.md):
`dlc_main` (the low-level entry), the C API's `dlc_model_*` functions, and the thread pool's
`dlc_pool_*`. The pool's symbols are also in a dynamic list, so that references to them stay
interposable: models linked into one program, or opened with RTLD_GLOBAL, share the pool of
the first one (one pool per process); every other reference binds inside the library.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from dlc.errors import CompileError, DlcError

LINKER_VARIABLE = "DLC_LINKER"
LIBRARY_FILE = "model.so"
# C sources whose object is the same for every model (the C API's implementation; the
# model's own table is not): compiled once, then kept in memory and beside the compile cache.
SAME_FOR_EVERY_MODEL = ("dlc_api.c",)
POOL_EXPORTS = ("dlc_pool_parallel", "dlc_pool_start", "dlc_pool_stop", "dlc_pool_forget", "dlc_pool_own_items")


def find_linker(triple: str | None = None) -> tuple[str, str] | None:
    """("cc" or "ld", path) of the linker to use, or None (no linker: keep the objects).
    A name in $DLC_LINKER whose base name ends in `ld` is a bare linker, anything else a C
    compiler driver. For another instruction set (`triple`, e.g. aarch64-unknown-linux-gnu),
    Debian's cross tools: aarch64-linux-gnu-gcc, else aarch64-linux-gnu-ld."""
    chosen = os.environ.get(LINKER_VARIABLE, "").strip()
    if chosen.lower() in ("none", "0", "off"):
        return None
    prefix = f"{triple.split('-')[0]}-linux-gnu-" if triple else ""
    for name in [chosen] if chosen else [f"{prefix}gcc" if prefix else "cc", f"{prefix}ld"]:
        path = shutil.which(name)
        if path:
            return ("ld" if Path(name).name.endswith("ld") else "cc", path)
    if chosen:
        raise CompileError(f"{LINKER_VARIABLE}={chosen!r}: no such program on PATH",
                           f"set {LINKER_VARIABLE} to a C compiler or linker, or to 'none' to keep object files")
    return None


def link_library(objects: list[bytes], pool_object: bytes, exports: tuple[str, ...],
                 c_sources: dict[str, str] | None = None, include_dirs: tuple[Path, ...] = (),
                 cc_flags: tuple[str, ...] = (), triple: str | None = None,
                 data_files: dict[str, bytes] | None = None,
                 c_objects: dict[str, bytes] | None = None) -> tuple[bytes, bool] | None:
    """(the bytes of model.so, whether `c_sources` went in) linked from `objects` and the
    pool, exporting exactly `exports` and the pool; None where no linker exists. `c_sources`
    ({file name: C text}) are compiled in only by a C compiler driver, with `c_objects`
    ({file name: object}: what they read, the model's table); `ld` links without them.
    `data_files` ({name: bytes}) lie beside them for `.incbin` (the embedded weights)."""
    linker = find_linker(triple)
    if linker is None:
        return None
    kind, program = linker
    with tempfile.TemporaryDirectory(prefix="dlc-link-") as scratch:
        work = Path(scratch)
        for name, data in (data_files or {}).items():
            (work / name).write_bytes(data)
        inputs = []
        for index, code in enumerate([*objects, pool_object]):
            (work / f"part{index}.o").write_bytes(code)
            inputs.append(f"part{index}.o")  # relative: no temporary path lands in the library
        names = sorted({*exports, *POOL_EXPORTS})
        globals_ = "".join(f"    {n};\n" for n in names)
        (work / "exports.map").write_text("{\n  global:\n" + globals_ + "  local: *;\n};\n")
        (work / "pool.list").write_text("{\n" + "".join(f"  {n};\n" for n in POOL_EXPORTS) + "};\n")
        with_c = kind == "cc" and bool(c_sources)
        if kind == "cc":
            sources = []
            for name, text in (c_sources or {}).items() if with_c else ():
                if name in SAME_FOR_EVERY_MODEL:
                    code = _kept_c_object(program, name, text, cc_flags, include_dirs)
                    name = f"{Path(name).stem}.o"
                    (work / name).write_bytes(code)
                else:  # compiled by the linking command itself: one process less
                    (work / name).write_text(text)
                sources.append(name)
            for name, code in (c_objects or {}).items() if with_c else ():
                (work / name).write_bytes(code)
                sources.append(name)
            command = [program, *_faster_linker(triple), "-shared", "-fPIC", "-O2", "-fvisibility=hidden",
                       f"-ffile-prefix-map={scratch}=.", *cc_flags,
                       *(f"-I{d}" for d in include_dirs), "-o", LIBRARY_FILE, *sources, *inputs,
                       "-Wl,--version-script=exports.map", "-Wl,--dynamic-list=pool.list",
                       "-Wl,-z,noexecstack", "-Wl,-z,now", "-lm", "-lpthread"]
        else:
            command = [program, "-shared", "-o", LIBRARY_FILE, *inputs,
                       "--version-script=exports.map", "--dynamic-list=pool.list",
                       "-z", "noexecstack", "-z", "now", "--as-needed", "-lm", "-lpthread", "-lc"]
        result = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
        if result.returncode != 0 and kind == "ld":
            # A bare `ld` may not know the C library's directories: leave the C library's
            # symbols undefined, to be resolved in the loading process as with the objects.
            command = [arg for arg in command if arg not in ("--as-needed", "-lm", "-lpthread", "-lc")]
            result = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
        if result.returncode != 0:
            raise CompileError(f"linking {LIBRARY_FILE} with {program} failed:\n{result.stderr.strip()[-4000:]}",
                               f"set {LINKER_VARIABLE}=none to keep object files (loaded by dlc itself)")
        return (work / LIBRARY_FILE).read_bytes(), with_c


def _faster_linker(triple: str | None) -> list[str]:
    """`-fuse-ld=gold` where the C driver is the host's own and gold is installed, else
    nothing (the driver's default, GNU ld). gold links a small model's library in 21 ms where
    GNU ld takes 30 (Zen 1 VM): a third of a one-node model's compile, and a test run links
    thousands. A `$DLC_LINKER` the user named is used as it is."""
    if triple or os.environ.get(LINKER_VARIABLE, "").strip():
        return []
    return ["-fuse-ld=gold"] if _gold_installed() else []


@functools.cache
def _gold_installed() -> bool:
    """Whether ld.gold is on PATH: looked up once a process, not at every link."""
    return shutil.which("ld.gold") is not None


_C_OBJECTS: dict[str, bytes] = {}  # this process's compiled C sources, by _c_object_key
# C sources being compiled in the background (`start_c_object`): key -> (cc, its folder).
_PENDING: dict[str, tuple[subprocess.Popen, str]] = {}
_PENDING_LOCK = threading.Lock()  # compiles on several threads start or take each source once
_AT_EXIT: list[bool] = []  # whether _abandon_pending is registered


def _c_object_key(program: str, name: str, text: str, cc_flags: tuple[str, ...],
                  include_dirs: tuple[Path, ...]) -> str:
    """Everything the object of a C source depends on: compiler, flags, source, headers."""
    key = hashlib.sha256("\0".join([program, name, text, *cc_flags]).encode())
    for directory in include_dirs:
        for header in sorted(Path(directory).glob("*.h")):
            key.update(header.name.encode() + b"\0" + header.read_bytes())
    return key.hexdigest()[:32]


def _kept_c_object(program: str, name: str, text: str, cc_flags: tuple[str, ...],
                   include_dirs: tuple[Path, ...]) -> bytes:
    """`text` compiled by `program` into an object, once: the C API's source is the same for
    every model and took 0.3 s of each compile (a test run compiles thousands of models), so
    its object is kept in memory and in the compile cache's kept objects (dlc/cache.py
    `keep_object`, removed by `dlc cache clear`), keyed by everything it depends on
    (compiler, flags, source, headers). One `start_c_object` began is waited for."""
    digest = _c_object_key(program, name, text, cc_flags, include_dirs)
    if digest in _C_OBJECTS:
        return _C_OBJECTS[digest]
    from dlc.cache import keep_object, kept_object

    code = _finish_pending(digest)
    if code is None:
        code = kept_object(f"c-{digest}")
        if code is None:
            code = _run_cc(program, name, text, cc_flags, include_dirs)
            keep_object(f"c-{digest}", code)
    else:
        keep_object(f"c-{digest}", code)
    _C_OBJECTS[digest] = code
    return code


def start_c_object(program: str, name: str, text: str, cc_flags: tuple[str, ...] = (),
                   include_dirs: tuple[Path, ...] = ()) -> None:
    """Start compiling `text` as `_kept_c_object` would, in a `cc` process of its own, unless
    this process or the compile cache already has its object: `_kept_c_object` then waits for
    it. A cc that fails is not reported here: `_kept_c_object` runs it again and says why."""
    from dlc.cache import kept_object

    digest = _c_object_key(program, name, text, cc_flags, include_dirs)
    with _PENDING_LOCK:
        if digest in _C_OBJECTS or digest in _PENDING:
            return
        code = kept_object(f"c-{digest}")
        if code is not None:
            _C_OBJECTS[digest] = code
            return
        scratch = tempfile.mkdtemp(prefix="dlc-cc-")
        (Path(scratch) / name).write_text(text)
        try:
            process = subprocess.Popen(_cc_command(program, name, cc_flags, include_dirs, scratch), cwd=scratch,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            return
        if not _AT_EXIT:
            atexit.register(_abandon_pending)
            _AT_EXIT.append(True)
        _PENDING[digest] = (process, scratch)


def _finish_pending(digest: str) -> bytes | None:
    """The object of the background compile `digest`, once it is done; None: none, or it failed."""
    with _PENDING_LOCK:
        process, scratch = _PENDING.pop(digest, (None, None))
    if process is None:
        return None
    try:
        process.wait()
        output = Path(scratch) / "out.o"
        return output.read_bytes() if process.returncode == 0 and output.exists() else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _abandon_pending() -> None:
    """At exit: background compiles nobody waited for (a compile that failed first) stop."""
    with _PENDING_LOCK:
        abandoned = list(_PENDING.values())
        _PENDING.clear()
    for process, scratch in abandoned:
        with contextlib.suppress(OSError):
            process.kill()
            process.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def start_shared_objects(cpu_option: str = "native", cpu_features: str = "") -> threading.Thread | None:
    """Start compiling, on the core the model's passes leave idle, the code every model's
    library links and no model changes: the C API's object (a `cc` process) and the thread
    pool's (LLVM, on a thread: llvmlite lets go of the GIL inside LLVM). The build then finds
    them done: without the compile cache (`DLC_CACHE=0`) they were 0.23 s and 0.14 s of
    ResNet-50's critical path after its LLVM parts (issue 16). Nothing is reported here:
    a bad --cpu, linker or compiler fails in the build, which says why. Returns the pool's
    thread, which the build joins (it compiles the pool itself if the thread has not)."""
    from dlc.codegen import c_api
    from dlc.codegen.cpus import resolve_cpu, target_triple
    from dlc.codegen.thread_pool_ir import pool_object
    from dlc.runtime.mcjit import initialize_llvm

    try:
        initialize_llvm()  # here, not on two threads at once
        triple = target_triple(cpu_option)
        cpu, features = resolve_cpu(cpu_option, cpu_features)
        linker = find_linker(triple)
    except DlcError:
        return None
    if linker is not None and linker[0] == "cc":  # the sources and folders dlc/targets/cpu.py `_link` gives
        start_c_object(linker[1], "dlc_api.c", (c_api.SOURCE_DIR / "dlc_api.c").read_text(),
                       include_dirs=(c_api.INCLUDE_DIR, c_api.SOURCE_DIR))

    def pool() -> None:
        with contextlib.suppress(Exception):  # the build compiles it again, and reports its error
            pool_object(cpu, features, triple)  # functools.cache: the build's call returns it

    thread = threading.Thread(target=pool, name="dlc-pool-object", daemon=True)
    thread.start()
    return thread


def _cc_command(program: str, name: str, cc_flags: tuple[str, ...], include_dirs: tuple[Path, ...],
                scratch: str) -> list[str]:
    return [program, "-c", "-fPIC", "-O2", "-fvisibility=hidden", f"-ffile-prefix-map={scratch}=.",
            *cc_flags, *(f"-I{d}" for d in include_dirs), "-o", "out.o", name]


def _run_cc(program: str, name: str, text: str, cc_flags: tuple[str, ...], include_dirs: tuple[Path, ...]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="dlc-cc-") as scratch:
        (Path(scratch) / name).write_text(text)
        command = _cc_command(program, name, cc_flags, include_dirs, scratch)
        result = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
        if result.returncode != 0:
            raise CompileError(f"compiling {name} with {program} failed:\n{result.stderr.strip()[-4000:]}",
                               f"set {LINKER_VARIABLE}=none to keep object files (loaded by dlc itself)")
        return (Path(scratch) / "out.o").read_bytes()
