"""Mutated artifacts (`--artifacts`, issue 14): compile a few small generated models, save each
artifact, then damage copies of it - manifest fields (types, values, sizes, extra and missing
fields, with the integrity hash recomputed or not), raw manifest bytes, object-file headers and
bytes (with the manifest's size and SHA-256 recomputed, so the mutation reaches the ELF
checks), weights.bin truncated, extended or flipped, files replaced by FIFOs, directories,
symlinks or nothing - and load+run each in a child process. A clean load+run, or an
ArtifactError/DlcError, is fine; a signal, a hang (timeout), any other exception, or `dlc run
DIR` failing with a traceback or an exit code other than 0/1 is a finding. A finding's
mutated artifact is kept under --corpus/artifacts/ with a json saying how it was made.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
OBJECTS = ("model.o", "pool.o")
WEIRD = ["", "x", -1, 0, 1, 2 ** 31, 2 ** 63, -(2 ** 63), 2 ** 64 + 1, 1e308, -0.5, True, False, None,
         [], {}, [None], {"a": 1}, "float32", "../../etc/passwd", "\u0000", "A" * 10000, 3.5]


@dataclass
class ArtifactSummary:
    cases: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    findings: Counter = field(default_factory=Counter)
    saved: list = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{self.cases} mutated artifacts in {self.seconds:.0f} s; {sum(self.findings.values())} failing "
                 f"(outcomes: {dict(sorted(self.outcomes.items()))})"]
        lines += [f"  {kind}: {count}" for kind, count in sorted(self.findings.items())]
        lines += [f"  saved {p}" for p in self.saved]
        return "\n".join(lines)


# --- the mutations -------------------------------------------------------------------------------

class NotARegularFile(OSError):
    """A second mutation met a file the first made a FIFO, a directory or a device link."""


def _read(path: Path) -> bytes:
    """path's bytes, refusing anything but a regular file: a FIFO an earlier mutation left would
    block the campaign's own read forever (no writer), /dev/zero never end."""
    if path.is_symlink() or not path.is_file():
        raise NotARegularFile(f"{path.name} is not a regular file")
    return path.read_bytes()


def _write(path: Path, data: bytes) -> None:
    """Replace path's bytes, where it is a regular file or absent (a FIFO would block the write)."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise NotARegularFile(f"{path.name} is not a regular file")
    path.write_bytes(data)


def _manifest(directory: Path) -> dict:
    return json.loads(_read(directory / "manifest.json"))


def _write_manifest(directory: Path, manifest: dict, rehash: bool) -> None:
    from dlc.runtime.artifact import manifest_integrity

    if rehash:
        manifest["integrity"] = manifest_integrity(manifest)
    _write(directory / "manifest.json", json.dumps(manifest).encode())


def _rehash(directory: Path, name: str) -> None:
    """List `name`'s current size and SHA-256 (an attacker's fix-up), then the integrity."""
    manifest = _manifest(directory)
    data = _read(directory / name)
    manifest.setdefault("files", {})[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _write_manifest(directory, manifest, True)


def _paths(value, prefix=()):
    """Every (path, value) in a JSON document."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def mutate_manifest_field(directory: Path, rng: np.random.Generator) -> str:
    manifest = _manifest(directory)
    paths = [(p, v) for p, v in _paths(manifest) if p and p[0] != "cpu_flags"]
    path, value = paths[int(rng.integers(0, len(paths)))]
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    how = int(rng.integers(0, 6))
    if how == 0 and isinstance(parent, dict):
        del parent[key]
        what = "deleted"
    elif how == 1 and isinstance(value, (int, float)) and not isinstance(value, bool):
        new = value + int(rng.choice([-1, 1, 7, -7])) if rng.random() < 0.5 else \
            [0, -1, 2 ** 62, -(2 ** 62), value * 2, 2 ** 40][int(rng.integers(0, 6))]
        parent[key] = new
        what = f"{value!r} -> {new!r}"
    elif how == 2 and isinstance(value, dict):
        value[str(rng.choice(["extra", "size", "name", "shape", "dtype", "offset"]))] = WEIRD[
            int(rng.integers(0, len(WEIRD)))]
        what = "extra field"
    elif how == 3 and isinstance(value, list) and value:
        choice = int(rng.integers(0, 3))
        parent[key] = [] if choice == 0 else value + value[:1] if choice == 1 else value[::-1]
        what = ["emptied", "duplicated an entry", "reversed"][choice]
    else:
        new = WEIRD[int(rng.integers(0, len(WEIRD)))]
        parent[key] = new
        what = f"-> {new!r}"[:60]
    rehash = bool(rng.random() < 0.8)
    _write_manifest(directory, manifest, rehash)
    return f"manifest {'/'.join(map(str, path))}: {what}" + (" (integrity recomputed)" if rehash else "")


def mutate_manifest_bytes(directory: Path, rng: np.random.Generator) -> str:
    path = directory / "manifest.json"
    data = bytearray(_read(path))
    how = int(rng.integers(0, 5))
    if how == 0:
        cut = int(rng.integers(0, len(data)))
        _write(path, bytes(data[:cut]))
        return f"manifest.json truncated to {cut} bytes"
    if how == 1:
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        _write(path, bytes(data))
        return "manifest.json: random bytes"
    if how == 2:
        depth = int(rng.choice([1000, 100000]))
        _write(path, ("[" * depth + "]" * depth).encode())
        return f"manifest.json: nested {depth} deep"
    if how == 3:
        _write(path, b"\xff\xfe" + bytes(data))
        return "manifest.json: not UTF-8"
    _write(path, (json.dumps([1, 2, 3]) if rng.random() < 0.5 else "null").encode())
    return "manifest.json: not an object"


def _elf_fields(data: bytes) -> dict[str, tuple[int, int]]:
    """Offset and width of ELF64 header fields, and of the section headers' offset/size fields."""
    fields = {"e_type": (16, 2), "e_machine": (18, 2), "e_version": (20, 4), "e_shoff": (40, 8),
              "e_ehsize": (52, 2), "e_shentsize": (58, 2), "e_shnum": (60, 2), "e_shstrndx": (62, 2),
              "EI_CLASS": (4, 1), "EI_DATA": (5, 1), "e_phoff": (32, 8), "e_phnum": (56, 2)}
    if len(data) >= 64:
        shoff = int.from_bytes(data[40:48], "little")
        shnum = int.from_bytes(data[60:62], "little")
        for i in range(min(shnum, 64)):
            base = shoff + 64 * i
            if base + 64 <= len(data):
                fields.update({f"section{i}.sh_type": (base + 4, 4), f"section{i}.sh_offset": (base + 24, 8),
                               f"section{i}.sh_size": (base + 32, 8), f"section{i}.sh_link": (base + 40, 4),
                               f"section{i}.sh_info": (base + 44, 4), f"section{i}.sh_entsize": (base + 56, 8),
                               f"section{i}.sh_name": (base, 4)})
    return fields


def mutate_object(directory: Path, rng: np.random.Generator) -> str:
    name = [n for n in OBJECTS if (directory / n).exists()][int(rng.integers(0, 2)) % 2] \
        if (directory / "pool.o").exists() else "model.o"
    path = directory / name
    data = bytearray(_read(path))
    how = int(rng.integers(0, 4))
    if how <= 1:
        fields = _elf_fields(bytes(data))
        field_name = list(fields)[int(rng.integers(0, len(fields)))]
        offset, width = fields[field_name]
        top = (1 << (8 * width)) - 1
        value = int(rng.choice([0, 1, top, top >> 1, int.from_bytes(data[offset:offset + width], "little") + 1,
                                len(data), len(data) - 1, int(rng.integers(0, 1 << min(31, 8 * width)))])) & top
        data[offset:offset + width] = value.to_bytes(width, "little")
        what = f"{name} {field_name} = {value:#x}"
    elif how == 2:
        count = int(rng.integers(1, 9))
        for _ in range(count):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        what = f"{name}: {count} random bytes"
    else:
        cut = int(rng.integers(0, len(data)))
        data = data[:cut]
        what = f"{name} truncated to {cut} bytes"
    _write(path, bytes(data))
    rehash = bool(rng.random() < 0.85)
    if rehash:
        _rehash(directory, name)
    return what + (" (hashes recomputed)" if rehash else "")


def mutate_weights(directory: Path, rng: np.random.Generator) -> str:
    path = directory / "weights.bin"
    data = bytearray(_read(path)) if path.exists() or path.is_symlink() else bytearray()
    how = int(rng.integers(0, 3))
    if how == 0:
        data = data[:int(rng.integers(0, len(data) + 1))]
        what = f"weights.bin truncated to {len(data)} bytes"
    elif how == 1:
        data += bytes(int(rng.integers(1, 4096)))
        what = f"weights.bin extended to {len(data)} bytes"
    else:
        if data:
            data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        what = "weights.bin: a bit flipped"
    _write(path, bytes(data))
    rehash = bool(rng.random() < 0.5)
    if rehash:
        manifest = _manifest(directory)
        if rng.random() < 0.5 and "weights_size" in manifest:
            manifest["weights_size"] = len(data)
        manifest.setdefault("files", {})["weights.bin"] = {"size": len(data),
                                                           "sha256": hashlib.sha256(bytes(data)).hexdigest()}
        _write_manifest(directory, manifest, True)
    return what + (" (hashes recomputed)" if rehash else "")


def mutate_file_kind(directory: Path, rng: np.random.Generator) -> str:
    names = ["manifest.json", "weights.bin", *OBJECTS]
    name = names[int(rng.integers(0, len(names)))]
    path = directory / name
    if path.exists() or path.is_symlink():
        path.unlink()
    how = int(rng.integers(0, 6))
    if how == 0:
        os.mkfifo(path)
        return f"{name} -> a FIFO"
    if how == 1:
        path.mkdir()
        return f"{name} -> a directory"
    if how == 2:
        target = ["/dev/zero", "/dev/urandom", "/dev/null", "/proc/self/mem"][int(rng.integers(0, 4))]
        path.symlink_to(target)
        return f"{name} -> a symlink to {target}"
    if how == 3:
        other = [n for n in names if n != name and (directory / n).exists()]
        path.symlink_to(directory / other[0])
        return f"{name} -> a symlink to {other[0]}"
    if how == 4:
        path.symlink_to(directory / "nowhere")
        return f"{name} -> a dangling symlink"
    return f"{name} removed"


MUTATIONS = {"manifest-field": (mutate_manifest_field, 4), "manifest-bytes": (mutate_manifest_bytes, 1),
             "object": (mutate_object, 4), "weights": (mutate_weights, 2), "file-kind": (mutate_file_kind, 2)}


# --- base artifacts and the child ----------------------------------------------------------------

def base_artifacts(workdir: Path, seed: int, count: int = 3) -> list[Path]:
    """`count` small generated models compiled for cpu and saved, each with its inputs (feeds.npz)."""
    import dlc
    from dlc.tools.fuzz.checks import make_feeds
    from dlc.tools.fuzz.generator import generate

    made, case = [], 0
    while len(made) < count and case < 50:
        model_seed = seed * 1_000_003 + case
        case += 1
        model = generate(model_seed, 6)
        if not any(i.data_type == 1 and len(i.dims) for i in model.graph.initializer):
            continue  # one with weights: weights.bin has something to damage
        try:
            # Object files: the mutations aim at dlc's own ELF checks and loader (kept where no
            # linker exists); a linked model.so is as trusted as its directory.
            with mock.patch.dict(os.environ, {"DLC_LINKER": "none"}):
                compiled = dlc.compile(model, threads=1 + len(made) % 2)
        except Exception:  # noqa: BLE001 (the default campaign's business)
            continue
        directory = workdir / f"base{len(made)}"
        compiled.save(directory)
        np.savez(workdir / f"base{len(made)}.npz", **make_feeds(model, model_seed))
        made.append(directory)
    return made


def child_main(directory: str, feeds: str) -> int:
    """Load and run one artifact: exit 0 (ran), 3 (ArtifactError/DlcError), 4 (anything else)."""
    import traceback

    import dlc
    from dlc.errors import DlcError

    try:
        inputs = dict(np.load(feeds))
        model = dlc.load(directory)
        print(LOADED, flush=True)  # what follows runs the artifact's code, changed or not
        model.run(inputs)
    except DlcError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 3
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        return 4
    return 0


LOADED = "dlc-fuzz: loaded"
# Changed instruction bytes with the hashes fixed up are a different program, not damage: no
# loader can tell them from code dlc wrote, and running them may trap (a signal after the load
# is their behaviour). The load itself must still succeed or refuse cleanly.
CHANGED_CODE = "random bytes (hashes recomputed)"


def run_child(directory: Path, feeds: Path, cli: bool, timeout: float) -> tuple[str, str]:
    """(outcome, detail): outcome is ok | refused | crash | ran-after-load (a signal once the
    artifact loaded cleanly: a finding unless its code was changed) | timeout | exception | cli-error."""
    if cli:
        command = [sys.executable, "-m", "dlc.cli", "run", str(directory)]
    else:
        command = [sys.executable, "-m", "dlc.tools.fuzz.artifacts", str(directory), str(feeds)]
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                               env={**os.environ, "DLC_CACHE": "0"}, stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        return "timeout", f"no exit within {timeout:.0f} s"
    tail = child.stderr.strip()[-1500:]
    if child.returncode < 0:
        if not cli and LOADED in child.stdout:
            return "ran-after-load", f"signal {-child.returncode}: {tail}"
        return "crash", f"signal {-child.returncode}: {tail}"
    if cli:
        if child.returncode == 0:
            return "ok", ""
        if child.returncode == 1 and child.stderr.startswith("error: ") and "Traceback" not in child.stderr \
                and "internal error" not in child.stderr:
            return "refused", tail.splitlines()[0] if tail else ""
        return "cli-error", f"exit code {child.returncode}: {tail}"
    if child.returncode == 0:
        return "ok", ""
    if child.returncode == 3:
        return "refused", child.stderr.strip().splitlines()[0] if child.stderr.strip() else ""
    return "exception", f"exit code {child.returncode}: {tail}"


def fuzz_artifacts(*, minutes: float | None = None, cases: int | None = None, seed: int = 0,
                   corpus: Path | None = None, timeout: float = 60.0, log=print,
                   quiet: bool = False) -> ArtifactSummary:
    """Mutate copies of a few saved artifacts until `minutes` pass or `cases` are done;
    `quiet`: log findings only, not each clean or refused case."""
    summary = ArtifactSummary()
    start = time.monotonic()
    names = list(MUTATIONS)
    weights = np.array([MUTATIONS[k][1] for k in names], float)
    with tempfile.TemporaryDirectory(prefix="dlc-fuzz-artifacts-") as tmp:
        work = Path(tmp)
        bases = base_artifacts(work, seed)
        if not bases:
            raise RuntimeError("no generated model compiled: nothing to mutate")
        case = 0
        while (cases is None or case < cases) and (minutes is None or time.monotonic() - start < minutes * 60):
            case_seed = seed * 1_000_003 + case
            case += 1
            rng = np.random.default_rng([case_seed, 0xA7])
            index = int(rng.integers(0, len(bases)))
            directory = work / f"case{case_seed}"
            shutil.copytree(bases[index], directory, symlinks=True)
            kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
            try:
                what = MUTATIONS[kind][0](directory, rng)
                if rng.random() < 0.15:  # two at once
                    second = names[int(rng.choice(len(names), p=weights / weights.sum()))]
                    what += "; " + MUTATIONS[second][0](directory, rng)
            except Exception as error:  # noqa: BLE001 - a second mutation meets whatever the first left
                # (a manifest turned into a list, a self-nested document): the case runs as it stands
                what = f"{kind}: mutation half done ({type(error).__name__}: {error})"
            cli = bool(rng.random() < 0.3) and CHANGED_CODE not in what  # the child tells load from run
            outcome, detail = run_child(directory, work / f"base{index}.npz", cli, timeout)
            if outcome == "ran-after-load":
                outcome = "ran-changed-code" if CHANGED_CODE in what else "crash"
            summary.cases += 1
            summary.outcomes[outcome] += 1
            if outcome not in ("ok", "refused", "ran-changed-code"):
                summary.findings[outcome] += 1
                log(f"case {case_seed}: {outcome} ({'dlc run' if cli else 'dlc.load+run'}) after {what}: "
                    f"{detail[-600:]}")
                if corpus is not None:
                    kept = Path(corpus) / "artifacts" / f"{outcome}-{case_seed}"
                    if kept.exists():
                        shutil.rmtree(kept)
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copytree(directory, kept, symlinks=True)
                    shutil.copy(work / f"base{index}.npz", kept.with_suffix(".npz"))
                    kept.with_suffix(".json").write_text(json.dumps({
                        "outcome": outcome, "mutation": what, "detail": detail, "seed": seed, "case": case_seed,
                        "reproduce": f"python -m dlc.tools.fuzz.artifacts {kept} {kept.with_suffix('.npz')}"},
                        indent=1) + "\n")
                    summary.saved.append(kept)
            elif not quiet:
                log(f"case {case_seed}: {outcome}: {what}" + (f" -> {detail[:200]}" if detail else ""))
            shutil.rmtree(directory, ignore_errors=True)
    summary.seconds = time.monotonic() - start
    return summary


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1], sys.argv[2]))
