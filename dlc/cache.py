"""The compile cache: a second compile of the same model with the same options loads the artifact.

The key covers everything the result depends on: the model's bytes, the input shapes
and options, dlc's version and the hash of its own source (so a changed compiler never
serves stale code), and the host CPU name and features. Entries are artifact directories
under `$DLC_CACHE_DIR` (default `$XDG_CACHE_HOME/dlc`, else `~/.cache/dlc`); `DLC_CACHE=0`
turns the cache off.

The cache is bounded (issue 17: a ResNet-50 entry is 53 MB, and every change of dlc's source
makes new keys): the least recently used entries go until the entries fit `$DLC_CACHE_MAX`
(default 4 GiB, `0` for no cap). A hit marks its entry used (its mtime), as ccache does.
`dlc cache info` and `dlc cache clear` show and empty it. A store adds its entry's size to a
running total in `.usage` and scans the folder only when that total passes the cap (or one
store in 64, or when `.usage` is missing), so a store costs the same with 10 entries as with
10,000: a scan on every store took 0.2 s per compile in a test run with 2,000 entries.
Concurrent stores may each miss the other's addition; the next scan sets the total right.

The cache holds code this process will execute, so (issue 7): the directory is user-only
(0700) and every file in it 0600, whatever the umask; each entry carries `CHECKSUMS`, the
sha256 of each of its files, written at store and verified at every lookup (by hashing,
or, for a file whose identity is the one `STAMPS` recorded at store, by its identity alone:
check_entry). A corrupted,
truncated, incomplete or unchecksummed (older) entry is never loaded: it is removed, a
warning is logged (`dlc.cache`), and the model is compiled again. So is an entry that is a
link, or that others could have written (not ours, or group/world-writable), or that holds
anything but regular files (a FIFO would hang the lookup). An entry refused by the memory
limit is intact: it stays, and this compile goes without the cache.

A hit of `dlc compile`/`dlc run` imports neither onnx nor xDSL (issue 16): the command line
computes the key itself (dlc/cli.py `_cache_key`), `dlc compile` copies the entry's files
(`copy_entry`), and the CPU in the key is read from /proc/cpuinfo (`host_identity`), not LLVM.

Beside the entries, `.objects/` keeps compiled objects by the hash of what they were compiled
from (`kept_object`/`keep_object`: the C API's object, and each LLVM part of a model, issue 16),
so a compile with other options, or of another model that shares kernels, compiles only what
is new. Each file carries the sha256 of its object, checked at every read; the objects count
in the cap (evicted least recently used with the entries) and `clear` removes them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
import stat
import tempfile
from pathlib import Path

from dlc.errors import ArtifactError, DlcError, MemoryLimitError

DEFAULT_MAX_BYTES = 4 << 30
MAX_VARIABLE = "DLC_CACHE_MAX"
USAGE_FILE = ".usage"  # the entries' running total in bytes, as decimal text
SCAN_ONE_STORE_IN = 64  # bounds how long missed concurrent additions can go uncounted


def cache_dir() -> Path | None:
    if os.environ.get("DLC_CACHE", "1") in ("0", "off", "false"):
        return None
    return cache_location()


def cache_location() -> Path:
    """Where the cache lives, on or off: $DLC_CACHE_DIR, else the XDG base directory spec's
    $XDG_CACHE_HOME/dlc (an absolute path only, as the spec says), else ~/.cache/dlc."""
    if os.environ.get("DLC_CACHE_DIR"):
        return Path(os.environ["DLC_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "dlc"


def max_bytes() -> int | None:
    """The cap on the entries' total size: $DLC_CACHE_MAX ('4GiB', '500MB', bytes; 0: none)."""
    text = os.environ.get(MAX_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    if text in ("0", "none", "off"):
        return None
    from dlc.runtime.memory_limit import parse_size

    try:
        return parse_size(text, f"${MAX_VARIABLE}")
    except DlcError as error:
        raise DlcError(f"${MAX_VARIABLE}={text!r} is not a size", "write it as 4GiB, 500MB or a number of "
                       "bytes (0: no cap)") from error


@functools.cache
def _source_hash() -> str:
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for package in ("dialects", "passes", "dlc"):
        # The C API's source and header go into model.so too (dlc/codegen/link.py).
        for path in sorted(p for p in (root / package).rglob("*") if p.suffix in (".py", ".c", ".h")):
            digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def host_identity() -> list:
    """The CPU the host's code is compiled for, as the key holds it: Linux's description of
    the first CPU (vendor, family, model, stepping, name, flags: LLVM's host CPU name and
    features follow from them) and the llvmlite release whose LLVM reads them. Read from
    /proc/cpuinfo rather than asked of LLVM: importing llvmlite's binding took 0.07 s of the
    0.2 s a cache hit costs as a process (issue 16). Elsewhere, LLVM's name and features."""
    import platform

    import llvmlite

    fields = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags", "Features",
              "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "CPU revision")
    found = {}
    with contextlib.suppress(OSError, UnicodeDecodeError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break  # the first CPU only: the others are the same chip
                name, _, value = line.partition(":")
                if name.strip() in fields:
                    found[name.strip()] = value.strip()
    if "flags" not in found and "Features" not in found:
        from dlc.runtime.mcjit import host_cpu

        found = {"llvm": list(host_cpu())}
    return [platform.machine(), llvmlite.__version__, found]


def cache_key(model_bytes: bytes, target: str, options: dict, input_shapes: dict | None) -> str:
    from dlc.runtime.host import host_caches
    from dlc.version import __version__

    digest = hashlib.sha256(model_bytes)
    digest.update(json.dumps({"target": target, "options": options, "shapes": input_shapes or {},
                              "version": __version__, "source": _source_hash(),
                              "cpu": host_identity(), "caches": host_caches(),
                              # What picks the linker (dlc/codegen/link.py find_linker), read
                              # here without importing it: that module uses the cache.
                              "linker": [os.environ.get("DLC_LINKER", ""), shutil.which("cc"),
                                         shutil.which("ld")]}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


CHECKSUMS = "CHECKSUMS"
CHECKSUMS_HEADER = "dlc-cache-entry 1"
STAMPS = "STAMPS"  # the identity of each file once hashed: a hit then hashes none (check_entry)
STAMPS_HEADER = "dlc-cache-stamps 1"
DIRECTORY_MODE, FILE_MODE = 0o700, 0o600
_log = logging.getLogger("dlc.cache")


MAX_CHECKSUMS_BYTES = 1 << 16


def _write_checksums(entry: Path) -> None:
    """CHECKSUMS: a header, then `sha256  name` for every file of the entry (sorted). A file
    the entry's manifest lists takes the sha256 the save just computed from the bytes it
    wrote (artifact.py `write_artifact`); only the others are read back and hashed (a store read
    and hashed ResNet-50's 46 MB of weights a second time, ~50 ms)."""
    from dlc.runtime.artifact import MANIFEST_FILE, file_sha256

    try:
        files = json.loads((entry / MANIFEST_FILE).read_text())["files"]
        listed = {name: info["sha256"] for name, info in files.items()
                  if re.fullmatch("[0-9a-f]{64}", str(info["sha256"]))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        listed = {}
    lines = [CHECKSUMS_HEADER] + [
        f"{listed.get(path.name) or file_sha256(path)}  {path.name}"
        for path in sorted(entry.iterdir())
        if path.name != CHECKSUMS
    ]
    (entry / CHECKSUMS).write_text("\n".join(lines) + "\n")


def _write_stamps(staging: Path) -> None:
    """STAMPS: the identity (`file_identity`: device, inode, size, times) of every other file
    of an entry being stored, once its bytes are final (after the last chmod, which changes the
    status-change time). The store hashed those bytes as it wrote them (CHECKSUMS), and the
    entry is renamed into place after this: a hit whose files still have these identities
    need not hash them again."""
    from dlc.runtime.artifact import file_identity

    lines = [STAMPS_HEADER] + [f"{' '.join(map(str, file_identity(path.lstat())))}  {path.name}"
                               for path in sorted(staging.iterdir())]
    with open(os.open(staging / STAMPS, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE), "w") as file:
        file.write("\n".join(lines) + "\n")


def _read_stamps(entry: Path) -> dict[str, tuple]:
    """The identities STAMPS records ({} when it is missing or malformed: then every file is
    hashed)."""
    from dlc.runtime.artifact import read_regular_file

    if not (entry / STAMPS).exists():
        return {}
    try:
        header, *lines = read_regular_file(entry / STAMPS, MAX_CHECKSUMS_BYTES).decode().splitlines()
        if header != STAMPS_HEADER:
            return {}
        stamps = {}
        for line in lines:
            numbers, _, name = line.partition("  ")
            stamps[name] = tuple(int(number) for number in numbers.split())
        return stamps
    except (ArtifactError, UnicodeDecodeError, ValueError):
        return {}


def verify_entry(entry: Path) -> str | None:
    """None when every file of `entry` matches CHECKSUMS; else what is wrong with it."""
    return check_entry(entry)[0]


def check_entry(entry: Path) -> tuple[str | None, dict[str, tuple]]:
    """(what is wrong with `entry`, or None; the identities of its files, each proven to hold
    the bytes CHECKSUMS lists). A file whose identity is the one STAMPS recorded is not
    hashed; one whose identity moved (a copied cache) is, at every hit, as before STAMPS.
    VGG19's entry (523 MB of weights) took 0.3 s to hash at every hit, twice (here and while
    loading), for a hit whose budget is 0.3 s in all (issue 16). An unchanged identity proves
    no write, truncation, chmod or replacement since the store hashed the bytes; it cannot see
    a disk corrupt a block beneath the file system, which the hash could."""
    from dlc.runtime.artifact import file_identity, identified_sha256, read_regular_file

    problem = _untrusted(entry, stat.S_ISDIR) or next(
        (
            f"{path.name}: {why}"
            for path in entry.iterdir()
            if (why := _untrusted(path, stat.S_ISREG))
        ),
        None,
    )
    if problem:
        return problem, {}
    if not (entry / CHECKSUMS).exists():
        return f"no {CHECKSUMS} file (written by an older dlc, or an interrupted store)", {}
    try:
        header, *lines = (
            read_regular_file(entry / CHECKSUMS, MAX_CHECKSUMS_BYTES).decode().splitlines()
        )
    except (ArtifactError, UnicodeDecodeError) as error:
        return f"unreadable {CHECKSUMS} ({error})", {}
    if header != CHECKSUMS_HEADER:
        return f"{CHECKSUMS} does not start with '{CHECKSUMS_HEADER}'", {}
    expected = {}
    for line in lines:
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or "/" in name:
            return f"malformed {CHECKSUMS} line {line!r}", {}
        expected[name] = digest
    present = {path.name for path in entry.iterdir() if path.name not in (CHECKSUMS, STAMPS)}
    if present != set(expected):
        missing, extra = sorted(set(expected) - present), sorted(present - set(expected))
        return f"files differ from {CHECKSUMS} (missing {missing}, unexpected {extra})", {}
    stamps, identities = _read_stamps(entry), {}
    with contextlib.suppress(OSError):
        if stamps.get(CHECKSUMS) != file_identity((entry / CHECKSUMS).lstat()):
            stamps = {}  # the digests themselves were rewritten: hash every file against them
    for name, digest in sorted(expected.items()):
        try:
            identity = file_identity((entry / name).lstat())
        except OSError as error:  # removed meanwhile (a concurrent eviction)
            return f"{name} is unreadable ({error})", {}
        if stamps.get(name) == identity:
            identities[name] = identity
            continue
        try:
            identities[name], actual = identified_sha256(entry / name)
        except ArtifactError as error:
            return f"{name} is unreadable ({error})", {}
        if actual != digest:
            return f"{name} does not match its sha256 in {CHECKSUMS} (corrupted or truncated)", {}
    return None, identities


def _untrusted(path: Path, is_kind=None) -> str | None:
    """Why `path` (the cache, an entry or a file in one) may have been written by someone
    else, or None. With `is_kind` (the file type it must be) a link is refused; without, as
    for the cache folder itself (which may be a link the user made), it is followed.

    A checksum proves an entry intact, not who wrote it: each part must be ours and
    writable by no one else (store() makes it so when it can).
    """
    info = path.stat() if is_kind is None else path.lstat()
    if is_kind is not None and not is_kind(info.st_mode):
        return f"it is a link or not a {'directory' if is_kind is stat.S_ISDIR else 'regular file'}"
    if not hasattr(os, "getuid"):
        return None
    if info.st_uid != os.getuid():
        return f"it belongs to uid {info.st_uid}, not to this user"
    if info.st_mode & 0o022:
        return f"others may write to it (mode {info.st_mode & 0o777:o})"
    return None


def lookup(key: str):
    """The cached executable for `key`, or None; a damaged entry is removed, never loaded."""
    directory = cache_dir()
    if directory is None or not os.path.lexists(directory / key):
        return None
    from dlc.runtime import load_artifact

    untrusted = _untrusted(directory)
    if untrusted is not None:
        _log.warning(
            "dlc cache: not reading %s: %s; compiling (a store makes it 0700 if this user owns it)",
            directory,
            untrusted,
        )
        return None
    entry = directory / key
    problem, unchanged = check_entry(entry)
    if problem is None:
        try:
            executable = load_artifact(entry, unchanged=unchanged)
            with contextlib.suppress(OSError):
                os.utime(entry)  # used now: the last to go when the cache is over its cap
            return executable
        except MemoryLimitError as error:  # intact: a later compile with a higher limit uses it
            _log.info("dlc cache: entry %s is above this compile's memory limit (%s)", entry, error)
            return None
        except Exception as error:  # noqa: BLE001 - intact but unloadable: rebuild, whatever the cause
            problem = f"it does not load ({error})"
    _log.warning("dlc cache: discarding entry %s: %s; compiling again", entry, problem)
    if entry.is_symlink() or not entry.is_dir():
        entry.unlink()  # a link itself, never what it points to
    else:
        shutil.rmtree(entry, ignore_errors=True)
    return None


def copy_entry(key: str, out: Path, max_memory: str | int | None = None) -> bool:
    """`dlc compile`'s cache hit: the entry's files into `out`, as saving its executable
    writes them (the entry is what `save` wrote), without loading the code or the weights;
    False when there is no entry this can copy (no key, or one damaged, untrusted or above
    the memory limit): the compile then looks it up as `lookup` does, which says why.

    Copied rather than loaded and saved again: loading ResNet-50's entry and saving it took
    0.08 + 0.07 s, half of what is left of a hit once onnx and xDSL are not imported (issue 16)."""
    from dlc.runtime.artifact import (
        LIBRARY_FILE,
        MANIFEST_FILE,
        OBJECT_FILE,
        POOL_FILE,
        _check_memory,
        _parse_manifest,
        _put_in_place,
        check_manifest,
        code_files,
    )

    directory = cache_dir()
    if directory is None or not os.path.lexists(directory / key) or _untrusted(directory) is not None:
        return False
    entry = directory / key
    try:
        if verify_entry(entry) is not None:
            return False
        manifest = _parse_manifest(entry / MANIFEST_FILE)
        check_manifest(manifest, entry / MANIFEST_FILE)
        _check_memory(manifest, entry / MANIFEST_FILE, max_memory)
    except (OSError, DlcError):  # ArtifactError, MemoryLimitError
        return False
    out.mkdir(parents=True, exist_ok=True)
    names = code_files(manifest)
    for stale in out.iterdir():  # code of an earlier compile into `out`, as write_artifact removes it
        if (OBJECT_FILE.fullmatch(stale.name) or stale.name in (POOL_FILE, LIBRARY_FILE)) \
                and stale.name not in names and not (stale.name == POOL_FILE and "pool" in manifest):
            stale.unlink()
    # The manifest last, each file put in the old one's place (a process that has the old
    # model.so mapped keeps its pages), as write_artifact does (not renamed over it: ext4 then
    # writes the new file to disk at once, dlc/runtime/artifact.py `_put_in_place`).
    for name in sorted(manifest["files"]) + [MANIFEST_FILE]:
        partial = out / f".{name}.partial"
        try:
            shutil.copyfile(entry / name, partial)
            _put_in_place(partial, out / name)
        except OSError:  # the entry evicted meanwhile, or `out` not writable: the compile says
            with contextlib.suppress(OSError):
                partial.unlink()
            return False
    with contextlib.suppress(OSError):
        os.utime(entry)  # used now: the last to go when the cache is over its cap
    return True


def _make_private_directory(directory: Path) -> None:
    """`directory` (and missing parents) exists and is 0700, regardless of the umask.

    One that others could write to is emptied as well: its entries may not be ours.
    (chmod raises if it belongs to another user: then nothing is stored.)
    """
    directory.mkdir(parents=True, exist_ok=True)
    loose = _untrusted(directory) is not None
    os.chmod(directory, DIRECTORY_MODE)
    if loose:
        for child in directory.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def store(key: str, executable) -> None:
    """Save `executable` under `key` atomically (write to a temporary dir, then rename)."""
    directory = cache_dir()
    if directory is None or not hasattr(executable, "save"):
        return
    staging = None
    try:
        _make_private_directory(directory)
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp-"))  # mkdtemp: 0700
        executable.save(staging)
        _write_checksums(staging)
        for path in staging.iterdir():
            os.chmod(path, FILE_MODE)
        _write_stamps(staging)  # after the chmods: each changes its file's identity
        os.chmod(staging, DIRECTORY_MODE)
        added = sum(f.lstat().st_size for f in staging.iterdir())
        os.replace(staging, directory / key)
    except OSError:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        return
    _account(directory, added, max_bytes(), keep=key)


def _account(directory: Path, added: int, limit: int | None, keep: str) -> None:
    """Add a stored entry's bytes to the running total; scan and evict only when it passes `limit`."""
    if limit is None:
        return
    usage = directory / USAGE_FILE
    try:  # a regular file only: a FIFO planted there would hang the read
        total = int(usage.read_text()) + added if stat.S_ISREG(usage.lstat().st_mode) else None
    except (OSError, ValueError):
        total = None  # missing or torn: count from the entries themselves
    if total is None or total > limit or random.randrange(SCAN_ONE_STORE_IN) == 0:
        evict(directory, limit, keep=keep)
        return
    _write_usage(directory, total)


def _write_usage(directory: Path, total: int) -> None:
    staging = directory / f"{USAGE_FILE}.{os.getpid()}"
    with contextlib.suppress(OSError):
        with open(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE), "w") as file:
            file.write(str(total))
        os.replace(staging, directory / USAGE_FILE)


# --- kept objects: compiled code by the hash of its source --------------------------------------

OBJECTS_DIR = ".objects"
OBJECT_HEADER = b"dlc-object 1\n"  # then the object's sha256 in hex, a newline, the object
MAX_OBJECT_BYTES = 1 << 30


def _object_path(name: str) -> tuple[Path, Path] | None:
    directory = cache_dir()
    return None if directory is None else (directory, directory / OBJECTS_DIR / f"{name}.o")


def kept_object(name: str) -> bytes | None:
    """The object kept under `name` (a hex digest of what it was compiled from), or None.

    Code this process will run: read only from a private cache, a regular file of ours whose
    sha256 matches; anything else (truncated, foreign, a link or a FIFO) is ignored and, when
    it is a file of ours, removed so that the next store replaces it.
    """
    from dlc.runtime.artifact import read_regular_file

    where = _object_path(name)
    if where is None or not os.path.lexists(where[1]):
        return None
    directory, path = where
    try:
        problem = (_untrusted(directory) or _untrusted(path.parent, stat.S_ISDIR)
                   or _untrusted(path, stat.S_ISREG))
        if problem is None:
            data = read_regular_file(path, MAX_OBJECT_BYTES + len(OBJECT_HEADER) + 65)
            digest, code = data[len(OBJECT_HEADER):len(OBJECT_HEADER) + 64], data[len(OBJECT_HEADER) + 65:]
            if data.startswith(OBJECT_HEADER) and hashlib.sha256(code).hexdigest().encode() == digest:
                with contextlib.suppress(OSError):
                    os.utime(path)  # used now: the last to go when the cache is over its cap
                return code
            problem = "its object does not match its sha256 (corrupted or truncated)"
    except (OSError, ArtifactError) as error:
        problem = f"it is unreadable ({error})"
    _log.warning("dlc cache: ignoring kept object %s: %s; compiling again", path, problem)
    with contextlib.suppress(OSError):
        if _untrusted(path.parent, stat.S_ISDIR) is None and path.lstat().st_uid == getattr(os, "getuid", int)():
            path.unlink()  # the file or link itself, never what it points to
    return None


def keep_object(name: str, code: bytes) -> None:
    """Keep `code` under `name`: atomically (a reader never sees half a file), user-only."""
    where = _object_path(name)
    if where is None:
        return
    directory, path = where
    try:
        _make_private_directory(directory)
        _make_private_directory(path.parent)
        staging = path.parent / f".tmp-{path.name}.{os.getpid()}"
        with open(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE), "wb") as file:
            file.write(OBJECT_HEADER + hashlib.sha256(code).hexdigest().encode() + b"\n" + code)
        os.replace(staging, path)
    except OSError:
        return
    _account(directory, path.stat().st_size, max_bytes(), keep=path.name)


def _kept_objects(directory: Path) -> list[tuple[Path, int, float]]:
    found = []
    with contextlib.suppress(OSError):
        for path in (directory / OBJECTS_DIR).glob("*.o"):
            with contextlib.suppress(OSError):
                info = path.lstat()
                if stat.S_ISREG(info.st_mode):
                    found.append((path, info.st_size, info.st_mtime))
    return found


# --- size cap, info, clear ----------------------------------------------------------------------

def _is_entry(path: Path) -> bool:
    """An entry this cache made: a folder named by a key, or a store's staging folder."""
    name = path.name
    is_key = len(name) == 32 and all(c in "0123456789abcdef" for c in name)
    return (is_key or name.startswith(".tmp-")) and path.is_dir() and not path.is_symlink()


def entries(directory: Path | None = None) -> list[tuple[Path, int, float]]:
    """(entry, bytes, last use) of every entry, least recently used first."""
    directory = cache_location() if directory is None else directory
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if not _is_entry(path):
            continue
        try:
            size = sum(f.lstat().st_size for f in path.iterdir())
            found.append((path, size, path.stat().st_mtime))
        except OSError:
            continue  # removed by a concurrent eviction
    return sorted(found, key=lambda item: item[2])


def evict(directory: Path, limit: int | None, keep: str | None = None) -> list[Path]:
    """Remove least recently used entries until the rest fit `limit` bytes; never `keep`."""
    if limit is None:
        return []
    # The kept objects count too, and go least recently used first with the entries.
    every = sorted(entries(directory) + _kept_objects(directory), key=lambda item: item[2])
    total = sum(size for _, size, _ in every)
    removed = []
    for path, size, _ in every:
        if total <= limit:
            break
        if path.name == keep or path.name.startswith(".tmp-"):
            continue
        if path.parent.name == OBJECTS_DIR:
            with contextlib.suppress(OSError):
                path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)
        total -= size
        removed.append(path)
    _write_usage(directory, total)
    if removed:
        _log.info("dlc cache: evicted %d least recently used entries (cap %d bytes)", len(removed), limit)
    return removed


def info() -> dict:
    """What `dlc cache info` prints: where, whether on, how many entries, their size, the cap."""
    directory = cache_location()
    found, kept = entries(directory), _kept_objects(directory)
    return {"directory": str(directory), "enabled": cache_dir() is not None, "entries": len(found),
            "bytes": sum(size for _, size, _ in found), "max_bytes": max_bytes(),
            "objects": len(kept), "object_bytes": sum(size for _, size, _ in kept)}


def clear() -> tuple[int, int]:
    """Remove every entry (and the measured peaks stored beside them): (entries, bytes) freed.
    Only what this cache writes is touched, so a DLC_CACHE_DIR pointing at a folder of other
    files loses none of them."""
    directory = cache_location()
    found = entries(directory)
    for path, _, _ in found:
        shutil.rmtree(path, ignore_errors=True)
    if directory.is_dir():
        # .c-object-*.o: the C API's object as earlier versions kept it (now in OBJECTS_DIR).
        for stale in [*directory.glob("peak-*.json"), *directory.glob(".c-object-*.o"), directory / USAGE_FILE]:
            with contextlib.suppress(OSError):
                stale.unlink()
        objects = directory / OBJECTS_DIR
        if objects.is_dir() and not objects.is_symlink():
            shutil.rmtree(objects, ignore_errors=True)
    return len(found), sum(size for _, size, _ in found)
