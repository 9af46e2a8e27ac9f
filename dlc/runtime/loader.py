"""Object code into this process: dlc's own ELF loader where it applies (x86-64 Linux; no
LLVM in the process, 50 MB less resident memory), else llvmlite's MCJIT (dlc/runtime/mcjit.py).
DLC_LOADER=mcjit forces MCJIT."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from dlc.errors import ArtifactError

LOADER_VARIABLE = "DLC_LOADER"


def load_code(objects: Sequence[bytes]):
    """The object files loaded into this process: dlc's own ELF loader where it applies (no
    LLVM in the process: 50 MB less resident memory), else llvmlite's MCJIT. `address(symbol)`
    on the result. DLC_LOADER=mcjit forces MCJIT."""
    from dlc.runtime.elf_loader import ElfImage, UnresolvedSymbol, UnsupportedObject, supported_host

    if supported_host() and os.environ.get(LOADER_VARIABLE, "elf") != "mcjit":
        try:
            return ElfImage(objects)
        except UnresolvedSymbol as symbol:
            raise ArtifactError(f"the object code calls '{symbol}', which this process does not define",
                                "compile the model again on this machine with `dlc compile`") from None
        except UnsupportedObject as reason:
            logging.getLogger("dlc.runtime").debug("MCJIT loads this artifact: %s", reason)
    from dlc.runtime.mcjit import NativeModule

    return NativeModule(objects)
