"""The errors dlc reports to users, shared by every layer (dialects, passes, dlc).

Each says what is wrong, where (file, ONNX node name and op type, input name),
what was expected and what was found, and what to do. The CLI prints them
without a traceback and exits with code 1.
"""

from __future__ import annotations


class DlcError(Exception):
    """Base of all user-facing errors. `hint` says what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ModelLoadError(DlcError):
    """The model file is missing, unreadable, not ONNX, or fails onnx.checker."""


class UnsupportedError(DlcError):
    """An operator, attribute value, dtype or shape dlc does not handle (yet)."""


class CompileError(DlcError):
    """Compilation failed: a pass broke the IR, or a phase could not be reached."""


class MemoryLimitError(CompileError):
    """The model's tensors would need more memory than the limit (dlc/runtime/memory_limit.py)."""


class InputError(DlcError):
    """Run-time inputs do not match the model: names, shapes or dtypes."""


class ArtifactError(DlcError):
    """A compiled artifact directory is missing, incomplete or built for another CPU."""
