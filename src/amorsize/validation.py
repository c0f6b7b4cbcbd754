"""Check a recommendation on this machine: time serial and the planned run, and compare with the model.

::

    data ──list()──► items            materialised once: a generator can be consumed only once
      │
      ├─► execute_planned(func, items, **options) ──► parallel_time (dry run + planning + run),
      │        │                                       the plan, and its RunReport
      │        └─ the dry run's results are reused, as in execute(): func runs once per item
      ├─► [func(x) for x in items] ──────────────────► serial_time
      └─► compare=True: execute(func, items, executor=…, n_jobs=…, chunksize=…) for a few
          neighbours of the plan (no dry run: all three forced) ──► alternatives

The planned run goes first, so the serial loop meets warm caches (imports, allocator): the measured
speedup errs on the low side.

Example:
    >>> result = validate_optimization(abs, range(-500, 500))
    >>> result.plan.executor, result.n_items
    ('serial', 1000)
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from amorsize.api import execute, execute_planned, plan_is_forced
from amorsize.core.model import blas_threads_per_worker
from amorsize.core.types import Candidate, ExecutorKind
from amorsize.errors import ConfigurationError
from amorsize.measure.machine import probe_machine
from amorsize.results import OptimizationResult
from amorsize.run.report import RunReport

__all__ = ["AlternativeTiming", "ValidationResult", "quick_validate", "validate_optimization"]

#: Accuracy (``min/max`` of predicted and measured speedup, %) at or above which a prediction is
#: called excellent, good, or moderate in the report. The seed's thresholds (its benchmark module).
EXCELLENT_ACCURACY = 90.0
GOOD_ACCURACY = 75.0
MODERATE_ACCURACY = 60.0


@dataclass(frozen=True)
class AlternativeTiming:
    """One way to run, measured.

    Attributes:
        executor: ``"serial"``, ``"threads"`` or ``"processes"``.
        n_jobs: workers.
        chunksize: items per chunk (the runner may adapt it during the run).
        seconds: measured wall time of ``execute`` with this plan forced (no dry run).
        predicted_seconds: the model's prediction when the plan listed this candidate among its
            alternatives, else None.
    """

    executor: ExecutorKind
    n_jobs: int
    chunksize: int
    seconds: float
    predicted_seconds: float | None = None

    def __str__(self) -> str:
        return str(Candidate(self.executor, self.n_jobs, self.chunksize))


def _speedup(serial: float, parallel: float) -> float:
    if parallel <= 0:
        return 1.0 if serial <= 0 else math.inf
    return serial / parallel


@dataclass(frozen=True, repr=False)
class ValidationResult:
    """Measured against predicted: how good the recommendation and the model were on this machine.

    Attributes:
        serial_time: measured seconds of a plain ``[func(x) for x in data]``.
        parallel_time: measured seconds of ``execute`` end to end (dry run, planning, run).
        actual_speedup: ``serial_time / parallel_time``.
        predicted_speedup: the model's speedup on the same footing: predicted serial time of every
            item over (the analysis it had already done + its predicted run time).
        accuracy_percent: ``100 × min / max`` of predicted and actual speedup (100: exact).
        error: signed relative error of the predicted speedup, %: ``(predicted − actual) / actual ×
            100``; positive when the model promised more than the run delivered.
        plan: the recommendation that was run.
        alternatives: with ``compare=True``, the measured neighbours of the plan (other worker counts
            and chunk sizes, the other executor kind), fastest first; else empty.
        n_items: items run.
        analysis_seconds: the part of ``parallel_time`` before the run: dry run, probe, planning.
        predicted_seconds: the model's predicted time of the run after the dry run.
        run_seconds: the measured time of that run (``report.wall_seconds``).
        report: the run's :class:`~amorsize.run.report.RunReport`.
    """

    serial_time: float
    parallel_time: float
    actual_speedup: float
    predicted_speedup: float
    accuracy_percent: float
    error: float
    plan: OptimizationResult
    alternatives: tuple[AlternativeTiming, ...] = ()
    n_items: int = 0
    analysis_seconds: float = 0.0
    predicted_seconds: float = 0.0
    run_seconds: float = 0.0
    report: RunReport | None = field(default=None, compare=False)

    @property
    def run_error(self) -> float:
        """Signed relative error of the predicted run time, %: ``(predicted − measured) / measured``."""
        if self.run_seconds <= 0:
            return 0.0
        return (self.predicted_seconds - self.run_seconds) / self.run_seconds * 100.0

    @property
    def recommendations(self) -> tuple[str, ...]:
        """Short advice drawn from the measurements."""
        advice: list[str] = []
        if self.plan.executor == "serial":
            advice.append("Serial was recommended: the work is too small or too serialised to share out.")
        elif self.actual_speedup < 1.0:
            advice.append(
                "The planned run was slower than serial here: overheads outweighed the gain "
                "(try more items per call, or heavier items)."
            )
        elif self.actual_speedup < 1.2:
            advice.append("Marginal speedup: overheads nearly equal what the parallel run saves.")
        if self.accuracy_percent < GOOD_ACCURACY:
            if self.actual_speedup < self.predicted_speedup:
                advice.append(
                    "The run was slower than predicted: other programs on the cores, or costs the "
                    "model underrates (see run_error and the report's utilisation)."
                )
            else:
                advice.append("The run was faster than predicted: the model is conservative here.")
        if self.alternatives:
            best = self.alternatives[0]
            if best.seconds < 0.9 * self.parallel_time:
                advice.append(
                    f"{best} ran {self.parallel_time / best.seconds:.2f}× faster than the recommendation "
                    "(analysis included in the recommendation's time); consider amorsize.tune()."
                )
        return tuple(advice)

    def is_accurate(self, threshold: float = GOOD_ACCURACY) -> bool:
        """True when ``accuracy_percent`` reaches ``threshold``."""
        return self.accuracy_percent >= threshold

    @property
    def candidate(self) -> Candidate:
        """The recommendation as the planner's type."""
        return Candidate(self.plan.executor, self.plan.n_jobs, self.plan.chunksize)

    def __repr__(self) -> str:
        return (
            f"ValidationResult(plan={self.candidate!s}, "
            f"serial={self.serial_time:.3g}s, parallel={self.parallel_time:.3g}s, "
            f"actual_speedup={self.actual_speedup:.2f}x, predicted_speedup={self.predicted_speedup:.2f}x, "
            f"accuracy={self.accuracy_percent:.1f}%, error={self.error:+.1f}%)"
        )

    def __str__(self) -> str:
        plan = self.candidate
        lines = [
            "=== Benchmark Validation Results ===",
            "",
            f"Recommendation: {plan} ({self.n_items} items)",
            "",
            "Performance Measurements:",
            f"  Serial execution time:   {self.serial_time:.4f}s",
            f"  Parallel execution time: {self.parallel_time:.4f}s "
            f"(analysis {self.analysis_seconds:.4f}s + run {self.run_seconds:.4f}s)",
            f"  Actual speedup:          {self.actual_speedup:.2f}x",
            f"  Predicted speedup:       {self.predicted_speedup:.2f}x",
            "",
            "Prediction Accuracy:",
            f"  Accuracy:                {self.accuracy_percent:.1f}%",
            f"  Error:                   {self.error:+.1f}%",
            f"  Run time:                predicted {self.predicted_seconds:.4f}s, "
            f"measured {self.run_seconds:.4f}s ({self.run_error:+.1f}%)",
            "",
        ]
        if self.accuracy_percent >= EXCELLENT_ACCURACY:
            lines.append("Excellent prediction accuracy.")
        elif self.accuracy_percent >= GOOD_ACCURACY:
            lines.append("Good prediction accuracy.")
        elif self.accuracy_percent >= MODERATE_ACCURACY:
            lines.append("Moderate prediction accuracy: machine-specific factors may apply.")
        else:
            lines.append("Low prediction accuracy: investigate machine-specific factors.")
        if self.alternatives:
            lines += ["", "Alternatives (measured, no analysis):"]
            rows: list[tuple[str, float, float | None]] = [
                ("serial", self.serial_time, None),
                (f"{plan} (recommended)", self.run_seconds, None),
            ]
            rows += [(str(alt), alt.seconds, alt.predicted_seconds) for alt in self.alternatives]
            width = max(len(name) for name, _, _ in rows)
            for name, seconds, predicted in sorted(rows, key=lambda row: row[1]):
                shown = "" if predicted is None else f"  (predicted {predicted:.4f}s)"
                lines.append(f"  {name:<{width}}  {seconds:.4f}s{shown}")
        advice = self.recommendations
        if advice:
            lines += ["", "Recommendations:"] + [f"  - {line}" for line in advice]
        return "\n".join(lines)


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(f"amorsize validate: {message}", file=sys.stderr)


def _alternative_candidates(plan: OptimizationResult, n_items: int, usable_cores: int) -> list[Candidate]:
    """Neighbours of the plan: ¼× and 4× the chunk size, ½× and 2× the workers, the other kind.

    Halving the workers is left out when it leaves one: a pool of one worker is the serial run
    (timed anyway) plus the pool's costs, a plan the planner never makes and so cannot predict.
    """
    kind, n_jobs, chunksize = plan.executor, plan.n_jobs, plan.chunksize
    found: list[Candidate] = []

    def add(executor: ExecutorKind, workers: int, size: int) -> None:
        workers = max(1, workers)
        share = max(1, -(-n_items // workers))
        candidate = Candidate(executor, workers, max(1, min(size, share)))
        if candidate not in found and candidate != Candidate(kind, n_jobs, chunksize):
            found.append(candidate)

    if kind == "serial":
        cores = max(2, usable_cores)
        size = max(1, -(-n_items // (4 * cores)))
        add("processes", cores, size)
        add("threads", cores, size)
        return found
    add(kind, n_jobs, chunksize // 4)
    add(kind, n_jobs, chunksize * 4)
    if n_jobs // 2 >= 2:
        add(kind, n_jobs // 2, chunksize)
    if kind == "threads" or n_jobs * 2 <= 2 * usable_cores:
        add(kind, n_jobs * 2, chunksize)
    other: ExecutorKind = "threads" if kind == "processes" else "processes"
    add(other, min(n_jobs, usable_cores) if other == "processes" else n_jobs, chunksize)
    return found


def _predicted(plan: OptimizationResult, candidate: Candidate) -> float | None:
    if plan.plan is None:
        return None
    for prediction in plan.plan.alternatives:
        if prediction.candidate == candidate:
            return prediction.total
    return None


def validate_optimization(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    *,
    verbose: bool = False,
    compare: bool = False,
    **optimize_options: Any,
) -> ValidationResult:
    """Run ``func`` over ``data`` serially and as recommended, and compare the speedup with the prediction.

    ``data`` is materialised into a list first (a generator can be consumed only once, and it is run
    at least twice here), so it must fit in memory; for a large input use :func:`quick_validate`.
    The recommended run is a real :func:`~amorsize.execute` (its dry run's results are reused), timed
    end to end; worker pools already running in this process are reused, as ``execute`` would. The
    run is recorded in the store's history like any other, which helps calibration.

    Args:
        func: a one-argument function.
        data: any iterable (materialised; see above).
        verbose: print progress and the result to stderr.
        compare: also time a few neighbours of the recommendation (¼× and 4× its chunk size, ½×
            (if that is 2 or more) and 2× its workers, threads instead of processes or the reverse)
            so you see where it sits.
        **optimize_options: passed to :func:`~amorsize.api.execute_planned`: ``sample_size``,
            ``target_chunk_duration``, ``max_workers``, ``min_speedup``, ``n_jobs``, ``chunksize``,
            ``executor``, ``start_method``, … (not all three of executor, n_jobs and chunksize, nor
            ``executor="serial"``: then nothing is predicted; use :func:`~amorsize.tuning.tune` to
            compare forced plans).

    Returns:
        A :class:`ValidationResult`; ``print()`` it for a readable report.

    Raises:
        ConfigurationError: ``data`` is empty, or the plan is forced (executor, n_jobs and chunksize
            all given, or ``executor="serial"``), or a bad option. Errors of ``func`` propagate as
            from ``execute`` (``SamplingError``, ``ItemError``).

    Example:
        >>> validate_optimization(abs, [-1, 2, -3]).serial_time >= 0
        True
    """
    if plan_is_forced(*(optimize_options.get(name) for name in ("executor", "n_jobs", "chunksize"))):
        raise ConfigurationError(
            "validate_optimization compares the model's prediction with a measurement, but with "
            "executor, n_jobs and chunksize all given (or executor='serial') nothing is planned or "
            "predicted; leave them to the planner, or use amorsize.tune() to measure forced plans"
        )
    items = list(data)
    if not items:
        raise ConfigurationError("data is empty: there is nothing to validate (pass at least one item)")
    n = len(items)

    _log(verbose, f"running the recommended plan on {n} items …")
    started = time.perf_counter()
    _, report, plan = execute_planned(func, items, **optimize_options)
    parallel_time = time.perf_counter() - started
    assert plan is not None  # not everything was forced, so execute_planned planned
    _log(
        verbose,
        f"{Candidate(plan.executor, plan.n_jobs, plan.chunksize)}: {parallel_time:.4f}s "
        f"(predicted run {plan.predicted_parallel_time:.4f}s, measured {report.wall_seconds:.4f}s)",
    )

    _log(verbose, "running serially …")
    started = time.perf_counter()
    for item in items:
        func(item)
    serial_time = time.perf_counter() - started
    _log(verbose, f"serial: {serial_time:.4f}s")

    analysis = max(0.0, parallel_time - report.wall_seconds)
    remaining = max(0, n - plan.n_sampled)
    per_item = plan.predicted_serial_time / remaining if remaining else 0.0
    predicted_serial_all = per_item * n if remaining else analysis
    predicted_speedup = _speedup(predicted_serial_all, analysis + plan.predicted_parallel_time)
    actual_speedup = _speedup(serial_time, parallel_time)
    if actual_speedup > 0 and math.isfinite(actual_speedup) and math.isfinite(predicted_speedup):
        error = (predicted_speedup - actual_speedup) / actual_speedup * 100.0
        accuracy = 100.0 * min(predicted_speedup, actual_speedup) / max(predicted_speedup, actual_speedup)
    else:
        error, accuracy = 0.0, 100.0

    alternatives: list[AlternativeTiming] = []
    if compare:
        machine = probe_machine(start_method=optimize_options.get("start_method"))
        for candidate in _alternative_candidates(plan, n, machine.usable_cores):
            _log(verbose, f"comparing {candidate} …")
            processes = candidate.executor == "processes"
            started = time.perf_counter()
            execute(
                func,
                items,
                executor=candidate.executor,
                n_jobs=candidate.n_jobs,
                chunksize=candidate.chunksize,
                start_method=optimize_options.get("start_method"),
                # as a planned run would: BLAS threads × workers within the cores
                blas_threads=blas_threads_per_worker(machine, candidate.n_jobs) if processes else None,
            )
            seconds = time.perf_counter() - started
            alternatives.append(
                AlternativeTiming(
                    candidate.executor,
                    candidate.n_jobs,
                    candidate.chunksize,
                    seconds,
                    _predicted(plan, candidate),
                )
            )
        alternatives.sort(key=lambda alt: alt.seconds)

    result = ValidationResult(
        serial_time=serial_time,
        parallel_time=parallel_time,
        actual_speedup=actual_speedup,
        predicted_speedup=predicted_speedup,
        accuracy_percent=accuracy,
        error=error,
        plan=plan,
        alternatives=tuple(alternatives),
        n_items=n,
        analysis_seconds=analysis,
        predicted_seconds=plan.predicted_parallel_time,
        run_seconds=report.wall_seconds,
        report=report,
    )
    if verbose:
        print(result, file=sys.stderr)
    return result


def _subset(data: Iterable[Any], sample_size: int) -> list[Any]:
    """Up to ``sample_size`` items: evenly spaced over a sequence, the first ones of an iterator."""
    if isinstance(data, Sequence):
        n = len(data)
        if n <= sample_size:
            return list(data)
        step = n / sample_size
        return [data[int(i * step)] for i in range(sample_size)]
    return list(itertools.islice(data, sample_size))


def quick_validate(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    sample_size: int = 100,
    **kw: Any,
) -> ValidationResult:
    """:func:`validate_optimization` on a subset of ``data``: quick, for large inputs.

    The subset is ``sample_size`` items spread evenly over a sequence (so items that differ along the
    input, e.g. long ones at the end, are represented), or the first ``sample_size`` of an iterator
    (only those are consumed). The plan is made for the subset, so it answers "how would these
    items run", which for small subsets is often "serially".

    Args:
        func: a one-argument function.
        data: any iterable.
        sample_size: items to validate on (≥ 1).
        **kw: as :func:`validate_optimization` (``verbose``, ``compare``, optimize options).

    Returns:
        A :class:`ValidationResult` for the subset.

    Raises:
        ConfigurationError: ``sample_size`` < 1, or as :func:`validate_optimization`.

    Example:
        >>> quick_validate(abs, range(-10_000, 10_000), sample_size=50).n_items
        50
    """
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
        raise ConfigurationError(f"sample_size must be an integer >= 1 (got {sample_size!r})")
    return validate_optimization(func, _subset(data, sample_size), **kw)
