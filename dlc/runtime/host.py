"""What the runtime asks of the machine it runs on: CPU flags, core count, cache sizes,
and whether an artifact's code can run here (compiled for instructions this CPU lacks, it
would die of SIGILL). Reads Linux's /proc and /sys; LLVM only as a fallback.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from dlc.errors import ArtifactError

# Per-core data caches assumed where Linux does not say (the project's reference machine,
# Emerald Rapids: 48 KiB L1d, 2 MiB L2).
DEFAULT_L1_BYTES = 48 << 10
DEFAULT_L2_BYTES = 2 << 20


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)



@functools.cache
def cpuinfo_flags() -> frozenset[str] | None:
    """This machine's CPU flags as Linux lists them (/proc/cpuinfo), or None elsewhere."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def check_cpu(manifest: dict) -> None:
    """Refuse code for instructions this CPU lacks (it would die of SIGILL).

    When this machine has every flag of the machine that compiled the artifact (the usual
    case: the same machine), the check needs no LLVM; else LLVM's feature list decides. For a
    named CPU (`--cpu x86-64-v3`) the flags are exactly those the code needs: missing ones are
    refused by name, without LLVM.
    """
    here = cpuinfo_flags()
    there = manifest.get("cpu_flags")
    if here is not None and isinstance(there, list) and there and here.issuperset(there):
        return
    if here is not None and manifest.get("cpu_target", "native") != "native":
        missing = sorted(set(there or ()) - here)
        raise ArtifactError(f"this artifact was compiled for CPU '{manifest.get('cpu_target')}' and needs "
                            f"features this machine lacks: {', '.join(missing)}",
                            "compile the model again with `dlc compile --cpu native` (or a --cpu this "
                            "machine has), or run it on a machine with those features")
    from dlc.runtime.mcjit import host_cpu

    host = host_cpu()
    host_features = {f[1:] for f in host[1].split(",") if f.startswith("+")}
    needed = {f[1:] for f in manifest.get("cpu_features", "").split(",") if f.startswith("+")}
    missing = sorted(needed - host_features)
    if missing:
        raise ArtifactError(f"this artifact was compiled for CPU '{manifest.get('cpu')}' and needs "
                            f"features this machine lacks: {', '.join(missing[:8])}",
                            "recompile the model on this machine with `dlc compile`")


@functools.cache
def host_caches() -> tuple[int, int]:
    """(L1 data, L2) bytes per core of the CPU this process runs on, from Linux's sysfs
    cache description; the reference machine's sizes where it is missing. Tile sizes follow
    them: a Zen 4 core has 32 KiB and 1 MiB where an Emerald Rapids core has 48 KiB and 2 MiB."""
    return cache_sizes(Path("/sys/devices/system/cpu/cpu0/cache"))


def cache_sizes(directory: Path) -> tuple[int, int]:
    """(L1 data, L2) bytes from a sysfs cache directory (index*/level, type, size)."""
    sizes = {1: DEFAULT_L1_BYTES, 2: DEFAULT_L2_BYTES}
    units = {"K": 1 << 10, "M": 1 << 20}
    for index in sorted(directory.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if level not in sizes or kind not in ("Data", "Unified"):
            continue
        if text[-1:] in units and text[:-1].isdigit():
            sizes[level] = int(text[:-1]) * units[text[-1]]
        elif text.isdigit():
            sizes[level] = int(text)
    return sizes[1], sizes[2]
