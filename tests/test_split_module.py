"""A large module splits into parts compiled in parallel processes; the parts link into one
executable that computes what the unsplit module computes (dlc/codegen/split_module.py)."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from conftest import ROOT

import dlc
from dlc.codegen import native
from dlc.codegen.native import compile_object, compile_objects, parse_llvm
from dlc.codegen.split_module import split_module
from dlc.driver import compile_model
from dlc.errors import ArtifactError, CompileError
from dlc.runtime.mcjit import NativeModule

CNN = str(ROOT / "examples/models/cnn.onnx")
DEFINE = re.compile(r'^define (internal )?[^@]*@"([^"]+)"', re.M)


def _defined(llvm_ir: str) -> dict[str, bool]:
    """Defined function -> whether it is exported."""
    return {name: not internal for internal, name in DEFINE.findall(llvm_ir)}


@pytest.fixture(scope="module")
def cnn_ir() -> str:
    result = compile_model(CNN, compile_to="llvm")
    return result.text


def test_every_function_lands_in_exactly_one_part(cnn_ir):
    whole = _defined(cnn_ir)
    parts = split_module(cnn_ir, 3)
    assert len(parts) == 3
    seen: list[str] = []
    for part in parts:
        parse_llvm(part)  # each part is a module of its own that LLVM accepts
        seen += _defined(part)
    # Shared GEMMs become units of their own instead of being copied into every caller's part.
    assert len(seen) == len(set(seen)) and set(seen) <= set(whole)
    # Only functions that nothing refers to are left out (LLVM would delete them anyway).
    for name in set(whole) - set(seen):
        assert cnn_ir.count(f'@"{name}"') == 1, name
    # The entry stays in the first part; what another part calls is exported there and only there.
    assert _defined(parts[0])["dlc_main"] and all("dlc_main" not in _defined(p) for p in parts[1:])
    for part in parts:
        for name, exported in _defined(part).items():
            if exported and name != "dlc_main":
                assert any('declare' in other and f'@"{name}"' in other
                           for other in parts if other is not part)


def test_gemms_go_apart_from_the_kernels_that_call_them(cnn_ir):
    parts = split_module(cnn_ir, 2, apart=native.is_gemm)
    assert len(parts) == 3
    defined = [_defined(part) for part in parts]
    for part in parts:
        parse_llvm(part)
    assert defined[0]["dlc_main"] and not any(native.is_gemm(name) for name in defined[0])
    assert all(native.is_gemm(name) for names in defined[1:] for name in names)
    seen = [name for names in defined for name in names]
    assert len(seen) == len(set(seen)), "every function compiled once"
    # The micro-kernel tiles that GEMMs share go with the GEMMs (exported from their part
    # when a GEMM of another part calls them); what a kernel calls is exported from its part.
    tiles = [name for names in defined[1:] for name in names if name.startswith("dlc_gemm_tile_")]
    assert tiles and not any(name.startswith("dlc_gemm_tile_") for name in defined[0])
    called = {m for m in re.findall(r'call [^@]*@"([^"]+)"', parts[0]) if native.is_gemm(m)}
    assert called and all(any(names.get(name) for names in defined[1:]) for name in called)
    assert split_module(cnn_ir, 2, apart=lambda name: False) == [cnn_ir]  # nothing apart: one module


def _gemms_sharing_tiles() -> str:
    """An entry calling four GEMMs, two pairs of equal A strides and epilogue (other sizes)
    whose pair shares micro-kernel tiles, as LLVM IR text."""
    from llvmlite import ir

    from dialects.gemm_ukernel import GemmSpec
    from dlc.codegen.ukernels import emit_gemm

    module = ir.Module("gemms")
    gemms = []
    for index, (m, n, k) in enumerate([(40, 100, 48), (52, 64, 56), (27, 33, 56), (64, 200, 48)]):
        spec = GemmSpec(m, n, k, k, 1, "row", n, n, bias="col", activation="relu", vector_width=8,
                        mr=6, nr=16, kc=48, mc=24, nc=64)
        gemms.append(emit_gemm(module, f"dlc_gemm_{index}", spec))
    entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.PointerType()] * 5), "dlc_main")
    builder = ir.IRBuilder(entry.append_basic_block("entry"))
    for gemm in gemms:
        builder.call(gemm, entry.args)
    builder.ret_void()
    return str(module)


def test_shared_tiles_stay_internal_to_the_part_of_the_gemms_that_call_them():
    llvm_ir = _gemms_sharing_tiles()

    def exported_tiles(parts):
        return [name for part in parts for name, exported in _defined(part).items()
                if exported and native.is_gemm_tile(name)]

    plain = split_module(llvm_ir, 2, apart=native.is_gemm)
    assert exported_tiles(plain), "without `together`, a tile that GEMMs of two parts share is exported"
    parts = split_module(llvm_ir, 2, apart=native.is_gemm, together=native.is_gemm_tile)
    assert len(parts) == 3 and not exported_tiles(parts)
    defined = [_defined(part) for part in parts]
    seen = [name for names in defined for name in names]
    assert len(seen) == len(set(seen)) and set(seen) == set(_defined(llvm_ir))
    assert all(any(native.is_gemm_tile(name) for name in names) for names in defined[1:])
    # The parts link into one module that computes what the whole one does.
    objects = [compile_object(part, opt_level=1) for part in parts]
    NativeModule(objects).address("dlc_main")


def test_gemm_parts_compile_at_the_gemm_level_and_the_kernels_at_the_one_asked(cnn_ir, monkeypatch, tmp_path):
    # An empty cache of its own: parts an earlier test on this worker compiled would be kept
    # objects, and this test records the compiles it sees.
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "MIN_PART_BYTES", 1)
    levels = {}
    original = native.compile_object

    def record(llvm_ir, cpu=None, features=None, opt_level=3, triple=None):
        levels["kernels" if "define void @\"dlc_main\"" in llvm_ir else f"gemms{len(levels)}"] = opt_level
        return original(llvm_ir, cpu, features, opt_level, triple)

    def in_process(llvm_ir, target, cpu, features, opt_level, triple):  # the worker, here
        import subprocess
        import sys
        target.write_bytes(record(llvm_ir, cpu, features, opt_level, triple or None))
        return subprocess.Popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(native, "compile_object", record)
    monkeypatch.setattr(native, "_start_worker", in_process)
    assert NativeModule(compile_objects(cnn_ir, jobs=2, opt_level=3)).address("dlc_main")
    assert levels == {"gemms0": native.GEMM_PIPELINE_LEVEL, "gemms1": native.GEMM_PIPELINE_LEVEL, "kernels": 3}


def test_small_modules_and_one_job_stay_whole(cnn_ir):
    assert split_module(cnn_ir, 1) == [cnn_ir]
    assert len(compile_objects(cnn_ir, jobs=4)) == 1  # under MIN_PART_BYTES: not worth a process


def test_split_objects_link_and_compute_what_the_whole_module_computes(cnn_ir, monkeypatch, tmp_path):
    monkeypatch.setattr(native, "MIN_PART_BYTES", 1)
    monkeypatch.setattr(native, "MIN_GEMMS_APART", 1)
    # Three jobs: the kernels' part here, the GEMMs' two in the process started at the end of
    # the linalg phase (native.start_gemms_apart) and one it starts.
    monkeypatch.setenv("DLC_COMPILE_JOBS", "3")
    monkeypatch.setenv("DLC_CACHE", "0")
    monkeypatch.setenv("DLC_LINKER", "none")  # the parts as object files, for dlc's own loader
    split = dlc.compile(CNN, threads=1)
    # The kernels' part, two parts of GEMMs and the contract (dlc/runtime/contract.py).
    assert len(split._executable.objects) == 4
    monkeypatch.setenv("DLC_COMPILE_JOBS", "1")
    whole = dlc.compile(CNN, threads=1)
    assert len(whole._executable.objects) == 2  # one part and the contract
    x = np.random.default_rng(0).standard_normal(whole.inputs[0].shape).astype(np.float32)
    expected = whole.run({whole.inputs[0].name: x})
    got = split.run({split.inputs[0].name: x})
    for name in expected:
        # The same functions, compiled by the same LLVM: only calls across parts differ.
        np.testing.assert_array_equal(got[name], expected[name])

    split.save(tmp_path / "art")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == [
        "manifest.json", "model.1.o", "model.2.o", "model.3.o", "model.o", "pool.o", "weights.bin"]
    again = dlc.load(tmp_path / "art")
    np.testing.assert_array_equal(again.run({again.inputs[0].name: x})[name], expected[name])

    whole.save(tmp_path / "again")
    split.save(tmp_path / "again")
    whole.save(tmp_path / "again")  # a stale part of the earlier split save goes
    assert not (tmp_path / "again/model.2.o").exists() and not (tmp_path / "again/model.3.o").exists()
    assert dlc.load(tmp_path / "again").run({whole.inputs[0].name: x}).keys() == expected.keys()

    (tmp_path / "art/model.1.o").write_bytes(b"\0" * 100)
    with pytest.raises(ArtifactError, match=r"model\.1\.o: damaged"):
        dlc.load(tmp_path / "art")
    (tmp_path / "art/model.1.o").unlink()
    with pytest.raises(ArtifactError, match=r"model\.1\.o is missing"):
        dlc.load(tmp_path / "art")


def test_a_failed_worker_falls_back_to_compiling_in_this_process(cnn_ir, monkeypatch, tmp_path):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))  # nothing kept: the workers must run
    monkeypatch.setattr(native, "MIN_PART_BYTES", 1)

    def broken_worker(llvm_ir, target, cpu, features, opt_level, triple):
        import subprocess
        import sys
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    monkeypatch.setattr(native, "_start_worker", broken_worker)
    objects = compile_objects(cnn_ir, jobs=2)
    assert len(objects) == 3
    module = NativeModule(objects)
    assert module.address("dlc_main")


def test_compile_jobs_override(monkeypatch):
    monkeypatch.setenv("DLC_COMPILE_JOBS", "3")
    assert native.compile_jobs() == 3
    monkeypatch.setenv("DLC_COMPILE_JOBS", "many")
    with pytest.raises(CompileError, match="DLC_COMPILE_JOBS"):
        native.compile_jobs()


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("ld") is None, reason="no system linker")
def test_split_parts_link_into_one_library(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "MIN_PART_BYTES", 1)
    monkeypatch.setattr(native, "MIN_GEMMS_APART", 1)
    monkeypatch.setenv("DLC_COMPILE_JOBS", "2")
    monkeypatch.setenv("DLC_CACHE", "0")
    split = dlc.compile(CNN, threads=1)
    split.save(tmp_path / "art")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["manifest.json", "model.so", "weights.bin"]
    monkeypatch.setenv("DLC_COMPILE_JOBS", "1")
    whole = dlc.compile(CNN, threads=1)
    x = np.random.default_rng(0).standard_normal(whole.inputs[0].shape).astype(np.float32)
    expected = whole.run({whole.inputs[0].name: x})
    got = dlc.load(tmp_path / "art").run({whole.inputs[0].name: x})
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_the_entry_s_kernels_are_not_inlined_into_it(cnn_ir):
    marked = native.kernels_not_inlined(cnn_ir)
    parse_llvm(marked)
    header = {name: line for line in marked.splitlines() if line.startswith("define ")
              for name in re.findall(r'@"([^"]+)"\(', line)[:1]}
    entry = marked[marked.index('define void @"dlc_main"'):]
    called = set(re.findall(r'call [^@\n]*@"([^"]+)"', entry[:entry.index("\n}\n")])) & set(header)
    assert called, "the entry calls kernels"
    before = {name: line for line in cnn_ir.splitlines() if line.startswith("define ")
              for name in re.findall(r'@"([^"]+)"\(', line)[:1]}
    for name, line in header.items():
        assert (" noinline" in line) == (name in called or " noinline" in before[name]), name
    assert native.kernels_not_inlined(marked) == marked


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this OS: workers are new processes")
def test_a_forked_worker_writes_the_object_this_process_would(cnn_ir, tmp_path):
    """The worker is this process forked (no Python and no LLVM to start): its object is the
    in-process compile's, byte for byte; a worker whose compile fails writes nothing and says so."""
    part = split_module(cnn_ir, 2, apart=native.is_gemm, together=native.is_gemm_tile)[1]
    worker = native._start_worker(part, tmp_path / "part.o", *native.host_cpu(), 2, None)
    assert isinstance(worker, native._Forked) and worker.wait() == 0
    assert (tmp_path / "part.o").read_bytes() == compile_object(part, opt_level=2)
    broken = native._start_worker(part.replace("ret void", "ret i32 0", 1), tmp_path / "broken.o",
                                  *native.host_cpu(), 2, None)
    assert broken.wait() == 1 and broken.poll() == 1
    assert not list(tmp_path.glob("broken.o*"))
    slow = native._start_worker(part, tmp_path / "killed.o", *native.host_cpu(), 3, None)
    slow.kill()
    assert slow.wait() != 0


def test_without_fork_a_worker_is_a_new_python_process(cnn_ir, tmp_path, monkeypatch):
    import subprocess

    part = split_module(cnn_ir, 2, apart=native.is_gemm, together=native.is_gemm_tile)[1]
    monkeypatch.delattr(native.os, "fork", raising=False)
    worker = native._start_worker(part, tmp_path / "part.o", *native.host_cpu(), 2, None)
    assert isinstance(worker, subprocess.Popen) and worker.wait() == 0
    assert (tmp_path / "part.o").read_bytes() == compile_object(part, opt_level=2)


# --- the GEMMs compiled by a process forked at the end of the linalg phase (issue 16) ------------

@pytest.fixture
def apart_spied(monkeypatch):
    """Every module split (the CNN's IR is far below MIN_PART_BYTES), no cache, two jobs; the
    processes `start_gemms_apart` started, recorded."""
    if not hasattr(__import__("os"), "fork"):
        pytest.skip("no fork on this OS: the GEMMs compile with the kernels")
    monkeypatch.setattr(native, "MIN_PART_BYTES", 1)
    monkeypatch.setattr(native, "MIN_GEMMS_APART", 1)
    monkeypatch.setenv("DLC_COMPILE_JOBS", "2")
    monkeypatch.setenv("DLC_CACHE", "0")
    started = []
    start = native.start_gemms_apart

    def spy(*args, **kwargs):
        started.append(start(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(native, "start_gemms_apart", spy)
    return started


def _outputs(model):
    x = np.random.default_rng(0).standard_normal(model.inputs[0].shape).astype(np.float32)
    return model.run({model.inputs[0].name: x})


def _assert_same(got, expected):
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])  # bit for bit


def _whole(monkeypatch):
    monkeypatch.setenv("DLC_COMPILE_JOBS", "1")  # one process: the GEMMs with the kernels
    return dlc.compile(CNN, threads=1)


def test_gemms_compiled_apart_compute_what_the_whole_module_computes(apart_spied, monkeypatch):
    apart = dlc.compile(CNN, threads=1)
    (process,) = apart_spied
    assert process is not None and process.process.returncode == 0, "the GEMMs' process did not compile them"
    assert not process.scratch.exists() and not native._APART  # nothing left behind
    # The kernels' part, the GEMMs' (jobs - 1 parts) and the contract.
    assert len(apart._executable.objects) in (1, 3)  # one model.so, or the objects without a linker
    _assert_same(_outputs(apart), _outputs(_whole(monkeypatch)))


def test_gemm_declarations_changed_after_the_fork_are_emitted_here(apart_spied, monkeypatch):
    snapshot = native._gemm_snapshot
    calls = []

    def changed(module, declarations):  # the second look (at emission) sees other declarations
        calls.append(module)
        return snapshot(module, declarations) + (["changed"] if len(calls) > 1 else [])

    monkeypatch.setattr(native, "_gemm_snapshot", changed)
    apart = dlc.compile(CNN, threads=1)
    (process,) = apart_spied
    assert len(calls) == 2 and process.process.returncode is not None  # stopped, not waited for
    assert not process.scratch.exists() and not native._APART
    _assert_same(_outputs(apart), _outputs(_whole(monkeypatch)))


def test_a_gemm_process_that_dies_leaves_its_parts_to_this_one(apart_spied, monkeypatch):
    import os

    parent, original = os.getpid(), native.compile_object

    def dies_apart(*args, **kwargs):
        if os.getpid() != parent:
            os._exit(9)  # killed (out of memory, a signal) after it sent its plan
        return original(*args, **kwargs)

    monkeypatch.setattr(native, "compile_object", dies_apart)
    apart = dlc.compile(CNN, threads=1)
    (process,) = apart_spied
    assert process.process.returncode == 9
    _assert_same(_outputs(apart), _outputs(_whole(monkeypatch)))


def test_a_gemm_process_that_declines_leaves_the_gemms_to_the_kernels_part(apart_spied, monkeypatch):
    monkeypatch.setattr(native, "MIN_PART_BYTES", 1 << 40)  # too little code to be worth a part
    apart = dlc.compile(CNN, threads=1)
    (process,) = apart_spied
    assert process is not None and process._plan is None and not process.scratch.exists()
    _assert_same(_outputs(apart), _outputs(_whole(monkeypatch)))
