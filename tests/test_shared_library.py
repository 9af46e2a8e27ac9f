"""The linked `model.so` artifact (issue 19, dlc/codegen/link.py): only the documented API is
exported, `dlc.load` opens it with dlopen and needs numpy only, the answers equal those of the
object files loaded by dlc itself, and damage is refused; without a linker the objects remain."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

import dlc
from dlc.errors import ArtifactError
from dlc.runtime.artifact import manifest_integrity

CNN = str(ROOT / "examples" / "models" / "cnn.onnx")
needs_linker = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("ld") is None,
                                  reason="no system linker (cc or ld) on PATH: dlc keeps object files")
pytestmark = needs_linker

# What model.so may export: docs/artifact.md and docs/c-api.md.
# dlc_contract: the sizes the code is built for, and dlc_trusted_weights: the integer weights it
# trusts, both read at load (dlc/runtime/contract.py).
DOCUMENTED = {"dlc_main", "dlc_contract", "dlc_trusted_weights", "dlc_pool_parallel", "dlc_pool_start",
              "dlc_pool_stop", "dlc_pool_forget", "dlc_pool_own_items"}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("so") / "cnn"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DLC_CACHE", "0")
        dlc.compile(CNN, threads=2).save(out)
    return out


def _dynamic_symbols(library) -> set[str]:
    """Names the library exports (defined symbols of .dynsym), as `nm -D --defined-only` lists them."""
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed: cannot list the library's dynamic symbols")
    listing = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True,
                             check=True).stdout
    return {line.split()[-1].split("@")[0] for line in listing.splitlines() if line.strip()}


def test_the_artifact_is_one_library_exporting_only_the_documented_api(artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["library"] == "model.so" and "objects" not in manifest and "pool" not in manifest
    assert sorted(p.name for p in artifact.iterdir()) == ["manifest.json", "model.so", "weights.bin"]
    exported = _dynamic_symbols(artifact / "model.so")
    documented = DOCUMENTED | ({name for name in exported if name.startswith("dlc_")} if manifest["c_api"] else set())
    assert exported <= documented, f"undocumented exports: {sorted(exported - documented)}"
    assert {"dlc_main", "dlc_pool_parallel"} <= exported


LOAD_AND_RUN = r"""
import sys, numpy as np, dlc
model = dlc.load(sys.argv[1])
x = np.random.default_rng(0).standard_normal(model.inputs[0].shape).astype(np.float32)
out = model.run({model.inputs[0].name: x})
np.save(sys.argv[2], next(iter(out.values())))
print(type(model._executable._module).__name__,
      sorted(m for m in ("llvmlite", "xdsl", "onnx") if m in sys.modules))
"""


def test_loading_needs_numpy_only_and_matches_the_object_files(artifact, tmp_path, monkeypatch):
    child = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(artifact), str(tmp_path / "so.npy")],
                           capture_output=True, text=True, cwd=ROOT)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split("\n")[0] == "SharedLibrary []"
    monkeypatch.setenv("DLC_LINKER", "none")
    monkeypatch.setenv("DLC_CACHE", "0")
    dlc.compile(CNN, threads=2).save(tmp_path / "objects")
    child = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(tmp_path / "objects"), str(tmp_path / "o.npy")],
                           capture_output=True, text=True, cwd=ROOT)
    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith("ElfImage")
    np.testing.assert_array_equal(np.load(tmp_path / "so.npy"), np.load(tmp_path / "o.npy"))


def test_without_a_linker_the_objects_remain_with_a_note(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DLC_LINKER", "none")
    monkeypatch.setenv("DLC_CACHE", "0")
    with caplog.at_level("WARNING", logger="dlc"):
        dlc.compile(str(ROOT / "examples" / "models" / "mlp.onnx")).save(tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    # The code and its contract (dlc/runtime/contract.py), then the pool.
    assert manifest["objects"] == ["model.o", "model.1.o"] and manifest["pool"] == "pool.o" \
        and "library" not in manifest
    assert [r.getMessage() for r in caplog.records if "no linker" in r.getMessage()]


def test_a_compile_into_an_object_artifact_leaves_no_stale_code(artifact, tmp_path, monkeypatch):
    target = shutil.copytree(artifact, tmp_path / "again")
    monkeypatch.setenv("DLC_LINKER", "none")
    monkeypatch.setenv("DLC_CACHE", "0")
    dlc.compile(CNN, threads=1).save(target)
    assert not (target / "model.so").exists() and (target / "model.o").exists()
    dlc.load(target)


def _fix_hash(artifact, name: str) -> None:
    manifest, data = json.loads((artifact / "manifest.json").read_text()), (artifact / name).read_bytes()
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest["integrity"] = manifest_integrity(manifest)
    (artifact / "manifest.json").write_text(json.dumps(manifest))


def test_a_damaged_library_is_refused_before_dlopen(artifact, tmp_path):
    copy = shutil.copytree(artifact, tmp_path / "damaged")
    data = bytearray((copy / "model.so").read_bytes())
    data[len(data) // 2] ^= 1
    (copy / "model.so").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.so: damaged \(its SHA-256"):
        dlc.load(copy)


def test_a_library_that_is_not_elf_is_refused_by_the_dynamic_loader(artifact, tmp_path):
    copy = shutil.copytree(artifact, tmp_path / "garbage")
    (copy / "model.so").write_bytes(b"\0" * 4096)
    _fix_hash(copy, "model.so")
    with pytest.raises(ArtifactError, match="the shared library cannot be loaded") as raised:
        dlc.load(copy)
    assert "compile the model again" in str(raised.value)


@pytest.mark.parametrize("edit", ["both", "neither", "pool"])
def test_a_manifest_naming_code_both_ways_is_refused(artifact, tmp_path, edit):
    copy = shutil.copytree(artifact, tmp_path / edit)
    manifest = json.loads((copy / "manifest.json").read_text())
    if edit == "both":
        manifest["objects"] = ["model.o"]
    elif edit == "neither":
        del manifest["library"]
    else:
        manifest["pool"] = "pool.o"
    manifest["integrity"] = manifest_integrity(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="is missing or malformed"):
        dlc.load(copy)


@pytest.mark.skipif(shutil.which("ld") is None, reason="no bare linker (ld) on PATH")
def test_a_bare_ld_links_the_model_without_the_c_api(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_LINKER", "ld")
    monkeypatch.setenv("DLC_CACHE", "0")
    model = dlc.compile(CNN, threads=2)
    model.save(tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["library"] == "model.so" and manifest["c_api"] is False
    exported = _dynamic_symbols(tmp_path / "art" / "model.so")
    assert exported == DOCUMENTED
    x = np.random.default_rng(1).standard_normal(model.inputs[0].shape).astype(np.float32)
    expected = model.run({model.inputs[0].name: x})
    got = dlc.load(tmp_path / "art").run({model.inputs[0].name: x})
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_a_dropped_model_is_unloaded_and_the_pools_library_stays(artifact, monkeypatch):
    import gc

    def mapped() -> int:  # mappings of libraries compiled in this process (dlc/runtime/loader.py)
        with open("/proc/self/maps") as maps:
            return sum("dlc-so-" in line for line in maps)

    monkeypatch.setenv("DLC_CACHE", "0")
    first = dlc.load(artifact)  # threads 2: this process's pool exists (pinned), whoever made it
    x = np.random.default_rng(2).standard_normal(first.inputs[0].shape).astype(np.float32)
    expected = first.run({first.inputs[0].name: x})
    before = mapped()
    model = dlc.compile(CNN, threads=2)
    assert mapped() > before
    got = model.run({model.inputs[0].name: x})
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    del model
    gc.collect()
    assert mapped() == before
    again = first.run({first.inputs[0].name: x})  # the pool still runs
    for name in expected:
        np.testing.assert_array_equal(again[name], expected[name])
