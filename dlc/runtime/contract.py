"""The model's contract: the sizes its native code was compiled for, kept in the code itself.

The manifest says how big the arena, the weights and every input and output buffer are, and
the runtime allocates by it; the code writes by the sizes it was compiled with. A manifest
edited with its integrity hash fixed up (artifact fuzzing on the 16-core machine: `arena_size`
2560 -> 0, an output's shape emptied) made the code write past the buffers it was given. So
the code carries its own copy, the constant array `dlc_contract` (an object of its own, built
by dlc/targets/cpu.py), and loading refuses a manifest that disagrees with it before anything
runs.
"""

from __future__ import annotations

import ctypes

import numpy as np

from dlc.errors import ArtifactError

CONTRACT_SYMBOL = "dlc_contract"
# The integer weights the code trusts: constant indices (Gather, ScatterND, ...) were checked
# when the model compiled, so the code reads them without bounds checks, and a weights.bin
# edited with its hashes fixed up (artifact fuzzing, seed 1805: a bit flipped in a ScatterND's
# indices) made it write out of bounds. The code carries [count, then offset, bytes, checksum of
# each] and loading compares weights.bin with it (dlc_api.c does the same in C).
TRUSTED_SYMBOL = "dlc_trusted_weights"
TRUSTED_DTYPES = (np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.uint32), np.dtype(np.uint64))


def _nbytes(spec: dict) -> int:
    return int(np.prod(spec["shape"], dtype=object)) * np.dtype(spec["dtype"]).itemsize


def contract_values(manifest: dict) -> list[int]:
    """[inputs, outputs, arena bytes, weights bytes, each input's bytes, each output's bytes]."""
    return [len(manifest["inputs"]), len(manifest["outputs"]), int(manifest["arena_size"]),
            int(manifest["weights_size"]), *map(_nbytes, manifest["inputs"]), *map(_nbytes, manifest["outputs"])]


def contract_llvm(values: list[int]) -> str:
    """An LLVM module defining `dlc_contract`: a constant i64 array, its length first. Data, not
    code: reading it runs nothing of the artifact's (a load must not execute changed code)."""
    items = ", ".join(f"i64 {v}" for v in [len(values), *values])
    return f"@{CONTRACT_SYMBOL} = constant [{len(values) + 1} x i64] [{items}], align 8\n"


def weights_checksum(data: np.ndarray) -> int:
    """The sum of w_i * (2i + 1) mod 2^64 over the little-endian 32-bit words w_i of `data`
    (uint8, a multiple of 4 long): any one flipped bit changes it (its word's factor is odd).
    A check against damage, not a signature; dlc_api.c computes the same."""
    words = np.ascontiguousarray(data).view("<u4").astype(np.uint64)
    factors = np.arange(1, 2 * words.size, 2, dtype=np.uint64)
    return int((words * factors).sum(dtype=np.uint64))


def trusted_weights(store: dict[str, np.ndarray], offsets: dict[str, int], blob: np.ndarray) -> list[int]:
    """[count, then offset, bytes, checksum of each integer weight in `offsets`] (TRUSTED_SYMBOL)."""
    entries = []
    for name, offset in offsets.items():
        if store[name].dtype in TRUSTED_DTYPES and store[name].nbytes:
            size = store[name].nbytes
            entries += [offset, size, weights_checksum(blob[offset:offset + size])]
    return [len(entries) // 3, *entries]


def trusted_llvm(values: list[int]) -> str:
    """An LLVM module defining TRUSTED_SYMBOL: a constant i64 array (checksums as their two's
    complement)."""
    items = ", ".join(f"i64 {v - (1 << 64) if v >= 1 << 63 else v}" for v in values)
    return f"@{TRUSTED_SYMBOL} = constant [{len(values)} x i64] [{items}], align 8\n"


def check_trusted_weights(address: int, weights: np.ndarray) -> None:
    """Refuse `weights` unless every integer weight the code at `address` trusts is unchanged."""
    count = ctypes.c_int64.from_address(address).value
    entries = list((ctypes.c_uint64 * (3 * count)).from_address(address + 8)) if count > 0 else []
    for offset, size, checksum in zip(entries[0::3], entries[1::3], entries[2::3]):
        if offset + size > weights.size or size % 4 or weights_checksum(weights[offset:offset + size]) != checksum:
            raise ArtifactError(f"weights.bin disagrees with the model's code: the integer weight at byte "
                                f"{offset} ({size} bytes) is not the one the code was compiled with",
                                "compile the model again with `dlc compile`")


def check_contract(manifest: dict, address: int) -> None:
    """Refuse `manifest` unless every size it gives is what the code's contract at `address` says."""
    wanted = contract_values(manifest)
    length = ctypes.c_int64.from_address(address).value
    if length != len(wanted):  # read no further than the code's own array
        raise ArtifactError(f"the manifest disagrees with the model's code: {len(wanted)} sizes in the manifest, "
                            f"{length} in the code", "compile the model again with `dlc compile`")
    actual = list((ctypes.c_int64 * length).from_address(address + 8))
    names = ["inputs", "outputs", "arena_size", "weights_size",
             *(f"input '{s['name']}' bytes" for s in manifest["inputs"]),
             *(f"output '{s['name']}' bytes" for s in manifest["outputs"])]
    for name, value, code in zip(names, wanted, actual):
        if code != value:
            raise ArtifactError(f"the manifest disagrees with the model's code: {name} is {value} in the "
                                f"manifest, {code} in the code", "compile the model again with `dlc compile`")
