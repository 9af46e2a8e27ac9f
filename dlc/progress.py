"""Progress of long work on stderr, so a minute of compiling never looks like a hang.

Steps report as they start and finish (the import, each phase and pass, the LLVM parts, a
tool's runs); what shows depends on where stderr goes, as with cargo or pip:
- a terminal: one live line (rich, the field's standard) naming what runs now and the time
  so far; steps that took a second or more stay above it as plain lines;
- anything else (a log, a pipe, a test's capture): a plain line per step that took a second
  or more, when it finishes, so quick commands print nothing but their answer;
- `--quiet` (or DLC_QUIET=1), or the Python API (`dlc.compile`): nothing; `Progress()` is silent.

The CLI and the tools install a reporter for the length of a command (`reporting`); the
driver, the pass runner (through `PassInstrumentation.notify`) and the code generator
report to `current()`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import TextIO

# Steps shorter than this leave no line: progress is for work a user waits on.
MIN_SECONDS = 1.0
QUIET_VARIABLE = "DLC_QUIET"  # =1: as --quiet, for CI logs (and the test suite, which reads stderr)


class Progress:
    """The silent reporter (the default). Subclasses draw what `begin`/`end` report."""

    def begin(self, what: str) -> None:
        """`what` starts now (e.g. "linalg: pack-weights", "llvm: 2 parts")."""

    def end(self, what: str, seconds: float) -> None:
        """`what` finished after `seconds`."""

    def close(self) -> None:
        """The command is over: clear any live display."""

    @contextlib.contextmanager
    def paused(self, what: str) -> Iterator[None]:
        """`what` runs without a live display: timed runs share no core with its refresh thread."""
        yield

    def pass_event(self, name: str, seconds: float | None) -> None:
        """PassInstrumentation.notify: (pass, None) as it starts, (pass, seconds) as it ends."""
        if seconds is None:
            self.begin(f"pass {name}")
        else:
            self.end(f"pass {name}", seconds)


class Lines(Progress):
    """A plain line per step of `min_seconds` or more, when it finishes."""

    def __init__(self, stream: TextIO, min_seconds: float | None = None):
        self.stream = stream
        self.min_seconds = MIN_SECONDS if min_seconds is None else min_seconds

    def end(self, what: str, seconds: float) -> None:
        if seconds >= self.min_seconds:
            print(f"dlc: {what} ({seconds:.1f} s)", file=self.stream, flush=True)


class Live(Lines):
    """A terminal: a live line (spinner, what runs now, time so far) below the finished steps."""

    def __init__(self, stream: TextIO, min_seconds: float | None = None):
        from rich.console import Console
        from rich.progress import Progress as RichProgress
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        super().__init__(stream, min_seconds)
        # rich draws stdout's lines above the live line only when stdout is the terminal too:
        # redirected (`dlc opt m.mlir > o.mlir`), its proxy would send them to stderr instead.
        self._bar = RichProgress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=Console(file=stream), transient=True,
                                 redirect_stdout=_is_terminal(sys.stdout))
        self._task = self._bar.add_task("dlc: starting", total=None)
        self._bar.start()

    def begin(self, what: str) -> None:
        self._bar.update(self._task, description=f"dlc: {what}")

    def end(self, what: str, seconds: float) -> None:
        self._bar.update(self._task, description=f"dlc: {what} done")  # until the next step begins
        if seconds >= self.min_seconds:
            self._bar.console.print(f"dlc: {what} ({seconds:.1f} s)", highlight=False, markup=False)

    def close(self) -> None:
        self._bar.stop()

    @contextlib.contextmanager
    def paused(self, what: str) -> Iterator[None]:
        self._bar.console.print(f"dlc: {what} (no live line while timing)", highlight=False, markup=False)
        self._bar.stop()
        try:
            yield
        finally:
            self._bar.update(self._task, description=f"dlc: {what} done")
            self._bar.start()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


_current: Progress = Progress()


def current() -> Progress:
    """The reporter of the command now running (silent outside the CLI and the tools)."""
    return _current


def for_stream(stream: TextIO | None = None, quiet: bool = False) -> Progress:
    """The reporter that suits `stream` (default stderr): silent, live or plain lines."""
    stream = sys.stderr if stream is None else stream
    if quiet or os.environ.get(QUIET_VARIABLE, "") not in ("", "0"):
        return Progress()
    if _is_terminal(stream):
        try:
            return Live(stream)
        except ImportError:  # rich is a dependency, but a stripped install still gets lines
            pass
    return Lines(stream)


@contextlib.contextmanager
def reporting(progress: Progress) -> Iterator[Progress]:
    """Make `progress` the current reporter for the block; close it after."""
    global _current
    previous, _current = _current, progress
    try:
        yield progress
    finally:
        _current = previous
        progress.close()


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Report `what` to the current reporter as it starts and as it ends (not when it fails)."""
    reporter = current()
    reporter.begin(what)
    start = time.perf_counter()
    yield
    reporter.end(what, time.perf_counter() - start)
