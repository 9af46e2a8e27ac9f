"""The C API (issue 19, docs/c-api.md): examples/c/run_model.c built with `cc` against the
shipped header (`dlc --include-dir`), run on an input file, prints what dlc.load's run gives;
the same under AddressSanitizer with no report; errors are codes and messages, never aborts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

import dlc

EXAMPLE = ROOT / "examples" / "c" / "run_model.c"
CNN = str(ROOT / "examples" / "models" / "cnn.onnx")
pytestmark = pytest.mark.skipif(shutil.which("cc") is None,
                                reason="no C compiler (cc): model.so is linked without the C API, nothing to build")


def _include_dir() -> str:
    out = subprocess.run([sys.executable, "-m", "dlc.cli", "--include-dir"], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    return out


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("capi") / "cnn"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DLC_CACHE", "0")
        dlc.compile(CNN).save(out)
    assert json.loads((out / "manifest.json").read_text())["c_api"] is True
    return out


def _build(tmp_path, name: str, *flags: str):
    program = tmp_path / name
    built = subprocess.run(["cc", "-Wall", "-Wextra", "-Werror", "-O1", "-g", *flags, f"-I{_include_dir()}",
                            str(EXAMPLE), "-o", str(program), "-ldl"], capture_output=True, text=True)
    return program, built


def _feeds(artifact, path) -> dict[str, np.ndarray]:
    model = dlc.load(artifact)
    rng = np.random.default_rng(19)
    feeds = {spec.name: rng.standard_normal(spec.shape).astype(spec.dtype) for spec in model.inputs}
    path.write_bytes(b"".join(np.ascontiguousarray(value).tobytes() for value in feeds.values()))
    return feeds


def _parse(stdout: str) -> dict[str, np.ndarray]:
    """run_model's output: `name dtype AxB` then one value per line, per output."""
    outputs, lines = {}, stdout.splitlines()
    while lines:
        name, dtype, dims = lines.pop(0).split()
        shape = tuple(int(d) for d in dims.split("x"))
        count = int(np.prod(shape))
        outputs[name] = np.array([float(v) for v in lines[:count]], dtype=dtype).reshape(shape)
        del lines[:count]
    return outputs


def _check_against_python(artifact, tmp_path, program, env=None, threads="2"):
    feeds = _feeds(artifact, tmp_path / "input.bin")
    run = subprocess.run([str(program), str(artifact), str(tmp_path / "input.bin"), threads],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    expected = dlc.load(artifact).run(feeds)
    got = _parse(run.stdout)
    assert got.keys() == expected.keys()
    for name in expected:  # same code, same weights: the same bits (%.9g round-trips float32)
        np.testing.assert_array_equal(got[name], expected[name])
    return run


def test_the_header_ships_with_dlc():
    assert (_include_dir() + "/dlc.h").endswith("include/dlc.h")
    assert "dlc_model_run" in open(_include_dir() + "/dlc.h").read()


def test_the_example_prints_what_python_computes(artifact, tmp_path):
    program, built = _build(tmp_path, "run_model")
    assert built.returncode == 0, built.stderr
    _check_against_python(artifact, tmp_path, program, threads="2")
    _check_against_python(artifact, tmp_path, program, threads="1")


def test_the_example_under_address_sanitizer_reports_nothing(artifact, tmp_path):
    program, built = _build(tmp_path, "run_model_asan", "-fsanitize=address", "-fno-omit-frame-pointer")
    if built.returncode != 0:
        pytest.skip(f"cc cannot build with AddressSanitizer here (libasan missing?): {built.stderr[-300:]}")
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99", "PATH": "/usr/bin:/bin"}
    run = _check_against_python(artifact, tmp_path, program, env=env)
    assert "AddressSanitizer" not in run.stderr and "LeakSanitizer" not in run.stderr, run.stderr


@pytest.mark.parametrize("case,fragment", [
    ("threads", "dlc_model_set_num_threads: 0 threads; give 1 to 4096"),
    ("directory", "weights.bin: cannot be opened (No such file or directory)"),
    ("weights", "weights.bin: expected a regular file of"),
])
def test_errors_are_messages_not_aborts(artifact, tmp_path, case, fragment):
    program, built = _build(tmp_path, "run_model")
    assert built.returncode == 0, built.stderr
    _feeds(artifact, tmp_path / "input.bin")
    directory, threads = artifact, "1"
    if case == "threads":
        threads = "0"
    elif case == "directory":
        directory = shutil.copytree(artifact, tmp_path / "noweights")
        (directory / "weights.bin").unlink()
    else:
        directory = shutil.copytree(artifact, tmp_path / "short")
        (directory / "weights.bin").write_bytes(b"\0" * 64)
    run = subprocess.run([str(program), str(directory), str(tmp_path / "input.bin"), threads],
                         capture_output=True, text=True)
    assert run.returncode == 1 and fragment in run.stderr, run.stderr
