"""Consoles, one-line messages and the progress bar the command line shows on stderr."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

from amorsize.run.hooks import ProgressBar, RunHooks, RunInfo
from amorsize.run.report import ChunkRecord, RunReport

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["PROGRESS_DELAY", "LongRunProgress", "console", "note"]

#: Seconds a run must last before its progress bar appears: shorter runs finish before a bar
#: would tell anything, and a bar that flashes for a moment is noise.
PROGRESS_DELAY = 1.0

#: Width of reports written to a file or a pipe (rich would use 80): the plan table needs about 90.
PIPE_WIDTH = 100


def console(file: IO[str] | None = None) -> Console:
    """A rich console on ``file`` (default stdout): the terminal's width, or :data:`PIPE_WIDTH` when piped."""
    from rich.console import Console

    target = sys.stdout if file is None else file
    is_terminal = bool(getattr(target, "isatty", lambda: False)())
    width = None if is_terminal or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(file=target, width=width, highlight=False, soft_wrap=False)


def note(message: str, *, kind: str = "note") -> None:
    """One line on stderr, e.g. ``amorsize: saved plan to plan.json``."""
    prefix = "amorsize: " if kind == "note" else f"amorsize: {kind}: "
    print(prefix + " ".join(message.split()), file=sys.stderr)


class LongRunProgress(RunHooks):
    """A progress bar on stderr that appears only once a run has lasted :data:`PROGRESS_DELAY` seconds.

    Args:
        enabled: True/False to force; None shows it only when stderr is a terminal.
        delay: seconds before the bar appears.
        clock: the clock (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        enabled: bool | None = None,
        delay: float = PROGRESS_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.delay = delay
        self.clock = clock
        self.bar: ProgressBar | None = None
        self._info: RunInfo | None = None
        self._started = 0.0
        self._done = 0

    def on_run_start(self, info: RunInfo) -> None:
        """Remember the run; the bar waits for the first chunk after the delay."""
        self._info = info
        self._started = self.clock()
        self._done = info.items_from_dry_run

    def on_chunk_done(self, chunk: ChunkRecord) -> None:
        """Count the chunk; start drawing once the run has lasted long enough."""
        if self.bar is not None:
            self.bar.on_chunk_done(chunk)
            return
        self._done += chunk.size
        if self.enabled and self._info is not None and self.clock() - self._started >= self.delay:
            self.bar = self._make_bar()
            self.bar.on_run_start(replace(self._info, items_from_dry_run=self._done))

    def on_run_end(self, report: RunReport) -> None:
        """Close the bar, if one was drawn."""
        if self.bar is not None:
            self.bar.on_run_end(report)

    def _make_bar(self) -> ProgressBar:
        from rich.console import Console

        stderr: Any = sys.stderr
        return ProgressBar(enabled=True, console=Console(file=stderr))
