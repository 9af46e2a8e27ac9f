"""`dlc compile` writes the artifact's weights.bin while the code compiles (issue 16,
dlc/runtime/artifact.py `weights_written_early`): the artifact is the one written after the
compile, byte for byte, and a compile that fails leaves nothing of it behind."""

from __future__ import annotations

import pytest
from conftest import ROOT

from dlc.cli import main
from dlc.runtime import artifact

MLP = ROOT / "examples" / "models" / "mlp.onnx"


@pytest.fixture
def cold(monkeypatch):
    monkeypatch.setenv("DLC_CACHE", "0")


def _files(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_weights_written_early_give_the_artifact_written_after(tmp_path, cold, monkeypatch, capsys):
    assert main(["compile", str(MLP), "-o", str(tmp_path / "early"), "--quiet"]) == 0
    assert main(["compile", str(MLP), "-o", str(tmp_path / "early"), "--quiet"]) == 0  # over the old one
    monkeypatch.setattr(artifact, "start_weights", lambda weights: None)
    assert main(["compile", str(MLP), "-o", str(tmp_path / "after"), "--quiet"]) == 0
    early, after = _files(tmp_path / "early"), _files(tmp_path / "after")
    assert sorted(early) == ["manifest.json", "model.so", "weights.bin"] or "model.o" in early  # no hidden files
    assert early == after
    assert main(["run", str(tmp_path / "early"), "--quiet"]) == 0
    assert not artifact._EARLY


def test_a_compile_that_fails_leaves_no_weights_and_no_directory(tmp_path, cold, monkeypatch, capsys):
    from dlc.codegen import native

    def broken(*args, **kwargs):
        raise native.CompileError("LLVM failed (a test)")

    monkeypatch.setattr(native, "compile_objects", broken)
    assert main(["compile", str(MLP), "-o", str(tmp_path / "new"), "--quiet"]) == 1
    assert "LLVM failed" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "weights.bin").write_bytes(b"an earlier compile's")
    assert main(["compile", str(MLP), "-o", str(tmp_path / "old"), "--quiet"]) == 1
    assert _files(tmp_path / "old") == {"weights.bin": b"an earlier compile's"}
    assert not artifact._EARLY


def test_weights_written_early_for_another_directory_are_not_taken(tmp_path):
    import numpy as np

    blob = np.arange(1000, dtype=np.uint8)
    manifest = {"format": "dlc-artifact", "objects": []}
    with artifact.weights_written_early(tmp_path / "one"):
        artifact.start_weights(blob)
        (tmp_path / "two").mkdir()
        artifact.write_artifact(tmp_path / "two", manifest, [], blob, None)  # the cache's entry, say
        assert (tmp_path / "two" / "weights.bin").read_bytes() == blob.tobytes()
        assert artifact._EARLY, "the blob written for one/ went elsewhere"
    assert not (tmp_path / "one").exists() and not artifact._EARLY  # never saved there: removed
    with artifact.weights_written_early(tmp_path / "three"):
        artifact.start_weights(blob)
        artifact.write_artifact(tmp_path / "two", manifest, [], blob, None)
        artifact.write_artifact(tmp_path / "three", manifest, [], blob, None)  # then where it was written
        assert not artifact._EARLY
    assert sorted(p.name for p in (tmp_path / "three").iterdir()) == ["manifest.json", "weights.bin"]
    assert (tmp_path / "three" / "weights.bin").read_bytes() == blob.tobytes()


def test_with_the_cache_on_the_weights_written_early_still_go_to_the_artifact(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    taken = []
    take = artifact._EarlyWeights.take

    def spy(self, directory, weights):
        taken.append((directory, take(self, directory, weights)))
        return taken[-1][1]

    monkeypatch.setattr(artifact._EarlyWeights, "take", spy)
    assert main(["compile", str(MLP), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert [result is not None for _, result in taken] == [False, True]  # the cache's entry, then -o's
    assert main(["run", str(tmp_path / "out"), "--quiet"]) == 0


def test_a_compile_command_advises_no_huge_pages():
    """`dlc compile` runs no model: neither its weight blob nor numpy's arrays are advised for
    huge pages, whose faults compact memory first (dlc/runtime/artifact.py `no_huge_pages`)."""
    import os
    import subprocess
    import sys

    probe = (
        "import numpy as np\n"
        "from dlc.runtime import artifact\n"
        "artifact.no_huge_pages()\n"
        "blob = artifact.huge_page_buffer(5 << 20)\n"
        "assert blob.size == 5 << 20 and not blob.any() and blob.ctypes.data % artifact.ALIGNMENT == 0\n"
        "try:\n"
        "    from numpy._core.multiarray import _set_madvise_hugepage\n"
        "except ImportError:\n"
        "    from numpy.core.multiarray import _set_madvise_hugepage\n"
        "print(_set_madvise_hugepage(False))\n"  # the setting before: off
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
