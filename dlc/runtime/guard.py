"""Checked runs: every buffer of a native call in its own mapping between PROT_NONE guard
pages, and a SIGSEGV/SIGBUS handler that names the buffer and offset an access hit
(`dlc run --check-bounds`, `DLC_CHECK_BOUNDS=1`). Linux; mirrors what Electric Fence and
ASan's guard zones do, per tensor rather than per allocation.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import numpy as np

if TYPE_CHECKING:
    from dlc.runtime.executable import TensorSpec

PAGE = mmap.PAGESIZE
PROT_NONE = 0  # POSIX; Python's mmap module does not export it


@functools.cache
def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    return libc


@dataclass
class GuardedBuffer:
    """One buffer: [guard page][data pages][guard page] mapped, `address` somewhere in the data."""

    name: str
    base: int      # start of the mapping (the low guard page)
    pages: int     # data pages
    address: int   # what native code gets
    nbytes: int
    writable: bool

    @property
    def data_start(self) -> int:
        return self.base + PAGE

    @property
    def data_end(self) -> int:
        return self.base + PAGE * (1 + self.pages)

    def copy_out(self, spec: TensorSpec) -> np.ndarray:
        if self.nbytes == 0:
            return np.empty(spec.shape, spec.dtype)
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.address))
        return raw.view(spec.dtype).reshape(spec.shape).copy()

    def describe(self, fault: int) -> str | None:
        """Where `fault` lies relative to this buffer, or None when it is not in its mapping."""
        where = f"{self.name} ({self.nbytes} bytes at {self.address:#x})"
        if self.base <= fault < self.data_start:
            return f"{self.address - fault} byte(s) before the start of {where}: the guard page below it"
        if self.data_end <= fault < self.data_end + PAGE:
            past = fault - self.address - self.nbytes
            past = "the first byte past its end" if past == 0 else f"{past} byte(s) after its end"
            return f"byte offset {fault - self.address} of {where}, {past}: the guard page above it"
        if self.data_start <= fault < self.data_end:
            if self.address <= fault < self.address + self.nbytes and not self.writable:
                return f"byte offset {fault - self.address} of {where}, which is read-only (a write?)"
            return (f"byte offset {fault - self.address} of {where}: outside it, in the same page "
                    f"(only the {'end' if fault > self.address else 'start'} of each buffer is "
                    "guarded in this pass)")
        return None


class GuardedBuffers:
    """Each buffer in its own anonymous mapping between PROT_NONE pages; unmapped on exit.

    placement "end": the buffer's last byte is the last byte before the upper guard page;
    placement "start": its first byte is the first byte after the lower guard page.
    """

    def __init__(self, placement: str):
        assert placement in ("end", "start")
        self.placement = placement
        self.buffers: list[GuardedBuffer] = []
        self._libc = _libc()

    def add(self, name: str, nbytes: int, source: np.ndarray | None = None, fill: int = 0,
            writable: bool = True) -> GuardedBuffer:
        pages = max(1, -(-nbytes // PAGE))
        length = PAGE * (pages + 2)
        base = self._libc.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE,
                               mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise MemoryError(f"mmap of {length} bytes for {name} failed: {os.strerror(ctypes.get_errno())}")
        data_start, data_end = base + PAGE, base + PAGE * (1 + pages)
        address = data_end - nbytes if self.placement == "end" else data_start
        buffer = GuardedBuffer(name, base, pages, address, nbytes, writable)
        self.buffers.append(buffer)
        ctypes.memset(data_start, fill, data_end - data_start)
        if source is not None and nbytes:
            ctypes.memmove(address, source.ctypes.data, nbytes)
        self._protect(base, PAGE, PROT_NONE)
        self._protect(data_end, PAGE, PROT_NONE)
        if not writable:
            self._protect(data_start, data_end - data_start, mmap.PROT_READ)
        return buffer

    def _protect(self, address: int, length: int, protection: int) -> None:
        if self._libc.mprotect(address, length, protection) != 0:
            raise OSError(ctypes.get_errno(), f"mprotect failed: {os.strerror(ctypes.get_errno())}")

    def describe(self, fault: int) -> str:
        for buffer in self.buffers:
            where = buffer.describe(fault)
            if where is not None:
                return where
        spans = ", ".join(f"{b.name} [{b.address:#x}, {b.address + b.nbytes:#x})" for b in self.buffers)
        return f"not in any buffer of the call (the stack, or a wild pointer); the buffers: {spans}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        for buffer in self.buffers:
            self._libc.munmap(buffer.base, PAGE * (buffer.pages + 2))
        self.buffers.clear()


class _SigAction(ctypes.Structure):
    """glibc's struct sigaction on Linux (x86-64 and AArch64)."""

    _fields_ = [("sigaction", ctypes.c_void_p), ("mask", ctypes.c_uint64 * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


_SA_SIGINFO, _SA_RESETHAND = 0x4, 0x80000000
_SIGINFO_ADDRESS_OFFSET = 16  # siginfo_t.si_addr on Linux (after si_signo, si_errno, si_code, padding)
_FaultHandler = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_active_guards: list[GuardedBuffers] = []


def _on_fault(signum: int, info: int, _context: int) -> None:
    # Runs on the faulting thread (the GIL was released for the native call). SA_RESETHAND
    # restored the default action, so returning re-executes the access and the process dies
    # of the signal as it would have without the check - with the culprit named first.
    fault = ctypes.c_void_p.from_address(info + _SIGINFO_ADDRESS_OFFSET).value or 0
    where = _active_guards[-1].describe(fault) if _active_guards else "no checked run active"
    os.write(2, f"dlc --check-bounds: invalid memory access (signal {signum}) at {fault:#x}: {where}\n".encode())


_fault_handler = _FaultHandler(_on_fault)  # kept alive for the process: libc holds its address
_fault_lock = threading.Lock()


@contextlib.contextmanager
def report_faults(guarded: GuardedBuffers):
    """While active, SIGSEGV/SIGBUS print where the fault lies relative to `guarded` (Linux)."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = guarded._libc
    import signal

    action = _SigAction(ctypes.cast(_fault_handler, ctypes.c_void_p).value, (ctypes.c_uint64 * 16)(),
                        _SA_SIGINFO | _SA_RESETHAND, None)
    previous = {sig: _SigAction() for sig in (signal.SIGSEGV, signal.SIGBUS)}
    with _fault_lock:  # one checked call at a time: the handler and its buffers are process-wide
        for sig, old in previous.items():
            libc.sigaction(sig, ctypes.byref(action), ctypes.byref(old))
        _active_guards.append(guarded)
        try:
            yield
        finally:
            _active_guards.pop()
            for sig, old in previous.items():
                libc.sigaction(sig, ctypes.byref(old), None)

