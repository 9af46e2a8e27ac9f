"""Object code into this process: dlc's own ELF loader where it applies (x86-64 Linux; no
LLVM in the process, 50 MB less resident memory), else llvmlite's MCJIT (dlc/runtime/mcjit.py).
DLC_LOADER=mcjit forces MCJIT. Either way the objects are checked first
(elf_loader.check_objects): damaged code reaches neither loader."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from dlc.errors import ArtifactError

LOADER_VARIABLE = "DLC_LOADER"


def load_code(objects: Sequence[bytes], exports: Sequence[str] = ()):
    """The object files, checked and loaded into this process, each of `exports` a function
    they define: `address(symbol)` on the result. A damaged object raises ArtifactError."""
    from dlc.runtime.elf_loader import (
        ElfImage,
        MalformedObject,
        UnresolvedSymbol,
        UnsupportedObject,
        check_objects,
        supported_host,
    )

    try:
        if supported_host() and os.environ.get(LOADER_VARIABLE, "elf") != "mcjit":
            try:
                return ElfImage(objects, exports)
            except UnsupportedObject as reason:
                logging.getLogger("dlc.runtime").debug("MCJIT loads this artifact: %s", reason)
        elif not sys.platform.startswith(("darwin", "win")):  # there the objects are not ELF
            check_objects(objects, exports)
    except UnresolvedSymbol as symbol:
        raise ArtifactError(
            f"the object code calls '{symbol}', which neither it nor this process defines",
            "compile the model again on this machine with `dlc compile`",
        ) from None
    except MalformedObject as problem:
        raise ArtifactError(
            f"damaged object code: {problem}", "compile the model again with `dlc compile`"
        ) from None
    from dlc.runtime.mcjit import NativeModule

    return NativeModule(objects)
