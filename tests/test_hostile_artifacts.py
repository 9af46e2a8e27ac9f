"""Damaged, edited and hostile artifacts (issue 14): each is refused with an ArtifactError from
the API and exit code 1 with a message from `dlc run DIR`, never a crash, a hang or a wrong
answer. The manifest's schema and integrity hash, each file's size and SHA-256, the ELF checks
(dlc/runtime/elf_loader.py check_objects) and regular-file reads (dlc/runtime/artifact.py)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT

import dlc
from dlc.cli import main
from dlc.errors import ArtifactError
from dlc.runtime.artifact import MANIFEST_VERSION, manifest_integrity

MLP = str(ROOT / "examples" / "models" / "mlp.onnx")
CNN = str(ROOT / "examples" / "models" / "cnn.onnx")


def _saved_as_objects(model: str, out):
    # Object files and dlc's own loader: what remains where no linker exists; the linked
    # model.so's damage cases are in tests/test_shared_library.py.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DLC_LINKER", "none")
        patch.setenv("DLC_CACHE", "0")
        dlc.compile(model, threads=2).save(out)
    return out


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _saved_as_objects(MLP, tmp_path_factory.mktemp("compiled") / "mlp")


@pytest.fixture(scope="module")
def compiled_cnn(tmp_path_factory):
    return _saved_as_objects(CNN, tmp_path_factory.mktemp("compiled") / "cnn")


@pytest.fixture()
def artifact(compiled, tmp_path):
    return shutil.copytree(compiled, tmp_path / "artifact")


def _manifest(artifact) -> dict:
    return json.loads((artifact / "manifest.json").read_text())


def _write_manifest(artifact, manifest: dict, rehash: bool = True) -> None:
    """Write `manifest`; `rehash` refreshes its integrity field (as someone editing on purpose
    would)."""
    if rehash:
        manifest["integrity"] = manifest_integrity(manifest)
    (artifact / "manifest.json").write_text(json.dumps(manifest))


def _rehash_file(artifact, name: str) -> None:
    """List `name`'s current size and SHA-256 in the manifest (an attacker's fix-up)."""
    manifest, data = _manifest(artifact), (artifact / name).read_bytes()
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _write_manifest(artifact, manifest)


def _refused(capsys, artifact, *fragments: str) -> None:
    """dlc.load raises ArtifactError and `dlc run` exits 1, each saying every fragment."""
    with pytest.raises(ArtifactError) as raised:
        dlc.load(artifact)
    assert all(fragment in str(raised.value) for fragment in fragments), str(raised.value)
    assert main(["run", str(artifact)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "internal error" not in err, err
    assert "hint:" in err or "compile" in err, err


def _child(artifact, env=None, timeout=120) -> subprocess.CompletedProcess:
    """`dlc run DIR` in a child process: a crash or a hang must not take the test run with it."""
    return subprocess.run(
        [sys.executable, "-m", "dlc.cli", "run", str(artifact)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def _child_refused(artifact, *fragments: str, env=None) -> None:
    child = _child(artifact, env)
    assert child.returncode == 1, (child.returncode, child.stderr[-2000:])
    assert child.stderr.startswith("error: ") and "Traceback" not in child.stderr, child.stderr
    assert all(fragment in child.stderr for fragment in fragments), child.stderr


# --- finding 5: edits are caught by the manifest's integrity and the files' hashes ----------------

EDITS = {
    "output shape [1, 1]": lambda m: m["outputs"][0].update(shape=[1, 1]),
    "output dtype int8": lambda m: m["outputs"][0].update(dtype="int8"),
    "arena_size 0": lambda m: m.update(arena_size=0),
    "an extra input": lambda m: m["inputs"].append(
        {"name": "extra", "shape": [1], "dtype": "float32"}
    ),
    "threads 64": lambda m: m.update(threads=64),
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_manifest_is_refused(capsys, artifact, edit):
    manifest = _manifest(artifact)
    EDITS[edit](manifest)
    _write_manifest(artifact, manifest, rehash=False)
    _refused(capsys, artifact, "manifest.json: edited or damaged")


def test_truncated_weights_with_a_matching_size_are_refused(capsys, artifact):
    manifest = _manifest(artifact)
    manifest["weights_size"] = manifest["files"]["weights.bin"]["size"] = 64
    _write_manifest(artifact, manifest, rehash=False)
    with open(artifact / "weights.bin", "r+b") as weights:
        weights.truncate(64)
    _refused(capsys, artifact, "manifest.json: ", "compile the model again")


def test_a_bit_flip_in_the_weights_is_refused(capsys, artifact):
    data = bytearray((artifact / "weights.bin").read_bytes())
    data[len(data) // 3] ^= 0x40
    (artifact / "weights.bin").write_bytes(bytes(data))
    _refused(capsys, artifact, "weights.bin: damaged", "SHA-256")


def test_an_older_manifest_is_refused_with_compile_again(capsys, artifact):
    manifest = _manifest(artifact)
    manifest["manifest_version"] = 3
    _write_manifest(artifact, manifest)
    _refused(capsys, artifact, f"not a dlc artifact manifest of version {MANIFEST_VERSION}",
             "found version 3", "compile the model again")


def test_a_damaged_elf_header_never_reaches_a_loader(capsys, artifact):
    data = bytearray((artifact / "model.o").read_bytes())
    data[0x3C:0x3E] = (0xFFFF).to_bytes(2, "little")  # e_shnum: a section table past the file's end
    (artifact / "model.o").write_bytes(bytes(data))
    _rehash_file(artifact, "model.o")
    _refused(capsys, artifact, "damaged object code", "section header table")


@pytest.mark.parametrize("new_type", [0x1D20, 0x0, 0x1, 0x8])
def test_a_retyped_relocation_section_is_refused(capsys, compiled_cnn, tmp_path, new_type):
    """.rela.text retyped (hashes fixed up) left the code unrelocated: it loaded, then jumped
    through address 0 (SIGSEGV; artifact fuzzing on the 16-core machine, seed 301)."""
    def sections(data) -> list[int]:
        shoff, shentsize, shnum = (int.from_bytes(data[a:a + n], "little")
                                   for a, n in ((0x28, 8), (0x3A, 2), (0x3C, 2)))
        return [shoff + i * shentsize + 4 for i in range(shnum)]  # each sh_type's offset

    def relocations(name: str) -> list[int]:
        data = (artifact / name).read_bytes()
        return [i for i, at in enumerate(sections(data)) if int.from_bytes(data[at:at + 4], "little") == 4]

    # The part that has a .rela.text: the CNN's code calls and loads constants on every CPU
    # (the MLP's, built for AVX-512, may have no relocation at all).
    artifact = shutil.copytree(compiled_cnn, tmp_path / "cnn")
    name = next(n for n in _manifest(artifact)["objects"] if relocations(n))
    data = bytearray((artifact / name).read_bytes())
    number = relocations(name)[0]
    at = sections(data)[number]
    data[at:at + 4] = new_type.to_bytes(4, "little")
    (artifact / name).write_bytes(bytes(data))
    _rehash_file(artifact, name)
    _refused(capsys, artifact, "damaged object code", f"section {number}")


@pytest.mark.parametrize("field,edit,fragment", [
    ("arena_size", lambda m: m.update(arena_size=0), "arena_size is 0 in the manifest"),
    ("outputs", lambda m: m["outputs"][0].update(shape=[]), f"output '{'logits'}' bytes"),
    ("inputs", lambda m: m["inputs"][0].update(shape=[1, 1]), "input 'input' bytes"),
    ("weights_size", lambda m: m.update(weights_size=m["weights_size"] - 4), "weights_size"),
])
def test_sizes_the_code_was_not_built_for_are_refused(capsys, artifact, field, edit, fragment):
    """A manifest edited with its integrity fixed up (16-core artifact fuzzing: arena_size
    2560 -> 0, an output's shape emptied) made the code write past its buffers (SIGSEGV):
    the sizes are checked against the code's own (dlc_contract) before anything runs."""
    manifest = _manifest(artifact)
    edit(manifest)
    _write_manifest(artifact, manifest)
    _refused(capsys, artifact, fragment)


def test_a_tensor_spec_with_a_list_for_its_dtype_is_named_not_a_type_error(capsys, artifact):
    manifest = _manifest(artifact)
    manifest["inputs"][0]["dtype"] = ["float32"]  # unhashable: `in DTYPES` raised TypeError
    _write_manifest(artifact, manifest)
    _refused(capsys, artifact, "field 'inputs' is missing or malformed (expected")


def _mutants(artifact, count: int, seed: int, tmp_path) -> list:
    """Artifacts whose model.o has a few random bytes changed, its hash fixed up to match."""
    rng, original, mutants = random.Random(seed), (artifact / "model.o").read_bytes(), []
    for number in range(count):
        data = bytearray(original)
        for _ in range(rng.choice((1, 1, 2, 4))):
            at = rng.randrange(len(data))
            value = rng.choice((rng.randrange(256), data[at] ^ 1 << rng.randrange(8), 0, 0xFF))
            data[at] = value
        mutant = shutil.copytree(artifact, tmp_path / f"mutant{number}")
        (mutant / "model.o").write_bytes(bytes(data))
        _rehash_file(mutant, "model.o")
        mutants.append(mutant)
    return mutants


LOAD_EACH = r"""
import sys, dlc
from dlc.errors import ArtifactError
for directory in sys.argv[1:]:
    try:
        dlc.load(directory)
        print("loaded", flush=True)
    except ArtifactError:
        print("refused", flush=True)
"""


def _fuzz(artifact, tmp_path, count: int, seed: int, loader: str) -> None:
    """Load every mutant in child processes: each loads (a changed instruction is not damage a
    loader can see) or raises ArtifactError; none crashes the child or raises anything else."""
    mutants, outcomes = _mutants(artifact, count, seed, tmp_path), []
    while len(outcomes) < len(mutants):
        child = subprocess.run(
            [sys.executable, "-c", LOAD_EACH, *map(str, mutants[len(outcomes) :])],
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
            env={**os.environ, "DLC_LOADER": loader},
        )
        outcomes += child.stdout.split()
        assert child.returncode == 0, (
            f"mutant {len(outcomes)} (seed {seed}, {loader}): exit "
            f"{child.returncode}\n{child.stderr[-2000:]}"
        )
    assert set(outcomes) <= {"loaded", "refused"}


@pytest.mark.parametrize("loader", ["elf", "mcjit"])
def test_mutated_object_code_with_a_fixed_hash_never_crashes(artifact, tmp_path, loader):
    _fuzz(artifact, tmp_path, 20, seed=14, loader=loader)


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["elf", "mcjit"])
def test_mutated_object_code_with_a_fixed_hash_never_crashes_long(artifact, tmp_path, loader):
    _fuzz(artifact, tmp_path, 300, seed=1414, loader=loader)


def test_a_missing_part_of_a_split_module_is_refused_by_mcjit(monkeypatch, tmp_path):
    from dlc.codegen import native

    monkeypatch.setattr(native, "MIN_PART_BYTES", 1)
    monkeypatch.setenv("DLC_COMPILE_JOBS", "2")
    monkeypatch.setenv("DLC_CACHE", "0")
    monkeypatch.setenv("DLC_LINKER", "none")
    artifact = tmp_path / "split"
    dlc.compile(CNN, threads=1).save(artifact)
    manifest = _manifest(artifact)
    parts = manifest["objects"]
    assert len(parts) >= 3 and parts[0] == "model.o"  # at least two parts, and the contract
    manifest["objects"] = ["model.o"]
    for name in parts[1:]:
        del manifest["files"][name]
    _write_manifest(artifact, manifest)
    for loader in ("mcjit", "elf"):
        _child_refused(
            artifact,
            "the object code calls",
            "neither it nor this process defines",
            env={"DLC_LOADER": loader},
        )


# --- finding 6: files are regular, bounded, and never block -------------------------------------


@pytest.mark.parametrize("name", ["model.o", "manifest.json", "weights.bin"])
def test_a_fifo_is_refused_not_waited_on(artifact, name):
    (artifact / name).unlink()
    os.mkfifo(artifact / name)
    _child_refused(artifact, f"{name}: is not a regular file")


def test_object_code_linked_to_dev_zero_is_refused(artifact):
    (artifact / "model.o").unlink()
    (artifact / "model.o").symlink_to("/dev/zero")
    _child_refused(artifact, "model.o: is not a regular file")


@pytest.mark.parametrize("name", ["manifest.json", "model.o", "weights.bin"])
def test_a_file_the_os_refuses_to_read_is_an_artifact_error(artifact, name):
    # /proc/self/mem passes fstat as a regular file of 0 bytes, and reading it fails with EIO
    # (found by `python -m dlc.tools.fuzz --artifacts`).
    (artifact / name).unlink()
    (artifact / name).symlink_to("/proc/self/mem")
    _child_refused(artifact, name)


def test_a_sparse_giant_manifest_is_refused_before_it_is_read(capsys, artifact):
    with open(artifact / "manifest.json", "r+b") as manifest:
        manifest.truncate(3 << 30)
    start = time.perf_counter()
    _refused(capsys, artifact, "manifest.json: holds 3221225472 bytes, more than the")
    assert time.perf_counter() - start < 10


# --- finding 8: every field is checked against the schema ----------------------------------------

MALFORMED = {
    "threads": "abc",
    "cpu_features": 5,
    "inputs": [{"name": "input", "shape": "1x784", "dtype": "float32"}],
    "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "U3"}],
    "weights": {"w": [[[[[[[[[[1]]]]]]]]]]},
    "objects": ["model.o", "../../etc/passwd"],
    "files": {"model.o": {"size": -1, "sha256": "0"}},
}


@pytest.mark.parametrize("field", MALFORMED)
def test_a_malformed_field_is_named(capsys, artifact, field):
    manifest = _manifest(artifact)
    manifest[field] = MALFORMED[field]
    _write_manifest(artifact, manifest)
    _refused(capsys, artifact, f"field '{field}' is missing or malformed (expected")


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("[1, 2, 3]", "not a dlc artifact manifest"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"format": "dlc-artifact", "manifest_version": NaN}', "invalid JSON"),
        ('{"format": "dlc-artifact", "x": ' + "9" * 5000 + "}", "invalid JSON"),
    ],
)
def test_manifests_that_are_not_objects_or_not_json(capsys, artifact, text, fragment):
    (artifact / "manifest.json").write_text(text)
    _refused(capsys, artifact, fragment)


def test_an_unknown_field_is_refused(capsys, artifact):
    manifest = _manifest(artifact)
    manifest["entry_point_override"] = "system"
    _write_manifest(artifact, manifest)
    _refused(capsys, artifact, "unknown field 'entry_point_override'")


def test_a_pool_without_its_functions_is_refused(artifact):
    pool = (artifact / "pool.o").read_bytes()
    assert pool.count(b"dlc_pool_parallel\0") == 1
    (artifact / "pool.o").write_bytes(pool.replace(b"dlc_pool_parallel\0", b"dlc_pool_parallex\0"))
    _rehash_file(artifact, "pool.o")
    _child_refused(artifact, "does not define the function 'dlc_pool_parallel'")


def test_an_intact_artifact_still_loads_and_runs(artifact):
    model = dlc.load(artifact)
    x = np.random.default_rng(0).standard_normal(model.inputs[0].shape).astype(np.float32)
    reference = dlc.compile(MLP, threads=2).run({model.inputs[0].name: x})
    np.testing.assert_array_equal(
        model.run({model.inputs[0].name: x})["logits"], reference["logits"]
    )


def _constant_indices_model():
    """ScatterND of x[5] with constant int64 indices [[1], [3]] (a weight) and updates: the code
    writes where the indices say, checked when the model compiled."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(np.array([[1], [3]], np.int64), "indices"),
               numpy_helper.from_array(np.array([10.0, 30.0], np.float32), "updates")]
    graph = helper.make_graph([helper.make_node("ScatterND", ["x", "indices", "updates"], ["y"], name="scatter")],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])], weights)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_constant_indices_edited_with_fixed_hashes_are_refused(capsys, tmp_path):
    """A bit flipped in a weight the code uses as an index, weights.bin's hash and the manifest's
    integrity fixed up (artifact fuzzing, seed 1805, segfaulted): the code's own checksum of its
    integer weights refuses it, in dlc.load, `dlc run` and the C API's dlc_model_open."""
    artifact = tmp_path / "scatter"
    dlc.compile(_constant_indices_model()).save(artifact)
    manifest = _manifest(artifact)
    offset = manifest["weights"]["indices"]
    np.testing.assert_array_equal(dlc.load(artifact).run({"x": np.zeros(5, np.float32)})["y"], [0, 10, 0, 30, 0])
    data = bytearray((artifact / "weights.bin").read_bytes())
    data[offset + 8] ^= 0x40  # the second index: 3 -> 2^62 + 3
    (artifact / "weights.bin").write_bytes(bytes(data))
    _rehash_file(artifact, "weights.bin")
    _refused(capsys, artifact, "weights.bin disagrees with the model's code", f"byte {offset}")
    if not shutil.which("cc") or not manifest.get("c_api"):
        return  # no C API in this library
    include = subprocess.run([sys.executable, "-m", "dlc.cli", "--include-dir"], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout.strip()
    program = tmp_path / "run_model"
    subprocess.run(["cc", f"-I{include}", str(ROOT / "examples" / "c" / "run_model.c"), "-o", str(program), "-ldl"],
                   check=True)
    (tmp_path / "x.bin").write_bytes(np.zeros(5, np.float32).tobytes())
    run = subprocess.run([str(program), str(artifact), str(tmp_path / "x.bin")], capture_output=True, text=True)
    assert run.returncode == 1 and "weights.bin disagrees with the model's code" in run.stderr, run.stderr
