"""The C API (issue 19, docs/c-api.md): examples/c/run_model.c built with `cc` against the
shipped header (`dlc --include-dir`), run on an input file, prints what dlc.load's run gives;
the same under AddressSanitizer with no report; errors are codes and messages, never aborts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT, parse_run_model_output

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


def _check_against_python(artifact, tmp_path, program, env=None, threads="2"):
    feeds = _feeds(artifact, tmp_path / "input.bin")
    run = subprocess.run([str(program), str(artifact), str(tmp_path / "input.bin"), threads],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    expected = dlc.load(artifact).run(feeds)
    got = parse_run_model_output(run.stdout)
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
    ("directory", "holds no weights; give the artifact's directory, or compile with --embed-weights"),
    ("fifo", "weights.bin: expected a regular file of"),
    ("weights", "weights.bin: expected a regular file of"),
])
def test_errors_are_messages_not_aborts(artifact, tmp_path, case, fragment):
    program, built = _build(tmp_path, "run_model")
    assert built.returncode == 0, built.stderr
    _feeds(artifact, tmp_path / "input.bin")
    directory, threads = artifact, "1"
    if case == "threads":
        threads = "0"
    elif case == "directory":  # no weights.bin: the example opens the library's own, which it lacks
        directory = shutil.copytree(artifact, tmp_path / "noweights")
        (directory / "weights.bin").unlink()
    elif case == "fifo":  # refused, never waited on
        directory = shutil.copytree(artifact, tmp_path / "fifo")
        (directory / "weights.bin").unlink()
        os.mkfifo(directory / "weights.bin")
    else:
        directory = shutil.copytree(artifact, tmp_path / "short")
        (directory / "weights.bin").write_bytes(b"\0" * 64)
    run = subprocess.run([str(program), str(directory), str(tmp_path / "input.bin"), threads],
                         capture_output=True, text=True)
    assert run.returncode == 1 and fragment in run.stderr, run.stderr


CONCURRENT = r"""
/* Runs of one model from several threads at once, and two models in one process: each run
 * equals the single-threaded first run, bit for bit (docs/c-api.md "Threads and concurrency"). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dlc.h"

typedef dlc_status (*run_fn)(dlc_model *, const void *const *, void *const *);
typedef dlc_status (*open_fn)(const char *, dlc_model **);
typedef dlc_status (*info_fn)(const dlc_model *, size_t, dlc_tensor_info *);
typedef dlc_status (*threads_fn)(dlc_model *, int64_t);
typedef void (*close_fn)(dlc_model *);
static run_fn run;
static dlc_model *model;
static void *input, *expected;
static size_t in_size, out_size;
static int failures;

static void *worker(void *unused) {
    (void)unused;
    void *out = malloc(out_size);
    for (int i = 0; i < 20; i++) {
        if (run(model, (const void *const *)&input, &out) != DLC_OK || memcmp(out, expected, out_size) != 0)
            __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
    }
    free(out);
    return NULL;
}

int main(int argc, char **argv) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.so", argv[1]);
    void *library = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!library) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    open_fn open = (open_fn)dlsym(library, "dlc_model_open");
    info_fn info = (info_fn)dlsym(library, "dlc_model_input"), out_info = (info_fn)dlsym(library, "dlc_model_output");
    threads_fn threads = (threads_fn)dlsym(library, "dlc_model_set_num_threads");
    close_fn close_model = (close_fn)dlsym(library, "dlc_model_close");
    run = (run_fn)dlsym(library, "dlc_model_run");
    dlc_model *second = NULL;
    if (open(argv[1], &model) != DLC_OK || open(argv[1], &second) != DLC_OK) return 1;
    dlc_tensor_info in, out;
    info(model, 0, &in);
    out_info(model, 0, &out);
    in_size = in.size_bytes, out_size = out.size_bytes;
    input = malloc(in_size), expected = malloc(out_size);
    for (size_t i = 0; i < in_size / 4; i++) ((float *)input)[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    threads(model, 1);
    if (run(model, (const void *const *)&input, &expected) != DLC_OK) return 1;
    threads(model, 3);
    threads(second, 2);
    pthread_t ids[4];
    for (int i = 0; i < 4; i++) pthread_create(&ids[i], NULL, worker, NULL);
    void *other = malloc(out_size);
    for (int i = 0; i < 20; i++)
        if (run(second, (const void *const *)&input, &other) != DLC_OK || memcmp(other, expected, out_size) != 0)
            failures++;
    for (int i = 0; i < 4; i++) pthread_join(ids[i], NULL);
    printf("failures %d\n", failures);
    free(other);
    free(input);
    free(expected);
    close_model(model);
    close_model(second);
    return failures != 0;
}
"""


def test_concurrent_runs_and_two_models_agree_bit_for_bit(artifact, tmp_path):
    (tmp_path / "concurrent.c").write_text(CONCURRENT)
    program = tmp_path / "concurrent"
    flags = ["-fsanitize=address"]
    built = subprocess.run(["cc", "-O1", "-g", *flags, f"-I{_include_dir()}", str(tmp_path / "concurrent.c"),
                            "-o", str(program), "-ldl", "-lpthread"], capture_output=True, text=True)
    if built.returncode != 0:  # no libasan: the same test without the sanitizer
        flags = []
        subprocess.run(["cc", "-O1", f"-I{_include_dir()}", str(tmp_path / "concurrent.c"), "-o", str(program),
                        "-ldl", "-lpthread"], check=True)
    run = subprocess.run([str(program), str(artifact)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "failures 0", run.stdout + run.stderr
    assert "AddressSanitizer" not in run.stderr


def test_embedded_weights_make_one_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE", "0")
    dlc.compile(CNN, embed_weights=True).save(tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["embedded_weights"] is True
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "art" / "model.so", alone / "model.so")  # no weights.bin, no manifest
    program, built = _build(tmp_path, "run_model", "-fsanitize=address")
    if built.returncode != 0:
        program, built = _build(tmp_path, "run_model")
    assert built.returncode == 0, built.stderr
    feeds = _feeds(tmp_path / "art", tmp_path / "input.bin")
    run = subprocess.run([str(program), str(alone), str(tmp_path / "input.bin"), "2"], capture_output=True,
                         text=True)
    assert run.returncode == 0 and "AddressSanitizer" not in run.stderr, run.stderr
    expected = dlc.load(tmp_path / "art").run(feeds)
    for name, value in parse_run_model_output(run.stdout).items():
        np.testing.assert_array_equal(value, expected[name])


def test_a_library_without_weights_says_so_when_opened_without_a_directory(artifact, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(artifact / "model.so", alone / "model.so")
    program, built = _build(tmp_path, "run_model")
    assert built.returncode == 0, built.stderr
    _feeds(artifact, tmp_path / "input.bin")
    run = subprocess.run([str(program), str(alone), str(tmp_path / "input.bin")], capture_output=True, text=True)
    assert run.returncode == 1 and "holds no weights" in run.stderr and "--embed-weights" in run.stderr, run.stderr


def test_the_model_table_carries_names_shapes_and_check_messages(tmp_path):
    """The model's table (LLVM data from dlc/codegen/c_api.py `table_llvm`, read by dlc_api.c
    as struct dlc_table): a name with a quote, a backslash and non-ASCII bytes, a scalar input
    (rank 0), and the message of a failed run-time check reach the C API as Python sees them."""
    indices, out = 'idx "\u00fc\\', 'out "\u00fc\\'
    nodes = [onnx.helper.make_node("Gather", ["data", indices], ["picked"], name="pick", axis=0),
             onnx.helper.make_node("Mul", ["picked", "scale"], [out])]
    graph = onnx.helper.make_graph(nodes, "table", [
        onnx.helper.make_tensor_value_info("data", onnx.TensorProto.FLOAT, [5]),
        onnx.helper.make_tensor_value_info(indices, onnx.TensorProto.INT64, [2]),
        onnx.helper.make_tensor_value_info("scale", onnx.TensorProto.FLOAT, [])],
        [onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, [2])])
    artifact = tmp_path / "table"
    dlc.compile(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])).save(artifact)
    program, built = _build(tmp_path, "run_model")
    assert built.returncode == 0, built.stderr

    def run(index: int) -> subprocess.CompletedProcess:
        feeds = [np.arange(5, dtype=np.float32), np.array([1, index], np.int64), np.array(2, np.float32)]
        (tmp_path / "input.bin").write_bytes(b"".join(value.tobytes() for value in feeds))
        return subprocess.run([str(program), str(artifact), str(tmp_path / "input.bin"), "1"], capture_output=True)

    good = run(-2)
    assert good.returncode == 0, good.stderr
    assert good.stdout.decode().splitlines() == [f"{out} float32 2", "2", "6"]
    bad = run(7)
    assert bad.returncode == 1
    assert (b"error: node 'pick' (Gather): an index in input 'indices' is out of range for axis 0 of 'data' "
            b"(size 5)") in bad.stderr, bad.stderr
