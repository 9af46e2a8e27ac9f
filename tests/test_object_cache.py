"""The kept LLVM parts (issue 16): each part's object is kept in the compile cache by the hash
of its IR and target, so a compile with other options reuses the parts it shares; a damaged
or foreign kept object is never loaded; `dlc cache clear` and DLC_CACHE=0 cover them."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import ROOT, random_feeds

from dlc.codegen import native
from dlc.driver import compile_model
from dlc.targets import CompileOptions
from dlc.tools.oracle import run_onnxruntime

MLP = ROOT / "examples" / "models" / "mlp.onnx"


@pytest.fixture
def counted(tmp_path, monkeypatch):
    """The cache in tmp_path, every module split (MLP's IR is far below MIN_PART_BYTES) into
    two processes' parts, and a count of the parts compiled (here or by a worker process)."""
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DLC_COMPILE_JOBS", "2")
    monkeypatch.setattr(native, "MIN_PART_BYTES", 1)
    compiled = []
    here, worker = native.compile_object, native._start_worker

    def compile_object(llvm_ir, *args, **kwargs):
        compiled.append(llvm_ir)
        return here(llvm_ir, *args, **kwargs)

    def start_worker(llvm_ir, *args, **kwargs):
        compiled.append(llvm_ir)
        return worker(llvm_ir, *args, **kwargs)

    monkeypatch.setattr(native, "compile_object", compile_object)
    monkeypatch.setattr(native, "_start_worker", start_worker)
    return compiled


def _objects(root):
    return sorted((root / ".objects").glob("*.o"))


def _run(result, feeds):
    return result.executable.run(feeds)["logits"]


def test_a_compile_with_other_options_compiles_only_new_parts(tmp_path, counted):
    feeds = random_feeds(onnx.load(MLP))
    first = compile_model(MLP, options=CompileOptions(threads=1))
    parts = len(counted)
    assert parts >= 2, "the module was not split: nothing here tests reuse across parts"
    assert len(_objects(tmp_path)) >= 2  # (one more compile_object is the run-time pool's, not a part)
    counted.clear()
    # Another artifact key (threads), the same GEMMs: only the parts whose IR changed compile.
    second = compile_model(MLP, options=CompileOptions(threads=2))
    assert second.timings != [("cache hit", 0.0)]
    assert len(counted) < parts
    expected = run_onnxruntime(onnx.load(MLP), feeds)["logits"]
    # The MLP's float32 GEMMs against onnxruntime's: same tolerance as the other MLP tests.
    for result in (first, second):
        np.testing.assert_allclose(_run(result, feeds), expected, rtol=1e-4, atol=1e-5)


def test_kept_parts_give_the_same_code_as_a_cold_compile(tmp_path, counted, monkeypatch):
    feeds = random_feeds(onnx.load(MLP))
    compile_model(MLP, options=CompileOptions(fusion="none"))  # keeps the parts
    counted.clear()
    warm = compile_model(MLP, options=CompileOptions(fusion="none", threads=1))
    kept = len(counted)
    monkeypatch.setenv("DLC_CACHE", "0")
    counted.clear()
    cold = compile_model(MLP, options=CompileOptions(fusion="none", threads=1))
    assert kept < len(counted)
    np.testing.assert_array_equal(_run(warm, feeds), _run(cold, feeds))  # bit for bit


@pytest.mark.parametrize("damage", ["truncated", "flipped", "fifo", "link", "group-writable", "another user's"])
def test_a_damaged_or_foreign_kept_object_is_ignored_and_compiled_again(tmp_path, counted, damage, caplog):
    feeds = random_feeds(onnx.load(MLP))
    first = compile_model(MLP, options=CompileOptions(threads=1))
    # The largest LLVM part (a GEMM part, as a rule); not the C API's object (c-*.o), which
    # this process keeps in memory once it has read it.
    target = max((p for p in _objects(tmp_path) if not p.name.startswith("c-")), key=lambda p: p.stat().st_size)
    data = target.read_bytes()
    if damage == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        target.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    elif damage == "fifo":  # a read would hang
        target.unlink()
        os.mkfifo(target, 0o600)
    elif damage == "link":  # to a file of someone else's choosing
        elsewhere = tmp_path / "elsewhere.o"
        elsewhere.write_bytes(data)
        target.unlink()
        target.symlink_to(elsewhere)
    elif damage == "group-writable":  # written by others, as far as anyone can tell
        os.chmod(target, 0o620)
    else:
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            pytest.skip("giving a file to another user takes root")
        os.chown(target, 12345, -1)
    counted.clear()
    second = compile_model(MLP, options=CompileOptions(threads=2))
    assert any("ignoring kept object" in message for message in caplog.messages)
    assert counted, "the damaged part was not compiled again"
    np.testing.assert_array_equal(_run(first, feeds), _run(second, feeds))
    # Replaced by a good object of ours.
    assert target.is_file() and not target.is_symlink() and target.stat().st_mode & 0o077 == 0


def test_clear_removes_kept_objects_and_cache_off_writes_none(tmp_path, counted, monkeypatch):
    from dlc import cache

    compile_model(MLP)
    assert _objects(tmp_path)
    info = cache.info()
    assert info["objects"] == len(_objects(tmp_path)) and info["object_bytes"] > 0
    cache.clear()
    assert not (tmp_path / ".objects").exists()
    for child in tmp_path.iterdir():
        child.unlink() if child.is_file() else None
    monkeypatch.setenv("DLC_CACHE", "0")
    compile_model(MLP, options=CompileOptions(threads=1))
    assert not any(tmp_path.iterdir())


def test_kept_objects_count_in_the_cap(tmp_path, counted, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_MAX", "1")  # smaller than anything: only the newest stays
    compile_model(MLP)
    assert len(_objects(tmp_path)) <= 1


# --- the code every model links, started while the passes run (issue 16) --------------------------

def _cc():
    from dlc.codegen.link import find_linker

    linker = find_linker()
    if linker is None or linker[0] != "cc":
        pytest.skip("no C compiler on PATH: the C API's object is never compiled")
    return linker[1]


def test_a_c_object_started_in_the_background_is_the_one_compiled_in_turn(tmp_path, monkeypatch):
    from dlc.codegen import link

    monkeypatch.setenv("DLC_CACHE", "0")
    monkeypatch.setattr(link, "_C_OBJECTS", {})
    program, text = _cc(), "int dlc_test_answer(void) { return 42; }\n"
    link.start_c_object(program, "answer.c", text)
    ((process, scratch),) = link._PENDING.values()
    code = link._kept_c_object(program, "answer.c", text, (), ())
    assert process.returncode == 0 and not link._PENDING and not os.path.exists(scratch)
    assert code == link._run_cc(program, "answer.c", text, (), ())  # the same bytes, wherever it ran


def test_a_failed_background_c_compile_is_compiled_again_and_reported(monkeypatch):
    from dlc.codegen import link
    from dlc.errors import CompileError

    monkeypatch.setenv("DLC_CACHE", "0")
    monkeypatch.setattr(link, "_C_OBJECTS", {})
    program = _cc()
    link.start_c_object(program, "broken.c", "this is not C\n")
    with pytest.raises(CompileError, match="compiling broken.c"):
        link._kept_c_object(program, "broken.c", "this is not C\n", (), ())
    assert not link._PENDING


def test_a_cold_compile_starts_the_c_api_and_pool_before_the_passes(monkeypatch):
    from dlc.codegen import link, thread_pool_ir

    monkeypatch.setenv("DLC_CACHE", "0")
    monkeypatch.setattr(link, "_C_OBJECTS", {})
    started = []
    monkeypatch.setattr(link, "start_c_object", lambda *args, **kwargs: started.append(args[1]))
    thread_pool_ir.pool_object.cache_clear()
    thread = link.start_shared_objects()
    thread.join()
    assert thread_pool_ir.pool_object.cache_info().currsize == 1  # the build's call finds it
    if link.find_linker() is not None and link.find_linker()[0] == "cc":
        assert started == ["dlc_api.c"]
    feeds = random_feeds(onnx.load(MLP))
    np.testing.assert_allclose(compile_model(MLP).executable.run(feeds)["logits"],
                               run_onnxruntime(onnx.load(MLP), feeds)["logits"], rtol=1e-4, atol=1e-5)
