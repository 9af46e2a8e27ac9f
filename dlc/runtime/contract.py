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
