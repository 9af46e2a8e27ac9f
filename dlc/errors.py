"""User-facing errors (defined at the bottom layer so passes can raise them too)."""

from dialects.diagnostics import (  # noqa: F401
    ArtifactError,
    CompileError,
    DlcError,
    InputError,
    MemoryLimitError,
    ModelLoadError,
    UnsupportedError,
)
