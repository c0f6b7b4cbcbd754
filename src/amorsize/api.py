"""The public functions: thin wiring of measure → plan → run. No logic of their own beyond checks.

::

    optimize(func, data) ─► sample (dry run) ─► probe_machine ─► plan ─► OptimizationResult
    execute(func, data)  ─► the same, then ─► pool (reused) ─► runner ─► results (+ RunReport)
                                               the dry run's results are emitted, not recomputed
"""

from __future__ import annotations

import itertools
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from amorsize.core.model import blas_threads_per_worker
from amorsize.core.planner import plan as make_plan
from amorsize.core.types import Candidate, ExecutorKind, Plan, PlanOptions, Prediction
from amorsize.errors import ConfigurationError
from amorsize.measure.identity import function_key, function_name
from amorsize.measure.machine import probe_machine
from amorsize.measure.sampler import Sample, sample
from amorsize.report.text import explain
from amorsize.results import Diagnostics, OptimizationResult, StreamingOptimizationResult
from amorsize.run.hooks import ProgressBar, RunHooks
from amorsize.run.pools import lease, warm_workers
from amorsize.run.report import RunReport
from amorsize.run.runner import Runner
from amorsize.store import default_store

__all__ = ["execute", "imap", "optimize", "optimize_streaming", "process_in_batches"]

LOCAL_EXECUTORS: tuple[str, ...] = ("serial", "threads", "processes")


def _check_positive_int(name: str, value: Any, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an integer >= 1 or None (got {value!r})")


def _check_options(
    *,
    target_chunk_duration: float,
    n_jobs: int | None,
    chunksize: int | None,
    executor: str | None,
    max_workers: int | None,
) -> None:
    if (
        isinstance(target_chunk_duration, bool)
        or not isinstance(target_chunk_duration, (int, float))
        or not math.isfinite(target_chunk_duration)
        or target_chunk_duration <= 0
    ):
        raise ConfigurationError(
            f"target_chunk_duration must be a positive number of seconds, e.g. 0.2 "
            f"(got {target_chunk_duration!r})"
        )
    _check_positive_int("n_jobs", n_jobs)
    _check_positive_int("chunksize", chunksize)
    _check_positive_int("max_workers", max_workers)
    if executor is not None and executor not in LOCAL_EXECUTORS:
        raise ConfigurationError(
            f"executor must be one of {', '.join(repr(kind) for kind in LOCAL_EXECUTORS)} or None "
            f"(got {executor!r})"
        )


def _empty_plan(reason: str) -> Plan:
    serial = Prediction(Candidate("serial", 1, 1), 0.0, 0.0, 0.0, 0.0, 0.0)
    return Plan(candidate=serial.candidate, prediction=serial, serial=serial, reasons=(reason,))


def analyse(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    *,
    sample_size: int = 5,
    target_chunk_duration: float = 0.2,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    executor: str | None = None,
    max_workers: int | None = None,
    start_method: str | None = None,
    min_speedup: float = 1.2,
    assumed_stream_items: int | None = None,
) -> tuple[Sample, Diagnostics, tuple[str, ...]]:
    """Run the dry run, probe the machine and plan; the shared first half of every API call.

    Returns:
        The sample (with the dry run's results and the rest of the data), the diagnostics (profile,
        machine, plan, timings) and the warnings to show.

    Raises:
        ConfigurationError: a bad argument. SamplingError: ``func`` raised during the dry run.
    """
    _check_options(
        target_chunk_duration=target_chunk_duration,
        n_jobs=n_jobs,
        chunksize=chunksize,
        executor=executor,
        max_workers=max_workers,
    )
    measured = sample(func, data, sample_size=sample_size)
    began = time.perf_counter()
    machine = probe_machine(start_method=start_method)
    total = measured.profile.total_items
    remaining = None if total is None else max(0, total - measured.n_done)
    options = PlanOptions(
        target_chunk_duration=float(target_chunk_duration),
        n_items=remaining,
        max_workers=max_workers,
        executor=cast("ExecutorKind | None", executor),
        n_jobs=n_jobs,
        chunksize=chunksize,
        min_speedup=min_speedup,
        warm_workers=warm_workers(),
        **({} if assumed_stream_items is None else {"assumed_stream_items": assumed_stream_items}),
    )
    if measured.n_done == 0:
        the_plan = _empty_plan("the data is empty: nothing to run")
    elif remaining == 0:
        the_plan = _empty_plan(
            f"the dry run already computed all {measured.n_done} items: nothing left to run"
        )
    else:
        the_plan = make_plan(measured.profile, machine, options)
    warnings = measured.warnings + the_plan.warnings
    if the_plan.candidate.executor == "processes":
        warnings += measured.process_caveats
    diagnostics = Diagnostics(
        profile=measured.profile,
        machine=machine,
        plan=the_plan,
        sampling_seconds=measured.seconds,
        planning_seconds=time.perf_counter() - began,
    )
    return measured, diagnostics, tuple(dict.fromkeys(warnings))


def optimize(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    *,
    sample_size: int = 5,
    target_chunk_duration: float = 0.2,
    verbose: bool = False,
    profile: bool = False,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    executor: str | None = None,
    max_workers: int | None = None,
    start_method: str | None = None,
    min_speedup: float = 1.2,
) -> OptimizationResult:
    """Measure ``func`` on a few items and this machine, and recommend how to run it over ``data``.

    Args:
        func: a one-argument function (lambdas and closures work: cloudpickle ships them).
        data: a list, range, generator or any iterable. Use ``result.data`` afterwards: for an
            iterator it yields every item, the sampled ones included.
        sample_size: items to time serially when cheap (sampling adapts: more for fast or varied
            items, fewer for heavy ones).
        target_chunk_duration: seconds one chunk should take at most.
        verbose: print a short explanation of what was measured and chosen.
        profile: attach :class:`~amorsize.results.Diagnostics` as ``result.profile``.
        n_jobs, chunksize, executor: force these (the rest is still planned).
        max_workers: an upper bound on workers.
        start_method: multiprocessing start method to plan for (default: the platform's).
        min_speedup: predicted speedup a parallel plan must reach to be recommended.

    Returns:
        An :class:`~amorsize.results.OptimizationResult`.

    Raises:
        ConfigurationError: a bad argument (the message says which and how to fix it).
        SamplingError: ``func`` raised on a sampled item (index named, original chained).

    Example:
        >>> result = optimize(abs, range(-1000, 1000))
        >>> result.executor  # 2,000 calls of abs() are far too cheap to parallelise
        'serial'
    """
    measured, diagnostics, warnings = analyse(
        func,
        data,
        sample_size=sample_size,
        target_chunk_duration=target_chunk_duration,
        n_jobs=n_jobs,
        chunksize=chunksize,
        executor=executor,
        max_workers=max_workers,
        start_method=start_method,
        min_speedup=min_speedup,
    )
    the_plan = diagnostics.plan
    result = OptimizationResult(
        n_jobs=the_plan.candidate.n_jobs,
        chunksize=the_plan.candidate.chunksize,
        executor=the_plan.candidate.executor,
        reason=" ".join(the_plan.reasons),
        estimated_speedup=the_plan.estimated_speedup,
        warnings=warnings,
        data=measured.data(),
        predicted_serial_time=the_plan.serial.total,
        predicted_parallel_time=the_plan.prediction.total,
        n_sampled=measured.n_done,
        profile=diagnostics if profile else None,
        plan=the_plan,
    )
    if verbose:
        print(explain(result, diagnostics), file=sys.stderr)
    return result


def optimize_streaming(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    *,
    sample_size: int = 5,
    target_chunk_duration: float = 0.2,
    prefer_ordered: bool | None = None,
    verbose: bool = False,
    profile: bool = False,
    max_workers: int | None = None,
    start_method: str | None = None,
) -> StreamingOptimizationResult:
    """Recommend workers and chunk size for streaming ``func`` over a large or endless ``data``.

    For users who drive their own ``Pool.imap``/``imap_unordered``. The plan assumes a long stream
    (start-up is amortised), and ``use_ordered`` is False only when ``prefer_ordered`` is None and
    the items are heterogeneous (completion order then balances load better).

    Args:
        func, data, sample_size, target_chunk_duration, verbose, profile, max_workers,
            start_method: as in :func:`optimize`.
        prefer_ordered: True/False to force ``use_ordered``; None to let the profile decide.

    Returns:
        A :class:`~amorsize.results.StreamingOptimizationResult`; iterate ``result.data``.

    Raises:
        ConfigurationError, SamplingError: as in :func:`optimize`.
    """
    measured, diagnostics, warnings = analyse(
        func,
        data,
        sample_size=sample_size,
        target_chunk_duration=target_chunk_duration,
        max_workers=max_workers,
        start_method=start_method,
    )
    the_plan = diagnostics.plan
    reasons = list(the_plan.reasons)
    if prefer_ordered is None:
        use_ordered = not measured.profile.is_heterogeneous
        if not use_ordered:
            reasons.append(
                f"Item durations vary (CV {measured.profile.coefficient_of_variation:.2f}): "
                "imap_unordered balances load better if order does not matter."
            )
    else:
        use_ordered = bool(prefer_ordered)
    result = StreamingOptimizationResult(
        n_jobs=the_plan.candidate.n_jobs,
        chunksize=the_plan.candidate.chunksize,
        executor=the_plan.candidate.executor,
        use_ordered=use_ordered,
        reason=" ".join(reasons),
        estimated_speedup=the_plan.estimated_speedup,
        warnings=warnings,
        data=measured.data(),
        profile=diagnostics if profile else None,
    )
    if verbose:
        print(explain(result, diagnostics), file=sys.stderr)
    return result


OnErrorPolicy = Literal["raise", "collect"]


@dataclass(frozen=True)
class _RunSetup:
    """Everything a run needs, decided before the first chunk is sent."""

    candidate: Candidate
    measured: Sample | None
    diagnostics: Diagnostics | None
    warnings: tuple[str, ...]
    blas_threads: int | None


def _prepare(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    *,
    n_jobs: int | None,
    chunksize: int | None,
    executor: str | None,
    start_method: str | None,
    blas_threads: int | None,
    optimize_options: Mapping[str, Any],
) -> _RunSetup:
    """Plan a run; skip the dry run only when executor, n_jobs and chunksize are all forced."""
    unknown = set(optimize_options) - _OPTIMIZE_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(sorted(unknown))}; execute and imap accept "
            f"{', '.join(sorted(_OPTIMIZE_OPTIONS))} besides their own arguments"
        )
    _check_positive_int("blas_threads", blas_threads)
    if executor is not None and n_jobs is not None and chunksize is not None:
        _check_options(
            target_chunk_duration=optimize_options.get("target_chunk_duration", 0.2),
            n_jobs=n_jobs,
            chunksize=chunksize,
            executor=executor,
            max_workers=None,
        )
        kind = cast(ExecutorKind, executor)
        candidate = Candidate(kind, 1 if kind == "serial" else n_jobs, chunksize)
        return _RunSetup(candidate, None, None, (), blas_threads)
    measured, diagnostics, warnings = analyse(
        func,
        data,
        n_jobs=n_jobs,
        chunksize=chunksize,
        executor=executor,
        start_method=start_method,
        **optimize_options,
    )
    candidate = diagnostics.plan.candidate
    if blas_threads is None and candidate.executor == "processes":
        blas_threads = blas_threads_per_worker(diagnostics.machine, candidate.n_jobs)
    return _RunSetup(candidate, measured, diagnostics, warnings, blas_threads)


_OPTIMIZE_OPTIONS = frozenset(
    {"sample_size", "target_chunk_duration", "max_workers", "min_speedup", "assumed_stream_items"}
)


def _run(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    setup: _RunSetup,
    *,
    ordered: bool,
    timeout: float | None,
    on_error: OnErrorPolicy,
    placeholder: Any,
    hooks: Sequence[RunHooks],
    progress: bool,
    start_method: str | None,
    target_chunk_duration: float,
    report_sink: list[RunReport],
) -> Iterator[Any]:
    """Lease a backend, run, yield results; record the run in the store's history at the end."""
    candidate = setup.candidate
    measured = setup.measured
    items: Iterable[Any] = measured.rest() if measured is not None else data
    total = measured.profile.total_items if measured is not None else _length(data)
    n_done = measured.n_done if measured is not None else 0
    all_hooks = list(hooks)
    if progress:
        all_hooks.append(ProgressBar())
    predicted = setup.diagnostics.plan.prediction.total if setup.diagnostics is not None else None
    with lease(
        candidate.executor, candidate.n_jobs, start_method=start_method, blas_threads=setup.blas_threads
    ) as backend:
        runner = Runner(
            backend,
            func,
            items,
            chunksize=candidate.chunksize,
            target_chunk_duration=target_chunk_duration,
            n_items=None if total is None else max(0, total - n_done),
            start=n_done,
            ordered=ordered,
            on_error=on_error,
            placeholder=placeholder,
            item_timeout=timeout,
            hooks=all_hooks,
            precomputed=measured.results if measured is not None else None,
            predicted_seconds=predicted,
        )
        try:
            yield from runner
        finally:
            report = runner.report
            report_sink.append(report)
            _record_history(func, report)


def _length(data: Iterable[Any]) -> int | None:
    if iter(data) is data:
        return None
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _record_history(func: Callable[..., Any], report: RunReport) -> None:
    """Keep predicted vs measured time in the store; a store problem never fails a run."""
    try:
        default_store().record_run(
            {
                "function_key": function_key(func),
                "function_name": function_name(func),
                "executor": report.executor,
                "n_jobs": report.n_workers,
                "chunksize": report.initial_chunksize,
                "n_items": report.n_items,
                "predicted_seconds": report.predicted_seconds,
                "measured_seconds": report.wall_seconds,
                "status": report.status,
                "final_chunksize": report.final_chunksize,
                "busy_seconds": report.busy_seconds,
                "items_from_dry_run": report.items_from_dry_run,
            }
        )
    except Exception as error:  # the run's results matter more than its history
        warnings.warn(f"amorsize could not record the run in its store: {error}", stacklevel=3)


def execute(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    *,
    verbose: bool = False,
    progress: bool = False,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    executor: str | None = None,
    timeout: float | None = None,
    on_error: OnErrorPolicy = "raise",
    placeholder: Any = None,
    return_report: bool = False,
    hooks: Sequence[RunHooks] = (),
    start_method: str | None = None,
    blas_threads: int | None = None,
    **optimize_options: Any,
) -> Any:
    """Plan how to run ``func`` over ``data`` and run it that way; results in input order.

    The dry run's results are part of the output: ``func`` is called exactly once per item.

    Args:
        func: a one-argument function (lambdas and closures work).
        data: a list, range, generator or any iterable.
        verbose: print the analysis and a summary of the run to stderr.
        progress: show a progress bar (items, rate, ETA) on stderr.
        n_jobs, chunksize, executor: override the plan (``"serial"``, ``"threads"``,
            ``"processes"``); when all three are given no dry run is made.
        timeout: seconds one item may run; over it the item is stopped (a process worker is
            killed and replaced) and :class:`~amorsize.errors.ItemTimeoutError` is raised.
        on_error: ``"raise"`` (stop at the first failure) or ``"collect"`` (failed positions
            hold ``placeholder``; the failures are in the report).
        placeholder: the result at a failed position under ``on_error="collect"``.
        return_report: return ``(results, report)`` with the :class:`~amorsize.run.report.RunReport`.
        hooks: :class:`~amorsize.run.hooks.RunHooks` instances called as the run goes.
        start_method: multiprocessing start method for process workers.
        blas_threads: BLAS/OpenMP threads per process worker (default: cores // workers).
        **optimize_options: ``sample_size``, ``target_chunk_duration``, ``max_workers``,
            ``min_speedup`` — as in :func:`optimize`.

    Returns:
        The list of results, or ``(results, report)`` with ``return_report=True``.

    Raises:
        ConfigurationError: a bad argument.
        SamplingError: ``func`` raised during the dry run.
        ItemError: ``func`` raised on an item (``.index``; the original is ``__cause__``).
        WorkerDiedError: a worker process died (``.signal_name``, ``.indices``).
        ItemTimeoutError: an item ran longer than ``timeout``.

    Example:
        >>> execute(abs, [-2, -1, 0, 1])
        [2, 1, 0, 1]
    """
    results, report, _ = execute_planned(
        func,
        data,
        verbose=verbose,
        progress=progress,
        n_jobs=n_jobs,
        chunksize=chunksize,
        executor=executor,
        timeout=timeout,
        on_error=on_error,
        placeholder=placeholder,
        hooks=hooks,
        start_method=start_method,
        blas_threads=blas_threads,
        **optimize_options,
    )
    return (results, report) if return_report else results


def execute_planned(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    *,
    verbose: bool = False,
    progress: bool = False,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    executor: str | None = None,
    timeout: float | None = None,
    on_error: OnErrorPolicy = "raise",
    placeholder: Any = None,
    hooks: Sequence[RunHooks] = (),
    start_method: str | None = None,
    blas_threads: int | None = None,
    **optimize_options: Any,
) -> tuple[list[Any], RunReport, OptimizationResult | None]:
    """:func:`execute`, also returning the report and the plan it ran (None when all was forced).

    For the CLI and tools that show the plan next to the results; arguments as :func:`execute`.
    """
    setup = _prepare(
        func,
        data,
        n_jobs=n_jobs,
        chunksize=chunksize,
        executor=executor,
        start_method=start_method,
        blas_threads=blas_threads,
        optimize_options=optimize_options,
    )
    result = _result_from(setup, data) if setup.diagnostics is not None else None
    if verbose and result is not None and setup.diagnostics is not None:
        print(explain(result, setup.diagnostics), file=sys.stderr)
    reports: list[RunReport] = []
    results = list(
        _run(
            func,
            data,
            setup,
            ordered=True,
            timeout=timeout,
            on_error=on_error,
            placeholder=placeholder,
            hooks=hooks,
            progress=progress,
            start_method=start_method,
            target_chunk_duration=optimize_options.get("target_chunk_duration", 0.2),
            report_sink=reports,
        )
    )
    report = reports[0]
    if verbose:
        print(report.summary(), file=sys.stderr)
    return results, report, result


def _result_from(setup: _RunSetup, data: Iterable[Any]) -> OptimizationResult:
    assert setup.diagnostics is not None
    the_plan = setup.diagnostics.plan
    return OptimizationResult(
        n_jobs=the_plan.candidate.n_jobs,
        chunksize=the_plan.candidate.chunksize,
        executor=the_plan.candidate.executor,
        reason=" ".join(the_plan.reasons),
        estimated_speedup=the_plan.estimated_speedup,
        warnings=setup.warnings,
        data=data,
        predicted_serial_time=the_plan.serial.total,
        predicted_parallel_time=the_plan.prediction.total,
        n_sampled=setup.measured.n_done if setup.measured is not None else 0,
        plan=the_plan,
    )


def imap(
    func: Callable[[Any], Any],
    iterable: Iterable[Any],
    *,
    ordered: bool = True,
    progress: bool = False,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    executor: str | None = None,
    timeout: float | None = None,
    on_error: OnErrorPolicy = "raise",
    placeholder: Any = None,
    hooks: Sequence[RunHooks] = (),
    start_method: str | None = None,
    blas_threads: int | None = None,
    **optimize_options: Any,
) -> Iterator[Any]:
    """Lazily run ``func`` over a large or endless ``iterable``, yielding results as they are ready.

    Nothing happens until the first result is asked for; then the dry run, the plan and the run
    start. The input is pulled a few chunks ahead only, so memory stays bounded whatever its
    length. Closing the iterator (or leaving a ``for`` loop early) stops the workers' remaining
    work.

    Args:
        ordered: results in input order (True) or in completion order (False, each exactly once).
        Everything else: as in :func:`execute`.

    Yields:
        Results.

    Raises:
        As :func:`execute`, when the failing item's turn comes.

    Example:
        >>> squares = imap(lambda x: x * x, iter(range(1_000_000)))
        >>> [next(squares) for _ in range(3)]
        [0, 1, 4]
        >>> squares.close()
    """
    _check_options(
        target_chunk_duration=optimize_options.get("target_chunk_duration", 0.2),
        n_jobs=n_jobs,
        chunksize=chunksize,
        executor=executor,
        max_workers=optimize_options.get("max_workers"),
    )
    return _imap(
        func,
        iterable,
        ordered=ordered,
        progress=progress,
        n_jobs=n_jobs,
        chunksize=chunksize,
        executor=executor,
        timeout=timeout,
        on_error=on_error,
        placeholder=placeholder,
        hooks=hooks,
        start_method=start_method,
        blas_threads=blas_threads,
        optimize_options=optimize_options,
    )


def _imap(
    func: Callable[[Any], Any],
    iterable: Iterable[Any],
    *,
    ordered: bool,
    progress: bool,
    n_jobs: int | None,
    chunksize: int | None,
    executor: str | None,
    timeout: float | None,
    on_error: OnErrorPolicy,
    placeholder: Any,
    hooks: Sequence[RunHooks],
    start_method: str | None,
    blas_threads: int | None,
    optimize_options: Mapping[str, Any],
) -> Iterator[Any]:
    setup = _prepare(
        func,
        iterable,
        n_jobs=n_jobs,
        chunksize=chunksize,
        executor=executor,
        start_method=start_method,
        blas_threads=blas_threads,
        optimize_options=optimize_options,
    )
    yield from _run(
        func,
        iterable,
        setup,
        ordered=ordered,
        timeout=timeout,
        on_error=on_error,
        placeholder=placeholder,
        hooks=hooks,
        progress=progress,
        start_method=start_method,
        target_chunk_duration=optimize_options.get("target_chunk_duration", 0.2),
        report_sink=[],
    )


def process_in_batches(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    batch_size: int | None = None,
    max_memory_percent: float = 0.5,
    verbose: bool = False,
    **execute_options: Any,
) -> list[Any]:
    """Run ``func`` over ``data`` one batch at a time, so results never outgrow memory in flight.

    When ``batch_size`` is None it is computed from the measured size of one result and the
    memory available now: ``available × max_memory_percent / bytes per result``.

    Args:
        func, data: as in :func:`execute`.
        batch_size: items per batch, or None to compute it.
        max_memory_percent: fraction (0–1] of available memory one batch's results may use.
        verbose: print the batch size and each batch's progress to stderr.
        **execute_options: passed to :func:`execute` for every batch (``n_jobs``, ``executor``, …).

    Returns:
        All results, in input order.

    Raises:
        ConfigurationError: a bad argument. Others as :func:`execute`.
    """
    _check_positive_int("batch_size", batch_size)
    if isinstance(max_memory_percent, bool) or not 0 < max_memory_percent <= 1:
        raise ConfigurationError(
            f"max_memory_percent must be a fraction in (0, 1], e.g. 0.5 (got {max_memory_percent!r})"
        )
    iterator = iter(data)
    results: list[Any] = []
    if batch_size is None:
        measured = sample(func, iterator, sample_size=execute_options.get("sample_size", 5))
        results.extend(measured.results)
        machine = probe_machine(start_method=execute_options.get("start_method"))
        per_result = max(1.0, measured.profile.mean_output_bytes * RESULT_MEMORY_FACTOR)
        batch_size = max(1, int(machine.available_memory * max_memory_percent / per_result))
        iterator = measured.rest()
        if verbose:
            print(
                f"amorsize: batches of {batch_size} items ({per_result:.0f} bytes per result, "
                f"{machine.available_memory / 2**30:.1f} GiB available × {max_memory_percent:g})",
                file=sys.stderr,
            )
    number = 0
    while True:
        batch = list(itertools.islice(iterator, batch_size))
        if not batch:
            return results
        number += 1
        results.extend(execute(func, batch, **execute_options))
        if verbose:
            print(f"amorsize: batch {number} done, {len(results)} results so far", file=sys.stderr)


#: A result's in-memory size over its pickled size, roughly: Python objects take 2–5× their pickle
#: (ints: 28 bytes vs ~5 pickled; lists add 8 bytes per pointer). 3 is a middle, documented guess.
RESULT_MEMORY_FACTOR = 3.0
