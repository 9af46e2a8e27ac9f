"""A second instruction set (issue 19, aim): `--cpu aarch64` cross-compiles the model (LLVM's
AArch64 backend, 128-bit NEON vectors through the same LLVM vector types), links model.so
with Debian's cross gcc, and examples/c/run_model.c, cross-built, runs it under qemu-aarch64;
its outputs match this host's native build and onnxruntime. On this host the artifact is
refused by name (asimd, fp), not crashed into."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from conftest import ROOT, parse_run_model_output, run_onnxruntime

import dlc
from dlc.errors import ArtifactError

CROSS_CC, QEMU, SYSROOT = "aarch64-linux-gnu-gcc", "qemu-aarch64", "/usr/aarch64-linux-gnu"
pytestmark = pytest.mark.skipif(
    shutil.which(CROSS_CC) is None or shutil.which(QEMU) is None,
    reason=f"needs {CROSS_CC} and {QEMU} (Debian: apt-get install gcc-aarch64-linux-gnu qemu-user "
           "libc6-dev-arm64-cross), which .ci/run installs when it can")
MODELS = {name: str(ROOT / "examples" / "models" / f"{name}.onnx") for name in ("cnn", "mlp")}


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    program = tmp_path_factory.mktemp("arm") / "run_model"
    subprocess.run([CROSS_CC, "-O1", "-Wall", "-Werror", f"-I{ROOT / 'dlc' / 'include'}",
                    str(ROOT / "examples" / "c" / "run_model.c"), "-o", str(program), "-ldl"], check=True)
    return program


def _compile(tmp_path, model: str, cpu: str):
    out = tmp_path / cpu
    dlc.compile(model, cpu=cpu).save(out)
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_aarch64_build_runs_under_qemu_and_matches_this_host(name, runner, tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE", "0")
    artifact = _compile(tmp_path, MODELS[name], "aarch64")
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["cpu_target"] == "aarch64" and manifest["cpu_flags"] == ["asimd", "fp"] and manifest["c_api"]
    assert (artifact / "model.so").read_bytes()[18:20] == (183).to_bytes(2, "little")  # e_machine: EM_AARCH64
    model = onnx.load(MODELS[name])
    native = dlc.compile(model)
    rng = np.random.default_rng(64)
    feeds = {spec.name: rng.standard_normal(spec.shape).astype(spec.dtype) for spec in native._executable.inputs}
    (tmp_path / "input.bin").write_bytes(b"".join(value.tobytes() for value in feeds.values()))
    expected, reference = native.run(feeds), run_onnxruntime(model, feeds)
    for threads in ("1", "3"):
        run = subprocess.run([QEMU, "-L", SYSROOT, str(runner), str(artifact), str(tmp_path / "input.bin"), threads],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        got = parse_run_model_output(run.stdout)
        assert got.keys() == expected.keys()
        for (output, value), onnxruntime_value in zip(got.items(), reference):
            np.testing.assert_allclose(value, expected[output], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(value, onnxruntime_value, rtol=1e-4, atol=1e-5)


def test_the_micro_kernels_use_neon_vectors(tmp_path, monkeypatch):
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        pytest.skip("aarch64-linux-gnu-objdump (binutils-aarch64-linux-gnu) is not installed")
    monkeypatch.setenv("DLC_CACHE", "0")
    artifact = _compile(tmp_path, MODELS["mlp"], "aarch64")
    text = subprocess.run([objdump, "-d", str(artifact / "model.so")], capture_output=True, text=True,
                          check=True).stdout
    assert re.search(r"\bfmla\s+v\d+\.4s", text), "no 4 x float32 NEON multiply-add in the code"


def test_this_host_refuses_it_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE", "0")
    artifact = _compile(tmp_path, MODELS["mlp"], "aarch64")
    if "asimd" in (open("/proc/cpuinfo").read()):
        pytest.skip("this host is an AArch64 machine: the build runs here")
    with pytest.raises(ArtifactError, match="compiled for CPU 'aarch64' and needs features this machine lacks: "
                                            "asimd, fp"):
        dlc.load(artifact)
