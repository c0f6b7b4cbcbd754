"""What ``optimize`` and ``optimize_streaming`` return: frozen results with a readable repr."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from amorsize.core.types import ExecutorKind, Machine, Plan, Prediction, Profile

__all__ = ["Diagnostics", "OptimizationResult", "StreamingOptimizationResult"]


@dataclass(frozen=True)
class Diagnostics:
    """Everything behind a decision, for ``optimize(..., profile=True)``.

    Attributes:
        profile: what the dry run measured (per-item durations, CPU times, pickled sizes, …).
        machine: the machine figures used (cores, memory, start method, measured costs).
        plan: the planner's answer, with the chosen prediction and the main alternatives.
        sampling_seconds: how long the dry run took.
        planning_seconds: how long the machine probe and the planner took together.
    """

    profile: Profile
    machine: Machine
    plan: Plan
    sampling_seconds: float
    planning_seconds: float

    @property
    def n_sampled(self) -> int:
        """Items timed one by one in the dry run."""
        return self.profile.n_sampled

    @property
    def item_durations(self) -> tuple[float, ...]:
        """Wall seconds of each serially sampled item."""
        return self.profile.durations

    @property
    def coefficient_of_variation(self) -> float:
        """Spread of item durations (standard deviation / mean)."""
        return self.profile.coefficient_of_variation

    @property
    def is_heterogeneous(self) -> bool:
        """True when durations vary enough to matter for load balancing."""
        return self.profile.is_heterogeneous

    @property
    def cpu_ratio(self) -> float:
        """CPU time over wall time of the sampled calls."""
        return self.profile.cpu_ratio

    @property
    def thread_speedup(self) -> float | None:
        """Measured speedup of two threads over one on sampled items (None if not probed)."""
        return self.profile.thread_speedup

    @property
    def input_bytes(self) -> float:
        """Mean pickled size of one item."""
        return self.profile.mean_input_bytes

    @property
    def output_bytes(self) -> float:
        """Mean pickled size of one result."""
        return self.profile.mean_output_bytes

    @property
    def peak_memory_bytes(self) -> int:
        """Peak memory growth during the dry run."""
        return self.profile.peak_memory_bytes

    @property
    def breakdown(self) -> Mapping[str, float]:
        """Predicted-time breakdown of the chosen plan (startup, dispatch, transfer, compute, imbalance)."""
        return self.plan.prediction.breakdown()

    @property
    def alternatives(self) -> tuple[Prediction, ...]:
        """Predictions of the main alternatives, cheapest first."""
        return self.plan.alternatives


@dataclass(frozen=True)
class OptimizationResult:
    """The recommendation for running ``func`` over ``data``.

    Attributes:
        n_jobs: workers to use (1 for serial).
        chunksize: items per chunk.
        executor: ``"serial"``, ``"threads"`` or ``"processes"``.
        reason: why, in a sentence or two.
        estimated_speedup: predicted serial time over predicted time of this plan.
        warnings: things to know (memory ceiling, pickling, globals, …).
        data: every item of the input, sampled ones included, in order (use it instead of the
            original when that was a generator or iterator).
        predicted_serial_time: predicted seconds to run the remaining items serially.
        predicted_parallel_time: predicted seconds with this plan.
        n_sampled: items the dry run ran (their results are reused by ``execute``).
        profile: :class:`Diagnostics` when ``profile=True`` was asked, else None.
    """

    n_jobs: int
    chunksize: int
    executor: ExecutorKind
    reason: str
    estimated_speedup: float
    warnings: tuple[str, ...]
    data: Iterable[Any] = field(repr=False)
    predicted_serial_time: float = 0.0
    predicted_parallel_time: float = 0.0
    n_sampled: int = 0
    profile: Diagnostics | None = field(default=None, repr=False)
    plan: Plan | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        lines = [
            f"Recommended: {self.executor}, n_jobs={self.n_jobs}, chunksize={self.chunksize}",
            f"Reason: {self.reason}",
            f"Estimated speedup: {self.estimated_speedup:.2f}x "
            f"(serial {self.predicted_serial_time:.3g}s → {self.predicted_parallel_time:.3g}s)",
        ]
        lines += [f"Warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


@dataclass(frozen=True)
class StreamingOptimizationResult:
    """The recommendation for streaming ``func`` over ``data`` with ``imap``/``imap_unordered``.

    Attributes:
        n_jobs, chunksize, executor, reason, estimated_speedup, warnings, data: as in
            :class:`OptimizationResult`.
        use_ordered: True to use ``imap`` (results in input order), False for ``imap_unordered``
            (better load balance for heterogeneous items when order does not matter).
    """

    n_jobs: int
    chunksize: int
    executor: ExecutorKind
    use_ordered: bool
    reason: str
    estimated_speedup: float
    warnings: tuple[str, ...]
    data: Iterable[Any] = field(repr=False)
    profile: Diagnostics | None = field(default=None, repr=False)
