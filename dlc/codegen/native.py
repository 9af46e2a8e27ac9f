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
The GEMMs can start earlier still (`start_gemms_apart`): a process forked when the linalg
phase has fixed them emits and compiles them while this one lowers, emits and compiles the
kernels.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

from dlc import progress
from dlc.codegen.merge_functions import merge_identical_functions
from dlc.errors import CompileError
from dlc.runtime.mcjit import host_cpu, initialize_llvm, target_machine

__all__ = ["GemmsApart", "compile_object", "compile_objects", "compile_jobs", "gemms_apart_of", "parse_llvm",
           "start_gemms_apart"]

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

    apart = _taken_apart(llvm_ir)
    if apart is not None:
        llvm_ir = llvm_ir[:llvm_ir.rindex(_APART_MARKER)]
    llvm_ir = kernels_not_inlined(merge_identical_functions(llvm_ir))  # each distinct body once
    if apart is not None:
        try:
            return _compile_with_gemms_apart(llvm_ir, apart, cpu, features, opt_level, triple)
        finally:
            apart.abandon()
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


def _compile_with_gemms_apart(llvm_ir: str, apart: GemmsApart, cpu: str | None, features: str | None,
                              opt_level: int, triple: str | None) -> list[bytes]:
    """The kernels' part compiled here, while `apart`'s process compiles the GEMMs; its objects after."""
    from dlc.cache import keep_object, kept_object

    if cpu is None:
        cpu, host_features = host_cpu()
        features = host_features if features is None else features
    key = _part_key(llvm_ir, cpu, features, opt_level, triple)
    start = time.perf_counter()
    code = kept_object(key)
    if code is None:
        with progress.step("LLVM: the kernels (the GEMMs in another process)"):
            code = compile_object(llvm_ir, cpu, features, opt_level, triple)
        keep_object(key, code)
    gemms = apart.objects(cpu, features, min(opt_level, GEMM_PIPELINE_LEVEL), triple)
    progress.current().end(f"LLVM: kernels and {len(gemms)} GEMM part(s)", time.perf_counter() - start)
    return [code, *gemms]


# -- The GEMMs compiled while the passes run (issue 16) -----------------------------------------
# A CNN's GEMMs are half its LLVM time (ResNet-50: 1.5 of 2.8 CPU-s) and what they compute is
# fixed once the linalg phase has chosen tiles and packed the weights: the micro-kernel
# declarations (`dlc.ukernel`) say all of it. Until the LLVM parts started, the second core had
# nothing to do; now a process forked at the end of the linalg phase emits the GEMMs alone
# (llvm_emitter.py `emit_gemms`), splits and compiles them, while this one runs the loops phase,
# emits the kernels with the GEMMs only declared and compiles them. The module's text carries
# the marker that tells `compile_objects` whose objects complete it.
_APART_MARKER = "; dlc: GEMMs compiled apart by process "
_CALLERS = "dlc_gemms_apart_callers"  # the GEMM module's stand-in for the kernels that call it
_APART: dict[int, GemmsApart] = {}  # by id(module) from the fork, by process id once emitted


# A module with fewer GEMMs compiles them with its kernels: forking the process and taking its
# objects back cost 25-70 ms (more from a process with a large heap, as a test runner's), more
# than they saved. A compile of one 8x32x48 MatMul took 112 ms alone and 137 with a process for
# its GEMM; 8 small MatMuls 278 against 423 ms; a transformer layer (6 GEMMs) 1.52-1.65 s either
# way; ResNet-18 (21 GEMMs) 3.51 against 2.94 s, MobileNetV2 (36) 3.37 against 3.16 (the VM, two
# jobs, wall time).
MIN_GEMMS_APART = 12


def start_gemms_apart(module, cpu: str, features: str, opt_level: int, triple: str | None,
                      declarations: Callable, emit: Callable) -> GemmsApart | None:
    """A forked process emitting and compiling `module`'s GEMMs for `cpu`/`features`/`triple` at
    `opt_level`'s GEMM level, or None (no fork, one job, fewer GEMMs than MIN_GEMMS_APART).
    `declarations(module)` lists the micro-kernel declarations and `emit(module)` emits their
    code (the LLVM emitter's `gemm_declarations` and `emit_gemms`, which imports this module).
    `emit_llvm` of the same module then declares them, unless their declarations changed
    meanwhile (it emits them)."""
    from llvmlite.binding import ffi

    if not (hasattr(os, "fork") and sys.platform.startswith("linux")) or compile_jobs() < 2 \
            or len(declarations(module)) < max(MIN_GEMMS_APART, 1):
        return None
    import warnings

    snapshot = _gemm_snapshot(module, declarations)
    scratch = Path(tempfile.mkdtemp(prefix="dlc-gemms-"))
    reader, writer = os.pipe()
    with getattr(ffi.lib, "_lock", contextlib.nullcontext()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # as `_fork_worker`
        pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(reader)
            gc.disable()  # as `_fork_worker`: the compiler's objects stay shared with the parent
            status = _gemms_apart(module, emit, writer, scratch, cpu, features,
                                  min(opt_level, GEMM_PIPELINE_LEVEL), triple)
        finally:
            os._exit(status)
    os.close(writer)
    apart = GemmsApart(module, pid, reader, scratch, (declarations, snapshot), (cpu, features, opt_level, triple))
    _APART[id(module)] = apart
    return apart


def gemms_apart_of(module) -> GemmsApart | None:
    """The process compiling `module`'s GEMMs (`start_gemms_apart`), if any."""
    apart = _APART.get(id(module))
    return apart if apart is not None and apart.module is module else None


def _taken_apart(llvm_ir: str) -> GemmsApart | None:
    """The process whose GEMMs `llvm_ir` declares (`GemmsApart.declared` marked it), if any."""
    at = llvm_ir.rfind(_APART_MARKER, max(0, len(llvm_ir) - 200))
    if at < 0:
        return None
    pid = llvm_ir[at + len(_APART_MARKER):].strip()
    apart = _APART.get(int(pid)) if pid.isdigit() else None
    if apart is None:
        raise CompileError("the LLVM IR declares GEMMs compiled by another process, which is gone",
                           "emit the module's LLVM IR again (dlc/codegen/llvm_emitter.py emit_llvm)")
    return apart


def _gemm_snapshot(module, declarations: Callable) -> list:
    """What the GEMMs' code depends on: the micro-kernel declarations and the target's sizes."""
    from passes.target_info import target_info

    return [target_info(module), *((f.sym_name.data, f.function_type, dict(f.attributes))
                                   for f in declarations(module))]


_UNREAD = object()


class GemmsApart:
    """The process `start_gemms_apart` forked: its plan (read once, from a pipe), then its objects.

    The plan is {"kernels": {declaration: (spec, function, worker, geometry)} with the names
    its merging of identical functions kept, "declarations": {function: its `declare` line},
    "parts": how many objects}, or None when it declined (too little code to be worth a part,
    an error: this process then emits the GEMMs itself and reports the error)."""

    def __init__(self, module, pid: int, reader: int, scratch: Path, snapshot: tuple[Callable, list],
                 target: tuple):
        self.module, self.pid, self.reader, self.scratch = module, pid, reader, scratch
        (self.declarations, self.snapshot), self.target = snapshot, target
        self.process = _Forked(pid)
        self._plan = _UNREAD

    def plan(self, module) -> dict | None:
        """The plan, while `module`'s GEMM declarations are those the process compiles; else None
        (the process is stopped)."""
        if self._plan is _UNREAD:
            with os.fdopen(self.reader, "rb") as pipe:
                data = pipe.read()
            try:
                self._plan = pickle.loads(data) if data else None
            except Exception:
                self._plan = None
            if self._plan is not None:
                import logging

                for name, level, message in self._plan["log"]:
                    logging.getLogger(name).log(level, "%s", message)
        if self._plan is None or _gemm_snapshot(module, self.declarations) != self.snapshot:
            self.abandon()
            return None
        return self._plan

    def declared(self, llvm_ir: str, declarations: dict[str, str]) -> str:
        """`llvm_ir` (the kernels, the GEMMs declared by llvmlite) with each GEMM's declaration
        as its definition's header writes it (parameter attributes: `noalias`, `captures(none)`),
        and the marker that sends `compile_objects` here."""
        lines = llvm_ir.split("\n")
        for index, line in enumerate(lines):
            if line.startswith("declare "):
                match = _DECLARED.search(line)
                if match and match.group(1) in declarations:
                    lines[index] = declarations[match.group(1)]
        _APART.pop(id(self.module), None)
        _APART[self.pid] = self
        return "\n".join(lines) + f"\n{_APART_MARKER}{self.pid}\n"

    def objects(self, cpu: str, features: str | None, opt_level: int, triple: str | None) -> list[bytes]:
        """The GEMM parts' objects, once the process is done; a part it did not write (killed,
        no memory) or compiled for another target is compiled here, or fails saying why."""
        from dlc.cache import keep_object

        self.process.wait()
        same = self.target == (cpu, features, self.target[2], triple) and \
            min(self.target[2], GEMM_PIPELINE_LEVEL) == opt_level
        codes = []
        for index in range(self._plan["parts"]):
            target = self.scratch / f"part{index}.o"
            if same and self.process.returncode == 0 and target.exists():
                codes.append(target.read_bytes())
                continue
            part = (self.scratch / f"part{index}.ll").read_text()
            codes.append(compile_object(part, cpu, features, opt_level, triple))
            keep_object(_part_key(part, cpu, features, opt_level, triple), codes[-1])
        return codes

    def abandon(self) -> None:
        """Stop the process if it still runs, and remove its files and registration."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._plan is _UNREAD:
            with contextlib.suppress(OSError):
                os.close(self.reader)
            self._plan = None
        for key in (id(self.module), self.pid):
            if _APART.get(key) is self:
                del _APART[key]
        shutil.rmtree(self.scratch, ignore_errors=True)


_DECLARED = re.compile(r'^declare [^@]*@"([^"]+)"\(')


def _gemms_apart(module, emit: Callable, writer: int, scratch: Path, cpu: str, features: str, opt_level: int,
                 triple: str | None) -> int:
    """The forked process: the plan into `writer` (None: declined), then each part's object
    into `scratch`/partN.o (its IR in partN.ll first), the parts after the first compiled by
    processes of their own. Exit status 0 when every object was written."""
    from dlc.cache import keep_object, kept_object
    from dlc.codegen.split_module import _parse, split_module

    plan, parts, codes = None, [], []
    try:
        text, kernels = emit(module)
        called = sorted({name for _, function, worker, _ in kernels.values()
                         for name in (function, *([worker] if isinstance(worker, str) else worker[:2]))})
        # An exported function that names every function the kernels call: `split_module` exports
        # them from their parts, and `merge_identical_functions` renames them there as it merges.
        text += (f'\ndefine void @"{_CALLERS}"() {{\n' + "".join(f'  ; @"{name}"\n' for name in called)
                 + "  ret void\n}\n")
        merged = merge_identical_functions(text)
        if len(merged) >= MIN_PART_BYTES:
            functions = _parse(merged)[2]
            kept = dict(zip(called, _DUMMY_REFERENCE.findall(functions[_CALLERS].body), strict=True))
            count = max(1, min(compile_jobs() - 1, -(-len(merged) // MIN_PART_BYTES)))
            parts = split_module(merged, count, apart=is_gemm, together=is_gemm_tile)
            # Part 0 is the stand-in alone, or some function is not a GEMM's: decline.
            if len(parts) > 1 and parts[0].count("\ndefine ") == 1:
                parts = parts[1:]
                for index, part in enumerate(parts):
                    (scratch / f"part{index}.ll").write_text(part)
                with _records() as records:  # a damaged kept object is reported by the parent
                    codes = [kept_object(_part_key(part, cpu, features, opt_level, triple)) for part in parts]
                plan = {"kernels": {declaration: (spec, kept[function],
                                                  kept[worker] if isinstance(worker, str)
                                                  else (kept[worker[0]], kept[worker[1]], worker[2]), conv)
                                    for declaration, (spec, function, worker, conv) in kernels.items()},
                        "declarations": {name: functions[name].declaration() for name in set(kept.values())},
                        "parts": len(parts), "log": records}
    except Exception:
        plan = None
    with os.fdopen(writer, "wb") as pipe:
        pipe.write(pickle.dumps(plan))
    if plan is None:
        return 0
    workers = {index: _fork_worker(parts[index], scratch / f"part{index}.o", cpu, features, opt_level, triple)
               for index in range(1, len(parts)) if codes[index] is None}
    if codes[0] is None:
        codes[0] = compile_object(parts[0], cpu, features, opt_level, triple)
    for index, process in workers.items():
        target = scratch / f"part{index}.o"
        if process.wait() != 0 or not target.exists():
            return 1
        codes[index] = target.read_bytes()
    for index, (part, code) in enumerate(zip(parts, codes)):
        keep_object(_part_key(part, cpu, features, opt_level, triple), code)
        target = scratch / f"part{index}.o"
        if not target.exists():
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(code)
            partial.rename(target)
    return 0


@contextlib.contextmanager
def _records():
    """In a forked process: what dlc logs meanwhile, as (logger, level, message), and not
    printed here (the parent logs it, where a caller's handlers are)."""
    import logging

    records: list[tuple[str, int, str]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.name, record.levelno, record.getMessage()))

    logger = logging.getLogger("dlc")
    saved = logger.handlers, logger.propagate
    logger.handlers, logger.propagate = [Collect()], False
    try:
        yield records
    finally:
        logger.handlers, logger.propagate = saved


_DUMMY_REFERENCE = re.compile(r'@"([^"]+)"')


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
