"""LLVM IR text -> optimised object code, with llvmlite.

Optimisation is LLVM's default O`n` pipeline (new pass manager); the GEMM functions, compiled
apart from the kernels that call them, get O2's (`GEMM_PIPELINE_LEVEL`). Loading the objects is
the runtime's job (dlc/runtime/loader.py: dlc's own ELF loader, else MCJIT).
A large module is split (`split_module`) and its parts compiled at once, one process per
core: llvmlite serialises all LLVM calls of a process behind one lock, so threads would not
help, and LLVM compiles a module on one thread (like `clang -flto-jobs`/`-fsplit-lto-unit`
parallel code generation, but without a linker: the loader links the objects). A worker is
this process forked where the OS can (its LLVM loaded, the part's IR in memory), else a new
Python process: starting one (Python, dlc's imports, LLVM) took ~0.25 CPU-s a part.
Each part's object is kept in the compile cache by the hash of its IR and target (issue 16,
`_part_key`): a compile of the same model with other options, or of another model with the
same GEMMs or kernels, compiles only the parts that are new (like ccache, per part).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

from dlc import progress
from dlc.codegen.merge_functions import merge_identical_functions
from dlc.errors import CompileError
from dlc.runtime.mcjit import host_cpu, initialize_llvm, target_machine

__all__ = ["compile_object", "compile_objects", "compile_jobs", "parse_llvm"]

# Below this much IR text a module compiles in about a second: a second process (~0.1 s to
# start) would not pay. ResNet-50 has 4.4 MB, an MLP 30 KB.
MIN_PART_BYTES = 512 << 10
JOBS_VARIABLE = "DLC_COMPILE_JOBS"
# The GEMMs (dlc_gemm_N, its range, im2col and worker functions: passes/lowering/utils/
# ukernel_calls.py names them; and the micro-kernel tiles and im2col functions they share,
# dlc_gemm_tile_* and dlc_gemm_im2col_*: ukernels.py, im2col.py) are
# most of a CNN's IR (ResNet-50: 3.6 of 3.9 MB before the tiles were shared) and vectorised
# by hand: O3's extra passes over O2's (non-trivial unswitching, argument promotion, more
# inlining and instcombine) cost a third of their LLVM time and left their code as it was
# (object code of the same size, same results bit for bit, run times within noise:
# benchmarks/README.md). Compiled apart, a GEMM is not inlined into its kernel's parallel
# body either: ResNet-50's 8.4 CPU-s of LLVM became 5.6.
GEMM_PIPELINE_LEVEL = 2
_GEMM = re.compile(r"dlc_gemm_(\d|tile_|im2col_)")


def kernels_not_inlined(llvm_ir: str) -> str:
    """`llvm_ir` with `noinline` on the internal functions that the exported entry calls.

    The entry is a list of kernel calls. Inlined into it (each kernel is called once), they
    buy nothing at run time (one call per kernel and inference) but make the entry one function
    of every loop nest, which LLVM's function passes take superlinear time over: an unrolled
    2-layer GRU's 1,000 kernels cost 4.6 CPU-s of LLVM inlined, 0.6 s not.
    """
    kernels = {name for chunk in re.split(r"\n(?=define )", llvm_ir)
               if chunk.startswith("define ") and not _LOCAL.match(chunk)
               for name in _CALLEE.findall(chunk[:chunk.find("\n}\n")])}
    if not kernels:
        return llvm_ir

    def mark(match: re.Match) -> str:
        line = match.group(0)
        if match.group(1) not in kernels or " noinline" in line:
            return line
        depth = 0
        for index in range(line.index("(", match.end(1) - match.start()), len(line)):  # the parameters' ")"
            depth += {"(": 1, ")": -1}.get(line[index], 0)
            if depth == 0:
                return f"{line[:index + 1]} noinline{line[index + 1:]}"
        return line

    return _INTERNAL_DEFINE.sub(mark, llvm_ir)


_CALLEE = re.compile(r'call [^@\n]*@"([^"]+)"')
_LOCAL = re.compile(r"define (internal|private) ")
_INTERNAL_DEFINE = re.compile(r'^define internal [^@\n]*@"([^"]+)"\(.*$', re.M)


def is_gemm(name: str) -> bool:
    """Whether the LLVM function `name` belongs to a GEMM (compiled apart, at GEMM_PIPELINE_LEVEL)."""
    return _GEMM.match(name) is not None


def is_gemm_tile(name: str) -> bool:
    """Whether the LLVM function `name` is a micro-kernel tile that GEMMs share (ukernels.py):
    it goes to the part of the GEMMs that call it, internal there (`split_module`'s
    `together`)."""
    return name.startswith("dlc_gemm_tile_")


def parse_llvm(llvm_ir: str) -> llvm.ModuleRef:
    """Parse and verify LLVM IR text; errors quote the offending IR."""
    initialize_llvm()
    try:
        module = llvm.parse_assembly(llvm_ir)
        module.verify()
    except RuntimeError as error:
        raise CompileError(f"invalid LLVM IR: {error}\n--- IR ---\n{llvm_ir}") from error
    return module


def compile_object(
    llvm_ir: str, cpu: str | None = None, features: str | None = None, opt_level: int = 3,
    triple: str | None = None,
) -> bytes:
    """Optimise LLVM IR at `opt_level` (0-3) and return an ELF/Mach-O object for `cpu`
    (default: this host, with its features) of `triple` (default: this host's)."""
    module = parse_llvm(llvm_ir)
    tm = target_machine(cpu, features, opt_level, triple)
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    if opt_level > 0:
        tuning = llvm.create_pipeline_tuning_options(speed_level=opt_level)
        tuning.loop_vectorization = True
        tuning.slp_vectorization = True
        pass_builder = llvm.create_pass_builder(tm, tuning)
        pass_builder.getModulePassManager().run(module, pass_builder)
    return tm.emit_object(module)


def compile_jobs() -> int:
    """How many processes compile at once: the cores this process may use, or $DLC_COMPILE_JOBS."""
    override = os.environ.get(JOBS_VARIABLE)
    if override:
        try:
            return max(1, int(override))
        except ValueError:
            raise CompileError(f"{JOBS_VARIABLE}={override!r} is not a number of processes") from None
    from dlc.runtime import default_threads  # the cores this process may use

    return default_threads()


def compile_objects(
    llvm_ir: str, cpu: str | None = None, features: str | None = None, opt_level: int = 3,
    jobs: int | None = None, triple: str | None = None,
) -> list[bytes]:
    """`compile_object` for a module that may be large: the GEMMs apart from the rest and split
    into up to `jobs` parts (default `compile_jobs()`), compiled in parallel; the objects load
    together. One job, or a module under twice MIN_PART_BYTES: one part."""
    from dlc.codegen.split_module import split_module

    llvm_ir = kernels_not_inlined(merge_identical_functions(llvm_ir))  # each distinct body once
    jobs = compile_jobs() if jobs is None else jobs
    parts, levels = [llvm_ir], [opt_level]
    if min(jobs, len(llvm_ir) // MIN_PART_BYTES) > 1:
        parts = split_module(llvm_ir, min(jobs, len(llvm_ir) // MIN_PART_BYTES), apart=is_gemm,
                             together=is_gemm_tile)
        # Part 0 holds the entry and the kernels, the others GEMMs alone.
        levels = [opt_level] + [min(opt_level, GEMM_PIPELINE_LEVEL)] * (len(parts) - 1)
        if len(parts) == 1:  # no GEMM: parts of kernels alone
            parts = split_module(llvm_ir, min(jobs, len(llvm_ir) // MIN_PART_BYTES))
            levels = [opt_level] * len(parts)
    from dlc.cache import keep_object, kept_object

    if cpu is None:
        cpu, host_features = host_cpu()
        features = host_features if features is None else features
    keys = [_part_key(part, cpu, features, level, triple) for part, level in zip(parts, levels)]
    kept: list[bytes | None] = [kept_object(key) for key in keys]
    if len(parts) == 1:
        if kept[0] is None:
            with progress.step("LLVM: object code"):
                kept[0] = compile_object(llvm_ir, cpu, features, opt_level, triple)
            keep_object(keys[0], kept[0])
        return [kept[0]]
    new = [index for index, code in enumerate(kept) if code is None]
    with tempfile.TemporaryDirectory(prefix="dlc-compile-") as scratch:
        workers = {}
        try:  # the first new part here, the others one process each
            for index in new[1:]:
                target = Path(scratch, f"part{index}.o")
                workers[index] = (_start_worker(parts[index], target, cpu, features or "", levels[index], triple),
                                  target)
            progress.current().begin(f"LLVM: {len(parts)} parts, {len(parts) - len(new)} kept, one process each")
            start = time.perf_counter()
            for done, index in enumerate(new, start=1):
                process, target = workers.get(index, (None, None))
                if process is not None:
                    process.wait()
                if process is not None and process.returncode == 0 and target.exists():
                    kept[index] = target.read_bytes()
                else:  # here, or the worker could not run (no memory, killed): compile here, or say why
                    kept[index] = compile_object(parts[index], cpu, features, levels[index], triple)
                keep_object(keys[index], kept[index])
                progress.current().end(f"LLVM part {done}/{len(new)}", time.perf_counter() - start)
        finally:
            for process, _ in workers.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
    return kept


def _part_key(part: str, cpu: str, features: str | None, opt_level: int, triple: str | None) -> str:
    """What a part's object depends on: its IR, the target (CPU, features, triple), the
    pipeline's level, llvmlite's and LLVM's versions and the code that drives LLVM (this file
    and the target machine's). Not the rest of dlc: the IR holds everything its passes
    decided, so kept parts outlive changes to them."""
    digest = hashlib.sha256(part.encode())
    digest.update("\0".join(["dlc-llvm-part 1", cpu, features or "", str(opt_level),
                             triple or llvm.get_process_triple(), llvmlite.__version__,
                             str(llvm.llvm_version_info), _driver_hash()]).encode())
    return digest.hexdigest()


class _Forked:
    """A forked worker, waited for as a `subprocess.Popen` is (`wait`, `poll`, `kill`)."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere: its object, if any, is still checked
                pid, status = self.pid, 1 << 8
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        return self._reap(0)

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _start_worker(llvm_ir: str, target: Path, cpu: str, features: str, opt_level: int,
                  triple: str | None) -> subprocess.Popen | _Forked:
    """A process compiling `llvm_ir` into the object file `target` (written only when the
    compile succeeds): this one forked where the OS can, else a new Python process."""
    if hasattr(os, "fork") and sys.platform.startswith("linux"):
        return _fork_worker(llvm_ir, target, cpu, features, opt_level, triple)
    source = target.with_suffix(".ll")
    source.write_text(llvm_ir)
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
    return subprocess.Popen(
        [sys.executable, "-c", "from dlc.codegen.native import _worker; _worker()",
         str(source), str(target), cpu, features, str(opt_level), triple or ""],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _fork_worker(llvm_ir: str, target: Path, cpu: str, features: str, opt_level: int,
                 triple: str | None) -> _Forked:
    """This process forked to compile `llvm_ir`. llvmlite's lock is held across the fork, so
    no other thread of this process is inside LLVM then (the child would find LLVM's state
    half-changed, and the lock taken forever). The child collects no garbage (a full
    collection would write to, and so copy, every page of the compiler's objects it shares
    with this process), never returns into the caller's code, and leaves by os._exit (no
    atexit handlers, no second flush of this process's buffered output)."""
    import warnings

    from llvmlite.binding import ffi

    with getattr(ffi.lib, "_lock", contextlib.nullcontext()), warnings.catch_warnings():
        # Python 3.12+ warns of forking a process with threads (numpy's BLAS, a progress line's
        # refresh, a model's pool): none of them runs in the child, which only calls LLVM.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid:
        return _Forked(pid)
    status = 1
    try:
        gc.disable()
        code = compile_object(llvm_ir, cpu, features, opt_level, triple)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(code)
        partial.rename(target)
        status = 0
    finally:
        os._exit(status)


def _worker() -> None:
    """A compile process: IR file -> object file (written only when the compile succeeds)."""
    source, target, cpu, features, opt_level, triple = sys.argv[1:7]
    code = compile_object(Path(source).read_text(), cpu, features, int(opt_level), triple or None)
    partial = Path(target + ".partial")
    partial.write_bytes(code)
    partial.rename(target)


@functools.cache
def _driver_hash() -> str:
    from dlc.runtime import mcjit

    return hashlib.sha256(Path(__file__).read_bytes() + Path(mcjit.__file__).read_bytes()).hexdigest()
