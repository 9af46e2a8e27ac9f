"""Building for the CPU you name (issue 19, dlc/codegen/cpus.py): `--cpu x86-64-v3` runs here,
matches the native build and onnxruntime, and holds no 512-bit instruction where the v4 build
does; `x86-64-v2` runs with 128-bit vectors only; a build whose features this CPU lacks is
refused at load (Python and C) naming them; the manifest records the choice."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_onnxruntime

import dlc
from dlc.driver import compile_model
from dlc.errors import ArtifactError, CompileError
from dlc.runtime.host import cpuinfo_flags
from dlc.targets import CompileOptions

MLP = str(ROOT / "examples" / "models" / "mlp.onnx")
X86 = (cpuinfo_flags() or set()) >= {"sse2", "lm"}
pytestmark = pytest.mark.skipif(not X86, reason="the x86-64 levels are built and run on an x86-64 Linux host")
HAS_AVX512 = "avx512f" in (cpuinfo_flags() or set())


def _build(tmp_path_factory, cpu: str, features: str = ""):
    out = tmp_path_factory.mktemp(cpu) / "mlp"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DLC_CACHE", "0")
        compile_model(MLP, options=CompileOptions(cpu=cpu, cpu_features=features)).executable.save(out)
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    return {cpu: _build(tmp_path_factory, cpu) for cpu in ("native", "x86-64-v2", "x86-64-v3", "x86-64-v4")}


def _feeds():
    model = onnx.load(MLP)
    spec = model.graph.input[0].type.tensor_type
    shape = [d.dim_value for d in spec.shape.dim]
    return {model.graph.input[0].name: np.random.default_rng(3).standard_normal(shape).astype(np.float32)}


def _code(artifact) -> list:
    manifest = json.loads((artifact / "manifest.json").read_text())
    return [artifact / name for name in ([manifest["library"]] if "library" in manifest else manifest["objects"])]


def _registers(artifact) -> set[str]:
    """The vector register classes (xmm, ymm, zmm) the artifact's machine code names."""
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed: cannot disassemble the object code")
    text = "".join(subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True,
                                  text=True, check=True).stdout for path in _code(artifact))
    return set(re.findall(r"%([xyz]mm)\d", text))


@pytest.mark.parametrize("cpu", ["x86-64-v2", "x86-64-v3"])
def test_a_level_build_runs_here_and_matches_native_and_onnxruntime(builds, cpu):
    feeds = _feeds()
    got = dlc.load(builds[cpu]).run(feeds)
    native = dlc.load(builds["native"]).run(feeds)
    (expected,) = run_onnxruntime(onnx.load(MLP), feeds)
    for name, value in got.items():
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(value, native[name], rtol=1e-4, atol=1e-5)
    manifest = json.loads((builds[cpu] / "manifest.json").read_text())
    assert manifest["cpu"] == manifest["cpu_target"] == cpu
    assert "+avx2" in manifest["cpu_features"].split(",") if cpu == "x86-64-v3" else \
        "-avx" in manifest["cpu_features"].split(",")


def test_vector_registers_follow_the_cpu(builds):
    assert "zmm" not in _registers(builds["x86-64-v3"]) and "ymm" in _registers(builds["x86-64-v3"])
    assert _registers(builds["x86-64-v2"]) <= {"xmm"}
    assert "zmm" in _registers(builds["x86-64-v4"])  # the check can see 512-bit code


def test_the_vector_width_written_for_the_passes_follows_the_cpu():
    from dlc.targets.cpu import CpuTarget

    target = CpuTarget()
    widths = {}
    for cpu in ("x86-64-v2", "x86-64-v3", "x86-64-v4"):
        target.configure(CompileOptions(cpu=cpu))
        widths[cpu] = target.description().vector_bits
    target.configure(CompileOptions(cpu="x86-64-v4", cpu_features="-avx512f"))
    assert widths == {"x86-64-v2": 128, "x86-64-v3": 256, "x86-64-v4": 512}
    assert target.description().vector_bits == 256


@pytest.mark.skipif(HAS_AVX512, reason="this CPU has AVX-512: an x86-64-v4 build runs here")
def test_a_build_for_missing_features_is_refused_naming_them(builds):
    with pytest.raises(ArtifactError, match="compiled for CPU 'x86-64-v4' and needs features this machine "
                                            "lacks: avx512bw, avx512cd, avx512dq, avx512f, avx512vl"):
        dlc.load(builds["x86-64-v4"])


@pytest.mark.skipif(HAS_AVX512 or shutil.which("cc") is None,
                    reason="needs a CPU without AVX-512 and a C compiler for the example")
def test_the_c_api_refuses_it_too(builds, tmp_path):
    program = tmp_path / "run_model"
    include = ROOT / "dlc" / "include"
    subprocess.run(["cc", f"-I{include}", str(ROOT / "examples" / "c" / "run_model.c"), "-o", str(program),
                    "-ldl"], check=True)
    (tmp_path / "in.bin").write_bytes(next(iter(_feeds().values())).tobytes())
    run = subprocess.run([str(program), str(builds["x86-64-v4"]), str(tmp_path / "in.bin")], capture_output=True,
                         text=True)
    assert run.returncode == 1
    assert "needs features this machine lacks: avx512bw, avx512cd, avx512dq, avx512f, avx512vl" in run.stderr


def test_cpu_features_edit_the_set_and_are_recorded(tmp_path_factory):
    artifact = _build(tmp_path_factory, "x86-64-v3", "-fma")
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["cpu_target"] == "x86-64-v3,-fma"
    assert "-fma" in manifest["cpu_features"].split(",") and "fma" not in manifest["cpu_flags"]
    np.testing.assert_allclose(next(iter(dlc.load(artifact).run(_feeds()).values())),
                               run_onnxruntime(onnx.load(MLP), _feeds())[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cpu,features,fragment", [
    ("pentium-pro-max", "", "not a CPU dlc knows"),
    ("x86-64-v3", "avx512f", "is not +NAME or -NAME"),
    ("x86-64-v3", "+no-such-feature", "LLVM knows no feature 'no-such-feature'"),
])
def test_a_cpu_dlc_does_not_know_is_a_clear_error(cpu, features, fragment, monkeypatch):
    monkeypatch.setenv("DLC_CACHE", "0")
    with pytest.raises(CompileError, match=re.escape(fragment)):
        compile_model(MLP, options=CompileOptions(cpu=cpu, cpu_features=features))


def test_the_cli_takes_cpu(tmp_path, capsys):
    from dlc.cli import main

    assert main(["compile", MLP, "--cpu", "x86-64-v2", "-o", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["cpu_target"] == "x86-64-v2"


@pytest.mark.skipif(HAS_AVX512, reason="this CPU has AVX-512: an x86-64-v4 build runs here")
def test_the_python_api_builds_for_another_cpu_saves_and_refuses_to_run_here(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE", "0")
    model = dlc.compile(MLP, cpu="x86-64-v4")
    model.save(tmp_path / "v4")
    assert json.loads((tmp_path / "v4" / "manifest.json").read_text())["cpu_target"] == "x86-64-v4"
    with pytest.raises(ArtifactError, match="needs features this machine lacks: avx512bw"):
        model.run(_feeds())
