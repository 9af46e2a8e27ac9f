"""`dlc compile`/`dlc run` answered by the cache without importing onnx or xDSL (issue 16: a hit
took 0.7-0.9 s as a process, nearly all of it those imports): the artifact is the one a compile
writes, and every check of the slow path (checksums, memory limit, options in the key) holds."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from dlc.cli import main

MLP = ROOT / "examples" / "models" / "mlp.onnx"

# Runs dlc's command line in a fresh interpreter, then says which compiler packages it imported.
PROBE = """
import json, sys
from dlc.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "imported": sorted(m for m in ("onnx", "xdsl", "dlc.driver", "llvmlite.binding")
                                                   if m in sys.modules)}))
"""


def _cli_process(*argv: str, cache) -> dict:
    env = {**os.environ, "DLC_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return {"stdout": done.stdout, **json.loads(done.stdout.strip().splitlines()[-1])}


def _files(directory) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_compile_hit_copies_the_artifact_without_onnx_or_xdsl(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["compile", str(MLP), "-o", str(tmp_path / "cold")]) == 0
    stale = tmp_path / "hit" / "model.3.o"  # code of an earlier compile into that folder goes
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    hit = _cli_process("compile", str(MLP), "-o", str(tmp_path / "hit"), cache=tmp_path / "cache")
    assert hit["code"] == 0 and hit["imported"] == [], hit
    assert "wrote" in hit["stdout"]
    assert _files(tmp_path / "hit") == _files(tmp_path / "cold")  # bit-identical, manifest included


def test_run_hit_loads_without_onnx_or_xdsl(tmp_path):
    cache = tmp_path / "cache"
    cold = _cli_process("run", str(MLP), "--repeat", "1", cache=cache)
    hit = _cli_process("run", str(MLP), "--repeat", "1", cache=cache)
    assert "dlc.driver" in cold["imported"] and hit["imported"] == [], hit
    outputs = [line for line in hit["stdout"].splitlines() if line.startswith("logits")]
    assert outputs and outputs == [line for line in cold["stdout"].splitlines() if line.startswith("logits")]


def test_run_with_an_input_of_another_shape_is_not_served_from_the_cache(tmp_path, monkeypatch, capsys):
    import numpy as np

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", str(MLP), "--repeat", "1"]) == 0
    capsys.readouterr()
    np.save(tmp_path / "x.npy", np.zeros((2, 784), np.float32))
    # The artifact takes 1x784: the run goes the slow way, whose error names the shapes.
    assert main(["run", str(MLP), "--repeat", "1", "--input", f"input={tmp_path / 'x.npy'}"]) == 1
    assert "shape" in capsys.readouterr().err


def test_compile_hit_keeps_the_memory_limit_and_the_options(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    out = str(tmp_path / "out")
    assert main(["compile", str(MLP), "-o", out]) == 0
    (tmp_path / "out" / "manifest.json").unlink()
    assert main(["compile", str(MLP), "-o", out, "--max-memory", "1MB"]) == 1  # weights alone: 2.7 MB
    assert "memory limit" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert main(["compile", str(MLP), "-o", out, "--threads", "1"]) == 0  # another key: compiled
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["threads"] == 1


def test_a_damaged_entry_is_not_copied_but_discarded_and_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["compile", str(MLP), "-o", str(tmp_path / "cold")]) == 0
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    (entry / "weights.bin").write_bytes(b"broken")
    with caplog.at_level(logging.WARNING, logger="dlc.cache"):
        assert main(["compile", str(MLP), "-o", str(tmp_path / "again")]) == 0
    assert "discarding entry" in caplog.text
    assert _files(tmp_path / "again") == _files(tmp_path / "cold")


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads Linux's /proc/cpuinfo; elsewhere LLVM's")
def test_the_key_s_cpu_comes_from_cpuinfo_without_llvm():
    probe = ("import sys; from dlc import cache; identity = cache.host_identity(); "
             "print(bool(identity[2].get('flags') or identity[2].get('Features')), 'llvmlite.binding' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["True", "False"], done.stderr


def test_an_entry_that_goes_while_it_is_copied_is_compiled_instead(tmp_path, monkeypatch):
    import shutil

    from dlc import cache

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["compile", str(MLP), "-o", str(tmp_path / "cold")]) == 0
    copy = shutil.copyfile

    def evicted_meanwhile(source, target):
        if Path(source).parent.parent == tmp_path / "cache":  # an entry: a concurrent compile's
            shutil.rmtree(Path(source).parent)              # eviction, between the check and the copy
        return copy(source, target)

    monkeypatch.setattr(cache.shutil, "copyfile", evicted_meanwhile)
    assert main(["compile", str(MLP), "-o", str(tmp_path / "again")]) == 0
    assert _files(tmp_path / "again") == _files(tmp_path / "cold")


def test_files_put_in_place_leave_readers_of_the_old_ones_their_bytes(tmp_path):
    """An artifact written again (by a compile, or copied from the cache) puts each new file in
    its old one's place, never rewriting it: an open (or mapped) old file keeps its bytes, and
    no hidden file stays behind (dlc/runtime/artifact.py `_put_in_place`)."""
    from dlc.runtime.artifact import _put_in_place

    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")
    with open(target, "rb") as reader:
        for content in (b"new", b"newer"):
            partial = tmp_path / ".weights.bin.partial"
            partial.write_bytes(content)
            _put_in_place(partial, target)
            assert target.read_bytes() == content
        assert reader.read() == b"old"
    _put_in_place(tmp_path / "weights.bin", tmp_path / "fresh.bin")  # nothing there before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.bin"]
