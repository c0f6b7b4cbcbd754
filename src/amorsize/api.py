"""The public functions: thin wiring of measure → plan → run. No logic of their own beyond checks.

::

    optimize(func, data) ─► sample (dry run) ─► probe_machine ─► plan ─► OptimizationResult
    execute(func, data)  ─► the same, then ─► pool (reused) ─► runner ─► results (+ RunReport)
                                               the dry run's results are emitted, not recomputed
    resilience options   ─► amorsize.resilience.session.Resilience: retry wrapper, gate (breaker,
                            rate limit), checkpoint (resumed: its plan, no dry run), dead letters
    backend="dask"       ─► client (given, default, or connected from an address) ─► probe_cluster
                            (measured once per scheduler) ─► plan: serial here or Dask there ─►
                            DaskBackend instead of the pool
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from amorsize._native import blas_above, blas_modules_loaded, limited_quietly, quiet_openblas
from amorsize.core.calibration import (
    Correction,
    apply_correction,
    correction_from_json,
    correction_to_json,
    estimate_correction,
    prediction_fields,
)
from amorsize.core.model import blas_threads_per_worker
from amorsize.core.planner import plan as make_plan
from amorsize.core.types import Candidate, ExecutorKind, Machine, Plan, PlanOptions, Prediction
from amorsize.errors import ConfigurationError
from amorsize.measure.cluster import probe_cluster
from amorsize.measure.identity import function_key, function_name
from amorsize.measure.machine import machine_key, probe_machine
from amorsize.measure.sampler import Sample, input_length, sample
from amorsize.report.text import explain
from amorsize.resilience.circuit import CircuitBreaker, CircuitBreakerPolicy
from amorsize.resilience.dlq import DeadLetterQueue
from amorsize.resilience.ratelimit import RateLimitPolicy
from amorsize.resilience.retry import RetryPolicy
from amorsize.resilience.session import OnErrorPolicy, Resilience
from amorsize.results import Diagnostics, OptimizationResult, StreamingOptimizationResult
from amorsize.run.backend import Backend
from amorsize.run.hooks import ProgressBar, RunHooks
from amorsize.run.pools import lease, warm_workers
from amorsize.run.report import RunReport
from amorsize.run.runner import Runner
from amorsize.store import Store, default_store

__all__ = ["execute", "imap", "optimize", "optimize_streaming", "process_in_batches"]

LOCAL_EXECUTORS: tuple[str, ...] = ("serial", "threads", "processes")
#: What ``executor=`` accepts: the local kinds, and ``"dask"`` (which implies ``backend="dask"``).
EXECUTORS: tuple[str, ...] = (*LOCAL_EXECUTORS, "dask")


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
    if executor is not None and executor not in EXECUTORS:
        raise ConfigurationError(
            f"executor must be one of {', '.join(repr(kind) for kind in EXECUTORS)} or None "
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
    cluster: Machine | None = None,
    clock: Callable[[], float] = time.perf_counter,
    max_probe_threads: int | None = None,
    head_start: bool = False,
) -> tuple[Sample, Diagnostics, tuple[str, ...]]:
    """Run the dry run, probe the machine and plan; the shared first half of every API call.

    ``cluster``: a Dask cluster as a machine (:func:`~amorsize.measure.cluster.probe_cluster`); the
    plan is then serial here or Dask there, and the diagnostics show the cluster. ``clock``: times
    the dry run's calls (a rate-limited run passes one that leaves out its waits for tokens).
    ``max_probe_threads``: most threads the thread probe calls ``func`` from at once (a run behind a
    circuit breaker passes 2; None: the sampler's own choice). ``head_start``: the caller keeps every
    result and lets the dry run start a short waiting input whole (see :func:`sample`).

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
    measured = sample(
        func,
        data,
        sample_size=sample_size,
        clock=clock,
        max_probe_threads=max_probe_threads,
        head_start=head_start,
    )
    began = time.perf_counter()
    machine = _calibrated(probe_machine(start_method=start_method))
    total = measured.profile.total_items
    remaining = None if total is None else max(0, total - measured.n_computed)
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
            f"the dry run already computed all {measured.n_computed} items: nothing left to run"
        )
    else:
        the_plan = make_plan(measured.profile, machine, options, cluster=cluster)
    warnings = measured.warnings + the_plan.warnings
    if the_plan.candidate.executor == "processes":
        warnings += measured.process_caveats
    diagnostics = Diagnostics(
        profile=measured.profile,
        machine=machine if cluster is None else cluster,
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
    backend: str | None = None,
    client: Any = None,
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
        backend: ``"local"`` (this machine) or ``"dask"`` (plan for a Dask cluster: serial here or
            Dask there, with the cluster's measured costs); default: ``"dask"`` when ``client`` is
            given or ``executor="dask"``, else ``"local"``. Needs ``pip install 'amorsize[dask]'``.
        client: for Dask: a ``distributed.Client``, a scheduler address (``"tcp://host:8786"``,
            connected for this call and closed after it), or None for the default client.

    Returns:
        An :class:`~amorsize.results.OptimizationResult`.

    Raises:
        ConfigurationError: a bad argument (the message says which and how to fix it).
        SamplingError: ``func`` raised on a sampled item (index named, original chained).
        MissingExtraError: ``backend="dask"`` without the ``dask`` extra installed.

    Example:
        >>> result = optimize(abs, range(-1000, 1000))
        >>> result.executor  # 2,000 calls of abs() are far too cheap to parallelise
        'serial'
    """
    dask_client, owns_client = _dask_client(backend, executor, client)
    try:
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
            cluster=None if dask_client is None else probe_cluster(dask_client),
        )
    finally:
        if owns_client:
            dask_client.close()
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
        n_sampled=measured.n_computed,
        profile=diagnostics if profile else None,
        _diagnostics=diagnostics,
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
        _diagnostics=diagnostics,
    )
    if verbose:
        print(explain(result, diagnostics), file=sys.stderr)
    return result


@dataclass(frozen=True)
class _RunSetup:
    """Everything a run needs, decided before the first chunk is sent."""

    candidate: Candidate
    measured: Sample | None
    diagnostics: Diagnostics | None
    warnings: tuple[str, ...]
    blas_threads: int | None
    dask_client: Any = None  # the distributed.Client of a run with backend="dask"
    owns_client: bool = False  # connected from an address for this run: closed at its end
    chunksize_forced: bool = False  # the user gave chunksize: the runner keeps it, tail included


def _dask_client(backend: str | None, executor: str | None, client: Any) -> tuple[Any, bool]:
    """The Dask client a call uses and whether it connected it, or ``(None, False)`` to stay local.

    Dask is used when ``backend="dask"``, or (backend None) when a ``client`` is given or
    ``executor="dask"``.

    Raises:
        ConfigurationError: an unknown backend, a client with ``backend="local"``, a local parallel
            executor with Dask, no client found.
        MissingExtraError: the ``dask`` extra is not installed.
    """
    if backend not in (None, "local", "dask"):
        raise ConfigurationError(f"backend must be 'local', 'dask' or None (got {backend!r})")
    if backend == "local" and (client is not None or executor == "dask"):
        raise ConfigurationError(
            "client= and executor='dask' run on a Dask cluster; pass backend='dask' (or leave it out)"
        )
    if backend is None and client is None and executor != "dask":
        backend = "local"
    if backend == "local":
        return None, False
    if executor in ("threads", "processes"):
        raise ConfigurationError(
            f"executor={executor!r} cannot run on a Dask cluster; with backend='dask' pass "
            "executor='dask', 'serial' or None (to choose between them)"
        )
    from amorsize.run.backends.dask import connect

    return connect(client)


@contextlib.contextmanager
def _blas_limited(limit: int | None) -> Iterator[None]:
    """Limit this process's BLAS/OpenMP threads to ``limit`` for a threaded run (process-wide).

    Threads share the process's BLAS pools: 2 threads × 2 OpenBLAS threads on 2 cores ran 250²
    matmuls ~2× slower than 2 × 1. Nothing is done when no such library is loaded or it already
    runs within the limit.

    After the dry run's uncapped calls an OpenBLAS helper thread spins ~100 ms, taking a core from
    the run (300 × 250² matmuls on 2 threads: 147–176 ms, 114–137 ms once it had stopped). When no
    other thread can be inside a BLAS call (:func:`~amorsize._native.quiet_openblas`), its pool is shut
    down as the run starts, and again as the limit is lifted (:func:`~amorsize._native.limited_quietly`);
    OpenBLAS starts it again when a call needs it.
    """
    controller = None if limit is None or not blas_modules_loaded() else blas_above(limit)
    if limit is None or controller is None:
        yield
        return
    with limited_quietly(controller, limit):
        yield


def _quiet_blas() -> None:
    """Stop this process's spinning OpenBLAS helper before a process run, when no other thread can call BLAS.

    The workers compute; a helper left spinning by the dry run's uncapped calls took a core from
    them: 300 × 250² matmuls on a warm pool of 2 processes ran 190–214 ms, 169–174 ms with it
    stopped. A fork does the same (OpenBLAS shuts its threads down before each fork); the next call
    here that needs threads starts them again.
    """
    controller = blas_above(1) if blas_modules_loaded() else None
    if controller is not None:
        quiet_openblas(controller)


def _blas_cap(kind: str, machine: Callable[[], Machine], n_jobs: int) -> int | None:
    """The BLAS thread limit for ``n_jobs`` workers of ``kind`` (None for serial and Dask)."""
    return blas_threads_per_worker(machine(), n_jobs) if kind in ("processes", "threads") else None


@contextlib.contextmanager
def _backend_for(setup: _RunSetup, start_method: str | None) -> Iterator[Backend]:
    """The backend of a planned run: Dask on the run's client, or a leased local pool.

    A client this run connected (from an address) is closed at the end, even if the plan was serial.
    """
    candidate = setup.candidate
    try:
        if candidate.executor == "dask":
            from amorsize.run.backends.dask import DaskBackend

            with DaskBackend(setup.dask_client) as dask_backend:
                yield dask_backend
        elif candidate.executor == "threads":
            with _blas_limited(setup.blas_threads), lease("threads", candidate.n_jobs) as pooled:
                yield pooled
        else:
            if candidate.executor == "processes":
                _quiet_blas()
            with lease(
                candidate.executor,
                candidate.n_jobs,
                start_method=start_method,
                blas_threads=setup.blas_threads,
            ) as pooled:
                yield pooled
    finally:
        if setup.owns_client:
            setup.dask_client.close()


def plan_is_forced(executor: str | None, n_jobs: int | None, chunksize: int | None) -> bool:
    """Whether the caller's overrides leave nothing to plan, so that no dry run is made.

    All three given, or a serial run (``n_jobs`` None or 1), whose chunk size the run steers itself.

    Example:
        >>> plan_is_forced("serial", None, None), plan_is_forced("processes", 2, None)
        (True, False)
    """
    if executor == "serial" and (n_jobs is None or n_jobs == 1) and not isinstance(n_jobs, bool):
        return True
    return executor is not None and n_jobs is not None and chunksize is not None


#: ``execute(..., executor="serial")`` without a chunk size makes no dry run: its chunks start at this
#: size and grow towards the target duration as the run measures them (the chunk size of a serial run
#: only sets how often hooks, progress and checkpoints hear from it).
SERIAL_CHUNKSIZE = 1


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
    backend: str | None = None,
    client: Any = None,
    clock: Callable[[], float] = time.perf_counter,
    max_probe_threads: int | None = None,
    head_start: bool = False,
) -> _RunSetup:
    """Plan a run; skip the dry run only when executor, n_jobs and chunksize are all forced.

    With Dask (see :func:`_dask_client`) the plan is made for the cluster, and the setup carries the client.
    """
    unknown = set(optimize_options) - _OPTIMIZE_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(sorted(unknown))}; execute and imap accept "
            f"{', '.join(sorted(_OPTIMIZE_OPTIONS))} besides their own arguments"
        )
    _check_positive_int("blas_threads", blas_threads)
    if plan_is_forced(executor, n_jobs, chunksize):
        _check_options(
            target_chunk_duration=optimize_options.get("target_chunk_duration", 0.2),
            n_jobs=n_jobs,
            chunksize=chunksize,
            executor=executor,
            max_workers=None,
        )
        kind = cast(ExecutorKind, executor)
        n_workers = 1 if kind == "serial" else cast(int, n_jobs)
        candidate = Candidate(kind, n_workers, chunksize or SERIAL_CHUNKSIZE)
        if blas_threads is None:  # a forced plan is capped like a planned one
            blas_threads = _blas_cap(
                kind,
                lambda: probe_machine(start_method=start_method, calibrate_costs=False),
                candidate.n_jobs,
            )
        return _RunSetup(
            candidate,
            None,
            None,
            (),
            blas_threads,
            *_dask_client(backend, executor, client),
            chunksize is not None,
        )
    dask_client, owns_client = _dask_client(backend, executor, client)
    try:
        measured, diagnostics, warnings = analyse(
            func,
            data,
            n_jobs=n_jobs,
            chunksize=chunksize,
            executor=executor,
            start_method=start_method,
            cluster=None if dask_client is None else probe_cluster(dask_client),
            clock=clock,
            max_probe_threads=max_probe_threads,
            head_start=head_start,
            **optimize_options,
        )
    except BaseException:
        if owns_client:
            dask_client.close()
        raise
    candidate = diagnostics.plan.candidate
    if blas_threads is None:
        blas_threads = _blas_cap(candidate.executor, lambda: diagnostics.machine, candidate.n_jobs)
    return _RunSetup(
        candidate,
        measured,
        diagnostics,
        warnings,
        blas_threads,
        dask_client,
        owns_client,
        chunksize is not None,
    )


_OPTIMIZE_OPTIONS = frozenset(
    {"sample_size", "target_chunk_duration", "max_workers", "min_speedup", "assumed_stream_items"}
)


def _run(
    session: Resilience,
    data: Iterable[Any],
    setup: _RunSetup,
    *,
    ordered: bool,
    timeout: float | None,
    hooks: Sequence[RunHooks],
    progress: bool,
    start_method: str | None,
    target_chunk_duration: float,
    report_sink: list[RunReport],
    batched: bool = False,
) -> Iterator[Any]:
    """Lease a backend, run, yield results; record the run in the store's history at the end.

    With ``batched``, yield lists of results (a chunk's worth each) instead of single results.
    """
    candidate = setup.candidate
    measured = setup.measured
    items: Iterable[Any] = measured.rest() if measured is not None else data
    total = measured.profile.total_items if measured is not None else input_length(data)
    n_done = measured.n_done if measured is not None else 0
    all_hooks = list(hooks)
    if progress:
        all_hooks.append(ProgressBar())
    predicted = setup.diagnostics.plan.prediction.total if setup.diagnostics is not None else None
    with _backend_for(setup, start_method) as backend:
        runner = Runner(
            backend,
            session.worker_func,
            items,
            target_chunk_duration=target_chunk_duration,
            n_items=None if total is None else max(0, total - n_done),
            start=n_done,
            ordered=ordered,
            item_timeout=timeout,
            hooks=all_hooks,
            predicted_seconds=predicted,
            item_seconds=measured.profile.mean_duration if measured is not None else None,
            **session.runner_options(
                backend.n_workers,
                candidate.chunksize,
                measured.precomputed() if measured is not None else None,
                chunksize_forced=setup.chunksize_forced,
            ),
        )
        try:
            yield from (runner.batches() if batched else runner)
        finally:
            report = session.finish(runner.report)
            report_sink.append(report)
            _record_history(
                session.key_func, report, session.history_fields(), lambda: _calibration_fields(setup)
            )
    session.completed(report)


def _planned(
    session: Resilience,
    data: Iterable[Any],
    *,
    n_jobs: int | None,
    chunksize: int | None,
    executor: str | None,
    start_method: str | None,
    blas_threads: int | None,
    optimize_options: Mapping[str, Any],
    backend: str | None = None,
    client: Any = None,
    timeout: float | None = None,
) -> _RunSetup:
    """Plan with the session: a resumed checkpoint's plan is forced (so no dry run runs a finished
    item again); otherwise the dry run goes through the session's gate; the checkpoint records both."""
    forced = session.forced_plan()
    setup = _prepare(
        session.dry_run_func,
        data,
        n_jobs=n_jobs if n_jobs is not None else forced.get("n_jobs"),
        chunksize=chunksize if chunksize is not None else forced.get("chunksize"),
        executor=executor if executor is not None else forced.get("executor"),
        start_method=start_method,
        blas_threads=blas_threads,
        optimize_options=optimize_options,
        backend=backend,
        client=client,
        clock=session.dry_run_clock,
        max_probe_threads=session.dry_run_probe_threads,
        # every result is kept: a short waiting input may run whole in the dry run, a thread per
        # item, unless a gate must see each call, the user bounded the workers, the plan or the
        # items' time (the dry run stops no item), or the work is for a Dask cluster
        head_start=session.gate is None
        and timeout is None
        and backend is None
        and client is None
        and n_jobs is None
        and chunksize is None
        and executor is None
        and not forced
        and optimize_options.get("max_workers") is None,
    )
    measured = setup.measured
    session.planned(
        setup.candidate.executor,
        setup.candidate.n_jobs,
        setup.candidate.chunksize,
        measured.items if measured is not None else (),
        measured.results if measured is not None else (),
        measured.later if measured is not None else (),
    )
    return setup


#: History rows read to correct the machine's costs (:mod:`amorsize.core.calibration`); the
#: estimate takes medians, so a couple of hundred recent runs are plenty (~0.9 ms to read and fit).
CALIBRATION_RUNS = 200


#: The correction is estimated again once this fraction of the runs it was estimated from have been
#: added (every run while the history is short): reading and fitting 200 runs and keeping the result
#: costs 3–13 ms, more than the rest of a small job's analysis (a 60 ms serial job in the suite:
#: ~5 ms), and a few dozen more runs barely move a median of 200. At 0.05 a refit came every ~10
#: runs, which put it in one of every few suite workloads' timings.
CALIBRATION_REFRESH = 0.25

#: (store path, machine key) → (newest run id, rows used, the correction estimated from them).
_corrections: dict[tuple[str, str], tuple[int, int, Correction]] = {}

#: The store keeps the latest correction per machine key here (JSON), so a new process does not
#: read and fit the history again before its first plan (~10 ms with 200 runs).
CORRECTION_NAMESPACE = "history-correction"

#: Below this many usable runs the correction is not kept in the store (fitting so few is cheap,
#: and it changes with every run: keeping it would cost a write per run).
CORRECTION_KEPT_FROM = 20


def _calibrated(machine: Machine) -> Machine:
    """``machine`` with its costs corrected by this machine's recorded runs (unchanged on any problem)."""
    try:
        store = default_store()
        key = machine_key(machine.start_method)
        last = store.last_run_id()
        cached = _corrections.get((str(store.path), key)) or _kept_correction(store, key)
        if cached is None or not 0 <= last - cached[0] <= CALIBRATION_REFRESH * cached[1]:
            rows = [row for row in store.runs(limit=CALIBRATION_RUNS) if row.get("machine") == key]
            cached = (last, len(rows), estimate_correction(rows))
            if len(rows) >= CORRECTION_KEPT_FROM:
                kept = {"last_run": last, "rows": len(rows), "correction": correction_to_json(cached[2])}
                store.put(CORRECTION_NAMESPACE, key, kept)
        _corrections[(str(store.path), key)] = cached
        return apply_correction(machine, cached[2])
    except Exception:  # a store or history problem must never stop planning
        return machine


def _kept_correction(store: Store, key: str) -> tuple[int, int, Correction] | None:
    """The correction the store keeps for ``key`` (see :data:`CORRECTION_NAMESPACE`), if valid."""
    kept = store.get(CORRECTION_NAMESPACE, key)
    if not isinstance(kept, dict):
        return None
    last, rows = kept.get("last_run"), kept.get("rows")
    correction = correction_from_json(kept.get("correction"))
    if correction is None or type(last) is not int or type(rows) is not int:  # bool is an int too
        return None
    return last, rows, correction


def _calibration_fields(setup: _RunSetup) -> dict[str, Any]:
    """The fields calibration needs in a history record: the machine and the predicted breakdown."""
    if setup.diagnostics is None or setup.dask_client is not None:
        return {}
    diagnostics = setup.diagnostics
    total = diagnostics.profile.total_items
    n_done = setup.measured.n_computed if setup.measured is not None else 0
    return {
        "machine": machine_key(diagnostics.machine.start_method),
        **prediction_fields(
            diagnostics.plan.prediction,
            diagnostics.plan.serial,
            planned_items=None if total is None else max(0, total - n_done),
        ),
    }


def _record_history(
    func: Callable[..., Any],
    report: RunReport,
    extra: Mapping[str, Any],
    later: Callable[[], Mapping[str, Any]],
) -> None:
    """Keep predicted vs measured time in the store; a store problem never fails a run.

    The row is written in the background (:meth:`~amorsize.store.Store.record_run_later`): the
    caller has its results 2–4 ms sooner, and this process's next read of the history sees it.

    Args:
        func: the run's function (its digest is taken now: the user's objects are not read from
            another thread).
        report: the run's report.
        extra: more fields (e.g. ``paced``: a breaker or rate limit set the pace, so the wall time
            says little about the machine).
        later: more fields, made in the background (the machine's key reads cgroup files).
    """
    record = {
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
        **extra,
    }
    try:
        default_store().record_run_later(record, later)
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
    retry: RetryPolicy | None = None,
    circuit_breaker: CircuitBreakerPolicy | CircuitBreaker | None = None,
    rate_limit: RateLimitPolicy | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    keep_checkpoint: bool = False,
    force_resume: bool = False,
    dlq: DeadLetterQueue | None = None,
    backend: str | None = None,
    client: Any = None,
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
            ``"processes"``); when all three are given no dry run is made, nor for ``"serial"``.
        timeout: seconds one item may run; over it the item is stopped (a process worker is
            killed and replaced) and :class:`~amorsize.errors.ItemTimeoutError` is raised.
        on_error: ``"raise"`` (stop at the first failure), ``"collect"`` (failed positions hold
            ``placeholder``; the failures are in the report: ``return_report=True``, then
            ``report.failures``) or ``"dlq"`` (as collect, and each failed item goes to ``dlq``).
        placeholder: the result at a failed position under ``"collect"`` and ``"dlq"``.
        return_report: return ``(results, report)`` with the :class:`~amorsize.run.report.RunReport`.
        hooks: :class:`~amorsize.run.hooks.RunHooks` instances called as the run goes.
        start_method: multiprocessing start method for process workers.
        blas_threads: BLAS/OpenMP threads per worker (default: cores // workers): in each worker
            process, or for the whole process during a threaded run.
        retry: a :class:`~amorsize.resilience.retry.RetryPolicy`: each item is retried in its worker.
        circuit_breaker: a :class:`~amorsize.resilience.circuit.CircuitBreakerPolicy` (a breaker for
            this run) or a :class:`~amorsize.resilience.circuit.CircuitBreaker` (shared across runs),
            kept in this process for all workers; while open, items fail at once with
            :class:`~amorsize.errors.CircuitOpenError`. Items are then sent one per chunk.
        rate_limit: a :class:`~amorsize.resilience.ratelimit.RateLimitPolicy` for the whole run.
        checkpoint: a name (kept in the Amorsize store) or a path — a ``pathlib.Path`` or a string
            containing ``/`` — to a database file of its own: finished results are committed as
            they arrive, and a later call with the same checkpoint resumes, never recomputing
            them. Deleted once a run completes with no failure.
        keep_checkpoint: keep the checkpoint even then.
        force_resume: resume even if the function or the data changed since the checkpoint.
        dlq: the :class:`~amorsize.resilience.dlq.DeadLetterQueue` for ``on_error="dlq"`` (default:
            the queue ``"default"`` in the Amorsize store).
        backend, client: run on a Dask cluster (as in :func:`optimize`): chunks become Dask tasks,
            planned with the cluster's measured costs; ``executor="dask"`` forces Dask over serial.
        **optimize_options: ``sample_size``, ``target_chunk_duration``, ``max_workers``,
            ``min_speedup`` — as in :func:`optimize`.

    Returns:
        The list of results, or ``(results, report)`` with ``return_report=True``.

    Raises:
        ConfigurationError: a bad argument.
        SamplingError: ``func`` raised during the dry run (under ``on_error="raise"``).
        ItemError: ``func`` raised on an item (``.index``; the original is ``__cause__``).
        WorkerDiedError: a worker process died (``.signal_name``, ``.indices``).
        ItemTimeoutError: an item ran longer than ``timeout``.
        CircuitOpenError: the circuit breaker was open (under ``on_error="raise"``).
        CheckpointMismatchError: the checkpoint was made by another function or for other data.

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
        retry=retry,
        circuit_breaker=circuit_breaker,
        rate_limit=rate_limit,
        checkpoint=checkpoint,
        keep_checkpoint=keep_checkpoint,
        force_resume=force_resume,
        dlq=dlq,
        backend=backend,
        client=client,
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
    retry: RetryPolicy | None = None,
    circuit_breaker: CircuitBreakerPolicy | CircuitBreaker | None = None,
    rate_limit: RateLimitPolicy | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    keep_checkpoint: bool = False,
    force_resume: bool = False,
    dlq: DeadLetterQueue | None = None,
    backend: str | None = None,
    client: Any = None,
    **optimize_options: Any,
) -> tuple[list[Any], RunReport, OptimizationResult | None]:
    """:func:`execute`, also returning the report and the plan it ran (None when all was forced).

    For the CLI and tools that show the plan next to the results; arguments as :func:`execute`.
    """
    session = Resilience(
        func,
        data,
        on_error=on_error,
        placeholder=placeholder,
        retry=retry,
        circuit_breaker=circuit_breaker,
        rate_limit=rate_limit,
        checkpoint=checkpoint,
        keep_checkpoint=keep_checkpoint,
        force_resume=force_resume,
        dlq=dlq,
    )
    reports: list[RunReport] = []
    with session:
        setup = _planned(
            session,
            data,
            n_jobs=n_jobs,
            chunksize=chunksize,
            executor=executor,
            start_method=start_method,
            blas_threads=blas_threads,
            optimize_options=optimize_options,
            backend=backend,
            client=client,
            timeout=timeout,
        )
        result = _result_from(setup, data) if setup.diagnostics is not None else None
        if verbose and result is not None and setup.diagnostics is not None:
            print(explain(result, setup.diagnostics), file=sys.stderr)
        results: list[Any] = []
        for batch in _run(
            session,
            data,
            setup,
            ordered=True,
            timeout=timeout,
            hooks=hooks,
            progress=progress,
            start_method=start_method,
            target_chunk_duration=optimize_options.get("target_chunk_duration", 0.2),
            report_sink=reports,
            batched=True,
        ):
            if len(batch) > len(results):  # keep the larger list: a 1M-item batch is not copied
                batch[:0] = results  # (each batch is a fresh list the runner hands over)
                results = batch
            else:
                results.extend(batch)
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
        n_sampled=setup.measured.n_computed if setup.measured is not None else 0,
        plan=the_plan,
        _diagnostics=setup.diagnostics,
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
    retry: RetryPolicy | None = None,
    circuit_breaker: CircuitBreakerPolicy | CircuitBreaker | None = None,
    rate_limit: RateLimitPolicy | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    keep_checkpoint: bool = False,
    force_resume: bool = False,
    dlq: DeadLetterQueue | None = None,
    backend: str | None = None,
    client: Any = None,
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
    session = Resilience(  # checks the resilience options now; the checkpoint opens on first use
        func,
        iterable,
        on_error=on_error,
        placeholder=placeholder,
        retry=retry,
        circuit_breaker=circuit_breaker,
        rate_limit=rate_limit,
        checkpoint=checkpoint,
        keep_checkpoint=keep_checkpoint,
        force_resume=force_resume,
        dlq=dlq,
    )
    return _imap(
        session,
        func,
        iterable,
        ordered=ordered,
        progress=progress,
        n_jobs=n_jobs,
        chunksize=chunksize,
        executor=executor,
        timeout=timeout,
        hooks=hooks,
        start_method=start_method,
        blas_threads=blas_threads,
        optimize_options=optimize_options,
        backend=backend,
        client=client,
    )


def _imap(
    session: Resilience,
    func: Callable[[Any], Any],
    iterable: Iterable[Any],
    *,
    ordered: bool,
    progress: bool,
    n_jobs: int | None,
    chunksize: int | None,
    executor: str | None,
    timeout: float | None,
    hooks: Sequence[RunHooks],
    start_method: str | None,
    blas_threads: int | None,
    optimize_options: Mapping[str, Any],
    backend: str | None = None,
    client: Any = None,
) -> Iterator[Any]:
    with session:
        setup = _planned(
            session,
            iterable,
            n_jobs=n_jobs,
            chunksize=chunksize,
            executor=executor,
            start_method=start_method,
            blas_threads=blas_threads,
            optimize_options=optimize_options,
            backend=backend,
            client=client,
            timeout=timeout,
        )
        yield from _run(
            session,
            iterable,
            setup,
            ordered=ordered,
            timeout=timeout,
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
