"""What ``optimize`` and ``optimize_streaming`` return: frozen results with a readable repr.

Besides their fields, results render themselves: ``str()`` (a few lines), ``rich.print(result)``
(the full report), ``result._repr_html_()`` (a table in Jupyter), ``result.to_dict()`` (JSON-ready),
``result.plot()`` (matplotlib, the ``plot`` extra) and ``result.save_config(path)`` (a JSON plan
that :func:`amorsize.load_config` reads back).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from amorsize.core.types import ExecutorKind, Machine, Plan, Prediction, Profile

if TYPE_CHECKING:
    from rich.console import RenderableType

    from amorsize.config import SavedConfig
    from amorsize.report.plot import MeasuredPoint

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
        plan: the planner's full answer (chosen prediction, serial, alternatives).

    The measurements are kept privately even without ``profile=True`` (when the caller passed them
    as ``_diagnostics``), so :meth:`plot` and the reports work on any result.
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
    _diagnostics: Diagnostics | None = field(default=None, repr=False, compare=False)

    def _measurements(self) -> Diagnostics | None:
        """The diagnostics behind this result, whether or not ``profile=True`` was asked."""
        return self.profile if self.profile is not None else self._diagnostics

    def to_dict(self, *, include_profile: bool | None = None) -> dict[str, Any]:
        """The recommendation as a JSON-ready dict (see :mod:`amorsize.report.data` for the keys).

        Args:
            include_profile: add the measurements under ``"profile"``; None: when ``profile=True``
                was asked.

        Returns:
            A dict that ``json.dumps`` accepts (non-finite numbers become None).
        """
        from amorsize.report.data import result_dict

        return result_dict(self, _diagnostics_to_show(self, include_profile))

    def save_config(
        self,
        path: str | os.PathLike[str],
        function_name: str | None = None,
        *,
        target_chunk_duration: float | None = None,
        comment: str = "",
    ) -> SavedConfig:
        """Save this plan as a JSON config that :func:`amorsize.load_config` reads back.

        Args:
            path: the file to write.
            function_name: the function the plan is for (recorded for people).
            target_chunk_duration: the target the plan was made with (default 0.2 s).
            comment: free text to keep in the file.

        Returns:
            The :class:`~amorsize.config.SavedConfig` written.

        Raises:
            ConfigurationError: the file cannot be written.
        """
        return _save(self, path, function_name, target_chunk_duration, comment)

    def plot(
        self, path: str | os.PathLike[str] | None = None, *, measured: Sequence[MeasuredPoint] = ()
    ) -> Any:
        """Predicted speedup against workers for a few chunk sizes (chosen point marked), and the breakdown.

        Args:
            path: save the figure there (``.png``, ``.svg``, ``.pdf``); None only returns it.
            measured: measured speedups to draw on the same axes.

        Returns:
            The ``matplotlib.figure.Figure`` (a notebook displays it).

        Raises:
            MissingExtraError: matplotlib is missing (``pip install 'amorsize[plot]'``).
            ConfigurationError: the result carries no measurements, or ``path`` cannot be written.
        """
        return _plot(self, path, measured)

    def _repr_html_(self) -> str:
        from amorsize.report.html import result_html

        return result_html(self)

    def __rich__(self) -> RenderableType:
        from amorsize.report.console import result_report

        return result_report(self)

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
    _diagnostics: Diagnostics | None = field(default=None, repr=False, compare=False)

    def _measurements(self) -> Diagnostics | None:
        """The diagnostics behind this result, whether or not ``profile=True`` was asked."""
        return self.profile if self.profile is not None else self._diagnostics

    def to_dict(self, *, include_profile: bool | None = None) -> dict[str, Any]:
        """As :meth:`OptimizationResult.to_dict`, plus ``use_ordered``."""
        from amorsize.report.data import result_dict

        return result_dict(self, _diagnostics_to_show(self, include_profile))

    def save_config(
        self,
        path: str | os.PathLike[str],
        function_name: str | None = None,
        *,
        target_chunk_duration: float | None = None,
        comment: str = "",
    ) -> SavedConfig:
        """As :meth:`OptimizationResult.save_config`."""
        return _save(self, path, function_name, target_chunk_duration, comment)

    def plot(
        self, path: str | os.PathLike[str] | None = None, *, measured: Sequence[MeasuredPoint] = ()
    ) -> Any:
        """As :meth:`OptimizationResult.plot`."""
        return _plot(self, path, measured)

    def _repr_html_(self) -> str:
        from amorsize.report.html import result_html

        return result_html(self)

    def __rich__(self) -> RenderableType:
        from amorsize.report.console import result_report

        return result_report(self)


def _diagnostics_to_show(
    result: OptimizationResult | StreamingOptimizationResult, include: bool | None
) -> Diagnostics | None:
    if include is None:
        return result.profile
    if include:
        diagnostics = result._measurements()
        if diagnostics is None:
            raise _no_measurements("to_dict(include_profile=True)")
        return diagnostics
    return None


def _no_measurements(what: str) -> Exception:
    from amorsize.errors import ConfigurationError

    return ConfigurationError(
        f"{what} needs the measurements behind the decision, and this result has none; "
        "get it from optimize(func, data, profile=True)"
    )


def _save(
    result: OptimizationResult | StreamingOptimizationResult,
    path: str | os.PathLike[str],
    function_name: str | None,
    target_chunk_duration: float | None,
    comment: str,
) -> SavedConfig:
    from amorsize.config import save_config

    diagnostics = result._measurements()
    return save_config(
        result,
        path,
        function_name=function_name,
        target_chunk_duration=target_chunk_duration,
        machine=None if diagnostics is None else diagnostics.machine,
        comment=comment,
    )


def _plot(
    result: OptimizationResult | StreamingOptimizationResult,
    path: str | os.PathLike[str] | None,
    measured: Sequence[MeasuredPoint],
) -> Any:
    from amorsize.report.plot import plot

    diagnostics = result._measurements()
    if diagnostics is None:
        raise _no_measurements("plot()")
    return plot(diagnostics, path, measured=measured)
