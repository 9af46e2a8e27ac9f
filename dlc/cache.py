"""The compile cache: a second compile of the same model with the same options loads the artifact.

The key covers everything the result depends on: the model's bytes, the input shapes
and options, dlc's version and the hash of its own source (so a changed compiler never
serves stale code), and the host CPU name and features. Entries are artifact directories
under `$DLC_CACHE_DIR` (default `~/.cache/dlc`); `DLC_CACHE=0` turns the cache off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def cache_dir() -> Path | None:
    if os.environ.get("DLC_CACHE", "1") in ("0", "off", "false"):
        return None
    return Path(os.environ.get("DLC_CACHE_DIR", Path.home() / ".cache" / "dlc"))


@functools.cache
def _source_hash() -> str:
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for package in ("dialects", "passes", "dlc"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(model_bytes: bytes, target: str, options: dict, input_shapes: dict | None) -> str:
    from dlc import __version__
    from dlc.codegen.native import host_cpu

    digest = hashlib.sha256(model_bytes)
    digest.update(json.dumps({"target": target, "options": options, "shapes": input_shapes or {},
                              "version": __version__, "source": _source_hash(),
                              "cpu": host_cpu()}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def lookup(key: str):
    """The cached executable for `key`, or None."""
    directory = cache_dir()
    if directory is None or not (directory / key / "manifest.json").exists():
        return None
    from dlc.runtime import load_artifact

    try:
        return load_artifact(directory / key)
    except Exception:
        shutil.rmtree(directory / key, ignore_errors=True)  # a damaged entry: rebuild it
        return None


def store(key: str, executable) -> None:
    """Save `executable` under `key` atomically (write to a temporary dir, then rename)."""
    directory = cache_dir()
    if directory is None or not hasattr(executable, "save"):
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp-"))
        executable.save(staging)
        os.replace(staging, directory / key)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True) if "staging" in locals() else None
