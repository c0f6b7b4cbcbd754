"""Callbacks a run calls as it goes, and a rich progress bar built on them.

Subclass :class:`RunHooks` and override what you need (logging, metrics); pass instances to the
runner (``hooks=[...]``). :class:`ProgressBar` is one such consumer.

    >>> class CountChunks(RunHooks):
    ...     def __init__(self) -> None:
    ...         self.chunks = 0
    ...     def on_chunk_done(self, chunk: ChunkRecord) -> None:
    ...         self.chunks += 1

Rules the runner keeps:

- Hooks are called in the thread that iterates over the results (never from a worker thread), one
  at a time, in this order: ``on_run_start`` once; then ``on_chunk_done`` per finished chunk, each
  followed by ``on_item_error`` for each failed item of that chunk; then ``on_run_end`` once,
  however the run ended (completed, failed, interrupted or abandoned by its consumer).
- A hook that raises stops the run: the backend is aborted, ``on_run_end`` is still called on every
  hook (so progress displays close), and the hook's exception propagates to the caller unchanged
  (report status ``"failed"``) — even on a hook whose ``on_run_start`` was never reached because an
  earlier hook's raised. An exception from ``on_run_end`` itself propagates after all hooks
  have run, unless the run is already propagating an error of its own, which wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from amorsize.core.types import ExecutorKind
from amorsize.run.backend import ItemFailure
from amorsize.run.report import ChunkRecord, RunReport

if TYPE_CHECKING:  # rich is imported when a progress bar is drawn, not with the package (~50 ms)
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["ChunkRecord", "ProgressBar", "RunHooks", "RunInfo"]


@dataclass(frozen=True)
class RunInfo:
    """What is known when a run starts.

    Attributes:
        executor: the backend's kind.
        n_workers: the backend's worker count.
        total_items: length of the input when known, else None.
        initial_chunksize: the chunk size the run starts with.
        target_chunk_duration: seconds the adaptation aims for per chunk.
        max_in_flight: chunks submitted ahead at most.
        ordered: whether results come in input order.
        on_error: the failure policy.
        items_from_dry_run: results that will be emitted from the dry run without calling the function.
    """

    executor: ExecutorKind
    n_workers: int
    total_items: int | None
    initial_chunksize: int
    target_chunk_duration: float
    max_in_flight: int
    ordered: bool
    on_error: Literal["raise", "collect"]
    items_from_dry_run: int = 0


class RunHooks:
    """Callbacks of one run; every method does nothing unless overridden. See the module docstring."""

    def on_run_start(self, info: RunInfo) -> None:
        """Called once, before the first chunk is submitted."""

    def on_chunk_done(self, chunk: ChunkRecord) -> None:
        """Called once per finished chunk, when the runner collects it."""

    def on_item_error(self, failure: ItemFailure) -> None:
        """Called once per failed item (under ``"raise"``: for the failure that stops the run)."""

    def on_run_end(self, report: RunReport) -> None:
        """Called once when the run ends, however it ended."""


def _format_rate(speed: float | None) -> str:
    """Items per second for people, e.g. ``1.2k it/s``."""
    if speed is None:
        return "? it/s"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if speed >= scale:
            return f"{speed / scale:.1f}{suffix} it/s"
    return f"{speed:.1f} it/s"


def _rate_column() -> Any:
    """A rich column showing the task's rate (the class is made here so rich loads only when used)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(_format_rate(task.finished_speed or task.speed), style="progress.data.speed")

    return RateColumn()


class ProgressBar(RunHooks):
    """A rich progress bar on stderr: items done (of the total when known), rate, elapsed time and ETA.

    Args:
        enabled: True to always show it, False never; None (default) shows it only when the
            console is a terminal, so logs and CI output stay clean.
        console: where to draw; defaults to a console on stderr.
        description: the label left of the bar.
    """

    def __init__(
        self, *, enabled: bool | None = None, console: Console | None = None, description: str = "amorsize"
    ) -> None:
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.description = description
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def on_run_start(self, info: RunInfo) -> None:
        """Start drawing; results taken from the dry run count as already done."""
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _rate_column(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        label = f"{self.description} ({info.executor} × {info.n_workers})"
        self._task = self._progress.add_task(label, total=info.total_items, completed=info.items_from_dry_run)
        self._progress.start()

    def on_chunk_done(self, chunk: ChunkRecord) -> None:
        """Advance by the chunk's items."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, chunk.size)

    def on_run_end(self, report: RunReport) -> None:
        """Show the final count and stop drawing."""
        if self._progress is None or self._task is None:
            return
        try:
            self._progress.update(self._task, completed=report.n_items, total=report.total_items)
        finally:
            self._progress.stop()
            self._progress = None
            self._task = None
