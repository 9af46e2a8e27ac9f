"""Code into this process. An artifact's `model.so` (dlc/codegen/link.py) through the
system's dynamic loader (`dlopen`, via ctypes: numpy and the standard library only).
Object files, where no linker was found at compile time: dlc's own ELF loader where it
applies (x86-64 Linux; no LLVM in the process, 50 MB less resident memory), else llvmlite's
MCJIT (dlc/runtime/mcjit.py); DLC_LOADER=mcjit forces MCJIT. Either way the objects are
checked first (elf_loader.check_objects): damaged code reaches neither loader."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

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


class SharedLibrary:
    """A `model.so` opened with dlopen: `address(symbol)` of what it exports. Closed (dlclose)
    when its last user goes, as dlc's own loader unmaps an image: a process that compiles
    model after model (a test run, a model specialised per input shape) does not keep them
    all mapped. The library whose pool the process runs is pinned: its workers run its code
    until the process ends."""

    pinned = False
    _library = None

    def __init__(self, path: Path | None, code: bytes | None = None):
        """Open the library at `path`, or, for a model compiled in this process, `code`
        written to a private temporary file (removed once mapped)."""
        try:
            if path is not None:
                self._library = ctypes.CDLL(str(Path(path).resolve()), mode=os.RTLD_NOW | os.RTLD_LOCAL)
            else:
                with tempfile.TemporaryDirectory(prefix="dlc-so-") as scratch:
                    temporary = Path(scratch, "model.so")
                    temporary.write_bytes(code)
                    self._library = ctypes.CDLL(str(temporary), mode=os.RTLD_NOW | os.RTLD_LOCAL)
        except OSError as error:  # dlerror's text: a missing symbol, a foreign or damaged ELF file
            raise ArtifactError(f"the shared library cannot be loaded: {error}",
                                "compile the model again on this machine with `dlc compile`") from None

    def address(self, symbol: str) -> int:
        """Address of the exported function `symbol`; KeyError when the library lacks it."""
        try:
            return ctypes.cast(getattr(self._library, symbol), ctypes.c_void_p).value
        except AttributeError:
            raise KeyError(f"symbol {symbol!r} is not exported by the library") from None

    def __del__(self):
        if self._library is not None and not self.pinned and sys is not None and not sys.is_finalizing():
            import _ctypes

            _ctypes.dlclose(self._library._handle)
            self._library = None
