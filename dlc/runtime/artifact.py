"""The artifact on disk (DESIGN.md "The artifact"; docs/artifact.md): reading and checking it.

A directory with `model.o` (ELF object code exporting `void dlc_main(void **buffers, void
*weights, void *context)`, buffers = inputs, outputs, arena), for a large model the other
parts it was split into and compiled in parallel (`model.1.o`, ...;
dlc/codegen/split_module.py), `weights.bin` (64-byte aligned weights at manifest offsets),
`pool.o` (the thread pool, dlc/runtime/thread_pool.py) and `manifest.json`, which lists the
object files with their SHA-256. Every field the loader trusts is checked before anything
is allocated or loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from dlc.errors import ArtifactError
from dlc.runtime import memory_limit

ALIGNMENT = 64  # weights.bin offsets and the arena
MANIFEST_VERSION = 2  # 2: "objects" (the parts of a split module) replaced "model_sha256"
OBJECT_FILE = re.compile(r"model(\.[0-9]+)?\.o")


def aligned_empty(shape, dtype, alignment: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised C-contiguous array whose data pointer is `alignment`-aligned."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = max(count, 1) * dtype.itemsize  # an empty tensor still gets a valid pointer
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype)[:count].reshape(shape)


def aligned_read(path: Path, nbytes: int) -> np.ndarray:
    """The first `nbytes` of the file at `path`, read straight into an aligned buffer (one
    copy of the weights in memory, not two)."""
    out = aligned_empty((nbytes,), np.uint8)
    with path.open("rb") as file:
        read = file.readinto(memoryview(out))
    if read != nbytes:
        raise ArtifactError(f"{path}: expected {nbytes} bytes, read {read}", "the artifact is damaged: compile it again")
    return out


def object_file_names(count: int) -> list[str]:
    """The artifact's object files: `model.o`, then `model.1.o`, ... for a split module."""
    return ["model.o"] + [f"model.{index}.o" for index in range(1, count)]



def read_artifact(directory: str | Path, max_memory: str | int | None = None):
    """(manifest, object files, weights, pool object) of an artifact directory, every part
    checked; one needing more than the memory limit is refused before anything is read."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise ArtifactError(f"{directory}: not a dlc artifact (no manifest.json)",
                            "make one with `dlc compile MODEL.onnx -o DIR`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{manifest_path}: invalid JSON ({error})") from None
    if manifest.get("format") != "dlc-artifact" or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ArtifactError(f"{manifest_path}: not a dlc artifact manifest of version {MANIFEST_VERSION} "
                            f"(found version {manifest.get('manifest_version')!r})",
                            "compile the model again with this dlc: `dlc compile MODEL.onnx -o DIR`")
    _check_manifest(manifest, manifest_path, max_memory)
    files = [entry["file"] for entry in manifest["objects"] + ([manifest["pool"]] if "pool" in manifest else [])]
    for name in (*files, "weights.bin"):
        if not (directory / name).exists():
            raise ArtifactError(f"{directory}: incomplete artifact, {name} is missing")
    size = (directory / "weights.bin").stat().st_size
    if size != manifest["weights_size"]:
        raise ArtifactError(f"{directory}/weights.bin: expected {manifest['weights_size']} bytes, "
                            f"found {size}", "the artifact is damaged: compile it again")
    weights = aligned_read(directory / "weights.bin", manifest["weights_size"])
    objects = [_read_verified(directory, entry) for entry in manifest["objects"]]
    pool_object = _read_verified(directory, manifest["pool"]) if "pool" in manifest else None
    return manifest, objects, weights, pool_object


def _read_verified(directory: Path, entry: dict) -> bytes:
    """An object file the manifest lists, checked against its SHA-256: linking damaged
    object code would crash the process."""
    code = (directory / entry["file"]).read_bytes()
    if hashlib.sha256(code).hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{directory}/{entry['file']}: damaged (its SHA-256 differs from the manifest's)",
                            "compile the model again with `dlc compile`")
    return code


def _check_manifest(manifest: dict, path: Path, max_memory: str | int | None) -> None:
    """Fields the loader trusts have the right types, and the memory they claim fits the limit."""
    def bad(field: str) -> ArtifactError:
        return ArtifactError(f"{path}: field '{field}' is missing or malformed",
                             "the artifact is damaged: compile the model again with `dlc compile`")

    objects = manifest.get("objects")
    if (not isinstance(objects, list) or not objects
            or not all(isinstance(entry, dict) and isinstance(entry.get("file"), str)
                       and OBJECT_FILE.fullmatch(entry["file"]) and isinstance(entry.get("sha256"), str)
                       for entry in objects)):
        raise bad("objects")  # names are checked: a manifest must not point outside its directory
    pool = manifest.get("pool")
    if pool is not None and not (isinstance(pool, dict) and pool.get("file") == "pool.o"
                                 and isinstance(pool.get("sha256"), str)):
        raise bad("pool")
    for field in ("arena_size", "weights_size"):
        if not isinstance(manifest.get(field), int) or isinstance(manifest[field], bool) or manifest[field] < 0:
            raise bad(field)
    tensors = 0
    for field in ("inputs", "outputs"):
        specs = manifest.get(field)
        if not isinstance(specs, list):
            raise bad(field)
        for spec in specs:
            try:
                shape = [int(d) for d in spec["shape"]]
                itemsize = np.dtype(spec["dtype"]).itemsize
                str(spec["name"])
            except (KeyError, TypeError, ValueError):
                raise bad(field) from None
            if any(d < 0 for d in shape):
                raise bad(field)
            tensors += int(np.prod(shape, dtype=object)) * itemsize
    memory_limit.check(tensors + manifest["arena_size"] + manifest["weights_size"],
                       memory_limit.resolve_limit(max_memory), f"running the artifact {path.parent}",
                       {"inputs and outputs": tensors, "weights": manifest["weights_size"],
                        "intermediates (memory plan)": manifest["arena_size"]})


def write_artifact(directory: str | Path, manifest: dict, objects, weights: np.ndarray,
                   pool_object: bytes | None) -> None:
    """Write an artifact directory (what `read_artifact` reads back)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.iterdir():  # parts of an earlier, larger compile into this directory
        if OBJECT_FILE.fullmatch(stale.name) and stale.name not in {e["file"] for e in manifest["objects"]}:
            stale.unlink()
    for entry, code in zip(manifest["objects"], objects, strict=True):
        (directory / entry["file"]).write_bytes(code)
    if pool_object is not None and "pool" in manifest:
        (directory / manifest["pool"]["file"]).write_bytes(pool_object)
    weights.tofile(directory / "weights.bin")
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
