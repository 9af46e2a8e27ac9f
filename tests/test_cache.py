"""The compile cache: hits for the same model and options, misses when anything changes;
user-only permissions and checksummed entries (issue 7)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, random_feeds

from dlc.cache import verify_entry
from dlc.driver import compile_model
from dlc.targets import CompileOptions

MLP = ROOT / "examples" / "models" / "mlp.onnx"


def _hit(result) -> bool:
    return result.timings == [("cache hit", 0.0)]


def test_second_compile_loads_from_cache(tmp_path, monkeypatch):
    import onnx

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    first = compile_model(MLP)
    second = compile_model(MLP)
    assert not _hit(first) and _hit(second)
    feeds = random_feeds(onnx.load(MLP))
    np.testing.assert_array_equal(first.executable.run(feeds)["logits"], second.executable.run(feeds)["logits"])


def test_changed_options_or_model_recompile(tmp_path, monkeypatch):
    import onnx

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    assert not _hit(compile_model(MLP, options=CompileOptions(fusion="none")))
    model = onnx.load(MLP)
    model.graph.initializer[0].float_data[:] = []  # a different weight file
    model.graph.initializer[0].raw_data = np.zeros((512, 784), np.float32).tobytes()
    assert not _hit(compile_model(model))


def test_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DLC_CACHE", "0")
    compile_model(MLP)
    assert not _hit(compile_model(MLP))
    assert not any(tmp_path.iterdir())


def test_damaged_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    (entry,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    (entry / "weights.bin").write_bytes(b"broken")
    assert not _hit(compile_model(MLP))
    assert _hit(compile_model(MLP))


# --- issue 7: user-only permissions, checksummed entries -------------------------------------------

def _entry(cache_root):
    (entry,) = [p for p in cache_root.iterdir() if not p.name.startswith(".")]
    return entry


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_cache_is_user_only_whatever_the_umask(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("DLC_CACHE_DIR", str(root))
    previous = os.umask(0)  # files and directories would be world-writable if modes followed the umask
    try:
        compile_model(MLP)
    finally:
        os.umask(previous)
    entry = _entry(root)
    assert _mode(root) == 0o700 and _mode(entry) == 0o700
    files = sorted(p.name for p in entry.iterdir())
    assert files == ["CHECKSUMS", "STAMPS", "manifest.json", "model.so", "weights.bin"]
    assert {name: _mode(entry / name) for name in files} == dict.fromkeys(files, 0o600)


def test_existing_cache_directory_is_made_private(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    monkeypatch.setenv("DLC_CACHE_DIR", str(root))
    compile_model(MLP)
    assert _mode(root) == 0o700


def test_directory_others_can_write_is_not_read_and_is_emptied(tmp_path, monkeypatch, caplog):
    root = tmp_path / "cache"
    monkeypatch.setenv("DLC_CACHE_DIR", str(root))
    compile_model(MLP)
    os.chmod(root, 0o777)  # anyone could have planted or replaced an entry
    (root / "planted").mkdir()
    with caplog.at_level(logging.WARNING, logger="dlc.cache"):
        assert not _hit(compile_model(MLP))
    assert "others may write to it" in caplog.text
    assert _mode(root) == 0o700 and not (root / "planted").exists()
    assert _hit(compile_model(MLP))


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _shorten_by_one(path):
    path.write_bytes(path.read_bytes()[:-1])


DAMAGE = {
    "flip model.so": ("model.so", _flip_middle_byte),
    "flip weights.bin": ("weights.bin", _flip_middle_byte),
    "flip manifest.json": ("manifest.json", _flip_middle_byte),
    "flip CHECKSUMS": ("CHECKSUMS", _flip_middle_byte),
    "truncate model.so": ("model.so", _truncate),
    "truncate weights.bin by one byte": ("weights.bin", _shorten_by_one),
    "truncate manifest.json": ("manifest.json", _truncate),
    "delete weights.bin": ("weights.bin", lambda path: path.unlink()),
    "stale entry without CHECKSUMS": ("CHECKSUMS", lambda path: path.unlink()),
    "extra file": ("extra.bin", lambda path: path.write_bytes(b"planted")),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_entry_is_detected_removed_and_rebuilt_never_loaded(tmp_path, monkeypatch, caplog, damage):
    import onnx

    import dlc.runtime

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    first = compile_model(MLP)
    entry = _entry(tmp_path)
    name, damage_file = DAMAGE[damage]
    before = (entry / name).read_bytes() if (entry / name).exists() else None
    damage_file(entry / name)
    assert before is None or not (entry / name).exists() or (entry / name).read_bytes() != before

    loaded, real_load = [], dlc.runtime.load_artifact

    def recording_load(path, *args, **kwargs):
        loaded.append(path)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(dlc.runtime, "load_artifact", recording_load)
    with caplog.at_level(logging.WARNING, logger="dlc.cache"):
        rebuilt = compile_model(MLP)
    assert not _hit(rebuilt) and loaded == []  # detected before any byte of it was loaded
    assert f"discarding entry {entry}" in caplog.text
    assert verify_entry(entry) is None  # the rebuilt entry replaced the damaged one
    assert _hit(compile_model(MLP)) and loaded == [entry]
    feeds = random_feeds(onnx.load(MLP))
    np.testing.assert_array_equal(rebuilt.executable.run(feeds)["logits"], first.executable.run(feeds)["logits"])


def test_checksum_file_lists_every_file_of_the_entry(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    entry = _entry(tmp_path)
    header, *lines = (entry / "CHECKSUMS").read_text().splitlines()
    assert header == "dlc-cache-entry 1"
    listed = dict(reversed(line.split("  ")) for line in lines)
    assert listed == {name: hashlib.sha256((entry / name).read_bytes()).hexdigest()
                      for name in ("manifest.json", "model.so", "weights.bin")}


# --- issue 16: a hit proves its files unchanged by their identity, not by hashing them --------

class _CountingSha256:
    """hashlib.sha256 that counts the bytes it is given."""

    hashed = 0

    def __init__(self, data=b""):
        import hashlib

        self._digest = hashlib.new("sha256")
        self.update(data)

    def update(self, data) -> None:
        _CountingSha256.hashed += memoryview(data).nbytes
        self._digest.update(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def test_a_hit_hashes_no_file_the_store_stamped(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    weights = (_entry(tmp_path) / "weights.bin").stat().st_size
    monkeypatch.setattr(hashlib, "sha256", _CountingSha256)
    _CountingSha256.hashed = 0
    assert _hit(compile_model(MLP))
    # What is hashed is the model's bytes for the key (~2.7 MB, once) and the manifest's own
    # JSON; neither weights.bin (2.7 MB) nor model.so is read into a hash again.
    model = MLP.stat().st_size
    assert weights > 1 << 20 and _CountingSha256.hashed < model + (256 << 10)


def test_a_file_rewritten_with_its_old_times_is_still_hashed_and_caught(tmp_path, monkeypatch, caplog):
    """The identity holds the status-change time, which no call sets back: restoring the
    modification time after a write (as `touch -d` or a careless tool does) does not hide it."""
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    entry = _entry(tmp_path)
    weights = entry / "weights.bin"
    before = weights.stat()
    _flip_middle_byte(weights)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size and weights.stat().st_mtime_ns == before.st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="dlc.cache"):
        assert not _hit(compile_model(MLP))
    assert "weights.bin does not match its sha256" in caplog.text


def test_an_entry_whose_files_moved_is_hashed_and_still_hits(tmp_path, monkeypatch):
    """A cache copied elsewhere (new inodes and times) is verified the old way, by hashing."""
    import shutil

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "first"))
    compile_model(MLP)
    shutil.copytree(tmp_path / "first", tmp_path / "copied")
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "copied"))
    entry = _entry(tmp_path / "copied")
    assert verify_entry(entry) is None
    _flip_middle_byte(entry / "model.so")
    assert verify_entry(entry) == "model.so does not match its sha256 in CHECKSUMS (corrupted or truncated)"


def test_cli_compile_uses_the_cache_unless_passes_are_watched_or_disabled(monkeypatch, tmp_path, capsys):
    from dlc.cli import main

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    out = str(tmp_path / "out")

    def compiled_from_cache(*extra: str) -> bool:
        assert main(["compile", str(MLP), "-o", out, "--time-passes", *extra]) == 0
        return "cache hit" in capsys.readouterr().err

    assert not compiled_from_cache()
    assert compiled_from_cache()
    # Disabling a pass changes the code; printing IR needs the passes to run.
    assert not compiled_from_cache("--disable-pass", "fold-constants")
    assert not compiled_from_cache("--print-ir-after", "dce")


# --- issue 14: an entry over the memory limit is kept; every part of an entry is checked --

def test_a_lower_memory_limit_keeps_a_valid_entry(tmp_path, monkeypatch):
    from dlc.errors import MemoryLimitError

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    entry = _entry(tmp_path)
    monkeypatch.setenv("DLC_MAX_MEMORY", "1MB")  # the MLP's weights alone are 2.7 MB
    with pytest.raises(MemoryLimitError):
        compile_model(MLP)
    assert verify_entry(entry) is None
    monkeypatch.delenv("DLC_MAX_MEMORY")
    assert _hit(compile_model(MLP))


def _discarded_then_rebuilt(tmp_path, caplog, why: str) -> None:
    with caplog.at_level(logging.WARNING, logger="dlc.cache"):
        assert not _hit(compile_model(MLP))
    assert why in caplog.text, caplog.text
    assert _hit(compile_model(MLP))


def test_an_entry_others_can_write_is_not_read(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    os.chmod(_entry(tmp_path), 0o777)
    _discarded_then_rebuilt(tmp_path, caplog, "others may write to it")


def test_a_file_others_can_write_is_not_read(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    os.chmod(_entry(tmp_path) / "model.so", 0o666)
    _discarded_then_rebuilt(tmp_path, caplog, "model.so: others may write to it")


def test_an_entry_linked_to_a_folder_outside_is_not_read(tmp_path, monkeypatch, caplog):
    root = tmp_path / "cache"
    monkeypatch.setenv("DLC_CACHE_DIR", str(root))
    compile_model(MLP)
    entry = _entry(root)
    outside = tmp_path / "outside"
    entry.rename(outside)
    os.chmod(outside, 0o777)
    entry.symlink_to(outside)
    _discarded_then_rebuilt(root, caplog, "it is a link or not a directory")
    assert (outside / "model.so").exists()  # the link went, not what it pointed to


def test_a_fifo_planted_in_an_entry_does_not_hang_the_lookup(tmp_path, monkeypatch, caplog):
    import signal

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    entry = _entry(tmp_path)
    (entry / "model.so").unlink()
    os.mkfifo(entry / "model.so", 0o600)

    def hung(*_):
        raise TimeoutError("the cache lookup hung on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        _discarded_then_rebuilt(tmp_path, caplog, "model.so: it is a link or not a regular file")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- where it lives, its cap, info and clear (issue 17) ----------------------------------------

def test_xdg_cache_home_is_honoured(tmp_path, monkeypatch):
    from dlc.cache import cache_location

    monkeypatch.delenv("DLC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_location() == tmp_path / "xdg" / "dlc"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the spec: relative paths are ignored
    assert cache_location() == Path.home() / ".cache" / "dlc"
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_location() == tmp_path / "mine"


def _fake_entry(root: Path, index: int, size: int, used: float) -> Path:
    entry = root / f"{index:032x}"
    entry.mkdir(parents=True)
    (entry / "weights.bin").write_bytes(b"\0" * size)
    os.utime(entry, (used, used))
    return entry


def test_eviction_removes_least_recently_used_entries_first(tmp_path):
    from dlc.cache import entries, evict

    old, middle, new = (_fake_entry(tmp_path, i, 1000, used) for i, used in ((1, 100.0), (2, 200.0), (3, 300.0)))
    (tmp_path / "peak-x.json").write_text("{}")  # not an entry: never counted nor removed
    assert [path for path, _, _ in entries(tmp_path)] == [old, middle, new]
    assert evict(tmp_path, 2500) == [old]
    assert evict(tmp_path, 10, keep=middle.name) == [new]
    assert middle.exists() and (tmp_path / "peak-x.json").exists()
    assert evict(tmp_path, None) == []


def test_a_hit_marks_its_entry_used_and_a_store_keeps_the_cache_under_its_cap(tmp_path, monkeypatch):
    from dlc.cache import entries

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    compile_model(MLP)
    (first,) = [path for path, _, _ in entries(tmp_path)]
    os.utime(first, (100.0, 100.0))
    assert _hit(compile_model(MLP))
    assert first.stat().st_mtime > 100.0  # used just now
    monkeypatch.setenv("DLC_CACHE_MAX", "1")  # smaller than any entry: only the newest stays
    compile_model(MLP, options=CompileOptions(fusion="none"))
    (only,) = [path for path, _, _ in entries(tmp_path)]
    assert only != first and not first.exists()


def test_cache_max_is_read_as_a_size(monkeypatch):
    from dlc.cache import DEFAULT_MAX_BYTES, max_bytes
    from dlc.errors import DlcError

    monkeypatch.delenv("DLC_CACHE_MAX", raising=False)
    assert max_bytes() == DEFAULT_MAX_BYTES
    monkeypatch.setenv("DLC_CACHE_MAX", "500MiB")
    assert max_bytes() == 500 << 20
    monkeypatch.setenv("DLC_CACHE_MAX", "0")
    assert max_bytes() is None
    monkeypatch.setenv("DLC_CACHE_MAX", "lots")
    with pytest.raises(DlcError, match="DLC_CACHE_MAX='lots' is not a size"):
        max_bytes()


def test_cache_info_and_clear_commands(tmp_path, monkeypatch, capsys):
    from dlc.cli import main

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DLC_CACHE_MAX", "3GiB")
    _fake_entry(tmp_path, 1, 2048, 100.0)
    _fake_entry(tmp_path, 2, 2048, 200.0)
    (tmp_path / "notes.txt").write_text("not the cache's")
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "2, 4 KiB" in out and "3 GiB" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 2 entries (4 KiB)" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_checksums_take_the_manifest_s_hashes_and_hash_only_the_rest(tmp_path, monkeypatch):
    """A store hashes the files its manifest lists once (as they are saved), not again."""
    import hashlib
    import json

    import dlc.runtime.artifact as artifact
    from dlc.cache import _write_checksums

    listed, extra = b"weights" * 1000, b"not in the manifest"
    (tmp_path / "weights.bin").write_bytes(listed)
    (tmp_path / "extra.bin").write_bytes(extra)
    digest = hashlib.sha256(listed).hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"weights.bin": {"size": 7000, "sha256": digest}}}))
    hashed = []
    real = artifact.file_sha256
    monkeypatch.setattr(artifact, "file_sha256", lambda path: (hashed.append(path.name), real(path))[1])
    _write_checksums(tmp_path)
    assert sorted(hashed) == ["extra.bin", "manifest.json"]
    assert verify_entry(tmp_path) is None
    lines = (tmp_path / "CHECKSUMS").read_text().splitlines()[1:]
    assert f"{digest}  weights.bin" in lines and f"{hashlib.sha256(extra).hexdigest()}  extra.bin" in lines
