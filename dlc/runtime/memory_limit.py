"""The memory limit: refuse a model whose tensors would not fit, before allocating them.

A hostile or mistaken model can declare a 100000x100000 input, or a ConstantOfShape /
Range that constant folding would turn into gigabytes. dlc estimates what a compile
and a run need (inputs, outputs, weights, folded constants, the arena of the memory
plan) and raises MemoryLimitError above the limit instead of letting numpy, protobuf
or the kernel's OOM killer fail later. Like onnxruntime's `session.arena_extend_strategy`
caps, the limit is the user's to raise.

The limit, first found wins: `--max-memory 8GiB` (CLI), `max_memory=` (dlc.compile,
dlc.load, CompileOptions), the `DLC_MAX_MEMORY` environment variable, else half the
machine's physical memory (a compile holds the weights twice: the ONNX initializers and
the packed blob, so what a run needs must fit in half).
"""

from __future__ import annotations

import os
import re

from dlc.errors import MemoryLimitError

ENV_VARIABLE = "DLC_MAX_MEMORY"
FALLBACK_LIMIT = 16 << 30  # where the physical memory cannot be read
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(text: str | int, what: str = "--max-memory") -> int:
    """'8GiB', '512MB', '1.5G', '1000000' -> bytes (k/M/G/T are decimal, KiB/MiB/GiB/TiB binary)."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise MemoryLimitError(f"{what}: cannot read '{text}' as a size",
                                   "write it as a number of bytes with an optional unit, "
                                   "e.g. 8GiB, 512MiB, 2GB or 1000000")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise MemoryLimitError(f"{what}: the memory limit must be positive, got {text}")
    return size


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def resolve_limit(max_memory: str | int | None = None) -> int:
    """The limit in bytes: the explicit option, else $DLC_MAX_MEMORY, else half the RAM."""
    if max_memory is not None:
        return parse_size(max_memory)
    if os.environ.get(ENV_VARIABLE):
        return parse_size(os.environ[ENV_VARIABLE], f"${ENV_VARIABLE}")
    ram = physical_memory()
    return ram // 2 if ram else FALLBACK_LIMIT


def format_bytes(size: int | float) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
    return f"{int(size)} bytes"


def check(needed: int, limit: int, what: str, parts: dict[str, int] | None = None) -> None:
    """Raise MemoryLimitError if `needed` bytes (for `what`) exceed `limit`."""
    if needed <= limit:
        return
    detail = ""
    if parts:
        detail = " (" + ", ".join(f"{name} {format_bytes(size)}" for name, size in parts.items() if size) + ")"
    raise MemoryLimitError(
        f"{what} needs {format_bytes(needed)}{detail}, above the memory limit of {format_bytes(limit)}",
        f"check the model's shapes (fix symbolic ones with --shape NAME=AxB); if it is meant to be this "
        f"big, raise the limit with --max-memory SIZE, max_memory= in dlc.compile/dlc.load, or "
        f"${ENV_VARIABLE}=SIZE (e.g. 64GiB)")
