"""dlc's ELF loader (dlc/runtime/elf_loader.py) runs what MCJIT runs, without LLVM in the process."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

import dlc
from dlc.codegen.native import compile_object
from dlc.errors import ArtifactError
from dlc.runtime.elf_loader import ElfImage, MalformedObject, UnresolvedSymbol, supported_host
from dlc.runtime.mcjit import NativeModule

pytestmark = pytest.mark.skipif(not supported_host(),
                                reason="the ELF loader is for x86-64 Linux; MCJIT loads elsewhere")

# Calls into libm (PLT32 through stubs), a writable global (.data/.bss), a constant table
# (.rodata), and the address of a libm function taken (a GOT slot).
LIBRARY_IR = r"""
@calls = internal global i64 0, align 8
@table = internal constant [4 x float] [float 1.0, float 2.0, float 3.0, float 4.0], align 16

declare float @expf(float)
declare float @powf(float, float)
declare float @fmodf(float, float)

define float @mix(float %x, i64 %i) nounwind {
entry:
  %n = load i64, ptr @calls
  %n1 = add i64 %n, 1
  store i64 %n1, ptr @calls
  %slot = getelementptr [4 x float], ptr @table, i64 0, i64 %i
  %t = load float, ptr %slot
  %e = call float @expf(float %x)
  %p = call float @powf(float %t, float %x)
  %m = call float @fmodf(float %e, float 3.0)
  %s = fadd float %p, %m
  ret float %s
}

define i64 @calls_so_far() nounwind {
entry:
  %n = load i64, ptr @calls
  ret i64 %n
}

define ptr @expf_address() nounwind {
entry:
  ret ptr @expf
}
"""

MIX = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_float, ctypes.c_int64)


def test_libm_calls_globals_and_function_addresses_match_mcjit():
    code = compile_object(LIBRARY_IR)
    ours, theirs = ElfImage([code]), NativeModule(code)
    for x, i in [(0.5, 0), (1.25, 3), (-2.0, 1)]:
        assert MIX(ours.address("mix"))(x, i) == MIX(theirs.address("mix"))(x, i)
    assert ctypes.CFUNCTYPE(ctypes.c_int64)(ours.address("calls_so_far"))() == 3  # the global is writable
    libm_expf = ctypes.cast(ctypes.CDLL(None).expf, ctypes.c_void_p).value
    assert ctypes.CFUNCTYPE(ctypes.c_void_p)(ours.address("expf_address"))() == libm_expf


def _protection(address: int) -> str:
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, permissions = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if start <= address < end:
                return permissions
    raise AssertionError(f"{address:#x} is not mapped")


def test_code_is_executable_and_not_writable():
    image = ElfImage([compile_object(LIBRARY_IR)])
    assert _protection(image.address("mix")).startswith("r-x")


def test_what_it_cannot_load_is_named():
    with pytest.raises(MalformedObject, match="not an ELF file"):
        ElfImage([b"\0" * 64])
    with pytest.raises(MalformedObject, match="not a 64-bit little-endian ELF"):
        ElfImage([b"\x7fELF" + b"\1" * 60])
    missing = LIBRARY_IR.replace("@fmodf", "@dlc_no_such_function")
    with pytest.raises(UnresolvedSymbol, match="dlc_no_such_function"):
        ElfImage([compile_object(missing)])
    with pytest.raises(KeyError, match="nothing"):
        ElfImage([compile_object(LIBRARY_IR)]).address("nothing")


def test_models_load_without_llvm_and_compute_what_mcjit_computes(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_LINKER", "none")  # object files: what remains where no linker exists
    cnn = str(ROOT / "examples/models/cnn.onnx")
    dlc.compile(cnn, threads=2).save(tmp_path / "art")
    assert (tmp_path / "art/pool.o").exists()
    script = (
        "import sys, numpy as np, dlc\n"
        "m = dlc.load(sys.argv[1])\n"
        "x = np.random.default_rng(0).standard_normal(m.inputs[0].shape).astype(np.float32)\n"
        "out = m.run({m.inputs[0].name: x})\n"
        "np.save(sys.argv[2], next(iter(out.values())))\n"
        "print(type(m._executable._module).__name__, 'llvmlite' in sys.modules)\n")
    results = {}
    for loader in ("elf", "mcjit"):
        child = subprocess.run([sys.executable, "-c", script, str(tmp_path / "art"), str(tmp_path / f"{loader}.npy")],
                               capture_output=True, text=True, env={**__import__("os").environ, "DLC_LOADER": loader})
        assert child.returncode == 0, child.stderr
        results[loader] = child.stdout.split()
    assert results["elf"] == ["ElfImage", "False"]  # the thread pool came from the artifact's pool.o
    assert results["mcjit"] == ["NativeModule", "True"]
    np.testing.assert_array_equal(np.load(tmp_path / "elf.npy"), np.load(tmp_path / "mcjit.npy"))


def test_damaged_pool_object_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_LINKER", "none")
    dlc.compile(str(ROOT / "examples/models/mlp.onnx")).save(tmp_path / "art")
    (tmp_path / "art/pool.o").write_bytes(b"\0" * 10)
    with pytest.raises(ArtifactError, match=r"pool\.o: damaged"):
        dlc.load(tmp_path / "art")
