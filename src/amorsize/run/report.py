"""What a run did: :class:`RunReport`, and the per-chunk :class:`ChunkRecord` it (and the hooks) use.

>>> report = RunReport(
...     executor="processes", n_workers=2, status="completed", n_items=1000, total_items=1000,
...     wall_seconds=1.0, busy_seconds=1.8, cpu_seconds=1.7, n_chunks=20,
...     initial_chunksize=50, final_chunksize=50, predicted_seconds=0.8,
... )
>>> report.utilisation
0.9
>>> report.measured_vs_predicted
1.25
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from amorsize.core.types import ExecutorKind
from amorsize.run.backend import ItemFailure

__all__ = ["ChunkRecord", "RunReport", "RunStatus"]

#: How a run ended: all items done; stopped by an error (an item under ``on_error="raise"``, a
#: backend failure or a hook that raised); stopped by Ctrl-C; or stopped because the consumer of the
#: results stopped iterating (``break`` out of ``imap``).
RunStatus = Literal["completed", "failed", "interrupted", "cancelled"]


@dataclass(frozen=True)
class ChunkRecord:
    """One finished chunk, as the runner saw it.

    Attributes:
        chunk_id: the task's id (unique within the run); -1 for items the runner failed at once
            without running them (an open circuit breaker), which are reported as a chunk of their own.
        start: input position of the chunk's first item.
        size: items attempted (``ChunkOutcome.n_done``); a chunk stopped early is smaller than sent.
        duration: wall seconds the worker spent on it.
        cpu_time: CPU seconds the worker spent on it (0.0 when the backend does not measure it).
        worker: which worker ran it, e.g. ``"pid:1234"``.
        n_failed: how many of its items failed.
    """

    chunk_id: int
    start: int
    size: int
    duration: float
    cpu_time: float = 0.0
    worker: str = ""
    n_failed: int = 0


@dataclass(frozen=True, repr=False)
class RunReport:
    """What a run did, measured. Frozen; the API may fill ``predicted_seconds`` with ``dataclasses.replace``.

    Attributes:
        executor: the backend's kind.
        n_workers: the backend's worker count.
        status: how the run ended (see :data:`RunStatus`).
        n_items: results produced (including placeholders for failed items and results taken from
            the dry run).
        total_items: length of the input when known, else None.
        wall_seconds: from the start of the run to its end, as seen by the runner.
        busy_seconds: sum of chunk durations reported by the workers.
        cpu_seconds: sum of chunk CPU times reported by the workers (0.0 when not measured).
        n_chunks: chunks finished.
        initial_chunksize: the chunk size the run started with (the plan's).
        final_chunksize: the steady chunk size the adaptation had reached at the end (tail chunks,
            which are split smaller on purpose, are in ``chunks``).
        chunks: the first ``MAX_CHUNK_RECORDS`` chunk records (see ``amorsize.run.runner``), in
            completion order.
        failures: the first recorded item failures (``on_error="collect"``, or the one that stopped
            the run under ``"raise"``), in the order they were seen.
        n_failed: how many items failed in all (may exceed ``len(failures)``).
        n_failed_fast: of those, items failed without calling the function (an open circuit breaker).
        items_from_dry_run: results emitted from the dry run's precomputed results.
        items_from_checkpoint: results taken from a checkpoint of an earlier, interrupted run.
        predicted_seconds: the planner's predicted wall time for this run, when known.
        error: the exception that ended the run, for ``status`` ``"failed"`` or ``"interrupted"``.
    """

    executor: ExecutorKind
    n_workers: int
    status: RunStatus
    n_items: int
    total_items: int | None
    wall_seconds: float
    busy_seconds: float
    cpu_seconds: float
    n_chunks: int
    initial_chunksize: int
    final_chunksize: int
    chunks: tuple[ChunkRecord, ...] = ()
    failures: tuple[ItemFailure, ...] = ()
    n_failed: int = 0
    n_failed_fast: int = 0
    items_from_dry_run: int = 0
    items_from_checkpoint: int = 0
    predicted_seconds: float | None = None
    error: BaseException | None = None

    @property
    def utilisation(self) -> float:
        """Fraction of worker time spent inside chunks: busy / (wall × workers); 0.0 for an empty run."""
        capacity = self.wall_seconds * self.n_workers
        return self.busy_seconds / capacity if capacity > 0 else 0.0

    @property
    def measured_vs_predicted(self) -> float | None:
        """Measured wall time over predicted (> 1: slower than predicted); None without a prediction."""
        if self.predicted_seconds is None or self.predicted_seconds <= 0:
            return None
        return self.wall_seconds / self.predicted_seconds

    @property
    def items_per_second(self) -> float:
        """Results produced per wall second (0.0 for an instantaneous run)."""
        return self.n_items / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def chunk_durations(self) -> tuple[float, ...]:
        """Durations of the recorded chunks, in completion order."""
        return tuple(c.duration for c in self.chunks)

    @property
    def ok(self) -> bool:
        """True when the run completed and no item failed."""
        return self.status == "completed" and self.n_failed == 0

    def summary(self) -> str:
        """A few lines for people: what ran, how long, how well the workers were used, what failed."""
        total = "" if self.total_items is None else f"/{self.total_items}"
        lines = [
            f"amorsize run {self.status}: {self.n_items}{total} items on {self.executor} × {self.n_workers} "
            f"in {self.wall_seconds:.3g} s ({self.items_per_second:.4g} items/s)",
            f"  chunks: {self.n_chunks}, size {self.initial_chunksize} → {self.final_chunksize}; "
            f"worker utilisation {self.utilisation:.0%}",
        ]
        if self.items_from_dry_run:
            lines.append(f"  {self.items_from_dry_run} results reused from the dry run")
        if self.items_from_checkpoint:
            lines.append(f"  {self.items_from_checkpoint} results resumed from a checkpoint")
        ratio = self.measured_vs_predicted
        if self.predicted_seconds is not None and ratio is not None:
            lines.append(f"  predicted {self.predicted_seconds:.3g} s; measured/predicted {ratio:.2f}")
        if self.n_failed:
            detail = ""
            if self.failures:
                first = self.failures[0]
                detail = f" (first: item {first.index}: {type(first.error).__name__}: {first.error})"
            fast = f", {self.n_failed_fast} of them failed fast (circuit open)" if self.n_failed_fast else ""
            lines.append(f"  {self.n_failed} items failed{fast}{detail}")
        if self.error is not None:
            lines.append(f"  stopped by {type(self.error).__name__}: {self.error}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        total = "?" if self.total_items is None else str(self.total_items)
        parts = [
            f"status={self.status!r}",
            f"executor={self.executor!r}",
            f"n_workers={self.n_workers}",
            f"items={self.n_items}/{total}",
            f"wall={self.wall_seconds:.3g}s",
            f"utilisation={self.utilisation:.0%}",
            f"chunks={self.n_chunks} (size {self.initial_chunksize}→{self.final_chunksize})",
            f"failed={self.n_failed}",
            f"from_dry_run={self.items_from_dry_run}",
        ]
        if self.items_from_checkpoint:
            parts.append(f"from_checkpoint={self.items_from_checkpoint}")
        if self.predicted_seconds is not None:
            ratio = self.measured_vs_predicted
            shown = "?" if ratio is None else f"{ratio:.2f}"
            parts.append(f"predicted={self.predicted_seconds:.3g}s (measured/predicted={shown})")
        if self.error is not None:
            parts.append(f"error={type(self.error).__name__}")
        return f"RunReport({', '.join(parts)})"
