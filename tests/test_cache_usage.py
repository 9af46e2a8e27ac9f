"""The cache's running size total (`.usage`): a store scans the folder only past the cap."""

from __future__ import annotations

import os

import pytest

import dlc.cache as cache


def _entry(root, index: int, size: int):
    entry = root / f"{index:032x}"
    entry.mkdir(parents=True)
    (entry / "weights.bin").write_bytes(b"\0" * size)
    return entry


def test_a_store_under_the_cap_adds_to_the_total_without_scanning(tmp_path, monkeypatch):
    _entry(tmp_path, 1, 1000)
    cache.evict(tmp_path, 10_000)  # a scan writes the true total
    assert (tmp_path / cache.USAGE_FILE).read_text() == "1000"
    monkeypatch.setattr(cache.random, "randrange", lambda n: 1)  # not the one store in 64 that rescans

    def no_scan(*args, **kwargs):
        raise AssertionError("the folder was scanned")

    monkeypatch.setattr(cache, "entries", no_scan)
    _entry(tmp_path, 2, 500)
    cache._account(tmp_path, 500, 10_000, keep=f"{2:032x}")
    assert (tmp_path / cache.USAGE_FILE).read_text() == "1500"
    with pytest.raises(AssertionError, match="scanned"):  # past the cap: a scan decides what goes
        cache._account(tmp_path, 9000, 10_000, keep=f"{3:032x}")


def test_past_the_cap_the_scan_evicts_and_corrects_a_stale_total(tmp_path, monkeypatch):
    old, new = _entry(tmp_path, 1, 1000), _entry(tmp_path, 2, 1000)
    os.utime(old, (100.0, 100.0))
    (tmp_path / cache.USAGE_FILE).write_text("5")  # stale: concurrent stores missed each other
    monkeypatch.setattr(cache.random, "randrange", lambda n: 1)
    cache._account(tmp_path, 2000, 1500, keep=new.name)
    assert not old.exists() and new.exists()
    assert (tmp_path / cache.USAGE_FILE).read_text() == "1000"


def test_a_missing_or_damaged_total_is_counted_again(tmp_path, monkeypatch):
    _entry(tmp_path, 1, 700)
    monkeypatch.setattr(cache.random, "randrange", lambda n: 1)
    cache._account(tmp_path, 700, 10_000, keep=f"{1:032x}")
    assert (tmp_path / cache.USAGE_FILE).read_text() == "700"
    (tmp_path / cache.USAGE_FILE).write_text("garbage")
    cache._account(tmp_path, 0, 10_000, keep=f"{1:032x}")
    assert (tmp_path / cache.USAGE_FILE).read_text() == "700"
    (tmp_path / cache.USAGE_FILE).unlink()
    os.mkfifo(tmp_path / cache.USAGE_FILE)  # never read (it would hang): the scan replaces it
    cache._account(tmp_path, 0, 10_000, keep=f"{1:032x}")
    assert (tmp_path / cache.USAGE_FILE).read_text() == "700"


def test_clear_removes_the_total(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    _entry(tmp_path, 1, 10)
    cache.evict(tmp_path, 100)
    assert cache.clear() == (1, 10)
    assert not (tmp_path / cache.USAGE_FILE).exists()
